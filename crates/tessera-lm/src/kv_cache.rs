//! The key/value cache.
//!
//! Global layers keep every position in preallocated `(b, kv_heads, capacity, head_dim)` buffers
//! that grow in steps and are written in place (the update node is the buffer's only owner, so
//! the core donates it): a decode step costs the new entries, not a copy of the cache. A
//! prefill can [`KvCache::reserve`] its prompt's positions first, so its chunks do not copy the
//! cache at every step of growth.
//!
//! Buffers from 64 KiB to a few MiB are cut from one arena (`tessera_core::memory::Arena`),
//! so they lie in huge pages: each decode step reads every layer's keys and values back from
//! memory, and on 4 KiB pages the reads stop at every page boundary (the hardware prefetchers
//! do not cross it) and miss the TLB. A 0.5B-shape layer at 4000 positions holds 1 MiB of f16
//! keys: `Sdpa` in decode took 198-200 µs a call on small pages, 155-158 in the arena
//! (`TESSERA_PROFILE=shapes tessera bench llm ... --depth 4000`), and decode ran 6-11% faster.
//!
//! Sliding-window layers keep only the last `window` positions in a rotating buffer: a decode
//! step overwrites the oldest slot, and attention reads all slots (order does not matter to
//! attention, and rope is already applied to the keys), so memory stays at the window size
//! however long the context. A multi-token step puts the kept keys back in time order, appends
//! the new ones, attends with a mask, and stores the last `window` in order again.

use crate::error::{Error, Result};
use tessera_core::memory::{self, Arena};
use tessera_core::{Array, Dtype, ops};

/// Positions added per growth step.
const STEP: usize = 256;

/// Buffers from this size on are cut from the cache's arena (smaller ones, short contexts,
/// gain nothing from huge pages).
const ARENA_MIN_BYTES: usize = 64 << 10;

/// The arena's blocks: whole huge pages, several layers' buffers each (a buffer over half a
/// block gets a block of its own from the allocator, in huge pages as well).
const ARENA_BLOCK_BYTES: usize = 8 << 20;

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
    /// Where the buffers of global layers are cut from (see the module doc).
    arena: Arena,
    /// Positions the next growth makes room for at least ([`KvCache::reserve`]).
    reserved: usize,
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
            arena: Arena::with_block_bytes(ARENA_BLOCK_BYTES),
            reserved: 0,
        }
    }

    /// Makes the next growth of the buffers room for `positions` positions in all (at most
    /// the cache's length): a prefill that reserves its prompt grows them once rather than
    /// copying the whole cache at every step of growth. Only a hint: nothing is allocated now.
    pub fn reserve(&mut self, positions: usize) {
        self.reserved = positions.min(self.max_len);
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
        let dtype = storage.unwrap_or_else(|| k.dtype());
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
        let room = Room {
            max_len: self.max_len,
            reserved: self.reserved,
            arena: &self.arena,
        };
        let layer = self
            .layers
            .get_mut(i)
            .ok_or_else(|| Error::Invalid(format!("layer {i} has no cache")))?;
        if let (None, Some(group)) = (layer.window, self.q8_group) {
            let (k, v) = (&stored(k)?, &stored(v)?);
            let (keys, values) = q8_update(layer, &room, off, k, v, group)?;
            return Ok(CachedKv {
                keys,
                values,
                k_start: Some(0),
            });
        }
        match layer.window {
            Some(w) if end > w => rotating_update(layer, room.arena, w, off, k, v, &stored),
            _ => linear_update(layer, &room, off, k, v, dtype).map(|(keys, values)| {
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

/// What a growing buffer may take: the cache's length, the positions reserved, the arena.
struct Room<'a> {
    max_len: usize,
    reserved: usize,
    arena: &'a Arena,
}

impl Room<'_> {
    /// The capacity a buffer grows to so that it holds `end` positions: the next whole step
    /// or the reservation, whichever is more, within `limit`.
    fn capacity(&self, end: usize, limit: usize) -> usize {
        end.div_ceil(STEP)
            .saturating_mul(STEP)
            .max(self.reserved)
            .min(limit)
            .max(end)
    }
}

/// Appends at `off` in a buffer of `dtype` that grows in steps (the new positions converted as
/// they are written); returns all positions so far.
fn linear_update(
    layer: &mut LayerKv,
    room: &Room,
    off: usize,
    k: &Array,
    v: &Array,
    dtype: Dtype,
) -> Result<(Array, Array)> {
    let end = off + k.shape()[2];
    if end > layer.capacity {
        let limit = layer.window.unwrap_or(room.max_len).min(room.max_len);
        let cap = room.capacity(end, limit);
        layer.k = Some(grow(&layer.k, k.shape(), dtype, cap, off, room.arena)?);
        layer.v = Some(grow(&layer.v, v.shape(), dtype, cap, off, room.arena)?);
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
    room: &Room,
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
        let cap = room.capacity(end, room.max_len);
        let regrow = |old: Option<QBuf>, like: &QBuf| -> Result<QBuf> {
            let (oq, os, ob) = match old {
                Some(o) => (Some(o.q), Some(o.s), Some(o.b)),
                None => (None, None, None),
            };
            Ok(QBuf {
                q: grow(&oq, like.q.shape(), like.q.dtype(), cap, off, room.arena)?,
                s: grow(&os, like.s.shape(), like.s.dtype(), cap, off, room.arena)?,
                b: grow(&ob, like.b.shape(), like.b.dtype(), cap, off, room.arena)?,
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

/// A fresh buffer of `cap` slots holding the first `keep` positions of `old` (see [`zeroed`]).
fn grow(
    old: &Option<Array>,
    like: &[usize],
    dtype: Dtype,
    cap: usize,
    keep: usize,
    arena: &Arena,
) -> Result<Array> {
    let mut shape = like.to_vec();
    shape[2] = cap;
    let fresh = zeroed(&shape, dtype, arena)?;
    Ok(match old {
        Some(o) if keep > 0 => slice_write(&fresh, &ops::slice_axis(o, 2, 0, keep)?, 0)?,
        _ => fresh,
    })
}

/// A zero-filled buffer, cut from `arena` from [`ARENA_MIN_BYTES`] on.
fn zeroed(shape: &[usize], dtype: Dtype, arena: &Arena) -> Result<Array> {
    let bytes = shape
        .iter()
        .try_fold(dtype.size(), |n, &d| n.checked_mul(d));
    Ok(match bytes {
        Some(n) if n >= ARENA_MIN_BYTES => memory::zeros_in(shape, dtype, arena)?,
        // Small, or too large to count (the allocator reports that).
        _ => ops::zeros(shape, dtype)?,
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
    arena: &Arena,
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
        return store_ordered(layer, arena, w, off, stored(k)?, stored(v)?);
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
    let mut out = store_ordered(layer, arena, w, off - kept, keys, values)?;
    out.k_start = Some(off - kept);
    Ok(out)
}

/// Stores the last `w` of `keys`/`values` (in time order, first key at position `start`) as
/// the layer's window and returns all of them for attention.
fn store_ordered(
    layer: &mut LayerKv,
    arena: &Arena,
    w: usize,
    start: usize,
    keys: Array,
    values: Array,
) -> Result<CachedKv> {
    let l = keys.shape()[2];
    let from = l.saturating_sub(w);
    let n = l - from;
    let keep = |x: &Array| -> Result<Array> {
        let mut shape = x.shape().to_vec();
        shape[2] = w;
        let buf = zeroed(&shape, x.dtype(), arena)?;
        slice_write(&buf, &ops::slice_axis(x, 2, from, l)?, 0)
    };
    let (kbuf, vbuf) = (keep(&keys)?, keep(&values)?);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `(1, hk, t, d)` f32 values that say where they are: position `p0 + i` of head `h` holds
    /// `p0 + i + h / 2` (exact in f16 up to position 1023 with two heads).
    fn positions(hk: usize, t: usize, d: usize, p0: usize) -> Array {
        let vals: Vec<f32> = (0..hk * t * d)
            .map(|n| (n / d % t + p0) as f32 + (n / (t * d)) as f32 * 0.5)
            .collect();
        Array::from_vec(vals, &[1, hk, t, d]).unwrap()
    }

    #[test]
    fn a_reserved_prefill_grows_the_buffers_once() {
        let (hk, d) = (2, 64);
        let mut cache = KvCache::new(&[None, None], 4096).half_precision();
        cache.reserve(1000);
        let mut sizes = Vec::new();
        for chunk in 0..10 {
            let off = cache.offset();
            for layer in 0..2 {
                let x = positions(hk, 100, d, off);
                let kv = cache.update(layer, &x, &x).unwrap();
                tessera_core::eval(&[kv.keys, kv.values]).unwrap();
            }
            cache.advance(100);
            sizes.push(cache.nbytes());
            if chunk == 9 {
                // Every position reads back where it was written (f16 holds these exactly).
                let kv = cache.update(1, &positions(hk, 1, d, 1000), &positions(hk, 1, d, 1000));
                let keys = kv.unwrap().keys.to_vec::<f32>().unwrap();
                let want = positions(hk, 1001, d, 0).to_vec::<f32>().unwrap();
                assert!(keys == want, "the keys read back differ from those written");
            }
        }
        // Two layers, keys and values, 1000 positions of f16 from the first chunk on.
        let want = 2 * 2 * hk * 1000 * d * 2;
        assert!(sizes.iter().all(|&s| s == want), "{sizes:?}, want {want}");
    }

    #[test]
    fn a_rotating_window_in_the_arena_keeps_the_last_positions() {
        // One head of 64 over a 600-position window of f16: 75 KiB buffers, from the arena.
        let (w, d) = (600, 64);
        let mut cache = KvCache::new(&[Some(w)], 4096).half_precision();
        // Chunks that cross the window's end: the kept keys in time order, then the new ones.
        for t in [300, 250, 350] {
            let off = cache.offset();
            let x = positions(1, t, d, off);
            let kv = cache.update(0, &x, &x).unwrap();
            let start = kv.k_start.unwrap();
            assert_eq!(start, off.saturating_sub(w - 1), "chunk at {off}");
            let keys = kv.keys.to_vec::<f32>().unwrap();
            let want = positions(1, off + t - start, d, start)
                .to_vec::<f32>()
                .unwrap();
            assert!(keys == want, "chunk at {off}: the keys differ");
            cache.advance(t);
        }
        // Decode: the whole window, in slot order; it holds exactly the last `w` positions.
        for p in 900..904 {
            let x = positions(1, 1, d, p);
            let kv = cache.update(0, &x, &x).unwrap();
            assert_eq!(kv.k_start, None);
            let keys = kv.keys.to_vec::<f32>().unwrap();
            let mut held: Vec<usize> = keys.chunks(d).map(|row| row[0] as usize).collect();
            held.sort_unstable();
            let want: Vec<usize> = (p + 1 - w..=p).collect();
            assert!(
                held == want,
                "position {p}: the window holds other positions"
            );
            cache.advance(1);
        }
    }

    #[test]
    fn decode_steps_write_the_arena_buffers_in_place() {
        // 2 heads of 64 at 256 positions of f16: 64 KiB, cut from the arena.
        let (hk, d) = (2, 64);
        let mut cache = KvCache::new(&[None], 4096).half_precision();
        let x = positions(hk, 10, d, 0);
        let kv = cache.update(0, &x, &x).unwrap();
        tessera_core::eval(&[kv.keys, kv.values]).unwrap();
        cache.advance(10);
        let mut at = Vec::new();
        for p in 10..13 {
            let x = positions(hk, 1, d, p);
            let kv = cache.update(0, &x, &x).unwrap();
            let keys = kv.keys.to_vec::<f32>().unwrap();
            let want = positions(hk, p + 1, d, 0).to_vec::<f32>().unwrap();
            assert!(keys == want, "position {p}: the keys read back differ");
            at.push(kv.keys.data().unwrap().buffer.as_ptr() as usize);
            cache.advance(1);
        }
        assert!(
            at.windows(2).all(|w| w[0] == w[1]),
            "copied, not updated in place: {at:?}"
        );
    }
}
