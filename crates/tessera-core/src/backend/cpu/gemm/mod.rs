//! Matrix multiply for the CPU backend.
//!
//! Entry points: [`matmul_f32`], [`matmul_f64`], [`matmul_f16`], [`matmul_bf16`]; all take
//! strided, batched operands and compute `C[b] (+)= A[b] @ B[b]`.
//!
//! Routing (after normalising so that `m <= n`, using `C^T = B^T A^T`):
//! * `m < 16` (GEMV and decode-time "skinny" products), or `m < 48` when B is column-contiguous
//!   (`x @ W^T`): our own memory-bound kernels in `small.rs`: AVX-512 (F/BW/VL; `vdpbf16ps` for
//!   bf16), else AVX2 (`small_avx2.rs`), chosen at runtime, portable otherwise.
//! * otherwise:
//!   - f32: our packed kernels (`packed/`): AVX-512 where present, else AVX2 with FMA, else the
//!     `gemm` crate;
//!   - bf16: our packed AVX-512 BF16 kernel, else widened to f32 (`bf16.rs`);
//!   - f64, f16: the `gemm` crate (f16 accumulates in f32 there).
//!
//! Threading goes through the backend's persistent pool (`super::pool`) everywhere; the `gemm`
//! crate is always called single-threaded, on pool-split parts of the problem.
//!
//! Files: `small.rs` and `small_avx2.rs` (GEMV / small-M), `packed/` (packed GEMM: AVX-512 f32
//! and bf16, AVX2 f32),
//! `bf16.rs` (bf16 large-M entry and fallback), `tests.rs`.

// Kernel signatures carry shapes and strides explicitly; index loops over register arrays are the
// clearest way to write unrolled micro-kernels.
#![allow(clippy::too_many_arguments, clippy::needless_range_loop)]

mod bf16;
mod packed;
mod small;

#[cfg(target_arch = "x86_64")]
pub(crate) use packed::bf16x16_to_f32;

use super::pool;
use half::{bf16 as Bf16, f16 as F16};

/// A strided batched matrix operand. Strides are in elements and may be negative or zero
/// (zero batch stride = broadcast over the batch). Element (b, i, j) is at ptr + b*bs + i*rs + j*cs.
#[derive(Clone, Copy)]
pub struct MatRef<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
    pub bs: isize,
}

/// The mutable counterpart of [`MatRef`] (the output operand).
#[derive(Clone, Copy)]
pub struct MatMut<T> {
    pub ptr: *mut T,
    pub rs: isize,
    pub cs: isize,
    pub bs: isize,
}

impl<T> MatRef<T> {
    /// The transposed view (rows and columns swapped).
    #[inline]
    fn t(self) -> Self {
        MatRef {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
            bs: self.bs,
        }
    }
    /// The view of batch item `b` (its `bs` is kept but no longer meaningful).
    #[inline]
    fn item(self, b: usize) -> Self {
        MatRef {
            ptr: self.ptr.wrapping_offset(b as isize * self.bs),
            ..self
        }
    }
    /// Address of element (i, j) of this (single) matrix.
    #[inline(always)]
    pub(crate) fn at(self, i: usize, j: usize) -> *const T {
        self.ptr
            .wrapping_offset(i as isize * self.rs + j as isize * self.cs)
    }
}

impl<T> MatMut<T> {
    #[inline]
    fn t(self) -> Self {
        MatMut {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
            bs: self.bs,
        }
    }
    #[inline]
    fn item(self, b: usize) -> Self {
        MatMut {
            ptr: self.ptr.wrapping_offset(b as isize * self.bs),
            ..self
        }
    }
    /// Address of element (i, j) of this (single) matrix.
    #[inline(always)]
    pub(crate) fn at(self, i: usize, j: usize) -> *mut T {
        self.ptr
            .wrapping_offset(i as isize * self.rs + j as isize * self.cs)
    }
}

/// Wrapper that lets raw operand views cross into pool tasks.
#[derive(Clone, Copy)]
struct Shared<T>(T);
// SAFETY: the wrapped views are only dereferenced inside `unsafe` kernels whose callers guarantee
// the memory is valid for the whole call; tasks write disjoint parts of C (see each use).
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Shared<T> {}

/// Element types the kernels handle. `Acc` is the accumulation type (f32 for the 16-bit floats).
pub(crate) trait Elem: Copy + Send + Sync + 'static {
    type Acc: Acc;
    fn to_acc(self) -> Self::Acc;
    fn from_acc(a: Self::Acc) -> Self;
}

/// Accumulator arithmetic (f32 or f64).
pub(crate) trait Acc:
    Copy + Send + Sync + 'static + core::ops::Add<Output = Self> + core::ops::Mul<Output = Self>
{
    const ZERO: Self;
}
impl Acc for f32 {
    const ZERO: f32 = 0.0;
}
impl Acc for f64 {
    const ZERO: f64 = 0.0;
}

impl Elem for f32 {
    type Acc = f32;
    #[inline(always)]
    fn to_acc(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_acc(a: f32) -> f32 {
        a
    }
}
impl Elem for f64 {
    type Acc = f64;
    #[inline(always)]
    fn to_acc(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_acc(a: f64) -> f64 {
        a
    }
}
impl Elem for F16 {
    type Acc = f32;
    #[inline(always)]
    fn to_acc(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn from_acc(a: f32) -> F16 {
        F16::from_f32(a)
    }
}
impl Elem for Bf16 {
    type Acc = f32;
    #[inline(always)]
    fn to_acc(self) -> f32 {
        // Exact: a bf16 is the upper half of an f32.
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    #[inline(always)]
    fn from_acc(a: f32) -> Bf16 {
        Bf16::from_f32(a)
    }
}

/// Below this many rows (after making `m <= n`) the small / GEMV kernels are used.
const SMALL_M: usize = 16;
/// The same for a column-contiguous B (see `matmul_any`).
const DOT_M: usize = 48;

/// For `b in 0..batch`: `C[b] = A[b] (m x k) @ B[b] (k x n)`, written to C (m x n); if
/// `accumulate`, `C[b] += A[b] @ B[b]`. C never aliases A or B. m, n, k, batch may be 0 (k == 0
/// writes zeros unless accumulate).
///
/// # Safety
/// Every element addressed by the views for `b < batch`, `i < m`, `j < n`, `kk < k` must be valid
/// to read (A, B) or write (C), and C's elements must not overlap A's or B's.
pub unsafe fn matmul_f32(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<f32>,
    b: MatRef<f32>,
    c: MatMut<f32>,
    accumulate: bool,
) {
    matmul_any(batch, m, n, k, a, b, c, accumulate, big_f32)
}

/// f32 with `m, n >= 16`: our packed kernels (AVX-512, else AVX2 with FMA), else the `gemm`
/// crate.
unsafe fn big_f32(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<f32>,
    b: MatRef<f32>,
    c: MatMut<f32>,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = small::x86::has_avx512() && !avx2_only();
        if avx512 || packed_avx2_f32() {
            let flops = 2usize.saturating_mul(m).saturating_mul(n).saturating_mul(k);
            if batch > 1 && c.bs != 0 && flops < GEMM_CRATE_PAR_FLOPS.saturating_mul(4) {
                // Many small products: the gemm crate, one product per pool task.
                return big_gemm_crate::<f32>(batch, m, n, k, a, b, c, accumulate);
            }
            // The kernels vectorise along C's columns; if C is column-major, compute
            // C^T = B^T A^T.
            let (m, n, a, b, c) = if c.cs.unsigned_abs() > c.rs.unsigned_abs() {
                (n, m, b.t(), a.t(), c.t())
            } else {
                (m, n, a, b, c)
            };
            for bi in 0..batch {
                let (a, b, c) = (a.item(bi), b.item(bi), c.item(bi));
                // SAFETY: the kind's instruction sets are present (checked above); operands
                // valid per the caller.
                if avx512 {
                    packed::gemm::<packed::F32Kind>(m, n, k, a, b, c, accumulate);
                } else {
                    packed::gemm::<packed::F32Avx2Kind>(m, n, k, a, b, c, accumulate);
                }
            }
            return;
        }
    }
    big_gemm_crate::<f32>(batch, m, n, k, a, b, c, accumulate)
}

#[cfg(test)]
thread_local! {
    static AVX2_ONLY: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// Runs `f` with large f32 products on the AVX2 kernel even where the CPU has AVX-512, so the
/// tests cover it on every x86 machine (decided on the calling thread).
#[cfg(test)]
pub(crate) fn with_avx2_kernels<R>(f: impl FnOnce() -> R) -> R {
    AVX2_ONLY.with(|c| c.set(true));
    let r = f();
    AVX2_ONLY.with(|c| c.set(false));
    r
}

#[cfg(all(test, target_arch = "x86_64"))]
fn avx2_only() -> bool {
    AVX2_ONLY.with(|c| c.get())
}
#[cfg(all(not(test), target_arch = "x86_64"))]
fn avx2_only() -> bool {
    false
}

/// Whether large f32 products run on the packed AVX2 kernel: AVX2 and FMA present, and not
/// turned off with `TESSERA_PACKED_AVX2=0` (which falls back to the `gemm` crate, for
/// comparisons).
#[cfg(target_arch = "x86_64")]
fn packed_avx2_f32() -> bool {
    use crate::backend::cpu::simd;
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        simd::level() >= simd::Level::Avx2
            && std::env::var("TESSERA_PACKED_AVX2").map_or(true, |v| v != "0")
    })
}

/// f64 version of [`matmul_f32`].
///
/// # Safety
/// As for [`matmul_f32`].
pub unsafe fn matmul_f64(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<f64>,
    b: MatRef<f64>,
    c: MatMut<f64>,
    accumulate: bool,
) {
    matmul_any(batch, m, n, k, a, b, c, accumulate, big_gemm_crate::<f64>)
}

/// f16 version of [`matmul_f32`]; products are accumulated in f32.
///
/// # Safety
/// As for [`matmul_f32`].
pub unsafe fn matmul_f16(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<F16>,
    b: MatRef<F16>,
    c: MatMut<F16>,
    accumulate: bool,
) {
    matmul_any(batch, m, n, k, a, b, c, accumulate, big_gemm_crate::<F16>)
}

/// bf16 version of [`matmul_f32`]; products are accumulated in f32 (AVX-512 BF16 `vdpbf16ps`
/// when the CPU has it).
///
/// # Safety
/// As for [`matmul_f32`].
pub unsafe fn matmul_bf16(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<Bf16>,
    b: MatRef<Bf16>,
    c: MatMut<Bf16>,
    accumulate: bool,
) {
    matmul_any(batch, m, n, k, a, b, c, accumulate, bf16::matmul_big)
}

type BigFn<T> = unsafe fn(usize, usize, usize, usize, MatRef<T>, MatRef<T>, MatMut<T>, bool);

/// Shared front end: trivial cases, orientation, small/big routing.
unsafe fn matmul_any<T: Elem + small::SmallKernels>(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<T>,
    b: MatRef<T>,
    c: MatMut<T>,
    accumulate: bool,
    big: BigFn<T>,
) {
    if batch == 0 || m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            let zero = T::from_acc(<T::Acc as Acc>::ZERO);
            for bi in 0..batch {
                let cb = c.item(bi);
                for i in 0..m {
                    for j in 0..n {
                        // SAFETY: (bi, i, j) is in range, so the caller guarantees it is writable.
                        *cb.at(i, j) = zero;
                    }
                }
            }
        }
        return;
    }
    // Make m the smaller dimension: C^T (n x m) = B^T (n x k) @ A^T (k x m).
    let (m, n, a, b, c) = if n < m {
        (n, m, b.t(), a.t(), c.t())
    } else {
        (m, n, a, b, c)
    };
    // Skinny products whose B is column-contiguous (the `x @ W^T` weight layout) also go to the
    // dot kernels up to DOT_M: they read B in place, where the packed kernels would first have to
    // transpose all of B, which costs more than the product itself at these sizes.
    let dot_m = if b.rs == 1 && b.cs != 1 {
        DOT_M
    } else {
        SMALL_M
    };
    if m < dot_m {
        small::matmul_small(batch, m, n, k, a, b, c, accumulate);
    } else {
        big(batch, m, n, k, a, b, c, accumulate);
    }
}

/// Below this many flops per matrix, the `gemm` crate is called single-threaded.
const GEMM_CRATE_PAR_FLOPS: usize = 2 * 96 * 96 * 96;

/// `m, n >= 16`: the `gemm` crate (f32, f64, f16; it accumulates f16 in f32).
unsafe fn big_gemm_crate<T: Elem + num_one::One>(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<T>,
    b: MatRef<T>,
    c: MatMut<T>,
    accumulate: bool,
) {
    let threads = pool::global().threads();
    let flops = 2usize.saturating_mul(m).saturating_mul(n).saturating_mul(k);
    let one = T::one();
    let call = |bi: usize, par: gemm::Parallelism| {
        let (ab, bb, cb) = (a.item(bi), b.item(bi), c.item(bi));
        // SAFETY: the caller guarantees the operands are valid for these shapes and strides, and
        // the gemm crate accepts any (also negative or zero) strides. With `read_dst` it computes
        // dst = 1 * dst + 1 * lhs @ rhs, else dst = 1 * lhs @ rhs.
        unsafe {
            gemm::gemm(
                m, n, k, cb.ptr, cb.cs, cb.rs, accumulate, ab.ptr, ab.cs, ab.rs, bb.ptr, bb.cs,
                bb.rs, one, one, false, false, false, par,
            )
        }
    };
    if batch > 1 && threads > 1 && c.bs != 0 && flops < GEMM_CRATE_PAR_FLOPS.saturating_mul(4) {
        // Many small products: one per task, each single-threaded. C items are disjoint because
        // c.bs != 0 and C does not overlap itself.
        let call = Shared(&call);
        pool::global().parallel_for(batch, &move |bi| {
            let call = call;
            (call.0)(bi, gemm::Parallelism::None)
        });
    } else if threads > 1 && flops >= GEMM_CRATE_PAR_FLOPS {
        // Split the larger of m, n across our pool, each part single-threaded in the gemm crate.
        // (Rather than `Parallelism::Rayon`: a second pool would compete for the same cores with
        // our workers, which spin briefly after every job.)
        let split_n = n >= m;
        let len = if split_n { n } else { m };
        let parts = threads.min(len / 16).max(1);
        let per = len.div_ceil(parts).div_ceil(16) * 16;
        let parts = len.div_ceil(per);
        for bi in 0..batch {
            let (ab, bb, cb) = (a.item(bi), b.item(bi), c.item(bi));
            let f = move |t: usize| {
                let (s0, l) = (t * per, per.min(len - t * per));
                let (mm, nn, ap, bp, cp) = if split_n {
                    (m, l, ab.ptr, bb.at(0, s0), cb.at(0, s0))
                } else {
                    (l, n, ab.at(s0, 0), bb.ptr, cb.at(s0, 0))
                };
                // SAFETY: disjoint sub-blocks of C; in-range sub-blocks of A and B.
                unsafe {
                    gemm::gemm(
                        mm,
                        nn,
                        k,
                        cp,
                        cb.cs,
                        cb.rs,
                        accumulate,
                        ap,
                        ab.cs,
                        ab.rs,
                        bp,
                        bb.cs,
                        bb.rs,
                        one,
                        one,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            };
            let f = Shared(&f);
            pool::global().parallel_for(parts, &move |t| {
                let f = f;
                (f.0)(t)
            });
        }
    } else {
        for bi in 0..batch {
            call(bi, gemm::Parallelism::None);
        }
    }
}

/// A tiny `one()` so we need not depend on num-traits directly.
mod num_one {
    pub trait One {
        fn one() -> Self;
    }
    impl One for f32 {
        fn one() -> f32 {
            1.0
        }
    }
    impl One for f64 {
        fn one() -> f64 {
            1.0
        }
    }
    impl One for half::f16 {
        fn one() -> half::f16 {
            half::f16::ONE
        }
    }
}

/// Runs `f(task)` for `tasks` tasks on the pool, or inline when there is one task.
#[inline]
fn run_tasks(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    if tasks == 1 {
        f(0);
    } else if tasks > 1 {
        pool::global().parallel_for(tasks, f);
    }
}

/// A growable scratch buffer. Allocated per call; the sizes involved are small relative to the
/// work, and allocation keeps the kernels free of thread-local state.
fn scratch<T: Copy>(len: usize, fill: T) -> Vec<T> {
    vec![fill; len]
}

#[cfg(test)]
mod tests;
