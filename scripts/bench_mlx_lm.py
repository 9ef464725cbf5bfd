#!/usr/bin/env python3
"""mlx-lm's prompt and generation speed on an MLX checkpoint directory, measured as
`tessera bench llm` measures (pp: a prompt of N tokens into an empty cache; tg: N tokens generated
one at a time, greedy), so the two can be compared on the same directory (for example one
written by `tessera quantize`). Needs `mlx[cpu]` and `mlx-lm` (the bench venv of
scripts/compare-bench.sh, plus `pip install mlx-lm`); loads the weights only, no tokenizer.

    python scripts/bench_mlx_lm.py DIR [--prompt-tokens 512] [--gen-tokens 128] [--repeats 3]

Prints JSON lines {"case": "prefill_tps"|"decode_tps", "value": ..., "unit": "tok/s"}.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache
from mlx_lm.utils import load_model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    model, config = load_model(Path(a.model))
    vocab = config["vocab_size"]
    # The same deterministic ids as tessera's bench (skipping the first, often special, ids).
    n = max(a.prompt_tokens, 1)
    ids = [(1000 + (i * 7919) % max(vocab - 1000, 1)) % vocab for i in range(n)]

    def forward(cache, toks):
        logits = model(mx.array([toks]), cache=cache)
        mx.eval(logits)
        return logits

    forward(make_prompt_cache(model), ids[:64])  # warm-up
    pp, tg = [], []
    for _ in range(max(a.repeats, 1)):
        if a.prompt_tokens > 0:
            cache = make_prompt_cache(model)
            t = time.perf_counter()
            for s in range(0, a.prompt_tokens, 512):
                forward(cache, ids[s : s + 512])
            pp.append(a.prompt_tokens / (time.perf_counter() - t))
        if a.gen_tokens > 0:
            cache = make_prompt_cache(model)
            tok = ids[0]
            t = time.perf_counter()
            for _ in range(a.gen_tokens):
                logits = forward(cache, [tok])
                tok = int(mx.argmax(logits[0, -1]).item())
            tg.append(a.gen_tokens / (time.perf_counter() - t))
    for case, v in (("prefill_tps", pp), ("decode_tps", tg)):
        if v:
            print(json.dumps({"case": case, "value": statistics.median(v), "unit": "tok/s"}))


if __name__ == "__main__":
    main()
