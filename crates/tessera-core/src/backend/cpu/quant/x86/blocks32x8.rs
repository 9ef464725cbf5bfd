//! The decode kernel for the interleaved layouts ([`Q4_0x8`](crate::quant::GgmlType::Q4_0x8),
//! `Q4_1x8`, `Q5_0x8`, `Q8_0x8`): 8 weight rows at once, one row per i32 lane (the layout is
//! described in `quant/interleave.rs`).
//!
//! Per record (one block index of 8 rows: 144 bytes for Q4_0) and activation row: 4 loads of 32
//! bytes, two masks each (8 registers of nibbles), and 8 multiply-adds, each against one 4-byte
//! word of the activation block broadcast to every lane, into two accumulators (low and high
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
//!
//! The shared-header layouts (`Q4_1x8s2`, `Q4_1x8s4`) run the same steps per block of a record
//! and sum the blocks' `d_x`-scaled results before the one FMA with the record's 8 scales. The
//! 8-bit affine layouts (`A8x8` and its shared forms: `w = d q + m`, unsigned bytes) are Q8_0's
//! chunks taken as they are, with Q4_1's minimum term; VNNI only.
//!
//! Q5_0 adds 16 to the values whose fifth bit is set, from one 32-bit byte mask per nibble
//! register stored in the record (one masked add with AVX-512BW), and takes `16 d_x Σx` off.
//!
//! Q8_0 has 8 chunks of signed bytes and no unpacking: with VNNI each is biased to `q + 128`
//! (one xor) and `128 d_x Σx` taken off per block as Q4_0's offset is; AVX2 multiplies `|q|`
//! by `x` with `q`'s sign (no i16 saturation: `|q| <= 128`).

use super::Dot;
use super::blocks32::with_fifth;
use crate::backend::cpu::quant::act::Q8Rows;
use crate::backend::cpu::quant::interleave::{ROWS, affine8_codes_at, qs_at};
use crate::backend::cpu::quant::matmul::Tile;
use crate::quant::GgmlType;
use std::arch::x86_64::*;

/// An interleaved format: where its `qs` chunks start in a record, how many there are, and how
/// a weight is made from `q`.
pub(super) trait Format {
    /// Bytes before the `qs` chunks: the 8 scales, and for Q4_1 the 8 minimums.
    const QS: usize;
    /// `w = d q + m` (Q4_1).
    const MIN: bool = false;
    /// Signed bytes `w = d q` (Q8_0, 8 chunks of 32 bytes) rather than nibbles (4 chunks).
    const EIGHT_BIT: bool = false;
    /// Q5_0: a fifth bit per value, as one byte mask per nibble register after the scales.
    const FIFTH: bool = false;
    /// The unsigned offset of the stored values (`w = d (q - OFF)`): 8 for Q4_0, 16 for Q5_0;
    /// for Q8_0 the bias VNNI adds to its signed bytes (AVX2 multiplies them signed: none).
    const OFF: f32 = 0.0;
    /// Consecutive blocks per record, sharing its header (the `Q4_1x8s` layouts: 2 or 4).
    const SHARE: usize = 1;
    /// Eight-bit codes that are unsigned already (the `A8x8` layouts, with `MIN`): VNNI only,
    /// whose `vpdpbusd` takes any unsigned byte.
    const UNSIGNED: bool = false;
    /// Bytes of one block's `qs` chunks for the 8 rows.
    const CHUNKS: usize = if Self::EIGHT_BIT { 256 } else { 128 };
    /// Bytes per record: the header and the 8 rows' `qs` of its blocks.
    const RECORD: usize = Self::QS + Self::SHARE * Self::CHUNKS;
}

pub(super) struct Q4_0x8;
pub(super) struct Q4_1x8;
pub(super) struct Q5_0x8;
pub(super) struct Q8_0x8;
pub(super) struct Q4_1x8s2;
pub(super) struct Q4_1x8s4;
pub(super) struct A8x8<const SHARE: usize>;

impl Format for Q4_0x8 {
    const QS: usize = qs_at(GgmlType::Q4_0);
    const OFF: f32 = 8.0;
}

impl Format for Q4_1x8 {
    const QS: usize = qs_at(GgmlType::Q4_1);
    const MIN: bool = true;
}

impl Format for Q4_1x8s2 {
    const QS: usize = qs_at(GgmlType::Q4_1);
    const MIN: bool = true;
    const SHARE: usize = 2;
}

impl Format for Q4_1x8s4 {
    const QS: usize = qs_at(GgmlType::Q4_1);
    const MIN: bool = true;
    const SHARE: usize = 4;
}

impl<const S: usize> Format for A8x8<S> {
    const QS: usize = affine8_codes_at(0, 0, 0);
    const MIN: bool = true;
    const EIGHT_BIT: bool = true;
    const UNSIGNED: bool = true;
    const SHARE: usize = S;
}

impl Format for Q5_0x8 {
    const QS: usize = qs_at(GgmlType::Q5_0);
    const FIFTH: bool = true;
    const OFF: f32 = 16.0;
}

impl Format for Q8_0x8 {
    const QS: usize = qs_at(GgmlType::Q8_0);
    const EIGHT_BIT: bool = true;
    const OFF: f32 = 128.0;
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
pub(super) unsafe fn word(x: *const i8, j: usize) -> __m256i {
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
    // Records per group of 8 rows (each covers SHARE activation blocks).
    let nr = nb / F::SHARE;
    for g in t.r0 / ROWS..t.r1 / ROWS {
        let group = t.w.as_ptr().add(g * nr * F::RECORD);
        let mut acc = [_mm256_setzero_ps(); N];
        // Q4_1: Σ_b m_w s_x, kept apart so the two FMA chains run side by side.
        let mut acc_min = [_mm256_setzero_ps(); N];
        for r in 0..nr {
            let rec = group.add(r * F::RECORD);
            // The hardware prefetchers alone left this loop's arithmetic and memory reads apart
            // (streaming at about the harmonic mean of the cache-hot rate and the read
            // bandwidth: Q4_0x8 21 GB/s on a Xeon, 2 threads); see `prefetch_stream`.
            crate::backend::cpu::simd::prefetch_stream(rec, F::RECORD);
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(rec as *const __m128i));
            let mw = if F::MIN {
                _mm256_cvtph_ps(_mm_loadu_si128(rec.add(16) as *const __m128i))
            } else {
                _mm256_setzero_ps()
            };
            // The record's blocks scaled by the activations' `d_x`, before the shared `d_w`.
            let mut vs = [_mm256_setzero_ps(); N];
            for s in 0..F::SHARE {
                let b = r * F::SHARE + s;
                let chunks = rec.add(F::QS + s * F::CHUNKS);
                // u[c] meets activation word c: for nibbles u[0..4] are the low ones (values
                // 4c..4c + 4), u[4..8] the high ones (16 + ...); for bytes, chunk c itself.
                let mut u = [zero; 8];
                let mut raw8 = [zero; 8];
                if F::EIGHT_BIT {
                    for c in 0..8 {
                        let raw = _mm256_loadu_si256(chunks.add(32 * c) as *const __m256i);
                        raw8[c] = raw;
                        // VNNI: q + 128 (unsigned; the offset is taken off below). AVX2's i16
                        // pair sums would saturate on that, so |q| against x with q's sign.
                        u[c] = if F::UNSIGNED {
                            raw
                        } else if D::FULL_U8 {
                            _mm256_xor_si256(raw, _mm256_set1_epi8(-128))
                        } else {
                            _mm256_abs_epi8(raw)
                        };
                    }
                } else {
                    for c in 0..4 {
                        let raw = _mm256_loadu_si256(chunks.add(32 * c) as *const __m256i);
                        u[c] = _mm256_and_si256(raw, m4);
                        u[4 + c] = if D::FULL_U8 && !F::FIFTH {
                            _mm256_andnot_si256(m4, raw) // 16 q (see the module doc)
                        } else {
                            _mm256_and_si256(_mm256_srli_epi16::<4>(raw), m4)
                        };
                        if F::FIFTH {
                            // Q5_0: 16 where the value's fifth bit is set (the record's masks).
                            let mask =
                                |h: usize| (rec.add(16 + 4 * h) as *const u32).read_unaligned();
                            u[c] = with_fifth::<D>(u[c], mask(c));
                            u[4 + c] = with_fifth::<D>(u[4 + c], mask(4 + c));
                        }
                    }
                }
                for i in 0..N {
                    let ix = base[i] + b;
                    let x = qs.add(ix * 32);
                    let mut sl = zero;
                    let mut sh = zero;
                    for c in 0..4 {
                        let (mut wl, mut wh) = (word(x, c), word(x, 4 + c));
                        if F::EIGHT_BIT && !F::UNSIGNED && !D::FULL_U8 {
                            wl = _mm256_sign_epi8(wl, raw8[c]);
                            wh = _mm256_sign_epi8(wh, raw8[4 + c]);
                        }
                        sl = D::dot_us(sl, u[c], wl);
                        sh = D::dot_us(sh, u[4 + c], wh);
                    }
                    let sh = if D::FULL_U8 && !F::EIGHT_BIT && !F::FIFTH {
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
                        // d_x Σ q x - off d_x Σ x: the offset of the unsigned values (see
                        // `OFF`).
                        let off = if F::EIGHT_BIT && !D::FULL_U8 {
                            0.0
                        } else {
                            F::OFF
                        };
                        _mm256_fmsub_ps(
                            f,
                            _mm256_set1_ps(*xd.add(ix)),
                            _mm256_set1_ps(off * *xdsum.add(ix)),
                        )
                    };
                    vs[i] = if s == 0 { v } else { _mm256_add_ps(vs[i], v) };
                }
            }
            for i in 0..N {
                acc[i] = _mm256_fmadd_ps(vs[i], dw, acc[i]);
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
