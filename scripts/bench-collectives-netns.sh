#!/usr/bin/env bash
# all_sum across N separate network hosts (network namespaces joined by veth pairs to a bridge,
# each rank's uplink limited with `tc tbf` to RATE), for tessera's ring backend and for OpenMPI's
# own MPI_Allreduce over TCP on the same links, in the same run. Needs root.
#
#   scripts/bench-collectives-netns.sh [N=3] [RATE=1gbit] [MAX_BYTES=268435456]
#
# Prints the JSON lines of both (case names say ring or openmpi). Builds nothing: run
# `cargo build --release -p tessera-cli` and `scripts/build-mpi-bench.sh` first.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3}
RATE=${2:-1gbit}
MAX=${3:-268435456}
REPEATS=${REPEATS:-5}
TESSERA=${TESSERA_BIN:-target/release/tessera}
MPIBENCH=.cache/mpi-bench/mpi_allreduce_bench
id=$$
hub=tsb${id}hub
cleanup() {
  for r in $(seq 0 $((N - 1))); do ip netns del tsb${id}r$r 2>/dev/null || true; done
  ip netns del "$hub" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$hub"
ip -n "$hub" link add br0 type bridge
ip -n "$hub" link set br0 up
# The hub gets an address too: mpirun runs there and reaches every rank's namespace.
ip -n "$hub" addr add 10.78.0.100/24 dev br0
hosts=()
for r in $(seq 0 $((N - 1))); do
  ns=tsb${id}r$r
  ip netns add "$ns"
  ip -n "$ns" link add eth0 type veth peer name hub$r netns "$hub"
  ip -n "$ns" addr add 10.78.0.$((r + 1))/24 dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  ip -n "$hub" link set hub$r master br0
  ip -n "$hub" link set hub$r up
  ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$RATE" burst 1mb latency 50ms
  hosts+=("10.78.0.$((r + 1)):7800")
done
HOSTS=$(IFS=,; echo "${hosts[*]}")
echo "# $N hosts, each uplink limited to $RATE; ring backend" >&2
pids=()
for r in $(seq 0 $((N - 1))); do
  # Only rank 0 prints (its stdout is inherited, not reopened, so a file keeps its offset).
  TESSERA_RANK=$r TESSERA_WORLD_SIZE=$N TESSERA_HOSTS=$HOSTS TESSERA_SECRET=bench-secret-$id \
    ip netns exec tsb${id}r$r "$TESSERA" bench collectives --json --max-bytes "$MAX" --repeats "$REPEATS" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
if [ -x "$MPIBENCH" ] && command -v mpirun >/dev/null; then
  echo "# OpenMPI over TCP on the same links" >&2
  app=()
  for r in $(seq 0 $((N - 1))); do
    [ "$r" -gt 0 ] && app+=(":")
    app+=(-n 1 ip netns exec tsb${id}r$r "$MPIBENCH" --max-bytes "$MAX" --repeats "$REPEATS")
  done
  ip netns exec "$hub" mpirun --allow-run-as-root --oversubscribe --mca btl tcp,self \
    --mca btl_tcp_if_include 10.78.0.0/24 --mca oob_tcp_if_include 10.78.0.0/24 "${app[@]}"
else
  echo "# OpenMPI comparison skipped: run scripts/build-mpi-bench.sh" >&2
fi
