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
/// group_size`). Writes `out[i * ldo + r] = Σ_g scale·(x_i,g · q_r,g) + bias·Σx_i,g`.
pub(super) struct DotArgs {
    pub fmt: Format,
    pub k: usize,
    pub rows: usize,
    pub w: *const u8,
    pub scales: *const f32,
    pub biases: *const f32,
    pub mt: usize,
    pub x: *const f32,
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
        Isa::Avx512 => super::x86::dot_avx512(a),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => super::x86::dot_avx2(a),
        _ => scalar::dot(a),
    }
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
        Isa::Avx512 => unsafe { super::x86::decode_row_avx512(fmt, row, scales, biases, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { super::x86::decode_row_avx2(fmt, row, scales, biases, out) },
        _ => scalar::decode_row(fmt, row, scales, biases, out),
    }
}
