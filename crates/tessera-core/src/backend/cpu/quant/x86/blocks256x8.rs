//! The decode kernels for [`Q4_Kx8`](crate::quant::GgmlType::Q4_Kx8),
//! [`Q5_Kx8`](crate::quant::GgmlType::Q5_Kx8) and [`Q6_Kx8`](crate::quant::GgmlType::Q6_Kx8):
//! 8 weight rows at once, one row per i32 lane, against Q8_K activations (the layouts are
//! described in `quant/interleave.rs`; Q6_K's kernel is documented at [`q6k_n`]).
//!
//! Q4_K: per record (one super-block index of 8 rows, 1152 bytes) and activation row: for each of
//! the 4 pairs of 32-value sub-blocks, 8 chunks of 32 bytes meet 8 + 8 activation words, as in
//! the 32-value kernel (`blocks32x8.rs`): low nibbles are sub-block `2p`, high nibbles
//! sub-block `2p + 1`, each summed in its own i32 accumulator (`vpdpbusd`, or `vpmaddubsw` and
//! `vpmaddwd` on AVX2), then multiplied by that sub-block's 6-bit scale of each lane's row
//! (`vpmulld`) into the record's integer sum. The minimums are applied once per record: the
//! 8 sub-block minimums of each row, as i16 pairs, against the activation's 32-value sums
//! (`vpdpwssd` with a broadcast pair). The record then ends with two FMAs:
//! `acc += d_w d_x Σ_s sc_s Σ q x - dmin_w d_x Σ_s m_s Σ x`.
//!
//! The packed scales are unpacked for all 8 rows with 32-bit vector shifts and masks: lane `j`
//! of the record's 3 scale words holds row `j`'s 12 bytes `scales[0..12]`, whose low 6 bits of
//! bytes 0..4 are the scales of sub-blocks 0..4, of bytes 4..8 their minimums, and the upper
//! sub-blocks take 4 bits from bytes 8..12 and 2 from the tops of bytes 0..8 (ggml's
//! `get_scale_min_k4`).
//!
//! With VNNI the high nibbles stay in place (`16 q`) and their sum is shifted once per record,
//! as in the 32-value kernel (exact: every term is a multiple of 16).
//!
//! Q5_K is Q4_K with a fifth bit per value, from 8 words of `qh` per row: bit `2p` of the
//! byte for value `l` of a pair is the low nibble's, bit `2p + 1` the high nibble's; it adds
//! 16 (one test and one masked add with AVX-512BW).

use super::Dot;
use super::blocks32x8::word;
use crate::backend::cpu::quant::act::Q8KRows;
use crate::backend::cpu::quant::interleave::{ROWS, qs_at};
use crate::backend::cpu::quant::matmul::Tile;
use crate::quant::GgmlType;
use std::arch::x86_64::*;

/// The 3 packed scale words of a Q4_Kx8 or Q5_Kx8 record (both start alike).
const SCALES: usize = qs_at(GgmlType::Q4_K);

/// Q4_Kx8 (`FIFTH = false`) or Q5_Kx8: record size and where its words lie (the 3 scale
/// words, Q5_K's 8 words of fifth bits, then the 32 chunks of `qs`).
struct K4<const FIFTH: bool>;

impl<const FIFTH: bool> K4<FIFTH> {
    const RECORD: usize = ROWS * if FIFTH { 176 } else { 144 };
    const QH: usize = SCALES + 3 * 32;
    const QS: usize = Self::QH + if FIFTH { 8 * 32 } else { 0 };
}

/// Runs a Q4_Kx8 (`FIFTH = false`) or Q5_Kx8 tile (rows `r0..r1` multiples of 8) with the
/// activation row count as a constant, so the accumulators live in registers.
#[inline(always)]
pub(super) unsafe fn rows_k4<D: Dot, const FIFTH: bool>(t: &Tile<Q8KRows>) {
    match t.mt {
        1 => k4_n::<D, FIFTH, 1>(t),
        2 => k4_n::<D, FIFTH, 2>(t),
        3 => k4_n::<D, FIFTH, 3>(t),
        _ => k4_n::<D, FIFTH, 4>(t),
    }
}

/// `u` (values below 16) plus 16 in each byte whose `bit` is set in the same byte of `qh`.
#[inline(always)]
unsafe fn add_fifth<D: Dot>(u: __m256i, qh: __m256i, bit: u32) -> __m256i {
    if D::MASKS {
        // The AVX-512 path has byte masks: one test into a mask and one masked add.
        let set = _mm256_test_epi8_mask(qh, _mm256_set1_epi8((1u8 << bit) as i8));
        return _mm256_mask_add_epi8(u, set, u, _mm256_set1_epi8(0x10));
    }
    // Move the bit to bit 4 of its byte (16-bit shifts by at most 4 and 3 keep it there).
    let moved = if bit <= 4 {
        _mm256_sll_epi16(qh, _mm_cvtsi32_si128(4 - bit as i32))
    } else {
        _mm256_srl_epi16(qh, _mm_cvtsi32_si128(bit as i32 - 4))
    };
    _mm256_or_si256(u, _mm256_and_si256(moved, _mm256_set1_epi8(0x10)))
}

/// The same for a Q6_Kx8 tile.
#[inline(always)]
pub(super) unsafe fn rows_q6k<D: Dot>(t: &Tile<Q8KRows>) {
    match t.mt {
        1 => q6k_n::<D, 1>(t),
        2 => q6k_n::<D, 2>(t),
        3 => q6k_n::<D, 3>(t),
        _ => q6k_n::<D, 4>(t),
    }
}

/// The 32 bytes at `p + at`.
#[inline(always)]
unsafe fn load(p: *const u8, at: usize) -> __m256i {
    _mm256_loadu_si256(p.add(at) as *const __m256i)
}

/// Rearranges the bytes of each i32 lane of `v`: byte `b` of a lane gets the lane's byte
/// `pick[b]`, or 0 where `pick[b]` is negative.
#[inline(always)]
unsafe fn lane_bytes(v: __m256i, pick: [i8; 4]) -> __m256i {
    let mut idx = [0i8; 32];
    for (i, b) in idx.iter_mut().enumerate() {
        let p = pick[i % 4];
        *b = if p < 0 {
            -1
        } else {
            p + (i % 16 / 4 * 4) as i8
        };
    }
    _mm256_shuffle_epi8(v, _mm256_loadu_si256(idx.as_ptr() as *const __m256i))
}

/// Byte `s` of each i32 lane of `v`, zero-extended to the lane.
#[inline(always)]
unsafe fn lane_byte(v: __m256i, s: i8) -> __m256i {
    lane_bytes(v, [s, -1, -1, -1])
}

/// Bytes `s` and `s + 1` of each i32 lane of `v` as the lane's two i16 halves.
#[inline(always)]
unsafe fn lane_pair(v: __m256i, s: i8) -> __m256i {
    lane_bytes(v, [s, -1, s + 1, -1])
}

/// Byte `s` of each i32 lane of `v`, sign-extended to the lane.
#[inline(always)]
unsafe fn lane_byte_signed(v: __m256i, s: i8) -> __m256i {
    _mm256_srai_epi32::<24>(lane_bytes(v, [-1, -1, -1, s]))
}

/// Bytes `s` and `s + 1` of each i32 lane of `v`, sign-extended, as the lane's two i16 halves.
#[inline(always)]
unsafe fn lane_pair_signed(v: __m256i, s: i8) -> __m256i {
    _mm256_srai_epi16::<8>(lane_bytes(v, [-1, s, -1, s + 1]))
}

/// The 8 rows' sub-block scales (one byte per sub-block, 4 per i32 lane: sub-blocks 0..4 in
/// `[0]`, 4..8 in `[1]`) and minimums (likewise in `[2]`, `[3]`).
#[inline(always)]
unsafe fn unpack_scales(rec: *const u8) -> [__m256i; 4] {
    let (w0, w1, w2) = (
        load(rec, SCALES),
        load(rec, SCALES + 32),
        load(rec, SCALES + 64),
    );
    let m6 = _mm256_set1_epi8(0x3F);
    let m4 = _mm256_set1_epi8(0x0F);
    // The top 2 bits of byte b, moved to bits 4..6 of byte b (a 32-bit shift by 2 brings the
    // next byte's low bits into bits 6..8, which the mask drops).
    let m30 = _mm256_set1_epi8(0x30);
    [
        _mm256_and_si256(w0, m6),
        _mm256_or_si256(
            _mm256_and_si256(w2, m4),
            _mm256_and_si256(_mm256_srli_epi32::<2>(w0), m30),
        ),
        _mm256_and_si256(w1, m6),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi32::<4>(w2), m4),
            _mm256_and_si256(_mm256_srli_epi32::<2>(w1), m30),
        ),
    ]
}

#[inline(always)]
unsafe fn k4_n<D: Dot, const FIFTH: bool, const N: usize>(t: &Tile<Q8KRows>) {
    debug_assert!(t.r0.is_multiple_of(ROWS) && t.r1.is_multiple_of(ROWS));
    debug_assert_eq!(
        t.acts.bsum32.len(),
        t.acts.d.len() * 8,
        "needs 32-value sums"
    );
    let nb = t.nb;
    let (qs, xd, xs) = (
        t.acts.qs.as_ptr(),
        t.acts.d.as_ptr(),
        t.acts.bsum32.as_ptr(),
    );
    let m4 = _mm256_set1_epi8(0x0F);
    let zero = _mm256_setzero_si256();
    let mut base = [0usize; N];
    for (i, b) in base.iter_mut().enumerate() {
        *b = (t.i0 + i) * nb;
    }
    for g in t.r0 / ROWS..t.r1 / ROWS {
        let group = t.w.as_ptr().add(g * nb * K4::<FIFTH>::RECORD);
        let mut acc = [_mm256_setzero_ps(); N];
        // With VNNI and no fifth bits the high nibbles stay in place (16 q).
        let in_place = D::FULL_U8 && !FIFTH;
        for b in 0..nb {
            let rec = group.add(b * K4::<FIFTH>::RECORD);
            // As the 32-value kernels do (`simd::prefetch_stream`).
            crate::backend::cpu::simd::prefetch_stream(rec, K4::<FIFTH>::RECORD);
            let [sc_lo, sc_hi, mn_lo, mn_hi] = unpack_scales(rec);
            // Σ_s sc_s Σ q x: low-nibble sub-blocks, high-nibble ones (16 q with VNNI).
            let mut isl = [zero; N];
            let mut ish = [zero; N];
            for p in 0..4 {
                let scv = if p < 2 { sc_lo } else { sc_hi };
                let s_lo = lane_byte(scv, (2 * p % 4) as i8);
                let s_hi = lane_byte(scv, (2 * p % 4 + 1) as i8);
                let mut sl = [zero; N];
                let mut sh = [zero; N];
                for half in 0..2 {
                    // Chunks 8p + 4 half .. + 4: values 64p + 16 half + 4c (low nibbles) and
                    // 64p + 32 + 16 half + 4c (high).
                    let mut u = [zero; 8];
                    for c in 0..4 {
                        let raw = load(rec, K4::<FIFTH>::QS + 32 * (8 * p + 4 * half + c));
                        u[c] = _mm256_and_si256(raw, m4);
                        u[4 + c] = if in_place {
                            _mm256_andnot_si256(m4, raw)
                        } else {
                            _mm256_and_si256(_mm256_srli_epi16::<4>(raw), m4)
                        };
                        if FIFTH {
                            // Bit 2p (low nibbles) and 2p + 1 (high) of qh bytes 16 half + 4c..
                            let qh = load(rec, K4::<FIFTH>::QH + 32 * (4 * half + c));
                            u[c] = add_fifth::<D>(u[c], qh, 2 * p as u32);
                            u[4 + c] = add_fifth::<D>(u[4 + c], qh, 2 * p as u32 + 1);
                        }
                    }
                    for i in 0..N {
                        let x = qs.add((base[i] + b) * 256 + 64 * p + 16 * half);
                        for c in 0..4 {
                            sl[i] = D::dot_us(sl[i], u[c], word(x, c));
                            sh[i] = D::dot_us(sh[i], u[4 + c], word(x, 8 + c));
                        }
                    }
                }
                for i in 0..N {
                    isl[i] = _mm256_add_epi32(isl[i], _mm256_mullo_epi32(sl[i], s_lo));
                    ish[i] = _mm256_add_epi32(ish[i], _mm256_mullo_epi32(sh[i], s_hi));
                }
            }
            let mins = [
                lane_pair(mn_lo, 0),
                lane_pair(mn_lo, 2),
                lane_pair(mn_hi, 0),
                lane_pair(mn_hi, 2),
            ];
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(rec as *const __m128i));
            let dmw = _mm256_cvtph_ps(_mm_loadu_si128(rec.add(16) as *const __m128i));
            for i in 0..N {
                let ix = base[i] + b;
                let sh = if in_place {
                    _mm256_srai_epi32::<4>(ish[i])
                } else {
                    ish[i]
                };
                let isum = _mm256_add_epi32(isl[i], sh);
                // Σ_s m_s Σx_s: sub-block pairs (2q, 2q + 1) against the two 32-value sums.
                let sums = xs.add(ix * 8) as *const i32;
                let mut msum = zero;
                for (q, mq) in mins.iter().enumerate() {
                    msum = D::dot_ww(msum, *mq, _mm256_set1_epi32(sums.add(q).read_unaligned()));
                }
                let dx = _mm256_set1_ps(*xd.add(ix));
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, dx), acc[i]);
                acc[i] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(dmw, dx), acc[i]);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            // SAFETY (caller): columns r0..r1 of the tile's activation rows are this call's.
            let at = t.out.add((t.i0 + i) * t.ldo + g * ROWS);
            _mm256_storeu_ps(at, *a);
        }
    }
}

/// Q6_Kx8 records (1680 bytes): the 8 rows' `d`, then 52 words per row in reading order (see
/// `quant/interleave.rs`): the 16 signed sub-block scales, then per half `n` of the
/// super-block and word `w = 0..8` the words A, B and H below.
const Q6_RECORD: usize = ROWS * 210;
const Q6_SC: usize = qs_at(GgmlType::Q6_K);
/// Where A of half `n`, word `w` lies (B follows it, then H).
const fn q6_triple(n: usize, w: usize) -> usize {
    Q6_SC + 32 * (4 + 24 * n + 3 * w)
}

/// `w = d sc_s (q - 32)` with 6-bit `q` (4 bits in `ql`, 2 in `qh`) and a signed 8-bit scale per
/// 16 values. Per half `n` of the super-block and word `o` of it, `ql` words `16n + o` (A) and
/// `16n + 8 + o` (B) and `qh` word `8n + o` (H) give the values `128n + 4o + 32k` for `k = 0..4`:
/// A's low nibbles with H's bits 0-1, B's low nibbles with bits 2-3, A's high nibbles with
/// bits 4-5, B's high nibbles with bits 6-7 (ggml's `dequantize_row_q6_K`). Each run of 4
/// words is one 16-value sub-block: its dot product is multiplied by the lane's scale; the
/// offset is `32 Σ_s sc_s Σx_s`, from the activation's 16-value sums once per record.
#[inline(always)]
unsafe fn q6k_n<D: Dot, const N: usize>(t: &Tile<Q8KRows>) {
    debug_assert!(t.r0.is_multiple_of(ROWS) && t.r1.is_multiple_of(ROWS));
    let nb = t.nb;
    let (qs, xd, xs) = (t.acts.qs.as_ptr(), t.acts.d.as_ptr(), t.acts.bsums.as_ptr());
    let m4 = _mm256_set1_epi8(0x0F);
    let m30 = _mm256_set1_epi8(0x30);
    let zero = _mm256_setzero_si256();
    let mut base = [0usize; N];
    for (i, b) in base.iter_mut().enumerate() {
        *b = (t.i0 + i) * nb;
    }
    for g in t.r0 / ROWS..t.r1 / ROWS {
        let group = t.w.as_ptr().add(g * nb * Q6_RECORD);
        let mut acc = [_mm256_setzero_ps(); N];
        for b in 0..nb {
            let rec = group.add(b * Q6_RECORD);
            crate::backend::cpu::simd::prefetch_stream(rec, Q6_RECORD);
            // Lane j of `sw[w]`: row j's scales 4w..4w + 4.
            let sw = [
                load(rec, Q6_SC),
                load(rec, Q6_SC + 32),
                load(rec, Q6_SC + 64),
                load(rec, Q6_SC + 96),
            ];
            let mut isum = [zero; N];
            for n in 0..2 {
                for oq in 0..2 {
                    // u[k][o]: values 128n + 32k + 16oq + 4o, sub-block 8n + 2k + oq.
                    let mut u = [[zero; 4]; 4];
                    for o in 0..4 {
                        let at = q6_triple(n, 4 * oq + o);
                        let (a, bq, h) = (load(rec, at), load(rec, at + 32), load(rec, at + 64));
                        let (a_hi, b_hi) = (_mm256_srli_epi16::<4>(a), _mm256_srli_epi16::<4>(bq));
                        let decoded = [
                            _mm256_or_si256(
                                _mm256_and_si256(m4, a),
                                _mm256_and_si256(m30, _mm256_slli_epi16::<4>(h)),
                            ),
                            _mm256_or_si256(
                                _mm256_and_si256(m4, bq),
                                _mm256_and_si256(m30, _mm256_slli_epi16::<2>(h)),
                            ),
                            _mm256_or_si256(_mm256_and_si256(m4, a_hi), _mm256_and_si256(m30, h)),
                            _mm256_or_si256(
                                _mm256_and_si256(m4, b_hi),
                                _mm256_and_si256(m30, _mm256_srli_epi16::<2>(h)),
                            ),
                        ];
                        for (uk, v) in u.iter_mut().zip(decoded) {
                            uk[o] = v;
                        }
                    }
                    for i in 0..N {
                        let x = qs.add((base[i] + b) * 256 + 128 * n + 16 * oq);
                        for (k, uk) in u.iter().enumerate() {
                            let mut d = zero;
                            for (o, &v) in uk.iter().enumerate() {
                                d = D::dot_us(d, v, word(x, 8 * k + o));
                            }
                            let sub = 8 * n + 2 * k + oq;
                            let sc = lane_byte_signed(sw[sub / 4], (sub % 4) as i8);
                            isum[i] = _mm256_add_epi32(isum[i], _mm256_mullo_epi32(d, sc));
                        }
                    }
                }
            }
            // Sub-block scale pairs (2q, 2q + 1) as i16 halves, against the 16-value sums.
            let mut pairs = [zero; 8];
            for (q, p) in pairs.iter_mut().enumerate() {
                *p = lane_pair_signed(sw[q / 2], (2 * (q % 2)) as i8);
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(rec as *const __m128i));
            for i in 0..N {
                let ix = base[i] + b;
                let sums = xs.add(ix * 16) as *const i32;
                let mut off = zero;
                for (q, p) in pairs.iter().enumerate() {
                    off = D::dot_ww(off, *p, _mm256_set1_epi32(sums.add(q).read_unaligned()));
                }
                let total = _mm256_sub_epi32(isum[i], _mm256_slli_epi32::<5>(off));
                let dx = _mm256_set1_ps(*xd.add(ix));
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(dw, dx), acc[i]);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            // SAFETY (caller): columns r0..r1 of the tile's activation rows are this call's.
            let at = t.out.add((t.i0 + i) * t.ldo + g * ROWS);
            _mm256_storeu_ps(at, *a);
        }
    }
}
