//! Register-tiled execution of *linear* fused programs of cheap ops: each step reads the previous
//! step's result and otherwise only program inputs (the common shape of an element-wise chain:
//! scalings, shifts, clamps, squares), with arithmetic of a few instructions per vector.
//!
//! Why: the general executor (`fused.rs`) runs each step over a chunk of 1024 values in L1, so
//! every step costs a load and a store per vector besides its arithmetic, and a store of a full
//! register takes two cycles on the AMD cores we measure on. Here a block of 64 values stays in a
//! local array that LLVM keeps in registers across the whole (run-time) step list: each step is
//! one dispatch per block and its arithmetic, and memory sees one load of each input and one
//! store of the output. Ten cheap ops over 16M values: 4.5 ms on one thread against 16 ms for
//! the chunked executor, the time of one in-place add.
//!
//! Results are bit-identical to the chunked executor: the same element functions
//! (`Arith` for f32, `simd::math`), applied in the same order; `maximum` / `minimum` against a
//! scalar that is not NaN take shorter forms proved equal to `Arith`'s ([`scalar_max_min`]).
//! On Zen 3 (AVX2, one thread, 16K values in L2), ten cheap ops (`chain10_cheap`'s mix) went
//! from 0.89 to 0.33 ns a value with the run per thread range (`fused.rs`) and those forms.

use super::binary::Arith;
use super::simd;
use crate::primitive::{BinaryOp, FusedProgram, FusedStep, UnaryOp};

/// Values per block (four 512-bit registers).
const B: usize = 64;

/// Where a step's other operand comes from: a slot of the caller's operand table, or the chain
/// value itself (`x * x`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Other {
    Input(usize),
    Chain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TStep {
    /// `chain = op(chain, other)`, or `op(other, chain)` when `chain_second`.
    Bin {
        op: BinaryOp,
        other: Other,
        chain_second: bool,
    },
    Un(UnaryOp),
}

/// A linear program: the chain starts as input `first`, then the steps run in order.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plan {
    pub first: usize,
    pub steps: Vec<TStep>,
}

fn tiled_binary(op: BinaryOp) -> bool {
    use BinaryOp::*;
    matches!(op, Add | Sub | Mul | Div | Max | Min)
}

/// Unary ops with a short inline body (single instructions on AVX-512). The `simd::math`
/// functions (exp, tanh, ...) are left to the chunked executor: inlined into the step loop
/// their large bodies, or a call per block, made LLVM keep the block on the stack for every
/// step, which ran a ten-op chain 2x slower than the chunked executor; those ops cost far more
/// than a store anyway.
fn tiled_unary(op: UnaryOp) -> bool {
    use UnaryOp::*;
    matches!(
        op,
        Abs | Neg | Square | Sqrt | Rsqrt | Reciprocal | Floor | Ceil | Round
    )
}

/// The plan for `prog` when it is linear and uses only ops this executor has; `None` otherwise
/// (the chunked executor runs it).
pub(super) fn plan(prog: &FusedProgram) -> Option<Plan> {
    let n_in = prog.n_inputs;
    let mut steps = Vec::with_capacity(prog.steps.len() + 1);
    let mut first = None;
    for (k, step) in prog.steps.iter().enumerate() {
        let chain = n_in + k; // the register holding the chain before step k (for k > 0)
        let prev = chain.wrapping_sub(1);
        match *step {
            FusedStep::Unary(op, a) if tiled_unary(op) => {
                if k == 0 && a < n_in {
                    first = Some(a);
                } else if k == 0 || a != prev {
                    return None;
                }
                steps.push(TStep::Un(op));
            }
            FusedStep::Binary(op, a, b) if tiled_binary(op) => {
                if k == 0 {
                    if a >= n_in || b >= n_in {
                        return None;
                    }
                    first = Some(a);
                    let other = if b == a {
                        Other::Chain
                    } else {
                        Other::Input(b)
                    };
                    steps.push(TStep::Bin {
                        op,
                        other,
                        chain_second: false,
                    });
                    continue;
                }
                let (other, chain_second) = match (a == prev, b == prev) {
                    (true, true) => (Other::Chain, false),
                    (true, false) if b < n_in => (Other::Input(b), false),
                    (false, true) if a < n_in => (Other::Input(a), true),
                    _ => return None,
                };
                steps.push(TStep::Bin {
                    op,
                    other,
                    chain_second,
                });
            }
            _ => return None,
        }
    }
    Some(Plan {
        first: first?,
        steps,
    })
}

/// One operand of a block run: `stride` 0 is one value for every element, 1 a row.
#[derive(Clone, Copy)]
pub(super) struct Src {
    pub ptr: *const f32,
    pub stride: usize,
}

#[inline(always)]
unsafe fn load(s: Src, at: usize) -> [f32; B] {
    if s.stride == 0 {
        [*s.ptr; B]
    } else {
        let mut v = [0f32; B];
        std::ptr::copy_nonoverlapping(s.ptr.add(at), v.as_mut_ptr(), B);
        v
    }
}

/// What one step does to the block, with its operand resolved for the current run: one code to
/// switch on. (Resolving per block, through the step kind, the operand's kind, the operand
/// order and then the op, took about 25 scalar instructions a step and block: on AVX2, whose
/// block is eight 256-bit vectors, more than the arithmetic.) Codes: `S` the op with a scalar
/// as the second operand, `Rs` as the first; `R` / `Rr` the same with a row; `C` the chain
/// with itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Code {
    AddS,
    AddRs,
    AddR,
    AddRr,
    AddC,
    SubS,
    SubRs,
    SubR,
    SubRr,
    SubC,
    MulS,
    MulRs,
    MulR,
    MulRr,
    MulC,
    DivS,
    DivRs,
    DivR,
    DivRr,
    DivC,
    MaxS,
    MaxRs,
    MaxR,
    MaxRr,
    MaxC,
    MinS,
    MinRs,
    MinR,
    MinRr,
    MinC,
    /// `max` / `min` with a scalar known not to be NaN, in the forms that are one or two
    /// instructions (`maxps` / `minps`, or a compare and a blend) instead of the general
    /// NaN-propagating select of four; see [`scalar_max_min`].
    MaxQ,
    MaxN,
    MinQ,
    MinN,
    Abs,
    Neg,
    Square,
    Sqrt,
    Rsqrt,
    Reciprocal,
    Floor,
    Ceil,
    Round,
}

/// A step resolved against the run's operands: its code, and the scalar or the row it reads.
/// (A broadcast value stays a scalar: as a 64-value array on the stack, re-read as vectors, it
/// stalled on store forwarding.)
#[derive(Clone, Copy)]
struct Flat {
    code: Code,
    scalar: f32,
    row: *const f32,
}

/// The codes of one binary op: (scalar second, scalar first, row second, row first, chain).
fn bin_codes(op: BinaryOp) -> [Code; 5] {
    use Code::*;
    match op {
        BinaryOp::Add => [AddS, AddRs, AddR, AddRr, AddC],
        BinaryOp::Sub => [SubS, SubRs, SubR, SubRr, SubC],
        BinaryOp::Mul => [MulS, MulRs, MulR, MulRr, MulC],
        BinaryOp::Div => [DivS, DivRs, DivR, DivRr, DivC],
        BinaryOp::Max => [MaxS, MaxRs, MaxR, MaxRr, MaxC],
        _ => [MinS, MinRs, MinR, MinRr, MinC],
    }
}

fn un_code(op: UnaryOp) -> Code {
    match op {
        UnaryOp::Abs => Code::Abs,
        UnaryOp::Neg => Code::Neg,
        UnaryOp::Square => Code::Square,
        UnaryOp::Sqrt => Code::Sqrt,
        UnaryOp::Rsqrt => Code::Rsqrt,
        UnaryOp::Reciprocal => Code::Reciprocal,
        UnaryOp::Floor => Code::Floor,
        UnaryOp::Ceil => Code::Ceil,
        _ => Code::Round,
    }
}

/// The code of `max` / `min` against the scalar `s`, with the chain as the second operand when
/// `chain_second`, when a shorter form gives exactly [`Arith`]'s result for every chain value
/// `x` (NaN and signed zeros included); `None` keeps the general code.
///
/// `Arith::max(a, b)` is `a` if `a` is NaN or `a > b`, else `b` (`min` likewise with `<`). For
/// a scalar that is not NaN:
/// - `max(s, x)` is `s > x ? s : x` (`MaxQ`): `x` when NaN, `x` when equal, as `Arith`;
/// - `max(x, s)` is the same when `s` is not zero: on equal values it returns `x` where
///   `Arith` returns `s`, the same bits unless they are zeros of opposite signs;
/// - `max(x, ±0)` is `!(x <= s) ? x : s` (`MaxN`): `x` when NaN or greater, else `s`.
///
/// `min` is the mirror image (`MinQ`: `s < x ? s : x`; `MinN`: `!(x >= s) ? x : s`).
fn scalar_max_min(op: BinaryOp, s: f32, chain_second: bool) -> Option<Code> {
    let (quick, near) = match op {
        BinaryOp::Max => (Code::MaxQ, Code::MaxN),
        BinaryOp::Min => (Code::MinQ, Code::MinN),
        _ => return None,
    };
    if s.is_nan() {
        None
    } else if chain_second || s != 0.0 {
        Some(quick)
    } else {
        Some(near)
    }
}

/// The plan's steps resolved against `srcs` (scalars read, row pointers taken) into `out`.
///
/// # Safety
/// Every stride-0 operand points to one readable value.
unsafe fn resolve(plan: &Plan, srcs: &[Src], out: &mut Vec<Flat>) {
    out.clear();
    for s in &plan.steps {
        let (code, scalar, row) = match *s {
            TStep::Un(op) => (un_code(op), 0.0, std::ptr::null()),
            TStep::Bin {
                op,
                other,
                chain_second,
            } => {
                let codes = bin_codes(op);
                match other {
                    Other::Chain => (codes[4], 0.0, std::ptr::null()),
                    Other::Input(i) if srcs[i].stride == 0 => {
                        let v = *srcs[i].ptr;
                        let code = scalar_max_min(op, v, chain_second)
                            .unwrap_or_else(|| codes[usize::from(chain_second)]);
                        (code, v, std::ptr::null())
                    }
                    Other::Input(i) => (codes[2 + usize::from(chain_second)], 0.0, srcs[i].ptr),
                }
            }
        };
        out.push(Flat { code, scalar, row });
    }
}

/// The block at `at` through every step; the block stays in registers (no calls inside).
// `!(x <= s)` is meant: true for NaN too (one unordered compare, see `scalar_max_min`).
#[allow(clippy::neg_cmp_op_on_partial_ord)]
#[inline(always)]
unsafe fn block(first: Src, steps: &[Flat], at: usize) -> [f32; B] {
    let mut v = load(first, at);
    for f in steps {
        let s = f.scalar;
        macro_rules! apply {
            (s, $g:expr) => {
                for x in v.iter_mut() {
                    *x = $g(*x, s);
                }
            };
            (rs, $g:expr) => {
                for x in v.iter_mut() {
                    *x = $g(s, *x);
                }
            };
            // A row is read by value: borrowed in place (`&[f32; B]`), it made LLVM keep the
            // block on the stack across every step (ten cheap ops on AVX2: 4.1 ns a value
            // against 0.39 in a standalone copy of this loop).
            (r, $g:expr) => {{
                let r = std::ptr::read_unaligned(f.row.add(at) as *const [f32; B]);
                for i in 0..B {
                    v[i] = $g(v[i], r[i]);
                }
            }};
            (rr, $g:expr) => {{
                let r = std::ptr::read_unaligned(f.row.add(at) as *const [f32; B]);
                for i in 0..B {
                    v[i] = $g(r[i], v[i]);
                }
            }};
            (c, $g:expr) => {
                for x in v.iter_mut() {
                    *x = $g(*x, *x);
                }
            };
            (u, $g:expr) => {
                for x in v.iter_mut() {
                    *x = $g(*x);
                }
            };
        }
        use Code::*;
        type F = f32;
        match f.code {
            AddS => apply!(s, <F as Arith>::add),
            AddRs => apply!(rs, <F as Arith>::add),
            AddR => apply!(r, <F as Arith>::add),
            AddRr => apply!(rr, <F as Arith>::add),
            AddC => apply!(c, <F as Arith>::add),
            SubS => apply!(s, <F as Arith>::sub),
            SubRs => apply!(rs, <F as Arith>::sub),
            SubR => apply!(r, <F as Arith>::sub),
            SubRr => apply!(rr, <F as Arith>::sub),
            SubC => apply!(c, <F as Arith>::sub),
            MulS => apply!(s, <F as Arith>::mul),
            MulRs => apply!(rs, <F as Arith>::mul),
            MulR => apply!(r, <F as Arith>::mul),
            MulRr => apply!(rr, <F as Arith>::mul),
            MulC => apply!(c, <F as Arith>::mul),
            DivS => apply!(s, <F as Arith>::div),
            DivRs => apply!(rs, <F as Arith>::div),
            DivR => apply!(r, <F as Arith>::div),
            DivRr => apply!(rr, <F as Arith>::div),
            DivC => apply!(c, <F as Arith>::div),
            MaxS => apply!(s, <F as Arith>::max),
            MaxRs => apply!(rs, <F as Arith>::max),
            MaxR => apply!(r, <F as Arith>::max),
            MaxRr => apply!(rr, <F as Arith>::max),
            MaxC => apply!(c, <F as Arith>::max),
            MinS => apply!(s, <F as Arith>::min),
            MinRs => apply!(rs, <F as Arith>::min),
            MinR => apply!(r, <F as Arith>::min),
            MinRr => apply!(rr, <F as Arith>::min),
            MinC => apply!(c, <F as Arith>::min),
            MaxQ => apply!(s, |x: f32, s: f32| if s > x { s } else { x }),
            MaxN => apply!(s, |x: f32, s: f32| if !(x <= s) { x } else { s }),
            MinQ => apply!(s, |x: f32, s: f32| if s < x { s } else { x }),
            MinN => apply!(s, |x: f32, s: f32| if !(x >= s) { x } else { s }),
            Abs => apply!(u, f32::abs),
            Neg => apply!(u, |x: f32| -x),
            Square => apply!(u, |x: f32| x * x),
            Sqrt => apply!(u, f32::sqrt),
            Rsqrt => apply!(u, |x: f32| 1.0 / x.sqrt()),
            Reciprocal => apply!(u, |x: f32| 1.0 / x),
            Floor => apply!(u, f32::floor),
            Ceil => apply!(u, f32::ceil),
            Round => apply!(u, f32::round_ties_even),
        }
    }
    v
}

/// Writes a block to `dst`: with streaming stores when `stream` (then `dst` is 16-byte
/// aligned, and the caller fences with [`simd::stream_fence`] before the output is read).
#[inline(always)]
unsafe fn store_block(v: &[f32; B], dst: *mut f32, stream: bool) {
    #[cfg(target_arch = "x86_64")]
    if stream {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_stream_ps};
        for i in (0..B).step_by(4) {
            _mm_stream_ps(dst.add(i), _mm_loadu_ps(v.as_ptr().add(i)));
        }
        return;
    }
    let _ = stream;
    std::ptr::copy_nonoverlapping(v.as_ptr(), dst, B);
}

/// A run's reusable buffers: the resolved steps, and padded copies of the row operands for the
/// last partial block.
pub(super) struct RunBuffers {
    steps: Vec<Flat>,
    values: Vec<f32>,
    srcs: Vec<Src>,
}

impl RunBuffers {
    /// Room for `n_srcs` operands.
    pub(super) fn new(n_srcs: usize) -> RunBuffers {
        RunBuffers {
            steps: Vec::new(),
            values: vec![0f32; n_srcs * B],
            srcs: Vec::with_capacity(n_srcs),
        }
    }
}

simd::multiversion! {
    /// Runs the plan over `len` elements: operand `i` is `srcs[i]` (rows valid for `len`
    /// values), the result goes to `out`. The last partial block runs on padded copies in
    /// `bufs` (made by [`RunBuffers::new`] for `srcs.len()` operands). With `stream`, whole
    /// blocks are written with streaming stores when `out` is 16-byte aligned.
    pub(super) unsafe fn run[](plan: &Plan, srcs: &[Src], len: usize, out: *mut f32, bufs: &mut RunBuffers, stream: bool) {
        let RunBuffers { steps, values, srcs: padded } = bufs;
        resolve(plan, srcs, steps);
        let first = srcs[plan.first];
        let stream = stream && (out as usize).is_multiple_of(16);
        let full = len / B * B;
        let mut at = 0;
        while at < full {
            let v = block(first, steps, at);
            store_block(&v, out.add(at), stream);
            at += B;
        }
        let rest = len - full;
        if rest > 0 {
            padded.clear();
            for (s, t) in srcs.iter().zip(values.chunks_exact_mut(B)) {
                if s.stride == 0 {
                    padded.push(*s);
                } else {
                    t.fill(0.0);
                    std::ptr::copy_nonoverlapping(s.ptr.add(full), t.as_mut_ptr(), rest);
                    padded.push(Src { ptr: t.as_ptr(), stride: 1 });
                }
            }
            resolve(plan, padded, steps);
            let v = block(padded[plan.first], steps, 0);
            std::ptr::copy_nonoverlapping(v.as_ptr(), out.add(full), rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitive::ReduceOp;

    fn prog(n_inputs: usize, steps: Vec<FusedStep>) -> FusedProgram {
        FusedProgram {
            n_inputs,
            steps,
            reduce: None::<(ReduceOp, usize)>,
        }
    }

    #[test]
    fn linear_programs_get_a_plan_and_others_do_not() {
        use BinaryOp::*;
        // sqrt(x * s) + y, then squared as chain * chain.
        let p = prog(
            3,
            vec![
                FusedStep::Binary(Mul, 0, 1),
                FusedStep::Unary(UnaryOp::Sqrt, 3),
                FusedStep::Binary(Add, 2, 4),
                FusedStep::Binary(Mul, 5, 5),
            ],
        );
        let plan = plan(&p).unwrap();
        assert_eq!(plan.first, 0);
        assert_eq!(
            plan.steps[2],
            TStep::Bin {
                op: Add,
                other: Other::Input(2),
                chain_second: true
            }
        );
        assert_eq!(
            plan.steps[3],
            TStep::Bin {
                op: Mul,
                other: Other::Chain,
                chain_second: false
            }
        );
        // A step reading an older step (a DAG), or an op without a tiled form: no plan.
        let dag = prog(
            1,
            vec![
                FusedStep::Unary(UnaryOp::Exp, 0),
                FusedStep::Unary(UnaryOp::Neg, 1),
                FusedStep::Binary(Add, 1, 2),
            ],
        );
        assert!(super::plan(&dag).is_none());
        let pow = prog(2, vec![FusedStep::Binary(Pow, 0, 1)]);
        assert!(super::plan(&pow).is_none());
        let tanh = prog(1, vec![FusedStep::Unary(UnaryOp::Tanh, 0)]);
        assert!(super::plan(&tanh).is_none());
        let cmp = prog(2, vec![FusedStep::Compare(Lt, 0, 1)]);
        assert!(super::plan(&cmp).is_none());
    }
}
