//! The key/value cache.
//!
//! Global layers keep every position in preallocated `(b, kv_heads, capacity, head_dim)` buffers
//! that grow in steps and are written in place (the update node is the buffer's only owner, so
//! the core donates it): a decode step costs the new entries, not a copy of the cache.
//!
//! Sliding-window layers keep only the last `window` positions in a rotating buffer: a decode
//! step overwrites the oldest slot, and attention reads all slots (order does not matter to
//! attention, and rope is already applied to the keys), so memory stays at the window size
//! however long the context. A multi-token step puts the kept keys back in time order, appends
//! the new ones, attends with a mask, and stores the last `window` in order again.

use crate::error::{Error, Result};
use tessera_core::{Array, Dtype, ops};

/// Positions added per growth step.
const STEP: usize = 256;

/// An 8-bit cache buffer: MLX affine groups along the head dim (`ops::quantize` layout).
struct QBuf {
    q: Array,
    s: Array,
    b: Array,
}

#[derive(Default)]
struct LayerKv {
    k: Option<Array>,
    v: Option<Array>,
    /// 8-bit storage of a global layer (instead of `k`/`v`).
    qk: Option<QBuf>,
    qv: Option<QBuf>,
    /// Slots allocated along the time axis.
    capacity: usize,
    /// Sliding window: the buffer rotates and holds at most this many positions.
    window: Option<usize>,
    /// Rotating layers: slots filled, and the slot the next single position goes to.
    filled: usize,
    next: usize,
}

/// Keys and values of every layer, and how many positions have been processed.
pub struct KvCache {
    layers: Vec<LayerKv>,
    offset: usize,
    max_len: usize,
    /// Group size of the 8-bit storage of global layers, when enabled.
    q8_group: Option<usize>,
    /// The float type keys and values are stored in (`None`: as the model computes them).
    storage: Option<Dtype>,
}

/// What attention needs from the cache for one layer and step.
pub struct CachedKv {
    pub keys: Array,
    pub values: Array,
    /// Position of the first key when they are in time order (`None`: a full rotating window,
    /// in slot order, every key visible to the single query).
    pub k_start: Option<usize>,
}

impl KvCache {
    /// An empty cache for `layers` layers holding at most `max_len` positions; `windows[i]` is
    /// layer i's sliding window, if it has one.
    pub fn new(windows: &[Option<usize>], max_len: usize) -> KvCache {
        KvCache {
            layers: windows
                .iter()
                .map(|&window| LayerKv {
                    window,
                    ..LayerKv::default()
                })
                .collect(),
            offset: 0,
            max_len,
            q8_group: None,
            storage: None,
        }
    }

    /// Stores keys and values in f16, as llama.cpp's default cache does: half the memory of
    /// f32 and half the bytes each decode step reads back, which attention widens as it loads
    /// them (`ops::sdpa` reads an f16 cache in place). The rounding (11 significant bits) moves
    /// logits by far less than the 8-bit weights do. Sliding-window layers too; with
    /// [`KvCache::quantized_8bit`] global layers are 8-bit instead.
    pub fn half_precision(mut self) -> KvCache {
        self.storage = Some(Dtype::F16);
        self
    }

    /// Stores keys and values as the model computes them (f32 on the CPU): twice the memory
    /// of [`KvCache::half_precision`], which `Model::new_cache` gives by default.
    pub fn full_precision(mut self) -> KvCache {
        self.storage = None;
        self
    }

    /// Stores the keys and values of global layers in 8 bits (affine groups of 32 along the
    /// head dim, 3.2x less memory than f32); attention reads them dequantized, so a
    /// long context costs a quarter of the memory for a small loss of precision. Sliding-window
    /// layers stay in f32 (their memory is bounded by the window). `head_dim` must be a
    /// multiple of 32.
    pub fn quantized_8bit(mut self, head_dim: usize) -> Result<KvCache> {
        // Groups of 32, as llama.cpp's q8_0 cache: keys carry outlier channels, and smaller
        // groups keep them from flattening their neighbours.
        let group = if head_dim.is_multiple_of(32) {
            32
        } else {
            return Err(Error::Unsupported(format!(
                "an 8-bit KV cache needs a head dim that is a multiple of 32, not {head_dim}"
            )));
        };
        self.q8_group = Some(group);
        Ok(self)
    }

    /// Whether global layers are stored in 8 bits.
    pub fn is_quantized(&self) -> bool {
        self.q8_group.is_some()
    }

    /// Positions processed so far.
    pub fn offset(&self) -> usize {
        self.offset
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Drops positions from `len` on (prompt-cache reuse keeps the common prefix). A rotating
    /// layer cannot rewind past what it has overwritten, so rewinding into a full window clears
    /// the cache (the caller recomputes the prompt).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.offset {
            return;
        }
        let rotated = self
            .layers
            .iter()
            .any(|l| l.window.is_some_and(|w| self.offset > w));
        if rotated && len > 0 {
            self.clear();
            return;
        }
        for l in &mut self.layers {
            if l.window.is_some() {
                l.filled = l.filled.min(len);
                l.next = l.filled;
            }
        }
        self.offset = len;
    }

    /// Forgets everything (buffers are kept for reuse).
    pub fn clear(&mut self) {
        for l in &mut self.layers {
            l.filled = 0;
            l.next = 0;
        }
        self.offset = 0;
    }

    /// How many positions a truncate to `len` would really keep (0 when a rotating window has
    /// moved past them).
    pub fn reusable(&self, len: usize) -> usize {
        let len = len.min(self.offset);
        let rotated = self
            .layers
            .iter()
            .any(|l| l.window.is_some_and(|w| self.offset > w));
        if rotated && len < self.offset { 0 } else { len }
    }

    /// Marks `t` more positions as processed; call once per forward, after every layer updated.
    pub fn advance(&mut self, t: usize) {
        self.offset += t;
    }

    /// Bytes held by the cache buffers.
    pub fn nbytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                let q = |b: &Option<QBuf>| {
                    b.as_ref()
                        .map_or(0, |b| b.q.nbytes() + b.s.nbytes() + b.b.nbytes())
                };
                l.k.as_ref().map_or(0, |a| a.nbytes())
                    + l.v.as_ref().map_or(0, |a| a.nbytes())
                    + q(&l.qk)
                    + q(&l.qv)
            })
            .sum()
    }

    /// The dtype the cache stores.
    pub fn dtype(&self) -> Option<Dtype> {
        self.layers
            .first()
            .and_then(|l| l.k.as_ref())
            .map(|a| a.dtype())
    }

    /// Adds `k`, `v` of shape `(b, kv_heads, t, d)` for layer `i` at the current offset and
    /// returns the keys and values attention should read.
    pub fn update(&mut self, i: usize, k: &Array, v: &Array) -> Result<CachedKv> {
        // New positions are converted to the stored dtype as the cache writes them (the
        // `slice_update` kernel converts): no conversion node on the decode path. Paths that
        // attend over the new positions before storing them convert first.
        let storage = self.storage;
        let dtype = storage.unwrap_or(k.dtype());
        let stored = move |x: &Array| -> Result<Array> {
            Ok(match storage {
                Some(dt) if x.dtype() != dt => ops::astype(x, dt)?,
                _ => x.clone(),
            })
        };
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
        if let (None, Some(group)) = (layer.window, self.q8_group) {
            let (k, v) = (&stored(k)?, &stored(v)?);
            let (keys, values) = q8_update(layer, self.max_len, off, k, v, group)?;
            return Ok(CachedKv {
                keys,
                values,
                k_start: Some(0),
            });
        }
        match layer.window {
            Some(w) if end > w => rotating_update(layer, w, off, k, v, &stored),
            _ => linear_update(layer, self.max_len, off, k, v, dtype).map(|(keys, values)| {
                if let Some(w) = layer.window {
                    layer.filled = end.min(w);
                    layer.next = layer.filled % w;
                }
                CachedKv {
                    keys,
                    values,
                    k_start: Some(0),
                }
            }),
        }
    }
}

/// Appends at `off` in a buffer of `dtype` that grows in steps (the new positions converted as
/// they are written); returns all positions so far.
fn linear_update(
    layer: &mut LayerKv,
    max_len: usize,
    off: usize,
    k: &Array,
    v: &Array,
    dtype: Dtype,
) -> Result<(Array, Array)> {
    let end = off + k.shape()[2];
    if end > layer.capacity {
        let limit = layer.window.unwrap_or(max_len).min(max_len);
        let cap = end.div_ceil(STEP).saturating_mul(STEP).min(limit).max(end);
        layer.k = Some(grow(&layer.k, k.shape(), dtype, cap, off)?);
        layer.v = Some(grow(&layer.v, v.shape(), dtype, cap, off)?);
        layer.capacity = cap;
    }
    let (Some(kc), Some(vc)) = (layer.k.take(), layer.v.take()) else {
        return Err(Error::Invalid("cache buffers missing".into()));
    };
    let kc = slice_write(&kc, k, off)?;
    let vc = slice_write(&vc, v, off)?;
    let out = (
        ops::slice_axis(&kc, 2, 0, end)?,
        ops::slice_axis(&vc, 2, 0, end)?,
    );
    layer.k = Some(kc);
    layer.v = Some(vc);
    Ok(out)
}

/// The 8-bit twin of [`linear_update`]: new positions are quantized once, written in place, and
/// the positions so far are returned dequantized.
fn q8_update(
    layer: &mut LayerKv,
    max_len: usize,
    off: usize,
    k: &Array,
    v: &Array,
    group: usize,
) -> Result<(Array, Array)> {
    let end = off + k.shape()[2];
    let quant = |x: &Array| -> Result<QBuf> {
        let (q, s, b) = ops::quantize(&ops::astype(x, Dtype::F32)?, group, 8)?;
        Ok(QBuf { q, s, b })
    };
    let (nk, nv) = (quant(k)?, quant(v)?);
    if end > layer.capacity {
        let cap = end
            .div_ceil(STEP)
            .saturating_mul(STEP)
            .min(max_len)
            .max(end);
        let regrow = |old: Option<QBuf>, like: &QBuf| -> Result<QBuf> {
            let (oq, os, ob) = match old {
                Some(o) => (Some(o.q), Some(o.s), Some(o.b)),
                None => (None, None, None),
            };
            Ok(QBuf {
                q: grow(&oq, like.q.shape(), like.q.dtype(), cap, off)?,
                s: grow(&os, like.s.shape(), like.s.dtype(), cap, off)?,
                b: grow(&ob, like.b.shape(), like.b.dtype(), cap, off)?,
            })
        };
        layer.qk = Some(regrow(layer.qk.take(), &nk)?);
        layer.qv = Some(regrow(layer.qv.take(), &nv)?);
        layer.capacity = cap;
    }
    let write = |buf: Option<QBuf>, new: &QBuf| -> Result<QBuf> {
        let buf = buf.ok_or_else(|| Error::Invalid("cache buffers missing".into()))?;
        Ok(QBuf {
            q: slice_write(&buf.q, &new.q, off)?,
            s: slice_write(&buf.s, &new.s, off)?,
            b: slice_write(&buf.b, &new.b, off)?,
        })
    };
    let qk = write(layer.qk.take(), &nk)?;
    let qv = write(layer.qv.take(), &nv)?;
    let read = |b: &QBuf| -> Result<Array> {
        let part = |a: &Array| ops::slice_axis(a, 2, 0, end);
        Ok(ops::dequantize(
            &part(&b.q)?,
            &part(&b.s)?,
            &part(&b.b)?,
            group,
            8,
        )?)
    };
    let out = (read(&qk)?, read(&qv)?);
    layer.qk = Some(qk);
    layer.qv = Some(qv);
    Ok(out)
}

/// A fresh buffer of `cap` slots holding the first `keep` positions of `old`.
fn grow(
    old: &Option<Array>,
    like: &[usize],
    dtype: Dtype,
    cap: usize,
    keep: usize,
) -> Result<Array> {
    let mut shape = like.to_vec();
    shape[2] = cap;
    let fresh = ops::zeros(&shape, dtype)?;
    Ok(match old {
        Some(o) if keep > 0 => slice_write(&fresh, &ops::slice_axis(o, 2, 0, keep)?, 0)?,
        _ => fresh,
    })
}

/// The layer's kept positions in time order (oldest first).
fn in_time_order(buf: &Array, filled: usize, next: usize, w: usize) -> Result<Array> {
    if filled < w || next == 0 {
        return Ok(ops::slice_axis(buf, 2, 0, filled)?);
    }
    Ok(ops::concatenate(
        &[
            ops::slice_axis(buf, 2, next, w)?,
            ops::slice_axis(buf, 2, 0, next)?,
        ],
        2,
    )?)
}

/// The rotating window's update; `stored` converts new positions to the stored dtype where
/// they are attended before they are written.
fn rotating_update(
    layer: &mut LayerKv,
    w: usize,
    off: usize,
    k: &Array,
    v: &Array,
    stored: &dyn Fn(&Array) -> Result<Array>,
) -> Result<CachedKv> {
    let t = k.shape()[2];
    let (Some(kc), Some(vc)) = (layer.k.take(), layer.v.take()) else {
        // Nothing cached yet and more than a window at once: attend over the new positions
        // alone and keep their last `w`.
        if off != 0 {
            return Err(Error::Invalid("rotating cache lost its buffers".into()));
        }
        return store_ordered(layer, w, off, stored(k)?, stored(v)?);
    };
    if t == 1 && layer.filled == w && layer.capacity == w {
        // Steady decode: overwrite the oldest slot; attention reads the whole window.
        let slot = layer.next;
        let kc = slice_write(&kc, k, slot)?;
        let vc = slice_write(&vc, v, slot)?;
        layer.next = (slot + 1) % w;
        layer.k = Some(kc.clone());
        layer.v = Some(vc.clone());
        return Ok(CachedKv {
            keys: kc,
            values: vc,
            k_start: None,
        });
    }
    // A chunk (or the step that first fills the window): keys back in time order, the new ones
    // appended, attention masked, then the last `w` stored in order.
    let kept = layer.filled.min(w - 1).min(off);
    let ko = in_time_order(&kc, layer.filled, layer.next, w)?;
    let vo = in_time_order(&vc, layer.filled, layer.next, w)?;
    let ko = ops::slice_axis(&ko, 2, layer.filled - kept, layer.filled)?;
    let vo = ops::slice_axis(&vo, 2, layer.filled - kept, layer.filled)?;
    let keys = ops::concatenate(&[ko, ops::astype(k, kc.dtype())?], 2)?;
    let values = ops::concatenate(&[vo, ops::astype(v, vc.dtype())?], 2)?;
    let mut out = store_ordered(layer, w, off - kept, keys, values)?;
    out.k_start = Some(off - kept);
    Ok(out)
}

/// Stores the last `w` of `keys`/`values` (in time order, first key at position `start`) as
/// the layer's window and returns all of them for attention.
fn store_ordered(
    layer: &mut LayerKv,
    w: usize,
    start: usize,
    keys: Array,
    values: Array,
) -> Result<CachedKv> {
    let l = keys.shape()[2];
    let from = l.saturating_sub(w);
    let keep_k = ops::contiguous(&ops::slice_axis(&keys, 2, from, l)?)?;
    let keep_v = ops::contiguous(&ops::slice_axis(&values, 2, from, l)?)?;
    let n = l - from;
    let (kbuf, vbuf) = if n == w {
        (keep_k, keep_v)
    } else {
        let mut shape = keys.shape().to_vec();
        shape[2] = w;
        let zk = ops::zeros(&shape, keys.dtype())?;
        let zv = ops::zeros(&shape, values.dtype())?;
        (slice_write(&zk, &keep_k, 0)?, slice_write(&zv, &keep_v, 0)?)
    };
    layer.k = Some(kbuf);
    layer.v = Some(vbuf);
    layer.capacity = w;
    layer.filled = n;
    layer.next = n % w;
    Ok(CachedKv {
        keys,
        values,
        k_start: Some(start),
    })
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
