//! The fused attention kernels (`ops::sdpa`). This file holds the ones built for few query rows
//! (decode); prompts with 16 or more positions per head go to the tiled kernel
//! (`attention_tiled.rs`) on x86-64 CPUs with AVX2 + FMA or AVX-512 ([`tiled_applies`]).
//!
//! Work is cut by kv head and by key range (split-K, as flash-decoding does). One task attends
//! every query row of one kv head (the `rep · t` rows of the query heads that share it, so each
//! key and value is loaded once per group rather than once per query head) to one range of keys.
//! It leaves a partial result per row: the largest score `m`, the sum `s` of `exp(score - m)`,
//! and the unnormalised `Σ exp(score - m) v`. A merge rescales the parts to their common maximum
//! and divides. Splitting the keys keeps every thread busy when there are fewer kv heads than
//! threads (Gemma 3 270M has one).
//!
//! The AVX-512 kernel (`attention_x86.rs`) computes sixteen scores at a time and sums them with
//! one transpose-add tree instead of a horizontal sum per key; the AVX2 kernel
//! (`attention_avx2.rs`) does the same eight at a time on CPUs without AVX-512 and head sizes
//! that are a multiple of 8 but not 16; the portable kernel here serves other CPUs and head
//! sizes.

use super::attention_tiled::Kernels;
use super::copy::{self, SendConstPtr, SendPtr};
use super::fast::finish;
use super::{pool, reduce, simd};
use crate::array::Meta;
use crate::dtype::Dtype;
use crate::error::Result;
use crate::layout::ArrayData;
use crate::primitive::ReduceOp;

/// The element type of stored keys and values: f32, or f16 (a half-size KV cache), widened to
/// f32 as the kernels load them.
pub(super) trait KvElem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    /// Sixteen consecutive elements as f32 (AVX-512F; F16C-class conversion for f16).
    ///
    /// # Safety
    /// Sixteen elements are readable at `p`; the CPU has AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
    /// Eight consecutive elements as f32 (AVX; F16C for f16).
    ///
    /// # Safety
    /// Eight elements are readable at `p`; the CPU has AVX2 and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
    /// The task itself where its elements are f32 already (the portable kernel runs it as it
    /// is; other element types are widened first).
    fn as_f32(_part: &Part<Self>) -> Option<&Part<f32>> {
        None
    }
    /// The `dst.len()` elements at `x` as f32.
    ///
    /// # Safety
    /// Those elements are readable.
    unsafe fn widen_row(x: *const Self, dst: &mut [f32]) {
        for (c, y) in dst.iter_mut().enumerate() {
            // SAFETY: the caller's promise.
            *y = unsafe { *x.add(c) }.to_f32();
        }
    }
    /// Rows `0..len` of `d` elements, `stride` apart from `x`, as contiguous f32.
    ///
    /// # Safety
    /// Those rows are readable.
    unsafe fn widen(x: *const Self, len: usize, stride: usize, d: usize) -> Vec<f32> {
        let mut out = vec![0f32; len * d];
        for (j, row) in out.chunks_exact_mut(d.max(1)).enumerate() {
            // SAFETY: the caller's promise.
            unsafe { Self::widen_row(x.add(j * stride), row) };
        }
        out
    }
}

impl KvElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> std::arch::x86_64::__m512 {
        // SAFETY: the caller's promise.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        // SAFETY: the caller's promise.
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
    fn as_f32(part: &Part<f32>) -> Option<&Part<f32>> {
        Some(part)
    }
    unsafe fn widen_row(x: *const f32, dst: &mut [f32]) {
        // SAFETY: the caller's promise.
        dst.copy_from_slice(unsafe { std::slice::from_raw_parts(x, dst.len()) });
    }
}

impl KvElem for half::f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const half::f16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        // SAFETY: the caller's promise.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const half::f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // SAFETY: the caller's promise.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }
    unsafe fn widen_row(x: *const Self, dst: &mut [f32]) {
        // The vectorised slice conversion (F16C where the CPU has it): element by element,
        // widening a 4000-position cache took most of a decode step's attention on the
        // portable path (AVX2 CPUs).
        use half::slice::HalfFloatSliceExt;
        // SAFETY: the caller's promise.
        let src = unsafe { std::slice::from_raw_parts(x, dst.len()) };
        src.convert_to_f32_slice(dst);
    }
}

/// One task: `rows` query rows of `d` values against `n` keys.
pub(super) struct Part<E> {
    /// Query rows, `d` apart.
    pub q: *const f32,
    pub rows: usize,
    /// Query positions per head: row `r` reads mask row `r % t`.
    pub t: usize,
    /// Key `j` at `k + j ks`, value `j` at `v + j vs`, each `d` contiguous values.
    pub k: *const E,
    pub ks: usize,
    pub v: *const E,
    pub vs: usize,
    /// Null, or the additive mask at this task's first key, its rows `ms` apart.
    pub mask: *const f32,
    pub ms: usize,
    pub n: usize,
    pub d: usize,
    pub scale: f32,
}

/// Largest head size the x86 row kernels score through transposed key blocks (the block, `d`
/// vectors of keys, lives on the kernel's stack).
#[cfg(target_arch = "x86_64")]
pub(super) const TRANSPOSED_MAX_D: usize = 256;

/// Whether the x86 row kernels (AVX-512 and AVX2) score a task of `rows` query rows through
/// transposed key blocks: from 4 rows the block's transpose costs about what the rows' own
/// widening and lane sums save (measured on AVX-512; see `attention_x86.rs`).
#[cfg(target_arch = "x86_64")]
pub(super) fn scores_transposed(rows: usize, d: usize) -> bool {
    rows >= 4 && d <= TRANSPOSED_MAX_D
}

/// Values per row of a task's result: `m`, `s`, then the `d` accumulated values.
fn slab_row(d: usize) -> usize {
    d + 2
}

/// Whether `x` can be read in place: its last axis contiguous, no negative strides (views
/// such as a KV-cache slice qualify).
fn rows_in_place(x: &ArrayData) -> bool {
    let last_unit = x.layout.strides.last().is_none_or(|&s| s == 1);
    last_unit && x.layout.strides.iter().all(|&s| s >= 0)
}

/// f32 data whose last axis is contiguous (read in place when it already is).
fn f32_rows(x: &ArrayData) -> Result<ArrayData> {
    if x.dtype == Dtype::F32 && rows_in_place(x) {
        Ok(x.clone())
    } else {
        copy::f32_contiguous(x)
    }
}

/// How many key ranges each kv head's keys are cut into: enough that the tasks divide evenly
/// among the threads, but no range under 32 keys (below that a task costs more to hand out
/// than it saves).
fn key_parts(groups: usize, l: usize, threads: usize) -> usize {
    let mut parts = 1;
    while !(groups * parts).is_multiple_of(threads) && parts < threads {
        parts += 1;
    }
    parts.min(l / 32).max(1)
}

/// `ops::sdpa`: q `(b, h, t, d)`, k and v `(b, hk, l, d)` (read in place when their rows are
/// contiguous f32), an optional additive `(t, l)` mask.
pub(super) fn sdpa(scale: f64, inputs: &[ArrayData], out: &Meta) -> Result<ArrayData> {
    let q = copy::f32_contiguous(&inputs[0])?;
    let mask = inputs.get(3).map(copy::f32_contiguous).transpose()?;
    let o = ArrayData::alloc(Dtype::F32, &out.shape)?;
    if o.size() > 0 {
        let (k, v) = (&inputs[1], &inputs[2]);
        let groups = out.shape[0] * k.shape()[1];
        let parts = key_parts(groups, k.shape()[2], pool::global().threads());
        let kernel = Kernel::best();
        let f16_cache = [k, v]
            .iter()
            .all(|x| x.dtype == Dtype::F16 && rows_in_place(x));
        let (mask, scale) = (mask.as_ref(), scale as f32);
        if f16_cache {
            // A half-precision cache is read as it is stored, widened in the kernel.
            let (k, v) = (Kv::<half::f16>::of(k), Kv::of(v));
            attend_call(&q, k, v, mask, scale, parts, kernel, &o);
        } else {
            let (k, v) = (f32_rows(k)?, f32_rows(v)?);
            attend_call(
                &q,
                Kv::<f32>::of(&k),
                Kv::of(&v),
                mask,
                scale,
                parts,
                kernel,
                &o,
            );
        }
    }
    finish(o, out)
}

/// The whole call: prompts to the tiled kernel ([`tiled_applies`]), fewer rows to the row
/// kernels with the keys cut into `parts` ranges.
#[allow(clippy::too_many_arguments)]
fn attend_call<E: KvElem>(
    q: &ArrayData,
    k: Kv<E>,
    v: Kv<E>,
    mask: Option<&ArrayData>,
    scale: f32,
    parts: usize,
    kernel: Kernel,
    o: &ArrayData,
) {
    if tiled_applies(q.shape()[2], q.shape()[3]) {
        attend_tiled(q, k, v, mask, scale, o, Kernels::Best);
    } else {
        attend_all(q, k, v, mask, scale, parts, kernel, o);
    }
}

/// Whether `t` query positions per head of size `d` go to the tiled kernel
/// (`attention_tiled.rs`: prompt prefill).
pub(crate) fn tiled_applies(t: usize, d: usize) -> bool {
    super::attention_tiled::applies(t, d)
}

/// Whether the fused kernels beat the matmul formulation for `t` query positions per head of
/// size `d` on this CPU: a few (up to 8, decode) everywhere; on x86-64 with AVX2 or AVX-512 the
/// row kernels up to the tiled kernel's threshold too (`sdpa_prefill_14x2x64_f16_t{9,12}_l4096`
/// and `9x3x64_t12_l1024`: 1.4-2.1x the matmul formulation with AVX-512, 1.3-1.8x with AVX2),
/// and the tiled kernel from there.
pub(crate) fn fused_is_faster(t: usize, d: usize) -> bool {
    let rows_fast = simd::level() >= simd::Level::Avx2 && d.is_multiple_of(8);
    t <= 8 || tiled_applies(t, d) || (rows_fast && t < super::attention_tiled::MIN_QUERIES)
}

/// The tiled kernel over the whole call (only where [`tiled_applies`]).
fn attend_tiled<E: KvElem>(
    q: &ArrayData,
    k: Kv<E>,
    v: Kv<E>,
    mask: Option<&ArrayData>,
    scale: f32,
    o: &ArrayData,
    kernels: super::attention_tiled::Kernels,
) {
    let (ks, vs) = (k.strides(), v.strides());
    let shape = q.shape();
    let problem = super::attention_tiled::Problem {
        q: q.ptr::<f32>(),
        b: shape[0],
        h: shape[1],
        t: shape[2],
        d: shape[3],
        hk: k.shape()[1],
        l: k.shape()[2],
        k: k.ptr().get(),
        ks: [ks[0], ks[1], ks[2]],
        v: v.ptr().get(),
        vs: [vs[0], vs[1], vs[2]],
        mask: mask.map_or(std::ptr::null(), |m| m.ptr::<f32>()),
        scale,
        o: o.mut_ptr::<f32>(),
    };
    // SAFETY: `tiled_applies` checked the head size; q and the mask are contiguous f32 of the
    // validated shapes, k and v have contiguous rows at their strides, and `o` is a fresh
    // (b, h, t, d) buffer.
    unsafe { super::attention_tiled::attend(&problem, kernels) };
}

/// Keys or values read in place: `(b, hk, l, d)` with contiguous rows.
#[derive(Clone, Copy)]
struct Kv<'a, E> {
    data: &'a ArrayData,
    _elem: std::marker::PhantomData<E>,
}

impl<'a, E: KvElem> Kv<'a, E> {
    fn of(data: &'a ArrayData) -> Kv<'a, E> {
        Kv {
            data,
            _elem: std::marker::PhantomData,
        }
    }
    fn shape(&self) -> &[usize] {
        self.data.shape()
    }
    fn strides(&self) -> Vec<usize> {
        self.data
            .layout
            .strides
            .iter()
            .map(|&s| s as usize)
            .collect()
    }
    fn ptr(&self) -> SendConstPtr<E> {
        SendConstPtr(self.data.ptr::<E>())
    }
}

/// Which task kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    /// Sixteen keys at a time (AVX-512, head size a multiple of 16; else as `Wide8`).
    Wide,
    /// Eight keys at a time (AVX2 + FMA + F16C, head size a multiple of 8).
    Wide8,
    /// One dot product per key, at the CPU's best vector width.
    Portable,
}

impl Kernel {
    fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if simd::level() == simd::Level::Avx512 {
                return Kernel::Wide;
            }
            if Kernel::Wide8.supported() {
                return Kernel::Wide8;
            }
        }
        Kernel::Portable
    }

    /// Whether this CPU (and `TESSERA_SIMD`) allows the kernel.
    fn supported(self) -> bool {
        match self {
            Kernel::Portable => true,
            Kernel::Wide => Kernel::best() == Kernel::Wide,
            #[cfg(target_arch = "x86_64")]
            Kernel::Wide8 => {
                simd::level() >= simd::Level::Avx2 && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Wide8 => false,
        }
    }
}

/// Attention of every query row of `q` (contiguous `(b, h, t, d)`) into `o` (the same shape),
/// with each kv head's keys cut into `parts` ranges.
#[allow(clippy::too_many_arguments)]
fn attend_all<E: KvElem>(
    q: &ArrayData,
    k: Kv<E>,
    v: Kv<E>,
    mask: Option<&ArrayData>,
    scale: f32,
    parts: usize,
    kernel: Kernel,
    o: &ArrayData,
) {
    let (b, h, t, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hk, l) = (k.shape()[1], k.shape()[2]);
    let rows = h / hk * t;
    let groups = b * hk;
    let chunk = l.div_ceil(parts.max(1)).next_multiple_of(16).max(16);
    let parts = l.div_ceil(chunk).max(1);
    let tasks = groups * parts;
    let slab = rows * slab_row(d);
    let mut partial = vec![0f32; tasks * slab];
    let (ks, vs) = (k.strides(), v.strides());
    let (qp, pp) = (SendConstPtr(q.ptr::<f32>()), SendPtr(partial.as_mut_ptr()));
    let (kp, vp) = (k.ptr(), v.ptr());
    let mp = mask.map(|m| SendConstPtr(m.ptr::<f32>()));
    // Small problems run on the calling thread: handing tasks to a worker costs a microsecond
    // or two. In decode the keys and values come from memory (the weights streamed through the
    // caches since this layer last ran), and two threads read them faster from about 30 keys of
    // SmolLM2's shape on (`Sdpa` in `TESSERA_PROFILE=1 tessera bench llm`: 11.8-13.7 µs per
    // call with this threshold, 14.7-16.5 with four times it).
    let work = groups * rows * l * d;
    let min_tasks = if work < (1 << 14) { tasks } else { 1 };
    pool::parallel_chunks(tasks, min_tasks, &|s, e| {
        let mut p = vec![0f32; rows * chunk];
        for task in s..e {
            let (gi, pi) = (task / parts, task % parts);
            let (bi, g) = (gi / hk, gi % hk);
            let j0 = pi * chunk;
            // SAFETY: every offset is inside the validated shapes (q is (b, h, t, d)
            // contiguous and a group's rows are adjacent; k and v are (b, hk, l, d) with
            // contiguous rows; the mask is (t, l)); this task alone writes its slab.
            unsafe {
                let part = Part {
                    q: qp.get().add((bi * h + g * (h / hk)) * t * d),
                    rows,
                    t,
                    k: kp.get().add(bi * ks[0] + g * ks[1] + j0 * ks[2]),
                    ks: ks[2],
                    v: vp.get().add(bi * vs[0] + g * vs[1] + j0 * vs[2]),
                    vs: vs[2],
                    mask: mp.map_or(std::ptr::null(), |m| m.get().add(j0)),
                    ms: l,
                    n: chunk.min(l - j0),
                    d,
                    scale,
                };
                attend(kernel, &part, pp.get().add(task * slab), p.as_mut_ptr());
            }
        }
    });
    merge(&partial, groups, parts, rows, d, o.mut_ptr::<f32>());
}

/// Runs one task into `out` (`rows` slab rows), with `p` (`rows × n`) as scratch.
///
/// # Safety
/// `part` must describe readable memory as documented on [`Part`]; `out` and `p` must be
/// writable for the sizes above; `Kernel::Wide` only where `Kernel::best` chose it.
unsafe fn attend<E: KvElem>(kernel: Kernel, part: &Part<E>, out: *mut f32, p: *mut f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if kernel == Kernel::Wide && part.d.is_multiple_of(16) {
            // SAFETY: Wide is chosen only on AVX-512 CPUs; the rest is the caller's promise.
            return unsafe { super::attention_x86::attend(part, out, p) };
        }
        if kernel != Kernel::Portable && part.d.is_multiple_of(8) {
            // SAFETY: Wide and Wide8 are chosen only where the CPU has AVX2, FMA and F16C
            // (every AVX-512 CPU has them); the rest is the caller's promise.
            return unsafe { super::attention_avx2::attend(part, out, p) };
        }
    }
    let _ = kernel;
    // SAFETY: the caller's promise.
    unsafe { attend_rows(part, out, p) }
}

/// Combines the key-range parts of each query row. `partial` holds, per group, `parts`
/// consecutive slabs of `rows` rows; `out` receives each group's `rows` normalised rows of `d`
/// values, groups one after the other (the order of the query rows in `(b, h, t, d)`).
fn merge(partial: &[f32], groups: usize, parts: usize, rows: usize, d: usize, out: *mut f32) {
    let w = slab_row(d);
    for gi in 0..groups {
        for r in 0..rows {
            let row = |pi: usize| &partial[((gi * parts + pi) * rows + r) * w..][..w];
            let m = (0..parts)
                .map(|pi| row(pi)[0])
                .fold(f32::NEG_INFINITY, f32::max);
            // SAFETY: out holds groups × rows rows of d values.
            let o = unsafe { std::slice::from_raw_parts_mut(out.add((gi * rows + r) * d), d) };
            if m == f32::NEG_INFINITY {
                // Every key hidden: NaN, as softmax over all -inf gives.
                o.fill(f32::NAN);
                continue;
            }
            o.fill(0.0);
            let mut sum = 0.0;
            for pi in 0..parts {
                let x = row(pi);
                // A part whose keys were all hidden has m = -inf and weighs exp(-inf) = 0.
                let f = (x[0] - m).exp();
                sum += x[1] * f;
                for (a, &v) in o.iter_mut().zip(&x[2..]) {
                    *a += v * f;
                }
            }
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|a| *a *= inv);
        }
    }
}

/// The portable task kernel (see [`attend_rows_f32`]) for any element type.
unsafe fn attend_rows<E: KvElem>(part: &Part<E>, out: *mut f32, p: *mut f32) {
    // The f32 instance is multiversioned; other element types widen each row first.
    if let Some(part) = E::as_f32(part) {
        // SAFETY: the caller's promise.
        return unsafe { attend_rows_f32(part, out, p) };
    }
    // SAFETY: rows `0..n` of `d` elements, `ks` / `vs` apart, are readable (the caller's
    // promise).
    let (k, v) = unsafe {
        (
            E::widen(part.k, part.n, part.ks, part.d),
            E::widen(part.v, part.n, part.vs, part.d),
        )
    };
    let wide = Part {
        q: part.q,
        rows: part.rows,
        t: part.t,
        k: k.as_ptr(),
        ks: part.d,
        v: v.as_ptr(),
        vs: part.d,
        mask: part.mask,
        ms: part.ms,
        n: part.n,
        d: part.d,
        scale: part.scale,
    };
    // SAFETY: `wide` points at the widened copies, alive until the call returns.
    unsafe { attend_rows_f32(&wide, out, p) }
}

simd::multiversion! {
    /// The portable task kernel: one query row at a time, a dot product per key.
    unsafe fn attend_rows_f32[](part: &Part<f32>, out: *mut f32, p: *mut f32) {
        let (d, n) = (part.d, part.n);
        let p = std::slice::from_raw_parts_mut(p, n);
        for r in 0..part.rows {
            let qr = std::slice::from_raw_parts(part.q.add(r * d), d);
            let o = std::slice::from_raw_parts_mut(out.add(r * slab_row(d)), slab_row(d));
            let (head, acc) = o.split_at_mut(2);
            let mut max = f32::NEG_INFINITY;
            for (j, pj) in p.iter_mut().enumerate() {
                let kr = std::slice::from_raw_parts(part.k.add(j * part.ks), d);
                let mut sc = dot(qr, kr) * part.scale;
                if !part.mask.is_null() {
                    sc += *part.mask.add((r % part.t) * part.ms + j);
                }
                *pj = sc;
                max = max.max(sc);
            }
            acc.iter_mut().for_each(|a| *a = 0.0);
            head[0] = max;
            head[1] = 0.0;
            if max == f32::NEG_INFINITY {
                continue;
            }
            // Two loops: with the running sum inside, the exp loop stayed scalar.
            for pj in p.iter_mut() {
                *pj = simd::math::exp_f32(*pj - max);
            }
            head[1] = reduce::f32_row(ReduceOp::Sum, p.as_ptr(), n);
            for (j, &w) in p.iter().enumerate() {
                let vr = std::slice::from_raw_parts(part.v.add(j * part.vs), d);
                for (a, &x) in acc.iter_mut().zip(vr) {
                    *a += w * x;
                }
            }
        }
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Sixteen independent partial sums over exact chunks (no bounds checks), so the loop
    // vectorises without reassociation flags. (Indexing `a[c * 8 + j]` left bounds checks that
    // kept it scalar.)
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..16 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The same values stored as f16.
    fn data_f16(shape: &[usize], vals: &[f32]) -> ArrayData {
        let a = ArrayData::alloc(Dtype::F16, shape).unwrap();
        let h: Vec<half::f16> = vals.iter().map(|&x| half::f16::from_f32(x)).collect();
        // SAFETY: a fresh buffer of vals.len() f16.
        unsafe { std::ptr::copy_nonoverlapping(h.as_ptr(), a.mut_ptr::<half::f16>(), h.len()) };
        a
    }

    /// `vals` rounded to f16 and back.
    fn rounded(vals: &[f32]) -> Vec<f32> {
        vals.iter()
            .map(|&x| half::f16::from_f32(x).to_f32())
            .collect()
    }

    fn data(shape: &[usize], vals: &[f32]) -> ArrayData {
        let a = ArrayData::alloc(Dtype::F32, shape).unwrap();
        // SAFETY: a fresh buffer of vals.len() f32.
        unsafe { std::ptr::copy_nonoverlapping(vals.as_ptr(), a.mut_ptr::<f32>(), vals.len()) };
        a
    }

    /// The first `l` positions of a `(b, hk, cap, d)` cache: a strided view, as the KV cache
    /// hands keys and values out.
    fn cache_view(cache: &ArrayData, l: usize) -> ArrayData {
        let s = cache.shape();
        let mut v = cache.clone();
        v.layout = Layout {
            shape: [s[0], s[1], l, s[3]].as_slice().into(),
            ..cache.layout.clone()
        };
        v
    }

    /// softmax(scale q·k + mask) v in f64, one row at a time; NaN where every key is hidden.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        mask: Option<&[f32]>,
        (b, h, t, d): (usize, usize, usize, usize),
        (hk, l, cap): (usize, usize, usize),
        scale: f32,
    ) -> Vec<f64> {
        let mut out = vec![0f64; b * h * t * d];
        for bi in 0..b {
            for hi in 0..h {
                let g = hi / (h / hk);
                for ti in 0..t {
                    let row = ((bi * h + hi) * t + ti) * d;
                    let kv = |j: usize| ((bi * hk + g) * cap + j) * d;
                    let sc: Vec<f64> = (0..l)
                        .map(|j| {
                            let dot: f64 = (0..d)
                                .map(|c| q[row + c] as f64 * k[kv(j) + c] as f64)
                                .sum();
                            dot * scale as f64 + mask.map_or(0.0, |m| m[ti * l + j] as f64)
                        })
                        .collect();
                    let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let w: Vec<f64> = sc.iter().map(|s| (s - m).exp()).collect();
                    let sum: f64 = w.iter().sum();
                    for c in 0..d {
                        out[row + c] = if m == f64::NEG_INFINITY {
                            f64::NAN
                        } else {
                            (0..l).map(|j| w[j] * v[kv(j) + c] as f64).sum::<f64>() / sum
                        };
                    }
                }
            }
        }
        out
    }

    /// Every element of `o` within `tol` (relative, plus `tol` absolute) of the reference, NaN
    /// where the reference is NaN; `what` names the case in the failure message.
    fn assert_matches(o: &ArrayData, want: &[f64], tol: f64, what: impl Fn() -> String) {
        let got = o.as_slice::<f32>().unwrap();
        assert_eq!(got.len(), want.len(), "{}", what());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let ok = if w.is_nan() {
                g.is_nan()
            } else {
                (g as f64 - w).abs() <= tol * (1.0 + w.abs())
            };
            assert!(ok, "{}: element {i} is {g}, expected {w}", what());
        }
    }

    /// Every kernel, with the keys cut into 1, 2, 3 and 7 ranges, against the f64 reference:
    /// head sizes on and off the 16-lane path, key counts around the 16-key blocks, several
    /// query rows per kv head, and masks that hide whole key ranges and whole rows.
    #[test]
    fn every_kernel_and_split_matches_the_reference() {
        let kernels: Vec<Kernel> = [Kernel::Portable, Kernel::Wide8, Kernel::Wide]
            .into_iter()
            .filter(|k| k.supported())
            .collect();
        let shapes = [
            // (b, h, t, d, hk, l)
            (1, 9, 1, 64, 3, 1),
            (1, 9, 1, 64, 3, 16),
            (1, 9, 1, 64, 3, 37),
            (1, 14, 1, 64, 2, 300),
            (2, 4, 2, 48, 2, 129),
            (1, 4, 3, 256, 1, 70),
            (1, 6, 2, 8, 3, 45),
            (1, 2, 1, 96, 2, 0),
        ];
        for (si, &(b, h, t, d, hk, l)) in shapes.iter().enumerate() {
            let cap = l + 5;
            let seed = 10 * si as u64;
            let (qv, kv, vv) = (
                values(b * h * t * d, seed + 1),
                values(b * hk * cap * d, seed + 2),
                values(b * hk * cap * d, seed + 3),
            );
            let (q, kc, vc) = (
                data(&[b, h, t, d], &qv),
                data(&[b, hk, cap, d], &kv),
                data(&[b, hk, cap, d], &vv),
            );
            let (k, v) = (cache_view(&kc, l), cache_view(&vc, l));
            // Causal from position l - t, and a window that hides the oldest two thirds;
            // with t > 1 the last query also sees nothing at all in the second mask.
            let causal: Vec<f32> = (0..t * l)
                .map(|i| {
                    let (ti, j) = (i / l.max(1), i % l.max(1));
                    if j + t > l + ti {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            let window: Vec<f32> = (0..t * l)
                .map(|i| {
                    let (ti, j) = (i / l.max(1), i % l.max(1));
                    let hidden = j < 2 * l / 3 || (t > 1 && ti == t - 1);
                    if hidden { f32::NEG_INFINITY } else { 0.0 }
                })
                .collect();
            // The f16 cache: the same positions read from half-precision buffers, against
            // the reference of the rounded values.
            let (kh, vh) = (
                data_f16(&[b, hk, cap, d], &kv),
                data_f16(&[b, hk, cap, d], &vv),
            );
            let (kh, vh) = (cache_view(&kh, l), cache_view(&vh, l));
            let (kr, vr) = (rounded(&kv), rounded(&vv));
            for mask in [None, Some(causal), Some(window)] {
                let md = mask.as_ref().map(|m| data(&[t, l], m));
                for f16 in [false, true] {
                    let (kref, vref) = if f16 { (&kr, &vr) } else { (&kv, &vv) };
                    let want = reference(
                        &qv,
                        kref,
                        vref,
                        mask.as_deref(),
                        (b, h, t, d),
                        (hk, l, cap),
                        0.3,
                    );
                    for &kernel in &kernels {
                        for parts in [1, 2, 3, 7] {
                            let o = ArrayData::alloc(Dtype::F32, &[b, h, t, d]).unwrap();
                            if f16 {
                                let (k, v) = (Kv::<half::f16>::of(&kh), Kv::of(&vh));
                                attend_all(&q, k, v, md.as_ref(), 0.3, parts, kernel, &o);
                            } else {
                                let (k, v) = (Kv::<f32>::of(&k), Kv::of(&v));
                                attend_all(&q, k, v, md.as_ref(), 0.3, parts, kernel, &o);
                            }
                            assert_matches(&o, &want, 1e-5, || {
                                format!(
                                    "{kernel:?}, {parts} parts, f16 {f16}, shape {:?}, mask {}",
                                    shapes[si],
                                    md.is_some()
                                )
                            });
                        }
                    }
                }
            }
        }
    }

    /// The tiled prefill kernel against the f64 reference: tiles with a partial last tile,
    /// key counts off the 16- and 64-key blocks, head sizes from 16 to 256 (column chunks of
    /// 64 and less), grouped heads, a cache longer than the prompt (keys before the first
    /// query), and masks that hide whole blocks, whole rows and nothing.
    #[test]
    fn tiled_kernel_matches_the_reference() {
        const TOL_AMX: f64 = 1e-4;
        if !tiled_applies(super::super::attention_tiled::MIN_QUERIES, 64) {
            eprintln!("the tiled attention kernel needs x86-64 with AVX2: test not run");
            return;
        }
        let shapes = [
            // (b, h, t, d, hk, l)
            (1, 2, 16, 64, 1, 16),
            (1, 14, 40, 64, 2, 40),
            (1, 4, 70, 16, 2, 201),
            (2, 6, 33, 80, 3, 97),
            (1, 4, 37, 256, 1, 130),
            (1, 2, 64, 128, 2, 64),
        ];
        for (si, &(b, h, t, d, hk, l)) in shapes.iter().enumerate() {
            assert!(tiled_applies(t, d));
            let cap = l + 3;
            let seed = 100 + 10 * si as u64;
            // Larger queries than the decode test's, so scores spread over tens of units and
            // the running maximum moves between blocks.
            let qv: Vec<f32> = values(b * h * t * d, seed + 1)
                .iter()
                .map(|x| 4.0 * x)
                .collect();
            let (kv, vv) = (
                values(b * hk * cap * d, seed + 2),
                values(b * hk * cap * d, seed + 3),
            );
            let q = data(&[b, h, t, d], &qv);
            let (kc, vc) = (data(&[b, hk, cap, d], &kv), data(&[b, hk, cap, d], &vv));
            let (k, v) = (cache_view(&kc, l), cache_view(&vc, l));
            let (kh, vh) = (
                cache_view(&data_f16(&[b, hk, cap, d], &kv), l),
                cache_view(&data_f16(&[b, hk, cap, d], &vv), l),
            );
            let (kr, vr) = (rounded(&kv), rounded(&vv));
            let mask_of = |hidden: &dyn Fn(usize, usize) -> bool| -> Vec<f32> {
                (0..t * l)
                    .map(|i| {
                        if hidden(i / l, i % l) {
                            f32::NEG_INFINITY
                        } else {
                            // Finite mask values are added, not only used as a filter.
                            0.25 * ((i % 7) as f32 - 3.0)
                        }
                    })
                    .collect()
            };
            // Causal for queries at the last t positions; a sliding window of 20 keys; row 3
            // seeing nothing.
            let causal = mask_of(&|i, j| j + t > l + i);
            let window = mask_of(&|i, j| j + t > l + i || j + t + 20 <= l + i || i == 3);
            // Holes: visible keys that are not one run (a row's first and last visible key
            // bound its blocks; the hidden ones between must still weigh nothing).
            let holes = mask_of(&|i, j| (i * 7 + j * 3) % 5 == 0 || (j / 16 + i) % 3 == 0);
            for mask in [None, Some(causal), Some(window), Some(holes)] {
                let md = mask.as_ref().map(|m| data(&[t, l], m));
                for f16 in [false, true] {
                    let (kref, vref) = if f16 { (&kr, &vr) } else { (&kv, &vv) };
                    let dims = (b, h, t, d);
                    let want = reference(&qv, kref, vref, mask.as_deref(), dims, (hk, l, cap), 0.3);
                    for kernels in [Kernels::Best, Kernels::Vector, Kernels::Portable] {
                        let o = ArrayData::alloc(Dtype::F32, &[b, h, t, d]).unwrap();
                        if f16 {
                            let (k, v) = (Kv::<half::f16>::of(&kh), Kv::of(&vh));
                            attend_tiled(&q, k, v, md.as_ref(), 0.3, &o, kernels);
                        } else {
                            let (k, v) = (Kv::<f32>::of(&k), Kv::of(&v));
                            attend_tiled(&q, k, v, md.as_ref(), 0.3, &o, kernels);
                        }
                        // The AMX tiles (`attention_amx.rs`: operands split in two bf16
                        // parts, three products) to about 2^-16 of each score.
                        let amx =
                            kernels == Kernels::Best && super::super::attention_amx::applies(d);
                        let tol = if amx { TOL_AMX } else { 2e-5 };
                        assert_matches(&o, &want, tol, || {
                            format!(
                                "{kernels:?}, f16 {f16}, shape {:?}, mask {}",
                                shapes[si],
                                md.is_some()
                            )
                        });
                    }
                }
            }
        }
    }
}
