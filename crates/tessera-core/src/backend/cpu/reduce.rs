//! Reductions (sum, prod, max, min, all, any over any axes), arg-reductions and scans.
//!
//! The input is viewed as (kept dims..., reduced dims...) by permuting strides, never by copying.
//! Three strategies, chosen by layout:
//! - the reduced block's innermost dim is contiguous: each output reduces rows with several
//!   accumulators (vectorised; also more accurate than one running sum);
//! - a kept dim is the contiguous one (e.g. summing axis 0 of a row-major matrix): whole output
//!   rows are accumulated at once, which streams memory in order;
//! - anything else: element-wise walk.
//!
//! Half-precision inputs accumulate in f32 and round once at the end.

use super::copy::{SendConstPtr, SendPtr, bf16_to_f32};
use super::pool;
use super::simd;
use super::strided::Walk;
use crate::array::Meta;
use crate::dtype::{Dtype, Element};
use crate::error::{Error, Result};
use crate::layout::ArrayData;
use crate::primitive::{ArgReduceOp, ReduceOp, ScanOp};

/// Accumulation type and combine rule per element type.
trait Accum: Element {
    type A: Copy + Send + Sync + PartialOrd;
    fn load(self) -> Self::A;
    fn store(a: Self::A) -> Self;
    fn zero() -> Self::A;
    fn one() -> Self::A;
    fn lowest() -> Self::A;
    fn highest() -> Self::A;
    fn add(a: Self::A, b: Self::A) -> Self::A;
    fn mul(a: Self::A, b: Self::A) -> Self::A;
    fn is_nan(a: Self::A) -> bool;
}

macro_rules! accum_float {
    ($t:ty, $a:ty, $load:expr, $store:expr) => {
        impl Accum for $t {
            type A = $a;
            #[inline(always)]
            fn load(self) -> $a {
                let f: fn($t) -> $a = $load;
                f(self)
            }
            #[inline(always)]
            fn store(a: $a) -> $t {
                let f: fn($a) -> $t = $store;
                f(a)
            }
            #[inline(always)]
            fn zero() -> $a {
                0.0
            }
            #[inline(always)]
            fn one() -> $a {
                1.0
            }
            #[inline(always)]
            fn lowest() -> $a {
                <$a>::NEG_INFINITY
            }
            #[inline(always)]
            fn highest() -> $a {
                <$a>::INFINITY
            }
            #[inline(always)]
            fn add(a: $a, b: $a) -> $a {
                a + b
            }
            #[inline(always)]
            fn mul(a: $a, b: $a) -> $a {
                a * b
            }
            #[inline(always)]
            fn is_nan(a: $a) -> bool {
                a != a
            }
        }
    };
}
accum_float!(f32, f32, |x| x, |a| a);
accum_float!(f64, f64, |x| x, |a| a);
accum_float!(half::bf16, f32, bf16_to_f32, super::copy::f32_to_bf16);
accum_float!(half::f16, f32, half::f16::to_f32, half::f16::from_f32);

macro_rules! accum_int {
    ($t:ty) => {
        impl Accum for $t {
            type A = $t;
            #[inline(always)]
            fn load(self) -> $t {
                self
            }
            #[inline(always)]
            fn store(a: $t) -> $t {
                a
            }
            #[inline(always)]
            fn zero() -> $t {
                0
            }
            #[inline(always)]
            fn one() -> $t {
                1
            }
            #[inline(always)]
            fn lowest() -> $t {
                <$t>::MIN
            }
            #[inline(always)]
            fn highest() -> $t {
                <$t>::MAX
            }
            #[inline(always)]
            fn add(a: $t, b: $t) -> $t {
                a.wrapping_add(b)
            }
            #[inline(always)]
            fn mul(a: $t, b: $t) -> $t {
                a.wrapping_mul(b)
            }
            #[inline(always)]
            fn is_nan(_: $t) -> bool {
                false
            }
        }
    };
}
accum_int!(u8);
accum_int!(u32);
accum_int!(i32);
accum_int!(i64);

impl Accum for bool {
    type A = bool;
    fn load(self) -> bool {
        self
    }
    fn store(a: bool) -> bool {
        a
    }
    fn zero() -> bool {
        false
    }
    fn one() -> bool {
        true
    }
    fn lowest() -> bool {
        false
    }
    fn highest() -> bool {
        true
    }
    fn add(a: bool, b: bool) -> bool {
        a | b
    }
    fn mul(a: bool, b: bool) -> bool {
        a & b
    }
    fn is_nan(_: bool) -> bool {
        false
    }
}

#[derive(Clone, Copy)]
enum Combine {
    Sum,
    Prod,
    Max,
    Min,
}

#[inline(always)]
fn combine<T: Accum>(c: Combine, a: T::A, b: T::A) -> T::A {
    match c {
        Combine::Sum => T::add(a, b),
        Combine::Prod => T::mul(a, b),
        // NaN wins, as NumPy's max/min.
        Combine::Max => {
            if T::is_nan(a) || a > b {
                a
            } else {
                b
            }
        }
        Combine::Min => {
            if T::is_nan(a) || a < b {
                a
            } else {
                b
            }
        }
    }
}

fn init<T: Accum>(c: Combine) -> T::A {
    match c {
        Combine::Sum => T::zero(),
        Combine::Prod => T::one(),
        Combine::Max => T::lowest(),
        Combine::Min => T::highest(),
    }
}

/// Reduces `n` elements at stride `st` with 16 independent accumulators (vectorisable).
#[inline(always)]
unsafe fn reduce_row<T: Accum>(c: Combine, p: *const T, st: isize, n: usize, acc0: T::A) -> T::A {
    const L: usize = 16;
    let mut acc = [init::<T>(c); L];
    let mut i = 0;
    if st == 1 {
        while i + L <= n {
            for (j, a) in acc.iter_mut().enumerate() {
                *a = combine::<T>(c, *a, (*p.add(i + j)).load());
            }
            i += L;
        }
    }
    let mut r = acc0;
    for a in acc {
        r = combine::<T>(c, r, a);
    }
    while i < n {
        r = combine::<T>(c, r, (*p.offset(i as isize * st)).load());
        i += 1;
    }
    r
}

/// Permuted view: kept dims first, then reduced dims.
struct Split {
    kept_shape: Vec<usize>,
    kept_strides: Vec<isize>,
    red: Walk<1>,
}

fn split(x: &ArrayData, axes: &[usize]) -> Split {
    let l = &x.layout;
    let mut kept_shape = vec![];
    let mut kept_strides = vec![];
    let mut red_shape = vec![];
    let mut red_strides = vec![];
    for i in 0..l.ndim() {
        if axes.contains(&i) {
            red_shape.push(l.shape[i]);
            red_strides.push(l.strides[i]);
        } else {
            kept_shape.push(l.shape[i]);
            kept_strides.push(l.strides[i]);
        }
    }
    Split {
        kept_shape,
        kept_strides,
        red: Walk::new(&red_shape, [&red_strides]),
    }
}

pub(crate) fn reduce(op: ReduceOp, axes: &[usize], x: &ArrayData, out: &Meta) -> Result<ArrayData> {
    let o = ArrayData::alloc(out.dtype, &out.shape)?;
    let c = match op {
        ReduceOp::Sum => Combine::Sum,
        ReduceOp::Prod => Combine::Prod,
        ReduceOp::Max => Combine::Max,
        ReduceOp::Min => Combine::Min,
        ReduceOp::All => Combine::Prod,
        ReduceOp::Any => Combine::Sum,
    };
    let kept: usize = (0..x.layout.ndim())
        .filter(|i| !axes.contains(i))
        .map(|i| x.layout.shape[i])
        .product();
    if axes.iter().any(|&a| a >= x.layout.ndim()) || kept != o.size() {
        return Err(Error::Invalid {
            op: "reduce",
            msg: "axes do not match the output shape".into(),
        });
    }
    if matches!(op, ReduceOp::All | ReduceOp::Any) && x.dtype != Dtype::Bool {
        return Err(Error::Dtype {
            op: "reduce",
            dtype: x.dtype,
            msg: "all/any kernels take bool".into(),
        });
    }
    crate::dispatch_dtype!(x.dtype, T => reduce_typed::<T>(c, axes, x, &o));
    Ok(o)
}

fn reduce_typed<T: Accum>(c: Combine, axes: &[usize], x: &ArrayData, o: &ArrayData) {
    let out_n = o.size();
    if out_n == 0 {
        return;
    }
    let dst = SendPtr(o.mut_ptr::<T>());
    let src = SendConstPtr(x.ptr::<T>());
    let sp = split(x, axes);
    let red_n: usize = if x.size() == 0 {
        0
    } else {
        sp.red.shape.iter().product()
    };
    if red_n == 0 {
        // Empty reduction: the identity (0 for sum, 1 for prod; ops rejects max/min of empty).
        for i in 0..out_n {
            // SAFETY: i < out_n.
            unsafe { *dst.get().add(i) = T::store(init::<T>(c)) };
        }
        return;
    }
    let kept = Walk::<1>::new(&sp.kept_shape, [&sp.kept_strides]);
    let red_inner = sp.red.inner_len();
    let [red_st] = sp.red.inner_strides();
    let [kept_st] = kept.inner_strides();
    let kept_inner = kept.inner_len();
    let threads = pool::global().threads();

    if red_st == 1 || kept_st != 1 || kept_inner < 16 {
        // Strategy 1 (and the generic fallback): each output reduces its own block.
        let reduce_one = |base: isize, rows: std::ops::Range<usize>| -> T::A {
            let mut acc = init::<T>(c);
            sp.red.for_rows(rows.start, rows.end, |_, offs| {
                // SAFETY: offsets inside x.
                acc = unsafe {
                    simd::dispatch(|| {
                        reduce_row::<T>(c, src.get().offset(base + offs[0]), red_st, red_inner, acc)
                    })
                };
            });
            acc
        };
        let red_rows = sp.red.rows();
        if out_n < threads && red_n >= 1 << 16 && red_rows >= threads
            || (out_n == 1 && red_n >= 1 << 16)
        {
            // Few outputs, big reductions: split each reduction across threads.
            for oi in 0..out_n {
                let mut base = 0isize;
                kept.for_rows(oi / kept_inner, oi / kept_inner + 1, |_, offs| {
                    base = offs[0]
                });
                base += (oi % kept_inner) as isize * kept_st;
                let parts = std::sync::Mutex::new(Vec::new());
                if red_rows >= threads {
                    pool::parallel_chunks(red_rows, 1, &|s, e| {
                        let r = reduce_one(base, s..e);
                        parts.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                    });
                } else {
                    // One long row: split it.
                    pool::parallel_chunks(red_inner, 1 << 14, &|s, e| {
                        // SAFETY: [s, e) is inside the row.
                        let r = unsafe {
                            simd::dispatch(|| {
                                reduce_row::<T>(
                                    c,
                                    src.get().offset(base + s as isize * red_st),
                                    red_st,
                                    e - s,
                                    init::<T>(c),
                                )
                            })
                        };
                        parts.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                    });
                }
                let mut acc = init::<T>(c);
                for p in parts.into_inner().unwrap_or_else(|e| e.into_inner()) {
                    acc = combine::<T>(c, acc, p);
                }
                // SAFETY: oi < out_n.
                unsafe { *dst.get().add(oi) = T::store(acc) };
            }
            return;
        }
        let min_rows = (1usize << 15).div_ceil(red_n.max(1) * kept_inner).max(1);
        pool::parallel_chunks(kept.rows(), min_rows, &|s, e| {
            kept.for_rows(s, e, |row, offs| {
                for j in 0..kept_inner {
                    let base = offs[0] + j as isize * kept_st;
                    let r = reduce_one(base, 0..sp.red.rows());
                    // SAFETY: row * kept_inner + j < out_n.
                    unsafe { *dst.get().add(row * kept_inner + j) = T::store(r) };
                }
            });
        });
    } else {
        // Strategy 2: a kept dim is contiguous; accumulate whole output rows.
        let min_rows = (1usize << 15).div_ceil(red_n * kept_inner).max(1);
        pool::parallel_chunks(kept.rows(), min_rows, &|s, e| {
            let mut acc: Vec<T::A> = vec![init::<T>(c); kept_inner];
            kept.for_rows(s, e, |row, offs| {
                acc.iter_mut().for_each(|a| *a = init::<T>(c));
                sp.red.for_rows(0, sp.red.rows(), |_, roffs| {
                    for r in 0..red_inner {
                        let p =
                            unsafe { src.get().offset(offs[0] + roffs[0] + r as isize * red_st) };
                        // SAFETY: kept_inner contiguous elements from p are inside x.
                        unsafe { simd::dispatch(|| combine_row::<T>(c, &mut acc, p)) }
                    }
                });
                for (j, a) in acc.iter().enumerate() {
                    // SAFETY: inside the output row.
                    unsafe { *dst.get().add(row * kept_inner + j) = T::store(*a) };
                }
            });
        });
    }
}

/// `acc[j] = combine(acc[j], p[j])` over a contiguous row. The operation is matched once, outside
/// the loop: with the match inside, each element took a jump-table branch and the loop stayed
/// scalar (a column sum such as a bias gradient ran several times slower).
///
/// # Safety
/// `p` points at `acc.len()` readable elements.
#[inline(always)]
unsafe fn combine_row<T: Accum>(c: Combine, acc: &mut [T::A], p: *const T) {
    #[inline(always)]
    unsafe fn each<T: Accum>(c: Combine, acc: &mut [T::A], p: *const T) {
        for (j, a) in acc.iter_mut().enumerate() {
            *a = combine::<T>(c, *a, (*p.add(j)).load());
        }
    }
    match c {
        Combine::Sum => each::<T>(Combine::Sum, acc, p),
        Combine::Prod => each::<T>(Combine::Prod, acc, p),
        Combine::Max => each::<T>(Combine::Max, acc, p),
        Combine::Min => each::<T>(Combine::Min, acc, p),
    }
}

/// Reduces one contiguous f32 row exactly as [`reduce`] does a row of a last-axis reduction
/// (same accumulators, same order), so a fused kernel can produce bitwise-equal results.
pub(crate) fn f32_row(op: ReduceOp, p: *const f32, n: usize) -> f32 {
    let c = match op {
        ReduceOp::Max => Combine::Max,
        ReduceOp::Min => Combine::Min,
        ReduceOp::Prod | ReduceOp::All => Combine::Prod,
        ReduceOp::Sum | ReduceOp::Any => Combine::Sum,
    };
    // SAFETY: the caller passes n readable f32 values.
    let r = unsafe { simd::dispatch(|| reduce_row::<f32>(c, p, 1, n, init::<f32>(c))) };
    <f32 as Accum>::store(r)
}

/// Index of the first max/min along `axis` (NaN counts as the extreme, as NumPy).
pub(crate) fn arg_reduce(
    op: ArgReduceOp,
    axis: usize,
    x: &ArrayData,
    out: &Meta,
) -> Result<ArrayData> {
    let o = ArrayData::alloc(out.dtype, &out.shape)?;
    if o.size() == 0 {
        return Ok(o);
    }
    let n = x.layout.shape[axis];
    let st = x.layout.strides[axis];
    let mut shape = x.layout.shape.clone();
    let mut strides = x.layout.strides.clone();
    shape.remove(axis);
    strides.remove(axis);
    let ostrides = crate::layout::row_major_strides(&shape);
    let walk = Walk::<2>::new(&shape, [&strides, &ostrides]);
    let [ist, iost] = walk.inner_strides();
    crate::dispatch_dtype!(x.dtype, T => {
        let src = SendConstPtr(x.ptr::<T>());
        crate::dispatch_dtype!(out.dtype, I => {
            let dst = SendPtr(o.mut_ptr::<I>());
            walk.par_rows(1 << 14, &|_, offs, inner| {
                for j in 0..inner {
                    // SAFETY: offsets inside x; output index inside o.
                    unsafe {
                        let p = src.get().offset(offs[0] + j as isize * ist);
                        let mut best = *p;
                        let mut bi = 0usize;
                        #[allow(clippy::eq_op)]
                        let is_nan = |v: T| v != v;
                        if !is_nan(best) {
                            for k in 1..n {
                                let v = *p.offset(k as isize * st);
                                #[allow(clippy::bool_comparison)]
                                let better = match op {
                                    ArgReduceOp::ArgMax => v > best,
                                    ArgReduceOp::ArgMin => v < best,
                                };
                                if is_nan(v) {
                                    bi = k;
                                    break;
                                }
                                if better {
                                    best = v;
                                    bi = k;
                                }
                            }
                        }
                        *dst.get().offset(offs[1] + j as isize * iost) = I::from_i64(bi as i64);
                    }
                }
            });
        });
    });
    Ok(o)
}

/// Cumulative sum/prod/max/min along `axis`.
pub(crate) fn scan(
    op: ScanOp,
    axis: usize,
    reverse: bool,
    inclusive: bool,
    x: &ArrayData,
    out: &Meta,
) -> Result<ArrayData> {
    let o = ArrayData::alloc(out.dtype, &out.shape)?;
    if o.size() == 0 {
        return Ok(o);
    }
    let c = match op {
        ScanOp::Sum => Combine::Sum,
        ScanOp::Prod => Combine::Prod,
        ScanOp::Max => Combine::Max,
        ScanOp::Min => Combine::Min,
    };
    let n = x.layout.shape[axis];
    let st = x.layout.strides[axis];
    let ost = crate::layout::row_major_strides(&out.shape);
    let ost_axis = ost[axis];
    let mut shape = x.layout.shape.clone();
    let mut strides = x.layout.strides.clone();
    let mut ostrides = ost.clone();
    shape.remove(axis);
    strides.remove(axis);
    ostrides.remove(axis);
    let walk = Walk::<2>::new(&shape, [&strides, &ostrides]);
    let [ist, iost] = walk.inner_strides();
    crate::dispatch_dtype!(x.dtype, T => {
        let src = SendConstPtr(x.ptr::<T>());
        let dst = SendPtr(o.mut_ptr::<T>());
        walk.par_rows(1 << 14, &|_, offs, inner| {
            for j in 0..inner as isize {
                // SAFETY: offsets inside x and o.
                unsafe {
                    let p = src.get().offset(offs[0] + j * ist);
                    let q = dst.get().offset(offs[1] + j * iost);
                    let mut acc = init::<T>(c);
                    for k in 0..n {
                        let kk = if reverse { n - 1 - k } else { k } as isize;
                        let v = (*p.offset(kk * st)).load();
                        if inclusive {
                            acc = combine::<T>(c, acc, v);
                            *q.offset(kk * ost_axis) = T::store(acc);
                        } else {
                            *q.offset(kk * ost_axis) = T::store(acc);
                            acc = combine::<T>(c, acc, v);
                        }
                    }
                }
            }
        });
    });
    Ok(o)
}
