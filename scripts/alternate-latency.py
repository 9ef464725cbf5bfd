#!/usr/bin/env python3
"""Small-message all_sum latency of several tessera builds and OpenMPI, in alternated rounds.

The machine's speed moves between minutes, so builds timed one after the other compare the
minutes; here every round launches each build once and then OpenMPI's own MPI_Allreduce
(scripts/mpi_allreduce_bench.c, built by scripts/build-mpi-bench.sh), and the table gives the
median over rounds of each round's figure (each itself the median of 30 repetitions of the
slowest rank).

Usage:
  scripts/alternate-latency.py [--rounds 9] [--ranks 2] [--max-bytes 1024] NAME=BINARY...
Columns: NAME/latency (the all_sum graph op: build the node, eval), NAME/comm_latency (the ring
backend's communicator called directly), ompi.
"""
import argparse, collections, json, os, statistics, subprocess

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
d = collections.defaultdict(list)


def collect(lines, name):
    for line in lines:
        line = line.removeprefix("[0] ")
        if "latency" not in line:
            continue
        r = json.loads(line)
        _, _, _, size, what = r["case"].split("/")
        d[(size, name if name == "ompi" else f"{name}/{what}")].append(r["value"])


n = str(a.ranks)
for i in range(a.rounds):
    for v in a.variants:
        name, binary = v.split("=", 1)
        cmd = [binary, "launch", "-n", n, "--", binary, "bench", "collectives", "--json",
               "--repeats", "30", "--max-bytes", a.max_bytes]
        collect(subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines(), name)
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-n", n, mpi, "--repeats", "30",
           "--max-bytes", a.max_bytes]
    collect(subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines(), "ompi")
    print(f"round {i + 1}/{a.rounds} done", flush=True)


def size_bytes(s):
    return int(s[:-3]) * 1024 if s.endswith("KiB") else int(s[:-1])


cols = sorted({k[1] for k in d}, key=lambda c: (c == "ompi", c))
print("| size | " + " | ".join(cols) + " |")
print("|---" * (len(cols) + 1) + "|")
for s in sorted({k[0] for k in d}, key=size_bytes):
    cells = [f"{statistics.median(d[(s, c)]):.2f} µs" if d.get((s, c)) else "-" for c in cols]
    print(f"| {s} | " + " | ".join(cells) + " |")
