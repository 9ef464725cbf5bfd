#!/usr/bin/env python3
"""Writes a Qwen2.5-0.5B-shaped model with random weights as GGUF (Q4_0 and Q8_0), for the
decode roofline benchmark: tessera and llama.cpp read the same file.

    .cache/bench-venv/bin/pip install numpy gguf
    .cache/bench-venv/bin/python scripts/make-random-qwen-gguf.py        # -> .cache/models/

Shape (Qwen2.5-0.5B): hidden 896, 24 layers, 14 heads (2 kv) of 64, ffn 4864, vocab 151936,
tied embeddings, q/k/v biases. The tokenizer is Qwen2's, copied from llama.cpp's
ggml-vocab-qwen2.gguf test vocabulary (fetched by scripts/fetch-models.sh).
"""
import os
import sys

import numpy as np
from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType, GGUFValueType, quants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.environ.get("TESSERA_MODELS", os.path.join(ROOT, ".cache", "models"))
H, L, NH, NKV, HD, FF, V = 896, 24, 14, 2, 64, 4864, 151936


def copy_tokenizer(w, vocab_path):
    r = GGUFReader(vocab_path)
    for name, f in r.fields.items():
        if not name.startswith("tokenizer."):
            continue
        t = f.types[0]
        if t == GGUFValueType.ARRAY:
            sub = f.types[1]
            if sub == GGUFValueType.STRING:
                vals = [bytes(f.parts[i]).decode("utf-8", errors="surrogateescape") for i in f.data]
            else:
                vals = [f.parts[i][0].item() for i in f.data]
            w.add_array(name, vals)
        elif t == GGUFValueType.STRING:
            w.add_string(name, bytes(f.parts[f.data[0]]).decode())
        elif t == GGUFValueType.BOOL:
            w.add_bool(name, bool(f.parts[f.data[0]][0]))
        elif t in (GGUFValueType.UINT32, GGUFValueType.INT32):
            w.add_uint32(name, int(f.parts[f.data[0]][0]))
        else:
            w.add_key_value(name, f.parts[f.data[0]][0].item(), t)


def main():
    vocab = os.path.join(MODELS, "vocab", "ggml-vocab-qwen2.gguf")
    if not os.path.exists(vocab):
        sys.exit(f"{vocab} is missing: run scripts/fetch-models.sh")
    rng = np.random.default_rng(0)
    for qname, qtype in [("q4_0", GGMLQuantizationType.Q4_0), ("q8_0", GGMLQuantizationType.Q8_0)]:
        out = os.path.join(MODELS, f"qwen2.5-0.5b-shape-random-{qname}.gguf")
        if os.path.exists(out):
            print(f"{out} exists", file=sys.stderr)
            continue
        w = GGUFWriter(out + ".partial", "qwen2")
        w.add_name(f"random Qwen2.5-0.5B shape ({qname})")
        w.add_block_count(L)
        w.add_context_length(32768)
        w.add_embedding_length(H)
        w.add_feed_forward_length(FF)
        w.add_head_count(NH)
        w.add_head_count_kv(NKV)
        w.add_rope_freq_base(1000000.0)
        w.add_layer_norm_rms_eps(1e-6)
        w.add_file_type(2 if qtype == GGMLQuantizationType.Q4_0 else 7)
        copy_tokenizer(w, vocab)

        def mat(name, rows, cols, scale=0.02):
            a = (rng.standard_normal((rows, cols), dtype=np.float32) * scale).astype(np.float32)
            q = quants.quantize(a, qtype)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)

        def vec(name, n, value=None):
            a = np.full(n, value, np.float32) if value is not None else (rng.standard_normal(n, dtype=np.float32) * 0.02)
            w.add_tensor(name, a.astype(np.float32))

        print(f"writing {out}", file=sys.stderr)
        mat("token_embd.weight", V, H)
        vec("output_norm.weight", H, 1.0)
        for i in range(L):
            p = f"blk.{i}."
            vec(p + "attn_norm.weight", H, 1.0)
            mat(p + "attn_q.weight", NH * HD, H)
            vec(p + "attn_q.bias", NH * HD)
            mat(p + "attn_k.weight", NKV * HD, H)
            vec(p + "attn_k.bias", NKV * HD)
            mat(p + "attn_v.weight", NKV * HD, H)
            vec(p + "attn_v.bias", NKV * HD)
            mat(p + "attn_output.weight", H, NH * HD)
            vec(p + "ffn_norm.weight", H, 1.0)
            mat(p + "ffn_gate.weight", FF, H)
            mat(p + "ffn_up.weight", FF, H)
            mat(p + "ffn_down.weight", H, FF)
            print(f"  layer {i + 1}/{L}", file=sys.stderr, end="\r")
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.rename(out + ".partial", out)
        print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
