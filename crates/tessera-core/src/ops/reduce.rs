//! Reductions, scans, and the normalisations built on them (softmax, logsumexp).

use super::{Axes, normalize_axes, normalize_axis};
use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Result, fmt_shape, invalid};
use crate::primitive::{ArgReduceOp, Primitive, ReduceOp, ScanOp};

/// Dtype sums and products accumulate in: small integers and bool widen (MLX's rule).
fn accumulate_dtype(dt: Dtype) -> Dtype {
    match dt {
        Dtype::Bool => Dtype::I32,
        Dtype::U8 => Dtype::U32,
        other => other,
    }
}

fn reduce_node(op: ReduceOp, a: &Array, axes: Axes, keepdims: bool, dtype: Dtype) -> Result<Array> {
    let name = match op {
        ReduceOp::Sum => "sum",
        ReduceOp::Prod => "prod",
        ReduceOp::Max => "max",
        ReduceOp::Min => "min",
        ReduceOp::All => "all",
        ReduceOp::Any => "any",
    };
    let ax = normalize_axes(name, &axes, a.ndim())?;
    if matches!(op, ReduceOp::Max | ReduceOp::Min) {
        for &x in &ax {
            if a.shape()[x] == 0 {
                return invalid(
                    name,
                    format!(
                        "zero-size axis {x} of shape {} has no {name}",
                        fmt_shape(a.shape())
                    ),
                );
            }
        }
    }
    let a = a.astype(dtype)?;
    let kept: Vec<usize> = a
        .shape()
        .iter()
        .enumerate()
        .map(|(i, &d)| if ax.contains(&i) { 1 } else { d })
        .collect();
    let r = if ax.is_empty() {
        a.clone()
    } else {
        Array::lazy(
            Primitive::Reduce {
                op,
                axes: ax.clone(),
            },
            vec![a.clone()],
            kept,
            dtype,
        )
    };
    if keepdims {
        return Ok(r);
    }
    let out: Vec<usize> = a
        .shape()
        .iter()
        .enumerate()
        .filter(|(i, _)| !ax.contains(i))
        .map(|(_, &d)| d)
        .collect();
    super::reshape(&r, &out)
}

/// Sum over `axes` (`Axes::All`, one axis, or a list; negative from the end). The reduced axes are
/// removed, or kept as size 1 with `keepdims`. Dtype: bool sums to int32, uint8 to uint32, other
/// dtypes keep theirs (integers wrap on overflow). `Err` for an out-of-range or repeated axis.
/// ```
/// use tessera_core::{Array, Dtype, ops, ops::Axes};
/// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
/// assert_eq!(ops::sum(&a, 0, false).unwrap().to_vec::<f32>().unwrap(), vec![4.0, 6.0]);
/// assert_eq!(ops::sum(&a, 1, true).unwrap().shape(), &[2, 1]);
/// assert_eq!(ops::sum(&a, Axes::All, false).unwrap().item::<f32>().unwrap(), 10.0);
/// let b = Array::from_slice(&[true, true, false], &[3]).unwrap();
/// let n = ops::sum(&b, Axes::All, false).unwrap();
/// assert_eq!((n.dtype(), n.item::<i32>().unwrap()), (Dtype::I32, 2));
/// ```
pub fn sum(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    reduce_node(
        ReduceOp::Sum,
        a,
        axes.into(),
        keepdims,
        accumulate_dtype(a.dtype()),
    )
}

/// Product over `axes`; shape as [`sum`] (removed, or size 1 with `keepdims`). Dtype: bool gives
/// int32, uint8 uint32, others keep theirs. The product over an empty axis is 1. `Err` for an
/// out-of-range or repeated axis.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
/// assert_eq!(ops::prod(&a, 1, false).unwrap().to_vec::<i32>().unwrap(), vec![6, 120]);
/// assert_eq!(ops::prod(&a, -2, true).unwrap().shape(), &[1, 3]);
/// ```
pub fn prod(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    reduce_node(
        ReduceOp::Prod,
        a,
        axes.into(),
        keepdims,
        accumulate_dtype(a.dtype()),
    )
}

/// Maximum over `axes` (NaN propagates); shape as [`sum`], same dtype as `a`. `Err` for an
/// out-of-range or repeated axis, or a reduced axis of size 0.
/// ```
/// use tessera_core::{Array, ops, ops::Axes};
/// let a = Array::from_slice(&[3i32, -1, 7, 2], &[2, 2]).unwrap();
/// assert_eq!(ops::max(&a, 1, false).unwrap().to_vec::<i32>().unwrap(), vec![3, 7]);
/// assert_eq!(ops::max(&a, Axes::All, false).unwrap().item::<i32>().unwrap(), 7);
/// assert!(ops::max(&ops::zeros(&[0], tessera_core::Dtype::F32).unwrap(), 0, false).is_err());
/// ```
pub fn max(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    reduce_node(ReduceOp::Max, a, axes.into(), keepdims, a.dtype())
}

/// Minimum over `axes` (NaN propagates); shape as [`sum`], same dtype as `a`. `Err` for an
/// out-of-range or repeated axis, or a reduced axis of size 0.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[3i32, -1, 7, 2], &[2, 2]).unwrap();
/// assert_eq!(ops::min(&a, 0, false).unwrap().to_vec::<i32>().unwrap(), vec![3, -1]);
/// assert_eq!(ops::min(&a, 0, true).unwrap().shape(), &[1, 2]);
/// ```
pub fn min(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    reduce_node(ReduceOp::Min, a, axes.into(), keepdims, a.dtype())
}

/// True where every element over `axes` is non-zero (NaN counts as non-zero); bool output, shape as
/// [`sum`]. An empty reduction is true. `Err` for an out-of-range or repeated axis.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[1i32, 2, 0, 3], &[2, 2]).unwrap();
/// let r = ops::all(&a, 1, false).unwrap();
/// assert_eq!(r.dtype(), Dtype::Bool);
/// assert_eq!(r.to_vec::<bool>().unwrap(), vec![true, false]);
/// ```
pub fn all(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    let b = super::not_equal(a, &Array::scalar_of(0.0, a.dtype()))?;
    reduce_node(ReduceOp::All, &b, axes.into(), keepdims, Dtype::Bool)
}

/// True where some element over `axes` is non-zero (NaN counts as non-zero); bool output, shape as
/// [`sum`]. An empty reduction is false. `Err` for an out-of-range or repeated axis.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[0.0f32, 0.0, 0.0, 0.5], &[2, 2]).unwrap();
/// let r = ops::any(&a, 1, false).unwrap();
/// assert_eq!(r.dtype(), Dtype::Bool);
/// assert_eq!(r.to_vec::<bool>().unwrap(), vec![false, true]);
/// ```
pub fn any(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    let b = super::not_equal(a, &Array::scalar_of(0.0, a.dtype()))?;
    reduce_node(ReduceOp::Any, &b, axes.into(), keepdims, Dtype::Bool)
}

fn count(a: &Array, axes: &Axes) -> Result<usize> {
    Ok(normalize_axes("mean", axes, a.ndim())?
        .iter()
        .map(|&i| a.shape()[i])
        .product())
}

/// Mean over `axes`; shape as [`sum`]. Dtype: floats keep theirs, integers and bool give float32.
/// The mean of an empty reduction is NaN. `Err` for an out-of-range or repeated axis.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[1i32, 2, 3, 6], &[2, 2]).unwrap();
/// let m = ops::mean(&a, 1, false).unwrap();
/// assert_eq!(m.dtype(), Dtype::F32);
/// assert_eq!(m.to_vec::<f32>().unwrap(), vec![1.5, 4.5]);
/// ```
pub fn mean(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    let axes = axes.into();
    let n = count(a, &axes)?;
    let a = a.astype(a.dtype().at_least_float())?;
    let s = sum(&a, axes, keepdims)?;
    super::multiply(&s, &Array::scalar_of(1.0 / n as f64, a.dtype()))
}

/// Variance over `axes`: `sum((a - mean)^2) / (n - ddof)`, NaN when `n <= ddof`. Shape as
/// [`sum`]; floats keep their dtype, integers and bool give float32. `Err` for an out-of-range or
/// repeated axis.
/// ```
/// use tessera_core::{Array, ops, ops::Axes};
/// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0], &[5]).unwrap();
/// assert_eq!(ops::var(&a, Axes::All, false, 0).unwrap().item::<f32>().unwrap(), 2.0);
/// assert_eq!(ops::var(&a, 0, false, 1).unwrap().item::<f32>().unwrap(), 2.5);
/// assert!(ops::var(&a, 0, false, 5).unwrap().item::<f32>().unwrap().is_nan());
/// ```
pub fn var(a: &Array, axes: impl Into<Axes>, keepdims: bool, ddof: usize) -> Result<Array> {
    let axes = axes.into();
    let n = count(a, &axes)?;
    let a = a.astype(a.dtype().at_least_float())?;
    let m = mean(&a, axes.clone(), true)?;
    let d = super::subtract(&a, &m)?;
    let ss = sum(&super::square(&d)?, axes, keepdims)?;
    let denom = n as f64 - ddof as f64;
    super::multiply(
        &ss,
        &Array::scalar_of(if denom > 0.0 { 1.0 / denom } else { f64::NAN }, a.dtype()),
    )
}

/// Standard deviation over `axes` (sqrt of [`var`] with the same `ddof`). Shape as [`sum`]; floats
/// keep their dtype, integers and bool give float32. `Err` for an out-of-range or repeated axis.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[2i32, 4, 4, 4, 5, 5, 7, 9], &[8]).unwrap();
/// assert_eq!(ops::std(&a, 0, false, 0).unwrap().item::<f32>().unwrap(), 2.0);
/// ```
pub fn std(a: &Array, axes: impl Into<Axes>, keepdims: bool, ddof: usize) -> Result<Array> {
    super::sqrt(&var(a, axes, keepdims, ddof)?)
}

/// `log(sum(exp(a)))` over `axes`, shifted by the maximum so it does not overflow. Shape as
/// [`sum`]; floats keep their dtype, integers and bool give float32. `Err` for an out-of-range or
/// repeated axis, or a reduced axis of size 0.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1000.0f32, 1000.0], &[2]).unwrap();
/// let r = ops::logsumexp(&a, 0, false).unwrap().item::<f32>().unwrap();
/// assert!((r - (1000.0 + std::f32::consts::LN_2)).abs() < 1e-3);
/// ```
pub fn logsumexp(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    let axes = axes.into();
    let a = a.astype(a.dtype().at_least_float())?;
    let m = max(&a, axes.clone(), true)?;
    // An infinite max would give inf - inf = NaN below: shift by 0 there instead.
    let shift = super::where_(&super::isinf(&m)?, &Array::scalar_of(0.0, a.dtype()), &m)?;
    let s = sum(
        &super::exp(&super::subtract(&a, &shift)?)?,
        axes.clone(),
        true,
    )?;
    let r = super::add(&super::log(&s)?, &shift)?;
    if keepdims {
        Ok(r)
    } else {
        super::squeeze(&r, axes_or_all(&axes, a.ndim()))
    }
}

fn axes_or_all(axes: &Axes, ndim: usize) -> Axes {
    match axes {
        Axes::All => Axes::Some((0..ndim as isize).collect()),
        s => s.clone(),
    }
}

fn arg_reduce(op: ArgReduceOp, a: &Array, axis: Option<isize>, keepdims: bool) -> Result<Array> {
    let name = if op == ArgReduceOp::ArgMax {
        "argmax"
    } else {
        "argmin"
    };
    let (x, ax) = match axis {
        None => (super::reshape(a, &[a.size()])?, 0),
        Some(v) => (a.clone(), normalize_axis(name, v, a.ndim())?),
    };
    if x.ndim() == 0 || x.shape()[ax] == 0 {
        return invalid(
            name,
            format!(
                "attempt to get {name} of an empty axis in shape {}",
                fmt_shape(a.shape())
            ),
        );
    }
    let mut shape = x.shape().to_vec();
    shape[ax] = 1;
    let r = Array::lazy(
        Primitive::ArgReduce { op, axis: ax },
        vec![x.clone()],
        shape.clone(),
        Dtype::U32,
    );
    match (keepdims, axis) {
        (true, None) => super::reshape(&r, &vec![1; a.ndim()]),
        (true, Some(_)) => Ok(r),
        (false, None) => super::reshape(&r, &[]),
        (false, Some(_)) => {
            shape.remove(ax);
            super::reshape(&r, &shape)
        }
    }
}

/// Index of the first maximum along `axis` (over the flattened array when `None`), as uint32.
/// The axis is removed (kept as size 1 with `keepdims`; with `None` and `keepdims` every axis is
/// size 1). `Err` for an out-of-range axis or an empty axis.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[1.0f32, 5.0, 5.0, 9.0, 0.0, 2.0], &[2, 3]).unwrap();
/// let i = ops::argmax(&a, Some(1), false).unwrap();
/// assert_eq!((i.shape(), i.dtype()), (&[2usize][..], Dtype::U32));
/// assert_eq!(i.to_vec::<u32>().unwrap(), vec![1, 0]);
/// assert_eq!(ops::argmax(&a, None, false).unwrap().item::<u32>().unwrap(), 3);
/// ```
pub fn argmax(a: &Array, axis: Option<isize>, keepdims: bool) -> Result<Array> {
    arg_reduce(ArgReduceOp::ArgMax, a, axis, keepdims)
}

/// Index of the first minimum along `axis` (over the flattened array when `None`), as uint32.
/// Shape as [`argmax`]. `Err` for an out-of-range axis or an empty axis.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[4i32, 1, 1, 0, 7, 3], &[2, 3]).unwrap();
/// let i = ops::argmin(&a, Some(-1), true).unwrap();
/// assert_eq!((i.shape(), i.dtype()), (&[2usize, 1][..], Dtype::U32));
/// assert_eq!(i.to_vec::<u32>().unwrap(), vec![1, 0]);
/// ```
pub fn argmin(a: &Array, axis: Option<isize>, keepdims: bool) -> Result<Array> {
    arg_reduce(ArgReduceOp::ArgMin, a, axis, keepdims)
}

fn scan(
    op: ScanOp,
    a: &Array,
    axis: Option<isize>,
    reverse: bool,
    inclusive: bool,
) -> Result<Array> {
    let (x, ax) = match axis {
        None => (super::reshape(a, &[a.size()])?, 0),
        Some(v) => (a.clone(), normalize_axis(scan_name(op), v, a.ndim())?),
    };
    // Scans keep small integer types (MLX); bool counts in int32.
    let dt = match (op, x.dtype()) {
        (ScanOp::Sum | ScanOp::Prod, Dtype::Bool) => Dtype::I32,
        (_, d) => d,
    };
    let x = x.astype(dt)?;
    let shape = x.shape().to_vec();
    Ok(Array::lazy(
        Primitive::Scan {
            op,
            axis: ax,
            reverse,
            inclusive,
        },
        vec![x],
        shape,
        dt,
    ))
}

/// Cumulative sum along `axis` (over the flattened array when `None`, giving a 1-D result; else
/// the shape of `a`). `reverse` runs from the end; `inclusive == false` shifts by one (exclusive
/// scan, starting at 0). Dtype: bool gives int32, others keep theirs (uint8 stays uint8 and wraps,
/// unlike [`sum`]). `Err` for an out-of-range axis (any axis of a 0-d array).
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2, 3, 4], &[4]).unwrap();
/// assert_eq!(ops::cumsum(&a, Some(0), false, true).unwrap().to_vec::<i32>().unwrap(), vec![1, 3, 6, 10]);
/// assert_eq!(ops::cumsum(&a, None, false, false).unwrap().to_vec::<i32>().unwrap(), vec![0, 1, 3, 6]);
/// assert_eq!(ops::cumsum(&a, None, true, true).unwrap().to_vec::<i32>().unwrap(), vec![10, 9, 7, 4]);
/// ```
pub fn cumsum(a: &Array, axis: Option<isize>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan(ScanOp::Sum, a, axis, reverse, inclusive)
}

/// Cumulative product along `axis`; shape, `reverse` and `inclusive` as [`cumsum`] (an exclusive
/// scan starts at 1). Dtype: bool gives int32, others keep theirs. `Err` for an out-of-range axis.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2, 3, 4], &[2, 2]).unwrap();
/// assert_eq!(ops::cumprod(&a, Some(0), false, true).unwrap().to_vec::<i32>().unwrap(), vec![1, 2, 3, 8]);
/// ```
pub fn cumprod(a: &Array, axis: Option<isize>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan(ScanOp::Prod, a, axis, reverse, inclusive)
}

/// Cumulative maximum along `axis`; shape, `reverse` and `inclusive` as [`cumsum`]. Same dtype as
/// `a` (bool included). `Err` for an out-of-range axis.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1.0f32, 3.0, 2.0, 5.0], &[4]).unwrap();
/// assert_eq!(ops::cummax(&a, Some(0), false, true).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 3.0, 3.0, 5.0]);
/// ```
pub fn cummax(a: &Array, axis: Option<isize>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan(ScanOp::Max, a, axis, reverse, inclusive)
}

/// Cumulative minimum along `axis`; shape, `reverse` and `inclusive` as [`cumsum`]. Same dtype as
/// `a`. `Err` for an out-of-range axis.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[4i32, 2, 3, 1], &[4]).unwrap();
/// assert_eq!(ops::cummin(&a, None, false, true).unwrap().to_vec::<i32>().unwrap(), vec![4, 2, 2, 1]);
/// assert_eq!(ops::cummin(&a, None, true, true).unwrap().to_vec::<i32>().unwrap(), vec![1, 1, 1, 1]);
/// ```
pub fn cummin(a: &Array, axis: Option<isize>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan(ScanOp::Min, a, axis, reverse, inclusive)
}

/// `exp(a) / sum(exp(a))` over `axes`, shifted by the max for stability; same shape as `a`. Floats
/// keep their dtype, integers and bool give float32. Over the last axis alone this is one fused
/// kernel; other axes use [`softmax_composite`]. `Err` for an out-of-range or repeated axis.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[0i32, 0, 1, 1], &[2, 2]).unwrap();
/// let s = ops::softmax(&a, -1).unwrap();
/// assert_eq!((s.shape(), s.dtype()), (&[2usize, 2][..], Dtype::F32));
/// assert_eq!(s.to_vec::<f32>().unwrap(), vec![0.5; 4]);
/// ```
pub fn softmax(a: &Array, axes: impl Into<Axes>) -> Result<Array> {
    let axes = axes.into();
    let a = a.astype(a.dtype().at_least_float())?;
    let ax = normalize_axes("softmax", &axes, a.ndim())?;
    if a.ndim() > 0 && ax == [a.ndim() - 1] {
        let (shape, dt) = (a.shape().to_vec(), a.dtype());
        return Ok(Array::lazy(Primitive::Softmax, vec![a], shape, dt));
    }
    softmax_composite(&a, axes)
}

/// Softmax written with other ops: the reference for the fused kernel (and what transforms
/// differentiate through). Shape, dtype and errors as [`softmax`].
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1.0f32, 1.0, 2.0, 2.0], &[2, 2]).unwrap();
/// let s = ops::softmax_composite(&a, 0).unwrap();
/// let e = 1.0 / (1.0 + std::f32::consts::E);
/// let v = s.to_vec::<f32>().unwrap();
/// assert!((v[0] - e).abs() < 1e-6 && (v[3] - (1.0 - e)).abs() < 1e-6);
/// ```
pub fn softmax_composite(a: &Array, axes: impl Into<Axes>) -> Result<Array> {
    let axes = axes.into();
    let a = a.astype(a.dtype().at_least_float())?;
    let m = max(&a, axes.clone(), true)?;
    let e = super::exp(&super::subtract(&a, &m)?)?;
    let s = sum(&e, axes, true)?;
    super::divide(&e, &s)
}

/// `a - logsumexp(a)` over `axes` (the reduced axes kept for broadcasting); same shape as `a`.
/// Floats keep their dtype, integers and bool give float32. `Err` for an out-of-range or repeated
/// axis, or a reduced axis of size 0.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[3.0f32, 3.0], &[2]).unwrap();
/// let l = ops::log_softmax(&a, 0).unwrap().to_vec::<f32>().unwrap();
/// assert!(l.iter().all(|&x| (x + std::f32::consts::LN_2).abs() < 1e-6));
/// ```
pub fn log_softmax(a: &Array, axes: impl Into<Axes>) -> Result<Array> {
    let axes = axes.into();
    let a = a.astype(a.dtype().at_least_float())?;
    let l = logsumexp(&a, axes, true)?;
    super::subtract(&a, &l)
}

fn scan_name(op: ScanOp) -> &'static str {
    match op {
        ScanOp::Sum => "cumsum",
        ScanOp::Prod => "cumprod",
        ScanOp::Max => "cummax",
        ScanOp::Min => "cummin",
    }
}
