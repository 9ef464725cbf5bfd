//! Scaled dot-product attention with grouped-query heads, causal and sliding-window masks.
//!
//! Written with the core ops (two batched matmuls and a fused softmax). Grouped-query attention
//! never repeats the keys: the query heads that share a kv head are folded into the rows of one
//! matmul against that head's keys.

use crate::error::Result;
use tessera_core::{Array, Dtype, ops};

/// The additive mask for queries at positions `offset .. offset + t` against keys at positions
/// `k_start .. k_start + l`: 0 where a query may look, -inf elsewhere (future keys, and keys
/// `window` or more positions older when given). `None` when nothing is masked.
pub fn causal_mask(
    offset: usize,
    t: usize,
    k_start: usize,
    l: usize,
    window: Option<usize>,
) -> Result<Option<Array>> {
    let blocked = |q: usize, kp: usize| kp > q || window.is_some_and(|w| kp + w <= q);
    // One query that sees every key (plain decode, or a full rotating window): no mask.
    if t == 1 && (0..l).all(|j| !blocked(offset, k_start + j)) {
        return Ok(None);
    }
    let mut m = vec![0f32; t * l];
    for i in 0..t {
        for (j, v) in m[i * l..(i + 1) * l].iter_mut().enumerate() {
            if blocked(offset + i, k_start + j) {
                *v = f32::NEG_INFINITY;
            }
        }
    }
    Ok(Some(Array::from_vec(m, &[t, l])?))
}

/// `softmax(q kᵀ * scale + mask) v` for q `(b, heads, t, d)`, k and v `(b, kv_heads, l, d)`;
/// returns `(b, heads, t, d)`. `heads` must be a multiple of `kv_heads`.
pub fn sdpa(q: &Array, k: &Array, v: &Array, scale: f64, mask: Option<&Array>) -> Result<Array> {
    let (b, h, t, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hk, l) = (k.shape()[1], k.shape()[2]);
    let rep = h / hk;
    // Queries of one kv group become rows: (b, hk, rep * t, d).
    let qg = ops::reshape(
        &ops::multiply(q, &Array::scalar_of(scale, q.dtype()))?,
        &[b, hk, rep * t, d],
    )?;
    let scores = ops::matmul(&qg, &ops::swapaxes(k, -1, -2)?)?; // (b, hk, rep*t, l)
    let scores = match mask {
        Some(m) => {
            let s = ops::reshape(&scores, &[b, hk, rep, t, l])?;
            let s = ops::add(&s, &ops::astype(m, scores.dtype())?)?;
            ops::reshape(&s, &[b, hk, rep * t, l])?
        }
        None => scores,
    };
    let p = ops::softmax(&ops::astype(&scores, Dtype::F32)?, -1)?;
    let p = ops::astype(&p, v.dtype())?;
    let out = ops::matmul(&p, v)?; // (b, hk, rep*t, d)
    Ok(ops::reshape(&out, &[b, h, t, d])?)
}
