//! Small-M products (`m < 16` after orientation; `m == 1` is GEMV): memory-bound on B.
//!
//! Two kernel shapes, picked by B's layout so that B is streamed contiguously:
//! * **dot** (`B.rs == 1`, each column of B contiguous along k: the transposed-weight layout
//!   `x @ W^T`): `C[i, j] = dot(A[i, :], B[:, j])`, A rows made contiguous by packing if needed.
//! * **axpy** (`B.cs == 1`, rows of B contiguous): `C[i, :] += A[i, kk] * B[kk, :]`, with A packed
//!   k-major in the accumulation type so its elements are broadcast from one cache line.
//!
//! Any other B layout is packed, 64 columns at a time, into the dot layout.
//!
//! Work is split over column chunks of B (and over batch items) through the pool, so every thread
//! streams a disjoint part of B; a single axpy-layout product is split over k instead (each task
//! streams a contiguous block of B's rows into its own f32 partial sum, summed at the end).

use super::{Acc, Elem, MatMut, MatRef, Shared, pool, run_tasks, scratch};

/// Column chunks handed to tasks are multiples of this.
const COL_ALIGN: usize = 64;
/// Multiply-adds below which a product runs on the calling thread only.
const PAR_MACS: usize = 1 << 16;

/// Per-type kernels. The provided methods are the portable versions; x86 types override them
/// with AVX-512 ones chosen at runtime.
pub(crate) trait SmallKernels: Elem {
    /// `C[i, j] (+)= sum_kk A[i, kk] B[kk, j]` for `i < m`, `j < nc`. Row `i` of A is the
    /// contiguous run `a + i*lda .. + k`; column `j` of B is the contiguous run `b + j*ldb .. + k`.
    ///
    /// # Safety
    /// All addressed elements valid; C disjoint from A and B.
    unsafe fn dot(
        m: usize,
        nc: usize,
        k: usize,
        a: *const Self,
        lda: isize,
        b: *const Self,
        ldb: isize,
        c: MatMut<Self>,
        accumulate: bool,
    ) {
        dot_portable(m, nc, k, a, lda, b, ldb, c, accumulate)
    }

    /// `out[i*ld + j] += sum_kk ap[kk*m + i] B[kk, j]` for `i < m`, `j < nc`: A packed k-major in
    /// the accumulation type; row `kk` of B is the contiguous run `b + kk*ldb .. + nc`; `out` is
    /// an accumulation-type buffer with row stride `ld >= nc` rounded up to 16.
    ///
    /// # Safety
    /// As for `dot`; `out` valid for `m` rows of `ld` elements.
    unsafe fn axpy(
        m: usize,
        nc: usize,
        k: usize,
        ap: *const Self::Acc,
        b: *const Self,
        ldb: isize,
        out: *mut Self::Acc,
        ld: usize,
    ) {
        axpy_portable::<Self>(m, nc, k, ap, b, ldb, out, ld)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Dot,
    Axpy,
    Packed,
}

/// Entry from `matmul_any`: `1 <= m < 16`, `m <= n`, `k >= 1`, `batch >= 1`.
pub(super) unsafe fn matmul_small<T: SmallKernels>(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<T>,
    b: MatRef<T>,
    c: MatMut<T>,
    accumulate: bool,
) {
    if batch > 1 && c.bs == 0 {
        // Every item writes the same C: run the items in order, exactly as specified.
        for bi in 0..batch {
            matmul_small(1, m, n, k, a.item(bi), b.item(bi), c.item(bi), accumulate);
        }
        return;
    }
    let layout = if b.cs == 1 && n > 1 {
        Layout::Axpy
    } else if b.rs == 1 {
        Layout::Dot
    } else {
        Layout::Packed
    };

    // Prepare A once (per distinct batch item).
    let a_items = if a.bs == 0 { 1 } else { batch };
    let mut a_rows: Vec<T> = Vec::new(); // Dot / Packed: rows contiguous along k.
    let mut a_kmajor: Vec<T::Acc> = Vec::new(); // Axpy: ap[kk*m + i].
    match layout {
        Layout::Axpy => {
            a_kmajor = scratch(a_items * m * k, <T::Acc as Acc>::ZERO);
            for bi in 0..a_items {
                let ab = a.item(bi);
                let dst = &mut a_kmajor[bi * m * k..(bi + 1) * m * k];
                for kk in 0..k {
                    for i in 0..m {
                        // SAFETY: i < m, kk < k: in range of A, readable per the caller.
                        dst[kk * m + i] = (*ab.at(i, kk)).to_acc();
                    }
                }
            }
        }
        Layout::Dot | Layout::Packed => {
            if a.cs != 1 || k == 1 {
                let zero = T::from_acc(<T::Acc as Acc>::ZERO);
                a_rows = scratch(a_items * m * k, zero);
                for bi in 0..a_items {
                    let ab = a.item(bi);
                    let dst = &mut a_rows[bi * m * k..(bi + 1) * m * k];
                    for i in 0..m {
                        for kk in 0..k {
                            // SAFETY: in range of A.
                            dst[i * k + kk] = *ab.at(i, kk);
                        }
                    }
                }
            }
        }
    }
    // (ptr, row stride) of A rows for batch item bi in the dot layouts.
    let a_rows_of = |bi: usize| -> (*const T, isize) {
        if a_rows.is_empty() {
            (a.item(bi).ptr, a.rs)
        } else {
            let bi = if a.bs == 0 { 0 } else { bi };
            (a_rows.as_ptr().wrapping_add(bi * m * k), k as isize)
        }
    };
    let a_kmajor_of = |bi: usize| -> *const T::Acc {
        let bi = if a.bs == 0 { 0 } else { bi };
        a_kmajor.as_ptr().wrapping_add(bi * m * k)
    };

    let threads = pool::global().threads();
    let macs = batch.saturating_mul(m).saturating_mul(n).saturating_mul(k);
    if layout == Layout::Axpy && batch == 1 && threads > 1 && macs >= PAR_MACS && k >= 256 {
        // Split k instead of n: every task then streams one contiguous block of B's rows (the
        // access pattern DRAM and the prefetchers like best); the partial products are summed.
        let splits = (2 * threads).min(k / 64);
        let per = k.div_ceil(splits);
        let ld = n.div_ceil(16) * 16;
        let mut partial = scratch(splits * m * ld, <T::Acc as Acc>::ZERO);
        let pp = Shared(partial.as_mut_ptr());
        let ap = Shared(a_kmajor.as_ptr());
        let task = move |t: usize| {
            let (pp, ap) = (pp, ap);
            let k0 = t * per;
            let kl = per.min(k - k0);
            // SAFETY: task t owns partial slice t; rows k0..k0+kl of B and of the packed A are in
            // range; the buffers outlive the tasks.
            unsafe {
                T::axpy(
                    m,
                    n,
                    kl,
                    ap.0.add(k0 * m),
                    b.at(k0, 0),
                    b.rs,
                    pp.0.add(t * m * ld),
                    ld,
                )
            };
        };
        let task = Shared(&task);
        run_tasks(splits, &move |t| {
            let task = task;
            (task.0)(t)
        });
        for i in 0..m {
            for j in 0..n {
                let mut s = partial[i * ld + j];
                for t in 1..splits {
                    s = s + partial[t * m * ld + i * ld + j];
                }
                store(c, i, j, s, accumulate);
            }
        }
        drop(partial);
        return;
    }

    // Split into tasks: batch items x column chunks.
    let chunks_per_item = if threads <= 1 || macs < PAR_MACS || batch >= 4 * threads {
        1
    } else {
        // A few chunks per thread so a thread slowed by a noisy neighbour does not hold up the
        // rest; chunks stay wide enough to stream B efficiently.
        let per_thread = if layout == Layout::Axpy { 2 } else { 4 };
        let want = (per_thread * threads).div_ceil(batch);
        want.min(n.div_ceil(COL_ALIGN)).max(1)
    };
    let chunk = n.div_ceil(chunks_per_item).div_ceil(COL_ALIGN) * COL_ALIGN;
    let chunks_per_item = n.div_ceil(chunk);
    let tasks = batch * chunks_per_item;

    let task = |t: usize| {
        let bi = t / chunks_per_item;
        let j0 = (t % chunks_per_item) * chunk;
        let nc = chunk.min(n - j0);
        let bb = b.item(bi);
        let cb = c.item(bi);
        let cc = MatMut {
            ptr: cb.ptr.wrapping_offset(j0 as isize * cb.cs),
            ..cb
        };
        // SAFETY (all three arms): the caller guarantees A, B, C valid for the full shapes; we
        // address columns j0..j0+nc < n of B and C and the prepared A buffers, which live until
        // all tasks return. Tasks write disjoint column ranges / batch items of C (c.bs != 0 here).
        unsafe {
            match layout {
                Layout::Dot => {
                    let (ap, lda) = a_rows_of(bi);
                    T::dot(m, nc, k, ap, lda, bb.at(0, j0), bb.cs, cc, accumulate);
                }
                Layout::Axpy => {
                    let ld = nc.div_ceil(16) * 16;
                    let mut out = scratch(m * ld, <T::Acc as Acc>::ZERO);
                    T::axpy(
                        m,
                        nc,
                        k,
                        a_kmajor_of(bi),
                        bb.at(0, j0),
                        bb.rs,
                        out.as_mut_ptr(),
                        ld,
                    );
                    for i in 0..m {
                        for j in 0..nc {
                            store(cc, i, j, out[i * ld + j], accumulate);
                        }
                    }
                }
                Layout::Packed => {
                    let (ap, lda) = a_rows_of(bi);
                    const W: usize = 64;
                    let zero = T::from_acc(<T::Acc as Acc>::ZERO);
                    let mut bp = scratch(k * W.min(nc), zero);
                    let mut jj = 0;
                    while jj < nc {
                        let w = W.min(nc - jj);
                        for j in 0..w {
                            for kk in 0..k {
                                bp[j * k + kk] = *bb.at(kk, j0 + jj + j);
                            }
                        }
                        let cw = MatMut {
                            ptr: cc.ptr.wrapping_offset(jj as isize * cc.cs),
                            ..cc
                        };
                        T::dot(m, w, k, ap, lda, bp.as_ptr(), k as isize, cw, accumulate);
                        jj += w;
                    }
                }
            }
        }
    };
    let task = Shared(&task);
    run_tasks(tasks, &move |t| {
        let task = task;
        (task.0)(t)
    });
}

// ---------------------------------------------------------------------------------------------
// Portable kernels (also compiled with wider vector ISAs through `target_feature` wrappers).

const LANES: usize = 8;

#[inline(always)]
unsafe fn store<T: Elem>(c: MatMut<T>, i: usize, j: usize, v: T::Acc, accumulate: bool) {
    let p = c.at(i, j);
    *p = if accumulate {
        T::from_acc((*p).to_acc() + v)
    } else {
        T::from_acc(v)
    };
}

/// Calls `f(w, b_block, c_block)` for B's columns in blocks of `cb` (the last one shorter): the
/// dot kernels size the blocks to stay in L2 while the row groups of A pass over them, so B is
/// read from memory once whatever m.
#[inline(always)]
unsafe fn column_blocks<T>(
    nc: usize,
    cb: usize,
    b: *const T,
    ldb: isize,
    c: MatMut<T>,
    mut f: impl FnMut(usize, *const T, MatMut<T>),
) {
    let mut j0 = 0;
    while j0 < nc {
        let w = cb.min(nc - j0);
        let cj = MatMut {
            ptr: c.ptr.wrapping_offset(j0 as isize * c.cs),
            ..c
        };
        f(w, b.offset(j0 as isize * ldb), cj);
        j0 += w;
    }
}

#[inline(always)]
pub(super) unsafe fn dot_portable<T: Elem>(
    m: usize,
    nc: usize,
    k: usize,
    a: *const T,
    lda: isize,
    b: *const T,
    ldb: isize,
    c: MatMut<T>,
    accumulate: bool,
) {
    let kv = k / LANES * LANES;
    for j in 0..nc {
        // SAFETY: column j of B is k contiguous elements (caller contract).
        let bc = core::slice::from_raw_parts(b.offset(j as isize * ldb), k);
        for i in 0..m {
            let ar = core::slice::from_raw_parts(a.offset(i as isize * lda), k);
            let mut s = [<T::Acc as Acc>::ZERO; LANES];
            for (ac, bcc) in ar[..kv]
                .chunks_exact(LANES)
                .zip(bc[..kv].chunks_exact(LANES))
            {
                for l in 0..LANES {
                    s[l] = s[l] + ac[l].to_acc() * bcc[l].to_acc();
                }
            }
            let mut t = <T::Acc as Acc>::ZERO;
            for kk in kv..k {
                t = t + ar[kk].to_acc() * bc[kk].to_acc();
            }
            let mut w = LANES;
            while w > 1 {
                w /= 2;
                for l in 0..w {
                    s[l] = s[l] + s[l + w];
                }
            }
            store(c, i, j, s[0] + t, accumulate);
        }
    }
}

#[inline(always)]
pub(super) unsafe fn axpy_portable<T: Elem>(
    m: usize,
    nc: usize,
    k: usize,
    ap: *const T::Acc,
    b: *const T,
    ldb: isize,
    out: *mut T::Acc,
    ld: usize,
) {
    // Column blocks keep the touched part of `out` in L1 while rows of B stream past.
    const NB: usize = 1024;
    let mut j0 = 0;
    while j0 < nc {
        let w = NB.min(nc - j0);
        for kk in 0..k {
            // SAFETY: row kk of B has nc >= j0 + w contiguous elements.
            let br = core::slice::from_raw_parts(b.offset(kk as isize * ldb).add(j0), w);
            for i in 0..m {
                let av = *ap.add(kk * m + i);
                // SAFETY: row i of `out` has ld >= nc elements.
                let row = core::slice::from_raw_parts_mut(out.add(i * ld + j0), w);
                for (x, y) in row.iter_mut().zip(br) {
                    *x = *x + av * y.to_acc();
                }
            }
        }
        j0 += w;
    }
}

impl SmallKernels for f64 {
    unsafe fn dot(
        m: usize,
        nc: usize,
        k: usize,
        a: *const f64,
        lda: isize,
        b: *const f64,
        ldb: isize,
        c: MatMut<f64>,
        accumulate: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        if x86::has_avx512() {
            // SAFETY: the CPU has the features the wrapper is compiled for.
            return x86::dot_f64_avx512(m, nc, k, a, lda, b, ldb, c, accumulate);
        }
        dot_portable(m, nc, k, a, lda, b, ldb, c, accumulate)
    }
    unsafe fn axpy(
        m: usize,
        nc: usize,
        k: usize,
        ap: *const f64,
        b: *const f64,
        ldb: isize,
        out: *mut f64,
        ld: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if x86::has_avx512() {
            // SAFETY: as above.
            return x86::axpy_f64_avx512(m, nc, k, ap, b, ldb, out, ld);
        }
        axpy_portable::<f64>(m, nc, k, ap, b, ldb, out, ld)
    }
}

macro_rules! f32acc_small_kernels {
    ($t:ty, $dot:ident) => {
        impl SmallKernels for $t {
            unsafe fn dot(
                m: usize,
                nc: usize,
                k: usize,
                a: *const $t,
                lda: isize,
                b: *const $t,
                ldb: isize,
                c: MatMut<$t>,
                accumulate: bool,
            ) {
                #[cfg(target_arch = "x86_64")]
                if x86::has_avx512() {
                    // SAFETY: the CPU has AVX-512 F/BW/VL (checked above).
                    return x86::$dot(m, nc, k, a, lda, b, ldb, c, accumulate);
                } else if avx2::usable() {
                    // SAFETY: the CPU has AVX2, FMA and F16C (checked above).
                    return avx2::dot(m, nc, k, a, lda, b, ldb, c, accumulate);
                }
                dot_portable(m, nc, k, a, lda, b, ldb, c, accumulate)
            }
            unsafe fn axpy(
                m: usize,
                nc: usize,
                k: usize,
                ap: *const f32,
                b: *const $t,
                ldb: isize,
                out: *mut f32,
                ld: usize,
            ) {
                #[cfg(target_arch = "x86_64")]
                if x86::has_avx512() {
                    // SAFETY: as above.
                    return x86::axpy_avx512::<$t>(m, nc, k, ap, b, ldb, out, ld);
                } else if avx2::usable() {
                    // SAFETY: as above.
                    return avx2::axpy::<$t>(m, nc, k, ap, b, ldb, out, ld);
                }
                axpy_portable::<$t>(m, nc, k, ap, b, ldb, out, ld)
            }
        }
    };
}
f32acc_small_kernels!(f32, dot_avx512_f32);
f32acc_small_kernels!(half::f16, dot_avx512_f16);
f32acc_small_kernels!(half::bf16, dot_avx512_bf16);

#[cfg(target_arch = "x86_64")]
#[path = "small_avx2.rs"]
mod avx2;

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::super::{Elem, MatMut};
    use super::{axpy_portable, column_blocks, dot_portable, store};
    use core::arch::x86_64::*;
    use half::{bf16, f16};

    /// AVX-512 F + BW + VL (+ FMA, F16C which every AVX-512 CPU has), unless the backend's
    /// SIMD level is capped below AVX-512 (`TESSERA_SIMD`, used to test the portable paths).
    #[inline]
    pub(crate) fn has_avx512() -> bool {
        crate::backend::cpu::simd::level() == crate::backend::cpu::simd::Level::Avx512
            && std::arch::is_x86_feature_detected!("f16c")
    }

    #[inline]
    pub(crate) fn has_avx512bf16() -> bool {
        has_avx512() && std::arch::is_x86_feature_detected!("avx512bf16")
    }

    #[target_feature(enable = "avx512f,avx512vl,fma")]
    pub(super) unsafe fn dot_f64_avx512(
        m: usize,
        nc: usize,
        k: usize,
        a: *const f64,
        lda: isize,
        b: *const f64,
        ldb: isize,
        c: MatMut<f64>,
        accumulate: bool,
    ) {
        dot_portable(m, nc, k, a, lda, b, ldb, c, accumulate)
    }
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    pub(super) unsafe fn axpy_f64_avx512(
        m: usize,
        nc: usize,
        k: usize,
        ap: *const f64,
        b: *const f64,
        ldb: isize,
        out: *mut f64,
        ld: usize,
    ) {
        axpy_portable::<f64>(m, nc, k, ap, b, ldb, out, ld)
    }

    /// Loads 16 elements as f32 lanes. Implementations are only called from functions compiled
    /// with AVX-512 F/BW/VL enabled (they are `inline(always)` into those).
    pub(crate) trait Load16: Elem<Acc = f32> {
        unsafe fn load(p: *const Self) -> __m512;
        /// Lanes whose mask bit is clear read nothing (no fault) and are zero.
        unsafe fn load_mask(p: *const Self, mask: __mmask16) -> __m512;
    }
    impl Load16 for f32 {
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn load_mask(p: *const f32, mask: __mmask16) -> __m512 {
            _mm512_maskz_loadu_ps(mask, p)
        }
    }
    impl Load16 for f16 {
        #[inline(always)]
        unsafe fn load(p: *const f16) -> __m512 {
            _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
        }
        #[inline(always)]
        unsafe fn load_mask(p: *const f16, mask: __mmask16) -> __m512 {
            _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p as *const i16))
        }
    }
    impl Load16 for bf16 {
        #[inline(always)]
        unsafe fn load(p: *const bf16) -> __m512 {
            let h = _mm256_loadu_si256(p as *const __m256i);
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
        #[inline(always)]
        unsafe fn load_mask(p: *const bf16, mask: __mmask16) -> __m512 {
            let h = _mm256_maskz_loadu_epi16(mask, p as *const i16);
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }

    #[inline(always)]
    fn tail_mask16(rem: usize) -> __mmask16 {
        if rem >= 16 {
            0xffff
        } else {
            ((1u32 << rem) - 1) as __mmask16
        }
    }

    /// Bytes ahead of each B row's read position that `dot_tile` asks the cache for (as the
    /// bf16 kernel below does). On a Xeon, 2 threads, `gemv_f32_4096x4096_pct_of_read_bw`
    /// streamed from memory, three alternated runs: none 95.4, 93.3, 95.5%; 512 B 101.6,
    /// 101.4, 96.1%.
    const DOT_PREFETCH: usize = 512;

    /// R rows x C columns of dot products over the full k.
    #[inline(always)]
    unsafe fn dot_tile<T: Load16, const R: usize, const C: usize>(
        k: usize,
        a: *const T,
        lda: isize,
        b: *const T,
        ldb: isize,
        c: MatMut<T>,
        i0: usize,
        j0: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let mut kk = 0;
        while kk + 16 <= k {
            let mut bv = [_mm512_setzero_ps(); C];
            for j in 0..C {
                let p = b.offset(j as isize * ldb).add(kk);
                // A hint: past the row's end it fetches a neighbour's line, never faults.
                _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(DOT_PREFETCH));
                bv[j] = T::load(p);
            }
            for i in 0..R {
                let av = T::load(a.offset(i as isize * lda).add(kk));
                for j in 0..C {
                    acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
                }
            }
            kk += 16;
        }
        if kk < k {
            let mask = tail_mask16(k - kk);
            let mut bv = [_mm512_setzero_ps(); C];
            for j in 0..C {
                bv[j] = T::load_mask(b.offset(j as isize * ldb).add(kk), mask);
            }
            for i in 0..R {
                let av = T::load_mask(a.offset(i as isize * lda).add(kk), mask);
                for j in 0..C {
                    acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
                }
            }
        }
        for i in 0..R {
            for j in 0..C {
                store(
                    c,
                    i0 + i,
                    j0 + j,
                    _mm512_reduce_add_ps(acc[i][j]),
                    accumulate,
                );
            }
        }
    }

    /// Rows `i0..i0+R` of C, columns in groups of C (then singles).
    #[inline(always)]
    unsafe fn dot_rows<T: Load16, const R: usize, const C: usize>(
        nc: usize,
        k: usize,
        a: *const T,
        lda: isize,
        b: *const T,
        ldb: isize,
        c: MatMut<T>,
        i0: usize,
        accumulate: bool,
    ) {
        let a = a.offset(i0 as isize * lda);
        let mut j = 0;
        while j + C <= nc {
            dot_tile::<T, R, C>(
                k,
                a,
                lda,
                b.offset(j as isize * ldb),
                ldb,
                c,
                i0,
                j,
                accumulate,
            );
            j += C;
        }
        while j < nc {
            dot_tile::<T, R, 1>(
                k,
                a,
                lda,
                b.offset(j as isize * ldb),
                ldb,
                c,
                i0,
                j,
                accumulate,
            );
            j += 1;
        }
    }

    #[inline(always)]
    unsafe fn dot_generic<T: Load16>(
        m: usize,
        nc: usize,
        k: usize,
        a: *const T,
        lda: isize,
        b: *const T,
        ldb: isize,
        c: MatMut<T>,
        accumulate: bool,
    ) {
        // Column blocks of B (~64 KiB) stay in L2 while the row groups of A pass over them, so B is
        // read from memory once even when m > 8.
        let cb = (16384 / k.max(1)).clamp(12, 1 << 20) / 12 * 12;
        column_blocks(nc, cb, b, ldb, c, |w, bj, cj| {
            #[inline(always)]
            unsafe fn rows<T: Load16, const R: usize, const C: usize>(
                w: usize,
                k: usize,
                a: *const T,
                lda: isize,
                b: *const T,
                ldb: isize,
                c: MatMut<T>,
                accumulate: bool,
                i: usize,
            ) {
                dot_rows::<T, R, C>(w, k, a, lda, b, ldb, c, i, accumulate)
            }
            let mut i = 0;
            while i < m {
                let r = (m - i).min(8);
                match r {
                    1 => rows::<T, 1, 4>(w, k, a, lda, bj, ldb, cj, accumulate, i),
                    2 => rows::<T, 2, 4>(w, k, a, lda, bj, ldb, cj, accumulate, i),
                    3 => rows::<T, 3, 4>(w, k, a, lda, bj, ldb, cj, accumulate, i),
                    4 => rows::<T, 4, 4>(w, k, a, lda, bj, ldb, cj, accumulate, i),
                    5 => rows::<T, 5, 4>(w, k, a, lda, bj, ldb, cj, accumulate, i),
                    6 => rows::<T, 6, 3>(w, k, a, lda, bj, ldb, cj, accumulate, i),
                    7 => rows::<T, 7, 3>(w, k, a, lda, bj, ldb, cj, accumulate, i),
                    _ => rows::<T, 8, 3>(w, k, a, lda, bj, ldb, cj, accumulate, i),
                }
                i += r;
            }
        });
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    pub(super) unsafe fn dot_avx512_f32(
        m: usize,
        nc: usize,
        k: usize,
        a: *const f32,
        lda: isize,
        b: *const f32,
        ldb: isize,
        c: MatMut<f32>,
        accumulate: bool,
    ) {
        dot_generic(m, nc, k, a, lda, b, ldb, c, accumulate)
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    pub(super) unsafe fn dot_avx512_f16(
        m: usize,
        nc: usize,
        k: usize,
        a: *const f16,
        lda: isize,
        b: *const f16,
        ldb: isize,
        c: MatMut<f16>,
        accumulate: bool,
    ) {
        dot_generic(m, nc, k, a, lda, b, ldb, c, accumulate)
    }
    pub(super) unsafe fn dot_avx512_bf16(
        m: usize,
        nc: usize,
        k: usize,
        a: *const bf16,
        lda: isize,
        b: *const bf16,
        ldb: isize,
        c: MatMut<bf16>,
        accumulate: bool,
    ) {
        if has_avx512bf16() {
            dot_dpbf16(m, nc, k, a, lda, b, ldb, c, accumulate)
        } else {
            dot_avx512_bf16_cvt(m, nc, k, a, lda, b, ldb, c, accumulate)
        }
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    unsafe fn dot_avx512_bf16_cvt(
        m: usize,
        nc: usize,
        k: usize,
        a: *const bf16,
        lda: isize,
        b: *const bf16,
        ldb: isize,
        c: MatMut<bf16>,
        accumulate: bool,
    ) {
        dot_generic(m, nc, k, a, lda, b, ldb, c, accumulate)
    }

    /// Bytes ahead of each B row's read position that the bf16 kernel asks the cache for. On
    /// a Xeon (2 threads, `gemv_bf16_4096x11008_pct_of_read_bw`, two alternated rounds): none
    /// 85.2-85.9%, 512 B 93.6-98.0%, 1 KB 90.6-90.8%, 2 KB 87.9-89.6%.
    const BF16_PREFETCH: usize = 512;
    /// bf16 dot products with `vdpbf16ps` (32 products per instruction, f32 accumulation).
    #[inline(always)]
    unsafe fn dot_tile_bh<const R: usize, const C: usize>(
        k: usize,
        a: *const bf16,
        lda: isize,
        b: *const bf16,
        ldb: isize,
        c: MatMut<bf16>,
        i0: usize,
        j0: usize,
        accumulate: bool,
    ) {
        #[inline(always)]
        unsafe fn bh(v: __m512i) -> __m512bh {
            // SAFETY: both are 512-bit plain-data vectors.
            core::mem::transmute(v)
        }
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let mut kk = 0;
        while kk + 32 <= k {
            let mut bv = [_mm512_setzero_si512(); C];
            for j in 0..C {
                let p = b.offset(j as isize * ldb).add(kk);
                // A hint: past the row's end it fetches a neighbour's line, never faults.
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(BF16_PREFETCH / 2) as *const i8);
                bv[j] = _mm512_loadu_si512(p as *const _);
            }
            for i in 0..R {
                let av = bh(_mm512_loadu_si512(
                    a.offset(i as isize * lda).add(kk) as *const _
                ));
                for j in 0..C {
                    acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av, bh(bv[j]));
                }
            }
            kk += 32;
        }
        if kk < k {
            let rem = k - kk;
            let mask: __mmask32 = if rem >= 32 { !0 } else { (1u32 << rem) - 1 };
            let mut bv = [_mm512_setzero_si512(); C];
            for j in 0..C {
                bv[j] = _mm512_maskz_loadu_epi16(
                    mask,
                    b.offset(j as isize * ldb).add(kk) as *const i16,
                );
            }
            for i in 0..R {
                let av = bh(_mm512_maskz_loadu_epi16(
                    mask,
                    a.offset(i as isize * lda).add(kk) as *const i16,
                ));
                for j in 0..C {
                    acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av, bh(bv[j]));
                }
            }
        }
        for i in 0..R {
            for j in 0..C {
                store(
                    c,
                    i0 + i,
                    j0 + j,
                    _mm512_reduce_add_ps(acc[i][j]),
                    accumulate,
                );
            }
        }
    }

    #[inline(always)]
    unsafe fn dot_rows_bh<const R: usize, const C: usize>(
        nc: usize,
        k: usize,
        a: *const bf16,
        lda: isize,
        b: *const bf16,
        ldb: isize,
        c: MatMut<bf16>,
        accumulate: bool,
        i0: usize,
    ) {
        let a = a.offset(i0 as isize * lda);
        let mut j = 0;
        while j + C <= nc {
            dot_tile_bh::<R, C>(
                k,
                a,
                lda,
                b.offset(j as isize * ldb),
                ldb,
                c,
                i0,
                j,
                accumulate,
            );
            j += C;
        }
        while j < nc {
            dot_tile_bh::<R, 1>(
                k,
                a,
                lda,
                b.offset(j as isize * ldb),
                ldb,
                c,
                i0,
                j,
                accumulate,
            );
            j += 1;
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,fma")]
    unsafe fn dot_dpbf16(
        m: usize,
        nc: usize,
        k: usize,
        a: *const bf16,
        lda: isize,
        b: *const bf16,
        ldb: isize,
        c: MatMut<bf16>,
        accumulate: bool,
    ) {
        // Column blocks are multiples of 24 so the 8-, 4- and 3-column tiles below divide them.
        let cb = (32768 / k.max(1)).clamp(24, 1 << 20) / 24 * 24;
        column_blocks(nc, cb, b, ldb, c, |w, bj, cj| {
            let mut i = 0;
            while i < m {
                let r = (m - i).min(8);
                match r {
                    1 => dot_rows_bh::<1, 8>(w, k, a, lda, bj, ldb, cj, accumulate, i),
                    2 => dot_rows_bh::<2, 4>(w, k, a, lda, bj, ldb, cj, accumulate, i),
                    3 => dot_rows_bh::<3, 4>(w, k, a, lda, bj, ldb, cj, accumulate, i),
                    4 => dot_rows_bh::<4, 4>(w, k, a, lda, bj, ldb, cj, accumulate, i),
                    5 => dot_rows_bh::<5, 4>(w, k, a, lda, bj, ldb, cj, accumulate, i),
                    6 => dot_rows_bh::<6, 3>(w, k, a, lda, bj, ldb, cj, accumulate, i),
                    7 => dot_rows_bh::<7, 3>(w, k, a, lda, bj, ldb, cj, accumulate, i),
                    _ => dot_rows_bh::<8, 3>(w, k, a, lda, bj, ldb, cj, accumulate, i),
                }
                i += r;
            }
        });
    }

    /// Rows `0..R` of the tile (row stride `ld`, `w` columns) += A[r, kk..kk+Q] * B[kk..kk+Q, :],
    /// for Q = 4 rows of B at once (or 1 for the remainder): B is streamed along its rows, the f32
    /// tile stays in L1/L2.
    #[inline(always)]
    unsafe fn axpy_step<T: Load16, const R: usize, const Q: usize>(
        ap: *const f32,
        m: usize,
        b: *const T,
        ldb: isize,
        w: usize,
        tile: *mut f32,
        ld: usize,
    ) {
        let mut av = [[_mm512_setzero_ps(); Q]; R];
        for r in 0..R {
            for q in 0..Q {
                av[r][q] = _mm512_set1_ps(*ap.add(q * m + r));
            }
        }
        let mut j = 0;
        while j < w {
            let mask = tail_mask16(w - j);
            let mut bv = [_mm512_setzero_ps(); Q];
            for q in 0..Q {
                bv[q] = T::load_mask(b.offset(q as isize * ldb).add(j), mask);
            }
            for r in 0..R {
                let t = tile.add(r * ld + j);
                let mut x = _mm512_loadu_ps(t);
                for q in 0..Q {
                    x = _mm512_fmadd_ps(av[r][q], bv[q], x);
                }
                _mm512_storeu_ps(t, x);
            }
            j += 16;
        }
    }

    #[inline(always)]
    unsafe fn axpy_rows<T: Load16, const Q: usize>(
        m: usize,
        ap: *const f32,
        b: *const T,
        ldb: isize,
        w: usize,
        tile: *mut f32,
        ld: usize,
    ) {
        let mut i = 0;
        while i < m {
            let r = (m - i).min(4);
            let (api, t) = (ap.add(i), tile.add(i * ld));
            match r {
                1 => axpy_step::<T, 1, Q>(api, m, b, ldb, w, t, ld),
                2 => axpy_step::<T, 2, Q>(api, m, b, ldb, w, t, ld),
                3 => axpy_step::<T, 3, Q>(api, m, b, ldb, w, t, ld),
                _ => axpy_step::<T, 4, Q>(api, m, b, ldb, w, t, ld),
            }
            i += r;
        }
    }

    /// Columns per block for one row: long contiguous runs of B rows stream best; the touched
    /// part of `out` (m x nb f32, up to 64 KiB) stays in L2.
    const NB_ELEMS: usize = 16384;

    #[inline(always)]
    unsafe fn axpy_generic<T: Load16>(
        m: usize,
        nc: usize,
        k: usize,
        ap: *const f32,
        b: *const T,
        ldb: isize,
        out: *mut f32,
        ld: usize,
    ) {
        let nb = ((NB_ELEMS / m) / 16 * 16).max(256);
        let mut j0 = 0;
        while j0 < nc {
            let w = nb.min(nc - j0);
            let t = out.add(j0);
            let bj = b.add(j0);
            let mut kk = 0;
            while kk + 4 <= k {
                axpy_rows::<T, 4>(
                    m,
                    ap.add(kk * m),
                    bj.offset(kk as isize * ldb),
                    ldb,
                    w,
                    t,
                    ld,
                );
                kk += 4;
            }
            while kk < k {
                axpy_rows::<T, 1>(
                    m,
                    ap.add(kk * m),
                    bj.offset(kk as isize * ldb),
                    ldb,
                    w,
                    t,
                    ld,
                );
                kk += 1;
            }
            j0 += w;
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
    pub(super) unsafe fn axpy_avx512<T: Load16>(
        m: usize,
        nc: usize,
        k: usize,
        ap: *const f32,
        b: *const T,
        ldb: isize,
        out: *mut f32,
        ld: usize,
    ) {
        axpy_generic(m, nc, k, ap, b, ldb, out, ld)
    }
}
