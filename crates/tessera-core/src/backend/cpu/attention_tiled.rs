//! Tiled ("flash") attention for many query rows: prompt prefill.
//!
//! The decode kernels (`attention_x86.rs`) work a row at a time; with hundreds of query rows the
//! work is two matrix products per head, and this kernel runs them as such without ever
//! materialising the `t × l` score matrix (the matmul formulation, `ops::sdpa_composite`, wrote
//! and re-read 58 MB per layer for a 512-token chunk against 2048 keys, and spent as long in its
//! softmax and mask passes as in its products).
//!
//! One task is a run of consecutive query positions for every query head of one kv head (about
//! [`ROW_TILE`] rows: the heads that share the keys read each key block once, from L1, for all
//! of them; fewer positions where a short prompt would leave too few tasks). It walks
//! the keys that any of its rows may see in blocks of [`KEY_BLOCK`]: scores for the block (a 6
//! rows × 64 keys register tile against keys stored transposed, query values broadcast), the
//! online softmax per row (running maximum and sum, earlier results rescaled), then the weighted
//! values (6 rows × 64 columns of the output held in registers across the block's keys). Keys a
//! row cannot see are skipped by block, from the mask: each mask row's first and last visible
//! key bound the blocks its tile visits, so a causal prompt does about half the work of the
//! full `t × l` product.
//!
//! Keys are transposed and values widened to f32 once per kv head and call (the query heads
//! sharing it all read the same copy), so the inner loops are pure f32 FMAs whatever the cache
//! type.
//!
//! The micro-kernels come in two sets behind [`Micro`]: AVX-512 intrinsics (`Avx512`), and plain
//! loops over 16-value arrays (`Portable`) that the compiler vectorises, built once for AVX2 +
//! FMA and once for the baseline. The baseline build is ready for CPUs without AVX2 and for ARM
//! (NEON), but [`applies`] keeps those on the matmul formulation until it is measured there.
//!
//! For head sizes above 64 both products run over 64 values of the head at a time ([`D_CHUNK`]),
//! so the sub-blocks of keys and values a pass reads stay in L1 for every row group.

use super::attention::KvElem;
use super::copy::{SendConstPtr, SendPtr};
use super::pool;
use super::simd;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Query rows per task, about: a task takes a run of positions for every query head of one kv
/// head (the heads share its keys and values, which are then read once for all of them).
const ROW_TILE: usize = 64;
/// Keys per block (four 16-lane vectors of scores per row).
const KEY_BLOCK: usize = 128;
/// Rows per register tile: 6 rows × 4 vectors of accumulators, 4 vectors of keys (or values)
/// and a broadcast fill 29 of AVX-512's 32 registers, and each step's 10 loads feed 24 FMAs
/// (4 rows: 8 loads for 16). Against 4 rows (`tessera bench ops --filter _fused`, alternated,
/// GFLOP/s): `sdpa_prefill_14x2x64_f16_t512_l2048` 233-241 -> 236-249, the Gemma 3 window case
/// 194-204 -> 205-219; with `TESSERA_SIMD=avx2` 125-128 -> 126-128 and 127-131 -> 143-147.
const ROWS: usize = 6;
/// Values of the head per pass of the products (four 16-lane vectors).
const D_CHUNK: usize = 64;

/// Fewest query positions per head for which this kernel beats the row-at-a-time one.
pub(super) const MIN_QUERIES: usize = 16;

/// Largest head size (the per-task output tile stays small).
pub(super) const MAX_HEAD: usize = 512;

/// Whether the tiled kernel runs `t` query positions per head of size `d` on this CPU: x86-64
/// with AVX2 and FMA at least, where it was measured against the matmul formulation (AVX-512
/// 2.2-2.4x, the portable loops on AVX2 1.4-1.6x on a 512-token chunk). Other CPUs (ARM) keep
/// the matmul formulation until measured there.
pub(super) fn applies(t: usize, d: usize) -> bool {
    let measured = cfg!(target_arch = "x86_64") && simd::level() >= simd::Level::Avx2;
    measured && t >= MIN_QUERIES && d > 0 && d.is_multiple_of(16) && d <= MAX_HEAD
}

/// Which kernels run the tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kernels {
    /// The best for this CPU: the AMX tiles where [`super::attention_amx::applies`], else the
    /// AVX-512 intrinsics where present, else the portable loops.
    Best,
    /// The best f32 micro-kernels, never the tiles (tests).
    #[cfg(test)]
    Vector,
    /// The portable loops whatever the CPU (tests).
    #[cfg(test)]
    Portable,
}

/// One attention call: q `(b, h, t, d)` contiguous f32, keys and values `(b, hk, l, d)` with
/// contiguous rows at the given element strides, an optional `(t, l)` contiguous additive mask
/// (null for none), and the `(b, h, t, d)` output.
pub(super) struct Problem<E> {
    pub q: *const f32,
    pub b: usize,
    pub h: usize,
    pub t: usize,
    pub d: usize,
    pub hk: usize,
    pub l: usize,
    pub k: *const E,
    /// Strides of keys and values over (batch, kv head, position), in elements.
    pub ks: [usize; 3],
    pub v: *const E,
    pub vs: [usize; 3],
    pub mask: *const f32,
    pub scale: f32,
    pub o: *mut f32,
}

/// Runs the whole call: on the AMX tiles where [`super::attention_amx::applies`], else on the
/// f32 micro-kernels of `kernels`.
///
/// # Safety
/// [`applies`] holds for `p.d`; the pointers of `p` are valid for the shapes and strides
/// it describes, and the output does not overlap the inputs.
pub(super) unsafe fn attend<E: KvElem>(p: &Problem<E>, kernels: Kernels) {
    #[cfg(target_arch = "x86_64")]
    if kernels == Kernels::Best && super::attention_amx::applies(p.d) {
        // SAFETY: the caller's promise.
        return unsafe { super::attention_amx::attend(p) };
    }
    let (d, l) = (p.d, p.l);
    let padded = l.next_multiple_of(16);
    // Keys transposed into 16-key panels of d × 16, values widened, padded rows zero.
    let group_floats = padded * d;
    let (ks, vs) = (p.ks[2], p.vs[2]);
    let prep = Prep {
        unit: 16,
        bytes: 8 * group_floats,
        pack: &|k, v, panel, dst| {
            let (kt, vf) = (
                dst.cast::<f32>(),
                dst.cast::<f32>().wrapping_add(group_floats),
            );
            // SAFETY: `schedule`'s promise (a whole kv head at `dst`, keys readable to l).
            unsafe { pack_panel(k, ks, v, vs, l, d, panel, kt, vf) }
        },
        run: &|job, kv| {
            let kv = kv.cast::<f32>();
            let (kt, v) = (kv, kv.wrapping_add(group_floats));
            // SAFETY: the tile's query and output rows lie in the problem's arrays, and only
            // this task writes its output rows.
            unsafe {
                match kernels {
                    Kernels::Best => run_tile_best(job, kt, v),
                    #[cfg(test)]
                    Kernels::Vector => run_tile_best(job, kt, v),
                    #[cfg(test)]
                    Kernels::Portable => run_tile_portable(job, kt, v),
                }
            }
        },
    };
    // Kept by the calling thread between calls: a fresh buffer of this size comes as untouched
    // pages, whose faults and zeroing cost 10% of a short prompt's attention. Every value is
    // written before it is read (`pack_panel` fills whole panels, padding included).
    let floats = batch(p, prep.bytes) * prep.bytes / 4;
    let mut buf = PACKED.with(|b| std::mem::take(&mut *b.borrow_mut()));
    if buf.len() < floats {
        buf = vec![0f32; floats];
    }
    // SAFETY: the caller's promise; the buffer holds `batch` kv heads.
    unsafe { schedule(p, &prep, buf.as_mut_ptr().cast()) };
    // Kept for the next call up to KEEP_BYTES (8k positions of two kv heads of 128): a larger
    // one is freed rather than held for the life of the thread.
    if buf.len() * 4 <= KEEP_BYTES {
        PACKED.with(|b| *b.borrow_mut() = buf);
    }
}

thread_local! {
    /// The prepared keys and values of the calling thread's last call, for reuse.
    static PACKED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How one engine prepares the keys and values of a kv head and runs a task over them.
pub(super) struct Prep<'a, E> {
    /// Keys per packing job.
    pub unit: usize,
    /// Bytes of one prepared kv head.
    pub bytes: usize,
    /// Prepares job `u` (keys `unit · u..`, up to `l`, padding past it) of the kv head whose
    /// keys and values start at the two pointers, into that head's bytes at the third.
    #[allow(clippy::type_complexity)]
    pub pack: &'a (dyn Fn(*const E, *const E, usize, *mut u8) + Sync),
    /// Runs one task against its kv head's prepared bytes.
    pub run: &'a (dyn Fn(&Tile, *const u8) + Sync),
}

/// Kv heads prepared per batch: as many as fit in [`PACK_BYTES`], at least one.
pub(super) fn batch<E>(p: &Problem<E>, bytes: usize) -> usize {
    (PACK_BYTES / bytes.max(1)).clamp(1, (p.b * p.hk).max(1))
}

/// Prepares the kv heads a batch at a time into `buf` (room for [`batch`] heads of
/// `prep.bytes`), and hands all the tasks of a batch to the pool together (per kv head, a
/// short prompt left one thread waiting on the other's last tile).
///
/// # Safety
/// As for [`attend`]; `buf` is valid for writes of that many bytes.
pub(super) unsafe fn schedule<E: KvElem>(p: &Problem<E>, prep: &Prep<E>, buf: *mut u8) {
    let (t, d, l) = (p.t, p.d, p.l);
    if p.b * p.h * t == 0 {
        return;
    }
    let ranges = visible_ranges(p.mask, t, l);
    let groups = p.b * p.hk;
    let batch = batch(p, prep.bytes);
    let rep = p.h / p.hk;
    // Positions per task: ROW_TILE rows over the group's heads, fewer where that would leave
    // fewer than 4 tasks per thread.
    let threads = pool::global().threads();
    let mut span = (ROW_TILE / rep).max(1);
    while span > 1 && t.div_ceil(span) * batch < 4 * threads {
        span = span.div_ceil(2);
    }
    let tiles = t.div_ceil(span);
    let (h, hk, scale) = (p.h, p.hk, p.scale);
    let (q, out, mask) = (SendConstPtr(p.q), SendPtr(p.o), SendConstPtr(p.mask));
    let (k, v, ks, vs) = (SendConstPtr(p.k), SendConstPtr(p.v), p.ks, p.vs);
    let ranges = &ranges;
    // Only the keys some row sees are prepared (the tasks read no others): a sliding window
    // over a long cache (Gemma 3's local layers) sees a window's worth of keys, not all of l.
    let (lo, hi) = visible_span(ranges);
    let (u0, units) = (lo / prep.unit, hi.div_ceil(prep.unit) - lo / prep.unit);
    let bufp = SendPtr(buf);
    let mut g0 = 0;
    while g0 < groups {
        let gn = batch.min(groups - g0);
        // SAFETY: each chunk writes its own units of its own kv heads; keys and values 0..l
        // of every kv head are readable (the caller's promise), and hi <= l.
        pool::parallel_chunks(gn * units, 4, &|c0, c1| {
            for c in c0..c1 {
                let (gi, unit) = (c / units, u0 + c % units);
                let (bi, g) = ((g0 + gi) / hk, (g0 + gi) % hk);
                (prep.pack)(
                    k.get().wrapping_add(bi * ks[0] + g * ks[1]),
                    v.get().wrapping_add(bi * vs[0] + g * vs[1]),
                    unit,
                    bufp.get().wrapping_add(gi * prep.bytes),
                );
            }
        });
        pool::global().parallel_for(gn * tiles, &|task| {
            // The last tiles see the most keys (causal masks): handed out first, so the
            // threads finish together.
            let (tile, gi) = (tiles - 1 - task / gn, task % gn);
            let (bi, g) = ((g0 + gi) / hk, (g0 + gi) % hk);
            let i0 = tile * span;
            let positions = span.min(t - i0);
            let at = ((bi * h + g * rep) * t + i0) * d;
            let job = Tile {
                q: q.get().wrapping_add(at),
                out: out.get().wrapping_add(at),
                positions,
                heads: rep,
                head_stride: t * d,
                i0,
                ranges: &ranges[i0..i0 + positions],
                mask: mask.get(),
                l,
                d,
                scale,
            };
            (prep.run)(&job, bufp.get().wrapping_add(gi * prep.bytes));
        });
        g0 += gn;
    }
}

/// Most bytes of prepared keys and values per batch of kv heads (at least one kv head; small
/// in this crate's unit tests, so their shapes take several batches).
const PACK_BYTES: usize = if cfg!(test) { 64 << 10 } else { 64 << 20 };

/// Largest prepared-key buffer kept by a thread between calls.
const KEEP_BYTES: usize = 16 << 20;

/// For each mask row, the keys `lo..hi` outside which every key is hidden (`0..l` without a
/// mask; `0..0` when the row sees nothing).
unsafe fn visible_ranges(mask: *const f32, t: usize, l: usize) -> Vec<(usize, usize)> {
    (0..t)
        .map(|i| {
            if mask.is_null() {
                return (0, l);
            }
            // SAFETY: the mask is (t, l) contiguous (the caller's promise).
            let row = unsafe { std::slice::from_raw_parts(mask.add(i * l), l) };
            let seen = |x: &f32| *x != f32::NEG_INFINITY;
            match row.iter().position(seen) {
                Some(lo) => (lo, l - row.iter().rev().position(seen).unwrap_or(0)),
                None => (0, 0),
            }
        })
        .collect()
}

/// The keys `lo..hi` that any of `ranges` (per-row visible ranges) covers; `(0, 0)` when no row
/// sees a key.
pub(super) fn visible_span(ranges: &[(usize, usize)]) -> (usize, usize) {
    let seen = ranges.iter().filter(|r| r.1 > r.0);
    let lo = seen.clone().map(|r| r.0).min().unwrap_or(0);
    let hi = seen.map(|r| r.1).max().unwrap_or(0);
    (lo, hi)
}

/// Key panel `panel` (keys `16 panel..16 panel + 16`) of one kv head: `kt[(panel d + c) 16 + j]`
/// is value `c` of key `16 panel + j`, and `vf[key d + c]` value `c` of that key's value row
/// (both zero past `l`).
#[allow(clippy::too_many_arguments)]
unsafe fn pack_panel<E: KvElem>(
    k: *const E,
    ks: usize,
    v: *const E,
    vs: usize,
    l: usize,
    d: usize,
    panel: usize,
    kt: *mut f32,
    vf: *mut f32,
) {
    let mut row = [0f32; MAX_HEAD];
    let row = &mut row[..d];
    let dst = kt.add(panel * d * 16);
    for j in 0..16 {
        let key = panel * 16 + j;
        let values = std::slice::from_raw_parts_mut(vf.add(key * d), d);
        if key < l {
            // Widened a row at a time (the vector conversion), then spread down the panel.
            E::widen_row(k.add(key * ks), row);
            E::widen_row(v.add(key * vs), values);
        } else {
            row.fill(0.0);
            values.fill(0.0);
        }
        for (c, &x) in row.iter().enumerate() {
            *dst.add(c * 16 + j) = x;
        }
    }
}

/// One task: `positions` consecutive positions (from `i0`) of the `heads` query heads of one kv
/// head. Row `r` of the task is position `i0 + r / heads` of head `r % heads`, so the heads of
/// one position are neighbours (they see the same keys).
pub(super) struct Tile<'a> {
    /// The first head's row at position `i0`; head `hh` is `hh · head_stride` further.
    pub q: *const f32,
    pub out: *mut f32,
    pub positions: usize,
    pub heads: usize,
    pub head_stride: usize,
    pub i0: usize,
    /// The visible key range of each position.
    pub ranges: &'a [(usize, usize)],
    pub mask: *const f32,
    pub l: usize,
    pub d: usize,
    pub scale: f32,
}

impl Tile<'_> {
    /// Where task row `r` (position `i0 + r / heads` of head `r % heads`) starts in the query
    /// and output arrays, from `q` and `out`.
    pub(super) fn row_at(&self, r: usize) -> usize {
        (r % self.heads) * self.head_stride + (r / self.heads) * self.d
    }
}

/// The task kernel for the CPU's instruction set.
///
/// # Safety
/// The tile's pointers valid as [`attend`] sets them up.
unsafe fn run_tile_best(tile: &Tile, kt: *const f32, v: *const f32) {
    #[cfg(target_arch = "x86_64")]
    if simd::level() == simd::Level::Avx512 {
        // SAFETY: the level says the CPU has AVX-512.
        return unsafe { run_tile_avx512(tile, kt, v) };
    }
    // SAFETY: the caller's promise.
    unsafe { run_tile_portable(tile, kt, v) }
}

/// The portable micro-kernels at the CPU's best vector width.
///
/// # Safety
/// As for [`run_tile_best`].
unsafe fn run_tile_portable(tile: &Tile, kt: *const f32, v: *const f32) {
    #[cfg(target_arch = "x86_64")]
    if simd::level() >= simd::Level::Avx2 {
        // SAFETY: the level says the CPU has AVX2 and FMA.
        return unsafe { run_tile_avx2(tile, kt, v) };
    }
    // SAFETY: the caller's promise.
    unsafe { run_tile::<Portable<false>>(tile, kt, v) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn run_tile_avx512(tile: &Tile, kt: *const f32, v: *const f32) {
    run_tile::<Avx512>(tile, kt, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_tile_avx2(tile: &Tile, kt: *const f32, v: *const f32) {
    run_tile::<Portable<true>>(tile, kt, v)
}

/// The micro-kernels of [`run_tile`]: [`ROWS`] query rows at a time.
trait Micro {
    /// The product of [`Outer`] for [`ROWS`] rows and `vecs` (1 to 4) vectors of columns: the scores
    /// (queries against transposed keys) and the weighted values (weights against values).
    unsafe fn outer(vecs: usize, p: Outer);
    /// Adds the mask (null for none) to the `n` scores of a row, sets the rest of its `vecs`
    /// vectors to -inf, and returns the row's maximum.
    unsafe fn mask_and_max(row: *mut f32, vecs: usize, n: usize, mask: *const f32) -> f32;
    /// Replaces the `vecs` vectors of a row by `e^(x - m)` and returns their sum.
    unsafe fn exp_and_sum(row: *mut f32, vecs: usize, m: f32) -> f32;
    /// e^x.
    unsafe fn exp(x: f32) -> f32;
}

/// `out[r][16 x + i] = (alpha[r] · out[r][16 x + i], or 0 where `alpha` is null) +
/// Σ_j a[r][j] · b[j][x][i]` for [`ROWS`] rows `r`, vectors `x` of 16 columns and `j < len`:
/// rows of `a` are `a_rs` apart, the 16 values of `b[j][x]` at `b + j b_js + x b_xs`, rows of
/// `out` `out_rs` apart.
#[derive(Clone, Copy)]
struct Outer {
    a: *const f32,
    a_rs: usize,
    b: *const f32,
    b_js: usize,
    b_xs: usize,
    len: usize,
    out: *mut f32,
    out_rs: usize,
    alpha: *const f32,
}

/// The task kernel over the micro-kernels `M` (inlined into each entry point, so it is compiled
/// for that entry point's instruction set).
///
/// # Safety
/// The CPU has what `M` needs; the tile's pointers valid as [`attend`] sets them up.
#[inline(always)]
unsafe fn run_tile<M: Micro>(tile: &Tile, kt: *const f32, v: *const f32) {
    let (d, heads) = (tile.d, tile.heads);
    let rows = tile.positions * heads;
    // Where row r's query and output are.
    let at = |r: usize| tile.row_at(r);
    // Rows rounded up to whole register tiles; the extra rows are zero and never written out.
    let padded = rows.next_multiple_of(ROWS);
    let mut q = vec![0f32; padded * d];
    for r in 0..rows {
        let src = tile.q.add(at(r));
        for c in 0..d {
            q[r * d + c] = *src.add(c) * tile.scale;
        }
    }
    let mut s = vec![0f32; padded * KEY_BLOCK];
    let mut o = vec![0f32; padded * d];
    let mut max = vec![f32::NEG_INFINITY; padded];
    let mut sum = vec![0f32; padded];
    let mut alpha = vec![1f32; padded];
    let ones = [1f32; ROWS];
    let (lo, hi) = visible_span(tile.ranges);
    let mut j0 = lo / 16 * 16;
    while j0 < hi {
        let n = KEY_BLOCK.min(hi - j0);
        let vecs = n.div_ceil(16);
        let panels = kt.add(j0 * d);
        // Scores over 64 values of the head at a time (accumulated in `s`), so the keys'
        // 64 x 64 sub-block stays in L1 while every row group reads it (a whole 256-wide
        // key block is 64 KB).
        for c0 in (0..d).step_by(D_CHUNK) {
            for x0 in (0..vecs).step_by(4) {
                for r0 in (0..padded).step_by(ROWS) {
                    M::outer(
                        (vecs - x0).min(4),
                        Outer {
                            a: q.as_ptr().add(r0 * d + c0),
                            a_rs: d,
                            b: panels.add(x0 * 16 * d + c0 * 16),
                            b_js: 16,
                            b_xs: 16 * d,
                            len: D_CHUNK.min(d - c0),
                            out: s.as_mut_ptr().add(r0 * KEY_BLOCK + 16 * x0),
                            out_rs: KEY_BLOCK,
                            alpha: if c0 == 0 {
                                std::ptr::null()
                            } else {
                                ones.as_ptr()
                            },
                        },
                    );
                }
            }
        }
        for r in 0..rows {
            let mask = if tile.mask.is_null() {
                std::ptr::null()
            } else {
                tile.mask.add((tile.i0 + r / heads) * tile.l + j0)
            };
            let row = s.as_mut_ptr().add(r * KEY_BLOCK);
            let block_max = M::mask_and_max(row, vecs, n, mask);
            let m_new = max[r].max(block_max);
            let row = std::slice::from_raw_parts_mut(row, vecs * 16);
            if m_new == f32::NEG_INFINITY {
                // Nothing visible yet: zero weights, and nothing to rescale.
                row.fill(0.0);
                alpha[r] = 1.0;
                continue;
            }
            // The earlier sums shrink only when the maximum moves (rarely, after the first
            // blocks).
            alpha[r] = if m_new > max[r] {
                M::exp(max[r] - m_new)
            } else {
                1.0
            };
            max[r] = m_new;
            sum[r] = sum[r] * alpha[r] + M::exp_and_sum(row.as_mut_ptr(), vecs, m_new);
        }
        // Column chunks outside, so each chunk of the value block stays in L1 for every row
        // group.
        for c0 in (0..d).step_by(D_CHUNK) {
            for r0 in (0..padded).step_by(ROWS) {
                M::outer(
                    (d - c0).min(D_CHUNK) / 16,
                    Outer {
                        a: s.as_ptr().add(r0 * KEY_BLOCK),
                        a_rs: KEY_BLOCK,
                        b: v.add(j0 * d + c0),
                        b_js: d,
                        b_xs: 16,
                        len: n,
                        out: o.as_mut_ptr().add(r0 * d + c0),
                        out_rs: d,
                        alpha: alpha.as_ptr().add(r0),
                    },
                );
            }
        }
        j0 += KEY_BLOCK;
    }
    for r in 0..rows {
        let dst = std::slice::from_raw_parts_mut(tile.out.add(at(r)), d);
        if sum[r] == 0.0 {
            // Every key hidden: NaN, as softmax over all -inf gives.
            dst.fill(f32::NAN);
            continue;
        }
        let inv = 1.0 / sum[r];
        for (x, &a) in dst.iter_mut().zip(&o[r * d..(r + 1) * d]) {
            *x = a * inv;
        }
    }
}

/// The AVX-512 micro-kernels.
#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Micro for Avx512 {
    #[inline(always)]
    unsafe fn outer(vecs: usize, p: Outer) {
        match vecs {
            1 => outer_n::<1>(p),
            2 => outer_n::<2>(p),
            3 => outer_n::<3>(p),
            _ => outer_n::<4>(p),
        }
    }

    #[inline(always)]
    unsafe fn mask_and_max(row: *mut f32, vecs: usize, n: usize, mask: *const f32) -> f32 {
        let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
        for x in 0..vecs {
            let valid = n.saturating_sub(16 * x).min(16);
            let lanes: __mmask16 = ((1u32 << valid) - 1) as u16;
            let mut v = _mm512_loadu_ps(row.add(16 * x));
            if !mask.is_null() {
                // A masked load: the mask row ends at the last key.
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(lanes, mask.add(16 * x)));
            }
            v = _mm512_mask_mov_ps(_mm512_set1_ps(f32::NEG_INFINITY), lanes, v);
            _mm512_storeu_ps(row.add(16 * x), v);
            m = _mm512_max_ps(m, v);
        }
        _mm512_reduce_max_ps(m)
    }

    #[inline(always)]
    unsafe fn exp_and_sum(row: *mut f32, vecs: usize, m: f32) -> f32 {
        let m = _mm512_set1_ps(m);
        let mut total = _mm512_setzero_ps();
        for x in 0..vecs {
            let e = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(row.add(16 * x)), m));
            _mm512_storeu_ps(row.add(16 * x), e);
            total = _mm512_add_ps(total, e);
        }
        _mm512_reduce_add_ps(total)
    }

    #[inline(always)]
    unsafe fn exp(x: f32) -> f32 {
        _mm512_cvtss_f32(exp_ps(_mm512_set1_ps(x)))
    }
}

/// e^x in each lane, to about 2 ulp: x = n ln 2 + r with |r| <= ln 2 / 2, e^r by its Taylor
/// series to r^7 (7 FMAs), then scaled by 2^n (`vscalefps`, which also gives the subnormals and
/// zero far below). Inputs below -104 (-inf included) give 0; NaN stays NaN.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn exp_ps(x: __m512) -> __m512 {
    let x = _mm512_max_ps(_mm512_set1_ps(-104.0), x);
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    // ln 2 in two parts: n · LN2_HI is exact for |n| < 2^11.
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.0 / 5040.0);
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn outer_n<const V: usize>(p: Outer) {
    let mut acc = [[_mm512_setzero_ps(); V]; ROWS];
    if !p.alpha.is_null() {
        for (r, ar) in acc.iter_mut().enumerate() {
            let a = _mm512_set1_ps(*p.alpha.add(r));
            for (x, acc) in ar.iter_mut().enumerate() {
                *acc = _mm512_mul_ps(_mm512_loadu_ps(p.out.add(r * p.out_rs + 16 * x)), a);
            }
        }
    }
    for j in 0..p.len {
        let mut b = [_mm512_setzero_ps(); V];
        for (x, bx) in b.iter_mut().enumerate() {
            *bx = _mm512_loadu_ps(p.b.add(j * p.b_js + x * p.b_xs));
        }
        for (r, ar) in acc.iter_mut().enumerate() {
            let ab = _mm512_set1_ps(*p.a.add(r * p.a_rs + j));
            for (acc, &bx) in ar.iter_mut().zip(&b) {
                *acc = _mm512_fmadd_ps(ab, bx, *acc);
            }
        }
    }
    for (r, ar) in acc.iter().enumerate() {
        for (x, acc) in ar.iter().enumerate() {
            _mm512_storeu_ps(p.out.add(r * p.out_rs + 16 * x), *acc);
        }
    }
}

/// The portable micro-kernels: loops over 16-value arrays that vectorise at any width (two
/// AVX2 registers or four NEON registers per array). `FMA`: the build has fused multiply-add
/// instructions (`mul_add` is one instruction there, a library call elsewhere).
struct Portable<const FMA: bool>;

/// `a · b + c`, fused where the build has FMA.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

impl<const FMA: bool> Micro for Portable<FMA> {
    #[inline(always)]
    unsafe fn outer(vecs: usize, p: Outer) {
        for x in 0..vecs {
            let mut acc = [[0f32; 16]; ROWS];
            if !p.alpha.is_null() {
                for (r, ar) in acc.iter_mut().enumerate() {
                    let a = *p.alpha.add(r);
                    let src = &*p.out.add(r * p.out_rs + 16 * x).cast::<[f32; 16]>();
                    for (acc, &o) in ar.iter_mut().zip(src) {
                        *acc = o * a;
                    }
                }
            }
            for j in 0..p.len {
                let b = &*p.b.add(j * p.b_js + x * p.b_xs).cast::<[f32; 16]>();
                for (r, ar) in acc.iter_mut().enumerate() {
                    let a = *p.a.add(r * p.a_rs + j);
                    for (acc, &bv) in ar.iter_mut().zip(b) {
                        *acc = madd::<FMA>(a, bv, *acc);
                    }
                }
            }
            for (r, ar) in acc.iter().enumerate() {
                std::ptr::copy_nonoverlapping(ar.as_ptr(), p.out.add(r * p.out_rs + 16 * x), 16);
            }
        }
    }

    #[inline(always)]
    unsafe fn mask_and_max(row: *mut f32, vecs: usize, n: usize, mask: *const f32) -> f32 {
        let row = std::slice::from_raw_parts_mut(row, vecs * 16);
        if !mask.is_null() {
            let m = std::slice::from_raw_parts(mask, n);
            for (x, &mv) in row.iter_mut().zip(m) {
                *x += mv;
            }
        }
        row[n..].fill(f32::NEG_INFINITY);
        let mut lanes = [f32::NEG_INFINITY; 16];
        for chunk in row.chunks_exact(16) {
            for (l, &x) in lanes.iter_mut().zip(chunk) {
                *l = l.max(x);
            }
        }
        lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }

    #[inline(always)]
    unsafe fn exp_and_sum(row: *mut f32, vecs: usize, m: f32) -> f32 {
        let row = std::slice::from_raw_parts_mut(row, vecs * 16);
        for x in row.iter_mut() {
            *x = simd::math::exp_f32(*x - m);
        }
        let mut lanes = [0f32; 16];
        for chunk in row.chunks_exact(16) {
            for (l, &x) in lanes.iter_mut().zip(chunk) {
                *l += x;
            }
        }
        lanes.iter().sum()
    }

    #[inline(always)]
    unsafe fn exp(x: f32) -> f32 {
        simd::math::exp_f32(x)
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
pub(super) mod lanes {
    use std::arch::x86_64::*;

    /// A vector function of the kernels, `f(x)` lane by lane.
    pub(in crate::backend::cpu) type Lanes = unsafe fn(__m512) -> __m512;

    /// `f` on 16 values (AVX-512 F present: [`check_lanes`] checked).
    pub(in crate::backend::cpu) fn apply(f: Lanes, x: &[f32; 16]) -> [f32; 16] {
        #[target_feature(enable = "avx512f")]
        unsafe fn run(f: Lanes, x: &[f32; 16]) -> [f32; 16] {
            let mut out = [0f32; 16];
            _mm512_storeu_ps(out.as_mut_ptr(), f(_mm512_loadu_ps(x.as_ptr())));
            out
        }
        assert!(super::simd::level() == super::simd::Level::Avx512);
        // SAFETY: AVX-512 F, checked just above.
        unsafe { run(f, x) }
    }

    /// Checks `f` against its f64 `reference` at 3.2 million points from `lo`, `step` apart:
    /// relative error below `bound` where the result is a normal f32 (inputs from
    /// `normal_from` on), absolute error below the smallest normal under that. False (nothing
    /// checked) without AVX-512.
    pub(in crate::backend::cpu) fn check_lanes(
        f: Lanes,
        reference: fn(f64) -> f64,
        (lo, step): (f32, f32),
        normal_from: f32,
        bound: f64,
    ) -> bool {
        if super::simd::level() != super::simd::Level::Avx512 {
            eprintln!("AVX-512 not available: test not run");
            return false;
        }
        let mut worst = 0f64;
        for i in 0..200_000 {
            let x: [f32; 16] = std::array::from_fn(|j| lo + (i * 16 + j) as f32 * step);
            for (&xi, &g) in x.iter().zip(&apply(f, &x)) {
                let want = reference(xi as f64);
                if xi < normal_from {
                    assert!(
                        (g as f64 - want).abs() < 1.2e-38,
                        "f({xi}) = {g}, want {want}"
                    );
                } else {
                    worst = worst.max((g as f64 - want).abs() / want);
                }
            }
        }
        assert!(worst < bound, "largest relative error {worst}");
        true
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::lanes::{apply, check_lanes};
    use super::*;

    /// `exp_ps` against f64 `exp` over the range the kernel feeds it (scores minus their
    /// maximum, down to the cut-off) and a little above, with -inf and NaN.
    #[test]
    fn vector_exp_is_accurate() {
        if !check_lanes(exp_ps, f64::exp, (-110.0, 3.75e-5), -87.0, 3.6e-7) {
            return;
        }
        let special = apply(
            exp_ps,
            &[
                f32::NEG_INFINITY,
                f32::NAN,
                0.0,
                88.0,
                89.0,
                1.0,
                -1.0,
                0.5,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
                0.0,
            ],
        );
        assert_eq!(special[0], 0.0);
        assert!(special[1].is_nan());
        assert_eq!(special[2], 1.0);
        assert!(special[3].is_finite() && special[4] == f32::INFINITY);
    }
}
