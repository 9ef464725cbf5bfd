//! Prompt attention on the AMX tiles: the two products of the tiled kernel
//! (`attention_tiled.rs`: scores = queries · keysᵀ, output = weights · values) on the tiles,
//! the online softmax between them on AVX-512.
//!
//! Same tasks and scheduling as the f32 kernel ([`schedule`]); what differs is the prepared
//! form of a kv head and the task kernel:
//! - keys in the tiles' pair-packed layout as the second operand of the score product: per
//!   group of 16 keys and per 32 values of the head, tiles whose row `p`, column `j` holds
//!   values `2p, 2p + 1` of key `j`;
//! - values pair-packed as the second operand of the output product: per group of 16 columns
//!   and per 32 keys, tiles whose row `p`, column `c` holds column `c` of keys `2p, 2p + 1`.
//!
//! A task runs its query rows 32 at a time (one row group: the tiles' block height). For each
//! block of [`KEY_BLOCK`] keys it computes the scores of the row group into 32 x 32 f32 blocks,
//! runs the online softmax per row (mask, running maximum, `e^(s - max)`, running sum), writes
//! the weights as the first operand of the output product, rescales the accumulated output
//! rows whose maximum moved (rarely, after the first blocks), and adds the block's weighted
//! values to the output blocks on the tiles.
//!
//! # Precision
//!
//! The tiles multiply bf16 (8 significant bits). One rounding of each operand would move a
//! score of magnitude s by about `2^-9 · s` (0.02-0.03 on the logits of the test models' dense
//! f32 pass). So every operand is split in two bf16 parts and each product runs as three
//! ([`SECTIONS`]): about 16 significant bits per operand (every f16 exactly), the scores and
//! outputs within about 2^-16 of f32's, for three times the tile work. Sums, the running
//! maximum and the running sum are f32.

use super::amx::dense::interleave_rows;
use super::amx::pack::{Line, Scratch, as_mut, transpose_pairs};
use super::amx::tiles::{BLOCK, KSTEP, Q_TILE_BYTES, Tiles};
use super::attention::KvElem;
use super::attention_tiled::{MAX_HEAD, Prep, Problem, Tile, batch, schedule, visible_span};
use super::gemm::bf16x16_to_f32;
use std::arch::x86_64::*;

/// Keys per block of the online softmax (four 32-key steps of the output product).
const KEY_BLOCK: usize = 128;

/// Whether the tiles run attention for heads of size `d`: AMX enabled (`amx::enabled`), `d`
/// whole steps of 32 values, and not turned off with `TESSERA_AMX_ATTENTION=0` (for
/// comparisons: the products keep the tiles).
pub(super) fn applies(d: usize) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let on = *ON
        .get_or_init(|| std::env::var("TESSERA_AMX_ATTENTION").map_or(true, |v| v.trim() != "0"));
    on && d.is_multiple_of(KSTEP) && super::amx::enabled()
}

/// Each operand is split in two bf16 parts, `x = hi + lo` (hi the rounded value, lo the
/// rounded remainder: 16 significant bits together, every f16 exactly), and each product runs
/// as three: `a_hi b_hi + a_hi b_lo + a_lo b_hi` (the dropped `a_lo b_lo` is 2^-16 of the
/// product and less). Both operands of a product are stored as [`SECTIONS`] tiles per step of
/// 32 values, the first operand as (hi, hi, lo) and the second as (hi, lo, hi), so one tile
/// product over three times the steps sums the three.
const SECTIONS: usize = 3;

/// Bytes of one prepared kv head: keys and values for `l` positions rounded up to 32, in
/// [`SECTIONS`] parts each.
fn head_bytes(l: usize, d: usize) -> usize {
    2 * SECTIONS * l.next_multiple_of(KSTEP) * d * 2
}

/// [`super::attention_tiled::attend`] on the tiles.
///
/// # Safety
/// As for that function, and [`applies`] holds for `p.d`.
pub(super) unsafe fn attend<E: KvElem>(p: &Problem<E>) {
    let (d, l) = (p.d, p.l);
    let lp = l.next_multiple_of(KSTEP);
    let (ks, vs) = (p.ks[2], p.vs[2]);
    let prep = Prep {
        unit: KSTEP,
        bytes: head_bytes(l, d),
        pack: &|k, v, step, dst| {
            // SAFETY: `schedule`'s promise: a whole prepared head at `dst`, keys and values
            // readable up to l; AVX-512 BF16 (`applies` implies AMX, which implies it).
            unsafe { pack_step(k, ks, v, vs, l, d, step, dst) }
        },
        run: &|job, kv| {
            // SAFETY: as above; the task's rows lie in the problem's arrays.
            unsafe { run_task(job, kv, kv.wrapping_add(SECTIONS * lp * d * 2)) }
        },
    };
    let bytes = batch(p, prep.bytes) * prep.bytes;
    PACKED.with(|buf| {
        buf.with(bytes, |b| {
            // SAFETY: the caller's promise; `b` holds `batch` prepared heads.
            unsafe { schedule(p, &prep, b.as_mut_ptr().cast()) }
        })
    });
}

thread_local! {
    /// The prepared keys and values of the calling thread's calls (line-aligned for the tile
    /// loads), kept between calls.
    static PACKED: Scratch = const { Scratch::new() };
    /// Each pool thread's task buffers (queries, scores, weights, output blocks).
    static TASK: Scratch = const { Scratch::new() };
}

/// Prepares keys and values `32 step..32 step + 32` of one kv head (zeros past `l`) into the
/// head's bytes at `dst`: keys first, then values, each split in (hi, lo, hi) tiles.
///
/// # Safety
/// Keys and values `0..l` are readable at `k` and `v` (rows `ks` and `vs` elements apart);
/// `dst` holds [`head_bytes`]; the CPU has AVX-512 BF16.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn pack_step<E: KvElem>(
    k: *const E,
    ks: usize,
    v: *const E,
    vs: usize,
    l: usize,
    d: usize,
    step: usize,
    dst: *mut u8,
) {
    let lp = l.next_multiple_of(KSTEP);
    let mut wide = [0f32; MAX_HEAD];
    let wide = &mut wide[..d];
    // The step's 32 keys and 32 values as bf16 parts (zeros past l): [part][key][d].
    // (Sized to d: fixed arrays for the largest head were 160 KB to zero per 32 keys.)
    let mut krows = [vec![0u16; KSTEP * d], vec![0u16; KSTEP * d]];
    let mut vrows = [vec![0u16; KSTEP * d], vec![0u16; KSTEP * d]];
    for j in 0..KSTEP {
        let pos = step * KSTEP + j;
        if pos < l {
            E::widen_row(k.add(pos * ks), wide);
            split_row(wide, &mut krows, j * d);
            E::widen_row(v.add(pos * vs), wide);
            split_row(wide, &mut vrows, j * d);
        }
    }
    // Keys: two groups of 16, each d / 32 steps of SECTIONS tiles (hi, lo, hi).
    let mut parts = [vec![0u8; 16 * d * 2], vec![0u8; 16 * d * 2]];
    for half in 0..2 {
        for (part, rows) in parts.iter_mut().zip(&krows) {
            transpose_pairs(&rows[half * 16 * d..][..16 * d], d, part.as_mut_ptr());
        }
        let group = dst.add((2 * step + half) * d * 32 * SECTIONS);
        for s in 0..d / KSTEP {
            for (sec, part) in [0, 1, 0].into_iter().enumerate() {
                std::ptr::copy_nonoverlapping(
                    parts[part].as_ptr().add(s * Q_TILE_BYTES),
                    group.add((s * SECTIONS + sec) * Q_TILE_BYTES),
                    Q_TILE_BYTES,
                );
            }
        }
    }
    // Values: for each group of 16 columns, this step's SECTIONS tiles (hi, lo, hi): pair-row
    // p is keys 2p, 2p + 1.
    let values = dst.add(SECTIONS * lp * d * 2);
    for cg in 0..d / 16 {
        let tiles = values.add((cg * (lp / KSTEP) + step) * SECTIONS * Q_TILE_BYTES);
        for (sec, part) in [0, 1, 0].into_iter().enumerate() {
            let rows = vrows[part].as_ptr().add(16 * cg);
            interleave_rows(rows, d as isize, KSTEP / 2, tiles.add(sec * Q_TILE_BYTES));
        }
    }
}

/// `x` split into bf16 parts `hi = bf16(x)`, `lo = bf16(x - hi)` (both rounded to nearest),
/// written at `at` of the two rows of `parts`; `x.len()` a multiple of 16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn split_row(x: &[f32], parts: &mut [Vec<u16>; 2], at: usize) {
    assert!(x.len().is_multiple_of(16) && at + x.len() <= parts[0].len().min(parts[1].len()));
    let [hi, lo] = parts;
    let (hi, lo) = (hi.as_mut_ptr().add(at), lo.as_mut_ptr().add(at));
    for c in (0..x.len()).step_by(16) {
        let v = _mm512_loadu_ps(x.as_ptr().add(c));
        let top: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
        let rest = _mm512_sub_ps(v, bf16x16_to_f32(top));
        let rest: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(rest));
        _mm256_storeu_si256(hi.add(c).cast(), top);
        _mm256_storeu_si256(lo.add(c).cast(), rest);
    }
}

/// One task on the tiles: the task's rows a group of 32 at a time against the prepared keys
/// (`keys`) and values (`values`) of its kv head.
///
/// # Safety
/// The CPU has AMX and AVX-512 BF16; the tile's pointers valid as `schedule` sets them up;
/// `keys` and `values` prepared by [`pack_step`] for the task's kv head.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")]
unsafe fn run_task(tile: &Tile, keys: *const u8, values: *const u8) {
    let (d, heads) = (tile.d, tile.heads);
    let lp = tile.l.next_multiple_of(KSTEP);
    let rows = tile.positions * heads;
    let groups = rows.div_ceil(BLOCK);
    let dsteps = d / KSTEP;
    let at = |r: usize| tile.row_at(r);
    // Per row group: the queries (dsteps x SECTIONS tiles of 32 rows x 32 values, 2 KB each),
    // the output blocks (d / 32 blocks of 32 x 32 f32); per task: the score blocks of one key
    // block and the weights (KEY_BLOCK / 32 steps of SECTIONS tiles of 32 rows x 32 keys).
    let q_bytes = groups * dsteps * SECTIONS * 2048;
    let o_bytes = groups * (d / BLOCK) * 4096;
    let s_bytes = (KEY_BLOCK / BLOCK) * 4096;
    let w_bytes = (KEY_BLOCK / KSTEP) * SECTIONS * 2048;
    TASK.with(|buf| {
        buf.with(q_bytes + o_bytes + s_bytes + w_bytes, |b| {
            let (qb, rest) = b.split_at_mut(q_bytes / 64);
            let (ob, rest) = rest.split_at_mut(o_bytes / 64);
            let (sb, wb) = rest.split_at_mut(s_bytes / 64);
            // SAFETY: as for this function.
            unsafe { task_body(tile, keys, values, lp, rows, at, qb, ob, sb, wb) }
        })
    });
}

/// [`run_task`] over its buffers.
///
/// # Safety
/// As for [`run_task`]; the buffers sized as it sizes them.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")]
unsafe fn task_body(
    tile: &Tile,
    keys: *const u8,
    values: *const u8,
    lp: usize,
    rows: usize,
    at: impl Fn(usize) -> usize,
    qb: &mut [Line],
    ob: &mut [Line],
    sb: &mut [Line],
    wb: &mut [Line],
) {
    let (d, heads) = (tile.d, tile.heads);
    let groups = rows.div_ceil(BLOCK);
    let dsteps = d / KSTEP;
    let cblocks = d / BLOCK;
    // Scores in base 2 (scale · log2 e folded into the queries, the mask multiplied by log2 e
    // as it is added), so the softmax takes 2^x, which needs no reduction by ln 2.
    let scale = tile.scale * std::f32::consts::LOG2_E;
    // Queries scaled and split: row group g, step s, section σ (hi, hi, lo), row r at
    // qb[(((g dsteps + s) SECTIONS + σ) 32 + r) 32..].
    let qv = as_mut::<u16>(qb);
    let mut row = [0f32; MAX_HEAD];
    let mut parts = [vec![0u16; d], vec![0u16; d]];
    for r in 0..groups * BLOCK {
        let (g, rr) = (r / BLOCK, r % BLOCK);
        if r < rows {
            let src = tile.q.add(at(r));
            for (c, x) in row[..d].iter_mut().enumerate() {
                *x = *src.add(c) * scale;
            }
        } else {
            row[..d].fill(0.0);
        }
        split_row(&row[..d], &mut parts, 0);
        for s in 0..dsteps {
            for (sec, part) in [0, 0, 1].into_iter().enumerate() {
                let at = (((g * dsteps + s) * SECTIONS + sec) * BLOCK + rr) * KSTEP;
                qv[at..at + KSTEP].copy_from_slice(&parts[part][s * KSTEP..][..KSTEP]);
            }
        }
    }
    let o = as_mut::<[[f32; BLOCK]; BLOCK]>(ob);
    for blk in o.iter_mut() {
        *blk = [[0.0; BLOCK]; BLOCK];
    }
    let s = as_mut::<[[f32; BLOCK]; BLOCK]>(sb);
    let w = as_mut::<u16>(wb).as_mut_ptr();
    let mut max = vec![f32::NEG_INFINITY; groups * BLOCK];
    let mut sum = vec![0f32; groups * BLOCK];
    let (lo, hi) = visible_span(tile.ranges);
    // SAFETY: the caller's promise (AMX present).
    let tiles = Tiles::configure();
    let mut j0 = lo / KSTEP * KSTEP;
    while j0 < hi {
        let n = KEY_BLOCK.min(hi - j0);
        let steps = n.div_ceil(KSTEP);
        for g in 0..groups {
            let qg = qv
                .as_ptr()
                .add(g * dsteps * SECTIONS * BLOCK * KSTEP)
                .cast::<u8>();
            let ksteps = dsteps * SECTIONS;
            for (c, sc) in s.iter_mut().enumerate().take(steps) {
                // Keys j0 + 32 c.. are groups (j0 + 32 c) / 16 and the next, d / 32 steps of
                // SECTIONS tiles each.
                let k0 = keys.add((j0 + c * KSTEP) / 16 * ksteps * Q_TILE_BYTES);
                tiles.block(
                    qg,
                    2048,
                    k0,
                    k0.add(ksteps * Q_TILE_BYTES),
                    ksteps,
                    sc,
                    false,
                );
            }
            for rr in 0..BLOCK {
                let r = g * BLOCK + rr;
                // Section σ of step c of this row's weights.
                let wrow =
                    |c: usize, sec: usize| w.add(((c * SECTIONS + sec) * BLOCK + rr) * KSTEP);
                let zero = || {
                    for c in 0..steps {
                        for sec in 0..SECTIONS {
                            std::ptr::write_bytes(wrow(c, sec), 0, KSTEP);
                        }
                    }
                };
                if r >= rows {
                    zero();
                    continue;
                }
                let mask = if tile.mask.is_null() {
                    std::ptr::null()
                } else {
                    tile.mask.add((tile.i0 + r / heads) * tile.l + j0)
                };
                let block_max = mask_and_max(s, rr, steps, n, mask);
                let m_new = max[r].max(block_max);
                if m_new == f32::NEG_INFINITY {
                    // Nothing visible yet: zero weights, and nothing to rescale.
                    zero();
                    continue;
                }
                if m_new > max[r] && max[r] > f32::NEG_INFINITY {
                    // The earlier sums shrink: the running sum and this row's output.
                    let alpha = _mm512_cvtss_f32(exp2_ps(_mm512_set1_ps(max[r] - m_new)));
                    sum[r] *= alpha;
                    let a = _mm512_set1_ps(alpha);
                    for blk in &mut o[g * cblocks..(g + 1) * cblocks] {
                        let orow = blk[rr].as_mut_ptr();
                        _mm512_storeu_ps(orow, _mm512_mul_ps(_mm512_loadu_ps(orow), a));
                        let orow = orow.add(16);
                        _mm512_storeu_ps(orow, _mm512_mul_ps(_mm512_loadu_ps(orow), a));
                    }
                }
                max[r] = m_new;
                sum[r] += exp_to_weights(s, rr, steps, m_new, &wrow);
            }
            // The block's weighted values into the output blocks of this row group.
            for (cb, ob) in o[g * cblocks..(g + 1) * cblocks].iter_mut().enumerate() {
                let col = |cg: usize| (cg * (lp / KSTEP) + j0 / KSTEP) * SECTIONS * Q_TILE_BYTES;
                let (v0, v1) = (values.add(col(2 * cb)), values.add(col(2 * cb + 1)));
                tiles.block(
                    w.cast_const().cast(),
                    2048,
                    v0,
                    v1,
                    steps * SECTIONS,
                    ob,
                    true,
                );
            }
        }
        j0 += KEY_BLOCK;
    }
    drop(tiles);
    for (r, &total) in sum.iter().enumerate().take(rows) {
        let (g, rr) = (r / BLOCK, r % BLOCK);
        let dst = std::slice::from_raw_parts_mut(tile.out.add(at(r)), d);
        if total == 0.0 {
            // Every key hidden: NaN, as softmax over all -inf gives.
            dst.fill(f32::NAN);
            continue;
        }
        let inv = 1.0 / total;
        for (cb, blk) in o[g * cblocks..(g + 1) * cblocks].iter().enumerate() {
            for (x, &a) in dst[cb * BLOCK..][..BLOCK].iter_mut().zip(&blk[rr]) {
                *x = a * inv;
            }
        }
    }
}

/// Adds the mask (null for none) to the `n` scores of row `rr` (32 per score block, `steps`
/// blocks), sets the rest of its blocks' lanes to -inf, and returns the row's maximum.
#[inline(always)]
unsafe fn mask_and_max(
    s: &mut [[[f32; BLOCK]; BLOCK]],
    rr: usize,
    steps: usize,
    n: usize,
    mask: *const f32,
) -> f32 {
    let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
    for (c, blk) in s.iter_mut().enumerate().take(steps) {
        for x in 0..2 {
            let j = c * KSTEP + 16 * x;
            let valid = n.saturating_sub(j).min(16);
            let lanes: __mmask16 = ((1u32 << valid) - 1) as u16;
            let at = blk[rr].as_mut_ptr().add(16 * x);
            let mut v = _mm512_loadu_ps(at);
            if !mask.is_null() {
                // A masked load: the mask row ends at the last key.
                let mv = _mm512_maskz_loadu_ps(lanes, mask.add(j));
                v = _mm512_fmadd_ps(mv, _mm512_set1_ps(std::f32::consts::LOG2_E), v);
            }
            v = _mm512_mask_mov_ps(_mm512_set1_ps(f32::NEG_INFINITY), lanes, v);
            _mm512_storeu_ps(at, v);
            m = _mm512_max_ps(m, v);
        }
    }
    _mm512_reduce_max_ps(m)
}

/// `e^(s - m)` for the scores of row `rr`, written as bf16 weights split in (hi, hi, lo)
/// sections (`wrow(step, section)`, 32 values each); returns the sum of the weights.
#[inline(always)]
unsafe fn exp_to_weights(
    s: &[[[f32; BLOCK]; BLOCK]],
    rr: usize,
    steps: usize,
    m: f32,
    wrow: &impl Fn(usize, usize) -> *mut u16,
) -> f32 {
    let m = _mm512_set1_ps(m);
    let mut total = _mm512_setzero_ps();
    for (c, blk) in s.iter().enumerate().take(steps) {
        let src = blk[rr].as_ptr();
        let lo = exp2_ps(_mm512_sub_ps(_mm512_loadu_ps(src), m));
        let hi = exp2_ps(_mm512_sub_ps(_mm512_loadu_ps(src.add(16)), m));
        total = _mm512_add_ps(total, _mm512_add_ps(lo, hi));
        let top: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        let rest_lo = _mm512_sub_ps(lo, bf16x16_to_f32(_mm512_castsi512_si256(top)));
        let rest_hi = _mm512_sub_ps(hi, bf16x16_to_f32(_mm512_extracti64x4_epi64::<1>(top)));
        let rest: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(rest_hi, rest_lo));
        _mm512_storeu_si512(wrow(c, 0).cast(), top);
        _mm512_storeu_si512(wrow(c, 1).cast(), top);
        _mm512_storeu_si512(wrow(c, 2).cast(), rest);
    }
    _mm512_reduce_add_ps(total)
}

/// 2^x in each lane, to about 2 ulp: x = n + r with |r| <= 1/2, 2^r by a degree-6 minimax
/// polynomial (relative error 1.9e-9 before rounding; fitted for this kernel), then scaled by
/// 2^n (`vscalefps`, which also gives the subnormals and zero far below). Inputs below -150
/// (-inf included) give 0; NaN stays NaN.
#[inline(always)]
unsafe fn exp2_ps(x: __m512) -> __m512 {
    let x = _mm512_max_ps(_mm512_set1_ps(-150.0), x);
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
    let r = _mm512_sub_ps(x, n);
    let mut p = _mm512_set1_ps(1.534_580_1e-4);
    for c in [
        1.339_993_2e-3,
        9.618_489e-3,
        5.550_328_6e-2,
        0.240_226_46,
        // The fit's linear coefficient rounds to ln 2 in f32.
        std::f32::consts::LN_2,
        1.0,
    ] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

#[cfg(test)]
mod tests {
    use super::super::attention_tiled::lanes::{apply, check_lanes};
    use super::*;

    /// `exp2_ps` against f64 `exp2` over the range the kernel feeds it (base-2 scores minus
    /// their maximum, down to the cut-off) and a little above, with -inf and NaN.
    #[test]
    fn vector_exp2_is_accurate() {
        if !check_lanes(exp2_ps, f64::exp2, (-155.0, 4.9e-5), -126.0, 2.4e-7) {
            return;
        }
        let mut special = [0f32; 16];
        special[..6].copy_from_slice(&[f32::NEG_INFINITY, f32::NAN, 0.0, 127.0, 128.0, -1.0]);
        let got = apply(exp2_ps, &special);
        assert_eq!(got[0], 0.0);
        assert!(got[1].is_nan());
        assert_eq!(got[2], 1.0);
        assert!(got[3].is_finite() && got[4] == f32::INFINITY);
        assert_eq!(got[5], 0.5);
    }
}
