#!/usr/bin/env bash
# One-command set-up on Debian 12 (or 13): system packages (QGIS, PyQGIS, GDAL), then .venv built from
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
# torch 2.14.1 + torchvision 0.29.1 is the pair lpips works with. numpy must be the major version Debian's
# GDAL bindings were built against: 1.x on Debian 12 (pinned here), 2.x on Debian 13 (its own python3-numpy,
# seen through --system-site-packages; installing numpy<2 there would break `from osgeo import gdal_array`).
DEBIAN_MAJOR=$(cut -d. -f1 /etc/debian_version 2>/dev/null || echo 0)
case "$DEBIAN_MAJOR" in
  12) NUMPY_SPEC="numpy<2" ;;
  13) NUMPY_SPEC="" ;;
  *) echo "setup.sh: made for Debian 12 or 13; /etc/debian_version says '$(cat /etc/debian_version 2>/dev/null)'." \
          "Trying the Debian 12 choices (numpy<2)." >&2
     NUMPY_SPEC="numpy<2" ;;
esac
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" ${NUMPY_SPEC:+"$NUMPY_SPEC"}
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -c "import torch, numpy, lpips, osgeo.gdal, qgis.core; print('environment ready: torch', torch.__version__, 'numpy', numpy.__version__, 'gdal', osgeo.gdal.__version__)"
