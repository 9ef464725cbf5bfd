//! Sorting along an axis: stable, NaN last (as NumPy).

use super::copy::{SendConstPtr, SendPtr};
use super::strided::Walk;
use crate::array::Meta;
use crate::dtype::Element;
use crate::error::Result;
use crate::layout::{ArrayData, row_major_strides};
use std::cmp::Ordering;

#[inline]
fn total_cmp<T: Element + PartialOrd>(a: &T, b: &T) -> Ordering {
    #[allow(clippy::eq_op)]
    let (an, bn) = (a != a, b != b);
    match (an, bn) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(b).unwrap_or(Ordering::Equal),
    }
}

/// Sorted values (`indices == false`) or the sorting permutation (`indices == true`).
pub(crate) fn sort(axis: usize, x: &ArrayData, out: &Meta, indices: bool) -> Result<ArrayData> {
    let o = ArrayData::alloc(out.dtype, &out.shape)?;
    if o.size() == 0 {
        return Ok(o);
    }
    let n = x.layout.shape[axis];
    let st = x.layout.strides[axis];
    let ost = row_major_strides(&out.shape);
    let oax = ost[axis];
    let mut shape = x.layout.shape.clone();
    let mut strides = x.layout.strides.clone();
    let mut ostrides = ost.clone();
    shape.remove(axis);
    strides.remove(axis);
    ostrides.remove(axis);
    let walk = Walk::<2>::new(&shape, [&strides, &ostrides]);
    let [is, ios] = walk.inner_strides();
    crate::dispatch_dtype!(x.dtype, T => {
        let src = SendConstPtr(x.ptr::<T>());
        let dst = SendPtr(o.mut_ptr::<u8>());
        walk.par_rows(1 << 14, &|_, offs, inner| {
            let mut line: Vec<(T, u32)> = Vec::with_capacity(n);
            for j in 0..inner as isize {
                line.clear();
                // SAFETY: offsets inside x and o.
                unsafe {
                    let p = src.get().offset(offs[0] + j * is);
                    for k in 0..n {
                        line.push((*p.offset(k as isize * st), k as u32));
                    }
                    line.sort_by(|a, b| total_cmp(&a.0, &b.0));
                    let q = offs[1] + j * ios;
                    if indices {
                        crate::dispatch_dtype!(out.dtype, I => {
                            let d = dst.get() as *mut I;
                            for (k, &(_, i)) in line.iter().enumerate() {
                                *d.offset(q + k as isize * oax) = I::from_i64(i as i64);
                            }
                        });
                    } else {
                        let d = dst.get() as *mut T;
                        for (k, &(v, _)) in line.iter().enumerate() {
                            *d.offset(q + k as isize * oax) = v;
                        }
                    }
                }
            }
        });
    });
    Ok(o)
}
