#!/usr/bin/env bash
# Install what the tests need on a fresh Debian machine: the cross compilers
# the layout tests compile with (apt), and ksm-emu itself (editable, so the
# Cython extensions are built in the source tree) with its [test] extra, which
# holds every Python package the tests use. Installs into the python3 on PATH:
# the README's venv, or CI's own Python. Says what it is doing as it goes: the
# first run takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
say() { echo "setup-test-env: $*" >&2; }

# Debian's own Python refuses `pip install` outside a venv (PEP 668): say so
# before installing anything, rather than after the compilers.
if python3 - <<'PY'
import os, sys, sysconfig
sys.exit(0 if sys.prefix == sys.base_prefix and not os.environ.get("PIP_BREAK_SYSTEM_PACKAGES")
         and os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)
PY
then
  say "$(command -v python3) is the system's Python, which refuses pip install (PEP 668);"
  say "make and activate a venv first: python3 -m venv .venv && . .venv/bin/activate"
  exit 1
fi

# gcc -m32 needs no multilib for -S; the big-endian and ARM targets need
# Debian's cross compilers (versioned names: the unversioned meta packages
# are not installable on bookworm).
COMPILERS="gcc-12-powerpc-linux-gnu gcc-12-powerpc64-linux-gnu gcc-12-s390x-linux-gnu \
gcc-12-sparc64-linux-gnu gcc-12-mips64-linux-gnuabi64 gcc-12-arm-linux-gnueabi"
missing=""
command -v gcc >/dev/null || missing=" gcc"
for pkg in $COMPILERS; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
# Building the extensions against Debian's Python needs its headers (a pyenv or
# other self-built Python carries its own).
pyinc=$(python3 -c 'import sysconfig; print(sysconfig.get_path("include"))')
case "$pyinc" in
  /usr/include/*) [ -e "$pyinc/Python.h" ] || missing="$missing python3-dev" ;;
esac
if [ -n "$missing" ]; then
  say "installing compilers and headers:$missing (apt-get) ..."
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  say "compilers present"
fi

say "installing ksm-emu (editable, building the Cython extensions) with its [test] extra (pytest, hypothesis, matplotlib, dask.distributed, ...) into $(python3 -c 'import sys; print(sys.prefix)') ..."
python3 -m pip install -q -e '.[test]'
say "done"
