//! Activation functions, written with public ops (so they differentiate, batch under `vmap` and
//! compile). Each doc names the PyTorch function it matches; the derivatives agree with
//! PyTorch's at the kinks too (e.g. `relu'(0) = 0`, `leaky_relu'(0) = slope`).
//!
//! Integer and bool inputs are computed in float32 (the new functions; the older `relu`, `silu`,
//! `gelu`, `gelu_tanh` keep the input dtype for their constants as before).

use tessera_core::ops::{self, SplitAt};
use tessera_core::{Array, Error, Result};

fn s(v: f64, like: &Array) -> Array {
    Array::scalar_of(v, like.dtype())
}

/// `x` in at least float32 (integer and bool inputs become float32).
fn float(x: &Array) -> Result<Array> {
    x.astype(x.dtype().at_least_float())
}

/// `max(x, 0)`; the derivative at 0 is 0 and NaN passes through. PyTorch: `F.relu`.
pub fn relu(x: &Array) -> Result<Array> {
    // `where` rather than `maximum`: the derivative of `maximum` splits a tie (0.5 at 0).
    ops::where_(&ops::less_equal(x, &s(0.0, x))?, &s(0.0, x), x)
}

/// `min(max(x, 0), 6)`; the derivative is 1 strictly inside (0, 6), else 0. PyTorch: `F.relu6`.
pub fn relu6(x: &Array) -> Result<Array> {
    let x = float(x)?;
    let upper = ops::where_(&ops::greater_equal(&x, &s(6.0, &x))?, &s(6.0, &x), &x)?;
    ops::where_(&ops::less_equal(&x, &s(0.0, &x))?, &s(0.0, &x), &upper)
}

/// `x` where `x > 0`, else `negative_slope * x`. PyTorch: `F.leaky_relu(x, negative_slope)`
/// (default slope 0.01).
pub fn leaky_relu(x: &Array, negative_slope: f64) -> Result<Array> {
    let x = float(x)?;
    ops::where_(
        &ops::greater(&x, &s(0.0, &x))?,
        &x,
        &ops::multiply(&x, &s(negative_slope, &x))?,
    )
}

/// `x` where `x > 0`, else `alpha * (exp(x) - 1)`. PyTorch: `F.elu(x, alpha)` (default 1.0).
pub fn elu(x: &Array, alpha: f64) -> Result<Array> {
    elu_scaled(&float(x)?, alpha, 1.0)
}

/// `scale * elu(x, alpha)` (the exponential branch sees `min(x, 0)`, so large `x` cannot
/// overflow into the derivative).
fn elu_scaled(x: &Array, alpha: f64, scale: f64) -> Result<Array> {
    let pos = ops::greater(x, &s(0.0, x))?;
    let neg = ops::where_(&pos, &s(0.0, x), x)?;
    let e = ops::multiply(&ops::expm1(&neg)?, &s(alpha * scale, x))?;
    let p = if scale == 1.0 {
        x.clone()
    } else {
        ops::multiply(x, &s(scale, x))?
    };
    ops::where_(&pos, &p, &e)
}

/// SELU's `alpha` (PyTorch's constant).
pub const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
/// SELU's `scale` (PyTorch's constant).
pub const SELU_SCALE: f64 = 1.050_700_987_355_480_5;

/// `scale * (x if x > 0 else alpha * (exp(x) - 1))` with [`SELU_ALPHA`] and [`SELU_SCALE`].
/// PyTorch: `F.selu`.
pub fn selu(x: &Array) -> Result<Array> {
    elu_scaled(&float(x)?, SELU_ALPHA, SELU_SCALE)
}

/// `x * sigmoid(x)`. PyTorch: `F.silu`.
pub fn silu(x: &Array) -> Result<Array> {
    ops::multiply(x, &ops::sigmoid(x)?)
}

/// Exact GELU: `x * (1 + erf(x / sqrt 2)) / 2`. PyTorch: `F.gelu(x)` (`approximate="none"`).
pub fn gelu(x: &Array) -> Result<Array> {
    let e = ops::erf(&ops::multiply(x, &s(std::f64::consts::FRAC_1_SQRT_2, x))?)?;
    ops::multiply(&ops::multiply(x, &s(0.5, x))?, &ops::add(&e, &s(1.0, x))?)
}

/// GELU with the tanh approximation: `x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`,
/// computed as `x * (c + c * 0.044715 * x^2)` inside the tanh (multiplies, not `pow`).
/// PyTorch: `F.gelu(x, approximate="tanh")`.
pub fn gelu_tanh(x: &Array) -> Result<Array> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let inner = ops::multiply(
        x,
        &ops::add(
            &s(c, x),
            &ops::multiply(&s(c * 0.044715, x), &ops::square(x)?)?,
        )?,
    )?;
    ops::multiply(
        &ops::multiply(x, &s(0.5, x))?,
        &ops::add(&ops::tanh(&inner)?, &s(1.0, x))?,
    )
}

/// Hyperbolic tangent. PyTorch: `torch.tanh`.
pub fn tanh(x: &Array) -> Result<Array> {
    ops::tanh(x)
}

/// Logistic sigmoid `1 / (1 + exp(-x))`. PyTorch: `torch.sigmoid`.
pub fn sigmoid(x: &Array) -> Result<Array> {
    ops::sigmoid(x)
}

/// `log(1 + exp(beta * x)) / beta`, and `x` itself where `beta * x > threshold` (for numerical
/// stability, as PyTorch). Computed as `logaddexp(beta * x, 0) / beta`, so it neither overflows
/// nor loses the derivative `sigmoid(beta * x)` for large `|x|`. PyTorch:
/// `F.softplus(x, beta, threshold)` (defaults 1.0 and 20.0). `Err` when `beta` is 0 or not
/// finite.
pub fn softplus(x: &Array, beta: f64, threshold: f64) -> Result<Array> {
    if beta == 0.0 || !beta.is_finite() {
        return Err(Error::Invalid {
            op: "softplus",
            msg: format!(
                "beta must be finite and non-zero, got {beta} (input {:?})",
                x.shape()
            ),
        });
    }
    let x = float(x)?;
    let z = if beta == 1.0 {
        x.clone()
    } else {
        ops::multiply(&x, &s(beta, &x))?
    };
    let sp = ops::logaddexp(&z, &s(0.0, &x))?;
    let sp = if beta == 1.0 {
        sp
    } else {
        ops::multiply(&sp, &s(1.0 / beta, &x))?
    };
    ops::where_(&ops::greater(&z, &s(threshold, &x))?, &x, &sp)
}

/// `x * tanh(softplus(x))` (softplus without a threshold, as PyTorch's kernel). PyTorch:
/// `F.mish`.
pub fn mish(x: &Array) -> Result<Array> {
    let x = float(x)?;
    let sp = ops::logaddexp(&x, &s(0.0, &x))?;
    ops::multiply(&x, &ops::tanh(&sp)?)
}

/// `x / (1 + |x|)`. PyTorch: `F.softsign`.
pub fn softsign(x: &Array) -> Result<Array> {
    let x = float(x)?;
    ops::divide(&x, &ops::add(&ops::abs(&x)?, &s(1.0, &x))?)
}

/// `x * relu6(x + 3) / 6`: 0 up to -3, `x (x + 3) / 6` on (-3, 3), `x` from 3 on; the
/// derivative is `x / 3 + 1/2` on the open interval (-3, 3), 0 at -3 and 1 at 3, as PyTorch's
/// (2.x). PyTorch: `F.hardswish`.
pub fn hardswish(x: &Array) -> Result<Array> {
    let x = float(x)?;
    let mid = ops::multiply(
        &ops::multiply(&x, &ops::add(&x, &s(3.0, &x))?)?,
        &s(1.0 / 6.0, &x),
    )?;
    let upper = ops::where_(&ops::less(&x, &s(3.0, &x))?, &mid, &x)?;
    ops::where_(&ops::less_equal(&x, &s(-3.0, &x))?, &s(0.0, &x), &upper)
}

/// Gated linear unit: splits `x` in two halves `a`, `b` along `axis` and returns
/// `a * sigmoid(b)` (the axis halves). PyTorch: `F.glu(x, dim)` (default `dim=-1`). `Err` when
/// the axis is out of range or its size is odd.
pub fn glu(x: &Array, axis: isize) -> Result<Array> {
    let ax = ops::normalize_axis("glu", axis, x.ndim())?;
    let n = x.shape()[ax];
    if !n.is_multiple_of(2) {
        return Err(Error::Invalid {
            op: "glu",
            msg: format!(
                "axis {axis} of the input {:?} has odd size {n}; it must split in two halves",
                x.shape()
            ),
        });
    }
    let x = float(x)?;
    let parts = ops::split(&x, SplitAt::Sections(2), ax as isize)?;
    ops::multiply(&parts[0], &ops::sigmoid(&parts[1])?)
}
