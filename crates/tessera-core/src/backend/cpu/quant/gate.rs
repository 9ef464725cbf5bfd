//! The gating step of a gated product (`ops::gguf_gated_matmul`): `activation(gate) * up` from
//! the whole product, whose columns hold gate and up values alternating 8 at a time. Run by each
//! thread on the columns it has just computed (see `matmul::Epilogue`), so it reads from its own
//! cache; the element functions are the unary kernels' own, in the order of
//! `ops::gate_activation`, so the fused product matches the composite.

use crate::backend::cpu::unary::f32_row;
use crate::primitive::{GateActivation, UnaryOp};

/// Gate and up values per run in the interleaved product.
const RUN: usize = crate::ops::GATE_ROWS;
/// Outputs gated per step (staged on the stack).
const STEP: usize = 256;

/// Columns `r0..r1` (whole pairs of runs) of each of the `m` rows of `full` (`m × n`) gated
/// into columns `r0 / 2..r1 / 2` of `out` (`m × n / 2`).
///
/// # Safety
/// `full` holds `m × n` readable values whose columns `r0..r1` no one writes during the call;
/// `out` holds `m × n / 2` values whose columns `r0 / 2..r1 / 2` only this call touches.
pub(super) unsafe fn apply(
    activation: GateActivation,
    full: *const f32,
    out: *mut f32,
    m: usize,
    n: usize,
    r0: usize,
    r1: usize,
) {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let (c1, c3) = (c as f32, (c * 0.044715) as f32);
    let mut g = [0f32; STEP];
    let mut u = [0f32; STEP];
    let mut t = [0f32; STEP];
    for i in 0..m {
        let mut r = r0;
        while r < r1 {
            let re = (r + 2 * STEP).min(r1);
            let len = (re - r) / 2;
            for p in 0..len / RUN {
                // SAFETY: columns r..re of row i are inside `full` (caller's contract).
                unsafe {
                    let src = full.add(i * n + r + 2 * RUN * p);
                    std::ptr::copy_nonoverlapping(src, g.as_mut_ptr().add(RUN * p), RUN);
                    std::ptr::copy_nonoverlapping(src.add(RUN), u.as_mut_ptr().add(RUN * p), RUN);
                }
            }
            let (g, u, t) = (&g[..len], &u[..len], &mut t[..len]);
            match activation {
                GateActivation::Silu => {
                    f32_row(UnaryOp::Sigmoid, g.as_ptr(), 1, t.as_mut_ptr(), len);
                    for j in 0..len {
                        t[j] = g[j] * t[j] * u[j];
                    }
                }
                GateActivation::GeluTanh => {
                    for j in 0..len {
                        t[j] = g[j] * (c1 + c3 * (g[j] * g[j]));
                    }
                    f32_row(UnaryOp::Tanh, t.as_ptr(), 1, t.as_mut_ptr(), len);
                    for j in 0..len {
                        t[j] = g[j] * 0.5 * (t[j] + 1.0) * u[j];
                    }
                }
            }
            // SAFETY: outputs r/2..re/2 of row i are this call's (caller's contract).
            unsafe {
                std::ptr::copy_nonoverlapping(t.as_ptr(), out.add(i * (n / 2) + r / 2), len);
            }
            r = re;
        }
    }
}
