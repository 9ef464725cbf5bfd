//! 32-value block formats against Q8 activations.
//!
//! Per weight block and activation row the kernel forms `Σ q x` with `u8 × i8` multiply-adds
//! (`vpdpbusd`, or `vpmaddubsw` + `vpmaddwd`) and scales it by `d_w d_x`. What limits a
//! memory-bound product is the work around the multiply-adds, so blocks are handled in groups
//! of 8 (256 values):
//! - Two blocks share a register: `[a 0..16 | b 0..16]` and `[a 16..32 | b 16..32]` (the
//!   activations are stored in the same paired layout, `act::pair_row`). For the 4-bit formats
//!   that is one 32-byte load, a shift and two masks for two blocks; and the integer sums come
//!   out with 4 lanes per block instead of 8.
//! - A 3-instruction horizontal-add tree turns the 4 pair registers into one vector holding one
//!   sum per block (in `act::PAIR_ORDER`), so the f32 conversion and the scaling by the 8
//!   `d_w d_x` are one instruction each per group. The 8 weight scales are gathered from f16
//!   in the same order with one conversion.
//! - Offset formats (Q4_0: `q - 8`, Q5_0: `q - 16`) are multiplied unsigned and corrected by
//!   `offset Σ_b d_w (d_x Σx)` (activation block sums computed once per call), Q4_1/Q5_1 add
//!   `Σ_b m_w s_x` (Q8_1's `s`): one FMA per group either way. Signed formats (Q8_0, Q8_1,
//!   IQ4_NL) are biased to unsigned (`q + 128`) and take the offset path with VNNI, whose
//!   `vpdpbusd` has no i16 saturation; AVX2 multiplies `|q| × sign(x, q)` instead.
//!
//! Four blocks after the last full group form a half group (two pairs; `act::HALF_ORDER`);
//! any blocks after that are handled one at a time in the natural layout.

use super::{Dot, f16_at, hsum};
use crate::backend::cpu::quant::act::{HALF_ORDER, PAIR_ORDER, Q8Rows};
use crate::backend::cpu::quant::decode::{self as dec, Block32};
use crate::backend::cpu::quant::legacy::IQ4NL_VALUES;
use crate::backend::cpu::quant::matmul::Tile;
use std::arch::x86_64::*;

pub(super) trait Block32Avx: Block32 {
    /// Values are signed bytes (`x = d q`).
    const SIGNED: bool = false;
    /// For unsigned values: `x = d (q - OFF)` (0 for the affine formats, `x = d q + m`).
    const OFF: i32 = 0;
    /// The largest unsigned value (for the i16 accumulation of the AVX2 panel kernels).
    const QMAX: i32 = 15;
    /// Byte offsets of the f16 scale and (affine formats) min.
    const D_AT: usize = 0;
    const M_AT: usize = 2;
    /// The 32 values of one block in order.
    unsafe fn q<D: Dot>(p: *const u8) -> __m256i;
    /// Two blocks' values as `([a 0..16 | b 0..16], [a 16..32 | b 16..32])`.
    unsafe fn pair<D: Dot>(a: *const u8, b: *const u8) -> (__m256i, __m256i);
    /// For signed formats: the values plus 128, as unsigned bytes.
    #[inline(always)]
    unsafe fn biased(v: __m256i) -> __m256i {
        _mm256_xor_si256(v, _mm256_set1_epi8(-128))
    }
}

#[inline(always)]
unsafe fn load2x16(a: *const u8, b: *const u8) -> __m256i {
    _mm256_loadu2_m128i(b as *const __m128i, a as *const __m128i)
}

/// 16 bytes of nibbles to 32 values: low nibbles are values 0..16, high nibbles 16..32.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let raw = _mm_loadu_si128(p as *const __m128i);
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Two blocks' nibbles (`qs` at `a`, `b`) in the pair layout.
#[inline(always)]
unsafe fn nibbles_pair(a: *const u8, b: *const u8) -> (__m256i, __m256i) {
    let raw = load2x16(a, b);
    let m4 = _mm256_set1_epi8(0x0F);
    (
        _mm256_and_si256(raw, m4),
        _mm256_and_si256(_mm256_srli_epi16::<4>(raw), m4),
    )
}

#[inline(always)]
unsafe fn u32_at(p: *const u8) -> u32 {
    (p as *const u32).read_unaligned()
}

/// `v` with `0x10` added to byte `j` where bit `j` of `bits` is set (the fifth bit of
/// Q5_0/Q5_1; bit 4 of `v` is clear).
#[inline(always)]
pub(super) unsafe fn with_fifth<D: Dot>(v: __m256i, bits: u32) -> __m256i {
    if D::MASKS {
        // The AVX-512 path has byte masks: the bits are a mask for one masked add.
        return _mm256_mask_add_epi8(v, bits, v, _mm256_set1_epi8(0x10));
    }
    _mm256_or_si256(v, fifth_bits(bits))
}

/// `0x10` in byte `v` where bit `v` of `bits` is set.
#[inline(always)]
unsafe fn fifth_bits(bits: u32) -> __m256i {
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

/// Q5 pair: nibbles at `qs` offset, fifth bits from the `qh` words (bits 0..16 belong to values
/// 0..16 of their block, 16..32 to values 16..32).
#[inline(always)]
unsafe fn q5_pair<D: Dot>(a: *const u8, b: *const u8, qh: usize, qs: usize) -> (__m256i, __m256i) {
    let (lo, hi) = nibbles_pair(a.add(qs), b.add(qs));
    let (ha, hb) = (u32_at(a.add(qh)), u32_at(b.add(qh)));
    let lo_bits = (ha & 0xFFFF) | (hb << 16);
    let hi_bits = (ha >> 16) | (hb & 0xFFFF_0000);
    (with_fifth::<D>(lo, lo_bits), with_fifth::<D>(hi, hi_bits))
}

impl Block32Avx for dec::Q4_0 {
    const OFF: i32 = 8;
    #[inline(always)]
    unsafe fn q<D: Dot>(p: *const u8) -> __m256i {
        nibbles(p.add(2))
    }
    #[inline(always)]
    unsafe fn pair<D: Dot>(a: *const u8, b: *const u8) -> (__m256i, __m256i) {
        nibbles_pair(a.add(2), b.add(2))
    }
}

impl Block32Avx for dec::Q4_1 {
    #[inline(always)]
    unsafe fn q<D: Dot>(p: *const u8) -> __m256i {
        nibbles(p.add(4))
    }
    #[inline(always)]
    unsafe fn pair<D: Dot>(a: *const u8, b: *const u8) -> (__m256i, __m256i) {
        nibbles_pair(a.add(4), b.add(4))
    }
}

impl Block32Avx for dec::Q5_0 {
    const OFF: i32 = 16;
    const QMAX: i32 = 31;
    #[inline(always)]
    unsafe fn q<D: Dot>(p: *const u8) -> __m256i {
        with_fifth::<D>(nibbles(p.add(6)), u32_at(p.add(2)))
    }
    #[inline(always)]
    unsafe fn pair<D: Dot>(a: *const u8, b: *const u8) -> (__m256i, __m256i) {
        q5_pair::<D>(a, b, 2, 6)
    }
}

impl Block32Avx for dec::Q5_1 {
    const QMAX: i32 = 31;
    #[inline(always)]
    unsafe fn q<D: Dot>(p: *const u8) -> __m256i {
        with_fifth::<D>(nibbles(p.add(8)), u32_at(p.add(4)))
    }
    #[inline(always)]
    unsafe fn pair<D: Dot>(a: *const u8, b: *const u8) -> (__m256i, __m256i) {
        q5_pair::<D>(a, b, 4, 8)
    }
}

/// Signed bytes at offset `at` of each block, in the pair layout.
#[inline(always)]
unsafe fn bytes_pair(a: *const u8, b: *const u8, at: usize) -> (__m256i, __m256i) {
    (
        load2x16(a.add(at), b.add(at)),
        load2x16(a.add(at + 16), b.add(at + 16)),
    )
}

impl Block32Avx for dec::Q8_0 {
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn q<D: Dot>(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p.add(2) as *const __m256i)
    }
    #[inline(always)]
    unsafe fn pair<D: Dot>(a: *const u8, b: *const u8) -> (__m256i, __m256i) {
        bytes_pair(a, b, 2)
    }
}

impl Block32Avx for dec::Q8_1 {
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn q<D: Dot>(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p.add(4) as *const __m256i)
    }
    #[inline(always)]
    unsafe fn pair<D: Dot>(a: *const u8, b: *const u8) -> (__m256i, __m256i) {
        bytes_pair(a, b, 4)
    }
}

#[inline(always)]
unsafe fn lookup16(table: *const u8, idx: __m256i) -> __m256i {
    let t = _mm256_broadcastsi128_si256(_mm_loadu_si128(table as *const __m128i));
    _mm256_shuffle_epi8(t, idx)
}

impl Block32Avx for dec::IQ4_NL {
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn q<D: Dot>(p: *const u8) -> __m256i {
        lookup16(IQ4NL_VALUES.as_ptr() as *const u8, nibbles(p.add(2)))
    }
    #[inline(always)]
    unsafe fn pair<D: Dot>(a: *const u8, b: *const u8) -> (__m256i, __m256i) {
        let (lo, hi) = nibbles_pair(a.add(2), b.add(2));
        let t = IQ4NL_VALUES.as_ptr() as *const u8;
        (lookup16(t, lo), lookup16(t, hi))
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

/// The f16 at `p + PAIR_ORDER[i] * stride` in lane `i`, as f32.
#[inline(always)]
unsafe fn f16x8(p: *const u8, stride: usize) -> __m256 {
    let at = |i: usize| p.add(PAIR_ORDER[i] * stride);
    let mut v = _mm_cvtsi32_si128(u16_at(at(0)));
    v = _mm_insert_epi16::<1>(v, u16_at(at(1)));
    v = _mm_insert_epi16::<2>(v, u16_at(at(2)));
    v = _mm_insert_epi16::<3>(v, u16_at(at(3)));
    v = _mm_insert_epi16::<4>(v, u16_at(at(4)));
    v = _mm_insert_epi16::<5>(v, u16_at(at(5)));
    v = _mm_insert_epi16::<6>(v, u16_at(at(6)));
    v = _mm_insert_epi16::<7>(v, u16_at(at(7)));
    _mm256_cvtph_ps(v)
}

/// The f16 fields of four consecutive blocks (at `p + j * stride`) as f32 in lanes 0, 1, 4, 5
/// in [`HALF_ORDER`], the other lanes zero: the layout of a half group's block sums.
#[inline(always)]
unsafe fn f16x4(p: *const u8, stride: usize) -> __m256 {
    let at = |i: usize| p.add(HALF_ORDER[i] * stride);
    let mut v = _mm_cvtsi32_si128(u16_at(at(0)));
    v = _mm_insert_epi16::<1>(v, u16_at(at(1)));
    v = _mm_insert_epi16::<4>(v, u16_at(at(2)));
    v = _mm_insert_epi16::<5>(v, u16_at(at(3)));
    _mm256_cvtph_ps(v)
}

/// Four f32 activation values stored in [`HALF_ORDER`] at `p`, in lanes 0, 1, 4, 5 (the other
/// lanes hold copies; they meet zeros).
#[inline(always)]
unsafe fn f32x4_half(p: *const f32) -> __m256 {
    let v = _mm_loadu_ps(p);
    _mm256_set_m128(_mm_movehl_ps(v, v), v)
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

/// A register of weight values ready for [`dot`]: the multiplicand and, for the sign trick,
/// the signs.
#[derive(Clone, Copy)]
struct Wv {
    u: __m256i,
    sign: __m256i,
}

#[inline(always)]
unsafe fn prepare<B: Block32Avx>(md: &Mode, v: __m256i) -> Wv {
    if md.biased {
        Wv {
            u: B::biased(v),
            sign: v,
        }
    } else if md.sign_trick {
        Wv {
            u: _mm256_sign_epi8(v, v),
            sign: v,
        }
    } else {
        Wv { u: v, sign: v }
    }
}

/// `acc + Σ w x` in i32 lanes.
#[inline(always)]
unsafe fn dot<D: Dot>(md: &Mode, acc: __m256i, w: Wv, x: __m256i) -> __m256i {
    if md.sign_trick {
        D::dot_us(acc, w.u, _mm256_sign_epi8(x, w.sign))
    } else {
        D::dot_us(acc, w.u, x)
    }
}

#[inline(always)]
unsafe fn load(p: *const i8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// A group's f16 fields (scales at `p`, or mins) in the lanes of its block sums. (Functions,
/// not closures: see the module docs of `x86`.)
#[inline(always)]
unsafe fn group_scales<B: Block32Avx, const HALF: bool>(p: *const u8) -> __m256 {
    if HALF {
        f16x4(p, B::BYTES)
    } else {
        f16x8(p, B::BYTES)
    }
}

/// A group's per-block activation values at `p`, in the lanes of its block sums.
#[inline(always)]
unsafe fn group_acts<const HALF: bool>(p: *const f32) -> __m256 {
    if HALF {
        f32x4_half(p)
    } else {
        _mm256_loadu_ps(p)
    }
}

/// One group of blocks starting at block `g` (weights at `blk`) against the tile's activation
/// rows: 8 blocks (4 pairs, block sums in [`PAIR_ORDER`]) or, with `HALF`, 4 blocks (2 pairs,
/// sums in lanes 0, 1, 4, 5 in [`HALF_ORDER`], the other lanes zero).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn group<D: Dot, B: Block32Avx, const N: usize, const HALF: bool>(
    md: &Mode,
    blk: *const u8,
    a: &Acts,
    base: &[usize; N],
    g: usize,
    acc: &mut [__m256; N],
    corr: &mut [__m256; N],
) {
    let pairs = if HALF { 2 } else { 4 };
    let zero = _mm256_setzero_si256();
    let dw = group_scales::<B, HALF>(blk.add(B::D_AT));
    let mw = if B::AFFINE {
        group_scales::<B, HALF>(blk.add(B::M_AT))
    } else {
        _mm256_setzero_ps()
    };
    let mut lo = [Wv {
        u: zero,
        sign: zero,
    }; 4];
    let mut hi = lo;
    for p in 0..pairs {
        let (l, h) = B::pair::<D>(blk.add(2 * p * B::BYTES), blk.add((2 * p + 1) * B::BYTES));
        lo[p] = prepare::<B>(md, l);
        hi[p] = prepare::<B>(md, h);
    }
    for i in 0..N {
        let ix = base[i] + g;
        let xp = a.qs.add(ix * 32);
        let mut s = [zero; 4];
        for p in 0..pairs {
            let sp = dot::<D>(md, zero, lo[p], load(xp.add(64 * p)));
            s[p] = dot::<D>(md, sp, hi[p], load(xp.add(64 * p + 32)));
        }
        // Each lane a whole block's sum: [b0 b2 b4 b6 | b1 b3 b5 b7], or [b0 b2 0 0 | b1 b3 0 0].
        let h = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
        let sc = _mm256_mul_ps(dw, group_acts::<HALF>(a.d.add(ix)));
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(h), sc, acc[i]);
        if B::AFFINE {
            corr[i] = _mm256_fmadd_ps(mw, group_acts::<HALF>(a.s.add(ix)), corr[i]);
        } else if md.off != 0.0 {
            corr[i] = _mm256_fmadd_ps(dw, group_acts::<HALF>(a.dsum.add(ix)), corr[i]);
        }
    }
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
    let zero = _mm256_setzero_si256();
    for r in t.r0..t.r1 {
        let w = t.w.as_ptr().add(r * t.row_bytes);
        let mut acc = [_mm256_setzero_ps(); N];
        // Σ d_w dsum_x (offset formats) or Σ m_w s_x (affine formats).
        let mut corr = [_mm256_setzero_ps(); N];
        let mut g = 0;
        while g + 8 <= nb {
            group::<D, B, N, false>(&md, w.add(g * B::BYTES), &a, &base, g, &mut acc, &mut corr);
            g += 8;
        }
        if g + 4 <= nb {
            group::<D, B, N, true>(&md, w.add(g * B::BYTES), &a, &base, g, &mut acc, &mut corr);
            g += 4;
        }
        let mut tail = [_mm256_setzero_ps(); N];
        let mut corr_tail = [0f32; N];
        while g < nb {
            let blk = w.add(g * B::BYTES);
            let dw = f16_at(blk.add(B::D_AT));
            let q = prepare::<B>(&md, B::q::<D>(blk));
            for i in 0..N {
                let ix = base[i] + g;
                let s = _mm256_cvtepi32_ps(dot::<D>(&md, zero, q, load(a.qs.add(ix * 32))));
                tail[i] = _mm256_fmadd_ps(s, _mm256_set1_ps(dw * *a.d.add(ix)), tail[i]);
                corr_tail[i] += if B::AFFINE {
                    f16_at(blk.add(B::M_AT)) * *a.s.add(ix)
                } else {
                    dw * *a.dsum.add(ix)
                };
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
