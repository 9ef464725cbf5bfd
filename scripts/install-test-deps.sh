#!/usr/bin/env bash
# System packages the test suite needs beyond Rust: OpenMPI (the `mpi` backend of cluster mode
# and its tests run against it) and libclang (the `mpi` crate generates its bindings with it).
# Debian/Ubuntu; installs only what is missing, so it is quick when all is there.
set -euo pipefail
need=()
dpkg -s libopenmpi-dev >/dev/null 2>&1 || need+=(libopenmpi-dev)
dpkg -s openmpi-bin >/dev/null 2>&1 || need+=(openmpi-bin)
# libclang itself (libclang.so*, libclang-NN.so*), not libclang-cpp, which other packages pull
# in and which bindgen cannot use.
compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null \
    || compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null || need+=(libclang-dev)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -eq 0 ]; then
  echo "test dependencies: all installed"
  exit 0
fi
echo "installing test dependencies: ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
