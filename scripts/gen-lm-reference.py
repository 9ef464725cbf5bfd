#!/usr/bin/env python3
"""Reference forward passes for the real test models, in NumPy f32 from dequantized weights.

Writes crates/tessera-lm/tests/fixtures/reference_logits.json: for each model and prompt (token
ids), the top-10 next-token logits at the last position, plus the greedy continuation of a few
tokens. The Rust test compares tessera's forward pass (quantized kernels) against it.

The forward passes are written from the papers / llama.cpp's graph conventions, independently of
tessera's code: Llama (RMSNorm, rope on adjacent pairs as llama.cpp's converter permutes q/k,
SwiGLU) and Gemma 3 (embedding scale, q/k RMSNorm, post-norms, GELU-tanh, local layers with
rope base 1e4 and a 512 window, every 6th layer global with base 1e6).

    .cache/bench-venv/bin/pip install numpy gguf
    .cache/bench-venv/bin/python scripts/gen-lm-reference.py prompts.json

prompts.json: {"smollm2": {"text": [ids...], ...}, "gemma3": {...}} (ids from tessera's
tokenizer, which tests/tokenizer_vocab.rs checks against llama.cpp's vectors).
"""
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf import quants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.environ.get("TESSERA_MODELS", os.path.join(ROOT, ".cache", "models"))
FILES = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
}
GREEDY_STEPS = 8


class Weights:
    def __init__(self, path):
        self.r = GGUFReader(path)
        self.t = {t.name: t for t in self.r.tensors}
        self.cache = {}

    def meta(self, key, default=None):
        f = self.r.fields.get(key)
        if f is None:
            return default
        v = f.parts[f.data[0]]
        if v.dtype == np.uint8 and len(v) > 1:
            return bytes(v).decode()
        return v[0].item()

    def has(self, name):
        return name in self.t

    def get(self, name):
        if name not in self.cache:
            t = self.t[name]
            a = quants.dequantize(t.data, t.tensor_type)
            shape = [int(d) for d in reversed(t.shape)]
            self.cache[name] = np.asarray(a, dtype=np.float32).reshape(shape)
        return self.cache[name]


def rms(x, w, eps):
    x = x.astype(np.float32)
    return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)) * w


def rope(x, pos, base, style):
    # x: (t, h, d)
    d = x.shape[-1]
    inv = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = pos[:, None].astype(np.float64) * inv[None, :]
    c = np.cos(ang).astype(np.float32)[:, None, :]
    s = np.sin(ang).astype(np.float32)[:, None, :]
    if style == "pairs":
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out
    x0, x1 = x[..., : d // 2], x[..., d // 2 :]
    return np.concatenate([x0 * c - x1 * s, x1 * c + x0 * s], axis=-1)


def attention(q, k, v, scale, window):
    # q (t, h, d), k/v (t, hk, d); causal (+ sliding window)
    t, h, d = q.shape
    hk = k.shape[1]
    rep = h // hk
    out = np.zeros_like(q)
    i = np.arange(t)[:, None]
    j = np.arange(t)[None, :]
    allowed = j <= i
    if window is not None:
        allowed &= j > i - window
    for head in range(h):
        kh = k[:, head // rep, :]
        vh = v[:, head // rep, :]
        s = (q[:, head, :] * scale) @ kh.T
        s = np.where(allowed, s, -np.inf)
        s = s - s.max(axis=-1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=-1, keepdims=True)
        out[:, head, :] = p @ vh
    return out


def silu(x):
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def forward(w, ids):
    arch = w.meta("general.architecture")
    m = lambda k, d=None: w.meta(f"{arch}.{k}", d)
    n_layer = m("block_count")
    hidden = m("embedding_length")
    heads = m("attention.head_count")
    kv_heads = m("attention.head_count_kv", heads)
    head_dim = m("attention.key_length", hidden // heads)
    eps = m("attention.layer_norm_rms_epsilon", 1e-5)
    base = m("rope.freq_base", 10000.0)
    gemma = arch == "gemma3"
    window = m("attention.sliding_window") if gemma else None
    emb = w.get("token_embd.weight")
    x = emb[np.array(ids)].astype(np.float32)
    if gemma:
        x = x * np.float32(np.sqrt(hidden))
    t = len(ids)
    pos = np.arange(t)
    for l in range(n_layer):
        p = f"blk.{l}."
        h = rms(x, w.get(p + "attn_norm.weight"), eps)
        q = (h @ w.get(p + "attn_q.weight").T).reshape(t, heads, head_dim)
        k = (h @ w.get(p + "attn_k.weight").T).reshape(t, kv_heads, head_dim)
        v = (h @ w.get(p + "attn_v.weight").T).reshape(t, kv_heads, head_dim)
        local = gemma and (l + 1) % 6 != 0
        if gemma:
            q = rms(q, w.get(p + "attn_q_norm.weight"), eps)
            k = rms(k, w.get(p + "attn_k_norm.weight"), eps)
            b = 10000.0 if local else base
            q, k = rope(q, pos, b, "half"), rope(k, pos, b, "half")
        else:
            q, k = rope(q, pos, base, "pairs"), rope(k, pos, base, "pairs")
        a = attention(q, k, v, 1.0 / np.sqrt(head_dim), window if local else None)
        a = a.reshape(t, heads * head_dim) @ w.get(p + "attn_output.weight").T
        if gemma:
            a = rms(a, w.get(p + "post_attention_norm.weight"), eps)
        x = x + a
        h = rms(x, w.get(p + "ffn_norm.weight"), eps)
        g = h @ w.get(p + "ffn_gate.weight").T
        g = gelu_tanh(g) if gemma else silu(g)
        f = (g * (h @ w.get(p + "ffn_up.weight").T)) @ w.get(p + "ffn_down.weight").T
        if gemma:
            f = rms(f, w.get(p + "post_ffw_norm.weight"), eps)
        x = x + f
    x = rms(x[-1:], w.get("output_norm.weight"), eps)
    out = w.get("output.weight") if w.has("output.weight") else emb
    return (x @ out.T)[0]


def main():
    prompts = json.load(open(sys.argv[1]))
    result = {}
    for model, cases in prompts.items():
        path = os.path.join(MODELS, FILES[model])
        print(f"{model}: loading {path}", file=sys.stderr)
        w = Weights(path)
        entries = []
        for text, ids in cases.items():
            logits = forward(w, ids)
            top = np.argsort(-logits)[:10]
            greedy, margins = [], []
            seq = list(ids)
            for _ in range(GREEDY_STEPS):
                step = forward(w, seq) if greedy else logits
                order = np.argsort(-step)
                greedy.append(int(order[0]))
                # How far the winner is ahead: a tie closer than the engines' rounding
                # differences may legitimately go either way.
                margins.append(float(step[order[0]] - step[order[1]]))
                seq.append(int(order[0]))
            entries.append(
                {
                    "text": text,
                    "ids": ids,
                    "top_ids": [int(i) for i in top],
                    "top_logits": [float(logits[i]) for i in top],
                    "greedy": greedy,
                    "greedy_margins": margins,
                }
            )
            print(f"  {text!r}: top {top[:5].tolist()} greedy {greedy}", file=sys.stderr)
        result[model] = entries
    out = os.path.join(ROOT, "crates/tessera-lm/tests/fixtures/reference_logits.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
