//! The affine format's geometry and its scalar codecs: MLX's per-group arithmetic, and the bit
//! stream (value `j` of a row at bits `j * bits ..`) read and written 8 values at a time: 8
//! values of `b` bits are exactly `b` bytes, so every pack starts on a byte.

use crate::dtype::Element;
use crate::error::{Error, Result};

/// Bits and group size of one quantized matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Format {
    pub bits: u32,
    pub group_size: usize,
}

impl Format {
    /// Validates (the ops validate first; kernels check again rather than trust).
    pub(crate) fn new(op: &'static str, group_size: usize, bits: u32) -> Result<Format> {
        if !matches!(group_size, 32 | 64 | 128) || !matches!(bits, 1..=6 | 8) {
            return Err(Error::Invalid {
                op,
                msg: format!("unsupported format: {bits} bits, group size {group_size}"),
            });
        }
        Ok(Format { bits, group_size })
    }

    /// Bytes of a row of `cols` values (`cols` is a multiple of the group size, so of 32).
    #[inline(always)]
    pub(crate) fn row_bytes(self, cols: usize) -> usize {
        cols / 8 * self.bits as usize
    }

    #[inline(always)]
    pub(crate) fn mask(self) -> u64 {
        (1u64 << self.bits) - 1
    }

    /// The largest code, `2^bits - 1`.
    #[inline(always)]
    pub(crate) fn n_bins(self) -> f32 {
        self.mask() as f32
    }
}

/// The 8 values of the pack starting at byte `at`, as one little-endian integer.
#[inline(always)]
pub(crate) fn read_pack(row: &[u8], at: usize, bits: u32) -> u64 {
    let mut b = [0u8; 8];
    let n = bits as usize;
    b[..n].copy_from_slice(&row[at..at + n]);
    u64::from_le_bytes(b)
}

/// Decodes the codes of `row` (a whole number of packs) into `out` (8 per pack).
#[cfg(test)]
pub(crate) fn unpack(fmt: Format, row: &[u8], out: &mut [u8]) {
    let (bits, mask) = (fmt.bits, fmt.mask());
    for (p, vals) in out.chunks_exact_mut(8).enumerate() {
        let u = read_pack(row, p * bits as usize, bits);
        for (i, v) in vals.iter_mut().enumerate() {
            *v = ((u >> (i as u32 * bits)) & mask) as u8;
        }
    }
}

/// Encodes codes (each `< 2^bits`, 8 per pack) into `row`.
pub(crate) fn pack(fmt: Format, codes: &[u8], row: &mut [u8]) {
    let bits = fmt.bits as usize;
    for (vals, dst) in codes.chunks_exact(8).zip(row.chunks_exact_mut(bits)) {
        let mut u = 0u64;
        for (i, &v) in vals.iter().enumerate() {
            u |= (v as u64) << (i * bits);
        }
        dst.copy_from_slice(&u.to_le_bytes()[..bits]);
    }
}

/// MLX's `std::max(a, b)` (`a < b ? b : a`), which keeps `a` when either is NaN.
#[inline(always)]
fn cmax(a: f32, b: f32) -> f32 {
    if a < b { b } else { a }
}

/// MLX's `std::min(a, b)` (`b < a ? b : a`).
#[inline(always)]
fn cmin(a: f32, b: f32) -> f32 {
    if b < a { b } else { a }
}

/// The f32 scale and bias MLX chooses for one group (see `ops::affine_quant`'s docs).
pub(crate) fn group_params(fmt: Format, vals: impl Iterator<Item = f32> + Clone) -> (f32, f32) {
    const EPS: f32 = 1e-7;
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for v in vals {
        hi = cmax(hi, v);
        lo = cmin(lo, v);
    }
    if fmt.bits == 1 {
        return (cmax(hi - lo, EPS), lo);
    }
    let edge_is_min = lo.abs() > hi.abs();
    let s = cmax((hi - lo) / fmt.n_bins(), EPS);
    let mut scale = if edge_is_min { s } else { -s };
    let edge = if edge_is_min { lo } else { hi };
    let q0 = (edge / scale).round_ties_even();
    let mut bias = 0.0;
    if q0 != 0.0 {
        scale = edge / q0;
        bias = edge;
    }
    (scale, bias)
}

/// The code of `v` in a group with f32 `scale` and `bias`.
#[inline(always)]
pub(crate) fn code(v: f32, scale: f32, bias: f32, n_bins: f32) -> u8 {
    let q = ((v - bias) / scale).round_ties_even();
    // `as` maps NaN to 0 (MLX's C++ cast of NaN is undefined).
    cmin(cmax(q, 0.0), n_bins) as u8
}

/// Half-precision parameter types (f32, f16, bf16) and their rounding.
pub(crate) trait Param: Element {
    /// `v` rounded to this type, as f32.
    #[inline(always)]
    fn round(v: f32) -> f32 {
        Self::from_f32(v).to_f32()
    }
}
impl Param for f32 {
    #[inline(always)]
    fn round(v: f32) -> f32 {
        v
    }
}
impl Param for half::f16 {}
impl Param for half::bf16 {}

/// Converts parameters (scales or biases) to f32.
pub(crate) fn params_to_f32<S: Element>(src: &[S], dst: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    // SAFETY (casts below): `S::DTYPE` says which type `S` is.
    match S::DTYPE {
        crate::Dtype::F16 => {
            let s =
                unsafe { std::slice::from_raw_parts(src.as_ptr() as *const half::f16, src.len()) };
            s.convert_to_f32_slice(dst);
        }
        crate::Dtype::BF16 => {
            let s = unsafe { std::slice::from_raw_parts(src.as_ptr() as *const u16, src.len()) };
            for (d, &b) in dst.iter_mut().zip(s) {
                *d = f32::from_bits((b as u32) << 16);
            }
        }
        _ => {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v.to_f32();
            }
        }
    }
}
