//! Copies and conversions: strided -> row-major, dtype casts, and the row-mapping helper every
//! element-wise kernel uses.

use super::simd;
use super::strided::{PAR_MIN_ELEMS, Walk};
use crate::dtype::{Dtype, Element};
use crate::error::Result;
use crate::layout::{ArrayData, row_major_strides};
use half::{bf16, f16};

/// Pointer wrapper that may cross threads: each task writes a disjoint part of the output.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub *mut T);
// SAFETY: tasks write disjoint ranges; see each use.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole Send wrapper, not the raw field).
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }
}

#[derive(Clone, Copy)]
pub(crate) struct SendConstPtr<T>(pub *const T);
// SAFETY: read-only access.
unsafe impl<T> Send for SendConstPtr<T> {}
unsafe impl<T> Sync for SendConstPtr<T> {}

impl<T> SendConstPtr<T> {
    #[inline(always)]
    pub fn get(self) -> *const T {
        self.0
    }
}

/// For every element of `x` in row-major order, runs `row(src, src_stride, dst, n)` over rows of
/// `out` (fresh or donated, row-major, same shape). Splits rows across threads for big arrays.
pub(crate) fn map_rows<S: Element, D: Element>(
    x: &ArrayData,
    out: &ArrayData,
    row: impl Fn(*const S, isize, *mut D, usize) + Sync,
) {
    let shape = &x.layout.shape;
    let dst_strides = row_major_strides(shape);
    let walk = Walk::<2>::new(shape, [&dst_strides, &x.layout.strides]);
    let [_, s_inner] = walk.inner_strides();
    let src = SendConstPtr(x.ptr::<S>());
    let dst = SendPtr(out.mut_ptr::<D>());
    walk.par_rows(PAR_MIN_ELEMS, &|_, offs, len| {
        let (src, dst) = (src, dst);
        // SAFETY: offsets come from the layouts of x and out, which lie inside their buffers.
        unsafe {
            row(
                src.get().offset(offs[1]),
                s_inner,
                dst.get().offset(offs[0]),
                len,
            )
        }
    });
}

super::simd::multiversion! {
    /// `dst[i] = f(src[i * stride])` for i < n, vectorised at the CPU's best width.
    pub(crate) unsafe fn map_row[S: Copy, D: Copy, F: Fn(S) -> D](s: *const S, st: isize, d: *mut D, n: usize, f: F) {
        if st == 1 && d as *const u8 == s as *const u8 {
            // In place (a donated input, or a fused kernel's scratch row). Reading through the
            // destination pointer itself tells LLVM the two are one: with two pointers its
            // overlap check fails at run time and the scalar loop runs (measured 10x slower).
            let s = d as *const S;
            for i in 0..n {
                *d.add(i) = f(*s.add(i));
            }
        } else if st == 1 {
            for i in 0..n {
                *d.add(i) = f(*s.add(i));
            }
        } else if st == 0 {
            let v = f(*s);
            for i in 0..n {
                *d.add(i) = v;
            }
        } else {
            for i in 0..n {
                *d.add(i) = f(*s.offset(i as isize * st));
            }
        }
    }
}

/// bf16 <-> f32 without branches (so loops vectorise). Rounds to nearest even; NaN stays NaN.
#[inline(always)]
pub(crate) fn bf16_to_f32(x: bf16) -> f32 {
    f32::from_bits((x.to_bits() as u32) << 16)
}

#[inline(always)]
pub(crate) fn f32_to_bf16(x: f32) -> bf16 {
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    let nan = ((b >> 16) | 0x40) as u16;
    bf16::from_bits(if x.is_nan() { nan } else { rounded })
}

/// Converts a half-precision row to f32 in `buf`.
#[inline(always)]
pub(crate) unsafe fn half_to_f32<T: Element>(s: *const T, st: isize, buf: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    let n = buf.len();
    if T::DTYPE == Dtype::F16 && st == 1 {
        let src = std::slice::from_raw_parts(s as *const f16, n);
        src.convert_to_f32_slice(buf);
    } else if T::DTYPE == Dtype::BF16 {
        let s = s as *const bf16;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = bf16_to_f32(*s.offset(i as isize * st));
        }
    } else {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (*s.offset(i as isize * st)).to_f32();
        }
    }
}

/// Writes f32 values into a half-precision row.
#[inline(always)]
pub(crate) unsafe fn f32_to_half<T: Element>(buf: &[f32], d: *mut T) {
    use half::slice::HalfFloatSliceExt;
    if T::DTYPE == Dtype::F16 {
        let dst = std::slice::from_raw_parts_mut(d as *mut f16, buf.len());
        dst.convert_from_f32_slice(buf);
    } else if T::DTYPE == Dtype::BF16 {
        let d = d as *mut bf16;
        for (i, &b) in buf.iter().enumerate() {
            *d.add(i) = f32_to_bf16(b);
        }
    } else {
        for (i, &b) in buf.iter().enumerate() {
            *d.add(i) = T::from_f32(b);
        }
    }
}

/// Chunk size for half-precision rows staged through f32 on the stack.
pub(crate) const HALF_CHUNK: usize = 512;

/// Element conversion between any two dtypes: float -> int truncates toward zero and saturates
/// (NaN -> 0); int -> int wraps like a C cast; anything -> bool is `!= 0`.
#[inline(always)]
pub(crate) fn cast<S: Element, D: Element>(x: S) -> D {
    if S::DTYPE.is_float() || D::DTYPE.is_float() {
        D::from_f64(x.to_f64())
    } else {
        D::from_i64(x.to_i64())
    }
}

/// A fresh row-major copy of `x` with dtype `to`.
pub(crate) fn convert(x: &ArrayData, to: Dtype) -> Result<ArrayData> {
    let out = ArrayData::alloc(to, &x.layout.shape)?;
    if x.size() == 0 {
        return Ok(out);
    }
    crate::dispatch_dtype!(x.dtype, S => crate::dispatch_dtype!(to, D => convert_typed::<S, D>(x, &out)));
    Ok(out)
}

fn convert_typed<S: Element, D: Element>(x: &ArrayData, out: &ArrayData) {
    if S::DTYPE == D::DTYPE {
        map_rows::<S, S>(x, out, |s, st, d, n| unsafe {
            if st == 1 {
                std::ptr::copy_nonoverlapping(s, d, n)
            } else {
                map_row(s, st, d, n, |v| v)
            }
        });
    } else if S::DTYPE == Dtype::F32 && matches!(D::DTYPE, Dtype::F16 | Dtype::BF16) {
        map_rows::<S, D>(x, out, |s, st, d, n| unsafe {
            let mut buf = [0f32; HALF_CHUNK];
            let mut i = 0;
            while i < n {
                let m = (n - i).min(HALF_CHUNK);
                for (j, b) in buf[..m].iter_mut().enumerate() {
                    *b = (*s.offset((i + j) as isize * st)).to_f32();
                }
                simd::dispatch(|| f32_to_half::<D>(&buf[..m], d.add(i)));
                i += m;
            }
        });
    } else if D::DTYPE == Dtype::F32 && matches!(S::DTYPE, Dtype::F16 | Dtype::BF16) {
        map_rows::<S, D>(x, out, |s, st, d, n| unsafe {
            let dst = std::slice::from_raw_parts_mut(d as *mut f32, n);
            simd::dispatch(|| half_to_f32::<S>(s, st, dst));
        });
    } else {
        map_rows::<S, D>(x, out, |s, st, d, n| unsafe {
            map_row(s, st, d, n, |v| cast::<S, D>(v))
        });
    }
}

/// A row-major copy of `x` (same dtype).
pub(crate) fn contiguous(x: &ArrayData) -> Result<ArrayData> {
    convert(x, x.dtype)
}

/// `x` as row-major f32 (no copy when it already is): what the f32-only kernels take.
pub(crate) fn f32_contiguous(x: &ArrayData) -> Result<ArrayData> {
    if x.dtype == Dtype::F32 {
        ensure_contiguous(x)
    } else {
        ensure_contiguous(&convert(x, Dtype::F32)?)
    }
}

/// `x` itself when row-major, else a row-major copy.
pub(crate) fn ensure_contiguous(x: &ArrayData) -> Result<ArrayData> {
    if x.is_contiguous() {
        Ok(x.clone())
    } else {
        contiguous(x)
    }
}

/// Visits every element of `x` in row-major order (serial; for reading results out).
pub(crate) fn for_each_element<T: Element>(x: &ArrayData, mut f: impl FnMut(T)) {
    debug_assert_eq!(T::DTYPE, x.dtype);
    if x.size() == 0 {
        return;
    }
    let walk = Walk::<1>::new(&x.layout.shape, [&x.layout.strides]);
    let inner = walk.inner_len();
    let [st] = walk.inner_strides();
    let base = x.ptr::<T>();
    walk.for_rows(0, walk.rows(), |_, offs| {
        for i in 0..inner {
            // SAFETY: the offset is inside the layout's extent.
            f(unsafe { *base.offset(offs[0] + i as isize * st) });
        }
    });
}
