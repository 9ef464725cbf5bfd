//! AVX2 activation quantizers, bit-identical to the portable ones in `act.rs` (the same f32
//! operations, and `vcvtps2dq` rounds half to even like `round_ties_even`).

use crate::backend::cpu::quant::act::{Q8KOut, Q8Out};
use crate::backend::cpu::quant::kquants::{QK_K, via_f16};
use crate::backend::cpu::quant::legacy::QK;
use std::arch::x86_64::*;

pub(in crate::backend::cpu::quant) fn q8_row(x: &[f32], o: Q8Out) {
    // SAFETY: only chosen when the CPU has AVX2 (see `act::quantize_q8`).
    unsafe { q8_row_avx2(x, o) }
}

pub(in crate::backend::cpu::quant) fn q8k_row(x: &[f32], o: Q8KOut) {
    // SAFETY: as above.
    unsafe { q8k_row_avx2(x, o) }
}

#[inline(always)]
unsafe fn abs(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

#[inline(always)]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
}

/// Packs four vectors of 8 i32 (each within i8 range) into 32 bytes in order.
#[inline(always)]
unsafe fn pack(i: [__m256i; 4]) -> __m256i {
    let a = _mm256_packs_epi32(i[0], i[1]);
    let b = _mm256_packs_epi32(i[2], i[3]);
    // The packs interleave 128-bit lanes; restore the order of the 4-byte groups.
    let p = _mm256_packs_epi16(a, b);
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_row_avx2(x: &[f32], o: Q8Out) {
    let nb = x.len() / QK;
    for b in 0..nb {
        let p = x.as_ptr().add(b * QK);
        let mut v = [_mm256_setzero_ps(); 4];
        for (j, vj) in v.iter_mut().enumerate() {
            *vj = _mm256_loadu_ps(p.add(8 * j));
        }
        let m = _mm256_max_ps(
            _mm256_max_ps(abs(v[0]), abs(v[1])),
            _mm256_max_ps(abs(v[2]), abs(v[3])),
        );
        let amax = hmax(m);
        let d = amax / 127.0;
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        let mut q = [_mm256_setzero_si256(); 4];
        for (qj, &vj) in q.iter_mut().zip(&v) {
            *qj = _mm256_cvtps_epi32(_mm256_mul_ps(vj, id));
        }
        let s8 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let s4 = _mm_add_epi32(
            _mm256_castsi256_si128(s8),
            _mm256_extracti128_si256::<1>(s8),
        );
        let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(s2, _mm_shuffle_epi32::<0b01>(s2)));
        _mm256_storeu_si256(o.qs.as_mut_ptr().add(b * QK) as *mut __m256i, pack(q));
        o.d[b] = via_f16(d);
        o.dsum[b] = o.d[b] * sum as f32;
        o.s[b] = via_f16(d * sum as f32);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8k_row_avx2(x: &[f32], o: Q8KOut) {
    let nb = x.len() / QK_K;
    for b in 0..nb {
        let p = x.as_ptr().add(b * QK_K);
        let mut m = _mm256_setzero_ps();
        for j in 0..32 {
            m = _mm256_max_ps(m, abs(_mm256_loadu_ps(p.add(8 * j))));
        }
        let amax = hmax(m);
        let qs = &mut o.qs[b * QK_K..(b + 1) * QK_K];
        let bsums = &mut o.bsums[b * 16..(b + 1) * 16];
        if amax == 0.0 {
            qs.fill(0);
            bsums.fill(0);
            o.d[b] = 0.0;
            continue;
        }
        // The signed value of the first element of largest magnitude, as the scalar scan finds.
        let target = _mm256_set1_ps(amax);
        let mut max = 0.0;
        for j in 0..32 {
            let v = _mm256_loadu_ps(p.add(8 * j));
            let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(abs(v), target));
            if hit != 0 {
                max = *p.add(8 * j + hit.trailing_zeros() as usize);
                break;
            }
        }
        let iscale = -127.0 / max;
        let mul = _mm256_set1_ps(iscale);
        let top = _mm256_set1_epi32(127);
        for g in 0..8 {
            let mut q = [_mm256_setzero_si256(); 4];
            for (j, qj) in q.iter_mut().enumerate() {
                let v = _mm256_loadu_ps(p.add(32 * g + 8 * j));
                *qj = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v, mul)), top);
            }
            _mm256_storeu_si256(qs.as_mut_ptr().add(32 * g) as *mut __m256i, pack(q));
        }
        for (j, s) in bsums.iter_mut().enumerate() {
            *s = qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
        }
        o.d[b] = 1.0 / iscale;
    }
}
