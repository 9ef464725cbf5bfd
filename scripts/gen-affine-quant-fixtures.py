#!/usr/bin/env python3
"""Golden fixtures for tessera-core's MLX-style affine quantization
(crates/tessera-core/tests/affine_quant.rs).

Runs MLX itself (`pip install mlx`, CPU wheels exist for Linux) on small matrices and records,
for every bits in {1, 2, 3, 4, 5, 6, 8} x group size in {32, 64, 128} x dtype in
{float32, bfloat16, float16}:

- `mx.quantize(w, group_size, bits)`: the packed uint32 words, the scales and the biases;
- `mx.dequantize(...)` of those (MLX rounds `scale * q` to the dtype, then adds the bias and
  rounds again; tessera reproduces that bit for bit);
- `mx.quantized_matmul(x, ...)` with `transpose=True` (x @ Wᵀ) and `transpose=False` (x2 @ W, one row).
  For float32 the MLX result is stored. For bfloat16/float16 MLX's CPU kernel accumulates in the
  half type (errors of a few percent), so the file stores instead an f64 reference computed from
  the x values and the exact affine weights `scale * q + bias` (MLX's scales, biases and codes);
  tessera accumulates in f32 from those exact values.

Arrays are stored as base64 of their little-endian bytes (f32: 4 bytes, bf16/f16: 2, u32: 4) to
keep the file small. Usage:

    .cache/bench-venv/bin/python scripts/gen-affine-quant-fixtures.py
"""

import base64
import json
import os

import mlx.core as mx
import numpy as np

OUT = os.path.join(
    os.path.dirname(__file__),
    "..",
    "crates",
    "tessera-core",
    "tests",
    "fixtures",
    "affine_quant",
    "mlx.json",
)

DTYPES = {"f32": mx.float32, "bf16": mx.bfloat16, "f16": mx.float16}


def raw(a, dtype):
    """Little-endian bytes of an MLX array as base64 (half types as their 16-bit patterns)."""
    if dtype in ("bf16", "f16"):
        bits = np.array(a.view(mx.uint16))
        data = bits.astype("<u2").tobytes()
    elif dtype == "u32":
        data = np.array(a).astype("<u4").tobytes()
    else:
        data = np.array(a).astype("<f4").tobytes()
    return base64.b64encode(data).decode("ascii")


def f64_raw(a):
    return base64.b64encode(np.asarray(a, dtype="<f4").tobytes()).decode("ascii")


def weights(rng, rows, cols, special):
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    # Mixed magnitudes per row, and one row skewed positive so both edge cases (|min| > |max|
    # and the opposite) appear.
    w[0] *= 0.05
    w[1] = np.abs(w[1]) + 0.1
    if special:
        w[2, :32] = 0.0  # an all-zero group: scale clamps to eps
        w[3, :32] = 0.75  # a constant group
        w[3, 32:64] = np.linspace(-1e-3, 2e-3, 32)  # tiny range
    return w


def main():
    rng = np.random.default_rng(20250611)
    cases = []
    rows, cols, m = 4, 128, 2
    for dtype_name, dtype in DTYPES.items():
        for bits in (1, 2, 3, 4, 5, 6, 8):
            for gs in (32, 64, 128):
                special = bits in (2, 4, 8)
                w = mx.array(weights(rng, rows, cols, special)).astype(dtype)
                wq, scales, biases = mx.quantize(w, group_size=gs, bits=bits)
                deq = mx.dequantize(wq, scales, biases, group_size=gs, bits=bits)
                case = {
                    "dtype": dtype_name,
                    "bits": bits,
                    "group_size": gs,
                    "shape": [rows, cols],
                    "w": raw(w, dtype_name),
                    "w_q": raw(wq, "u32"),
                    "scales": raw(scales, dtype_name),
                    "biases": raw(biases, dtype_name),
                }
                # The f32 dequantization is `scale * q + bias` in f32 (checked against MLX for
                # every case when this was written); stored for one group size to save space.
                if dtype_name != "f32" or gs == 64:
                    case["dequantized"] = raw(deq, dtype_name)
                # Matmuls for a subset (f32 everywhere; half types for 4 and 8 bits) to keep
                # the file small.
                if dtype_name == "f32" or bits in (4, 8):
                    x = mx.array(rng.standard_normal((m, cols)).astype(np.float32)).astype(dtype)
                    x2 = mx.array(rng.standard_normal((1, rows)).astype(np.float32)).astype(dtype)
                    # The exact affine values scale * q + bias (q from a dequantization with
                    # unit scales and zero biases), in f64.
                    q = mx.dequantize(
                        wq,
                        mx.ones(scales.shape, dtype=mx.float32),
                        mx.zeros(biases.shape, dtype=mx.float32),
                        group_size=gs,
                        bits=bits,
                    )
                    s64 = np.repeat(np.array(scales.astype(mx.float32)).astype(np.float64), gs, 1)
                    b64 = np.repeat(np.array(biases.astype(mx.float32)).astype(np.float64), gs, 1)
                    d64 = s64 * np.array(q).astype(np.float64) + b64
                    if dtype_name == "f32":
                        y = mx.quantized_matmul(
                            x, wq, scales, biases, transpose=True, group_size=gs, bits=bits
                        )
                        y2 = mx.quantized_matmul(
                            x2, wq, scales, biases, transpose=False, group_size=gs, bits=bits
                        )
                        y, y2 = np.array(y), np.array(y2)
                    else:
                        xf = np.array(x.astype(mx.float32)).astype(np.float64)
                        x2f = np.array(x2.astype(mx.float32)).astype(np.float64)
                        y, y2 = xf @ d64.T, x2f @ d64
                    case.update(
                        {
                            "m": m,
                            "x": raw(x, dtype_name),
                            "y": f64_raw(y),
                            "m2": 1,
                            "x2": raw(x2, dtype_name),
                            "y2": f64_raw(y2),
                            "y_source": "mlx" if dtype_name == "f32" else "f64 reference",
                        }
                    )
                cases.append(case)
    doc = {
        "generator": "scripts/gen-affine-quant-fixtures.py",
        "mlx_version": mx.__version__,
        "cases": cases,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
