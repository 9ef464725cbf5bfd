#!/usr/bin/env python3
"""Small-message all_sum latency of one or more tessera builds and OpenMPI, in alternated rounds.

The machine's speed moves between minutes, so builds timed one after the other compare the
minutes; here every round launches each build once and then OpenMPI's own MPI_Allreduce
(scripts/mpi_allreduce_bench.c, built by scripts/build-mpi-bench.sh). Per size, each cell is
the median over rounds of each round's figure (itself the median of 30 repetitions of the
slowest rank), with the range over rounds.

Usage:
  scripts/alternate-latency.py [--rounds 9] [--ranks 2] [--max-bytes 1024] NAME=BINARY...
Columns per build: graph (tessera's all_sum op: build the node, eval: what a program pays) and
comm (the ring backend's communicator called directly: the transport alone), then ompi, then
OpenMPI's time over each of them (above 1: tessera faster). With a single build the columns
are not prefixed with its name. (scripts/compare-collectives-latency.sh runs this for
target/release/tessera.)
"""
import argparse, collections, json, os, statistics, subprocess, sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--rounds", type=int, default=9)
p.add_argument("--ranks", type=int, default=2)
p.add_argument("--max-bytes", default="1024")
p.add_argument("variants", nargs="+", help="NAME=BINARY (a tessera binary)")
a = p.parse_args()
mpi = os.path.join(root, ".cache/mpi-bench/mpi_allreduce_bench")
if not os.access(mpi, os.X_OK):
    raise SystemExit("build the MPI peer first: scripts/build-mpi-bench.sh")
variants = [v.split("=", 1) for v in a.variants]
for name, binary in variants:
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"{name}: {binary} is not an executable (cargo build --release -p tessera-cli)")
prefix = (lambda name: f"{name} ") if len(variants) > 1 else (lambda name: "")
what_col = {"latency": "graph", "comm_latency": "comm"}
d = collections.defaultdict(list)


def collect(lines, name):
    for line in lines:
        line = line.removeprefix("[0] ")
        if "latency" not in line:
            continue
        r = json.loads(line)
        _, _, _, size, what = r["case"].split("/")
        d[(size, "ompi" if name is None else prefix(name) + what_col[what])].append(r["value"])


n = str(a.ranks)
for i in range(a.rounds):
    print(f"round {i + 1}/{a.rounds}", file=sys.stderr, flush=True)
    for name, binary in variants:
        cmd = [binary, "launch", "-n", n, "--", binary, "bench", "collectives", "--json",
               "--repeats", "30", "--max-bytes", a.max_bytes]
        collect(subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines(), name)
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", n, mpi, "--repeats", "30",
           "--max-bytes", a.max_bytes]
    collect(subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines(), None)


def size_bytes(s):
    return int(s[:-3]) * 1024 if s.endswith("KiB") else int(s[:-1])


cols = [prefix(name) + c for name, _ in variants for c in ("graph", "comm")] + ["ompi"]
ratios = [prefix(name) + c for name, _ in variants for c in ("comm", "graph")]
print("| size | " + " | ".join(cols + [f"ompi / {c}" for c in ratios]) + " |")
print("|---" * (len(cols) + len(ratios) + 1) + "|")
for s in sorted({k[0] for k in d}, key=size_bytes):
    med = {c: statistics.median(d[(s, c)]) for c in cols if d.get((s, c))}
    cells = [f"{med[c]:.2f} µs ({min(d[(s, c)]):.2f}-{max(d[(s, c)]):.2f})" if c in med else "-"
             for c in cols]
    cells += [f"{med['ompi'] / med[c]:.2f}x" if c in med and "ompi" in med else "-" for c in ratios]
    print(f"| {s} | " + " | ".join(cells) + " |")
