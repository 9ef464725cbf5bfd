//! Fused softmax over the last axis: per row, a max pass, an exp-and-sum pass writing the output,
//! and a scaling pass. A row (up to tens of KB) stays in cache between passes, so memory sees one
//! read and one write, against five full passes for the composite.
//! Half precision rows are computed in f32 and rounded once.

// Lane loops index fixed-size accumulator arrays: the clearest form LLVM turns into registers.
#![allow(clippy::needless_range_loop)]

use super::copy::{HALF_CHUNK, SendConstPtr, SendPtr, ensure_contiguous, f32_to_half, half_to_f32};
use super::pool;
use super::simd::{self, math as m};
use crate::array::Meta;
use crate::dtype::{Dtype, Element};
use crate::error::Result;
use crate::layout::ArrayData;

simd::multiversion! {
    /// Softmax of one contiguous f32 row `x` into `y` (which may alias `x`); prefetches the
    /// `n` values after the row.
    unsafe fn row_f32[](x: *const f32, y: *mut f32, n: usize) {
        const L: usize = 16;
        let mut mx = [f32::NEG_INFINITY; L];
        let mut i = 0;
        while i + L <= n {
            for j in 0..L {
                let v = *x.add(i + j);
                mx[j] = if v > mx[j] { v } else { mx[j] };
            }
            i += L;
        }
        let mut max = f32::NEG_INFINITY;
        for v in mx {
            max = if v > max { v } else { max };
        }
        while i < n {
            let v = *x.add(i);
            max = if v > max { v } else { max };
            i += 1;
        }
        // NaNs are skipped by the max but reach the sum through exp(NaN - max), so a row with a
        // NaN is all NaN, as with NumPy. A row of only -inf gives NaN too, as NumPy's.
        let mut acc = [0f32; L];
        let mut i = 0;
        while i + L <= n {
            // The next row (the caller's rows are consecutive), a line per 16 values: its
            // reads overlap this pass's arithmetic instead of stalling the next max pass.
            simd::prefetch(x.wrapping_add(n + i).cast());
            for j in 0..L {
                let e = m::exp_f32(*x.add(i + j) - max);
                *y.add(i + j) = e;
                acc[j] += e;
            }
            i += L;
        }
        let mut sum = 0f32;
        for v in acc {
            sum += v;
        }
        while i < n {
            let e = m::exp_f32(*x.add(i) - max);
            *y.add(i) = e;
            sum += e;
            i += 1;
        }
        let inv = 1.0 / sum;
        for i in 0..n {
            *y.add(i) *= inv;
        }
    }
}

fn row_f64(x: &[f64], y: &mut [f64]) {
    let max = x.iter().fold(
        f64::NEG_INFINITY,
        |m, &v| if v > m || v.is_nan() { v } else { m },
    );
    let mut sum = 0.0;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = (v - max).exp();
        sum += *o;
    }
    y.iter_mut().for_each(|o| *o /= sum);
}

pub(crate) fn softmax(x: &ArrayData, out: &Meta) -> Result<ArrayData> {
    let x = ensure_contiguous(x)?;
    let o = if x.is_donatable() {
        x.clone()
    } else {
        ArrayData::alloc(out.dtype, &out.shape)?
    };
    let n = *out.shape.last().unwrap_or(&1);
    if o.size() == 0 || n == 0 {
        return Ok(o);
    }
    let rows = o.size() / n;
    let min_rows = (1usize << 15).div_ceil(n).max(1);
    match x.dtype {
        Dtype::F32 => {
            let (src, dst) = (SendConstPtr(x.ptr::<f32>()), SendPtr(o.mut_ptr::<f32>()));
            pool::parallel_chunks(rows, min_rows, &|s, e| {
                for r in s..e {
                    // SAFETY: row r spans [r*n, (r+1)*n) in both contiguous arrays.
                    unsafe { row_f32(src.get().add(r * n), dst.get().add(r * n), n) };
                }
            });
        }
        Dtype::F64 => {
            let (src, dst) = (SendConstPtr(x.ptr::<f64>()), SendPtr(o.mut_ptr::<f64>()));
            pool::parallel_chunks(rows, min_rows, &|s, e| {
                for r in s..e {
                    // SAFETY: as above; x and o are distinct or identical (donated), never overlapping otherwise.
                    unsafe {
                        let xs = std::slice::from_raw_parts(src.get().add(r * n), n).to_vec();
                        row_f64(&xs, std::slice::from_raw_parts_mut(dst.get().add(r * n), n));
                    }
                }
            });
        }
        dt => crate::dispatch_dtype!(dt, T => half_rows::<T>(&x, &o, rows, n, min_rows)),
    }
    Ok(o)
}

/// f16/bf16: each row widened to f32, computed, rounded once.
fn half_rows<T: Element>(x: &ArrayData, o: &ArrayData, rows: usize, n: usize, min_rows: usize) {
    let (src, dst) = (SendConstPtr(x.ptr::<T>()), SendPtr(o.mut_ptr::<T>()));
    pool::parallel_chunks(rows, min_rows, &|s, e| {
        let mut buf = vec![0f32; n];
        for r in s..e {
            // SAFETY: row r is inside both arrays; buf holds n floats.
            unsafe {
                for c in (0..n).step_by(HALF_CHUNK) {
                    let k = HALF_CHUNK.min(n - c);
                    half_to_f32::<T>(src.get().add(r * n + c), 1, &mut buf[c..c + k]);
                }
                row_f32(buf.as_ptr(), buf.as_mut_ptr(), n);
                for c in (0..n).step_by(HALF_CHUNK) {
                    let k = HALF_CHUNK.min(n - c);
                    f32_to_half::<T>(&buf[c..c + k], dst.get().add(r * n + c));
                }
            }
        }
    });
}
