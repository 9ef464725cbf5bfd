//! Runs a fused element-wise program: the array is cut into chunks that fit in L1, and every step
//! of the program runs over the chunk before the next chunk is touched, so memory sees each input
//! read once and the output written once, however many ops were fused.

// Row kernels take (pointer, stride) per operand plus the length: eight arguments for `where`.
#![allow(clippy::too_many_arguments)]

use super::binary::typed_row;
use super::copy::{SendConstPtr, SendPtr, ensure_contiguous};
use super::pool;
use super::unary::f32_row;
use crate::array::Meta;
use crate::error::{Error, Result};
use crate::layout::ArrayData;
use crate::primitive::{BinaryOp, FusedProgram, FusedStep};

const CHUNK: usize = 1024;

pub(crate) fn run(prog: &FusedProgram, inputs: &[ArrayData], out: &Meta) -> Result<ArrayData> {
    let n = out.shape.iter().product::<usize>();
    if inputs.len() != prog.n_inputs || inputs.iter().any(|x| x.dtype != crate::Dtype::F32) {
        return Err(Error::Invalid {
            op: "fused",
            msg: "a fused program takes float32 inputs".into(),
        });
    }
    // Each input is either full-size (made contiguous) or a single value broadcast.
    let mut srcs: Vec<(SendConstPtr<f32>, bool)> = Vec::with_capacity(inputs.len());
    let mut keep = Vec::with_capacity(inputs.len());
    for x in inputs {
        if x.size() == n && n != 1 {
            let c = ensure_contiguous(x)?;
            srcs.push((SendConstPtr(c.ptr::<f32>()), true));
            keep.push(c);
        } else if x.size() == 1 {
            srcs.push((SendConstPtr(x.ptr::<f32>()), false));
        } else {
            return Err(Error::Invalid {
                op: "fused",
                msg: "an input is neither full-size nor a scalar".into(),
            });
        }
    }
    let o = ArrayData::alloc(out.dtype, &out.shape)?;
    if n == 0 {
        return Ok(o);
    }
    let dst = SendPtr(o.mut_ptr::<f32>());
    let steps = &prog.steps;
    let chunks = n.div_ceil(CHUNK);
    pool::parallel_chunks(chunks, 16, &|c0, c1| {
        let mut regs = vec![0f32; steps.len() * CHUNK];
        for c in c0..c1 {
            let start = c * CHUNK;
            let len = CHUNK.min(n - start);
            // Pointer and stride of register r for this chunk.
            let reg = |r: usize, regs: &mut Vec<f32>| -> (*const f32, isize) {
                if r < srcs.len() {
                    let (p, full) = srcs[r];
                    // SAFETY: full inputs have n elements; scalars are read at index 0.
                    if full {
                        (unsafe { p.get().add(start) }, 1)
                    } else {
                        (p.get(), 0)
                    }
                } else {
                    (regs[(r - srcs.len()) * CHUNK..].as_ptr(), 1)
                }
            };
            for (k, step) in steps.iter().enumerate() {
                let last = k + 1 == steps.len();
                // SAFETY: destinations are this chunk of the output or of register k.
                let d: *mut f32 = if last {
                    unsafe { dst.get().add(start) }
                } else {
                    regs[k * CHUNK..].as_mut_ptr()
                };
                match *step {
                    FusedStep::Unary(op, a) => {
                        let (pa, sa) = reg(a, &mut regs);
                        f32_row(op, pa, sa, d, len);
                    }
                    FusedStep::Compare(op, a, b) => {
                        let (pa, sa) = reg(a, &mut regs);
                        let (pb, sb) = reg(b, &mut regs);
                        // SAFETY: as below.
                        unsafe { compare_row(op, pa, sa, pb, sb, d, len) };
                    }
                    FusedStep::Select(c, x, y) => {
                        let (pc, sc) = reg(c, &mut regs);
                        let (px, sx) = reg(x, &mut regs);
                        let (py, sy) = reg(y, &mut regs);
                        // SAFETY: as below.
                        unsafe { select_row(pc, sc, px, sx, py, sy, d, len) };
                    }
                    FusedStep::Binary(op, a, b) => {
                        let (pa, sa) = reg(a, &mut regs);
                        let (pb, sb) = reg(b, &mut regs);
                        // SAFETY: pointers cover `len` elements (or one, at stride 0).
                        unsafe { typed_row::<f32>(op, pa, sa, pb, sb, d as *mut u8, len) };
                    }
                }
            }
        }
    });
    drop(keep);
    Ok(o)
}

super::simd::multiversion! {
    /// `d[i] = (a[i] op b[i]) ? 1 : 0` as f32.
    unsafe fn compare_row[](op: BinaryOp, a: *const f32, sa: isize, b: *const f32, sb: isize, d: *mut f32, n: usize) {
        let one = |t: bool| if t { 1.0f32 } else { 0.0 };
        for i in 0..n as isize {
            let (x, y) = (*a.offset(i * sa), *b.offset(i * sb));
            *d.offset(i) = one(match op {
                BinaryOp::Eq => x == y,
                BinaryOp::Ne => x != y,
                BinaryOp::Lt => x < y,
                BinaryOp::Le => x <= y,
                BinaryOp::Gt => x > y,
                _ => x >= y,
            });
        }
    }
}

super::simd::multiversion! {
    /// `d[i] = c[i] != 0 ? x[i] : y[i]`.
    unsafe fn select_row[](c: *const f32, sc: isize, x: *const f32, sx: isize, y: *const f32, sy: isize, d: *mut f32, n: usize) {
        for i in 0..n as isize {
            let (cv, xv, yv) = (*c.offset(i * sc), *x.offset(i * sx), *y.offset(i * sy));
            *d.offset(i) = if cv != 0.0 { xv } else { yv };
        }
    }
}
