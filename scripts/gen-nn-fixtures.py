#!/usr/bin/env python3
"""Golden values for tessera-nn from PyTorch (CPU, float64): forward outputs and the gradients of
sum(out * w) for a fixed random w, with respect to every input and parameter.

Writes tests/fixtures/nn/layers.json. Run with a Python that has torch, e.g. the venv that
scripts/compare-bench.sh creates:  .cache/bench-venv/bin/python scripts/gen-nn-fixtures.py
"""
import json
import pathlib

import torch

torch.manual_seed(0)
F = torch.nn.functional
cases = []


def t(x):
    return {"shape": list(x.shape), "data": [float(v) for v in x.detach().reshape(-1).tolist()]}


def case(name, fn, inputs, params=None, extra=None):
    params = params or {}
    leaves = {k: v.clone().requires_grad_(True) for k, v in {**inputs, **params}.items() if v.dtype.is_floating_point}
    args = {k: leaves.get(k, v) for k, v in {**inputs, **params}.items()}
    out = fn(**args)
    w = torch.randn(out.shape, dtype=torch.float64)
    (out * w).sum().backward()
    cases.append({
        "name": name,
        "inputs": {k: t(v) for k, v in inputs.items()},
        "int_inputs": {k: [int(i) for i in v.reshape(-1).tolist()] for k, v in inputs.items() if not v.dtype.is_floating_point},
        "params": {k: t(v) for k, v in params.items()},
        "extra": extra or {},
        "out": t(out),
        "w": t(w),
        "grads": {k: t(v.grad) for k, v in leaves.items()},
    })


d = torch.float64
x = torch.randn(3, 5, dtype=d)
case("layer_norm", lambda x, weight, bias: F.layer_norm(x, (5,), weight, bias, 1e-5),
     {"x": x}, {"weight": torch.randn(5, dtype=d), "bias": torch.randn(5, dtype=d)}, {"eps": 1e-5})
case("rms_norm", lambda x, weight: x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-6) * weight,
     {"x": x}, {"weight": torch.randn(5, dtype=d)}, {"eps": 1e-6})
case("linear", lambda x, weight, bias: F.linear(x, weight, bias),
     {"x": x}, {"weight": torch.randn(4, 5, dtype=d), "bias": torch.randn(4, dtype=d)})
case("embedding", lambda idx, weight: F.embedding(idx, weight),
     {"idx": torch.tensor([[1, 3], [3, 0]])}, {"weight": torch.randn(4, 3, dtype=d)})
case("gelu", lambda x: F.gelu(x), {"x": x})
case("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), {"x": x})
case("silu", lambda x: F.silu(x), {"x": x})
case("relu", lambda x: F.relu(x), {"x": x})
case("mse_loss", lambda x, y: F.mse_loss(x, y).reshape(1), {"x": x, "y": torch.randn(3, 5, dtype=d)})
case("cross_entropy", lambda x, y: F.cross_entropy(x, y, label_smoothing=0.1).reshape(1),
     {"x": x, "y": torch.tensor([4, 0, 2])}, extra={"label_smoothing": 0.1})

out = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "nn" / "layers.json"
out.write_text(json.dumps({"torch": torch.__version__, "cases": cases}, indent=None) + "\n")
print(f"wrote {len(cases)} cases to {out}")
