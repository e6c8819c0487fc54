#!/bin/sh
# The QGIS tests against QGIS 3.40 LTR, from Debian 13 (trixie)'s own packages, in a chroot.
#
#   scripts/qgis_ltr_chroot.sh build   # once: debootstrap trixie + QGIS, PyTorch, pytest (~2 GB, minutes)
#   scripts/qgis_ltr_chroot.sh test    # copy the working tree in, run the QGIS tests (builds first if needed)
#   scripts/qgis_ltr_chroot.sh shell   # a shell inside, for investigating
#
# Needs root (chroot, mounting /proc) and a reachable Debian mirror (MIRROR). Everything lives under
# LTR_DIR (default .qgis-ltr/, git-ignored): debootstrap itself is unpacked there from its .deb, so
# nothing is installed on the host. Not part of CI.
set -eu

ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
LTR_DIR=${LTR_DIR:-$ROOT_DIR/.qgis-ltr}
CHROOT=$LTR_DIR/trixie
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PACKAGES="qgis python3-qgis qgis-providers python3-gdal python3-numpy python3-torch python3-pytest python3-pip"
TESTS=${TESTS:-"tests/test_qgis_plugin.py tests/test_qgis_workflows.py tests/test_qgis_torch_setup.py"}

log() { printf '%s\n' "== $*" >&2; }

in_chroot() {
    mountpoint -q "$CHROOT/proc" || mount -t proc proc "$CHROOT/proc"
    chroot "$CHROOT" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

cleanup() {
    if [ -d "$CHROOT/proc" ] && mountpoint -q "$CHROOT/proc"; then umount "$CHROOT/proc"; fi
}

build() {
    [ "$(id -u)" = 0 ] || { echo "run as root (chroot needs it)" >&2; exit 1; }
    mkdir -p "$LTR_DIR/tools" "$LTR_DIR/wheels"
    if [ ! -x "$LTR_DIR/tools/usr/sbin/debootstrap" ]; then
        log "unpacking debootstrap (not installed on the host)"
        (cd "$LTR_DIR" && apt-get download debootstrap)
        dpkg -x "$LTR_DIR"/debootstrap_*.deb "$LTR_DIR/tools"
    fi
    if [ ! -x "$CHROOT/usr/bin/apt-get" ]; then
        log "debootstrap trixie from $MIRROR"
        DEBOOTSTRAP_DIR=$LTR_DIR/tools/usr/share/debootstrap "$LTR_DIR/tools/usr/sbin/debootstrap" \
            --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg trixie "$CHROOT" "$MIRROR"
    fi
    log "QGIS, PyTorch and pytest from trixie's packages"
    in_chroot apt-get update -q
    # shellcheck disable=SC2086
    in_chroot apt-get install -y -q --no-install-recommends $PACKAGES
    # pytest-qgis is not packaged by Debian: its wheel comes from the host's package index.
    python3 -m pip download -q --no-deps --dest "$LTR_DIR/wheels" "pytest-qgis==5.0.2"
    mkdir -p "$CHROOT/opt/wheels"
    cp "$LTR_DIR"/wheels/*.whl "$CHROOT/opt/wheels/"
    in_chroot sh -c 'python3 -m pip install -q --no-deps --break-system-packages --no-index /opt/wheels/*.whl'
    in_chroot sh -c 'qgis --version 2>/dev/null | head -1; python3 -c "import qgis.core as q, torch, numpy; \
print(\"QGIS\", q.Qgis.version(), \"| PyTorch\", torch.__version__, \"| numpy\", numpy.__version__)"' \
        | tee "$LTR_DIR/versions.txt"
    touch "$LTR_DIR/built"
}

run_tests() {
    [ -f "$LTR_DIR/built" ] || build
    log "copying the working tree into the chroot"
    rm -rf "$CHROOT/src"
    mkdir -p "$CHROOT/src"
    (cd "$ROOT_DIR" && git ls-files -co --exclude-standard -z | xargs -0 tar -cf - --no-recursion) \
        | tar -xf - -C "$CHROOT/src"
    log "running $TESTS"
    # shellcheck disable=SC2086
    in_chroot sh -c "cd /src && QT_QPA_PLATFORM=offscreen XDG_RUNTIME_DIR=/tmp python3 -m pytest -q \
        -p no:cacheprovider $TESTS"
}

trap cleanup EXIT
case "${1:-test}" in
    build) build ;;
    test) run_tests ;;
    shell) in_chroot /bin/bash ;;
    *) echo "usage: $0 [build|test|shell]" >&2; exit 2 ;;
esac
