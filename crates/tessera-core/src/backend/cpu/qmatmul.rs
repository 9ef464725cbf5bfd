//! Glue between the quantized primitives and the block kernels in [`super::quant`]: makes the
//! operands contiguous (and x f32), then hands raw slices to the kernels.

use super::copy;
use super::pool::try_parallel_chunks;
use crate::array::Meta;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::layout::ArrayData;
use crate::primitive::GateActivation;
use crate::quant::GgmlType;

fn bytes_of(x: &ArrayData) -> &[u8] {
    // SAFETY: a contiguous array covers `size * dtype.size()` bytes from its pointer.
    unsafe { std::slice::from_raw_parts(x.ptr::<u8>(), x.size() * x.dtype.size()) }
}

/// The operands of a quantized product as the kernels take them: `x` as contiguous f32 rows,
/// `w`'s bytes, `(n, k, m)`, and an f32 output of `out`'s shape; `run` fills the output (when
/// it is not empty), which is then converted to `out`'s dtype.
fn product(
    x: &ArrayData,
    w: &ArrayData,
    out: &Meta,
    run: impl FnOnce(&[f32], &[u8], (usize, usize, usize), &mut [f32]) -> Result<()>,
) -> Result<ArrayData> {
    let x = copy::f32_contiguous(x)?;
    let w = copy::ensure_contiguous(w)?;
    let k = *x.shape().last().unwrap_or(&0);
    let n = w.shape()[0];
    let m = x.size().checked_div(k).unwrap_or(0);
    let o = ArrayData::alloc(Dtype::F32, &out.shape)?;
    if o.size() > 0 {
        // SAFETY: a fresh contiguous output of `o.size()` f32.
        let dst = unsafe { std::slice::from_raw_parts_mut(o.mut_ptr::<f32>(), o.size()) };
        let xs = x.as_slice::<f32>().ok_or_else(|| internal("x"))?;
        run(xs, bytes_of(&w), (n, k, m), dst)?;
    }
    if out.dtype == Dtype::F32 {
        Ok(o)
    } else {
        copy::convert(&o, out.dtype)
    }
}

pub(super) fn quantized_matmul(
    format: GgmlType,
    x: &ArrayData,
    w: &ArrayData,
    out: &Meta,
) -> Result<ArrayData> {
    product(x, w, out, |xs, wb, (n, k, m), dst| {
        super::quant::matmul_t(format, wb, n, k, xs, m, dst)
    })
}

/// `ops::gguf_gated_matmul`: the whole product into a scratch buffer, gated into the output
/// (on the decode kernel by each thread as it finishes its rows).
pub(super) fn gated_quantized_matmul(
    format: GgmlType,
    activation: GateActivation,
    x: &ArrayData,
    w: &ArrayData,
    out: &Meta,
) -> Result<ArrayData> {
    product(x, w, out, |xs, wb, (n, k, m), dst| {
        let full = ArrayData::alloc(Dtype::F32, &[m, n])?;
        // SAFETY: a fresh contiguous buffer of m * n f32.
        let full_s = unsafe { std::slice::from_raw_parts_mut(full.mut_ptr::<f32>(), full.size()) };
        super::quant::gated_matmul_t(format, activation, wb, n, k, xs, m, full_s, dst)
    })
}

pub(super) fn dequantize(format: GgmlType, w: &ArrayData, out: &Meta) -> Result<ArrayData> {
    let w = copy::ensure_contiguous(w)?;
    let o = ArrayData::alloc(Dtype::F32, &out.shape)?;
    let k = *out.shape.last().unwrap_or(&0);
    let rows = o.size().checked_div(k).unwrap_or(0);
    if format.is_affine8() {
        // No file format to restore: each group of 8 rows decodes from its records.
        let src = bytes_of(&w);
        let dst = super::copy::SendPtr(o.mut_ptr::<f32>());
        super::pool::parallel_chunks(rows / 8, 2, &|g0, g1| {
            for g in g0..g1 {
                // SAFETY: rows 8g..8g + 8 of the output are this chunk's alone.
                let d = unsafe { std::slice::from_raw_parts_mut(dst.get().add(8 * g * k), 8 * k) };
                super::quant::interleave::dequantize_affine8(format, src, k, g, d);
            }
        });
        return Ok(o);
    }
    let base = format.file_format();
    // Rows as the kernels below decode them: the file format's (an interleaved layout is
    // restored to it first; a shared-header layout's own rows are shorter).
    let row_bytes = base.row_bytes(k)?;
    let src = bytes_of(&w);
    let dst = super::copy::SendPtr(o.mut_ptr::<f32>());
    // Interleaved layouts decode whole groups of rows (the op checked the row count): each chunk
    // restores its groups' natural rows first.
    let unit = format.interleaved_rows();
    try_parallel_chunks(rows / unit, 16_usize.div_ceil(unit), &|u0, u1| {
        let (r0, r1) = (u0 * unit, u1 * unit);
        let natural = (unit > 1).then(|| {
            let mut buf = vec![0u8; (r1 - r0) * row_bytes];
            super::quant::interleave::deinterleave(
                format,
                src,
                k / base.block_size(),
                u0,
                u1,
                &mut buf,
            );
            buf
        });
        let (src, first) = match &natural {
            Some(buf) => (&buf[..], r0),
            None => (src, 0),
        };
        for r in r0..r1 {
            // SAFETY: row r of the output is written by this chunk only.
            let d = unsafe { std::slice::from_raw_parts_mut(dst.get().add(r * k), k) };
            let s = &src[(r - first) * row_bytes..(r - first + 1) * row_bytes];
            super::quant::dequantize_row(base, s, d)?;
        }
        Ok(())
    })?;
    Ok(o)
}

/// `ops::gguf_take_rows` on an interleaved layout: rows `ids` of `w` (`u8` (n, row bytes) of
/// `format`) decoded to f32 `(ids..., k)`, each from its own fields only (gathered out of its
/// group's records into the file format's row, then decoded). The 8-bit affine layouts, which
/// have no file format, decode the row's group into a scratch and keep the row. An id outside
/// `-n..n` is an error.
pub(super) fn take_rows(
    format: GgmlType,
    w: &ArrayData,
    ids: &ArrayData,
    out: &Meta,
) -> Result<ArrayData> {
    let w = copy::ensure_contiguous(w)?;
    let idx = super::index::load_indices("gguf_take_rows", ids, w.shape()[0])?;
    let o = ArrayData::alloc(Dtype::F32, &out.shape)?;
    let k = *out.shape.last().unwrap_or(&0);
    if o.size() == 0 {
        return Ok(o);
    }
    let src = bytes_of(&w);
    let dst = super::copy::SendPtr(o.mut_ptr::<f32>());
    let base = format.file_format();
    let affine8 = format.is_affine8();
    let row_bytes = if affine8 { 0 } else { base.row_bytes(k)? };
    let nb = k / base.block_size();
    try_parallel_chunks(idx.len(), 4, &|i0, i1| {
        let mut natural = vec![0u8; row_bytes];
        let mut group = vec![0f32; if affine8 { 8 * k } else { 0 }];
        for (i, &row) in idx.iter().enumerate().take(i1).skip(i0) {
            let row = row as usize;
            // SAFETY: output row i is written by this chunk only.
            let d = unsafe { std::slice::from_raw_parts_mut(dst.get().add(i * k), k) };
            if affine8 {
                super::quant::interleave::dequantize_affine8(format, src, k, row / 8, &mut group);
                d.copy_from_slice(&group[row % 8 * k..][..k]);
            } else {
                super::quant::interleave::deinterleave_row(format, src, nb, row, &mut natural);
                super::quant::dequantize_row(base, &natural, d)?;
            }
        }
        Ok(())
    })?;
    Ok(o)
}

fn internal(what: &str) -> Error {
    Error::Invalid {
        op: "gguf_matmul",
        msg: format!("internal: {what} is not contiguous"),
    }
}
