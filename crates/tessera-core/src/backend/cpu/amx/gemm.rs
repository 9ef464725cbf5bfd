//! `out = x · Wᵀ` on the tiles, for weight rows that some format decodes to bf16.
//!
//! Roles: the weight rows are the tiles' first operand (P: 32 values of k per tile row, as
//! every weight format stores a row, so decoding needs no transposition); the activations are
//! the second operand (Q), pair-packed once per call ([`Operands::pack_q`]: the activations are
//! the smaller matrix in a prefill, so the transposition this layout needs is cheap there). A C
//! block holds 32 weight rows by 32 activation rows and is written to the output transposed.
//!
//! # Blocking
//!
//! Each pool thread takes contiguous blocks of 32 P rows and works through them a *panel* at a
//! time: as many blocks as fill half of L2 once decoded into a tile-ordered bf16 buffer (256
//! rows at k = 2048, at most 512), decoded once per call. Q is pair-packed once and shared by
//! the threads. For each panel, Q is met one 32-row block at a time and k in chunks of [`KC`]
//! steps (256 values): the Q block's chunk of tiles (16 KB) stays in L1 while every P block of
//! the panel streams past it from L2, and the partial sums wait in C blocks between chunks.
//!
//! The packed Q, the panel and the C blocks are per-thread buffers kept between calls
//! ([`super::pack::Scratch`]): fresh ones cost page faults on every call.
//!
//! Every tile buffer is line-aligned ([`super::pack::Line`]): with the rows of a tile
//! straddling cache lines the product ran 1.5-1.7x slower.

use super::pack::{Line, Scratch, as_mut, bf16_row, transpose_pairs};
use super::tiles::{BLOCK, KSTEP, Q_TILE_BYTES, Tiles};
use crate::backend::cpu::pool::parallel_chunks;

/// k-steps per chunk (8 x 32 values: the Q tiles of one block, 16 KB, stay in L1).
const KC: usize = 8;

/// Where the decoder writes: 32-value chunk `c` of panel row `r` is `buf[r * 32 + c * cs..][..32]`
/// (rows of one chunk are consecutive: each tile is 1 KB of consecutive bytes).
pub(crate) struct Panel<'a> {
    buf: &'a mut [u16],
    /// Elements between chunk `c` and `c + 1` of a row (32 times the panel's rows).
    cs: usize,
}

impl<'a> Panel<'a> {
    /// A panel of `rows` rows over `buf` (tile order: chunk `c` of row `r` at `r * 32 + c * 32
    /// rows`).
    pub(crate) fn new(buf: &'a mut [u16], rows: usize) -> Panel<'a> {
        Panel {
            buf,
            cs: rows * KSTEP,
        }
    }

    /// The 32 values of chunk `c` (k in `32 c..32 c + 32`) of panel row `r`.
    #[inline(always)]
    pub(crate) fn chunk(&mut self, r: usize, c: usize) -> &mut [u16] {
        let at = r * KSTEP + c * self.cs;
        &mut self.buf[at..at + KSTEP]
    }
}

/// The two operands and the result of a product on the tiles: `C[r][i] = Σ_k P[r][k] Q[i][k]`
/// for `np` rows of P and `nq` rows of Q.
pub(crate) trait Operands: Sync {
    /// P rows `r0..r1` (one panel) into panel rows `0..r1 - r0`: every chunk of
    /// each row (k rounded up to 32; values past k are zero).
    fn decode_p(&self, r0: usize, r1: usize, panel: &mut Panel);
    /// Groups `g0..g1` of 16 Q rows pair-packed into `dst`, one after the other (`kp * 32`
    /// bytes each): group `g` is `kp / 2` pair-rows of 16 u32, pair-row `p`, column `j` holding
    /// the bf16 values `2p, 2p + 1` of row `16 g + j`; zeros for rows past `nq` and values
    /// past k.
    fn pack_q(&self, g0: usize, g1: usize, kp: usize, dst: &mut [u8]);
    /// One result block: `c[r][i]` is `C[r0 + r][i0 + i]`, for `r < pr`, `i < qr`.
    ///
    /// # Safety
    /// Calls that run at the same time cover disjoint ranges of P rows.
    unsafe fn write(&self, r0: usize, i0: usize, c: &[[f32; BLOCK]; BLOCK], pr: usize, qr: usize);
}

/// Runs the product of `ops`: each pool thread takes contiguous blocks of 32 P rows.
///
/// # Safety
/// [`super::supported`] returned true; `ops` is valid for `np` rows of P, `nq` rows of Q and
/// `k` values per row.
pub(crate) unsafe fn product<O: Operands>(np: usize, nq: usize, k: usize, ops: &O) {
    if np == 0 || nq == 0 || k == 0 {
        return;
    }
    // Q rows in ranges whose packed form stays under Q_RANGE_BYTES: the packed copy is then
    // bounded whatever the shapes, at the cost of decoding P once per range (one range for any
    // prompt-sized product).
    let kp = k.div_ceil(KSTEP) * KSTEP;
    let per_range = (Q_RANGE_BYTES / (kp * 2) / BLOCK * BLOCK).max(BLOCK);
    let mut q0 = 0;
    while q0 < nq {
        let rows = per_range.min(nq - q0);
        product_range(np, q0, rows, k, ops);
        q0 += rows;
    }
}

/// Most bytes of packed Q per range of [`product`] (small in this crate's unit tests, so their
/// shapes span several ranges).
const Q_RANGE_BYTES: usize = if cfg!(test) { 64 << 10 } else { 16 << 20 };

/// 32-row blocks of P per panel: the decoded panel takes about half of L2 (1 MB of a 2 MB L2:
/// 256 rows at k = 2048), at most [`MAX_PANEL`] blocks.
fn panel_blocks(kp: usize) -> usize {
    (crate::backend::cpu::cache::l2_bytes() / 2 / (BLOCK * kp * 2)).clamp(1, MAX_PANEL)
}

/// Most 32-row blocks per panel.
const MAX_PANEL: usize = 16;

/// [`product`] for Q rows `q0..q0 + nq` (`q0` a multiple of 32).
///
/// Each thread takes a contiguous range of P blocks and works through it a panel at a time
/// (decoded once into a tile-ordered buffer, [`panel_blocks`]). For each panel it runs over Q
/// one 32-row block at a time, and over k in chunks of [`KC`] steps: each chunk of the Q block
/// (16 KB of tiles, in L1) meets every P block of the panel (streaming from L2), and the
/// partial sums wait in one C block per P block between chunks.
///
/// Measured (`matmul_bf16_2048`, and 512-token prefill of the 0.5B-shape Q4_0 model, 2
/// threads): 1, 2 or 4 Q blocks per step ran at 2550-2640 / 2490-2530 / 2390-2530 GFLOP/s
/// and 930-969 / 820-953 / 875-893 tok/s; chunks of 4, 8, 16 or 24 steps, 8 best. Earlier,
/// with the whole of Q met per chunk (1 MB per chunk at 2048 Q rows, more than L2 with the
/// panel), the tiles ran at half speed.
unsafe fn product_range<O: Operands>(np: usize, q0: usize, nq: usize, k: usize, ops: &O) {
    let kp = k.div_ceil(KSTEP) * KSTEP;
    let r = Range {
        np,
        q0,
        nq,
        kp,
        q_blocks: nq.div_ceil(BLOCK),
    };
    Q_BUF.with(|buf| {
        buf.with(2 * r.q_blocks * r.q_group(), |q| {
            let qbase = q.as_mut_ptr() as usize;
            parallel_chunks(2 * r.q_blocks, 1, &|g0, g1| {
                // SAFETY: groups g0..g1 lie inside `q`; each group is written by one chunk.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        (qbase as *mut u8).add(g0 * r.q_group()),
                        (g1 - g0) * r.q_group(),
                    )
                };
                ops.pack_q(q0 / 16 + g0, q0 / 16 + g1, kp, dst);
            });
            let q: &[Line] = q;
            parallel_chunks(np.div_ceil(BLOCK), 1, &|b0, b1| {
                // SAFETY: the caller's contract.
                unsafe { r.thread(ops, q, b0, b1) }
            });
        })
    });
}

/// The shape of one [`product_range`].
#[derive(Clone, Copy)]
struct Range {
    /// P rows.
    np: usize,
    /// First Q row, and Q rows.
    q0: usize,
    nq: usize,
    /// k rounded up to whole steps.
    kp: usize,
    /// 32-row blocks of Q.
    q_blocks: usize,
}

impl Range {
    /// Bytes of one packed group of 16 Q rows.
    fn q_group(&self) -> usize {
        self.kp * 32
    }

    /// One thread's share: P blocks `b0..b1` against all of Q (packed in `q`), a panel at a
    /// time, with this thread's panel and C buffers.
    ///
    /// # Safety
    /// As for [`product`]; no other thread runs P blocks `b0..b1`.
    unsafe fn thread<O: Operands>(&self, ops: &O, q: &[Line], b0: usize, b1: usize) {
        // SAFETY: `supported()` (the caller's contract).
        let tiles = unsafe { Tiles::configure() };
        let max_blocks = panel_blocks(self.kp).min(b1 - b0);
        let w_bytes = max_blocks * BLOCK * self.kp * 2;
        let c_bytes = max_blocks * BLOCK * BLOCK * 4;
        W_BUF.with(|wb| {
            wb.with(w_bytes, |w| {
                C_BUF.with(|cb| {
                    cb.with(c_bytes, |c| {
                        let (w, c) = (as_mut::<u16>(w), as_mut(c));
                        let mut s0 = b0;
                        while s0 < b1 {
                            let blocks = max_blocks.min(b1 - s0);
                            // SAFETY: as for this function.
                            unsafe { self.panel(ops, &tiles, q, w, c, s0, blocks) };
                            s0 += blocks;
                        }
                        // Results written with streaming stores are visible to other threads
                        // only after a fence.
                        // SAFETY: SSE, part of x86_64.
                        unsafe { std::arch::x86_64::_mm_sfence() };
                    })
                })
            })
        });
    }

    /// The panel of P blocks `s0..s0 + blocks`: decoded into `w`, then multiplied by Q a Q
    /// block at a time, the C blocks (`c`, line-aligned for the tile loads and stores) written
    /// out after each.
    ///
    /// # Safety
    /// As for [`Range::thread`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn panel<O: Operands>(
        &self,
        ops: &O,
        tiles: &Tiles,
        q: &[Line],
        w: &mut [u16],
        c: &mut [[[f32; BLOCK]; BLOCK]],
        s0: usize,
        blocks: usize,
    ) {
        let ksteps = self.kp / KSTEP;
        let r0 = s0 * BLOCK;
        let rows = (self.np - r0).min(blocks * BLOCK);
        let nw = blocks * BLOCK;
        let cs = nw * KSTEP;
        let mut panel = Panel::new(&mut w[..nw * self.kp], nw);
        ops.decode_p(r0, r0 + rows, &mut panel);
        // The last panel's missing rows: zeros, not the previous panel's values.
        for r in rows..nw {
            for ch in 0..ksteps {
                panel.chunk(r, ch).fill(0);
            }
        }
        let (w, q) = (w.as_ptr().cast::<u8>(), q.as_ptr().cast::<u8>());
        for qb in 0..self.q_blocks {
            // The C block of P block j to the output.
            let write = |c: &[[[f32; BLOCK]; BLOCK]], j: usize| {
                let (rj, i0) = (j * BLOCK, qb * BLOCK);
                if rj < rows {
                    // SAFETY: this thread alone covers P rows r0 + rj.. (the contract).
                    unsafe {
                        ops.write(
                            r0 + rj,
                            self.q0 + i0,
                            &c[j],
                            (rows - rj).min(BLOCK),
                            (self.nq - i0).min(BLOCK),
                        )
                    };
                }
            };
            let qg = q.add(2 * qb * self.q_group());
            let mut k0 = 0;
            while k0 < ksteps {
                let kn = KC.min(ksteps - k0);
                let last = k0 + kn == ksteps;
                for j in 0..blocks {
                    // SAFETY: the panel holds `ksteps` steps of `nw` rows (`cs` values each),
                    // block j's 32 rows at j * 32 in each; q holds 2 * q_blocks groups of
                    // `ksteps` tiles; kn >= 1.
                    unsafe {
                        let p = w.add(2 * (k0 * cs + j * BLOCK * KSTEP));
                        let q0 = qg.add(k0 * Q_TILE_BYTES);
                        tiles.block(p, cs * 2, q0, q0.add(self.q_group()), kn, &mut c[j], k0 > 0);
                    }
                    // In the last chunk, the previous block is final: written while the tile
                    // unit works through this one (the core runs ahead of it).
                    if last && j > 0 {
                        write(c, j - 1);
                    }
                }
                k0 += kn;
            }
            write(c, blocks - 1);
        }
    }
}

thread_local! {
    /// The packed Q of the calling thread's products.
    static Q_BUF: Scratch = const { Scratch::new() };
    /// Each pool thread's decoded panel.
    static W_BUF: Scratch = const { Scratch::new() };
    /// Each pool thread's C blocks.
    static C_BUF: Scratch = const { Scratch::new() };
}

/// Decodes weight rows `r0..r1` into panel rows `0..r1 - r0`: every chunk of each row (k
/// rounded up to 32; values past k are zero).
pub(crate) type DecodeRows<'a> = &'a (dyn Fn(usize, usize, &mut Panel) + Sync);

/// `out = x · Wᵀ`: P is the weight rows (`decode`), Q the f32 activation rows, and the blocks
/// go to the output transposed.
struct Linear<'a> {
    x: &'a [f32],
    m: usize,
    k: usize,
    n: usize,
    out: usize,
    decode: DecodeRows<'a>,
}

impl Operands for Linear<'_> {
    fn decode_p(&self, r0: usize, r1: usize, panel: &mut Panel) {
        (self.decode)(r0, r1, panel);
    }

    fn pack_q(&self, g0: usize, g1: usize, kp: usize, dst: &mut [u8]) {
        let mut rows = vec![0u16; 16 * kp];
        for (g, dst) in (g0..g1).zip(dst.chunks_exact_mut(kp * 32)) {
            for (j, row) in rows.chunks_exact_mut(kp).enumerate() {
                let r = 16 * g + j;
                if r < self.m {
                    // SAFETY: `supported()` implies AVX-512 BF16; the row holds kp >= k values.
                    unsafe { bf16_row(&self.x[r * self.k..(r + 1) * self.k], row) };
                } else {
                    row.fill(0);
                }
            }
            // SAFETY: AVX-512 (`supported()`); dst holds kp / 2 pair-rows of 64 bytes.
            unsafe { transpose_pairs(&rows, kp, dst.as_mut_ptr()) };
        }
    }

    unsafe fn write(&self, r0: usize, i0: usize, c: &[[f32; BLOCK]; BLOCK], pr: usize, qr: usize) {
        for i in 0..qr {
            // SAFETY: row i0 + i < m of the output, columns r0..r0 + pr <= n, which only this
            // call's P rows write.
            let dst = std::slice::from_raw_parts_mut(
                (self.out as *mut f32).add((i0 + i) * self.n + r0),
                pr,
            );
            for (d, c_row) in dst.iter_mut().zip(c) {
                *d = c_row[i];
            }
        }
    }
}

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
    let ops = Linear {
        x,
        m,
        k,
        n,
        out: out.as_mut_ptr() as usize,
        decode,
    };
    product(n, m, k, &ops);
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
        for &(m, n, k) in &[
            (1, 1, 1),
            (16, 32, 32),
            (33, 45, 70),
            (64, 96, 576),
            (5, 70, 333),
            // Two panels per thread and several k chunks; k chunks of unequal length.
            (70, 300, 300),
            (40, 600, 2080),
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
            let kp = k.div_ceil(32) * 32;
            let decode = |r0: usize, r1: usize, panel: &mut Panel| {
                let mut row = vec![0u16; kp];
                for r in r0..r1 {
                    unsafe { super::super::pack::bf16_row(&wt[r * k..(r + 1) * k], &mut row) };
                    for (ch, v) in row.chunks_exact(32).enumerate() {
                        panel.chunk(r - r0, ch).copy_from_slice(v);
                    }
                }
            };
            unsafe { matmul_t(n, k, &x, m, &mut out, &decode) };
            let reference = super::super::bf16_reference(&x, &wt, m, n, k);
            for i in 0..m {
                for r in 0..n {
                    let want = reference[i * n + r].0;
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

/// Throughput of the tile path with a trivial decoder (it only fills the panel), for tuning:
/// `cargo test --release -p tessera-core --lib amx::gemm::timing -- --ignored --nocapture`.
#[cfg(test)]
mod timing {
    #[test]
    #[ignore]
    fn tile_path_throughput() {
        if !super::super::supported() {
            return;
        }
        for (m, n, k) in [
            (512, 9728, 896),
            (512, 896, 4864),
            (512, 1152, 896),
            (512, 4096, 640),
            (512, 640, 2048),
            (2048, 2048, 2048),
        ] {
            let x = vec![0.5f32; m * k];
            let mut out = vec![0f32; m * n];
            // Writes every panel value (an untouched panel would be the kernel's zero page,
            // always in L1, and time the tiles without their P operand's traffic).
            let kp = k.div_ceil(32) * 32;
            let decode = |r0: usize, r1: usize, panel: &mut super::Panel| {
                for r in 0..r1 - r0 {
                    for ch in 0..kp / 32 {
                        panel.chunk(r, ch).fill(0);
                    }
                }
            };
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
