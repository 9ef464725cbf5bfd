//! CPU kernels for the GGUF/ggml block-quantized formats: dequantization, quantization and a
//! matrix product `x · Wᵀ` that works on the blocks directly.
//!
//! # Formats
//!
//! A quantized row is a run of blocks, exactly as in a GGUF file ([`GgmlType`] gives the
//! geometry). All scales are little-endian f16 unless noted.
//!
//! | type | values / bytes | block layout | value |
//! |------|------|--------------|-------|
//! | Q4_0 | 32 / 18 | `d, qs[16]` (value `j` low nibble of `qs[j]`, `j+16` high nibble) | `d (q - 8)` |
//! | Q4_1 | 32 / 20 | `d, m, qs[16]` | `d q + m` |
//! | Q5_0 | 32 / 22 | `d, qh: u32, qs[16]` (bit 4 of value `j` is bit `j` of `qh`) | `d (q - 16)` |
//! | Q5_1 | 32 / 24 | `d, m, qh, qs[16]` | `d q + m` |
//! | Q8_0 | 32 / 34 | `d, qs: [i8; 32]` | `d q` |
//! | Q8_1 | 32 / 36 | `d, s = d Σq, qs: [i8; 32]` (activation format) | `d q` |
//! | IQ4_NL | 32 / 18 | as Q4_0, nibble indexes a fixed non-uniform 16-entry grid | `d grid[q]` |
//! | Q2_K | 256 / 84 | `scales[16]` (4-bit scale, 4-bit min per 16), `qs[64]`, `d`, `dmin` | `d sc q - dmin m` |
//! | Q3_K | 256 / 110 | `hmask[32]` (3rd bit), `qs[64]`, 16 6-bit scales in 12 bytes, `d` | `d (sc - 32) (q - 4)` |
//! | Q4_K | 256 / 144 | `d, dmin`, 8 6-bit (scale, min) pairs in 12 bytes, `qs[128]` | `d sc q - dmin m` per 32 |
//! | Q5_K | 256 / 176 | as Q4_K plus `qh[32]` (5th bit) | as Q4_K |
//! | Q6_K | 256 / 210 | `ql[128]` (low 4 bits), `qh[64]` (high 2), `scales: [i8; 16]`, `d` | `d sc (q - 32)` |
//! | Q8_K | 256 / 292 | `d: f32, qs: [i8; 256], bsums: [i16; 16]` (activation format) | `d q` |
//!
//! The exact bit positions are documented on the dequantizers in `legacy.rs` and `kquants.rs`,
//! which reproduce ggml's float arithmetic bit for bit (checked against gguf-py).
//!
//! # The product
//!
//! [`matmul_t`] computes `out[m × n] = x[m × k] · Wᵀ` for `W` in `n` quantized rows of `k`
//! values, the layout of every GGUF linear weight.
//!
//! Why 8-bit activations: as in llama.cpp, each activation row is quantized once per call (Q8
//! in 32-value blocks for the 32-value weight formats, with the block sums that offsets and
//! Q4_1/Q5_1's min need; Q8_K in 256-value super-blocks with per-16 sums for the K-quants, see
//! `act.rs`). Every pair of blocks then meets in integer multiply-adds, `u8 × i8` into i32
//! (`vpdpbusd`/`vpdpwssd` with AVX-512 VNNI or AVX-VNNI, or AVX2 `vpmaddubsw` + `vpmaddwd`), 32 weights per
//! instruction, and is scaled once per block (or once per 8 blocks) in f32. The weights are
//! never widened to f32: decoding is a few byte shifts and masks per 32 weights. The price is
//! the rounding of the activations to 8 bits (at most `amax / 254` per value of each block),
//! which llama.cpp pays too, so results agree with it closely.
//!
//! Offsets (Q4_0's `-8`, Q6_K's `-32`, Q3_K's `-4`) and mins move to the activation side,
//! where they cost one multiply per block with the precomputed activation block sums; weights
//! stay unsigned bytes, so every format shares one `u8 × i8` product (`decode.rs` gives the
//! integer form of each format).
//!
//! Tiles: output columns (weight rows) are split into one contiguous range per pool thread.
//! For `m = 1` (decoding) each thread streams its share of the weights once, so the product
//! runs at memory bandwidth when the per-block work is small enough, which is what the x86
//! decode kernels are shaped for (`x86/blocks32.rs`: two blocks per register, scales and
//! offsets 8 blocks at a time; `x86/blocks256.rs`: one super-block in 8 registers). For a few
//! activation rows a decoded weight block stays in registers while it is multiplied with a
//! tile of [`matmul::MT`] rows. From about 5 rows on (prefill) the x86 sets repack each group
//! of weight rows once per call into panels that hold 8 or 16 rows in the lanes of a register,
//! and an integer GEMM micro-kernel (16 weight rows by 8 activation rows with AVX-512) runs
//! every activation row over them: no horizontal sums, one scale per block for 16 rows, about
//! 2.5x the multiply-add rate of the decode kernels (`x86/panel.rs` explains the tiling).
//!
//! With Intel AMX (`backend/cpu/amx`), products of at least 64 activation rows run on the tile
//! units instead: weights decoded to bf16 once per call, activations rounded to bf16, f32 sums
//! (no 8-bit activation rounding). [`matmul_t`] decides; [`matmul_t_with`] never uses AMX.
//!
//! Instruction sets: [`Isa::best`] picks AVX-512 VNNI (in its 256-bit form: on the
//! double-pumped AVX-512 units of current AMD parts 512-bit registers process no more bytes per
//! cycle, and 256-bit lanes keep the nibble shuffles simple), else AVX-VNNI (the same 256-bit
//! kernels with the VEX multiply-adds, on Intel's client CPUs since Alder Lake, which have no
//! AVX-512), else AVX2, else the portable kernels (`scalar.rs`, also the oracle the SIMD
//! kernels are tested against); it respects `TESSERA_SIMD=scalar|avx2|avxvnni`. Every variant
//! is callable through [`matmul_t_with`], so the tests run them all.

mod act;
mod decode;
mod float;
mod gate;
pub(crate) mod interleave;
mod kquants;
mod legacy;
mod matmul;
mod scalar;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::backend::cpu::copy::SendPtr;
use crate::backend::cpu::{pool, simd};
use crate::error::{Error, Result};
use crate::primitive::GateActivation;
use crate::quant::GgmlType;
use half::{bf16, f16};
use std::sync::OnceLock;

/// The instruction sets the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Portable Rust.
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX2 plus AVX-VNNI: the VEX forms of `vpdpbusd` and `vpdpwssd` on 256-bit registers
    /// (Intel's client CPUs since Alder Lake, which have no AVX-512; Zen 5). The AVX2 kernels
    /// with the one-instruction multiply-add; no AVX-512 masks.
    AvxVnni,
    /// AVX2 plus AVX-512 VNNI/VL/BW (the 256-bit EVEX forms of `vpdpbusd` and `vpdpwssd`, byte
    /// masks, and 512-bit prefill panels).
    Vnni,
}

impl Isa {
    /// The best set this CPU has, capped by `TESSERA_SIMD` (see `simd::level`).
    pub(crate) fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let cap = match simd::level() {
                simd::Level::Scalar => Isa::Scalar,
                simd::Level::Avx2 if simd::avx_vnni_allowed() => Isa::AvxVnni,
                simd::Level::Avx2 => Isa::Avx2,
                simd::Level::Avx512 => Isa::Vnni,
            };
            [Isa::Vnni, Isa::AvxVnni, Isa::Avx2, Isa::Scalar]
                .into_iter()
                .find(|i| i.rank() <= cap.rank() && i.supported())
                .unwrap_or(Isa::Scalar)
        })
    }

    /// Every set this CPU can run (for tests and benchmarks).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn available() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::AvxVnni, Isa::Vnni]
            .into_iter()
            .filter(|i| i.supported())
            .collect()
    }

    fn rank(self) -> u8 {
        self as u8
    }

    /// Whether the set multiplies unsigned by signed bytes in one instruction (`vpdpbusd`),
    /// with no intermediate i16 sums to saturate: what the 8-bit affine layouts need.
    pub(crate) fn has_vpdpbusd(self) -> bool {
        matches!(self, Isa::AvxVnni | Isa::Vnni)
    }

    /// Whether this CPU has the instructions.
    pub(crate) fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => Isa::Avx2.supported() && is_x86_feature_detected!("avxvnni"),
            #[cfg(target_arch = "x86_64")]
            Isa::Vnni => {
                Isa::Avx2.supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

fn invalid(op: &'static str, msg: String) -> Error {
    Error::Invalid { op, msg }
}

/// Per-block codecs: `(dequantize, quantize)` for one block of `ty`, or `None`.
type BlockFns = (fn(&[u8], &mut [f32]), Option<fn(&[f32], &mut [u8])>);

fn block_fns(ty: GgmlType) -> Option<BlockFns> {
    use GgmlType as T;
    Some(match ty {
        T::Q4_0 => (legacy::dequant_q4_0, Some(legacy::quant_q4_0)),
        T::Q4_1 => (legacy::dequant_q4_1, Some(legacy::quant_q4_1)),
        T::Q5_0 => (legacy::dequant_q5_0, Some(legacy::quant_q5_0)),
        T::Q5_1 => (legacy::dequant_q5_1, Some(legacy::quant_q5_1)),
        T::Q8_0 => (legacy::dequant_q8_0, Some(legacy::quant_q8_0)),
        T::Q8_1 => (legacy::dequant_q8_1, Some(legacy::quant_q8_1)),
        T::IQ4_NL => (legacy::dequant_iq4_nl, Some(legacy::quant_iq4_nl)),
        T::Q2_K => (kquants::dequant_q2_k, Some(kquants::quant_q2_k)),
        T::Q3_K => (kquants::dequant_q3_k, Some(kquants::quant_q3_k)),
        T::Q4_K => (kquants::dequant_q4_k, Some(kquants::quant_q4_k)),
        T::Q5_K => (kquants::dequant_q5_k, Some(kquants::quant_q5_k)),
        T::Q6_K => (kquants::dequant_q6_k, Some(kquants::quant_q6_k)),
        T::Q8_K => (kquants::dequant_q8_k, Some(kquants::quant_q8_k)),
        _ => return None,
    })
}

fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// Checks that `bytes` holds exactly one row of `n` values of `ty`.
fn check_row(op: &'static str, ty: GgmlType, bytes: usize, n: usize) -> Result<()> {
    let want = ty.row_bytes(n)?;
    if bytes != want {
        return Err(invalid(
            op,
            format!("a row of {n} {ty} values takes {want} bytes, got {bytes}"),
        ));
    }
    Ok(())
}

/// Decodes one row of `ty` (`src`, `ty.row_bytes(dst.len())` bytes) into `dst`.
///
/// Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
/// Q8_K, IQ4_NL. The values are bit-equal to ggml's `dequantize_row_*`. Errors (never panics)
/// when `dst.len()` is not a whole number of blocks, `src` has the wrong length, or the type
/// is not supported.
// Entry points for `backend::cpu::qmatmul` and the quantize tooling, which land separately.
#[allow(dead_code)]
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    if !is_float(ty) && block_fns(ty).is_none() {
        return Err(invalid(
            "dequantize",
            format!("dequantizing {ty} is not supported"),
        ));
    }
    check_row("dequantize", ty, src.len(), dst.len())?;
    dequantize_row_unchecked(ty, src, dst);
    Ok(())
}

/// [`dequantize_row`] after validation.
fn dequantize_row_unchecked(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32();
            }
        }
        _ => {
            if let Some((deq, _)) = block_fns(ty) {
                let (bs, ts) = (ty.block_size(), ty.type_size());
                for (s, d) in src.chunks_exact(ts).zip(dst.chunks_exact_mut(bs)) {
                    deq(s, d);
                }
            }
        }
    }
}

/// Encodes one row of `src.len()` values as `ty` into `dst` (`ty.row_bytes(src.len())` bytes).
///
/// - Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q8_K: ggml's reference quantizers, bit for bit (what
///   `llama-quantize` writes without an importance matrix; Q8_1/Q8_K are the activation formats).
/// - Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL: simple round-to-nearest quantizers (per-sub-block
///   range, quantized scales, requantization with the rounded scales). Their blocks decode the
///   same way everywhere; ggml's own quantizers search scales a little harder.
/// - F32, F16, BF16: conversion (round to nearest even).
// Entry points for `backend::cpu::qmatmul` and the quantize tooling, which land separately.
#[allow(dead_code)]
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    let quant = match block_fns(ty) {
        Some((_, Some(q))) => Some(q),
        _ if is_float(ty) => None,
        _ => {
            return Err(invalid(
                "quantize",
                format!("quantizing to {ty} is not supported"),
            ));
        }
    };
    check_row("quantize", ty, dst.len(), src.len())?;
    match (ty, quant) {
        (_, Some(q)) => {
            let (bs, ts) = (ty.block_size(), ty.type_size());
            for (s, d) in src.chunks_exact(bs).zip(dst.chunks_exact_mut(ts)) {
                q(s, d);
            }
        }
        (GgmlType::F32, _) => {
            for (d, s) in dst.chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&s.to_le_bytes());
            }
        }
        (GgmlType::F16, _) => {
            for (d, s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&f16::from_f32(*s).to_bits().to_le_bytes());
            }
        }
        (_, None) => {
            for (d, s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&bf16::from_f32(*s).to_bits().to_le_bytes());
            }
        }
    }
    Ok(())
}

/// Whether [`matmul_t`] has a kernel for weights of `ty`.
// Entry points for `backend::cpu::qmatmul` and the quantize tooling, which land separately.
#[allow(dead_code)]
pub fn matmul_supported(ty: GgmlType) -> bool {
    use GgmlType as T;
    matches!(
        ty,
        T::F32
            | T::F16
            | T::BF16
            | T::Q4_0
            | T::Q4_0x8
            | T::Q4_1
            | T::Q4_1x8
            | T::Q4_1x8s2
            | T::Q4_1x8s4
            | T::A8x8
            | T::A8x8s2
            | T::A8x8s4
            | T::Q8_0x8
            | T::Q4_Kx8
            | T::Q5_Kx8
            | T::Q6_Kx8
            | T::Q5_0x8
            | T::Q5_0
            | T::Q5_1
            | T::Q8_0
            | T::Q8_1
            | T::IQ4_NL
            | T::Q2_K
            | T::Q3_K
            | T::Q4_K
            | T::Q5_K
            | T::Q6_K
    )
}

/// `out[m × n] = x[m × k] · Wᵀ`: `W` is `n` rows of `k` values of `ty` (`w.len() == n *
/// ty.row_bytes(k)`, GGUF layout), `x` and `out` are row-major f32.
///
/// Quantized weights multiply against 8-bit quantized activations (see the module docs), so the
/// result differs from the exact product of the dequantized weights by the activation rounding:
/// at most about `Σ_blocks |w|·amax(x_block) / 254` per output, typically far less. F32, F16 and
/// BF16 weights are widened and multiplied in f32. Errors (never panics) on any length mismatch
/// or an unsupported type ([`matmul_supported`]).
// Entry points for `backend::cpu::qmatmul` and the quantize tooling, which land separately.
#[allow(dead_code)]
pub fn matmul_t(
    ty: GgmlType,
    w: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    out: &mut [f32],
) -> Result<()> {
    matmul_t_on(Isa::best(), amx_prefill(), ty, w, n, k, x, m, out, None).map(|_| ())
}

/// A gated MLP's first product (see `ops::gguf_gated_matmul`): `W` is `n` rows of `ty`
/// holding gate and up rows alternating every 8 (`n` a multiple of 16), `full` receives the
/// whole product (`m × n`, scratch) and `out` (`m × n / 2`) the gated values
/// `activation(gate) * up`. On the decode kernel each thread gates the rows it computed, while
/// they are in its cache; elsewhere the gating runs as a pass over `full` after the product.
#[allow(clippy::too_many_arguments)]
pub fn gated_matmul_t(
    ty: GgmlType,
    activation: GateActivation,
    w: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    full: &mut [f32],
    out: &mut [f32],
) -> Result<()> {
    const OP: &str = "gated_quant_matmul";
    if !n.is_multiple_of(matmul::EPILOGUE_ROWS) {
        return Err(invalid(
            OP,
            format!("{n} weight rows are not whole pairs of 8 gate and 8 up rows"),
        ));
    }
    if Some(out.len()) != m.checked_mul(n / 2) {
        return Err(invalid(
            OP,
            format!(
                "output of {m} x {} needs {} values, got {}",
                n / 2,
                m * (n / 2),
                out.len()
            ),
        ));
    }
    let (full_ptr, out_ptr) = (SendPtr(full.as_mut_ptr()), SendPtr(out.as_mut_ptr()));
    let epi = |r0: usize, r1: usize| {
        // SAFETY: `full` holds m x n values (checked by `matmul_t_on` before any epilogue
        // runs), `out` m x n/2; columns r0..r1 of `full` are final (this thread computed them,
        // or the product is done) and outputs r0/2..r1/2 are written by this call alone.
        unsafe { gate::apply(activation, full_ptr.get(), out_ptr.get(), m, n, r0, r1) }
    };
    let ran = matmul_t_on(
        Isa::best(),
        amx_prefill(),
        ty,
        w,
        n,
        k,
        x,
        m,
        full,
        Some(&epi),
    )?;
    if !ran && m > 0 {
        let pairs = n / matmul::EPILOGUE_ROWS;
        let min = (1usize << 14).div_ceil(m * matmul::EPILOGUE_ROWS).max(1);
        pool::parallel_chunks(pairs, min, &|p0, p1| {
            epi(p0 * matmul::EPILOGUE_ROWS, p1 * matmul::EPILOGUE_ROWS)
        });
    }
    Ok(())
}

/// Whether [`matmul_t`] runs prefill-sized products (`m >= AMX_MIN_M`) on the AMX tiles.
fn amx_prefill() -> bool {
    #[cfg(target_arch = "x86_64")]
    return crate::backend::cpu::amx::enabled();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// From this many activation rows on, quantized weights go to the AMX tiles when the CPU has
/// them (`amx/gemm.rs`): each weight block is decoded to bf16 once per call and the tiles do the
/// rest. Below it the integer kernels. Measured on the 0.5B shape (prefill tokens/s, AMX
/// against the integer panels, two runs each): 16 tokens 0.85x, 32 0.97x, 64 1.04x, 512 1.19x;
/// the tiles take 32 activation rows at a time, and the decode of every weight per call is
/// paid back only over enough rows.
const AMX_MIN_M: usize = 64;

/// [`AMX_MIN_M`], or for an interleaved layout [`matmul::INTERLEAVED_DECODE_M`] when that is
/// more: below it the decode kernels beat the tiles there (64 tokens of the 0.5B-shape Q4_0:
/// decode kernels 502 tok/s, AMX 421; 96 tokens 514 against 539).
pub(crate) fn amx_min_m(ty: GgmlType) -> usize {
    if ty.interleaved_rows() > 1 {
        AMX_MIN_M.max(matmul::INTERLEAVED_DECODE_M)
    } else {
        AMX_MIN_M
    }
}

/// [`matmul_t`] on a chosen instruction set (an error if this CPU lacks it), never on AMX: the
/// tests run every kernel family through here.
#[cfg_attr(not(test), allow(dead_code))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_t_with(
    isa: Isa,
    ty: GgmlType,
    w: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    out: &mut [f32],
) -> Result<()> {
    matmul_t_on(isa, false, ty, w, n, k, x, m, out, None).map(|_| ())
}

/// The checks of [`matmul_t`], then the product on `isa`, or on the AMX tiles when `amx` is set
/// and the product is prefill-sized. True when `epi` ran (see `matmul::matmul_t`).
#[allow(clippy::too_many_arguments)]
fn matmul_t_on(
    isa: Isa,
    amx: bool,
    ty: GgmlType,
    w: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    out: &mut [f32],
    epi: Option<&matmul::Epilogue>,
) -> Result<bool> {
    const OP: &str = "quant_matmul";
    if !matmul_supported(ty) {
        return Err(invalid(OP, format!("no matmul kernel for {ty} weights")));
    }
    if !isa.supported() {
        return Err(invalid(
            OP,
            format!("this CPU cannot run the {isa:?} kernels"),
        ));
    }
    if ty.is_affine8() && !isa.has_vpdpbusd() {
        return Err(invalid(
            OP,
            format!("{ty} weights are multiplied by the VNNI kernels only, not {isa:?}"),
        ));
    }
    let row_bytes = ty.row_bytes(k)?;
    let dims = |a: usize, b: usize, what: &str| {
        a.checked_mul(b)
            .ok_or_else(|| invalid(OP, format!("{what} size {a} x {b} overflows")))
    };
    let (wn, xn, on) = (
        dims(n, row_bytes, "weight")?,
        dims(m, k, "input")?,
        dims(m, n, "output")?,
    );
    if w.len() != wn {
        return Err(invalid(
            OP,
            format!(
                "{n} rows of {k} {ty} values take {wn} bytes, got {}",
                w.len()
            ),
        ));
    }
    if x.len() != xn {
        return Err(invalid(
            OP,
            format!("input of {m} x {k} needs {xn} values, got {}", x.len()),
        ));
    }
    if out.len() != on {
        return Err(invalid(
            OP,
            format!("output of {m} x {n} needs {on} values, got {}", out.len()),
        ));
    }
    let unit = ty.interleaved_rows();
    if !n.is_multiple_of(unit) {
        return Err(invalid(
            OP,
            format!("{ty} interleaves groups of {unit} rows; {n} rows are not whole groups"),
        ));
    }
    if m == 0 || n == 0 {
        return Ok(false);
    }
    if k == 0 {
        out.fill(0.0);
        return Ok(false);
    }
    #[cfg(target_arch = "x86_64")]
    if amx && m >= amx_min_m(ty) && !is_float(ty) {
        matmul::matmul_amx(ty, w, row_bytes, n, k, x, m, out);
        return Ok(false);
    }
    let _ = amx;
    matmul::matmul_t(isa, ty, w, n, k, x, m, out, epi)
}
