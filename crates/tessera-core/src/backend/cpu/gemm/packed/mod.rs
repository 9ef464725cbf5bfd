//! Packed, cache-blocked GEMM (x86-64 only): the driver here, the micro-kernels and packing in
//! `avx512.rs` (bf16 with `vdpbf16ps`, f32 with zmm FMAs) and `avx2.rs` (f32 with ymm FMAs).
//!
//! Layout: A and B are packed into panels of 32-bit words. For f32 a word is one element; for
//! bf16 a word is a *pair* of consecutive-k elements ("pair-interleaved"): the packed B panel holds,
//! per k pair p and column j, the word (B[2p, j], B[2p+1, j]), and the packed A panel holds per row
//! i the word (A[i, 2p], A[i, 2p+1]), which the micro-kernel broadcasts; `vdpbf16ps` then
//! multiplies 16 such pairs and adds both products into 16 f32 lanes.
//!
//! Micro-kernels: an `MR x NR` tile of C in f32 accumulators; per k word the kernel loads `NR`
//! words of B as vectors and broadcasts `MR` words of A. AVX-512: 14 x 32 (28 zmm accumulators);
//! AVX2: 6 x 16 (12 of the 16 ymm registers).
//!
//! Blocking (BLIS-style): C's columns in blocks of `nc` (packed B block, L3), k in blocks of up
//! to `KP_MAX` words (not blocked at all below that, so the f32 sums go straight to C; above it the
//! partial sums round-trip through an f32 scratch, and C is still rounded exactly once), A rows in
//! blocks of `mc` (packed per task, L2; the blocks of one product all about the same size).
//! Threads: tasks over (row block, column range) pairs are claimed dynamically from the pool, one
//! pool hand-off per (column block, k block); each B panel is packed by the first task that needs
//! it while the others wait for it (`ensure_packed`), and tasks start their sweep at different
//! panels so the threads pack different ones at once. When the row blocks divide evenly among
//! the threads, a task is a whole row block (each thread packs its A rows once).
//!
//! The micro-kernels vectorise along C's rows; callers give them the orientation where C's
//! column stride is the smaller one.

#![cfg(target_arch = "x86_64")]

mod avx2;
mod avx512;

pub(super) use avx2::F32Avx2Kind;
pub(crate) use avx512::bf16x16_to_f32;
pub(super) use avx512::{Bf16Kind, F32Kind};

use super::{MatMut, MatRef, Shared, pool, run_tasks};
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::cell::RefCell;

/// Bytes of packed A per row block (kept in L2 while B panels stream past it): 256 KB, or half
/// of L2 where L2 holds 2 MB or more. Measured (2 threads, GFLOP/s at 2048 / 4096): on Zen 4
/// (1 MB L2) 256 KB was best; on a Xeon with 2 MB L2, 256 KB gave 294-308 / 296-302, 512 KB
/// 317-328 / 311-340, 1 MB 331-337 / 327-332, 1.5 MB 307-309 / 303-320.
fn a_block_bytes() -> usize {
    let l2 = crate::backend::cpu::cache::l2_bytes();
    if l2 >= 2 << 20 { l2 / 2 } else { 256 << 10 }
}
/// Packed-B and scratch buffers larger than this (in 4-byte words) are not kept for reuse.
const KEEP_WORDS: usize = (32 << 20) / 4;

thread_local! {
    /// Per-thread packed-A buffer, reused across calls to avoid page faults on every block.
    static A_BUF: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// The calling thread's packed-B buffer, likewise reused.
    static B_BUF: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// The calling thread's k-blocking scratch (f32 partial sums of C), likewise reused.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Where a micro-tile's result goes.
pub(super) struct Tile<T> {
    /// f32 partial sums, `MR x NR` region with row stride `ld` (only with k blocking).
    scratch: *mut f32,
    ld: usize,
    /// Load the partial sums first (not the first k block).
    load: bool,
    /// Last k block: write C (rows `rows`, columns `cols`) instead of the scratch.
    last: bool,
    c: *mut T,
    c_rs: isize,
    c_cs: isize,
    rows: usize,
    cols: usize,
    accumulate: bool,
}

/// One element type's packing and micro-kernel, for one instruction set.
pub(super) trait Kind: 'static {
    type T: Copy + Send + Sync;
    /// k indices per packed word.
    const KW: usize;
    /// Rows of C per micro-tile (A words broadcast per k word).
    const MR: usize;
    /// Columns of C per micro-tile (B words loaded as vectors per k word).
    const NR: usize;
    /// Largest k block in words. Up to this, k is not blocked (measured on AVX-512: fewer,
    /// longer k blocks beat L1-sized ones, because each extra block costs a scratch round trip
    /// of the C tile; on AVX2 the shorter blocks won, see `avx2.rs`).
    const KP_MAX: usize;
    /// Bytes of packed B per column block (in L3): blocks of 1024 columns at a k block of
    /// KP_MAX words for the AVX-512 kinds, 512 for AVX2 (see `avx2.rs`).
    const B_BLOCK_BYTES: usize;
    /// Packs A rows `i0..i0+mc`, k `k0..k0+kc` into micro-panels `[ip][word][MR]`, zero padded.
    unsafe fn pack_a(a: MatRef<Self::T>, i0: usize, mc: usize, k0: usize, kc: usize, dst: *mut u32);
    /// Packs B k `k0..k0+kc`, columns `j0 + jp*NR ..` for panels `jp0..jp1` into `[jp][word][NR]`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn pack_b(
        b: MatRef<Self::T>,
        k0: usize,
        kc: usize,
        j0: usize,
        nc: usize,
        jp0: usize,
        jp1: usize,
        dst: *mut u32,
    );
    /// The micro-kernel over `kw` words.
    unsafe fn micro(kw: usize, ap: *const u32, bp: *const u32, t: &Tile<Self::T>);
}

/// The calling thread's reusable buffer in `key`, at least `len` long (contents unspecified:
/// callers write every element before reading it).
fn take_buf<T: Copy + Default + 'static>(
    key: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    len: usize,
) -> Vec<T> {
    let mut v = key.with(|cell| {
        cell.try_borrow_mut()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    });
    if v.len() < len {
        v.resize(len, T::default());
    }
    v
}

/// Puts a buffer from [`take_buf`] back for the next call, unless it is too large to keep.
fn keep_buf<T: 'static>(key: &'static std::thread::LocalKey<RefCell<Vec<T>>>, v: Vec<T>) {
    if v.len() <= KEEP_WORDS {
        key.with(|cell| {
            if let Ok(mut slot) = cell.try_borrow_mut() {
                *slot = v;
            }
        });
    }
}

/// Words of slack in each packing buffer, for [`cache_aligned`].
const ALIGN_WORDS: usize = 16;

/// The first 64-byte aligned word at or after `p` (at most `ALIGN_WORDS - 1` words on): the
/// panels start on a cache line, so no vector load of them straddles two lines (the allocator
/// gives 16-byte alignment, which split every 64-byte load and every other 32-byte load).
fn cache_aligned(p: *mut u32) -> *mut u32 {
    p.wrapping_add(p.align_offset(64).min(ALIGN_WORDS - 1))
}

/// Runs `f` with a per-thread buffer of at least `len` words (contents unspecified).
fn with_buf<R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<u32>>>,
    len: usize,
    f: impl FnOnce(*mut u32) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0);
            }
            f(v.as_mut_ptr())
        }
        // Re-entered on this thread (cannot happen in this module, but stay panic-free).
        Err(_) => f(vec![0u32; len].as_mut_ptr()),
    })
}

/// A packed-B panel's state within one (column block, k block) step.
const UNPACKED: u8 = 0;
const PACKING: u8 = 1;
const READY: u8 = 2;

/// Runs `pack` if this caller is the first to claim the panel, else waits until the claimer
/// has finished. The claimer is a running task that waits on nothing, so the wait ends; when
/// the pool runs tasks inline (one thread) every panel is claimed by its first user.
fn ensure_packed(state: &AtomicU8, pack: impl FnOnce()) {
    if state.load(Ordering::Acquire) == READY {
        return;
    }
    if state
        .compare_exchange(UNPACKED, PACKING, Ordering::Acquire, Ordering::Acquire)
        .is_ok()
    {
        /// Marks the panel ready when dropped, also if `pack` unwinds: the waiters then go on
        /// (the pool re-raises the panic once every task is done) instead of spinning forever.
        struct Ready<'a>(&'a AtomicU8);
        impl Drop for Ready<'_> {
            fn drop(&mut self) {
                self.0.store(READY, Ordering::Release);
            }
        }
        let _ready = Ready(state);
        pack();
        return;
    }
    while state.load(Ordering::Acquire) != READY {
        core::hint::spin_loop();
    }
}

/// C's rows split into `count` blocks of whole micro-tiles (`mr` rows, the last tile possibly
/// short), the tiles spread as evenly as possible: block sizes differ by at most one tile.
#[derive(Clone, Copy)]
struct RowBlocks {
    m: usize,
    mr: usize,
    tiles: usize,
    count: usize,
}

impl RowBlocks {
    /// Blocks of at most `mc_max` rows (a multiple of `mr`); when there are more blocks than
    /// `threads`, a multiple of `threads` of them (or one tile each), so that every thread gets
    /// the same work.
    fn new(m: usize, mc_max: usize, mr: usize, threads: usize) -> RowBlocks {
        let tiles = m.div_ceil(mr);
        let mut count = tiles.div_ceil(mc_max / mr);
        if threads > 1 && count > threads {
            count = count.div_ceil(threads) * threads;
        }
        RowBlocks {
            m,
            mr,
            tiles,
            count: count.min(tiles),
        }
    }

    /// First row and row count of block `ib`.
    fn block(&self, ib: usize) -> (usize, usize) {
        let t0 = ib * self.tiles / self.count;
        let t1 = (ib + 1) * self.tiles / self.count;
        let i0 = t0 * self.mr;
        (i0, (t1 * self.mr).min(self.m) - i0)
    }

    /// Rows of the largest block, rounded up to whole tiles (the packed-A buffer's size).
    fn max_rows(&self) -> usize {
        self.tiles.div_ceil(self.count) * self.mr
    }
}

/// One product `C (+)= A @ B` (`m, n, k >= 1`) on the pool. The caller guarantees the CPU has
/// the kind's features (see each kind).
pub(super) unsafe fn gemm<K: Kind>(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef<K::T>,
    b: MatRef<K::T>,
    c: MatMut<K::T>,
    accumulate: bool,
) {
    let threads = pool::global().threads();
    let kw_total = k.div_ceil(K::KW);
    // Equal k blocks of at most KP_MAX words, each a whole number of words.
    let kw_blk = kw_total.div_ceil(kw_total.div_ceil(K::KP_MAX));
    let kc_blk = kw_blk * K::KW;
    let blocked = kc_blk < k;
    // Row blocks of at most `mc_max` rows, all of about the same size (a 256-row product with
    // 252-row blocks made one block of 252 rows and one of 4), and as many as a multiple of the
    // threads when there are more than threads (9 blocks on 2 threads made one thread do 5 and
    // the other wait: 11% of a 1024-square product on Zen 3).
    let mc_max = (a_block_bytes() / (4 * kw_blk) / K::MR * K::MR).clamp(K::MR, 252 / K::MR * K::MR);
    let rows = RowBlocks::new(m, mc_max, K::MR, threads);
    let nc_max = (K::B_BLOCK_BYTES / (4 * kw_blk) / K::NR * K::NR)
        .clamp(K::NR, 4096)
        .min(n.div_ceil(K::NR) * K::NR);
    let m_pad = m.div_ceil(K::MR) * K::MR;
    // f32 partial sums between k blocks (only when k needs more than one block).
    // Reused across calls like the packing buffers (a fresh one faulted in 16 MB of zeroed pages
    // per 4096-square product); the first k block writes every word before any is read.
    let mut scratch: Vec<f32> = if blocked {
        take_buf(&SCRATCH, m_pad * nc_max)
    } else {
        Vec::new()
    };
    let ld = nc_max;
    let b_len = nc_max.div_ceil(K::NR) * kw_blk * K::NR;
    let a_len = rows.max_rows() * kw_blk;

    // The calling thread's reusable B buffer; every packed word is written before it is read.
    let mut bpack: Vec<u32> = take_buf(&B_BUF, b_len + ALIGN_WORDS);
    let bpack_at = cache_aligned(bpack.as_mut_ptr());
    let panel_state: Vec<AtomicU8> = (0..nc_max.div_ceil(K::NR))
        .map(|_| AtomicU8::new(UNPACKED))
        .collect();

    let mut j0 = 0;
    while j0 < n {
        let nc = nc_max.min(n - j0);
        let n_panels = nc.div_ceil(K::NR);
        let mut k0 = 0;
        while k0 < k {
            let kc = kc_blk.min(k - k0);
            let kw = kc.div_ceil(K::KW);
            let first = k0 == 0;
            let last = k0 + kc == k;
            // Tasks over (row block, column range), claimed dynamically. Each B panel is packed
            // by the first task that needs it (one pool hand-off per block instead of a packing
            // phase and a compute phase); tasks start their sweep at different panels so two
            // threads pack different panels at once instead of waiting on each other.
            for s in &panel_state[..n_panels] {
                s.store(UNPACKED, Ordering::Relaxed);
            }
            let m_blocks = rows.count;
            let n_split = if threads > 1 && !m_blocks.is_multiple_of(threads) {
                (2 * threads).div_ceil(m_blocks).min(n_panels).max(1)
            } else {
                1
            };
            let panels_per = n_panels.div_ceil(n_split);
            let n_split = n_panels.div_ceil(panels_per);
            let tasks = m_blocks * n_split;
            let next = AtomicUsize::new(0);
            let workers = tasks.min(threads);
            let bp = Shared(bpack_at);
            let sp = Shared(scratch.as_mut_ptr());
            let states = &panel_state[..n_panels];
            let work = move |_w: usize| {
                let (bp, sp) = (bp, sp);
                with_buf(&A_BUF, a_len + ALIGN_WORDS, |abuf| {
                    let abuf = cache_aligned(abuf);
                    loop {
                        let t = next.fetch_add(1, Ordering::Relaxed);
                        if t >= tasks {
                            break;
                        }
                        let (ib, ns) = (t / n_split, t % n_split);
                        let (i0, mc) = rows.block(ib);
                        // SAFETY: A rows i0..i0+mc, k k0..k0+kc are in range; abuf holds a_len words.
                        unsafe { K::pack_a(a, i0, mc, k0, kc, abuf) };
                        let (jp0, jp1) = (ns * panels_per, ((ns + 1) * panels_per).min(n_panels));
                        let len = jp1 - jp0;
                        let rot = (ib % threads) * len / threads;
                        for q in 0..len {
                            let jp = jp0 + (q + rot) % len;
                            // SAFETY: panel jp of bpack (n_panels * kw * NR words) is written
                            // only by the task that claims it; the B elements read are in range.
                            ensure_packed(&states[jp], || unsafe {
                                K::pack_b(b, k0, kc, j0, nc, jp, jp + 1, bp.0)
                            });
                            let jb = jp * K::NR;
                            for ip in 0..mc.div_ceil(K::MR) {
                                let ii = i0 + ip * K::MR;
                                let tile = Tile {
                                    scratch: sp.0.wrapping_add(ii * ld + jb),
                                    ld,
                                    load: !first,
                                    last,
                                    c: c.at(ii, j0 + jb),
                                    c_rs: c.rs,
                                    c_cs: c.cs,
                                    rows: K::MR.min(m - ii),
                                    cols: K::NR.min(nc - jb),
                                    accumulate,
                                };
                                // SAFETY: the packed panels hold kw words (panel jp is ready:
                                // `ensure_packed` returned); the scratch region (padded to MR x NR)
                                // and the C tile belong to this task alone (tasks own disjoint
                                // (row block, panel range) pairs).
                                unsafe {
                                    K::micro(
                                        kw,
                                        abuf.add(ip * K::MR * kw),
                                        (bp.0 as *const u32).add(jp * kw * K::NR),
                                        &tile,
                                    )
                                };
                            }
                        }
                    }
                });
            };
            let work = Shared(&work);
            run_tasks(workers, &move |w| {
                let work = work;
                (work.0)(w)
            });
            k0 += kc;
        }
        j0 += nc;
    }
    // (An unblocked product took no scratch: giving its empty one back would drop the kept one.)
    if blocked {
        keep_buf(&SCRATCH, scratch);
    }
    keep_buf(&B_BUF, bpack);
}

#[cfg(test)]
mod tests {
    use super::RowBlocks;

    /// The blocks tile 0..m in order, whole micro-tiles each, sizes within one tile of each
    /// other, and a multiple of the threads in number when there are more blocks than threads
    /// (and enough tiles).
    #[test]
    fn row_blocks_cover_rows_evenly() {
        for m in [1, 5, 6, 7, 61, 256, 700, 1000, 1024, 4099] {
            for threads in [1, 2, 3, 4] {
                for mc_max in [6, 30, 60, 252] {
                    let rows = RowBlocks::new(m, mc_max, 6, threads);
                    let mut next = 0;
                    let (mut lo, mut hi) = (usize::MAX, 0);
                    for ib in 0..rows.count {
                        let (i0, mc) = rows.block(ib);
                        assert_eq!(i0, next, "m {m} threads {threads} mc_max {mc_max}");
                        assert!(mc >= 1 && mc <= rows.max_rows() && mc <= mc_max);
                        next = i0 + mc;
                        if next < m {
                            assert_eq!(mc % 6, 0);
                            lo = lo.min(mc);
                        }
                        hi = hi.max(mc.div_ceil(6) * 6);
                    }
                    assert_eq!(next, m);
                    assert!(lo == usize::MAX || hi - lo <= 6);
                    // (Unless there are fewer tiles than that: then one tile per block.)
                    if rows.count > threads && rows.count < rows.tiles {
                        assert!(rows.count.is_multiple_of(threads));
                    }
                }
            }
        }
    }
}
