//! Views, concatenation, gathers and scatters.
//!
//! Views build a new layout over the same buffer. Gathers check every index against its axis:
//! a negative index counts from the end once; anything still out of range is an error at `eval`,
//! never a read outside the array.

use super::copy::{SendConstPtr, SendPtr, ensure_contiguous};
use super::strided::{Walk, broadcast_strides};
use crate::array::Meta;
use crate::dtype::{Dtype, Element};
use crate::error::{Error, Result};
use crate::layout::{ArrayData, Layout, row_major_strides};
use crate::primitive::ScatterMode;

pub(crate) fn reshape(x: &ArrayData, shape: &[usize]) -> Result<ArrayData> {
    let src = match x.layout.reshape_strides(shape) {
        Some(_) => x.clone(),
        None => super::copy::contiguous(x)?,
    };
    let strides = src
        .layout
        .reshape_strides(shape)
        .unwrap_or_else(|| row_major_strides(shape));
    Ok(ArrayData {
        layout: Layout::new(shape, &strides, src.layout.offset),
        ..src
    })
}

pub(crate) fn transpose(x: &ArrayData, perm: &[usize]) -> ArrayData {
    let l = &x.layout;
    let layout = Layout {
        shape: perm.iter().map(|&p| l.shape[p]).collect(),
        strides: perm.iter().map(|&p| l.strides[p]).collect(),
        offset: l.offset,
    };
    ArrayData {
        layout,
        ..x.clone()
    }
}

pub(crate) fn slice(
    x: &ArrayData,
    start: &[usize],
    step: &[isize],
    out_shape: &[usize],
) -> ArrayData {
    let l = &x.layout;
    let empty = out_shape.contains(&0);
    let mut offset = l.offset as isize;
    if !empty {
        for (&s, &st) in start.iter().zip(&l.strides) {
            offset += s as isize * st;
        }
    }
    let strides = (0..l.ndim())
        .map(|i| l.strides[i] * step.get(i).copied().unwrap_or(1))
        .collect();
    ArrayData {
        layout: Layout {
            shape: out_shape.into(),
            strides,
            offset: offset.max(0) as usize,
        },
        ..x.clone()
    }
}

pub(crate) fn broadcast(x: &ArrayData, shape: &[usize]) -> ArrayData {
    let strides = broadcast_strides(&x.layout.shape, &x.layout.strides, shape);
    ArrayData {
        layout: Layout::new(shape, &strides, x.layout.offset),
        ..x.clone()
    }
}

/// Copies `src` into the strided destination `dst` (same shape).
fn copy_into<T: Element>(src: &ArrayData, dst: *mut T, dst_strides: &[isize]) {
    if src.size() == 0 {
        return;
    }
    let walk = Walk::<2>::new(&src.layout.shape, [dst_strides, &src.layout.strides]);
    let [di, si] = walk.inner_strides();
    let s = SendConstPtr(src.ptr::<T>());
    let d = SendPtr(dst);
    walk.par_rows(1 << 15, &|_, offs, n| {
        let (s, d) = (s, d);
        // SAFETY: both offsets come from layouts of the same shape inside their buffers.
        unsafe {
            let (sp, dp) = (s.get().offset(offs[1]), d.get().offset(offs[0]));
            if si == 1 && di == 1 {
                std::ptr::copy_nonoverlapping(sp, dp, n);
            } else {
                for i in 0..n as isize {
                    *dp.offset(i * di) = *sp.offset(i * si);
                }
            }
        }
    });
}

pub(crate) fn concatenate(axis: usize, inputs: &[ArrayData], out: &Meta) -> Result<ArrayData> {
    let o = ArrayData::alloc(out.dtype, &out.shape)?;
    let ost = row_major_strides(&out.shape);
    let mut at = 0usize;
    crate::dispatch_dtype!(out.dtype, T => {
        for x in inputs {
            // SAFETY: the window starts inside the output (at < out.shape[axis] when x is non-empty).
            let base = unsafe { o.mut_ptr::<T>().offset(at as isize * ost[axis]) };
            copy_into::<T>(x, base, &ost);
            at += x.layout.shape[axis];
        }
    });
    Ok(o)
}

/// Indices as i64 with negatives wrapped; an index outside `0..size` is an error.
pub(super) fn load_indices(op: &'static str, idx: &ArrayData, size: usize) -> Result<Vec<i64>> {
    let mut v = Vec::with_capacity(idx.size());
    crate::dispatch_dtype!(idx.dtype, I => {
        super::copy::for_each_element::<I>(idx, |x| v.push(x.to_i64()));
    });
    for x in v.iter_mut() {
        let w = if *x < 0 { *x + size as i64 } else { *x };
        if w < 0 || w >= size as i64 {
            return Err(Error::Invalid {
                op,
                msg: format!("index {x} is out of range for an axis of size {size}"),
            });
        }
        *x = w;
    }
    Ok(v)
}

pub(crate) fn take(axis: usize, a: &ArrayData, idx: &ArrayData, out: &Meta) -> Result<ArrayData> {
    let o = ArrayData::alloc(out.dtype, &out.shape)?;
    if o.size() == 0 {
        return Ok(o);
    }
    let ids = load_indices("take", idx, a.layout.shape[axis])?;
    let l = &a.layout;
    let outer: usize = l.shape[..axis].iter().product();
    let inner_shape = &l.shape[axis + 1..];
    let inner = Walk::<1>::new(inner_shape, [&l.strides[axis + 1..]]);
    let outer_walk = Walk::<1>::new(&l.shape[..axis], [&l.strides[..axis]]);
    let (istride, ast) = (inner.inner_strides()[0], l.strides[axis]);
    let m = inner.inner_len();
    crate::dispatch_dtype!(a.dtype, T => {
        let src = a.ptr::<T>();
        let dst = o.mut_ptr::<T>();
        let mut w = 0usize;
        let mut outer_offs = Vec::with_capacity(outer);
        outer_walk.for_rows(0, outer_walk.rows(), |_, offs| {
            for j in 0..outer_walk.inner_len() {
                outer_offs.push(offs[0] + j as isize * outer_walk.inner_strides()[0]);
            }
        });
        for &ob in &outer_offs {
            for &k in &ids {
                let base = ob + k as isize * ast;
                inner.for_rows(0, inner.rows(), |_, offs| {
                    for i in 0..m as isize {
                        // SAFETY: base + offs + i*istride is an element of a; w < o.size().
                        unsafe { *dst.add(w) = *src.offset(base + offs[0] + i * istride) };
                        w += 1;
                    }
                });
            }
        }
    });
    Ok(o)
}

/// Walks the output shape with a's strides (axis stride zeroed) and the indices' strides.
fn along_walk(a: &ArrayData, idx: &ArrayData, axis: usize, shape: &[usize]) -> (Walk<3>, isize) {
    let mut sa = broadcast_strides(&a.layout.shape, &a.layout.strides, shape);
    let ast = a.layout.strides[axis];
    sa[axis] = 0;
    let si = broadcast_strides(&idx.layout.shape, &idx.layout.strides, shape);
    let so = row_major_strides(shape);
    (Walk::<3>::new(shape, [&so, &sa, &si]), ast)
}

pub(crate) fn take_along(
    axis: usize,
    a: &ArrayData,
    idx: &ArrayData,
    out: &Meta,
) -> Result<ArrayData> {
    let o = ArrayData::alloc(out.dtype, &out.shape)?;
    if o.size() == 0 {
        return Ok(o);
    }
    let size = a.layout.shape[axis];
    let (walk, ast) = along_walk(a, idx, axis, &out.shape);
    let n = walk.inner_len();
    let [_, ia, ii] = walk.inner_strides();
    let mut bad: Option<i64> = None;
    crate::dispatch_dtype!(a.dtype, T => crate::dispatch_dtype!(idx.dtype, I => {
        let (src, ip, dst) = (a.ptr::<T>(), idx.ptr::<I>(), o.mut_ptr::<T>());
        walk.for_rows(0, walk.rows(), |_, offs| {
            for i in 0..n as isize {
                // SAFETY: offsets from layouts; the index is checked before use.
                unsafe {
                    let k = (*ip.offset(offs[2] + i * ii)).to_i64();
                    let k2 = if k < 0 { k + size as i64 } else { k };
                    if k2 < 0 || k2 >= size as i64 {
                        bad.get_or_insert(k);
                        *dst.offset(offs[0] + i) = T::default();
                        continue;
                    }
                    *dst.offset(offs[0] + i) = *src.offset(offs[1] + i * ia + k2 as isize * ast);
                }
            }
        });
    }));
    if let Some(k) = bad {
        return Err(Error::Invalid {
            op: "take_along_axis",
            msg: format!("index {k} is out of range for an axis of size {size}"),
        });
    }
    Ok(o)
}

pub(crate) fn scatter_along(
    axis: usize,
    mode: ScatterMode,
    a: &ArrayData,
    idx: &ArrayData,
    vals: &ArrayData,
    out: &Meta,
) -> Result<ArrayData> {
    let o = if a.is_donatable() {
        a.clone()
    } else {
        super::copy::contiguous(a)?
    };
    let size = a.layout.shape[axis];
    let upd_shape = idx.layout.shape.clone();
    if upd_shape.contains(&0) {
        return Ok(o);
    }
    let ost = row_major_strides(&out.shape);
    // The output broadcast to the update shape: where the array has size 1 but the indices
    // more, that one element is written again and again (as NumPy does), never past the end.
    let mut so = broadcast_strides(&out.shape, &ost, &upd_shape);
    so[axis] = 0;
    let sv = broadcast_strides(&vals.layout.shape, &vals.layout.strides, &upd_shape);
    let si = idx.layout.strides.clone();
    // No merging across axis: keep the full shape so the axis offset is explicit.
    let walk = Walk::<3> {
        shape: upd_shape.clone(),
        strides: [so, sv, si],
    };
    let walk = if walk.shape.is_empty() {
        Walk::<3>::new(&[], [&[], &[], &[]])
    } else {
        walk
    };
    let n = walk.inner_len();
    let [io, iv, ii] = walk.inner_strides();
    let mut bad: Option<i64> = None;
    crate::dispatch_dtype!(a.dtype, T => crate::dispatch_dtype!(idx.dtype, I => {
        let (vp, ip, dst) = (vals.ptr::<T>(), idx.ptr::<I>(), o.mut_ptr::<T>());
        walk.for_rows(0, walk.rows(), |_, offs| {
            for i in 0..n as isize {
                // SAFETY: offsets from layouts; the index is checked before use.
                unsafe {
                    let k = (*ip.offset(offs[2] + i * ii)).to_i64();
                    let k2 = if k < 0 { k + size as i64 } else { k };
                    if k2 < 0 || k2 >= size as i64 {
                        bad.get_or_insert(k);
                        continue;
                    }
                    let d = dst.offset(offs[0] + i * io + k2 as isize * ost[axis]);
                    let v = *vp.offset(offs[1] + i * iv);
                    *d = match mode {
                        ScatterMode::Set => v,
                        ScatterMode::Add => add_elem(*d, v),
                    };
                }
            }
        });
    }));
    if let Some(k) = bad {
        return Err(Error::Invalid {
            op: "scatter",
            msg: format!("index {k} is out of range for an axis of size {size}"),
        });
    }
    Ok(o)
}

#[inline(always)]
fn add_elem<T: Element>(a: T, b: T) -> T {
    match T::DTYPE {
        Dtype::Bool => T::from_i64((a.to_i64() | b.to_i64()) & 1),
        d if d.is_float() => T::from_f64(a.to_f64() + b.to_f64()),
        _ => T::from_i64(a.to_i64().wrapping_add(b.to_i64())),
    }
}

pub(crate) fn slice_update(
    a: &ArrayData,
    upd: &ArrayData,
    start: &[usize],
    step: &[isize],
) -> Result<ArrayData> {
    let o = if a.is_donatable() {
        a.clone()
    } else {
        super::copy::contiguous(a)?
    };
    if upd.size() == 0 {
        return Ok(o);
    }
    let ost = row_major_strides(&o.layout.shape);
    let mut off = 0isize;
    for i in 0..start.len() {
        off += start[i] as isize * ost[i];
    }
    let dst_strides: Vec<isize> = (0..ost.len())
        .map(|i| ost[i] * step.get(i).copied().unwrap_or(1))
        .collect();
    let upd = if upd.dtype == a.dtype {
        ensure_contiguous(upd)?
    } else {
        // Converted as `astype` converts (the op leaves the conversion to this kernel).
        super::copy::convert(upd, a.dtype)?
    };
    crate::dispatch_dtype!(a.dtype, T => {
        // SAFETY: the window (start, step, update shape) lies inside the output (checked by ops).
        let base = unsafe { o.mut_ptr::<T>().offset(off) };
        copy_into::<T>(&upd, base, &dst_strides);
    });
    Ok(o)
}
