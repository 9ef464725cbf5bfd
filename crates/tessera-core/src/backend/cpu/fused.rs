//! Runs a fused element-wise program: the array is cut into chunks that fit in L1, and every step
//! of the program runs over the chunk before the next chunk is touched, so memory sees each input
//! read once and the output written once, however many ops were fused.

use super::binary::typed_row;
use super::copy::{SendConstPtr, SendPtr, ensure_contiguous};
use super::pool;
use super::unary::f32_row;
use crate::array::Meta;
use crate::error::{Error, Result};
use crate::layout::ArrayData;
use crate::primitive::{FusedProgram, FusedStep};

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
