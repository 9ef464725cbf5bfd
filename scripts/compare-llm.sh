#!/usr/bin/env bash
# tessera vs llama.cpp on the same GGUF files, 2 threads, interleaved runs (this VM is shared and
# noisy: each round runs both engines back to back; the table reports per-round medians).
#
#   scripts/fetch-models.sh && scripts/build-llama-cpp.sh
#   .cache/bench-venv/bin/python scripts/make-random-qwen-gguf.py   # the 0.5B-shape files
#   cargo build --release -p tessera-cli
#   scripts/compare-llm.sh [ROUNDS]  > .cache/compare-llm.jsonl
#
# PROMPT_TOKENS (512) and GEN_TOKENS (128; 0 for prefill only) set the lengths, LLAMA_FLAGS adds
# llama-bench options (say "-fa 1" for its flash attention), MODELS picks files (space-separated).
#
# Prints JSON lines {"model", "engine", "round", "prefill_tps", "decode_tps"}; tessera's also carry
# its weight streaming rate and the read bandwidth measured right after (the roofline).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
models="${TESSERA_MODELS:-$root/.cache/models}"
bench="$root/.cache/llama.cpp/build/bin/llama-bench"
tessera="${TESSERA_BIN:-$root/target/release/tessera}"
rounds="${1:-3}"
prompt="${PROMPT_TOKENS:-512}"
gen="${GEN_TOKENS:-128}"
llama_flags="${LLAMA_FLAGS:-}"
model_list="${MODELS:-SmolLM2-135M-Instruct.Q4_1.gguf gemma-3-270m-q4_k_m.gguf qwen2.5-0.5b-shape-random-q4_0.gguf qwen2.5-0.5b-shape-random-q8_0.gguf}"
[ -x "$bench" ] || { echo "build llama.cpp first: scripts/build-llama-cpp.sh" >&2; exit 1; }
[ -x "$tessera" ] || { echo "build tessera first: cargo build --release -p tessera-cli" >&2; exit 1; }
for r in $(seq 1 "$rounds"); do
    for m in $model_list; do
        f="$models/$m"
        [ -f "$f" ] || { echo "skipping missing $f" >&2; continue; }
        # shellcheck disable=SC2086 # LLAMA_FLAGS is a list of options
        "$bench" -m "$f" -t 2 -p "$prompt" -n "$gen" -r 1 $llama_flags -o json 2>/dev/null | python3 -c '
import json, sys
rows = json.load(sys.stdin)
pp = [x["avg_ts"] for x in rows if x["n_prompt"] > 0]
tg = [x["avg_ts"] for x in rows if x["n_gen"] > 0]
out = {"model": sys.argv[1], "engine": "llama.cpp " + sys.argv[3] if sys.argv[3] else "llama.cpp", "round": int(sys.argv[2])}
if pp: out["prefill_tps"] = round(pp[0], 1)
if tg: out["decode_tps"] = round(tg[0], 1)
print(json.dumps(out))' "$m" "$r" "$llama_flags"
        TESSERA_NUM_THREADS=2 "$tessera" bench llm --model "$f" --prompt-tokens "$prompt" --gen-tokens "$gen" --repeats 1 --json | python3 -c '
import json, sys
v = {json.loads(l)["case"]: json.loads(l)["value"] for l in sys.stdin}
out = {"model": sys.argv[1], "engine": "tessera", "round": int(sys.argv[2])}
for key, digits in [("prefill_tps", 1), ("decode_tps", 1), ("decode_weight_gbps", 2), ("read_bw_gbps", 1), ("decode_pct_of_read_bw", 1)]:
    if key in v: out[key] = round(v[key], digits)
print(json.dumps(out))' "$m" "$r"
    done
done
