//! Element-wise ops: unary math, binary arithmetic and comparisons, `where`, `clip`, closeness.

use super::broadcast_shapes;
use crate::array::Array;
use crate::dtype::{Dtype, Kind, promote_types};
use crate::error::{Error, Result};
use crate::primitive::{BinaryOp, Primitive, UnaryOp};

/// Converts to `dtype`, keeping the shape (lazily; the same array if it already has the dtype).
/// Float to integer truncates toward zero and saturates; NaN becomes 0; anything to bool is `!= 0`.
/// Never `Err`.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[1.7f32, -2.5], &[2]).unwrap();
/// assert_eq!(a.astype(Dtype::I32).unwrap().to_vec::<i32>().unwrap(), vec![1, -2]);
/// let b = ops::astype(&a, Dtype::Bool).unwrap();
/// assert_eq!((b.shape(), b.dtype()), (&[2usize][..], Dtype::Bool));
/// ```
pub fn astype(a: &Array, dtype: Dtype) -> Result<Array> {
    if a.dtype() == dtype {
        return Ok(a.clone());
    }
    Ok(Array::lazy(
        Primitive::AsType(dtype),
        vec![a.clone()],
        a.shape().to_vec(),
        dtype,
    ))
}

fn unary_node(op: UnaryOp, a: &Array, out: Dtype) -> Array {
    Array::lazy(Primitive::Unary(op), [a.clone()], a.shape(), out)
}

/// Float-only unary ops: integer and bool inputs are computed in float32.
fn float_unary(op: UnaryOp, a: &Array) -> Result<Array> {
    let a = astype(a, a.dtype().at_least_float())?;
    Ok(unary_node(op, &a, a.dtype()))
}

// Each entry: docs, `name => UnaryOp: input -> expected` (float32 values for the doc example).
macro_rules! float_unary_ops {
    ($($(#[$doc:meta])* $name:ident => $op:ident: $x:literal -> $y:literal;)*) => {$(
        $(#[$doc])*
        ///
        /// Same shape as the input. Floats keep their dtype; integer and bool inputs are computed
        /// in, and return, float32. Never `Err`; inputs outside the domain give NaN or ±inf.
        /// ```
        /// use tessera_core::{Array, Dtype, ops};
        #[doc = concat!("let x = Array::from_slice(&[", stringify!($x), "f32], &[1]).unwrap();")]
        #[doc = concat!("let y = ops::", stringify!($name), "(&x).unwrap().item::<f32>().unwrap();")]
        #[doc = concat!("let want: f32 = ", stringify!($y), ";")]
        /// assert!((y - want).abs() <= 1e-5 * want.abs(), "{y} vs {want}");
        #[doc = concat!("let i = ops::", stringify!($name), "(&Array::from_slice(&[1i32, 2], &[2]).unwrap()).unwrap();")]
        /// assert_eq!((i.shape(), i.dtype()), (&[2usize][..], Dtype::F32));
        /// ```
        pub fn $name(a: &Array) -> Result<Array> {
            float_unary(UnaryOp::$op, a)
        }
    )*};
}

float_unary_ops! {
    /// `e^x`.
    exp => Exp: 1.0 -> 2.7182817;
    /// `e^x - 1`, accurate for small x.
    expm1 => Expm1: 1e-5 -> 1.000005e-5;
    /// Natural logarithm.
    log => Log: 2.0 -> 0.6931472;
    /// `log(1 + x)`, accurate for small x.
    log1p => Log1p: 1e-5 -> 9.99995e-6;
    /// Base-2 logarithm.
    log2 => Log2: 8.0 -> 3.0;
    /// Square root.
    sqrt => Sqrt: 4.0 -> 2.0;
    /// `1 / sqrt(x)`.
    rsqrt => Rsqrt: 4.0 -> 0.5;
    /// `1 / x`.
    reciprocal => Reciprocal: 4.0 -> 0.25;
    /// Sine (radians).
    sin => Sin: 0.5 -> 0.47942555;
    /// Cosine (radians).
    cos => Cos: 0.5 -> 0.87758255;
    /// Tangent (radians).
    tan => Tan: 0.5 -> 0.5463025;
    /// Hyperbolic tangent.
    tanh => Tanh: 0.5 -> 0.46211717;
    /// Hyperbolic sine.
    sinh => Sinh: 0.5 -> 0.5210953;
    /// Hyperbolic cosine.
    cosh => Cosh: 0.5 -> 1.127626;
    /// Inverse sine.
    arcsin => Asin: 0.5 -> 0.5235988;
    /// Inverse cosine.
    arccos => Acos: 0.5 -> 1.0471976;
    /// Inverse tangent.
    arctan => Atan: 1.0 -> 0.7853982;
    /// Logistic sigmoid `1 / (1 + e^-x)`.
    sigmoid => Sigmoid: 2.0 -> 0.8807971;
    /// The error function.
    erf => Erf: 0.5 -> 0.5204999;
    /// Inverse of the error function on (-1, 1).
    erfinv => Erfinv: 0.5 -> 0.47693628;
}

/// Base-10 logarithm, as `log(x) / ln(10)`. Same shape; floats keep their dtype, integer and bool
/// inputs give float32. Never `Err`; non-positive inputs give NaN or -inf.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[100i32, 1000], &[2]).unwrap();
/// let l = ops::log10(&a).unwrap();
/// assert_eq!(l.dtype(), Dtype::F32);
/// let v = l.to_vec::<f32>().unwrap();
/// assert!((v[0] - 2.0).abs() < 1e-6 && (v[1] - 3.0).abs() < 1e-6);
/// ```
pub fn log10(a: &Array) -> Result<Array> {
    let l = log(a)?;
    multiply(&l, &Array::scalar_of(std::f64::consts::LOG10_E, l.dtype()))
}

fn no_bool(op: &'static str, a: &Array) -> Result<()> {
    if a.dtype() == Dtype::Bool {
        return Err(Error::Dtype {
            op,
            dtype: Dtype::Bool,
            msg: "not defined for booleans".into(),
        });
    }
    Ok(())
}

/// Absolute value; same shape and dtype (unsigned and bool inputs are returned as they are; the
/// most negative signed integer wraps to itself). Never `Err`.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[-3i32, 0, 4], &[3]).unwrap();
/// let r = ops::abs(&a).unwrap();
/// assert_eq!(r.dtype(), Dtype::I32);
/// assert_eq!(r.to_vec::<i32>().unwrap(), vec![3, 0, 4]);
/// ```
pub fn abs(a: &Array) -> Result<Array> {
    if matches!(a.dtype().kind(), Kind::Bool | Kind::Unsigned) {
        return Ok(a.clone());
    }
    Ok(unary_node(UnaryOp::Abs, a, a.dtype()))
}

/// `-x`; same shape and dtype (integers wrap, unsigned ones too). `Err` for bool (use
/// [`logical_not`]).
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, -2], &[2]).unwrap();
/// assert_eq!(ops::negative(&a).unwrap().to_vec::<i32>().unwrap(), vec![-1, 2]);
/// assert!(ops::negative(&Array::scalar(true)).is_err());
/// ```
pub fn negative(a: &Array) -> Result<Array> {
    no_bool("negative", a)?;
    Ok(unary_node(UnaryOp::Neg, a, a.dtype()))
}

/// -1, 0 or 1 by sign, in the input's dtype and shape (NaN stays NaN; bool is returned as it is).
/// Never `Err`.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[-2.5f32, 0.0, 3.0], &[3]).unwrap();
/// assert_eq!(ops::sign(&a).unwrap().to_vec::<f32>().unwrap(), vec![-1.0, 0.0, 1.0]);
/// ```
pub fn sign(a: &Array) -> Result<Array> {
    if a.dtype() == Dtype::Bool {
        return Ok(a.clone());
    }
    Ok(unary_node(UnaryOp::Sign, a, a.dtype()))
}

/// `x * x`; same shape and dtype (integers wrap; bool is returned as it is: `x & x == x`). Never
/// `Err`.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[-3i32, 4], &[2]).unwrap();
/// assert_eq!(ops::square(&a).unwrap().to_vec::<i32>().unwrap(), vec![9, 16]);
/// ```
pub fn square(a: &Array) -> Result<Array> {
    if a.dtype() == Dtype::Bool {
        return Ok(a.clone());
    }
    Ok(unary_node(UnaryOp::Square, a, a.dtype()))
}

fn rounding(op: UnaryOp, a: &Array) -> Result<Array> {
    if !a.dtype().is_float() {
        return Ok(a.clone());
    }
    Ok(unary_node(op, a, a.dtype()))
}

/// Largest integer `<= x`; same shape and dtype (integer and bool inputs are returned unchanged).
/// Never `Err`.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[-1.5f32, 2.5], &[2]).unwrap();
/// assert_eq!(ops::floor(&a).unwrap().to_vec::<f32>().unwrap(), vec![-2.0, 2.0]);
/// ```
pub fn floor(a: &Array) -> Result<Array> {
    rounding(UnaryOp::Floor, a)
}

/// Smallest integer `>= x`; same shape and dtype (integer and bool inputs are returned unchanged).
/// Never `Err`.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[-1.5f32, 2.25], &[2]).unwrap();
/// assert_eq!(ops::ceil(&a).unwrap().to_vec::<f32>().unwrap(), vec![-1.0, 3.0]);
/// ```
pub fn ceil(a: &Array) -> Result<Array> {
    rounding(UnaryOp::Ceil, a)
}

/// Round half to even; same shape and dtype (integer and bool inputs are returned unchanged).
/// Never `Err`.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[0.5f32, 1.5, 2.5, -0.5], &[4]).unwrap();
/// assert_eq!(ops::round(&a).unwrap().to_vec::<f32>().unwrap(), vec![0.0, 2.0, 2.0, 0.0]);
/// ```
pub fn round(a: &Array) -> Result<Array> {
    rounding(UnaryOp::Round, a)
}

/// Round (half to even) to `decimals` places, as NumPy: `round(x * 10^d) / 10^d` (negative
/// `decimals` round to tens, hundreds...). Same shape and dtype; integer and bool inputs are
/// returned unchanged. Never `Err`.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1.25f32, -0.125], &[2]).unwrap();
/// assert_eq!(ops::round_decimals(&a, 1).unwrap().to_vec::<f32>().unwrap(), vec![1.2, -0.1]);
/// ```
pub fn round_decimals(a: &Array, decimals: i32) -> Result<Array> {
    if decimals == 0 || !a.dtype().is_float() {
        return round(a);
    }
    let s = Array::scalar_of(10f64.powi(decimals), a.dtype());
    divide(&round(&multiply(a, &s)?)?, &s)
}

/// True where NaN; same shape, bool output (integers and bool are never NaN). Never `Err`.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[1.0f32, f32::NAN], &[2]).unwrap();
/// let r = ops::isnan(&a).unwrap();
/// assert_eq!(r.dtype(), Dtype::Bool);
/// assert_eq!(r.to_vec::<bool>().unwrap(), vec![false, true]);
/// ```
pub fn isnan(a: &Array) -> Result<Array> {
    Ok(unary_node(UnaryOp::IsNan, a, Dtype::Bool))
}

/// True where ±inf; same shape, bool output (false for integers and bool). Never `Err`.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[f32::INFINITY, -f32::INFINITY, 1.0, f32::NAN], &[4]).unwrap();
/// assert_eq!(ops::isinf(&a).unwrap().to_vec::<bool>().unwrap(), vec![true, true, false, false]);
/// ```
pub fn isinf(a: &Array) -> Result<Array> {
    Ok(unary_node(UnaryOp::IsInf, a, Dtype::Bool))
}

/// True where neither NaN nor ±inf; same shape, bool output (true for integers and bool). Never
/// `Err`.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[f32::INFINITY, 1.0, f32::NAN], &[3]).unwrap();
/// assert_eq!(ops::isfinite(&a).unwrap().to_vec::<bool>().unwrap(), vec![false, true, false]);
/// ```
pub fn isfinite(a: &Array) -> Result<Array> {
    logical_not(&logical_or(&isnan(a)?, &isinf(a)?)?)
}

/// True where the input is zero/false; same shape, bool output, any input dtype. Never `Err`.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[0i32, 3], &[2]).unwrap();
/// let r = ops::logical_not(&a).unwrap();
/// assert_eq!(r.dtype(), Dtype::Bool);
/// assert_eq!(r.to_vec::<bool>().unwrap(), vec![true, false]);
/// ```
pub fn logical_not(a: &Array) -> Result<Array> {
    Ok(unary_node(UnaryOp::LogicalNot, a, Dtype::Bool))
}

/// Bitwise not of integers, logical not of bool; same shape and dtype. `Err` for float inputs.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[0i32, 5], &[2]).unwrap();
/// assert_eq!(ops::bitwise_invert(&a).unwrap().to_vec::<i32>().unwrap(), vec![-1, -6]);
/// let u = Array::from_slice(&[0u8, 15], &[2]).unwrap();
/// assert_eq!(ops::bitwise_invert(&u).unwrap().to_vec::<u8>().unwrap(), vec![255, 240]);
/// assert!(ops::bitwise_invert(&Array::scalar(1.0f32)).is_err());
/// ```
pub fn bitwise_invert(a: &Array) -> Result<Array> {
    if a.dtype().is_float() {
        return Err(Error::Dtype {
            op: "bitwise_invert",
            dtype: a.dtype(),
            msg: "needs integers or bool".into(),
        });
    }
    Ok(unary_node(UnaryOp::BitwiseNot, a, a.dtype()))
}

/// Identity in value (same shape and dtype, no copy); gradients do not flow through it: `grad`
/// treats the result as a constant. Never `Err`.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
/// assert_eq!(ops::stop_gradient(&a).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
/// ```
pub fn stop_gradient(a: &Array) -> Result<Array> {
    Ok(Array::lazy(
        Primitive::StopGradient,
        vec![a.clone()],
        a.shape().to_vec(),
        a.dtype(),
    ))
}

/// The dtype both operands of `op` are computed in, and the output dtype.
fn binary_dtypes(op: BinaryOp, a: Dtype, b: Dtype) -> Result<(Dtype, Dtype)> {
    use BinaryOp::*;
    let common = promote_types(a, b);
    let name = binary_name(op);
    let compute = match op {
        Div | Atan2 | LogAddExp => common.at_least_float(),
        BitAnd | BitOr | BitXor | Shl | Shr => {
            if common.is_float() {
                return Err(Error::Dtype {
                    op: name,
                    dtype: common,
                    msg: "needs integers or bool".into(),
                });
            }
            if matches!(op, Shl | Shr) && common == Dtype::Bool {
                Dtype::U8
            } else {
                common
            }
        }
        Sub if common == Dtype::Bool => {
            return Err(Error::Dtype {
                op: name,
                dtype: common,
                msg: "boolean subtract is not defined; use logical_xor".into(),
            });
        }
        FloorDiv | Rem | Pow if common == Dtype::Bool => Dtype::U8,
        _ => common,
    };
    let out = if op.returns_bool() {
        Dtype::Bool
    } else {
        compute
    };
    Ok((compute, out))
}

fn binary_name(op: BinaryOp) -> &'static str {
    use BinaryOp::*;
    match op {
        Add => "add",
        Sub => "subtract",
        Mul => "multiply",
        Div => "divide",
        FloorDiv => "floor_divide",
        Rem => "remainder",
        Pow => "power",
        Max => "maximum",
        Min => "minimum",
        Atan2 => "arctan2",
        LogAddExp => "logaddexp",
        Eq => "equal",
        Ne => "not_equal",
        Lt => "less",
        Le => "less_equal",
        Gt => "greater",
        Ge => "greater_equal",
        LogicalAnd => "logical_and",
        LogicalOr => "logical_or",
        BitAnd => "bitwise_and",
        BitOr => "bitwise_or",
        BitXor => "bitwise_xor",
        Shl => "left_shift",
        Shr => "right_shift",
    }
}

/// Builds the node of any [`BinaryOp`]: the named functions below ([`add`], [`less`], ...) call
/// this. Shapes broadcast (NumPy rules); dtypes promote ([`promote_types`]), then as the op
/// requires: float32 for integer division, `atan2` and `logaddexp`, bool for comparisons and
/// logical ops. `Err` if the shapes do not broadcast or the op rejects the dtype (float bitwise
/// ops, bool subtract).
/// ```
/// use tessera_core::{Array, Dtype, ops, primitive::BinaryOp};
/// let a = Array::from_slice(&[1i32, 2], &[2, 1]).unwrap();
/// let b = Array::from_slice(&[1i32, 2, 3], &[3]).unwrap();
/// let c = ops::binary(BinaryOp::Lt, &a, &b).unwrap();
/// assert_eq!((c.shape(), c.dtype()), (&[2usize, 3][..], Dtype::Bool));
/// assert_eq!(c.to_vec::<bool>().unwrap(), vec![false, true, true, false, false, true]);
/// assert!(ops::binary(BinaryOp::BitAnd, &Array::scalar(1.0f32), &a).is_err());
/// ```
pub fn binary(op: BinaryOp, a: &Array, b: &Array) -> Result<Array> {
    let (compute, out) = binary_dtypes(op, a.dtype(), b.dtype())?;
    let shape = super::broadcast_dims(binary_name(op), a.shape(), b.shape())?;
    let a = astype(a, compute)?;
    let b = astype(b, compute)?;
    Ok(Array::lazy(Primitive::Binary(op), [a, b], shape, out))
}

// Each entry: docs, `name => BinaryOp: (a, b) -> (out dtype, Rust type) = expected`, where `a`
// has 3 elements and `b` is a scalar (the doc example).
macro_rules! binary_ops {
    ($($(#[$doc:meta])* $name:ident => $op:ident:
        ($a:expr, $b:expr) -> ($dt:ident, $t:ty) = $e:expr;)*) => {$(
        $(#[$doc])*
        ///
        /// The output shape is the broadcast of the two shapes (NumPy rules, from the trailing
        /// dims); operands are first converted to the promoted dtype ([`promote_types`]). `Err`
        /// at the call if the shapes do not broadcast.
        /// ```
        /// use tessera_core::{Array, Dtype, ops};
        #[doc = concat!("let a = Array::from_slice(&", stringify!($a), ", &[3]).unwrap();")]
        #[doc = concat!("let b = Array::scalar(", stringify!($b), "); // 0-d: broadcasts")]
        #[doc = concat!("let c = ops::", stringify!($name), "(&a, &b).unwrap();")]
        #[doc = concat!("assert_eq!((c.shape(), c.dtype()), (&[3usize][..], Dtype::", stringify!($dt), "));")]
        #[doc = concat!("assert_eq!(c.to_vec::<", stringify!($t), ">().unwrap(), vec!", stringify!($e), ");")]
        /// ```
        pub fn $name(a: &Array, b: &Array) -> Result<Array> {
            binary(BinaryOp::$op, a, b)
        }
    )*};
}

binary_ops! {
    /// `a + b` in the promoted dtype (integers wrap).
    add => Add: ([1i32, 2, 3], 0.5f32) -> (F32, f32) = [1.5, 2.5, 3.5];
    /// `a - b` in the promoted dtype (integers wrap). `Err` for two bool operands.
    subtract => Sub: ([5i32, 0, -2], 3i32) -> (I32, i32) = [2, -3, -5];
    /// `a * b` in the promoted dtype (integers wrap).
    multiply => Mul: ([1.5f32, -2.0, 0.0], 2.0f32) -> (F32, f32) = [3.0, -4.0, 0.0];
    /// True division `a / b`; integer and bool operands give float32.
    divide => Div: ([1i32, 3, -4], 2i32) -> (F32, f32) = [0.5, 1.5, -2.0];
    /// Floor division, rounding toward -inf (integer division by zero gives 0), in the promoted
    /// dtype (bool operands compute in uint8).
    floor_divide => FloorDiv: ([7i32, -7, 6], 2i32) -> (I32, i32) = [3, -4, 3];
    /// Remainder with the sign of the divisor (Python's `%`), in the promoted dtype (bool
    /// operands compute in uint8).
    remainder => Rem: ([7i32, -7, 6], 3i32) -> (I32, i32) = [1, 2, 0];
    /// `a ** b` in the promoted dtype (bool operands compute in uint8).
    power => Pow: ([2i32, 3, -2], 3i32) -> (I32, i32) = [8, 27, -8];
    /// Element-wise maximum (NaN propagates), in the promoted dtype.
    maximum => Max: ([1i32, 2, 5], 2.5f32) -> (F32, f32) = [2.5, 2.5, 5.0];
    /// Element-wise minimum (NaN propagates), in the promoted dtype.
    minimum => Min: ([1i32, 2, 5], 2i32) -> (I32, i32) = [1, 2, 2];
    /// `atan(a / b)` in the right quadrant; integer and bool operands give float32.
    arctan2 => Atan2: ([1i32, 0, -1], 0i32) -> (F32, f32) =
        [std::f32::consts::FRAC_PI_2, 0.0, -std::f32::consts::FRAC_PI_2];
    /// `log(e^a + e^b)` without overflow; integer and bool operands give float32.
    logaddexp => LogAddExp: ([1000.0f32, 200.0, 100.0], 0.0f32) -> (F32, f32) = [1000.0, 200.0, 100.0];
    /// `a == b`, compared in the promoted dtype; bool output.
    equal => Eq: ([1i32, 2, 3], 2.0f32) -> (Bool, bool) = [false, true, false];
    /// `a != b`, compared in the promoted dtype; bool output.
    not_equal => Ne: ([1i32, 2, 3], 2i32) -> (Bool, bool) = [true, false, true];
    /// `a < b`, compared in the promoted dtype; bool output.
    less => Lt: ([1i32, 2, 3], 2.5f32) -> (Bool, bool) = [true, true, false];
    /// `a <= b`, compared in the promoted dtype; bool output.
    less_equal => Le: ([1i32, 2, 3], 2i32) -> (Bool, bool) = [true, true, false];
    /// `a > b`, compared in the promoted dtype; bool output.
    greater => Gt: ([1i32, 2, 3], 2i32) -> (Bool, bool) = [false, false, true];
    /// `a >= b`, compared in the promoted dtype; bool output.
    greater_equal => Ge: ([1i32, 2, 3], 2i32) -> (Bool, bool) = [false, true, true];
    /// Logical and of truth values (non-zero is true); bool output.
    logical_and => LogicalAnd: ([0i32, 1, 2], true) -> (Bool, bool) = [false, true, true];
    /// Logical or of truth values (non-zero is true); bool output.
    logical_or => LogicalOr: ([0i32, 1, 2], false) -> (Bool, bool) = [false, true, true];
    /// Bitwise and in the promoted dtype (integers or bool). `Err` for float operands.
    bitwise_and => BitAnd: ([12i32, 10, 7], 6i32) -> (I32, i32) = [4, 2, 6];
    /// Bitwise or in the promoted dtype (integers or bool). `Err` for float operands.
    bitwise_or => BitOr: ([12i32, 10, 7], 1i32) -> (I32, i32) = [13, 11, 7];
    /// Bitwise xor in the promoted dtype (integers or bool). `Err` for float operands.
    bitwise_xor => BitXor: ([12i32, 10, 7], 6i32) -> (I32, i32) = [10, 12, 1];
    /// `a << b` in the promoted dtype (bool operands compute in uint8); shifts of the width or
    /// more give 0. `Err` for float operands.
    left_shift => Shl: ([1i32, 3, -1], 2i32) -> (I32, i32) = [4, 12, -4];
    /// `a >> b` in the promoted dtype (bool operands compute in uint8); arithmetic for signed
    /// types. `Err` for float operands.
    right_shift => Shr: ([-8i32, 8, 7], 1i32) -> (I32, i32) = [-4, 4, 3];
}

/// Picks from `x` where `cond` is true (non-zero), else from `y`. The output shape is the broadcast
/// of all three; the dtype is the promotion of `x` and `y` (`cond` only gives truth values). `Err`
/// if the shapes do not broadcast.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let c = Array::from_slice(&[true, false], &[2]).unwrap();
/// let x = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
/// let y = Array::scalar(0i32);
/// let r = ops::where_(&c, &x, &y).unwrap();
/// assert_eq!(r.dtype(), Dtype::F32);
/// assert_eq!(r.to_vec::<f32>().unwrap(), vec![1.0, 0.0]);
/// ```
pub fn where_(cond: &Array, x: &Array, y: &Array) -> Result<Array> {
    let dt = promote_types(x.dtype(), y.dtype());
    let s = broadcast_shapes("where", cond.shape(), x.shape())?;
    let s = broadcast_shapes("where", &s, y.shape())?;
    let c = astype(cond, Dtype::Bool)?;
    Ok(Array::lazy(
        Primitive::Select,
        vec![c, astype(x, dt)?, astype(y, dt)?],
        s,
        dt,
    ))
}

/// Limits values to `[min, max]`; either bound may be omitted. Computed as [`maximum`] then
/// [`minimum`], so the bounds broadcast with `a` and the dtype is the promotion of `a` and the
/// bounds. `Err` when both bounds are `None` or the shapes do not broadcast.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[-1i32, 5, 10], &[3]).unwrap();
/// let r = ops::clip(&a, Some(&Array::scalar(0i32)), Some(&Array::scalar(7i32))).unwrap();
/// assert_eq!(r.dtype(), Dtype::I32);
/// assert_eq!(r.to_vec::<i32>().unwrap(), vec![0, 5, 7]);
/// assert!(ops::clip(&a, None, None).is_err());
/// ```
pub fn clip(a: &Array, min: Option<&Array>, max: Option<&Array>) -> Result<Array> {
    if min.is_none() && max.is_none() {
        return Err(Error::Invalid {
            op: "clip",
            msg: "give at least one of min and max".into(),
        });
    }
    let mut r = a.clone();
    if let Some(lo) = min {
        r = maximum(&r, lo)?;
    }
    if let Some(hi) = max {
        r = minimum(&r, hi)?;
    }
    Ok(r)
}

/// `|a - b| <= atol + rtol * |b|` element-wise (infinities are close only to the same infinity;
/// NaNs only with `equal_nan`). Compared in the promoted dtype (at least float32); the output is
/// bool with the broadcast shape. `Err` if the shapes do not broadcast.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[1.0f32, 2.0, f32::NAN], &[3]).unwrap();
/// let b = Array::from_slice(&[1.00001f32, 2.1, f32::NAN], &[3]).unwrap();
/// let c = ops::isclose(&a, &b, 1e-4, 0.0, false).unwrap();
/// assert_eq!(c.dtype(), Dtype::Bool);
/// assert_eq!(c.to_vec::<bool>().unwrap(), vec![true, false, false]);
/// let n = ops::isclose(&a, &b, 1e-4, 0.0, true).unwrap();
/// assert_eq!(n.to_vec::<bool>().unwrap(), vec![true, false, true]);
/// ```
pub fn isclose(a: &Array, b: &Array, rtol: f64, atol: f64, equal_nan: bool) -> Result<Array> {
    let dt = promote_types(a.dtype(), b.dtype()).at_least_float();
    let (a, b) = (astype(a, dt)?, astype(b, dt)?);
    let diff = abs(&subtract(&a, &b)?)?;
    let tol = add(
        &Array::scalar_of(atol, dt),
        &multiply(&Array::scalar_of(rtol, dt), &abs(&b)?)?,
    )?;
    // An infinity is close only to the same infinity (the tolerance would be infinite too).
    let inf = logical_or(&isinf(&a)?, &isinf(&b)?)?;
    let mut close = where_(&inf, &equal(&a, &b)?, &less_equal(&diff, &tol)?)?;
    if equal_nan {
        close = logical_or(&close, &logical_and(&isnan(&a)?, &isnan(&b)?)?)?;
    }
    Ok(close)
}

/// True when every element pair is close (see [`isclose`]): a 0-d bool array (true for empty
/// inputs). `Err` if the shapes do not broadcast.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
/// let b = Array::from_slice(&[1i32, 2], &[2]).unwrap();
/// let r = ops::allclose(&a, &b, 1e-5, 1e-8, false).unwrap();
/// assert_eq!(r.shape(), &[] as &[usize]);
/// assert!(r.item::<bool>().unwrap());
/// ```
pub fn allclose(a: &Array, b: &Array, rtol: f64, atol: f64, equal_nan: bool) -> Result<Array> {
    super::all(
        &isclose(a, b, rtol, atol, equal_nan)?,
        super::Axes::All,
        false,
    )
}

/// A 0-d scalar for `value` that combines with `like` without promoting it (weak typing): a float
/// `like` gives its own dtype; otherwise an integral value takes `like`'s integer dtype (int32 for
/// bool) and a fractional one float32. Never fails.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let h = Array::from_slice(&[1.0f32], &[1]).unwrap().astype(Dtype::F16).unwrap();
/// assert_eq!(ops::scalar_like(0.5, &h).dtype(), Dtype::F16);
/// let i = Array::from_slice(&[1u8], &[1]).unwrap();
/// assert_eq!(ops::scalar_like(3.0, &i).dtype(), Dtype::U8);
/// assert_eq!(ops::scalar_like(0.5, &i).dtype(), Dtype::F32);
/// assert_eq!(ops::scalar_like(2.0, &i).item::<u8>().unwrap(), 2);
/// ```
pub fn scalar_like(value: f64, like: &Array) -> Array {
    let dt = like.dtype();
    let integral = value.fract() == 0.0 && value.is_finite();
    let target = if dt.is_float() || (integral && dt != Dtype::Bool) {
        dt
    } else if integral {
        Dtype::I32
    } else {
        Dtype::F32
    };
    Array::scalar_of(value, target)
}
