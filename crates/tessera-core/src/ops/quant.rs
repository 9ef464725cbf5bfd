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
    let rows = format.interleaved_rows();
    if rows > 1 && (w.ndim() != 2 || !w.shape()[0].is_multiple_of(rows)) {
        return invalid(
            op,
            format!(
                "a {format} weight interleaves groups of {rows} rows: it must be a whole 2-D \
                 matrix with a multiple of {rows} rows, got shape {} (slice or take rows from \
                 the {} matrix before interleaving it)",
                fmt_shape(w.shape()),
                format.file_format()
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

/// Rows `ids` (an integer array of any shape, each in `0..n`) of the GGUF matrix `w` (`u8`
/// `(n, format.row_bytes(k))`) decoded to f32: shape `(ids..., k)`. An embedding lookup that
/// decodes only the rows it needs; for an interleaved layout ([`GgmlType::Q4_0x8`]) it decodes
/// each id's group of rows and keeps the one asked for.
pub fn gguf_take_rows(w: &Array, ids: &Array, format: GgmlType, k: usize) -> Result<Array> {
    let r = format.interleaved_rows();
    if r == 1 {
        return gguf_dequantize(&crate::ops::take(w, ids, Some(0))?, format, k);
    }
    check_weight("gguf_take_rows", w, format, k)?;
    use crate::ops;
    let (n, rb) = (w.shape()[0], w.shape()[1]);
    let m = ids.size();
    let groups = ops::reshape(w, &[n / r, r * rb])?;
    let per = Array::scalar(r as i32).astype(ids.dtype())?;
    let picked = ops::take(&groups, &ops::floor_divide(ids, &per)?, Some(0))?;
    let decoded = gguf_dequantize(&ops::reshape(&picked, &[m * r, rb])?, format, k)?;
    let lane = ops::reshape(&ops::remainder(ids, &per)?, &[m, 1, 1])?;
    let rows = ops::take_along_axis(&ops::reshape(&decoded, &[m, r, k])?, &lane, Some(1))?;
    let mut shape = ids.shape().to_vec();
    shape.push(k);
    ops::reshape(&rows, &shape)
}
