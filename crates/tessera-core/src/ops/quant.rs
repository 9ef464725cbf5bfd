//! Ops on block-quantized (GGUF/ggml format) weights: the matrix stays in its blocks, and the
//! kernels decode them on the fly. See [`crate::quant`] for the storage convention.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Result, fmt_shape, invalid};
use crate::primitive::Primitive;
use crate::quant::GgmlType;

fn check_weight(op: &'static str, w: &Array, format: GgmlType, k: usize) -> Result<()> {
    if !format.is_quantized() {
        return invalid(
            op,
            format!("{format} is not a block-quantized format; use the dense ops on it"),
        );
    }
    if w.dtype() != Dtype::U8 || w.ndim() == 0 {
        return invalid(
            op,
            format!(
                "the quantized weight must be a u8 array of raw blocks, got {} of shape {}",
                w.dtype(),
                fmt_shape(w.shape())
            ),
        );
    }
    let row_bytes = format.row_bytes(k)?;
    let last = w.shape()[w.ndim() - 1];
    if last != row_bytes {
        return invalid(
            op,
            format!(
                "rows of {k} {format} values take {row_bytes} bytes, but the weight has shape {}",
                fmt_shape(w.shape())
            ),
        );
    }
    Ok(())
}

/// `x @ Wᵀ` where W (n rows of k values) is stored as GGUF blocks of `format`: `w` is a `u8`
/// array of shape `(n, format.row_bytes(k))`, e.g. straight from
/// a memory-mapped GGUF file. `x` is `(..., k)` in a float dtype; the result is `(..., n)` in x's
/// dtype. Differentiable with respect to `x` (the weight is a constant).
///
/// The CPU kernels quantize each row of x to 8 bits (as llama.cpp does) and use integer dot
/// products, so results differ from an f32 matmul by that rounding (about 1e-3 relative).
pub fn gguf_matmul(x: &Array, w: &Array, format: GgmlType) -> Result<Array> {
    if x.ndim() == 0 || !x.dtype().is_float() {
        return invalid(
            "gguf_matmul",
            format!(
                "x must be a float array of at least one dimension, got {} of shape {}",
                x.dtype(),
                fmt_shape(x.shape())
            ),
        );
    }
    let k = x.shape()[x.ndim() - 1];
    check_weight("gguf_matmul", w, format, k)?;
    if w.ndim() != 2 {
        return invalid(
            "gguf_matmul",
            format!(
                "the weight must be 2-D (n, row_bytes), got {}",
                fmt_shape(w.shape())
            ),
        );
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap_or(&mut 0) = w.shape()[0];
    Ok(Array::lazy(
        Primitive::QuantizedMatmul { format },
        vec![x.clone(), w.clone()],
        shape,
        x.dtype(),
    ))
}

/// Decodes rows of GGUF blocks to f32: `w` is `u8` of shape `(..., format.row_bytes(k))`, the
/// result `(..., k)`. Use it for embedding lookups (`take` the rows first, then decode) or to
/// check kernels; matmuls should use [`gguf_matmul`], which never decodes the whole matrix.
pub fn gguf_dequantize(w: &Array, format: GgmlType, k: usize) -> Result<Array> {
    check_weight("gguf_dequantize", w, format, k)?;
    let mut shape = w.shape().to_vec();
    *shape.last_mut().unwrap_or(&mut 0) = k;
    Ok(Array::lazy(
        Primitive::Dequantize { format },
        vec![w.clone()],
        shape,
        Dtype::F32,
    ))
}
