//! Ops on block-quantized (GGUF/ggml format) weights: the matrix stays in its blocks, and the
//! kernels decode them on the fly. See [`crate::quant`] for the storage convention.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Result, fmt_shape, invalid};
use crate::primitive::{GateActivation, Primitive};
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
    let shape = product_shape("gguf_matmul", x, w, format)?;
    Ok(Array::lazy(
        Primitive::QuantizedMatmul { format },
        vec![x.clone(), w.clone()],
        shape,
        x.dtype(),
    ))
}

/// The checks of a product `x @ Wᵀ` by GGUF blocks, and its shape `(..., n)`.
fn product_shape(op: &'static str, x: &Array, w: &Array, format: GgmlType) -> Result<Vec<usize>> {
    if x.ndim() == 0 || !x.dtype().is_float() {
        return invalid(
            op,
            format!(
                "x must be a float array of at least one dimension, got {} of shape {}",
                x.dtype(),
                fmt_shape(x.shape())
            ),
        );
    }
    let k = x.shape()[x.ndim() - 1];
    check_weight(op, w, format, k)?;
    if w.ndim() != 2 {
        return invalid(
            op,
            format!(
                "the weight must be 2-D (n, row_bytes), got {}",
                fmt_shape(w.shape())
            ),
        );
    }
    let mut shape = x.shape().to_vec();
    *shape.last_mut().unwrap_or(&mut 0) = w.shape()[0];
    Ok(shape)
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

/// Rows `ids` (an integer array of any shape, each in `-n..n`, negatives counting from the
/// end; others are an error at evaluation) of the GGUF matrix `w` (`u8`
/// `(n, format.row_bytes(k))`) decoded to f32: shape `(ids..., k)`. An embedding lookup that
/// decodes only the rows it needs, from an interleaved layout ([`GgmlType::Q4_0x8`]) too: there
/// the row's fields are gathered out of its group's records and the group's other rows are
/// left alone (decoding each id's whole group of 8 and keeping one was 7-10% of a 512-token
/// prefill on the small models).
pub fn gguf_take_rows(w: &Array, ids: &Array, format: GgmlType, k: usize) -> Result<Array> {
    if format.interleaved_rows() == 1 {
        return gguf_dequantize(&crate::ops::take(w, ids, Some(0))?, format, k);
    }
    check_weight("gguf_take_rows", w, format, k)?;
    crate::ops::index::check_indices("gguf_take_rows", ids)?;
    if w.shape()[0] == 0 && ids.size() > 0 {
        return invalid("gguf_take_rows", "cannot take rows of an empty matrix");
    }
    let mut shape = ids.shape().to_vec();
    shape.push(k);
    Ok(Array::lazy(
        Primitive::QuantizedRows { format },
        vec![w.clone(), ids.clone()],
        shape,
        Dtype::F32,
    ))
}

/// Rows per run of gate or up rows in the layout [`gguf_gated_matmul`] reads: the interleaved
/// CPU layouts (`Q4_0x8` and the like) keep groups of 8 rows together, so each group is all
/// gate or all up rows.
pub const GATE_ROWS: usize = 8;

/// Stacks the rows of a gate and an up matrix (each `(f, ...)`, same shape and dtype, `f` a
/// multiple of [`GATE_ROWS`]) alternating [`GATE_ROWS`] at a time: `(2f, ...)`, the layout of
/// [`gguf_gated_matmul`]'s weight. Works on any per-row array (GGUF blocks, affine words,
/// scales, biases). A thread that computes a run of whole row pairs then holds both halves of
/// its outputs' gates and ups.
pub fn interleave_gate_up(gate: &Array, up: &Array) -> Result<Array> {
    const OP: &str = "interleave_gate_up";
    if gate.shape() != up.shape() || gate.dtype() != up.dtype() || gate.ndim() == 0 {
        return invalid(
            OP,
            format!(
                "gate and up must have one shape and dtype, got {} {} and {} {}",
                gate.dtype(),
                fmt_shape(gate.shape()),
                up.dtype(),
                fmt_shape(up.shape())
            ),
        );
    }
    let f = gate.shape()[0];
    if !f.is_multiple_of(GATE_ROWS) {
        return invalid(
            OP,
            format!("{f} rows do not split into runs of {GATE_ROWS}"),
        );
    }
    let rest = &gate.shape()[1..];
    let runs = |a: &Array| -> Result<Array> {
        let mut s = vec![f / GATE_ROWS, 1, GATE_ROWS];
        s.extend_from_slice(rest);
        crate::ops::reshape(a, &s)
    };
    let both = crate::ops::concatenate(&[runs(gate)?, runs(up)?], 1)?;
    let mut s = vec![2 * f];
    s.extend_from_slice(rest);
    crate::ops::reshape(&both, &s)
}

/// A gated MLP's first product in one pass: `activation(x @ gateᵀ) * (x @ upᵀ)`, where `w`
/// (`u8`, `(2f, format.row_bytes(k))`) holds the gate and up matrices' GGUF rows alternating
/// [`GATE_ROWS`] at a time ([`interleave_gate_up`]). `x` is `(..., k)` float; the result
/// `(..., f)` in x's dtype. Each CPU thread applies the activation to the rows it has just
/// computed, so the gate and up values never leave its cache and no separate activation op
/// runs. Differentiable with respect to `x` (through [`gguf_gated_matmul_composite`]).
pub fn gguf_gated_matmul(
    x: &Array,
    w: &Array,
    format: GgmlType,
    activation: GateActivation,
) -> Result<Array> {
    let mut shape = product_shape("gguf_gated_matmul", x, w, format)?;
    let n = w.shape()[0];
    if !n.is_multiple_of(2 * GATE_ROWS) {
        return invalid(
            "gguf_gated_matmul",
            format!(
                "the weight's {n} rows must be whole pairs of {GATE_ROWS} gate and {GATE_ROWS} up \
                 rows (see interleave_gate_up)"
            ),
        );
    }
    *shape.last_mut().unwrap_or(&mut 0) = n / 2;
    Ok(Array::lazy(
        Primitive::GatedQuantizedMatmul { format, activation },
        vec![x.clone(), w.clone()],
        shape,
        x.dtype(),
    ))
}

/// [`gguf_gated_matmul`] written with the ops: the whole product, its gate and up rows picked
/// out as views, the activation, the product. The reference for the fused kernel and the
/// formulation its derivatives and vmap use.
pub fn gguf_gated_matmul_composite(
    x: &Array,
    w: &Array,
    format: GgmlType,
    activation: GateActivation,
) -> Result<Array> {
    let y = gguf_matmul(x, w, format)?;
    let (gate, up) = gate_up_views(&y)?;
    let out = crate::ops::multiply(&gate_activation(&gate, activation)?, &up)?;
    let mut shape = y.shape().to_vec();
    *shape.last_mut().unwrap_or(&mut 0) /= 2;
    crate::ops::reshape(&out, &shape)
}

/// The gate and up values of `y`, a product by an [`interleave_gate_up`] matrix (`(..., 2f)`):
/// views of shape `(..., f / 8, 1, 8)` each, in the order of the gate and up matrices' rows.
/// `act(gate) * up` reshaped to `(..., f)` is the gated product.
pub fn gate_up_views(y: &Array) -> Result<(Array, Array)> {
    use crate::ops;
    let n = y.shape().last().copied().unwrap_or(0);
    if y.ndim() == 0 || !n.is_multiple_of(2 * GATE_ROWS) {
        return invalid(
            "gate_up_views",
            format!(
                "a gated product's last axis holds whole pairs of {GATE_ROWS} gate and \
                 {GATE_ROWS} up values, got shape {}",
                fmt_shape(y.shape())
            ),
        );
    }
    let mut runs = y.shape()[..y.ndim() - 1].to_vec();
    runs.extend_from_slice(&[n / (2 * GATE_ROWS), 2, GATE_ROWS]);
    let y = ops::reshape(y, &runs)?;
    let axis = y.ndim() - 2;
    Ok((
        ops::slice_axis(&y, axis, 0, 1)?,
        ops::slice_axis(&y, axis, 1, 2)?,
    ))
}

/// `activation(g)`, element-wise, with the element functions the CPU kernel uses in the same
/// order: SiLU as `g * sigmoid(g)`; GELU (tanh) as `(g * 0.5) * (tanh(g * (c + c' g²)) + 1)`
/// with `c = sqrt(2 / pi)` and `c' = 0.044715 c`.
pub fn gate_activation(g: &Array, activation: GateActivation) -> Result<Array> {
    use crate::ops;
    let s = |v: f64| Array::scalar_of(v, g.dtype());
    match activation {
        GateActivation::Silu => ops::multiply(g, &ops::sigmoid(g)?),
        GateActivation::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let inner = ops::multiply(
                g,
                &ops::add(&s(c), &ops::multiply(&s(c * 0.044715), &ops::square(g)?)?)?,
            )?;
            ops::multiply(
                &ops::multiply(g, &s(0.5))?,
                &ops::add(&ops::tanh(&inner)?, &s(1.0))?,
            )
        }
    }
}
