//! The AVX-512 attention task kernel (see `attention.rs` for the split and the partial results).
//!
//! Scores, with 4 or more query rows per kv head (grouped heads in decode, or a few positions):
//! each block of 16 keys is widened and transposed once (`d` vectors of 16 keys), and each
//! row's 16 scores are one vector of outer-product FMAs against it (`scores_transposed` says
//! when). Fewer rows: for each block of 16 keys and each row, sixteen accumulators
//! collect `q · kⱼ` a 16-lane chunk at a time, and one transpose-add tree (`sum16`) turns them
//! into a vector of the 16 scores (about 3 shuffles and adds per key, against the ~15-step
//! horizontal sum a dot product per key needs). Either way the row maxima are taken over the
//! scores after the pass. The transposed form measured (one thread,
//! `sdpa_decode_14x2x64_f16_l4096`, 7 rows per kv head) 185-195 µs against 230-236 for the
//! per-row one; the transpose costs about what four rows' widening and lane sums do.
//!
//! Values: up to 4 query rows × 64 columns of accumulators stay in registers while the keys
//! stream by; each value row is loaded once for all of them.
//!
//! Keys and values are f32, or f16 (a half-size KV cache) widened as they are loaded
//! (`vcvtph2ps`), generic over [`KvElem`].
//!
//! Both passes prefetch [`AHEAD`] blocks of 16 keys ahead: in decode the cache comes from
//! memory, and the hardware prefetchers alone left the arithmetic waiting on it (0.5B-shape
//! Q4_0 at 4000 cached positions, `Sdpa` in `TESSERA_PROFILE=1 tessera bench llm --depth 4000`:
//! 239-282 µs per call without, 176-192 with; 2 or 4 blocks alike). Tried and not kept: widening
//! a block of f16 keys once for all the query rows that share it while keeping the per-row dot
//! products and lane sums (the transposed form above is what paid), and value tiles of up to 8
//! rows by 2 vectors (one widening per value instead of one per 4 rows): no change cache-hot
//! (`sdpa_decode_14x2x64_f16_l4096` 124-134 µs either way).

use super::attention::{KvElem, Part, TRANSPOSED_MAX_D, scores_transposed};
use crate::backend::cpu::{reduce, simd};
use crate::primitive::ReduceOp;
use std::arch::x86_64::*;

/// Blocks of 16 keys (or values) ahead that the kernel prefetches.
const AHEAD: usize = 2;

/// Lane `i` of the result is the sum of the lanes of `a[i]`.
#[inline(always)]
unsafe fn sum16(a: &[__m512; 16]) -> __m512 {
    // Pairs: per 128-bit block, [x0+x2, y0+y2, x1+x3, y1+y3].
    let pair =
        |x: __m512, y: __m512| _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
    // Quads: per 128-bit block k, the four inputs' sums over block k.
    let quad = |x: __m512, y: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(x, y),
            _mm512_shuffle_ps::<0xEE>(x, y),
        )
    };
    // Blocks: add blocks 0+1 and 2+3 of each input.
    let blocks = |x: __m512, y: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(x, y),
            _mm512_shuffle_f32x4::<0xDD>(x, y),
        )
    };
    let c0 = quad(pair(a[0], a[1]), pair(a[2], a[3]));
    let c1 = quad(pair(a[4], a[5]), pair(a[6], a[7]));
    let c2 = quad(pair(a[8], a[9]), pair(a[10], a[11]));
    let c3 = quad(pair(a[12], a[13]), pair(a[14], a[15]));
    blocks(blocks(c0, c1), blocks(c2, c3))
}

/// Asks for the key block `AHEAD` blocks past `j0`: the keys come from memory in decode (the
/// layer's weights streamed through the caches since it last ran).
#[inline(always)]
unsafe fn prefetch_keys<E: KvElem>(part: &Part<E>, j0: usize) {
    let row_bytes = part.d * std::mem::size_of::<E>();
    for j in 0..16 {
        let at = part.k.wrapping_add((j0 + AHEAD * 16 + j) * part.ks) as *const u8;
        simd::prefetch_lines(at, row_bytes);
    }
}

/// The scores of every row against keys `j0 .. j0 + 16` into `p`, through the block
/// transposed once for all the rows (`d` vectors of 16 keys, widened as they are read): each
/// row's 16 scores are then one vector of outer-product FMAs, with no lane sums per key.
/// For the grouped heads of decode (several query rows per kv head) this replaces each row's
/// widening of every key and its 16-way lane reduction.
#[inline(always)]
unsafe fn score_block_t<E: KvElem>(part: &Part<E>, j0: usize, kt: &mut [__m512], p: *mut f32) {
    let d = part.d;
    prefetch_keys(part, j0);
    let kb = part.k.add(j0 * part.ks);
    for c0 in (0..d).step_by(16) {
        let mut r = [_mm512_setzero_ps(); 16];
        for (j, rj) in r.iter_mut().enumerate() {
            *rj = E::load16(kb.add(j * part.ks + c0));
        }
        let t = simd::x86::transpose16x16(r);
        kt[c0..c0 + 16].copy_from_slice(&t);
    }
    let mut r0 = 0;
    while r0 < part.rows {
        let rt = (part.rows - r0).min(8);
        scores_t_rows(part, r0, rt, &kt[..d], j0, p);
        r0 += rt;
    }
}

/// Runs [`scores_t`] for `rows` (1..=8) rows from `r0`.
#[inline(always)]
unsafe fn scores_t_rows<E: KvElem>(
    part: &Part<E>,
    r0: usize,
    rows: usize,
    kt: &[__m512],
    j0: usize,
    p: *mut f32,
) {
    macro_rules! pick {
        ($($r:literal)*) => {
            match rows {
                $($r => scores_t::<E, $r>(part, r0, kt, j0, p),)*
                _ => unreachable!("scores_t takes 1 to 8 rows"),
            }
        };
    }
    pick!(1 2 3 4 5 6 7 8)
}

/// `R` rows' scores against the transposed block `kt` (one vector of 16 keys per head value):
/// two chains of accumulators per row (even and odd head values) keep the FMAs independent.
#[inline(always)]
unsafe fn scores_t<E: KvElem, const R: usize>(
    part: &Part<E>,
    r0: usize,
    kt: &[__m512],
    j0: usize,
    p: *mut f32,
) {
    let d = part.d;
    let mut acc = [[_mm512_setzero_ps(); R]; 2];
    for c in (0..d).step_by(2) {
        for (h, acc_h) in acc.iter_mut().enumerate() {
            let kc = kt[c + h];
            for (r, a) in acc_h.iter_mut().enumerate() {
                let qv = _mm512_set1_ps(*part.q.add((r0 + r) * d + c + h));
                *a = _mm512_fmadd_ps(qv, kc, *a);
            }
        }
    }
    let [even, odd] = acc;
    for (r, (e, o)) in even.into_iter().zip(odd).enumerate() {
        store_scores(part, r0 + r, j0, _mm512_add_ps(e, o), p);
    }
}

/// Row `row`'s 16 raw scores against keys `j0 ..`: scaled, masked, stored into `p`.
#[inline(always)]
unsafe fn store_scores<E: KvElem>(part: &Part<E>, row: usize, j0: usize, raw: __m512, p: *mut f32) {
    let mut s = _mm512_mul_ps(raw, _mm512_set1_ps(part.scale));
    if !part.mask.is_null() {
        let mrow = part.mask.add((row % part.t) * part.ms + j0);
        s = _mm512_add_ps(s, _mm512_loadu_ps(mrow));
    }
    _mm512_storeu_ps(p.add(row * part.n + j0), s);
}

/// The scores of every row against keys `j0 .. j0 + 16` into `p`, a row at a time.
#[inline(always)]
unsafe fn score_block<E: KvElem>(part: &Part<E>, j0: usize, p: *mut f32) {
    let d = part.d;
    prefetch_keys(part, j0);
    let kb = part.k.add(j0 * part.ks);
    for r in 0..part.rows {
        let q = part.q.add(r * d);
        let mut a = [_mm512_setzero_ps(); 16];
        for c in (0..d).step_by(16) {
            let qc = _mm512_loadu_ps(q.add(c));
            let mut kp = kb.add(c);
            for aj in a.iter_mut() {
                *aj = _mm512_fmadd_ps(E::load16(kp), qc, *aj);
                kp = kp.add(part.ks);
            }
        }
        store_scores(part, r, j0, sum16(&a), p);
    }
}

/// The score of every row against key `j` alone (the keys after the last block of 16).
#[inline(always)]
unsafe fn score_one<E: KvElem>(part: &Part<E>, j: usize, p: *mut f32) {
    let (d, n) = (part.d, part.n);
    let kr = part.k.add(j * part.ks);
    for r in 0..part.rows {
        let q = part.q.add(r * d);
        let mut a = _mm512_setzero_ps();
        for c in (0..d).step_by(16) {
            a = _mm512_fmadd_ps(E::load16(kr.add(c)), _mm512_loadu_ps(q.add(c)), a);
        }
        let mut s = _mm512_reduce_add_ps(a) * part.scale;
        if !part.mask.is_null() {
            s += *part.mask.add((r % part.t) * part.ms + j);
        }
        *p.add(r * n + j) = s;
    }
}

/// Where one `weigh` tile reads and writes: weights `p` (rows `n` apart), value rows `vs` apart,
/// output rows `os` apart.
#[derive(Clone, Copy)]
struct Tile<E> {
    p: *const f32,
    n: usize,
    v: *const E,
    vs: usize,
    out: *mut f32,
    os: usize,
}

/// `out[r][c] = Σⱼ p[r][j] v[j][c]` for `R` rows and `16 W` columns, accumulators in registers.
#[inline(always)]
unsafe fn weigh<E: KvElem, const R: usize, const W: usize>(t: Tile<E>) {
    let mut acc = [[_mm512_setzero_ps(); W]; R];
    for j in 0..t.n {
        let vr = t.v.add(j * t.vs);
        // As for the keys (see `score_block`): the value row AHEAD blocks of keys on.
        simd::prefetch_lines(
            t.v.wrapping_add((j + AHEAD * 16) * t.vs) as *const u8,
            16 * W * std::mem::size_of::<E>(),
        );
        let mut x = [_mm512_setzero_ps(); W];
        for (c, xc) in x.iter_mut().enumerate() {
            *xc = E::load16(vr.add(16 * c));
        }
        for (r, ar) in acc.iter_mut().enumerate() {
            let pw = _mm512_set1_ps(*t.p.add(r * t.n + j));
            for (a, &xc) in ar.iter_mut().zip(&x) {
                *a = _mm512_fmadd_ps(pw, xc, *a);
            }
        }
    }
    for (r, ar) in acc.iter().enumerate() {
        for (c, a) in ar.iter().enumerate() {
            _mm512_storeu_ps(t.out.add(r * t.os + 16 * c), *a);
        }
    }
}

/// Runs the `weigh` instance for `rows` (1..=4) rows and `cols` (1..=4) column vectors.
#[inline(always)]
unsafe fn weigh_tile<E: KvElem>(rows: usize, cols: usize, t: Tile<E>) {
    macro_rules! pick {
        ($($r:literal, $c:literal);*) => {
            match (rows, cols) {
                $(($r, $c) => weigh::<E, $r, $c>(t),)*
                _ => unreachable!("weigh_tile takes 1 to 4 rows and column vectors"),
            }
        };
    }
    pick!(1, 1; 1, 2; 1, 3; 1, 4; 2, 1; 2, 2; 2, 3; 2, 4;
          3, 1; 3, 2; 3, 3; 3, 4; 4, 1; 4, 2; 4, 3; 4, 4)
}

/// The largest of `x` (minus infinity when empty), ignoring NaN as `f32::max` does.
#[inline(always)]
unsafe fn row_max(x: &[f32]) -> f32 {
    let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        // `max(v, m)` keeps m where v is NaN (the second operand wins unordered compares).
        m = _mm512_max_ps(_mm512_loadu_ps(c.as_ptr()), m);
    }
    let tail = chunks.remainder();
    let mut best = _mm512_reduce_max_ps(m);
    for &v in tail {
        best = best.max(v);
    }
    best
}

/// The task kernel (same contract as the portable `attend_rows`). `part.d` must be a multiple
/// of 16.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/DQ/VL; `part` must describe readable memory; `out`
/// (`rows × (d + 2)`) and `p` (`rows × n`) must be writable.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn attend<E: KvElem>(part: &Part<E>, out: *mut f32, p: *mut f32) {
    debug_assert!(part.d.is_multiple_of(16));
    let (d, n, rows) = (part.d, part.n, part.rows);
    let w = d + 2;
    let full = n / 16 * 16;
    if scores_transposed(rows, d) {
        let mut kt = [_mm512_setzero_ps(); TRANSPOSED_MAX_D];
        for j0 in (0..full).step_by(16) {
            score_block_t(part, j0, &mut kt, p);
        }
    } else {
        for j0 in (0..full).step_by(16) {
            score_block(part, j0, p);
        }
    }
    for j in full..n {
        score_one(part, j, p);
    }
    for r in 0..rows {
        let pr = std::slice::from_raw_parts_mut(p.add(r * n), n);
        let m = row_max(pr);
        *out.add(r * w) = m;
        if m == f32::NEG_INFINITY {
            // Every key hidden: zero weights, so the row's part adds nothing at the merge.
            pr.fill(0.0);
            *out.add(r * w + 1) = 0.0;
            continue;
        }
        for x in pr.iter_mut() {
            *x = simd::math::exp_f32(*x - m);
        }
        *out.add(r * w + 1) = reduce::f32_row(ReduceOp::Sum, pr.as_ptr(), n);
    }
    let cols = d / 16;
    for r0 in (0..rows).step_by(4) {
        let rt = (rows - r0).min(4);
        for c0 in (0..cols).step_by(4) {
            let ct = (cols - c0).min(4);
            let tile = Tile {
                p: p.add(r0 * n),
                n,
                v: part.v.add(16 * c0),
                vs: part.vs,
                out: out.add(r0 * w + 2 + 16 * c0),
                os: w,
            };
            weigh_tile(rt, ct, tile);
        }
    }
}
