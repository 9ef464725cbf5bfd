//! 32-value block formats against Q8 activations, one block per 256-bit register.
//!
//! Per weight block and activation row: `s = Σ q x` in i32 lanes (one `vpdpbusd`, or
//! `vpmaddubsw` + `vpmaddwd`), then `acc += f32(s) * (d_w d_x)` (8 lanes, summed once per
//! output). The scalar work per block is what limits a memory-bound product, so the scales are
//! handled 8 blocks at a time: the 8 weight scales are gathered and converted from f16 in one
//! go, multiplied by 8 activation scales in one instruction, and the correction terms are one
//! FMA per 8 blocks:
//! - unsigned formats with an offset (Q4_0: `q - 8`, Q5_0: `q - 16`) subtract
//!   `offset Σ_b d_w (d_x Σx)` (the activation block sums, computed once per call);
//! - Q4_1/Q5_1 add `Σ_b m_w s_x` (Q8_1's `s`);
//! - signed formats (Q8_0, Q8_1, IQ4_NL) are biased to unsigned (`q + 128`) and take the
//!   offset path with VNNI, whose `vpdpbusd` has no i16 saturation; AVX2 multiplies
//!   `|q| × sign(x, q)` instead.
//!
//! The 8 blocks' integer sums are reduced together (a horizontal-add tree leaves block `j`'s sum
//! in lane `j`), so the f32 conversion and the scaling are one instruction each per 8 blocks.

use super::{Dot, f16_at, hsum};
use crate::backend::cpu::quant::act::Q8Rows;
use crate::backend::cpu::quant::decode::{self as dec, Block32};
use crate::backend::cpu::quant::legacy::IQ4NL_VALUES;
use crate::backend::cpu::quant::matmul::Tile;
use std::arch::x86_64::*;

pub(super) trait Block32Avx: Block32 {
    /// Values are signed bytes (`x = d q`).
    const SIGNED: bool = false;
    /// For unsigned values: `x = d (q - OFF)` (0 for the affine formats, `x = d q + m`).
    const OFF: i32 = 0;
    /// Byte offsets of the f16 scale and (affine formats) min.
    const D_AT: usize = 0;
    const M_AT: usize = 2;
    /// The 32 values in order in one register.
    unsafe fn q(p: *const u8) -> __m256i;
    /// For signed formats: the values plus 128, as unsigned bytes.
    #[inline(always)]
    unsafe fn q_biased(p: *const u8) -> __m256i {
        _mm256_xor_si256(Self::q(p), _mm256_set1_epi8(-128))
    }
}

/// 16 bytes of nibbles to 32 values: low nibbles are values 0..16, high nibbles 16..32.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let raw = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// `0x10` in byte `v` where bit `v` of the little-endian u32 at `p` is set (the fifth bit of
/// Q5_0/Q5_1).
#[inline(always)]
unsafe fn fifth_bits(p: *const u8) -> __m256i {
    let bits = (p as *const u32).read_unaligned();
    // Byte v takes byte v / 8 of the word; each 128-bit lane holds the whole word.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        ),
    );
    let mask = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, mask), mask);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

impl Block32Avx for dec::Q4_0 {
    const OFF: i32 = 8;
    #[inline(always)]
    unsafe fn q(p: *const u8) -> __m256i {
        nibbles(p.add(2))
    }
}

impl Block32Avx for dec::Q4_1 {
    #[inline(always)]
    unsafe fn q(p: *const u8) -> __m256i {
        nibbles(p.add(4))
    }
}

impl Block32Avx for dec::Q5_0 {
    const OFF: i32 = 16;
    #[inline(always)]
    unsafe fn q(p: *const u8) -> __m256i {
        _mm256_or_si256(nibbles(p.add(6)), fifth_bits(p.add(2)))
    }
}

impl Block32Avx for dec::Q5_1 {
    #[inline(always)]
    unsafe fn q(p: *const u8) -> __m256i {
        _mm256_or_si256(nibbles(p.add(8)), fifth_bits(p.add(4)))
    }
}

impl Block32Avx for dec::Q8_0 {
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn q(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p.add(2) as *const __m256i)
    }
}

impl Block32Avx for dec::Q8_1 {
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn q(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p.add(4) as *const __m256i)
    }
}

/// The IQ4_NL grid, and the grid plus 128 as unsigned bytes.
const IQ4NL_BIASED: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = (IQ4NL_VALUES[i] as i16 + 128) as u8;
        i += 1;
    }
    t
};

#[inline(always)]
unsafe fn lookup16(table: *const u8, idx: __m256i) -> __m256i {
    let t = _mm256_broadcastsi128_si256(_mm_loadu_si128(table as *const __m128i));
    _mm256_shuffle_epi8(t, idx)
}

impl Block32Avx for dec::IQ4_NL {
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn q(p: *const u8) -> __m256i {
        lookup16(IQ4NL_VALUES.as_ptr() as *const u8, nibbles(p.add(2)))
    }
    #[inline(always)]
    unsafe fn q_biased(p: *const u8) -> __m256i {
        lookup16(IQ4NL_BIASED.as_ptr(), nibbles(p.add(2)))
    }
}

/// Runs the tile with the row count as a constant, so the per-row state lives in registers.
#[inline(always)]
pub(super) unsafe fn rows<D: Dot, B: Block32Avx>(t: &Tile<Q8Rows>) {
    match t.mt {
        1 => rows_n::<D, B, 1>(t),
        2 => rows_n::<D, B, 2>(t),
        3 => rows_n::<D, B, 3>(t),
        _ => rows_n::<D, B, 4>(t),
    }
}

/// Activation pointers of a tile.
struct Acts {
    qs: *const i8,
    d: *const f32,
    dsum: *const f32,
    s: *const f32,
}

#[inline(always)]
unsafe fn u16_at(p: *const u8) -> i32 {
    (p as *const u16).read_unaligned() as i32
}

/// The eight f16 at `p`, `p + stride`, ... as f32.
#[inline(always)]
unsafe fn f16x8(p: *const u8, stride: usize) -> __m256 {
    let mut v = _mm_cvtsi32_si128(u16_at(p));
    v = _mm_insert_epi16::<1>(v, u16_at(p.add(stride)));
    v = _mm_insert_epi16::<2>(v, u16_at(p.add(2 * stride)));
    v = _mm_insert_epi16::<3>(v, u16_at(p.add(3 * stride)));
    v = _mm_insert_epi16::<4>(v, u16_at(p.add(4 * stride)));
    v = _mm_insert_epi16::<5>(v, u16_at(p.add(5 * stride)));
    v = _mm_insert_epi16::<6>(v, u16_at(p.add(6 * stride)));
    v = _mm_insert_epi16::<7>(v, u16_at(p.add(7 * stride)));
    _mm256_cvtph_ps(v)
}

/// How a format's values meet the `u8 × i8` product on this instruction set.
struct Mode {
    /// Signed values through `|q| × sign(x, q)` (AVX2 only).
    sign_trick: bool,
    /// Signed values biased by +128 (VNNI).
    biased: bool,
    /// The offset subtracted per activation block sum.
    off: f32,
}

#[inline(always)]
fn mode<D: Dot, B: Block32Avx>() -> Mode {
    let biased = B::SIGNED && D::FULL_U8;
    Mode {
        sign_trick: B::SIGNED && !D::FULL_U8,
        biased,
        off: if biased { 128.0 } else { B::OFF as f32 },
    }
}

#[inline(always)]
unsafe fn values<B: Block32Avx>(md: &Mode, p: *const u8) -> __m256i {
    if md.biased { B::q_biased(p) } else { B::q(p) }
}

/// `Σ q x` of one block in i32 lanes (`q` as returned by [`values`]).
#[inline(always)]
unsafe fn block_dot<D: Dot>(md: &Mode, q: __m256i, mag: __m256i, x: __m256i) -> __m256i {
    if md.sign_trick {
        D::dot_us(_mm256_setzero_si256(), mag, _mm256_sign_epi8(x, q))
    } else {
        D::dot_us(_mm256_setzero_si256(), q, x)
    }
}

/// Lane `j` of the result is the sum of the 8 lanes of `s[j]`.
#[inline(always)]
unsafe fn reduce8(s: [__m256i; 8]) -> __m256i {
    // Per 128-bit half, hadd leaves [a01 a23 b01 b23]; two levels give one partial sum per
    // block and half; adding the two halves completes them.
    let h01 = _mm256_hadd_epi32(s[0], s[1]);
    let h23 = _mm256_hadd_epi32(s[2], s[3]);
    let h45 = _mm256_hadd_epi32(s[4], s[5]);
    let h67 = _mm256_hadd_epi32(s[6], s[7]);
    let lo4 = _mm256_hadd_epi32(h01, h23);
    let hi4 = _mm256_hadd_epi32(h45, h67);
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(lo4, hi4),
        _mm256_permute2x128_si256::<0x31>(lo4, hi4),
    )
}

#[inline(always)]
unsafe fn rows_n<D: Dot, B: Block32Avx, const N: usize>(t: &Tile<Q8Rows>) {
    let a = Acts {
        qs: t.acts.qs.as_ptr(),
        d: t.acts.d.as_ptr(),
        dsum: t.acts.dsum.as_ptr(),
        s: t.acts.s.as_ptr(),
    };
    let md = mode::<D, B>();
    let nb = t.nb;
    let base: [usize; N] = std::array::from_fn(|i| (t.i0 + i) * nb);
    for r in t.r0..t.r1 {
        let w = t.w.as_ptr().add(r * t.row_bytes);
        let mut acc = [_mm256_setzero_ps(); N];
        // Σ d_w dsum_x (offset formats) or Σ m_w s_x (affine formats).
        let mut corr = [_mm256_setzero_ps(); N];
        let mut corr_tail = [0f32; N];
        let mut g = 0;
        while g + 8 <= nb {
            let blk = w.add(g * B::BYTES);
            let dw = f16x8(blk.add(B::D_AT), B::BYTES);
            let mw = if B::AFFINE {
                f16x8(blk.add(B::M_AT), B::BYTES)
            } else {
                _mm256_setzero_ps()
            };
            let mut q = [_mm256_setzero_si256(); 8];
            let mut mag = [_mm256_setzero_si256(); 8];
            for j in 0..8 {
                q[j] = values::<B>(&md, blk.add(j * B::BYTES));
                mag[j] = if md.sign_trick {
                    _mm256_sign_epi8(q[j], q[j])
                } else {
                    q[j]
                };
            }
            for i in 0..N {
                let ix = base[i] + g;
                let xp = a.qs.add(ix * 32);
                let mut s = [_mm256_setzero_si256(); 8];
                for j in 0..8 {
                    let x = _mm256_loadu_si256(xp.add(32 * j) as *const __m256i);
                    s[j] = block_dot::<D>(&md, q[j], mag[j], x);
                }
                let sc = _mm256_mul_ps(dw, _mm256_loadu_ps(a.d.add(ix)));
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(reduce8(s)), sc, acc[i]);
                if B::AFFINE {
                    corr[i] = _mm256_fmadd_ps(mw, _mm256_loadu_ps(a.s.add(ix)), corr[i]);
                } else if md.off != 0.0 {
                    corr[i] = _mm256_fmadd_ps(dw, _mm256_loadu_ps(a.dsum.add(ix)), corr[i]);
                }
            }
            g += 8;
        }
        let mut tail = [_mm256_setzero_ps(); N];
        while g < nb {
            let blk = w.add(g * B::BYTES);
            let dw = f16_at(blk.add(B::D_AT));
            let q = values::<B>(&md, blk);
            let mag = if md.sign_trick {
                _mm256_sign_epi8(q, q)
            } else {
                q
            };
            for i in 0..N {
                let ix = base[i] + g;
                let x = _mm256_loadu_si256(a.qs.add(ix * 32) as *const __m256i);
                let s = _mm256_cvtepi32_ps(block_dot::<D>(&md, q, mag, x));
                let sc = _mm256_set1_ps(dw * *a.d.add(ix));
                tail[i] = _mm256_fmadd_ps(s, sc, tail[i]);
                if B::AFFINE {
                    corr_tail[i] += f16_at(blk.add(B::M_AT)) * *a.s.add(ix);
                } else {
                    corr_tail[i] += dw * *a.dsum.add(ix);
                }
            }
            g += 1;
        }
        for i in 0..N {
            let main = hsum(_mm256_add_ps(acc[i], tail[i]));
            let c = hsum(corr[i]) + corr_tail[i];
            let v = if B::AFFINE {
                main + c
            } else {
                main - md.off * c
            };
            t.put(i, r, v);
        }
    }
}
