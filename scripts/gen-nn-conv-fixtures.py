#!/usr/bin/env python3
"""Golden values for tessera-nn's convolutions and pooling from PyTorch (CPU, float64): forward
outputs and the gradients of sum(out * w) for a fixed random w, with respect to the input, the
weight and the bias.

PyTorch is channels first; everything is written in tessera's (MLX's) channels-last layout:
inputs/outputs (N, L, C) / (N, H, W, C), conv weights (C_out, K..., C_in / groups), transposed
conv weights too (PyTorch's (C_in, C_out / groups, K...) regrouped). One transposed case also
keeps PyTorch's own weight as "weight_torch" to test the conversion helper.

Writes tests/fixtures/nn/conv.json. Run with a Python that has torch:
  .cache/bench-venv/bin/python scripts/gen-nn-conv-fixtures.py
"""
import json
import pathlib

import torch

torch.manual_seed(0)
F = torch.nn.functional
d = torch.float64
cases = []


def rnd(*shape):
    """Normal samples rounded to 4 decimals: short in JSON and parsed to the same float64 by
    Python and Rust, so the inputs here are exactly the test's inputs."""
    return torch.round(torch.randn(*shape, dtype=d) * 1e4) / 1e4


def t(x):
    """Inputs are already short; computed values keep 10 significant digits (the test's float64
    tolerance is 1e-9)."""
    return {"shape": list(x.shape), "data": [float(f"{v:.10g}") for v in x.detach().reshape(-1).tolist()]}


def to_last(x):
    """(N, C, S...) -> (N, S..., C)"""
    return x.movedim(1, -1)


def conv_w_to_last(w):
    """(C_out, C_in/g, K...) -> (C_out, K..., C_in/g)"""
    return w.movedim(1, -1)


def convt_w_to_last(w, groups):
    """(C_in, C_out/g, K...) -> (C_out, K..., C_in/g)"""
    c_in, og = w.shape[0], w.shape[1]
    k = list(w.shape[2:])
    g = w.reshape(groups, c_in // groups, og, *k)
    g = g.permute(0, 2, *range(3, 3 + len(k)), 1)
    return g.reshape(groups * og, *k, c_in // groups)


def record(name, op, args, x, weight, bias, fn, w_last=None, extra=None):
    leaves = {"x": x.clone().requires_grad_(True)}
    if weight is not None:
        leaves["weight"] = weight.clone().requires_grad_(True)
    if bias is not None:
        leaves["bias"] = bias.clone().requires_grad_(True)
    out = fn(leaves["x"], leaves.get("weight"), leaves.get("bias"))
    r = rnd(*out.shape)
    (out * r).sum().backward()
    convert_w = w_last or (lambda w: w)
    inputs = {"x": t(to_last(x))}
    grads = {"x": t(to_last(leaves["x"].grad))}
    if weight is not None:
        inputs["weight"] = t(convert_w(weight))
        grads["weight"] = t(convert_w(leaves["weight"].grad))
    if bias is not None:
        inputs["bias"] = t(bias)
        grads["bias"] = t(leaves["bias"].grad)
    c = {
        "name": name,
        "op": op,
        "args": args,
        "inputs": inputs,
        "out": t(to_last(out)),
        "w": t(to_last(r)),
        "grads": grads,
    }
    c.update(extra or {})
    cases.append(c)


def conv(name, dims, n, size, c_in, c_out, k, stride=1, padding=0, dilation=1, groups=1, bias=True):
    x = rnd(n, c_in, *size)
    ks = k if isinstance(k, tuple) else (k,) * dims
    w = rnd(c_out, c_in // groups, *ks)
    b = rnd(c_out) if bias else None
    f = F.conv1d if dims == 1 else F.conv2d
    args = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    record(name, f"conv{dims}d", args, x, w, b,
           lambda x, w, b: f(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups),
           conv_w_to_last)


def convt(name, dims, n, size, c_in, c_out, k, stride=1, padding=0, output_padding=0, dilation=1,
          groups=1, bias=True, keep_torch=False):
    x = rnd(n, c_in, *size)
    ks = k if isinstance(k, tuple) else (k,) * dims
    w = rnd(c_in, c_out // groups, *ks)
    b = rnd(c_out) if bias else None
    f = F.conv_transpose1d if dims == 1 else F.conv_transpose2d
    args = {"stride": stride, "padding": padding, "output_padding": output_padding,
            "dilation": dilation, "groups": groups}
    record(name, f"conv_transpose{dims}d", args, x, w, b,
           lambda x, w, b: f(x, w, b, stride=stride, padding=padding, output_padding=output_padding,
                             groups=groups, dilation=dilation),
           lambda w: convt_w_to_last(w, groups),
           {"weight_torch": t(w)} if keep_torch else None)


def pool(name, kind, dims, n, size, c, k, stride=None, padding=0, count_include_pad=True):
    x = rnd(n, c, *size)
    s = stride if stride is not None else k
    if kind == "max":
        f = F.max_pool1d if dims == 1 else F.max_pool2d
        fn = lambda x, w, b: f(x, k, s, padding)
    else:
        f = F.avg_pool1d if dims == 1 else F.avg_pool2d
        fn = lambda x, w, b: f(x, k, s, padding, count_include_pad=count_include_pad)
    args = {"kernel": k, "stride": s, "padding": padding, "count_include_pad": count_include_pad}
    record(name, f"{kind}_pool{dims}d", args, x, None, None, fn)


# conv1d
conv("conv1d_basic", 1, 2, (6,), 3, 2, 3)
conv("conv1d_stride2_pad1", 1, 1, (8,), 3, 2, 3, stride=2, padding=1)
conv("conv1d_dilation2_nobias", 1, 1, (8,), 2, 2, 3, padding=2, dilation=2, bias=False)
conv("conv1d_groups2", 1, 1, (5,), 4, 6, 3, padding=1, groups=2)
conv("conv1d_depthwise", 1, 2, (5,), 3, 3, 3, stride=2, padding=1, groups=3)
conv("conv1d_depthwise_multiplier", 1, 1, (5,), 3, 6, 2, groups=3)
conv("conv1d_k1", 1, 2, (5,), 3, 2, 1)
# conv2d
conv("conv2d_basic", 2, 2, (4, 4), 2, 3, 3)
conv("conv2d_stride_pad_asym", 2, 1, (5, 4), 2, 2, (3, 2), stride=(2, 1), padding=(1, 2))
conv("conv2d_dilation_nobias", 2, 1, (6, 5), 2, 2, 3, padding=1, dilation=(2, 1), bias=False)
conv("conv2d_groups2", 2, 1, (5, 4), 4, 4, (3, 2), stride=2, padding=1, groups=2)
conv("conv2d_depthwise", 2, 1, (4, 4), 3, 3, 3, padding=1, groups=3)
conv("conv2d_stride3", 2, 1, (7, 5), 2, 2, 2, stride=3)
# conv_transpose1d
convt("convt1d_basic", 1, 2, (4,), 3, 2, 3)
convt("convt1d_stride2_outpad", 1, 1, (4,), 2, 3, 3, stride=2, padding=1, output_padding=1)
convt("convt1d_dilation", 1, 1, (5,), 2, 2, 3, padding=3, dilation=2, bias=False)
convt("convt1d_crop", 1, 1, (4,), 2, 2, 2, stride=3, padding=2, output_padding=2)
convt("convt1d_groups", 1, 1, (4,), 4, 6, 3, stride=2, output_padding=1, dilation=2, groups=2,
      keep_torch=True)
# conv_transpose2d
convt("convt2d_basic", 2, 1, (3, 3), 2, 2, 3)
convt("convt2d_stride_outpad", 2, 1, (2, 3), 2, 2, (3, 2), stride=(2, 3), padding=(1, 0),
      output_padding=(1, 2))
convt("convt2d_groups_dilation", 2, 1, (3, 3), 4, 2, 3, padding=1, dilation=(2, 1), groups=2,
      keep_torch=True)
convt("convt2d_upsample_nobias", 2, 1, (2, 3), 2, 2, 4, stride=2, padding=1, bias=False)
# pools
pool("max_pool1d_k2", "max", 1, 2, (7,), 3, 2)
pool("max_pool1d_pad", "max", 1, 2, (7,), 2, 3, stride=2, padding=1)
pool("avg_pool1d_pad", "avg", 1, 2, (7,), 2, 3, stride=2, padding=1)
pool("avg_pool1d_pad_exclude", "avg", 1, 1, (6,), 2, 3, stride=2, padding=1, count_include_pad=False)
pool("max_pool2d_k2", "max", 2, 1, (4, 5), 2, 2)
pool("max_pool2d_pad", "max", 2, 1, (5, 4), 2, (3, 2), stride=(2, 1), padding=(1, 1))
pool("avg_pool2d_pad", "avg", 2, 1, (5, 5), 2, 3, stride=2, padding=1)
pool("avg_pool2d_pad_exclude", "avg", 2, 1, (4, 5), 2, (2, 3), stride=(1, 2), padding=(1, 1),
     count_include_pad=False)
pool("avg_pool2d_k2", "avg", 2, 2, (4, 4), 1, 2)


def compact(o):
    return json.dumps(o, separators=(",", ":"))


out = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "nn" / "conv.json"
out.write_text(compact({"torch": torch.__version__, "cases": cases}) + "\n")
print(f"{len(cases)} cases -> {out} ({out.stat().st_size} bytes)")
