//! AVX2 versions of the small-M kernels (f32, f16, bf16 with f32 sums), for x86 CPUs without
//! AVX-512. Before them those CPUs ran the portable loops compiled for baseline x86-64 (SSE2,
//! and a scalar conversion per bf16 or f16 element): on an AMD Zen 3 the bf16 GEMV of
//! `bench ops` streamed its weights at half the memory's read bandwidth.

use super::super::{Elem, MatMut};
use super::{axpy_portable, column_blocks, store};
use crate::backend::cpu::simd::x86::hsum8;
use core::arch::x86_64::*;
use half::{bf16, f16};

/// AVX2, FMA and F16C present, and the backend's SIMD level not capped below AVX2
/// (`TESSERA_SIMD`).
#[inline]
pub(crate) fn usable() -> bool {
    crate::backend::cpu::simd::level() >= crate::backend::cpu::simd::Level::Avx2
        && std::arch::is_x86_feature_detected!("f16c")
}

/// Loads 8 elements as f32 lanes (only called from functions compiled with AVX2, FMA, F16C).
pub(crate) trait Load8: Elem<Acc = f32> {
    unsafe fn load8(p: *const Self) -> __m256;
}
impl Load8 for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
}
impl Load8 for f16 {
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
}
impl Load8 for bf16 {
    #[inline(always)]
    unsafe fn load8(p: *const bf16) -> __m256 {
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
}

/// Bytes ahead of each B column's read position that the dot tiles ask the cache for (as the
/// AVX-512 kernels do).
const DOT_PREFETCH: usize = 512;

/// R rows x C columns of dot products over the full k (the last `k % 8` products in scalar).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn dot_tile<T: Load8, const R: usize, const C: usize>(
    k: usize,
    a: *const T,
    lda: isize,
    b: *const T,
    ldb: isize,
    c: MatMut<T>,
    i0: usize,
    j0: usize,
    accumulate: bool,
) {
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let kv = k / 8 * 8;
    let mut kk = 0;
    while kk < kv {
        let mut bv = [_mm256_setzero_ps(); C];
        for (j, v) in bv.iter_mut().enumerate() {
            let p = b.offset(j as isize * ldb).add(kk);
            // A hint: past the column's end it fetches a neighbour's line, never faults.
            _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(DOT_PREFETCH));
            *v = T::load8(p);
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let av = T::load8(a.offset(i as isize * lda).add(kk));
            for (x, &bx) in row.iter_mut().zip(&bv) {
                *x = _mm256_fmadd_ps(av, bx, *x);
            }
        }
        kk += 8;
    }
    for (i, row) in acc.iter().enumerate() {
        let ar = a.offset(i as isize * lda);
        for (j, &x) in row.iter().enumerate() {
            let bc = b.offset(j as isize * ldb);
            let mut s = hsum8(x);
            for q in kv..k {
                s += (*ar.add(q)).to_acc() * (*bc.add(q)).to_acc();
            }
            store(c, i0 + i, j0 + j, s, accumulate);
        }
    }
}

/// Rows `i0..i0+R` of C, columns `0..nc` in groups of C (then singles).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn dot_rows<T: Load8, const R: usize, const C: usize>(
    nc: usize,
    k: usize,
    a: *const T,
    lda: isize,
    b: *const T,
    ldb: isize,
    c: MatMut<T>,
    i0: usize,
    accumulate: bool,
) {
    let a = a.offset(i0 as isize * lda);
    let mut j = 0;
    while j + C <= nc {
        let bj = b.offset(j as isize * ldb);
        dot_tile::<T, R, C>(k, a, lda, bj, ldb, c, i0, j, accumulate);
        j += C;
    }
    while j < nc {
        let bj = b.offset(j as isize * ldb);
        dot_tile::<T, R, 1>(k, a, lda, bj, ldb, c, i0, j, accumulate);
        j += 1;
    }
}

/// The dot kernel (see `SmallKernels::dot`): B in column blocks of about 64 KiB, which stay in
/// L2 while the row groups of A pass over them, so B is read from memory once even when
/// `m > 4`. Tiles of up to 4 rows: 16 ymm registers hold R x C accumulators, C B vectors and
/// one A vector.
///
/// # Safety
/// As for `SmallKernels::dot`; the CPU has AVX2, FMA and F16C ([`usable`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn dot<T: Load8>(
    m: usize,
    nc: usize,
    k: usize,
    a: *const T,
    lda: isize,
    b: *const T,
    ldb: isize,
    c: MatMut<T>,
    accumulate: bool,
) {
    let cb = (16384 / k.max(1)).clamp(12, 1 << 20) / 12 * 12;
    column_blocks(nc, cb, b, ldb, c, |w, bj, cj| {
        let mut i = 0;
        while i < m {
            let r = (m - i).min(4);
            match r {
                1 => dot_rows::<T, 1, 4>(w, k, a, lda, bj, ldb, cj, i, accumulate),
                2 => dot_rows::<T, 2, 4>(w, k, a, lda, bj, ldb, cj, i, accumulate),
                3 => dot_rows::<T, 3, 3>(w, k, a, lda, bj, ldb, cj, i, accumulate),
                _ => dot_rows::<T, 4, 2>(w, k, a, lda, bj, ldb, cj, i, accumulate),
            }
            i += r;
        }
    });
}

/// The portable axpy kernel compiled for AVX2 (its row loop vectorises: a bf16 widens with a
/// shift, an f16 still converts one element at a time).
///
/// # Safety
/// As for `SmallKernels::axpy`; the CPU has AVX2, FMA and F16C ([`usable`]).
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn axpy<T: Elem<Acc = f32>>(
    m: usize,
    nc: usize,
    k: usize,
    ap: *const f32,
    b: *const T,
    ldb: isize,
    out: *mut f32,
    ld: usize,
) {
    axpy_portable::<T>(m, nc, k, ap, b, ldb, out, ld)
}

#[cfg(test)]
mod tests {
    use super::super::super::MatMut;
    use super::super::super::tests::Rng;
    use super::super::{axpy_portable, dot_portable};
    use super::*;

    /// Deterministic values in [-1, 1) (the gemm tests' generator), rounded to `T`.
    fn values<T: Elem<Acc = f32>>(n: usize, seed: u64) -> Vec<T> {
        let mut rng = Rng(seed);
        (0..n).map(|_| T::from_acc(rng.unit() as f32)).collect()
    }

    /// Both kernels against the portable ones on shapes around the tiles (4 rows, 2-4
    /// columns, 8 values per step) and with padded rows.
    fn check<T: Load8 + Elem<Acc = f32>>() {
        for &(m, nc, k) in &[
            (1, 1, 1),
            (1, 9, 8),
            (2, 7, 13),
            (3, 10, 40),
            (4, 5, 65),
            (7, 13, 100),
        ] {
            let (lda, ldb) = (k + 3, k + 5);
            let a = values::<T>(m * lda, 1 + k as u64);
            let b = values::<T>(nc * ldb, 2 + m as u64);
            for accumulate in [false, true] {
                let mut want = values::<T>(m * nc, 3);
                let mut got = want.clone();
                let (cw, cg) = (
                    MatMut {
                        ptr: want.as_mut_ptr(),
                        rs: nc as isize,
                        cs: 1,
                        bs: 0,
                    },
                    MatMut {
                        ptr: got.as_mut_ptr(),
                        rs: nc as isize,
                        cs: 1,
                        bs: 0,
                    },
                );
                // SAFETY: the buffers hold every addressed element; the CPU has AVX2, FMA, F16C.
                unsafe {
                    let (pa, pb) = (a.as_ptr(), b.as_ptr());
                    dot_portable(m, nc, k, pa, lda as isize, pb, ldb as isize, cw, accumulate);
                    dot(m, nc, k, pa, lda as isize, pb, ldb as isize, cg, accumulate);
                }
                for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                    let (w, g) = (w.to_acc(), g.to_acc());
                    let tol = 1e-5 * k as f32 + 8e-3 * w.abs();
                    assert!(
                        (w - g).abs() <= tol,
                        "dot m={m} nc={nc} k={k} [{i}]: {g} vs {w}"
                    );
                }
            }
            // axpy: A k-major in f32, B rows of `nc` (stride ldb), out rows of `ld`.
            let ap: Vec<f32> = values::<f32>(k * m, 4);
            let ld = nc.div_ceil(16) * 16;
            let bq = values::<T>(k * ldb.max(nc), 5);
            let mut want = vec![0.5f32; m * ld];
            let mut got = want.clone();
            // SAFETY: as above.
            unsafe {
                let pb = bq.as_ptr();
                axpy_portable::<T>(
                    m,
                    nc,
                    k,
                    ap.as_ptr(),
                    pb,
                    ldb as isize,
                    want.as_mut_ptr(),
                    ld,
                );
                axpy::<T>(
                    m,
                    nc,
                    k,
                    ap.as_ptr(),
                    pb,
                    ldb as isize,
                    got.as_mut_ptr(),
                    ld,
                );
            }
            for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                assert!(
                    (w - g).abs() <= 1e-5 * k as f32,
                    "axpy m={m} nc={nc} k={k} [{i}]: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn avx2_small_kernels_match_portable() {
        if !usable() {
            eprintln!("skipped: no AVX2, FMA and F16C on this CPU");
            return;
        }
        check::<f32>();
        check::<f16>();
        check::<bf16>();
    }
}
