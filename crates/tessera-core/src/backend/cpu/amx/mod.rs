//! Intel AMX (Advanced Matrix Extensions): the tile matrix units of Xeon Sapphire Rapids and
//! later, used for the compute-bound products (prompt prefill on quantized weights).
//!
//! # What AMX gives
//!
//! Eight tile registers of up to 16 rows x 64 bytes, and one instruction, `tdpbf16ps`, that
//! multiplies a 16 x 32 bf16 tile by a 32 x 16 bf16 tile into a 16 x 16 f32 tile: 8192
//! multiply-adds. Measured on the development VM (a Xeon with AMX, 2 cores): about 3.5 TFLOP/s
//! of bf16 per core, against about 0.2 TFLOP/s for the AVX-512 kernels. The f32 accumulation
//! happens inside the tile, so unlike the integer path (`quant/x86/panel.rs`), no per-block scale
//! has to be applied between multiply-adds: quantized weights are decoded to bf16 (the block
//! scale folded in) once per call, and the whole dot product runs in the tiles.
//!
//! # Precision
//!
//! Operands are rounded to bf16 (8 significant bits, relative error at most 2^-9 per value);
//! products and sums are f32. For prefill that is the same order as the 8-bit activation
//! rounding the integer kernels pay (`amax / 254` per block), and the accumulation is better
//! (f32 all the way). Decoding (`m = 1`) keeps the integer kernels, whose 8-bit activations and
//! streaming rate are what bounds it there.
//!
//! # Status
//!
//! On by default where supported (`TESSERA_AMX=0` turns it off). On the development VM (2
//! threads) a 512-token prefill ran 5-19% faster than on the integer panel kernels, and the
//! driver's later blocking added 17-24% (from 64 prompt rows on; below, the integer kernels
//! stay); it is also closer to the f32 reference: the
//! last-position logits of a 73-token prompt are within 0.09 of the NumPy reference for SmolLM2
//! and 0.12 for Gemma 3, against 0.19 and 0.24 with 8-bit activations. The dense bf16 product
//! at 2048^3 runs at 2360-2590 GFLOP/s, about 10x the AVX-512 BF16 kernel and 0.9-1.0x
//! PyTorch's oneDNN. The tiles themselves run at about 1280 GFLOP/s per core inside the product
//! (1350-1450 for pre-packed operands, 1860 from registers); the rest of a call is decoding,
//! packing and the output writes. BENCHMARKS.md ("AMX prefill", "GEMM on the Intel machine")
//! has the figures.
//!
//! # Use
//!
//! [`supported`] says whether this CPU and OS let the process use the tiles (CPUID, then Linux's
//! `arch_prctl(ARCH_REQ_XCOMP_PERM)`, which every process must call once before its first tile
//! instruction); [`enabled`] whether the products use them. [`gemm::matmul_t`] is the product;
//! `tiles.rs` holds the tile configuration and the micro-kernel, `pack.rs` the operand layouts.

pub(crate) mod dense;
pub(crate) mod gemm;
pub(crate) mod pack;
pub(crate) mod tiles;

use std::cell::Cell;
use std::sync::OnceLock;

/// Whether this CPU and OS let the process use the tiles (asks the OS for them on first call).
pub(crate) fn supported() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        crate::backend::cpu::simd::level() == crate::backend::cpu::simd::Level::Avx512
            && cpu_has_amx()
            && request_permission()
    })
}

/// Whether the products route prefill-sized work to the tiles: [`supported`], unless turned off
/// with `TESSERA_AMX=0` (for comparisons) or, on this thread, by [`without`].
pub(crate) fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    !OFF_HERE.with(Cell::get)
        && *ON.get_or_init(|| {
            std::env::var("TESSERA_AMX").map_or(true, |v| v.trim() != "0") && supported()
        })
}

thread_local! {
    static OFF_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the tile path off on this thread (the products decide on the calling thread),
/// so tests reach the AVX-512 kernels on a machine with AMX too.
#[cfg(test)]
pub(crate) fn without<R>(f: impl FnOnce() -> R) -> R {
    OFF_HERE.with(|c| c.set(true));
    let r = f();
    OFF_HERE.with(|c| c.set(false));
    r
}

/// CPUID leaf 7: AMX-BF16 (EDX bit 22) and AMX-TILE (bit 24), plus AVX-512 BF16 for the operand
/// conversions.
fn cpu_has_amx() -> bool {
    let l7 = std::arch::x86_64::__cpuid_count(7, 0);
    let tile_bf16 = (l7.edx >> 22) & 1 == 1 && (l7.edx >> 24) & 1 == 1;
    tile_bf16 && std::arch::is_x86_feature_detected!("avx512bf16")
}

/// Linux hands out the (large) tile state only on request, per process; without it the first
/// tile instruction faults. Other systems: not supported here.
#[cfg(target_os = "linux")]
fn request_permission() -> bool {
    unsafe extern "C" {
        fn syscall(num: std::ffi::c_long, ...) -> std::ffi::c_long;
    }
    const SYS_ARCH_PRCTL: std::ffi::c_long = 158;
    const ARCH_REQ_XCOMP_PERM: std::ffi::c_long = 0x1023;
    const XFEATURE_XTILEDATA: std::ffi::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes the process's permitted state set.
    unsafe { syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn request_permission() -> bool {
    false
}

/// What the tiles compute, in f64, for checking them: `x (m × k) · wᵀ (w is n × k)` with both
/// rounded to bf16, and beside each value the sum of its terms' magnitudes (the scale a
/// tolerance is taken against); row-major `m × n`.
#[cfg(test)]
pub(crate) fn bf16_reference(
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
) -> Vec<(f64, f64)> {
    let round = |v: f32| half::bf16::from_f32(v).to_f64();
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for r in 0..n {
            let (mut want, mut mag) = (0f64, 0f64);
            for j in 0..k {
                let p = round(x[i * k + j]) * round(w[r * k + j]);
                want += p;
                mag += p.abs();
            }
            out.push((want, mag));
        }
    }
    out
}
