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
//! | `bias_k`, `bias_v` `(1, 1, E)` (`add_bias_kv=True`) | `bias_k`, `bias_v`           |
//!
//! # Options
//!
//! [`AttentionConfig`] has PyTorch's constructor arguments. With `add_bias_kv` the projected
//! keys and values get one more position, `bias_k` / `bias_v` (the same for every batch
//! entry); with `add_zero_attn` one more after that, all zeros. Every mask is widened with
//! "allowed" columns for these positions, as PyTorch pads them, so `attn_mask` and
//! `key_padding_mask` keep the size `S` of the key passed in. The attention weights returned by
//! [`MultiHeadAttention::forward_with_weights`] (PyTorch's `need_weights=True`) cover all
//! `S + add_bias_kv + add_zero_attn` positions: `(N, L, S')` averaged over the heads
//! (`average_attn_weights=True`) or `(N, num_heads, L, S')`, without `N` for an unbatched
//! input; as PyTorch, they are the weights after dropout.
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
use tessera_core::ops::PadMode;
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

/// The constructor arguments of [`MultiHeadAttention`], PyTorch's
/// `nn.MultiheadAttention(embed_dim, num_heads, dropout, bias, add_bias_kv, add_zero_attn,
/// kdim, vdim)` (always `batch_first=True`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionConfig {
    pub embed_dim: usize,
    pub num_heads: usize,
    /// Dropout probability on the attention weights (applied only with a key).
    pub dropout: f64,
    /// Biases in the input and output projections.
    pub bias: bool,
    /// Learned `bias_k`, `bias_v` `(1, 1, E)` appended to the projected keys and values.
    pub add_bias_kv: bool,
    /// A zero key and value appended (after `bias_k`/`bias_v`).
    pub add_zero_attn: bool,
    /// Key features (`embed_dim` in PyTorch when `None`).
    pub kdim: usize,
    /// Value features.
    pub vdim: usize,
}

impl AttentionConfig {
    /// PyTorch's defaults: no dropout, biases, no `bias_k`/`bias_v`, no zero attention,
    /// `kdim = vdim = embed_dim`.
    pub fn new(embed_dim: usize, num_heads: usize) -> AttentionConfig {
        AttentionConfig {
            embed_dim,
            num_heads,
            dropout: 0.0,
            bias: true,
            add_bias_kv: false,
            add_zero_attn: false,
            kdim: embed_dim,
            vdim: embed_dim,
        }
    }
}

/// Multi-head attention, PyTorch's `nn.MultiheadAttention(embed_dim, num_heads, dropout, bias,
/// add_bias_kv, add_zero_attn, kdim=, vdim=, batch_first=True)`: inputs `(N, L, E)` query,
/// `(N, S, kdim)` key, `(N, S, vdim)` value (or unbatched `(L, E)` ...), output `(N, L, E)`.
/// See the module documentation for the parameter names, options and masks.
/// [`Module::forward`] is self-attention without masks.
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
    /// `(1, 1, E)`, appended to the projected keys (`add_bias_kv`); set with `bias_v` or not at
    /// all.
    pub bias_k: Option<Array>,
    /// `(1, 1, E)`, appended to the projected values (`add_bias_kv`).
    pub bias_v: Option<Array>,
    /// Appends a zero key and value (PyTorch's `add_zero_attn`).
    pub add_zero_attn: bool,
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
        let mut c = AttentionConfig::new(embed_dim, num_heads);
        (c.kdim, c.vdim, c.dropout, c.bias) = (kdim, vdim, dropout, bias);
        MultiHeadAttention::from_config(c, key)
    }

    /// Every option of PyTorch's constructor. `bias_k` and `bias_v` start Xavier-normal
    /// (standard deviation `1 / sqrt(E)` for their `(1, 1, E)` shape), as PyTorch.
    pub fn from_config(config: AttentionConfig, key: &Array) -> Result<MultiHeadAttention> {
        let AttentionConfig {
            embed_dim,
            num_heads,
            dropout,
            bias,
            add_bias_kv,
            add_zero_attn,
            kdim,
            vdim,
        } = config;
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
        let (bias_k, bias_v) = if add_bias_kv {
            // Keys of their own, so the other parameters do not depend on this option.
            let kv = random::split(&subkey(&keys, 3)?, 3)?;
            let std = 1.0 / (e as f64).sqrt();
            let normal =
                |i: usize| random::normal(&[1, 1, e], Dtype::F32, 0.0, std, Some(&subkey(&kv, i)?));
            (Some(normal(1)?), Some(normal(2)?))
        } else {
            (None, None)
        };
        Ok(MultiHeadAttention {
            embed_dim,
            num_heads,
            kdim,
            vdim,
            dropout,
            in_proj,
            in_proj_bias: if bias { Some(zeros(3 * e)?) } else { None },
            out_proj,
            bias_k,
            bias_v,
            add_zero_attn,
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
        Ok(self.attend(query, key, value, opts, None)?.0)
    }

    /// [`MultiHeadAttention::forward_with`] that also returns the attention weights, PyTorch's
    /// `need_weights=True`: `(N, L, S')` averaged over the heads when `average_attn_weights`,
    /// else `(N, num_heads, L, S')`, where `S'` counts the `bias_k` and zero-attention positions
    /// too (no `N` for an unbatched input). They are the weights after dropout, as PyTorch's.
    /// Always the composite path (the fused [`ops::sdpa`] does not expose the weights).
    pub fn forward_with_weights(
        &self,
        query: &Array,
        key: &Array,
        value: &Array,
        opts: &AttentionOptions,
        average_attn_weights: bool,
    ) -> Result<(Array, Array)> {
        let (y, w) = self.attend(query, key, value, opts, Some(average_attn_weights))?;
        match w {
            Some(w) => Ok((y, w)),
            None => Err(err(
                MHA,
                "internal: attention weights were not computed".into(),
            )),
        }
    }

    /// The forward pass; the attention weights too when `weights` is `Some(average)`.
    fn attend(
        &self,
        query: &Array,
        key: &Array,
        value: &Array,
        opts: &AttentionOptions,
        weights: Option<bool>,
    ) -> Result<(Array, Option<Array>)> {
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
        let bias_kv = match (&self.bias_k, &self.bias_v) {
            (Some(bk), Some(bv)) => {
                for (name, b) in [("bias_k", bk), ("bias_v", bv)] {
                    if b.shape() != [1, 1, e] {
                        return Err(err(
                            MHA,
                            format!("{name} must be (1, 1, {e}), got {}", fmt_shape(b.shape())),
                        ));
                    }
                }
                Some((bk, bv))
            }
            (None, None) => None,
            _ => {
                return Err(err(
                    MHA,
                    "bias_k and bias_v must be set together (add_bias_kv) or both be None".into(),
                ));
            }
        };
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
        // (N, len, E) -> (N, H, len, hd)
        let heads = |y: &Array, len: usize| -> Result<Array> {
            ops::transpose(&ops::reshape(y, &[n, len, h, hd])?, Some(&[0, 2, 1, 3]))
        };
        let project = |x: &Array, w: &Array, i: usize, len: usize| -> Result<Array> {
            let mut y = ops::matmul(x, &ops::transpose(w, None)?)?;
            if let Some(b) = &biases {
                y = ops::add(&y, &b[i])?;
            }
            heads(&y, len)
        };
        let q = project(&q3, &wq, 0, l)?;
        let mut k = project(&k3, &wk, 1, s)?;
        let mut v = project(&v3, &wv, 2, s)?;
        // Positions appended to every key and value: bias_k / bias_v, then a zero one. The
        // masks get "allowed" columns for them (PyTorch pads its float masks with zeros).
        let mut extra = 0;
        let append = |x: &Array, row: &Array| -> Result<Array> {
            let row = ops::broadcast_to(&ops::astype(row, x.dtype())?, &[n, h, 1, hd])?;
            ops::concatenate(&[x.clone(), row], 2)
        };
        if let Some((bk, bv)) = bias_kv {
            k = append(&k, &ops::reshape(bk, &[1, h, 1, hd])?)?;
            v = append(&v, &ops::reshape(bv, &[1, h, 1, hd])?)?;
            extra += 1;
        }
        if self.add_zero_attn {
            let z = ops::zeros(&[1, h, 1, hd], k.dtype())?;
            k = append(&k, &z)?;
            v = append(&v, &z)?;
            extra += 1;
        }
        let widen = |m: Array| -> Result<Array> {
            if extra == 0 {
                return Ok(m);
            }
            let mut w = vec![(0, 0); m.ndim()];
            w[m.ndim() - 1] = (0, extra);
            ops::pad(&m, &w, PadMode::Constant(0.0))
        };

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
        let flat = flat.map(widen).transpose()?;
        let full = full.map(widen).transpose()?;
        let scale = 1.0 / (hd as f64).sqrt();
        let drop = match opts.dropout_key {
            Some(k) if self.dropout > 0.0 => Some(k),
            _ => None,
        };
        let (o, p) = if full.is_none() && drop.is_none() && weights.is_none() {
            (ops::sdpa(&q, &k, &v, scale, flat.as_ref())?, None)
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
            (ops::matmul(&p, &v)?, Some(p))
        };
        let o = ops::reshape(&ops::transpose(&o, Some(&[0, 2, 1, 3]))?, &[n, l, e])?;
        let y = self.out_proj.forward(&o)?;
        // The weights (N, H, L, S'), averaged over the heads if asked.
        let w = match (weights, p) {
            (Some(true), Some(p)) => Some(ops::mean(&p, 1, false)?),
            (Some(false), Some(p)) => Some(p),
            _ => None,
        };
        if unbatched {
            Ok((
                ops::squeeze(&y, 0)?,
                w.map(|w| ops::squeeze(&w, 0)).transpose()?,
            ))
        } else {
            Ok((y, w))
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
        if let Some(b) = &self.bias_k {
            p.insert("bias_k".into(), b.clone());
        }
        if let Some(b) = &self.bias_v {
            p.insert("bias_v".into(), b.clone());
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
                "bias_k",
                "bias_v",
            ],
        )?;
        for (name, v) in params {
            let slot = match (name.as_str(), &mut self.in_proj) {
                ("in_proj_weight", InProj::Packed(w)) => Some(w),
                ("q_proj_weight", InProj::Separate { q, .. }) => Some(q),
                ("k_proj_weight", InProj::Separate { k, .. }) => Some(k),
                ("v_proj_weight", InProj::Separate { v, .. }) => Some(v),
                ("in_proj_bias", _) => self.in_proj_bias.as_mut(),
                ("bias_k", _) => self.bias_k.as_mut(),
                ("bias_v", _) => self.bias_v.as_mut(),
                (n, _) if n.starts_with("out_proj.") => continue,
                _ => None,
            };
            let slot = slot.ok_or_else(|| {
                err(
                    MHA,
                    format!(
                        "no parameter named {name} (in_proj_weight when kdim = vdim = embed_dim, else q/k/v_proj_weight; in_proj_bias only with bias, bias_k and bias_v only with add_bias_kv)"
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
