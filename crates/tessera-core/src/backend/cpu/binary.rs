//! Element-wise binary kernels with broadcasting by strides (no broadcast copies), and `where`.
//! Inputs arrive with one common dtype (`ops` inserted the casts).

// Element functions are passed as closures on purpose: a bare `fn` item is not always inlined
// into the SIMD-dispatched loop, which then makes a call per element instead of vectorising.
#![allow(clippy::redundant_closure)]

use super::Written;
use super::copy::{HALF_CHUNK, SendConstPtr, SendPtr, f32_to_half, half_to_f32};
use super::simd::{self, math as m};
use super::strided::{PAR_MIN_ELEMS, Walk, broadcast_strides};
use crate::array::Meta;
use crate::dtype::{Dtype, Element};
use crate::error::Result;
use crate::layout::{ArrayData, row_major_strides};
use crate::primitive::BinaryOp;

/// Arithmetic with NumPy semantics per type: integers wrap, integer division by zero gives 0
/// (NumPy warns and gives 0; we never trap), floor division and remainder follow the divisor's
/// sign, float max/min propagate NaN.
pub(crate) trait Arith: Element + PartialOrd {
    fn add(a: Self, b: Self) -> Self;
    fn sub(a: Self, b: Self) -> Self;
    fn mul(a: Self, b: Self) -> Self;
    fn div(a: Self, b: Self) -> Self;
    fn floordiv(a: Self, b: Self) -> Self;
    fn rem(a: Self, b: Self) -> Self;
    fn pow(a: Self, b: Self) -> Self;
    fn max(a: Self, b: Self) -> Self;
    fn min(a: Self, b: Self) -> Self;
    fn atan2(a: Self, b: Self) -> Self;
    fn logaddexp(a: Self, b: Self) -> Self;
    fn bitand(a: Self, b: Self) -> Self;
    fn bitor(a: Self, b: Self) -> Self;
    fn bitxor(a: Self, b: Self) -> Self;
    fn shl(a: Self, b: Self) -> Self;
    fn shr(a: Self, b: Self) -> Self;
    fn truthy(a: Self) -> bool;
}

macro_rules! float_arith {
    ($t:ty, $atan2:expr, $logaddexp:expr) => {
        impl Arith for $t {
            #[inline(always)]
            fn add(a: Self, b: Self) -> Self {
                a + b
            }
            #[inline(always)]
            fn sub(a: Self, b: Self) -> Self {
                a - b
            }
            #[inline(always)]
            fn mul(a: Self, b: Self) -> Self {
                a * b
            }
            #[inline(always)]
            fn div(a: Self, b: Self) -> Self {
                a / b
            }
            #[inline(always)]
            fn floordiv(a: Self, b: Self) -> Self {
                (a / b).floor()
            }
            #[inline(always)]
            fn rem(a: Self, b: Self) -> Self {
                let r = a % b;
                if r != 0.0 && ((r < 0.0) != (b < 0.0)) {
                    r + b
                } else {
                    r
                }
            }
            #[inline(always)]
            fn pow(a: Self, b: Self) -> Self {
                a.powf(b)
            }
            #[inline(always)]
            fn max(a: Self, b: Self) -> Self {
                if a.is_nan() || a > b {
                    a
                } else if b.is_nan() {
                    b
                } else {
                    b
                }
            }
            #[inline(always)]
            fn min(a: Self, b: Self) -> Self {
                if a.is_nan() || a < b { a } else { b }
            }
            #[inline(always)]
            fn atan2(a: Self, b: Self) -> Self {
                let f: fn($t, $t) -> $t = $atan2;
                f(a, b)
            }
            #[inline(always)]
            fn logaddexp(a: Self, b: Self) -> Self {
                let f: fn($t, $t) -> $t = $logaddexp;
                f(a, b)
            }
            fn bitand(a: Self, _: Self) -> Self {
                a
            }
            fn bitor(a: Self, _: Self) -> Self {
                a
            }
            fn bitxor(a: Self, _: Self) -> Self {
                a
            }
            fn shl(a: Self, _: Self) -> Self {
                a
            }
            fn shr(a: Self, _: Self) -> Self {
                a
            }
            #[inline(always)]
            fn truthy(a: Self) -> bool {
                a != 0.0
            }
        }
    };
}

#[inline(always)]
fn logaddexp_f32(a: f32, b: f32) -> f32 {
    let mx = if a > b { a } else { b };
    let d = -(a - b).abs();
    // a == b == ±inf gives d = NaN: the answer is that infinity.
    let r = mx + m::log1p_f32(m::exp_f32(d));
    if d.is_nan() && !a.is_nan() && !b.is_nan() {
        mx
    } else if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        r
    }
}

fn logaddexp_f64(a: f64, b: f64) -> f64 {
    let mx = a.max(b);
    let d = -(a - b).abs();
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if d.is_nan() {
        mx
    } else {
        mx + d.exp().ln_1p()
    }
}

float_arith!(f32, m::atan2_f32, logaddexp_f32);
float_arith!(f64, f64::atan2, logaddexp_f64);

macro_rules! int_arith {
    ($t:ty, $signed:expr, $bits:expr) => {
        impl Arith for $t {
            #[inline(always)]
            fn add(a: Self, b: Self) -> Self {
                a.wrapping_add(b)
            }
            #[inline(always)]
            fn sub(a: Self, b: Self) -> Self {
                a.wrapping_sub(b)
            }
            #[inline(always)]
            fn mul(a: Self, b: Self) -> Self {
                a.wrapping_mul(b)
            }
            #[inline(always)]
            fn div(a: Self, b: Self) -> Self {
                Self::floordiv(a, b)
            }
            #[inline(always)]
            fn floordiv(a: Self, b: Self) -> Self {
                if b == 0 {
                    return 0;
                }
                let q = a.wrapping_div(b);
                if $signed && a.wrapping_rem(b) != 0 && ((a < (0 as $t)) != (b < (0 as $t))) {
                    q.wrapping_sub(1)
                } else {
                    q
                }
            }
            #[inline(always)]
            fn rem(a: Self, b: Self) -> Self {
                if b == 0 {
                    return 0;
                }
                let r = a.wrapping_rem(b);
                if $signed && r != 0 && ((r < (0 as $t)) != (b < (0 as $t))) {
                    r.wrapping_add(b)
                } else {
                    r
                }
            }
            fn pow(a: Self, b: Self) -> Self {
                if $signed && b < (0 as $t) {
                    // Only ±1 have integer results for negative exponents.
                    return if a == 1 {
                        1
                    } else if $signed && a == (0 as $t).wrapping_sub(1) {
                        if b % 2 == 0 { 1 } else { a }
                    } else {
                        0
                    };
                }
                let (mut base, mut e, mut acc) = (a, b, 1 as $t);
                while e > 0 {
                    if e & 1 == 1 {
                        acc = acc.wrapping_mul(base);
                    }
                    base = base.wrapping_mul(base);
                    e >>= 1;
                }
                acc
            }
            #[inline(always)]
            fn max(a: Self, b: Self) -> Self {
                if a > b { a } else { b }
            }
            #[inline(always)]
            fn min(a: Self, b: Self) -> Self {
                if a < b { a } else { b }
            }
            fn atan2(a: Self, _: Self) -> Self {
                a
            }
            fn logaddexp(a: Self, _: Self) -> Self {
                a
            }
            #[inline(always)]
            fn bitand(a: Self, b: Self) -> Self {
                a & b
            }
            #[inline(always)]
            fn bitor(a: Self, b: Self) -> Self {
                a | b
            }
            #[inline(always)]
            fn bitxor(a: Self, b: Self) -> Self {
                a ^ b
            }
            #[inline(always)]
            fn shl(a: Self, b: Self) -> Self {
                if b < (0 as $t) || b as u64 >= $bits {
                    0
                } else {
                    a.wrapping_shl(b as u32)
                }
            }
            #[inline(always)]
            fn shr(a: Self, b: Self) -> Self {
                if b < (0 as $t) || b as u64 >= $bits {
                    if a < (0 as $t) {
                        (0 as $t).wrapping_sub(1)
                    } else {
                        0
                    }
                } else {
                    a.wrapping_shr(b as u32)
                }
            }
            #[inline(always)]
            fn truthy(a: Self) -> bool {
                a != 0
            }
        }
    };
}
int_arith!(u8, false, 8);
int_arith!(u32, false, 32);
int_arith!(i32, true, 32);
int_arith!(i64, true, 64);

impl Arith for bool {
    fn add(a: Self, b: Self) -> Self {
        a | b
    }
    fn sub(a: Self, b: Self) -> Self {
        a ^ b
    }
    fn mul(a: Self, b: Self) -> Self {
        a & b
    }
    fn div(a: Self, b: Self) -> Self {
        a & b
    }
    fn floordiv(a: Self, b: Self) -> Self {
        a & b
    }
    fn rem(_: Self, _: Self) -> Self {
        false
    }
    fn pow(a: Self, b: Self) -> Self {
        a | !b
    }
    fn max(a: Self, b: Self) -> Self {
        a | b
    }
    fn min(a: Self, b: Self) -> Self {
        a & b
    }
    fn atan2(a: Self, _: Self) -> Self {
        a
    }
    fn logaddexp(a: Self, b: Self) -> Self {
        a | b
    }
    fn bitand(a: Self, b: Self) -> Self {
        a & b
    }
    fn bitor(a: Self, b: Self) -> Self {
        a | b
    }
    fn bitxor(a: Self, b: Self) -> Self {
        a ^ b
    }
    fn shl(a: Self, b: Self) -> Self {
        a & !b
    }
    fn shr(a: Self, b: Self) -> Self {
        a & !b
    }
    fn truthy(a: Self) -> bool {
        a
    }
}

// Half types are staged through f32 and never use these; they exist for the dtype dispatch.
macro_rules! staged_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            fn add(a: Self, _: Self) -> Self { a }
            fn sub(a: Self, _: Self) -> Self { a }
            fn mul(a: Self, _: Self) -> Self { a }
            fn div(a: Self, _: Self) -> Self { a }
            fn floordiv(a: Self, _: Self) -> Self { a }
            fn rem(a: Self, _: Self) -> Self { a }
            fn pow(a: Self, _: Self) -> Self { a }
            fn max(a: Self, _: Self) -> Self { a }
            fn min(a: Self, _: Self) -> Self { a }
            fn atan2(a: Self, _: Self) -> Self { a }
            fn logaddexp(a: Self, _: Self) -> Self { a }
            fn bitand(a: Self, _: Self) -> Self { a }
            fn bitor(a: Self, _: Self) -> Self { a }
            fn bitxor(a: Self, _: Self) -> Self { a }
            fn shl(a: Self, _: Self) -> Self { a }
            fn shr(a: Self, _: Self) -> Self { a }
            fn truthy(a: Self) -> bool { a.to_f32() != 0.0 }
        }
    )*};
}
staged_arith!(half::f16, half::bf16);

super::simd::multiversion! {
    /// `d[i] = f(a[i*sa], b[i*sb])`, specialised for the common stride patterns so each
    /// vectorises at the CPU's best width.
    unsafe fn bin_row[T: Copy, U: Copy, F: Fn(T, T) -> U](a: *const T, sa: isize, b: *const T, sb: isize, d: *mut U, n: usize, f: F) {
        // In place (a donated input or a fused kernel's scratch row): the aliased input is read
        // through `d` itself, so LLVM knows they are one pointer. With two equal pointers its
        // run-time overlap check fails and the scalar loop runs (measured 10x slower).
        let in_a = d as *const u8 == a as *const u8;
        let in_b = d as *const u8 == b as *const u8;
        match (sa, sb) {
            (1, 1) if in_a && !in_b => {
                let a = d as *const T;
                for i in 0..n {
                    *d.add(i) = f(*a.add(i), *b.add(i));
                }
            }
            (1, 1) if in_b && !in_a => {
                let b = d as *const T;
                for i in 0..n {
                    *d.add(i) = f(*a.add(i), *b.add(i));
                }
            }
            (1, 1) if in_a && in_b => {
                let a = d as *const T;
                for i in 0..n {
                    *d.add(i) = f(*a.add(i), *a.add(i));
                }
            }
            (1, 1) => {
                for i in 0..n {
                    *d.add(i) = f(*a.add(i), *b.add(i));
                }
            }
            (1, 0) => {
                let bv = *b;
                if in_a {
                    let a = d as *const T;
                    for i in 0..n {
                        *d.add(i) = f(*a.add(i), bv);
                    }
                } else {
                    for i in 0..n {
                        *d.add(i) = f(*a.add(i), bv);
                    }
                }
            }
            (0, 1) => {
                let av = *a;
                if in_b {
                    let b = d as *const T;
                    for i in 0..n {
                        *d.add(i) = f(av, *b.add(i));
                    }
                } else {
                    for i in 0..n {
                        *d.add(i) = f(av, *b.add(i));
                    }
                }
            }
            _ => {
                for i in 0..n {
                    *d.add(i) = f(*a.offset(i as isize * sa), *b.offset(i as isize * sb));
                }
            }
        }
    }
}

/// One row of a same-typed binary op producing `T` (arithmetic) or bool (comparisons, logic).
#[inline(always)]
pub(crate) unsafe fn typed_row<T: Arith>(
    op: BinaryOp,
    a: *const T,
    sa: isize,
    b: *const T,
    sb: isize,
    d: *mut u8,
    n: usize,
) {
    use BinaryOp::*;
    let dt = d as *mut T;
    let db = d as *mut bool;
    match op {
        Add => bin_row(a, sa, b, sb, dt, n, |x, y| T::add(x, y)),
        Sub => bin_row(a, sa, b, sb, dt, n, |x, y| T::sub(x, y)),
        Mul => bin_row(a, sa, b, sb, dt, n, |x, y| T::mul(x, y)),
        Div => bin_row(a, sa, b, sb, dt, n, |x, y| T::div(x, y)),
        FloorDiv => bin_row(a, sa, b, sb, dt, n, |x, y| T::floordiv(x, y)),
        Rem => bin_row(a, sa, b, sb, dt, n, |x, y| T::rem(x, y)),
        Pow => bin_row(a, sa, b, sb, dt, n, |x, y| T::pow(x, y)),
        Max => bin_row(a, sa, b, sb, dt, n, |x, y| T::max(x, y)),
        Min => bin_row(a, sa, b, sb, dt, n, |x, y| T::min(x, y)),
        Atan2 => bin_row(a, sa, b, sb, dt, n, |x, y| T::atan2(x, y)),
        LogAddExp => bin_row(a, sa, b, sb, dt, n, |x, y| T::logaddexp(x, y)),
        BitAnd => bin_row(a, sa, b, sb, dt, n, |x, y| T::bitand(x, y)),
        BitOr => bin_row(a, sa, b, sb, dt, n, |x, y| T::bitor(x, y)),
        BitXor => bin_row(a, sa, b, sb, dt, n, |x, y| T::bitxor(x, y)),
        Shl => bin_row(a, sa, b, sb, dt, n, |x, y| T::shl(x, y)),
        Shr => bin_row(a, sa, b, sb, dt, n, |x, y| T::shr(x, y)),
        Eq => bin_row(a, sa, b, sb, db, n, |x, y| x == y),
        Ne => bin_row(a, sa, b, sb, db, n, |x, y| x != y),
        Lt => bin_row(a, sa, b, sb, db, n, |x, y| x < y),
        Le => bin_row(a, sa, b, sb, db, n, |x, y| x <= y),
        Gt => bin_row(a, sa, b, sb, db, n, |x, y| x > y),
        Ge => bin_row(a, sa, b, sb, db, n, |x, y| x >= y),
        LogicalAnd => bin_row(a, sa, b, sb, db, n, |x, y| T::truthy(x) && T::truthy(y)),
        LogicalOr => bin_row(a, sa, b, sb, db, n, |x, y| T::truthy(x) || T::truthy(y)),
    }
}

/// `a op b`: in place into a donated operand of the output's shape and dtype (handed over as
/// the output), else into a new array.
pub(crate) fn binary(op: BinaryOp, a: &ArrayData, b: &ArrayData, out: &Meta) -> Result<Written> {
    let same_shape = |x: &ArrayData| x.layout.shape[..] == out.shape[..] && x.dtype == out.dtype;
    if a.is_donatable() && same_shape(a) {
        binary_into(op, a, b, a, out)?;
        return Ok(Written::Input(0));
    }
    if b.is_donatable() && same_shape(b) {
        binary_into(op, a, b, b, out)?;
        return Ok(Written::Input(1));
    }
    let o = ArrayData::alloc(out.dtype, &out.shape)?;
    binary_into(op, a, b, &o, out)?;
    Ok(Written::New(o))
}

/// `a op b` into `o` (row-major, of `out`'s shape and dtype; may be `a` or `b` itself).
fn binary_into(
    op: BinaryOp,
    a: &ArrayData,
    b: &ArrayData,
    o: &ArrayData,
    out: &Meta,
) -> Result<()> {
    if o.size() == 0 {
        return Ok(());
    }
    let out_size = out.dtype.size() as isize;
    // Small outputs whose operands are each row-major over the whole output or one value
    // (`x + 1`, eager-style code): one row, no walk. Setting the walk up (broadcast strides,
    // merged dims, the split into tasks) was about a sixth of such an op's whole cost.
    let flat = |x: &ArrayData| -> Option<isize> {
        if x.size() == 1 {
            Some(0)
        } else if x.layout.shape[..] == out.shape[..] && x.is_contiguous() {
            Some(1)
        } else {
            None
        }
    };
    if let (true, Some(ia), Some(ib)) = (o.size() < PAR_MIN_ELEMS, flat(a), flat(b)) {
        crate::dispatch_dtype!(a.dtype, T => {
            // SAFETY: `o` is a fresh or donated row-major output of `o.size()` elements; each
            // operand covers them row-major (step 1) or is one element (step 0).
            unsafe { row::<T>(op, a.ptr::<T>(), ia, b.ptr::<T>(), ib, o.mut_ptr::<u8>(), o.size(), out) };
        });
        return Ok(());
    }
    let sa = broadcast_strides(&a.layout.shape, &a.layout.strides, &out.shape);
    let sb = broadcast_strides(&b.layout.shape, &b.layout.strides, &out.shape);
    let so = row_major_strides(&out.shape);
    let walk = Walk::<3>::new(&out.shape, [&so, &sa, &sb]);
    let [_, ia, ib] = walk.inner_strides();
    let dp = SendPtr(o.mut_ptr::<u8>());
    crate::dispatch_dtype!(a.dtype, T => {
        let ap = SendConstPtr(a.ptr::<T>());
        let bp = SendConstPtr(b.ptr::<T>());
        walk.par_rows(PAR_MIN_ELEMS, &|_, offs, n| {
            let (ap, bp, dp) = (ap, bp, dp);
            // SAFETY: offsets come from the layouts; the output row is row-major and disjoint per task.
            unsafe {
                row::<T>(op, ap.get().offset(offs[1]), ia, bp.get().offset(offs[2]), ib, dp.get().offset(offs[0] * out_size), n, out);
            }
        });
    });
    Ok(())
}

/// `n` results of `op` into the row-major `d` (of `out`'s dtype), operands `sa` and `sb`
/// elements apart.
///
/// # Safety
/// The operands are readable and `d` writable for `n` elements at those steps.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn row<T: Arith>(
    op: BinaryOp,
    x: *const T,
    ia: isize,
    y: *const T,
    ib: isize,
    d: *mut u8,
    n: usize,
    out: &Meta,
) {
    if matches!(T::DTYPE, Dtype::F16 | Dtype::BF16) {
        half_row::<T>(op, x, ia, y, ib, d, n, out.dtype == Dtype::Bool);
    } else if T::DTYPE == Dtype::F32
        && n >= simd::STREAM_STORE_MIN
        && stream_f32(
            op,
            x.cast::<f32>(),
            ia,
            y.cast::<f32>(),
            ib,
            d.cast::<f32>(),
            n,
        )
    {
        // Written with streaming stores.
    } else {
        typed_row::<T>(op, x, ia, y, ib, d, n);
    }
}

/// Half precision: both operands staged to f32 chunks, computed in f32, rounded once.
#[allow(clippy::too_many_arguments)]
unsafe fn half_row<T: Element>(
    op: BinaryOp,
    a: *const T,
    sa: isize,
    b: *const T,
    sb: isize,
    d: *mut u8,
    n: usize,
    bool_out: bool,
) {
    let mut fa = [0f32; HALF_CHUNK];
    let mut fb = [0f32; HALF_CHUNK];
    let mut i = 0;
    while i < n {
        let k = (n - i).min(HALF_CHUNK);
        simd::dispatch(|| {
            half_to_f32::<T>(a.offset(i as isize * sa), sa, &mut fa[..k]);
            half_to_f32::<T>(b.offset(i as isize * sb), sb, &mut fb[..k]);
        });
        if bool_out {
            typed_row::<f32>(op, fa.as_ptr(), 1, fb.as_ptr(), 1, d.add(i), k);
        } else {
            simd::dispatch(|| {
                typed_row::<f32>(
                    op,
                    fa.as_ptr(),
                    1,
                    fb.as_ptr(),
                    1,
                    fa.as_mut_ptr() as *mut u8,
                    k,
                );
                f32_to_half::<T>(&fa[..k], (d as *mut T).add(i));
            });
        }
        i += k;
    }
}

/// `where(cond, x, y)` with broadcasting; cond is bool, x and y share the output dtype.
pub(crate) fn select(c: &ArrayData, x: &ArrayData, y: &ArrayData, out: &Meta) -> Result<ArrayData> {
    let o = ArrayData::alloc(out.dtype, &out.shape)?;
    if o.size() == 0 {
        return Ok(o);
    }
    let so = row_major_strides(&out.shape);
    let sc = broadcast_strides(&c.layout.shape, &c.layout.strides, &out.shape);
    let sx = broadcast_strides(&x.layout.shape, &x.layout.strides, &out.shape);
    let sy = broadcast_strides(&y.layout.shape, &y.layout.strides, &out.shape);
    let walk = Walk::<4>::new(&out.shape, [&so, &sc, &sx, &sy]);
    let [_, ic, ix, iy] = walk.inner_strides();
    let cp = SendConstPtr(c.ptr::<bool>());
    crate::dispatch_dtype!(x.dtype, T => {
        let xp = SendConstPtr(x.ptr::<T>());
        let yp = SendConstPtr(y.ptr::<T>());
        let dp = SendPtr(o.mut_ptr::<T>());
        walk.par_rows(PAR_MIN_ELEMS, &|_, offs, n| {
            let (cp, xp, yp, dp) = (cp, xp, yp, dp);
            // SAFETY: offsets come from the layouts; output rows are disjoint per task.
            unsafe {
                let c = cp.get().offset(offs[1]);
                let x = xp.get().offset(offs[2]);
                let y = yp.get().offset(offs[3]);
                let d = dp.get().offset(offs[0]);
                simd::dispatch(|| select_row(c, ic, x, ix, y, iy, d, n))
            }
        });
    });
    Ok(o)
}

/// One row of `where`: `d[i] = c[i * sc] ? x[i * sx] : y[i * sy]`. The common stride patterns
/// (everything contiguous, or `x` or `y` a broadcast value, as in ReLU's backward) get loops of
/// their own, which vectorise; the strided loop with its run-time strides stayed scalar.
///
/// # Safety
/// Each pointer covers `n` elements at its stride.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn select_row<T: Copy>(
    c: *const bool,
    sc: isize,
    x: *const T,
    sx: isize,
    y: *const T,
    sy: isize,
    d: *mut T,
    n: usize,
) {
    match (sc, sx, sy) {
        (1, 1, 1) => {
            for i in 0..n {
                *d.add(i) = if *c.add(i) { *x.add(i) } else { *y.add(i) };
            }
        }
        (1, 1, 0) => {
            let yv = *y;
            for i in 0..n {
                *d.add(i) = if *c.add(i) { *x.add(i) } else { yv };
            }
        }
        (1, 0, 1) => {
            let xv = *x;
            for i in 0..n {
                *d.add(i) = if *c.add(i) { xv } else { *y.add(i) };
            }
        }
        _ => {
            for i in 0..n as isize {
                let cv = *c.offset(i * sc);
                *d.offset(i) = if cv {
                    *x.offset(i * sx)
                } else {
                    *y.offset(i * sy)
                };
            }
        }
    }
}

/// Contiguous f32 add/sub/mul/div with streaming stores (AVX-512 or AVX2), for outputs too big
/// to stay in cache: skipping the read for ownership of each output line saves a third of the
/// memory traffic of `a + b`. `a` and `b` are rows (step 1) or one value (step 0), not both
/// values. The output's values before the first vector-aligned address and after the last
/// whole vector go through the plain row kernel. Returns false (doing nothing) when the op,
/// the steps or the CPU do not fit.
unsafe fn stream_f32(
    op: BinaryOp,
    a: *const f32,
    sa: isize,
    b: *const f32,
    sb: isize,
    d: *mut f32,
    n: usize,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        let fits = matches!(
            op,
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div
        ) && matches!((sa, sb), (1, 1) | (1, 0) | (0, 1));
        let lanes = match simd::level() {
            simd::Level::Avx512 => 16,
            simd::Level::Avx2 => 8,
            simd::Level::Scalar => 0,
        };
        if !fits || lanes == 0 {
            return false;
        }
        /// One streaming row function per vector width: `$w` lanes of `$v`, `n` a multiple of
        /// `$w`, `d` aligned to the vector.
        macro_rules! streaming {
            ($name:ident, $feat:literal, $w:literal, $v:ty, $load:ident, $set1:ident,
             $add:ident, $sub:ident, $mul:ident, $div:ident, $stream:ident) => {
                #[target_feature(enable = $feat)]
                unsafe fn $name(
                    op: BinaryOp,
                    a: *const f32,
                    sa: isize,
                    b: *const f32,
                    sb: isize,
                    d: *mut f32,
                    n: usize,
                ) {
                    macro_rules! body {
                        ($f:ident) => {{
                            let mut i = 0;
                            while i < n {
                                let x: $v = if sa == 0 { $set1(*a) } else { $load(a.add(i)) };
                                let y: $v = if sb == 0 { $set1(*b) } else { $load(b.add(i)) };
                                $stream(d.add(i), $f(x, y));
                                i += $w;
                            }
                        }};
                    }
                    match op {
                        BinaryOp::Add => body!($add),
                        BinaryOp::Sub => body!($sub),
                        BinaryOp::Mul => body!($mul),
                        _ => body!($div),
                    }
                }
            };
        }
        streaming!(
            run512,
            "avx512f",
            16,
            __m512,
            _mm512_loadu_ps,
            _mm512_set1_ps,
            _mm512_add_ps,
            _mm512_sub_ps,
            _mm512_mul_ps,
            _mm512_div_ps,
            _mm512_stream_ps
        );
        streaming!(
            run256,
            "avx",
            8,
            __m256,
            _mm256_loadu_ps,
            _mm256_set1_ps,
            _mm256_add_ps,
            _mm256_sub_ps,
            _mm256_mul_ps,
            _mm256_div_ps,
            _mm256_stream_ps
        );
        let head = (((d as usize).next_multiple_of(lanes * 4) - d as usize) / 4).min(n);
        let body = head + (n - head) / lanes * lanes;
        // The operands at value `i`.
        let at = |i: usize| (a.offset(i as isize * sa), b.offset(i as isize * sb));
        typed_row::<f32>(op, a, sa, b, sb, d.cast(), head);
        let (a_body, b_body) = at(head);
        // SAFETY: the CPU has the instructions; rows hold `n` values, a value one; the vector
        // stores start at an address aligned to their width and cover whole vectors.
        if lanes == 16 {
            run512(op, a_body, sa, b_body, sb, d.add(head), body - head);
        } else {
            run256(op, a_body, sa, b_body, sb, d.add(head), body - head);
        }
        // Streaming stores are weakly ordered: fenced before this task reports done (other
        // threads then read the output).
        simd::stream_fence();
        let (a_tail, b_tail) = at(body);
        typed_row::<f32>(op, a_tail, sa, b_tail, sb, d.add(body).cast(), n - body);
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (op, a, sa, b, sb, d, n);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streaming row equals plain arithmetic bit for bit for every op and operand kind,
    /// at every alignment of the output (the plain-store head) and with a partial last vector.
    #[test]
    fn streaming_rows_equal_plain_arithmetic() {
        let n = simd::STREAM_STORE_MIN + 13;
        let a: Vec<f32> = (0..n + 16).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let b: Vec<f32> = (0..n + 16).map(|i| (i as f32 * 0.11).cos() + 1.5).collect();
        let s = [0.75f32];
        let ops = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div];
        for op in ops {
            for (sa, sb) in [(1isize, 1isize), (1, 0), (0, 1)] {
                for shift in [0usize, 1, 3, 7] {
                    let ap = if sa == 0 {
                        s.as_ptr()
                    } else {
                        a[shift..].as_ptr()
                    };
                    let bp = if sb == 0 {
                        s.as_ptr()
                    } else {
                        b[shift..].as_ptr()
                    };
                    let mut out = vec![0f32; n + 16];
                    let d = out[shift..].as_mut_ptr();
                    // SAFETY: rows of n + 16 - shift >= n values, one value at step 0.
                    if !unsafe { stream_f32(op, ap, sa, bp, sb, d, n) } {
                        return; // No AVX2 here: nothing to compare.
                    }
                    for i in 0..n {
                        // SAFETY: as above.
                        let (x, y) =
                            unsafe { (*ap.offset(i as isize * sa), *bp.offset(i as isize * sb)) };
                        let want = match op {
                            BinaryOp::Add => x + y,
                            BinaryOp::Sub => x - y,
                            BinaryOp::Mul => x * y,
                            _ => x / y,
                        };
                        assert_eq!(
                            out[shift + i].to_bits(),
                            want.to_bits(),
                            "{op:?} steps ({sa}, {sb}) shift {shift} at {i}"
                        );
                    }
                    assert!(
                        out[..shift].iter().all(|&v| v == 0.0),
                        "wrote before the row"
                    );
                    assert!(
                        out[shift + n..].iter().all(|&v| v == 0.0),
                        "wrote past the row"
                    );
                }
            }
        }
        // Both operands one value, or an op without a streaming form: not taken.
        let mut out = vec![0f32; n];
        // SAFETY: as above.
        unsafe {
            assert!(!stream_f32(
                BinaryOp::Add,
                s.as_ptr(),
                0,
                s.as_ptr(),
                0,
                out.as_mut_ptr(),
                n
            ));
            assert!(!stream_f32(
                BinaryOp::Max,
                a.as_ptr(),
                1,
                b.as_ptr(),
                1,
                out.as_mut_ptr(),
                n
            ));
        }
    }
}
