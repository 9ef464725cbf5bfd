//! The AVX2 f32 kind of the packed GEMM, for x86 CPUs without AVX-512 (AMD Zen 1-3, Intel
//! client cores): a 6 x 16 tile of C in 12 ymm accumulators; per k the kernel loads two 8-word
//! vectors of B and broadcasts 6 words of A, which with the two B vectors fills the 16 ymm
//! registers but one. (AVX2 has no broadcast memory operand for FMAs, so each A word takes a
//! `vbroadcastss` into a register.)

use super::{Kind, Tile};
use crate::backend::cpu::gemm::MatRef;
use crate::backend::cpu::simd::x86::transpose8x8;
use core::arch::x86_64::*;

const MR: usize = 6;
const NV: usize = 2;
const NR: usize = 8 * NV;
/// See [`Kind::KP_MAX`]. Measured on Zen 3 (512 KB L2) with 2 MB B blocks: 2048 (the old value,
/// with 8 MB B blocks) -> 512 took 2048- and 4096-square products from 55-57 to 67-69 GFLOP/s
/// on one thread, in alternated builds; then paired runs inside one process (each product
/// timed with the other setting right before or after it, a driver-level switch) put 1024
/// ahead of 512 with two threads: median ratios 1.06 / 1.05 / 1.04 at 1024 / 2048 / 4096 in
/// one set, 1.06 / 1.04 / 1.05 in the next, 1.02 single-threaded at 2048 (768: 1.01-1.04;
/// 1024 with 4 MB B blocks: 0.98-1.02). A 1024-square product is then not k-blocked at all.
const KP_MAX: usize = 1024;

/// f32 on AVX2 and FMA.
pub(crate) struct F32Avx2Kind;

impl Kind for F32Avx2Kind {
    type T = f32;
    const KW: usize = 1;
    const MR: usize = MR;
    const NR: usize = NR;
    const KP_MAX: usize = KP_MAX;
    /// 512 columns at k blocks of 1024 (8 MB was level or slower on Zen 3 with k blocks of
    /// 512; 4 MB with 1024 lost the gain of the longer k blocks).
    const B_BLOCK_BYTES: usize = 2 << 20;
    #[inline]
    unsafe fn pack_a(a: MatRef<f32>, i0: usize, mc: usize, k0: usize, kc: usize, dst: *mut u32) {
        pack_a(a, i0, mc, k0, kc, dst as *mut f32)
    }
    #[inline]
    unsafe fn pack_b(
        b: MatRef<f32>,
        k0: usize,
        kc: usize,
        j0: usize,
        nc: usize,
        jp0: usize,
        jp1: usize,
        dst: *mut u32,
    ) {
        pack_b(b, k0, kc, j0, nc, jp0, jp1, dst as *mut f32)
    }
    #[inline]
    unsafe fn micro(kw: usize, ap: *const u32, bp: *const u32, t: &Tile<f32>) {
        let (a, b) = (ap as *const f32, bp as *const f32);
        match t.rows {
            1 => micro::<1>(kw, a, b, t),
            2 => micro::<2>(kw, a, b, t),
            3 => micro::<3>(kw, a, b, t),
            4 => micro::<4>(kw, a, b, t),
            5 => micro::<5>(kw, a, b, t),
            _ => micro::<MR>(kw, a, b, t),
        }
    }
}

/// Packs A rows `i0..i0+mc`, k `k0..k0+kc` into panels of `MR` rows, k-major (`[ip][kk][MR]`),
/// rows past `mc` zero.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_a(a: MatRef<f32>, i0: usize, mc: usize, k0: usize, kc: usize, dst: *mut f32) {
    for ip in 0..mc.div_ceil(MR) {
        let panel = dst.add(ip * kc * MR);
        let rows = MR.min(mc - ip * MR);
        if a.rs == 1 && rows == MR {
            // Columns contiguous along m: each k is a contiguous run of MR rows.
            for kk in 0..kc {
                core::ptr::copy_nonoverlapping(a.at(i0 + ip * MR, k0 + kk), panel.add(kk * MR), MR);
            }
            continue;
        }
        let mut kk = 0;
        if a.cs == 1 {
            // Rows contiguous along k (row-major A): 8x8 register transposes of 8 k at a time
            // (rows past `rows` and the two spare lanes zero). Each 8-word store spills two
            // words into the next k's slot, which the next store overwrites; the last of each
            // group goes through a buffer so nothing is written past the group.
            while kk + 8 <= kc {
                let mut r = [_mm256_setzero_ps(); 8];
                for (i, v) in r.iter_mut().enumerate().take(rows) {
                    *v = _mm256_loadu_ps(a.at(i0 + ip * MR + i, k0 + kk));
                }
                let t = transpose8x8(r);
                for (q, v) in t.iter().enumerate().take(7) {
                    _mm256_storeu_ps(panel.add((kk + q) * MR), *v);
                }
                let mut last = [0f32; 8];
                _mm256_storeu_ps(last.as_mut_ptr(), t[7]);
                core::ptr::copy_nonoverlapping(last.as_ptr(), panel.add((kk + 7) * MR), MR);
                kk += 8;
            }
        }
        for r in 0..MR {
            let live = r < rows;
            let row = a.at(i0 + ip * MR + r.min(rows - 1), k0);
            for q in kk..kc {
                *panel.add(q * MR + r) = if live {
                    *row.offset(q as isize * a.cs)
                } else {
                    0.0
                };
            }
        }
    }
}

/// Packs B k `k0..k0+kc`, columns `j0 + jp*NR ..` for panels `jp0..jp1` into `[jp][kk][NR]`,
/// columns past `nc` zero.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_b(
    b: MatRef<f32>,
    k0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    jp0: usize,
    jp1: usize,
    dst: *mut f32,
) {
    for jp in jp0..jp1 {
        let panel = dst.add(jp * kc * NR);
        let jb = jp * NR;
        let w = NR.min(nc - jb);
        if b.cs == 1 {
            // Rows contiguous along n.
            for kk in 0..kc {
                let src = b.at(k0 + kk, j0 + jb);
                let out = panel.add(kk * NR);
                if w == NR {
                    _mm256_storeu_ps(out, _mm256_loadu_ps(src));
                    _mm256_storeu_ps(out.add(8), _mm256_loadu_ps(src.add(8)));
                } else {
                    for j in 0..NR {
                        *out.add(j) = if j < w { *src.add(j) } else { 0.0 };
                    }
                }
            }
            continue;
        }
        let mut jg = 0;
        if b.rs == 1 {
            // Columns contiguous along k (the `x @ W^T` layout): 8x8 register transposes for
            // full groups of 8 columns and 8 k; the k past the last group of 8 below.
            while jg + 8 <= w {
                let mut kk = 0;
                while kk + 8 <= kc {
                    let mut r = [_mm256_setzero_ps(); 8];
                    for (j, v) in r.iter_mut().enumerate() {
                        *v = _mm256_loadu_ps(b.at(k0 + kk, j0 + jb + jg + j));
                    }
                    for (q, v) in transpose8x8(r).iter().enumerate() {
                        _mm256_storeu_ps(panel.add((kk + q) * NR + jg), *v);
                    }
                    kk += 8;
                }
                for j in jg..jg + 8 {
                    let col = b.at(k0, j0 + jb + j);
                    for q in kk..kc {
                        *panel.add(q * NR + j) = *col.add(q);
                    }
                }
                jg += 8;
            }
        }
        for j in jg..NR {
            let col = b.at(k0, j0 + jb + j.min(w - 1));
            for kk in 0..kc {
                *panel.add(kk * NR + j) = if j < w {
                    *col.offset(kk as isize * b.rs)
                } else {
                    0.0
                };
            }
        }
    }
}

/// Lanes `0..cnt` of an 8-lane mask for `_mm256_maskload_ps` / `_mm256_maskstore_ps`.
#[inline(always)]
unsafe fn lanes(cnt: usize) -> __m256i {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt as i32), idx)
}

/// k steps ahead that the micro-kernel prefetches its panels (as in the AVX-512 kernel).
const PREFETCH_STEPS: usize = 16;

/// The micro-kernel for the first `R` rows of a panel (`R < MR` only for the last row panel).
#[target_feature(enable = "avx2,fma")]
unsafe fn micro<const R: usize>(kw: usize, ap: *const f32, bp: *const f32, t: &Tile<f32>) {
    let mut acc = [[_mm256_setzero_ps(); NV]; R];
    // The tile's partial sums (or, in the last k block, its C rows) are fetched while the k
    // loop runs and added after it: a scratch or C tile is usually outside the caches, and
    // loading it first stalled the whole tile.
    for r in 0..R {
        let p = if t.load || !t.last {
            t.scratch.add(r * t.ld) as *const i8
        } else {
            t.c.offset(r as isize * t.c_rs) as *const i8
        };
        _mm_prefetch::<_MM_HINT_T0>(p);
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(NR * 4 - 4));
    }
    let (mut a, mut b) = (ap, bp);
    let step = |a: *const f32, b: *const f32, acc: &mut [[__m256; NV]; R]| {
        let bv = [_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8))];
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm256_broadcast_ss(&*a.add(r));
            for (x, &bx) in row.iter_mut().zip(&bv) {
                *x = _mm256_fmadd_ps(av, bx, *x);
            }
        }
    };
    // Two k steps per iteration: one prefetch per 64-byte line of each panel (a B step is one
    // line, two A steps are 48 bytes).
    for _ in 0..kw / 2 {
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_STEPS * NR).cast());
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_STEPS * NR + NR).cast());
        _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(PREFETCH_STEPS * MR).cast());
        step(a, b, &mut acc);
        step(a.add(MR), b.add(NR), &mut acc);
        a = a.add(2 * MR);
        b = b.add(2 * NR);
    }
    if kw % 2 == 1 {
        step(a, b, &mut acc);
    }
    if t.load {
        for (r, row) in acc.iter_mut().enumerate() {
            for (v, x) in row.iter_mut().enumerate() {
                *x = _mm256_add_ps(*x, _mm256_loadu_ps(t.scratch.add(r * t.ld + v * 8)));
            }
        }
    }
    if !t.last {
        for (r, row) in acc.iter().enumerate() {
            for (v, x) in row.iter().enumerate() {
                _mm256_storeu_ps(t.scratch.add(r * t.ld + v * 8), *x);
            }
        }
        return;
    }
    if t.c_cs == 1 {
        for (r, row) in acc.iter().enumerate().take(t.rows) {
            let crow = t.c.offset(r as isize * t.c_rs);
            for (v, &x) in row.iter().enumerate() {
                let cnt = t.cols.saturating_sub(v * 8).min(8);
                let p = crow.add(v * 8);
                if cnt == 8 {
                    let x = if t.accumulate {
                        _mm256_add_ps(x, _mm256_loadu_ps(p))
                    } else {
                        x
                    };
                    _mm256_storeu_ps(p, x);
                } else if cnt > 0 {
                    let mask = lanes(cnt);
                    let x = if t.accumulate {
                        _mm256_add_ps(x, _mm256_maskload_ps(p, mask))
                    } else {
                        x
                    };
                    _mm256_maskstore_ps(p, mask, x);
                }
            }
        }
    } else {
        let mut buf = [0f32; NR];
        for (r, row) in acc.iter().enumerate().take(t.rows) {
            for (v, &x) in row.iter().enumerate() {
                _mm256_storeu_ps(buf.as_mut_ptr().add(v * 8), x);
            }
            for (j, &x) in buf.iter().enumerate().take(t.cols) {
                let p = t.c.offset(r as isize * t.c_rs + j as isize * t.c_cs);
                *p = if t.accumulate { x + *p } else { x };
            }
        }
    }
}
