//! Activation functions, written with ops (so they differentiate and batch).

use tessera_core::{Array, Result, ops};

fn s(v: f64, like: &Array) -> Array {
    Array::scalar_of(v, like.dtype())
}

/// `max(x, 0)`.
pub fn relu(x: &Array) -> Result<Array> {
    ops::maximum(x, &s(0.0, x))
}

/// `x * sigmoid(x)`.
pub fn silu(x: &Array) -> Result<Array> {
    ops::multiply(x, &ops::sigmoid(x)?)
}

/// Exact GELU: `x * (1 + erf(x / sqrt 2)) / 2`.
pub fn gelu(x: &Array) -> Result<Array> {
    let e = ops::erf(&ops::multiply(x, &s(std::f64::consts::FRAC_1_SQRT_2, x))?)?;
    ops::multiply(&ops::multiply(x, &s(0.5, x))?, &ops::add(&e, &s(1.0, x))?)
}

/// GELU with the tanh approximation: `x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`,
/// computed as `x * (c + c * 0.044715 * x^2)` inside the tanh (multiplies, not `pow`).
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

/// Hyperbolic tangent.
pub fn tanh(x: &Array) -> Result<Array> {
    ops::tanh(x)
}
