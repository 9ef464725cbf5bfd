//! How a fused kernel reads one input: straight from memory when it has one value per element in
//! row-major order, as one value when it has a single element, and otherwise (any NumPy broadcast
//! against the kernel's shape: a bias, a column such as `x - max(x, -1, keepdims)`, or a strided
//! view) staged chunk by chunk into a scratch row that the steps then read like any other.
//! Staging walks the operand with its own strides (0 along broadcast dims), so a view is never
//! copied out as a whole first.

use super::strided::{self, broadcast_strides};
use crate::error::{Error, Result};
use crate::layout::{ArrayData, Dims};

/// How the kernel reads one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Operand {
    /// One value per element, row-major contiguous.
    Full,
    /// One value for every element.
    Scalar,
    /// Staged per chunk into scratch row `row` (counted after the steps' rows).
    Staged { row: usize, walk: Walk },
}

/// The operand's element strides over the kernel's shape (0 along broadcast dims), with the dims
/// that are contiguous in both merged and the dims of size 1 dropped (`strided::Walk`'s merge:
/// at least one dim, `[1]` with stride 1 when every dim is 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Walk {
    shape: Dims<usize>,
    strides: Dims<isize>,
}

/// Classifies input `x` of a kernel over `full` (`n` elements); `next_row` numbers staged rows.
pub(super) fn classify(x: &ArrayData, full: &[usize], next_row: &mut usize) -> Result<Operand> {
    let n: usize = full.iter().product();
    if x.size() == 1 {
        return Ok(Operand::Scalar);
    }
    let walk = Walk::new(x, full).ok_or_else(|| Error::Invalid {
        op: "fused",
        msg: format!(
            "an input of shape {:?} does not broadcast to the kernel's shape {full:?}",
            x.shape()
        ),
    })?;
    if x.size() == n && x.is_contiguous() {
        return Ok(Operand::Full);
    }
    *next_row += 1;
    Ok(Operand::Staged {
        row: *next_row - 1,
        walk,
    })
}

impl Walk {
    /// `None` when `x` does not broadcast to `full` (NumPy rules: right-aligned, each dim equal
    /// or 1; extra leading dims of `x` only as 1s, as a keepdims result of higher rank has).
    fn new(x: &ArrayData, full: &[usize]) -> Option<Walk> {
        let skip = x.layout.ndim().saturating_sub(full.len());
        let (xs, xst) = (&x.shape()[skip..], &x.layout.strides[skip..]);
        let lead = full.len() - xs.len();
        let broadcasts = x.shape()[..skip].iter().all(|&d| d == 1)
            && xs
                .iter()
                .zip(&full[lead..])
                .all(|(&d, &f)| d == f || d == 1);
        if !broadcasts {
            return None;
        }
        let strides = broadcast_strides(xs, xst, full);
        let merged = strided::Walk::<1>::new(full, [&strides]);
        let [strides] = merged.strides;
        Some(Walk {
            shape: merged.shape,
            strides,
        })
    }

    /// The multi-index of kernel element `start` in the merged dims, and its element offset.
    fn locate(&self, start: usize) -> (Dims<usize>, isize) {
        let mut idx: Dims<usize> = Dims::from_elem(0, self.shape.len());
        let (mut rest, mut off) = (start, 0isize);
        for d in (0..self.shape.len()).rev() {
            idx[d] = rest % self.shape[d];
            rest /= self.shape[d];
            off += idx[d] as isize * self.strides[d];
        }
        (idx, off)
    }

    /// Where the operand's values for kernel elements `start..start + len` can be read in
    /// place, as a pointer and an element stride of 0 (one repeated value, a column) or 1 (a
    /// run, as a row slice or a bias): when the chunk lies inside one run of the innermost dim.
    /// `None`: stage it ([`Walk::stage`]).
    pub(super) fn direct(
        &self,
        base: *const f32,
        start: usize,
        len: usize,
    ) -> Option<(*const f32, isize)> {
        let rank = self.shape.len();
        let (inner, inner_st) = (self.shape[rank - 1], self.strides[rank - 1]);
        if !(inner_st == 0 || inner_st == 1) || start % inner + len > inner {
            return None;
        }
        Some((base.wrapping_offset(self.locate(start).1), inner_st))
    }

    /// Writes the operand's values for kernel elements `start..start + row.len()` into `row`.
    ///
    /// # Safety
    /// `base` points at the operand's first element, and the operand's strides (as given to
    /// [`classify`]) stay inside its buffer for every element of the kernel's shape.
    pub(super) unsafe fn stage(&self, base: *const f32, start: usize, row: &mut [f32]) {
        let rank = self.shape.len();
        let (mut idx, mut off) = self.locate(start);
        let (inner, inner_st) = (self.shape[rank - 1], self.strides[rank - 1]);
        let mut done = 0;
        while done < row.len() {
            let run = (inner - idx[rank - 1]).min(row.len() - done);
            let dst = &mut row[done..done + run];
            // SAFETY: elements off, off + inner_st, ... of this run are the operand's (caller).
            unsafe {
                let p = base.offset(off);
                match inner_st {
                    0 => dst.fill(*p),
                    1 => dst.copy_from_slice(std::slice::from_raw_parts(p, run)),
                    s => {
                        for (i, v) in dst.iter_mut().enumerate() {
                            *v = *p.offset(i as isize * s);
                        }
                    }
                }
            }
            done += run;
            // Advance the multi-index by `run` (the inner dim wraps at most once).
            off += run as isize * inner_st;
            idx[rank - 1] += run;
            let mut d = rank - 1;
            while idx[d] == self.shape[d] && d > 0 {
                off -= self.shape[d] as isize * self.strides[d];
                idx[d] = 0;
                d -= 1;
                idx[d] += 1;
                off += self.strides[d];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;
    use crate::memory::Buffer;
    use std::sync::Arc;

    fn data(vals: &[f32], shape: &[usize], strides: &[isize]) -> ArrayData {
        let buf = Buffer::alloc(std::mem::size_of_val(vals)).unwrap();
        // SAFETY: the buffer holds vals.len() f32.
        unsafe {
            std::ptr::copy_nonoverlapping(vals.as_ptr(), buf.as_ptr() as *mut f32, vals.len())
        };
        ArrayData {
            buffer: Arc::new(buf),
            dtype: crate::Dtype::F32,
            layout: Layout::new(shape, strides, 0),
        }
    }

    /// Every chunking of the kernel's elements stages what a plain index walk gives.
    fn check(x: &ArrayData, full: &[usize], want: impl Fn(&[usize]) -> f32) {
        let n: usize = full.iter().product();
        let mut expect = Vec::with_capacity(n);
        for i in 0..n {
            let (mut rest, mut idx) = (i, vec![0; full.len()]);
            for d in (0..full.len()).rev() {
                idx[d] = rest % full[d];
                rest /= full[d];
            }
            expect.push(want(&idx));
        }
        let mut rows = 0;
        let Operand::Staged { walk, .. } = classify(x, full, &mut rows).unwrap() else {
            panic!("{:?} over {full:?} should be staged", x.shape());
        };
        for chunk in [1, 2, 3, 5, 7, n] {
            let mut got = vec![f32::NAN; n];
            let mut read = vec![f32::NAN; n];
            for s in (0..n).step_by(chunk) {
                let e = (s + chunk).min(n);
                // SAFETY: the test arrays hold every element their strides reach.
                unsafe { walk.stage(x.ptr::<f32>(), s, &mut got[s..e]) };
                // Read in place where the chunk allows it, staged otherwise: the same values.
                match walk.direct(x.ptr::<f32>(), s, e - s) {
                    Some((p, st)) => {
                        for (i, v) in read[s..e].iter_mut().enumerate() {
                            // SAFETY: as above.
                            *v = unsafe { *p.offset(i as isize * st) };
                        }
                    }
                    None => read[s..e].copy_from_slice(&got[s..e]),
                }
            }
            assert_eq!(
                got,
                expect,
                "{:?} over {full:?}, chunks of {chunk}",
                x.shape()
            );
            assert_eq!(read, expect, "{:?} over {full:?}, in place", x.shape());
        }
    }

    #[test]
    fn broadcasts_and_strided_views_stage_as_an_index_walk() {
        let v: Vec<f32> = (0..24).map(|i| i as f32).collect();
        // A column [3, 1] over [3, 4]: x[i, 0].
        check(&data(&v, &[3, 1], &[1, 1]), &[3, 4], |i| i[0] as f32);
        // A bias [4] over [2, 3, 4].
        check(&data(&v, &[4], &[1]), &[2, 3, 4], |i| i[2] as f32);
        // A middle broadcast [2, 1, 4] over [2, 3, 4].
        check(&data(&v, &[2, 1, 4], &[4, 4, 1]), &[2, 3, 4], |i| {
            (i[0] * 4 + i[2]) as f32
        });
        // A transposed full-size view [4, 3] of a [3, 4] buffer.
        check(&data(&v, &[4, 3], &[1, 4]), &[4, 3], |i| {
            (i[1] * 4 + i[0]) as f32
        });
        // A keepdims result of higher rank with a leading 1: [1, 3, 1] over [3, 5].
        check(&data(&v, &[1, 3, 1], &[3, 1, 1]), &[3, 5], |i| i[0] as f32);
        // A row [1, 5] over [3, 5] with a size-1 kernel dim in front: [1, 3, 5].
        check(&data(&v, &[1, 5], &[5, 1]), &[1, 3, 5], |i| i[2] as f32);
    }

    #[test]
    fn what_does_not_broadcast_is_an_error_and_full_inputs_are_read_in_place() {
        let v: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let mut rows = 0;
        assert!(classify(&data(&v, &[3, 2], &[2, 1]), &[3, 4], &mut rows).is_err());
        assert!(classify(&data(&v, &[2, 3, 1], &[3, 1, 1]), &[3, 4], &mut rows).is_err());
        assert_eq!(
            classify(&data(&v, &[3, 4], &[4, 1]), &[3, 4], &mut rows).unwrap(),
            Operand::Full
        );
        assert_eq!(
            classify(&data(&v, &[1], &[1]), &[3, 4], &mut rows).unwrap(),
            Operand::Scalar
        );
        assert_eq!(rows, 0);
    }
}
