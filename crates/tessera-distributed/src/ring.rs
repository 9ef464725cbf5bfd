//! The `ring` backend: collectives over the TCP mesh.
//!
//! Large messages use the bandwidth-optimal ring: a reduce-scatter then an all-gather, each
//! `n - 1` steps in which every rank sends one of `n` segments to its right neighbour while it
//! receives another from its left, so every link carries `2 (n-1)/n` of the message and all links
//! are busy at once. Segments travel in chunks, and a sender thread forwards chunk `j` as soon as
//! it has been received (and reduced), so reduction, sending and receiving overlap.
//!
//! Small messages use one direct exchange: every rank sends its data to every other rank and
//! reduces locally in rank order, one network latency instead of `2 (n-1)`; or, where a host
//! runs more ranks than it has cores, recursive doubling, which sends far fewer messages (see
//! `agree_small_all_reduce`). All give every rank bit-identical results (each element is
//! reduced in one fixed order).

use crate::error::{Error, Result};
use crate::mesh::Mesh;
use crate::reduce::{reduce_into, reduce_to};
use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc;
use tessera_core::Dtype;
use tessera_core::collective::{CollectiveReduce, Communicator, Transport};

/// Per-peer payloads up to this size use the direct exchange: small enough that every rank can
/// write all of its messages before reading any without filling the sockets' buffers.
pub(crate) const DIRECT_MAX: usize = 32 * 1024;
/// All-reduces (and all-gathers and reduce-scatters of this many bytes in all) from this size
/// read same-host peers' memory directly when they can (see
/// `cma_all_reduce`). Below it the ring was faster (2 ranks, 1 MiB: 5.8-7.7 against 7.9-8.6
/// GB/s bus bandwidth); from 4 MiB the direct reads were 1.1-1.8x the ring with 2 and 3 ranks.
pub(crate) const CMA_MIN: usize = 4 << 20;
/// Ring chunk: large enough to amortise a frame and a wake-up, small enough to pipeline.
const CHUNK: usize = 1 << 20;

/// A group over (a subset of) the mesh.
pub(crate) struct RingComm {
    pub mesh: Arc<Mesh>,
    /// Global rank of each group rank.
    pub members: Vec<usize>,
    /// This process's group rank.
    pub rank: usize,
    /// Tags every frame, so a frame of another group is detected.
    pub id: u32,
}

/// Raw pointer that may cross to the sender thread (see the SAFETY notes at its uses).
#[derive(Clone, Copy)]
struct SharedPtr(*mut u8);
unsafe impl Send for SharedPtr {}
unsafe impl Sync for SharedPtr {}

impl SharedPtr {
    // A method, so closures capture the whole (Send) wrapper rather than the raw field.
    fn get(self) -> *mut u8 {
        self.0
    }
}

fn segments(elems: usize, n: usize, esize: usize) -> Vec<Range<usize>> {
    (0..n)
        .map(|k| (elems * k / n) * esize..(elems * (k + 1) / n) * esize)
        .collect()
}

fn chunks(r: &Range<usize>, esize: usize) -> impl Iterator<Item = Range<usize>> + use<> {
    let step = (CHUNK / esize).max(1) * esize;
    let (start, end) = (r.start, r.end);
    (start..end)
        .step_by(step)
        .map(move |s| s..(s + step).min(end))
}

/// One ring step: which segment is sent and which received.
#[derive(Clone, Copy)]
struct Step {
    send: usize,
    recv: usize,
    reduce: bool,
}

impl RingComm {
    fn n(&self) -> usize {
        self.members.len()
    }

    fn peer(&self, group_rank: usize) -> usize {
        self.members[group_rank]
    }

    fn send_to(&self, r: usize, data: &[u8]) -> Result<()> {
        let link = self.mesh.link(self.peer(r))?;
        for c in chunks(&(0..data.len()), 1) {
            self.mesh.check(link, link.send(self.id, &data[c]))?;
        }
        Ok(())
    }

    fn recv_from(&self, r: usize, data: &mut [u8]) -> Result<()> {
        self.recv_patiently_from(r, data, 1)
    }

    /// [`Self::recv_from`], giving up on a silent peer after `patience` timeouts (see
    /// [`crate::link::Link::recv_patiently`]).
    fn recv_patiently_from(&self, r: usize, data: &mut [u8], patience: u32) -> Result<()> {
        let link = self.mesh.link(self.peer(r))?;
        for c in chunks(&(0..data.len()), 1) {
            self.mesh.check(
                link,
                link.recv_into_patiently(self.id, &mut data[c], patience),
            )?;
        }
        Ok(())
    }

    /// Reduces rank `k`'s next message of `target.len()` bytes into `target` as it arrives,
    /// the message as the right operand, or with `theirs_first` the left one; a silent peer is
    /// given up on after `patience` timeouts.
    fn reduce_from(
        &self,
        k: usize,
        op: CollectiveReduce,
        dtype: Dtype,
        target: &mut [u8],
        theirs_first: bool,
        patience: u32,
    ) -> Result<()> {
        let link = self.mesh.link(self.peer(k))?;
        let (len, mut off) = (target.len(), 0);
        let mut fold = |piece: &[u8]| {
            let t = &mut target[off..off + piece.len()];
            if theirs_first {
                crate::reduce::reduce_into_after(op, dtype, t, piece);
            } else {
                reduce_into(op, dtype, t, piece);
            }
            off += piece.len();
        };
        let got = link.recv_patiently(self.id, len, &mut fold, patience);
        self.mesh.check(link, got)
    }

    /// Whether this group's small all-reduces take recursive doubling (3 ranks or more, and the
    /// mesh's agreed choice; two ranks have one exchange either way).
    pub(crate) fn small_by_doubling(&self) -> bool {
        self.n() > 2 && self.mesh.small_all_reduce_by_doubling()
    }

    /// Direct exchange: send `mine` to everyone, return everyone's block in rank order (this
    /// rank's own is `mine`, not copied).
    fn exchange(&self, mine: &[u8]) -> Result<Vec<Option<Vec<u8>>>> {
        let n = self.n();
        for k in 1..n {
            self.send_to((self.rank + k) % n, mine)?;
        }
        let mut got: Vec<Option<Vec<u8>>> = (0..n).map(|_| None).collect();
        for k in 1..n {
            let from = (self.rank + n - k) % n;
            let mut buf = vec![0u8; mine.len()];
            self.recv_from(from, &mut buf)?;
            got[from] = Some(buf);
        }
        Ok(got)
    }

    /// Runs ring `steps` over `buf` (segment byte ranges `seg`): the sender thread sends
    /// `seg[step.send]` to the right while this thread receives `seg[step.recv]` from the left.
    /// A reducing step writes `local (op) received` into `buf`; the first step sends from
    /// `local`, which is this rank's own data (`buf` itself for an in-place all-reduce). Chunk
    /// `j` of step `t + 1` is sent once chunk `j` of step `t` has arrived.
    #[allow(clippy::too_many_arguments)]
    fn ring(
        &self,
        buf: *mut u8,
        seg: &[Range<usize>],
        esize: usize,
        steps: &[Step],
        local: *const u8,
        op: CollectiveReduce,
        dtype: Dtype,
    ) -> Result<()> {
        let n = self.n();
        let right = self.mesh.link(self.peer((self.rank + 1) % n))?;
        let left = self.mesh.link(self.peer((self.rank + n - 1) % n))?;
        let shared = SharedPtr(buf);
        let first = SharedPtr(local as *mut u8);
        let id = self.id;
        let mesh = &self.mesh;
        // Receives chunk `c` of a step into `buf`, reducing straight from what arrives (no
        // extra copy on shared memory).
        let recv_chunk = |st: &Step, c: Range<usize>| -> Result<()> {
            // SAFETY: nothing reads this range while it is written (see the sender's note);
            // `buf` outlives the call.
            let dst = unsafe { std::slice::from_raw_parts_mut(shared.get().add(c.start), c.len()) };
            if !st.reduce {
                return mesh.check(left, left.recv(id, dst));
            }
            let in_place = std::ptr::eq(first.get(), shared.get());
            let mut off = 0;
            let mut fold = |piece: &[u8]| {
                let d = &mut dst[off..off + piece.len()];
                if in_place {
                    reduce_into(op, dtype, d, piece);
                } else {
                    // SAFETY: `local` is this rank's own input, a separate buffer that
                    // outlives the call; only read.
                    let mine = unsafe {
                        std::slice::from_raw_parts(first.get().add(c.start + off), piece.len())
                    };
                    reduce_to(op, dtype, d, mine, piece);
                }
                off += piece.len();
            };
            mesh.check(left, left.recv_with(id, c.len(), &mut fold))
        };
        let send_chunk = move |t: usize, c: Range<usize>| -> Result<()> {
            let base = if t == 0 { first.get() } else { shared.get() };
            // SAFETY: this range is not written while it is read: it was received (and reduced)
            // at step t - 1, and is written again only n steps later, for data that our right
            // neighbour can send only after it has received this chunk from us.
            let data = unsafe { std::slice::from_raw_parts(base.add(c.start), c.len()) };
            mesh.check(right, right.send(id, data))
        };
        if left.shm.is_some() && right.shm.is_some() {
            // Shared memory on both sides: a send only waits while the peer's ring holds
            // several unread chunks, which cannot happen all around the ring at once, so one
            // thread can alternate sends and receives chunk by chunk (no sender thread to
            // start: what medium-sized messages need).
            for (t, st) in steps.iter().enumerate() {
                let sends: Vec<Range<usize>> = chunks(&seg[st.send], esize).collect();
                let recvs: Vec<Range<usize>> = chunks(&seg[st.recv], esize).collect();
                for k in 0..sends.len().max(recvs.len()) {
                    if let Some(c) = sends.get(k) {
                        send_chunk(t, c.clone())?;
                    }
                    if let Some(c) = recvs.get(k) {
                        recv_chunk(st, c.clone())?;
                    }
                }
            }
            return Ok(());
        }
        // TCP: a full socket blocks the writer until the reader drains it, so sends run on
        // their own thread while this one receives.
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let sender = scope.spawn(move || -> Result<()> {
                for (t, st) in steps.iter().enumerate() {
                    for c in chunks(&seg[st.send], esize) {
                        // The chunk sent at step t + 1 is the one received at step t.
                        if t > 0 && rx.recv().is_err() {
                            return Ok(()); // the receiving side failed and reports it
                        }
                        send_chunk(t, c)?;
                    }
                }
                Ok(())
            });
            let received = (|| -> Result<()> {
                for st in steps {
                    for c in chunks(&seg[st.recv], esize) {
                        recv_chunk(st, c)?;
                        let _ = tx.send(());
                    }
                }
                Ok(())
            })();
            drop(tx);
            let sent = sender
                .join()
                .unwrap_or_else(|_| Err(Error::Io("ring sender thread panicked".into())));
            received.and(sent)
        })
    }

    /// Whether this rank may accumulate a reduction straight into its own data: rank 0's data
    /// comes first in rank order anyway, and with two ranks summing both orders give the same
    /// bits (IEEE addition, wrapping integer addition and `or` are commutative). Other ranks
    /// accumulate in a scratch that starts from rank 0's data.
    fn reduces_in_place(&self, op: CollectiveReduce) -> bool {
        self.rank == 0 || (self.n() == 2 && op == CollectiveReduce::Sum)
    }

    /// Small messages: everyone sends its data to everyone, and each rank reduces what arrives
    /// in rank order (bit-identical everywhere) straight from the receive path, into its own
    /// buffer where [`Self::reduces_in_place`], else into one scratch copy.
    fn direct_all_reduce(&self, op: CollectiveReduce, dtype: Dtype, data: &mut [u8]) -> Result<()> {
        let (n, r, len) = (self.n(), self.rank, data.len());
        for k in 1..n {
            self.send_to((r + k) % n, data)?;
        }
        let fold_from =
            |k: usize, target: &mut [u8]| self.reduce_from(k, op, dtype, target, false, 1);
        if self.reduces_in_place(op) {
            for k in (0..n).filter(|&k| k != r) {
                fold_from(k, data)?;
            }
            return Ok(());
        }
        let mut acc = vec![0u8; len];
        self.recv_from(0, &mut acc)?;
        for k in 1..n {
            if k == r {
                reduce_into(op, dtype, &mut acc, data);
            } else {
                fold_from(k, &mut acc)?;
            }
        }
        data.copy_from_slice(&acc);
        Ok(())
    }

    /// Chooses, with every other rank, how small all-reduces run (call once, on the world
    /// group, before any other collective): by recursive doubling if any rank asks for it, else
    /// by the direct exchange. A rank asks for it where `TESSERA_SMALL_ALLREDUCE=doubling`, or,
    /// unset (or `auto`), where its host runs more ranks than it has cores: there every message
    /// may cost a wake-up, and fewer messages beat fewer network latencies (3 ranks on 2 cores:
    /// 6.4-6.6 µs against 7.4-8.1 for 4 B to 256 B); with a core per rank the direct
    /// exchange's single latency wins. `TESSERA_SMALL_ALLREDUCE=direct` asks for the direct
    /// exchange (another rank's `doubling` still wins).
    pub(crate) fn agree_small_all_reduce(&self) -> Result<()> {
        let want = match std::env::var("TESSERA_SMALL_ALLREDUCE") {
            Err(_) => crate::shm::oversubscribed(),
            Ok(v) => match v.trim() {
                "" | "auto" => crate::shm::oversubscribed(),
                "doubling" => true,
                "direct" => false,
                other => {
                    return Err(Error::Config(format!(
                        "TESSERA_SMALL_ALLREDUCE={other:?}: use direct, doubling or auto"
                    )));
                }
            },
        };
        let mut flag = [want as u8];
        {
            let _g = self.begin()?;
            self.direct_all_reduce(CollectiveReduce::Max, Dtype::U8, &mut flag)?;
        }
        self.mesh.set_small_all_reduce_by_doubling(flag[0] != 0);
        Ok(())
    }

    /// Small messages by recursive doubling: ranks past the largest power of two `p` first hand
    /// their data to rank `r - p` and get the result back at the end; the `p` others exchange
    /// with rank `r ^ d` for `d = 1, 2, ..`, each pair combining the lower rank's block first,
    /// so both sides compute the same expression (bit-identical). `2 (n - p) + p log2 p`
    /// messages where the direct exchange sends `n (n - 1)`.
    ///
    /// Faults: a wait on a peer that may itself be waiting on others is more patient (see
    /// [`crate::link::Link::recv_patiently`]): the rank next to a hung one names it after the
    /// timeout, and its abort reaches the others before theirs would name the wrong rank. The
    /// farthest wait gives up after `2 + log2 p` timeouts at most.
    fn doubling_all_reduce(
        &self,
        op: CollectiveReduce,
        dtype: Dtype,
        data: &mut [u8],
    ) -> Result<()> {
        let (n, r) = (self.n(), self.rank);
        let p = 1usize << (usize::BITS - 1 - n.leading_zeros());
        let rounds = p.trailing_zeros();
        let extras = (n > p) as u32;
        if r >= p {
            self.send_to(r - p, data)?;
            return self.recv_patiently_from(r - p, data, 2 + rounds);
        }
        if r + p < n {
            self.reduce_from(r + p, op, dtype, data, false, 1)?;
        }
        let mut d = 1;
        let mut round = 0;
        while d < p {
            let peer = r ^ d;
            self.send_to(peer, data)?;
            self.reduce_from(peer, op, dtype, data, peer < r, 1 + extras + round)?;
            d <<= 1;
            round += 1;
        }
        if r + p < n {
            self.send_to(r + p, data)?;
        }
        Ok(())
    }

    /// Medium messages: a direct reduce-scatter then a direct all-gather. Each rank sends
    /// every other rank one segment per round: the ring's traffic in two network latencies
    /// instead of `2 (n-1)`. Segment `k` is reduced on rank `k` alone, in rank order, then
    /// copied to everyone (bit-identical results).
    fn two_round(
        &self,
        op: CollectiveReduce,
        dtype: Dtype,
        data: &mut [u8],
        seg: &[Range<usize>],
    ) -> Result<()> {
        let (n, r) = (self.n(), self.rank);
        let mine = seg[r].clone();
        let reduced = self.direct_reduce_scatter(op, dtype, data, seg)?;
        data[mine.clone()].copy_from_slice(&reduced);
        for k in 1..n {
            self.send_to((r + k) % n, &data[mine.clone()])?;
        }
        for k in 1..n {
            let from = (r + n - k) % n;
            self.recv_from(from, &mut data[seg[from].clone()])?;
        }
        Ok(())
    }

    /// Direct reduce-scatter: every rank sends rank `k` its segment `seg[k]` of `src`, then
    /// reduces the segments it received (and its own) in rank order: the same bits wherever
    /// segment `r` is computed. Returns this rank's reduced segment.
    fn direct_reduce_scatter(
        &self,
        op: CollectiveReduce,
        dtype: Dtype,
        src: &[u8],
        seg: &[Range<usize>],
    ) -> Result<Vec<u8>> {
        let (n, r) = (self.n(), self.rank);
        for k in 1..n {
            let to = (r + k) % n;
            self.send_to(to, &src[seg[to].clone()])?;
        }
        let mine = seg[r].clone();
        let mut parts: Vec<Option<Vec<u8>>> = (0..n).map(|_| None).collect();
        for k in 1..n {
            let from = (r + n - k) % n;
            let mut buf = vec![0u8; mine.len()];
            self.recv_from(from, &mut buf)?;
            parts[from] = Some(buf);
        }
        let mut acc: Option<Vec<u8>> = None;
        for p in parts {
            let x = p.unwrap_or_else(|| src[mine.clone()].to_vec());
            match acc.as_mut() {
                None => acc = Some(x),
                Some(a) => reduce_into(op, dtype, a, &x),
            }
        }
        Ok(acc.unwrap_or_default())
    }

    /// Every peer's process id when a collective over `bytes` in all should read the peers'
    /// memory directly: at least [`CMA_MIN`], and all members on this host and readable (see
    /// `cma.rs`); `None` otherwise. This rank's own entry is 0.
    fn cma_pids(&self, bytes: usize) -> Option<Vec<i32>> {
        if bytes < CMA_MIN {
            return None;
        }
        (0..self.n())
            .map(|k| {
                if k == self.rank {
                    Some(0)
                } else {
                    self.mesh.link(self.peer(k)).ok()?.cma_pid
                }
            })
            .collect()
    }

    /// Reads `dst.len()` bytes at address `addr` of group rank `k`'s process.
    fn read_peer(&self, k: usize, pid: i32, addr: u64, dst: &mut [u8]) -> Result<()> {
        let link = self.mesh.link(self.peer(k))?;
        let r = crate::cma::read(pid, addr, dst).map_err(|e| {
            // The peer's process is gone: report it as a lost peer, like a closed connection.
            if e.raw_os_error() == Some(libc::ESRCH) {
                crate::link::LinkError::Io(std::io::ErrorKind::UnexpectedEof.into())
            } else {
                crate::link::LinkError::Io(e)
            }
        });
        self.mesh.check(link, r)
    }

    /// One byte to every peer, then one from every peer: everyone has reached this point.
    fn all_reached(&self) -> Result<()> {
        self.exchange(&[1]).map(drop)
    }

    /// Tells every peer where this rank's buffer for the current collective is (`buf`) and
    /// learns theirs; all buffers must be `len` bytes. Returns the addresses by group rank.
    fn cma_addresses(&self, buf: *const u8, len: usize) -> Result<Vec<u64>> {
        let mut mine = [0u8; 16];
        mine[..8].copy_from_slice(&(buf as u64).to_le_bytes());
        mine[8..].copy_from_slice(&(len as u64).to_le_bytes());
        let mut addrs = vec![0u64; self.n()];
        for (from, b) in self.exchange(&mine)?.into_iter().enumerate() {
            let Some(b) = b else { continue };
            let theirs = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
            if theirs != len as u64 {
                let link = self.mesh.link(self.peer(from))?;
                return self.mesh.check(
                    link,
                    Err(crate::link::LinkError::Protocol(format!(
                        "a collective over {theirs} bytes met one over {len}: the ranks called collectives with different shapes, dtypes or orders"
                    ))),
                );
            }
            addrs[from] = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
        }
        Ok(addrs)
    }

    /// Reduces bytes `at..at + dst.len()` of every rank's buffer into `dst`, which holds this
    /// rank's own contribution, reading the peers' parts directly (256 KiB pieces), in rank
    /// order so every rank's segments carry the same bits (in place where
    /// [`Self::reduces_in_place`], else in a scratch piece that starts from rank 0's part).
    fn cma_reduce(
        &self,
        op: CollectiveReduce,
        dtype: Dtype,
        dst: &mut [u8],
        at: usize,
        addrs: &[u64],
        pids: &[i32],
    ) -> Result<()> {
        const PIECE: usize = 256 << 10;
        let (n, r) = (self.n(), self.rank);
        let in_place = self.reduces_in_place(op);
        let mut tmp = vec![0u8; PIECE.min(dst.len())];
        let mut acc = vec![0u8; if in_place { 0 } else { PIECE.min(dst.len()) }];
        let mut off = 0;
        while off < dst.len() {
            let e = (off + PIECE).min(dst.len());
            let (m, src) = (e - off, (at + off) as u64);
            if in_place {
                for k in (0..n).filter(|&k| k != r) {
                    self.read_peer(k, pids[k], addrs[k] + src, &mut tmp[..m])?;
                    reduce_into(op, dtype, &mut dst[off..e], &tmp[..m]);
                }
            } else {
                self.read_peer(0, pids[0], addrs[0] + src, &mut acc[..m])?;
                for k in 1..n {
                    if k == r {
                        reduce_into(op, dtype, &mut acc[..m], &dst[off..e]);
                    } else {
                        self.read_peer(k, pids[k], addrs[k] + src, &mut tmp[..m])?;
                        reduce_into(op, dtype, &mut acc[..m], &tmp[..m]);
                    }
                }
                dst[off..e].copy_from_slice(&acc[..m]);
            }
            off = e;
        }
        Ok(())
    }

    /// All-reduce with every member on this host and readable (see `cma.rs`): each rank
    /// reduces its segment from the others' buffers, then, once everyone has, reads the other
    /// reduced segments straight into place. Each byte is copied once per move, where the
    /// shared-memory ring copies it into the ring and out again. No rank returns (and reuses
    /// its buffer) before every rank has finished reading it.
    fn cma_all_reduce(
        &self,
        op: CollectiveReduce,
        dtype: Dtype,
        data: &mut [u8],
        pids: &[i32],
    ) -> Result<()> {
        let (n, r, len) = (self.n(), self.rank, data.len());
        let seg = segments(len / dtype.size(), n, dtype.size());
        let addrs = self.cma_addresses(data.as_ptr(), len)?;
        let s = seg[r].clone();
        self.cma_reduce(op, dtype, &mut data[s.clone()], s.start, &addrs, pids)?;
        // Nobody reads a segment before its owner has reduced it...
        self.all_reached()?;
        for k in (0..n).filter(|&k| k != r) {
            let sk = seg[k].clone();
            self.read_peer(k, pids[k], addrs[k] + sk.start as u64, &mut data[sk])?;
        }
        // ...and nobody reuses its buffer before everyone has read from it.
        self.all_reached()
    }

    /// All-gather by reading every peer's block straight into place (see `cma_all_reduce`).
    fn cma_all_gather(&self, input: &[u8], output: &mut [u8], pids: &[i32]) -> Result<()> {
        let (n, r, b) = (self.n(), self.rank, input.len());
        let addrs = self.cma_addresses(input.as_ptr(), b)?;
        for k in (0..n).filter(|&k| k != r) {
            self.read_peer(k, pids[k], addrs[k], &mut output[k * b..(k + 1) * b])?;
        }
        self.all_reached()
    }

    /// Reduce-scatter: this rank's block reduced from every input, read directly.
    fn cma_reduce_scatter(
        &self,
        op: CollectiveReduce,
        dtype: Dtype,
        input: &[u8],
        output: &mut [u8],
        pids: &[i32],
    ) -> Result<()> {
        let (r, b) = (self.rank, output.len());
        let addrs = self.cma_addresses(input.as_ptr(), input.len())?;
        output.copy_from_slice(&input[r * b..(r + 1) * b]);
        self.cma_reduce(op, dtype, output, r * b, &addrs, pids)?;
        self.all_reached()
    }

    fn begin(&self) -> Result<std::sync::MutexGuard<'_, ()>> {
        self.mesh.begin()
    }
}

fn core<T>(op: &'static str, r: Result<T>) -> tessera_core::Result<T> {
    r.map_err(|e| e.into_core(op))
}

impl Communicator for RingComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.n()
    }

    fn backend(&self) -> &str {
        "ring"
    }

    fn transport(&self, peer: usize) -> Transport {
        match self.mesh.link(self.peer(peer)) {
            Ok(l) if l.cma_pid.is_some() => Transport::SharedMemoryDirectReads,
            Ok(l) if l.shm.is_some() => Transport::SharedMemory,
            Ok(_) => Transport::Tcp,
            Err(_) => Transport::Unknown,
        }
    }

    fn all_reduce(
        &self,
        op: CollectiveReduce,
        dtype: Dtype,
        data: &mut [u8],
    ) -> tessera_core::Result<()> {
        let name = tessera_core::collective::CollectiveOp::AllReduce(op).name();
        let n = self.n();
        let esize = dtype.size();
        let elems = data.len() / esize;
        if n == 1 || elems == 0 {
            return Ok(());
        }
        let _g = core(name, self.begin())?;
        if data.len() <= DIRECT_MAX || elems < n {
            if self.small_by_doubling() {
                return core(name, self.doubling_all_reduce(op, dtype, data));
            }
            return core(name, self.direct_all_reduce(op, dtype, data));
        }
        if let Some(pids) = self.cma_pids(data.len()) {
            return core(name, self.cma_all_reduce(op, dtype, data, &pids));
        }
        let seg = segments(elems, n, esize);
        if seg.iter().all(|s| s.len() <= DIRECT_MAX) {
            return core(name, self.two_round(op, dtype, data, &seg));
        }
        let r = self.rank;
        let m = |k: isize| (k.rem_euclid(n as isize)) as usize;
        let mut steps = Vec::with_capacity(2 * (n - 1));
        for t in 0..n as isize - 1 {
            steps.push(Step {
                send: m(r as isize - 1 - t),
                recv: m(r as isize - 2 - t),
                reduce: true,
            });
        }
        for s in 0..n as isize - 1 {
            steps.push(Step {
                send: m(r as isize - s),
                recv: m(r as isize - s - 1),
                reduce: false,
            });
        }
        let p = data.as_mut_ptr();
        core(name, self.ring(p, &seg, esize, &steps, p, op, dtype))
    }

    fn all_gather(&self, input: &[u8], output: &mut [u8]) -> tessera_core::Result<()> {
        let n = self.n();
        let b = input.len();
        if output.len() != b * n {
            return Err(tessera_core::Error::Invalid {
                op: "all_gather",
                msg: format!("output of {} bytes for {n} blocks of {b}", output.len()),
            });
        }
        let r = self.rank;
        output[r * b..(r + 1) * b].copy_from_slice(input);
        if n == 1 || b == 0 {
            return Ok(());
        }
        let _g = core("all_gather", self.begin())?;
        if let Some(pids) = self.cma_pids(output.len()) {
            return core("all_gather", self.cma_all_gather(input, output, &pids));
        }
        if b <= DIRECT_MAX {
            let got = core("all_gather", self.exchange(input))?;
            for (k, g) in got.into_iter().enumerate() {
                if let Some(g) = g {
                    output[k * b..(k + 1) * b].copy_from_slice(&g);
                }
            }
            return Ok(());
        }
        let seg: Vec<Range<usize>> = (0..n).map(|k| k * b..(k + 1) * b).collect();
        let m = |k: isize| (k.rem_euclid(n as isize)) as usize;
        let steps: Vec<Step> = (0..n as isize - 1)
            .map(|s| Step {
                send: m(r as isize - s),
                recv: m(r as isize - s - 1),
                reduce: false,
            })
            .collect();
        let p = output.as_mut_ptr();
        core(
            "all_gather",
            self.ring(p, &seg, 1, &steps, p, CollectiveReduce::Sum, Dtype::U8),
        )
    }

    fn reduce_scatter(
        &self,
        op: CollectiveReduce,
        dtype: Dtype,
        input: &[u8],
        output: &mut [u8],
    ) -> tessera_core::Result<()> {
        let n = self.n();
        let b = output.len();
        if input.len() != b * n {
            return Err(tessera_core::Error::Invalid {
                op: "sum_scatter",
                msg: format!("input of {} bytes for {n} blocks of {b}", input.len()),
            });
        }
        let r = self.rank;
        if n == 1 || b == 0 {
            output.copy_from_slice(&input[r * b..(r + 1) * b]);
            return Ok(());
        }
        let _g = core("sum_scatter", self.begin())?;
        if let Some(pids) = self.cma_pids(input.len()) {
            return core(
                "sum_scatter",
                self.cma_reduce_scatter(op, dtype, input, output, &pids),
            );
        }
        if b <= DIRECT_MAX {
            let seg: Vec<Range<usize>> = (0..n).map(|k| k * b..(k + 1) * b).collect();
            let reduced = core(
                "sum_scatter",
                self.direct_reduce_scatter(op, dtype, input, &seg),
            )?;
            output.copy_from_slice(&reduced);
            return Ok(());
        }
        // Ring reduce-scatter into a work buffer: each step's received chunk is reduced with
        // this rank's input block; the last step's segment is this rank's block.
        let seg: Vec<Range<usize>> = (0..n).map(|k| k * b..(k + 1) * b).collect();
        let m = |k: isize| (k.rem_euclid(n as isize)) as usize;
        let steps: Vec<Step> = (0..n as isize - 1)
            .map(|t| Step {
                send: m(r as isize - 1 - t),
                recv: m(r as isize - 2 - t),
                reduce: true,
            })
            .collect();
        // Partial sums land in a work buffer (never a copy of the input: the first step sends
        // from the input, and each reduction reads the input's segment directly).
        let mut work = vec![0u8; input.len()];
        let p = work.as_mut_ptr();
        core(
            "sum_scatter",
            self.ring(p, &seg, dtype.size(), &steps, input.as_ptr(), op, dtype),
        )?;
        output.copy_from_slice(&work[r * b..(r + 1) * b]);
        Ok(())
    }

    fn send(&self, data: &[u8], dst: usize) -> tessera_core::Result<()> {
        let _g = core("send", self.begin())?;
        core("send", self.send_to(dst, data))
    }

    fn recv(&self, data: &mut [u8], src: usize) -> tessera_core::Result<()> {
        let _g = core("recv", self.begin())?;
        core("recv", self.recv_from(src, data))
    }
}
