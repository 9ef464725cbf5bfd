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

/// Sorted copy along `axis` (over the flattened array when `None`, giving a 1-D result; else the
/// shape of `a`); ascending, stable, NaN last. Same dtype as `a`. `Err` for an out-of-range axis
/// (any axis of a 0-d array).
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[3i32, 1, 2, 9, 8, 7], &[2, 3]).unwrap();
/// assert_eq!(ops::sort(&a, Some(1)).unwrap().to_vec::<i32>().unwrap(), vec![1, 2, 3, 7, 8, 9]);
/// assert_eq!(ops::sort(&a, None).unwrap().shape(), &[6]);
/// ```
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

/// Indices (uint32) that sort along `axis` (stable: ties keep their order); shape as [`sort`].
/// `Err` for an out-of-range axis (any axis of a 0-d array).
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[3.0f32, 1.0, 3.0, 0.0], &[4]).unwrap();
/// let i = ops::argsort(&a, Some(0)).unwrap();
/// assert_eq!(i.dtype(), Dtype::U32);
/// assert_eq!(i.to_vec::<u32>().unwrap(), vec![3, 1, 0, 2]);
/// ```
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

/// The `k` largest values along `axis` (flattened when `None`), in ascending order: the shape of
/// `a` (1-D when `None`) with that axis of size `k`; same dtype. `Err` when `k` exceeds the axis
/// size or for an out-of-range axis.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[5i32, 1, 4, 2, 8, 3], &[2, 3]).unwrap();
/// let t = ops::topk(&a, 2, Some(1)).unwrap();
/// assert_eq!(t.shape(), &[2, 2]);
/// assert_eq!(t.to_vec::<i32>().unwrap(), vec![4, 5, 3, 8]);
/// ```
pub fn topk(a: &Array, k: usize, axis: Option<isize>) -> Result<Array> {
    let (a, ax) = prepare(a, axis, "topk")?;
    let n = a.shape()[ax];
    if k > n {
        return invalid("topk", format!("k = {k} is larger than the axis size {n}"));
    }
    let s = sort(&a, Some(ax as isize))?;
    super::slice_axis(&s, ax, n - k, n)
}

/// Indices (uint32) that partition along `axis` around `kth` (negative from the end): the element
/// at `kth` is in its sorted place, smaller ones before it, larger after. Shape as [`sort`].
/// (Computed by a full stable sort, so the result is fully sorted.) `Err` for `kth` or `axis` out
/// of range.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[30i32, 10, 20], &[3]).unwrap();
/// let i = ops::argpartition(&a, 1, Some(0)).unwrap();
/// assert_eq!(i.dtype(), Dtype::U32);
/// assert_eq!(i.to_vec::<u32>().unwrap()[1], 2);
/// ```
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

/// Values partitioned around `kth` along `axis` (see [`argpartition`]); shape as [`sort`], same
/// dtype as `a`. `Err` for `kth` or `axis` out of range.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[7i32, 3, 9, 1], &[4]).unwrap();
/// let p = ops::partition(&a, -1, None).unwrap().to_vec::<i32>().unwrap();
/// assert_eq!(p[3], 9);
/// assert!(ops::partition(&a, 4, None).is_err());
/// ```
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
