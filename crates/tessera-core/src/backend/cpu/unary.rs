//! Element-wise unary kernels. f32 is the fast path (vectorised math); f16/bf16 are staged
//! through f32 in stack chunks; f64 uses std; integers and bool have their own small set.

// Element functions are passed as closures on purpose: a bare `fn` item is not always inlined
// into the SIMD-dispatched loop, which then makes a call per element instead of vectorising.
#![allow(clippy::redundant_closure)]

use super::Written;
use super::copy::{HALF_CHUNK, f32_to_half, half_to_f32, map_row, map_rows};
use super::simd::{self, STREAM_BLOCK, math as m, math_f64, prefetch_block};
use crate::array::Meta;
use crate::dtype::{Dtype, Element};
use crate::error::{Error, Result};
use crate::layout::ArrayData;
use crate::primitive::UnaryOp;

/// `op` of `x`: in place when `x` is donated (handed over as the output), else into a new
/// array.
pub(crate) fn unary(op: UnaryOp, x: &ArrayData, out: &Meta) -> Result<Written> {
    if x.is_donatable() && out.dtype == x.dtype {
        unary_into(op, x, x, out)?;
        return Ok(Written::Input(0));
    }
    let o = ArrayData::alloc(out.dtype, &out.shape)?;
    unary_into(op, x, &o, out)?;
    Ok(Written::New(o))
}

/// `op` of `x` into `o` (row-major, of `out`'s shape and dtype; may be `x` itself).
fn unary_into(op: UnaryOp, x: &ArrayData, o: &ArrayData, out: &Meta) -> Result<()> {
    if x.size() == 0 {
        return Ok(());
    }
    let bool_out = out.dtype == Dtype::Bool;
    match (x.dtype, bool_out) {
        (Dtype::F32, false) => map_rows::<f32, f32>(x, o, |s, st, d, n| f32_row(op, s, st, d, n)),
        (Dtype::F32, true) => {
            map_rows::<f32, bool>(x, o, |s, st, d, n| f32_row_bool(op, s, st, d, n))
        }
        (Dtype::F64, false) => map_rows::<f64, f64>(x, o, |s, st, d, n| f64_row(op, s, st, d, n)),
        (Dtype::F64, true) => {
            map_rows::<f64, bool>(x, o, |s, st, d, n| f64_row_bool(op, s, st, d, n))
        }
        (Dtype::F16, false) => {
            map_rows::<half::f16, half::f16>(x, o, |s, st, d, n| half_row(op, s, st, d, n))
        }
        (Dtype::BF16, false) => {
            map_rows::<half::bf16, half::bf16>(x, o, |s, st, d, n| half_row(op, s, st, d, n))
        }
        (Dtype::F16, true) => {
            map_rows::<half::f16, bool>(x, o, |s, st, d, n| half_row_bool(op, s, st, d, n))
        }
        (Dtype::BF16, true) => {
            map_rows::<half::bf16, bool>(x, o, |s, st, d, n| half_row_bool(op, s, st, d, n))
        }
        (Dtype::Bool, _) => map_rows::<bool, bool>(x, o, |s, st, d, n| unsafe {
            match op {
                UnaryOp::LogicalNot | UnaryOp::BitwiseNot => map_row(s, st, d, n, |v: bool| !v),
                UnaryOp::IsNan | UnaryOp::IsInf => map_row(s, st, d, n, |_| false),
                _ => map_row(s, st, d, n, |v| v),
            }
        }),
        (dt, _) => {
            crate::dispatch_dtype!(dt, T => {
                int_unary::<T>(op, x, o, bool_out)?
            })
        }
    }
    Ok(())
}

/// Integer ops: the float-only ones were promoted away by `ops`.
fn int_unary<T: Element + IntOps>(
    op: UnaryOp,
    x: &ArrayData,
    o: &ArrayData,
    bool_out: bool,
) -> Result<()> {
    if bool_out {
        map_rows::<T, bool>(x, o, |s, st, d, n| unsafe {
            match op {
                UnaryOp::LogicalNot => map_row(s, st, d, n, |v: T| v == T::default()),
                _ => map_row(s, st, d, n, |_| false),
            }
        });
        return Ok(());
    }
    let supported = matches!(
        op,
        UnaryOp::Abs
            | UnaryOp::Neg
            | UnaryOp::Sign
            | UnaryOp::Square
            | UnaryOp::Floor
            | UnaryOp::Ceil
            | UnaryOp::Round
            | UnaryOp::BitwiseNot
    );
    if !supported {
        return Err(Error::Dtype {
            op: "unary",
            dtype: T::DTYPE,
            msg: format!("{op:?} needs a float input"),
        });
    }
    map_rows::<T, T>(x, o, |s, st, d, n| unsafe {
        match op {
            UnaryOp::Abs => map_row(s, st, d, n, |v| T::abs_(v)),
            UnaryOp::Neg => map_row(s, st, d, n, |v| T::neg_(v)),
            UnaryOp::Sign => map_row(s, st, d, n, |v| T::sign_(v)),
            UnaryOp::Square => map_row(s, st, d, n, |v: T| v.mul_(v)),
            UnaryOp::BitwiseNot => map_row(s, st, d, n, |v| T::not_(v)),
            _ => map_row(s, st, d, n, |v| v),
        }
    });
    Ok(())
}

/// Wrapping integer arithmetic used by unary and binary kernels.
pub(crate) trait IntOps: Copy + PartialOrd + Default {
    fn abs_(self) -> Self;
    fn neg_(self) -> Self;
    fn sign_(self) -> Self;
    fn mul_(self, o: Self) -> Self;
    fn not_(self) -> Self;
}

macro_rules! int_ops {
    ($($t:ty, $signed:expr);*) => {$(
        impl IntOps for $t {
            #[inline(always)] fn abs_(self) -> Self { if $signed && self < (0 as $t) { (0 as $t).wrapping_sub(self) } else { self } }
            #[inline(always)] fn neg_(self) -> Self { (0 as $t).wrapping_sub(self) }
            #[inline(always)] fn sign_(self) -> Self {
                if self > (0 as $t) { 1 as $t } else if $signed && self < (0 as $t) { (0 as $t).wrapping_sub(1) } else { 0 as $t }
            }
            #[inline(always)] fn mul_(self, o: Self) -> Self { self.wrapping_mul(o) }
            #[inline(always)] fn not_(self) -> Self { !self }
        }
    )*};
}
int_ops!(u8, false; u32, false; i32, true; i64, true);

// The float types never reach int_unary (the match above routes them); these impls only satisfy
// the dtype dispatch macro.
macro_rules! no_int_ops {
    ($($t:ty),*) => {$(
        impl IntOps for $t {
            fn abs_(self) -> Self { self }
            fn neg_(self) -> Self { self }
            fn sign_(self) -> Self { self }
            fn mul_(self, _: Self) -> Self { self }
            fn not_(self) -> Self { self }
        }
    )*};
}
no_int_ops!(f32, f64, half::f16, half::bf16, bool);

#[inline(always)]
fn sign_f32(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

/// One multiversioned row loop per element function of `simd::math`, each calling its function
/// directly. Through `map_row`'s closure argument LLVM left the larger ones as a call per element
/// instead of inlining them into the vector loop (erf ran 10x slower than its vector form).
macro_rules! math_rows {
    ($($row:ident => $f:ident),* $(,)?) => {$(
        super::simd::multiversion! {
            unsafe fn $row[](s: *const f32, st: isize, d: *mut f32, n: usize) {
                // Contiguous rows in blocks, each prefetching ahead (`simd::prefetch_block`).
                if st == 1 && d as *const f32 == s {
                    // In place: read through `d` itself (see `copy::map_row`).
                    for i0 in (0..n).step_by(STREAM_BLOCK) {
                        prefetch_block(d, i0);
                        for i in i0..(i0 + STREAM_BLOCK).min(n) {
                            *d.add(i) = m::$f(*d.add(i));
                        }
                    }
                } else if st == 1 {
                    for i0 in (0..n).step_by(STREAM_BLOCK) {
                        prefetch_block(s, i0);
                        for i in i0..(i0 + STREAM_BLOCK).min(n) {
                            *d.add(i) = m::$f(*s.add(i));
                        }
                    }
                } else if st == 0 {
                    let v = m::$f(*s);
                    for i in 0..n {
                        *d.add(i) = v;
                    }
                } else {
                    for i in 0..n {
                        *d.add(i) = m::$f(*s.offset(i as isize * st));
                    }
                }
            }
        }
    )*};
}

math_rows!(
    exp_f32_row => exp_f32,
    expm1_f32_row => expm1_f32,
    log_f32_row => log_f32,
    log1p_f32_row => log1p_f32,
    log2_f32_row => log2_f32,
    sin_f32_row => sin_f32,
    cos_f32_row => cos_f32,
    tan_f32_row => tan_f32,
    tanh_f32_row => tanh_f32,
    sinh_f32_row => sinh_f32,
    cosh_f32_row => cosh_f32,
    asin_f32_row => asin_f32,
    acos_f32_row => acos_f32,
    atan_f32_row => atan_f32,
    sigmoid_f32_row => sigmoid_f32,
    erf_f32_row => erf_f32,
    erfinv_f32_row => erfinv_f32,
);

/// One f32 row: `d[i] = op(s[i * st])`. Also used in place on staged half rows.
pub(crate) fn f32_row(op: UnaryOp, s: *const f32, st: isize, d: *mut f32, n: usize) {
    use UnaryOp::*;
    // SAFETY: callers pass rows inside their arrays.
    unsafe {
        match op {
            Abs => map_row(s, st, d, n, |v| f32::abs(v)),
            Neg => map_row(s, st, d, n, |v: f32| -v),
            Sign => map_row(s, st, d, n, |v| sign_f32(v)),
            Exp => exp_f32_row(s, st, d, n),
            Expm1 => expm1_f32_row(s, st, d, n),
            Log => log_f32_row(s, st, d, n),
            Log1p => log1p_f32_row(s, st, d, n),
            Log2 => log2_f32_row(s, st, d, n),
            Sqrt => map_row(s, st, d, n, |v| f32::sqrt(v)),
            Rsqrt => map_row(s, st, d, n, |v: f32| 1.0 / v.sqrt()),
            Square => map_row(s, st, d, n, |v: f32| v * v),
            Reciprocal => map_row(s, st, d, n, |v: f32| 1.0 / v),
            Sin => sin_f32_row(s, st, d, n),
            Cos => cos_f32_row(s, st, d, n),
            Tan => tan_f32_row(s, st, d, n),
            Tanh => tanh_f32_row(s, st, d, n),
            Sinh => sinh_f32_row(s, st, d, n),
            Cosh => cosh_f32_row(s, st, d, n),
            Asin => asin_f32_row(s, st, d, n),
            Acos => acos_f32_row(s, st, d, n),
            Atan => atan_f32_row(s, st, d, n),
            Sigmoid => sigmoid_f32_row(s, st, d, n),
            Erf => erf_f32_row(s, st, d, n),
            Erfinv => erfinv_f32_row(s, st, d, n),
            Floor => map_row(s, st, d, n, |v| f32::floor(v)),
            Ceil => map_row(s, st, d, n, |v| f32::ceil(v)),
            Round => map_row(s, st, d, n, |v| f32::round_ties_even(v)),
            IsNan | IsInf | LogicalNot | BitwiseNot => map_row(s, st, d, n, |v| v),
        }
    }
}

fn f32_row_bool(op: UnaryOp, s: *const f32, st: isize, d: *mut bool, n: usize) {
    // SAFETY: rows inside their arrays.
    unsafe {
        match op {
            UnaryOp::IsNan => map_row(s, st, d, n, |v: f32| v.is_nan()),
            UnaryOp::IsInf => map_row(s, st, d, n, |v: f32| v.is_infinite()),
            _ => map_row(s, st, d, n, |v: f32| v == 0.0),
        }
    }
}

fn f64_row(op: UnaryOp, s: *const f64, st: isize, d: *mut f64, n: usize) {
    use UnaryOp::*;
    // SAFETY: rows inside their arrays.
    unsafe {
        match op {
            Abs => map_row(s, st, d, n, |v| f64::abs(v)),
            Neg => map_row(s, st, d, n, |v: f64| -v),
            Sign => map_row(s, st, d, n, |v: f64| {
                if v > 0.0 {
                    1.0
                } else if v < 0.0 {
                    -1.0
                } else {
                    v
                }
            }),
            Exp => map_row(s, st, d, n, |v| f64::exp(v)),
            Expm1 => map_row(s, st, d, n, |v| f64::exp_m1(v)),
            Log => map_row(s, st, d, n, |v| f64::ln(v)),
            Log1p => map_row(s, st, d, n, |v| f64::ln_1p(v)),
            Log2 => map_row(s, st, d, n, |v| f64::log2(v)),
            Sqrt => map_row(s, st, d, n, |v| f64::sqrt(v)),
            Rsqrt => map_row(s, st, d, n, |v: f64| 1.0 / v.sqrt()),
            Square => map_row(s, st, d, n, |v: f64| v * v),
            Reciprocal => map_row(s, st, d, n, |v: f64| 1.0 / v),
            Sin => map_row(s, st, d, n, |v| f64::sin(v)),
            Cos => map_row(s, st, d, n, |v| f64::cos(v)),
            Tan => map_row(s, st, d, n, |v| f64::tan(v)),
            Tanh => map_row(s, st, d, n, |v| f64::tanh(v)),
            Sinh => map_row(s, st, d, n, |v| f64::sinh(v)),
            Cosh => map_row(s, st, d, n, |v| f64::cosh(v)),
            Asin => map_row(s, st, d, n, |v| f64::asin(v)),
            Acos => map_row(s, st, d, n, |v| f64::acos(v)),
            Atan => map_row(s, st, d, n, |v| f64::atan(v)),
            Sigmoid => map_row(s, st, d, n, |v: f64| {
                // Stable both ways: never exp of a large positive number.
                if v >= 0.0 {
                    1.0 / (1.0 + (-v).exp())
                } else {
                    let e = v.exp();
                    e / (1.0 + e)
                }
            }),
            Erf => map_row(s, st, d, n, |v| math_f64::erf_f64(v)),
            Erfinv => map_row(s, st, d, n, |v| math_f64::erfinv_f64(v)),
            Floor => map_row(s, st, d, n, |v| f64::floor(v)),
            Ceil => map_row(s, st, d, n, |v| f64::ceil(v)),
            Round => map_row(s, st, d, n, |v| f64::round_ties_even(v)),
            IsNan | IsInf | LogicalNot | BitwiseNot => map_row(s, st, d, n, |v| v),
        }
    }
}

fn f64_row_bool(op: UnaryOp, s: *const f64, st: isize, d: *mut bool, n: usize) {
    // SAFETY: rows inside their arrays.
    unsafe {
        match op {
            UnaryOp::IsNan => map_row(s, st, d, n, |v: f64| v.is_nan()),
            UnaryOp::IsInf => map_row(s, st, d, n, |v: f64| v.is_infinite()),
            _ => map_row(s, st, d, n, |v: f64| v == 0.0),
        }
    }
}

/// Half-precision rows: stage through f32 (the same rounding MLX uses: compute in f32, round once).
fn half_row<T: Element>(op: UnaryOp, s: *const T, st: isize, d: *mut T, n: usize) {
    let mut buf = [0f32; HALF_CHUNK];
    let mut i = 0;
    while i < n {
        let k = (n - i).min(HALF_CHUNK);
        // SAFETY: chunk [i, i + k) is inside the row.
        unsafe {
            simd::dispatch(|| half_to_f32::<T>(s.offset(i as isize * st), st, &mut buf[..k]));
            f32_row(op, buf.as_ptr(), 1, buf.as_mut_ptr(), k);
            simd::dispatch(|| f32_to_half::<T>(&buf[..k], d.add(i)));
        }
        i += k;
    }
}

fn half_row_bool<T: Element>(op: UnaryOp, s: *const T, st: isize, d: *mut bool, n: usize) {
    let mut buf = [0f32; HALF_CHUNK];
    let mut i = 0;
    while i < n {
        let k = (n - i).min(HALF_CHUNK);
        // SAFETY: chunk [i, i + k) is inside the row.
        unsafe {
            half_to_f32::<T>(s.offset(i as isize * st), st, &mut buf[..k]);
            f32_row_bool(op, buf.as_ptr(), 1, d.add(i), k);
        }
        i += k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocked row loops (prefetching ahead) against the element function, for lengths
    /// around the block size, into a separate row and in place.
    #[test]
    fn math_rows_cover_every_length() {
        for n in [0, 1, 15, 255, 256, 257, 1000, 4 * STREAM_BLOCK + 3] {
            let src: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
            let want: Vec<f32> = src.iter().map(|&x| m::exp_f32(x)).collect();
            let mut out = vec![f32::NAN; n];
            // SAFETY: both rows hold n values.
            unsafe { exp_f32_row(src.as_ptr(), 1, out.as_mut_ptr(), n) };
            assert_eq!(out, want, "n = {n}");
            let mut inplace = src.clone();
            let p = inplace.as_mut_ptr();
            // SAFETY: one row of n values, read and written in place.
            unsafe { exp_f32_row(p, 1, p, n) };
            assert_eq!(inplace, want, "n = {n}, in place");
        }
    }
}
