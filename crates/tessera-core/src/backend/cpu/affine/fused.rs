//! The fused product `x · Wᵀ` for few activation rows (decoding): weights are decoded in
//! registers and never written anywhere, so each weight byte is read from memory once per
//! call and the product runs at memory bandwidth when the decode keeps up.
//!
//! Work split: weight rows (output columns) in one contiguous range per pool thread. Each range
//! is walked in blocks of [`RB`] rows: their scales and biases are widened to f32 once, then
//! every tile of up to [`MT`] activation rows runs over the block while its weights are in
//! L1/L2.

use super::Isa;
use super::format::{Format, params_to_f32};
use super::kernels::{self, DotArgs, MT};
use crate::backend::cpu::copy::SendPtr;
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
            for i0 in (0..m).step_by(MT) {
                let a = DotArgs {
                    fmt,
                    k,
                    rows: re - rb,
                    w: w[rb * row_bytes..].as_ptr(),
                    scales: sbuf.as_ptr(),
                    biases: bbuf.as_ptr(),
                    mt: (m - i0).min(MT),
                    x: x[i0 * k..].as_ptr(),
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
