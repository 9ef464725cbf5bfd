//! MLX-style affine group quantization: [`quantize`], [`dequantize`], [`quantized_matmul`].
//!
//! # Format (identical to MLX's `mx.quantize(w, group_size, bits)`, mode `"affine"`)
//!
//! A float array `w` of shape `(.., d)` is split along its last axis into groups of
//! `group_size` (32, 64 or 128) consecutive values. Each group gets a `scale` and a `bias`, in
//! `w`'s dtype, such that every value is approximately `scale * q + bias` for an unsigned
//! integer `q` of `bits` bits (1, 2, 3, 4, 5, 6 or 8). Per group, in f32:
//!
//! - `bits == 1`: `scale = max(w_max - w_min, 1e-7)`, `bias = w_min`;
//! - otherwise the end of the range with the larger magnitude (`edge`) is made exact:
//!   `s = ±max((w_max - w_min) / (2^bits - 1), 1e-7)` (positive when `|w_min| > |w_max|`,
//!   where `edge = w_min`; negative otherwise, `edge = w_max`), `q0 = rint(edge / s)`; if
//!   `q0 != 0` then `scale = edge / q0` and `bias = edge`, else `scale = s` and `bias = 0`;
//! - `q = clamp(rint((w - bias) / scale), 0, 2^bits - 1)` with the f32 scale, before the scale
//!   is rounded to `w`'s dtype. `rint` rounds half to even.
//!
//! So scales may be negative (then `q = 0` is the group maximum). Outputs:
//!
//! - `w_q`: `u32` of shape `(.., d * bits / 32)`. Each row is one little-endian bit stream:
//!   value `j` of the row occupies bits `j * bits .. (j + 1) * bits` of the stream, and stream
//!   bit `i` is bit `i % 32` of word `i / 32`. For 2, 4 and 8 bits that is "value `j` in bits
//!   `(j % (32 / bits)) * bits` of word `j / (32 / bits)`"; for 3, 5 and 6 bits values cross
//!   word boundaries (MLX packs 8 values into 3 or 5 bytes, 4 six-bit values into 3 bytes,
//!   which is the same stream). This is the layout of the MLX community's quantized
//!   safetensors (`*.weight` `u32`, `*.scales`, `*.biases`).
//! - `scales`, `biases`: shape `(.., d / group_size)`, dtype of `w`.
//!
//! [`dequantize`] reproduces MLX bit for bit: in the scales' dtype, `scale * q` is rounded to
//! that dtype and then `bias` is added (and rounded again).
//!
//! # Products
//!
//! [`quantized_matmul`] multiplies float activations by the quantized matrix without ever
//! materialising it: the CPU kernels decode groups in registers and accumulate in f32 (see
//! `backend/cpu/affine`). Its derivative with respect to `x` is another quantized matmul with
//! the opposite `transpose`; the scales and biases get gradients too (through a dense
//! `xᵀ · ct`, built only when asked for); `w_q` gets none.

use crate::array::Array;
use crate::dtype::{Dtype, promote_types};
use crate::error::{Result, fmt_shape, invalid};
use crate::primitive::{AffinePart, Primitive};

/// Group sizes MLX's affine mode supports.
pub const AFFINE_GROUP_SIZES: [usize; 3] = [32, 64, 128];
/// Bit widths MLX's affine mode supports.
pub const AFFINE_BITS: [u32; 7] = [1, 2, 3, 4, 5, 6, 8];

fn check_format(op: &'static str, group_size: usize, bits: u32) -> Result<()> {
    if !AFFINE_GROUP_SIZES.contains(&group_size) {
        return invalid(
            op,
            format!("group_size must be 32, 64 or 128, got {group_size}"),
        );
    }
    if !AFFINE_BITS.contains(&bits) {
        return invalid(
            op,
            format!("bits must be 1, 2, 3, 4, 5, 6 or 8, got {bits}"),
        );
    }
    Ok(())
}

fn is_quant_float(d: Dtype) -> bool {
    matches!(d, Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

/// Number of values a row of `words` packed `u32` words holds, if whole.
fn values_in(words: usize, bits: u32) -> Option<usize> {
    let total = words.checked_mul(32)?;
    total
        .is_multiple_of(bits as usize)
        .then(|| total / bits as usize)
}

/// Quantizes `w` (float32, float16 or bfloat16; at least 2-D; last dimension `d` a multiple of
/// `group_size`) into `(w_q, scales, biases)` bit for bit as MLX's
/// `mx.quantize(w, group_size, bits)` does: `w_q` is `u32` of shape `(.., d * bits / 32)`,
/// `scales` and `biases` have shape `(.., d / group_size)` and `w`'s dtype.
///
/// Each group of `group_size` consecutive values along the last axis becomes codes `q` with
/// `w ≈ scale * q + bias`. Each row of `w_q` is one little-endian bit stream: value `j` of the
/// row occupies bits `j * bits .. (j + 1) * bits`, stream bit `i` being bit `i % 32` of word
/// `i / 32` (so 3-, 5- and 6-bit values may straddle two words), which is the layout of the
/// MLX community's quantized safetensors. Per group (in f32): for `bits > 1` the end of the
/// range with the larger magnitude is represented exactly (`bias` = that end and `scale` =
/// `end / rint(end / s)` with `s = ±(max - min) / (2^bits - 1)`, so scales may be negative), or
/// `bias = 0` when that rounds to zero; for `bits == 1`, `scale = max - min`, `bias = min`;
/// `q = clamp(rint((w - bias) / scale), 0, 2^bits - 1)` with the f32 scale (`rint` rounds half
/// to even). `ops/affine_quant.rs` documents the details.
///
/// `group_size` must be 32, 64 or 128 and `bits` one of 1, 2, 3, 4, 5, 6, 8. Not
/// differentiable (the outputs get no gradient).
/// ```
/// use tessera_core::{Array, ops};
/// let w = Array::from_slice(&(0..128).map(|i| i as f32 / 8.0).collect::<Vec<_>>(), &[2, 64]).unwrap();
/// let (w_q, scales, biases) = ops::quantize(&w, 64, 4).unwrap();
/// assert_eq!(w_q.shape(), &[2, 8]);
/// assert_eq!(scales.shape(), &[2, 1]);
/// let back = ops::dequantize(&w_q, &scales, &biases, 64, 4).unwrap();
/// let err = ops::max(&ops::abs(&ops::subtract(&back, &w).unwrap()).unwrap(), ops::Axes::All, false).unwrap();
/// assert!(err.item::<f32>().unwrap() <= 0.27); // half a step of 7.875 / 15
/// ```
pub fn quantize(w: &Array, group_size: usize, bits: u32) -> Result<(Array, Array, Array)> {
    const OP: &str = "quantize";
    check_format(OP, group_size, bits)?;
    if !is_quant_float(w.dtype()) {
        return invalid(
            OP,
            format!("w must be float32, float16 or bfloat16, got {}", w.dtype()),
        );
    }
    if w.ndim() < 2 {
        return invalid(
            OP,
            format!(
                "w must have at least 2 dimensions, got shape {}",
                fmt_shape(w.shape())
            ),
        );
    }
    let d = w.shape()[w.ndim() - 1];
    if !d.is_multiple_of(group_size) {
        return invalid(
            OP,
            format!(
                "the last dimension of w {} is not a multiple of group_size {group_size}",
                fmt_shape(w.shape())
            ),
        );
    }
    let lead = &w.shape()[..w.ndim() - 1];
    let with_last = |last: usize| {
        let mut s = lead.to_vec();
        s.push(last);
        s
    };
    let part = |part: AffinePart, shape: Vec<usize>, dtype: Dtype| {
        Array::lazy(
            Primitive::AffineQuantize {
                group_size,
                bits,
                part,
            },
            vec![w.clone()],
            shape,
            dtype,
        )
    };
    let words = d * bits as usize / 32;
    Ok((
        part(AffinePart::Packed, with_last(words), Dtype::U32),
        part(AffinePart::Scales, with_last(d / group_size), w.dtype()),
        part(AffinePart::Biases, with_last(d / group_size), w.dtype()),
    ))
}

/// Checks `w_q`, `scales`, `biases` against each other; returns the values per row.
fn check_quantized(
    op: &'static str,
    w_q: &Array,
    scales: &Array,
    biases: &Array,
    group_size: usize,
    bits: u32,
) -> Result<usize> {
    check_format(op, group_size, bits)?;
    if w_q.dtype() != Dtype::U32 || w_q.ndim() < 2 {
        return invalid(
            op,
            format!(
                "w_q must be a uint32 array of at least 2 dimensions, got {} of shape {}",
                w_q.dtype(),
                fmt_shape(w_q.shape())
            ),
        );
    }
    if !is_quant_float(scales.dtype()) || scales.dtype() != biases.dtype() {
        return invalid(
            op,
            format!(
                "scales and biases must share one float dtype (float32, float16, bfloat16), got {} and {}",
                scales.dtype(),
                biases.dtype()
            ),
        );
    }
    if scales.shape() != biases.shape() {
        return invalid(
            op,
            format!(
                "scales {} and biases {} differ in shape",
                fmt_shape(scales.shape()),
                fmt_shape(biases.shape())
            ),
        );
    }
    let nd = w_q.ndim();
    let words = w_q.shape()[nd - 1];
    let Some(d) = values_in(words, bits) else {
        return invalid(
            op,
            format!("rows of {words} uint32 words do not hold a whole number of {bits}-bit values"),
        );
    };
    let groups_ok = scales.ndim() == nd
        && scales.shape()[..nd - 1] == w_q.shape()[..nd - 1]
        && scales.shape()[nd - 1].checked_mul(group_size) == Some(d);
    if !groups_ok {
        return invalid(
            op,
            format!(
                "w_q {} holds rows of {d} {bits}-bit values, which need scales and biases of shape {} for group_size {group_size}, got {}",
                fmt_shape(w_q.shape()),
                fmt_shape(
                    &w_q.shape()[..nd - 1]
                        .iter()
                        .copied()
                        .chain([d / group_size])
                        .collect::<Vec<_>>()
                ),
                fmt_shape(scales.shape())
            ),
        );
    }
    if !d.is_multiple_of(group_size) {
        return invalid(
            op,
            format!("rows of {d} values are not a whole number of groups of {group_size}"),
        );
    }
    Ok(d)
}

/// The inverse of [`quantize`]: `scale * q + bias` for every value. `w_q` is `u32` of shape
/// `(.., d * bits / 32)` (at least 2-D), `scales` and `biases` share a float dtype and the shape
/// `(.., d / group_size)`; the result is `(.., d)` in the scales' dtype, bit-equal to MLX's
/// `mx.dequantize` (for half types `scale * q` is rounded to the dtype before the bias is added).
///
/// Differentiable with respect to `scales` (`Σ ct·q` per group) and `biases` (`Σ ct` per group).
/// ```
/// use tessera_core::{Array, ops};
/// // One row of 32 two-bit values, all equal to 3: each word holds 16 of them.
/// let w_q = Array::from_slice(&[u32::MAX, u32::MAX], &[1, 2]).unwrap();
/// let scales = Array::from_slice(&[0.5f32], &[1, 1]).unwrap();
/// let biases = Array::from_slice(&[-1.0f32], &[1, 1]).unwrap();
/// let w = ops::dequantize(&w_q, &scales, &biases, 32, 2).unwrap();
/// assert_eq!(w.shape(), &[1, 32]);
/// assert_eq!(w.to_vec::<f32>().unwrap(), vec![0.5; 32]);
/// ```
pub fn dequantize(
    w_q: &Array,
    scales: &Array,
    biases: &Array,
    group_size: usize,
    bits: u32,
) -> Result<Array> {
    let d = check_quantized("dequantize", w_q, scales, biases, group_size, bits)?;
    let mut shape = w_q.shape().to_vec();
    let last = shape.len() - 1;
    shape[last] = d;
    Ok(Array::lazy(
        Primitive::AffineDequantize { group_size, bits },
        vec![w_q.clone(), scales.clone(), biases.clone()],
        shape,
        scales.dtype(),
    ))
}

/// A matrix product with an affine-quantized matrix `W = dequantize(w_q, scales, biases)`, as
/// MLX's `mx.quantized_matmul(x, w_q, scales, biases, transpose, group_size, bits)`:
///
/// - `transpose == true` (the layout of a linear layer's weight): `W` is `(n, k)`, so `w_q` is
///   `(n, k * bits / 32)` and scales/biases `(n, k / group_size)`; computes `x @ Wᵀ`.
/// - `transpose == false`: `W` is `(k, n)` (groups along `n`), `w_q` `(k, n * bits / 32)`,
///   scales/biases `(k, n / group_size)`; computes `x @ W`.
///
/// `x` is a float array `(.., k)` (at least 1-D); the result is `(.., n)` with dtype
/// `promote_types(x, scales)` (x's dtype when they match). The CPU kernels never materialise `W`
/// and accumulate in f32. Differentiable with respect to `x` (the cotangent goes through
/// the same kernel with the opposite `transpose`), `scales` and `biases`; `w_q` is constant.
/// ```
/// use tessera_core::{Array, ops};
/// let w = Array::from_slice(&(0..256).map(|i| ((i * 37) % 17) as f32 - 8.0).collect::<Vec<_>>(), &[4, 64]).unwrap();
/// let (w_q, s, b) = ops::quantize(&w, 64, 8).unwrap();
/// let x = Array::from_slice(&vec![0.5f32; 64], &[1, 64]).unwrap();
/// let y = ops::quantized_matmul(&x, &w_q, &s, &b, true, 64, 8).unwrap();
/// assert_eq!(y.shape(), &[1, 4]);
/// let dense = ops::matmul(&x, &ops::transpose(&ops::dequantize(&w_q, &s, &b, 64, 8).unwrap(), None).unwrap()).unwrap();
/// let (a, d) = (y.to_vec::<f32>().unwrap(), dense.to_vec::<f32>().unwrap());
/// assert!(a.iter().zip(&d).all(|(a, d)| (a - d).abs() < 1e-3));
/// ```
pub fn quantized_matmul(
    x: &Array,
    w_q: &Array,
    scales: &Array,
    biases: &Array,
    transpose: bool,
    group_size: usize,
    bits: u32,
) -> Result<Array> {
    const OP: &str = "quantized_matmul";
    if x.ndim() == 0 || !is_quant_float(x.dtype()) {
        return invalid(
            OP,
            format!(
                "x must be a float32, float16 or bfloat16 array of at least one dimension, got {} of shape {}",
                x.dtype(),
                fmt_shape(x.shape())
            ),
        );
    }
    if w_q.ndim() != 2 {
        return invalid(
            OP,
            format!("w_q must be 2-D, got shape {}", fmt_shape(w_q.shape())),
        );
    }
    let cols = check_quantized(OP, w_q, scales, biases, group_size, bits)?;
    let rows = w_q.shape()[0];
    let (k, n) = if transpose {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let xk = x.shape()[x.ndim() - 1];
    if xk != k {
        let w_shape = if transpose {
            format!("({n}, {k})ᵀ")
        } else {
            format!("({k}, {n})")
        };
        return invalid(
            OP,
            format!(
                "inner dimensions differ: x {} @ W {w_shape} (w_q {}, transpose={transpose})",
                fmt_shape(x.shape()),
                fmt_shape(w_q.shape())
            ),
        );
    }
    let mut shape = x.shape().to_vec();
    let last = shape.len() - 1;
    shape[last] = n;
    Ok(Array::lazy(
        Primitive::AffineQuantizedMatmul {
            transpose,
            group_size,
            bits,
        },
        vec![x.clone(), w_q.clone(), scales.clone(), biases.clone()],
        shape,
        promote_types(x.dtype(), scales.dtype()),
    ))
}
