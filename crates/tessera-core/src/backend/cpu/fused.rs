//! Runs a fused element-wise program: the array is cut into chunks that fit in L1, and every step
//! of the program runs over the chunk before the next chunk is touched, so memory sees each input
//! read once and the output written once, however many ops were fused.
//!
//! A linear program of cheap ops (`fused_tiled.rs`) whose operands are all read in place (full
//! rows or single values) skips the chunks: each thread runs it once over its whole range, in
//! blocks that stay in registers.

// Row kernels take (pointer, stride) per operand plus the length: eight arguments for `where`.
#![allow(clippy::too_many_arguments)]

use super::binary::typed_row;
use super::copy::{SendConstPtr, SendPtr};
use super::fused_operand::{Operand, classify};
use super::fused_tiled::{self, Src};
use super::pool;
use super::reduce;
use super::unary::f32_row;
use crate::array::Meta;
use crate::error::{Error, Result};
use crate::layout::ArrayData;
use crate::primitive::{BinaryOp, FusedProgram, FusedStep};

const CHUNK: usize = 1024;

pub(crate) fn run(prog: &FusedProgram, inputs: &[ArrayData], out: &Meta) -> Result<ArrayData> {
    let out_n = out.shape.iter().product::<usize>();
    // With a trailing reduction the program runs over rows of `len` elements, one per output.
    let n = match prog.reduce {
        Some((_, len)) => out_n * len,
        None => out_n,
    };
    if inputs.len() != prog.n_inputs || inputs.iter().any(|x| x.dtype != crate::Dtype::F32) {
        return Err(Error::Invalid {
            op: "fused",
            msg: "a fused program takes float32 inputs".into(),
        });
    }
    // The kernel's shape: the output's, with a reduced last dim at its full length.
    let mut full: Vec<usize> = out.shape.to_vec();
    if let (Some((_, len)), Some(last)) = (prog.reduce, full.last_mut()) {
        *last = len;
    }
    // Each input is read in place (row-major full-size), as one value, or staged per chunk (any
    // broadcast or strided view: `fused_operand.rs`).
    let mut n_staged = 0;
    let mut srcs: Vec<(SendConstPtr<f32>, Operand)> = Vec::with_capacity(inputs.len());
    for x in inputs {
        srcs.push((
            SendConstPtr(x.ptr::<f32>()),
            classify(x, &full, &mut n_staged)?,
        ));
    }
    let o = ArrayData::alloc(out.dtype, &out.shape)?;
    if out_n == 0 {
        return Ok(o);
    }
    let dst = SendPtr(o.mut_ptr::<f32>());
    let steps = &prog.steps;
    let (slot, n_slots) = assign_slots(prog);
    // A linear program runs register-tiled (`fused_tiled.rs`), any other step by step.
    let tiled = fused_tiled::plan(prog);
    let scratch = || Scratch {
        regs: vec![0f32; (n_slots + n_staged) * CHUNK],
        direct: Vec::with_capacity(srcs.len()),
        srcs: Vec::with_capacity(srcs.len()),
        bufs: fused_tiled::RunBuffers::new(srcs.len()),
    };
    // Runs the program over elements [start, start + len) (len <= CHUNK), the last step writing
    // to `d`.
    // `regs` holds the step rows, then one row per staged input (filled per chunk).
    let eval = |start: usize, len: usize, d_out: *mut f32, sc: &mut Scratch, stream: bool| {
        let regs = &mut sc.regs;
        // A broadcast or strided operand is read in place when this chunk lies inside one run
        // of it (a row of a slice, a stretch of a bias, one value of a column), else staged:
        // a copy pass would put a memory stall before the compute of every chunk.
        sc.direct.clear();
        for (p, kind) in &srcs {
            let mut direct = None;
            if let Operand::Staged { row, walk } = kind {
                direct = walk.direct(p.get(), start, len);
                if direct.is_none() {
                    let at = (n_slots + row) * CHUNK;
                    // SAFETY: `classify` checked that the operand broadcasts to the kernel's
                    // shape, so its strides stay inside its buffer for every element.
                    unsafe { walk.stage(p.get(), start, &mut regs[at..at + len]) };
                }
            }
            sc.direct.push(direct);
        }
        let direct = &sc.direct;
        // Where operand `r` (an input, or a step's row) is read: pointer and stride.
        let reg = |r: usize, regs: &[f32]| -> (*const f32, isize) {
            if r < srcs.len() {
                let (p, kind) = &srcs[r];
                match kind {
                    // SAFETY: full inputs have n elements.
                    Operand::Full => (unsafe { p.get().add(start) }, 1),
                    Operand::Scalar => (p.get(), 0),
                    Operand::Staged { row, .. } => {
                        direct[r].unwrap_or_else(|| (regs[(n_slots + row) * CHUNK..].as_ptr(), 1))
                    }
                }
            } else {
                (regs[slot[r - srcs.len()] * CHUNK..].as_ptr(), 1)
            }
        };
        if let Some(plan) = &tiled {
            sc.srcs.clear();
            for r in 0..srcs.len() {
                let (ptr, stride) = reg(r, regs);
                sc.srcs.push(Src {
                    ptr,
                    stride: stride as usize,
                });
            }
            // SAFETY: every row operand covers `len` values from its pointer, `d_out` has room
            // for `len`, the run's buffers were made for these operands.
            unsafe { fused_tiled::run(plan, &sc.srcs, len, d_out, &mut sc.bufs, stream) };
            return;
        }
        for (k, step) in steps.iter().enumerate() {
            let d: *mut f32 = if k + 1 == steps.len() {
                d_out
            } else {
                regs[slot[k] * CHUNK..].as_mut_ptr()
            };
            match *step {
                FusedStep::Unary(op, a) => {
                    let (pa, sa) = reg(a, regs);
                    f32_row(op, pa, sa, d, len);
                }
                FusedStep::Compare(op, a, b) => {
                    let (pa, sa) = reg(a, regs);
                    let (pb, sb) = reg(b, regs);
                    // SAFETY: as below.
                    unsafe { compare_row(op, pa, sa, pb, sb, d, len) };
                }
                FusedStep::Select(c, x, y) => {
                    let (pc, sc) = reg(c, regs);
                    let (px, sx) = reg(x, regs);
                    let (py, sy) = reg(y, regs);
                    // SAFETY: as below.
                    unsafe { select_row(pc, sc, px, sx, py, sy, d, len) };
                }
                FusedStep::Binary(op, a, b) => {
                    let (pa, sa) = reg(a, regs);
                    let (pb, sb) = reg(b, regs);
                    // SAFETY: pointers cover `len` elements (or one, at stride 0).
                    unsafe { typed_row::<f32>(op, pa, sa, pb, sb, d as *mut u8, len) };
                }
            }
        }
    };
    // A large output is written with streaming stores by the tiled executor.
    let stream = tiled.is_some() && n >= super::simd::STREAM_STORE_MIN;
    match (&prog.reduce, &tiled) {
        (None, Some(plan)) if n_staged == 0 => {
            // Every operand is read in place (full rows, or one value): nothing to stage per
            // chunk, so each thread runs the tiled executor once over its whole range, its
            // steps resolved once. (Per 1024-value chunk, resolving the steps and setting up
            // the operands cost about as many instructions as a third of the arithmetic of ten
            // cheap ops.)
            pool::parallel_chunks(n.div_ceil(CHUNK), 16, &|c0, c1| {
                let (start, end) = (c0 * CHUNK, (c1 * CHUNK).min(n));
                let run_srcs: Vec<Src> = srcs
                    .iter()
                    .map(|(p, kind)| match kind {
                        // SAFETY: full inputs have n elements.
                        Operand::Full => Src {
                            ptr: unsafe { p.get().add(start) },
                            stride: 1,
                        },
                        // (`n_staged == 0`: every other operand is a single value.)
                        Operand::Scalar | Operand::Staged { .. } => Src {
                            ptr: p.get(),
                            stride: 0,
                        },
                    })
                    .collect();
                let mut bufs = fused_tiled::RunBuffers::new(run_srcs.len());
                // SAFETY: every row operand covers `end - start` values from its pointer, the
                // output has room for them from `start`, the buffers were made for these
                // operands.
                unsafe {
                    fused_tiled::run(
                        plan,
                        &run_srcs,
                        end - start,
                        dst.get().add(start),
                        &mut bufs,
                        stream,
                    )
                };
                if stream {
                    super::simd::stream_fence();
                }
            });
        }
        (None, _) => {
            let chunks = n.div_ceil(CHUNK);
            pool::parallel_chunks(chunks, 16, &|c0, c1| {
                let mut sc = scratch();
                for c in c0..c1 {
                    let start = c * CHUNK;
                    // SAFETY: this chunk of the output.
                    eval(
                        start,
                        CHUNK.min(n - start),
                        unsafe { dst.get().add(start) },
                        &mut sc,
                        stream,
                    );
                }
                if stream {
                    super::simd::stream_fence();
                }
            });
        }
        (&Some((op, len)), _) if len <= CHUNK => {
            // Whole rows per chunk: evaluate them into a scratch, then reduce each row.
            let rows_per = CHUNK / len;
            let blocks = out_n.div_ceil(rows_per);
            pool::parallel_chunks(blocks, 16, &|b0, b1| {
                let mut sc = scratch();
                let mut row = vec![0f32; CHUNK];
                for b in b0..b1 {
                    let (r0, r1) = (b * rows_per, ((b + 1) * rows_per).min(out_n));
                    eval(r0 * len, (r1 - r0) * len, row.as_mut_ptr(), &mut sc, false);
                    for r in r0..r1 {
                        let v = reduce::f32_row(op, row[(r - r0) * len..].as_ptr(), len);
                        // SAFETY: r < out_n.
                        unsafe { *dst.get().add(r) = v };
                    }
                }
            });
        }
        (&Some((op, len)), _) => {
            // Long rows: evaluate a row in chunks into a row-sized scratch, then reduce it.
            pool::parallel_chunks(out_n, 1, &|r0, r1| {
                let mut sc = scratch();
                let mut row = vec![0f32; len];
                for r in r0..r1 {
                    for s in (0..len).step_by(CHUNK) {
                        let l = CHUNK.min(len - s);
                        eval(r * len + s, l, row[s..].as_mut_ptr(), &mut sc, false);
                    }
                    let v = reduce::f32_row(op, row.as_ptr(), len);
                    // SAFETY: r < out_n.
                    unsafe { *dst.get().add(r) = v };
                }
            });
        }
    }
    Ok(o)
}

/// Per-thread scratch: the step and staged rows, and the tiled executor's operand table and
/// buffers.
struct Scratch {
    regs: Vec<f32>,
    /// Per input, for the current chunk: where a staged operand is read in place instead.
    direct: Vec<Option<(*const f32, isize)>>,
    srcs: Vec<Src>,
    bufs: fused_tiled::RunBuffers,
}

/// Scratch rows for the steps' results: a step's row is reused once every step that reads it
/// has run, so a chain of any length works in two rows that stay in L1 (one row per step spilled
/// a ten-op chain's chunks to L2). A step never writes over a row it reads. Returns the row of
/// each step (the last step writes the output instead) and the number of rows.
fn assign_slots(prog: &FusedProgram) -> (Vec<usize>, usize) {
    let n_in = prog.n_inputs;
    let operands = |step: &FusedStep| -> Vec<usize> {
        match *step {
            FusedStep::Unary(_, a) => vec![a],
            FusedStep::Binary(_, a, b) | FusedStep::Compare(_, a, b) => vec![a, b],
            FusedStep::Select(c, x, y) => vec![c, x, y],
        }
    };
    let mut last_use = vec![0usize; prog.steps.len()];
    for (k, step) in prog.steps.iter().enumerate() {
        for r in operands(step) {
            if r >= n_in {
                last_use[r - n_in] = k;
            }
        }
    }
    let (mut slot, mut free, mut n_slots) = (vec![0usize; prog.steps.len()], Vec::new(), 0);
    for (k, step) in prog.steps.iter().enumerate() {
        slot[k] = free.pop().unwrap_or_else(|| {
            n_slots += 1;
            n_slots - 1
        });
        for r in operands(step) {
            // Freed after the output took its row, so the output never aliases an operand.
            if r >= n_in && last_use[r - n_in] == k && !free.contains(&slot[r - n_in]) {
                free.push(slot[r - n_in]);
            }
        }
    }
    (slot, n_slots)
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
