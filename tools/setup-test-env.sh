#!/usr/bin/env bash
# Install what the tests need on a fresh Debian machine: the cross compilers
# the layout tests compile with, and ksm-emu itself (editable, so the Cython
# extensions are built in the source tree) with its test extras. Says what it
# is doing as it goes: the first run takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
say() { echo "setup-test-env: $*" >&2; }

# gcc -m32 needs no multilib for -S; the big-endian and ARM targets need
# Debian's cross compilers (versioned names: the unversioned meta packages
# are not installable on bookworm).
COMPILERS="gcc-12-powerpc-linux-gnu gcc-12-powerpc64-linux-gnu gcc-12-s390x-linux-gnu \
gcc-12-sparc64-linux-gnu gcc-12-mips64-linux-gnuabi64 gcc-12-arm-linux-gnueabi"
missing=""
for pkg in $COMPILERS; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  say "installing cross compilers:$missing (apt-get) ..."
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc $missing >/dev/null
else
  say "cross compilers present"
fi

say "installing ksm-emu (editable, building the Cython extensions) with its test extras (and plot, dask: matplotlib, dask.distributed) ..."
python3 -m pip install -q -e '.[test,bench,plot,dask]'
say "done"
