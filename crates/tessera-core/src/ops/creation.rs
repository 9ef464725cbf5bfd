//! Creation ops. Constant fills are a broadcast view of one scalar (no memory until something is
//! written), as in MLX.

use super::{broadcast_to, check_shape_size, expand_dims};
use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Result, invalid};
use crate::primitive::Primitive;

/// An array of `shape` filled with `value` (converted to `dtype`).
/// ```
/// use tessera_core::{ops, Dtype};
/// let a = ops::full(&[2, 2], 7.0, Dtype::I32).unwrap();
/// assert_eq!(a.to_vec::<i32>().unwrap(), vec![7; 4]);
/// ```
pub fn full(shape: &[usize], value: f64, dtype: Dtype) -> Result<Array> {
    check_shape_size("full", shape)?;
    broadcast_to(&Array::scalar_of(value, dtype), shape)
}

/// `full` with the value taken from a 0-d (or broadcastable) array.
pub fn full_like_array(shape: &[usize], value: &Array) -> Result<Array> {
    check_shape_size("full", shape)?;
    broadcast_to(value, shape)
}

pub fn zeros(shape: &[usize], dtype: Dtype) -> Result<Array> {
    full(shape, 0.0, dtype)
}

pub fn ones(shape: &[usize], dtype: Dtype) -> Result<Array> {
    full(shape, 1.0, dtype)
}

pub fn zeros_like(a: &Array) -> Result<Array> {
    zeros(a.shape(), a.dtype())
}

pub fn ones_like(a: &Array) -> Result<Array> {
    ones(a.shape(), a.dtype())
}

pub fn full_like(a: &Array, value: f64) -> Result<Array> {
    full(a.shape(), value, a.dtype())
}

/// `start, start + step, ...` up to (not including) `stop`, as NumPy's `arange`.
/// ```
/// use tessera_core::{ops, Dtype};
/// assert_eq!(ops::arange(0.0, 5.0, 2.0, Dtype::I32).unwrap().to_vec::<i32>().unwrap(), vec![0, 2, 4]);
/// ```
pub fn arange(start: f64, stop: f64, step: f64, dtype: Dtype) -> Result<Array> {
    if step == 0.0 || !step.is_finite() || !start.is_finite() || !stop.is_finite() {
        return invalid(
            "arange",
            format!(
                "needs finite start/stop and a finite non-zero step, got {start}, {stop}, {step}"
            ),
        );
    }
    let n = ((stop - start) / step).ceil().max(0.0);
    if n > (1u64 << 48) as f64 {
        return invalid("arange", format!("{n} elements is too many"));
    }
    if dtype == Dtype::Bool {
        return invalid("arange", "bool is not a valid arange dtype");
    }
    Ok(Array::lazy(
        Primitive::Arange { start, step },
        vec![],
        vec![n as usize],
        dtype,
    ))
}

/// `num` evenly spaced values from `start` to `stop` inclusive.
pub fn linspace(start: f64, stop: f64, num: usize, dtype: Dtype) -> Result<Array> {
    if !start.is_finite() || !stop.is_finite() {
        return invalid("linspace", "start and stop must be finite");
    }
    let step = if num > 1 {
        (stop - start) / (num - 1) as f64
    } else {
        0.0
    };
    let base = Array::lazy(
        Primitive::Arange { start, step },
        vec![],
        vec![num],
        Dtype::F64,
    );
    if num > 1 {
        // The last value is exactly `stop`, as NumPy's.
        let last = Array::scalar(stop);
        let b = super::slice_update(
            &base,
            &super::reshape(&last, &[1])?,
            &[num as isize - 1],
            &[num as isize],
            &[1],
        )?;
        return b.astype(dtype);
    }
    base.astype(dtype)
}

/// `n x m` matrix with ones on diagonal `k` (0 main, > 0 above, < 0 below).
pub fn eye(n: usize, m: Option<usize>, k: isize, dtype: Dtype) -> Result<Array> {
    let m = m.unwrap_or(n);
    let rows = expand_dims(&arange(0.0, n as f64, 1.0, Dtype::I64)?, &[1])?;
    let cols = arange(0.0, m as f64, 1.0, Dtype::I64)?;
    let diag = super::equal(&super::add(&rows, &Array::scalar(k as i64))?, &cols)?;
    diag.astype(dtype)
}

/// The identity matrix.
pub fn identity(n: usize, dtype: Dtype) -> Result<Array> {
    eye(n, None, 0, dtype)
}

/// `n x m` matrix with ones at and below diagonal `k`.
pub fn tri(n: usize, m: Option<usize>, k: isize, dtype: Dtype) -> Result<Array> {
    let m = m.unwrap_or(n);
    let rows = expand_dims(&arange(0.0, n as f64, 1.0, Dtype::I64)?, &[1])?;
    let cols = arange(0.0, m as f64, 1.0, Dtype::I64)?;
    super::less_equal(&cols, &super::add(&rows, &Array::scalar(k as i64))?)?.astype(dtype)
}
