//! `out = x · Wᵀ` on the tiles, for weight rows that some format decodes to f32.
//!
//! Roles: the weight rows are the tiles' first operand (P: rows with k contiguous, which is how
//! every weight format stores them, so a decoded row is used as is); the activations are the
//! second operand (Q), pair-packed once per call (`pack::pack_pairs`: the activations are the
//! smaller matrix in a prefill, so the transposition this layout needs is cheap there). A C
//! block therefore holds 32 weight rows by 32 activation rows and is written to the output
//! transposed.
//!
//! Work split: each pool thread takes contiguous blocks of 32 weight rows, decodes a block
//! into a bf16 buffer (32 rows x k: 36 KB at k = 576, 304 KB at k = 4864, in L2), and runs
//! every block of 32 activation rows over it; the weights are read and decoded once per call.

use super::pack::pack_pairs;
use super::tiles::{BLOCK, KSTEP, Tiles};
use crate::backend::cpu::pool::parallel_chunks;

/// Decodes weight rows `r0..r1` (`r1 - r0 <= 32`, `r0` a multiple of 32) as bf16 bits into
/// `buf[(r - r0) * ld..(r - r0) * ld + k]` (`ld` is k rounded up to 32; the rest of each row is
/// zero and must stay so).
pub(crate) type DecodeRows<'a> = &'a (dyn Fn(usize, usize, &mut [u16], usize) + Sync);

/// `out[i * n + r] = Σ_j x[i * k + j] W[r][j]` for `i < m`, `r < n`, the rows of W given by
/// `decode`.
///
/// # Safety
/// [`super::supported`] returned true; `x` holds `m * k` values and `out` `m * n`.
pub(crate) unsafe fn matmul_t(
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    out: &mut [f32],
    decode: DecodeRows,
) {
    debug_assert!(x.len() >= m * k && out.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    let kp = k.div_ceil(KSTEP) * KSTEP;
    let ksteps = kp / KSTEP;
    let q = pack_pairs(x, m, k, kp);
    let q_group = kp * 32;
    let m_blocks = m.div_ceil(BLOCK);
    let outp = out.as_mut_ptr() as usize;
    parallel_chunks(n.div_ceil(BLOCK), 1, &|b0, b1| {
        // SAFETY: `supported()` (the caller's contract).
        let tiles = unsafe { Tiles::configure() };
        // A private copy of the packed activations: read from lines another core wrote (the
        // packing runs on every thread), the tile loads ran at half speed on the development
        // VM (4.0 against 7.1 ms for 512 x 9728 x 896 per thread).
        let q = q.clone();
        let mut w = vec![0u16; BLOCK * kp];
        let mut c = [[0f32; BLOCK]; BLOCK];
        for b in b0..b1 {
            let r0 = b * BLOCK;
            let rows = (n - r0).min(BLOCK);
            decode(r0, r0 + rows, &mut w[..rows * kp], kp);
            // The last block's missing rows: zeros, not the previous block's values.
            w[rows * kp..].fill(0);
            for mb in 0..m_blocks {
                // SAFETY: w holds 32 rows of kp values, kp * 2 bytes apart; q holds
                // 2 * m_blocks groups of `ksteps` tiles; ksteps >= 1 as k >= 1.
                unsafe {
                    let q0 = q.as_ptr().add(2 * mb * q_group);
                    tiles.block(w.as_ptr(), kp * 2, q0, q0.add(q_group), ksteps, &mut c);
                }
                let i0 = mb * BLOCK;
                for i in 0..(m - i0).min(BLOCK) {
                    // SAFETY: row i0 + i < m of the output, columns r0..r0 + rows < n; this
                    // chunk alone writes these columns.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            (outp as *mut f32).add((i0 + i) * n + r0),
                            rows,
                        )
                    };
                    for (d, c_row) in dst.iter_mut().zip(&c) {
                        *d = c_row[i];
                    }
                }
            }
        }
        drop(tiles);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against an f64 product of the same bf16-rounded operands: only the f32 accumulation
    /// differs. Shapes with every remainder (rows, columns and k not multiples of 32).
    #[test]
    fn matches_f64_product_of_rounded_operands() {
        if !super::super::supported() {
            eprintln!("AMX not available on this machine: test not run");
            return;
        }
        let round = |v: f32| half::bf16::from_f32(v).to_f32() as f64;
        for &(m, n, k) in &[
            (1, 1, 1),
            (16, 32, 32),
            (33, 45, 70),
            (64, 96, 576),
            (5, 70, 333),
        ] {
            let mut s = 0x1234_5678u32 ^ (m * 7 + n * 13 + k) as u32;
            let mut rnd = || {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            };
            let x: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let wt: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
            let mut out = vec![f32::NAN; m * n];
            let decode = |r0: usize, r1: usize, buf: &mut [u16], ld: usize| {
                for r in r0..r1 {
                    let dst = &mut buf[(r - r0) * ld..(r - r0 + 1) * ld];
                    unsafe { super::super::pack::bf16_row(&wt[r * k..(r + 1) * k], dst) };
                }
            };
            unsafe { matmul_t(n, k, &x, m, &mut out, &decode) };
            for i in 0..m {
                for r in 0..n {
                    let want: f64 = (0..k)
                        .map(|j| round(x[i * k + j]) * round(wt[r * k + j]))
                        .sum();
                    let got = out[i * n + r] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * (k as f64).sqrt() + 1e-6 * want.abs(),
                        "m={m} n={n} k={k} [{i},{r}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}
/// Throughput of the tile path alone (a decoder that writes nothing), for tuning:
/// `cargo test --release -p tessera-core --lib amx::gemm::timing -- --ignored --nocapture`.
#[cfg(test)]
mod timing {
    #[test]
    #[ignore]
    fn tile_path_throughput() {
        if !super::super::supported() {
            return;
        }
        for (m, n, k) in [(512, 9728, 896), (512, 896, 4864), (512, 1152, 896)] {
            let x = vec![0.5f32; m * k];
            let mut out = vec![0f32; m * n];
            let decode = |_: usize, _: usize, _: &mut [u16], _: usize| {};
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                // SAFETY: supported(); x and out have the shapes.
                unsafe { super::matmul_t(n, k, &x, m, &mut out, &decode) };
                best = best.min(t.elapsed().as_secs_f64());
            }
            let gmacs = (m * n * k) as f64 / best / 1e9;
            eprintln!("m {m} n {n} k {k}: {:.2} ms, {gmacs:.0} GMAC/s", best * 1e3);
        }
    }
}
