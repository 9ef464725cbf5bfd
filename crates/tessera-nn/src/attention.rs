//! Attention: [`MultiHeadAttention`] (PyTorch's `nn.MultiheadAttention` with
//! `batch_first=True`), the position encodings [`RoPE`] (MLX's `nn.RoPE`, over
//! [`ops::rope`]) and [`ALiBi`] ([`alibi_bias`], the paper's / MLX's slopes).
//!
//! # PyTorch parameter mapping
//!
//! [`MultiHeadAttention`] keeps PyTorch's parameters under PyTorch's names and layouts, so a
//! `state_dict` loads unchanged:
//!
//! | PyTorch (`state_dict`)                  | here                                  |
//! |-----------------------------------------|---------------------------------------|
//! | `in_proj_weight` `(3E, E)`              | [`InProj::Packed`]: rows `[0, E)` project the query, `[E, 2E)` the key, `[2E, 3E)` the value |
//! | `q_proj_weight` `(E, E)`, `k_proj_weight` `(E, kdim)`, `v_proj_weight` `(E, vdim)` (when `kdim`/`vdim` differ from `E`) | [`InProj::Separate`] |
//! | `in_proj_bias` `(3E,)`                  | `in_proj_bias`, split the same way    |
//! | `out_proj.weight` `(E, E)`, `out_proj.bias` | `out_proj` (a [`Linear`])         |
//!
//! `add_bias_kv` (`bias_k`, `bias_v`) and `add_zero_attn` are not supported.
//!
//! # Masks
//!
//! As PyTorch: a boolean mask is `true` where attention is *not* allowed; a float mask is added
//! to the scores. `attn_mask` is `(L, S)` or `(N * num_heads, L, S)` (row `n * num_heads + h`),
//! `key_padding_mask` is `(N, S)`. [`AttentionOptions::causal`] builds the causal mask itself
//! (query `i` sees keys `j <= i`, top-left aligned) and adds it to any other mask; PyTorch's
//! `is_causal` is only a hint that `attn_mask` already is that mask. A row with every key
//! masked gives NaN, as in PyTorch.
//!
//! The fused [`ops::sdpa`] runs when the only mask is one `(L, S)` matrix (or none) and there is
//! no dropout; otherwise the composite (matmul, softmax, matmul) with a broadcast mask.

use crate::conv::fmt_shape;
use crate::layers::{Linear, dropout};
use crate::{Module, check_replacement};
use tessera_core::transforms::Params;
use tessera_core::{Array, Dtype, Error, Result, ops, random};

pub(crate) fn err(layer: &str, msg: String) -> Error {
    Error::Invalid {
        op: "nn",
        msg: format!("[{layer}] {msg}"),
    }
}

/// Key `i` of `n` split from `key`.
pub(crate) fn subkey(keys: &Array, i: usize) -> Result<Array> {
    ops::reshape(&ops::slice_axis(keys, 0, i, i + 1)?, &[2])
}

/// `params` with `prefix.` in front of every name.
pub(crate) fn prefixed(prefix: &str, params: Params) -> Params {
    params
        .into_iter()
        .map(|(k, v)| (format!("{prefix}.{k}"), v))
        .collect()
}

/// The entries of `params` whose name starts with `prefix.`, with the prefix removed.
pub(crate) fn sub_params(prefix: &str, params: &Params) -> Params {
    let p = format!("{prefix}.");
    params
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&p).map(|r| (r.to_string(), v.clone())))
        .collect()
}

/// Errors on a name that belongs to none of `prefixes` (`prefix.rest`) or `plain` names.
pub(crate) fn check_names(
    layer: &str,
    params: &Params,
    prefixes: &[&str],
    plain: &[&str],
) -> Result<()> {
    for k in params.keys() {
        let ok = plain.contains(&k.as_str())
            || prefixes
                .iter()
                .any(|p| k.strip_prefix(p).is_some_and(|r| r.starts_with('.')));
        if !ok {
            return Err(err(layer, format!("no parameter named {k}")));
        }
    }
    Ok(())
}

/// A mask as an additive float array of dtype `dt`: booleans become `-inf` where `true`.
fn additive(mask: &Array, dt: Dtype) -> Result<Array> {
    if mask.dtype() == Dtype::Bool {
        ops::where_(
            mask,
            &Array::scalar_of(f64::NEG_INFINITY, dt),
            &Array::scalar_of(0.0, dt),
        )
    } else if mask.dtype().is_float() {
        ops::astype(mask, dt)
    } else {
        Err(err(
            "MultiheadAttention",
            format!(
                "masks must be bool or float, got {} {}",
                mask.dtype(),
                fmt_shape(mask.shape())
            ),
        ))
    }
}

/// The additive causal mask `(l, s)`: `-inf` where key `j > i`.
pub fn causal_mask(l: usize, s: usize, dt: Dtype) -> Result<Array> {
    let keep = ops::tri(l, Some(s), 0, Dtype::Bool)?;
    ops::where_(
        &keep,
        &Array::scalar_of(0.0, dt),
        &Array::scalar_of(f64::NEG_INFINITY, dt),
    )
}

/// Optional arguments of [`MultiHeadAttention::forward_with`].
#[derive(Clone, Copy, Default)]
pub struct AttentionOptions<'a> {
    /// `(N, S)` (`(S,)` for an unbatched input): bool (`true` = ignore that key) or additive.
    pub key_padding_mask: Option<&'a Array>,
    /// `(L, S)` or `(N * num_heads, L, S)`: bool (`true` = not allowed) or additive.
    pub attn_mask: Option<&'a Array>,
    /// Adds the causal mask (query `i` attends to keys `0..=i`).
    pub causal: bool,
    /// Dropout on the attention weights (probability `dropout` of the layer) only when a key
    /// is given.
    pub dropout_key: Option<&'a Array>,
}

/// The input projection's weights.
#[derive(Clone)]
pub enum InProj {
    /// PyTorch's `in_proj_weight` `(3E, E)` (query, key and value all of size `E`).
    Packed(Array),
    /// PyTorch's `q_proj_weight` `(E, E)`, `k_proj_weight` `(E, kdim)`, `v_proj_weight`
    /// `(E, vdim)`.
    Separate { q: Array, k: Array, v: Array },
}

/// Multi-head attention, PyTorch's `nn.MultiheadAttention(embed_dim, num_heads, dropout, bias,
/// kdim=, vdim=, batch_first=True)`: inputs `(N, L, E)` query, `(N, S, kdim)` key,
/// `(N, S, vdim)` value (or unbatched `(L, E)` ...), output `(N, L, E)`. See the module
/// documentation for the parameter names and masks. [`Module::forward`] is self-attention
/// without masks.
#[derive(Clone)]
pub struct MultiHeadAttention {
    pub embed_dim: usize,
    pub num_heads: usize,
    pub kdim: usize,
    pub vdim: usize,
    /// Dropout probability on the attention weights (applied only with a key).
    pub dropout: f64,
    pub in_proj: InProj,
    /// `(3E,)`: query, key, value biases.
    pub in_proj_bias: Option<Array>,
    pub out_proj: Linear,
}

const MHA: &str = "MultiheadAttention";

impl MultiHeadAttention {
    /// PyTorch's initialisation: Xavier-uniform input projection, zero biases, `out_proj.weight`
    /// uniform in ±1/sqrt(E).
    pub fn new(
        embed_dim: usize,
        num_heads: usize,
        dropout: f64,
        bias: bool,
        key: &Array,
    ) -> Result<MultiHeadAttention> {
        MultiHeadAttention::with_dims(
            embed_dim, num_heads, embed_dim, embed_dim, dropout, bias, key,
        )
    }

    /// With key and value sizes `kdim`, `vdim` (separate projection weights when either differs
    /// from `embed_dim`, as PyTorch).
    pub fn with_dims(
        embed_dim: usize,
        num_heads: usize,
        kdim: usize,
        vdim: usize,
        dropout: f64,
        bias: bool,
        key: &Array,
    ) -> Result<MultiHeadAttention> {
        if num_heads == 0
            || embed_dim == 0
            || !embed_dim.is_multiple_of(num_heads)
            || kdim == 0
            || vdim == 0
        {
            return Err(err(
                MHA,
                format!(
                    "embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads}), kdim ({kdim}) and vdim ({vdim}) positive"
                ),
            ));
        }
        if !(0.0..1.0).contains(&dropout) {
            return Err(err(
                MHA,
                format!("dropout must be in [0, 1), got {dropout}"),
            ));
        }
        let keys = random::split(key, 4)?;
        let e = embed_dim;
        let xavier = |rows: usize, cols: usize, fan_out: usize, k: &Array| {
            let b = (6.0 / (cols + fan_out) as f64).sqrt();
            random::uniform(-b, b, &[rows, cols], Dtype::F32, Some(k))
        };
        let in_proj = if kdim == e && vdim == e {
            InProj::Packed(xavier(3 * e, e, 3 * e, &subkey(&keys, 0)?)?)
        } else {
            InProj::Separate {
                q: xavier(e, e, e, &subkey(&keys, 0)?)?,
                k: xavier(e, kdim, e, &subkey(&keys, 1)?)?,
                v: xavier(e, vdim, e, &subkey(&keys, 2)?)?,
            }
        };
        let mut out_proj = Linear::new(e, e, bias, &subkey(&keys, 3)?)?;
        let zeros = |n: usize| ops::contiguous(&ops::zeros(&[n], Dtype::F32)?);
        if bias {
            out_proj.bias = Some(zeros(e)?);
        }
        Ok(MultiHeadAttention {
            embed_dim,
            num_heads,
            kdim,
            vdim,
            dropout,
            in_proj,
            in_proj_bias: if bias { Some(zeros(3 * e)?) } else { None },
            out_proj,
        })
    }

    /// The query, key and value projection weights `(E, in)`.
    fn proj_weights(&self) -> Result<[Array; 3]> {
        let e = self.embed_dim;
        Ok(match &self.in_proj {
            InProj::Packed(w) => [
                ops::slice_axis(w, 0, 0, e)?,
                ops::slice_axis(w, 0, e, 2 * e)?,
                ops::slice_axis(w, 0, 2 * e, 3 * e)?,
            ],
            InProj::Separate { q, k, v } => [q.clone(), k.clone(), v.clone()],
        })
    }

    /// Attention of `query` `(N, L, E)` over `key` `(N, S, kdim)` / `value` `(N, S, vdim)`
    /// (unbatched: drop `N`), with masks and dropout; `(N, L, E)`.
    pub fn forward_with(
        &self,
        query: &Array,
        key: &Array,
        value: &Array,
        opts: &AttentionOptions,
    ) -> Result<Array> {
        let (e, h) = (self.embed_dim, self.num_heads);
        let shapes = || {
            format!(
                "query {}, key {}, value {}",
                fmt_shape(query.shape()),
                fmt_shape(key.shape()),
                fmt_shape(value.shape())
            )
        };
        let unbatched = query.ndim() == 2;
        let rank_ok = (query.ndim() == 2 || query.ndim() == 3)
            && key.ndim() == query.ndim()
            && value.ndim() == query.ndim();
        if !rank_ok {
            return Err(err(
                MHA,
                format!(
                    "expected (N, L, E) query with (N, S, kdim) key and (N, S, vdim) value (or all unbatched), got {}",
                    shapes()
                ),
            ));
        }
        let (q3, k3, v3) = if unbatched {
            (
                ops::expand_dims(query, &[0])?,
                ops::expand_dims(key, &[0])?,
                ops::expand_dims(value, &[0])?,
            )
        } else {
            (query.clone(), key.clone(), value.clone())
        };
        let (n, l) = (q3.shape()[0], q3.shape()[1]);
        let s = k3.shape()[1];
        if q3.shape()[2] != e
            || k3.shape()[2] != self.kdim
            || v3.shape()[2] != self.vdim
            || k3.shape()[0] != n
            || v3.shape()[0] != n
            || v3.shape()[1] != s
        {
            return Err(err(
                MHA,
                format!(
                    "shapes do not fit embed_dim {e}, kdim {}, vdim {}: {}",
                    self.kdim,
                    self.vdim,
                    shapes()
                ),
            ));
        }
        if !q3.dtype().is_float() {
            return Err(err(
                MHA,
                format!("inputs must be float arrays: {}", shapes()),
            ));
        }
        let dt = q3.dtype();
        let [wq, wk, wv] = self.proj_weights()?;
        let biases = match &self.in_proj_bias {
            Some(b) => Some([
                ops::slice_axis(b, 0, 0, e)?,
                ops::slice_axis(b, 0, e, 2 * e)?,
                ops::slice_axis(b, 0, 2 * e, 3 * e)?,
            ]),
            None => None,
        };
        let hd = e / h;
        let project = |x: &Array, w: &Array, i: usize, len: usize| -> Result<Array> {
            let mut y = ops::matmul(x, &ops::transpose(w, None)?)?;
            if let Some(b) = &biases {
                y = ops::add(&y, &b[i])?;
            }
            ops::transpose(&ops::reshape(&y, &[n, len, h, hd])?, Some(&[0, 2, 1, 3]))
        };
        let q = project(&q3, &wq, 0, l)?;
        let k = project(&k3, &wk, 1, s)?;
        let v = project(&v3, &wv, 2, s)?;

        // Masks: `flat` is an (L, S) additive mask, `full` one broadcast to (N, H, L, S).
        let mut flat: Option<Array> = None;
        let mut full: Option<Array> = None;
        let add = |acc: Option<Array>, m: Array| -> Result<Option<Array>> {
            Ok(Some(match acc {
                Some(a) => ops::add(&a, &m)?,
                None => m,
            }))
        };
        if let Some(m) = opts.attn_mask {
            let a = additive(m, dt)?;
            if m.shape() == [l, s] {
                flat = add(flat, a)?;
            } else if m.shape() == [n * h, l, s] {
                full = add(full, ops::reshape(&a, &[n, h, l, s])?)?;
            } else {
                return Err(err(
                    MHA,
                    format!(
                        "attn_mask must be ({l}, {s}) or ({}, {l}, {s}), got {}",
                        n * h,
                        fmt_shape(m.shape())
                    ),
                ));
            }
        }
        if opts.causal {
            flat = add(flat, causal_mask(l, s, dt)?)?;
        }
        if let Some(m) = opts.key_padding_mask {
            let want: &[usize] = if unbatched { &[s] } else { &[n, s] };
            if m.shape() != want {
                return Err(err(
                    MHA,
                    format!(
                        "key_padding_mask must be {}, got {}",
                        fmt_shape(want),
                        fmt_shape(m.shape())
                    ),
                ));
            }
            let a = ops::reshape(&additive(m, dt)?, &[n, 1, 1, s])?;
            full = add(full, a)?;
        }
        let scale = 1.0 / (hd as f64).sqrt();
        let drop = match opts.dropout_key {
            Some(k) if self.dropout > 0.0 => Some(k),
            _ => None,
        };
        let o = if full.is_none() && drop.is_none() {
            ops::sdpa(&q, &k, &v, scale, flat.as_ref())?
        } else {
            let mask = match (flat, full) {
                (Some(a), Some(b)) => Some(ops::add(&b, &a)?),
                (a, b) => a.or(b),
            };
            let qs = ops::multiply(&q, &Array::scalar_of(scale, dt))?;
            let mut scores = ops::matmul(&qs, &ops::swapaxes(&k, -1, -2)?)?;
            if let Some(m) = mask {
                scores = ops::add(&scores, &m)?;
            }
            let mut p = ops::softmax(&scores, -1)?;
            if let Some(key) = drop {
                p = dropout(&p, self.dropout, true, Some(key))?;
            }
            ops::matmul(&p, &v)?
        };
        let o = ops::reshape(&ops::transpose(&o, Some(&[0, 2, 1, 3]))?, &[n, l, e])?;
        let y = self.out_proj.forward(&o)?;
        if unbatched {
            ops::squeeze(&y, 0)
        } else {
            Ok(y)
        }
    }
}

impl Module for MultiHeadAttention {
    fn parameters(&self) -> Params {
        let mut p = prefixed("out_proj", self.out_proj.parameters());
        match &self.in_proj {
            InProj::Packed(w) => {
                p.insert("in_proj_weight".into(), w.clone());
            }
            InProj::Separate { q, k, v } => {
                p.insert("q_proj_weight".into(), q.clone());
                p.insert("k_proj_weight".into(), k.clone());
                p.insert("v_proj_weight".into(), v.clone());
            }
        }
        if let Some(b) = &self.in_proj_bias {
            p.insert("in_proj_bias".into(), b.clone());
        }
        p
    }

    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        check_names(
            MHA,
            params,
            &["out_proj"],
            &[
                "in_proj_weight",
                "q_proj_weight",
                "k_proj_weight",
                "v_proj_weight",
                "in_proj_bias",
            ],
        )?;
        for (name, v) in params {
            let slot = match (name.as_str(), &mut self.in_proj) {
                ("in_proj_weight", InProj::Packed(w)) => Some(w),
                ("q_proj_weight", InProj::Separate { q, .. }) => Some(q),
                ("k_proj_weight", InProj::Separate { k, .. }) => Some(k),
                ("v_proj_weight", InProj::Separate { v, .. }) => Some(v),
                ("in_proj_bias", _) => self.in_proj_bias.as_mut(),
                (n, _) if n.starts_with("out_proj.") => continue,
                _ => None,
            };
            let slot = slot.ok_or_else(|| {
                err(
                    MHA,
                    format!(
                        "no parameter named {name} (in_proj_weight when kdim = vdim = embed_dim, else q/k/v_proj_weight; in_proj_bias only with bias)"
                    ),
                )
            })?;
            check_replacement(name, slot, v)?;
            *slot = v.clone();
        }
        self.out_proj
            .load_parameters(&sub_params("out_proj", params))
    }

    /// Self-attention of `x` `(N, L, E)` without masks.
    fn forward(&self, x: &Array) -> Result<Array> {
        self.forward_with(x, x, x, &AttentionOptions::default())
    }
}

/// Rotary position embedding, MLX's `nn.RoPE(dims, traditional, base, scale)`: the first
/// `dims` features of `x` `(..., L, D)` are rotated by angles `(offset + p) * scale * base^(-2i /
/// dims)` for position `p` along axis -2 and pair `i < dims / 2`; the rest pass through.
/// `traditional` rotates adjacent pairs `(2i, 2i + 1)` (GPT-J), otherwise the halves
/// `(i, i + dims / 2)` (GPT-NeoX). Built on [`ops::rope`] (angle tables computed in f64 on the
/// host, as constants). No parameters.
#[derive(Clone, Debug)]
pub struct RoPE {
    pub dims: usize,
    pub traditional: bool,
    pub base: f64,
    pub scale: f64,
}

impl RoPE {
    pub fn new(dims: usize, traditional: bool, base: f64, scale: f64) -> Result<RoPE> {
        if dims == 0
            || !dims.is_multiple_of(2)
            || base.is_nan()
            || base <= 0.0
            || !scale.is_finite()
        {
            return Err(err(
                "RoPE",
                format!(
                    "dims must be even and positive, base > 0, scale finite; got dims {dims}, base {base}, scale {scale}"
                ),
            ));
        }
        Ok(RoPE {
            dims,
            traditional,
            base,
            scale,
        })
    }

    /// The `(len, dims / 2)` cos and sin tables for positions `offset..offset + len`.
    pub fn tables(&self, len: usize, offset: usize, dtype: Dtype) -> Result<(Array, Array)> {
        let r = self.dims / 2;
        let mut c = Vec::with_capacity(len * r);
        let mut s = Vec::with_capacity(len * r);
        for p in 0..len {
            for i in 0..r {
                let inv = self.base.powf(-((2 * i) as f64) / self.dims as f64);
                let a = (offset + p) as f64 * self.scale * inv;
                c.push(a.cos());
                s.push(a.sin());
            }
        }
        let dt = if dtype == Dtype::F64 {
            Dtype::F64
        } else {
            Dtype::F32
        };
        Ok((
            Array::from_slice(&c, &[len, r])?.astype(dt)?,
            Array::from_slice(&s, &[len, r])?.astype(dt)?,
        ))
    }

    /// The rotation with positions starting at `offset` (a KV cache's length).
    pub fn forward_offset(&self, x: &Array, offset: usize) -> Result<Array> {
        let nd = x.ndim();
        if nd < 2 || x.shape()[nd - 1] < self.dims || !x.dtype().is_float() {
            return Err(err(
                "RoPE",
                format!(
                    "expected a float input (..., L, D) with D >= dims = {}, got {} {}",
                    self.dims,
                    x.dtype(),
                    fmt_shape(x.shape())
                ),
            ));
        }
        let l = x.shape()[nd - 2];
        let (c, s) = self.tables(l, offset, x.dtype())?;
        // ops::rope wants (..., t, heads, d): one head.
        let mut shape = x.shape().to_vec();
        shape.insert(nd - 1, 1);
        let y = ops::rope(&ops::reshape(x, &shape)?, &c, &s, self.traditional)?;
        ops::reshape(&y, x.shape())
    }
}

impl Module for RoPE {
    fn parameters(&self) -> Params {
        Params::new()
    }
    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        match params.keys().next() {
            Some(k) => Err(err("RoPE", format!("no parameter named {k}"))),
            None => Ok(()),
        }
    }
    fn forward(&self, x: &Array) -> Result<Array> {
        self.forward_offset(x, 0)
    }
}

/// ALiBi slopes for `num_heads` heads (Press et al.; MLX's `ALiBi.create_alibi_slope`): for a
/// power of two `n`, `2^(-8(i+1)/n)` for head `i`; otherwise the slopes of the closest smaller
/// power of two `m` followed by every other slope of `2m`, `n - m` of them.
pub fn alibi_slopes(num_heads: usize) -> Vec<f64> {
    fn pow2(n: usize) -> Vec<f64> {
        let start = 2f64.powf(-8.0 / n as f64);
        (0..n).map(|i| start.powi(i as i32 + 1)).collect()
    }
    if num_heads == 0 {
        return Vec::new();
    }
    if num_heads.is_power_of_two() {
        return pow2(num_heads);
    }
    let m = 1usize << (usize::BITS - 1 - num_heads.leading_zeros());
    let mut s = pow2(m);
    s.extend(pow2(2 * m).into_iter().step_by(2).take(num_heads - m));
    s
}

/// The ALiBi additive attention bias `(1, num_heads, q_len, k_len)` (f32):
/// `-slope_h * |i - j|` for query `i` and key `j`.
pub fn alibi_bias(num_heads: usize, q_len: usize, k_len: usize) -> Result<Array> {
    alibi_bias_offset(num_heads, q_len, k_len, 0)
}

/// [`alibi_bias`] for queries at positions `offset..offset + q_len` (MLX's `ALiBi` with
/// `offset`).
pub fn alibi_bias_offset(
    num_heads: usize,
    q_len: usize,
    k_len: usize,
    offset: usize,
) -> Result<Array> {
    if num_heads == 0 {
        return Err(err("ALiBi", "num_heads must be positive".into()));
    }
    let slopes = alibi_slopes(num_heads);
    let mut v = Vec::with_capacity(num_heads * q_len * k_len);
    for s in &slopes {
        for i in 0..q_len {
            for j in 0..k_len {
                v.push((-(s * ((offset + i) as f64 - j as f64).abs())) as f32);
            }
        }
    }
    Array::from_slice(&v, &[1, num_heads, q_len, k_len])
}

/// ALiBi as a layer (MLX's `nn.ALiBi`): adds [`alibi_bias`] to attention scores
/// `(..., heads, L, S)`. No parameters.
#[derive(Clone, Debug, Default)]
pub struct ALiBi;

impl ALiBi {
    /// Scores of queries at positions `offset..`.
    pub fn forward_offset(&self, scores: &Array, offset: usize) -> Result<Array> {
        let nd = scores.ndim();
        if nd < 3 || !scores.dtype().is_float() {
            return Err(err(
                "ALiBi",
                format!(
                    "expected float attention scores (..., heads, L, S), got {} {}",
                    scores.dtype(),
                    fmt_shape(scores.shape())
                ),
            ));
        }
        let (h, l, s) = (
            scores.shape()[nd - 3],
            scores.shape()[nd - 2],
            scores.shape()[nd - 1],
        );
        let b = ops::reshape(&alibi_bias_offset(h, l, s, offset)?, &[h, l, s])?;
        ops::add(scores, &ops::astype(&b, scores.dtype())?)
    }
}

impl Module for ALiBi {
    fn parameters(&self) -> Params {
        Params::new()
    }
    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        match params.keys().next() {
            Some(k) => Err(err("ALiBi", format!("no parameter named {k}"))),
            None => Ok(()),
        }
    }
    fn forward(&self, x: &Array) -> Result<Array> {
        self.forward_offset(x, 0)
    }
}
