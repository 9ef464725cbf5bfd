//! The key/value cache: per layer, preallocated `(b, kv_heads, capacity, head_dim)` buffers that
//! grow in steps and are written in place (the update node is the buffer's only owner, so the
//! core donates it), so a decode step costs the new entries, not a copy of the cache.

use crate::error::{Error, Result};
use tessera_core::{Array, Dtype, ops};

/// Positions added per growth step.
const STEP: usize = 256;

#[derive(Default)]
struct LayerKv {
    k: Option<Array>,
    v: Option<Array>,
    capacity: usize,
}

/// Keys and values of every layer, and how many positions are filled.
pub struct KvCache {
    layers: Vec<LayerKv>,
    offset: usize,
    max_len: usize,
}

impl KvCache {
    /// An empty cache for `layers` layers holding at most `max_len` positions.
    pub fn new(layers: usize, max_len: usize) -> KvCache {
        KvCache {
            layers: (0..layers).map(|_| LayerKv::default()).collect(),
            offset: 0,
            max_len,
        }
    }

    /// Positions already in the cache.
    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Drops positions from `len` on (prompt-cache reuse keeps the common prefix).
    pub fn truncate(&mut self, len: usize) {
        self.offset = self.offset.min(len);
    }

    /// Marks `t` more positions as filled; call once per forward, after every layer updated.
    pub fn advance(&mut self, t: usize) {
        self.offset += t;
    }

    /// Bytes held by the cache buffers.
    pub fn nbytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                l.k.as_ref().map_or(0, |a| a.nbytes()) + l.v.as_ref().map_or(0, |a| a.nbytes())
            })
            .sum()
    }

    /// Writes `k`, `v` of shape `(b, kv_heads, t, d)` for layer `i` at the current offset and
    /// returns all keys and values so far, `(b, kv_heads, offset + t, d)`.
    pub fn update(&mut self, i: usize, k: &Array, v: &Array) -> Result<(Array, Array)> {
        let (t, off) = (k.shape()[2], self.offset);
        let end = off + t;
        if end > self.max_len {
            return Err(Error::Invalid(format!(
                "the context is full: {end} positions needed, the cache holds {} (raise the context size)",
                self.max_len
            )));
        }
        let layer = self
            .layers
            .get_mut(i)
            .ok_or_else(|| Error::Invalid(format!("layer {i} has no cache")))?;
        if end > layer.capacity {
            let cap = end.div_ceil(STEP).saturating_mul(STEP).min(self.max_len);
            let grow = |old: &Option<Array>, like: &Array| -> Result<Array> {
                let mut shape = like.shape().to_vec();
                shape[2] = cap;
                let fresh = ops::zeros(&shape, like.dtype())?;
                Ok(match old {
                    Some(o) if off > 0 => {
                        let kept = ops::slice_axis(o, 2, 0, off)?;
                        slice_write(&fresh, &kept, 0)?
                    }
                    _ => fresh,
                })
            };
            layer.k = Some(grow(&layer.k, k)?);
            layer.v = Some(grow(&layer.v, v)?);
            layer.capacity = cap;
        }
        let (Some(kc), Some(vc)) = (layer.k.take(), layer.v.take()) else {
            return Err(Error::Invalid("cache buffers missing".into()));
        };
        let kc = slice_write(&kc, &ops::astype(k, kc.dtype())?, off)?;
        let vc = slice_write(&vc, &ops::astype(v, vc.dtype())?, off)?;
        let out = (
            ops::slice_axis(&kc, 2, 0, end)?,
            ops::slice_axis(&vc, 2, 0, end)?,
        );
        layer.k = Some(kc);
        layer.v = Some(vc);
        Ok(out)
    }

    /// The dtype the cache stores.
    pub fn dtype(&self) -> Option<Dtype> {
        self.layers
            .first()
            .and_then(|l| l.k.as_ref())
            .map(|a| a.dtype())
    }
}

/// `buf` with `upd` written at position `at` along axis 2.
fn slice_write(buf: &Array, upd: &Array, at: usize) -> Result<Array> {
    let t = upd.shape()[2] as isize;
    let at = at as isize;
    let bounds = [
        (None, None, 1),
        (None, None, 1),
        (Some(at), Some(at + t), 1),
        (None, None, 1),
    ];
    Ok(ops::slice_update_opt(buf, upd, &bounds)?)
}
