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
mpi="$root/.cache/mpi-bench/mpi_allreduce_bench"
[ -x "$t" ] || { echo "build first: cargo build --release -p tessera-cli" >&2; exit 1; }
[ -x "$mpi" ] || { echo "build the MPI peer first: scripts/build-mpi-bench.sh" >&2; exit 1; }
table=$(cat <<'PY'
import sys, json, collections, statistics
d = collections.defaultdict(list)
for line in sys.stdin:
    r = json.loads(line)
    _, backend, _, size, what = r["case"].split("/")
    d[(size, backend + "/" + what)].append(r["value"])
def size_bytes(s):
    return int(s[:-3]) * 1024 if s.endswith("KiB") else int(s[:-1])
cols = {"ring/latency": "graph", "ring/comm_latency": "comm", "openmpi/latency": "ompi"}
print("| size | " + " | ".join(cols.values()) + " | ompi / comm | ompi / graph |")
print("|---" * (len(cols) + 3) + "|")
for s in sorted({k[0] for k in d}, key=size_bytes):
    med = {c: statistics.median(d[(s, k)]) for k, c in cols.items() if d.get((s, k))}
    cells = []
    for k, c in cols.items():
        v = d.get((s, k))
        cells.append(f"{med[c]:.2f} µs ({min(v):.2f}-{max(v):.2f})" if v else "-")
    def ratio(c):
        return f"{med['ompi'] / med[c]:.2f}x" if c in med and "ompi" in med else "-"
    print(f"| {s} | " + " | ".join(cells) + f" | {ratio('comm')} | {ratio('graph')} |")
PY
)
for i in $(seq "$rounds"); do
    echo "round $i/$rounds" >&2
    "$t" launch -n "$n" -- "$t" bench collectives --json --repeats 30 --max-bytes "$max" \
        2>/dev/null | sed 's/^\[0\] //' | grep latency
    mpirun --allow-run-as-root --oversubscribe -n "$n" "$mpi" --repeats 30 --max-bytes "$max" \
        2>/dev/null | grep latency
done | python3 -c "$table"
