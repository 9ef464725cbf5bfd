//! Whole-array quantization and dequantization (the `quantize` / `dequantize` ops), parallel
//! over rows.

use super::Isa;
use super::format::{Format, Param, code, group_params, pack, params_to_f32};
use super::kernels::decode_row;
use crate::backend::cpu::copy::SendPtr;
use crate::backend::cpu::pool::parallel_chunks;
use crate::primitive::AffinePart;

/// Rows of `d` values per parallel chunk: at least ~16K values.
fn min_rows(d: usize) -> usize {
    (16384 / d.max(1)).max(1)
}

/// Computes one part of MLX's quantization of `w` (rows of `d` values). `out` points to the
/// part's row-major storage: `rows * fmt.row_bytes(d)` bytes for [`AffinePart::Packed`] (the
/// words' little-endian bytes), else `rows * d / group_size` values of `T`.
///
/// # Safety
/// `out` is valid for writes of that size and not aliased.
pub(super) unsafe fn quantize<T: Param>(
    fmt: Format,
    w: &[T],
    d: usize,
    part: AffinePart,
    out: *mut u8,
) {
    let gs = fmt.group_size;
    let ng = d / gs;
    let rows = w.len().checked_div(d).unwrap_or(0);
    let row_bytes = fmt.row_bytes(d);
    let dst = SendPtr(out);
    let n_bins = fmt.n_bins();
    parallel_chunks(rows, min_rows(d), &|r0, r1| {
        let mut vals = [0f32; 128];
        let mut codes = vec![0u8; d];
        for r in r0..r1 {
            for g in 0..ng {
                let src = &w[r * d + g * gs..][..gs];
                for (v, s) in vals.iter_mut().zip(src) {
                    *v = s.to_f32();
                }
                let vals = &vals[..gs];
                let (scale, bias) = group_params(fmt, vals.iter().copied());
                // SAFETY (writes below): each row's part of the output belongs to this task.
                match part {
                    AffinePart::Packed => {
                        for (c, &v) in codes[g * gs..][..gs].iter_mut().zip(vals) {
                            *c = code(v, scale, bias, n_bins);
                        }
                    }
                    AffinePart::Scales => {
                        *(dst.get() as *mut T).add(r * ng + g) = T::from_f32(scale)
                    }
                    AffinePart::Biases => {
                        *(dst.get() as *mut T).add(r * ng + g) = T::from_f32(bias)
                    }
                }
            }
            if part == AffinePart::Packed {
                let row = std::slice::from_raw_parts_mut(dst.get().add(r * row_bytes), row_bytes);
                pack(fmt, &codes, row);
            }
        }
    });
}

/// `scale * q + bias` into `out` (`rows * d` values of `T`), rounded as MLX rounds: for half
/// types `scale * q` is rounded to `T`, then the bias is added and the sum rounded.
///
/// # Safety
/// `out` is valid for writes of `scales.len() * group_size` values and not aliased.
pub(super) unsafe fn dequantize<T: Param>(
    isa: Isa,
    fmt: Format,
    w: &[u8],
    scales: &[T],
    biases: &[T],
    d: usize,
    out: *mut T,
) {
    let gs = fmt.group_size;
    let ng = d / gs;
    let rows = scales.len().checked_div(ng).unwrap_or(0);
    let row_bytes = fmt.row_bytes(d);
    let dst = SendPtr(out);
    let exact_f32 = T::DTYPE == crate::Dtype::F32;
    parallel_chunks(rows, min_rows(d), &|r0, r1| {
        let mut sbuf = vec![0f32; ng];
        let mut bbuf = vec![0f32; ng];
        let ones = vec![1f32; ng];
        let zeros = vec![0f32; ng];
        let mut q = vec![0f32; if exact_f32 { 0 } else { d }];
        for r in r0..r1 {
            params_to_f32(&scales[r * ng..][..ng], &mut sbuf);
            params_to_f32(&biases[r * ng..][..ng], &mut bbuf);
            let row = &w[r * row_bytes..][..row_bytes];
            if exact_f32 {
                // SAFETY: row r of the output belongs to this task; T is f32.
                let o = std::slice::from_raw_parts_mut(dst.get().add(r * d) as *mut f32, d);
                decode_row(isa, fmt, row, &sbuf, &bbuf, o);
            } else {
                decode_row(isa, fmt, row, &ones, &zeros, &mut q);
                let o = dst.get().add(r * d);
                for (j, &qj) in q.iter().enumerate() {
                    let g = j / gs;
                    let t = T::round(sbuf[g] * qj);
                    *o.add(j) = T::from_f32(t + bbuf[g]);
                }
            }
        }
    });
}
