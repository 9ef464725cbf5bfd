#!/usr/bin/env python3
"""Small model files written by the reference Python libraries, for tessera-io's reader tests.

    .cache/bench-venv/bin/pip install numpy gguf safetensors
    .cache/bench-venv/bin/python scripts/gen-io-fixtures.py

Writes crates/tessera-io/tests/fixtures/: small.gguf (gguf-py's GGUFWriter: every metadata type,
F32/F16/Q8_0/Q4_0 tensors), small.safetensors (safetensors.numpy), a few .npy/.npz files, and
expected.json with the values each holds.
"""
import json
import os

import numpy as np
from gguf import GGUFWriter, GGMLQuantizationType, quants
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/tessera-io/tests/fixtures")
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(0)
expected = {}

# GGUF
w = GGUFWriter(os.path.join(OUT, "small.gguf"), "llama")
w.add_uint8("t.u8", 200)
w.add_int8("t.i8", -5)
w.add_uint16("t.u16", 60000)
w.add_int16("t.i16", -30000)
w.add_uint32("t.u32", 4000000000)
w.add_int32("t.i32", -2000000000)
w.add_float32("t.f32", 1.5)
w.add_bool("t.bool", True)
w.add_string("t.str", "héllo ✓")
w.add_uint64("t.u64", 2**63 + 5)
w.add_int64("t.i64", -(2**62))
w.add_float64("t.f64", 0.1)
w.add_array("t.arr_i32", [1, -2, 3])
w.add_array("t.arr_str", ["a", "bc", ""])
a = rng.standard_normal((3, 4)).astype(np.float32)
h = rng.standard_normal((2, 8)).astype(np.float16)
q = rng.standard_normal((2, 64)).astype(np.float32)
q8 = quants.quantize(q, GGMLQuantizationType.Q8_0)
q4 = quants.quantize(q, GGMLQuantizationType.Q4_0)
w.add_tensor("a", a)
w.add_tensor("h", h)
w.add_tensor("q8", q8, raw_shape=q8.shape, raw_dtype=GGMLQuantizationType.Q8_0)
w.add_tensor("q4", q4, raw_shape=q4.shape, raw_dtype=GGMLQuantizationType.Q4_0)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
expected["gguf"] = {
    "a": a.ravel().tolist(),
    "h": h.astype(np.float32).ravel().tolist(),
    "q8_dequant": quants.dequantize(q8, GGMLQuantizationType.Q8_0).ravel().tolist(),
    "q4_dequant": quants.dequantize(q4, GGMLQuantizationType.Q4_0).ravel().tolist(),
}

# safetensors
st = {
    "w.f32": rng.standard_normal((2, 3)).astype(np.float32),
    "w.f16": rng.standard_normal((4,)).astype(np.float16),
    "w.i64": np.arange(6, dtype=np.int64).reshape(3, 2),
    "w.u8": np.arange(5, dtype=np.uint8),
}
save_file(st, os.path.join(OUT, "small.safetensors"), metadata={"format": "pt", "note": "tessera test"})
expected["safetensors"] = {k: v.astype(np.float64).ravel().tolist() for k, v in st.items()}

# npy / npz
np.save(os.path.join(OUT, "f32_c.npy"), np.arange(12, dtype=np.float32).reshape(3, 4))
np.save(os.path.join(OUT, "f64_fortran.npy"), np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)))
np.save(os.path.join(OUT, "i32_be.npy"), np.arange(4, dtype=">i4"))
np.save(os.path.join(OUT, "bool_scalar.npy"), np.array(True))
np.savez(os.path.join(OUT, "pair.npz"), x=np.arange(3, dtype=np.int64), y=np.ones((2, 2), np.float32))
np.savez_compressed(os.path.join(OUT, "pair_compressed.npz"), x=np.arange(3, dtype=np.int64), y=np.ones((2, 2), np.float32))

with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(expected, f)
print("wrote", OUT)
