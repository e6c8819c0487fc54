PY := .venv/bin/python

.PHONY: setup test lint plugin bench qgis-ltr

setup:            ## system packages + .venv (Debian 12)
	./scripts/setup.sh

test:             ## the whole test suite (CPU)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

lint:
	$(PY) -m ruff check e2diffsr_core qgis_plugin tests training benchmarks scripts

plugin:           ## build dist/e2diffsr_qgis.zip (QGIS: Plugins > Install from ZIP)
	$(PY) scripts/build_plugin.py

qgis-ltr:         ## the QGIS tests on QGIS 3.40 LTR (Debian 13 chroot in .qgis-ltr/; root, ~2 GB; not in CI)
	./scripts/qgis_ltr_chroot.sh test
