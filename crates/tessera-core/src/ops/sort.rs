//! Sorting and selection along an axis.

use super::normalize_axis;
use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Result, invalid};
use crate::primitive::Primitive;

fn prepare(a: &Array, axis: Option<isize>, op: &'static str) -> Result<(Array, usize)> {
    match axis {
        None => Ok((super::reshape(a, &[a.size()])?, 0)),
        Some(x) => {
            if a.ndim() == 0 {
                return invalid(op, "cannot sort a 0-d array along an axis");
            }
            Ok((a.clone(), normalize_axis(op, x, a.ndim())?))
        }
    }
}

/// Sorted copy along `axis` (flattened when `None`); stable, NaN last.
pub fn sort(a: &Array, axis: Option<isize>) -> Result<Array> {
    let (x, ax) = prepare(a, axis, "sort")?;
    let (shape, dt) = (x.shape().to_vec(), x.dtype());
    Ok(Array::lazy(
        Primitive::Sort { axis: ax },
        vec![x],
        shape,
        dt,
    ))
}

/// Indices (uint32) that sort along `axis`; stable.
pub fn argsort(a: &Array, axis: Option<isize>) -> Result<Array> {
    let (x, ax) = prepare(a, axis, "argsort")?;
    let shape = x.shape().to_vec();
    Ok(Array::lazy(
        Primitive::ArgSort { axis: ax },
        vec![x],
        shape,
        Dtype::U32,
    ))
}

/// The `k` largest values along `axis` (flattened when `None`), in ascending order.
pub fn topk(a: &Array, k: usize, axis: Option<isize>) -> Result<Array> {
    let (a, ax) = prepare(a, axis, "topk")?;
    let n = a.shape()[ax];
    if k > n {
        return invalid("topk", format!("k = {k} is larger than the axis size {n}"));
    }
    let s = sort(&a, Some(ax as isize))?;
    super::slice_axis(&s, ax, n - k, n)
}

/// Indices that partition along `axis` around `kth`: the element at `kth` is in its sorted place,
/// smaller ones before it, larger after. (Computed by a full stable sort.)
pub fn argpartition(a: &Array, kth: isize, axis: Option<isize>) -> Result<Array> {
    let (x, ax) = prepare(a, axis, "argpartition")?;
    let n = x.shape()[ax] as isize;
    if kth < -n || kth >= n {
        return invalid(
            "argpartition",
            format!("kth = {kth} is out of bounds for an axis of size {n}"),
        );
    }
    argsort(&x, Some(ax as isize))
}

/// Values partitioned around `kth` (see [`argpartition`]).
pub fn partition(a: &Array, kth: isize, axis: Option<isize>) -> Result<Array> {
    let (x, ax) = prepare(a, axis, "partition")?;
    let n = x.shape()[ax] as isize;
    if kth < -n || kth >= n {
        return invalid(
            "partition",
            format!("kth = {kth} is out of bounds for an axis of size {n}"),
        );
    }
    sort(&x, Some(ax as isize))
}
