//! Products with many activation rows (prefill), and `x · W` (`transpose = false`): a tile of
//! the weight matrix is decoded to f32 in a small buffer, then multiplied by the backend's GEMM
//! (`gemm::matmul_f32`, packed AVX-512 or the `gemm` crate), accumulating over tiles along
//! `k`. Decoding costs one pass over the tile; the GEMM does `2 m` flops per decoded weight,
//! so for `m` beyond a few rows the product runs at GEMM speed.
//!
//! Work split: output columns in blocks, contiguous ranges of blocks per pool thread; each
//! thread decodes its own tiles and calls the GEMM inline (nested pool calls run serially).

use super::Isa;
use super::format::{Format, params_to_f32};
use super::kernels::decode_row;
use crate::backend::cpu::copy::SendPtr;
use crate::backend::cpu::gemm::{MatMut, MatRef, matmul_f32};
use crate::backend::cpu::pool::parallel_chunks;
use crate::dtype::Element;

/// `x · Wᵀ` tiles: weight rows (output columns) per tile, and values along `k` per tile
/// (a multiple of every group size). 64 × 512 f32 is 128 KB.
const NP: usize = 256;
const KC_T: usize = 256;
/// `x · W` tiles: output columns per tile (a multiple of every group size) and rows of `W`.
const CW: usize = 256;
const KC_N: usize = 256;

/// `out[m × n] = x[m × k] · Wᵀ`, `W` stored as `n` rows of `k` values.
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_t<S: Element>(
    isa: Isa,
    fmt: Format,
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    w: &[u8],
    scales: &[S],
    biases: &[S],
    out: &mut [f32],
) {
    let gs = fmt.group_size;
    let ng = k / gs;
    let row_bytes = fmt.row_bytes(k);
    let dst = SendPtr(out.as_mut_ptr());
    parallel_chunks(n.div_ceil(NP), 1, &|b0, b1| {
        let mut tile = vec![0f32; NP * KC_T];
        let mut sbuf = [0f32; KC_T / 32];
        let mut bbuf = [0f32; KC_T / 32];
        for blk in b0..b1 {
            let r0 = blk * NP;
            let np = (n - r0).min(NP);
            for kk0 in (0..k).step_by(KC_T) {
                let kc = (k - kk0).min(KC_T);
                let (g0, gn) = (kk0 / gs, kc / gs);
                for j in 0..np {
                    let r = r0 + j;
                    params_to_f32(&scales[r * ng + g0..][..gn], &mut sbuf[..gn]);
                    params_to_f32(&biases[r * ng + g0..][..gn], &mut bbuf[..gn]);
                    let row = &w[r * row_bytes + fmt.row_bytes(kk0)..][..fmt.row_bytes(kc)];
                    decode_row(
                        isa,
                        fmt,
                        row,
                        &sbuf[..gn],
                        &bbuf[..gn],
                        &mut tile[j * kc..(j + 1) * kc],
                    );
                }
                // SAFETY: x is m × k, the tile np × kc (read transposed), and this task alone
                // writes output columns r0..r0 + np of the m × n output.
                unsafe {
                    matmul_f32(
                        1,
                        m,
                        np,
                        kc,
                        MatRef {
                            ptr: x.as_ptr().add(kk0),
                            rs: k as isize,
                            cs: 1,
                            bs: 0,
                        },
                        MatRef {
                            ptr: tile.as_ptr(),
                            rs: 1,
                            cs: kc as isize,
                            bs: 0,
                        },
                        MatMut {
                            ptr: dst.get().add(r0),
                            rs: n as isize,
                            cs: 1,
                            bs: 0,
                        },
                        kk0 > 0,
                    )
                };
            }
        }
    });
}

/// `out[m × n] = x[m × k] · W`, `W` stored as `k` rows of `n` values (groups along `n`).
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_n<S: Element>(
    isa: Isa,
    fmt: Format,
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    w: &[u8],
    scales: &[S],
    biases: &[S],
    out: &mut [f32],
) {
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let gs = fmt.group_size;
    let ng = n / gs;
    let row_bytes = fmt.row_bytes(n);
    let dst = SendPtr(out.as_mut_ptr());
    parallel_chunks(n.div_ceil(CW), 1, &|b0, b1| {
        let mut tile = vec![0f32; KC_N * CW];
        let mut sbuf = [0f32; CW / 32];
        let mut bbuf = [0f32; CW / 32];
        for blk in b0..b1 {
            let c0 = blk * CW;
            let cw = (n - c0).min(CW);
            let (g0, gn) = (c0 / gs, cw / gs);
            for kk0 in (0..k).step_by(KC_N) {
                let kc = (k - kk0).min(KC_N);
                for t in 0..kc {
                    let r = kk0 + t;
                    params_to_f32(&scales[r * ng + g0..][..gn], &mut sbuf[..gn]);
                    params_to_f32(&biases[r * ng + g0..][..gn], &mut bbuf[..gn]);
                    let row = &w[r * row_bytes + fmt.row_bytes(c0)..][..fmt.row_bytes(cw)];
                    decode_row(
                        isa,
                        fmt,
                        row,
                        &sbuf[..gn],
                        &bbuf[..gn],
                        &mut tile[t * cw..(t + 1) * cw],
                    );
                }
                // SAFETY: x is m × k, the tile kc × cw, and this task alone writes output
                // columns c0..c0 + cw.
                unsafe {
                    matmul_f32(
                        1,
                        m,
                        cw,
                        kc,
                        MatRef {
                            ptr: x.as_ptr().add(kk0),
                            rs: k as isize,
                            cs: 1,
                            bs: 0,
                        },
                        MatRef {
                            ptr: tile.as_ptr(),
                            rs: cw as isize,
                            cs: 1,
                            bs: 0,
                        },
                        MatMut {
                            ptr: dst.get().add(c0),
                            rs: n as isize,
                            cs: 1,
                            bs: 0,
                        },
                        kk0 > 0,
                    )
                };
            }
        }
    });
}
