//! x86 kernels on 256-bit registers: AVX2, AVX2 with AVX-VNNI (the VEX-encoded multiply-adds
//! of Intel's client CPUs since Alder Lake), and AVX2 with the AVX-512 VNNI instructions in
//! their 256-bit (VL) form.
//!
//! Decoders (`blocks32.rs`, `blocks256.rs`) turn weight blocks into unsigned (or, for Q8_0,
//! Q8_1 and IQ4_NL, signed) bytes in registers; the [`Dot`] primitive multiplies those bytes
//! with the Q8 activation bytes. Only the primitive differs between the sets: VNNI does in one
//! instruction (`vpdpbusd`, `vpdpwssd`) what AVX2 does in two or three (`vpmaddubsw`,
//! `vpmaddwd`, `vpaddd`); AVX-512 adds byte masks (Q5's fifth bits) and 512-bit prefill panels.
//! The kernels are generic over the three and instantiated inside
//! `#[target_feature]` entry points below, so every helper inlines into code compiled for the
//! right instructions. (They avoid closures such as `std::array::from_fn` around intrinsics: a
//! closure that is not inlined is compiled without the target features and turns every
//! intrinsic into a call, which was measured 20x slower.)

pub(super) mod act;
mod blocks256;
mod blocks256x8;
mod blocks32;
mod blocks32x8;
mod panel;
pub(super) mod to_bf16;

use super::Isa;
use super::act::{KExtras, Q8KRows, Q8Rows};
use super::decode as dec;
use super::matmul::{Kernel, Tile};
use crate::quant::GgmlType;
use std::arch::x86_64::*;

/// `u8 × i8` multiply-accumulate into i32 lanes.
pub(super) trait Dot {
    /// `dot_us` takes any unsigned byte (no intermediate i16 saturation).
    const FULL_U8: bool;
    /// AVX-512BW/VL byte masks are available (one masked add instead of a shuffle, compare and
    /// or).
    const MASKS: bool;
    /// `acc + Σ_{4 bytes} u x` per i32 lane. `u <= 128` (AVX2 sums byte pairs in i16).
    unsafe fn dot_us(acc: __m256i, u: __m256i, x: __m256i) -> __m256i;
    /// `acc + Σ_{2 i16} (u x pair sum) s` per i32 lane: each pair of bytes scaled by the i16 in
    /// `s` at the same position. `u < 64`, so a pair sum fits i16.
    unsafe fn dot_scaled(acc: __m256i, u: __m256i, x: __m256i, s: __m256i) -> __m256i;
    /// `acc + Σ_{2 i16} a b` per i32 lane.
    unsafe fn dot_ww(acc: __m256i, a: __m256i, b: __m256i) -> __m256i;
}

pub(super) struct Avx2;
pub(super) struct AvxVnni;
pub(super) struct Vnni;

impl Dot for Avx2 {
    const FULL_U8: bool = false;
    const MASKS: bool = false;
    #[inline(always)]
    unsafe fn dot_us(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(u, x);
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }
    #[inline(always)]
    unsafe fn dot_scaled(acc: __m256i, u: __m256i, x: __m256i, s: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), s))
    }
    #[inline(always)]
    unsafe fn dot_ww(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
    }
}

impl Dot for AvxVnni {
    const FULL_U8: bool = true;
    const MASKS: bool = false;
    #[inline(always)]
    unsafe fn dot_us(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(acc, u, x)
    }
    #[inline(always)]
    unsafe fn dot_scaled(acc: __m256i, u: __m256i, x: __m256i, s: __m256i) -> __m256i {
        _mm256_dpwssd_avx_epi32(acc, _mm256_maddubs_epi16(u, x), s)
    }
    #[inline(always)]
    unsafe fn dot_ww(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_dpwssd_avx_epi32(acc, a, b)
    }
}

impl Dot for Vnni {
    const FULL_U8: bool = true;
    const MASKS: bool = true;
    #[inline(always)]
    unsafe fn dot_us(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, u, x)
    }
    #[inline(always)]
    unsafe fn dot_scaled(acc: __m256i, u: __m256i, x: __m256i, s: __m256i) -> __m256i {
        _mm256_dpwssd_epi32(acc, _mm256_maddubs_epi16(u, x), s)
    }
    #[inline(always)]
    unsafe fn dot_ww(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_dpwssd_epi32(acc, a, b)
    }
}

/// The f16 at `p` as f32 (F16C).
#[inline(always)]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Sum of the 8 lanes.
pub(super) use crate::backend::cpu::simd::x86::hsum8 as hsum;

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows32_avx2<B: blocks32::Block32Avx>(t: &Tile<Q8Rows>) {
    blocks32::rows::<Avx2, B>(t)
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn rows32_avxvnni<B: blocks32::Block32Avx>(t: &Tile<Q8Rows>) {
    blocks32::rows::<AvxVnni, B>(t)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows32_vnni<B: blocks32::Block32Avx>(t: &Tile<Q8Rows>) {
    blocks32::rows::<Vnni, B>(t)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_x8_avx2<F: blocks32x8::Format>(t: &Tile<Q8Rows>) {
    blocks32x8::rows::<Avx2, F>(t)
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn rows_x8_avxvnni<F: blocks32x8::Format>(t: &Tile<Q8Rows>) {
    blocks32x8::rows::<AvxVnni, F>(t)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_x8_vnni<F: blocks32x8::Format>(t: &Tile<Q8Rows>) {
    blocks32x8::rows::<Vnni, F>(t)
}

/// The interleaved decode kernel for a format that only `vpdpbusd` multiplies (the 8-bit
/// affine layouts, which exist only where it does: `quant::affine8_for_cpu_in`; the caller
/// refuses them on plain AVX2): the AVX-VNNI kernel on `AvxVnni`, else the AVX-512 VNNI one.
fn pick_x8_vpdpbusd<F: blocks32x8::Format>(isa: Isa) -> Kernel<Q8Rows> {
    if isa == Isa::AvxVnni {
        rows_x8_avxvnni::<F>
    } else {
        rows_x8_vnni::<F>
    }
}

/// The interleaved decode kernel for format `F` on `isa` (AVX2 and up).
fn pick_x8<F: blocks32x8::Format>(isa: Isa) -> Kernel<Q8Rows> {
    match isa {
        Isa::Vnni => rows_x8_vnni::<F>,
        Isa::AvxVnni => rows_x8_avxvnni::<F>,
        _ => rows_x8_avx2::<F>,
    }
}

/// The decode kernel for the interleaved `layout` (Q4_0x8, Q4_1x8 and its shared-header forms,
/// Q5_0x8 or Q8_0x8; natural activation blocks; row ranges in whole groups of 8).
pub(super) fn kernel_x8(isa: Isa, layout: GgmlType) -> Kernel<Q8Rows> {
    use blocks32x8::{A8x8, Q4_0x8, Q4_1x8, Q4_1x8s2, Q4_1x8s4, Q5_0x8, Q8_0x8};
    match layout {
        GgmlType::Q4_1x8 => pick_x8::<Q4_1x8>(isa),
        GgmlType::Q4_1x8s2 => pick_x8::<Q4_1x8s2>(isa),
        GgmlType::Q4_1x8s4 => pick_x8::<Q4_1x8s4>(isa),
        GgmlType::A8x8 => pick_x8_vpdpbusd::<A8x8<1>>(isa),
        GgmlType::A8x8s2 => pick_x8_vpdpbusd::<A8x8<2>>(isa),
        GgmlType::A8x8s4 => pick_x8_vpdpbusd::<A8x8<4>>(isa),
        GgmlType::Q5_0x8 => pick_x8::<Q5_0x8>(isa),
        GgmlType::Q8_0x8 => pick_x8::<Q8_0x8>(isa),
        _ => pick_x8::<Q4_0x8>(isa),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_k4x8_avx2<const FIFTH: bool>(t: &Tile<Q8KRows>) {
    blocks256x8::rows_k4::<Avx2, FIFTH>(t)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_q6kx8_avx2(t: &Tile<Q8KRows>) {
    blocks256x8::rows_q6k::<Avx2>(t)
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn rows_k4x8_avxvnni<const FIFTH: bool>(t: &Tile<Q8KRows>) {
    blocks256x8::rows_k4::<AvxVnni, FIFTH>(t)
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn rows_q6kx8_avxvnni(t: &Tile<Q8KRows>) {
    blocks256x8::rows_q6k::<AvxVnni>(t)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_k4x8_vnni<const FIFTH: bool>(t: &Tile<Q8KRows>) {
    blocks256x8::rows_k4::<Vnni, FIFTH>(t)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_q6kx8_vnni(t: &Tile<Q8KRows>) {
    blocks256x8::rows_q6k::<Vnni>(t)
}

/// The decode kernel for the interleaved layout of the K-quant `base` (Q4_K, Q5_K or Q6_K; Q8_K
/// activations with their 32-value sums; row ranges in whole groups of 8), `None` for the
/// 32-value formats.
pub(super) fn kernel_x8k(isa: Isa, base: GgmlType) -> Option<Kernel<Q8KRows>> {
    Some(match (base, isa) {
        (GgmlType::Q4_K, Isa::Vnni) => rows_k4x8_vnni::<false>,
        (GgmlType::Q4_K, Isa::AvxVnni) => rows_k4x8_avxvnni::<false>,
        (GgmlType::Q4_K, _) => rows_k4x8_avx2::<false>,
        (GgmlType::Q5_K, Isa::Vnni) => rows_k4x8_vnni::<true>,
        (GgmlType::Q5_K, Isa::AvxVnni) => rows_k4x8_avxvnni::<true>,
        (GgmlType::Q5_K, _) => rows_k4x8_avx2::<true>,
        (GgmlType::Q6_K, Isa::Vnni) => rows_q6kx8_vnni,
        (GgmlType::Q6_K, Isa::AvxVnni) => rows_q6kx8_avxvnni,
        (GgmlType::Q6_K, _) => rows_q6kx8_avx2,
        _ => return None,
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows256_avx2<B: blocks256::Block256Avx>(t: &Tile<Q8KRows>) {
    blocks256::rows::<Avx2, B>(t)
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn rows256_avxvnni<B: blocks256::Block256Avx>(t: &Tile<Q8KRows>) {
    blocks256::rows::<AvxVnni, B>(t)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows256_vnni<B: blocks256::Block256Avx>(t: &Tile<Q8KRows>) {
    blocks256::rows::<Vnni, B>(t)
}

fn pick32<B: blocks32::Block32Avx>(isa: Isa) -> Kernel<Q8Rows> {
    match isa {
        Isa::Vnni => rows32_vnni::<B>,
        Isa::AvxVnni => rows32_avxvnni::<B>,
        _ => rows32_avx2::<B>,
    }
}

fn pick256<B: blocks256::Block256Avx>(isa: Isa) -> Kernel<Q8KRows> {
    match isa {
        Isa::Vnni => rows256_vnni::<B>,
        Isa::AvxVnni => rows256_avxvnni::<B>,
        _ => rows256_avx2::<B>,
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

// Prefill (panel) kernels, see `panel.rs`. The register tile: AVX2 (16 vector registers)
// takes 8 weight rows (one ymm) by 4 activation rows; AVX-VNNI 16 weight rows (two ymm) by 4,
// since its one-instruction multiply-add needs no i16 partial sums beside the accumulators;
// VNNI (AVX-512, 32 registers) 16 weight rows (one zmm) by 8 activation rows, whose activation
// broadcasts fold into `vpdpbusd`. Measured (`TESSERA_SIMD=avxvnni|avx2 tessera bench llm
// --prompt-tokens 256 --gen-tokens 0`, 2 threads, tok/s, two rounds): AVX-VNNI 8 x 4 / 8 x 6 /
// 8 x 8 / 16 x 3 / 16 x 4 / 16 x 5 / 16 x 6: SmolLM2 Q4_1 1025-1119 / 1151-1170 / 1126-1155 /
// 1075-1135 / 1129-1215 / 1086-1143 / 979-1036, Gemma 3 Q4_K 1325-1338 / 1283-1322 /
// 1329-1343 / 1351-1389 / 1385-1429 / 1329-1336 / 1356-1373, 0.5B-shape Q4_0 458-465 /
// 439-459 / 453-476 / 503-530 / 479-524 / 484-492 / 463-481; AVX2 at 16 x 4 instead of 8 x 4
// was 5-18% slower (884-916 against 968-972 on SmolLM2).
// On a real AVX2 core (AMD Zen 3, 2026-11-28, same command at 512 tokens, 0.5B-shape, three or
// four alternated rounds): Q8_0 8 x 4 / 8 x 6 / 16 x 4: 136-149 / 160-173 / 185-197 tok/s;
// Q4_0 8 x 4 / 16 x 4: 243-256 / 201-235. The signed formats widen every `vpmaddubsw` result
// at once (no room in i16 for a second block), more work per weight vector than the 4-bit ones,
// so a second weight vector per activation broadcast pays; they take 16 x 4.
const R_AVX2: usize = 1;
const R_AVX2_SIGNED: usize = 2;
const C_AVX2: usize = 4;
const R_AVXVNNI: usize = 2;
const C_AVXVNNI: usize = 4;
const RZ_VNNI: usize = 1;
const CZ_VNNI: usize = 8;

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn panel32_avx2_run<B: blocks32::Block32Avx, const R: usize>(
    t: &Tile<Q8Rows>,
    s: *mut u8,
    g: usize,
) {
    panel::run32::<Avx2, B, R, C_AVX2>(t, s, g)
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn panel32_avxvnni_run<B: blocks32::Block32Avx>(t: &Tile<Q8Rows>, s: *mut u8, g: usize) {
    panel::run32::<AvxVnni, B, R_AVXVNNI, C_AVXVNNI>(t, s, g)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn panel32_vnni_run<B: blocks32::Block32Avx>(t: &Tile<Q8Rows>, s: *mut u8, g: usize) {
    panel::run32z::<B, RZ_VNNI, CZ_VNNI>(t, s, g)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn panel256_avx2_run<B: blocks256::Block256Avx>(t: &Tile<Q8KRows>, s: *mut u8, g: usize) {
    panel::run256::<Avx2, B, R_AVX2, C_AVX2>(t, s, g)
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn panel256_avxvnni_run<B: blocks256::Block256Avx>(t: &Tile<Q8KRows>, s: *mut u8, g: usize) {
    panel::run256::<AvxVnni, B, R_AVXVNNI, C_AVXVNNI>(t, s, g)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn panel256_vnni_run<B: blocks256::Block256Avx>(t: &Tile<Q8KRows>, s: *mut u8, g: usize) {
    panel::run256z::<B, RZ_VNNI, CZ_VNNI>(t, s, g)
}

// The entry points take the thread's scratch buffer outside the `#[target_feature]` functions
// (no closure runs inside them, see the module docs).

/// # Safety
/// The CPU has AVX2; the tile contract of [`Kernel`].
unsafe fn panel32_avx2<B: blocks32::Block32Avx>(t: &Tile<Q8Rows>) {
    if B::SIGNED {
        panel32_avx2_tile::<B, R_AVX2_SIGNED>(t)
    } else {
        panel32_avx2_tile::<B, R_AVX2>(t)
    }
}

/// [`panel32_avx2`] with `8 R` weight rows per register tile.
///
/// # Safety
/// As [`panel32_avx2`].
unsafe fn panel32_avx2_tile<B: blocks32::Block32Avx, const R: usize>(t: &Tile<Q8Rows>) {
    let per_row = panel::stride32(R, B::AFFINE) / (8 * R) * t.nb;
    panel::with_group(t.r1 - t.r0, per_row, 8 * R, |s, g| {
        // SAFETY: the caller's contract; `s` holds a group of `g` rows of panels.
        unsafe { panel32_avx2_run::<B, R>(t, s, g) }
    });
}

/// # Safety
/// The CPU has AVX-VNNI; the tile contract of [`Kernel`].
unsafe fn panel32_avxvnni<B: blocks32::Block32Avx>(t: &Tile<Q8Rows>) {
    let per_row = panel::stride32(R_AVXVNNI, B::AFFINE) / (8 * R_AVXVNNI) * t.nb;
    panel::with_group(t.r1 - t.r0, per_row, 8 * R_AVXVNNI, |s, g| {
        // SAFETY: the caller's contract; `s` holds a group of `g` rows of panels.
        unsafe { panel32_avxvnni_run::<B>(t, s, g) }
    });
}

/// # Safety
/// The CPU has the VNNI set; the tile contract of [`Kernel`].
unsafe fn panel32_vnni<B: blocks32::Block32Avx>(t: &Tile<Q8Rows>) {
    let per_row = panel::stride32(2 * RZ_VNNI, B::AFFINE) / (16 * RZ_VNNI) * t.nb;
    panel::with_group(t.r1 - t.r0, per_row, 16 * RZ_VNNI, |s, g| {
        // SAFETY: as above.
        unsafe { panel32_vnni_run::<B>(t, s, g) }
    });
}

/// # Safety
/// As [`panel32_avx2`].
unsafe fn panel256_avx2<B: blocks256::Block256Avx>(t: &Tile<Q8KRows>) {
    let per_row = panel::stride256(R_AVX2, B::SUB, B::OFF) / (8 * R_AVX2) * t.nb;
    panel::with_group(t.r1 - t.r0, per_row, 8 * R_AVX2, |s, g| {
        // SAFETY: as above.
        unsafe { panel256_avx2_run::<B>(t, s, g) }
    });
}

/// # Safety
/// As [`panel32_avxvnni`].
unsafe fn panel256_avxvnni<B: blocks256::Block256Avx>(t: &Tile<Q8KRows>) {
    let per_row = panel::stride256(R_AVXVNNI, B::SUB, B::OFF) / (8 * R_AVXVNNI) * t.nb;
    panel::with_group(t.r1 - t.r0, per_row, 8 * R_AVXVNNI, |s, g| {
        // SAFETY: as above.
        unsafe { panel256_avxvnni_run::<B>(t, s, g) }
    });
}

/// # Safety
/// As [`panel32_vnni`].
unsafe fn panel256_vnni<B: blocks256::Block256Avx>(t: &Tile<Q8KRows>) {
    let per_row = panel::stride256(2 * RZ_VNNI, B::SUB, B::OFF) / (16 * RZ_VNNI) * t.nb;
    panel::with_group(t.r1 - t.r0, per_row, 16 * RZ_VNNI, |s, g| {
        // SAFETY: as above.
        unsafe { panel256_vnni_run::<B>(t, s, g) }
    });
}

fn ppick32<B: blocks32::Block32Avx>(isa: Isa) -> (Kernel<Q8Rows>, i32) {
    match isa {
        Isa::Vnni => (panel32_vnni::<B>, panel::offset32::<Vnni, B>()),
        Isa::AvxVnni => (panel32_avxvnni::<B>, panel::offset32::<AvxVnni, B>()),
        _ => (panel32_avx2::<B>, panel::offset32::<Avx2, B>()),
    }
}

fn ppick256<B: blocks256::Block256Avx>(isa: Isa) -> (Kernel<Q8KRows>, KExtras) {
    let kern: Kernel<Q8KRows> = match isa {
        Isa::Vnni => panel256_vnni::<B>,
        Isa::AvxVnni => panel256_avxvnni::<B>,
        _ => panel256_avx2::<B>,
    };
    (kern, panel::extras256::<B>())
}

/// Prefill kernels for the 32-value formats (each call takes a whole row range against all
/// activation rows, which must be quantized unpaired with `bias = -offset * sum`), and that
/// offset.
pub(super) fn panel_q8(isa: Isa, ty: GgmlType) -> Option<(Kernel<Q8Rows>, i32)> {
    Some(match ty {
        GgmlType::Q4_0 => ppick32::<dec::Q4_0>(isa),
        GgmlType::Q4_1 => ppick32::<dec::Q4_1>(isa),
        GgmlType::Q5_0 => ppick32::<dec::Q5_0>(isa),
        GgmlType::Q5_1 => ppick32::<dec::Q5_1>(isa),
        GgmlType::Q8_0 => ppick32::<dec::Q8_0>(isa),
        GgmlType::Q8_1 => ppick32::<dec::Q8_1>(isa),
        GgmlType::IQ4_NL => ppick32::<dec::IQ4_NL>(isa),
        _ => return None,
    })
}

/// Prefill kernels for the K-quants, and the sums they need from the activations.
pub(super) fn panel_q8k(isa: Isa, ty: GgmlType) -> Option<(Kernel<Q8KRows>, KExtras)> {
    Some(match ty {
        GgmlType::Q2_K => ppick256::<dec::Q2_K>(isa),
        GgmlType::Q3_K => ppick256::<dec::Q3_K>(isa),
        GgmlType::Q4_K => ppick256::<dec::Q4_K>(isa),
        GgmlType::Q5_K => ppick256::<dec::Q5_K>(isa),
        GgmlType::Q6_K => ppick256::<dec::Q6_K>(isa),
        _ => return None,
    })
}
