//! The bf16 matrix product `C (+)= A B` on the tiles, any strides: P is the rows of A (a
//! chunk of a row-major A is 64 bytes copied as they are), Q the columns of B (a pair-row of a
//! row-major B interleaves two of its rows), and a result block is rows of C.

use super::gemm::{Operands, Panel, product};
use super::tiles::{BLOCK, KSTEP};
use crate::backend::cpu::gemm::{MatMut, MatRef, bf16x16_to_f32};
use half::bf16;
use std::arch::x86_64::*;

struct Dense {
    a: MatRef<bf16>,
    b: MatRef<bf16>,
    c: MatMut<bf16>,
    n: usize,
    k: usize,
    accumulate: bool,
}

// SAFETY: the matrices are only read (A, B) or written in disjoint row ranges (C) by the pool
// threads, as `product` guarantees.
unsafe impl Sync for Dense {}

impl Operands for Dense {
    fn decode_p(&self, r0: usize, r1: usize, panel: &mut Panel) {
        let k = self.k;
        for r in r0..r1 {
            for ch in 0..k.div_ceil(KSTEP) {
                let dst = panel.chunk(r - r0, ch);
                let (k0, len) = (ch * KSTEP, (k - ch * KSTEP).min(KSTEP));
                if self.a.cs == 1 {
                    // Row r < m, values k0..k0 + len <= k of a row-major A.
                    let src = self.a.at(r, k0);
                    if len == KSTEP {
                        // A fixed-size copy (two vector moves; a slice copy of run-time length
                        // was a library call per chunk).
                        // SAFETY: as above, 32 values.
                        let chunk = unsafe { src.cast::<[u16; KSTEP]>().read_unaligned() };
                        dst.copy_from_slice(&chunk);
                        continue;
                    }
                    // SAFETY: as above.
                    let src = unsafe { std::slice::from_raw_parts(src.cast::<u16>(), len) };
                    dst[..len].copy_from_slice(src);
                } else {
                    for (t, d) in dst[..len].iter_mut().enumerate() {
                        // SAFETY: in range, as above.
                        *d = unsafe { *self.a.at(r, k0 + t) }.to_bits();
                    }
                }
                dst[len..].fill(0);
            }
        }
    }

    fn pack_q(&self, g0: usize, g1: usize, kp: usize, dst: &mut [u8]) {
        let (n, k) = (self.n, self.k);
        let group = kp * 32;
        // Whole pairs of groups from a row-major B (64 bytes of each of two rows make a
        // pair-row of both), all at once so that B is read along its rows.
        let full = if self.b.cs == 1 {
            ((g1 - g0) / 2).min((n / 16).saturating_sub(g0) / 2)
        } else {
            0
        };
        if full > 0 {
            // SAFETY: rows 0..2 (k / 2) <= k and columns 16 g0..16 (g0 + 2 full) <= n of a
            // row-major B; dst holds 2 full groups of kp / 2 >= k / 2 pair-rows; AVX-512
            // (`supported()`).
            unsafe {
                let b = self.b.at(0, 16 * g0).cast::<u16>();
                interleave_group_pairs(b, self.b.rs, k / 2, full, dst.as_mut_ptr(), group);
            }
        }
        for g in g0..g1 {
            let out = &mut dst[(g - g0) * group..][..group];
            let j0 = 16 * g;
            // Pair-rows already written; the rest (an odd last row of k, columns past n,
            // padding, other strides) element by element.
            let p0 = if g < g0 + 2 * full {
                k / 2
            } else if self.b.cs == 1 && j0 + 16 <= n {
                // SAFETY: rows 0..2 (k / 2) and columns j0..j0 + 16 of a row-major B; `out`
                // holds kp / 2 pair-rows; AVX-512 (`supported()`).
                unsafe {
                    let b = self.b.at(0, j0).cast::<u16>();
                    interleave_rows(b, self.b.rs, k / 2, out.as_mut_ptr());
                }
                k / 2
            } else {
                0
            };
            for p in p0..kp / 2 {
                let (k0, k1) = (2 * p, 2 * p + 1);
                for (j, pair) in out[p * 64..p * 64 + 64].chunks_exact_mut(4).enumerate() {
                    let col = j0 + j;
                    // SAFETY: each read is guarded by its range check.
                    let (lo, hi) = unsafe {
                        (
                            if col < n && k0 < k {
                                (*self.b.at(k0, col)).to_bits()
                            } else {
                                0
                            },
                            if col < n && k1 < k {
                                (*self.b.at(k1, col)).to_bits()
                            } else {
                                0
                            },
                        )
                    };
                    pair.copy_from_slice(&(lo as u32 | (hi as u32) << 16).to_le_bytes());
                }
            }
        }
    }

    unsafe fn write(&self, r0: usize, i0: usize, c: &[[f32; BLOCK]; BLOCK], pr: usize, qr: usize) {
        if self.c.cs == 1 && qr == BLOCK {
            store_block(
                &c[..pr],
                self.c.at(r0, i0).cast(),
                self.c.rs,
                self.accumulate,
            );
            return;
        }
        for (r, row) in c.iter().enumerate().take(pr) {
            for (i, &v) in row.iter().enumerate().take(qr) {
                let at = self.c.at(r0 + r, i0 + i);
                let v = if self.accumulate {
                    v + (*at).to_f32()
                } else {
                    v
                };
                *at = bf16::from_f32(v);
            }
        }
    }
}

/// Pair-rows `0..pairs` of one Q group from a row-major B: pair-row `p` is
/// `b[2p][j] | b[2p + 1][j] << 16` for the 16 columns at `b` (rows `rs` elements apart).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn interleave_rows(b: *const u16, rs: isize, pairs: usize, out: *mut u8) {
    for p in 0..pairs {
        let b0 = b.offset(2 * p as isize * rs);
        let lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(b0.cast()));
        let hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256(b0.offset(rs).cast()));
        let v = _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi));
        _mm512_storeu_si512(out.add(p * 64).cast(), v);
    }
}

/// [`interleave_rows`] for `gpairs` pairs of neighbouring groups (32 columns each, from `b`;
/// group `g` at `out + g * group` bytes): each pair of rows is read as 64-byte loads and woven
/// with one two-source permutation per group. Blocks of [`ROW_BLOCK`] pair-rows go across all
/// the columns before the next block, so B is read along its rows: column strips of 32 down
/// all of k (rows 4 KB apart at n = 2048) ran at 12 GB/s.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn interleave_group_pairs(
    b: *const u16,
    rs: isize,
    pairs: usize,
    gpairs: usize,
    out: *mut u8,
    group: usize,
) {
    const ROW_BLOCK: usize = 8;
    // Word 2j of the first group is row 0's column j, word 2j + 1 row 1's (index 32 + j); the
    // second group the same 16 columns on.
    let mut i0 = [0u16; 32];
    for j in 0..16 {
        i0[2 * j] = j as u16;
        i0[2 * j + 1] = 32 + j as u16;
    }
    let idx0 = _mm512_loadu_si512(i0.as_ptr().cast());
    let idx1 = _mm512_add_epi16(idx0, _mm512_set1_epi16(16));
    let mut p0 = 0;
    while p0 < pairs {
        let p1 = (p0 + ROW_BLOCK).min(pairs);
        for gp in 0..gpairs {
            let o0 = out.add(2 * gp * group);
            let o1 = o0.add(group);
            for p in p0..p1 {
                let b0 = b.offset(2 * p as isize * rs).add(32 * gp);
                let r0 = _mm512_loadu_si512(b0.cast());
                let r1 = _mm512_loadu_si512(b0.offset(rs).cast());
                _mm512_storeu_si512(
                    o0.add(p * 64).cast(),
                    _mm512_permutex2var_epi16(r0, idx0, r1),
                );
                _mm512_storeu_si512(
                    o1.add(p * 64).cast(),
                    _mm512_permutex2var_epi16(r0, idx1, r1),
                );
            }
        }
        p0 = p1;
    }
}

/// Rows of 32 results rounded to bf16 (nearest even), row `r` at `dst + r * rs` (32
/// consecutive values), after adding the values there when `accumulate`: a 64-byte line each,
/// written past the caches where it is aligned and not read first (the output of a large
/// product is not read again soon, and a normal store would first read the line).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn store_block(rows: &[[f32; BLOCK]], dst: *mut u16, rs: isize, accumulate: bool) {
    for (r, row) in rows.iter().enumerate() {
        let mut lo = _mm512_loadu_ps(row.as_ptr());
        let mut hi = _mm512_loadu_ps(row.as_ptr().add(16));
        let at = dst.offset(r as isize * rs).cast::<__m512i>();
        if accumulate {
            let old = _mm512_loadu_si512(at);
            lo = _mm512_add_ps(lo, bf16x16_to_f32(_mm512_castsi512_si256(old)));
            hi = _mm512_add_ps(hi, bf16x16_to_f32(_mm512_extracti64x4_epi64::<1>(old)));
        }
        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        if !accumulate && (at as usize).is_multiple_of(64) {
            _mm512_stream_si512(at, v);
        } else {
            _mm512_storeu_si512(at, v);
        }
    }
}

/// `C (+)= A B` for one matrix of a batch: `m x k` by `k x n`, results rounded to bf16 once.
///
/// # Safety
/// [`super::supported`] returned true; the matrices are valid for their shapes and strides,
/// and C does not overlap A or B.
pub(crate) unsafe fn gemm_bf16(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<bf16>,
    b: MatRef<bf16>,
    c: MatMut<bf16>,
    accumulate: bool,
) {
    let ops = Dense {
        a,
        b,
        c,
        n,
        k,
        accumulate,
    };
    product(m, n, k, &ops);
}
