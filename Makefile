PY := .venv/bin/python

.PHONY: setup test lint plugin bench qgis-ltr fuzz

setup:            ## system packages + .venv (Debian 12)
	./scripts/setup.sh

test:             ## the whole test suite (CPU)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

fuzz:             ## the generated suites with many fresh random examples (FUZZ_EXAMPLES=300; CI runs a fixed set)
	E2DIFFSR_FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-300} QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider \
		tests/test_safety_generated.py tests/test_csum_shortcuts_generated.py

lint:
	$(PY) -m ruff check e2diffsr_core qgis_plugin tests training benchmarks scripts

plugin:           ## build dist/e2diffsr_qgis.zip (QGIS: Plugins > Install from ZIP)
	$(PY) scripts/build_plugin.py

qgis-ltr:         ## the QGIS tests on QGIS 3.40 LTR (Debian 13 chroot in .qgis-ltr/; root, ~2 GB; not in CI)
	./scripts/qgis_ltr_chroot.sh test
