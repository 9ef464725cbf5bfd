//! The AVX-512 kinds of the packed GEMM: bf16 with `vdpbf16ps` and f32 with FMAs, both on a
//! 14 x 32 tile of C in 28 zmm accumulators (per k word: two 16-word vectors of B, 14 broadcast
//! words of A).

use super::{Kind, Tile};
use crate::backend::cpu::gemm::MatRef;
use crate::backend::cpu::simd::x86::transpose16x16;
use core::arch::x86_64::*;
use half::bf16;

const MR: usize = 14;
const NV: usize = 2;
const NR: usize = 16 * NV;
/// See [`Kind::KP_MAX`]: 2048 words measured best on a Xeon (AVX-512).
const KP_MAX: usize = 2048;

/// Calls `$f::<R>` with `R = $rows` (1..=MR; MR for anything larger).
macro_rules! by_rows {
    ($f:ident, $rows:expr, $($arg:expr),*) => {
        match $rows {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*),
            8 => $f::<8>($($arg),*),
            9 => $f::<9>($($arg),*),
            10 => $f::<10>($($arg),*),
            11 => $f::<11>($($arg),*),
            12 => $f::<12>($($arg),*),
            13 => $f::<13>($($arg),*),
            _ => $f::<MR>($($arg),*),
        }
    };
}

pub(crate) struct Bf16Kind;
pub(crate) struct F32Kind;

impl Kind for Bf16Kind {
    type T = bf16;
    const KW: usize = 2;
    const MR: usize = MR;
    const NR: usize = NR;
    const KP_MAX: usize = KP_MAX;
    const B_BLOCK_BYTES: usize = 8 << 20;
    #[inline]
    unsafe fn pack_a(a: MatRef<bf16>, i0: usize, mc: usize, k0: usize, kc: usize, dst: *mut u32) {
        pack_a_bf16(a, i0, mc, k0, kc, dst)
    }
    #[inline]
    unsafe fn pack_b(
        b: MatRef<bf16>,
        k0: usize,
        kc: usize,
        j0: usize,
        nc: usize,
        jp0: usize,
        jp1: usize,
        dst: *mut u32,
    ) {
        pack_b_bf16(b, k0, kc, j0, nc, jp0, jp1, dst)
    }
    #[inline]
    unsafe fn micro(kw: usize, ap: *const u32, bp: *const u32, t: &Tile<bf16>) {
        by_rows!(micro_bf16, t.rows, kw, ap, bp, t)
    }
}

impl Kind for F32Kind {
    type T = f32;
    const KW: usize = 1;
    const MR: usize = MR;
    const NR: usize = NR;
    const KP_MAX: usize = KP_MAX;
    const B_BLOCK_BYTES: usize = 8 << 20;
    #[inline]
    unsafe fn pack_a(a: MatRef<f32>, i0: usize, mc: usize, k0: usize, kc: usize, dst: *mut u32) {
        pack_a_f32(a, i0, mc, k0, kc, dst)
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
        pack_b_f32(b, k0, kc, j0, nc, jp0, jp1, dst)
    }
    #[inline]
    unsafe fn micro(kw: usize, ap: *const u32, bp: *const u32, t: &Tile<f32>) {
        by_rows!(micro_f32, t.rows, kw, ap, bp, t)
    }
}

#[inline(always)]
fn mask16(cnt: usize) -> __mmask16 {
    if cnt >= 16 {
        0xffff
    } else {
        ((1u32 << cnt) - 1) as __mmask16
    }
}

#[inline(always)]
unsafe fn pair(lo: bf16, hi: bf16) -> u32 {
    lo.to_bits() as u32 | ((hi.to_bits() as u32) << 16)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pack_a_bf16(a: MatRef<bf16>, i0: usize, mc: usize, k0: usize, kc: usize, dst: *mut u32) {
    let kp = kc.div_ceil(2);
    for ip in 0..mc.div_ceil(MR) {
        let panel = dst.add(ip * kp * MR);
        if a.cs == 1 {
            // Rows contiguous along k: a pair of bf16 is one 32-bit word, so whole words go
            // through the f32 path's 16x16 register transposes (see `pack_a_f32`); the words
            // past the last group of 16 and an odd k's last half-pair are copied one by one.
            let rows = MR.min(mc - ip * MR);
            let full = kc / 2;
            let mut p = 0;
            while p + 16 <= full {
                let mut r = [_mm512_setzero_ps(); 16];
                for (i, v) in r.iter_mut().enumerate().take(rows) {
                    *v = _mm512_loadu_ps(a.at(i0 + ip * MR + i, k0 + 2 * p) as *const f32);
                }
                store_transposed(r, (panel as *mut f32).add(p * MR));
                p += 16;
            }
            for r in 0..MR {
                let live = r < rows;
                let row = a.at(i0 + ip * MR + r.min(rows - 1), k0);
                for q in p..full {
                    *panel.add(q * MR + r) = if live {
                        (row.add(2 * q) as *const u32).read_unaligned()
                    } else {
                        0
                    };
                }
                if kc % 2 == 1 {
                    *panel.add((kp - 1) * MR + r) = if live {
                        pair(*row.add(kc - 1), bf16::ZERO)
                    } else {
                        0
                    };
                }
            }
            continue;
        }
        for r in 0..MR {
            let i = ip * MR + r;
            if i >= mc {
                for p in 0..kp {
                    *panel.add(p * MR + r) = 0;
                }
                continue;
            }
            let row = a.at(i0 + i, k0);
            if a.cs == 1 {
                // Row contiguous along k: the pair is one (possibly unaligned) 32-bit word.
                for p in 0..kc / 2 {
                    *panel.add(p * MR + r) = (row.add(2 * p) as *const u32).read_unaligned();
                }
            } else {
                for p in 0..kc / 2 {
                    let lo = *row.offset((2 * p) as isize * a.cs);
                    let hi = *row.offset((2 * p + 1) as isize * a.cs);
                    *panel.add(p * MR + r) = pair(lo, hi);
                }
            }
            if kc % 2 == 1 {
                *panel.add((kp - 1) * MR + r) =
                    pair(*row.offset((kc - 1) as isize * a.cs), bf16::ZERO);
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pack_b_bf16(
    b: MatRef<bf16>,
    k0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    jp0: usize,
    jp1: usize,
    dst: *mut u32,
) {
    let kp = kc.div_ceil(2);
    // out[2l] = row0[l], out[2l + 1] = row1[l] for a 512-bit vector holding row0 | row1.
    let idx = {
        let mut v = [0i16; 32];
        for l in 0..16 {
            v[2 * l] = l as i16;
            v[2 * l + 1] = 16 + l as i16;
        }
        _mm512_loadu_si512(v.as_ptr() as *const _)
    };
    for jp in jp0..jp1 {
        let panel = dst.add(jp * kp * NR);
        let jb = jp * NR;
        let w = NR.min(nc - jb);
        if b.cs == 1 {
            // Rows contiguous along n: interleave row 2p and row 2p+1, 16 columns at a time.
            for p in 0..kp {
                let r0 = b.at(k0 + 2 * p, j0 + jb);
                let has1 = 2 * p + 1 < kc;
                let r1 = b.at(k0 + 2 * p + 1, j0 + jb);
                for v in 0..NV {
                    let lo = v * 16;
                    let mask = mask16(w.saturating_sub(lo));
                    let x0 = _mm256_maskz_loadu_epi16(mask, r0.add(lo) as *const i16);
                    let x1 = if has1 {
                        _mm256_maskz_loadu_epi16(mask, r1.add(lo) as *const i16)
                    } else {
                        _mm256_setzero_si256()
                    };
                    let both = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(x0), x1);
                    _mm512_storeu_si512(
                        panel.add(p * NR + lo) as *mut _,
                        _mm512_permutexvar_epi16(idx, both),
                    );
                }
            }
        } else {
            if b.rs == 1 {
                // Columns contiguous along k: each pair is one 32-bit word of a column. Transpose
                // in k blocks so the written part of the panel stays in L1.
                const KB: usize = 64;
                let mut p0 = 0;
                while p0 < kc / 2 {
                    let p1 = (p0 + KB).min(kc / 2);
                    for j in 0..w {
                        let col = b.at(k0, j0 + jb + j);
                        for p in p0..p1 {
                            *panel.add(p * NR + j) = col.add(2 * p).cast::<u32>().read_unaligned();
                        }
                    }
                    p0 = p1;
                }
            }
            for j in 0..NR {
                if j >= w {
                    for p in 0..kp {
                        *panel.add(p * NR + j) = 0;
                    }
                    continue;
                }
                let col = b.at(k0, j0 + jb + j);
                if b.rs != 1 {
                    // (b.rs == 1 was packed above.)
                    for p in 0..kc / 2 {
                        let lo = *col.offset((2 * p) as isize * b.rs);
                        let hi = *col.offset((2 * p + 1) as isize * b.rs);
                        *panel.add(p * NR + j) = pair(lo, hi);
                    }
                }
                if kc % 2 == 1 {
                    *panel.add((kp - 1) * NR + j) =
                        pair(*col.offset((kc - 1) as isize * b.rs), bf16::ZERO);
                }
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pack_a_f32(a: MatRef<f32>, i0: usize, mc: usize, k0: usize, kc: usize, dst: *mut u32) {
    for ip in 0..mc.div_ceil(MR) {
        let panel = dst.add(ip * kc * MR) as *mut f32;
        let rows = MR.min(mc - ip * MR);
        if a.rs == 1 && rows == MR {
            // Columns contiguous along m: each k is a contiguous run of MR rows.
            for kk in 0..kc {
                let src = a.at(i0 + ip * MR, k0 + kk);
                core::ptr::copy_nonoverlapping(src, panel.add(kk * MR), MR);
            }
            continue;
        }
        if a.cs == 1 {
            // Rows contiguous along k (row-major A): 16x16 register transposes of 16 k at a
            // time (rows past `rows` and the two spare lanes are zeros), see `store_transposed`.
            let mut kk = 0;
            while kk + 16 <= kc {
                let mut r = [_mm512_setzero_ps(); 16];
                for (i, v) in r.iter_mut().enumerate().take(rows) {
                    *v = _mm512_loadu_ps(a.at(i0 + ip * MR + i, k0 + kk));
                }
                store_transposed(r, panel.add(kk * MR));
                kk += 16;
            }
            for q in kk..kc {
                for r in 0..MR {
                    *panel.add(q * MR + r) = if r < rows {
                        *a.at(i0 + ip * MR + r, k0 + q)
                    } else {
                        0.0
                    };
                }
            }
            continue;
        }
        for r in 0..MR {
            if r >= rows {
                for kk in 0..kc {
                    *panel.add(kk * MR + r) = 0.0;
                }
                continue;
            }
            let row = a.at(i0 + ip * MR + r, k0);
            for kk in 0..kc {
                *panel.add(kk * MR + r) = *row.offset(kk as isize * a.cs);
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pack_b_f32(
    b: MatRef<f32>,
    k0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    jp0: usize,
    jp1: usize,
    dst: *mut u32,
) {
    for jp in jp0..jp1 {
        let panel = dst.add(jp * kc * NR) as *mut f32;
        let jb = jp * NR;
        let w = NR.min(nc - jb);
        if b.cs == 1 {
            for kk in 0..kc {
                let src = b.at(k0 + kk, j0 + jb);
                for v in 0..NV {
                    let mask = mask16(w.saturating_sub(v * 16));
                    _mm512_storeu_ps(
                        panel.add(kk * NR + v * 16),
                        _mm512_maskz_loadu_ps(mask, src.add(v * 16)),
                    );
                }
            }
        } else {
            for j in 0..NR {
                if j >= w {
                    for kk in 0..kc {
                        *panel.add(kk * NR + j) = 0.0;
                    }
                    continue;
                }
                if b.rs == 1 {
                    continue; // Packed below, blocked over k.
                }
                let col = b.at(k0, j0 + jb + j);
                for kk in 0..kc {
                    *panel.add(kk * NR + j) = *col.offset(kk as isize * b.rs);
                }
            }
            if b.rs == 1 {
                // Columns contiguous along k (the `x @ W^T` layout): 16x16 register transposes
                // for full groups of 16 columns and 16 k, scalar copies for the edges.
                let mut jg = 0;
                while jg + 16 <= w {
                    let mut kk = 0;
                    while kk + 16 <= kc {
                        let mut r = [_mm512_setzero_ps(); 16];
                        for (j, v) in r.iter_mut().enumerate() {
                            *v = _mm512_loadu_ps(b.at(k0 + kk, j0 + jb + jg + j));
                        }
                        let t = transpose16x16(r);
                        for (q, v) in t.iter().enumerate() {
                            _mm512_storeu_ps(panel.add((kk + q) * NR + jg), *v);
                        }
                        kk += 16;
                    }
                    for j in jg..jg + 16 {
                        let col = b.at(k0, j0 + jb + j);
                        for q in kk..kc {
                            *panel.add(q * NR + j) = *col.add(q);
                        }
                    }
                    jg += 16;
                }
                for j in jg..w {
                    let col = b.at(k0, j0 + jb + j);
                    for kk in 0..kc {
                        *panel.add(kk * NR + j) = *col.add(kk);
                    }
                }
            }
        }
    }
}

/// Writes the transpose of 16 rows of 16 words as 16 consecutive groups of `MR` words at `dst`
/// (group q holds word q of rows 0..MR): a packed A panel's next 16 k. Each full store spills
/// two lanes into the next group's slot, which the next store overwrites, so only the last
/// store is masked (nothing is written past the 16 groups).
#[inline(always)]
unsafe fn store_transposed(r: [__m512; 16], dst: *mut f32) {
    let t = transpose16x16(r);
    for (q, v) in t.iter().enumerate().take(15) {
        _mm512_storeu_ps(dst.add(q * MR), *v);
    }
    _mm512_mask_storeu_ps(dst.add(15 * MR), mask16(MR), t[15]);
}

#[inline(always)]
unsafe fn bh(v: __m512i) -> __m512bh {
    // SAFETY: both are plain 512-bit vectors.
    core::mem::transmute(v)
}

/// Sixteen bf16 values widened to f32 (exactly: a bf16 is the top half of its f32).
#[inline(always)]
pub(crate) unsafe fn bf16x16_to_f32(h: __m256i) -> __m512 {
    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
}

/// Loads the partial sums (if any) into the accumulators.
#[inline(always)]
unsafe fn tile_init<T>(t: &Tile<T>) -> [[__m512; NV]; MR] {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    if t.load {
        for r in 0..MR {
            for v in 0..NV {
                acc[r][v] = _mm512_loadu_ps(t.scratch.add(r * t.ld + v * 16));
            }
        }
    }
    acc
}

/// Stores the partial sums; returns false if this is not the last k block.
#[inline(always)]
unsafe fn tile_spill<T>(t: &Tile<T>, acc: &[[__m512; NV]; MR]) -> bool {
    if t.last {
        return true;
    }
    for r in 0..MR {
        for v in 0..NV {
            _mm512_storeu_ps(t.scratch.add(r * t.ld + v * 16), acc[r][v]);
        }
    }
    false
}

/// Micro-kernel for the first `R` rows of a panel (R < MR only for the last row panel, so a
/// partial panel costs only its own rows).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn micro_bf16<const R: usize>(kw: usize, ap: *const u32, bp: *const u32, t: &Tile<bf16>) {
    let mut acc = tile_init(t);
    let mut a = ap;
    let mut b = bp;
    for _ in 0..kw {
        prefetch_panels(a, b);
        let mut bv = [bh(_mm512_setzero_si512()); NV];
        for v in 0..NV {
            bv[v] = bh(_mm512_loadu_si512(b.add(16 * v) as *const _));
        }
        for r in 0..R {
            let av = bh(_mm512_set1_epi32(*a.add(r) as i32));
            for v in 0..NV {
                acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
            }
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    if !tile_spill(t, &acc) {
        return;
    }
    if t.c_cs == 1 {
        for r in 0..t.rows {
            let crow = t.c.offset(r as isize * t.c_rs);
            for v in 0..NV {
                let cnt = t.cols.saturating_sub(v * 16).min(16);
                if cnt == 0 {
                    break;
                }
                let mask = mask16(cnt);
                let p = crow.add(v * 16) as *mut i16;
                let mut x = acc[r][v];
                if t.accumulate {
                    x = _mm512_add_ps(x, bf16x16_to_f32(_mm256_maskz_loadu_epi16(mask, p)));
                }
                // Round to nearest even, like `bf16::from_f32`.
                let h: __m256i = core::mem::transmute(_mm512_cvtneps_pbh(x));
                _mm256_mask_storeu_epi16(p, mask, h);
            }
        }
    } else {
        let mut buf = [0f32; NR];
        for r in 0..t.rows {
            for v in 0..NV {
                _mm512_storeu_ps(buf.as_mut_ptr().add(v * 16), acc[r][v]);
            }
            for (j, &x) in buf.iter().enumerate().take(t.cols) {
                let p = t.c.offset(r as isize * t.c_rs + j as isize * t.c_cs);
                let x = if t.accumulate { x + (*p).to_f32() } else { x };
                *p = bf16::from_f32(x);
            }
        }
    }
}

/// k steps ahead that the micro-kernels prefetch their panels. Measured on the f32 kernel
/// alone with the driver's blocking (a 126 x 2048 A block, 2048 x 32 B panels, one thread,
/// GFLOP/s): none 176, 16 steps 210; with 256-step k blocks 211 either way. In the driver, 8
/// to 48 steps ran alike.
const PREFETCH_STEPS: usize = 16;

/// Prefetches the packed words `PREFETCH_STEPS` k steps past `a` and `b`: the panels stream
/// from L2 (k blocks are long, see KP_MAX), and the hardware prefetchers alone left the FMAs
/// waiting on them.
#[inline(always)]
unsafe fn prefetch_panels(a: *const u32, b: *const u32) {
    _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_STEPS * NR).cast());
    _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(PREFETCH_STEPS * NR + 16).cast());
    _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(PREFETCH_STEPS * MR).cast());
}

/// As `micro_bf16`, with f32 FMAs.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn micro_f32<const R: usize>(kw: usize, ap: *const u32, bp: *const u32, t: &Tile<f32>) {
    let mut acc = tile_init(t);
    let mut a = ap as *const f32;
    let mut b = bp as *const f32;
    for _ in 0..kw {
        prefetch_panels(a.cast(), b.cast());
        let mut bv = [_mm512_setzero_ps(); NV];
        for v in 0..NV {
            bv[v] = _mm512_loadu_ps(b.add(16 * v));
        }
        for r in 0..R {
            let av = _mm512_set1_ps(*a.add(r));
            for v in 0..NV {
                acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
            }
        }
        a = a.add(MR);
        b = b.add(NR);
    }
    if !tile_spill(t, &acc) {
        return;
    }
    if t.c_cs == 1 {
        for r in 0..t.rows {
            let crow = t.c.offset(r as isize * t.c_rs);
            for v in 0..NV {
                let cnt = t.cols.saturating_sub(v * 16).min(16);
                if cnt == 0 {
                    break;
                }
                let mask = mask16(cnt);
                let p = crow.add(v * 16);
                let mut x = acc[r][v];
                if t.accumulate {
                    x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, p));
                }
                _mm512_mask_storeu_ps(p, mask, x);
            }
        }
    } else {
        let mut buf = [0f32; NR];
        for r in 0..t.rows {
            for v in 0..NV {
                _mm512_storeu_ps(buf.as_mut_ptr().add(v * 16), acc[r][v]);
            }
            for (j, &x) in buf.iter().enumerate().take(t.cols) {
                let p = t.c.offset(r as isize * t.c_rs + j as isize * t.c_cs);
                *p = if t.accumulate { x + *p } else { x };
            }
        }
    }
}
