//! Activation quantization for the integer dot products: each row of `x` is quantized once per
//! `matmul_t` call, to 32-value Q8 blocks (for the 32-block weight formats) or to 256-value Q8_K
//! super-blocks (for the K-quants), stored as separate arrays (quants, scales, sums) so the
//! kernels load them without unpacking.
//!
//! Rounding follows what llama.cpp computes at inference on x86, so results match it:
//! - Q8 (ggml-cpu's AVX2 `quantize_row_q8_0` / `q8_1`): `d = amax / 127` stored as f16,
//!   `q = round_half_even(x * (127 / amax))`, and for Q8_1 `s = f16(d * sum(q))` with the f32 `d`.
//!   (The reference `quantize_row_q8_0_ref` used to write files rounds half away from zero and
//!   multiplies by `1 / d`; the two differ only on exact ties and in the last bit of the inverse.)
//! - Q8_K (`quantize_row_q8_K_ref`, also what ggml-cpu runs on x86): see
//!   [`super::kquants::quant_q8_k`].

use super::Isa;
use super::kquants::{QK_K, nearest_int, via_f16};
use super::legacy::QK;
use crate::backend::cpu::pool::parallel_chunks;

/// Activation rows in 32-value Q8 blocks; index `row * nb + block`.
///
/// In the paired layout (used by the x86 kernels, see [`pair_row`]) each full group of 8 blocks
/// is stored reordered; blocks after the last full group keep the natural order.
pub(super) struct Q8Rows {
    /// Blocks per row.
    pub nb: usize,
    /// Whether full groups of 8 blocks are in the paired layout.
    pub paired: bool,
    /// `rows * nb * 32` quants in `-127..=127`.
    pub qs: Vec<i8>,
    /// The block scale, rounded through f16 as ggml stores it.
    pub d: Vec<f32>,
    /// `d * sum(q)` in f32 with the rounded `d`: the block sum of the quantized activations,
    /// which the offset of Q4_0/Q5_0 weights (stored unsigned) multiplies.
    pub dsum: Vec<f32>,
    /// Q8_1's `s = f16(d * sum(q))` (for the min of Q4_1/Q5_1 weights).
    pub s: Vec<f32>,
    /// The integer block sums `sum(q)`, times `-off` for an `off != 0` given to
    /// [`quantize_q8`]: the panel kernels start each block's integer dot product from it, which
    /// subtracts a weight offset exactly (see `x86/panel.rs`).
    pub bias: Vec<i32>,
}

/// Activation rows in Q8_K super-blocks; index `row * nb + block`.
pub(super) struct Q8KRows {
    pub nb: usize,
    /// `rows * nb * 256` quants.
    pub qs: Vec<i8>,
    /// The f32 scale `1 / iscale`.
    pub d: Vec<f32>,
    /// `rows * nb * 16` sums of each 16 quants.
    pub bsums: Vec<i16>,
    /// For the panel kernels (else empty): `-off * bsums` with the `off` given to
    /// [`quantize_q8k`] (a weight offset subtracted exactly, see `x86/panel.rs`).
    pub bias: Vec<i32>,
    /// For the panel kernels (else empty): `rows * nb * 8` sums of each 32 quants.
    pub bsum32: Vec<i16>,
}

/// Which extra sums [`quantize_q8k`] computes for the panel kernels.
#[derive(Clone, Copy, Default)]
pub(super) struct KExtras {
    /// Fill `bias` with `-off * bsums` (when not 0).
    pub off: i32,
    /// Fill `bsum32`.
    pub sums32: bool,
}

/// One row's share of the output arrays, handed to a row quantizer.
pub(super) struct Q8Out<'a> {
    pub qs: &'a mut [i8],
    pub d: &'a mut [f32],
    pub dsum: &'a mut [f32],
    pub s: &'a mut [f32],
    /// The integer block sums `sum(q)`.
    pub sum: &'a mut [i32],
}

pub(super) struct Q8KOut<'a> {
    pub qs: &'a mut [i8],
    pub d: &'a mut [f32],
    pub bsums: &'a mut [i16],
}

/// Raw pointers shared by the row workers; each worker writes disjoint rows.
#[derive(Clone, Copy)]
struct Ptr<T>(*mut T);
// SAFETY: only used to hand disjoint row ranges of one allocation to pool workers.
unsafe impl<T> Send for Ptr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Ptr<T> {}

impl<T> Ptr<T> {
    /// `len` elements at `at`.
    ///
    /// # Safety
    /// The range is inside the allocation and no other live slice overlaps it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, at: usize, len: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(at), len)
    }
}

/// Rows per parallel chunk: at least ~64K values, so small activations stay on one thread.
fn min_rows(k: usize) -> usize {
    (1usize << 16).div_ceil(k.max(1))
}

/// Quantizes the `m` rows of `x` (`k` values each) to Q8 blocks, in the paired layout when
/// `paired` (only for the x86 instruction sets), with `bias = -off * sum(q)` per block (the
/// plain sums when `off == 0`).
pub(super) fn quantize_q8(
    isa: Isa,
    x: &[f32],
    m: usize,
    k: usize,
    paired: bool,
    off: i32,
) -> Q8Rows {
    let nb = k / QK;
    let paired = paired && isa != Isa::Scalar;
    let mut r = Q8Rows {
        nb,
        paired,
        qs: vec![0; m * k],
        d: vec![0.0; m * nb],
        dsum: vec![0.0; m * nb],
        s: vec![0.0; m * nb],
        bias: vec![0; m * nb],
    };
    let row: fn(&[f32], Q8Out) = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni | Isa::Vnni => super::x86::act::q8_row,
        _ => q8_row,
    };
    let (qs, d, dsum, s, bias) = (
        Ptr(r.qs.as_mut_ptr()),
        Ptr(r.d.as_mut_ptr()),
        Ptr(r.dsum.as_mut_ptr()),
        Ptr(r.s.as_mut_ptr()),
        Ptr(r.bias.as_mut_ptr()),
    );
    // SAFETY (both uses): row `i` of each array is in bounds and written by this worker only,
    // and no other borrow of it is live.
    let out = |i: usize| unsafe {
        Q8Out {
            qs: qs.slice(i * k, k),
            d: d.slice(i * nb, nb),
            dsum: dsum.slice(i * nb, nb),
            s: s.slice(i * nb, nb),
            sum: bias.slice(i * nb, nb),
        }
    };
    parallel_chunks(m, min_rows(k), &|a, b| {
        for i in a..b {
            row(&x[i * k..(i + 1) * k], out(i));
            if paired {
                pair_row(out(i));
            }
            if off != 0 {
                for v in out(i).sum.iter_mut() {
                    *v *= -off;
                }
            }
        }
    });
    r
}

/// Block order of the per-block values (`d`, `dsum`, `s`) in a paired group of 8 blocks.
pub(super) const PAIR_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

/// The order of the per-block values of a half group (4 blocks after the last full group):
/// lanes 0, 1, 4, 5 of the kernels' horizontal-add result.
pub(super) const HALF_ORDER: [usize; 4] = [0, 2, 1, 3];

/// Reorders each full group of 8 blocks of a quantized row for the x86 kernels, which process
/// two blocks per register: pair `p` (blocks `a = 2p`, `b = 2p + 1`) becomes 64 bytes
/// `[a 0..16, b 0..16, a 16..32, b 16..32]`, and the per-block values follow [`PAIR_ORDER`],
/// the lane order the kernels' horizontal-add tree leaves the block sums in. When 4 or more
/// blocks follow the last full group, the next 4 form a half group: two pairs, values in
/// [`HALF_ORDER`]. Any blocks after that stay in the natural layout.
pub(super) fn pair_row(o: Q8Out) {
    let full = o.d.len() / 8;
    let half = o.d.len() % 8 >= 4;
    for g in 0..full + half as usize {
        let (blocks, order): (usize, &[usize]) = if g < full {
            (8, &PAIR_ORDER)
        } else {
            (4, &HALF_ORDER)
        };
        let b0 = 8 * g;
        let q = &mut o.qs[b0 * 32..(b0 + blocks) * 32];
        let mut src = [0i8; 256];
        src[..blocks * 32].copy_from_slice(q);
        for p in 0..blocks / 2 {
            let (a, b) = (64 * p, 64 * p + 32);
            let dst = &mut q[64 * p..64 * p + 64];
            dst[0..16].copy_from_slice(&src[a..a + 16]);
            dst[16..32].copy_from_slice(&src[b..b + 16]);
            dst[32..48].copy_from_slice(&src[a + 16..a + 32]);
            dst[48..64].copy_from_slice(&src[b + 16..b + 32]);
        }
        for v in [&mut *o.d, &mut *o.dsum, &mut *o.s] {
            let v = &mut v[b0..b0 + blocks];
            let mut src = [0f32; 8];
            src[..blocks].copy_from_slice(v);
            for (i, &j) in order.iter().enumerate() {
                v[i] = src[j];
            }
        }
        let v = &mut o.sum[b0..b0 + blocks];
        let mut src = [0i32; 8];
        src[..blocks].copy_from_slice(v);
        for (i, &j) in order.iter().enumerate() {
            v[i] = src[j];
        }
    }
}

pub(super) fn quantize_q8k(isa: Isa, x: &[f32], m: usize, k: usize, ex: KExtras) -> Q8KRows {
    let nb = k / QK_K;
    let mut r = Q8KRows {
        nb,
        qs: vec![0; m * k],
        d: vec![0.0; m * nb],
        bsums: vec![0; m * nb * 16],
        bias: vec![0; if ex.off != 0 { m * nb * 16 } else { 0 }],
        bsum32: vec![0; if ex.sums32 { m * nb * 8 } else { 0 }],
    };
    let row: fn(&[f32], Q8KOut) = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni | Isa::Vnni => super::x86::act::q8k_row,
        _ => q8k_row,
    };
    let (qs, d, bs, bias, bs32) = (
        Ptr(r.qs.as_mut_ptr()),
        Ptr(r.d.as_mut_ptr()),
        Ptr(r.bsums.as_mut_ptr()),
        Ptr(r.bias.as_mut_ptr()),
        Ptr(r.bsum32.as_mut_ptr()),
    );
    parallel_chunks(m, min_rows(k), &|a, b| {
        for i in a..b {
            // SAFETY: row `i` of each array is in bounds and written by this worker only.
            let out = unsafe {
                Q8KOut {
                    qs: qs.slice(i * k, k),
                    d: d.slice(i * nb, nb),
                    bsums: bs.slice(i * nb * 16, nb * 16),
                }
            };
            row(&x[i * k..(i + 1) * k], out);
            // SAFETY: as above (the row quantizer's borrows ended).
            let sums = unsafe { &*bs.slice(i * nb * 16, nb * 16) };
            if ex.off != 0 {
                // SAFETY: as above.
                let o = unsafe { bias.slice(i * nb * 16, nb * 16) };
                for (o, &v) in o.iter_mut().zip(sums) {
                    *o = -ex.off * v as i32;
                }
            }
            if ex.sums32 {
                // SAFETY: as above.
                let o = unsafe { bs32.slice(i * nb * 8, nb * 8) };
                for (o, v) in o.iter_mut().zip(sums.chunks_exact(2)) {
                    *o = v[0] + v[1];
                }
            }
        }
    });
    r
}

/// Portable Q8 row quantizer (ggml-cpu x86 semantics, see the module docs).
pub(super) fn q8_row(x: &[f32], o: Q8Out) {
    for (b, xb) in x.chunks_exact(QK).enumerate() {
        let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in o.qs[b * QK..(b + 1) * QK].iter_mut().zip(xb) {
            *q = (v * id).round_ties_even() as i8;
            sum += *q as i32;
        }
        o.d[b] = via_f16(d);
        o.dsum[b] = o.d[b] * sum as f32;
        o.s[b] = via_f16(d * sum as f32);
        o.sum[b] = sum;
    }
}

/// Portable Q8_K row quantizer (`quantize_row_q8_K_ref`).
pub(super) fn q8k_row(x: &[f32], o: Q8KOut) {
    for (b, xb) in x.chunks_exact(QK_K).enumerate() {
        let qs = &mut o.qs[b * QK_K..(b + 1) * QK_K];
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            qs.fill(0);
            o.d[b] = 0.0;
            o.bsums[b * 16..(b + 1) * 16].fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in qs.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (j, s) in o.bsums[b * 16..(b + 1) * 16].iter_mut().enumerate() {
            *s = qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
        }
        o.d[b] = 1.0 / iscale;
    }
}
