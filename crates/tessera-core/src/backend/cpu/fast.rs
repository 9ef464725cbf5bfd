//! Kernels of the fused transformer ops (`ops::rms_norm`, `ops::layer_norm`, `ops::rope`; the
//! attention kernel is in `attention.rs`): f32 arithmetic, one pass over each row, rows split
//! across the pool. Other float dtypes are widened to f32 on the way in and rounded once on the
//! way out.

use super::copy::{self, SendConstPtr, SendPtr};
use super::{pool, simd};
use crate::array::Meta;
use crate::dtype::Dtype;
use crate::error::Result;
use crate::layout::ArrayData;

/// The f32 output buffer: x itself when it may be written in place.
fn f32_output(x: &ArrayData, out: &Meta) -> Result<ArrayData> {
    if x.is_donatable() && x.dtype == Dtype::F32 {
        Ok(x.clone())
    } else {
        ArrayData::alloc(Dtype::F32, &out.shape)
    }
}

pub(super) fn finish(o: ArrayData, out: &Meta) -> Result<ArrayData> {
    if out.dtype == Dtype::F32 {
        Ok(o)
    } else {
        copy::convert(&o, out.dtype)
    }
}

/// Runs `row(x, y)` over the rows of `d` values of `x` and `o` (contiguous f32 of one size),
/// rows split across the pool, under the best instruction set. When `o` is `x` itself (donated),
/// each row is copied before `row` writes over it, so the two slices never alias. Generic (not
/// `dyn`), so `row` is compiled inside the instruction-set dispatch and vectorised at its width.
#[inline(always)]
fn each_row<F: Fn(&[f32], &mut [f32]) + Sync>(x: &ArrayData, o: &ArrayData, d: usize, row: &F) {
    let rows = o.size() / d;
    let (src, dst) = (SendConstPtr(x.ptr::<f32>()), SendPtr(o.mut_ptr::<f32>()));
    pool::parallel_chunks(rows, (1usize << 14).div_ceil(d).max(1), &|s, e| {
        let mut tmp = Vec::new();
        simd::dispatch(|| {
            for r in s..e {
                // SAFETY: row r spans [r*d, (r+1)*d) of both contiguous arrays, which hold
                // rows * d values; this task alone writes it.
                unsafe {
                    let xs = std::slice::from_raw_parts(src.get().add(r * d), d);
                    let ys = std::slice::from_raw_parts_mut(dst.get().add(r * d), d);
                    if std::ptr::eq(xs.as_ptr(), ys.as_ptr()) {
                        tmp.clear();
                        tmp.extend_from_slice(xs);
                        row(&tmp, ys);
                    } else {
                        row(xs, ys);
                    }
                }
            }
        })
    });
}

/// `Σ f(v)` over a row in sixteen interleaved partial sums, so the loop vectorises: one running
/// f32 sum must be added in order, and that loop ran scalar (most of an RMSNorm of a decode
/// row's 896 values).
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..16 {
            acc[j] += f(c[j]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &v in rest {
        s += f(v);
    }
    s
}

#[inline(always)]
fn rms_row(x: &[f32], w: Option<&[f32]>, y: &mut [f32], eps: f32) {
    let ss = lane_sum(x, |v| v * v);
    let r = 1.0 / (ss / x.len() as f32 + eps).sqrt();
    match w {
        Some(w) => {
            for ((o, &v), &g) in y.iter_mut().zip(x).zip(w) {
                *o = v * r * g;
            }
        }
        None => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = v * r;
            }
        }
    }
}

pub(super) fn rms_norm(
    eps: f64,
    x: &ArrayData,
    w: Option<&ArrayData>,
    out: &Meta,
) -> Result<ArrayData> {
    let x = copy::f32_contiguous(x)?;
    let w = w.map(copy::f32_contiguous).transpose()?;
    let o = f32_output(&x, out)?;
    let d = *out.shape.last().unwrap_or(&1);
    if o.size() == 0 || d == 0 {
        return finish(o, out);
    }
    let ws = w.as_ref().map(|w| SendConstPtr(w.ptr::<f32>()));
    let eps = eps as f32;
    // SAFETY: w holds d values.
    each_row(&x, &o, d, &|xs, ys| {
        let ws = ws.map(|p| unsafe { std::slice::from_raw_parts(p.get(), d) });
        rms_row(xs, ws, ys, eps)
    });
    finish(o, out)
}

/// One row of layer norm: mean and variance in two passes over the (cached) row, then one
/// pass writing `(x - mean) r w + b`.
#[inline(always)]
fn layer_norm_row(x: &[f32], w: Option<&[f32]>, b: Option<&[f32]>, y: &mut [f32], eps: f32) {
    let n = x.len() as f32;
    let mean = lane_sum(x, |v| v) / n;
    let ss = lane_sum(x, |v| (v - mean) * (v - mean));
    let r = 1.0 / (ss / n + eps).sqrt();
    match (w, b) {
        (Some(w), Some(b)) => {
            for (((o, &v), &g), &c) in y.iter_mut().zip(x).zip(w).zip(b) {
                *o = (v - mean) * r * g + c;
            }
        }
        (Some(w), None) => {
            for ((o, &v), &g) in y.iter_mut().zip(x).zip(w) {
                *o = (v - mean) * r * g;
            }
        }
        (None, Some(b)) => {
            for ((o, &v), &c) in y.iter_mut().zip(x).zip(b) {
                *o = (v - mean) * r + c;
            }
        }
        (None, None) => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = (v - mean) * r;
            }
        }
    }
}

pub(super) fn layer_norm(
    eps: f64,
    x: &ArrayData,
    w: Option<&ArrayData>,
    b: Option<&ArrayData>,
    out: &Meta,
) -> Result<ArrayData> {
    let x = copy::f32_contiguous(x)?;
    let w = w.map(copy::f32_contiguous).transpose()?;
    let b = b.map(copy::f32_contiguous).transpose()?;
    let o = f32_output(&x, out)?;
    let d = *out.shape.last().unwrap_or(&1);
    if o.size() == 0 || d == 0 {
        return finish(o, out);
    }
    let ws = w.as_ref().map(|w| SendConstPtr(w.ptr::<f32>()));
    let bs = b.as_ref().map(|b| SendConstPtr(b.ptr::<f32>()));
    let eps = eps as f32;
    // SAFETY: w and b hold d values.
    each_row(&x, &o, d, &|xs, ys| {
        let ws = ws.map(|p| unsafe { std::slice::from_raw_parts(p.get(), d) });
        let bs = bs.map(|p| unsafe { std::slice::from_raw_parts(p.get(), d) });
        layer_norm_row(xs, ws, bs, ys, eps)
    });
    finish(o, out)
}

pub(super) fn rope(
    interleaved: bool,
    x: &ArrayData,
    cos: &ArrayData,
    sin: &ArrayData,
    out: &Meta,
) -> Result<ArrayData> {
    let x = copy::f32_contiguous(x)?;
    let (cos, sin) = (copy::f32_contiguous(cos)?, copy::f32_contiguous(sin)?);
    let o = f32_output(&x, out)?;
    let n = out.shape.len();
    let (t, h, d) = (out.shape[n - 3], out.shape[n - 2], out.shape[n - 1]);
    let r = cos.shape()[1];
    if o.size() == 0 {
        return finish(o, out);
    }
    // Rows of d values: row index = ((outer * t) + pos) * h + head.
    let rows = o.size() / d;
    let (src, dst) = (SendConstPtr(x.ptr::<f32>()), SendPtr(o.mut_ptr::<f32>()));
    let (cp, sp) = (
        SendConstPtr(cos.ptr::<f32>()),
        SendConstPtr(sin.ptr::<f32>()),
    );
    pool::parallel_chunks(rows, (1usize << 13).div_ceil(d).max(1), &|s, e| {
        simd::dispatch(|| {
            let mut tmp = vec![0f32; d];
            for row in s..e {
                let pos = (row / h) % t;
                // SAFETY: row spans [row*d, (row+1)*d) of both arrays; the tables hold t*r values.
                unsafe {
                    let xs = std::slice::from_raw_parts(src.get().add(row * d), d);
                    tmp.copy_from_slice(xs);
                    let ys = std::slice::from_raw_parts_mut(dst.get().add(row * d), d);
                    let c = std::slice::from_raw_parts(cp.get().add(pos * r), r);
                    let sn = std::slice::from_raw_parts(sp.get().add(pos * r), r);
                    if interleaved {
                        for i in 0..r {
                            let (a, b) = (tmp[2 * i], tmp[2 * i + 1]);
                            ys[2 * i] = a * c[i] - b * sn[i];
                            ys[2 * i + 1] = b * c[i] + a * sn[i];
                        }
                    } else {
                        let (lo, hi) = tmp.split_at(r);
                        let (ylo, yhi) = ys.split_at_mut(r);
                        for i in 0..r {
                            ylo[i] = lo[i] * c[i] - hi[i] * sn[i];
                            yhi[i] = hi[i] * c[i] + lo[i] * sn[i];
                        }
                    }
                    ys[2 * r..].copy_from_slice(&tmp[2 * r..]);
                }
            }
        })
    });
    finish(o, out)
}
