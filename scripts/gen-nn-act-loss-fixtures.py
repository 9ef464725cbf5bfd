#!/usr/bin/env python3
"""Golden values for tessera-nn's activations and losses from PyTorch (CPU, float64): forward
outputs and the gradients of sum(out * w) for a fixed random w, with respect to every
differentiable input (targets included where PyTorch differentiates them).

Each case names the tessera function (`op`) and its arguments (`args`); float tensors listed in
`diff` are differentiated. A gradient PyTorch gives as non-finite (e.g. the target gradient of
kl_div where the target is 0) is left out and listed in `skipped_grads`. Class axes are last, as
tessera's; PyTorch's (N, C, d) layouts are permuted here.

Writes tests/fixtures/nn/activations_losses.json:
    .cache/bench-venv/bin/python scripts/gen-nn-act-loss-fixtures.py
"""
import json
import pathlib
import warnings

import torch

warnings.filterwarnings("ignore", message="reduction: 'mean' divides")

torch.manual_seed(0)
F = torch.nn.functional
d = torch.float64
cases = []


def t(x):
    return {"shape": list(x.shape), "data": [float(v) for v in x.detach().reshape(-1).tolist()]}


def case(name, op, fn, inputs, diff, args=None):
    leaves = {k: v.clone().requires_grad_(k in diff) for k, v in inputs.items()}
    out = fn(**leaves)
    w = torch.randn(out.shape, dtype=d)
    if diff:
        (out * w).sum().backward()
    grads, skipped = {}, []
    for k in diff:
        g = leaves[k].grad
        if g is None:
            g = torch.zeros_like(leaves[k])
        if torch.isfinite(g).all():
            grads[k] = t(g)
        else:
            skipped.append(k)
    cases.append({
        "name": name,
        "op": op,
        "args": args or {},
        "inputs": {k: t(v) for k, v in inputs.items() if v.dtype.is_floating_point},
        "int_inputs": {k: {"shape": list(v.shape), "data": [int(i) for i in v.reshape(-1).tolist()]}
                       for k, v in inputs.items() if not v.dtype.is_floating_point},
        "diff": list(diff),
        "out": t(out),
        "w": t(w),
        "grads": grads,
        "skipped_grads": skipped,
    })


# Activations: edge values (kinks at 0, +-3, 6; large |x|) and random ones.
edges = torch.tensor([-1000.0, -30.0, -6.0, -3.0, -1.5, -0.5, 0.0, 0.25, 1.0, 3.0, 6.0, 7.0, 30.0, 1000.0], dtype=d)
xa = torch.cat([edges, torch.randn(10, dtype=d) * 2]).reshape(4, 6)
act = [
    ("relu", F.relu, {}),
    ("relu6", F.relu6, {}),
    ("leaky_relu", lambda x: F.leaky_relu(x, 0.1), {"negative_slope": 0.1}),
    ("leaky_relu_default", lambda x: F.leaky_relu(x), {"negative_slope": 0.01}),
    ("elu", lambda x: F.elu(x), {"alpha": 1.0}),
    ("elu_alpha", lambda x: F.elu(x, 0.5), {"alpha": 0.5}),
    ("selu", F.selu, {}),
    ("gelu", F.gelu, {}),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), {}),
    ("silu", F.silu, {}),
    ("mish", F.mish, {}),
    ("softplus", lambda x: F.softplus(x), {"beta": 1.0, "threshold": 20.0}),
    ("softplus_beta", lambda x: F.softplus(x, beta=2.0, threshold=5.0), {"beta": 2.0, "threshold": 5.0}),
    ("softplus_big_threshold", lambda x: F.softplus(x, beta=0.5, threshold=100.0), {"beta": 0.5, "threshold": 100.0}),
    ("softsign", F.softsign, {}),
    ("sigmoid", torch.sigmoid, {}),
    ("tanh", torch.tanh, {}),
    ("hardswish", F.hardswish, {}),
]
for name, fn, args in act:
    op = name
    for suffix in ("_default", "_alpha", "_beta", "_big_threshold"):
        if op.endswith(suffix):
            op = op[: -len(suffix)]
    case(name, op, lambda x, fn=fn: fn(x), {"x": xa}, ["x"], args)
case("glu_last", "glu", lambda x: F.glu(x, -1), {"x": torch.randn(2, 6, dtype=d)}, ["x"], {"axis": -1})
case("glu_axis0", "glu", lambda x: F.glu(x, 0), {"x": torch.randn(4, 3, dtype=d)}, ["x"], {"axis": 0})

# Regression losses, with a zero difference and differences at the kinks.
p = torch.randn(3, 4, dtype=d)
y = torch.randn(3, 4, dtype=d)
y[0, 0] = p[0, 0]            # d = 0
y[0, 1] = p[0, 1] - 1.5      # |d| > 1
y[1, 2] = p[1, 2] + 0.3
for red in ("none", "mean", "sum"):
    case(f"mse_{red}", "mse_loss", lambda p, y, red=red: F.mse_loss(p, y, reduction=red), {"p": p, "y": y}, ["p", "y"], {"reduction": red})
    case(f"l1_{red}", "l1_loss", lambda p, y, red=red: F.l1_loss(p, y, reduction=red), {"p": p, "y": y}, ["p", "y"], {"reduction": red})
for beta in (1.0, 0.5, 0.0):
    case(f"smooth_l1_{beta}", "smooth_l1_loss", lambda p, y, beta=beta: F.smooth_l1_loss(p, y, beta=beta),
         {"p": p, "y": y}, ["p", "y"], {"beta": beta, "reduction": "mean"})
case("smooth_l1_sum", "smooth_l1_loss", lambda p, y: F.smooth_l1_loss(p, y, beta=0.7, reduction="sum"),
     {"p": p, "y": y}, ["p", "y"], {"beta": 0.7, "reduction": "sum"})
for delta in (1.0, 0.7):
    case(f"huber_{delta}", "huber_loss", lambda p, y, delta=delta: F.huber_loss(p, y, delta=delta),
         {"p": p, "y": y}, ["p", "y"], {"delta": delta, "reduction": "mean"})
case("huber_none", "huber_loss", lambda p, y: F.huber_loss(p, y, delta=0.5, reduction="none"),
     {"p": p, "y": y}, ["p", "y"], {"delta": 0.5, "reduction": "none"})

# Cross entropy / nll: class indices (ignore_index present), probabilities, weights, smoothing.
logits = torch.randn(5, 4, dtype=d)
logits[1] = torch.tensor([1000.0, -1000.0, 0.0, 999.0], dtype=d)  # stability
idx = torch.tensor([3, -100, 0, 2, 1])
idx_plain = torch.tensor([3, 1, 0, 2, 1])
cw = torch.tensor([0.5, 2.0, 1.0, 1.5], dtype=d)
probs = torch.softmax(torch.randn(5, 4, dtype=d), -1)
probs[0] = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=d)


def ce(name, red="mean", weight=False, ignore=None, smoothing=0.0, targets=idx_plain, probs_t=False):
    args = {"reduction": red, "weight": weight, "ignore_index": ignore, "label_smoothing": smoothing}
    inputs = {"x": logits, "y": targets}
    if weight:
        inputs["cw"] = cw
    diff = ["x", "y"] if probs_t else ["x"]

    def fn(x, y, cw=None):
        kw = {"reduction": red, "label_smoothing": smoothing, "weight": cw}
        if ignore is not None:
            kw["ignore_index"] = ignore
        return F.cross_entropy(x, y, **kw)
    case(name, "cross_entropy", fn, inputs, diff, args)


ce("ce_index")
ce("ce_index_ignore", ignore=-100, targets=idx)
ce("ce_index_ignore_smooth", ignore=-100, targets=idx, smoothing=0.1)
ce("ce_index_weight", weight=True)
ce("ce_index_weight_ignore_smooth", weight=True, ignore=-100, targets=idx, smoothing=0.2)
ce("ce_index_none", red="none", ignore=-100, targets=idx, smoothing=0.1)
ce("ce_index_sum", red="sum", weight=True, ignore=-100, targets=idx)
ce("ce_probs", probs_t=True, targets=probs)
ce("ce_probs_smooth", probs_t=True, targets=probs, smoothing=0.2)
ce("ce_probs_weight_sum", red="sum", weight=True, probs_t=True, targets=probs, smoothing=0.1)
ce("ce_probs_none", red="none", probs_t=True, targets=probs)
# (N, d, C) in tessera = (N, C, d) in PyTorch.
x3 = torch.randn(2, 3, 4, dtype=d)
i3 = torch.tensor([[0, 3, -100], [2, 2, 1]])
case("ce_3d_ignore_smooth", "cross_entropy",
     lambda x, y: F.cross_entropy(x.permute(0, 2, 1), y, ignore_index=-100, label_smoothing=0.1),
     {"x": x3, "y": i3}, ["x"], {"reduction": "mean", "weight": False, "ignore_index": -100, "label_smoothing": 0.1})

logp = torch.log_softmax(torch.randn(5, 4, dtype=d), -1)
for red in ("none", "mean", "sum"):
    case(f"nll_{red}", "nll_loss", lambda x, y, cw, red=red: F.nll_loss(x, y, weight=cw, ignore_index=-100, reduction=red),
         {"x": logp, "y": idx, "cw": cw}, ["x"], {"reduction": red, "weight": True, "ignore_index": -100})
case("nll_plain", "nll_loss", lambda x, y: F.nll_loss(x, y), {"x": logp, "y": idx_plain}, ["x"],
     {"reduction": "mean", "weight": False, "ignore_index": None})

# Binary cross entropy.
pb = torch.rand(3, 4, dtype=d) * 0.9 + 0.05
yb = torch.rand(3, 4, dtype=d)
yb[0, :2] = torch.tensor([0.0, 1.0], dtype=d)
wb = torch.rand(4, dtype=d) + 0.5
for red in ("none", "mean", "sum"):
    case(f"bce_{red}", "binary_cross_entropy", lambda p, y, red=red: F.binary_cross_entropy(p, y, reduction=red),
         {"p": pb, "y": yb}, ["p", "y"], {"reduction": red, "weight": False})
case("bce_weight", "binary_cross_entropy", lambda p, y, bw: F.binary_cross_entropy(p, y, weight=bw),
     {"p": pb, "y": yb, "bw": wb}, ["p", "y"], {"reduction": "mean", "weight": True})
# p at 0 and 1 (log clamped at -100): forward only, the derivatives differ there (documented).
pe = torch.tensor([0.0, 1.0, 0.0, 1.0, 1e-50, 0.5], dtype=d)
ye = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.5], dtype=d)
case("bce_edges", "binary_cross_entropy", lambda p, y: F.binary_cross_entropy(p, y, reduction="none"),
     {"p": pe, "y": ye}, [], {"reduction": "none", "weight": False})

xl = torch.randn(3, 4, dtype=d) * 3
xl[0] = torch.tensor([-1000.0, 1000.0, -50.0, 50.0], dtype=d)
yl = torch.rand(3, 4, dtype=d)
yl[0] = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=d)
pw = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=d)
for red in ("none", "mean", "sum"):
    case(f"bcel_{red}", "binary_cross_entropy_with_logits",
         lambda x, y, red=red: F.binary_cross_entropy_with_logits(x, y, reduction=red),
         {"x": xl, "y": yl}, ["x", "y"], {"reduction": red, "weight": False, "pos_weight": False})
case("bcel_pos_weight", "binary_cross_entropy_with_logits",
     lambda x, y, pw: F.binary_cross_entropy_with_logits(x, y, pos_weight=pw),
     {"x": xl, "y": yl, "pw": pw}, ["x", "y"], {"reduction": "mean", "weight": False, "pos_weight": True})
case("bcel_weight_pos_weight", "binary_cross_entropy_with_logits",
     lambda x, y, bw, pw: F.binary_cross_entropy_with_logits(x, y, weight=bw, pos_weight=pw, reduction="sum"),
     {"x": xl, "y": yl, "bw": wb, "pw": pw}, ["x", "y"], {"reduction": "sum", "weight": True, "pos_weight": True})

# KL divergence.
ki = torch.log_softmax(torch.randn(3, 4, dtype=d), -1)
kt = torch.softmax(torch.randn(3, 4, dtype=d), -1)
kt[0] = torch.tensor([0.0, 0.5, 0.5, 0.0], dtype=d)
for red in ("none", "mean", "sum", "batchmean"):
    case(f"kl_{red}", "kl_div", lambda x, y, red=red: F.kl_div(x, y, reduction=red),
         {"x": ki, "y": kt}, ["x", "y"], {"reduction": red, "log_target": False})
kp = torch.softmax(torch.randn(3, 4, dtype=d), -1)
case("kl_positive_target", "kl_div", lambda x, y: F.kl_div(x, y, reduction="batchmean"),
     {"x": ki, "y": kp}, ["x", "y"], {"reduction": "batchmean", "log_target": False})
klt = torch.log_softmax(torch.randn(3, 4, dtype=d), -1)
case("kl_log_target", "kl_div", lambda x, y: F.kl_div(x, y, reduction="batchmean", log_target=True),
     {"x": ki, "y": klt}, ["x", "y"], {"reduction": "batchmean", "log_target": True})

# Cosine similarity and embedding loss.
c1 = torch.randn(3, 5, dtype=d)
c2 = torch.randn(3, 5, dtype=d)
case("cos_last", "cosine_similarity", lambda a, b: F.cosine_similarity(a, b, dim=-1),
     {"a": c1, "b": c2}, ["a", "b"], {"axis": -1, "eps": 1e-8})
case("cos_axis0", "cosine_similarity", lambda a, b: F.cosine_similarity(a, b, dim=0, eps=1e-6),
     {"a": c1, "b": c2}, ["a", "b"], {"axis": 0, "eps": 1e-6})
case("cos_broadcast", "cosine_similarity", lambda a, b: F.cosine_similarity(a, b, dim=1),
     {"a": c1, "b": c2[:1]}, ["a", "b"], {"axis": 1, "eps": 1e-8})
cz = c1.clone()
cz[1] = 0.0
case("cos_zero_row", "cosine_similarity", lambda a, b: F.cosine_similarity(a, b, dim=-1),
     {"a": cz, "b": c2}, ["a", "b"], {"axis": -1, "eps": 1e-8})
ey = torch.tensor([1, -1, -1])
for red in ("none", "mean"):
    case(f"cos_emb_{red}", "cosine_embedding_loss",
         lambda a, b, y, red=red: F.cosine_embedding_loss(a, b, y, margin=-0.5, reduction=red),
         {"a": c1, "b": c2, "y": ey}, ["a", "b"], {"margin": -0.5, "reduction": red})
case("cos_emb_margin_sum", "cosine_embedding_loss",
     lambda a, b, y: F.cosine_embedding_loss(a, b, y, margin=0.1, reduction="sum"),
     {"a": c1, "b": c2, "y": ey}, ["a", "b"], {"margin": 0.1, "reduction": "sum"})

out = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "nn" / "activations_losses.json"
out.write_text(json.dumps({"torch": torch.__version__, "cases": cases}, separators=(",", ":")) + "\n")
print(f"wrote {len(cases)} cases to {out} ({out.stat().st_size} bytes)")
