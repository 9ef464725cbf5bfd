//! Parameter initialisers: arrays of a given shape and float dtype drawn from a random key, with
//! PyTorch's `torch.nn.init` rules (`calculate_gain`, `_calculate_fan_in_and_fan_out`).
//!
//! Fans follow tessera's layouts: a linear weight is `(out, in)` as PyTorch's, and a
//! convolution weight is channels-last `(C_out, K..., C_in)` (MLX's layout, see
//! [`crate::conv`]), so `fan_in = C_in * prod(K)` and `fan_out = C_out * prod(K)`: the
//! receptive field is the product of the middle dimensions. (PyTorch's `(C_out, C_in, K...)`
//! gives the same fans.)

use tessera_core::{Array, Dtype, Error, Result, ops, random};

fn invalid<T>(op: &'static str, msg: String) -> Result<T> {
    Err(Error::Invalid { op, msg })
}

fn check_dtype(op: &'static str, dtype: Dtype) -> Result<()> {
    if !dtype.is_float() {
        return Err(Error::Dtype {
            op,
            dtype,
            msg: "initialisers need a float dtype".into(),
        });
    }
    Ok(())
}

/// A nonlinearity for [`calculate_gain`], as PyTorch's names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Nonlinearity {
    /// `linear`, `conv1d`/`conv2d`/`conv3d`, `conv_transpose*`: gain 1.
    Linear,
    /// `sigmoid`: gain 1.
    Sigmoid,
    /// `tanh`: gain 5/3.
    Tanh,
    /// `relu`: gain sqrt(2).
    Relu,
    /// `leaky_relu` with this negative slope (PyTorch's default 0.01):
    /// gain `sqrt(2 / (1 + slope^2))`.
    LeakyRelu(f64),
    /// `selu`: gain 3/4.
    Selu,
}

/// The recommended gain of a nonlinearity. PyTorch: `torch.nn.init.calculate_gain`.
pub fn calculate_gain(nonlinearity: Nonlinearity) -> f64 {
    match nonlinearity {
        Nonlinearity::Linear | Nonlinearity::Sigmoid => 1.0,
        Nonlinearity::Tanh => 5.0 / 3.0,
        Nonlinearity::Relu => std::f64::consts::SQRT_2,
        Nonlinearity::LeakyRelu(slope) => (2.0 / (1.0 + slope * slope)).sqrt(),
        Nonlinearity::Selu => 0.75,
    }
}

/// Which fan the Kaiming initialisers scale by (PyTorch's `mode=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FanMode {
    /// Preserves the variance of the activations in the forward pass (PyTorch's default).
    #[default]
    FanIn,
    /// Preserves the variance of the gradients in the backward pass.
    FanOut,
}

/// `(fan_in, fan_out)` of a weight shape: `(out, in)` gives `(in, out)`, and
/// `(C_out, K..., C_in)` gives `(C_in * prod(K), C_out * prod(K))`. PyTorch:
/// `torch.nn.init._calculate_fan_in_and_fan_out` (on its `(C_out, C_in, K...)` layout). `Err`
/// for fewer than two dimensions.
pub fn fan_in_and_fan_out(shape: &[usize]) -> Result<(usize, usize)> {
    if shape.len() < 2 {
        return invalid(
            "fan_in_and_fan_out",
            format!(
                "fan in and fan out need at least 2 dimensions, got shape {shape:?} \
                 (as PyTorch's _calculate_fan_in_and_fan_out)"
            ),
        );
    }
    let n = shape.len();
    let receptive: usize = shape[1..n - 1].iter().product();
    Ok((shape[n - 1] * receptive, shape[0] * receptive))
}

/// Every element `value`. PyTorch: `torch.nn.init.constant_`. `Err` for a non-float dtype.
pub fn constant(shape: &[usize], dtype: Dtype, value: f64) -> Result<Array> {
    check_dtype("init::constant", dtype)?;
    // A real buffer, not a broadcast view, so it can be updated in place like any parameter.
    ops::contiguous(&ops::full(shape, value, dtype)?)
}

/// Normal values `N(mean, std^2)`. PyTorch: `torch.nn.init.normal_` (defaults 0 and 1). `Err`
/// for a non-float dtype, a negative or non-finite `std`, or an invalid key.
pub fn normal(shape: &[usize], dtype: Dtype, mean: f64, std: f64, key: &Array) -> Result<Array> {
    check_dtype("init::normal", dtype)?;
    if !(std >= 0.0 && std.is_finite() && mean.is_finite()) {
        return invalid(
            "init::normal",
            format!("needs a finite mean and a finite std >= 0, got {mean}, {std}"),
        );
    }
    random::normal(shape, dtype, mean, std, Some(key))
}

/// Uniform values in `[low, high)`. PyTorch: `torch.nn.init.uniform_` (defaults 0 and 1). `Err`
/// for a non-float dtype, `high <= low` or non-finite bounds, or an invalid key.
pub fn uniform(shape: &[usize], dtype: Dtype, low: f64, high: f64, key: &Array) -> Result<Array> {
    check_dtype("init::uniform", dtype)?;
    random::uniform(low, high, shape, dtype, Some(key))
}

fn symmetric_uniform(
    op: &'static str,
    shape: &[usize],
    dtype: Dtype,
    bound: f64,
    key: &Array,
) -> Result<Array> {
    check_dtype(op, dtype)?;
    if bound == 0.0 {
        return constant(shape, dtype, 0.0);
    }
    if !(bound > 0.0 && bound.is_finite()) {
        return invalid(
            op,
            format!("the bound {bound} for shape {shape:?} is not finite and > 0"),
        );
    }
    random::uniform(-bound, bound, shape, dtype, Some(key))
}

fn check_gain(op: &'static str, gain: f64) -> Result<()> {
    if !(gain >= 0.0 && gain.is_finite()) {
        return invalid(op, format!("gain must be finite and >= 0, got {gain}"));
    }
    Ok(())
}

fn fans(op: &'static str, shape: &[usize]) -> Result<(usize, usize)> {
    let (fi, fo) = fan_in_and_fan_out(shape).map_err(|_| Error::Invalid {
        op,
        msg: format!("needs a weight with at least 2 dimensions, got shape {shape:?}"),
    })?;
    if fi == 0 || fo == 0 {
        return invalid(op, format!("the shape {shape:?} has a zero fan"));
    }
    Ok((fi, fo))
}

/// Glorot/Xavier uniform: `U(-a, a)` with `a = gain * sqrt(6 / (fan_in + fan_out))`. PyTorch:
/// `torch.nn.init.xavier_uniform_(w, gain)`. `Err` for fewer than 2 dimensions, a zero fan, a
/// negative gain or a non-float dtype.
pub fn glorot_uniform(shape: &[usize], dtype: Dtype, gain: f64, key: &Array) -> Result<Array> {
    const OP: &str = "init::glorot_uniform";
    check_gain(OP, gain)?;
    let (fi, fo) = fans(OP, shape)?;
    let bound = gain * (6.0 / (fi + fo) as f64).sqrt();
    symmetric_uniform(OP, shape, dtype, bound, key)
}

/// Glorot/Xavier normal: `N(0, std^2)` with `std = gain * sqrt(2 / (fan_in + fan_out))`.
/// PyTorch: `torch.nn.init.xavier_normal_(w, gain)`. `Err` as [`glorot_uniform`].
pub fn glorot_normal(shape: &[usize], dtype: Dtype, gain: f64, key: &Array) -> Result<Array> {
    const OP: &str = "init::glorot_normal";
    check_gain(OP, gain)?;
    check_dtype(OP, dtype)?;
    let (fi, fo) = fans(OP, shape)?;
    let std = gain * (2.0 / (fi + fo) as f64).sqrt();
    random::normal(shape, dtype, 0.0, std, Some(key))
}

/// Alias of [`glorot_uniform`] (PyTorch's name).
pub fn xavier_uniform(shape: &[usize], dtype: Dtype, gain: f64, key: &Array) -> Result<Array> {
    glorot_uniform(shape, dtype, gain, key)
}

/// Alias of [`glorot_normal`] (PyTorch's name).
pub fn xavier_normal(shape: &[usize], dtype: Dtype, gain: f64, key: &Array) -> Result<Array> {
    glorot_normal(shape, dtype, gain, key)
}

fn kaiming_std(
    op: &'static str,
    shape: &[usize],
    mode: FanMode,
    nonlinearity: Nonlinearity,
) -> Result<f64> {
    let (fi, fo) = fans(op, shape)?;
    let fan = match mode {
        FanMode::FanIn => fi,
        FanMode::FanOut => fo,
    };
    Ok(calculate_gain(nonlinearity) / (fan as f64).sqrt())
}

/// He/Kaiming uniform: `U(-b, b)` with `b = gain * sqrt(3 / fan)`, `gain =
/// calculate_gain(nonlinearity)` and `fan` chosen by `mode`. PyTorch:
/// `torch.nn.init.kaiming_uniform_(w, a, mode, nonlinearity)` (its `a` is the slope of
/// [`Nonlinearity::LeakyRelu`]). `Err` for fewer than 2 dimensions, a zero fan or a non-float
/// dtype.
pub fn he_uniform(
    shape: &[usize],
    dtype: Dtype,
    mode: FanMode,
    nonlinearity: Nonlinearity,
    key: &Array,
) -> Result<Array> {
    const OP: &str = "init::he_uniform";
    let bound = 3f64.sqrt() * kaiming_std(OP, shape, mode, nonlinearity)?;
    symmetric_uniform(OP, shape, dtype, bound, key)
}

/// He/Kaiming normal: `N(0, std^2)` with `std = gain / sqrt(fan)`. PyTorch:
/// `torch.nn.init.kaiming_normal_(w, a, mode, nonlinearity)`. `Err` as [`he_uniform`].
pub fn he_normal(
    shape: &[usize],
    dtype: Dtype,
    mode: FanMode,
    nonlinearity: Nonlinearity,
    key: &Array,
) -> Result<Array> {
    const OP: &str = "init::he_normal";
    check_dtype(OP, dtype)?;
    let std = kaiming_std(OP, shape, mode, nonlinearity)?;
    random::normal(shape, dtype, 0.0, std, Some(key))
}

/// Alias of [`he_uniform`] (PyTorch's name).
pub fn kaiming_uniform(
    shape: &[usize],
    dtype: Dtype,
    mode: FanMode,
    nonlinearity: Nonlinearity,
    key: &Array,
) -> Result<Array> {
    he_uniform(shape, dtype, mode, nonlinearity, key)
}

/// Alias of [`he_normal`] (PyTorch's name).
pub fn kaiming_normal(
    shape: &[usize],
    dtype: Dtype,
    mode: FanMode,
    nonlinearity: Nonlinearity,
    key: &Array,
) -> Result<Array> {
    he_normal(shape, dtype, mode, nonlinearity, key)
}
