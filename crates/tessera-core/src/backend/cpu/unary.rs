//! Element-wise unary kernels. f32 is the fast path (vectorised math); f16/bf16 are staged
//! through f32 in stack chunks; f64 uses std; integers and bool have their own small set.

// Element functions are passed as closures on purpose: a bare `fn` item is not always inlined
// into the SIMD-dispatched loop, which then makes a call per element instead of vectorising.
#![allow(clippy::redundant_closure)]

use super::copy::{HALF_CHUNK, f32_to_half, half_to_f32, map_row, map_rows};
use super::simd::{self, math as m, math_f64};
use crate::array::Meta;
use crate::dtype::{Dtype, Element};
use crate::error::{Error, Result};
use crate::layout::ArrayData;
use crate::primitive::UnaryOp;

pub(crate) fn unary(op: UnaryOp, x: &ArrayData, out: &Meta) -> Result<ArrayData> {
    let o = if x.is_donatable() && out.dtype == x.dtype {
        x.clone()
    } else {
        ArrayData::alloc(out.dtype, &out.shape)?
    };
    if x.size() == 0 {
        return Ok(o);
    }
    let bool_out = out.dtype == Dtype::Bool;
    match (x.dtype, bool_out) {
        (Dtype::F32, false) => map_rows::<f32, f32>(x, &o, |s, st, d, n| f32_row(op, s, st, d, n)),
        (Dtype::F32, true) => {
            map_rows::<f32, bool>(x, &o, |s, st, d, n| f32_row_bool(op, s, st, d, n))
        }
        (Dtype::F64, false) => map_rows::<f64, f64>(x, &o, |s, st, d, n| f64_row(op, s, st, d, n)),
        (Dtype::F64, true) => {
            map_rows::<f64, bool>(x, &o, |s, st, d, n| f64_row_bool(op, s, st, d, n))
        }
        (Dtype::F16, false) => {
            map_rows::<half::f16, half::f16>(x, &o, |s, st, d, n| half_row(op, s, st, d, n))
        }
        (Dtype::BF16, false) => {
            map_rows::<half::bf16, half::bf16>(x, &o, |s, st, d, n| half_row(op, s, st, d, n))
        }
        (Dtype::F16, true) => {
            map_rows::<half::f16, bool>(x, &o, |s, st, d, n| half_row_bool(op, s, st, d, n))
        }
        (Dtype::BF16, true) => {
            map_rows::<half::bf16, bool>(x, &o, |s, st, d, n| half_row_bool(op, s, st, d, n))
        }
        (Dtype::Bool, _) => map_rows::<bool, bool>(x, &o, |s, st, d, n| unsafe {
            match op {
                UnaryOp::LogicalNot | UnaryOp::BitwiseNot => map_row(s, st, d, n, |v: bool| !v),
                UnaryOp::IsNan | UnaryOp::IsInf => map_row(s, st, d, n, |_| false),
                _ => map_row(s, st, d, n, |v| v),
            }
        }),
        (dt, _) => {
            crate::dispatch_dtype!(dt, T => {
                int_unary::<T>(op, x, &o, bool_out)?
            })
        }
    }
    Ok(o)
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

/// One f32 row: `d[i] = op(s[i * st])`. Also used in place on staged half rows.
pub(crate) fn f32_row(op: UnaryOp, s: *const f32, st: isize, d: *mut f32, n: usize) {
    use UnaryOp::*;
    // SAFETY: callers pass rows inside their arrays.
    unsafe {
        match op {
            Abs => map_row(s, st, d, n, |v| f32::abs(v)),
            Neg => map_row(s, st, d, n, |v: f32| -v),
            Sign => map_row(s, st, d, n, |v| sign_f32(v)),
            Exp => map_row(s, st, d, n, |v| m::exp_f32(v)),
            Expm1 => map_row(s, st, d, n, |v| m::expm1_f32(v)),
            Log => map_row(s, st, d, n, |v| m::log_f32(v)),
            Log1p => map_row(s, st, d, n, |v| m::log1p_f32(v)),
            Log2 => map_row(s, st, d, n, |v| m::log2_f32(v)),
            Sqrt => map_row(s, st, d, n, |v| f32::sqrt(v)),
            Rsqrt => map_row(s, st, d, n, |v: f32| 1.0 / v.sqrt()),
            Square => map_row(s, st, d, n, |v: f32| v * v),
            Reciprocal => map_row(s, st, d, n, |v: f32| 1.0 / v),
            Sin => map_row(s, st, d, n, |v| m::sin_f32(v)),
            Cos => map_row(s, st, d, n, |v| m::cos_f32(v)),
            Tan => map_row(s, st, d, n, |v| m::tan_f32(v)),
            Tanh => map_row(s, st, d, n, |v| m::tanh_f32(v)),
            Sinh => map_row(s, st, d, n, |v| m::sinh_f32(v)),
            Cosh => map_row(s, st, d, n, |v| m::cosh_f32(v)),
            Asin => map_row(s, st, d, n, |v| m::asin_f32(v)),
            Acos => map_row(s, st, d, n, |v| m::acos_f32(v)),
            Atan => map_row(s, st, d, n, |v| m::atan_f32(v)),
            Sigmoid => map_row(s, st, d, n, |v| m::sigmoid_f32(v)),
            Erf => map_row(s, st, d, n, |v| m::erf_f32(v)),
            Erfinv => map_row(s, st, d, n, |v| m::erfinv_f32(v)),
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
