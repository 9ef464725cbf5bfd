#!/usr/bin/env python3
"""Golden values from PyTorch (CPU, float64) for the layer options of tessera-nn that the first
fixtures do not cover:

- nn.MultiheadAttention with add_bias_kv, add_zero_attn, need_weights / average_attn_weights
  (the returned attention weights are checked too);
- max/avg pooling with ceil_mode, dilation (max), count_include_pad and divisor_override (avg);
- nn.TransformerEncoder / nn.TransformerDecoder stacks (optional final norm) and nn.Transformer.

For each case: the parameters under their PyTorch state_dict names, the inputs, the outputs and
the gradients of sum(out * r) (+ sum(weights * r_w) when the attention weights are returned) for
fixed random r, r_w with respect to every input and parameter. Pooling inputs and outputs are
written channels last ((N, C, L) -> (N, L, C), (N, C, H, W) -> (N, H, W, C)), tessera's layout.

Writes tests/fixtures/nn/layer_options.json. Run with a Python that has torch:
  .cache/bench-venv/bin/python scripts/gen-nn-layers2-fixtures.py
"""
import json
import pathlib

import torch

torch.manual_seed(0)
d = torch.float64
nn = torch.nn
F = torch.nn.functional
cases = []


def rnd(*shape):
    """Normal samples rounded to 4 decimals, so Python and Rust parse the same float64 inputs."""
    return torch.round(torch.randn(*shape, dtype=d) * 1e4) / 1e4


def t(x):
    """A tensor: shape and data (10 significant digits; bool tensors as 0/1 with "bool")."""
    x = x.detach()
    if x.dtype == torch.bool:
        data = [1.0 if v else 0.0 for v in x.reshape(-1).tolist()]
        return {"shape": list(x.shape), "data": data, "bool": True}
    return {"shape": list(x.shape), "data": [float(f"{v:.10g}") for v in x.reshape(-1).tolist()]}


def to_last(x):
    return x.movedim(1, -1)


def randomize(module):
    """Every parameter replaced by rounded normals (norm weights around 1), so every cloned layer
    of a stack differs and the test's parameters are exactly these."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            v = rnd(*p.shape)
            if "norm" in name and name.endswith("weight"):
                v = 1.0 + 0.25 * v
            p.copy_(v)


def record(name, kind, config, module, inputs, call, extra=None, channels_last=False):
    """inputs: float tensors to differentiate; call(module, leaves) -> out or (out, weights)."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    params = {k: v.detach().clone() for k, v in module.named_parameters()} if module else {}
    res = call(module, leaves)
    out, weights = res if isinstance(res, tuple) else (res, None)
    r = rnd(*out.shape)
    loss = (out * r).sum()
    conv = to_last if channels_last else (lambda x: x)
    c = {
        "name": name,
        "kind": kind,
        "config": config,
        "params": {k: t(v) for k, v in params.items()},
        "inputs": {k: t(conv(v)) for k, v in inputs.items()},
        "out": t(conv(out)),
        "r": t(conv(r)),
    }
    if weights is not None:
        rw = rnd(*weights.shape)
        loss = loss + (weights * rw).sum()
        c["weights"] = t(weights)
        c["r_w"] = t(rw)
    loss.backward()
    c["grads"] = {k: t(conv(v.grad)) for k, v in leaves.items()}
    if module:
        for k, p in module.named_parameters():
            c["grads"][k] = t(p.grad)
    c.update(extra or {})
    cases.append(c)


def masks_of(masks, length):
    """The keyword masks and their fixture form; "causal" becomes the float causal mask."""
    kw, rec = {}, {}
    causal = False
    for k, v in masks.items():
        if k == "causal":
            kw["attn_mask"] = nn.Transformer.generate_square_subsequent_mask(length, dtype=d)
            causal = True
            continue
        kw[k] = v
        rec[k] = t(v)
    return kw, rec, causal


# ---------------------------------------------------------------- MultiheadAttention options
E, H, N, L, S = 4, 2, 2, 3, 4


def mha_case(name, masks, add_bias_kv=False, add_zero_attn=False, need_weights=False,
             average=True, self_attn=False, kdim=None, vdim=None, bias=True, unbatched=False):
    m = nn.MultiheadAttention(E, H, dropout=0.0, bias=bias, add_bias_kv=add_bias_kv,
                              add_zero_attn=add_zero_attn, kdim=kdim, vdim=vdim,
                              batch_first=True).to(d)
    randomize(m)
    lead = () if unbatched else (N,)
    q = rnd(*lead, L, E)
    inputs = {"query": q} if self_attn else {
        "query": q, "key": rnd(*lead, S, kdim or E), "value": rnd(*lead, S, vdim or E)}
    kw, rec, causal = masks_of(masks, L)

    def call(m, l):
        qq = l["query"]
        kk = l.get("key", qq)
        vv = l.get("value", qq)
        o, w = m(qq, kk, vv, need_weights=need_weights, average_attn_weights=average, **kw)
        return (o, w) if need_weights else o

    cfg = {"embed_dim": E, "num_heads": H, "kdim": kdim or E, "vdim": vdim or E, "bias": bias,
           "add_bias_kv": add_bias_kv, "add_zero_attn": add_zero_attn,
           "need_weights": need_weights, "average_attn_weights": average}
    record(name, "mha", cfg, m, inputs, call, extra={"masks": rec, "causal": causal})


kpm_bool = torch.tensor([[False, False, True, False], [False, True, False, True]])
am_bool = torch.tensor([[False, True, False, False], [False, False, True, False],
                        [True, False, False, False]])
mha_case("mha_bias_kv_masks", {"key_padding_mask": kpm_bool, "attn_mask": am_bool},
         add_bias_kv=True)
mha_case("mha_zero_attn_float3", {"attn_mask": rnd(N * H, L, S)}, add_zero_attn=True)
mha_case("mha_bias_kv_zero_attn_causal", {"causal": True, "key_padding_mask": rnd(N, L)},
         add_bias_kv=True, add_zero_attn=True, self_attn=True)
mha_case("mha_weights_avg_kpm", {"key_padding_mask": kpm_bool}, need_weights=True)
mha_case("mha_weights_heads_bias_kv", {"attn_mask": am_bool}, add_bias_kv=True,
         need_weights=True, average=False)
mha_case("mha_weights_zero_attn_nomask", {}, add_zero_attn=True, need_weights=True,
         average=False)
mha_case("mha_weights_unbatched_zero_attn", {"key_padding_mask": torch.tensor(
    [False, True, False, False])}, add_zero_attn=True, need_weights=True, unbatched=True)
mha_case("mha_bias_kv_kvdim_weights", {"key_padding_mask": kpm_bool}, add_bias_kv=True,
         kdim=5, vdim=3, need_weights=True)
mha_case("mha_nobias_bias_kv_zero_attn", {"attn_mask": rnd(L, S)}, add_bias_kv=True,
         add_zero_attn=True, bias=False)

# ---------------------------------------------------------------- pooling options


def pool(name, kind, dims, n, size, c, k, stride=None, padding=0, dilation=1, ceil_mode=False,
         count_include_pad=True, divisor_override=None):
    x = rnd(n, c, *size)
    s = stride if stride is not None else k
    if kind == "max":
        f = F.max_pool1d if dims == 1 else F.max_pool2d
        fn = lambda m, l: f(l["x"], k, s, padding, dilation, ceil_mode=ceil_mode)
    elif dims == 2:
        fn = lambda m, l: F.avg_pool2d(l["x"], k, s, padding, ceil_mode=ceil_mode,
                                       count_include_pad=count_include_pad,
                                       divisor_override=divisor_override)
    elif divisor_override is None:
        fn = lambda m, l: F.avg_pool1d(l["x"], k, s, padding, ceil_mode=ceil_mode,
                                       count_include_pad=count_include_pad)
    else:
        # F.avg_pool1d has no divisor_override: PyTorch's avg_pool1d is avg_pool2d over (1, L).
        def fn(m, l):
            y = F.avg_pool2d(l["x"].unsqueeze(2), (1, k), (1, s), (0, padding),
                             ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                             divisor_override=divisor_override)
            return y.squeeze(2)
    args = {"kernel": k, "stride": s, "padding": padding, "dilation": dilation,
            "ceil_mode": ceil_mode, "count_include_pad": count_include_pad,
            "divisor_override": divisor_override}
    record(name, f"{kind}_pool{dims}d", args, None, {"x": x}, fn, channels_last=True)


pool("max1d_ceil", "max", 1, 2, (7,), 2, 2, ceil_mode=True)
# ceil((5 + 2 - 2) / 2) + 1 = 4 windows, but the 4th would start at 6 >= 5 + 1: 3 windows.
pool("max1d_ceil_last_window_rule", "max", 1, 1, (5,), 2, 2, stride=2, padding=1, ceil_mode=True)
pool("max1d_dilation", "max", 1, 2, (9,), 2, 3, stride=1, padding=1, dilation=2)
pool("max1d_dilation_ceil", "max", 1, 1, (10,), 2, 3, stride=3, padding=1, dilation=2,
     ceil_mode=True)
pool("max2d_dilation_ceil", "max", 2, 1, (7, 6), 2, (3, 2), stride=2, padding=1, dilation=(2, 1),
     ceil_mode=True)
pool("max2d_ceil_rule", "max", 2, 1, (5, 6), 2, 2, stride=2, padding=(1, 0), ceil_mode=True)
pool("avg1d_ceil_include", "avg", 1, 2, (6,), 2, 3, stride=2, padding=1, ceil_mode=True)
pool("avg1d_ceil_exclude", "avg", 1, 1, (6,), 2, 3, stride=2, padding=1, ceil_mode=True,
     count_include_pad=False)
pool("avg1d_ceil_nopad", "avg", 1, 1, (7,), 2, 3, stride=2, ceil_mode=True)
pool("avg1d_divisor", "avg", 1, 1, (7,), 2, 3, stride=2, padding=1, ceil_mode=True,
     divisor_override=2)
pool("avg2d_ceil_include", "avg", 2, 1, (5, 6), 2, (3, 2), stride=2, padding=1, ceil_mode=True)
pool("avg2d_ceil_exclude", "avg", 2, 2, (5, 5), 1, 3, stride=2, padding=1, ceil_mode=True,
     count_include_pad=False)
pool("avg2d_divisor", "avg", 2, 1, (4, 5), 2, 2, stride=(1, 2), padding=1, divisor_override=3)
pool("avg2d_divisor_ceil_exclude", "avg", 2, 1, (5, 5), 2, 2, stride=2, padding=1, ceil_mode=True,
     count_include_pad=False, divisor_override=5)

# ---------------------------------------------------------------- transformer stacks
D, NH, FF, T = 4, 2, 6, 3
src_kpm = torch.tensor([[False, False, False, True], [False, True, False, False]])
tgt_kpm = torch.tensor([[False, False, True], [False, False, False]])


def layer_cfg(norm_first, activation):
    return {"d_model": D, "nhead": NH, "dim_feedforward": FF, "activation": activation,
            "norm_first": norm_first, "layer_norm_eps": 1e-5}


def enc_stack(name, num_layers, final_norm, norm_first, activation, masks):
    layer = nn.TransformerEncoderLayer(D, NH, FF, dropout=0.0, activation=activation,
                                       batch_first=True, norm_first=norm_first)
    norm = nn.LayerNorm(D) if final_norm else None
    m = nn.TransformerEncoder(layer, num_layers, norm=norm, enable_nested_tensor=False).to(d)
    randomize(m)
    kw, rec, causal = masks_of(masks, S)
    if "attn_mask" in kw:
        kw["mask"] = kw.pop("attn_mask")
    cfg = dict(layer_cfg(norm_first, activation), num_layers=num_layers, final_norm=final_norm)
    record(name, "encoder_stack", cfg, m, {"src": rnd(N, S, D)},
           lambda m, l: m(l["src"], **kw), extra={"masks": rec, "causal": causal})


def dec_stack(name, num_layers, final_norm, norm_first, activation, masks):
    layer = nn.TransformerDecoderLayer(D, NH, FF, dropout=0.0, activation=activation,
                                       batch_first=True, norm_first=norm_first)
    norm = nn.LayerNorm(D) if final_norm else None
    m = nn.TransformerDecoder(layer, num_layers, norm=norm).to(d)
    randomize(m)
    kw, rec, causal = masks_of(masks, T)
    if "attn_mask" in kw:
        kw["tgt_mask"] = kw.pop("attn_mask")
    cfg = dict(layer_cfg(norm_first, activation), num_layers=num_layers, final_norm=final_norm)
    record(name, "decoder_stack", cfg, m, {"tgt": rnd(N, T, D), "memory": rnd(N, S, D)},
           lambda m, l: m(l["tgt"], l["memory"], **kw), extra={"masks": rec, "causal": causal})


def full(name, enc_layers, dec_layers, norm_first, activation, masks):
    m = nn.Transformer(D, NH, enc_layers, dec_layers, FF, dropout=0.0, activation=activation,
                       batch_first=True, norm_first=norm_first).to(d)
    randomize(m)
    kw, rec, causal = masks_of(masks, T)
    if "attn_mask" in kw:
        kw["tgt_mask"] = kw.pop("attn_mask")
    cfg = dict(layer_cfg(norm_first, activation), num_encoder_layers=enc_layers,
               num_decoder_layers=dec_layers)
    record(name, "transformer", cfg, m, {"src": rnd(N, S, D), "tgt": rnd(N, T, D)},
           lambda m, l: m(l["src"], l["tgt"], **kw), extra={"masks": rec, "causal": causal})


enc_stack("encoder_stack_post_norm", 2, True, False, "relu",
          {"src_key_padding_mask": src_kpm, "causal": True})
enc_stack("encoder_stack_pre_nonorm", 3, False, True, "gelu", {"attn_mask": rnd(S, S)})
dec_stack("decoder_stack_post_norm", 2, True, False, "relu",
          {"causal": True, "memory_key_padding_mask": src_kpm})
dec_stack("decoder_stack_pre_masks", 2, False, True, "gelu",
          {"tgt_key_padding_mask": tgt_kpm, "memory_mask": rnd(T, S)})
full("transformer_post", 2, 1, False, "relu",
     {"src_key_padding_mask": src_kpm, "causal": True, "memory_key_padding_mask": src_kpm})
full("transformer_pre_gelu", 1, 2, True, "gelu",
     {"src_mask": rnd(S, S), "causal": True, "tgt_key_padding_mask": tgt_kpm})

out = pathlib.Path(__file__).resolve().parent.parent / \
    "tests/fixtures/nn/layer_options.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({"torch": torch.__version__, "cases": cases},
                          separators=(",", ":")) + "\n")
print(f"wrote {out} ({len(cases)} cases, {out.stat().st_size} bytes)")
