//! bf16 GEMM for `m, n >= 16`.
//!
//! With AMX (`amx::enabled()`): the tile product (`amx/dense.rs`). Else with AVX-512 BF16: the
//! packed `vdpbf16ps` kernel in `packed.rs`. Without it (or off x86): the
//! operands are widened to f32 and the f32 path is used.

use super::{MatMut, MatRef};
use half::bf16;

/// Entry from `matmul_any`: `16 <= m <= n`, `k >= 1`, `batch >= 1`.
pub(super) unsafe fn matmul_big(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<bf16>,
    b: MatRef<bf16>,
    c: MatMut<bf16>,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if crate::backend::cpu::amx::enabled() {
        for bi in 0..batch {
            // SAFETY: AMX is usable (`enabled()`); operands valid per the caller.
            crate::backend::cpu::amx::dense::gemm_bf16(
                m,
                n,
                k,
                a.item(bi),
                b.item(bi),
                c.item(bi),
                accumulate,
            );
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::small::x86::has_avx512bf16() {
        // The kernel vectorises along C's columns; if C is column-major, compute C^T = B^T A^T.
        let (m, n, a, b, c) = if c.cs.unsigned_abs() > c.rs.unsigned_abs() {
            (n, m, b.t(), a.t(), c.t())
        } else {
            (m, n, a, b, c)
        };
        for bi in 0..batch {
            // SAFETY: AVX-512 BF16 is present (checked above); operands valid per the caller.
            super::packed::gemm::<super::packed::Bf16Kind>(
                m,
                n,
                k,
                a.item(bi),
                b.item(bi),
                c.item(bi),
                accumulate,
            );
        }
        return;
    }
    via_f32(batch, m, n, k, a, b, c, accumulate);
}

/// Portable path: widen to f32, multiply with the f32 entry point, round back.
unsafe fn via_f32(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<bf16>,
    b: MatRef<bf16>,
    c: MatMut<bf16>,
    accumulate: bool,
) {
    let mut af = vec![0f32; m * k];
    let mut bf = vec![0f32; k * n];
    let mut cf = vec![0f32; m * n];
    for bi in 0..batch {
        let (ab, bb, cb) = (a.item(bi), b.item(bi), c.item(bi));
        for i in 0..m {
            for kk in 0..k {
                // SAFETY: in range of A (caller contract).
                af[i * k + kk] = (*ab.at(i, kk)).to_f32();
            }
        }
        for kk in 0..k {
            for j in 0..n {
                // SAFETY: in range of B.
                bf[kk * n + j] = (*bb.at(kk, j)).to_f32();
            }
        }
        if accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: in range of C.
                    cf[i * n + j] = (*cb.at(i, j)).to_f32();
                }
            }
        }
        let ar = MatRef {
            ptr: af.as_ptr(),
            rs: k as isize,
            cs: 1,
            bs: 0,
        };
        let br = MatRef {
            ptr: bf.as_ptr(),
            rs: n as isize,
            cs: 1,
            bs: 0,
        };
        let cm = MatMut {
            ptr: cf.as_mut_ptr(),
            rs: n as isize,
            cs: 1,
            bs: 0,
        };
        // SAFETY: the buffers have exactly these shapes and do not overlap.
        super::matmul_f32(1, m, n, k, ar, br, cm, accumulate);
        for i in 0..m {
            for j in 0..n {
                // SAFETY: in range of C.
                *cb.at(i, j) = bf16::from_f32(cf[i * n + j]);
            }
        }
    }
}
