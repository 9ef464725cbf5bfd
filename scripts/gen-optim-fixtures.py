"""Golden values for tessera's Adafactor: torch.optim.Adafactor in float64 on a matrix and a
vector parameter for a few steps with fixed gradients. Writes tests/fixtures/nn/adafactor.json.

    .cache/bench-venv/bin/python scripts/gen-optim-fixtures.py
"""
import json
import pathlib

import torch

torch.manual_seed(0)
out = {"torch": torch.__version__, "cases": []}
for kw in [{"lr": 0.05}, {"lr": 0.5, "weight_decay": 0.1, "d": 1.5, "beta2_decay": -0.5}]:
    w = torch.randn(3, 4, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    grads = [(torch.randn(3, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64))
             for _ in range(5)]
    case = {"kwargs": kw, "w0": w.flatten().tolist(), "b0": b.tolist(),
            "grads": [[gw.flatten().tolist(), gb.tolist()] for gw, gb in grads], "steps": []}
    pw, pb = torch.nn.Parameter(w.clone()), torch.nn.Parameter(b.clone())
    opt = torch.optim.Adafactor([pw, pb], **kw)
    for gw, gb in grads:
        pw.grad, pb.grad = gw.clone(), gb.clone()
        opt.step()
        case["steps"].append([pw.detach().flatten().tolist(), pb.detach().tolist()])
    out["cases"].append(case)
path = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/nn/adafactor.json"
path.write_text(json.dumps(out, indent=1) + "\n")
print("wrote", path)
