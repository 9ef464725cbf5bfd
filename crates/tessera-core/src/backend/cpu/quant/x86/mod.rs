//! x86 kernels on 256-bit registers: AVX2, and AVX2 with the AVX-512 VNNI instructions in
//! their 256-bit (VL) form.
//!
//! Decoders (`blocks32.rs`, `blocks256.rs`) turn weight blocks into unsigned (or, for Q8_0,
//! Q8_1 and IQ4_NL, signed) bytes in registers; the [`Dot`] primitive multiplies those bytes
//! with the Q8 activation bytes. Only the primitive differs between the two sets: VNNI does in one
//! instruction (`vpdpbusd`, `vpdpwssd`) what AVX2 does in two or three (`vpmaddubsw`,
//! `vpmaddwd`, `vpaddd`). The kernels are generic over both and instantiated inside
//! `#[target_feature]` entry points below, so every helper inlines into code compiled for the
//! right instructions. (They avoid closures such as `std::array::from_fn` around intrinsics: a
//! closure that is not inlined is compiled without the target features and turns every
//! intrinsic into a call, which was measured 20x slower.)

pub(super) mod act;
mod blocks256;
mod blocks32;

use super::Isa;
use super::act::{Q8KRows, Q8Rows};
use super::decode as dec;
use super::matmul::{Kernel, Tile};
use crate::quant::GgmlType;
use std::arch::x86_64::*;

/// `u8 × i8` multiply-accumulate into i32 lanes.
pub(super) trait Dot {
    /// `dot_us` takes any unsigned byte (no intermediate i16 saturation).
    const FULL_U8: bool;
    /// `acc + Σ_{4 bytes} u x` per i32 lane. `u <= 128` (AVX2 sums byte pairs in i16).
    unsafe fn dot_us(acc: __m256i, u: __m256i, x: __m256i) -> __m256i;
    /// `acc + Σ_{2 i16} (u x pair sum) s` per i32 lane: each pair of bytes scaled by the i16 in
    /// `s` at the same position. `u < 64`, so a pair sum fits i16.
    unsafe fn dot_scaled(acc: __m256i, u: __m256i, x: __m256i, s: __m256i) -> __m256i;
}

pub(super) struct Avx2;
pub(super) struct Vnni;

impl Dot for Avx2 {
    const FULL_U8: bool = false;
    #[inline(always)]
    unsafe fn dot_us(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(u, x);
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }
    #[inline(always)]
    unsafe fn dot_scaled(acc: __m256i, u: __m256i, x: __m256i, s: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), s))
    }
}

impl Dot for Vnni {
    const FULL_U8: bool = true;
    #[inline(always)]
    unsafe fn dot_us(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, u, x)
    }
    #[inline(always)]
    unsafe fn dot_scaled(acc: __m256i, u: __m256i, x: __m256i, s: __m256i) -> __m256i {
        _mm256_dpwssd_epi32(acc, _mm256_maddubs_epi16(u, x), s)
    }
}

/// The f16 at `p` as f32 (F16C).
#[inline(always)]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Sum of the 8 lanes.
#[inline(always)]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows32_avx2<B: blocks32::Block32Avx>(t: &Tile<Q8Rows>) {
    blocks32::rows::<Avx2, B>(t)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows32_vnni<B: blocks32::Block32Avx>(t: &Tile<Q8Rows>) {
    blocks32::rows::<Vnni, B>(t)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows256_avx2<B: blocks256::Block256Avx>(t: &Tile<Q8KRows>) {
    blocks256::rows::<Avx2, B>(t)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows256_vnni<B: blocks256::Block256Avx>(t: &Tile<Q8KRows>) {
    blocks256::rows::<Vnni, B>(t)
}

fn pick32<B: blocks32::Block32Avx>(isa: Isa) -> Kernel<Q8Rows> {
    if isa == Isa::Vnni {
        rows32_vnni::<B>
    } else {
        rows32_avx2::<B>
    }
}

fn pick256<B: blocks256::Block256Avx>(isa: Isa) -> Kernel<Q8KRows> {
    if isa == Isa::Vnni {
        rows256_vnni::<B>
    } else {
        rows256_avx2::<B>
    }
}

/// `isa` is `Avx2` or `Vnni` (checked by the caller to be supported).
pub(super) fn kernel_q8(isa: Isa, ty: GgmlType) -> Option<Kernel<Q8Rows>> {
    Some(match ty {
        GgmlType::Q4_0 => pick32::<dec::Q4_0>(isa),
        GgmlType::Q4_1 => pick32::<dec::Q4_1>(isa),
        GgmlType::Q5_0 => pick32::<dec::Q5_0>(isa),
        GgmlType::Q5_1 => pick32::<dec::Q5_1>(isa),
        GgmlType::Q8_0 => pick32::<dec::Q8_0>(isa),
        GgmlType::Q8_1 => pick32::<dec::Q8_1>(isa),
        GgmlType::IQ4_NL => pick32::<dec::IQ4_NL>(isa),
        _ => return None,
    })
}

pub(super) fn kernel_q8k(isa: Isa, ty: GgmlType) -> Option<Kernel<Q8KRows>> {
    Some(match ty {
        GgmlType::Q2_K => pick256::<dec::Q2_K>(isa),
        GgmlType::Q3_K => pick256::<dec::Q3_K>(isa),
        GgmlType::Q4_K => pick256::<dec::Q4_K>(isa),
        GgmlType::Q5_K => pick256::<dec::Q5_K>(isa),
        GgmlType::Q6_K => pick256::<dec::Q6_K>(isa),
        _ => return None,
    })
}
