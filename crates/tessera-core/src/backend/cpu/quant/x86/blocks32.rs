//! 32-value block formats against Q8 activations, one block per 256-bit register.
//!
//! Per weight block and activation row: `s = Σ q x` in i32 lanes, then
//! `acc += f32(s) * (d_w d_x)` (8 lanes, summed once per output). Unsigned formats with an
//! offset (Q4_0: `q - 8`, Q5_0: `q - 16`) start the integer sum at `-offset Σx` (the
//! activation block sum), so the offset costs one scalar multiply instead of a byte subtract
//! per block and row. Signed formats (Q8_0, Q8_1, IQ4_NL) use `|q| × sign(x, q)`. Q4_1/Q5_1 add
//! `m_w s_x` (Q8_1's `s`) in scalar.
//!
//! Two accumulator sets alternate between even and odd blocks so that, for a single activation
//! row, consecutive blocks do not wait on one FMA chain.

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
    /// `(q, d, m)`: the 32 values in order in one register, the scale and the min.
    unsafe fn load(p: *const u8) -> (__m256i, f32, f32);
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
    unsafe fn load(p: *const u8) -> (__m256i, f32, f32) {
        (nibbles(p.add(2)), f16_at(p), 0.0)
    }
}

impl Block32Avx for dec::Q4_1 {
    #[inline(always)]
    unsafe fn load(p: *const u8) -> (__m256i, f32, f32) {
        (nibbles(p.add(4)), f16_at(p), f16_at(p.add(2)))
    }
}

impl Block32Avx for dec::Q5_0 {
    const OFF: i32 = 16;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> (__m256i, f32, f32) {
        let q = _mm256_or_si256(nibbles(p.add(6)), fifth_bits(p.add(2)));
        (q, f16_at(p), 0.0)
    }
}

impl Block32Avx for dec::Q5_1 {
    #[inline(always)]
    unsafe fn load(p: *const u8) -> (__m256i, f32, f32) {
        let q = _mm256_or_si256(nibbles(p.add(8)), fifth_bits(p.add(4)));
        (q, f16_at(p), f16_at(p.add(2)))
    }
}

impl Block32Avx for dec::Q8_0 {
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> (__m256i, f32, f32) {
        (
            _mm256_loadu_si256(p.add(2) as *const __m256i),
            f16_at(p),
            0.0,
        )
    }
}

impl Block32Avx for dec::Q8_1 {
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> (__m256i, f32, f32) {
        (
            _mm256_loadu_si256(p.add(4) as *const __m256i),
            f16_at(p),
            0.0,
        )
    }
}

impl Block32Avx for dec::IQ4_NL {
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> (__m256i, f32, f32) {
        let table =
            _mm256_broadcastsi128_si256(_mm_loadu_si128(IQ4NL_VALUES.as_ptr() as *const __m128i));
        (
            _mm256_shuffle_epi8(table, nibbles(p.add(2))),
            f16_at(p),
            0.0,
        )
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
    sum: *const i32,
    s: *const f32,
}

#[inline(always)]
unsafe fn rows_n<D: Dot, B: Block32Avx, const N: usize>(t: &Tile<Q8Rows>) {
    let a = Acts {
        qs: t.acts.qs.as_ptr(),
        d: t.acts.d.as_ptr(),
        sum: t.acts.sum.as_ptr(),
        s: t.acts.s.as_ptr(),
    };
    let nb = t.nb;
    let base: [usize; N] = std::array::from_fn(|i| (t.i0 + i) * nb);
    for r in t.r0..t.r1 {
        let w = t.w.as_ptr().add(r * t.row_bytes);
        let mut acc = [[_mm256_setzero_ps(); N]; 2];
        let mut macc = [[0f32; N]; 2];
        let mut b = 0;
        while b + 2 <= nb {
            let [a0, a1] = &mut acc;
            let [m0, m1] = &mut macc;
            step::<D, B, N>(w, b, &base, &a, a0, m0);
            step::<D, B, N>(w, b + 1, &base, &a, a1, m1);
            b += 2;
        }
        if b < nb {
            step::<D, B, N>(w, b, &base, &a, &mut acc[0], &mut macc[0]);
        }
        for i in 0..N {
            let v = hsum(_mm256_add_ps(acc[0][i], acc[1][i])) + macc[0][i] + macc[1][i];
            t.put(i, r, v);
        }
    }
}

#[inline(always)]
unsafe fn step<D: Dot, B: Block32Avx, const N: usize>(
    w: *const u8,
    b: usize,
    base: &[usize; N],
    a: &Acts,
    acc: &mut [__m256; N],
    macc: &mut [f32; N],
) {
    let (q, dw, mw) = B::load(w.add(b * B::BYTES));
    let mag = if B::SIGNED { _mm256_sign_epi8(q, q) } else { q };
    for i in 0..N {
        let idx = base[i] + b;
        let x = _mm256_loadu_si256(a.qs.add(idx * 32) as *const __m256i);
        let s = if B::SIGNED {
            D::dot_us(_mm256_setzero_si256(), mag, _mm256_sign_epi8(x, q))
        } else if B::OFF != 0 {
            let off = _mm256_zextsi128_si256(_mm_cvtsi32_si128(-B::OFF * *a.sum.add(idx)));
            D::dot_us(off, q, x)
        } else {
            D::dot_us(_mm256_setzero_si256(), q, x)
        };
        let scale = _mm256_set1_ps(dw * *a.d.add(idx));
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[i]);
        if B::AFFINE {
            macc[i] += mw * *a.s.add(idx);
        }
    }
}
