//! x86 kernels: AVX-512 with VBMI (512-bit registers) and AVX2 + FMA (256-bit).
//!
//! AVX-512 decodes 64 values of any width with three instructions: a byte permute
//! (`vpermb`) puts pack `p` (8 values, `bits` bytes) in qword `p`, `vpmultishiftqb` pulls value
//! `i`'s bit field of each qword into byte `i`, and an AND drops the neighbours' bits. Each 16
//! bytes are then spread into dword lanes by a zero-masked `vpermb` and converted to f32. The
//! loads are masked to the bytes of the chunk, so nothing past a row is ever read.
//!
//! AVX2 decodes one pack (8 values) per step: the pack's bytes broadcast to the lanes, a
//! per-lane variable shift and a mask (8-bit weights load and widen directly).
//!
//! 4-bit codes have their own kernels on both: bytes widen to lanes, and a mask and a shift
//! give the even and the odd values, which meet activations stored in that order.
//!
//! With AVX-512 BF16, codes of up to 6 bits are multiplied as bf16 (see the section below).
//!
//! All accumulate `x · q` per group in f32 lanes and scale once per group (`acc += scale ·
//! partial`); the bias term `bias · Σx` is added per group after the row, from the activation
//! group sums the driver computes once.
//!
//! Helpers are `#[inline(always)]` and free of closures, so they compile inside the
//! `#[target_feature]` entry points with the wide instructions.

// Register arrays indexed in unrolled loops are the clearest way to write these kernels.
#![allow(clippy::needless_range_loop)]

use super::format::Format;
use super::kernels::DotArgs;
use std::arch::x86_64::*;

// ---------------------------------------------------------------------------------------------
// AVX-512 (F, BW, VL, VBMI)
// ---------------------------------------------------------------------------------------------

/// Decodes 64 values (or fewer, for 32-value groups) per call.
struct Vbmi {
    arrange: __m512i,
    shift: __m512i,
    mask: __m512i,
    spread: [__m512i; 4],
    /// 8-bit values are already one per byte.
    plain: bool,
}

impl Vbmi {
    #[inline(always)]
    unsafe fn new(bits: u32) -> Vbmi {
        let b = bits as usize;
        let mut arrange = [0u8; 64];
        let mut shift = [0u8; 64];
        let mut spread = [[0u8; 64]; 4];
        for p in 0..8 {
            for t in 0..8 {
                // Byte t of qword p: byte t of pack p (bytes past the pack are masked later).
                arrange[8 * p + t] = (p * b + t) as u8;
                // Value t of pack p starts at bit t * bits of its qword.
                shift[8 * p + t] = (t * b) as u8;
            }
        }
        for (j, s) in spread.iter_mut().enumerate() {
            for l in 0..16 {
                s[4 * l] = (16 * j + l) as u8;
            }
        }
        Vbmi {
            arrange: _mm512_loadu_si512(arrange.as_ptr() as *const _),
            shift: _mm512_loadu_si512(shift.as_ptr() as *const _),
            mask: _mm512_set1_epi8(((1u32 << bits) - 1) as u8 as i8),
            spread: [
                _mm512_loadu_si512(spread[0].as_ptr() as *const _),
                _mm512_loadu_si512(spread[1].as_ptr() as *const _),
                _mm512_loadu_si512(spread[2].as_ptr() as *const _),
                _mm512_loadu_si512(spread[3].as_ptr() as *const _),
            ],
            plain: bits == 8,
        }
    }

    /// The codes of the values whose packs start at `p`, one per byte; `load` masks the bytes
    /// that belong to the chunk.
    #[inline(always)]
    unsafe fn bytes(&self, p: *const u8, load: u64) -> __m512i {
        let v = _mm512_maskz_loadu_epi8(load, p as *const i8);
        if self.plain {
            return v;
        }
        let a = _mm512_permutexvar_epi8(self.arrange, v);
        _mm512_and_si512(_mm512_multishift_epi64_epi8(self.shift, a), self.mask)
    }

    /// As [`Vbmi::bytes`] but with the neighbours' bits left above each code (for lookups that
    /// read only the low bits).
    #[inline(always)]
    unsafe fn raw_codes(&self, p: *const u8, load: u64) -> __m512i {
        let v = _mm512_maskz_loadu_epi8(load, p as *const i8);
        let a = _mm512_permutexvar_epi8(self.arrange, v);
        _mm512_multishift_epi64_epi8(self.shift, a)
    }

    /// Codes `16 j .. 16 j + 16` of `v` as f32.
    #[inline(always)]
    unsafe fn f32s(&self, v: __m512i, j: usize) -> __m512 {
        _mm512_cvtepi32_ps(_mm512_maskz_permutexvar_epi8(
            0x1111_1111_1111_1111,
            self.spread[j],
            v,
        ))
    }
}

/// Chunking of a group for the AVX-512 decoder: values per chunk (64, or 32 for 32-value
/// groups), chunks per group, f32 vectors per chunk, and the load mask of a chunk's bytes.
#[inline(always)]
fn chunking(fmt: Format) -> (usize, usize, usize, u64) {
    let chunk = fmt.group_size.min(64);
    let bytes = chunk / 8 * fmt.bits as usize;
    let load = if bytes >= 64 {
        u64::MAX
    } else {
        (1u64 << bytes) - 1
    };
    (chunk, fmt.group_size / chunk, chunk / 16, load)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx2,fma,f16c")]
pub(super) unsafe fn dot_avx512(a: &DotArgs) {
    dot512_any(a)
}

#[inline(always)]
unsafe fn dot512_any(a: &DotArgs) {
    if a.fmt.bits == 4 {
        return match a.mt {
            1 => dot512_nibbles::<1>(a),
            2 => dot512_nibbles::<2>(a),
            3 => dot512_nibbles::<3>(a),
            _ => dot512_nibbles::<4>(a),
        };
    }
    match (a.mt, a.fmt.bits == 8) {
        (1, true) => dot512::<1, true>(a),
        (2, true) => dot512::<2, true>(a),
        (3, true) => dot512::<3, true>(a),
        (_, true) => dot512::<4, true>(a),
        (1, false) => dot512::<1, false>(a),
        (2, false) => dot512::<2, false>(a),
        (3, false) => dot512::<3, false>(a),
        _ => dot512::<4, false>(a),
    }
}

/// The f32 kernel: codes widened to f32 lanes, one FMA per 16 values and activation row.
/// `PLAIN` (8-bit codes) widens bytes straight from memory.
#[inline(always)]
unsafe fn dot512<const M: usize, const PLAIN: bool>(a: &DotArgs) {
    let fmt = a.fmt;
    let (gs, k, bits) = (fmt.group_size, a.k, fmt.bits as usize);
    let ng = k / gs;
    let row_bytes = fmt.row_bytes(k);
    let dec = Vbmi::new(fmt.bits);
    let (chunk, chunks, vecs, load) = chunking(fmt);
    for r in 0..a.rows {
        let w = a.w.add(r * row_bytes);
        let (sc, bi) = (a.scales.add(r * ng), a.biases.add(r * ng));
        let mut acc = [_mm512_setzero_ps(); M];
        for g in a.g0..a.g1 {
            let mut d = [_mm512_setzero_ps(); M];
            for c in 0..chunks {
                let off = g * gs + c * chunk;
                let p = w.add(off / 8 * bits);
                prefetch(p);
                let v = if PLAIN {
                    _mm512_setzero_si512()
                } else {
                    dec.bytes(p, load)
                };
                for j in 0..4 {
                    if j < vecs {
                        let f = if PLAIN {
                            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(
                                p.add(16 * j) as *const __m128i
                            )))
                        } else {
                            dec.f32s(v, j)
                        };
                        for i in 0..M {
                            let x = _mm512_loadu_ps(a.x.add(i * k + off + 16 * j));
                            d[i] = _mm512_fmadd_ps(x, f, d[i]);
                        }
                    }
                }
            }
            let s = _mm512_set1_ps(*sc.add(g));
            for i in 0..M {
                acc[i] = _mm512_fmadd_ps(s, d[i], acc[i]);
            }
        }
        for i in 0..M {
            let y = _mm512_reduce_add_ps(acc[i])
                + bias_dot512(bi.add(a.g0), a.xsum.add(i * ng + a.g0), a.g1 - a.g0);
            *a.out.add(i * a.ldo + r) += y;
        }
    }
}

/// How far ahead of the weights being decoded to prefetch. The hardware prefetchers alone
/// left the decode-sized product at a third of the read bandwidth once the matrix outgrew the
/// caches: the decode work between cache lines hides too little of the latency.
const PREFETCH_BYTES: usize = 8192;

/// Prefetches the weight bytes `PREFETCH_BYTES` after `p` (a hint: it never faults, even past
/// the end of the weights).
#[inline(always)]
unsafe fn prefetch(p: *const u8) {
    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_BYTES) as *const i8);
}

/// 4-bit codes in f32: 16 bytes widen to 16 dword lanes, whose low nibbles are the even values
/// of 32 and high nibbles the odd ones; the activations come in that order (see
/// `kernels::plan`).
#[inline(always)]
unsafe fn dot512_nibbles<const M: usize>(a: &DotArgs) {
    let fmt = a.fmt;
    let (gs, k) = (fmt.group_size, a.k);
    let ng = k / gs;
    let row_bytes = fmt.row_bytes(k);
    let low = _mm512_set1_epi32(15);
    for r in 0..a.rows {
        let w = a.w.add(r * row_bytes);
        let (sc, bi) = (a.scales.add(r * ng), a.biases.add(r * ng));
        let mut acc = [_mm512_setzero_ps(); M];
        for g in a.g0..a.g1 {
            let mut d0 = [_mm512_setzero_ps(); M];
            let mut d1 = [_mm512_setzero_ps(); M];
            for p in 0..gs / 32 {
                let off = g * gs + p * 32;
                let q = w.add(off / 2);
                prefetch(q);
                let b = _mm512_cvtepu8_epi32(_mm_loadu_si128(q as *const __m128i));
                let fe = _mm512_cvtepi32_ps(_mm512_and_si512(b, low));
                let fo = _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(b));
                for i in 0..M {
                    let x = a.x.add(i * k + off);
                    d0[i] = _mm512_fmadd_ps(_mm512_loadu_ps(x), fe, d0[i]);
                    d1[i] = _mm512_fmadd_ps(_mm512_loadu_ps(x.add(16)), fo, d1[i]);
                }
            }
            let s = _mm512_set1_ps(*sc.add(g));
            for i in 0..M {
                acc[i] = _mm512_fmadd_ps(s, _mm512_add_ps(d0[i], d1[i]), acc[i]);
            }
        }
        for i in 0..M {
            let y = _mm512_reduce_add_ps(acc[i])
                + bias_dot512(bi.add(a.g0), a.xsum.add(i * ng + a.g0), a.g1 - a.g0);
            *a.out.add(i * a.ldo + r) += y;
        }
    }
}

/// `Σ_g bias_g · xsum_g`, 16 groups per FMA.
#[inline(always)]
unsafe fn bias_dot512(bi: *const f32, xs: *const f32, ng: usize) -> f32 {
    let mut v = _mm512_setzero_ps();
    let mut g = 0;
    while g + 16 <= ng {
        v = _mm512_fmadd_ps(_mm512_loadu_ps(bi.add(g)), _mm512_loadu_ps(xs.add(g)), v);
        g += 16;
    }
    _mm512_reduce_add_ps(v) + bias_dot(bi.add(g), xs.add(g), ng - g)
}

/// `Σ_g bias_g · xsum_g`.
#[inline(always)]
unsafe fn bias_dot(bi: *const f32, xs: *const f32, ng: usize) -> f32 {
    let mut s = 0.0;
    for g in 0..ng {
        s += *bi.add(g) * *xs.add(g);
    }
    s
}

// ---------------------------------------------------------------------------------------------
// AVX-512 BF16: codes of up to 6 bits become bf16 through a 32- or 64-entry table (`vpermw`,
// `vpermt2w`: exact, and they read only the low 5 or 6 bits, so the decoder skips its mask), and
// `vdpbf16ps` multiplies 32 of them by 32 bf16 activations per instruction, accumulating in f32.
// f32 activations are split as `x ≈ hi + lo` (two bf16, 16 significant bits): two products.
// ---------------------------------------------------------------------------------------------

struct Lut {
    lo: __m512i,
    hi: __m512i,
    wide: bool,
}

impl Lut {
    #[inline(always)]
    unsafe fn new(bits: u32) -> Lut {
        let mut t = [0u16; 64];
        for (i, v) in t.iter_mut().enumerate() {
            *v = (((i as u32) & ((1 << bits) - 1)) as f32)
                .to_bits()
                .wrapping_shr(16) as u16;
        }
        Lut {
            lo: _mm512_loadu_si512(t.as_ptr() as *const _),
            hi: _mm512_loadu_si512(t[32..].as_ptr() as *const _),
            wide: bits > 5,
        }
    }

    /// bf16 values of the codes in the low bits of each u16 lane.
    #[inline(always)]
    unsafe fn get(&self, idx: __m512i) -> __m512bh {
        let v = if self.wide {
            _mm512_permutex2var_epi16(self.lo, idx, self.hi)
        } else {
            _mm512_permutexvar_epi16(idx, self.lo)
        };
        // SAFETY: both are plain 512-bit vectors.
        std::mem::transmute::<__m512i, __m512bh>(v)
    }
}

#[inline(always)]
unsafe fn load_bh(p: *const u16) -> __m512bh {
    // SAFETY: both are plain 512-bit vectors.
    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p as *const _))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512bf16,avx2,fma,f16c")]
pub(super) unsafe fn dot_avx512_bf16(a: &DotArgs) {
    if a.fmt.bits > 6 || a.xh.is_null() {
        return dot512_any(a);
    }
    if a.fmt.bits == 4 && a.fmt.group_size >= 64 {
        return match (a.mt, !a.xl.is_null()) {
            (1, false) => dotbf4::<1, false>(a),
            (2, false) => dotbf4::<2, false>(a),
            (3, false) => dotbf4::<3, false>(a),
            (_, false) => dotbf4::<4, false>(a),
            (1, true) => dotbf4::<1, true>(a),
            (2, true) => dotbf4::<2, true>(a),
            (3, true) => dotbf4::<3, true>(a),
            _ => dotbf4::<4, true>(a),
        };
    }
    match (a.mt, !a.xl.is_null()) {
        (1, false) => dotbf::<1, false>(a),
        (2, false) => dotbf::<2, false>(a),
        (3, false) => dotbf::<3, false>(a),
        (_, false) => dotbf::<4, false>(a),
        (1, true) => dotbf::<1, true>(a),
        (2, true) => dotbf::<2, true>(a),
        (3, true) => dotbf::<3, true>(a),
        _ => dotbf::<4, true>(a),
    }
}

/// The bf16 kernel; `LO`: the activations have a low part.
#[inline(always)]
unsafe fn dotbf<const M: usize, const LO: bool>(a: &DotArgs) {
    let fmt = a.fmt;
    let (gs, k, bits) = (fmt.group_size, a.k, fmt.bits as usize);
    let ng = k / gs;
    let row_bytes = fmt.row_bytes(k);
    let dec = Vbmi::new(fmt.bits);
    let lut = Lut::new(fmt.bits);
    let (chunk, chunks, _, load) = chunking(fmt);
    let halves = chunk / 32;
    for r in 0..a.rows {
        let w = a.w.add(r * row_bytes);
        let (sc, bi) = (a.scales.add(r * ng), a.biases.add(r * ng));
        let mut acc = [_mm512_setzero_ps(); M];
        for g in a.g0..a.g1 {
            let mut d = [_mm512_setzero_ps(); M];
            let mut dl = [_mm512_setzero_ps(); M];
            for c in 0..chunks {
                let off = g * gs + c * chunk;
                let p = w.add(off / 8 * bits);
                prefetch(p);
                let v = dec.raw_codes(p, load);
                for h in 0..2 {
                    if h < halves {
                        let half = if h == 0 {
                            _mm512_castsi512_si256(v)
                        } else {
                            _mm512_extracti64x4_epi64::<1>(v)
                        };
                        let q = lut.get(_mm512_cvtepu8_epi16(half));
                        let at = off + 32 * h;
                        for i in 0..M {
                            d[i] = _mm512_dpbf16_ps(d[i], q, load_bh(a.xh.add(i * k + at)));
                            if LO {
                                dl[i] = _mm512_dpbf16_ps(dl[i], q, load_bh(a.xl.add(i * k + at)));
                            }
                        }
                    }
                }
            }
            let s = _mm512_set1_ps(*sc.add(g));
            for i in 0..M {
                let t = if LO { _mm512_add_ps(d[i], dl[i]) } else { d[i] };
                acc[i] = _mm512_fmadd_ps(s, t, acc[i]);
            }
        }
        for i in 0..M {
            let y = _mm512_reduce_add_ps(acc[i])
                + bias_dot512(bi.add(a.g0), a.xsum.add(i * ng + a.g0), a.g1 - a.g0);
            *a.out.add(i * a.ldo + r) += y;
        }
    }
}

/// 4-bit codes, groups of 64 or 128: 32 bytes widen to 32 u16 lanes, whose low nibbles are
/// the even values and high nibbles the odd ones; the activations come in the matching
/// even/odd order (see `kernels::plan`). Six instructions per 64 values (eight with a low
/// part), against twelve for the general decoder.
#[inline(always)]
unsafe fn dotbf4<const M: usize, const LO: bool>(a: &DotArgs) {
    let fmt = a.fmt;
    let (gs, k) = (fmt.group_size, a.k);
    let ng = k / gs;
    let row_bytes = fmt.row_bytes(k);
    let lut = Lut::new(4);
    for r in 0..a.rows {
        let w = a.w.add(r * row_bytes);
        let (sc, bi) = (a.scales.add(r * ng), a.biases.add(r * ng));
        let mut acc = [_mm512_setzero_ps(); M];
        for g in a.g0..a.g1 {
            let mut d = [_mm512_setzero_ps(); M];
            let mut dl = [_mm512_setzero_ps(); M];
            for c in 0..gs / 64 {
                let off = g * gs + c * 64;
                let p = w.add(off / 2);
                prefetch(p);
                let b = _mm512_cvtepu8_epi16(_mm256_loadu_si256(p as *const __m256i));
                let qe = lut.get(b);
                let qo = lut.get(_mm512_srli_epi16::<4>(b));
                for i in 0..M {
                    let xh = a.xh.add(i * k + off);
                    d[i] = _mm512_dpbf16_ps(d[i], qe, load_bh(xh));
                    d[i] = _mm512_dpbf16_ps(d[i], qo, load_bh(xh.add(32)));
                    if LO {
                        let xl = a.xl.add(i * k + off);
                        dl[i] = _mm512_dpbf16_ps(dl[i], qe, load_bh(xl));
                        dl[i] = _mm512_dpbf16_ps(dl[i], qo, load_bh(xl.add(32)));
                    }
                }
            }
            let s = _mm512_set1_ps(*sc.add(g));
            for i in 0..M {
                let t = if LO { _mm512_add_ps(d[i], dl[i]) } else { d[i] };
                acc[i] = _mm512_fmadd_ps(s, t, acc[i]);
            }
        }
        for i in 0..M {
            let y = _mm512_reduce_add_ps(acc[i])
                + bias_dot512(bi.add(a.g0), a.xsum.add(i * ng + a.g0), a.g1 - a.g0);
            *a.out.add(i * a.ldo + r) += y;
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx2,fma,f16c")]
pub(super) unsafe fn decode_row_avx512(
    fmt: Format,
    row: &[u8],
    scales: &[f32],
    biases: &[f32],
    out: &mut [f32],
) {
    let (gs, bits) = (fmt.group_size, fmt.bits as usize);
    let dec = Vbmi::new(fmt.bits);
    let (chunk, chunks, vecs, load) = chunking(fmt);
    let (w, o) = (row.as_ptr(), out.as_mut_ptr());
    for g in 0..out.len() / gs {
        let (s, b) = (_mm512_set1_ps(scales[g]), _mm512_set1_ps(biases[g]));
        for c in 0..chunks {
            let off = g * gs + c * chunk;
            let v = dec.bytes(w.add(off / 8 * bits), load);
            for j in 0..4 {
                if j < vecs {
                    let q = dec.f32s(v, j);
                    _mm512_storeu_ps(o.add(off + 16 * j), _mm512_add_ps(_mm512_mul_ps(s, q), b));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA
// ---------------------------------------------------------------------------------------------

/// How a pack is widened: 8-bit (direct), at most 4 bits (one u32 holds the pack), 5 or 6 bits
/// (two halves of 4 values).
const KIND8: u8 = 0;
const KIND_SMALL: u8 = 1;
const KIND_WIDE: u8 = 2;
/// 4-bit codes in the even/odd order (see [`dot256`]; only the product takes this kind).
const KIND_NIBBLES: u8 = 3;

struct Avx2Dec {
    shifts: __m256i,
    mask: __m256i,
    bits: u32,
}

impl Avx2Dec {
    #[inline(always)]
    unsafe fn new(bits: u32) -> Avx2Dec {
        let b = bits as i32;
        let shifts = if bits <= 4 {
            _mm256_setr_epi32(0, b, 2 * b, 3 * b, 4 * b, 5 * b, 6 * b, 7 * b)
        } else {
            _mm256_setr_epi32(0, b, 2 * b, 3 * b, 0, b, 2 * b, 3 * b)
        };
        Avx2Dec {
            shifts,
            mask: _mm256_set1_epi32((1i32 << bits) - 1),
            bits,
        }
    }

    /// The pack at `p` as 8 f32 codes; `end` is the end of the row (reads never pass it).
    #[inline(always)]
    unsafe fn pack<const KIND: u8>(&self, p: *const u8, end: *const u8) -> __m256 {
        let q = if KIND == KIND8 {
            _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i))
        } else {
            let u = if p.add(8) <= end {
                (p as *const u64).read_unaligned()
            } else {
                let mut b = [0u8; 8];
                std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), self.bits as usize);
                u64::from_le_bytes(b)
            };
            let v = if KIND == KIND_SMALL {
                _mm256_set1_epi32(u as u32 as i32)
            } else {
                let hi = (u >> (4 * self.bits)) as u32 as i32;
                _mm256_setr_epi32(
                    u as u32 as i32,
                    u as u32 as i32,
                    u as u32 as i32,
                    u as u32 as i32,
                    hi,
                    hi,
                    hi,
                    hi,
                )
            };
            _mm256_and_si256(_mm256_srlv_epi32(v, self.shifts), self.mask)
        };
        _mm256_cvtepi32_ps(q)
    }
}

#[inline(always)]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_avx2(a: &DotArgs) {
    match (a.fmt.bits, a.mt) {
        (4, 1) => rows256::<KIND_NIBBLES, 1, 4>(a),
        (4, 2) => rows256::<KIND_NIBBLES, 2, 1>(a),
        (4, 3) => rows256::<KIND_NIBBLES, 3, 1>(a),
        (4, _) => rows256::<KIND_NIBBLES, 4, 1>(a),
        (8, 1) => rows256::<KIND8, 1, 4>(a),
        (8, 2) => rows256::<KIND8, 2, 1>(a),
        (8, 3) => rows256::<KIND8, 3, 1>(a),
        (8, _) => rows256::<KIND8, 4, 1>(a),
        (5 | 6, 1) => rows256::<KIND_WIDE, 1, 4>(a),
        (5 | 6, 2) => rows256::<KIND_WIDE, 2, 1>(a),
        (5 | 6, 3) => rows256::<KIND_WIDE, 3, 1>(a),
        (5 | 6, _) => rows256::<KIND_WIDE, 4, 1>(a),
        (_, 1) => rows256::<KIND_SMALL, 1, 4>(a),
        (_, 2) => rows256::<KIND_SMALL, 2, 1>(a),
        (_, 3) => rows256::<KIND_SMALL, 3, 1>(a),
        _ => rows256::<KIND_SMALL, 4, 1>(a),
    }
}

/// The weight rows `R` at a time (the rows past the last whole tile one at a time). With one
/// activation row, one weight row leaves only two FMA chains, each waiting on the other's
/// latency (4 cycles per 16 values, about 6 GB/s of 4-bit weights per core); four rows give
/// eight independent chains and share the activation loads.
#[inline(always)]
unsafe fn rows256<const KIND: u8, const M: usize, const R: usize>(a: &DotArgs) {
    let mut r = 0;
    while r + R <= a.rows {
        dot256::<KIND, M, R>(a, r);
        r += R;
    }
    while r < a.rows {
        dot256::<KIND, M, 1>(a, r);
        r += 1;
    }
}

/// Weight rows `r0..r0 + R` against the `M` activation rows. `KIND_NIBBLES` (4-bit codes): 8
/// bytes widen to 8 dword lanes, whose low nibbles are the even values of 16 and high nibbles
/// the odd ones; the activations come in that order (see `kernels::plan`): seven
/// instructions per 16 values, against thirteen for the general decoder ([`Avx2Dec`]).
#[inline(always)]
unsafe fn dot256<const KIND: u8, const M: usize, const R: usize>(a: &DotArgs, r0: usize) {
    let fmt = a.fmt;
    let (gs, k, bits) = (fmt.group_size, a.k, fmt.bits as usize);
    let ng = k / gs;
    let row_bytes = fmt.row_bytes(k);
    let dec = Avx2Dec::new(fmt.bits);
    let low = _mm256_set1_epi32(15);
    let w = a.w.add(r0 * row_bytes);
    let end = a.w.add((r0 + R) * row_bytes);
    let mut acc = [[_mm256_setzero_ps(); M]; R];
    for g in a.g0..a.g1 {
        // Two partial sums per row halve the dependency chain through the group.
        let mut d0 = [[_mm256_setzero_ps(); M]; R];
        let mut d1 = [[_mm256_setzero_ps(); M]; R];
        for p in (0..gs / 8).step_by(2) {
            let off = g * gs + p * 8;
            // The tile's R rows are one contiguous run of bytes, read at R times the rate of
            // one row: a point that walks it at that rate stays level with the reads.
            prefetch(w.add(R * off / 8 * bits));
            for j in 0..R {
                let wr = w.add(j * row_bytes);
                let (f0, f1) = if KIND == KIND_NIBBLES {
                    let b =
                        _mm256_cvtepu8_epi32(_mm_loadl_epi64(wr.add(off / 2) as *const __m128i));
                    (
                        _mm256_cvtepi32_ps(_mm256_and_si256(b, low)),
                        _mm256_cvtepi32_ps(_mm256_srli_epi32::<4>(b)),
                    )
                } else {
                    (
                        dec.pack::<KIND>(wr.add(off / 8 * bits), end),
                        dec.pack::<KIND>(wr.add(off / 8 * bits + bits), end),
                    )
                };
                for i in 0..M {
                    let x = a.x.add(i * k + off);
                    d0[j][i] = _mm256_fmadd_ps(_mm256_loadu_ps(x), f0, d0[j][i]);
                    d1[j][i] = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(8)), f1, d1[j][i]);
                }
            }
        }
        for j in 0..R {
            let s = _mm256_set1_ps(*a.scales.add((r0 + j) * ng + g));
            for i in 0..M {
                acc[j][i] = _mm256_fmadd_ps(s, _mm256_add_ps(d0[j][i], d1[j][i]), acc[j][i]);
            }
        }
    }
    for j in 0..R {
        let bi = a.biases.add((r0 + j) * ng);
        for i in 0..M {
            let y =
                hsum256(acc[j][i]) + bias_dot(bi.add(a.g0), a.xsum.add(i * ng + a.g0), a.g1 - a.g0);
            *a.out.add(i * a.ldo + r0 + j) += y;
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn decode_row_avx2(
    fmt: Format,
    row: &[u8],
    scales: &[f32],
    biases: &[f32],
    out: &mut [f32],
) {
    match fmt.bits {
        8 => decode256::<KIND8>(fmt, row, scales, biases, out),
        5 | 6 => decode256::<KIND_WIDE>(fmt, row, scales, biases, out),
        _ => decode256::<KIND_SMALL>(fmt, row, scales, biases, out),
    }
}

#[inline(always)]
unsafe fn decode256<const KIND: u8>(
    fmt: Format,
    row: &[u8],
    scales: &[f32],
    biases: &[f32],
    out: &mut [f32],
) {
    let (gs, bits) = (fmt.group_size, fmt.bits as usize);
    let dec = Avx2Dec::new(fmt.bits);
    let w = row.as_ptr();
    let end = w.add(row.len());
    let o = out.as_mut_ptr();
    for g in 0..out.len() / gs {
        let (s, b) = (_mm256_set1_ps(scales[g]), _mm256_set1_ps(biases[g]));
        for p in 0..gs / 8 {
            let off = g * gs + p * 8;
            let q = dec.pack::<KIND>(w.add(off / 8 * bits), end);
            _mm256_storeu_ps(o.add(off), _mm256_add_ps(_mm256_mul_ps(s, q), b));
        }
    }
}
