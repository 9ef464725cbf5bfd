#!/usr/bin/env python3
"""Alternated A/B rounds of `tessera bench ops|train --json` for several builds or settings,
with NumPy in every round, and the median per case.

This machine's speed moves by up to 2x from minute to minute, so two builds measured one after
the other compare the minutes, not the builds. Each round here runs every variant once, in the
same order; the medians over rounds are what BENCHMARKS.md reports.

Usage:
  scripts/alternate-bench.py [--rounds 4] [--threads 2] [--filter matmul_f32_] [--train]
                             [--numpy CASE,CASE] VARIANT...
A VARIANT is NAME=BINARY, optionally followed by :ENV=VALUE,ENV=VALUE (environment settings for
that variant only). `--numpy` adds NumPy via scripts/bench_peers.py (needs .cache/bench-venv,
made by scripts/compare-bench.sh). Example:
  scripts/alternate-bench.py --rounds 5 --numpy matmul_f32_1024,matmul_f32_2048 \\
      old=/tmp/tessera-old new=target/release/tessera new1t=target/release/tessera:TESSERA_NUM_THREADS=1
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_variant(text):
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        sys.exit(f"variant {text!r}: expected NAME=BINARY[:ENV=VALUE,...]")
    binary, _, envs = rest.partition(":")
    env = {}
    for kv in filter(None, envs.split(",")):
        key, sep, value = kv.partition("=")
        if not sep:
            sys.exit(f"variant {text!r}: {kv!r} is not ENV=VALUE")
        env[key] = value
    if not os.access(binary, os.X_OK):
        sys.exit(f"variant {name}: {binary} is not an executable (build it first)")
    return name, binary, env


def json_lines(text):
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "case" in row and "value" in row:
            yield row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--filter", default="matmul_f32_")
    ap.add_argument("--train", action="store_true", help="run `bench train` instead of `bench ops`")
    ap.add_argument("--numpy", default="", help="comma-separated bench_peers.py cases")
    ap.add_argument("variants", nargs="+")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variants]
    python = os.path.join(ROOT, ".cache", "bench-venv", "bin", "python")
    if args.numpy and not os.access(python, os.X_OK):
        sys.exit(f"--numpy needs {python}: run scripts/compare-bench.sh --peer numpy once")

    results = {}  # name -> case -> [values]
    for r in range(args.rounds):
        for name, binary, extra in variants:
            env = dict(os.environ, TESSERA_NUM_THREADS=args.threads)
            env.update(extra)
            cmd = [binary, "bench", "train" if args.train else "ops", "--json", "--filter", args.filter]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                sys.exit(f"{name}: {' '.join(cmd)} failed:\n{out.stderr}")
            for row in json_lines(out.stdout):
                results.setdefault(name, {}).setdefault(row["case"], []).append(row["value"])
        if args.numpy:
            cmd = [python, os.path.join(ROOT, "scripts", "bench_peers.py"), "--peer", "numpy",
                   "--threads", args.threads, "--cases", args.numpy]
            out = subprocess.run(cmd, capture_output=True, text=True)
            for row in json_lines(out.stdout):
                results.setdefault("numpy", {}).setdefault(row["case"], []).append(row["value"])
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    for name, cases in results.items():
        for case, values in cases.items():
            listed = " ".join(f"{v:.4g}" for v in values)
            print(f"{name:12} {case:32} median {statistics.median(values):8.4g}   [{listed}]")


if __name__ == "__main__":
    main()
