//! The fused product `x · Wᵀ` for few activation rows (decoding): weights are decoded in
//! registers and never written anywhere, so each weight byte is read from memory once per
//! call and the product runs at memory bandwidth when the decode keeps up.
//!
//! Work split: weight rows (output columns) in one contiguous range per pool thread. Each range
//! is walked in blocks of [`RB`] rows: their scales and biases are widened to f32 once, then,
//! a span of groups at a time, every tile of up to [`MT`] activation rows runs over the block.
//! The span is sized so a tile's activations stay in L1 (for one row the whole of `k` usually
//! fits; 4 rows of 4096 f32 would not) and the block's weights for it in L1/L2.

use super::Isa;
use super::format::{Format, params_to_f32};
use super::kernels::{self, DotArgs, MT};
use crate::backend::cpu::copy::{SendPtr, f32_to_bf16};
use crate::backend::cpu::pool::parallel_chunks;
use crate::dtype::Element;

/// Weight rows per block.
const RB: usize = 16;

/// `out[m × n] = x[m × k] · Wᵀ`; the caller validated every length.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_t<S: Element>(
    isa: Isa,
    fmt: Format,
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    w: &[u8],
    scales: &[S],
    biases: &[S],
    out: &mut [f32],
) {
    let gs = fmt.group_size;
    let ng = k / gs;
    let row_bytes = fmt.row_bytes(k);
    let mut xsum = vec![0f32; m * ng];
    for (s, xg) in xsum.iter_mut().zip(x.chunks_exact(gs)) {
        *s = xg.iter().sum();
    }
    let plan = kernels::plan(isa, fmt, x.iter().all(|v| v.to_bits() & 0xffff == 0));
    // bf16 kernels: x as the sum of two bf16 values (16 significant bits), the low part
    // dropped when it is zero everywhere (bf16 inputs).
    let (xh, xl) = if plan.bf16 {
        let hi: Vec<u16> = x.iter().map(|&v| f32_to_bf16(v).to_bits()).collect();
        let lo: Vec<u16> = x
            .iter()
            .zip(&hi)
            .map(|(&v, &h)| f32_to_bf16(v - f32::from_bits((h as u32) << 16)).to_bits())
            .collect();
        let exact = lo.iter().all(|&l| l & 0x7fff == 0);
        let (hi, lo) = match plan.even_odd {
            Some(block) => (even_odd(&hi, block), even_odd(&lo, block)),
            None => (hi, lo),
        };
        (hi, if exact { Vec::new() } else { lo })
    } else {
        (Vec::new(), Vec::new())
    };
    let bf = |v: &Vec<u16>, at: usize| {
        if v.is_empty() {
            std::ptr::null()
        } else {
            v[at..].as_ptr()
        }
    };
    let xp = match plan.even_odd {
        Some(block) if !plan.bf16 => even_odd(x, block),
        _ => Vec::new(),
    };
    let x = if xp.is_empty() { x } else { &xp[..] };
    // Groups per call: the activations a call reads (up to MT rows) stay within ~16 KB, so
    // they are served from L1 for every weight row of the block.
    let x_bytes = if xh.is_empty() {
        4
    } else if xl.is_empty() {
        2
    } else {
        4
    };
    let gb = (16384 / (m.min(MT) * x_bytes * gs)).clamp(1, ng.max(1));
    out.fill(0.0);
    let dst = SendPtr(out.as_mut_ptr());
    // At least ~64K weights per thread, so small products stay on one core.
    let min_rows = (65536 / k.max(1)).max(1);
    parallel_chunks(n, min_rows, &|r0, r1| {
        let mut sbuf = vec![0f32; RB * ng];
        let mut bbuf = vec![0f32; RB * ng];
        let mut rb = r0;
        while rb < r1 {
            let re = (rb + RB).min(r1);
            let np = (re - rb) * ng;
            params_to_f32(&scales[rb * ng..re * ng], &mut sbuf[..np]);
            params_to_f32(&biases[rb * ng..re * ng], &mut bbuf[..np]);
            for (g0, i0) in (0..ng)
                .step_by(gb)
                .flat_map(|g0| (0..m).step_by(MT).map(move |i0| (g0, i0)))
            {
                let a = DotArgs {
                    fmt,
                    k,
                    g0,
                    g1: (g0 + gb).min(ng),
                    rows: re - rb,
                    w: w[rb * row_bytes..].as_ptr(),
                    scales: sbuf.as_ptr(),
                    biases: bbuf.as_ptr(),
                    mt: (m - i0).min(MT),
                    x: x[i0 * k..].as_ptr(),
                    xh: bf(&xh, i0 * k),
                    xl: bf(&xl, i0 * k),
                    xsum: xsum[i0 * ng..].as_ptr(),
                    // SAFETY: inside the m × n output.
                    out: unsafe { dst.get().add(i0 * n + rb) },
                    ldo: n,
                };
                // SAFETY: the slices above hold every row, scale and activation `a` names; this
                // task alone writes output columns rb..re.
                unsafe { kernels::dot(isa, &a) };
            }
            rb = re;
        }
    });
}

/// Each `block` values as those at even positions, then those at odd positions (`k` is a
/// multiple of `block` where this is used).
fn even_odd<T: Copy>(v: &[T], block: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    for c in v.chunks(block) {
        out.extend(c.iter().step_by(2));
        out.extend(c.iter().skip(1).step_by(2));
    }
    out
}
