//! Weight rows decoded straight to bf16, for the AMX prefill path (`amx/gemm.rs`): the register
//! decoders of the integer kernels give each block's values, which are widened to f32, scaled
//! (and offset) as the format's reference dequantizer does, and rounded to bf16 in one step.
//! The reference dequantizer runs instead for formats without a register decoder here.

use super::Vnni;
use super::blocks32::Block32Avx;
use super::blocks256::Block256Avx;
use super::f16_at;
use crate::backend::cpu::amx::gemm::Panel;
use crate::backend::cpu::quant::decode as dec;
use crate::backend::cpu::quant::interleave::{affine8_codes_at, affine8_d_at};
use crate::quant::GgmlType;
use std::arch::x86_64::*;

/// Decodes `rows.len() / row_bytes` rows of `k` values of `ty` (a natural file format, so `k`
/// is a multiple of 32) into rows `0..` of `panel`.
///
/// # Safety
/// AVX-512 F/BW/VL, BF16 and AVX2/FMA/F16C are present; `rows` holds whole rows; the panel
/// has room for them.
pub(crate) unsafe fn decode_rows(
    ty: GgmlType,
    rows: &[u8],
    row_bytes: usize,
    k: usize,
    panel: &mut Panel,
) {
    use GgmlType as T;
    for (r, src) in rows.chunks_exact(row_bytes).enumerate() {
        let out = &mut Chunks { panel, r };
        match ty {
            T::Q4_0 => row32::<dec::Q4_0>(src, out),
            T::Q4_1 => row32::<dec::Q4_1>(src, out),
            T::Q5_0 => row32::<dec::Q5_0>(src, out),
            T::Q5_1 => row32::<dec::Q5_1>(src, out),
            T::Q8_0 => row32::<dec::Q8_0>(src, out),
            T::IQ4_NL => row32::<dec::IQ4_NL>(src, out),
            T::Q2_K => row256::<dec::Q2_K>(src, out),
            T::Q3_K => row256::<dec::Q3_K>(src, out),
            T::Q4_K => row256::<dec::Q4_K>(src, out),
            T::Q5_K => row256::<dec::Q5_K>(src, out),
            T::Q6_K => row256::<dec::Q6_K>(src, out),
            _ => {
                let mut f = vec![0f32; k];
                crate::backend::cpu::quant::dequantize_row_unchecked(ty, src, &mut f);
                for (c, vals) in f.chunks_exact(32).enumerate() {
                    for (d, v) in out.at(c).iter_mut().zip(vals) {
                        *d = half::bf16::from_f32(*v).to_bits();
                    }
                }
            }
        }
    }
}

/// One panel row, by 32-value chunk.
struct Chunks<'p, 'b> {
    panel: &'p mut Panel<'b>,
    r: usize,
}

impl Chunks<'_, '_> {
    #[inline(always)]
    fn at(&mut self, c: usize) -> &mut [u16] {
        self.panel.chunk(self.r, c)
    }
}

/// 16 f32 pairs `(lo, hi)` rounded to 32 bf16 values at `dst`.
#[inline(always)]
unsafe fn store_bf16(dst: *mut u16, lo: __m512, hi: __m512) {
    let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
    _mm512_storeu_si512(dst.cast(), v);
}

/// One row of a 32-value format: `x = d (q - OFF)` or `x = d q + m`, in f32 as the reference.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
unsafe fn row32<B: Block32Avx>(src: &[u8], out: &mut Chunks) {
    for (c, b) in src.chunks_exact(B::BYTES).enumerate() {
        let dst = out.at(c);
        let p = b.as_ptr();
        let q = B::q::<Vnni>(p);
        let (lo, hi) = if B::SIGNED {
            (
                _mm512_cvtepi8_epi32(_mm256_castsi256_si128(q)),
                _mm512_cvtepi8_epi32(_mm256_extracti128_si256::<1>(q)),
            )
        } else {
            let off = _mm512_set1_epi32(B::OFF);
            (
                _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(q)), off),
                _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm256_extracti128_si256::<1>(q)), off),
            )
        };
        let d = _mm512_set1_ps(f16_at(p.add(B::D_AT)));
        let mut flo = _mm512_mul_ps(_mm512_cvtepi32_ps(lo), d);
        let mut fhi = _mm512_mul_ps(_mm512_cvtepi32_ps(hi), d);
        if B::AFFINE {
            let m = _mm512_set1_ps(f16_at(p.add(B::M_AT)));
            flo = _mm512_add_ps(flo, m);
            fhi = _mm512_add_ps(fhi, m);
        }
        store_bf16(dst.as_mut_ptr(), flo, fhi);
    }
}

/// Groups `g0..g1` of 8 rows of the 8-bit affine layout `layout` (`A8x8` and its shared forms,
/// rows of `k` values) decoded into rows `0..` of `panel`: `x = d q + m` in f32 (multiply, then
/// add, as `dequantize_affine8`), rounded to bf16.
///
/// # Safety
/// As [`decode_rows`]; `w` holds the groups.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
pub(crate) unsafe fn decode_affine8(
    layout: GgmlType,
    w: &[u8],
    k: usize,
    g0: usize,
    g1: usize,
    panel: &mut Panel,
) {
    let group = layout.block_size();
    let record = 8 * layout.type_size();
    let records = k / group;
    for g in g0..g1 {
        for r in 0..records {
            let rec = &w[(g * records + r) * record..][..record];
            let p = rec.as_ptr();
            for s in 0..group / 32 {
                // Chunk c holds bytes 4c..4c + 4 of each row at 4j: an 8 x 8 transpose of
                // 32-bit words gives each row's 32 codes in order.
                let mut ch = [_mm256_setzero_si256(); 8];
                for (c, v) in ch.iter_mut().enumerate() {
                    *v = _mm256_loadu_si256(p.add(affine8_codes_at(s, c, 0)).cast());
                }
                let rows = super::panel::transpose(&ch);
                for (j, q) in rows.iter().enumerate() {
                    let d = _mm512_set1_ps(f16_at(p.add(affine8_d_at(j))));
                    let m = _mm512_set1_ps(f16_at(p.add(16 + affine8_d_at(j))));
                    let lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(*q)));
                    let hi =
                        _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256::<1>(*q)));
                    let flo = _mm512_add_ps(_mm512_mul_ps(lo, d), m);
                    let fhi = _mm512_add_ps(_mm512_mul_ps(hi, d), m);
                    let dst = panel.chunk((g - g0) * 8 + j, r * (group / 32) + s);
                    store_bf16(dst.as_mut_ptr(), flo, fhi);
                }
            }
        }
    }
}

/// One row of a 256-value format: the register decoder of the integer kernels, then
/// `x = d sc q + dm mi` per 16 values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")]
unsafe fn row256<B: Block256Avx>(src: &[u8], out: &mut Chunks) {
    for (sb, b) in src.chunks_exact(B::BYTES).enumerate() {
        let s = B::load(b.as_ptr());
        let mut mi = [0i16; 16];
        _mm256_storeu_si256(mi.as_mut_ptr().cast(), s.mi);
        for (c, &q) in s.q.iter().enumerate() {
            let sc_lo = _mm256_extract_epi16::<0>(s.sc[c]) as i16 as f32;
            let sc_hi = _mm256_extract_epi16::<8>(s.sc[c]) as i16 as f32;
            let lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(q)));
            let hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256::<1>(q)));
            let lo = _mm512_fmadd_ps(
                lo,
                _mm512_set1_ps(s.d * sc_lo),
                _mm512_set1_ps(s.dm * mi[2 * c] as f32),
            );
            let hi = _mm512_fmadd_ps(
                hi,
                _mm512_set1_ps(s.d * sc_hi),
                _mm512_set1_ps(s.dm * mi[2 * c + 1] as f32),
            );
            store_bf16(out.at(8 * sb + c).as_mut_ptr(), lo, hi);
        }
    }
}
