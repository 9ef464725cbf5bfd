//! The AVX2 attention task kernel: the AVX-512 kernel's method (`attention_x86.rs`) on 8-lane
//! vectors, for the CPUs without AVX-512 (Intel's client CPUs, AMD before Zen 4). The portable
//! kernel it replaces there took a horizontal sum per key and query row, and ran 4x slower than
//! the AVX-512 kernel on a long cache.
//!
//! Scores: with 4 or more query rows per kv head, each block of 8 keys is widened and transposed
//! once and each row's 8 scores are a vector of outer-product FMAs against it (as the AVX-512
//! kernel does); with fewer, for each block of 8 keys and each query row, eight accumulators
//! collect `q · kⱼ` an 8-lane chunk at a time, and one add tree (`sum8`: six `vhaddps`, two lane
//! permutes, one add) turns them into a vector of the 8 scores. Row maxima are taken after the
//! score pass. Values: up to 4 query rows × 16 columns of
//! accumulators stay in registers while the value rows stream by. Keys and values are f32 or
//! f16 (widened with F16C as they are loaded). Both passes prefetch [`AHEAD`] blocks ahead, as
//! the AVX-512 kernel does.

use super::attention::{KvElem, Part, TRANSPOSED_MAX_D, scores_transposed};
use crate::backend::cpu::simd::x86::{hmax8, hsum8, transpose8x8};
use crate::backend::cpu::{reduce, simd};
use crate::primitive::ReduceOp;
use std::arch::x86_64::*;

/// Blocks of 8 keys (or values) ahead that the kernel prefetches: 32 positions, as the AVX-512
/// kernel's two blocks of 16.
const AHEAD: usize = 4;

/// Lane `i` of the result is the sum of the lanes of `a[i]`.
#[inline(always)]
unsafe fn sum8(a: &[__m256; 8]) -> __m256 {
    // Per 128-bit half: the pair sums of two inputs, then the half sums of four.
    let h01 = _mm256_hadd_ps(a[0], a[1]);
    let h23 = _mm256_hadd_ps(a[2], a[3]);
    let h45 = _mm256_hadd_ps(a[4], a[5]);
    let h67 = _mm256_hadd_ps(a[6], a[7]);
    let h0123 = _mm256_hadd_ps(h01, h23);
    let h4567 = _mm256_hadd_ps(h45, h67);
    // Low halves hold the sums of lanes 0..4 of each input, high halves of lanes 4..8.
    let lo = _mm256_permute2f128_ps::<0x20>(h0123, h4567);
    let hi = _mm256_permute2f128_ps::<0x31>(h0123, h4567);
    _mm256_add_ps(lo, hi)
}

/// Asks for the key block [`AHEAD`] blocks past `j0`.
#[inline(always)]
unsafe fn prefetch_keys<E: KvElem>(part: &Part<E>, j0: usize) {
    let row_bytes = part.d * std::mem::size_of::<E>();
    for j in 0..8 {
        let at = part.k.wrapping_add((j0 + AHEAD * 8 + j) * part.ks) as *const u8;
        simd::prefetch_lines(at, row_bytes);
    }
}

/// The scores of every row against keys `j0 .. j0 + 8` into `p`, through the block widened and
/// transposed once into `kt` (`d` vectors of 8 keys); rows in groups of up to 4, each with two
/// accumulator chains (16 registers in all).
#[inline(always)]
unsafe fn score_block_t<E: KvElem>(part: &Part<E>, j0: usize, kt: &mut [__m256], p: *mut f32) {
    let d = part.d;
    prefetch_keys(part, j0);
    let kb = part.k.add(j0 * part.ks);
    for c0 in (0..d).step_by(8) {
        let mut r = [_mm256_setzero_ps(); 8];
        for (j, rj) in r.iter_mut().enumerate() {
            *rj = E::load8(kb.add(j * part.ks + c0));
        }
        kt[c0..c0 + 8].copy_from_slice(&transpose8x8(r));
    }
    let kt = &kt[..d];
    let mut r0 = 0;
    while r0 < part.rows {
        let rt = (part.rows - r0).min(4);
        match rt {
            1 => scores_t::<E, 1>(part, r0, kt, j0, p),
            2 => scores_t::<E, 2>(part, r0, kt, j0, p),
            3 => scores_t::<E, 3>(part, r0, kt, j0, p),
            _ => scores_t::<E, 4>(part, r0, kt, j0, p),
        }
        r0 += rt;
    }
}

/// `R` rows' scores against the transposed block `kt`, even and odd head values in two chains.
#[inline(always)]
unsafe fn scores_t<E: KvElem, const R: usize>(
    part: &Part<E>,
    r0: usize,
    kt: &[__m256],
    j0: usize,
    p: *mut f32,
) {
    let d = part.d;
    let mut acc = [[_mm256_setzero_ps(); R]; 2];
    for c in (0..d).step_by(2) {
        for (h, acc_h) in acc.iter_mut().enumerate() {
            let kc = kt[c + h];
            for (r, a) in acc_h.iter_mut().enumerate() {
                let qv = _mm256_set1_ps(*part.q.add((r0 + r) * d + c + h));
                *a = _mm256_fmadd_ps(qv, kc, *a);
            }
        }
    }
    let [even, odd] = acc;
    for (r, (e, o)) in even.into_iter().zip(odd).enumerate() {
        store_scores(part, r0 + r, j0, _mm256_add_ps(e, o), p);
    }
}

/// Row `row`'s 8 raw scores against keys `j0 ..`: scaled, masked, stored into `p`.
#[inline(always)]
unsafe fn store_scores<E: KvElem>(part: &Part<E>, row: usize, j0: usize, raw: __m256, p: *mut f32) {
    let mut s = _mm256_mul_ps(raw, _mm256_set1_ps(part.scale));
    if !part.mask.is_null() {
        let mrow = part.mask.add((row % part.t) * part.ms + j0);
        s = _mm256_add_ps(s, _mm256_loadu_ps(mrow));
    }
    _mm256_storeu_ps(p.add(row * part.n + j0), s);
}

/// The scores of every row against keys `j0 .. j0 + 8` into `p`, a row at a time.
#[inline(always)]
unsafe fn score_block<E: KvElem>(part: &Part<E>, j0: usize, p: *mut f32) {
    let d = part.d;
    prefetch_keys(part, j0);
    let kb = part.k.add(j0 * part.ks);
    for r in 0..part.rows {
        let q = part.q.add(r * d);
        let mut a = [_mm256_setzero_ps(); 8];
        for c in (0..d).step_by(8) {
            let qc = _mm256_loadu_ps(q.add(c));
            let mut kp = kb.add(c);
            for aj in a.iter_mut() {
                *aj = _mm256_fmadd_ps(E::load8(kp), qc, *aj);
                kp = kp.add(part.ks);
            }
        }
        store_scores(part, r, j0, sum8(&a), p);
    }
}

/// The score of every row against key `j` alone (the keys after the last block of 8).
#[inline(always)]
unsafe fn score_one<E: KvElem>(part: &Part<E>, j: usize, p: *mut f32) {
    let (d, n) = (part.d, part.n);
    let kr = part.k.add(j * part.ks);
    for r in 0..part.rows {
        let q = part.q.add(r * d);
        let mut a = _mm256_setzero_ps();
        for c in (0..d).step_by(8) {
            a = _mm256_fmadd_ps(E::load8(kr.add(c)), _mm256_loadu_ps(q.add(c)), a);
        }
        let mut s = hsum8(a) * part.scale;
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

/// `out[r][c] = Σⱼ p[r][j] v[j][c]` for `R` rows and `8 W` columns, accumulators in registers.
#[inline(always)]
unsafe fn weigh<E: KvElem, const R: usize, const W: usize>(t: Tile<E>) {
    let mut acc = [[_mm256_setzero_ps(); W]; R];
    for j in 0..t.n {
        let vr = t.v.add(j * t.vs);
        simd::prefetch_lines(
            t.v.wrapping_add((j + AHEAD * 8) * t.vs) as *const u8,
            8 * W * std::mem::size_of::<E>(),
        );
        let mut x = [_mm256_setzero_ps(); W];
        for (c, xc) in x.iter_mut().enumerate() {
            *xc = E::load8(vr.add(8 * c));
        }
        for (r, ar) in acc.iter_mut().enumerate() {
            let pw = _mm256_set1_ps(*t.p.add(r * t.n + j));
            for (a, &xc) in ar.iter_mut().zip(&x) {
                *a = _mm256_fmadd_ps(pw, xc, *a);
            }
        }
    }
    for (r, ar) in acc.iter().enumerate() {
        for (c, a) in ar.iter().enumerate() {
            _mm256_storeu_ps(t.out.add(r * t.os + 8 * c), *a);
        }
    }
}

/// Runs the `weigh` instance for `rows` (1..=4) rows and `cols` (1..=2) column vectors (16
/// registers: 8 accumulators, 2 value vectors and a broadcast).
#[inline(always)]
unsafe fn weigh_tile<E: KvElem>(rows: usize, cols: usize, t: Tile<E>) {
    match (rows, cols) {
        (1, 1) => weigh::<E, 1, 1>(t),
        (1, _) => weigh::<E, 1, 2>(t),
        (2, 1) => weigh::<E, 2, 1>(t),
        (2, _) => weigh::<E, 2, 2>(t),
        (3, 1) => weigh::<E, 3, 1>(t),
        (3, _) => weigh::<E, 3, 2>(t),
        (_, 1) => weigh::<E, 4, 1>(t),
        _ => weigh::<E, 4, 2>(t),
    }
}

/// The largest of `x` (minus infinity when empty), ignoring NaN as `f32::max` does.
#[inline(always)]
unsafe fn row_max(x: &[f32]) -> f32 {
    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        // `max(v, m)` keeps m where v is NaN (the second operand wins unordered compares).
        m = _mm256_max_ps(_mm256_loadu_ps(c.as_ptr()), m);
    }
    let mut best = hmax8(m);
    for &v in chunks.remainder() {
        best = best.max(v);
    }
    best
}

/// The task kernel (same contract as the portable `attend_rows`). `part.d` must be a multiple
/// of 8.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `part` must describe readable memory; `out`
/// (`rows × (d + 2)`) and `p` (`rows × n`) must be writable.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn attend<E: KvElem>(part: &Part<E>, out: *mut f32, p: *mut f32) {
    debug_assert!(part.d.is_multiple_of(8));
    let (d, n, rows) = (part.d, part.n, part.rows);
    let w = d + 2;
    let full = n / 8 * 8;
    if scores_transposed(rows, d) {
        let mut kt = [_mm256_setzero_ps(); TRANSPOSED_MAX_D];
        for j0 in (0..full).step_by(8) {
            score_block_t(part, j0, &mut kt, p);
        }
    } else {
        for j0 in (0..full).step_by(8) {
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
    let cols = d / 8;
    for r0 in (0..rows).step_by(4) {
        let rt = (rows - r0).min(4);
        for c0 in (0..cols).step_by(2) {
            let ct = (cols - c0).min(2);
            let tile = Tile {
                p: p.add(r0 * n),
                n,
                v: part.v.add(8 * c0),
                vs: part.vs,
                out: out.add(r0 * w + 2 + 8 * c0),
                os: w,
            };
            weigh_tile(rt, ct, tile);
        }
    }
}
