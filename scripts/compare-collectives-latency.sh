#!/usr/bin/env bash
# Small-message all_sum latency on one host, tessera's ring backend against OpenMPI's own
# MPI_Allreduce, in alternating rounds (the machine is noisy: compare within one run).
#
#   cargo build --release -p tessera-cli && scripts/build-mpi-bench.sh
#   scripts/compare-collectives-latency.sh [RANKS=2] [ROUNDS=5] [MAX_BYTES=4096]
#
# Prints, per size, the median over rounds of each round's median (and the range):
#   graph  tessera's all_sum op (build the node, eval): what a program pays
#   comm   the ring backend's communicator called directly: the transport alone
#   ompi   OpenMPI's MPI_Allreduce (scripts/mpi_allreduce_bench.c), same method
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-2}" rounds="${2:-5}" max="${3:-4096}"
t="$root/target/release/tessera"
# (alternate-latency.py checks that both binaries exist, and does the rounds and the table.)
exec python3 "$root/scripts/alternate-latency.py" --rounds "$rounds" --ranks "$n" \
    --max-bytes "$max" "tessera=$t"
