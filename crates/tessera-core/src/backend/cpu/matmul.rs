//! Batched matmul: maps (batch..., m, k) @ (batch..., k, n) onto the GEMM kernels, passing
//! strides through (transposed operands are not copied). Integer matmul runs in i64/f64 here:
//! rare in ML graphs, so it favours simplicity over speed.

use super::gemm::{self, MatMut, MatRef};
use crate::array::Meta;
use crate::dtype::{Dtype, Element};
use crate::error::Result;
use crate::layout::ArrayData;

pub(crate) fn matmul(a: &ArrayData, b: &ArrayData, out: &Meta) -> Result<ArrayData> {
    let o = ArrayData::alloc(out.dtype, &out.shape)?;
    let nd = out.shape.len();
    let (m, n) = (out.shape[nd - 2], out.shape[nd - 1]);
    let k = a.layout.shape[nd - 1];
    if o.size() == 0 {
        return Ok(o);
    }
    let batch_shape = &out.shape[..nd - 2];
    let batch: usize = batch_shape.iter().product();
    let (la, lb) = (&a.layout, &b.layout);
    // Merge batch dims into one when every operand allows it; else loop over them.
    let walk =
        super::strided::Walk::<2>::new(batch_shape, [&la.strides[..nd - 2], &lb.strides[..nd - 2]]);
    let inner = if batch_shape.is_empty() {
        1
    } else {
        walk.inner_len()
    };
    let [abs, bbs] = if batch_shape.is_empty() {
        [0, 0]
    } else {
        walk.inner_strides()
    };
    let c_bs = (m * n) as isize;
    let rows = if batch_shape.is_empty() {
        1
    } else {
        walk.rows()
    };
    let _ = batch;
    let run = |row: usize, offs: [isize; 2]| -> Result<()> {
        let c_off = (row * inner) as isize * c_bs;
        macro_rules! call {
            ($f:ident, $t:ty) => {{
                let ar = MatRef {
                    ptr: a.ptr::<$t>().wrapping_offset(offs[0]),
                    rs: la.strides[nd - 2],
                    cs: la.strides[nd - 1],
                    bs: abs,
                };
                let br = MatRef {
                    ptr: b.ptr::<$t>().wrapping_offset(offs[1]),
                    rs: lb.strides[nd - 2],
                    cs: lb.strides[nd - 1],
                    bs: bbs,
                };
                let cr = MatMut {
                    ptr: o.mut_ptr::<$t>().wrapping_offset(c_off),
                    rs: n as isize,
                    cs: 1,
                    bs: c_bs,
                };
                // SAFETY: operands are described by their layouts; C is a fresh buffer.
                unsafe { gemm::$f(inner, m, n, k, ar, br, cr, false) }
            }};
        }
        match out.dtype {
            Dtype::F32 => call!(matmul_f32, f32),
            Dtype::F64 => call!(matmul_f64, f64),
            Dtype::F16 => call!(matmul_f16, half::f16),
            Dtype::BF16 => call!(matmul_bf16, half::bf16),
            dt => {
                crate::dispatch_dtype!(dt, T => int_matmul::<T>(a, b, &o, offs, row * inner, inner, abs, bbs, m, n, k))
            }
        }
        Ok(())
    };
    if batch_shape.is_empty() {
        run(0, [0, 0])?;
    } else {
        let mut res = Ok(());
        walk.for_rows(0, rows, |row, offs| {
            if res.is_ok() {
                res = run(row, offs);
            }
        });
        res?;
    }
    Ok(o)
}

#[allow(clippy::too_many_arguments)]
fn int_matmul<T: Element>(
    a: &ArrayData,
    b: &ArrayData,
    o: &ArrayData,
    offs: [isize; 2],
    first: usize,
    count: usize,
    abs: isize,
    bbs: isize,
    m: usize,
    n: usize,
    k: usize,
) {
    let nd = a.layout.ndim();
    let (ars, acs) = (a.layout.strides[nd - 2], a.layout.strides[nd - 1]);
    let (brs, bcs) = (b.layout.strides[nd - 2], b.layout.strides[nd - 1]);
    let (ap, bp, cp) = (a.ptr::<T>(), b.ptr::<T>(), o.mut_ptr::<T>());
    for bi in 0..count as isize {
        for i in 0..m as isize {
            for j in 0..n as isize {
                let mut s = 0i64;
                for p in 0..k as isize {
                    // SAFETY: indices inside the operands' layouts.
                    unsafe {
                        let x = (*ap.offset(offs[0] + bi * abs + i * ars + p * acs)).to_i64();
                        let y = (*bp.offset(offs[1] + bi * bbs + p * brs + j * bcs)).to_i64();
                        s = s.wrapping_add(x.wrapping_mul(y));
                    }
                }
                // SAFETY: inside the output.
                unsafe {
                    *cp.add((first + bi as usize) * m * n + (i * n as isize + j) as usize) =
                        T::from_i64(s)
                };
            }
        }
    }
}
