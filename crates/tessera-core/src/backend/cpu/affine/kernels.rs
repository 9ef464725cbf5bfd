//! The per-instruction-set kernel table: row decoding (weights to f32) and the fused product
//! for up to [`MT`] activation rows. `Isa` picks the implementation; every variant is callable
//! directly so tests run them all on the same inputs.

use super::Isa;
use super::format::Format;
use super::scalar;

/// Activation rows per call of the fused product (the accumulators of 4 rows, their per-group
/// partial sums and the decoded weights fit in the 16 AVX2 registers).
pub(super) const MT: usize = 4;

/// One call of the fused product: weight rows `0..rows` (each `fmt.row_bytes(k)` bytes from
/// `w`, with `k / group_size` f32 scales and biases per row from `scales`, `biases`) against
/// activation rows `0..mt` (`x`: `mt × k` f32, `xsum`: their per-group sums, `mt × k /
/// group_size`), over the groups `g0..g1`. Adds `Σ_g scale·(x_i,g · q_r,g) + bias·Σx_i,g` to
/// `out[i * ldo + r]`.
pub(super) struct DotArgs {
    pub fmt: Format,
    pub k: usize,
    pub g0: usize,
    pub g1: usize,
    pub rows: usize,
    pub w: *const u8,
    pub scales: *const f32,
    pub biases: *const f32,
    pub mt: usize,
    /// In the order [`plan`] asks for.
    pub x: *const f32,
    /// `x` rounded to bf16 (`mt × k` bit patterns), for the kernels that multiply in bf16
    /// (see [`plan`], also for the order); null otherwise.
    pub xh: *const u16,
    /// `x - xh` rounded to bf16, or null when `x` is exactly `xh` (bf16 or zero inputs).
    pub xl: *const u16,
    pub xsum: *const f32,
    pub out: *mut f32,
    pub ldo: usize,
}

/// Runs the fused product on `isa` (which the CPU must support).
///
/// # Safety
/// The pointers in `a` cover the sizes it states; `1 <= a.mt <= MT`; `k` is a multiple of the
/// group size.
pub(super) unsafe fn dot(isa: Isa, a: &DotArgs) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 => super::x86::dot_avx512_bf16(a),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => super::x86::dot_avx512(a),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => super::x86::dot_avx2(a),
        _ => scalar::dot(a),
    }
}

/// How [`dot`] on an instruction set wants the activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct XPlan {
    /// bf16 copies (`xh`, and `xl` unless `x` is exactly bf16).
    pub bf16: bool,
    /// Even/odd order in blocks of this many values (the 4-bit kernels split each byte into
    /// its two nibbles, so they produce the even codes of a block, then the odd ones): for the
    /// bf16 copies when `bf16`, else for the f32 `x`.
    pub even_odd: Option<usize>,
}

/// The plan for `fmt` on `isa`, given whether every activation is exactly a bf16 value.
///
/// With AVX-512 BF16, codes of up to 6 bits are multiplied as bf16: exactly when the
/// activations are bf16 (one product per pair of values), and as the sum of two bf16 (two
/// products) otherwise, except 4-bit codes, whose f32 nibble kernel is as fast as two bf16
/// products and exact (and takes 32-value groups in any case).
pub(super) fn plan(isa: Isa, fmt: Format, x_is_bf16: bool) -> XPlan {
    let four = fmt.bits == 4;
    let bf16 =
        isa == Isa::Avx512Bf16 && fmt.bits <= 6 && (!four || (x_is_bf16 && fmt.group_size >= 64));
    let even_odd = match isa {
        _ if !four => None,
        Isa::Avx512Bf16 if bf16 => Some(64),
        Isa::Avx512 | Isa::Avx512Bf16 => Some(32),
        Isa::Avx2 => Some(16),
        Isa::Scalar => None,
    };
    XPlan { bf16, even_odd }
}

/// `out[j] = scale * q + bias` (multiply, then add: no fused multiply-add) for the values of a
/// row segment: `row` holds `out.len()` values (whole groups), `scales`/`biases` one f32 per
/// group.
pub(super) fn decode_row(
    isa: Isa,
    fmt: Format,
    row: &[u8],
    scales: &[f32],
    biases: &[f32],
    out: &mut [f32],
) {
    let groups = out.len() / fmt.group_size;
    if row.len() < fmt.row_bytes(out.len()) || scales.len() < groups || biases.len() < groups {
        // Callers size everything; an inconsistent call decodes nothing rather than read out
        // of bounds.
        debug_assert!(false, "decode_row: inconsistent sizes");
        return;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU has the instructions (an `Isa` is only chosen when supported) and the
        // sizes were checked above.
        Isa::Avx512 | Isa::Avx512Bf16 => unsafe {
            super::x86::decode_row_avx512(fmt, row, scales, biases, out)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { super::x86::decode_row_avx2(fmt, row, scales, biases, out) },
        _ => scalar::decode_row(fmt, row, scales, biases, out),
    }
}
