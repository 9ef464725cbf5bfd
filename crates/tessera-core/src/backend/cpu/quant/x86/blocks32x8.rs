//! The decode kernel for [`Q4_0x8`](crate::quant::GgmlType::Q4_0x8) and
//! [`Q4_1x8`](crate::quant::GgmlType::Q4_1x8): 8 weight rows at once, one row per i32 lane (the
//! layout is described in `quant/interleave.rs`).
//!
//! Per record (one block index of 8 rows, 144 or 160 bytes) and activation row: 4 loads of 32
//! bytes,
//! two masks each (8 registers of nibbles), and 8 multiply-adds, each against one 4-byte word
//! of the activation block broadcast to every lane, into two accumulators (low and high
//! nibbles, to halve the dependency chain). The lanes then hold the 8 rows' integer dot
//! products, so the block is finished with a conversion, one FMA that applies the activation
//! scale and Q4_0's offset (`d_x Σqx - 8 d_x Σx`) and one FMA with the 8 weight scales (one
//! 16-byte f16 load); Q4_1 (`w = d q + m`) instead scales by `d_x`, and adds its 8 minimums
//! times Q8_1's `s = d_x Σx` in a second accumulator. No horizontal sums, no gathers: about
//! twice the rate of the natural-layout kernel in `blocks32.rs`.
//!
//! With VNNI the multiply-adds are this loop's bottleneck (about one per cycle on Zen 4), so
//! the high nibbles are left in place (`16 q`, which `vpdpbusd` takes as any unsigned byte) and
//! their sum is divided by 16 once per record (exact: every term is a multiple of 16), instead
//! of shifting each chunk: 4 fewer instructions per record, 7% less time in a cache-hot loop.
//! AVX2's `vpmaddubsw` would saturate its i16 pair sums on `16 q`, so it shifts as before.

use super::Dot;
use crate::backend::cpu::quant::act::Q8Rows;
use crate::backend::cpu::quant::interleave::{ROWS, nibbles_at};
use crate::backend::cpu::quant::matmul::Tile;
use crate::quant::GgmlType;
use std::arch::x86_64::*;

/// An interleaved format: where its nibbles start in a record, and whether it carries minimums
/// (after the scales) instead of Q4_0's offset of 8.
pub(super) trait Format {
    /// Bytes before the nibbles: the 8 scales, and for Q4_1 the 8 minimums.
    const NIBBLES: usize;
    /// `w = d q + m` (Q4_1) rather than `w = d (q - 8)` (Q4_0).
    const MIN: bool;
    /// Bytes per record: the header and 8 × 16 bytes of nibbles.
    const RECORD: usize = Self::NIBBLES + 128;
}

pub(super) struct Q4_0x8;
pub(super) struct Q4_1x8;

impl Format for Q4_0x8 {
    const NIBBLES: usize = nibbles_at(GgmlType::Q4_0);
    const MIN: bool = false;
}

impl Format for Q4_1x8 {
    const NIBBLES: usize = nibbles_at(GgmlType::Q4_1);
    const MIN: bool = true;
}

/// Runs the tile (rows `r0..r1` multiples of 8, activations in the natural layout) with the
/// activation row count as a constant, so the accumulators live in registers.
#[inline(always)]
pub(super) unsafe fn rows<D: Dot, F: Format>(t: &Tile<Q8Rows>) {
    match t.mt {
        1 => rows_n::<D, F, 1>(t),
        2 => rows_n::<D, F, 2>(t),
        3 => rows_n::<D, F, 3>(t),
        _ => rows_n::<D, F, 4>(t),
    }
}

/// The activation word `x[4j..4j + 4]` in every lane.
#[inline(always)]
unsafe fn word(x: *const i8, j: usize) -> __m256i {
    _mm256_set1_epi32((x.add(4 * j) as *const i32).read_unaligned())
}

#[inline(always)]
unsafe fn rows_n<D: Dot, F: Format, const N: usize>(t: &Tile<Q8Rows>) {
    debug_assert!(
        !t.acts.paired,
        "the interleaved kernel reads natural activation blocks"
    );
    debug_assert!(t.r0.is_multiple_of(ROWS) && t.r1.is_multiple_of(ROWS));
    let nb = t.nb;
    let (qs, xd, xdsum) = (t.acts.qs.as_ptr(), t.acts.d.as_ptr(), t.acts.dsum.as_ptr());
    let xs = t.acts.s.as_ptr();
    let m4 = _mm256_set1_epi8(0x0F);
    let zero = _mm256_setzero_si256();
    let mut base = [0usize; N];
    for (i, b) in base.iter_mut().enumerate() {
        *b = (t.i0 + i) * nb;
    }
    for g in t.r0 / ROWS..t.r1 / ROWS {
        let group = t.w.as_ptr().add(g * nb * F::RECORD);
        let mut acc = [_mm256_setzero_ps(); N];
        // Q4_1: Σ_b m_w s_x, kept apart so the two FMA chains run side by side.
        let mut acc_min = [_mm256_setzero_ps(); N];
        for b in 0..nb {
            let rec = group.add(b * F::RECORD);
            let mut lo = [zero; 4];
            let mut hi = [zero; 4];
            for c in 0..4 {
                let raw = _mm256_loadu_si256(rec.add(F::NIBBLES + 32 * c) as *const __m256i);
                lo[c] = _mm256_and_si256(raw, m4);
                hi[c] = if D::FULL_U8 {
                    _mm256_andnot_si256(m4, raw) // 16 q (see the module doc)
                } else {
                    _mm256_and_si256(_mm256_srli_epi16::<4>(raw), m4)
                };
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(rec as *const __m128i));
            let mw = if F::MIN {
                _mm256_cvtph_ps(_mm_loadu_si128(rec.add(16) as *const __m128i))
            } else {
                _mm256_setzero_ps()
            };
            for i in 0..N {
                let ix = base[i] + b;
                let x = qs.add(ix * 32);
                let mut sl = zero;
                let mut sh = zero;
                for c in 0..4 {
                    sl = D::dot_us(sl, lo[c], word(x, c));
                    sh = D::dot_us(sh, hi[c], word(x, 4 + c));
                }
                let sh = if D::FULL_U8 {
                    _mm256_srai_epi32::<4>(sh)
                } else {
                    sh
                };
                let f = _mm256_cvtepi32_ps(_mm256_add_epi32(sl, sh));
                let v = if F::MIN {
                    // d_w d_x Σ q x here, m_w s_x below.
                    acc_min[i] = _mm256_fmadd_ps(mw, _mm256_set1_ps(*xs.add(ix)), acc_min[i]);
                    _mm256_mul_ps(f, _mm256_set1_ps(*xd.add(ix)))
                } else {
                    // d_x Σ q x - 8 d_x Σ x: the offset of Q4_0's unsigned nibbles.
                    _mm256_fmsub_ps(
                        f,
                        _mm256_set1_ps(*xd.add(ix)),
                        _mm256_set1_ps(8.0 * *xdsum.add(ix)),
                    )
                };
                acc[i] = _mm256_fmadd_ps(v, dw, acc[i]);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            let v = if F::MIN {
                _mm256_add_ps(*a, acc_min[i])
            } else {
                *a
            };
            // SAFETY (caller): columns r0..r1 of the tile's activation rows are this call's.
            let at = t.out.add((t.i0 + i) * t.ldo + g * ROWS);
            _mm256_storeu_ps(at, v);
        }
    }
}
