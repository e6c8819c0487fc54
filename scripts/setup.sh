#!/usr/bin/env bash
# One-command set-up on Debian 12: system packages (QGIS, PyQGIS, GDAL), then .venv built from
# Debian's own Python with system site packages (so qgis, osgeo and PyQt5 import), then the
# Python packages. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=0
# python3-dev and g++: torch.compile's C++ backend (--compile on a CPU, and its test) builds kernels against them
for p in qgis python3-qgis qgis-providers python3-gdal gdal-bin python3-venv python3-dev g++ xvfb xauth; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt=1
done
if [ "$need_apt" = 1 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    qgis python3-qgis qgis-providers python3-gdal gdal-bin python3-venv python3-dev g++ xvfb xauth
fi

# PyQGIS imports only in Debian's Python, not in another python3 that may be first on PATH.
PY=/usr/bin/python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch 2.14.1 + torchvision 0.29.1 is the pair lpips works with; GDAL's bindings need numpy<2.
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" "numpy<2"
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -c "import torch, numpy, lpips, osgeo.gdal, qgis.core; print('environment ready: torch', torch.__version__, 'numpy', numpy.__version__, 'gdal', osgeo.gdal.__version__)"
