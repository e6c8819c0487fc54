PY := .venv/bin/python

.PHONY: setup test lint plugin bench

setup:            ## system packages + .venv (Debian 12)
	./scripts/setup.sh

test:             ## the whole test suite (CPU)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

lint:
	$(PY) -m ruff check e2diffsr_core qgis_plugin tests training benchmarks scripts

plugin:           ## build dist/e2diffsr_qgis.zip (QGIS: Plugins > Install from ZIP)
	$(PY) scripts/build_plugin.py
