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

/// Sum over `axes` (bool sums to int32, uint8 to uint32).
/// ```
/// use tessera_core::{Array, ops, ops::Axes};
/// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
/// assert_eq!(ops::sum(&a, 0, false).unwrap().to_vec::<f32>().unwrap(), vec![4.0, 6.0]);
/// assert_eq!(ops::sum(&a, Axes::All, false).unwrap().item::<f32>().unwrap(), 10.0);
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

/// Product over `axes`.
pub fn prod(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    reduce_node(
        ReduceOp::Prod,
        a,
        axes.into(),
        keepdims,
        accumulate_dtype(a.dtype()),
    )
}

/// Maximum over `axes` (NaN propagates; an empty axis is an error).
pub fn max(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    reduce_node(ReduceOp::Max, a, axes.into(), keepdims, a.dtype())
}

/// Minimum over `axes`.
pub fn min(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    reduce_node(ReduceOp::Min, a, axes.into(), keepdims, a.dtype())
}

/// True where all elements over `axes` are non-zero.
pub fn all(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    let b = super::not_equal(a, &Array::scalar_of(0.0, a.dtype()))?;
    reduce_node(ReduceOp::All, &b, axes.into(), keepdims, Dtype::Bool)
}

/// True where any element over `axes` is non-zero.
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

/// Mean over `axes` (integers give float32).
pub fn mean(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    let axes = axes.into();
    let n = count(a, &axes)?;
    let a = a.astype(a.dtype().at_least_float())?;
    let s = sum(&a, axes, keepdims)?;
    super::multiply(&s, &Array::scalar_of(1.0 / n as f64, a.dtype()))
}

/// Variance over `axes` with `ddof` delta degrees of freedom.
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

/// Standard deviation (sqrt of [`var`]).
pub fn std(a: &Array, axes: impl Into<Axes>, keepdims: bool, ddof: usize) -> Result<Array> {
    super::sqrt(&var(a, axes, keepdims, ddof)?)
}

/// `log(sum(exp(a)))` over `axes`, without overflow.
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

/// Index (uint32) of the first maximum along `axis` (flattened when `None`).
pub fn argmax(a: &Array, axis: Option<isize>, keepdims: bool) -> Result<Array> {
    arg_reduce(ArgReduceOp::ArgMax, a, axis, keepdims)
}

/// Index (uint32) of the first minimum along `axis` (flattened when `None`).
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
        Some(v) => (a.clone(), normalize_axis("scan", v, a.ndim())?),
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

/// Cumulative sum along `axis` (flattened when `None`); `reverse` runs from the end,
/// `inclusive == false` shifts by one (exclusive scan).
pub fn cumsum(a: &Array, axis: Option<isize>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan(ScanOp::Sum, a, axis, reverse, inclusive)
}

/// Cumulative product.
pub fn cumprod(a: &Array, axis: Option<isize>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan(ScanOp::Prod, a, axis, reverse, inclusive)
}

/// Cumulative maximum.
pub fn cummax(a: &Array, axis: Option<isize>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan(ScanOp::Max, a, axis, reverse, inclusive)
}

/// Cumulative minimum.
pub fn cummin(a: &Array, axis: Option<isize>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan(ScanOp::Min, a, axis, reverse, inclusive)
}

/// `exp(a) / sum(exp(a))` over `axes`, shifted by the max for stability. Over the last axis
/// alone this is one fused kernel; other axes use [`softmax_composite`].
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
/// differentiate through).
pub fn softmax_composite(a: &Array, axes: impl Into<Axes>) -> Result<Array> {
    let axes = axes.into();
    let a = a.astype(a.dtype().at_least_float())?;
    let m = max(&a, axes.clone(), true)?;
    let e = super::exp(&super::subtract(&a, &m)?)?;
    let s = sum(&e, axes, true)?;
    super::divide(&e, &s)
}

/// `a - logsumexp(a)` over `axes`.
pub fn log_softmax(a: &Array, axes: impl Into<Axes>) -> Result<Array> {
    let axes = axes.into();
    let a = a.astype(a.dtype().at_least_float())?;
    let l = logsumexp(&a, axes, true)?;
    super::subtract(&a, &l)
}
