#!/usr/bin/env python3
"""Golden values for tessera-nn's normalisation, attention and transformer layers from PyTorch
(CPU, float64), plus ALiBi and RoPE from MLX.

For each case: the parameters under their PyTorch state_dict names, the inputs, the forward
output and the gradients of sum(out * r) for a fixed random r with respect to every input and
parameter. tessera's attention layers use PyTorch's parameter names and layouts unchanged
(`self_attn.in_proj_weight` etc.); GroupNorm and BatchNorm inputs are written channels last
((N, C, L) -> (N, L, C), (N, C, H, W) -> (N, H, W, C)), tessera's layout. BatchNorm cases in
training mode also keep the updated buffers (running_mean, running_var, num_batches_tracked).

Writes tests/fixtures/nn/attention_norms.json. Run with a Python that has torch and mlx:
  .cache/bench-venv/bin/python scripts/gen-nn-attn-fixtures.py
"""
import json
import pathlib

import torch

torch.manual_seed(0)
d = torch.float64
nn = torch.nn
cases = []


def rnd(*shape):
    """Normal samples rounded to 4 decimals, so Python and Rust parse the same float64 inputs."""
    return torch.round(torch.randn(*shape, dtype=d) * 1e4) / 1e4


def t(x):
    """A tensor: shape and data (10 significant digits; bool and integer tensors as numbers)."""
    x = x.detach()
    if x.dtype == torch.bool:
        data = [1.0 if v else 0.0 for v in x.reshape(-1).tolist()]
        return {"shape": list(x.shape), "data": data, "bool": True}
    return {"shape": list(x.shape), "data": [float(f"{v:.10g}") for v in x.reshape(-1).tolist()]}


def to_last(x):
    return x.movedim(1, -1) if x.dim() > 2 else x


def randomize(module):
    """Every parameter replaced by rounded normals (norm weights around 1), so the test's
    parameters are exactly these."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            v = rnd(*p.shape)
            if "norm" in name and name.endswith("weight") or name == "weight":
                v = 1.0 + 0.25 * v
            p.copy_(v)


def record(name, kind, config, module, inputs, call, channels_last=False, extra=None, buffers=None):
    """inputs: dict of float tensors to differentiate; call(module, leaves) -> output."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    state_before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    out = call(module, leaves)
    r = rnd(*out.shape)
    (out * r).sum().backward()
    conv = to_last if channels_last else (lambda x: x)
    c = {
        "name": name,
        "kind": kind,
        "config": config,
        "params": {k: t(v) for k, v in params.items()},
        "inputs": {k: t(conv(v)) for k, v in inputs.items()},
        "out": t(conv(out)),
        "r": t(conv(r)),
        "grads": {k: t(conv(v.grad)) for k, v in leaves.items()},
    }
    for k, p in module.named_parameters():
        c["grads"][k] = t(p.grad)
    if buffers:
        c["buffers_before"] = {k: t(state_before[k]) for k in buffers}
        sd = module.state_dict()
        c["buffers_after"] = {k: t(sd[k]) for k in buffers}
    c.update(extra or {})
    cases.append(c)


# ---------------------------------------------------------------- GroupNorm
for name, (n, c, sp, g, affine) in {
    "groupnorm_1d": (2, 6, (5,), 3, True),
    "groupnorm_2d": (2, 4, (2, 3), 2, True),
    "groupnorm_noaffine": (3, 4, (3,), 4, False),
    "groupnorm_nc": (3, 6, (), 2, True),
}.items():
    m = nn.GroupNorm(g, c, eps=1e-5, affine=affine).to(d)
    if affine:
        randomize(m)
    record(name, "groupnorm", {"groups": g, "channels": c, "eps": 1e-5, "affine": affine}, m,
           {"x": rnd(n, c, *sp) * 2 + 0.5}, lambda m, l: m(l["x"]), channels_last=True)

# ---------------------------------------------------------------- BatchNorm
BUF = ["running_mean", "running_var", "num_batches_tracked"]


def bn_case(name, dims, shape, momentum, training, affine=True, track=True, nbt=3):
    cls = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    c = shape[1]
    m = cls(c, eps=1e-5, momentum=momentum, affine=affine, track_running_stats=track).to(d)
    if affine:
        randomize(m)
    if track:
        with torch.no_grad():
            m.running_mean.copy_(rnd(c))
            m.running_var.copy_(torch.round((0.5 + torch.rand(c, dtype=d)) * 1e4) / 1e4)
            m.num_batches_tracked.fill_(nbt)
    m.train(training)
    cfg = {"dims": dims, "features": c, "eps": 1e-5, "momentum": momentum, "affine": affine,
           "track_running_stats": track, "training": training}
    record(name, "batchnorm", cfg, m, {"x": rnd(*shape) * 1.5 + 0.3}, lambda m, l: m(l["x"]),
           channels_last=True, buffers=BUF if track else None)


bn_case("batchnorm1d_train", 1, (4, 3), 0.1, True)
bn_case("batchnorm1d_train_seq", 1, (2, 3, 4), 0.2, True)
bn_case("batchnorm1d_train_cumulative", 1, (3, 2, 2), None, True)
bn_case("batchnorm2d_train", 2, (2, 3, 2, 2), 0.1, True)
bn_case("batchnorm1d_eval", 1, (2, 3, 4), 0.1, False)
bn_case("batchnorm2d_eval", 2, (2, 3, 2, 2), 0.1, False)
bn_case("batchnorm2d_untracked_eval", 2, (2, 3, 2, 2), 0.1, False, track=False)
bn_case("batchnorm1d_noaffine_train", 1, (5, 2), 0.1, True, affine=False)

# ---------------------------------------------------------------- MultiheadAttention
E, H, N, L, S = 4, 2, 2, 3, 4


def mha_case(name, masks, self_attn=False, kdim=None, vdim=None, bias=True):
    m = nn.MultiheadAttention(E, H, dropout=0.0, bias=bias, batch_first=True, kdim=kdim,
                              vdim=vdim).to(d)
    randomize(m)
    s = L if self_attn else S
    q = rnd(N, L, E)
    inputs = {"query": q} if self_attn else {
        "query": q, "key": rnd(N, S, kdim or E), "value": rnd(N, S, vdim or E)}
    kw = {}
    extra = {"masks": {}}
    for k, v in masks.items():
        if k == "causal":
            kw["attn_mask"] = nn.Transformer.generate_square_subsequent_mask(L, dtype=d)
            extra["causal"] = True
            continue
        kw[k] = v
        extra["masks"][k] = t(v)

    def call(m, l):
        qq = l["query"]
        kk = l.get("key", qq)
        vv = l.get("value", qq)
        return m(qq, kk, vv, need_weights=False, **kw)[0]

    record(name, "mha", {"embed_dim": E, "num_heads": H, "kdim": kdim or E, "vdim": vdim or E,
                         "bias": bias, "self_attention": self_attn}, m, inputs, call, extra=extra)


kpm_bool = torch.tensor([[False, False, True, False], [False, False, False, True]])
kpm_float = rnd(N, S)
am_bool = torch.tensor([[False, True, False, False], [False, False, True, False],
                        [True, False, False, False]])
am_float3 = rnd(N * H, L, S)
mha_case("mha_nomask", {})
mha_case("mha_kpm_bool", {"key_padding_mask": kpm_bool})
mha_case("mha_kpm_float", {"key_padding_mask": kpm_float})
mha_case("mha_attn_bool", {"attn_mask": am_bool})
mha_case("mha_attn_float2", {"attn_mask": rnd(L, S)})
mha_case("mha_attn_float3", {"attn_mask": am_float3})
mha_case("mha_both_bool", {"attn_mask": am_bool, "key_padding_mask": kpm_bool})
mha_case("mha_causal_self", {"causal": True}, self_attn=True)
mha_case("mha_kvdim", {"key_padding_mask": kpm_bool}, kdim=5, vdim=3)
mha_case("mha_nobias", {}, bias=False)

# ---------------------------------------------------------------- Transformer layers
D, NH, FF = 4, 2, 6


def enc_case(name, norm_first, activation, kpm=None, causal=False):
    m = nn.TransformerEncoderLayer(D, NH, FF, dropout=0.0, activation=activation,
                                   layer_norm_eps=1e-5, batch_first=True,
                                   norm_first=norm_first).to(d)
    randomize(m)
    x = rnd(N, S, D)
    extra = {"masks": {}}
    kw = {}
    if kpm is not None:
        kw["src_key_padding_mask"] = kpm
        extra["masks"]["src_key_padding_mask"] = t(kpm)
    if causal:
        kw["src_mask"] = nn.Transformer.generate_square_subsequent_mask(S, dtype=d)
        extra["causal"] = True
    record(name, "encoder",
           {"d_model": D, "nhead": NH, "dim_feedforward": FF, "activation": activation,
            "norm_first": norm_first, "layer_norm_eps": 1e-5},
           m, {"src": x}, lambda m, l: m(l["src"], **kw), extra=extra)


def dec_case(name, norm_first, activation, mem_kpm=None):
    m = nn.TransformerDecoderLayer(D, NH, FF, dropout=0.0, activation=activation,
                                   layer_norm_eps=1e-5, batch_first=True,
                                   norm_first=norm_first).to(d)
    randomize(m)
    extra = {"masks": {}, "causal": True}
    kw = {"tgt_mask": nn.Transformer.generate_square_subsequent_mask(L, dtype=d)}
    if mem_kpm is not None:
        kw["memory_key_padding_mask"] = mem_kpm
        extra["masks"]["memory_key_padding_mask"] = t(mem_kpm)
    record(name, "decoder",
           {"d_model": D, "nhead": NH, "dim_feedforward": FF, "activation": activation,
            "norm_first": norm_first, "layer_norm_eps": 1e-5},
           m, {"tgt": rnd(N, L, D), "memory": rnd(N, S, D)},
           lambda m, l: m(l["tgt"], l["memory"], **kw), extra=extra)


enc_case("encoder_post_relu", False, "relu", kpm=kpm_bool)
enc_case("encoder_pre_gelu", True, "gelu", causal=True)
dec_case("decoder_post_relu", False, "relu", mem_kpm=kpm_bool)
dec_case("decoder_pre_gelu", True, "gelu")

# ---------------------------------------------------------------- MLX: ALiBi and RoPE
mlx = {"alibi": [], "rope": []}
try:
    import mlx.core as mx
    import mlx.nn as mnn
    import numpy as np

    def arr(a):
        a = np.array(a.astype(mx.float32)).astype(np.float64)
        return {"shape": list(a.shape), "data": [float(f"{v:.9g}") for v in a.reshape(-1)]}

    for heads, q, k, off in [(4, 3, 5, 0), (6, 2, 4, 0), (8, 2, 5, 3), (3, 4, 4, 1)]:
        # ALiBi.__call__ passes q_sequence_length = scores rows + offset.
        m = mnn.ALiBi.create_alibi_matrix(q + off, k, heads, off)
        mlx["alibi"].append({"heads": heads, "q_len": q, "k_len": k, "offset": off,
                             "bias": arr(m)})
    x = mx.array(np.array(rnd(2, 2, 3, 8).tolist(), dtype=np.float32))
    for dims, trad, base, scale, off in [(8, False, 10000.0, 1.0, 0), (8, True, 10000.0, 1.0, 2),
                                         (4, False, 500.0, 0.5, 1), (6, True, 100.0, 2.0, 0)]:
        y = mnn.RoPE(dims, traditional=trad, base=base, scale=scale)(x, offset=off)
        mlx["rope"].append({"dims": dims, "traditional": trad, "base": base, "scale": scale,
                            "offset": off, "out": arr(y)})
    mlx["rope_x"] = arr(x)
except ImportError:
    print("mlx not available: no MLX ALiBi/RoPE references")

out = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/nn/attention_norms.json"
out.write_text(json.dumps({"cases": cases, "mlx": mlx}, separators=(",", ":")) + "\n")
print(f"wrote {out} ({len(cases)} cases, {out.stat().st_size} bytes)")
