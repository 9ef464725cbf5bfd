//! Kernels of the fused transformer ops (`ops::rms_norm`, `ops::rope`): f32 arithmetic, one pass
//! over each row, rows split across the pool. Other float dtypes are widened to f32 on the way
//! in and rounded once on the way out.

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

fn finish(o: ArrayData, out: &Meta) -> Result<ArrayData> {
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

#[inline(always)]
fn rms_row(x: &[f32], w: Option<&[f32]>, y: &mut [f32], eps: f32) {
    let mut ss = 0f32;
    for &v in x {
        ss += v * v;
    }
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
    let mut s = 0f32;
    for &v in x {
        s += v;
    }
    let mean = s / n;
    let mut ss = 0f32;
    for &v in x {
        let c = v - mean;
        ss += c * c;
    }
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

/// f32 data whose last axis is contiguous (views such as a KV-cache slice stay in place).
fn f32_rows(x: &ArrayData) -> Result<ArrayData> {
    let last_unit = x.layout.strides.last().is_none_or(|&s| s == 1);
    if x.dtype == Dtype::F32 && last_unit && x.layout.strides.iter().all(|&s| s >= 0) {
        Ok(x.clone())
    } else {
        copy::f32_contiguous(x)
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Sixteen independent partial sums over exact chunks (no bounds checks), so the loop
    // vectorises without reassociation flags. (Indexing `a[c * 8 + j]` left bounds checks that
    // kept it scalar.)
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..16 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

simd::multiversion! {
    /// One query row of attention: `out = softmax(scale q·kⱼ + mask_j) · V` over `l` keys of
    /// `d` values (key `j` at `k + j ks`, value at `v + j vs`; `mask` null or `l` values),
    /// with `p` (`l`) and `acc` (`d`) as scratch. A function of its own so the loops are
    /// compiled for the CPU's widest vectors (a closure inside `simd::dispatch` was not inlined
    /// and ran at the baseline width).
    #[allow(clippy::too_many_arguments)]
    unsafe fn attend_row[](q: *const f32, k: *const f32, ks: usize, v: *const f32, vs: usize, mask: *const f32, scale: f32, l: usize, d: usize, p: *mut f32, acc: *mut f32, out: *mut f32) {
        let qr = std::slice::from_raw_parts(q, d);
        let p = std::slice::from_raw_parts_mut(p, l);
        let acc = std::slice::from_raw_parts_mut(acc, d);
        let or = std::slice::from_raw_parts_mut(out, d);
        let mut max = f32::NEG_INFINITY;
        for (j, pj) in p.iter_mut().enumerate() {
            let kr = std::slice::from_raw_parts(k.add(j * ks), d);
            let mut sc = dot(qr, kr) * scale;
            if !mask.is_null() {
                sc += *mask.add(j);
            }
            *pj = sc;
            max = max.max(sc);
        }
        if max == f32::NEG_INFINITY {
            // Every key hidden: NaN, as softmax over all -inf gives.
            or.iter_mut().for_each(|x| *x = f32::NAN);
            return;
        }
        // Two loops: with the running sum inside, the exp loop stayed scalar.
        for pj in p.iter_mut() {
            *pj = simd::math::exp_f32(*pj - max);
        }
        let sum = super::reduce::f32_row(crate::primitive::ReduceOp::Sum, p.as_ptr(), l);
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (j, &w) in p.iter().enumerate() {
            if w == 0.0 {
                continue;
            }
            let vr = std::slice::from_raw_parts(v.add(j * vs), d);
            for (a, &x) in acc.iter_mut().zip(vr) {
                *a += w * x;
            }
        }
        let inv = 1.0 / sum;
        for (x, &a) in or.iter_mut().zip(acc.iter()) {
            *x = a * inv;
        }
    }
}

pub(super) fn sdpa(scale: f64, inputs: &[ArrayData], out: &Meta) -> Result<ArrayData> {
    let q = copy::f32_contiguous(&inputs[0])?;
    let (k, v) = (f32_rows(&inputs[1])?, f32_rows(&inputs[2])?);
    let mask = inputs.get(3).map(copy::f32_contiguous).transpose()?;
    let o = ArrayData::alloc(Dtype::F32, &out.shape)?;
    let (b, h, t, d) = (out.shape[0], out.shape[1], out.shape[2], out.shape[3]);
    let (hk, l) = (k.shape()[1], k.shape()[2]);
    if o.size() == 0 {
        return finish(o, out);
    }
    let rep = h / hk;
    let ks: Vec<usize> = k.layout.strides.iter().map(|&s| s as usize).collect();
    let vs: Vec<usize> = v.layout.strides.iter().map(|&s| s as usize).collect();
    let (qp, op) = (SendConstPtr(q.ptr::<f32>()), SendPtr(o.mut_ptr::<f32>()));
    let (kp, vp) = (SendConstPtr(k.ptr::<f32>()), SendConstPtr(v.ptr::<f32>()));
    let mp = mask.as_ref().map(|m| SendConstPtr(m.ptr::<f32>()));
    let rows = b * h * t;
    let scale = scale as f32;
    let min_rows = (1usize << 15).div_ceil((l * d).max(1)).max(1);
    pool::parallel_chunks(rows, min_rows, &|s, e| {
        let mut p = vec![0f32; l];
        let mut acc = vec![0f32; d];
        for row in s..e {
            let (bi, hi, ti) = (row / (h * t), (row / t) % h, row % t);
            let g = hi / rep;
            // SAFETY: indices are within the validated shapes; k/v rows are contiguous in d;
            // the mask (when given) is t x l; this chunk alone writes output row `row`.
            unsafe {
                attend_row(
                    qp.get().add(row * d),
                    kp.get().add(bi * ks[0] + g * ks[1]),
                    ks[2],
                    vp.get().add(bi * vs[0] + g * vs[1]),
                    vs[2],
                    mp.map_or(std::ptr::null(), |m| m.get().add(ti * l)),
                    scale,
                    l,
                    d,
                    p.as_mut_ptr(),
                    acc.as_mut_ptr(),
                    op.get().add(row * d),
                );
            }
        }
    });
    finish(o, out)
}
