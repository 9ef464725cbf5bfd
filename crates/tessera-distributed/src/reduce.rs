//! Element-wise reductions on raw bytes, one loop per dtype: what the ring does with a received
//! chunk. Buffers may be unaligned (receive scratch), so elements are read unaligned; the loops
//! still vectorise.

use half::{bf16, f16};
use tessera_core::Dtype;
use tessera_core::collective::CollectiveReduce;

trait Elem: Copy {
    fn sum(a: Self, b: Self) -> Self;
    fn max(a: Self, b: Self) -> Self;
    fn min(a: Self, b: Self) -> Self;
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            fn sum(a: Self, b: Self) -> Self { a.wrapping_add(b) }
            fn max(a: Self, b: Self) -> Self { if a >= b { a } else { b } }
            fn min(a: Self, b: Self) -> Self { if a <= b { a } else { b } }
        }
    )*};
}
int_elem!(u8, u32, i32, i64);

// NaN propagates, as NumPy's maximum/minimum.
macro_rules! float_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            fn sum(a: Self, b: Self) -> Self { a + b }
            fn max(a: Self, b: Self) -> Self { if a >= b || a.is_nan() { a } else { b } }
            fn min(a: Self, b: Self) -> Self { if a <= b || a.is_nan() { a } else { b } }
        }
    )*};
}
float_elem!(f32, f64);

macro_rules! half_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            fn sum(a: Self, b: Self) -> Self { <$t>::from_f32(a.to_f32() + b.to_f32()) }
            fn max(a: Self, b: Self) -> Self { if a >= b || a.is_nan() { a } else { b } }
            fn min(a: Self, b: Self) -> Self { if a <= b || a.is_nan() { a } else { b } }
        }
    )*};
}
half_elem!(f16, bf16);

/// Bool as bytes 0/1: sum and max are `or`, min is `and`.
#[derive(Clone, Copy)]
struct Bool(u8);
impl Elem for Bool {
    fn sum(a: Self, b: Self) -> Self {
        Bool(((a.0 | b.0) != 0) as u8)
    }
    fn max(a: Self, b: Self) -> Self {
        Bool::sum(a, b)
    }
    fn min(a: Self, b: Self) -> Self {
        Bool((a.0 != 0 && b.0 != 0) as u8)
    }
}

/// `out[i] = f(a[i], b[i])`; `out` may be the same memory as `a`. `f` is a concrete function
/// inlined into the loop (a function pointer would stop it vectorising).
///
/// # Safety
/// `out`, `a`, `b` valid for `n` elements of `T`.
#[inline(always)]
unsafe fn zip<T: Elem>(out: *mut T, a: *const T, b: *const T, n: usize, f: impl Fn(T, T) -> T) {
    for i in 0..n {
        let v = f(a.add(i).read_unaligned(), b.add(i).read_unaligned());
        out.add(i).write_unaligned(v);
    }
}

/// One loop per (dtype, op).
///
/// # Safety
/// As [`zip`].
unsafe fn zip_op<T: Elem>(op: CollectiveReduce, out: *mut T, a: *const T, b: *const T, n: usize) {
    match op {
        CollectiveReduce::Sum => zip(out, a, b, n, T::sum),
        CollectiveReduce::Max => zip(out, a, b, n, T::max),
        CollectiveReduce::Min => zip(out, a, b, n, T::min),
    }
}

/// `out = a (op) b` element-wise over `dtype` elements. `out` and `a` may alias (pass the same
/// pointer); lengths must be equal multiples of the dtype size (callers guarantee it).
///
/// # Safety
/// The three pointers are valid for `bytes` bytes; `b` does not overlap `out`.
unsafe fn reduce_raw(
    op: CollectiveReduce,
    dtype: Dtype,
    out: *mut u8,
    a: *const u8,
    b: *const u8,
    bytes: usize,
) {
    let n = bytes / dtype.size();
    macro_rules! go {
        ($t:ty) => {
            zip_op::<$t>(op, out as *mut $t, a as *const $t, b as *const $t, n)
        };
    }
    match dtype {
        Dtype::Bool => go!(Bool),
        Dtype::U8 => go!(u8),
        Dtype::U32 => go!(u32),
        Dtype::I32 => go!(i32),
        Dtype::I64 => go!(i64),
        Dtype::F16 => go!(f16),
        Dtype::BF16 => go!(bf16),
        Dtype::F32 => go!(f32),
        Dtype::F64 => go!(f64),
    }
}

/// `acc = acc (op) x`.
pub(crate) fn reduce_into(op: CollectiveReduce, dtype: Dtype, acc: &mut [u8], x: &[u8]) {
    let n = acc.len().min(x.len());
    // SAFETY: both slices hold at least n bytes; `x` is a distinct borrow.
    unsafe { reduce_raw(op, dtype, acc.as_mut_ptr(), acc.as_ptr(), x.as_ptr(), n) }
}

/// `acc = x (op) acc`: `x` as the left operand (max, min and NaN payloads are not symmetric).
pub(crate) fn reduce_into_after(op: CollectiveReduce, dtype: Dtype, acc: &mut [u8], x: &[u8]) {
    let n = acc.len().min(x.len());
    // SAFETY: both slices hold at least n bytes; `out` and `b` are the same memory, which the
    // element-wise loop reads before it writes.
    unsafe { reduce_raw(op, dtype, acc.as_mut_ptr(), x.as_ptr(), acc.as_ptr(), n) }
}

/// `out = a (op) b`.
pub(crate) fn reduce_to(op: CollectiveReduce, dtype: Dtype, out: &mut [u8], a: &[u8], b: &[u8]) {
    let n = out.len().min(a.len()).min(b.len());
    // SAFETY: all three hold at least n bytes; `out` is a distinct mutable borrow.
    unsafe { reduce_raw(op, dtype, out.as_mut_ptr(), a.as_ptr(), b.as_ptr(), n) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T: Copy>(v: &[T]) -> Vec<u8> {
        let n = std::mem::size_of_val(v);
        // SAFETY: plain-old-data values viewed as bytes.
        unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, n) }.to_vec()
    }

    #[test]
    fn reductions_per_dtype() {
        let mut a = bytes(&[1.0f32, f32::NAN, -3.0]);
        reduce_into(
            CollectiveReduce::Max,
            Dtype::F32,
            &mut a,
            &bytes(&[2.0f32, 0.0, -4.0]),
        );
        let r: Vec<f32> = a
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(r[0], 2.0);
        assert!(r[1].is_nan());
        assert_eq!(r[2], -3.0);

        let mut a = bytes(&[i64::MAX, -5]);
        reduce_into(
            CollectiveReduce::Sum,
            Dtype::I64,
            &mut a,
            &bytes(&[1i64, 2]),
        );
        assert_eq!(a, bytes(&[i64::MIN, -3]));

        let mut out = vec![0u8; 3];
        reduce_to(
            CollectiveReduce::Min,
            Dtype::Bool,
            &mut out,
            &[1, 1, 0],
            &[1, 0, 0],
        );
        assert_eq!(out, vec![1, 0, 0]);

        let mut a = bytes(&[bf16::from_f32(1.5)]);
        reduce_into(
            CollectiveReduce::Sum,
            Dtype::BF16,
            &mut a,
            &bytes(&[bf16::from_f32(2.25)]),
        );
        assert_eq!(a, bytes(&[bf16::from_f32(3.75)]));
    }
}
