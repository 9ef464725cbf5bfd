//! Shape ops. Reshape, transpose, broadcast, expand/squeeze are views (no copy when the layout
//! allows); the rest are built from views, concatenation and `where`.

use super::{Axes, check_shape_size, normalize_axes, normalize_axis};
use crate::array::Array;
use crate::dtype::promote_types;
use crate::error::{Error, Result, fmt_shape, invalid};
use crate::primitive::Primitive;

/// Reshapes to `shape` (same number of elements, row-major order); same dtype. A view when the
/// layout allows, else a copy; the same array if the shape is unchanged. `Err` if the element
/// counts differ.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2, 3, 4, 5, 6], &[6]).unwrap();
/// let r = ops::reshape(&a, &[2, 3]).unwrap();
/// assert_eq!(r.shape(), &[2, 3]);
/// assert_eq!(r.to_vec::<i32>().unwrap(), vec![1, 2, 3, 4, 5, 6]);
/// assert!(ops::reshape(&a, &[4]).is_err());
/// ```
pub fn reshape(a: &Array, shape: &[usize]) -> Result<Array> {
    let n = check_shape_size("reshape", shape)?;
    if n != a.size() {
        return invalid(
            "reshape",
            format!(
                "cannot reshape array of shape {} into shape {}",
                fmt_shape(a.shape()),
                fmt_shape(shape)
            ),
        );
    }
    if shape == a.shape() {
        return Ok(a.clone());
    }
    Ok(Array::lazy(
        Primitive::Reshape(shape.to_vec()),
        vec![a.clone()],
        shape.to_vec(),
        a.dtype(),
    ))
}

/// [`reshape`] where one dim may be -1, inferred from the element count (as NumPy); same dtype.
/// `Err` for more than one -1, another negative dim, a count that does not divide, or a size
/// mismatch.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[0u8; 12], &[12]).unwrap();
/// assert_eq!(ops::reshape_infer(&a, &[3, -1]).unwrap().shape(), &[3, 4]);
/// assert!(ops::reshape_infer(&a, &[5, -1]).is_err());
/// ```
pub fn reshape_infer(a: &Array, shape: &[isize]) -> Result<Array> {
    let mut infer = None;
    let mut known = 1usize;
    for (i, &d) in shape.iter().enumerate() {
        if d == -1 {
            if infer.replace(i).is_some() {
                return invalid("reshape", "only one dimension can be -1");
            }
        } else if d < 0 {
            return invalid("reshape", format!("negative dimension {d}"));
        } else {
            known = known
                .checked_mul(d as usize)
                .ok_or_else(|| Error::Invalid {
                    op: "reshape",
                    msg: "shape too large".into(),
                })?;
        }
    }
    let mut out: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    if let Some(i) = infer {
        if known == 0 || !a.size().is_multiple_of(known) {
            return invalid(
                "reshape",
                format!(
                    "cannot infer -1 in shape {shape:?} for an array of {} elements",
                    a.size()
                ),
            );
        }
        out[i] = a.size() / known;
    }
    reshape(a, &out)
}

/// Merges dims `start_axis..=end_axis` (negative from the end) into one; other dims stay, dtype
/// stays. A 0-d array becomes shape `(1,)`. `Err` for an out-of-range axis or `start > end`.
/// ```
/// use tessera_core::{ops, Dtype};
/// let a = ops::zeros(&[2, 3, 4], Dtype::F32).unwrap();
/// assert_eq!(ops::flatten(&a, 1, -1).unwrap().shape(), &[2, 12]);
/// assert_eq!(ops::flatten(&a, 0, -1).unwrap().shape(), &[24]);
/// ```
pub fn flatten(a: &Array, start_axis: isize, end_axis: isize) -> Result<Array> {
    if a.ndim() == 0 {
        return reshape(a, &[1]);
    }
    let s = normalize_axis("flatten", start_axis, a.ndim())?;
    let e = normalize_axis("flatten", end_axis, a.ndim())?;
    if s > e {
        return invalid("flatten", format!("start axis {s} is after end axis {e}"));
    }
    let sh = a.shape();
    let mut shape: Vec<usize> = sh[..s].to_vec();
    shape.push(sh[s..=e].iter().product());
    shape.extend_from_slice(&sh[e + 1..]);
    reshape(a, &shape)
}

/// Permutes axes: output dim `i` is input dim `axes[i]` (`None` reverses them). Same dtype; a view.
/// `Err` unless `axes` is a permutation of all the axes (negative from the end).
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
/// let t = ops::transpose(&a, None).unwrap();
/// assert_eq!(t.shape(), &[3, 2]);
/// assert_eq!(t.to_vec::<i32>().unwrap(), vec![1, 4, 2, 5, 3, 6]);
/// ```
pub fn transpose(a: &Array, axes: Option<&[isize]>) -> Result<Array> {
    let nd = a.ndim();
    let perm: Vec<usize> = match axes {
        None => (0..nd).rev().collect(),
        Some(ax) => {
            if ax.len() != nd {
                return invalid(
                    "transpose",
                    format!("axes {ax:?} do not match an array of dimension {nd}"),
                );
            }
            let mut p = Vec::with_capacity(nd);
            for &x in ax {
                let x = normalize_axis("transpose", x, nd)?;
                if p.contains(&x) {
                    return invalid("transpose", format!("repeated axis in {ax:?}"));
                }
                p.push(x);
            }
            p
        }
    };
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(a.clone());
    }
    let shape: Vec<usize> = perm.iter().map(|&p| a.shape()[p]).collect();
    Ok(Array::lazy(
        Primitive::Transpose(perm),
        vec![a.clone()],
        shape,
        a.dtype(),
    ))
}

/// Swaps two axes (negative from the end); same dtype, a view. `Err` for an out-of-range axis.
/// ```
/// use tessera_core::{ops, Dtype};
/// let a = ops::zeros(&[2, 3, 4], Dtype::I32).unwrap();
/// assert_eq!(ops::swapaxes(&a, 0, -1).unwrap().shape(), &[4, 3, 2]);
/// ```
pub fn swapaxes(a: &Array, axis1: isize, axis2: isize) -> Result<Array> {
    let i = normalize_axis("swapaxes", axis1, a.ndim())?;
    let j = normalize_axis("swapaxes", axis2, a.ndim())?;
    let mut p: Vec<isize> = (0..a.ndim() as isize).collect();
    p.swap(i, j);
    transpose(a, Some(&p))
}

/// Moves axis `source` to position `destination` (both negative from the end), keeping the order
/// of the others; same dtype, a view. `Err` for an out-of-range axis.
/// ```
/// use tessera_core::{ops, Dtype};
/// let a = ops::zeros(&[2, 3, 4], Dtype::I32).unwrap();
/// assert_eq!(ops::moveaxis(&a, 0, -1).unwrap().shape(), &[3, 4, 2]);
/// ```
pub fn moveaxis(a: &Array, source: isize, destination: isize) -> Result<Array> {
    let s = normalize_axis("moveaxis", source, a.ndim())?;
    let d = normalize_axis("moveaxis", destination, a.ndim())?;
    let mut p: Vec<isize> = (0..a.ndim() as isize)
        .filter(|&i| i != s as isize)
        .collect();
    p.insert(d, s as isize);
    transpose(a, Some(&p))
}

/// Inserts size-1 axes at `axes`, positions in the output (negative from the end of the output);
/// same dtype, a view. `Err` for an out-of-range or repeated axis.
/// ```
/// use tessera_core::{ops, Dtype};
/// let a = ops::zeros(&[2, 3], Dtype::F32).unwrap();
/// assert_eq!(ops::expand_dims(&a, &[0, -1]).unwrap().shape(), &[1, 2, 3, 1]);
/// ```
pub fn expand_dims(a: &Array, axes: &[isize]) -> Result<Array> {
    let out_nd = a.ndim() + axes.len();
    let mut ax = Vec::with_capacity(axes.len());
    for &x in axes {
        let x = normalize_axis("expand_dims", x, out_nd)?;
        if ax.contains(&x) {
            return invalid("expand_dims", format!("repeated axis in {axes:?}"));
        }
        ax.push(x);
    }
    let mut shape = Vec::with_capacity(out_nd);
    let mut it = a.shape().iter();
    for i in 0..out_nd {
        if ax.contains(&i) {
            shape.push(1);
        } else {
            shape.push(*it.next().unwrap_or(&1));
        }
    }
    reshape(a, &shape)
}

/// Removes size-1 axes: all of them with `Axes::All`, else the listed ones; same dtype, a view.
/// `Err` if a listed axis is out of range, repeated, or not of size 1.
/// ```
/// use tessera_core::{ops, ops::Axes, Dtype};
/// let a = ops::zeros(&[1, 2, 1], Dtype::F32).unwrap();
/// assert_eq!(ops::squeeze(&a, Axes::All).unwrap().shape(), &[2]);
/// assert_eq!(ops::squeeze(&a, -1).unwrap().shape(), &[1, 2]);
/// assert!(ops::squeeze(&a, 1).is_err());
/// ```
pub fn squeeze(a: &Array, axes: impl Into<Axes>) -> Result<Array> {
    let axes = axes.into();
    let shape: Vec<usize> = match &axes {
        Axes::All => a.shape().iter().copied().filter(|&d| d != 1).collect(),
        Axes::Some(_) => {
            let ax = normalize_axes("squeeze", &axes, a.ndim())?;
            for &x in &ax {
                if a.shape()[x] != 1 {
                    return invalid(
                        "squeeze",
                        format!("cannot squeeze axis {x} of size {}", a.shape()[x]),
                    );
                }
            }
            a.shape()
                .iter()
                .enumerate()
                .filter(|(i, _)| !ax.contains(i))
                .map(|(_, &d)| d)
                .collect()
        }
    };
    reshape(a, &shape)
}

/// Broadcasts to `shape` (NumPy rules, aligned from the trailing dims); same dtype. A view with zero
/// strides. `Err` unless `a`'s shape broadcasts to exactly `shape`.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2], &[2]).unwrap();
/// let b = ops::broadcast_to(&a, &[2, 2]).unwrap();
/// assert_eq!(b.to_vec::<i32>().unwrap(), vec![1, 2, 1, 2]);
/// assert!(ops::broadcast_to(&a, &[3]).is_err());
/// ```
pub fn broadcast_to(a: &Array, shape: &[usize]) -> Result<Array> {
    let b = super::broadcast_shapes("broadcast_to", a.shape(), shape)?;
    if b != shape {
        return Err(Error::Broadcast {
            op: "broadcast_to",
            a: a.shape().to_vec(),
            b: shape.to_vec(),
        });
    }
    if a.shape() == shape {
        return Ok(a.clone());
    }
    Ok(Array::lazy(
        Primitive::Broadcast(shape.to_vec()),
        vec![a.clone()],
        shape.to_vec(),
        a.dtype(),
    ))
}

/// Broadcasts several arrays to their common shape (each keeps its dtype). `Err` if the shapes do
/// not broadcast together.
/// ```
/// use tessera_core::{ops, Dtype};
/// let a = ops::zeros(&[3, 1], Dtype::F32).unwrap();
/// let b = ops::zeros(&[4], Dtype::I32).unwrap();
/// let r = ops::broadcast_arrays(&[a, b]).unwrap();
/// assert_eq!((r[0].shape(), r[1].shape()), (&[3usize, 4][..], &[3usize, 4][..]));
/// assert_eq!(r[1].dtype(), Dtype::I32);
/// ```
pub fn broadcast_arrays(arrays: &[Array]) -> Result<Vec<Array>> {
    let mut shape: Vec<usize> = vec![];
    for a in arrays {
        shape = super::broadcast_shapes("broadcast_arrays", &shape, a.shape())?;
    }
    arrays.iter().map(|a| broadcast_to(a, &shape)).collect()
}

/// Joins arrays along an existing `axis`: the output's `axis` is the sum of theirs, the other
/// dims must match. Dtypes are promoted together (MLX table). `Err` for an empty list, 0-d
/// arrays, differing ranks or dims, or an out-of-range axis.
/// ```
/// use tessera_core::{Array, Dtype, ops};
/// let a = Array::from_slice(&[1i32, 2], &[1, 2]).unwrap();
/// let b = Array::from_slice(&[3.5f32, 4.5], &[1, 2]).unwrap();
/// let c = ops::concatenate(&[a, b], 0).unwrap();
/// assert_eq!((c.shape(), c.dtype()), (&[2usize, 2][..], Dtype::F32));
/// assert_eq!(c.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.5, 4.5]);
/// ```
pub fn concatenate(arrays: &[Array], axis: isize) -> Result<Array> {
    let first = arrays.first().ok_or_else(|| Error::Invalid {
        op: "concatenate",
        msg: "needs at least one array".into(),
    })?;
    let nd = first.ndim();
    if nd == 0 {
        return invalid(
            "concatenate",
            "zero-dimensional arrays cannot be concatenated",
        );
    }
    let ax = normalize_axis("concatenate", axis, nd)?;
    let mut dtype = first.dtype();
    let mut shape = first.shape().to_vec();
    shape[ax] = 0;
    for a in arrays {
        if a.ndim() != nd {
            return invalid(
                "concatenate",
                format!(
                    "all arrays need {nd} dimensions, got {} for shape {}",
                    a.ndim(),
                    fmt_shape(a.shape())
                ),
            );
        }
        for i in 0..nd {
            if i != ax && a.shape()[i] != first.shape()[i] {
                return invalid(
                    "concatenate",
                    format!(
                        "shapes {} and {} differ outside axis {ax}",
                        fmt_shape(first.shape()),
                        fmt_shape(a.shape())
                    ),
                );
            }
        }
        shape[ax] += a.shape()[ax];
        dtype = promote_types(dtype, a.dtype());
    }
    if arrays.len() == 1 {
        return first.astype(dtype);
    }
    let inputs = arrays
        .iter()
        .map(|a| a.astype(dtype))
        .collect::<Result<Vec<_>>>()?;
    Ok(Array::lazy(
        Primitive::Concatenate { axis: ax },
        inputs,
        shape,
        dtype,
    ))
}

/// Joins arrays of one shape along a new axis `axis` (a position in the output, negative from the
/// end): the output has one more dim, of size `arrays.len()`. Dtypes are promoted together. `Err`
/// for an empty list, differing shapes, or an out-of-range axis.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2], &[2]).unwrap();
/// let b = Array::from_slice(&[3i32, 4], &[2]).unwrap();
/// let s = ops::stack(&[a, b], 1).unwrap();
/// assert_eq!(s.shape(), &[2, 2]);
/// assert_eq!(s.to_vec::<i32>().unwrap(), vec![1, 3, 2, 4]);
/// ```
pub fn stack(arrays: &[Array], axis: isize) -> Result<Array> {
    let first = arrays.first().ok_or_else(|| Error::Invalid {
        op: "stack",
        msg: "needs at least one array".into(),
    })?;
    for a in arrays {
        if a.shape() != first.shape() {
            return invalid(
                "stack",
                format!(
                    "shapes {} and {} differ",
                    fmt_shape(first.shape()),
                    fmt_shape(a.shape())
                ),
            );
        }
    }
    let ax = normalize_axis("stack", axis, first.ndim() + 1)? as isize;
    let ex = arrays
        .iter()
        .map(|a| expand_dims(a, &[ax]))
        .collect::<Result<Vec<_>>>()?;
    concatenate(&ex, ax)
}

/// How to split: into equal sections, or at indices.
#[derive(Debug, Clone)]
pub enum SplitAt {
    Sections(usize),
    Indices(Vec<isize>),
}

/// Splits along `axis` into views of `a` (same dtype): `SplitAt::Sections(k)` gives `k` equal
/// pieces; `SplitAt::Indices(ix)` cuts before each index (clamped, negative from the end) as
/// NumPy, giving `ix.len() + 1` pieces. `Err` for an out-of-range axis or sections that do not
/// divide the axis.
/// ```
/// use tessera_core::{ops, ops::SplitAt, Dtype};
/// let a = ops::arange(0.0, 6.0, 1.0, Dtype::I32).unwrap();
/// let p = ops::split(&a, SplitAt::Indices(vec![1, 4]), 0).unwrap();
/// assert_eq!(p.iter().map(|x| x.shape()[0]).collect::<Vec<_>>(), vec![1, 3, 2]);
/// assert_eq!(p[1].to_vec::<i32>().unwrap(), vec![1, 2, 3]);
/// assert_eq!(ops::split(&a, SplitAt::Sections(3), 0).unwrap().len(), 3);
/// assert!(ops::split(&a, SplitAt::Sections(4), 0).is_err());
/// ```
pub fn split(a: &Array, at: SplitAt, axis: isize) -> Result<Vec<Array>> {
    let ax = normalize_axis("split", axis, a.ndim())?;
    let n = a.shape()[ax];
    let bounds: Vec<usize> = match at {
        SplitAt::Sections(k) => {
            if k == 0 || !n.is_multiple_of(k) {
                return invalid(
                    "split",
                    format!("an axis of size {n} cannot be split into {k} equal sections"),
                );
            }
            (1..k).map(|i| i * n / k).collect()
        }
        SplitAt::Indices(ix) => ix
            .iter()
            .map(|&i| {
                if i < 0 {
                    (i + n as isize).max(0) as usize
                } else {
                    (i as usize).min(n)
                }
            })
            .collect(),
    };
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut prev = 0usize;
    for b in bounds.into_iter().chain(std::iter::once(n)) {
        // Piece i is a[prev:b] with Python semantics: empty when b < prev, and the next piece
        // still starts at b (NumPy's split at [3, 1] gives a[:3], a[3:1], a[1:]).
        out.push(super::slice_axis(a, ax, prev, b.max(prev))?);
        prev = b;
    }
    Ok(out)
}

/// Padding mode for [`pad`].
#[derive(Debug, Clone, Copy)]
pub enum PadMode {
    /// Fill with a value.
    Constant(f64),
    /// Repeat the edge values.
    Edge,
}

/// Pads axis `i` with `pad_width[i] = (before, after)` elements: output dim `i` is
/// `before + d + after`; same dtype (a constant is converted to it). `PadMode::Edge` repeats the
/// edge values. `Err` unless there is one pair per axis, or for edge padding of an empty axis.
/// ```
/// use tessera_core::{Array, ops, ops::PadMode};
/// let a = Array::from_slice(&[1i32, 2], &[2]).unwrap();
/// let c = ops::pad(&a, &[(1, 2)], PadMode::Constant(9.0)).unwrap();
/// assert_eq!(c.to_vec::<i32>().unwrap(), vec![9, 1, 2, 9, 9]);
/// let e = ops::pad(&a, &[(2, 1)], PadMode::Edge).unwrap();
/// assert_eq!(e.to_vec::<i32>().unwrap(), vec![1, 1, 1, 2, 2]);
/// ```
pub fn pad(a: &Array, pad_width: &[(usize, usize)], mode: PadMode) -> Result<Array> {
    if pad_width.len() != a.ndim() {
        return invalid(
            "pad",
            format!(
                "{} pad widths for an array of dimension {}",
                pad_width.len(),
                a.ndim()
            ),
        );
    }
    match mode {
        PadMode::Constant(v) => {
            let shape: Vec<usize> = a
                .shape()
                .iter()
                .zip(pad_width)
                .map(|(&d, &(lo, hi))| d + lo + hi)
                .collect();
            let base = super::full(&shape, v, a.dtype())?;
            let start: Vec<isize> = pad_width.iter().map(|&(lo, _)| lo as isize).collect();
            let stop: Vec<isize> = a
                .shape()
                .iter()
                .zip(pad_width)
                .map(|(&d, &(lo, _))| (d + lo) as isize)
                .collect();
            super::slice_update(&base, a, &start, &stop, &vec![1; a.ndim()])
        }
        PadMode::Edge => {
            let mut r = a.clone();
            for (ax, &(lo, hi)) in pad_width.iter().enumerate() {
                if lo == 0 && hi == 0 {
                    continue;
                }
                let n = r.shape()[ax];
                if n == 0 {
                    return invalid("pad", format!("edge padding of an empty axis {ax}"));
                }
                let mut parts = vec![];
                let mut shape = r.shape().to_vec();
                if lo > 0 {
                    shape[ax] = lo;
                    parts.push(broadcast_to(&super::slice_axis(&r, ax, 0, 1)?, &shape)?);
                }
                parts.push(r.clone());
                if hi > 0 {
                    shape[ax] = hi;
                    parts.push(broadcast_to(&super::slice_axis(&r, ax, n - 1, n)?, &shape)?);
                }
                r = concatenate(&parts, ax as isize)?;
            }
            Ok(r)
        }
    }
}

/// Repeats each element `repeats` times along `axis` (over the flattened array when `None`): that
/// dim is multiplied by `repeats`; same dtype. `Err` for an out-of-range axis.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2, 3, 4], &[2, 2]).unwrap();
/// assert_eq!(ops::repeat(&a, 2, None).unwrap().to_vec::<i32>().unwrap(), vec![1, 1, 2, 2, 3, 3, 4, 4]);
/// let r = ops::repeat(&a, 2, Some(0)).unwrap();
/// assert_eq!(r.shape(), &[4, 2]);
/// assert_eq!(r.to_vec::<i32>().unwrap(), vec![1, 2, 1, 2, 3, 4, 3, 4]);
/// ```
pub fn repeat(a: &Array, repeats: usize, axis: Option<isize>) -> Result<Array> {
    let (a, ax) = match axis {
        None => (reshape(a, &[a.size()])?, 0usize),
        Some(x) => (a.clone(), normalize_axis("repeat", x, a.ndim())?),
    };
    let ex = expand_dims(&a, &[ax as isize + 1])?;
    let mut shape = ex.shape().to_vec();
    shape[ax + 1] = repeats;
    let b = broadcast_to(&ex, &shape)?;
    let mut out = a.shape().to_vec();
    out[ax] *= repeats;
    reshape(&b, &out)
}

/// Repeats the whole array `reps[i]` times along each axis; `a`'s shape and `reps` are first
/// left-padded with 1s to the same length, then output dim `i` is `reps[i] * d[i]`. Same dtype.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2], &[2]).unwrap();
/// let t = ops::tile(&a, &[2, 2]).unwrap();
/// assert_eq!(t.shape(), &[2, 4]);
/// assert_eq!(t.to_vec::<i32>().unwrap(), vec![1, 2, 1, 2, 1, 2, 1, 2]);
/// ```
pub fn tile(a: &Array, reps: &[usize]) -> Result<Array> {
    let nd = a.ndim().max(reps.len());
    let mut shape = vec![1usize; nd - a.ndim()];
    shape.extend_from_slice(a.shape());
    let mut r = vec![1usize; nd - reps.len()];
    r.extend_from_slice(reps);
    // (r0, d0, r1, d1, ...) by broadcasting (1, d0, 1, d1, ...), then merge pairs.
    let mut inter = Vec::with_capacity(2 * nd);
    let mut target = Vec::with_capacity(2 * nd);
    for i in 0..nd {
        inter.extend_from_slice(&[1, shape[i]]);
        target.extend_from_slice(&[r[i], shape[i]]);
    }
    let b = broadcast_to(&reshape(a, &inter)?, &target)?;
    let out: Vec<usize> = (0..nd).map(|i| r[i] * shape[i]).collect();
    reshape(&b, &out)
}

/// Rolls elements by `shift` (negative rolls backwards) along `axis`, or over the flattened array
/// when `None` (the shape is kept); elements leaving one end come back at the other. Same shape
/// and dtype. `Err` for an out-of-range axis.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2, 3, 4], &[2, 2]).unwrap();
/// assert_eq!(ops::roll(&a, 1, None).unwrap().to_vec::<i32>().unwrap(), vec![4, 1, 2, 3]);
/// assert_eq!(ops::roll(&a, -1, Some(1)).unwrap().to_vec::<i32>().unwrap(), vec![2, 1, 4, 3]);
/// ```
pub fn roll(a: &Array, shift: isize, axis: Option<isize>) -> Result<Array> {
    match axis {
        None => {
            let f = reshape(a, &[a.size()])?;
            reshape(&roll(&f, shift, Some(0))?, a.shape())
        }
        Some(x) => {
            let ax = normalize_axis("roll", x, a.ndim())?;
            let n = a.shape()[ax];
            if n == 0 {
                return Ok(a.clone());
            }
            let s = shift.rem_euclid(n as isize) as usize;
            if s == 0 {
                return Ok(a.clone());
            }
            let tail = super::slice_axis(a, ax, n - s, n)?;
            let head = super::slice_axis(a, ax, 0, n - s)?;
            concatenate(&[tail, head], ax as isize)
        }
    }
}

fn tri_mask(op: &'static str, a: &Array, k: isize) -> Result<Array> {
    if a.ndim() < 2 {
        return invalid(
            op,
            format!(
                "needs at least 2 dimensions, got shape {}",
                fmt_shape(a.shape())
            ),
        );
    }
    let nd = a.ndim();
    super::tri(
        a.shape()[nd - 2],
        Some(a.shape()[nd - 1]),
        k,
        crate::Dtype::Bool,
    )
}

/// Zeros above diagonal `k` (0: main, `k > 0`: above) of the last two axes; same shape and dtype.
/// `Err` for fewer than 2 dims.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2, 3, 4], &[2, 2]).unwrap();
/// assert_eq!(ops::tril(&a, 0).unwrap().to_vec::<i32>().unwrap(), vec![1, 0, 3, 4]);
/// ```
pub fn tril(a: &Array, k: isize) -> Result<Array> {
    let m = tri_mask("tril", a, k)?;
    super::where_(&m, a, &Array::scalar_of(0.0, a.dtype()))
}

/// Zeros below diagonal `k` (0: main, `k > 0`: above) of the last two axes; same shape and dtype.
/// `Err` for fewer than 2 dims.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2, 3, 4], &[2, 2]).unwrap();
/// assert_eq!(ops::triu(&a, 0).unwrap().to_vec::<i32>().unwrap(), vec![1, 2, 0, 4]);
/// assert_eq!(ops::triu(&a, 1).unwrap().to_vec::<i32>().unwrap(), vec![0, 2, 0, 0]);
/// ```
pub fn triu(a: &Array, k: isize) -> Result<Array> {
    let m = tri_mask("triu", a, k - 1)?;
    super::where_(&m, &Array::scalar_of(0.0, a.dtype()), a)
}

/// A row-major copy with the same shape and dtype. Whether `a` is already row-major is not known
/// until eval, so this always makes a node; the kernel copies only when needed.
/// ```
/// use tessera_core::{Array, ops};
/// let a = Array::from_slice(&[1i32, 2, 3, 4], &[2, 2]).unwrap();
/// let c = ops::contiguous(&ops::transpose(&a, None).unwrap()).unwrap();
/// assert_eq!(c.to_vec::<i32>().unwrap(), vec![1, 3, 2, 4]);
/// ```
pub fn contiguous(a: &Array) -> Result<Array> {
    Ok(Array::lazy(
        Primitive::Copy,
        vec![a.clone()],
        a.shape().to_vec(),
        a.dtype(),
    ))
}
