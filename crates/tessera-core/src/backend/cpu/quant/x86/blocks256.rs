//! The K-quants against Q8_K activations, one super-block (8 registers of 32 values) at a time.
//!
//! A decoded super-block ([`Sb`]) holds the 256 unsigned values, the per-16 scales already
//! widened to i16 and laid out to match `vpmaddubsw`'s output (each i16 lane of the pair sums
//! covers two values of one 16-value group), the per-16 min multipliers, and the two floats of
//! `x = d sc q + dm mi` (see `decode.rs`). It is built once per weight super-block and used for
//! every activation row of the tile:
//! `acc += f32(Σ_c dot_scaled(q_c, x_c, sc_c)) d d_x + f32(bsums · mi) dm d_x`.
//!
//! (Tried and dropped: plain `vpdpbusd` with a horizontal-add tree giving the 16 group sums
//! and f32 scales. It saves the scale widening but the six `vphaddd` per row cost more than
//! they save once a decoded block serves several activation rows.)

use super::{Dot, f16_at, hsum};
use crate::backend::cpu::quant::act::Q8KRows;
use crate::backend::cpu::quant::decode::{self as dec, Block256};
use crate::backend::cpu::quant::kquants::{unpack_scale_min_k4, unpack_scales_q3k};
use crate::backend::cpu::quant::matmul::Tile;
use std::arch::x86_64::*;

/// A super-block decoded into registers.
pub(super) struct Sb {
    /// Values `32 c .. 32 c + 32` in register `c`, each below 64.
    pub(super) q: [__m256i; 8],
    /// i16 scales for register `c`: lanes 0..8 (values `32c..32c+16`) hold `sc[2c]`, lanes
    /// 8..16 hold `sc[2c + 1]`.
    pub(super) sc: [__m256i; 8],
    /// The 16 min multipliers as i16.
    pub(super) mi: __m256i,
    pub(super) d: f32,
    pub(super) dm: f32,
}

pub(super) trait Block256Avx: Block256 {
    /// The largest value (for the i16 accumulation of the AVX2 panel kernels).
    const QMAX: i32;
    unsafe fn load(p: *const u8) -> Sb;
    /// The scales for the prefill panels (`panel.rs`): i32 scales of sub-blocks 0..8 and 8..16
    /// (of `256 / SUB`), the min multipliers of sub-blocks `2j` and `2j + 1` as the i16 pair in
    /// dword `j` (unused for the offset formats), `d` and `dm`.
    unsafe fn panel_scales(p: *const u8) -> PanelScales;
}

/// See [`Block256Avx::panel_scales`].
pub(super) struct PanelScales {
    pub sc: [__m256i; 2],
    pub mi: __m256i,
    pub d: f32,
    pub dm: f32,
}

/// 16 signed byte scales as two registers of 8 i32.
#[inline(always)]
unsafe fn widen16(sc16: __m128i) -> [__m256i; 2] {
    [
        _mm256_cvtepi8_epi32(sc16),
        _mm256_cvtepi8_epi32(_mm_srli_si128::<8>(sc16)),
    ]
}

/// Widens 16 per-16-value scales (signed bytes) to the per-register i16 layout of [`Sb::sc`].
///
/// The scales go through a 32-byte stack buffer: each register is then two 16-bit broadcasts
/// from memory and one insert, which keeps the shuffle units free for the dot products.
#[inline(always)]
unsafe fn expand_scales(sc16: __m128i) -> [__m256i; 8] {
    let mut buf = [0i16; 16];
    _mm256_storeu_si256(buf.as_mut_ptr() as *mut __m256i, _mm256_cvtepi8_epi16(sc16));
    let mut out = [_mm256_setzero_si256(); 8];
    for (c, o) in out.iter_mut().enumerate() {
        let lo = _mm_set1_epi16(buf[2 * c]);
        let hi = _mm_set1_epi16(buf[2 * c + 1]);
        *o = _mm256_set_m128i(hi, lo);
    }
    out
}

/// The same for 8 per-32-value scales (unsigned bytes, Q4_K/Q5_K): one 16-bit broadcast from
/// memory per register.
#[inline(always)]
unsafe fn expand_scales32(sc8: u64) -> [__m256i; 8] {
    let mut buf = [0i16; 8];
    _mm_storeu_si128(
        buf.as_mut_ptr() as *mut __m128i,
        _mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc8 as i64)),
    );
    let mut out = [_mm256_setzero_si256(); 8];
    for (c, o) in out.iter_mut().enumerate() {
        *o = _mm256_set1_epi16(buf[c]);
    }
    out
}

/// Shift count for the `_mm256_srl_epi16` family.
#[inline(always)]
unsafe fn count(n: usize) -> __m128i {
    _mm_cvtsi32_si128(n as i32)
}

#[inline(always)]
unsafe fn load256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// Byte lanes `[b0, b0, b1, b1, ..., b7, b7]` of the low 8 bytes of `v`.
#[inline(always)]
unsafe fn dup_bytes(v: u64) -> __m128i {
    let idx = _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    _mm_shuffle_epi8(_mm_cvtsi64_si128(v as i64), idx)
}

/// The 2-bit fields of Q2_K/Q3_K: register `4n + j` holds bits `2j..2j+2` of `qs[32n..32n+32]`.
#[inline(always)]
unsafe fn two_bits(qs: *const u8) -> [__m256i; 8] {
    let m3 = _mm256_set1_epi8(3);
    let raw = [load256(qs), load256(qs.add(32))];
    let mut out = [_mm256_setzero_si256(); 8];
    for (c, o) in out.iter_mut().enumerate() {
        *o = _mm256_and_si256(_mm256_srl_epi16(raw[c / 4], count(2 * (c % 4))), m3);
    }
    out
}

impl Block256Avx for dec::Q2_K {
    const QMAX: i32 = 3;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Sb {
        let raw = _mm_loadu_si128(p as *const __m128i);
        let m4 = _mm_set1_epi8(0x0F);
        let sc16 = _mm_and_si128(raw, m4);
        let mn16 = _mm_and_si128(_mm_srli_epi16::<4>(raw), m4);
        Sb {
            q: two_bits(p.add(16)),
            sc: expand_scales(sc16),
            mi: _mm256_cvtepu8_epi16(mn16),
            d: f16_at(p.add(80)),
            dm: -f16_at(p.add(82)),
        }
    }
    #[inline(always)]
    unsafe fn panel_scales(p: *const u8) -> PanelScales {
        let raw = _mm_loadu_si128(p as *const __m128i);
        let m4 = _mm_set1_epi8(0x0F);
        PanelScales {
            sc: widen16(_mm_and_si128(raw, m4)),
            mi: _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(raw), m4)),
            d: f16_at(p.add(80)),
            dm: -f16_at(p.add(82)),
        }
    }
}

impl Block256Avx for dec::Q3_K {
    const QMAX: i32 = 7;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Sb {
        let hm = load256(p);
        let m4 = _mm256_set1_epi8(4);
        let mut q = two_bits(p.add(32));
        for (c, qc) in q.iter_mut().enumerate() {
            // Bit c of hmask[l] is the third bit of value 32 c + l.
            let h = _mm256_slli_epi16::<2>(_mm256_srl_epi16(hm, count(c)));
            *qc = _mm256_or_si256(*qc, _mm256_and_si256(h, m4));
        }
        let scales = unpack_scales_q3k(std::slice::from_raw_parts(p.add(96), 12));
        let sc16 = _mm_sub_epi8(
            _mm_loadu_si128(scales.as_ptr() as *const __m128i),
            _mm_set1_epi8(32),
        );
        let d = f16_at(p.add(108));
        Sb {
            q,
            sc: expand_scales(sc16),
            mi: _mm256_cvtepi8_epi16(sc16),
            d,
            dm: -4.0 * d,
        }
    }
    #[inline(always)]
    unsafe fn panel_scales(p: *const u8) -> PanelScales {
        let scales = unpack_scales_q3k(std::slice::from_raw_parts(p.add(96), 12));
        let sc16 = _mm_sub_epi8(
            _mm_loadu_si128(scales.as_ptr() as *const __m128i),
            _mm_set1_epi8(32),
        );
        let d = f16_at(p.add(108));
        PanelScales {
            sc: widen16(sc16),
            mi: _mm256_setzero_si256(),
            d,
            dm: -4.0 * d,
        }
    }
}

/// [`Block256Avx::panel_scales`] for Q4_K and Q5_K (8 sub-blocks of 32).
#[inline(always)]
unsafe fn panel_scales_k4(p: *const u8) -> PanelScales {
    let (sc, mn) = unpack_scale_min_k4(std::slice::from_raw_parts(p.add(4), 12));
    PanelScales {
        sc: [
            _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(sc as i64)),
            _mm256_setzero_si256(),
        ],
        mi: _mm256_castsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(mn as i64))),
        d: f16_at(p),
        dm: -f16_at(p.add(2)),
    }
}

/// Scales, min multipliers and floats shared by Q4_K and Q5_K.
#[inline(always)]
unsafe fn scales_k4(p: *const u8) -> ([__m256i; 8], __m256i, f32, f32) {
    let (sc, mn) = unpack_scale_min_k4(std::slice::from_raw_parts(p.add(4), 12));
    (
        expand_scales32(sc),
        _mm256_cvtepu8_epi16(dup_bytes(mn)),
        f16_at(p),
        -f16_at(p.add(2)),
    )
}

impl Block256Avx for dec::Q4_K {
    const QMAX: i32 = 15;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Sb {
        let m4 = _mm256_set1_epi8(0x0F);
        let mut q = [_mm256_setzero_si256(); 8];
        for j in 0..4 {
            let r = load256(p.add(16 + 32 * j));
            q[2 * j] = _mm256_and_si256(r, m4);
            q[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(r), m4);
        }
        let (sc, mi, d, dm) = scales_k4(p);
        Sb { q, sc, mi, d, dm }
    }
    #[inline(always)]
    unsafe fn panel_scales(p: *const u8) -> PanelScales {
        panel_scales_k4(p)
    }
}

impl Block256Avx for dec::Q5_K {
    const QMAX: i32 = 31;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Sb {
        let m4 = _mm256_set1_epi8(0x0F);
        let m10 = _mm256_set1_epi8(0x10);
        let hb = load256(p.add(16));
        let mut q = [_mm256_setzero_si256(); 8];
        for j in 0..4 {
            let r = load256(p.add(48 + 32 * j));
            // Bit c of qh[l] is the fifth bit of value 32 c + l.
            let h0 = _mm256_slli_epi16::<4>(_mm256_srl_epi16(hb, count(2 * j)));
            let h1 = _mm256_slli_epi16::<4>(_mm256_srl_epi16(hb, count(2 * j + 1)));
            q[2 * j] = _mm256_or_si256(_mm256_and_si256(r, m4), _mm256_and_si256(h0, m10));
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(r), m4);
            q[2 * j + 1] = _mm256_or_si256(hi, _mm256_and_si256(h1, m10));
        }
        let (sc, mi, d, dm) = scales_k4(p);
        Sb { q, sc, mi, d, dm }
    }
    #[inline(always)]
    unsafe fn panel_scales(p: *const u8) -> PanelScales {
        panel_scales_k4(p)
    }
}

impl Block256Avx for dec::Q6_K {
    const QMAX: i32 = 63;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Sb {
        let m4 = _mm256_set1_epi8(0x0F);
        let m30 = _mm256_set1_epi8(0x30);
        let mut q = [_mm256_setzero_si256(); 8];
        for n in 0..2 {
            let l0 = load256(p.add(64 * n));
            let l1 = load256(p.add(64 * n + 32));
            let h = load256(p.add(128 + 32 * n));
            q[4 * n] = _mm256_or_si256(
                _mm256_and_si256(l0, m4),
                _mm256_and_si256(_mm256_slli_epi16::<4>(h), m30),
            );
            q[4 * n + 1] = _mm256_or_si256(
                _mm256_and_si256(l1, m4),
                _mm256_and_si256(_mm256_slli_epi16::<2>(h), m30),
            );
            q[4 * n + 2] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(l0), m4),
                _mm256_and_si256(h, m30),
            );
            q[4 * n + 3] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(l1), m4),
                _mm256_and_si256(_mm256_srli_epi16::<2>(h), m30),
            );
        }
        let sc16 = _mm_loadu_si128(p.add(192) as *const __m128i);
        let d = f16_at(p.add(208));
        Sb {
            q,
            sc: expand_scales(sc16),
            mi: _mm256_cvtepi8_epi16(sc16),
            d,
            dm: -32.0 * d,
        }
    }
    #[inline(always)]
    unsafe fn panel_scales(p: *const u8) -> PanelScales {
        let d = f16_at(p.add(208));
        PanelScales {
            sc: widen16(_mm_loadu_si128(p.add(192) as *const __m128i)),
            mi: _mm256_setzero_si256(),
            d,
            dm: -32.0 * d,
        }
    }
}

/// Runs the tile with the row count as a constant.
#[inline(always)]
pub(super) unsafe fn rows<D: Dot, B: Block256Avx>(t: &Tile<Q8KRows>) {
    match t.mt {
        1 => rows_n::<D, B, 1>(t),
        2 => rows_n::<D, B, 2>(t),
        3 => rows_n::<D, B, 3>(t),
        _ => rows_n::<D, B, 4>(t),
    }
}

#[inline(always)]
unsafe fn rows_n<D: Dot, B: Block256Avx, const N: usize>(t: &Tile<Q8KRows>) {
    let (xq, xd, xb) = (t.acts.qs.as_ptr(), t.acts.d.as_ptr(), t.acts.bsums.as_ptr());
    let nb = t.nb;
    let base: [usize; N] = std::array::from_fn(|i| (t.i0 + i) * nb);
    for r in t.r0..t.r1 {
        let w = t.w.as_ptr().add(r * t.row_bytes);
        let mut acc = [_mm256_setzero_ps(); N];
        for b in 0..nb {
            let sb = B::load(w.add(b * B::BYTES));
            for i in 0..N {
                let idx = base[i] + b;
                let x = xq.add(idx * 256) as *const u8;
                // Two chains so a single row does not serialise on one accumulator.
                let (mut s0, mut s1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                for c in (0..8).step_by(2) {
                    s0 = D::dot_scaled(s0, sb.q[c], load256(x.add(32 * c)), sb.sc[c]);
                    s1 = D::dot_scaled(s1, sb.q[c + 1], load256(x.add(32 * c + 32)), sb.sc[c + 1]);
                }
                let bs = _mm256_loadu_si256(xb.add(idx * 16) as *const __m256i);
                let ms = _mm256_madd_epi16(bs, sb.mi);
                let dx = *xd.add(idx);
                let s = _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1));
                acc[i] = _mm256_fmadd_ps(s, _mm256_set1_ps(sb.d * dx), acc[i]);
                acc[i] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(ms), _mm256_set1_ps(sb.dm * dx), acc[i]);
            }
        }
        for (i, &a) in acc.iter().enumerate() {
            t.put(i, r, hsum(a));
        }
    }
}
