#!/usr/bin/env python3
"""Generate golden fixtures for the GGUF block formats: crates/tessera-core/tests/fixtures/quant/.

Usage:
    python3 -m venv .venv-fixtures && .venv-fixtures/bin/pip install gguf numpy
    .venv-fixtures/bin/python scripts/gen-quant-fixtures.py           # (re)write the fixtures
    .venv-fixtures/bin/python scripts/gen-quant-fixtures.py --check   # fail if they would change

Files (JSON, byte strings as lowercase hex, f32 values as the hex of their little-endian bits):
  dequant.json   [{"type", "n", "blocks", "values"}]: random blocks of every format and their
                 values from gguf-py's numpy reference (`gguf.quants.dequantize`), which
                 reproduces ggml's dequantize_row_* float arithmetic. Q8_1 and Q8_K are not in
                 gguf-py: their values (d * q in float32) are computed here.
  quantize.json  [{"type", "n", "input", "blocks"}]: float rows and the blocks gguf-py's
                 reference quantizers write (bit-exact ports of ggml's quantize_row_*_ref) for
                 Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Blocks are random bytes with their scale fields replaced by finite f16 values (normal,
subnormal, zero, negative), so every bit pattern of the quants is exercised.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

OUT = Path(__file__).resolve().parent.parent / "crates/tessera-core/tests/fixtures/quant"

# name -> (block values, block bytes, offsets of f16 fields, offset of an f32 field or None)
FORMATS = {
    "F16": (1, 2, [], None),
    "BF16": (1, 2, [], None),
    "Q4_0": (32, 18, [0], None),
    "Q4_1": (32, 20, [0, 2], None),
    "Q5_0": (32, 22, [0], None),
    "Q5_1": (32, 24, [0, 2], None),
    "Q8_0": (32, 34, [0], None),
    "Q8_1": (32, 36, [0, 2], None),
    "IQ4_NL": (32, 18, [0], None),
    "Q2_K": (256, 84, [80, 82], None),
    "Q3_K": (256, 110, [108], None),
    "Q4_K": (256, 144, [0, 2], None),
    "Q5_K": (256, 176, [0, 2], None),
    "Q6_K": (256, 210, [208], None),
    "Q8_K": (256, 292, [], 0),
}


def hexf32(a: np.ndarray) -> str:
    return np.ascontiguousarray(a, dtype="<f4").tobytes().hex()


def scale_values(rng: np.random.Generator, n: int) -> np.ndarray:
    """Finite scales: mostly normal small values, plus zero, a subnormal, negatives, large."""
    v = (rng.standard_normal(n) * 0.02).astype(np.float32)
    special = np.array([0.0, 2.0**-20, -3.5, 1.25e-3, -0.0, 65504.0], dtype=np.float32)
    k = min(n, len(special))
    v[:k] = special[:k]
    rng.shuffle(v)
    return v


def dequant_case(rng: np.random.Generator, name: str) -> dict:
    bs, ts, f16_at, f32_at = FORMATS[name]
    nblocks = {1: 64, 32: 8, 256: 3}[bs]
    if name in ("F16", "BF16"):
        vals = (rng.standard_normal(nblocks) * 3).astype(np.float32)
        vals[:4] = [0.0, -0.0, 6.0e-8, -65504.0]
        if name == "F16":
            raw = vals.astype(np.float16).view(np.uint8)
        else:
            raw = quants.quantize(vals, T.BF16).view(np.uint8)
        blocks = raw.reshape(nblocks, ts).copy()
    else:
        blocks = rng.integers(0, 256, size=(nblocks, ts), dtype=np.uint8)
        for off in f16_at:
            blocks[:, off:off + 2] = scale_values(rng, nblocks).astype(np.float16).view(np.uint8).reshape(nblocks, 2)
        if f32_at is not None:
            blocks[:, f32_at:f32_at + 4] = scale_values(rng, nblocks).view(np.uint8).reshape(nblocks, 4)
    flat = blocks.reshape(-1)
    if name == "F16":
        values = flat.view(np.float16).astype(np.float32)
    elif name == "Q8_1":
        d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
        q = blocks[:, 4:36].copy().view(np.int8).astype(np.float32)
        values = (q * d).reshape(-1)
    elif name == "Q8_K":
        d = blocks[:, 0:4].copy().view(np.float32)
        q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        values = (d * q).reshape(-1)
    else:
        values = quants.dequantize(flat, T[name]).reshape(-1)
    assert values.dtype == np.float32 and values.size == nblocks * bs
    return {"type": name, "n": int(values.size), "blocks": flat.tobytes().hex(), "values": hexf32(values)}


def quantize_case(rng: np.random.Generator, name: str) -> dict:
    bs = 32
    rows = [
        rng.standard_normal(8 * bs) * 0.05,
        rng.uniform(-4, 4, 8 * bs),
        rng.standard_normal(8 * bs) + 1.5,  # all-positive-ish blocks (mins above zero)
    ]
    x = np.concatenate(rows).astype(np.float32)
    x[0:32] = 0.0  # an all-zero block
    x[32:64] = 0.25  # a constant block
    x[64:96] = np.round(x[64:96] * 16) / 16  # values on a grid (ties in the rounding)
    blocks = quants.quantize(x, T[name]).reshape(-1)
    return {"type": name, "n": int(x.size), "input": hexf32(x), "blocks": blocks.tobytes().hex()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(20240917)
    files = {
        "dequant.json": [dequant_case(rng, n) for n in FORMATS],
        "quantize.json": [quantize_case(rng, n) for n in ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]],
    }
    stale = []
    for fname, cases in files.items():
        text = json.dumps(cases, indent=1) + "\n"
        path = OUT / fname
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(fname)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path} ({len(text)} bytes)", file=sys.stderr)
    if stale:
        print(f"stale: {stale} (rerun scripts/gen-quant-fixtures.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
