//! Runtime SIMD selection. Kernels are written as plain `#[inline(always)]` loops over branchless
//! element functions; [`dispatch`] runs them inside a function compiled for AVX-512 or AVX2 when
//! the CPU has it, so LLVM vectorises the inlined loop at that width. One binary, fast everywhere.

pub mod math;
pub mod math_f64;

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Scalar,
    Avx2,
    Avx512,
}

/// The best level this CPU supports, capped by `TESSERA_SIMD=scalar|avx2|avxvnni|avx512` if
/// set (`avxvnni` caps the vectors at 256 bits like `avx2`; see [`avx_vnni_allowed`]).
pub fn level() -> Level {
    static L: OnceLock<Level> = OnceLock::new();
    *L.get_or_init(|| {
        let detected = detect();
        let cap = match simd_cap().as_deref() {
            Some("scalar") => Level::Scalar,
            Some("avx2" | "avxvnni") => Level::Avx2,
            _ => Level::Avx512,
        };
        detected.min(cap)
    })
}

fn simd_cap() -> Option<String> {
    std::env::var("TESSERA_SIMD").ok()
}

/// Whether the integer kernels may use AVX-VNNI (the VEX-encoded 256-bit `vpdpbusd` of Intel's
/// client CPUs since Alder Lake, which have no AVX-512) when the CPU has it. Everything but
/// `TESSERA_SIMD=scalar|avx2` allows it: `avx2` stands for the CPUs before it (Haswell to
/// Comet Lake, Zen 1 to 4), `avxvnni` for the ones with it.
pub fn avx_vnni_allowed() -> bool {
    !matches!(simd_cap().as_deref(), Some("scalar" | "avx2"))
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Level {
    if is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("fma")
    {
        Level::Avx512
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Level::Avx2
    } else {
        Level::Scalar
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Level {
    Level::Scalar
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Runs `f` compiled for the best available instruction set. `f` should be a closure whose body
/// calls `#[inline(always)]` loops, so they are inlined and vectorised at that width.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match level() {
            // SAFETY: the CPU supports the features these functions are compiled for.
            Level::Avx512 => unsafe { run_avx512(f) },
            Level::Avx2 => unsafe { run_avx2(f) },
            Level::Scalar => f(),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        f()
    }
}

/// Defines a generic loop kernel compiled three times (AVX-512, AVX2+FMA, baseline) plus a
/// dispatcher with the plain name that picks one by [`level`].
///
/// Why not only [`dispatch`]: there the whole loop lives in a closure, and the closure gets the
/// wide instruction set only if LLVM inlines it into the `#[target_feature]` wrapper, which it
/// does not always do for big bodies. Here the loop itself is in the `#[target_feature]`
/// function; only the small element closure needs inlining, which LLVM reliably does.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis unsafe fn $name:ident [$($gen:tt)*] ($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        #[inline(always)]
        $vis unsafe fn $name<$($gen)*>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")]
            unsafe fn v512<$($gen)*>($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn v256<$($gen)*>($($arg: $ty),*) $body
            #[inline(always)]
            unsafe fn base<$($gen)*>($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            match $crate::backend::cpu::simd::level() {
                $crate::backend::cpu::simd::Level::Avx512 => return v512($($arg),*),
                $crate::backend::cpu::simd::Level::Avx2 => return v256($($arg),*),
                $crate::backend::cpu::simd::Level::Scalar => {}
            }
            base($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Lane reductions of 8-lane f32 vectors, shared by the 256-bit kernels (quantized products,
/// activation quantization, AVX2 attention), and the 16x16 transpose of the AVX-512 kernels
/// (GEMM packing, decode attention). Callers run them inside functions compiled for AVX (AVX-512
/// for the transpose).
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    /// Sum of the 8 lanes.
    #[inline(always)]
    pub(crate) unsafe fn hsum8(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    /// The largest of the 8 lanes.
    #[inline(always)]
    pub(crate) unsafe fn hmax8(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
    }

    /// Transposes an 8x8 f32 block held as 8 row vectors: out[q] lane j = r[j] lane q (AVX).
    #[inline(always)]
    pub(crate) unsafe fn transpose8x8(r: [__m256; 8]) -> [__m256; 8] {
        // 32-bit interleave of row pairs, 64-bit shuffles of those, then 128-bit halves.
        let mut t = [_mm256_setzero_ps(); 8];
        for i in 0..4 {
            t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm256_setzero_ps(); 8];
        for i in 0..2 {
            let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
            u[4 * i] = _mm256_shuffle_ps::<0x44>(a, c);
            u[4 * i + 1] = _mm256_shuffle_ps::<0xEE>(a, c);
            u[4 * i + 2] = _mm256_shuffle_ps::<0x44>(b, d);
            u[4 * i + 3] = _mm256_shuffle_ps::<0xEE>(b, d);
        }
        let mut out = [_mm256_setzero_ps(); 8];
        for i in 0..4 {
            out[i] = _mm256_permute2f128_ps::<0x20>(u[i], u[4 + i]);
            out[4 + i] = _mm256_permute2f128_ps::<0x31>(u[i], u[4 + i]);
        }
        out
    }

    /// Transposes a 16x16 f32 block held as 16 row vectors: out[q] lane j = r[j] lane q.
    #[inline(always)]
    pub(crate) unsafe fn transpose16x16(r: [__m512; 16]) -> [__m512; 16] {
        // 32-bit interleave of row pairs, then 64-bit, then 128-bit lanes twice.
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for i in 0..4 {
            let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
            u[4 * i] = _mm512_shuffle_ps::<0x44>(a, c);
            u[4 * i + 1] = _mm512_shuffle_ps::<0xEE>(a, c);
            u[4 * i + 2] = _mm512_shuffle_ps::<0x44>(b, d);
            u[4 * i + 3] = _mm512_shuffle_ps::<0xEE>(b, d);
        }
        let mut v = [_mm512_setzero_ps(); 16];
        for h in 0..2 {
            for i in 0..4 {
                v[8 * h + i] = _mm512_shuffle_f32x4::<0x88>(u[8 * h + i], u[8 * h + 4 + i]);
                v[8 * h + 4 + i] = _mm512_shuffle_f32x4::<0xDD>(u[8 * h + i], u[8 * h + 4 + i]);
            }
        }
        let mut out = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            out[i] = _mm512_shuffle_f32x4::<0x88>(v[i], v[8 + i]);
            out[8 + i] = _mm512_shuffle_f32x4::<0xDD>(v[i], v[8 + i]);
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Transposes the n x n block of 0, 1, 2, ... through `run` and checks every lane.
        fn check(n: usize, out: Vec<f32>) {
            for q in 0..n {
                for j in 0..n {
                    assert_eq!(out[n * q + j], (n * j + q) as f32, "{n}x{n}: out[{q}][{j}]");
                }
            }
        }

        #[test]
        fn transposes_are_transposes() {
            #[target_feature(enable = "avx")]
            unsafe fn run8() -> Vec<f32> {
                let m: Vec<f32> = (0..64).map(|i| i as f32).collect();
                let r: [__m256; 8] =
                    std::array::from_fn(|j| _mm256_loadu_ps(m.as_ptr().add(8 * j)));
                let mut out = vec![0f32; 64];
                for (q, v) in transpose8x8(r).iter().enumerate() {
                    _mm256_storeu_ps(out.as_mut_ptr().add(8 * q), *v);
                }
                out
            }
            #[target_feature(enable = "avx512f")]
            unsafe fn run16() -> Vec<f32> {
                let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
                let r: [__m512; 16] =
                    std::array::from_fn(|j| _mm512_loadu_ps(m.as_ptr().add(16 * j)));
                let mut out = vec![0f32; 256];
                for (q, v) in transpose16x16(r).iter().enumerate() {
                    _mm512_storeu_ps(out.as_mut_ptr().add(16 * q), *v);
                }
                out
            }
            if std::is_x86_feature_detected!("avx") {
                // SAFETY: AVX checked.
                check(8, unsafe { run8() });
            } else {
                eprintln!("no AVX on this CPU: 8x8 transpose not tested");
            }
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F checked.
                check(16, unsafe { run16() });
            } else {
                eprintln!("no AVX-512 on this CPU: 16x16 transpose not tested");
            }
        }
    }
}

/// Asks the CPU to start loading the cache line at `p` (x86_64: `prefetcht0`; elsewhere
/// nothing). Never faults, whatever the address.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it does not access memory architecturally.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks the CPU to bring the cache line at `p` into L2 (x86_64: `prefetcht1`; aarch64: `prfm
/// pldl2keep`; elsewhere nothing). Never faults, whatever the address.
#[inline(always)]
pub(crate) fn prefetch_l2(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it does not access memory architecturally.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.cast())
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above; `prfm` neither faults nor writes.
    unsafe {
        std::arch::asm!("prfm pldl2keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}

/// [`prefetch`] for every line of the `len` bytes at `p` (which may lie past an array).
#[inline(always)]
pub(crate) fn prefetch_lines(p: *const u8, len: usize) {
    let mut l = 0;
    while l < len {
        prefetch(p.wrapping_add(l));
        l += 64;
    }
}

/// Bytes ahead of the data being consumed that [`prefetch_stream`] asks into L1, and into L2.
const STREAM_NEAR: usize = 512;
const STREAM_FAR: usize = 3072;
const STREAM_FAR_SMALL: usize = 4096;

/// For a kernel consuming a contiguous stream a record at a time (the `len` bytes at `p` now;
/// `len` a constant, so the calls unroll): asks for the record's bytes [`STREAM_NEAR`] ahead
/// into L1 and [`STREAM_FAR`] ahead into L2 (`prefetcht2`; [`STREAM_FAR_SMALL`] for records
/// under 512 bytes), one pair of prefetches per 64 bytes.
///
/// Why two distances: one prefetch 1 KB ahead into L1 (with the hardware prefetchers) left a
/// decode kernel on a Xeon at 13 GB/s per core against the 16.5 a plain sum reads; a prefetch
/// far ahead keeps enough lines in flight from memory to L2, and the near one moves them to L1
/// just in time. Measured (Q4_0x8 4864 x 896 streaming, 2 threads, two rounds): 1 KB into L1
/// 24.0-24.4 GB/s; 512 B and 3 KB 29.7-30.7; 1 KB and 2 KB 25.4-25.6; 1 KB and 4 KB 30.3-30.6;
/// 3-4 KB into L2 alone 26.1-26.6. The 0.5B-shape Q4_0 decode went from 82-83 to 88-90 tok/s.
///
/// Why not each line exactly once: a 144-byte record starts 2 or 3 lines, and the loop that
/// found them cost about as many instructions as the record's arithmetic; a fixed 3 pairs per
/// record (some lines asked for twice) decoded 93.3-96.3 against 90.0-92.7 tok/s (three
/// alternated rounds).
#[inline(always)]
pub(crate) fn prefetch_stream(p: *const u8, len: usize) {
    // Records under 512 bytes (the 32-value formats: 144-288 bytes) ask 4 KB ahead into L2;
    // the K-quants' 1.1-1.7 KB records 3 KB. Q4_0 decode, 8 alternated rounds: 95.1-102.4
    // against 89.2-98.6 tok/s with 3 KB (7 of 8 pairs faster); Gemma 3 (K-quants) was 2-3%
    // slower with 4 KB for every record size.
    let far = if len < 512 {
        STREAM_FAR_SMALL
    } else {
        STREAM_FAR
    };
    let mut at = 0;
    while at < len {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetches are hints; they never fault, whatever the address.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _MM_HINT_T2, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(STREAM_NEAR + at).cast());
            _mm_prefetch::<_MM_HINT_T2>(p.wrapping_add(far + at).cast());
        }
        at += 64;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Outputs of at least this many f32 values are written with streaming stores (long binary
/// rows, `binary.rs`; the register-tiled fused executor): too big to stay in cache, and a plain
/// store first reads each output line from memory (read for ownership).
pub(crate) const STREAM_STORE_MIN: usize = 1 << 18;

/// Orders this thread's streaming stores before what follows (they are weakly ordered): call
/// before the task that made them reports done.
#[inline(always)]
pub(crate) fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86-64.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// Values per block of the streaming row loops (`unary.rs`'s math functions), and blocks
/// ahead that [`prefetch_block`] asks for.
pub(crate) const STREAM_BLOCK: usize = 256;
const STREAM_AHEAD: usize = 4;

/// Prefetches the lines of the block [`STREAM_AHEAD`] blocks past value `i0` of a stream at
/// `s`: called once per block of a row loop, it keeps the reads ahead of the arithmetic, which
/// the hardware prefetchers alone did not on an Intel Xeon (exp 26-28 -> 32-35 GB/s, erf 2x;
/// a cheap function such as sqrt, memory-bound either way, gained nothing).
#[inline(always)]
pub(crate) fn prefetch_block<T>(s: *const T, i0: usize) {
    let ahead = s
        .wrapping_add(i0 + STREAM_AHEAD * STREAM_BLOCK)
        .cast::<u8>();
    prefetch_lines(ahead, STREAM_BLOCK * std::mem::size_of::<T>());
}
