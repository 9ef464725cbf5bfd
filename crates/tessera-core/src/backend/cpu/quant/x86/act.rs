//! AVX2 activation quantizers, bit-identical to the portable ones in `act.rs` (the same f32
//! operations, and `vcvtps2dq` rounds half to even like `round_ties_even`).

use crate::backend::cpu::quant::act::{Q8KOut, Q8Out};
use crate::backend::cpu::quant::kquants::QK_K;
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

/// `v` rounded to f16 and back (F16C; the same round-to-nearest-even as `kquants::via_f16`).
#[inline(always)]
unsafe fn via_f16(v: f32) -> f32 {
    let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(v));
    _mm_cvtss_f32(_mm_cvtph_ps(h))
}

/// [`via_f16`] on 8 lanes.
#[inline(always)]
unsafe fn via_f16x8(v: __m256) -> __m256 {
    _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v))
}

#[inline(always)]
unsafe fn abs(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

use crate::backend::cpu::simd::x86::hmax8 as hmax;

/// Packs four vectors of 8 i32 (each within i8 range) into 32 bytes in order.
#[inline(always)]
unsafe fn pack(i: [__m256i; 4]) -> __m256i {
    let a = _mm256_packs_epi32(i[0], i[1]);
    let b = _mm256_packs_epi32(i[2], i[3]);
    // The packs interleave 128-bit lanes; restore the order of the 4-byte groups.
    let p = _mm256_packs_epi16(a, b);
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Sums of the 8 lanes of each of 8 registers, lane `i` of the result for register `i`.
#[inline(always)]
unsafe fn hsum8x8(s: &[__m256i; 8]) -> __m256i {
    let h01 = _mm256_hadd_epi32(s[0], s[1]);
    let h23 = _mm256_hadd_epi32(s[2], s[3]);
    let h45 = _mm256_hadd_epi32(s[4], s[5]);
    let h67 = _mm256_hadd_epi32(s[6], s[7]);
    // [r0 r1 r2 r3 | r0 r1 r2 r3] (low-lane and high-lane halves of each sum).
    let a = _mm256_hadd_epi32(h01, h23);
    let b = _mm256_hadd_epi32(h45, h67);
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(a, b),
        _mm256_permute2x128_si256::<0x31>(a, b),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_row_avx2(x: &[f32], o: Q8Out) {
    let nb = x.len() / QK;
    // Groups of 8 blocks: the per-block scalars (scales, sums, f16 roundings) as vectors.
    let groups = nb / 8;
    for g in 0..groups {
        let p = x.as_ptr().add(g * 8 * QK);
        let mut amax = [0f32; 8];
        for (b, a) in amax.iter_mut().enumerate() {
            let pb = p.add(b * QK);
            let m = _mm256_max_ps(
                _mm256_max_ps(abs(_mm256_loadu_ps(pb)), abs(_mm256_loadu_ps(pb.add(8)))),
                _mm256_max_ps(
                    abs(_mm256_loadu_ps(pb.add(16))),
                    abs(_mm256_loadu_ps(pb.add(24))),
                ),
            );
            *a = hmax(m);
        }
        let amax = _mm256_loadu_ps(amax.as_ptr());
        let d = _mm256_div_ps(amax, _mm256_set1_ps(127.0));
        let nz = _mm256_cmp_ps::<_CMP_NEQ_UQ>(amax, _mm256_setzero_ps());
        let id = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(127.0), amax), nz);
        let mut ids = [0f32; 8];
        _mm256_storeu_ps(ids.as_mut_ptr(), id);
        let mut sums = [_mm256_setzero_si256(); 8];
        for (b, sb) in sums.iter_mut().enumerate() {
            let pb = p.add(b * QK);
            let idb = _mm256_set1_ps(ids[b]);
            let mut q = [_mm256_setzero_si256(); 4];
            for (j, qj) in q.iter_mut().enumerate() {
                *qj = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(pb.add(8 * j)), idb));
            }
            *sb = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let at = o.qs.as_mut_ptr().add((8 * g + b) * QK) as *mut __m256i;
            _mm256_storeu_si256(at, pack(q));
        }
        let sum = hsum8x8(&sums);
        let sumf = _mm256_cvtepi32_ps(sum);
        let dh = via_f16x8(d);
        let at = 8 * g;
        _mm256_storeu_ps(o.d.as_mut_ptr().add(at), dh);
        _mm256_storeu_ps(o.dsum.as_mut_ptr().add(at), _mm256_mul_ps(dh, sumf));
        _mm256_storeu_ps(o.s.as_mut_ptr().add(at), via_f16x8(_mm256_mul_ps(d, sumf)));
        _mm256_storeu_si256(o.sum.as_mut_ptr().add(at) as *mut __m256i, sum);
    }
    for b in 8 * groups..nb {
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
        o.sum[b] = sum;
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
            // The sums of values 0..16 and 16..32 (all within i8, so equal to the bytes' sums).
            let h = _mm256_hadd_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let h = _mm256_hadd_epi32(h, h);
            let t = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
            bsums[2 * g] = _mm_cvtsi128_si32(t) as i16;
            bsums[2 * g + 1] = _mm_extract_epi32::<1>(t) as i16;
        }
        o.d[b] = 1.0 / iscale;
    }
}
