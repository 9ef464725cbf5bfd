//! Evaluated data: a shared buffer plus a strided layout. Views (transpose, slice, broadcast,
//! reshape of contiguous data) make a new `ArrayData` over the same buffer.

use crate::dtype::Dtype;
use crate::memory::Buffer;
use std::sync::Arc;

/// A shape or strides: up to five values inline, so copying a layout (every kernel input is a
/// copy of its array's data) does not allocate for arrays of up to five dimensions (more spill
/// to the heap: correct, a little slower).
///
/// Why five and not six: with five (and smallvec's `union` layout, no enum tag) an
/// [`ArrayData`] is 120 bytes, under the 128 bytes up to which the compiler moves a value with
/// inline loads and stores; at 152 bytes every move of one (a node's inputs are gathered,
/// donated and returned by value) was a `memmove` call: 27% of the time of building and
/// evaluating a one-op graph. Measured: one `all_sum` node built and evaluated in-process on a
/// no-op communicator, 417 -> 341 ns an op (best of ten runs, Zen 3).
pub type Dims<T> = smallvec::SmallVec<[T; 5]>;

/// A copy of `d`. Dims held inline (up to five values: every array but the rare 6-d one) are
/// copied as the bytes they are: `SmallVec`'s own `clone` pushes the values one at a time and
/// `from_slice` calls `memcpy` for a few bytes, and every kernel input's layout is a copy
/// (2-5% of the instructions of building and evaluating a one-op graph).
#[inline]
pub fn clone_dims<T: Copy>(d: &Dims<T>) -> Dims<T> {
    if d.spilled() {
        return Dims::from_slice(d);
    }
    // SAFETY: an inline `SmallVec` of `Copy` values owns nothing outside its own bytes (a
    // length and an inline array; no heap block, no pointer into itself), so a bitwise copy
    // is an independent, valid value; dropping both frees nothing.
    unsafe { std::ptr::read(d) }
}

/// A shape as a node takes it. Slices are copied with one `memcpy` (`Dims::from_slice`):
/// smallvec's `From<&[T]>` pushes element by element, which was ~2% of the time of building
/// and evaluating a one-op graph.
pub(crate) trait IntoDims {
    fn into_dims(self) -> Dims<usize>;
}

impl IntoDims for &[usize] {
    fn into_dims(self) -> Dims<usize> {
        Dims::from_slice(self)
    }
}

impl IntoDims for Vec<usize> {
    fn into_dims(self) -> Dims<usize> {
        Dims::from_slice(&self)
    }
}

impl IntoDims for Dims<usize> {
    fn into_dims(self) -> Dims<usize> {
        self
    }
}

/// Shape, strides (in elements, may be negative or zero) and offset (in elements) into a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    pub shape: Dims<usize>,
    pub strides: Dims<isize>,
    pub offset: usize,
}

/// Every input of every node evaluated is cloned with its layout: with both dims inline (all
/// but 6-d arrays) the whole layout is copied as the bytes it is (a few vector moves; field by
/// field through [`clone_dims`] it was ~57 instructions, 4% of building and evaluating a
/// one-op graph).
impl Clone for Layout {
    #[inline]
    fn clone(&self) -> Layout {
        if !self.shape.spilled() && !self.strides.spilled() {
            // SAFETY: as in `clone_dims`: inline `SmallVec`s of `Copy` values and a `usize`
            // own nothing outside their bytes, so a bitwise copy is an independent value.
            return unsafe { std::ptr::read(self) };
        }
        Layout {
            shape: clone_dims(&self.shape),
            strides: clone_dims(&self.strides),
            offset: self.offset,
        }
    }
}

/// Row-major strides for `shape`.
pub fn row_major_strides(shape: &[usize]) -> Dims<isize> {
    let mut strides = Dims::from_elem(0isize, shape.len());
    let mut acc = 1isize;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc *= shape[i].max(1) as isize;
    }
    strides
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Layout {
        Layout {
            shape: Dims::from_slice(shape),
            strides: row_major_strides(shape),
            offset: 0,
        }
    }

    /// A layout from a shape and strides given as slices.
    pub fn new(shape: &[usize], strides: &[isize], offset: usize) -> Layout {
        Layout {
            shape: Dims::from_slice(shape),
            strides: Dims::from_slice(strides),
            offset,
        }
    }

    pub fn size(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// True when elements are laid out row-major with no gaps (dims of size 1 may have any stride).
    pub fn is_row_contiguous(&self) -> bool {
        self.row_major_len().is_some()
    }

    /// The element count when the elements are laid out row-major with no gaps (as
    /// [`Layout::is_row_contiguous`] decides; an empty array counts as such), else `None`: both
    /// answers from one pass over the dims.
    pub fn row_major_len(&self) -> Option<usize> {
        let mut expect = 1isize;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d == 0 {
                return Some(0);
            }
            if d != 1 {
                if s != expect {
                    return None;
                }
                expect *= d as isize;
            }
        }
        Some(expect as usize)
    }

    /// Strides this layout would have after reshaping to `new_shape` without copying, if possible
    /// (NumPy's rule: each group of merged/split dims must be contiguous among themselves).
    pub fn reshape_strides(&self, new_shape: &[usize]) -> Option<Dims<isize>> {
        if self.size() == 0 || self.is_row_contiguous() {
            return Some(row_major_strides(new_shape));
        }
        // NumPy's no-copy rule: ignoring size-1 dims, split old and new dims into groups with equal
        // products; each old group must be contiguous among itself.
        let old: Vec<(usize, isize)> = self
            .shape
            .iter()
            .copied()
            .zip(self.strides.iter().copied())
            .filter(|&(d, _)| d != 1)
            .collect();
        let new_pos: Vec<usize> = (0..new_shape.len())
            .filter(|&i| new_shape[i] != 1)
            .collect();
        let mut new_strides = Dims::from_elem(0isize, new_shape.len());
        let (mut oi, mut ni) = (0usize, 0usize);
        while oi < old.len() && ni < new_pos.len() {
            let (mut oj, mut nj) = (oi + 1, ni + 1);
            let (mut op, mut np) = (old[oi].0, new_shape[new_pos[ni]]);
            while op != np {
                if np < op {
                    np *= new_shape[*new_pos.get(nj)?];
                    nj += 1;
                } else {
                    op *= old.get(oj)?.0;
                    oj += 1;
                }
            }
            for k in oi..oj - 1 {
                if old[k].1 != old[k + 1].1 * old[k + 1].0 as isize {
                    return None;
                }
            }
            let mut s = old[oj - 1].1;
            for k in (ni..nj).rev() {
                new_strides[new_pos[k]] = s;
                s *= new_shape[new_pos[k]] as isize;
            }
            oi = oj;
            ni = nj;
        }
        if oi != old.len() || ni != new_pos.len() {
            return None;
        }
        Some(new_strides)
    }

    /// Smallest and largest element offsets touched (relative to buffer start), for bounds checks.
    pub fn extent(&self) -> (isize, isize) {
        let mut lo = self.offset as isize;
        let mut hi = self.offset as isize;
        if self.size() == 0 {
            return (lo, lo - 1);
        }
        for (&d, &s) in self.shape.iter().zip(&self.strides) {
            let span = (d as isize - 1) * s;
            if span < 0 {
                lo += span;
            } else {
                hi += span;
            }
        }
        (lo, hi)
    }
}

/// One evaluated array: a buffer, a dtype and a layout.
#[derive(Clone)]
pub struct ArrayData {
    pub buffer: Arc<Buffer>,
    pub dtype: Dtype,
    pub layout: Layout,
}

impl ArrayData {
    /// A fresh row-major array (uninitialised contents).
    pub fn alloc(dtype: Dtype, shape: &[usize]) -> crate::Result<ArrayData> {
        ArrayData::alloc_with(dtype, shape, Buffer::alloc)
    }

    /// [`ArrayData::alloc`] cut from `arena` (long-lived arrays such as a model's weights).
    pub fn alloc_in(
        dtype: Dtype,
        shape: &[usize],
        arena: &crate::memory::Arena,
    ) -> crate::Result<ArrayData> {
        ArrayData::alloc_with(dtype, shape, |bytes| arena.alloc(bytes))
    }

    fn alloc_with(
        dtype: Dtype,
        shape: &[usize],
        alloc: impl FnOnce(usize) -> crate::Result<Buffer>,
    ) -> crate::Result<ArrayData> {
        let n: usize = shape.iter().product();
        let bytes = n
            .checked_mul(dtype.size())
            .ok_or_else(|| crate::Error::OutOfMemory {
                requested: usize::MAX,
                active: crate::memory::active_memory(),
                limit: crate::memory::memory_limit(),
            })?;
        Ok(ArrayData {
            buffer: Arc::new(alloc(bytes)?),
            dtype,
            layout: Layout::contiguous(shape),
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.layout.shape
    }

    pub fn size(&self) -> usize {
        self.layout.size()
    }

    /// Pointer to the element at the layout's offset.
    pub fn ptr<T>(&self) -> *const T {
        // SAFETY: offset is within the buffer for any non-empty layout (checked when views are made).
        unsafe { (self.buffer.as_ptr() as *const T).add(self.layout.offset) }
    }

    pub fn mut_ptr<T>(&self) -> *mut T {
        self.ptr::<T>() as *mut T
    }

    /// Row-major contiguous and starting at its offset: can be read as one slice.
    pub fn is_contiguous(&self) -> bool {
        self.layout.is_row_contiguous()
    }

    /// The elements as a slice, if row-major contiguous.
    pub fn as_slice<T: crate::dtype::Element>(&self) -> Option<&[T]> {
        debug_assert_eq!(T::DTYPE, self.dtype);
        if !self.is_contiguous() {
            return None;
        }
        // SAFETY: contiguous layout of `size` elements within the buffer.
        Some(unsafe { std::slice::from_raw_parts(self.ptr::<T>(), self.size()) })
    }

    /// True when this array is the only user of its buffer and covers it row-major, so a kernel
    /// may write its output in place.
    pub fn is_donatable(&self) -> bool {
        // The cheap tests first: most arrays that fail, fail on the count.
        if Arc::strong_count(&self.buffer) != 1
            || self.layout.offset != 0
            || self.buffer.is_external()
        {
            return false;
        }
        // Row-major over exactly the buffer's bytes.
        self.layout
            .row_major_len()
            .is_some_and(|n| n * self.dtype.size() == self.buffer.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lay(shape: &[usize], strides: &[isize]) -> Layout {
        Layout::new(shape, strides, 0)
    }

    #[test]
    fn donatable_means_sole_owner_of_a_row_major_buffer() {
        let fresh = || ArrayData::alloc(crate::Dtype::F32, &[2, 3]).unwrap();
        assert!(fresh().is_donatable());
        let a = fresh();
        let shared = a.clone();
        assert!(!a.is_donatable() && !shared.is_donatable());
        drop(shared);
        assert!(a.is_donatable());
        let with = |shape: &[usize], strides: &[isize], offset: usize| ArrayData {
            layout: Layout::new(shape, strides, offset),
            ..fresh()
        };
        assert!(with(&[2, 3], &[3, 1], 0).is_donatable());
        assert!(!with(&[3, 2], &[1, 3], 0).is_donatable(), "transposed");
        assert!(
            !with(&[2, 2], &[3, 1], 0).is_donatable(),
            "a part of the buffer"
        );
        assert!(!with(&[2, 3], &[3, 1], 1).is_donatable(), "offset");
        assert!(!with(&[2, 3], &[0, 1], 0).is_donatable(), "broadcast rows");
        assert!(
            with(&[1, 6], &[99, 1], 0).is_donatable(),
            "a unit dim's stride is free"
        );
    }

    #[test]
    fn contiguity() {
        assert!(Layout::contiguous(&[2, 3]).is_row_contiguous());
        assert!(!lay(&[3, 2], &[1, 3]).is_row_contiguous());
        assert!(lay(&[1, 3], &[99, 1]).is_row_contiguous());
    }

    #[test]
    fn reshape_views() {
        // Transposed (3, 2) from (2, 3): cannot flatten without a copy.
        assert_eq!(lay(&[3, 2], &[1, 3]).reshape_strides(&[6]).as_deref(), None);
        // Splitting a strided dim works: (6,) stride 2 -> (2, 3) strides (6, 2).
        assert_eq!(
            lay(&[6], &[2]).reshape_strides(&[2, 3]).as_deref(),
            Some(&[6, 2][..])
        );
        // Merging contiguous dims of a sliced array: (2, 3) strides (8, 1) -> (2, 3, 1).
        assert_eq!(
            lay(&[2, 3], &[8, 1]).reshape_strides(&[2, 3, 1]).as_deref(),
            Some(&[8, 1, 0][..])
        );
        assert_eq!(lay(&[2, 3], &[8, 1]).reshape_strides(&[6]).as_deref(), None);
        assert_eq!(
            lay(&[4, 3], &[1, 4]).reshape_strides(&[2, 2, 3]).as_deref(),
            Some(&[2, 1, 4][..])
        );
    }

    /// Keeps [`ArrayData`] within the 128 bytes the compiler moves inline (see [`Dims`]); a
    /// new field that breaks this costs every op a `memmove`.
    #[test]
    fn array_data_moves_inline() {
        assert!(std::mem::size_of::<ArrayData>() <= 128);
        assert!(std::mem::size_of::<Layout>() <= 112);
    }

    #[test]
    fn cloned_dims_equal_their_source_at_every_length() {
        for n in 0..9 {
            let v: Vec<isize> = (0..n as isize).map(|i| 3 - 7 * i).collect();
            let d = clone_dims(&Dims::from_slice(&v));
            assert_eq!(&d[..], &v[..], "{n} values");
            assert_eq!(d.spilled(), n > 5, "{n} values");
            let l = Layout::new(&vec![2usize; n], &v, 4);
            assert_eq!(l.clone(), l);
        }
    }
}
