#!/usr/bin/env bash
# Builds the MPI library's own all-reduce benchmark (the peer of `tessera bench collectives`)
# into .cache/mpi-bench/mpi_allreduce_bench. Needs the system's MPI (Debian: apt-get install -y
# libopenmpi-dev openmpi-bin). Never run in CI.
#
#   scripts/build-mpi-bench.sh
#   mpirun -n 3 .cache/mpi-bench/mpi_allreduce_bench [--max-bytes B] [--repeats R]
#   tessera launch -n 3 -- tessera bench collectives --json     # the same JSON lines
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/.cache/mpi-bench"
if ! command -v mpicc >/dev/null; then
    echo "mpicc not found: install the system's MPI (Debian: apt-get install -y libopenmpi-dev openmpi-bin)" >&2
    exit 1
fi
mkdir -p "$out"
mpicc -O2 -std=c11 -Wall -Wextra -o "$out/mpi_allreduce_bench" "$root/scripts/mpi_allreduce_bench.c"
echo "built $out/mpi_allreduce_bench" >&2
