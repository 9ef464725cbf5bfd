//! Indexing: strided slices (views), gathers and scatters.
//!
//! Index arrays may hold negative indices (counted from the end once). Indices still out of
//! range are reported as an error when the array is evaluated; nothing is read or written
//! outside an array.

use super::{broadcast_shapes, normalize_axis};
use crate::array::Array;
use crate::error::{Error, Result, fmt_shape, invalid};
use crate::primitive::{Primitive, ScatterMode};

/// Resolves one axis of a Python slice `start:stop:step` on a dim of size `n`: (first, count).
pub(crate) fn resolve_slice(
    start: Option<isize>,
    stop: Option<isize>,
    step: isize,
    n: usize,
) -> Result<(usize, usize)> {
    if step == 0 {
        return invalid("slice", "slice step cannot be zero");
    }
    let n = n as isize;
    let clamp = |v: isize, lo: isize, hi: isize| v.max(lo).min(hi);
    let norm = |v: isize| if v < 0 { v + n } else { v };
    let (first, count) = if step > 0 {
        let s = clamp(start.map_or(0, norm), 0, n);
        let e = clamp(stop.map_or(n, norm), 0, n);
        (s, if e > s { (e - s + step - 1) / step } else { 0 })
    } else {
        let s = clamp(start.map_or(n - 1, norm), -1, n - 1);
        let e = clamp(
            stop.map_or(-1, |v| if v < 0 { (v + n).max(-1) } else { v }),
            -1,
            n - 1,
        );
        (
            s,
            if s > e {
                (s - e + (-step) - 1) / (-step)
            } else {
                0
            },
        )
    };
    Ok((first.max(0) as usize, count as usize))
}

fn slice_node(a: &Array, start: Vec<usize>, step: Vec<isize>, shape: Vec<usize>) -> Array {
    if shape == a.shape() && step.iter().all(|&s| s == 1) {
        return a.clone();
    }
    Array::lazy(
        Primitive::Slice { start, step },
        vec![a.clone()],
        shape,
        a.dtype(),
    )
}

/// Python-style slicing of the leading axes: `a[start[0]:stop[0]:strides[0], ...]` (a missing
/// entry is Python's default, trailing axes are kept whole). Negative values count from the end;
/// out-of-range bounds are clamped, as Python does. Output dim `i` is the number of selected
/// elements; same dtype; a view. `Err` for a zero stride or more bounds than dims.
/// ```
/// use tessera_core::{ops, Dtype};
/// let a = ops::arange(0.0, 10.0, 1.0, Dtype::I32).unwrap();
/// let s = ops::slice(&a, &[8], &[1], &[-3]).unwrap();
/// assert_eq!(s.to_vec::<i32>().unwrap(), vec![8, 5, 2]);
/// assert_eq!(ops::slice(&a, &[-2], &[100], &[]).unwrap().to_vec::<i32>().unwrap(), vec![8, 9]);
/// ```
pub fn slice(a: &Array, start: &[isize], stop: &[isize], strides: &[isize]) -> Result<Array> {
    let bounds = python_bounds(start, stop, strides);
    slice_opt(a, &bounds)
}

/// Per-axis `(start, stop, step)` from three lists; missing entries take Python's defaults.
fn python_bounds(
    start: &[isize],
    stop: &[isize],
    strides: &[isize],
) -> Vec<(Option<isize>, Option<isize>, isize)> {
    (0..start.len().max(stop.len()).max(strides.len()))
        .map(|i| {
            (
                start.get(i).copied(),
                stop.get(i).copied(),
                strides.get(i).copied().unwrap_or(1),
            )
        })
        .collect()
}

/// Slicing with optional `(start, stop, step)` bounds per leading axis (`None` = Python's default),
/// for `a[::-1]` and the like. Shape, dtype and errors as [`slice()`]; a view.
/// ```
/// use tessera_core::{ops, Dtype};
/// let a = ops::arange(0.0, 4.0, 1.0, Dtype::I32).unwrap();
/// let r = ops::slice_opt(&a, &[(None, None, -1)]).unwrap();
/// assert_eq!(r.to_vec::<i32>().unwrap(), vec![3, 2, 1, 0]);
/// ```
pub fn slice_opt(a: &Array, bounds: &[(Option<isize>, Option<isize>, isize)]) -> Result<Array> {
    if bounds.len() > a.ndim() {
        return invalid(
            "slice",
            format!(
                "{} slice bounds for an array of dimension {}",
                bounds.len(),
                a.ndim()
            ),
        );
    }
    let mut start = vec![0usize; a.ndim()];
    let mut step = vec![1isize; a.ndim()];
    let mut shape = a.shape().to_vec();
    for (i, &(s, e, st)) in bounds.iter().enumerate() {
        let (first, count) = resolve_slice(s, e, st, a.shape()[i])?;
        start[i] = first;
        step[i] = st;
        shape[i] = count;
    }
    Ok(slice_node(a, start, step, shape))
}

/// `a` restricted to `begin..end` along `axis` (no negative values, no clamping): that dim becomes
/// `end - begin`; same dtype; a view. `Err` unless `axis < ndim` and `begin <= end <= dim`.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
/// let s = ops::slice_axis(&a, 1, 1, 3).unwrap();
/// assert_eq!(s.shape(), &[2, 2]);
/// assert_eq!(s.to_vec::<i32>().unwrap(), vec![2, 3, 5, 6]);
/// assert!(ops::slice_axis(&a, 1, 2, 4).is_err());
/// ```
pub fn slice_axis(a: &Array, axis: usize, begin: usize, end: usize) -> Result<Array> {
    if axis >= a.ndim() || begin > end || end > a.shape()[axis] {
        return invalid(
            "slice",
            format!(
                "range {begin}..{end} on axis {axis} of shape {}",
                fmt_shape(a.shape())
            ),
        );
    }
    let mut start = vec![0usize; a.ndim()];
    start[axis] = begin;
    let mut shape = a.shape().to_vec();
    shape[axis] = end - begin;
    Ok(slice_node(a, start, vec![1; a.ndim()], shape))
}

/// A copy of `a` (same shape and dtype) with the window `start:stop:strides` (Python semantics,
/// as [`slice()`]) replaced by `update`, which is cast to `a`'s dtype (by the kernel as it writes
/// the window, as `astype` casts: no separate conversion node) and broadcast to the window's
/// shape. `Err` for a zero stride, too many bounds, or an `update` that does not broadcast.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[0i32; 5], &[5]).unwrap();
/// let u = ops::slice_update(&a, &Array::scalar(7.9f32), &[1], &[5], &[2]).unwrap();
/// assert_eq!(u.to_vec::<i32>().unwrap(), vec![0, 7, 0, 7, 0]);
/// ```
pub fn slice_update(
    a: &Array,
    update: &Array,
    start: &[isize],
    stop: &[isize],
    strides: &[isize],
) -> Result<Array> {
    let bounds = python_bounds(start, stop, strides);
    slice_update_opt(a, update, &bounds)
}

/// [`slice_update`] with optional bounds per axis (`None` = Python's default). Same shape, dtype
/// and errors.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2, 3, 4], &[4]).unwrap();
/// let v = Array::from_slice(&[8i32, 9], &[2]).unwrap();
/// let u = ops::slice_update_opt(&a, &v, &[(Some(-2), None, 1)]).unwrap();
/// assert_eq!(u.to_vec::<i32>().unwrap(), vec![1, 2, 8, 9]);
/// ```
pub fn slice_update_opt(
    a: &Array,
    update: &Array,
    bounds: &[(Option<isize>, Option<isize>, isize)],
) -> Result<Array> {
    if bounds.len() > a.ndim() {
        return invalid(
            "slice_update",
            format!(
                "{} slice bounds for shape {}",
                bounds.len(),
                fmt_shape(a.shape())
            ),
        );
    }
    let mut st = vec![0usize; a.ndim()];
    let mut step = vec![1isize; a.ndim()];
    let mut shape = a.shape().to_vec();
    for (i, &(s, e, stp)) in bounds.iter().enumerate() {
        let (first, count) = resolve_slice(s, e, stp, a.shape()[i])?;
        st[i] = first;
        step[i] = stp;
        shape[i] = count;
    }
    // The kernel converts the update to a's dtype as it writes it (no conversion node).
    let upd = super::broadcast_to(update, &shape)?;
    Ok(Array::lazy(
        Primitive::SliceUpdate { start: st, step },
        vec![a.clone(), upd],
        a.shape().to_vec(),
        a.dtype(),
    ))
}

pub(crate) fn check_indices(op: &'static str, idx: &Array) -> Result<()> {
    if !idx.dtype().is_integer() {
        return Err(Error::Dtype {
            op,
            dtype: idx.dtype(),
            msg: "indices must be integers".into(),
        });
    }
    Ok(())
}

/// Gathers along `axis` (or over the flattened array with `None`). Output shape:
/// `a.shape[..axis] + indices.shape + a.shape[axis+1..]`; same dtype as `a`. `Err` for
/// non-integer indices, an out-of-range axis, or taking from an empty axis; an index still out of
/// range after negative wrapping is an error at eval.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[10i32, 20, 30, 40, 50, 60], &[2, 3]).unwrap();
/// let i = Array::from_slice(&[2i32, -3], &[2]).unwrap();
/// let t = ops::take(&a, &i, Some(1)).unwrap();
/// assert_eq!(t.shape(), &[2, 2]);
/// assert_eq!(t.to_vec::<i32>().unwrap(), vec![30, 10, 60, 40]);
/// assert_eq!(ops::take(&a, &Array::scalar(4u32), None).unwrap().item::<i32>().unwrap(), 50);
/// let bad = ops::take(&a, &Array::scalar(6i32), None).unwrap();
/// assert!(bad.eval().is_err());
/// ```
pub fn take(a: &Array, indices: &Array, axis: Option<isize>) -> Result<Array> {
    check_indices("take", indices)?;
    let (a, ax) = match axis {
        None => (super::reshape(a, &[a.size()])?, 0),
        Some(x) => (a.clone(), normalize_axis("take", x, a.ndim())?),
    };
    if a.shape()[ax] == 0 && indices.size() > 0 {
        return invalid("take", "cannot take from an empty axis");
    }
    let mut shape = a.shape()[..ax].to_vec();
    shape.extend_from_slice(indices.shape());
    shape.extend_from_slice(&a.shape()[ax + 1..]);
    let dt = a.dtype();
    Ok(Array::lazy(
        Primitive::Take { axis: ax },
        vec![a, indices.clone()],
        shape,
        dt,
    ))
}

/// Output shape of an along-axis op: `a` and `indices` broadcast except on `axis`, where the
/// indices' size is used.
fn along_shape(op: &'static str, a: &Array, indices: &Array, ax: usize) -> Result<Vec<usize>> {
    if indices.ndim() != a.ndim() {
        return invalid(
            op,
            format!(
                "indices of shape {} need as many dims as the array {}",
                fmt_shape(indices.shape()),
                fmt_shape(a.shape())
            ),
        );
    }
    let mut sa = a.shape().to_vec();
    sa[ax] = indices.shape()[ax];
    broadcast_shapes(op, &sa, indices.shape())
}

/// `out[..., i, ...] = a[..., indices[..., i, ...], ...]` along `axis` (`None`: both flattened).
/// `indices` needs `a`'s number of dims; the output shape is `a` and `indices` broadcast, except
/// on `axis` where the indices' size is used. Same dtype as `a`. `Err` for non-integer indices, a
/// rank mismatch, shapes that do not broadcast, or an out-of-range axis; an out-of-range index is
/// an error at eval.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[3i32, 1, 2, 9, 7, 8], &[2, 3]).unwrap();
/// let i = ops::argsort(&a, Some(1)).unwrap();
/// let s = ops::take_along_axis(&a, &i, Some(1)).unwrap();
/// assert_eq!(s.to_vec::<i32>().unwrap(), vec![1, 2, 3, 7, 8, 9]);
/// ```
pub fn take_along_axis(a: &Array, indices: &Array, axis: Option<isize>) -> Result<Array> {
    check_indices("take_along_axis", indices)?;
    let (a, idx, ax) = match axis {
        None => (
            super::reshape(a, &[a.size()])?,
            super::reshape(indices, &[indices.size()])?,
            0,
        ),
        Some(x) => (
            a.clone(),
            indices.clone(),
            normalize_axis("take_along_axis", x, a.ndim())?,
        ),
    };
    let shape = along_shape("take_along_axis", &a, &idx, ax)?;
    if a.shape()[ax] == 0 && shape.iter().product::<usize>() > 0 {
        return invalid("take_along_axis", "cannot take from an empty axis");
    }
    let dt = a.dtype();
    Ok(Array::lazy(
        Primitive::TakeAlong { axis: ax },
        vec![a, idx],
        shape,
        dt,
    ))
}

fn scatter(
    op: &'static str,
    mode: ScatterMode,
    a: &Array,
    indices: &Array,
    values: &Array,
    axis: isize,
) -> Result<Array> {
    check_indices(op, indices)?;
    let ax = normalize_axis(op, axis, a.ndim())?;
    let shape = along_shape(op, a, indices, ax)?;
    let idx = super::broadcast_to(indices, &shape)?;
    let vals = super::broadcast_to(&values.astype(a.dtype())?, &shape)?;
    Ok(Array::lazy(
        Primitive::ScatterAlong { axis: ax, mode },
        vec![a.clone(), idx, vals],
        a.shape().to_vec(),
        a.dtype(),
    ))
}

/// A copy of `a` (same shape and dtype) with `values` (cast to `a`'s dtype) written at `indices`
/// along `axis`, the inverse of [`take_along_axis`]; `indices` and `values` broadcast as there.
/// With repeated indices the last write wins. `Err` as [`take_along_axis`]; an out-of-range index
/// is an error at eval.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[0i32; 6], &[2, 3]).unwrap();
/// let i = Array::from_slice(&[2i32, 0], &[2, 1]).unwrap();
/// let p = ops::put_along_axis(&a, &i, &Array::scalar(5i32), 1).unwrap();
/// assert_eq!(p.to_vec::<i32>().unwrap(), vec![0, 0, 5, 5, 0, 0]);
/// ```
pub fn put_along_axis(a: &Array, indices: &Array, values: &Array, axis: isize) -> Result<Array> {
    scatter("put_along_axis", ScatterMode::Set, a, indices, values, axis)
}

/// A copy of `a` (same shape and dtype) with `values` (cast to `a`'s dtype) added at `indices`
/// along `axis`; repeated indices accumulate (NumPy's `np.add.at` along an axis). Broadcasting and
/// errors as [`put_along_axis`].
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[0.0f32; 3], &[3]).unwrap();
/// let i = Array::from_slice(&[0i32, 2, 0], &[3]).unwrap();
/// let r = ops::scatter_add_along_axis(&a, &i, &Array::scalar(1.5f32), 0).unwrap();
/// assert_eq!(r.to_vec::<f32>().unwrap(), vec![3.0, 0.0, 1.5]);
/// ```
pub fn scatter_add_along_axis(
    a: &Array,
    indices: &Array,
    values: &Array,
    axis: isize,
) -> Result<Array> {
    scatter("scatter_add", ScatterMode::Add, a, indices, values, axis)
}

/// `a` plus `updates` scattered along `axis` at the 1-D `indices` (NumPy's `np.add.at`):
/// `out[..., indices[j], ...] += updates[..., j, ...]`; repeated indices accumulate. Same shape
/// and dtype as `a` (`updates` is cast). `Err` for non-integer or non-1-D indices, an out-of-range
/// axis, or `updates` not of `a`'s shape with `axis` replaced by `len(indices)`; an out-of-range
/// index is an error at eval.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[0i32; 4], &[2, 2]).unwrap();
/// let i = Array::from_slice(&[1i32, 1], &[2]).unwrap();
/// let u = Array::from_slice(&[1i32, 2, 3, 4], &[2, 2]).unwrap();
/// let r = ops::scatter_add(&a, &i, &u, 1).unwrap();
/// assert_eq!(r.to_vec::<i32>().unwrap(), vec![0, 3, 0, 7]);
/// ```
pub fn scatter_add(a: &Array, indices: &Array, updates: &Array, axis: isize) -> Result<Array> {
    check_indices("scatter_add", indices)?;
    let ax = normalize_axis("scatter_add", axis, a.ndim())?;
    if indices.ndim() != 1 {
        return invalid(
            "scatter_add",
            format!(
                "indices must be 1-D, got shape {}",
                fmt_shape(indices.shape())
            ),
        );
    }
    let mut ushape = a.shape().to_vec();
    ushape[ax] = indices.size();
    if updates.shape() != ushape.as_slice() {
        return invalid(
            "scatter_add",
            format!(
                "updates of shape {} should have shape {}",
                fmt_shape(updates.shape()),
                fmt_shape(&ushape)
            ),
        );
    }
    let mut ishape = vec![1usize; a.ndim()];
    ishape[ax] = indices.size();
    let idx = super::reshape(indices, &ishape)?;
    scatter_add_along_axis(a, &idx, updates, ax as isize)
}

/// NumPy advanced indexing over several axes: `a[i0, i1, ...]` where `indices[k]` indexes
/// `axes[k]`. The index arrays broadcast together; the output shape is their broadcast shape
/// followed by the dims of `a` that are not indexed (in order); same dtype as `a`. Negative
/// indices count from the end; an index still out of range is an error at evaluation. `Err` when
/// the numbers of index arrays and axes differ (or are 0), for a repeated or out-of-range axis,
/// non-integer indices, or index arrays that do not broadcast.
/// ```
/// use tessera_core::{Array, ops};
/// let a = ops::reshape(&ops::arange(0.0, 12.0, 1.0, tessera_core::Dtype::I32).unwrap(), &[3, 4]).unwrap();
/// let rows = Array::from_slice(&[0i32, 2], &[2]).unwrap();
/// let cols = Array::from_slice(&[1i32, -1], &[2]).unwrap();
/// let g = ops::gather(&a, &[rows, cols], &[0, 1]).unwrap();
/// assert_eq!(g.to_vec::<i32>().unwrap(), vec![1, 11]);
/// ```
pub fn gather(a: &Array, indices: &[Array], axes: &[isize]) -> Result<Array> {
    if indices.len() != axes.len() || indices.is_empty() {
        return invalid(
            "gather",
            format!("{} index arrays for {} axes", indices.len(), axes.len()),
        );
    }
    let mut ax = Vec::with_capacity(axes.len());
    for &x in axes {
        let x = normalize_axis("gather", x, a.ndim())?;
        if ax.contains(&x) {
            return invalid("gather", format!("axis {x} is indexed twice"));
        }
        ax.push(x);
    }
    for i in indices {
        check_indices("gather", i)?;
    }
    // Indexed axes first, then the rest: the indexed block flattens to one axis.
    let rest: Vec<usize> = (0..a.ndim()).filter(|i| !ax.contains(i)).collect();
    let perm: Vec<isize> = ax.iter().chain(&rest).map(|&i| i as isize).collect();
    let moved = super::transpose(a, Some(&perm))?;
    let block: usize = ax.iter().map(|&i| a.shape()[i]).product();
    let mut flat_shape = vec![block];
    flat_shape.extend(rest.iter().map(|&i| a.shape()[i]));
    let flat = super::reshape(&moved, &flat_shape)?;
    // Row-major linear index within the block; invalid entries become `block` (out of range),
    // so `take` reports them.
    let mut lin = Array::scalar(0i64);
    let mut valid = Array::scalar(true);
    let mut stride = 1i64;
    for (k, &x) in ax.iter().enumerate().rev() {
        let n = a.shape()[x] as i64;
        let i = indices[k].astype(crate::Dtype::I64)?;
        let i = super::where_(
            &super::less(&i, &Array::scalar(0i64))?,
            &super::add(&i, &Array::scalar(n))?,
            &i,
        )?;
        let ok = super::logical_and(
            &super::greater_equal(&i, &Array::scalar(0i64))?,
            &super::less(&i, &Array::scalar(n))?,
        )?;
        valid = super::logical_and(&valid, &ok)?;
        lin = super::add(&lin, &super::multiply(&i, &Array::scalar(stride))?)?;
        stride *= n;
    }
    let lin = super::where_(&valid, &lin, &Array::scalar(block as i64))?;
    take(&flat, &lin, Some(0))
}
