//! Fused ops for transformer layers (as MLX's `mx.fast`): each is one pass over memory instead
//! of a chain of element-wise nodes, which matters most when decoding one token at a time, where
//! per-node overhead rivals the arithmetic. Their gradients are written with the plain ops.

use crate::array::Array;
use crate::error::{Result, fmt_shape, invalid};
use crate::primitive::Primitive;

/// The checks the fused norms share: `x` a float array with at least one axis, `eps >= 0`, and
/// each given parameter a float vector as long as `x`'s last axis.
fn check_norm(
    op: &'static str,
    x: &Array,
    eps: f64,
    params: &[(&str, Option<&Array>)],
) -> Result<()> {
    if x.ndim() == 0 || !x.dtype().is_float() {
        return invalid(
            op,
            format!(
                "x must be a float array with at least one axis, got {} {}",
                x.dtype(),
                fmt_shape(x.shape())
            ),
        );
    }
    if eps.is_nan() || eps < 0.0 {
        return invalid(op, format!("eps must be >= 0, got {eps}"));
    }
    let d = x.shape()[x.ndim() - 1];
    for &(name, p) in params {
        if let Some(p) = p
            && (p.shape() != [d] || !p.dtype().is_float())
        {
            return invalid(
                op,
                format!(
                    "{name} must be a float vector of shape ({d},), got {} {}",
                    p.dtype(),
                    fmt_shape(p.shape())
                ),
            );
        }
    }
    Ok(())
}

/// RMS normalisation over the last axis: `x / sqrt(mean(x²) + eps) * weight`, computed in f32
/// and returned in x's dtype. `weight` has shape `(d,)` for x of shape `(..., d)`.
/// ```
/// use tessera_core::{Array, ops};
/// let x = Array::from_slice(&[3.0f32, 4.0], &[1, 2]).unwrap();
/// let w = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
/// let y = ops::rms_norm(&x, Some(&w), 0.0).unwrap().to_vec::<f32>().unwrap();
/// let r = (12.5f32).sqrt();
/// assert!((y[0] - 3.0 / r).abs() < 1e-6 && (y[1] - 8.0 / r).abs() < 1e-6);
/// ```
pub fn rms_norm(x: &Array, weight: Option<&Array>, eps: f64) -> Result<Array> {
    check_norm("rms_norm", x, eps, &[("weight", weight)])?;
    if x.dtype() == crate::Dtype::F64 {
        // The kernel computes in f32; f64 callers get the exact composite.
        let ms = super::mean(&super::square(x)?, -1, true)?;
        let y = super::multiply(
            x,
            &super::rsqrt(&super::add(&ms, &Array::scalar_of(eps, ms.dtype()))?)?,
        )?;
        return match weight {
            Some(w) => super::multiply(&y, w),
            None => Ok(y),
        };
    }
    let mut inputs = vec![x.clone()];
    inputs.extend(weight.cloned());
    Ok(Array::lazy(
        Primitive::RmsNorm { eps },
        inputs,
        x.shape().to_vec(),
        x.dtype(),
    ))
}

/// Layer normalisation over the last axis: `(x - mean) / sqrt(var + eps) * weight + bias`
/// (biased variance, as PyTorch's `layer_norm`), computed in f32 and returned in x's dtype.
/// `weight` and `bias` have shape `(d,)` for x of shape `(..., d)`; either may be absent.
/// f64 inputs get the composite in f64.
/// ```
/// use tessera_core::{Array, ops};
/// let x = Array::from_slice(&[1.0f32, 3.0], &[1, 2]).unwrap();
/// let b = Array::from_slice(&[10.0f32, 20.0], &[2]).unwrap();
/// let y = ops::layer_norm(&x, None, Some(&b), 0.0).unwrap().to_vec::<f32>().unwrap();
/// assert_eq!(y, vec![9.0, 21.0]); // mean 2, deviation 1
/// ```
pub fn layer_norm(
    x: &Array,
    weight: Option<&Array>,
    bias: Option<&Array>,
    eps: f64,
) -> Result<Array> {
    check_norm("layer_norm", x, eps, &[("weight", weight), ("bias", bias)])?;
    if x.dtype() == crate::Dtype::F64 {
        // The kernel computes in f32; f64 callers get the exact composite.
        let (xh, _) = crate::primitive::vjp::layer_norm_parts(x, eps)?;
        let y = match weight {
            Some(w) => super::multiply(&xh, w)?,
            None => xh,
        };
        return match bias {
            Some(b) => super::add(&y, b),
            None => Ok(y),
        };
    }
    let mut inputs = vec![x.clone()];
    inputs.extend(weight.cloned());
    inputs.extend(bias.cloned());
    Ok(Array::lazy(
        Primitive::LayerNorm {
            eps,
            weight: weight.is_some(),
            bias: bias.is_some(),
        },
        inputs,
        x.shape().to_vec(),
        x.dtype(),
    ))
}

/// Rotary position embedding of `x` with shape `(..., t, heads, d)` by angles given as tables
/// `cos`, `sin` of shape `(t, r)` (float): the first `2r` dims of each head are rotated (the rest
/// pass through). Pairs are adjacent dims `(2i, 2i+1)` when `interleaved` (GPT-J, llama.cpp's
/// Llama layout), else `(i, i + r)` (GPT-NeoX, Hugging Face `rotate_half`). The result has x's
/// dtype. Gradients flow to x and to the tables (through the composite [`rope_composite`]).
/// ```
/// use tessera_core::{Array, ops};
/// // One position, one head, d = 2, angle 90°: (1, 0) -> (0, 1).
/// let x = Array::from_slice(&[1.0f32, 0.0], &[1, 1, 2]).unwrap();
/// let c = Array::from_slice(&[0.0f32], &[1, 1]).unwrap();
/// let s = Array::from_slice(&[1.0f32], &[1, 1]).unwrap();
/// let y = ops::rope(&x, &c, &s, false).unwrap().to_vec::<f32>().unwrap();
/// assert!((y[0] - 0.0).abs() < 1e-6 && (y[1] - 1.0).abs() < 1e-6);
/// ```
pub fn rope(x: &Array, cos: &Array, sin: &Array, interleaved: bool) -> Result<Array> {
    if x.ndim() < 3 || !x.dtype().is_float() {
        return invalid(
            "rope",
            format!(
                "x must be a float array (..., t, heads, d), got {} {}",
                x.dtype(),
                fmt_shape(x.shape())
            ),
        );
    }
    let n = x.ndim();
    let (t, d) = (x.shape()[n - 3], x.shape()[n - 1]);
    if cos.ndim() != 2
        || cos.shape() != sin.shape()
        || cos.shape()[0] != t
        || 2 * cos.shape()[1] > d
    {
        return invalid(
            "rope",
            format!(
                "tables must both be (t, r) with t = {t} and 2r <= {d}, got cos {} and sin {}",
                fmt_shape(cos.shape()),
                fmt_shape(sin.shape())
            ),
        );
    }
    if !cos.dtype().is_float() || !sin.dtype().is_float() {
        return invalid("rope", "the tables must be float arrays");
    }
    if x.dtype() == crate::Dtype::F64 {
        return rope_composite(x, cos, sin, interleaved);
    }
    Ok(Array::lazy(
        Primitive::Rope { interleaved },
        vec![x.clone(), cos.clone(), sin.clone()],
        x.shape().to_vec(),
        x.dtype(),
    ))
}

/// [`rope`] written with plain ops (the f64 path, and the reference the kernel is tested against).
pub fn rope_composite(x: &Array, cos: &Array, sin: &Array, interleaved: bool) -> Result<Array> {
    let n = x.ndim();
    let (t, d) = (x.shape()[n - 3], x.shape()[n - 1]);
    let r = cos.shape()[1];
    let c = super::reshape(&super::astype(cos, x.dtype())?, &[t, 1, r])?;
    let s = super::reshape(&super::astype(sin, x.dtype())?, &[t, 1, r])?;
    let xr = super::slice_axis(x, n - 1, 0, 2 * r)?;
    let (a, b) = if interleaved {
        let mut pairs = x.shape()[..n - 1].to_vec();
        pairs.extend([r, 2]);
        let p = super::reshape(&super::contiguous(&xr)?, &pairs)?;
        (
            super::squeeze(&super::slice_axis(&p, n, 0, 1)?, n as isize)?,
            super::squeeze(&super::slice_axis(&p, n, 1, 2)?, n as isize)?,
        )
    } else {
        (
            super::slice_axis(&xr, n - 1, 0, r)?,
            super::slice_axis(&xr, n - 1, r, 2 * r)?,
        )
    };
    let ya = super::subtract(&super::multiply(&a, &c)?, &super::multiply(&b, &s)?)?;
    let yb = super::add(&super::multiply(&b, &c)?, &super::multiply(&a, &s)?)?;
    let rot = if interleaved {
        let st = super::stack(&[ya, yb], n as isize)?;
        let mut shape = x.shape()[..n - 1].to_vec();
        shape.push(2 * r);
        super::reshape(&st, &shape)?
    } else {
        super::concatenate(&[ya, yb], (n - 1) as isize)?
    };
    if 2 * r < d {
        super::concatenate(
            &[rot, super::slice_axis(x, n - 1, 2 * r, d)?],
            (n - 1) as isize,
        )
    } else {
        Ok(rot)
    }
}

/// Scaled dot-product attention with grouped-query heads: `softmax(q kᵀ · scale + mask) v` for
/// q `(b, heads, t, d)`, k and v `(b, kv_heads, l, d)` (heads a multiple of kv_heads: query head
/// `h` reads kv head `h / (heads / kv_heads)`), and an optional additive mask `(t, l)` (use
/// `-inf` to hide a key). Returns `(b, heads, t, d)` in q's dtype; computed in f32 with a
/// numerically safe softmax, reading strided k/v (a KV-cache view) in place.
///
/// One node instead of eight: the decode path's attention. Long prompts are better served by
/// the matmul formulation ([`sdpa_composite`]), which uses the GEMM kernels.
/// ```
/// use tessera_core::{Array, ops};
/// let q = Array::from_slice(&[1.0f32, 0.0], &[1, 1, 1, 2]).unwrap();
/// let k = Array::from_slice(&[1.0f32, 0.0, 0.0, 1.0], &[1, 1, 2, 2]).unwrap();
/// let v = Array::from_slice(&[10.0f32, 0.0, 0.0, 10.0], &[1, 1, 2, 2]).unwrap();
/// let o = ops::sdpa(&q, &k, &v, 1.0, None).unwrap().to_vec::<f32>().unwrap();
/// let p = 1.0f32.exp() / (1.0f32.exp() + 1.0); // softmax([1, 0])[0]
/// assert!((o[0] - 10.0 * p).abs() < 1e-5 && (o[1] - 10.0 * (1.0 - p)).abs() < 1e-5);
/// ```
pub fn sdpa(q: &Array, k: &Array, v: &Array, scale: f64, mask: Option<&Array>) -> Result<Array> {
    let bad = |m: String| invalid::<Array>("sdpa", m);
    if q.ndim() != 4 || k.ndim() != 4 || v.ndim() != 4 {
        return bad(format!(
            "q, k, v must be 4-D (b, heads, t, d), got {}, {}, {}",
            fmt_shape(q.shape()),
            fmt_shape(k.shape()),
            fmt_shape(v.shape())
        ));
    }
    let (b, h, t, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hk, l) = (k.shape()[1], k.shape()[2]);
    if k.shape() != v.shape() || k.shape()[0] != b || k.shape()[3] != d || hk == 0 || h % hk != 0 {
        return bad(format!(
            "shapes do not fit: q {}, k {}, v {} (k and v equal, batch and head dim as q's, heads a multiple of kv heads)",
            fmt_shape(q.shape()),
            fmt_shape(k.shape()),
            fmt_shape(v.shape())
        ));
    }
    if !q.dtype().is_float() || !k.dtype().is_float() || !v.dtype().is_float() {
        return bad("q, k, v must be float arrays".into());
    }
    let mut inputs = vec![q.clone(), k.clone(), v.clone()];
    if let Some(m) = mask {
        if m.shape() != [t, l] || !m.dtype().is_float() {
            return bad(format!(
                "the mask must be a float ({t}, {l}) array, got {} {}",
                m.dtype(),
                fmt_shape(m.shape())
            ));
        }
        inputs.push(m.clone());
    }
    if q.dtype() == crate::Dtype::F64 {
        return sdpa_composite(q, k, v, scale, mask);
    }
    Ok(Array::lazy(
        Primitive::Sdpa { scale },
        inputs,
        vec![b, h, t, d],
        q.dtype(),
    ))
}

/// Whether [`sdpa`] beats [`sdpa_composite`] for `t` query positions per head of size `d` on
/// this machine: always for a few queries (decode: the row kernels read the cache in place);
/// for any number on x86-64 CPUs with AVX2 + FMA or AVX-512 (the row kernels, then from 16
/// positions the tiled kernel, for head sizes a multiple of 16 up to 512). Elsewhere the matmul
/// formulation serves longer chunks.
pub fn sdpa_fused_is_faster(t: usize, d: usize) -> bool {
    crate::backend::cpu::fused_attention_is_faster(t, d)
}

/// [`sdpa`] written with matmuls and softmax (also its gradient and the long-prompt path).
pub fn sdpa_composite(
    q: &Array,
    k: &Array,
    v: &Array,
    scale: f64,
    mask: Option<&Array>,
) -> Result<Array> {
    let (b, h, t, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hk, l) = (k.shape()[1], k.shape()[2]);
    let rep = h / hk.max(1);
    let qg = super::reshape(
        &super::multiply(q, &Array::scalar_of(scale, q.dtype()))?,
        &[b, hk, rep * t, d],
    )?;
    let scores = super::matmul(&qg, &super::swapaxes(k, -1, -2)?)?;
    let scores = match mask {
        Some(m) => {
            let s = super::reshape(&scores, &[b, hk, rep, t, l])?;
            let s = super::add(&s, &super::astype(m, scores.dtype())?)?;
            super::reshape(&s, &[b, hk, rep * t, l])?
        }
        None => scores,
    };
    let wide = if q.dtype() == crate::Dtype::F64 {
        crate::Dtype::F64
    } else {
        crate::Dtype::F32
    };
    let p = super::softmax(&super::astype(&scores, wide)?, -1)?;
    // The weights meet the values in the wider of the query's and the values' types (an f16
    // cache with f32 queries is widened, not the weights narrowed).
    let pv = crate::promote_types(q.dtype(), v.dtype());
    let out = super::matmul(&super::astype(&p, pv)?, &super::astype(v, pv)?)?;
    super::astype(&super::reshape(&out, &[b, h, t, d])?, q.dtype())
}
