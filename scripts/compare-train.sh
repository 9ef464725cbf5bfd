#!/usr/bin/env bash
# Compare `tessera bench train --json` with PyTorch and MLX (CPU) on this machine: ROUNDS rounds,
# each running tessera then the peers back to back (so every ratio is taken in the same minutes),
# then a Markdown section on stdout with per-round values, medians and ratios, ready for
# BENCHMARKS.md.
#
# Usage: scripts/compare-train.sh [--rounds 3] [--peer torch|mlx|all] [--threads 2]
#
# Needs a release build (`cargo build --release -p tessera-cli`) and the peer venv that
# scripts/compare-bench.sh creates (.cache/bench-venv with torch and mlx[cpu]). MLX's CPU build
# is slow on the MLP step here (a round with MLX takes about 3 minutes, one without about 1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS=3
PEER=all
THREADS=2
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift ;;
        --peer) PEER="$2"; shift ;;
        --threads) THREADS="$2"; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
cd "$ROOT"
PY="$ROOT/.cache/bench-venv/bin/python"
BIN="$ROOT/target/release/tessera"
[[ -x "$PY" ]] || { echo "no peer venv: run scripts/compare-bench.sh once to create it" >&2; exit 1; }
[[ -x "$BIN" ]] || { echo "no release build: cargo build --release -p tessera-cli" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
for r in $(seq "$ROUNDS"); do
    echo "[compare-train] round $r/$ROUNDS: tessera" >&2
    TESSERA_NUM_THREADS="$THREADS" "$BIN" bench train --json | sed "s/}\$/, \"round\": $r}/" \
        >> "$TMP/all.jsonl"
    echo "[compare-train] round $r/$ROUNDS: peers ($PEER)" >&2
    "$PY" "$ROOT/scripts/bench_train_peers.py" --peer "$PEER" --threads "$THREADS" 2>/dev/null \
        | sed "s/}\$/, \"round\": $r}/" >> "$TMP/all.jsonl"
done

COMMIT="$(git rev-parse --short HEAD)"
CPU="$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
"$PY" - "$TMP/all.jsonl" "$COMMIT" "$CPU" "$THREADS" <<'EOF'
import collections, datetime, json, statistics, sys
path, commit, cpu, threads = sys.argv[1:]
vals = collections.defaultdict(list)  # (case, peer) -> values in round order
units = {}
for line in open(path):
    d = json.loads(line)
    vals[(d["case"], d.get("peer", "tessera"))].append(d["value"])
    units[d["case"]] = d["unit"]
peers = [p for p in ("torch", "mlx") if any(k[1] == p for k in vals)]
print(f"- {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, commit {commit}, {cpu}, {threads} threads")
print()
head = "| case | unit | tessera | " + " | ".join(peers) + " | " + \
    " | ".join(f"tessera vs {p}" for p in peers) + " |"
print(head)
print("|" + "---|" * (2 + 2 * len(peers) + 1))
def cell(v):
    return ", ".join(f"{x:.3g}" if x < 100 else f"{x:.0f}" for x in v) if v else "–"
for case in units:
    t = vals.get((case, "tessera"), [])
    row = [case, units[case], cell(t)] + [cell(vals.get((case, p), [])) for p in peers]
    for p in peers:
        v = vals.get((case, p), [])
        if t and v:
            # Speed ratio (> 1: tessera faster), the median of the per-round ratios.
            rs = [(a / b if units[case] == "steps/s" else b / a) for a, b in zip(t, v)]
            row.append(f"{statistics.median(rs):.2f}x")
        else:
            row.append("–")
    print("| " + " | ".join(row) + " |")
add = vals.get(("add_f32_16M_reference", "tessera"))
print()
for case in ("chain10_compiled_16M", "chain10_cheap_compiled_16M"):
    c = vals.get((case, "tessera"))
    if add and c:
        rs = [a / b for a, b in zip(c, add)]
        print(f"- {case} / tessera's add: " + ", ".join(f"{r:.2f}" for r in rs) +
              f" (median {statistics.median(rs):.2f}; the transforms issue's target is at most 1.5)")
EOF
