//! Scaled dot-product attention with grouped-query heads, causal and sliding-window masks.
//!
//! Grouped-query attention never repeats the keys: the fused kernel maps each query head to its
//! kv head, and the matmul formulation folds the query heads that share a kv head into the rows
//! of one matmul against that head's keys.

use crate::error::Result;
use tessera_core::{Array, ops};

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
///
/// The fused kernels where they are faster on this machine (decode; prompts on CPUs with the
/// tiled prefill kernel), else the matmul formulation ([`ops::sdpa_fused_is_faster`]).
pub fn sdpa(q: &Array, k: &Array, v: &Array, scale: f64, mask: Option<&Array>) -> Result<Array> {
    Ok(if ops::sdpa_fused_is_faster(q.shape()[2], q.shape()[3]) {
        ops::sdpa(q, k, v, scale, mask)?
    } else {
        ops::sdpa_composite(q, k, v, scale, mask)?
    })
}
