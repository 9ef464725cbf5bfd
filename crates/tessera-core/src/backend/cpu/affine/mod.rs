//! CPU kernels for MLX-style affine group quantization (`ops::quantize`, `ops::dequantize`,
//! `ops::quantized_matmul`; the format is described in `ops/affine_quant.rs`).
//!
//! Layout: each row of `w_q` is a little-endian bit stream, value `j` at bits `j*bits..`; 8
//! values of `b` bits fill exactly `b` bytes (a "pack"), so every kernel decodes whole packs,
//! and a group of 32, 64 or 128 values is 4, 8 or 16 packs. Scales and biases (f32, f16 or bf16)
//! are widened to f32 a block of rows at a time.
//!
//! The product `x · Wᵀ` (`transpose`):
//! - up to [`FUSED_MAX_M`] activation rows (decoding): `fused.rs`, which decodes each weight
//!   group in registers and computes `Σ_g scale_g (x_g · q_g) + bias_g Σ x_g` in f32, so every
//!   weight byte is read once and never widened in memory. The per-group sums of `x` are
//!   computed once per call, so a group costs one multiply-add per value plus one per group.
//!   Weights are prefetched ahead, which matters once the matrix outgrows the caches.
//! - more rows (prefill): `panel.rs` decodes tiles of `W` to f32 and runs the GEMM on them.
//!   (Measured on a 2-core Zen 4: the fused kernel wins up to about 16 rows, where the GEMM on
//!   decoded tiles starts to pay for the decode.)
//!
//! `x · W` (`transpose = false`, also the backward pass of `x · Wᵀ`) always takes the tile +
//! GEMM path.
//!
//! Instruction sets ([`Isa`]), chosen at run time and capped by `TESSERA_SIMD=scalar|avx2`;
//! every one is callable through [`matmul_with`] and [`dequantize_with`], so tests run them all
//! in one process:
//! - AVX-512 BF16 (`vdpbf16ps`; Zen 4, Sapphire Rapids): codes of up to 6 bits become bf16
//!   through a `vpermw` table and are multiplied 32 at a time; f32 activations are split into
//!   two bf16 (`hi + lo`, 16 significant bits), bf16 activations are used as they are. 4-bit
//!   codes with f32 activations and 8-bit codes take the f32 kernels below (as fast there,
//!   and exact).
//! - AVX-512 with VBMI: byte permutes and `vpmultishiftqb` decode 64 values of any width in
//!   three instructions; f32 FMAs. 4-bit codes: each byte's two nibbles against activations
//!   stored even/odd (see `kernels::plan`), 8-bit: bytes widened straight from memory.
//! - AVX2 + FMA: one pack per step (4-bit: nibbles against even/odd activations); with one
//!   activation row, four weight rows per tile (eight FMA chains instead of two), prefetched.
//!   4-bit, 4864 x 896, streamed from memory on a 2-core Zen 3: 6.6 -> 8.7 GB/s.
//! - portable Rust (`scalar.rs`, also the reference the SIMD kernels are tested against).
//!
//! Speed (4096 × 4096, groups of 64, bf16 scales, one Zen 4 core, matrix in L3): 4-bit m = 1
//! in 0.71 ms with f32 activations (13 GB/s of weights) and 0.51 ms with bf16 ones (18 GB/s);
//! 8-bit in 0.77 ms (23 GB/s). See `tests.rs` (`bench_matmul`, ignored) to measure.

mod codec;
mod format;
mod fused;
mod kernels;
mod panel;
mod scalar;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

pub(crate) use format::Format;

use super::copy;
use super::simd;
use crate::array::Meta;
use crate::dtype::{Dtype, Element};
use crate::error::{Error, Result};
use crate::layout::ArrayData;
use crate::primitive::AffinePart;
use format::Param;
use half::{bf16, f16};
use std::borrow::Cow;
use std::sync::OnceLock;

/// Activation rows up to which `x · Wᵀ` uses the fused kernel (above: tiles + GEMM).
pub(crate) const FUSED_MAX_M: usize = 16;

/// The instruction sets the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Portable Rust.
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F/BW/VL/VBMI (plus AVX2).
    Avx512,
    /// [`Isa::Avx512`] plus AVX-512 BF16 (`vdpbf16ps`).
    Avx512Bf16,
}

impl Isa {
    /// The best set this CPU has, capped by `TESSERA_SIMD` (see `simd::level`).
    pub(crate) fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let cap = match simd::level() {
                simd::Level::Scalar => Isa::Scalar,
                simd::Level::Avx2 => Isa::Avx2,
                simd::Level::Avx512 => Isa::Avx512Bf16,
            };
            [Isa::Avx512Bf16, Isa::Avx512, Isa::Avx2, Isa::Scalar]
                .into_iter()
                .find(|i| (*i as u8) <= (cap as u8) && i.supported())
                .unwrap_or(Isa::Scalar)
        })
    }

    /// Every set this CPU can run (for tests and benchmarks).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn available() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16]
            .into_iter()
            .filter(|i| i.supported())
            .collect()
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
            Isa::Avx512 => {
                Isa::Avx2.supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vbmi")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 => Isa::Avx512.supported() && is_x86_feature_detected!("avx512bf16"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

fn invalid(op: &'static str, msg: String) -> Error {
    Error::Invalid { op, msg }
}

/// `out = x · Wᵀ` (`transpose`, W is `n` rows of `k` values) or `x · W` (W is `k` rows of `n`
/// values), for row-major f32 `x` (`m × k`) and `out` (`m × n`), on instruction set `isa`.
/// `w` is the packed rows' bytes (the `u32` words in little-endian order), `scales`/`biases`
/// one value per group of W's rows. Errors (never panics) on any inconsistent length or an
/// instruction set this CPU lacks.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_with<S: Element>(
    isa: Isa,
    fmt: Format,
    transpose: bool,
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    w: &[u8],
    scales: &[S],
    biases: &[S],
    out: &mut [f32],
) -> Result<()> {
    const OP: &str = "quantized_matmul";
    if !isa.supported() {
        return Err(invalid(
            OP,
            format!("this CPU cannot run the {isa:?} kernels"),
        ));
    }
    let (rows, cols) = if transpose { (n, k) } else { (k, n) };
    let size = |a: usize, b: usize| {
        a.checked_mul(b)
            .ok_or_else(|| invalid(OP, format!("size {a} x {b} overflows")))
    };
    let groups = cols / fmt.group_size;
    let ok = cols.is_multiple_of(fmt.group_size)
        && w.len() == size(rows, fmt.row_bytes(cols))?
        && scales.len() == size(rows, groups)?
        && biases.len() == scales.len()
        && x.len() == size(m, k)?
        && out.len() == size(m, n)?;
    if !ok {
        return Err(invalid(
            OP,
            format!(
                "inconsistent sizes for {m} x {k} @ W ({rows} x {cols}, {} bits, groups of {}): weights {} bytes, {} scales, {} biases, x {}, out {}",
                fmt.bits,
                fmt.group_size,
                w.len(),
                scales.len(),
                biases.len(),
                x.len(),
                out.len()
            ),
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        out.fill(0.0);
        return Ok(());
    }
    if !transpose {
        panel::matmul_n(isa, fmt, x, m, k, n, w, scales, biases, out);
    } else if m <= FUSED_MAX_M {
        fused::matmul_t(isa, fmt, x, m, k, n, w, scales, biases, out);
    } else {
        panel::matmul_t(isa, fmt, x, m, k, n, w, scales, biases, out);
    }
    Ok(())
}

/// Dequantizes rows of `d` values (`w`: their packed bytes) into `out`, on `isa`, bit-equal to
/// MLX (see [`codec::dequantize`]).
pub(crate) fn dequantize_with<T: Element>(
    isa: Isa,
    fmt: Format,
    w: &[u8],
    scales: &[T],
    biases: &[T],
    d: usize,
    out: &mut [T],
) -> Result<()> {
    const OP: &str = "dequantize";
    if !isa.supported() {
        return Err(invalid(
            OP,
            format!("this CPU cannot run the {isa:?} kernels"),
        ));
    }
    let groups = d / fmt.group_size;
    let rows = scales.len().checked_div(groups).unwrap_or(0);
    let ok = d.is_multiple_of(fmt.group_size)
        && biases.len() == scales.len()
        && rows.checked_mul(groups) == Some(scales.len())
        && rows.checked_mul(fmt.row_bytes(d)) == Some(w.len())
        && rows.checked_mul(d) == Some(out.len());
    if !ok {
        return Err(invalid(
            OP,
            format!(
                "inconsistent sizes for rows of {d} values: {} bytes, {} scales, {} biases, {} outputs",
                w.len(),
                scales.len(),
                biases.len(),
                out.len()
            ),
        ));
    }
    // SAFETY: `out` holds rows * d values (checked above) and is borrowed mutably.
    unsafe {
        match T::DTYPE {
            Dtype::F32 => codec::dequantize::<f32>(
                isa,
                fmt,
                w,
                retype(scales),
                retype(biases),
                d,
                out.as_mut_ptr() as *mut f32,
            ),
            Dtype::F16 => codec::dequantize::<f16>(
                isa,
                fmt,
                w,
                retype(scales),
                retype(biases),
                d,
                out.as_mut_ptr() as *mut f16,
            ),
            Dtype::BF16 => codec::dequantize::<bf16>(
                isa,
                fmt,
                w,
                retype(scales),
                retype(biases),
                d,
                out.as_mut_ptr() as *mut bf16,
            ),
            other => return Err(invalid(OP, format!("{other} parameters are not supported"))),
        }
    }
    Ok(())
}

/// Reinterprets a slice of `T` as `U` when they are the same type (checked by the caller
/// through `Element::DTYPE`).
///
/// # Safety
/// `T` and `U` are the same type.
unsafe fn retype<T, U>(s: &[T]) -> &[U] {
    std::slice::from_raw_parts(s.as_ptr() as *const U, s.len())
}

// ---------------------------------------------------------------------------------------------
// Glue from the primitives: make operands contiguous, view the words as bytes, dispatch types.
// ---------------------------------------------------------------------------------------------

/// The bytes of a contiguous `u32` array, in little-endian word order.
fn word_bytes(w: &ArrayData) -> Result<Cow<'_, [u8]>> {
    let words = w.as_slice::<u32>().ok_or_else(|| internal("w_q"))?;
    if cfg!(target_endian = "little") {
        // SAFETY: the words' memory, read as bytes (u8 has no alignment or validity needs).
        Ok(Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(words.as_ptr() as *const u8, words.len() * 4)
        }))
    } else {
        Ok(Cow::Owned(
            words.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ))
    }
}

fn internal(what: &str) -> Error {
    invalid("affine", format!("internal: {what} is not contiguous"))
}

fn slice_of<T: Element>(a: &ArrayData) -> Result<&[T]> {
    if a.dtype != T::DTYPE {
        return Err(invalid(
            "affine",
            format!("internal: expected {}, got {}", T::DTYPE, a.dtype),
        ));
    }
    a.as_slice::<T>().ok_or_else(|| internal("an operand"))
}

/// One part of `quantize(w)`.
pub(crate) fn quantize(
    group_size: usize,
    bits: u32,
    part: AffinePart,
    w: &ArrayData,
    out: &Meta,
) -> Result<ArrayData> {
    let fmt = Format::new("quantize", group_size, bits)?;
    let w = copy::ensure_contiguous(w)?;
    let d = *w.shape().last().unwrap_or(&0);
    let o = ArrayData::alloc(out.dtype, &out.shape)?;
    let dst = o.mut_ptr::<u8>();
    // SAFETY: `o` is fresh and sized by the op for this part (checked by `quantize`'s shapes).
    unsafe {
        match w.dtype {
            Dtype::F32 => codec::quantize::<f32>(fmt, slice_of(&w)?, d, part, dst),
            Dtype::F16 => codec::quantize::<f16>(fmt, slice_of(&w)?, d, part, dst),
            Dtype::BF16 => codec::quantize::<bf16>(fmt, slice_of(&w)?, d, part, dst),
            other => {
                return Err(Error::Dtype {
                    op: "quantize",
                    dtype: other,
                    msg: "expected float32, float16 or bfloat16".into(),
                });
            }
        }
    }
    if cfg!(target_endian = "big") && part == AffinePart::Packed {
        // The kernel wrote the little-endian byte stream; make each word native.
        for i in 0..o.size() {
            // SAFETY: i < size of the fresh u32 output.
            unsafe {
                let p = o.mut_ptr::<u32>().add(i);
                *p = u32::from_le(*p);
            }
        }
    }
    Ok(o)
}

pub(crate) fn dequantize(
    group_size: usize,
    bits: u32,
    w_q: &ArrayData,
    scales: &ArrayData,
    biases: &ArrayData,
    out: &Meta,
) -> Result<ArrayData> {
    let fmt = Format::new("dequantize", group_size, bits)?;
    let (w_q, scales, biases) = (
        copy::ensure_contiguous(w_q)?,
        copy::ensure_contiguous(scales)?,
        copy::ensure_contiguous(biases)?,
    );
    let w = word_bytes(&w_q)?;
    let d = *out.shape.last().unwrap_or(&0);
    let o = ArrayData::alloc(out.dtype, &out.shape)?;
    let n = o.size();
    fn typed<T: Param>(
        fmt: Format,
        w: &[u8],
        s: &ArrayData,
        b: &ArrayData,
        d: usize,
        o: &ArrayData,
        n: usize,
    ) -> Result<()> {
        // SAFETY: `o` is a fresh row-major array of n elements of T (its dtype is the scales').
        let out = unsafe { std::slice::from_raw_parts_mut(o.mut_ptr::<T>(), n) };
        dequantize_with(
            Isa::best(),
            fmt,
            w,
            slice_of::<T>(s)?,
            slice_of::<T>(b)?,
            d,
            out,
        )
    }
    match out.dtype {
        Dtype::F32 => typed::<f32>(fmt, &w, &scales, &biases, d, &o, n)?,
        Dtype::F16 => typed::<f16>(fmt, &w, &scales, &biases, d, &o, n)?,
        Dtype::BF16 => typed::<bf16>(fmt, &w, &scales, &biases, d, &o, n)?,
        other => {
            return Err(Error::Dtype {
                op: "dequantize",
                dtype: other,
                msg: "expected float32, float16 or bfloat16".into(),
            });
        }
    }
    Ok(o)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn quantized_matmul(
    transpose: bool,
    group_size: usize,
    bits: u32,
    x: &ArrayData,
    w_q: &ArrayData,
    scales: &ArrayData,
    biases: &ArrayData,
    out: &Meta,
) -> Result<ArrayData> {
    let fmt = Format::new("quantized_matmul", group_size, bits)?;
    let x = if x.dtype == Dtype::F32 {
        copy::ensure_contiguous(x)?
    } else {
        copy::convert(x, Dtype::F32)?
    };
    let (w_q, scales, biases) = (
        copy::ensure_contiguous(w_q)?,
        copy::ensure_contiguous(scales)?,
        copy::ensure_contiguous(biases)?,
    );
    let w = word_bytes(&w_q)?;
    let k = *x.shape().last().unwrap_or(&0);
    let n = *out.shape.last().unwrap_or(&0);
    let m: usize = x.shape()[..x.shape().len().saturating_sub(1)]
        .iter()
        .product();
    let o = ArrayData::alloc(Dtype::F32, &out.shape)?;
    // SAFETY: fresh contiguous output of m * n f32.
    let dst = unsafe { std::slice::from_raw_parts_mut(o.mut_ptr::<f32>(), o.size()) };
    let xs = slice_of::<f32>(&x)?;
    let isa = Isa::best();
    match scales.dtype {
        Dtype::F32 => matmul_with(
            isa,
            fmt,
            transpose,
            xs,
            m,
            k,
            n,
            &w,
            slice_of::<f32>(&scales)?,
            slice_of::<f32>(&biases)?,
            dst,
        )?,
        Dtype::F16 => matmul_with(
            isa,
            fmt,
            transpose,
            xs,
            m,
            k,
            n,
            &w,
            slice_of::<f16>(&scales)?,
            slice_of::<f16>(&biases)?,
            dst,
        )?,
        Dtype::BF16 => matmul_with(
            isa,
            fmt,
            transpose,
            xs,
            m,
            k,
            n,
            &w,
            slice_of::<bf16>(&scales)?,
            slice_of::<bf16>(&biases)?,
            dst,
        )?,
        other => {
            return Err(Error::Dtype {
                op: "quantized_matmul",
                dtype: other,
                msg: "scales must be float32, float16 or bfloat16".into(),
            });
        }
    }
    if out.dtype == Dtype::F32 {
        Ok(o)
    } else {
        copy::convert(&o, out.dtype)
    }
}
