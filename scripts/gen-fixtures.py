#!/usr/bin/env python3
"""Generate golden op fixtures for tessera: tests/fixtures/ops/<family>.json.

Usage:
    python3 -m venv .venv-fixtures && .venv-fixtures/bin/pip install numpy ml_dtypes
    .venv-fixtures/bin/python scripts/gen-fixtures.py            # (re)write the fixtures
    .venv-fixtures/bin/python scripts/gen-fixtures.py --check    # fail if files would change
    .venv-fixtures/bin/python scripts/gen-fixtures.py --verify-mlx   # needs `pip install mlx[cpu]`:
        re-runs every case whose op exists in MLX through mlx.core and reports disagreements
        (dtype, shape, value, error-vs-success). MLX is only a semantics oracle; golden values
        always come from NumPy, computed in float64 from the exact stored inputs, then cast.

Everything is deterministic (fixed seeds, no dependence on dict/hash order).
See tests/fixtures/ops/README.md for the file format and kwargs conventions.

Type promotion (MLX 0.32 rules, checked with `mx.add` on every pair; row op column):

             bool    uint8   uint32    int32    int64  float16 bfloat16  float32  float64
    bool     bool    uint8   uint32    int32    int64  float16 bfloat16  float32  float64
    uint8    uint8   uint8   uint32    int32    int64  float16 bfloat16  float32  float64
    uint32   uint32  uint32  uint32    int64    int64  float16 bfloat16  float32  float64
    int32    int32   int32   int64     int32    int64  float16 bfloat16  float32  float64
    int64    int64   int64   int64     int64    int64  float16 bfloat16  float32  float64
    float16  float16 float16 float16   float16  float16 float16 float32  float32  float64
    bfloat16 bf16    bf16    bf16      bf16     bf16    float32 bfloat16 float32  float64
    float32  float32 float32 float32   float32  float32 float32 float32  float32  float64
    float64  float64 float64 float64   float64  float64 float64 float64  float64  float64

  (any integer/bool with any float -> that float; float16 with bfloat16 -> float32;
   uint32 with int32 -> int64; 0-d arrays are NOT weakly typed: only Python scalars are.)
Op-specific output dtypes (MLX):
  * "inexact" unary ops (exp, log, sin, sqrt, sigmoid, erf, reciprocal, ...) and divide, arctan2,
    logaddexp, mean, var, std, logsumexp, softmax, log_softmax: integer/bool -> float32,
    floats keep their dtype.
  * abs, sign, square, floor, ceil, round, negative, maximum, minimum, floor_divide,
    remainder, power, bitwise ops: the (promoted) input dtype (negative(bool) is an error,
    bitwise ops on floats are errors).
  * comparisons, logical_*, isnan, isinf, isclose, allclose, all, any: bool.
  * sum/prod: bool -> int32, uint8 -> uint32, others keep.  cumsum: bool -> int32, others keep.
  * argmax, argmin, argsort, argpartition: uint32.
  * Python-scalar kwargs (clip a_min/a_max, full vals) are weakly typed: an int array clipped
    with 2.5 becomes float32, a float16 array clipped with 0.5 stays float16.
"""
import argparse
import json
import math
import os
import sys
import warnings

import ml_dtypes
import numpy as np

# overflow to inf when casting specials to float16/bfloat16 is intended
warnings.filterwarnings("ignore", category=RuntimeWarning)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "ops")

BF16 = np.dtype(ml_dtypes.bfloat16)
DT = {
    "bool": np.dtype(np.bool_),
    "uint8": np.dtype(np.uint8),
    "uint32": np.dtype(np.uint32),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "float16": np.dtype(np.float16),
    "bfloat16": BF16,
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}
NAMES = list(DT)
FLOATS = ["float16", "bfloat16", "float32", "float64"]
INTS = ["uint8", "uint32", "int32", "int64"]
SIGNED_INTS = ["int32", "int64"]

_PROMO_TEXT = """
bool     bool     uint8    uint32   int32    int64    float16  bfloat16 float32  float64
uint8    uint8    uint8    uint32   int32    int64    float16  bfloat16 float32  float64
uint32   uint32   uint32   uint32   int64    int64    float16  bfloat16 float32  float64
int32    int32    int32    int64    int32    int64    float16  bfloat16 float32  float64
int64    int64    int64    int64    int64    int64    float16  bfloat16 float32  float64
float16  float16  float16  float16  float16  float16  float16  float32  float32  float64
bfloat16 bfloat16 bfloat16 bfloat16 bfloat16 bfloat16 float32  bfloat16 float32  float64
float32  float32  float32  float32  float32  float32  float32  float32  float32  float64
float64  float64  float64  float64  float64  float64  float64  float64  float64  float64
"""
PROMO = {}
for _line in _PROMO_TEXT.strip().splitlines():
    _parts = _line.split()
    for _col, _res in zip(NAMES, _parts[1:]):
        PROMO[(_parts[0], _col)] = _res


def promote(*dts):
    out = dts[0]
    for d in dts[1:]:
        out = PROMO[(out, d)]
    return out


def is_float(d):
    return d in FLOATS


def inexact(d):
    """Output dtype of an 'inexact' op (exp, divide, mean...)."""
    return d if is_float(d) else "float32"


def sum_dtype(d):
    return {"bool": "int32", "uint8": "uint32"}.get(d, d)


# ----------------------------------------------------------------------------------------------
# Tolerances: |actual - expected| <= atol + rtol * |expected|  (non-finite must match exactly)
# ----------------------------------------------------------------------------------------------
TOL = {
    #            exact/arith      transcendental    reductions
    "float32": ((1e-6, 1e-6), (5e-6, 1e-6), (1e-5, 1e-5)),
    "float64": ((1e-12, 1e-12), (1e-12, 1e-12), (1e-10, 1e-10)),
    "float16": ((1e-3, 1e-3), (2e-3, 2e-3), (5e-3, 2e-2)),
    "bfloat16": ((1e-2, 1e-2), (2e-2, 2e-2), (2e-2, 1e-1)),
}
KIND = {"arith": 0, "transc": 1, "reduce": 2}


def tol(dtype, kind="arith"):
    if dtype not in TOL:
        return 0.0, 0.0
    return TOL[dtype][KIND[kind]]


# ----------------------------------------------------------------------------------------------
# Tensors, views, JSON encoding
# ----------------------------------------------------------------------------------------------
def apply_view(arr, steps):
    for st in steps:
        (k, v), = st.items()
        if k == "transpose":
            arr = np.transpose(arr, v)
        elif k == "slice":
            arr = arr[tuple(slice(*s) for s in v)]
        elif k == "broadcast_to":
            arr = np.broadcast_to(arr, tuple(v))
        else:
            raise ValueError(k)
    return arr


def cast(arr, dtype):
    return np.asarray(arr).astype(DT[dtype])


def f64(arr):
    return np.asarray(arr).astype(np.float64)


def wrap(e, dtype):
    """Two's-complement wrap of int64 results into an integer dtype (like the hardware)."""
    e = np.asarray(e).astype(np.int64)
    bits = 8 * DT[dtype].itemsize
    if bits == 64:
        return e
    m = 1 << bits
    e = e % m
    if not dtype.startswith("u"):
        e = np.where(e >= m // 2, e - m, e)
    return e


class T:
    """A fixture tensor: base array (stored dtype) + optional view steps."""

    def __init__(self, dtype, data, shape=None, view=None):
        a = np.asarray(data)
        if dtype == "bool":
            a = a.astype(bool)
        elif a.dtype.kind == "f" and dtype in INTS:
            a = a.astype(np.int64)
        a = a.astype(DT[dtype])
        if shape is not None:
            a = a.reshape(shape)
        self.dtype = dtype
        self.base = a
        self.view = list(view or [])
        self.v = apply_view(a, self.view)

    def json(self):
        d = {"dtype": self.dtype, "shape": list(self.base.shape), "data": enc_data(self.base, self.dtype)}
        if self.view:
            d["view"] = self.view
        return d


def enc_float(x, dtype):
    f = float(x)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    if f == 0.0:
        return -0.0 if math.copysign(1.0, f) < 0 else 0.0
    if dtype == "float64":
        return f
    target = np.asarray(x).astype(DT[dtype])
    for p in range(1, 18):
        g = float(f"{f:.{p}g}")
        # consumers parse JSON numbers to f64 and then round to the dtype: check that path
        if np.asarray(g, dtype=np.float64).astype(DT[dtype]) == target:
            return int(g) if g.is_integer() and abs(g) < 2**53 else g
    return f


def enc_data(arr, dtype):
    flat = np.ascontiguousarray(arr).reshape(-1)
    if dtype == "bool":
        return [bool(x) for x in flat]
    if dtype in INTS:
        return [int(x) for x in flat]
    return [enc_float(x, dtype) for x in flat]


def dec_tensor(d):
    """Decode a fixture tensor (used by --verify-mlx and the self-check)."""
    dtype = d["dtype"]
    vals = d["data"]
    if dtype in FLOATS:
        vals = [float(v) if isinstance(v, str) else v for v in vals]
        a = np.asarray(vals, dtype=np.float64).astype(DT[dtype])
    elif dtype == "bool":
        a = np.asarray(vals, dtype=bool)
    else:
        a = np.asarray(vals, dtype=DT[dtype])
    a = a.reshape(d["shape"])
    return apply_view(a, d.get("view", []))


def out(arr, dtype):
    """Expected tensor from a float64/int result: cast to the output dtype."""
    a = np.asarray(arr)
    if dtype in INTS and a.dtype.kind == "f":
        a = np.trunc(a).astype(np.int64)
    return T(dtype, cast(a, dtype))


# ----------------------------------------------------------------------------------------------
# Family builder
# ----------------------------------------------------------------------------------------------
class Family:
    def __init__(self, name, seed):
        self.name = name
        self.cases = []
        self.ids = set()
        self.rng = np.random.default_rng(seed)

    def add(self, id_, op, inputs, kwargs, expected, rtol=0.0, atol=0.0, **extra):
        if id_ in self.ids:
            raise ValueError(f"duplicate id {id_}")
        self.ids.add(id_)
        c = {"id": id_, "op": op, "inputs": [t.json() for t in inputs], "kwargs": kwargs}
        for t in inputs + (expected if isinstance(expected, list) else [expected] if isinstance(expected, T) else []):
            back = dec_tensor(t.json())  # the encoding must round-trip exactly (f64 parse, then cast)
            same = back.shape == t.v.shape and back.dtype == t.v.dtype and (
                np.array_equal(f64(back), f64(t.v), equal_nan=True) if t.dtype in FLOATS else np.array_equal(back, t.v))
            if not same:
                raise AssertionError(f"{id_}: tensor does not round-trip")
        if isinstance(expected, T):
            c["expected"] = expected.json()
        elif isinstance(expected, list):
            c["expected"] = [e.json() for e in expected]
        elif isinstance(expected, dict):
            c["expected"] = expected
        elif expected is not None:
            raise TypeError(type(expected))
        c["rtol"] = float(rtol)
        c["atol"] = float(atol)
        c.update(extra)
        self.cases.append(c)

    def err(self, id_, op, inputs, kwargs, reason):
        self.add(id_, op, inputs, kwargs, {"error": reason})

    # random data helpers (values rounded to few decimals to keep the JSON small)
    def uniform(self, shape, lo=-3.0, hi=3.0, dec=3):
        return np.round(self.rng.uniform(lo, hi, size=shape), dec)

    def ints(self, shape, lo, hi):
        return self.rng.integers(lo, hi, size=shape, endpoint=False)

    def data(self, dtype, shape, lo=-3.0, hi=3.0):
        """Random tensor values suited to dtype (unsigned -> non-negative)."""
        if dtype == "bool":
            return self.rng.integers(0, 2, size=shape).astype(bool)
        if dtype in INTS:
            lo_i = 0 if dtype.startswith("u") else int(math.floor(lo)) * 3
            hi_i = max(int(math.ceil(hi)) * 3, lo_i + 2)
            return self.ints(shape, lo_i, hi_i)
        if dtype == "float16" or dtype == "bfloat16":
            return self.uniform(shape, lo, hi, 2)
        return self.uniform(shape, lo, hi)

    def t(self, dtype, shape, lo=-3.0, hi=3.0, view=None):
        return T(dtype, self.data(dtype, shape, lo, hi), shape, view)

    def write(self, check=False):
        path = os.path.join(OUT_DIR, f"{self.name}.json")
        lines = [json.dumps(c, separators=(",", ":"), allow_nan=False) for c in self.cases]
        text = '{"family":"%s","cases":[\n' % self.name + ",\n".join(lines) + "\n]}\n"
        if check:
            with open(path) as f:
                if f.read() != text:
                    raise SystemExit(f"{path} is stale; rerun scripts/gen-fixtures.py")
        else:
            with open(path, "w") as f:
                f.write(text)
        json.loads(text)
        return len(self.cases), len(text)


def shp(shape):
    return "x".join(str(s) for s in shape) if shape else "scalar"


# ==============================================================================================
# creation
# ==============================================================================================
def gen_creation():
    F = Family("creation", 1)
    for dt in NAMES:
        for shape in ([2, 3], [], [0, 3], [4]):
            F.add(f"zeros/{dt}/{shp(shape)}", "zeros", [], {"shape": shape, "dtype": dt},
                  T(dt, np.zeros(shape, DT[dt])))
            F.add(f"ones/{dt}/{shp(shape)}", "ones", [], {"shape": shape, "dtype": dt},
                  T(dt, np.ones(shape, DT[dt])))
    F.add("zeros/default_dtype", "zeros", [], {"shape": [3]}, T("float32", np.zeros(3)))
    F.add("ones/default_dtype", "ones", [], {"shape": [2, 2]}, T("float32", np.ones((2, 2))))
    for dt, val in [("float32", 3.5), ("float16", -1.25), ("bfloat16", 2.5), ("float64", 0.1),
                    ("int32", -7), ("int64", 123456789), ("uint8", 200), ("uint32", 7), ("bool", True),
                    ("float32", "inf"), ("float32", "nan")]:
        v = float(val) if isinstance(val, str) else val
        F.add(f"full/{dt}/{val}", "full", [], {"shape": [2, 3], "vals": val, "dtype": dt},
              T(dt, np.full((2, 3), v)))
    F.add("full/infer_int", "full", [], {"shape": [2, 2], "vals": 3}, T("int32", np.full((2, 2), 3)))
    F.add("full/infer_float", "full", [], {"shape": [3], "vals": 2.5}, T("float32", np.full(3, 2.5)))
    F.add("full/infer_bool", "full", [], {"shape": [2], "vals": False}, T("bool", np.zeros(2, bool)))
    F.add("full/scalar_shape", "full", [], {"shape": [], "vals": 4.0, "dtype": "float32"}, T("float32", np.float32(4)))
    F.add("full/empty", "full", [], {"shape": [0, 2], "vals": 1.0, "dtype": "float32"}, T("float32", np.zeros((0, 2))))
    F.add("full/cast_float_to_int", "full", [], {"shape": [2], "vals": 2.0, "dtype": "int32"}, T("int32", [2, 2]))

    # arange: values are start + i*step computed in float64 then cast (implementations that
    # accumulate in f32 differ by ~1 ulp, hence rtol 1e-5); length = ceil((stop-start)/step).
    aranges = [
        ({"start": 0, "stop": 5}, "int32"),
        ({"start": 0, "stop": 5, "step": 1}, "int32"),
        ({"start": 2, "stop": 11, "step": 3}, "int32"),
        ({"start": 5, "stop": 0, "step": -2}, "int32"),
        ({"start": -3, "stop": 3, "step": 2}, "int32"),
        ({"start": 5, "stop": 0, "step": 1}, "int32"),
        ({"start": 0, "stop": 0}, "int32"),
        ({"start": 0.0, "stop": 5.0}, "float32"),
        ({"start": 0, "stop": 1, "step": 0.3}, "float32"),
        ({"start": -1, "stop": 1, "step": 0.25}, "float32"),
        ({"start": 0.5, "stop": 3, "step": 0.5}, "float32"),
        ({"start": 1, "stop": -1, "step": -0.4}, "float32"),
        ({"start": 0, "stop": 1, "step": 0.1}, "float32"),
        ({"start": 0, "stop": 6, "step": 1, "dtype": "float32"}, "float32"),
        ({"start": 0, "stop": 6, "step": 2, "dtype": "int64"}, "int64"),
        ({"start": 0, "stop": 6, "step": 1, "dtype": "uint8"}, "uint8"),
        ({"start": 0, "stop": 2, "step": 0.25, "dtype": "float16"}, "float16"),
        ({"start": 0, "stop": 4, "step": 0.5, "dtype": "bfloat16"}, "bfloat16"),
        ({"start": 0, "stop": 1, "step": 0.125, "dtype": "float64"}, "float64"),
        ({"start": 0.0, "stop": 3.0, "step": 1.0, "dtype": "int32"}, "int32"),
    ]
    for kw, dt in aranges:
        start, stop, step = kw["start"], kw["stop"], kw.get("step", 1)
        n = max(0, math.ceil((stop - start) / step))
        vals = np.asarray([start + i * step for i in range(n)], dtype=np.float64)
        rt, at = (1e-5, 1e-6) if is_float(dt) else (0, 0)
        if dt in ("float16", "bfloat16"):
            rt, at = tol(dt)
        name = "_".join(f"{k}{v}" for k, v in kw.items() if k != "dtype")
        F.add(f"arange/{dt}/{name}" + ("/explicit_dtype" if "dtype" in kw else ""), "arange", [], kw,
              out(vals, dt), rt, at)
    F.err("arange/error/zero_step", "arange", [], {"start": 0, "stop": 5, "step": 0}, "step must be nonzero")

    # linspace(start, stop, num, dtype): num points, both ends included; values start + i*delta
    for kw in [{"start": 0, "stop": 1, "num": 5}, {"start": -2, "stop": 2, "num": 9},
               {"start": 1, "stop": 0, "num": 4}, {"start": 3, "stop": 7, "num": 1},
               {"start": 0, "stop": 1, "num": 0}, {"start": 0, "stop": 10, "num": 50},
               {"start": 0, "stop": 1, "num": 7, "dtype": "float64"},
               {"start": -1, "stop": 1, "num": 5, "dtype": "float16"},
               {"start": 0, "stop": 4, "num": 5, "dtype": "bfloat16"}]:
        dt = kw.get("dtype", "float32")
        vals = np.linspace(kw["start"], kw["stop"], kw["num"])
        rt, at = (1e-5, 1e-6) if dt == "float32" else tol(dt)
        F.add(f"linspace/{dt}/" + "_".join(f"{k}{v}" for k, v in kw.items() if k != "dtype"), "linspace", [], kw,
              out(vals, dt), rt, at)

    # eye(n, m=None, k=0, dtype=float32); tri(n, m=None, k=0, dtype=float32): ones at and below diagonal k
    for kw in [{"n": 3}, {"n": 2, "m": 4}, {"n": 4, "m": 2}, {"n": 3, "k": 1}, {"n": 3, "m": 4, "k": -1},
               {"n": 3, "k": 5}, {"n": 0}, {"n": 1}, {"n": 3, "dtype": "int32"}, {"n": 2, "dtype": "bool"},
               {"n": 3, "m": 3, "k": -2, "dtype": "float16"}, {"n": 2, "dtype": "bfloat16"}, {"n": 2, "dtype": "float64"}]:
        dt = kw.get("dtype", "float32")
        F.add("eye/" + dt + "/" + "_".join(f"{k}{v}" for k, v in kw.items() if k != "dtype"), "eye", [], kw,
              T(dt, np.eye(kw["n"], kw.get("m"), kw.get("k", 0))))
    for kw in [{"n": 3}, {"n": 2, "m": 4}, {"n": 4, "m": 2}, {"n": 3, "k": 1}, {"n": 3, "m": 4, "k": -1},
               {"n": 3, "k": -5}, {"n": 3, "k": 4}, {"n": 0}, {"n": 3, "dtype": "int32"}, {"n": 3, "dtype": "bool"},
               {"n": 2, "m": 3, "dtype": "float16"}, {"n": 3, "dtype": "float64"}]:
        dt = kw.get("dtype", "float32")
        F.add("tri/" + dt + "/" + "_".join(f"{k}{v}" for k, v in kw.items() if k != "dtype"), "tri", [], kw,
              T(dt, np.tri(kw["n"], kw.get("m"), kw.get("k", 0))))

    for dt in NAMES:
        x = F.t(dt, [2, 3])
        F.add(f"zeros_like/{dt}", "zeros_like", [x], {}, T(dt, np.zeros((2, 3))))
        F.add(f"ones_like/{dt}", "ones_like", [x], {}, T(dt, np.ones((2, 3))))
    x = F.t("float32", [3, 2], view=[{"transpose": [1, 0]}])
    F.add("zeros_like/float32/strided", "zeros_like", [x], {}, T("float32", np.zeros((2, 3))))
    F.add("ones_like/float32/empty", "ones_like", [T("float32", np.zeros((0, 4)))], {}, T("float32", np.zeros((0, 4))))
    F.add("ones_like/int32/scalar", "ones_like", [T("int32", 5)], {}, T("int32", 1))
    return F


# ==============================================================================================
# unary
# ==============================================================================================
SPECIAL = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0]


def gen_unary():
    F = Family("unary", 2)
    ufl = FLOATS

    # (op, numpy fn on float64, domain (lo, hi), kind, special values to append, int inputs allowed)
    def sigmoid(x):
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-x))

    import math as _m
    erf = np.vectorize(lambda v: _m.erf(v) if not _m.isnan(v) else float("nan"), otypes=[np.float64])

    def erfinv(y):
        y = np.asarray(y, np.float64)
        res = np.empty_like(y)
        for i, v in np.ndenumerate(y):
            if _m.isnan(v) or abs(v) > 1:
                res[i] = float("nan")
            elif v == 1:
                res[i] = float("inf")
            elif v == -1:
                res[i] = float("-inf")
            else:  # Newton on erf, starting from a rough guess; converges to f64 precision
                x = 0.0 if v == 0 else _m.copysign(_m.sqrt(-_m.log((1 - abs(v)) * (1 + abs(v)))), v) * 0.8
                for _ in range(100):
                    fx = _m.erf(x) - v
                    x_new = x - fx / (2 / _m.sqrt(_m.pi) * _m.exp(-x * x))
                    if x_new == x:
                        break
                    x = x_new
                res[i] = x
        return res

    with np.errstate(all="ignore"):
        float_ops = [
            ("exp", np.exp, (-5, 5), [88.0, 89.0, -104.0, 100.0, -100.0]),
            ("expm1", np.expm1, (-3, 3), [1e-6, -1e-6, 1e-3, 50.0, -50.0]),
            ("log", np.log, (0.01, 10), [-1.0, 1e-30, 1e30, 1.0]),
            ("log1p", np.log1p, (-0.9, 5), [1e-7, -1e-7, -1.0, -2.0]),
            ("log2", np.log2, (0.01, 10), [1024.0, 0.125, -1.0, 1.0]),
            ("sqrt", np.sqrt, (0, 10), [-1.0, 1e-30, 1e30, 4.0]),
            ("rsqrt", lambda x: 1.0 / np.sqrt(x), (0.01, 10), [-1.0, 4.0, 1e-30]),
            ("reciprocal", lambda x: 1.0 / x, (0.1, 5), [-2.0, 0.5, 1e30]),
            ("sin", np.sin, (-6.5, 6.5), [100.0, -50.0, 1e-8]),
            ("cos", np.cos, (-6.5, 6.5), [100.0, -50.0, 1e-8]),
            ("tan", np.tan, (-1.4, 1.4), [1e-8, -0.7853981633974483]),
            ("tanh", np.tanh, (-4, 4), [20.0, -20.0, 1e-8, 500.0]),
            ("sinh", np.sinh, (-4, 4), [1e-8, 50.0, -50.0, 100.0]),
            ("cosh", np.cosh, (-4, 4), [50.0, -50.0, 100.0]),
            ("arcsin", np.arcsin, (-1, 1), [1.0, -1.0, 1.5, 1e-8]),
            ("arccos", np.arccos, (-1, 1), [1.0, -1.0, 1.5]),
            ("arctan", np.arctan, (-10, 10), [1e30, -1e30, 1e-8]),
            ("sigmoid", sigmoid, (-8, 8), [50.0, -50.0, 100.0, -100.0, 200.0]),
            ("erf", erf, (-3, 3), [1e-8, 5.0, -5.0]),
            ("erfinv", erfinv, (-0.95, 0.95), [1.0, -1.0, 0.999, -0.999, 1.5]),
        ]
    for op, fn, (lo, hi), extras in float_ops:
        for dt in ufl:
            x = F.uniform([12], lo, hi, 2 if dt in ("float16", "bfloat16") else 3)
            if dt in ("float16", "bfloat16"):
                extras_dt = [e for e in extras if abs(e) < 60000 and (abs(e) > 1e-4 or e == 0)]
            else:
                extras_dt = extras
            vals = np.concatenate([x, np.asarray(extras_dt + SPECIAL, np.float64)])
            t = T(dt, vals)
            with np.errstate(all="ignore"):
                exp_ = fn(f64(t.v))
            rt, at = tol(dt, "transc")
            if op == "erfinv":  # steep near +-1: allow a bit more
                rt, at = rt * 4, at * 4
            F.add(f"{op}/{dt}/mixed", op, [t], {}, out(exp_, dt), rt, at)
        # 2-D strided input (transpose) in float32 and an empty input
        t = F.t("float32", [3, 4], lo, hi, view=[{"transpose": [1, 0]}])
        with np.errstate(all="ignore"):
            F.add(f"{op}/float32/transposed", op, [t], {}, out(fn(f64(t.v)), "float32"), *tol("float32", "transc"))
        F.add(f"{op}/float32/empty", op, [T("float32", np.zeros((0, 3)))], {}, T("float32", np.zeros((0, 3))))
        # integer input promotes to float32
        ilo, ihi = max(int(math.ceil(lo)), -5), min(int(math.floor(hi)), 5)
        if op in ("arcsin", "arccos", "erfinv"):
            ilo, ihi = -1, 1
            if op == "erfinv":
                ilo, ihi = 0, 0
        idata = np.arange(ilo, ihi + 1)
        if op in ("log", "log2", "rsqrt", "reciprocal"):
            idata = idata[idata > 0]
        ti = T("int32", idata)
        with np.errstate(all="ignore"):
            F.add(f"{op}/int32_to_float32", op, [ti], {}, out(fn(f64(ti.v)), "float32"), *tol("float32", "transc"))
    for op, fn in [("exp", np.exp), ("sqrt", np.sqrt), ("sigmoid", sigmoid)]:
        tb = T("bool", [True, False, True])
        F.add(f"{op}/bool_to_float32", op, [tb], {}, out(fn(f64(tb.v)), "float32"), *tol("float32", "transc"))
        tu = T("uint8", [0, 1, 4, 250])
        F.add(f"{op}/uint8_to_float32", op, [tu], {}, out(fn(f64(tu.v)), "float32"), *tol("float32", "transc"))
    # scalar input
    F.add("exp/float32/scalar", "exp", [T("float32", 1.0)], {}, out(np.exp(1.0), "float32"), *tol("float32", "transc"))
    F.add("sin/float32/scalar", "sin", [T("float32", 0.5)], {}, out(np.sin(np.float64(np.float32(0.5))), "float32"),
          *tol("float32", "transc"))
    # broadcast (stride-0) input
    t = T("float32", [0.5, -1.0, 2.0], view=[{"broadcast_to": [4, 3]}])
    F.add("exp/float32/broadcast_view", "exp", [t], {}, out(np.exp(f64(t.v)), "float32"), *tol("float32", "transc"))
    t = F.t("float32", [4, 6], 0.1, 5, view=[{"slice": [[None, None, -1], [1, None, 2]]}])
    F.add("log/float32/neg_step_slice", "log", [t], {}, out(np.log(f64(t.v)), "float32"), *tol("float32", "transc"))

    # exact-ish unary ops on all numeric dtypes
    def np_round(x):
        return np.round(x)

    exact_ops = [
        ("abs", np.abs), ("negative", np.negative), ("sign", np.sign), ("square", np.square),
        ("floor", np.floor), ("ceil", np.ceil), ("round", np_round),
    ]
    for op, fn in exact_ops:
        for dt in NAMES:
            if dt == "bool":
                if op == "negative":
                    F.err("negative/bool/error", "negative", [T("bool", [True, False])], {},
                          "negative is not supported for bool")
                    continue
                tb = T("bool", [True, False, True])
                e = {"abs": tb.v, "sign": tb.v, "square": tb.v, "floor": tb.v, "ceil": tb.v, "round": tb.v}[op]
                F.add(f"{op}/bool", op, [tb], {}, T("bool", e))
                continue
            if dt in INTS:
                if dt.startswith("u"):
                    vals = np.asarray([0, 1, 2, 7, 100, 13])
                    if op == "negative":
                        e = wrap(-vals.astype(np.int64), dt)
                    elif op == "square":
                        e = wrap(vals.astype(np.int64) ** 2, dt)
                    else:
                        e = fn(vals.astype(np.int64))
                else:
                    vals = np.asarray([-7, -1, 0, 1, 5, 100, -100, 46340 if dt == "int32" else 3037000499])
                    e = fn(vals.astype(np.int64))
                F.add(f"{op}/{dt}", op, [T(dt, vals)], {}, T(dt, cast(e, dt)))
                continue
            x = F.uniform([10], -10, 10, 2)
            sp = [0.5, 1.5, 2.5, -0.5, -2.5, 1e6 + 0.5] if op == "round" else []
            sp = sp + ([float("inf"), float("-inf"), 0.0, -0.0] if op != "sign" else [0.0, -0.0, float("inf"), float("-inf")])
            if op in ("abs", "negative", "square", "floor", "ceil", "round"):
                sp = sp + [float("nan")]
            if dt in ("float16", "bfloat16"):
                sp = [s for s in sp if not (abs(s) > 1000 and math.isfinite(s))]
            t = T(dt, np.concatenate([x, sp]))
            with np.errstate(all="ignore"):
                e = fn(f64(t.v))
            F.add(f"{op}/{dt}", op, [t], {}, out(e, dt), *tol(dt))
        t = F.t("float32", [3, 4], -5, 5, view=[{"slice": [[None, None, 2], [None, None, -1]]}])
        F.add(f"{op}/float32/strided", op, [t], {}, out(fn(f64(t.v)), "float32"), *tol("float32"))
        F.add(f"{op}/float32/empty", op, [T("float32", np.zeros((2, 0)))], {}, T("float32", np.zeros((2, 0))))
        F.add(f"{op}/float32/scalar", op, [T("float32", -2.5)], {}, out(fn(np.float64(-2.5)), "float32"))
    # round with decimals (round-half-to-even of x*10^d, then / 10^d): avoid exact ties
    t = T("float32", [1.2345, 2.5678, -3.14159, 0.001, 123.456, -0.049])
    F.add("round/float32/decimals2", "round", [t], {"decimals": 2}, out(np.round(f64(t.v), 2), "float32"), 1e-6, 1e-6)
    F.add("round/float32/decimals1", "round", [t], {"decimals": 1}, out(np.round(f64(t.v), 1), "float32"), 1e-6, 1e-6)
    F.add("round/float64/decimals3", "round", [T("float64", t.v.astype(np.float64))], {"decimals": 3},
          out(np.round(t.v.astype(np.float64), 3), "float64"), 1e-12, 1e-12)

    # predicates
    for op, fn in [("isnan", np.isnan), ("isinf", np.isinf)]:
        for dt in FLOATS:
            t = T(dt, [1.0, float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 65504.0 if dt == "float16" else 3e38 if dt != "float64" else 1e300])
            F.add(f"{op}/{dt}", op, [t], {}, T("bool", fn(f64(t.v))))
        for dt in ["int32", "uint8", "bool"]:
            t = T(dt, [0, 1, 1])
            F.add(f"{op}/{dt}", op, [t], {}, T("bool", [False, False, False]))
        t = T("float32", [float("nan"), 1.0, float("inf")], view=[{"broadcast_to": [2, 3]}])
        F.add(f"{op}/float32/broadcast_view", op, [t], {}, T("bool", fn(f64(t.v))))
    for dt in NAMES:
        if dt == "bool":
            t = T("bool", [True, False, False, True])
        elif dt in FLOATS:
            t = T(dt, [0.0, -0.0, 1.5, float("nan"), float("inf"), -2.0])
        else:
            t = T(dt, [0, 1, 2, 0, 7])
        F.add(f"logical_not/{dt}", "logical_not", [t], {}, T("bool", np.logical_not(t.v)))
    t = T("bool", [True, False, True, False, True, True], shape=[2, 3], view=[{"transpose": [1, 0]}])
    F.add("logical_not/bool/transposed", "logical_not", [t], {}, T("bool", np.logical_not(t.v)))
    for dt in NAMES:
        t = F.t(dt, [2, 3])
        F.add(f"stop_gradient/{dt}", "stop_gradient", [t], {}, T(dt, t.v))
    return F


# ==============================================================================================
# binary
# ==============================================================================================
def gen_binary():
    F = Family("binary", 3)
    arith = [("add", np.add), ("subtract", np.subtract), ("multiply", np.multiply),
             ("maximum", np.maximum), ("minimum", np.minimum)]
    cmp_ops = [("equal", np.equal), ("not_equal", np.not_equal), ("less", np.less),
               ("less_equal", np.less_equal), ("greater", np.greater), ("greater_equal", np.greater_equal)]

    def run(op, fn, a, b, out_dt, compute_dt, kind="arith", tag=""):
        """Cast both operands to compute_dt (MLX promotes first), evaluate in f64 (floats) or
        int64 (ints), cast to out_dt."""
        av, bv = cast(a.v, compute_dt), cast(b.v, compute_dt)
        with np.errstate(all="ignore"):
            if is_float(compute_dt):
                e = fn(f64(av), f64(bv))
            elif compute_dt == "bool":
                e = fn(av, bv)
            else:
                e = fn(av.astype(np.int64), bv.astype(np.int64))
        if out_dt in INTS and np.asarray(e).dtype.kind in "iu":
            e = wrap(e, out_dt)
        if out_dt == "bool":
            res = T("bool", np.asarray(e, bool))
        else:
            res = out(e, out_dt)
        rt, at = tol(out_dt, kind)
        F.add(f"{op}/{a.dtype}_{b.dtype}/{tag}" if tag else f"{op}/{a.dtype}_{b.dtype}", op, [a, b], {}, res, rt, at)

    # same-dtype coverage for every op/dtype
    for op, fn in arith:
        for dt in NAMES:
            if dt == "bool" and op in ("subtract",):
                continue
            a, b = F.t(dt, [2, 3]), F.t(dt, [2, 3])
            if dt == "bool":
                f = {"add": np.logical_or, "multiply": np.logical_and, "maximum": np.logical_or,
                     "minimum": np.logical_and}[op]
                F.add(f"{op}/bool_bool", op, [a, b], {}, T("bool", f(a.v, b.v)))
                continue
            if dt.startswith("u") and op == "subtract":
                a = T(dt, np.maximum(a.v, b.v))
            run(op, fn, a, b, dt, dt)
    # nan / inf / signed zero handling
    sp_a = T("float32", [float("nan"), 1.0, float("inf"), float("-inf"), 0.0, -0.0, float("inf"), 3.0])
    sp_b = T("float32", [1.0, float("nan"), float("-inf"), float("-inf"), -0.0, -0.0, 1.0, float("inf")])
    for op, fn in arith + [("divide", np.divide)]:
        run(op, fn, sp_a, sp_b, "float32", "float32", tag="special")
    # broadcasting shapes
    bshapes = [([3, 1], [1, 4], "3x1_1x4"), ([], [2, 3], "scalar_2x3"), ([2, 3], [], "2x3_scalar"),
               ([0, 3], [1, 3], "0x3_1x3"), ([2, 3], [3], "row"), ([4, 1], [4, 5], "col"),
               ([2, 1, 3], [4, 1], "rank3_rank2"), ([1], [5], "1_5"), ([], [], "scalar_scalar"),
               ([0], [], "empty_scalar"), ([2, 0, 3], [2, 1, 3], "2x0x3_2x1x3")]
    for sa, sb, name in bshapes:
        for op, fn in [("add", np.add), ("multiply", np.multiply), ("subtract", np.subtract)]:
            run(op, fn, F.t("float32", sa), F.t("float32", sb), "float32", "float32", tag=f"broadcast_{name}")
        run("add", np.add, F.t("int32", sa), F.t("int32", sb), "int32", "int32", tag=f"broadcast_{name}")
    for sa, sb in [([2, 3], [3, 2]), ([3], [4]), ([2, 3, 4], [3, 3, 4]), ([0], [2])]:
        for op in ("add", "multiply", "equal"):
            F.err(f"{op}/error/broadcast_{shp(sa)}_{shp(sb)}", op, [F.t("float32", sa), F.t("float32", sb)], {},
                  "shapes cannot be broadcast")
    # strided operands
    a = F.t("float32", [4, 3], view=[{"transpose": [1, 0]}])
    b = F.t("float32", [3, 8], view=[{"slice": [[None, None, -1], [1, None, 2]]}])
    for op, fn in arith:
        run(op, fn, a, b, "float32", "float32", tag="strided")
    a = F.t("float32", [3], view=[{"broadcast_to": [2, 3]}])
    b = F.t("float32", [2, 1], view=[{"broadcast_to": [2, 3]}])
    run("add", np.add, a, b, "float32", "float32", tag="both_broadcast_views")
    a = F.t("float32", [2, 3, 4], view=[{"transpose": [2, 0, 1]}, {"slice": [[1, 3]]}])
    b = F.t("float32", [3], view=[])
    run("multiply", np.multiply, a, b, "float32", "float32", tag="transpose_then_slice")
    # larger contiguous (exercise vector loops + tails)
    run("add", np.add, F.t("float32", [67]), F.t("float32", [67]), "float32", "float32", tag="len67")
    run("multiply", np.multiply, F.t("float16", [33]), F.t("float16", [33]), "float16", "float16", tag="len33")
    run("add", np.add, F.t("bfloat16", [33]), F.t("bfloat16", [33]), "bfloat16", "bfloat16", tag="len33")

    # mixed dtypes: promotion
    pairs = [("int32", "float32"), ("float32", "int32"), ("uint8", "int32"), ("uint32", "int32"), ("int32", "int64"),
             ("float16", "float32"), ("bfloat16", "float16"), ("bfloat16", "float32"), ("int32", "float16"),
             ("int64", "bfloat16"), ("bool", "int32"), ("bool", "float32"), ("uint8", "float16"),
             ("float32", "float64"), ("int64", "float32"), ("uint8", "uint32"), ("bool", "uint8"), ("float16", "float64")]
    for da, db in pairs:
        pd = promote(da, db)
        a, b = F.t(da, [2, 3]), F.t(db, [3], lo=0.0, hi=3.0)
        for op, fn in [("add", np.add), ("multiply", np.multiply), ("maximum", np.maximum)]:
            run(op, fn, a, b, pd, pd, tag="promote")
        b2 = T(db, np.where(b.v == 0, 1, b.v) if db != "bool" else np.ones(3, bool))
        run("divide", np.divide, a, b2, inexact(pd), inexact(pd), tag="promote")
        run("less", np.less, a, b, "bool", pd, tag="promote")
    # 0-d arrays are not weak: f32 scalar + f16 array -> f32
    run("add", np.add, T("float32", 1.5), F.t("float16", [3]), "float32", "float32", tag="scalar_array_not_weak")
    run("add", np.add, T("int64", 3), F.t("int32", [3]), "int64", "int64", tag="scalar_array_not_weak")

    # divide
    for dt in NAMES:
        a, b = F.t(dt, [2, 3]), F.t(dt, [2, 3], 0.5, 3)
        if dt in INTS or dt == "bool":
            b = T(dt, np.where(b.v == 0, 1, b.v) if dt != "bool" else np.ones((2, 3), bool))
        run("divide", np.divide, a, b, inexact(dt), inexact(dt))
    run("divide", np.divide, T("float32", [1.0, -1.0, 0.0, -0.0, 5.0]), T("float32", [0.0, 0.0, 0.0, 3.0, -0.0]),
        "float32", "float32", tag="by_zero")
    run("divide", np.divide, T("int32", [7, -7, 7, -7, 1]), T("int32", [2, 2, -2, -2, 3]), "float32", "float32",
        tag="ints_to_float32")

    # floor_divide / remainder: floor semantics, remainder takes divisor's sign
    ia = [7, -7, 7, -7, 0, 9, -9, 1, -1, 100]
    ib = [2, 2, -2, -2, 3, 3, 3, -5, 5, 7]
    for dt in ["int32", "int64"]:
        for op, fn in [("floor_divide", np.floor_divide), ("remainder", np.remainder)]:
            run(op, fn, T(dt, ia), T(dt, ib), dt, dt, tag="signs")
    for dt in ["uint8", "uint32"]:
        for op, fn in [("floor_divide", np.floor_divide), ("remainder", np.remainder)]:
            run(op, fn, T(dt, [7, 9, 0, 255, 100]), T(dt, [2, 3, 5, 16, 7]), dt, dt)
    fa = [7.5, -7.5, 7.5, -7.5, 0.25, 9.0, -9.0, 1.0, -1.0, 5.0]
    fb = [2.0, 2.0, -2.0, -2.0, 3.0, 4.0, 4.0, -0.75, 0.75, 0.5]
    for dt in FLOATS:
        for op, fn in [("floor_divide", lambda x, y: np.floor(x / y)), ("remainder", np.remainder)]:
            run(op, fn, T(dt, fa), T(dt, fb), dt, dt, tag="signs")
    run("floor_divide", np.floor_divide, T("int32", [7, -7]), T("float32", [2.0, 2.0]), "float32", "float32",
        tag="promote")
    run("remainder", np.remainder, F.t("int32", [3, 1]), T("int32", [3, -4, 5, 6]), "int32", "int32", tag="broadcast")

    # power
    for dt in FLOATS:
        a = T(dt, np.concatenate([F.uniform([6], 0.1, 3, 2), [-2.0, -2.0, 0.0, 0.0, 4.0, -1.5]]))
        b = T(dt, np.concatenate([F.uniform([6], -2, 3, 2), [3.0, 2.0, 0.0, 2.0, 0.5, 0.5]]))
        run("power", np.power, a, b, dt, dt, kind="transc")
    for dt in ["int32", "int64", "uint8", "uint32"]:
        av = [2, 3, 0, 1, 5, 10] if dt.startswith("u") else [2, 3, -2, -1, 5, 10]
        run("power", np.power, T(dt, av), T(dt, [3, 2, 3, 5, 0, 2]), dt, dt)

    # float-only binaries
    for op, fn in [("arctan2", np.arctan2), ("logaddexp", np.logaddexp)]:
        for dt in FLOATS:
            a, b = F.t(dt, [2, 4], -5, 5), F.t(dt, [2, 4], -5, 5)
            run(op, fn, a, b, dt, dt, kind="transc")
        run(op, fn, T("int32", [1, -1, 0, 3]), T("int32", [1, 1, -2, 0]), "float32", "float32", kind="transc",
            tag="int_to_float32")
        sa = T("float32", [0.0, -0.0, 0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1000.0])
        sb = T("float32", [0.0, 0.0, -0.0, -0.0, float("inf"), float("-inf"), 1.0, 1000.0])
        run(op, fn, sa, sb, "float32", "float32", kind="transc", tag="special")
        run(op, fn, F.t("float32", [3, 1], -5, 5), F.t("float32", [1, 4], -5, 5), "float32", "float32",
            kind="transc", tag="broadcast")

    # comparisons
    for op, fn in cmp_ops:
        for dt in NAMES:
            a, b = F.t(dt, [2, 4]), F.t(dt, [2, 4])
            b = T(dt, np.where(np.arange(8).reshape(2, 4) % 3 == 0, a.v, b.v))  # some equal pairs
            run(op, fn, a, b, "bool", dt)
        run(op, fn, T("float32", [float("nan"), float("nan"), 1.0, 0.0, float("inf"), float("-inf")]),
            T("float32", [float("nan"), 1.0, float("nan"), -0.0, float("inf"), 1.0]), "bool", "float32", tag="special")
        run(op, fn, F.t("int32", [3, 1]), F.t("float32", [1, 4]), "bool", "float32", tag="broadcast_promote")
        run(op, fn, T("uint32", [0, 5, 7]), T("int32", [-1, 5, 8]), "bool", "int64", tag="promote_negative")

    # logical
    for op, fn in [("logical_and", np.logical_and), ("logical_or", np.logical_or)]:
        a = T("bool", [True, True, False, False])
        b = T("bool", [True, False, True, False])
        F.add(f"{op}/bool_bool", op, [a, b], {}, T("bool", fn(a.v, b.v)))
        for dt in ["int32", "float32", "uint8"]:
            a2, b2 = T(dt, [0, 1, 2, 0]), T(dt, [3, 0, 1, 0])
            F.add(f"{op}/{dt}_{dt}", op, [a2, b2], {}, T("bool", fn(a2.v, b2.v)))
        a3 = T("bool", [True, False, True], view=[{"broadcast_to": [2, 3]}])
        b3 = T("bool", [True, False], shape=[2, 1])
        F.add(f"{op}/bool_bool/broadcast", op, [a3, b3], {}, T("bool", fn(a3.v, b3.v)))

    # bitwise and shifts
    for op, fn in [("bitwise_and", np.bitwise_and), ("bitwise_or", np.bitwise_or), ("bitwise_xor", np.bitwise_xor)]:
        for dt in ["bool", "uint8", "uint32", "int32", "int64"]:
            if dt == "bool":
                a, b = T("bool", [True, True, False, False]), T("bool", [True, False, True, False])
                F.add(f"{op}/bool_bool", op, [a, b], {}, T("bool", fn(a.v, b.v)))
                continue
            lo_ = 0 if dt.startswith("u") else -100
            a, b = T(dt, F.ints([2, 4], lo_, 200)), T(dt, F.ints([2, 4], lo_, 200))
            F.add(f"{op}/{dt}_{dt}", op, [a, b], {}, T(dt, fn(a.v, b.v)))
        a, b = T("uint8", [0xF0, 0x0F, 0xFF]), T("int32", [-1, 256, 3])
        F.add(f"{op}/uint8_int32/promote", op, [a, b], {}, T("int32", fn(a.v.astype(np.int32), b.v)))
        F.err(f"{op}/error/float32", op, [F.t("float32", [3]), F.t("float32", [3])], {},
              "bitwise ops require integer or bool inputs")
    for op, fn in [("left_shift", np.left_shift), ("right_shift", np.right_shift)]:
        for dt in ["uint8", "uint32", "int32", "int64"]:
            av = [1, 3, 128, 255, 7, 100] if dt.startswith("u") else [1, 3, -8, -1, 7, -100]
            if op == "left_shift" and dt == "uint8":
                bv = [0, 1, 1, 1, 4, 1]
            else:
                bv = [0, 1, 2, 3, 4, 5]
            e = wrap(fn(np.asarray(av, np.int64), np.asarray(bv, np.int64)), dt)
            F.add(f"{op}/{dt}_{dt}", op, [T(dt, av), T(dt, bv)], {}, T(dt, cast(e, dt)))
        F.add(f"{op}/int32_int32/broadcast", op, [T("int32", [[1], [-16]]), T("int32", [0, 1, 2])], {},
              T("int32", fn(np.asarray([[1], [-16]]), np.asarray([0, 1, 2]))))
    return F


# ==============================================================================================
# reduce
# ==============================================================================================
def norm_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = [axis]
    return tuple(a % ndim for a in axis)


def gen_reduce():
    F = Family("reduce", 4)
    axes_cases = [None, 0, 1, -1, [0, 2], [-1, -2], [0, 1, 2], []]

    def npred(op, x, axis, keepdims, ddof=0):
        ax = norm_axis(axis, x.ndim) if axis is not None else None
        if op == "sum":
            return np.sum(x, axis=ax, keepdims=keepdims)
        if op == "prod":
            return np.prod(x, axis=ax, keepdims=keepdims)
        if op == "mean":
            return np.mean(x, axis=ax, keepdims=keepdims)
        if op == "max":
            return np.max(x, axis=ax, keepdims=keepdims)
        if op == "min":
            return np.min(x, axis=ax, keepdims=keepdims)
        if op == "var":
            return np.var(x, axis=ax, keepdims=keepdims, ddof=ddof)
        if op == "std":
            return np.std(x, axis=ax, keepdims=keepdims, ddof=ddof)
        if op == "logsumexp":
            m = np.max(x, axis=ax, keepdims=True)
            m = np.where(np.isfinite(m), m, 0)
            with np.errstate(divide="ignore"):
                r = np.log(np.sum(np.exp(x - m), axis=ax, keepdims=True)) + m
            if not keepdims:
                r = np.squeeze(r, axis=ax if ax is not None else tuple(range(x.ndim)))
            return r
        if op == "all":
            return np.all(x, axis=ax, keepdims=keepdims)
        if op == "any":
            return np.any(x, axis=ax, keepdims=keepdims)
        raise ValueError(op)

    def out_dt(op, dt):
        if op in ("sum", "prod"):
            return sum_dtype(dt)
        if op in ("mean", "var", "std", "logsumexp"):
            return inexact(dt)
        if op in ("all", "any"):
            return "bool"
        return dt

    def emit(op, t, axis, keepdims, tag="", ddof=None, kind="reduce"):
        kw = {}
        if axis is not None:
            kw["axis"] = axis
        if keepdims:
            kw["keepdims"] = True
        if ddof is not None:
            kw["ddof"] = ddof
        od = out_dt(op, t.dtype)
        x = t.v
        if is_float(od) and op not in ("max", "min"):
            x = f64(cast(x, od))
        elif op in ("sum", "prod"):
            x = x.astype(np.int64)
        elif op in ("max", "min") and is_float(od):
            x = f64(x)
        with np.errstate(all="ignore"):
            e = npred(op, x, axis, keepdims, ddof or 0)
        if od in INTS:
            e = wrap(e, od)
        res = T("bool", np.asarray(e, bool)) if od == "bool" else out(e, od)
        rt, at = tol(od, kind)
        axn = "none" if axis is None else ("_".join(str(a) for a in axis) if isinstance(axis, list) else str(axis))
        if isinstance(axis, list) and not axis:
            axn = "emptylist"
        id_ = f"{op}/{t.dtype}/{shp(list(t.v.shape))}/axis_{axn}" + ("/keepdims" if keepdims else "")
        if ddof is not None:
            id_ += f"/ddof{ddof}"
        if tag:
            id_ += "/" + tag
        F.add(id_, op, [t], kw, res, rt, at)

    base_ops = ["sum", "mean", "prod", "max", "min", "var", "std", "logsumexp"]
    for op in base_ops:
        for dt in FLOATS:
            lo, hi = (0.5, 1.5) if op == "prod" else (-3, 3)
            t = F.t(dt, [2, 3, 4], lo, hi)
            for axis in axes_cases:
                for kd in (False, True):
                    if dt != "float32" and kd and axis not in (None, 1):
                        continue
                    emit(op, t, axis, kd)
        for dt in ["int32", "int64", "uint8", "uint32", "bool"]:
            if op in ("logsumexp",) and dt != "int32":
                continue
            t = F.t(dt, [3, 4], 0 if op == "prod" else -1, 1 if op == "prod" else 2)
            if op == "prod" and dt != "bool":
                t = T(dt, F.ints([3, 4], 1, 4) * np.where(F.ints([3, 4], 0, 2) == 0, 1, -1 if not dt.startswith("u") else 1))
            for axis in (None, 0, -1):
                emit(op, t, axis, False)
            emit(op, t, 1, True)
        # strided inputs
        t = F.t("float32", [4, 6], 0.5 if op == "prod" else -3, 1.5 if op == "prod" else 3,
                view=[{"transpose": [1, 0]}])
        for axis in (None, 0, 1):
            emit(op, t, axis, False, tag="transposed")
        t = F.t("float32", [5, 8], 0.5 if op == "prod" else -3, 1.5 if op == "prod" else 3,
                view=[{"slice": [[None, None, -2], [1, 7, 3]]}])
        for axis in (None, 0, 1):
            emit(op, t, axis, False, tag="neg_step_slice")
        t = F.t("float32", [3], 0.5 if op == "prod" else -3, 1.5 if op == "prod" else 3,
                view=[{"broadcast_to": [4, 3]}])
        emit(op, t, 0, False, tag="broadcast_view")
        emit(op, t, 1, False, tag="broadcast_view")
        t = F.t("float32", [2, 3, 4], view=[{"transpose": [2, 0, 1]}])
        emit(op, t, [0, 2], True, tag="transposed3d")
        # longer rows (vector loops, pairwise sums)
        emit(op, F.t("float32", [2, 61], 0.9 if op == "prod" else -3, 1.1 if op == "prod" else 3), -1, False,
             tag="long_rows")
        emit(op, F.t("float32", [61, 2], 0.9 if op == "prod" else -3, 1.1 if op == "prod" else 3), 0, False,
             tag="long_cols")
        # scalar input
        emit(op, T("float32", 2.5), None, False, tag="scalar")
    # var/std ddof
    for op in ("var", "std"):
        t = F.t("float32", [3, 5])
        for axis in (None, 0, 1):
            emit(op, t, axis, False, ddof=1)
        emit(op, t, 1, True, ddof=2)
        emit(op, F.t("float64", [4, 3]), 0, False, ddof=1)
        emit(op, F.t("float16", [4, 3]), None, False, ddof=1)
    # nan/inf propagation
    sp = T("float32", [[1.0, float("nan"), 3.0], [float("inf"), 2.0, float("-inf")], [1.0, 2.0, 3.0]])
    for op in ("sum", "max", "min", "mean", "prod"):
        emit(op, sp, 1, False, tag="special")
    lse = T("float32", [[float("-inf"), float("-inf")], [float("inf"), 1.0], [1000.0, 1000.0], [-1000.0, -1001.0]])
    emit("logsumexp", lse, 1, False, tag="special_stable")
    # empty reductions
    e03 = T("float32", np.zeros((0, 3)))
    emit("sum", e03, None, False, tag="empty")
    emit("sum", e03, 0, False, tag="empty")
    emit("sum", e03, 1, False, tag="empty")
    emit("prod", e03, 0, False, tag="empty")
    emit("mean", e03, None, False, tag="empty_nan")
    emit("max", e03, 1, False, tag="empty_nonreduced_axis")
    emit("sum", T("int32", np.zeros((0,), np.int32)), None, False, tag="empty")
    for op in ("all", "any"):
        emit(op, T("bool", np.zeros((0, 3), bool)), None, False, tag="empty")
        emit(op, T("bool", np.zeros((0, 3), bool)), 0, False, tag="empty")
    for op in ("max", "min"):
        F.err(f"{op}/error/empty_all", op, [e03], {}, "cannot reduce over zero-size axis")
        F.err(f"{op}/error/empty_axis0", op, [e03], {"axis": 0}, "cannot reduce over zero-size axis")
    for op in ("argmax", "argmin"):
        F.err(f"{op}/error/empty", op, [e03], {"axis": 0}, "cannot reduce over zero-size axis")
    # all / any
    for op in ("all", "any"):
        for dt in ["bool", "int32", "float32", "uint8"]:
            if dt == "bool":
                t = T("bool", [[True, True, False], [True, True, True]])
            elif dt == "float32":
                t = T(dt, [[1.0, float("nan"), 0.0], [-0.0, 0.0, 0.0]])
            else:
                t = T(dt, [[1, 2, 0], [0, 0, 0]])
            for axis in (None, 0, 1, [0, 1]):
                emit(op, t, axis, False)
            emit(op, t, 1, True)
        t = T("bool", [[True, False], [True, True], [True, False]], view=[{"transpose": [1, 0]}])
        emit(op, t, 1, False, tag="transposed")
    # argmax / argmin (int axis or None; first occurrence on ties; nan counts as max/min)
    for op, fn in [("argmax", np.argmax), ("argmin", np.argmin)]:
        for dt in NAMES:
            if dt == "bool":
                t = T("bool", [[False, True, True], [False, False, False]])
            elif dt in INTS:
                t = T(dt, [[3, 7, 7, 1], [5, 5, 2, 9], [0, 0, 0, 0]] if dt.startswith("u") else
                      [[3, 7, 7, -1], [-5, -5, 2, 9], [0, 0, 0, 0]])
            else:
                t = F.t(dt, [3, 4])
            for axis in (None, 0, 1, -1):
                kw = {} if axis is None else {"axis": axis}
                F.add(f"{op}/{dt}/axis_{axis}", op, [t], kw, T("uint32", fn(t.v, axis=axis)))
            F.add(f"{op}/{dt}/axis_1/keepdims", op, [t], {"axis": 1, "keepdims": True},
                  T("uint32", fn(t.v, axis=1, keepdims=True)))
        t = T("float32", [[1.0, float("nan"), 3.0], [float("-inf"), 2.0, float("inf")]])
        F.add(f"{op}/float32/special", op, [t], {"axis": 1}, T("uint32", fn(t.v, axis=1)))
        t = F.t("float32", [4, 5], view=[{"transpose": [1, 0]}, {"slice": [[None, None, -1]]}])
        F.add(f"{op}/float32/strided", op, [t], {"axis": 0}, T("uint32", fn(t.v, axis=0)))
        t = F.t("float32", [2, 70])
        F.add(f"{op}/float32/long_rows", op, [t], {"axis": 1}, T("uint32", fn(t.v, axis=1)))
    # errors
    t = F.t("float32", [2, 3])
    for op in ("sum", "max", "mean", "argmax", "var", "logsumexp", "all"):
        F.err(f"{op}/error/axis_out_of_range", op, [t], {"axis": 2}, "axis out of range")
        F.err(f"{op}/error/neg_axis_out_of_range", op, [t], {"axis": -3}, "axis out of range")
    F.err("sum/error/duplicate_axes", "sum", [t], {"axis": [0, 0]}, "duplicate axes")
    return F


# ==============================================================================================
# scan
# ==============================================================================================
def np_scan(op, x, axis, reverse, inclusive, dt):
    if axis is None:
        x = x.reshape(-1)
        axis = 0
    axis = axis % x.ndim
    if reverse:
        x = np.flip(x, axis)
    if op == "cumsum":
        r = np.cumsum(x, axis=axis)
        ident = 0
    elif op == "cumprod":
        r = np.cumprod(x, axis=axis)
        ident = 1
    else:
        r = np.maximum.accumulate(x, axis=axis)
        if is_float(dt):
            ident = -np.inf
        elif dt == "bool":
            ident = False
        else:
            ident = np.iinfo(DT[dt]).min
    if not inclusive:
        r = np.moveaxis(r, axis, 0)
        pad = np.full((1,) + r.shape[1:], ident, dtype=r.dtype)
        r = np.concatenate([pad, r[:-1]], axis=0) if r.shape[0] else r
        r = np.moveaxis(r, 0, axis)
    if reverse:
        r = np.flip(r, axis)
    return r


def gen_scan():
    F = Family("scan", 5)

    def emit(op, t, axis=None, reverse=False, inclusive=True, tag=""):
        kw = {}
        if axis is not None:
            kw["axis"] = axis
        if reverse:
            kw["reverse"] = True
        if not inclusive:
            kw["inclusive"] = False
        od = "int32" if (op == "cumsum" and t.dtype == "bool") else t.dtype
        if is_float(od):
            x = f64(t.v)
        elif od == "bool":
            x = t.v
        else:
            x = t.v.astype(np.int64)
        with np.errstate(all="ignore"):
            e = np_scan(op, x, axis, reverse, inclusive, od)
        if od in INTS:
            e = wrap(e, od)
        res = T("bool", e) if od == "bool" else out(e, od)
        rt, at = tol(od, "reduce")
        id_ = f"{op}/{t.dtype}/{shp(list(t.v.shape))}/axis_{axis}"
        id_ += ("/reverse" if reverse else "") + ("/exclusive" if not inclusive else "") + (f"/{tag}" if tag else "")
        F.add(id_, op, [t], kw, res, rt, at)

    for op in ("cumsum", "cumprod", "cummax"):
        lo, hi = (0.5, 1.6) if op == "cumprod" else (-3, 3)
        for dt in FLOATS:
            t = F.t(dt, [3, 4], lo, hi)
            for axis in (0, 1, -1, None):
                for rev in (False, True):
                    for inc in (True, False):
                        if dt != "float32" and axis in (-1, None) and (rev or not inc):
                            continue
                        if op == "cummax" and not inc and dt != "float32":
                            continue
                        emit(op, t, axis, rev, inc)
        for dt in ["int32", "int64", "uint8", "uint32"]:
            if op == "cumprod":
                t = T(dt, F.ints([3, 4], 1, 4))
            else:
                t = F.t(dt, [3, 4], 0 if dt.startswith("u") else -3, 3)
            for axis in (0, 1):
                for rev in (False, True):
                    emit(op, t, axis, rev, True)
            if op != "cummax" or dt in ("uint8", "uint32", "int32"):
                emit(op, t, 1, False, False)
        t = F.t("float32", [5, 4], lo, hi, view=[{"transpose": [1, 0]}])
        for axis in (0, 1):
            emit(op, t, axis, tag="transposed")
            emit(op, t, axis, True, False, tag="transposed")
        t = F.t("float32", [6, 7], lo, hi, view=[{"slice": [[None, None, -2], [1, None, 2]]}])
        emit(op, t, 0, tag="neg_step_slice")
        emit(op, t, 1, tag="neg_step_slice")
        t = F.t("float32", [3], lo, hi, view=[{"broadcast_to": [2, 3]}])
        emit(op, t, 0, tag="broadcast_view")
        emit(op, t, 1, tag="broadcast_view")
        emit(op, F.t("float32", [2, 3, 4], lo, hi), 1, tag="rank3")
        emit(op, F.t("float32", [2, 3, 4], lo, hi), 1, True, False, tag="rank3")
        emit(op, F.t("float32", [40], 0.95 if op == "cumprod" else lo, 1.05 if op == "cumprod" else hi), 0,
             tag="long")
        emit(op, T("float32", np.zeros((0, 3))), 0, tag="empty")
        emit(op, T("float32", np.zeros((2, 0))), 1, tag="empty")
        emit(op, T("float32", 1.5), None, tag="scalar")
        F.err(f"{op}/error/axis_out_of_range", op, [F.t("float32", [2, 3])], {"axis": 2}, "axis out of range")
    sp = T("float32", [1.0, float("nan"), 3.0, float("inf"), -1.0])
    for op in ("cumsum", "cummax", "cumprod"):
        emit(op, sp, 0, tag="special")
    emit("cumsum", T("bool", [True, False, True, True]), 0, tag="bool_to_int32")
    emit("cummax", T("bool", [False, True, False]), 0)
    return F


# ==============================================================================================
# shape
# ==============================================================================================
def gen_shape():
    F = Family("shape", 6)
    dts = ["float32", "int32", "bool", "float16", "bfloat16", "float64", "int64", "uint8", "uint32"]

    def add(id_, op, inputs, kw, e):
        F.add(id_, op, inputs, kw, e)

    # reshape
    for dt in dts:
        t = F.t(dt, [2, 3, 4])
        for shape in ([6, 4], [4, -1], [24], [-1], [2, 12], [1, 24, 1], [2, 3, 2, 2]):
            add(f"reshape/{dt}/{shp(shape)}".replace("-1", "m1"), "reshape", [t], {"shape": shape},
                T(dt, t.v.reshape(shape)))
        if dt != "float32":
            break
    t = F.t("float32", [3, 4], view=[{"transpose": [1, 0]}])
    add("reshape/float32/transposed_to_12", "reshape", [t], {"shape": [12]}, T("float32", t.v.reshape(12)))
    add("reshape/float32/transposed_to_2x6", "reshape", [t], {"shape": [2, 6]}, T("float32", t.v.reshape(2, 6)))
    t = F.t("float32", [4, 6], view=[{"slice": [[None, None, -1], [None, None, 2]]}])
    add("reshape/float32/neg_slice_to_m1", "reshape", [t], {"shape": [-1]}, T("float32", t.v.reshape(-1)))
    add("reshape/float32/scalar_to_1x1", "reshape", [T("float32", 3.0)], {"shape": [1, 1]}, T("float32", [[3.0]]))
    add("reshape/float32/1_to_scalar", "reshape", [T("float32", [3.0])], {"shape": []}, T("float32", 3.0))
    add("reshape/float32/empty", "reshape", [T("float32", np.zeros((0, 3)))], {"shape": [3, 0]},
        T("float32", np.zeros((3, 0))))
    for dt in dts[1:]:
        t = F.t(dt, [2, 6])
        add(f"reshape/{dt}/3x4", "reshape", [t], {"shape": [3, 4]}, T(dt, t.v.reshape(3, 4)))
    F.err("reshape/error/size_mismatch", "reshape", [F.t("float32", [2, 3])], {"shape": [4, 2]}, "size mismatch")
    F.err("reshape/error/two_minus_one", "reshape", [F.t("float32", [2, 3])], {"shape": [-1, -1]}, "only one -1")
    F.err("reshape/error/minus_one_indivisible", "reshape", [F.t("float32", [2, 3])], {"shape": [4, -1]},
          "size mismatch")

    # flatten(start_axis=0, end_axis=-1)
    t = F.t("float32", [2, 3, 4])
    for kw in [{}, {"start_axis": 1}, {"end_axis": 1}, {"start_axis": 1, "end_axis": 2}, {"start_axis": -2, "end_axis": -1},
               {"start_axis": 1, "end_axis": 1}]:
        s, e = kw.get("start_axis", 0) % 3, kw.get("end_axis", -1) % 3
        ns = list(t.v.shape[:s]) + [int(np.prod(t.v.shape[s:e + 1]))] + list(t.v.shape[e + 1:])
        add("flatten/float32/" + ("_".join(f"{k}{v}" for k, v in kw.items()) or "default"), "flatten", [t], kw,
            T("float32", t.v.reshape(ns)))
    tt = F.t("int32", [3, 4], view=[{"transpose": [1, 0]}])
    add("flatten/int32/transposed", "flatten", [tt], {}, T("int32", tt.v.reshape(-1)))
    add("flatten/float32/scalar", "flatten", [T("float32", 7.0)], {}, T("float32", [7.0]))

    # transpose(axes=None -> reverse)
    for dt in dts:
        t = F.t(dt, [2, 3, 4])
        for axes in (None, [1, 0, 2], [2, 0, 1], [0, 2, 1], [-1, 0, 1]):
            kw = {} if axes is None else {"axes": axes}
            add(f"transpose/{dt}/" + ("default" if axes is None else "_".join(map(str, axes))), "transpose", [t], kw,
                T(dt, np.transpose(t.v, axes)))
        if dt not in ("float32", "bool", "float16", "float64"):
            break
    t = F.t("float32", [4, 5], view=[{"slice": [[1, None, 2], [None, None, -1]]}])
    add("transpose/float32/of_strided", "transpose", [t], {}, T("float32", t.v.T))
    F.err("transpose/error/wrong_len", "transpose", [F.t("float32", [2, 3])], {"axes": [0]}, "axes length mismatch")
    F.err("transpose/error/repeated", "transpose", [F.t("float32", [2, 3])], {"axes": [0, 0]}, "repeated axis")

    t = F.t("float32", [2, 3, 4])
    for a1, a2 in [(0, 2), (1, -1), (0, 0)]:
        add(f"swapaxes/float32/{a1}_{a2}", "swapaxes", [t], {"axis1": a1, "axis2": a2},
            T("float32", np.swapaxes(t.v, a1, a2)))
    for s, d in [(0, -1), (2, 0), (-1, 1)]:
        add(f"moveaxis/float32/{s}_{d}", "moveaxis", [t], {"source": s, "destination": d},
            T("float32", np.moveaxis(t.v, s, d)))
    F.err("swapaxes/error/axis_out_of_range", "swapaxes", [t], {"axis1": 0, "axis2": 3}, "axis out of range")

    t = F.t("float32", [2, 3])
    for ax in (0, 1, 2, -1, [0, 3], [0, 1]):
        e = np.expand_dims(t.v, tuple(ax) if isinstance(ax, list) else ax)
        add(f"expand_dims/float32/{ax}".replace(" ", ""), "expand_dims", [t], {"axis": ax}, T("float32", e))
    add("expand_dims/int32/scalar", "expand_dims", [T("int32", 5)], {"axis": 0}, T("int32", [5]))
    F.err("expand_dims/error/axis_out_of_range", "expand_dims", [t], {"axis": 3}, "axis out of range")
    t = F.t("float32", [1, 3, 1, 2])
    for ax in (None, 0, 2, -2, [0, 2]):
        kw = {} if ax is None else {"axis": ax}
        e = np.squeeze(t.v, axis=None if ax is None else (tuple(ax) if isinstance(ax, list) else ax))
        add(f"squeeze/float32/{ax}".replace(" ", ""), "squeeze", [t], kw, T("float32", e))
    add("squeeze/float32/to_scalar", "squeeze", [T("float32", [[2.5]])], {}, T("float32", 2.5))
    F.err("squeeze/error/not_size_1", "squeeze", [t], {"axis": 1}, "cannot squeeze axis with size != 1")

    # broadcast_to
    for dt in ["float32", "int32", "bool", "float16"]:
        for src, dst in [([3], [2, 3]), ([3, 1], [3, 4]), ([], [2, 2]), ([1, 1], [2, 3, 4]), ([2, 3], [2, 3]),
                         ([1, 3], [0, 3])]:
            t = F.t(dt, src)
            add(f"broadcast_to/{dt}/{shp(src)}_to_{shp(dst)}", "broadcast_to", [t], {"shape": dst},
                T(dt, np.broadcast_to(t.v, dst)))
        if dt != "float32":
            continue
    F.err("broadcast_to/error/incompatible", "broadcast_to", [F.t("float32", [3])], {"shape": [2, 4]},
          "shapes cannot be broadcast")
    F.err("broadcast_to/error/fewer_dims", "broadcast_to", [F.t("float32", [2, 3])], {"shape": [3]},
          "shapes cannot be broadcast")

    # concatenate (inputs = the list), stack
    for dt in ["float32", "int32", "bool", "bfloat16", "float64", "uint8"]:
        a, b, c = F.t(dt, [2, 3]), F.t(dt, [1, 3]), F.t(dt, [4, 3])
        add(f"concatenate/{dt}/axis0_three", "concatenate", [a, b, c], {"axis": 0}, T(dt, np.concatenate([a.v, b.v, c.v], 0)))
        d = F.t(dt, [2, 2])
        add(f"concatenate/{dt}/axis1", "concatenate", [a, d], {"axis": 1}, T(dt, np.concatenate([a.v, d.v], 1)))
        add(f"concatenate/{dt}/axis_m1", "concatenate", [a, d], {"axis": -1}, T(dt, np.concatenate([a.v, d.v], -1)))
    a = F.t("float32", [3, 2], view=[{"transpose": [1, 0]}])
    b = F.t("float32", [2, 6], view=[{"slice": [[None, None, -1], [None, None, 2]]}])
    add("concatenate/float32/strided", "concatenate", [a, b], {"axis": 1}, T("float32", np.concatenate([a.v, b.v], 1)))
    add("concatenate/float32/with_empty", "concatenate", [T("float32", np.zeros((0, 3))), F.t("float32", [2, 3])],
        {"axis": 0}, None)
    F.cases[-1]["expected"] = F.cases[-1]["inputs"][1]
    add("concatenate/float32/single", "concatenate", [F.t("float32", [2, 2])], {"axis": 0}, None)
    F.cases[-1]["expected"] = F.cases[-1]["inputs"][0]
    a, b = F.t("int32", [2, 3]), F.t("float32", [2, 3])
    add("concatenate/int32_float32/promote", "concatenate", [a, b], {"axis": 0},
        T("float32", np.concatenate([a.v.astype(np.float32), b.v], 0)))
    F.err("concatenate/error/rank_mismatch", "concatenate", [F.t("float32", [2, 3]), F.t("float32", [3])], {"axis": 0},
          "rank mismatch")
    F.err("concatenate/error/shape_mismatch", "concatenate", [F.t("float32", [2, 3]), F.t("float32", [2, 4])],
          {"axis": 0}, "shape mismatch off the concatenation axis")
    F.err("concatenate/error/axis_out_of_range", "concatenate", [F.t("float32", [2, 3]), F.t("float32", [2, 3])],
          {"axis": 2}, "axis out of range")
    for dt in ["float32", "int32", "bool", "float16"]:
        a, b = F.t(dt, [2, 3]), F.t(dt, [2, 3])
        for ax in (0, 1, 2, -1):
            add(f"stack/{dt}/axis{ax}", "stack", [a, b], {"axis": ax}, T(dt, np.stack([a.v, b.v], ax)))
    add("stack/float32/scalars", "stack", [T("float32", 1.0), T("float32", 2.0), T("float32", 3.0)], {"axis": 0},
        T("float32", [1.0, 2.0, 3.0]))
    F.err("stack/error/shape_mismatch", "stack", [F.t("float32", [2]), F.t("float32", [3])], {"axis": 0},
          "all arrays must have the same shape")

    # split: indices_or_sections int (equal sections) or list of split points; expected list
    t = F.t("float32", [6, 4])
    for ios, ax in [(3, 0), (2, 1), ([1, 4], 0), ([2], 1), ([0, 3, 3, 6], 0), (1, 0), ([1, 3], -1), ([5, 10], 0)]:
        parts = np.split(t.v, ios, axis=ax)
        add(f"split/float32/{ios}_axis{ax}".replace(" ", ""), "split", [t],
            {"indices_or_sections": ios, "axis": ax}, [T("float32", p) for p in parts])
    ti = F.t("int32", [7])
    add("split/int32/default_axis", "split", [ti], {"indices_or_sections": [2, 5]},
        [T("int32", p) for p in np.split(ti.v, [2, 5])])
    ts = F.t("float32", [4, 6], view=[{"transpose": [1, 0]}])
    add("split/float32/strided", "split", [ts], {"indices_or_sections": 3, "axis": 0},
        [T("float32", p) for p in np.split(ts.v, 3, 0)])
    F.err("split/error/uneven_sections", "split", [F.t("float32", [7])], {"indices_or_sections": 3},
          "array split does not result in equal division")

    # pad(pad_width, mode="constant", constant_values=0)
    t = F.t("float32", [2, 3])
    for pw, mode, cv in [(1, "constant", 0), ([1, 2], "constant", 0), ([[1, 0], [0, 2]], "constant", 0),
                         ([[0, 0], [2, 1]], "constant", -1.5), (2, "edge", None), ([[1, 2], [0, 1]], "edge", None),
                         (0, "constant", 0)]:
        kw = {"pad_width": pw}
        if mode != "constant":
            kw["mode"] = mode
        if cv not in (None, 0):
            kw["constant_values"] = cv
        npw = pw if not (isinstance(pw, list) and not isinstance(pw[0], list)) else [pw] * 2
        e = np.pad(t.v, npw, mode=mode, **({"constant_values": cv} if mode == "constant" else {}))
        add(f"pad/float32/{mode}/{json.dumps(pw).replace(' ', '')}/cv{cv}", "pad", [t], kw, T("float32", e))
    ti = F.t("int32", [3])
    add("pad/int32/constant7", "pad", [ti], {"pad_width": [2, 1], "constant_values": 7},
        T("int32", np.pad(ti.v, (2, 1), constant_values=7)))
    tb = T("bfloat16", [[1.0, 2.0], [3.0, 4.0]])
    add("pad/bfloat16/edge", "pad", [tb], {"pad_width": 1, "mode": "edge"}, T("bfloat16", np.pad(tb.v, 1, mode="edge")))
    ts = F.t("float32", [3, 2], view=[{"transpose": [1, 0]}])
    add("pad/float32/strided", "pad", [ts], {"pad_width": 1}, T("float32", np.pad(ts.v, 1)))
    add("pad/float32/empty_input", "pad", [T("float32", np.zeros((0, 2)))], {"pad_width": 1},
        T("float32", np.zeros((2, 4))))

    # repeat(repeats:int, axis=None -> flattened), tile(reps), roll(shift, axis=None)
    t = F.t("int32", [2, 3])
    for rep, ax in [(2, None), (3, 0), (2, 1), (2, -1), (0, 1), (1, 0)]:
        kw = {"repeats": rep} if ax is None else {"repeats": rep, "axis": ax}
        add(f"repeat/int32/{rep}_axis{ax}", "repeat", [t], kw, T("int32", np.repeat(t.v, rep, axis=ax)))
    tf = F.t("float32", [3, 2], view=[{"transpose": [1, 0]}])
    add("repeat/float32/strided", "repeat", [tf], {"repeats": 2, "axis": 1}, T("float32", np.repeat(tf.v, 2, 1)))
    for reps in (2, [2, 1], [1, 3], [2, 1, 2], [0, 2]):
        add(f"tile/float32/{reps}".replace(" ", ""), "tile", [tf], {"reps": reps}, T("float32", np.tile(tf.v, reps)))
    add("tile/bool/2", "tile", [T("bool", [True, False])], {"reps": [2, 2]}, T("bool", np.tile([True, False], [2, 2])))
    t = F.t("float32", [3, 4])
    for sh, ax in [(1, None), (-2, None), (1, 0), (-1, 1), (5, 1), ([1, -1], [0, 1]), (13, None), (0, 0)]:
        kw = {"shift": sh} if ax is None else {"shift": sh, "axis": ax}
        e = np.roll(t.v, tuple(sh) if isinstance(sh, list) else sh, axis=tuple(ax) if isinstance(ax, list) else ax)
        add(f"roll/float32/{sh}_axis{ax}".replace(" ", ""), "roll", [t], kw, T("float32", e))
    add("roll/int32/strided", "roll", [tt], {"shift": 1, "axis": 0}, T("int32", np.roll(tt.v, 1, 0)))

    # tril / triu (last two axes)
    for op, fn in [("tril", np.tril), ("triu", np.triu)]:
        for dt in ["float32", "int32", "bool", "float16"]:
            t = F.t(dt, [3, 4])
            for k in (0, 1, -1, 5, -5):
                kw = {} if k == 0 else {"k": k}
                add(f"{op}/{dt}/k{k}", op, [t], kw, T(dt, fn(t.v, k)))
        t = F.t("float32", [2, 3, 3])
        add(f"{op}/float32/batched", op, [t], {}, T("float32", fn(t.v)))
        t = F.t("float32", [4, 3], view=[{"transpose": [1, 0]}])
        add(f"{op}/float32/strided", op, [t], {"k": 1}, T("float32", fn(t.v, 1)))
        F.err(f"{op}/error/rank1", op, [F.t("float32", [3])], {}, "requires at least 2 dimensions")
    return F


# ==============================================================================================
# indexing
# ==============================================================================================
def gen_indexing():
    F = Family("indexing", 7)

    def slices(kw, ndim):
        st, sp, sd = kw.get("start", []), kw.get("stop", []), kw.get("strides", [])
        n = max(len(st), len(sp), len(sd))
        out_ = []
        for i in range(n):
            out_.append(slice(st[i] if i < len(st) else None, sp[i] if i < len(sp) else None,
                              sd[i] if i < len(sd) else None))
        return tuple(out_)

    # slice: kwargs start/stop/strides, one entry per leading axis, null = default, Python semantics
    slice_kws = [
        {"start": [1], "stop": [3], "strides": [1]},
        {"start": [0, 1], "stop": [4, 5], "strides": [2, 2]},
        {"start": [None, None], "stop": [None, None], "strides": [-1, -1]},
        {"start": [-1, 3], "stop": [None, 0], "strides": [-2, -1]},
        {"start": [-3], "stop": [-1], "strides": [1]},
        {"start": [0, 10], "stop": [100, 20], "strides": [1, 1]},
        {"start": [2, 1], "stop": [2, 4], "strides": [1, 1]},
        {"start": [0, 0, 1], "stop": [4, 6, 3], "strides": [3, 4, 1]},
        {"start": [None], "stop": [None], "strides": [-3]},
        {"start": [3], "stop": [-10], "strides": [-1]},
    ]
    for dt in ["float32", "int32", "bool", "float16", "float64", "uint8"]:
        t = F.t(dt, [4, 6]) if dt != "float32" else F.t(dt, [4, 6, 3])
        for i, kw in enumerate(slice_kws):
            if len(kw["start"]) > t.v.ndim:
                continue
            F.add(f"slice/{dt}/{i}", "slice", [t], kw, T(dt, t.v[slices(kw, t.v.ndim)]))
        if dt != "float32":
            pass
    t = F.t("float32", [5, 4], view=[{"transpose": [1, 0]}])
    kw = {"start": [1, None], "stop": [None, None], "strides": [2, -2]}
    F.add("slice/float32/of_transposed", "slice", [t], kw, T("float32", t.v[slices(kw, 2)]))
    t = F.t("float32", [3], view=[{"broadcast_to": [4, 3]}])
    kw = {"start": [1, 0], "stop": [3, 2], "strides": [1, 1]}
    F.add("slice/float32/of_broadcast", "slice", [t], kw, T("float32", t.v[slices(kw, 2)]))
    F.add("slice/float32/empty_input", "slice", [T("float32", np.zeros((0, 3)))],
          {"start": [0, 1], "stop": [0, 3], "strides": [1, 1]}, T("float32", np.zeros((0, 2))))
    F.err("slice/error/zero_stride", "slice", [F.t("float32", [4])], {"start": [0], "stop": [4], "strides": [0]},
          "slice step cannot be zero")
    F.err("slice/error/too_many_axes", "slice", [F.t("float32", [4])],
          {"start": [0, 0], "stop": [1, 1], "strides": [1, 1]}, "more slice entries than dimensions")

    # slice_update: inputs [a, update]; same kwargs as slice; update broadcast to the slice shape
    # and cast to a's dtype; result is a copy of a with the region replaced.
    for dt in ["float32", "int32", "bool", "bfloat16", "float64"]:
        a = F.t(dt, [4, 5])
        for kw in [{"start": [1, 1], "stop": [3, 4], "strides": [1, 1]},
                   {"start": [0, 0], "stop": [4, 5], "strides": [2, 2]},
                   {"start": [None, -1], "stop": [None, None], "strides": [-1, -2]},
                   {"start": [2], "stop": [3], "strides": [1]}]:
            region = a.v[slices(kw, 2)]
            upd = F.t(dt, list(region.shape))
            e = a.v.copy()
            e[slices(kw, 2)] = upd.v
            F.add(f"slice_update/{dt}/{json.dumps(kw['start'])}_{json.dumps(kw['strides'])}".replace(" ", ""),
                  "slice_update", [a, upd], kw, T(dt, e))
    a = F.t("float32", [3, 4])
    kw = {"start": [0, 1], "stop": [3, 3], "strides": [1, 1]}
    upd = F.t("float32", [2])
    e = a.v.copy()
    e[slices(kw, 2)] = upd.v
    F.add("slice_update/float32/broadcast_update", "slice_update", [a, upd], kw, T("float32", e))
    upd = T("int32", [[7, 8]])
    e = a.v.copy()
    e[slices(kw, 2)] = upd.v
    F.add("slice_update/float32/int_update_cast", "slice_update", [a, upd], kw, T("float32", e))
    a = F.t("float32", [4, 3], view=[{"transpose": [1, 0]}])
    kw = {"start": [None, 1], "stop": [None, None], "strides": [2, 2]}
    upd = F.t("float32", list(a.v[slices(kw, 2)].shape), view=[])
    e = a.v.copy()
    e[slices(kw, 2)] = upd.v
    F.add("slice_update/float32/strided_base", "slice_update", [a, upd], kw, T("float32", e))
    F.err("slice_update/error/update_shape", "slice_update", [F.t("float32", [4]), F.t("float32", [3])],
          {"start": [0], "stop": [2], "strides": [1]}, "update cannot be broadcast to slice shape")

    # take(a, indices, axis=None -> flattened); negative indices wrap (Python style)
    for dt in ["float32", "int32", "bool", "float16", "bfloat16", "float64", "int64", "uint8", "uint32"]:
        a = F.t(dt, [3, 4])
        idx = T("int32", [2, 0, 2, -1])
        F.add(f"take/{dt}/axis0", "take", [a, T("int32", [2, 0, 2])], {"axis": 0}, T(dt, np.take(a.v, [2, 0, 2], 0)))
        F.add(f"take/{dt}/axis1_neg", "take", [a, idx], {"axis": 1}, T(dt, np.take(a.v, idx.v, 1)))
        if dt in ("float32", "int32"):
            fi = T("int32", [[0, 11], [5, -12]])
            F.add(f"take/{dt}/flat_2d_indices", "take", [a, fi], {}, T(dt, np.take(a.v, fi.v)))
            i2 = T("uint32", [[1, 0], [2, 2]])
            F.add(f"take/{dt}/axis0_2d_uint32_indices", "take", [a, i2], {"axis": 0}, T(dt, np.take(a.v, i2.v, 0)))
            F.add(f"take/{dt}/axis_m1_scalar_index", "take", [a, T("int32", 1)], {"axis": -1},
                  T(dt, np.take(a.v, 1, -1)))
            F.add(f"take/{dt}/empty_indices", "take", [a, T("int32", np.zeros((0,), np.int32))], {"axis": 0},
                  T(dt, np.zeros((0, 4))))
    a = F.t("float32", [4, 3], view=[{"transpose": [1, 0]}])
    idx = T("int64", [3, 1, 1])
    F.add("take/float32/strided_int64_idx", "take", [a, idx], {"axis": 1}, T("float32", np.take(a.v, idx.v, 1)))
    a = F.t("float32", [3, 4, 2])
    idx = T("int32", [[1], [0]])
    F.add("take/float32/rank3_axis1", "take", [a, idx], {"axis": 1}, T("float32", np.take(a.v, idx.v, 1)))

    # take_along_axis / put_along_axis
    for dt in ["float32", "int32", "float16", "bool"]:
        a = F.t(dt, [3, 4])
        idx = T("int32", np.argsort(F.uniform([3, 4]), axis=1)[:, :2])
        F.add(f"take_along_axis/{dt}/axis1", "take_along_axis", [a, idx], {"axis": 1},
              T(dt, np.take_along_axis(a.v, idx.v, 1)))
        idx0 = T("int32", F.ints([2, 4], 0, 3))
        F.add(f"take_along_axis/{dt}/axis0", "take_along_axis", [a, idx0], {"axis": 0},
              T(dt, np.take_along_axis(a.v, idx0.v, 0)))
        idxb = T("int32", [[0], [3], [1]])
        F.add(f"take_along_axis/{dt}/broadcast_idx", "take_along_axis", [a, idxb], {"axis": -1},
              T(dt, np.take_along_axis(a.v, idxb.v, -1)))
        vals = F.t(dt, [3, 2])
        e = a.v.copy()
        np.put_along_axis(e, idx.v, vals.v, 1)
        F.add(f"put_along_axis/{dt}/axis1", "put_along_axis", [a, idx, vals], {"axis": 1}, T(dt, e))
        v0 = F.t(dt, [1, 4])
        i0 = T("int32", [[2, 0, 1, 2]])
        e = a.v.copy()
        np.put_along_axis(e, i0.v, v0.v, 0)
        F.add(f"put_along_axis/{dt}/axis0", "put_along_axis", [a, i0, v0], {"axis": 0}, T(dt, e))
    a = F.t("float32", [3, 4])
    fi = T("int32", [5, 0, 11])
    F.add("take_along_axis/float32/axis_none", "take_along_axis", [a, fi], {"axis": None},
          T("float32", np.take_along_axis(a.v.reshape(-1), fi.v, 0)))
    i = T("int32", [[1], [0], [3]])
    v = T("float32", 9.5)
    e = a.v.copy()
    np.put_along_axis(e, i.v, 9.5, 1)
    F.add("put_along_axis/float32/scalar_values", "put_along_axis", [a, i, v], {"axis": 1}, T("float32", e))
    a = F.t("float32", [4, 3], view=[{"transpose": [1, 0]}])
    i = T("int32", [[3], [0], [2]])
    F.add("take_along_axis/float32/strided", "take_along_axis", [a, i], {"axis": 1},
          T("float32", np.take_along_axis(a.v, i.v, 1)))
    F.err("take_along_axis/error/rank_mismatch", "take_along_axis", [F.t("float32", [3, 4]), T("int32", [0, 1])],
          {"axis": 1}, "indices must have the same rank as a")

    # scatter_add: inputs [a, indices(1-D int), updates], kwargs {"axis": k}
    # out = a.copy(); for j, i in enumerate(indices): out[(:,)*k + (i,)] += updates[(:,)*k + (j,)]
    # i.e. np.add.at(out, (slice(None),)*k + (indices,), updates); duplicates accumulate.
    # updates.shape == a.shape[:k] + [len(indices)] + a.shape[k+1:]
    for dt in ["float32", "int32", "float16", "bfloat16", "float64", "int64", "uint32"]:
        for k, ishape in [(0, [3, 4]), (1, [3, 4]), (-1, [2, 3, 4])]:
            a = F.t(dt, ishape, 0, 3) if dt.startswith("u") else F.t(dt, ishape)
            n = ishape[k]
            idx = T("int32", [0, n - 1, 0, 1, 0])
            ushape = list(ishape)
            ushape[k] = 5
            upd = F.t(dt, ushape, 0, 3) if dt.startswith("u") else F.t(dt, ushape)
            ak = k % len(ishape)
            if is_float(dt):
                e = f64(a.v).copy()
                np.add.at(e, (slice(None),) * ak + (idx.v,), f64(upd.v))
            else:
                e = a.v.astype(np.int64).copy()
                np.add.at(e, (slice(None),) * ak + (idx.v,), upd.v.astype(np.int64))
            F.add(f"scatter_add/{dt}/axis{k}_{shp(ishape)}", "scatter_add", [a, idx, upd], {"axis": k}, out(e, dt),
                  *tol(dt))
    a = F.t("float32", [5])
    idx = T("int32", [1, 1, 1, 4])
    upd = T("float32", [1.0, 2.0, 3.0, 0.5])
    e = f64(a.v).copy()
    np.add.at(e, idx.v, f64(upd.v))
    F.add("scatter_add/float32/all_duplicates_1d", "scatter_add", [a, idx, upd], {"axis": 0}, out(e, "float32"),
          *tol("float32"))
    a = F.t("float32", [4, 3], view=[{"transpose": [1, 0]}])
    idx = T("int32", [2, 2])
    upd = F.t("float32", [3, 2])
    e = f64(a.v).copy()
    np.add.at(e, (slice(None), idx.v), f64(upd.v))
    F.add("scatter_add/float32/strided_base", "scatter_add", [a, idx, upd], {"axis": 1}, out(e, "float32"),
          *tol("float32"))
    a = F.t("float32", [3, 2])
    F.add("scatter_add/float32/empty_indices", "scatter_add", [a, T("int32", np.zeros((0,), np.int32)),
                                                               T("float32", np.zeros((0, 2)))], {"axis": 0},
          T("float32", a.v))

    # boolean mask selection via where(mask, x, 0)
    x = F.t("float32", [3, 4])
    m = T("bool", x.v > 0)
    F.add("where/mask/float32", "where", [m, x, T("float32", 0.0)], {}, T("float32", np.where(m.v, x.v, 0.0)))
    mi = T("bool", [True, False, True, True])
    xi = F.t("int32", [3, 4])
    F.add("where/mask/int32_row_mask", "where", [mi, xi, T("int32", -1)], {}, T("int32", np.where(mi.v, xi.v, -1)))
    return F


# ==============================================================================================
# linalg
# ==============================================================================================
def mm_tol(dt, k):
    if dt == "float32":
        return 1e-5, 1e-5 * max(1, k / 8)
    if dt == "float64":
        return 1e-12, 1e-12 * max(1, k)
    if dt == "float16":
        return 2e-3, 2e-3 * max(1, k / 4)
    return 1e-2, 1e-2 * max(1, k / 4)


def gen_linalg():
    F = Family("linalg", 8)

    def mm(a, b, tag, dt=None):
        od = dt or promote(a.dtype, b.dtype)
        e = np.matmul(f64(cast(a.v, od)), f64(cast(b.v, od)))
        k = a.v.shape[-1] if a.v.ndim else 1
        F.add(f"matmul/{a.dtype}_{b.dtype}/{tag}", "matmul", [a, b], {}, out(e, od), *mm_tol(od, k))

    for dt in FLOATS:
        lo, hi = -1, 1
        for (sa, sb) in [([2, 3], [3, 4]), ([1, 1], [1, 1]), ([4, 3], [3, 1]), ([1, 5], [5, 3]), ([5, 37], [37, 6]),
                         ([2, 3, 4], [2, 4, 5]), ([2, 1, 3, 4], [5, 4, 2]), ([3, 4], [2, 4, 2]), ([2, 2, 3], [3, 2]),
                         ([3], [3, 4]), ([2, 3], [3]), ([3], [3]), ([4], [2, 4, 3]),
                         ([0, 3], [3, 4]), ([2, 0], [0, 3]), ([2, 3], [3, 0])]:
            if dt != "float32" and (len(sa) > 3 or 0 in sa + sb or sa == [4]):
                continue
            mm(F.t(dt, sa, lo, hi), F.t(dt, sb, lo, hi), f"{shp(sa)}_{shp(sb)}")
        # larger square-ish to exercise blocking
        if dt in ("float32", "float16", "bfloat16"):
            mm(F.t(dt, [17, 19], -1, 1), F.t(dt, [19, 9], -1, 1), "17x19_19x9")
    # strided operands
    a = F.t("float32", [5, 4], -1, 1, view=[{"transpose": [1, 0]}])
    b = F.t("float32", [6, 3], -1, 1, view=[{"slice": [[None, 5]]}, {"transpose": [1, 0]}])
    b2 = F.t("float32", [5, 6], -1, 1)
    mm(a, b2, "lhs_transposed")
    mm(F.t("float32", [4, 3], -1, 1), b, "rhs_sliced_transposed")
    a = F.t("float32", [6, 8], -1, 1, view=[{"slice": [[None, None, 2], [None, None, -2]]}])
    mm(a, F.t("float32", [4, 2], -1, 1), "lhs_step_slices")
    a = F.t("float32", [4], -1, 1, view=[{"broadcast_to": [3, 4]}])
    mm(a, F.t("float32", [4, 2], -1, 1), "lhs_broadcast_view")
    a = F.t("float32", [2, 3, 4], -1, 1, view=[{"transpose": [0, 2, 1]}])
    mm(a, F.t("float32", [2, 3, 2], -1, 1), "batched_transposed")
    # mixed dtypes
    mm(F.t("float16", [2, 3], -1, 1), F.t("float32", [3, 2], -1, 1), "promote")
    mm(F.t("bfloat16", [2, 3], -1, 1), F.t("float16", [3, 2], -1, 1), "promote")
    # errors
    F.err("matmul/error/inner_mismatch", "matmul", [F.t("float32", [2, 3]), F.t("float32", [2, 3])], {},
          "inner dimensions do not match")
    F.err("matmul/error/batch_mismatch", "matmul", [F.t("float32", [2, 2, 3]), F.t("float32", [3, 3, 2])], {},
          "batch dimensions cannot be broadcast")
    F.err("matmul/error/scalar_operand", "matmul", [T("float32", 2.0), F.t("float32", [2, 2])], {},
          "matmul needs at least 1-D operands")
    F.err("matmul/error/1d_mismatch", "matmul", [F.t("float32", [3]), F.t("float32", [4])], {},
          "inner dimensions do not match")

    # addmm(c, a, b, alpha=1.0, beta=1.0) = beta * c + alpha * (a @ b)
    for dt in ["float32", "float16", "bfloat16", "float64"]:
        for cs, kw in [([2, 4], {}), ([2, 4], {"alpha": 2.0, "beta": 0.5}), ([4], {"alpha": -1.0}),
                       ([], {"beta": 0.0}), ([2, 1], {"alpha": 0.5, "beta": 2.0})]:
            if dt != "float32" and cs != [2, 4]:
                continue
            c, a, b = F.t(dt, cs, -1, 1), F.t(dt, [2, 3], -1, 1), F.t(dt, [3, 4], -1, 1)
            e = kw.get("beta", 1.0) * f64(c.v) + kw.get("alpha", 1.0) * (f64(a.v) @ f64(b.v))
            F.add(f"addmm/{dt}/c{shp(cs)}/" + ("_".join(f"{k}{v}" for k, v in kw.items()) or "default"), "addmm",
                  [c, a, b], kw, out(e, dt), *mm_tol(dt, 6))
    c, a, b = F.t("float32", [2, 2, 2], -1, 1), F.t("float32", [2, 2, 3], -1, 1), F.t("float32", [2, 3, 2], -1, 1)
    F.add("addmm/float32/batched", "addmm", [c, a, b], {"alpha": 1.5, "beta": -1.0},
          out(-f64(c.v) + 1.5 * np.matmul(f64(a.v), f64(b.v)), "float32"), *mm_tol("float32", 3))

    # outer (inputs flattened), inner (contract last axes)
    for dt in ["float32", "float16", "float64", "int32"]:
        a, b = F.t(dt, [3], -1, 1), F.t(dt, [4], -1, 1)
        if dt == "int32":
            a, b = T(dt, [1, -2, 3]), T(dt, [2, 0, -1, 4])
        e = np.outer(f64(a.v), f64(b.v))
        F.add(f"outer/{dt}/3_4", "outer", [a, b], {}, out(e, dt), *tol(dt))
    a, b = F.t("float32", [2, 2]), F.t("float32", [3])
    F.add("outer/float32/flattens_2d", "outer", [a, b], {}, out(np.outer(f64(a.v), f64(b.v)), "float32"), *tol("float32"))
    for dt in ["float32", "float16", "float64"]:
        for sa, sb in [([3], [3]), ([2, 3], [4, 3]), ([2, 2, 3], [3])]:
            if dt != "float32" and sa != [2, 3]:
                continue
            a, b = F.t(dt, sa, -1, 1), F.t(dt, sb, -1, 1)
            e = np.inner(f64(a.v), f64(b.v))
            F.add(f"inner/{dt}/{shp(sa)}_{shp(sb)}", "inner", [a, b], {}, out(e, dt), *mm_tol(dt, 3))
    F.err("inner/error/mismatch", "inner", [F.t("float32", [2, 3]), F.t("float32", [2, 4])], {},
          "last dimensions do not match")

    # tensordot(a, b, axes=2): axes int (last n of a with first n of b) or [[a axes], [b axes]]
    for sa, sb, axes in [([2, 3, 4], [3, 4, 5], 2), ([2, 3], [3, 4], 1), ([2, 3], [4, 5], 0),
                         ([2, 3, 4], [4, 3, 5], [[1, 2], [1, 0]]), ([3, 2], [3, 4], [[0], [0]]),
                         ([2, 3, 4], [2, 3, 4], 3), ([2, 3, 4], [5, 4, 3], [[-1, 1], [1, -1]])]:
        a, b = F.t("float32", sa, -1, 1), F.t("float32", sb, -1, 1)
        e = np.tensordot(f64(a.v), f64(b.v), axes=axes)
        F.add(f"tensordot/float32/{shp(sa)}_{shp(sb)}/{json.dumps(axes).replace(' ', '')}", "tensordot", [a, b],
              {"axes": axes}, out(e, "float32"), *mm_tol("float32", 12))
    a, b = F.t("float16", [2, 3, 4], -1, 1), F.t("float16", [3, 4, 2], -1, 1)
    F.add("tensordot/float16/2", "tensordot", [a, b], {"axes": 2}, out(np.tensordot(f64(a.v), f64(b.v), 2), "float16"),
          *mm_tol("float16", 12))
    F.err("tensordot/error/mismatch", "tensordot", [F.t("float32", [2, 3]), F.t("float32", [4, 5])], {"axes": 1},
          "contracted dimensions do not match")

    # einsum(subscripts, *operands): kwargs {"subscripts": ...}, inputs = operands
    ein = [("ij,jk->ik", [[2, 3], [3, 4]]), ("bij,bjk->bik", [[2, 2, 3], [2, 3, 2]]), ("ii->i", [[3, 3]]),
           ("ij->ji", [[2, 3]]), ("i,i->", [[4], [4]]), ("ij->", [[2, 3]]),
           ("bhqd,bhkd->bhqk", [[1, 2, 3, 4], [1, 2, 5, 4]]), ("ij->j", [[3, 4]]), ("i,j->ij", [[3], [2]]),
           ("ij,ij->ij", [[2, 3], [2, 3]]), ("ii", [[3, 3]]), ("ij,jk", [[2, 3], [3, 2]]), ("...ij,...jk->...ik", [[2, 2, 3], [2, 3, 2]]),
           ("ijk->kji", [[2, 3, 4]]), ("bij,jk->bik", [[2, 2, 3], [3, 4]])]
    for sub, shapes in ein:
        for dt in ["float32", "float16", "float64"]:
            if dt != "float32" and sub not in ("ij,jk->ik", "bhqd,bhkd->bhqk", "ii->i"):
                continue
            ops = [F.t(dt, s, -1, 1) for s in shapes]
            e = np.einsum(sub, *[f64(o.v) for o in ops])
            F.add(f"einsum/{dt}/{sub}", "einsum", ops, {"subscripts": sub}, out(e, dt), *mm_tol(dt, 6))
    a = F.t("float32", [3, 2], -1, 1, view=[{"transpose": [1, 0]}])
    b = F.t("float32", [3, 4], -1, 1)
    F.add("einsum/float32/ij,jk->ik/strided", "einsum", [a, b], {"subscripts": "ij,jk->ik"},
          out(np.einsum("ij,jk->ik", f64(a.v), f64(b.v)), "float32"), *mm_tol("float32", 3))
    F.err("einsum/error/dim_mismatch", "einsum", [F.t("float32", [2, 3]), F.t("float32", [4, 2])],
          {"subscripts": "ij,jk->ik"}, "dimension mismatch for index j")
    F.err("einsum/error/operand_count", "einsum", [F.t("float32", [2, 3])], {"subscripts": "ij,jk->ik"},
          "number of operands does not match subscripts")
    return F


# ==============================================================================================
# sort
# ==============================================================================================
def gen_sort():
    F = Family("sort", 9)
    for dt in NAMES:
        if dt == "bool":
            t = T("bool", [[True, False, True], [False, False, True]])
        elif dt in INTS:
            t = T(dt, F.ints([3, 5], 0, 5) if dt.startswith("u") else F.ints([3, 5], -4, 5))
        else:
            t = F.t(dt, [3, 5])
        for axis in (-1, 0, None):
            kw = {} if axis == -1 else {"axis": axis}
            F.add(f"sort/{dt}/axis_{axis}", "sort", [t], kw, T(dt, np.sort(t.v, axis=axis, kind="stable")))
            F.add(f"argsort/{dt}/axis_{axis}", "argsort", [t], kw,
                  T("uint32", np.argsort(t.v, axis=axis, kind="stable")), stable=True)
    sp = T("float32", [3.0, float("nan"), -1.0, float("inf"), float("-inf"), 0.5, 2.0, float("nan")])
    F.add("sort/float32/special_nan_last", "sort", [sp], {}, T("float32", np.sort(sp.v)))
    sp2 = T("float32", [3.0, float("nan"), -1.0, float("inf"), float("-inf"), 0.5])
    F.add("argsort/float32/special_nan_last", "argsort", [sp2], {}, T("uint32", np.argsort(sp2.v, kind="stable")))
    t = T("int32", [1, 0, 1, 0, 1, 2, 0])
    F.add("argsort/int32/ties_stable", "argsort", [t], {}, T("uint32", np.argsort(t.v, kind="stable")), stable=True)
    for n in (1, 33, 64):
        t = F.t("float32", [n])
        F.add(f"sort/float32/len{n}", "sort", [t], {}, T("float32", np.sort(t.v)))
        F.add(f"argsort/float32/len{n}", "argsort", [t], {}, T("uint32", np.argsort(t.v, kind="stable")))
    t = F.t("float32", [5, 4], view=[{"transpose": [1, 0]}])
    for axis in (0, 1):
        F.add(f"sort/float32/strided_axis{axis}", "sort", [t], {"axis": axis}, T("float32", np.sort(t.v, axis)))
        F.add(f"argsort/float32/strided_axis{axis}", "argsort", [t], {"axis": axis},
              T("uint32", np.argsort(t.v, axis, kind="stable")))
    t = F.t("float32", [6, 5], view=[{"slice": [[None, None, -2], [None, None, 2]]}])
    F.add("sort/float32/neg_step_slice", "sort", [t], {"axis": 0}, T("float32", np.sort(t.v, 0)))
    t3 = F.t("float32", [2, 3, 4])
    F.add("sort/float32/rank3_axis1", "sort", [t3], {"axis": 1}, T("float32", np.sort(t3.v, 1)))
    F.add("argsort/float32/rank3_axis1", "argsort", [t3], {"axis": 1}, T("uint32", np.argsort(t3.v, 1, kind="stable")))
    F.add("sort/float32/empty", "sort", [T("float32", np.zeros((0, 3)))], {}, T("float32", np.zeros((0, 3))))
    F.add("sort/float32/scalar_axis_none", "sort", [T("float32", 2.0)], {"axis": None}, T("float32", [2.0]))
    F.err("sort/error/axis_out_of_range", "sort", [F.t("float32", [2, 3])], {"axis": 2}, "axis out of range")

    # topk(a, k, axis=-1): the k largest along axis; expected is sorted ASCENDING along the axis.
    # MLX does not guarantee an order; "compare": "sorted" tells consumers to sort the actual
    # result along the axis (flattened when axis is None) before comparing.
    for dt in ["float32", "int32", "float16", "bfloat16", "float64", "uint8", "int64"]:
        t = F.t(dt, [3, 6])
        for k, axis in [(1, -1), (3, -1), (6, -1), (2, 0), (3, None), (1, 1)]:
            if axis is None:
                e = np.sort(t.v.reshape(-1))[-k:]
            else:
                e = np.sort(t.v, axis=axis)
                e = np.take(e, range(e.shape[axis] - k, e.shape[axis]), axis=axis)
            kw = {"k": k} if axis == -1 else {"k": k, "axis": axis}
            F.add(f"topk/{dt}/k{k}_axis{axis}", "topk", [t], kw, T(dt, e), compare="sorted")
    t = F.t("float32", [5, 4], view=[{"transpose": [1, 0]}])
    F.add("topk/float32/strided", "topk", [t], {"k": 2}, T("float32", np.sort(t.v, -1)[:, -2:]), compare="sorted")
    t = F.t("float32", [50])
    F.add("topk/float32/len50_k7", "topk", [t], {"k": 7}, T("float32", np.sort(t.v)[-7:]), compare="sorted")
    F.err("topk/error/k_too_large", "topk", [F.t("float32", [3])], {"k": 4}, "k larger than axis size")

    # argpartition(a, kth, axis=-1): only checkable by property.
    for dt in ["float32", "int32", "float16"]:
        for shape, kth, axis in [([7], 3, -1), ([3, 6], 0, -1), ([3, 6], 5, -1), ([4, 5], 2, 0), ([8], -1, -1)]:
            t = F.t(dt, shape)
            kw = {"kth": kth} if axis == -1 else {"kth": kth, "axis": axis}
            F.add(f"argpartition/{dt}/{shp(shape)}_kth{kth}_axis{axis}", "argpartition", [t], kw, None,
                  expected_property="partition", reference_sorted=T(dt, np.sort(t.v, axis=axis)).json())
    return F


# ==============================================================================================
# misc: astype, contiguous, where, clip, isclose, allclose, softmax, log_softmax
# ==============================================================================================
def gen_misc():
    F = Family("misc", 10)

    # astype(dtype): float->int truncates toward zero (in-range values only, no nan);
    # int->int narrowing wraps (two's complement); float->bool is x != 0; overflow to f16 -> inf.
    fvals = [1.7, -1.7, 2.5, -2.5, 0.0, -0.0, 100.9, -100.9, 3.0, 0.49]
    for src in FLOATS:
        t = T(src, fvals)
        for dst in NAMES:
            if dst.startswith("u"):
                tv = T(src, [1.7, 2.5, 0.0, 100.9, 3.0, 0.49, 200.2])
            else:
                tv = t
            if dst == "bool":
                e = T("bool", f64(tv.v) != 0)
            elif dst in INTS:
                e = T(dst, np.trunc(f64(tv.v)).astype(np.int64))
            else:
                e = out(f64(tv.v), dst)
            F.add(f"astype/{src}_to_{dst}", "astype", [tv], {"dtype": dst}, e)
    ivals = [0, 1, 7, 100, 255, 3]
    svals = [0, 1, -1, 100, -100, 2147483647 // 2]
    for src in INTS + ["bool"]:
        if src == "bool":
            t = T("bool", [True, False, True])
        elif src.startswith("u"):
            t = T(src, ivals)
        else:
            t = T(src, svals)
        for dst in NAMES:
            if dst == "bool":
                e = T("bool", t.v != 0)
            elif dst in INTS:
                e = T(dst, wrap(t.v, dst))
            else:
                e = out(f64(t.v), dst)
            F.add(f"astype/{src}_to_{dst}", "astype", [t], {"dtype": dst}, e,
                  *((1e-3, 0.0) if dst in ("float16",) else (1e-2, 0.0) if dst == "bfloat16" else (0.0, 0.0)))
    sp = T("float32", [float("nan"), float("inf"), float("-inf"), 70000.0, 1e-8, 65504.0, 3.4e38, 1.00048828125])
    for dst in ("float16", "bfloat16", "float64"):
        F.add(f"astype/float32_to_{dst}/special", "astype", [sp], {"dtype": dst}, out(f64(sp.v), dst))
    sp64 = T("float64", [1e300, -1e300, 1e-50, 0.1, float("nan")])
    F.add("astype/float64_to_float32/special", "astype", [sp64], {"dtype": "float32"}, out(sp64.v, "float32"))
    t = F.t("float32", [4, 3], view=[{"transpose": [1, 0]}])
    F.add("astype/float32_to_float16/strided", "astype", [t], {"dtype": "float16"}, out(f64(t.v), "float16"))
    F.add("astype/float32_to_int32/strided", "astype", [t], {"dtype": "int32"}, out(np.trunc(f64(t.v)), "int32"))
    F.add("astype/float32_to_float32/identity", "astype", [t], {"dtype": "float32"}, T("float32", t.v))
    F.add("astype/float32_to_int32/empty", "astype", [T("float32", np.zeros((0, 2)))], {"dtype": "int32"},
          T("int32", np.zeros((0, 2))))

    # contiguous: materialises any view; values unchanged
    for dt, view in [("float32", [{"transpose": [1, 0]}]), ("int32", [{"slice": [[None, None, -1], [1, None, 2]]}]),
                     ("float16", [{"broadcast_to": [3, 2, 4]}]), ("bool", [{"transpose": [1, 0]}]), ("float32", [])]:
        t = F.t(dt, [2, 4], view=view)
        F.add(f"contiguous/{dt}/" + ("_".join(next(iter(s)) for s in view) or "already"), "contiguous", [t], {},
              T(dt, t.v))

    # where(cond, x, y): cond is truthy (any dtype, nonzero = true); x/y promoted together
    for dt in NAMES:
        c, x, y = F.t("bool", [2, 3]), F.t(dt, [2, 3]), F.t(dt, [2, 3])
        F.add(f"where/{dt}", "where", [c, x, y], {}, T(dt, np.where(c.v, x.v, y.v)))
    c, x, y = F.t("bool", [3, 1]), F.t("float32", [1, 4]), F.t("float32", [])
    F.add("where/float32/broadcast3", "where", [c, x, y], {}, T("float32", np.where(c.v, x.v, y.v)))
    c, x, y = F.t("bool", [2, 3]), F.t("int32", [2, 3]), F.t("float16", [3])
    F.add("where/int32_float16/promote", "where", [c, x, y], {},
          T("float16", np.where(c.v, cast(x.v, "float16"), y.v)))
    c, x, y = T("int32", [0, 2, -1, 0]), F.t("float32", [4]), F.t("float32", [4])
    F.add("where/int_cond", "where", [c, x, y], {}, T("float32", np.where(c.v != 0, x.v, y.v)))
    c = T("bool", [True, False, True, False, True, False], shape=[2, 3], view=[{"transpose": [1, 0]}])
    x, y = F.t("float32", [3, 2]), F.t("float32", [2], view=[{"broadcast_to": [3, 2]}])
    F.add("where/float32/strided", "where", [c, x, y], {}, T("float32", np.where(c.v, x.v, y.v)))
    F.add("where/float32/empty", "where", [T("bool", np.zeros((0, 2), bool)), F.t("float32", [0, 2]), T("float32", 1.0)],
          {}, T("float32", np.zeros((0, 2))))
    F.err("where/error/broadcast", "where", [F.t("bool", [2]), F.t("float32", [3]), F.t("float32", [3])], {},
          "shapes cannot be broadcast")

    # clip(a, a_min, a_max): kwargs scalars (weakly typed, null = no bound) or array inputs [a, lo, hi]
    for dt in ["float32", "float16", "bfloat16", "float64", "int32", "uint8", "int64"]:
        t = F.t(dt, [2, 5], -4, 4)
        for lo, hi in [(-1, 2), (None, 1), (0, None), (2, -1)]:
            if dt.startswith("u") and min(x for x in (lo, hi, 0) if x is not None) < 0:
                continue
            e = t.v.astype(np.float64) if is_float(dt) else t.v.astype(np.int64)
            if lo is not None:
                e = np.maximum(e, lo)
            if hi is not None:
                e = np.minimum(e, hi)
            F.add(f"clip/{dt}/{lo}_{hi}", "clip", [t], {"a_min": lo, "a_max": hi}, out(e, dt))
    t = F.t("int32", [5], -4, 4)
    F.add("clip/int32/float_bounds_weak_promote", "clip", [t], {"a_min": -1.5, "a_max": 2.5},
          out(np.clip(t.v.astype(np.float64), -1.5, 2.5), "float32"))
    t = F.t("float16", [5], -4, 4)
    F.add("clip/float16/float_bounds_stay_f16", "clip", [t], {"a_min": -0.5, "a_max": 0.75},
          out(np.clip(f64(t.v), -0.5, 0.75), "float16"))
    sp = T("float32", [float("nan"), float("inf"), float("-inf"), -0.0, 5.0])
    F.add("clip/float32/special", "clip", [sp], {"a_min": -1.0, "a_max": 1.0},
          out(np.clip(f64(sp.v), -1.0, 1.0), "float32"))
    t, lo, hi = F.t("float32", [3, 4]), F.t("float32", [4], -2, 0), F.t("float32", [3, 1], 0, 2)
    F.add("clip/float32/array_bounds", "clip", [t, lo, hi], {},
          T("float32", np.minimum(np.maximum(t.v, lo.v), hi.v)))
    t, lo, hi = F.t("int32", [2, 3]), T("int32", -1), T("float32", [0.5, 1.5, 2.5])
    F.add("clip/int32/array_bounds_promote", "clip", [t, lo, hi], {},
          out(np.minimum(np.maximum(t.v.astype(np.float64), -1), f64(hi.v)), "float32"))
    t = F.t("float32", [4, 3], view=[{"transpose": [1, 0]}])
    F.add("clip/float32/strided", "clip", [t], {"a_min": -1.0, "a_max": 1.0}, out(np.clip(f64(t.v), -1, 1), "float32"))
    F.err("clip/error/both_none", "clip", [F.t("float32", [3])], {"a_min": None, "a_max": None},
          "at most one of a_min and a_max may be None")

    # isclose / allclose: |a - b| <= atol + rtol * |b|; defaults rtol=1e-5, atol=1e-8, equal_nan=False
    a = T("float32", [1.0, 1.0, 1.0, float("nan"), float("inf"), float("inf"), 0.0, 1e-9, 100.0])
    b = T("float32", [1.0, 1.000001, 1.001, float("nan"), float("inf"), float("-inf"), 1e-9, 0.0, 100.001])
    for kw in [{}, {"equal_nan": True}, {"rtol": 1e-2}, {"atol": 1e-3}, {"rtol": 0.0, "atol": 0.0}]:
        name = "_".join(f"{k}{v}" for k, v in kw.items()) or "default"
        F.add(f"isclose/float32/{name}", "isclose", [a, b], kw,
              T("bool", np.isclose(f64(a.v), f64(b.v), rtol=kw.get("rtol", 1e-5), atol=kw.get("atol", 1e-8),
                                   equal_nan=kw.get("equal_nan", False))))
    for dt in ["float16", "bfloat16", "float64", "int32"]:
        x = F.t(dt, [2, 3])
        y = T(dt, np.where(np.arange(6).reshape(2, 3) % 2 == 0, x.v, F.data(dt, [2, 3])))
        kw = {"rtol": 1e-2, "atol": 1e-2} if dt in ("float16", "bfloat16") else {}
        xv, yv = f64(x.v), f64(y.v)
        F.add(f"isclose/{dt}", "isclose", [x, y], kw,
              T("bool", np.isclose(xv, yv, rtol=kw.get("rtol", 1e-5), atol=kw.get("atol", 1e-8))))
    x, y = F.t("float32", [3, 1]), F.t("float32", [1, 4])
    F.add("isclose/float32/broadcast", "isclose", [x, y], {"atol": 1.0},
          T("bool", np.isclose(f64(x.v), f64(y.v), rtol=1e-5, atol=1.0)))
    for kw, (av, bv) in [({}, ([1.0, 2.0], [1.0, 2.000001])), ({}, ([1.0, 2.0], [1.0, 2.1])),
                         ({"atol": 0.2}, ([1.0, 2.0], [1.0, 2.1])), ({}, ([1.0, float("nan")], [1.0, float("nan")])),
                         ({"equal_nan": True}, ([1.0, float("nan")], [1.0, float("nan")])), ({}, ([], [])),
                         ({"rtol": 0.1}, ([10.0, 20.0], [10.5, 21.0]))]:
        a, b = T("float32", av), T("float32", bv)
        e = np.allclose(f64(a.v), f64(b.v), rtol=kw.get("rtol", 1e-5), atol=kw.get("atol", 1e-8),
                        equal_nan=kw.get("equal_nan", False))
        name = "_".join(f"{k}{v}" for k, v in kw.items()) or "default"
        F.add(f"allclose/float32/{json.dumps(bv).replace(' ', '')}/{name}", "allclose", [a, b], kw, T("bool", bool(e)))
    x, y = F.t("float32", [2, 3]), None
    y = T("float32", x.v[0])
    F.add("allclose/float32/broadcast_false", "allclose", [x, y], {}, T("bool", bool(np.allclose(x.v, y.v))))
    F.add("allclose/float32/broadcast_true", "allclose", [T("float32", [[1.0, 2.0], [1.0, 2.0]]), T("float32", [1.0, 2.0])],
          {}, T("bool", True))

    # softmax / log_softmax(a, axis=None -> all axes)
    def sm(x, axis, log=False):
        ax = norm_axis(axis, x.ndim)
        m = np.max(x, axis=ax, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        z = x - m
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.sum(np.exp(z), axis=ax, keepdims=True)
            return z - np.log(s) if log else np.exp(z) / s

    for op, log in [("softmax", False), ("log_softmax", True)]:
        for dt in FLOATS:
            t = F.t(dt, [3, 5], -4, 4)
            for axis in (-1, 0, None, [0, 1]):
                if dt != "float32" and axis not in (-1,):
                    continue
                kw = {} if axis is None else {"axis": axis}
                F.add(f"{op}/{dt}/axis_{axis}".replace(" ", ""), op, [t], kw, out(sm(f64(t.v), axis, log), dt),
                      *tol(dt, "transc" if dt != "float32" else "reduce"))
        t = T("float32", [[1000.0, 1001.0, 999.0], [-1000.0, -1001.0, -999.0], [float("-inf"), 0.0, 1.0],
                          [0.0, 0.0, 0.0]])
        F.add(f"{op}/float32/stability", op, [t], {"axis": -1}, out(sm(f64(t.v), -1, log), "float32"),
              *tol("float32", "reduce"))
        t = T("int32", [[1, 2, 3], [0, 0, 0]])
        F.add(f"{op}/int32_to_float32", op, [t], {"axis": -1}, out(sm(f64(t.v), -1, log), "float32"),
              *tol("float32", "reduce"))
        t = F.t("float32", [5, 3], view=[{"transpose": [1, 0]}])
        F.add(f"{op}/float32/strided", op, [t], {"axis": -1}, out(sm(f64(t.v), -1, log), "float32"),
              *tol("float32", "reduce"))
        t = F.t("float32", [2, 67], -4, 4)
        F.add(f"{op}/float32/long_rows", op, [t], {"axis": -1}, out(sm(f64(t.v), -1, log), "float32"),
              *tol("float32", "reduce"))
        t = F.t("float32", [2, 3, 4], -4, 4)
        F.add(f"{op}/float32/rank3_axis1", op, [t], {"axis": 1}, out(sm(f64(t.v), 1, log), "float32"),
              *tol("float32", "reduce"))
        F.add(f"{op}/float32/empty", op, [T("float32", np.zeros((0, 3)))], {"axis": -1}, T("float32", np.zeros((0, 3))))
        F.err(f"{op}/error/axis_out_of_range", op, [F.t("float32", [2, 3])], {"axis": 2}, "axis out of range")
    return F


# ==============================================================================================
# --verify-mlx: run every case through MLX and report disagreements
# ==============================================================================================
def verify_mlx(families):
    import mlx.core as mx

    MXDT = {"bool": mx.bool_, "uint8": mx.uint8, "uint32": mx.uint32, "int32": mx.int32, "int64": mx.int64,
            "float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32, "float64": mx.float64}
    NAME_OF = {v: k for k, v in MXDT.items()}

    def to_mx(d):
        v = np.array(dec_tensor(d), copy=True)  # (np.ascontiguousarray would make 0-d arrays 1-d)
        if d["dtype"] == "bfloat16":
            return mx.array(v.astype(np.float32)).astype(mx.bfloat16)
        return mx.array(v, dtype=MXDT[d["dtype"]])

    def to_np(a):
        if a.dtype == mx.bfloat16:
            return np.array(a.astype(mx.float32)).astype(BF16)
        return np.array(a)

    def compare(got, exp, rtol, atol, sort_axis=None):
        name = NAME_OF.get(got.dtype, str(got.dtype))
        if name != exp["dtype"]:
            return f"dtype {name} != {exp['dtype']}"
        g = to_np(got)
        if list(g.shape) != exp["shape"]:
            return f"shape {list(g.shape)} != {exp['shape']}"
        e = dec_tensor(exp)
        if sort_axis is not False and sort_axis is not None:
            g = np.sort(g.reshape(-1) if sort_axis == "flat" else g, axis=-1 if sort_axis == "flat" else sort_axis)
        if exp["dtype"] in FLOATS:
            g64, e64 = f64(g), f64(e)
            both_nan = np.isnan(g64) & np.isnan(e64)
            inf_eq = np.isinf(e64) & (g64 == e64)
            with np.errstate(invalid="ignore"):
                ok = both_nan | inf_eq | (np.abs(g64 - e64) <= atol + rtol * np.abs(e64))
            if not np.all(ok):
                i = np.argwhere(~ok)[0]
                return f"value at {tuple(i)}: mlx {g64[tuple(i)]!r} vs fixture {e64[tuple(i)]!r}"
        elif not np.array_equal(g, e):
            return f"values differ: mlx {g.reshape(-1)[:8]} vs fixture {e.reshape(-1)[:8]}"
        return None

    def run_case(c):
        op, kw = c["op"], dict(c["kwargs"])
        ins = [to_mx(d) for d in c["inputs"]]
        for k in ("dtype",):
            if k in kw:
                kw[k] = MXDT[kw[k]]
        for k, v in kw.items():
            if v in ("nan", "inf", "-inf"):
                kw[k] = float(v)

        def sl():
            n = max(len(kw.get("start", [])), len(kw.get("stop", [])), len(kw.get("strides", [])))
            if n > ins[0].ndim:
                raise ValueError("too many slice entries")
            if any(s == 0 for s in kw.get("strides", [])):
                raise ValueError("zero stride")
            return tuple(slice(kw["start"][i], kw["stop"][i], kw["strides"][i]) for i in range(n))

        if op == "slice":
            return ins[0][sl()]
        if op == "slice_update":
            a = mx.array(ins[0])
            s = sl()
            region = np.empty(dec_tensor(c["inputs"][0]).shape)[s].shape
            a[s] = mx.broadcast_to(ins[1], region).astype(a.dtype)
            return a
        if op == "scatter_add":
            ax = kw["axis"] % ins[0].ndim
            return ins[0].at[(slice(None),) * ax + (ins[1],)].add(ins[2])
        if op == "astype":
            return ins[0].astype(kw["dtype"])
        if op in ("concatenate", "stack"):
            return getattr(mx, op)(ins, **kw)
        if op == "einsum":
            return mx.einsum(kw["subscripts"], *ins)
        if op == "tile":
            return mx.tile(ins[0], kw["reps"])
        if op == "log_softmax":  # not in mlx.core (it lives in mlx.nn)
            ax = kw.get("axis", list(range(ins[0].ndim)))
            return ins[0] - mx.logsumexp(ins[0], axis=ax, keepdims=True)
        if op in ("clip",) and len(ins) == 3:
            return mx.clip(ins[0], ins[1], ins[2])
        return getattr(mx, op)(*ins, **kw)

    total = bad = skipped = 0
    for F in families:
        for c in F.cases:
            total += 1
            try:
                r = run_case(c)
                if isinstance(r, list):
                    mx.eval(*r)
                else:
                    mx.eval(r)
            except Exception as ex:  # noqa: BLE001
                if isinstance(c.get("expected"), dict) and "error" in c["expected"]:
                    continue
                if isinstance(ex, (AttributeError, TypeError)) and "error" not in str(c.get("expected", "")):
                    skipped += 1
                    print(f"SKIP {F.name}:{c['id']}: {type(ex).__name__}: {ex}"[:200])
                    continue
                bad += 1
                print(f"MISMATCH {F.name}:{c['id']}: mlx raised {type(ex).__name__}: {str(ex)[:120]}")
                continue
            exp = c.get("expected")
            if exp is None:  # argpartition: check property
                got = to_np(r)
                ref = dec_tensor(c["reference_sorted"])
                ax = c["kwargs"].get("axis", -1)
                kth = c["kwargs"]["kth"]
                vals = np.take_along_axis(dec_tensor(c["inputs"][0]), got.astype(np.int64), axis=ax)
                n = vals.shape[ax]
                kk = kth % n
                pivot = np.take(ref, [kk], axis=ax)
                left = np.take(vals, range(kk), axis=ax)
                right = np.take(vals, range(kk + 1, n), axis=ax)
                ok = np.all(np.take(vals, [kk], axis=ax) == pivot) and np.all(left <= pivot) and np.all(right >= pivot)
                if not ok:
                    bad += 1
                    print(f"MISMATCH {F.name}:{c['id']}: partition property fails")
                continue
            if isinstance(exp, dict) and "error" in exp:
                bad += 1
                print(f"MISMATCH {F.name}:{c['id']}: fixture expects error ({exp['error']}), mlx succeeded")
                continue
            if isinstance(exp, list):
                msgs = [compare(g, e, c["rtol"], c["atol"]) for g, e in zip(r, exp)]
                msg = next((m for m in msgs if m), None) if len(r) == len(exp) else "different number of outputs"
            else:
                sort_axis = None
                if c.get("compare") == "sorted":
                    ax = c["kwargs"].get("axis", -1)
                    sort_axis = "flat" if ax is None else ax
                msg = compare(r, exp, c["rtol"], c["atol"], sort_axis)
            if msg:
                bad += 1
                print(f"MISMATCH {F.name}:{c['id']}: {msg}")
    print(f"verify-mlx: {total} cases, {bad} mismatches, {skipped} skipped (op/kwargs not in MLX)")
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="verify the files are up to date instead of writing")
    ap.add_argument("--verify-mlx", action="store_true", help="cross-check every case against mlx.core")
    args = ap.parse_args()
    os.makedirs(OUT_DIR, exist_ok=True)
    gens = [gen_creation, gen_unary, gen_binary, gen_reduce, gen_scan, gen_shape, gen_indexing, gen_linalg,
            gen_sort, gen_misc]
    families = [g() for g in gens]
    # self-check: every encoded tensor decodes back to exactly the value it was built from
    total_cases = total_bytes = 0
    for F in families:
        if not args.verify_mlx:
            n, size = F.write(check=args.check)
            total_cases += n
            total_bytes += size
            print(f"{F.name:10s} {n:5d} cases {size / 1024:8.1f} KiB")
    if args.verify_mlx:
        sys.exit(1 if verify_mlx(families) else 0)
    print(f"{'total':10s} {total_cases:5d} cases {total_bytes / 1024:8.1f} KiB")


if __name__ == "__main__":
    main()
