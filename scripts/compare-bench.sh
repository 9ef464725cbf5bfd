#!/usr/bin/env bash
# Compare `tessera bench ops --json` with NumPy / PyTorch / MLX (CPU) on this machine and print a
# Markdown section (machine info + table) on stdout, ready to paste into BENCHMARKS.md.
#
# Usage: scripts/compare-bench.sh [--quick] [--peer numpy|torch|mlx|all] [--threads N]
#                                 [--skip-tessera | --tessera-json FILE] [--save DIR]
#   --quick is passed to both tessera and the peers; extra tessera CLI flags: TESSERA_BENCH_ARGS="...".
#   --tessera-json reuses saved `tessera bench ops --json` output; --save keeps the raw JSON lines.
#
# The peers live in a throwaway venv (.cache/bench-venv, gitignored): numpy + threadpoolctl,
# torch (the default PyPI wheel; the pytorch.org CPU index is not needed) and mlx[cpu] when a
# wheel exists for this platform. Progress and diagnostics go to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.cache/bench-venv"
QUICK=""
PEER="all"
THREADS=2
SKIP_TESSERA=0
TESSERA_JSON=""
SAVE_DIR=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK="--quick" ;;
        --peer) PEER="$2"; shift ;;
        --threads) THREADS="$2"; shift ;;
        --skip-tessera) SKIP_TESSERA=1 ;;
        --tessera-json) TESSERA_JSON="$(realpath "$2")"; shift ;;
        --save) SAVE_DIR="$(realpath -m "$2")"; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
cd "$ROOT"

log() { echo "[compare-bench] $*" >&2; }

# --- peer venv -----------------------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import numpy, threadpoolctl" 2>/dev/null; then
    log "installing numpy threadpoolctl"
    "$PY" -m pip install -q --upgrade pip >&2
    "$PY" -m pip install -q numpy threadpoolctl >&2
fi
if [[ "$PEER" == all || "$PEER" == torch ]] && ! "$PY" -c "import torch" 2>/dev/null; then
    log "installing torch (default PyPI wheel; large download)"
    "$PY" -m pip install -q torch >&2 || log "torch unavailable, skipping it"
fi
if [[ "$PEER" == all || "$PEER" == mlx ]] && ! "$PY" -c "import mlx.core" 2>/dev/null; then
    log "installing mlx[cpu]"
    "$PY" -m pip install -q "mlx[cpu]" >&2 || log "mlx[cpu] unavailable on this platform, skipping it"
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# --- tessera ---------------------------------------------------------------------------------------
if [[ -n "$TESSERA_JSON" ]]; then
    cp "$TESSERA_JSON" "$TMP/tessera.jsonl"
elif [[ "$SKIP_TESSERA" == 0 ]]; then
    log "running tessera bench ops (release build)"
    # same thread budget as the peers; extra CLI args via TESSERA_BENCH_ARGS (e.g. "--quick")
    # shellcheck disable=SC2086
    if ! TESSERA_NUM_THREADS="$THREADS" RAYON_NUM_THREADS="$THREADS" \
            cargo run --release -q -p tessera-cli -- bench ops --json $QUICK ${TESSERA_BENCH_ARGS:-} \
            > "$TMP/tessera.jsonl"; then
        log "tessera bench failed; its column will be empty"
    fi
else
    : > "$TMP/tessera.jsonl"
fi

# --- peers -----------------------------------------------------------------------------------------
log "running peers ($PEER)"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" "$ROOT/scripts/bench_peers.py" \
    --peer "$PEER" --threads "$THREADS" $QUICK > "$TMP/peers.jsonl"
if [[ -n "$SAVE_DIR" ]]; then
    mkdir -p "$SAVE_DIR"
    cp "$TMP/tessera.jsonl" "$TMP/peers.jsonl" "$SAVE_DIR/"
fi

# --- machine info + table --------------------------------------------------------------------------
CPU="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
NCPU="$(nproc 2>/dev/null || echo '?')"
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo 'uncommitted')"
if [[ -n "$(git status --porcelain 2>/dev/null | head -1)" ]]; then COMMIT="$COMMIT (dirty)"; fi
RUSTC="$(rustc --version 2>/dev/null || echo 'rustc ?')"
VERSIONS="$("$PY" - <<'EOF'
import importlib
out = []
for name, mod in (("numpy", "numpy"), ("torch", "torch"), ("mlx", "mlx.core")):
    try:
        out.append(f"{name} {importlib.import_module(mod).__version__}")
    except Exception:
        out.append(f"{name} n/a")
print(", ".join(out))
EOF
)"

"$PY" - "$TMP/tessera.jsonl" "$TMP/peers.jsonl" <<EOF
import json, sys
ORDER = ["matmul_f32_256", "matmul_f32_1024", "matmul_f32_2048", "matmul_f32_4096", "matmul_bf16_2048",
         "gemv_f32_4096x4096", "gemv_bf16_4096x11008", "add_f32_16M", "exp_f32_16M", "sum_f32_16M",
         "softmax_f32_4096x4096", "op_overhead_chain100"]
LOWER_IS_BETTER = {"us", "us/op", "ms", "s", "ns", "ns/op"}

def load(path, default_peer):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "case" in d and isinstance(d.get("value"), (int, float)):
                d.setdefault("peer", default_peer)
                rows.append(d)
    return rows

vals, units = {}, {}
for d in load(sys.argv[1], "tessera"):
    vals[(d["case"], "tessera")] = float(d["value"])
    units.setdefault(d["case"], d.get("unit", ""))
for d in load(sys.argv[2], "?"):
    vals[(d["case"], d["peer"])] = float(d["value"])
    units.setdefault(d["case"], d.get("unit", ""))
cases = [c for c in ORDER if c in units] + sorted(c for c in units if c not in ORDER)

def fmt(v):
    if v is None:
        return "–"
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"

print("### CPU op benchmarks")
print()
print("- CPU: $CPU ($NCPU logical CPUs), threads: $THREADS")
print("- date: $(date -u +%Y-%m-%dT%H:%MZ), commit: $COMMIT")
print("- $RUSTC; peers: $VERSIONS")
print()
print("| case | unit | tessera | numpy | torch | mlx | tessera/best-peer |")
print("|---|---|---:|---:|---:|---:|---:|")
for c in cases:
    u = units[c]
    t = vals.get((c, "tessera"))
    peers = {p: vals.get((c, p)) for p in ("numpy", "torch", "mlx")}
    avail = [v for v in peers.values() if v is not None]
    ratio = "–"
    if t is not None and avail:
        if u in LOWER_IS_BETTER:
            ratio = f"{min(avail) / t:.2f}x"
        else:
            ratio = f"{t / max(avail):.2f}x"
    print(f"| {c} | {u} | {fmt(t)} | {fmt(peers['numpy'])} | {fmt(peers['torch'])} | {fmt(peers['mlx'])} | {ratio} |")
print()
print("Ratio > 1 means tessera is faster than the best peer (for time units it is best-peer time / tessera time).")
print("Medians of 7 runs after warm-up (3 with --quick); GFLOPS = 2n^3/t; GB/s counts the bytes each op must read and write.")
EOF
