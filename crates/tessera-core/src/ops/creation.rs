//! Creation ops. Constant fills are a broadcast view of one scalar (no memory until something is
//! written), as in MLX.

use super::{broadcast_to, check_shape_size, expand_dims};
use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Result, invalid};
use crate::primitive::Primitive;

/// An array of `shape` filled with `value`, converted to `dtype` as [`astype`](super::astype) would
/// (float to integer truncates toward zero). Output shape `shape`, dtype `dtype`. A broadcast view
/// of one scalar: no memory until written. `Err` if the shape's element count overflows.
/// ```
/// use tessera_core::{ops, Dtype};
/// let a = ops::full(&[2, 2], 7.0, Dtype::I32).unwrap();
/// assert_eq!((a.shape(), a.dtype()), (&[2usize, 2][..], Dtype::I32));
/// assert_eq!(a.to_vec::<i32>().unwrap(), vec![7; 4]);
/// ```
pub fn full(shape: &[usize], value: f64, dtype: Dtype) -> Result<Array> {
    check_shape_size("full", shape)?;
    broadcast_to(&Array::scalar_of(value, dtype), shape)
}

/// [`full`] with the value taken from an array: `value` (usually 0-d) is broadcast to `shape` and
/// keeps its own dtype. `Err` if `value` does not broadcast to `shape` or the size overflows.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = ops::full_like_array(&[2, 3], &Array::scalar(2.5f32)).unwrap();
/// assert_eq!((a.shape(), a.dtype()), (&[2usize, 3][..], Dtype::F32));
/// assert_eq!(a.to_vec::<f32>().unwrap(), vec![2.5; 6]);
/// ```
pub fn full_like_array(shape: &[usize], value: &Array) -> Result<Array> {
    check_shape_size("full", shape)?;
    broadcast_to(value, shape)
}

/// Zeros of `shape` and `dtype` (a broadcast view, see [`full`]). `Err` only if the size overflows.
/// ```
/// use tessera_core::{ops, Dtype};
/// let z = ops::zeros(&[2, 3], Dtype::F32).unwrap();
/// assert_eq!((z.shape(), z.dtype()), (&[2usize, 3][..], Dtype::F32));
/// assert_eq!(z.to_vec::<f32>().unwrap(), vec![0.0; 6]);
/// ```
pub fn zeros(shape: &[usize], dtype: Dtype) -> Result<Array> {
    full(shape, 0.0, dtype)
}

/// Ones of `shape` and `dtype` (a broadcast view, see [`full`]); for bool, `true`. `Err` only if
/// the size overflows.
/// ```
/// use tessera_core::{ops, Dtype};
/// let o = ops::ones(&[3], Dtype::Bool).unwrap();
/// assert_eq!(o.dtype(), Dtype::Bool);
/// assert_eq!(o.to_vec::<bool>().unwrap(), vec![true; 3]);
/// ```
pub fn ones(shape: &[usize], dtype: Dtype) -> Result<Array> {
    full(shape, 1.0, dtype)
}

/// Zeros with the shape and dtype of `a` (its values are not read).
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[1u8, 2, 3, 4], &[2, 2]).unwrap();
/// let z = ops::zeros_like(&a).unwrap();
/// assert_eq!((z.shape(), z.dtype()), (&[2usize, 2][..], Dtype::U8));
/// assert_eq!(z.to_vec::<u8>().unwrap(), vec![0; 4]);
/// ```
pub fn zeros_like(a: &Array) -> Result<Array> {
    zeros(a.shape(), a.dtype())
}

/// Ones with the shape and dtype of `a` (its values are not read).
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[5i64, 6], &[2]).unwrap();
/// let o = ops::ones_like(&a).unwrap();
/// assert_eq!(o.dtype(), Dtype::I64);
/// assert_eq!(o.to_vec::<i64>().unwrap(), vec![1, 1]);
/// ```
pub fn ones_like(a: &Array) -> Result<Array> {
    ones(a.shape(), a.dtype())
}

/// `value` (converted to `a`'s dtype, so `2.7` becomes `2` for integers) with the shape and dtype
/// of `a`.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[1i32, 2, 3], &[3]).unwrap();
/// let f = ops::full_like(&a, 2.7).unwrap();
/// assert_eq!(f.dtype(), Dtype::I32);
/// assert_eq!(f.to_vec::<i32>().unwrap(), vec![2, 2, 2]);
/// ```
pub fn full_like(a: &Array, value: f64) -> Result<Array> {
    full(a.shape(), value, a.dtype())
}

/// `start, start + step, ...` up to (not including) `stop`, as NumPy's `arange`: a 1-D array of
/// `ceil((stop - start) / step)` elements (0 if negative) of `dtype`, values computed in float64
/// then converted. `Err` for a zero or non-finite `step`, non-finite bounds, more than 2^48
/// elements, or `Dtype::Bool`.
/// ```
/// use tessera_core::{ops, Dtype};
/// assert_eq!(ops::arange(0.0, 5.0, 2.0, Dtype::I32).unwrap().to_vec::<i32>().unwrap(), vec![0, 2, 4]);
/// let d = ops::arange(1.0, 0.0, -0.25, Dtype::F32).unwrap();
/// assert_eq!(d.to_vec::<f32>().unwrap(), vec![1.0, 0.75, 0.5, 0.25]);
/// assert!(ops::arange(0.0, 1.0, 0.0, Dtype::F32).is_err());
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

/// `num` evenly spaced values from `start` to `stop` inclusive (the last is exactly `stop`):
/// shape `(num,)`, computed in float64 then converted to `dtype` (integers truncate toward zero).
/// `num == 1` gives `[start]`, `num == 0` an empty array. `Err` for non-finite bounds.
/// ```
/// use tessera_core::{ops, Dtype};
/// let a = ops::linspace(0.0, 1.0, 5, Dtype::F32).unwrap();
/// assert_eq!(a.to_vec::<f32>().unwrap(), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
/// ```
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

/// `n x m` matrix (`m` defaults to `n`) of `dtype` with ones on diagonal `k` (0: main, `k > 0`:
/// above, `k < 0`: below) and zeros elsewhere; a `k` outside the matrix gives all zeros.
/// ```
/// use tessera_core::{ops, Dtype};
/// let e = ops::eye(2, Some(3), 1, Dtype::I32).unwrap();
/// assert_eq!(e.shape(), &[2, 3]);
/// assert_eq!(e.to_vec::<i32>().unwrap(), vec![0, 1, 0, 0, 0, 1]);
/// ```
pub fn eye(n: usize, m: Option<usize>, k: isize, dtype: Dtype) -> Result<Array> {
    let m = m.unwrap_or(n);
    let rows = expand_dims(&arange(0.0, n as f64, 1.0, Dtype::I64)?, &[1])?;
    let cols = arange(0.0, m as f64, 1.0, Dtype::I64)?;
    let diag = super::equal(&super::add(&rows, &Array::scalar(k as i64))?, &cols)?;
    diag.astype(dtype)
}

/// The `n x n` identity matrix of `dtype` (`eye(n, None, 0, dtype)`).
/// ```
/// use tessera_core::{ops, Dtype};
/// let i = ops::identity(2, Dtype::F32).unwrap();
/// assert_eq!((i.shape(), i.dtype()), (&[2usize, 2][..], Dtype::F32));
/// assert_eq!(i.to_vec::<f32>().unwrap(), vec![1.0, 0.0, 0.0, 1.0]);
/// ```
pub fn identity(n: usize, dtype: Dtype) -> Result<Array> {
    eye(n, None, 0, dtype)
}

/// `n x m` matrix (`m` defaults to `n`) of `dtype` with ones at and below diagonal `k` (0: main,
/// `k > 0`: above, `k < 0`: below) and zeros above it.
/// ```
/// use tessera_core::{ops, Dtype};
/// let t = ops::tri(3, None, 0, Dtype::I32).unwrap();
/// assert_eq!(t.to_vec::<i32>().unwrap(), vec![1, 0, 0, 1, 1, 0, 1, 1, 1]);
/// let b = ops::tri(2, Some(3), -1, Dtype::Bool).unwrap();
/// assert_eq!(b.to_vec::<bool>().unwrap(), vec![false, false, false, true, false, false]);
/// ```
pub fn tri(n: usize, m: Option<usize>, k: isize, dtype: Dtype) -> Result<Array> {
    let m = m.unwrap_or(n);
    let rows = expand_dims(&arange(0.0, n as f64, 1.0, Dtype::I64)?, &[1])?;
    let cols = arange(0.0, m as f64, 1.0, Dtype::I64)?;
    super::less_equal(&cols, &super::add(&rows, &Array::scalar(k as i64))?)?.astype(dtype)
}
