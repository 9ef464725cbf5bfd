//! Portable kernels: the same integer arithmetic as the SIMD kernels, one value at a time. They
//! are the fallback off x86 (or with `TESSERA_SIMD=scalar`) and the oracle the SIMD kernels are
//! tested against.

use super::act::{Q8KRows, Q8Rows};
use super::decode::{self as dec, Block32, Block256, SuperBlock};
use super::kquants::QK_K;
use super::legacy::QK;
use super::matmul::{Kernel, MT, Tile};
use crate::quant::GgmlType;

pub(super) fn kernel_q8(ty: GgmlType) -> Option<Kernel<Q8Rows>> {
    Some(match ty {
        GgmlType::Q4_0 => rows32::<dec::Q4_0>,
        GgmlType::Q4_1 => rows32::<dec::Q4_1>,
        GgmlType::Q5_0 => rows32::<dec::Q5_0>,
        GgmlType::Q5_1 => rows32::<dec::Q5_1>,
        GgmlType::Q8_0 => rows32::<dec::Q8_0>,
        GgmlType::Q8_1 => rows32::<dec::Q8_1>,
        GgmlType::IQ4_NL => rows32::<dec::IQ4_NL>,
        _ => return None,
    })
}

pub(super) fn kernel_q8k(ty: GgmlType) -> Option<Kernel<Q8KRows>> {
    Some(match ty {
        GgmlType::Q2_K => rows256::<dec::Q2_K>,
        GgmlType::Q3_K => rows256::<dec::Q3_K>,
        GgmlType::Q4_K => rows256::<dec::Q4_K>,
        GgmlType::Q5_K => rows256::<dec::Q5_K>,
        GgmlType::Q6_K => rows256::<dec::Q6_K>,
        _ => return None,
    })
}

/// # Safety
/// The tile's output indices are in bounds and owned by the caller (see [`Tile::put`]).
unsafe fn rows32<B: Block32>(t: &Tile<Q8Rows>) {
    let a = t.acts;
    debug_assert!(!a.paired, "the portable kernels read the natural layout");
    let nb = t.nb;
    let mut q = [0i8; QK];
    for r in t.r0..t.r1 {
        let row = &t.w[r * t.row_bytes..(r + 1) * t.row_bytes];
        let mut acc = [0f32; MT];
        for (b, blk) in row.chunks_exact(B::BYTES).enumerate() {
            let (d, m) = B::decode(blk, &mut q);
            for (i, acc) in acc.iter_mut().enumerate().take(t.mt) {
                let idx = (t.i0 + i) * nb + b;
                let xs = &a.qs[idx * QK..(idx + 1) * QK];
                let isum: i32 = q.iter().zip(xs).map(|(&w, &x)| w as i32 * x as i32).sum();
                *acc += d * a.d[idx] * isum as f32;
                if B::AFFINE {
                    *acc += m * a.s[idx];
                }
            }
        }
        for (i, &v) in acc.iter().enumerate().take(t.mt) {
            t.put(i, r, v);
        }
    }
}

/// # Safety
/// As [`rows32`].
unsafe fn rows256<B: Block256>(t: &Tile<Q8KRows>) {
    let a = t.acts;
    let nb = t.nb;
    let mut s = SuperBlock::new();
    for r in t.r0..t.r1 {
        let row = &t.w[r * t.row_bytes..(r + 1) * t.row_bytes];
        let mut acc = [0f32; MT];
        for (b, blk) in row.chunks_exact(B::BYTES).enumerate() {
            B::decode(blk, &mut s);
            for (i, acc) in acc.iter_mut().enumerate().take(t.mt) {
                let idx = (t.i0 + i) * nb + b;
                let xs = &a.qs[idx * QK_K..(idx + 1) * QK_K];
                let bsums = &a.bsums[idx * 16..(idx + 1) * 16];
                let mut isum = 0i32;
                let mut msum = 0i32;
                for (j, &bsum) in bsums.iter().enumerate() {
                    let part: i32 = (16 * j..16 * j + 16)
                        .map(|v| s.q[v] as i32 * xs[v] as i32)
                        .sum();
                    isum += s.sc[j] as i32 * part;
                    msum += s.mi[j] as i32 * bsum as i32;
                }
                *acc += a.d[idx] * (s.d * isum as f32 + s.dm * msum as f32);
            }
        }
        for (i, &v) in acc.iter().enumerate().take(t.mt) {
            t.put(i, r, v);
        }
    }
}
