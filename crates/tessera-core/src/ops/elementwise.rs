//! Element-wise ops: unary math, binary arithmetic and comparisons, `where`, `clip`, closeness.

use super::broadcast_shapes;
use crate::array::Array;
use crate::dtype::{Dtype, Kind, promote_types};
use crate::error::{Error, Result};
use crate::primitive::{BinaryOp, Primitive, UnaryOp};

/// Converts to `dtype` (lazily; the same array if it already has it). Float to integer truncates
/// toward zero and saturates; NaN becomes 0; anything to bool is `!= 0`.
/// ```
/// use tessera_core::{Array, Dtype};
/// let a = Array::from_slice(&[1.7f32, -2.5], &[2]).unwrap();
/// assert_eq!(a.astype(Dtype::I32).unwrap().to_vec::<i32>().unwrap(), vec![1, -2]);
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
    Array::lazy(
        Primitive::Unary(op),
        vec![a.clone()],
        a.shape().to_vec(),
        out,
    )
}

/// Float-only unary ops: integer and bool inputs are computed in float32.
fn float_unary(op: UnaryOp, a: &Array) -> Result<Array> {
    let a = astype(a, a.dtype().at_least_float())?;
    Ok(unary_node(op, &a, a.dtype()))
}

macro_rules! float_unary_ops {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {$(
        $(#[$doc])*
        ///
        /// Same shape as the input; integer and bool inputs are promoted to float32.
        pub fn $name(a: &Array) -> Result<Array> {
            float_unary(UnaryOp::$op, a)
        }
    )*};
}

float_unary_ops! {
    /// `e^x`.
    exp => Exp;
    /// `e^x - 1`, accurate for small x.
    expm1 => Expm1;
    /// Natural logarithm.
    log => Log;
    /// `log(1 + x)`, accurate for small x.
    log1p => Log1p;
    /// Base-2 logarithm.
    log2 => Log2;
    /// Square root.
    sqrt => Sqrt;
    /// `1 / sqrt(x)`.
    rsqrt => Rsqrt;
    /// `1 / x`.
    reciprocal => Reciprocal;
    /// Sine (radians).
    sin => Sin;
    /// Cosine (radians).
    cos => Cos;
    /// Tangent (radians).
    tan => Tan;
    /// Hyperbolic tangent.
    tanh => Tanh;
    /// Hyperbolic sine.
    sinh => Sinh;
    /// Hyperbolic cosine.
    cosh => Cosh;
    /// Inverse sine.
    arcsin => Asin;
    /// Inverse cosine.
    arccos => Acos;
    /// Inverse tangent.
    arctan => Atan;
    /// Logistic sigmoid `1 / (1 + e^-x)`.
    sigmoid => Sigmoid;
    /// The error function.
    erf => Erf;
    /// Inverse of the error function on (-1, 1).
    erfinv => Erfinv;
}

/// Log base 10, as `log(x) / ln(10)`.
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

/// Absolute value (same dtype; unsigned and bool inputs are returned as they are).
pub fn abs(a: &Array) -> Result<Array> {
    if matches!(a.dtype().kind(), Kind::Bool | Kind::Unsigned) {
        return Ok(a.clone());
    }
    Ok(unary_node(UnaryOp::Abs, a, a.dtype()))
}

/// `-x` (integers wrap).
pub fn negative(a: &Array) -> Result<Array> {
    no_bool("negative", a)?;
    Ok(unary_node(UnaryOp::Neg, a, a.dtype()))
}

/// -1, 0 or 1 by sign (NaN stays NaN; bool is returned as it is).
pub fn sign(a: &Array) -> Result<Array> {
    if a.dtype() == Dtype::Bool {
        return Ok(a.clone());
    }
    Ok(unary_node(UnaryOp::Sign, a, a.dtype()))
}

/// `x * x` (bool is returned as it is: `x & x == x`).
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

/// Largest integer <= x (integers unchanged).
pub fn floor(a: &Array) -> Result<Array> {
    rounding(UnaryOp::Floor, a)
}

/// Smallest integer >= x (integers unchanged).
pub fn ceil(a: &Array) -> Result<Array> {
    rounding(UnaryOp::Ceil, a)
}

/// Round half to even (integers unchanged).
pub fn round(a: &Array) -> Result<Array> {
    rounding(UnaryOp::Round, a)
}

/// Round to `decimals` places: `round(x * 10^d) / 10^d`, as NumPy.
pub fn round_decimals(a: &Array, decimals: i32) -> Result<Array> {
    if decimals == 0 || !a.dtype().is_float() {
        return round(a);
    }
    let s = Array::scalar_of(10f64.powi(decimals), a.dtype());
    divide(&round(&multiply(a, &s)?)?, &s)
}

/// True where NaN (bool output).
pub fn isnan(a: &Array) -> Result<Array> {
    Ok(unary_node(UnaryOp::IsNan, a, Dtype::Bool))
}

/// True where ±inf (bool output).
pub fn isinf(a: &Array) -> Result<Array> {
    Ok(unary_node(UnaryOp::IsInf, a, Dtype::Bool))
}

/// True where finite.
pub fn isfinite(a: &Array) -> Result<Array> {
    logical_not(&logical_or(&isnan(a)?, &isinf(a)?)?)
}

/// True where the input is zero/false (bool output).
pub fn logical_not(a: &Array) -> Result<Array> {
    Ok(unary_node(UnaryOp::LogicalNot, a, Dtype::Bool))
}

/// Bitwise not of integers; logical not of bool.
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

/// Identity in value; gradients do not flow through it (transforms treat it as a constant).
pub fn stop_gradient(a: &Array) -> Result<Array> {
    Ok(a.clone())
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

/// Builds a binary node: promotes dtypes, broadcasts shapes (by strides, no copies).
pub fn binary(op: BinaryOp, a: &Array, b: &Array) -> Result<Array> {
    let (compute, out) = binary_dtypes(op, a.dtype(), b.dtype())?;
    let shape = broadcast_shapes(binary_name(op), a.shape(), b.shape())?;
    let a = astype(a, compute)?;
    let b = astype(b, compute)?;
    Ok(Array::lazy(Primitive::Binary(op), vec![a, b], shape, out))
}

macro_rules! binary_ops {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {$(
        $(#[$doc])*
        ///
        /// Broadcasts the shapes and promotes the dtypes (MLX table).
        pub fn $name(a: &Array, b: &Array) -> Result<Array> {
            binary(BinaryOp::$op, a, b)
        }
    )*};
}

binary_ops! {
    /// `a + b`.
    add => Add;
    /// `a - b`.
    subtract => Sub;
    /// `a * b`.
    multiply => Mul;
    /// True division `a / b` (integers give float32).
    divide => Div;
    /// Floor division (rounds toward -inf; integer division by zero gives 0).
    floor_divide => FloorDiv;
    /// Remainder with the sign of the divisor (Python's `%`).
    remainder => Rem;
    /// `a ** b`.
    power => Pow;
    /// Element-wise maximum (NaN propagates).
    maximum => Max;
    /// Element-wise minimum (NaN propagates).
    minimum => Min;
    /// `atan(a / b)` in the right quadrant.
    arctan2 => Atan2;
    /// `log(e^a + e^b)` without overflow.
    logaddexp => LogAddExp;
    /// `a == b` (bool).
    equal => Eq;
    /// `a != b` (bool).
    not_equal => Ne;
    /// `a < b` (bool).
    less => Lt;
    /// `a <= b` (bool).
    less_equal => Le;
    /// `a > b` (bool).
    greater => Gt;
    /// `a >= b` (bool).
    greater_equal => Ge;
    /// Logical and of truth values (bool).
    logical_and => LogicalAnd;
    /// Logical or of truth values (bool).
    logical_or => LogicalOr;
    /// Bitwise and (integers, bool).
    bitwise_and => BitAnd;
    /// Bitwise or (integers, bool).
    bitwise_or => BitOr;
    /// Bitwise xor (integers, bool).
    bitwise_xor => BitXor;
    /// `a << b` (shifts of the width or more give 0).
    left_shift => Shl;
    /// `a >> b` (arithmetic for signed types).
    right_shift => Shr;
}

/// Picks from `x` where `cond` is true, else from `y`; all three broadcast together.
/// ```
/// use tessera_core::{Array, ops};
/// let c = Array::from_slice(&[true, false], &[2]).unwrap();
/// let x = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
/// let y = Array::scalar(0.0f32);
/// assert_eq!(ops::where_(&c, &x, &y).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 0.0]);
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

/// Limits values to `[min, max]`; either bound may be omitted.
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

/// `|a - b| <= atol + rtol * |b|` element-wise (infinities of one sign are close; NaNs only with
/// `equal_nan`).
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

/// True (a 0-d bool array) when every element pair is close (see [`isclose`]).
pub fn allclose(a: &Array, b: &Array, rtol: f64, atol: f64, equal_nan: bool) -> Result<Array> {
    super::all(
        &isclose(a, b, rtol, atol, equal_nan)?,
        super::Axes::All,
        false,
    )
}

/// A scalar for `value` that combines with `like` without promoting it (weak typing): a float
/// value takes a float array's dtype (else float32); an integer value takes the array's dtype.
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
