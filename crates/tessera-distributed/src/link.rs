//! One authenticated TCP connection to a peer, carrying frames.
//!
//! A frame is a 36-byte header (magic, kind, group id, sequence number, payload length, payload
//! CRC-32C, header checksum) and the payload, sealed with ChaCha20-Poly1305 when encryption is
//! on (the header is the associated data, the sequence number the nonce; the tag replaces the
//! CRC). The receiver knows exactly what it
//! expects next (group, sequence, length), so a desynchronised, truncated or corrupted stream is
//! an error naming the peer, never wrong data. Reading and writing have separate locks: a ring
//! step sends to one neighbour while it receives from the other (the same peer when there are
//! two ranks).

use crate::checksum::crc32c;
use crate::error::Error;
use crate::shm::ShmPair;
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

const MAGIC: &[u8; 4] = b"TSRF";
const HEADER: usize = 36;
const TAG: usize = 16;
/// Payloads up to this size go out in one write together with their header (one packet on a
/// fast link: what small-message latency needs).
const COALESCE: usize = 64 * 1024;
/// Longest abort message accepted.
const MAX_ABORT: usize = 16 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Kind {
    Data = 1,
    Abort = 2,
}

fn checksum(b: &[u8]) -> u32 {
    // FNV-1a: catches a stream that lost its place, not an attacker (that is the AEAD's job).
    b.iter().fold(0x811c_9dc5u32, |h, &x| {
        (h ^ x as u32).wrapping_mul(0x0100_0193)
    })
}

/// Bytes of the header covered by its checksum (and used as AEAD associated data).
const SIGNED: usize = 32;

fn header(kind: Kind, group: u32, seq: u64, len: u64, payload_crc: u32) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(MAGIC);
    h[4] = kind as u8;
    h[8..12].copy_from_slice(&group.to_le_bytes());
    h[12..20].copy_from_slice(&seq.to_le_bytes());
    h[20..28].copy_from_slice(&len.to_le_bytes());
    h[28..32].copy_from_slice(&payload_crc.to_le_bytes());
    let c = checksum(&h[..SIGNED]);
    h[SIGNED..].copy_from_slice(&c.to_le_bytes());
    h
}

fn nonce(seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&seq.to_le_bytes());
    Nonce::from(n)
}

struct Half {
    stream: TcpStream,
    seq: u64,
    cipher: Option<ChaCha20Poly1305>,
    scratch: Vec<u8>,
}

/// A connection to rank `peer`: TCP, plus shared memory for data when the peer is on this host.
pub(crate) struct Link {
    pub peer: usize,
    pub addr: String,
    timeout: Duration,
    reader: Mutex<Half>,
    writer: Mutex<Half>,
    control: TcpStream,
    /// Data frames go here instead of TCP when set (same host).
    pub shm: Option<ShmPair>,
    /// The peer's process id when this process may read the peer's memory directly (same host,
    /// checked both ways when the mesh was built; see `cma.rs`).
    pub cma_pid: Option<i32>,
    /// More TCP connections to the same peer: large messages are split across all of them
    /// (each with its own frames and sequence numbers), so several flows share the work.
    stripes: Vec<Stripe>,
}

/// One extra connection of a link.
struct Stripe {
    reader: Mutex<Half>,
    writer: Mutex<Half>,
    control: TcpStream,
}

impl Stripe {
    /// One connection's two halves (each with its own key when encrypting), with TCP_NODELAY
    /// and the timeouts set.
    fn open(
        stream: TcpStream,
        timeout: Duration,
        keys: Option<([u8; 32], [u8; 32])>,
    ) -> std::io::Result<Stripe> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let (send_key, recv_key) = match keys {
            Some((s, r)) => (Some(s), Some(r)),
            None => (None, None),
        };
        let half = |s: TcpStream, key: Option<[u8; 32]>| Half {
            stream: s,
            seq: 0,
            cipher: key.map(|k| ChaCha20Poly1305::new(&k.into())),
            scratch: Vec::new(),
        };
        Ok(Stripe {
            reader: Mutex::new(half(stream.try_clone()?, recv_key)),
            writer: Mutex::new(half(stream.try_clone()?, send_key)),
            control: stream,
        })
    }
}

/// Frames up to this payload size poll their socket before blocking ([`poll_readable`]).
const POLL_MAX: usize = 64 << 10;

/// Polls `stream` until a byte can be read, the peer closes or fails it, or the policy's
/// budget passes ([`crate::shm::socket_poll`]); the blocking read that follows then returns at
/// once, or waits (and times out) as usual. Only ever shortens a wait.
fn poll_readable(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let (budget, yields) = crate::shm::socket_poll();
    if budget.is_zero() {
        return;
    }
    let fd = stream.as_raw_fd();
    let mut start = None;
    for i in 0u32.. {
        let mut b = 0u8;
        // SAFETY: reads at most one byte into `b`; MSG_PEEK leaves it in the socket.
        let n = unsafe {
            libc::recv(
                fd,
                (&mut b as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 || std::io::Error::last_os_error().kind() != ErrorKind::WouldBlock {
            return; // data, end of stream, or an error: the read reports it
        }
        // The clock is read once a first round of polls has failed.
        if i >= 16 && start.get_or_insert_with(std::time::Instant::now).elapsed() >= budget {
            return;
        }
        if yields && i >= 8 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Messages at least this long are split across a link's connections.
const STRIPE_MIN: usize = 1 << 20;

/// `k` contiguous parts of `len` bytes, split on 8-byte boundaries.
fn stripe_ranges(len: usize, k: usize) -> Vec<std::ops::Range<usize>> {
    let cut = |i: usize| if i == k { len } else { (len * i / k) & !7 };
    (0..k).map(|i| cut(i)..cut(i + 1)).collect()
}

fn join_all(
    first: Result<(), LinkError>,
    rest: Vec<std::thread::ScopedJoinHandle<'_, Result<(), LinkError>>>,
) -> Result<(), LinkError> {
    let mut res = first;
    for h in rest {
        let r = h
            .join()
            .unwrap_or_else(|_| Err(LinkError::Protocol("a connection thread panicked".into())));
        if res.is_ok() {
            res = r;
        }
    }
    res
}

const SHM_MAGIC: u32 = 0x4d48_5354; // "TSHM"
/// A shared-memory message's header: the ring's arrival word (payload length and flags), then
/// magic, group and sequence number.
const SHM_HEADER: usize = 24;

fn pad8(n: usize) -> usize {
    (8 - n % 8) % 8
}

/// Checks a shared-memory message's header `h` against what the reader expects: message
/// number `seq` (counted on), of `group`, with a `len`-byte payload.
fn check_shm_header(h: &[u8], seq: &mut u64, group: u32, len: usize) -> Result<(), LinkError> {
    let word = |a: usize| u32::from_le_bytes(h[a..a + 4].try_into().unwrap_or_default());
    let long = |a: usize| u64::from_le_bytes(h[a..a + 8].try_into().unwrap_or_default());
    let (arrival, magic, g, got) = (long(0), word(8), word(12), long(16));
    let n = match crate::shm::arrival_code(arrival) {
        Some(n) if magic == SHM_MAGIC => n as usize,
        _ => {
            return Err(LinkError::Protocol(
                "corrupted shared-memory message header".into(),
            ));
        }
    };
    if got != *seq {
        return Err(LinkError::Protocol(format!(
            "message {got} arrived where message {seq} was expected"
        )));
    }
    *seq += 1;
    if g != group {
        return Err(LinkError::Protocol(format!(
            "a message of group {g:#x} arrived during a collective of group {group:#x}: the ranks called collectives in different orders"
        )));
    }
    if n != len {
        return Err(LinkError::Protocol(format!(
            "a {n}-byte message arrived where {len} bytes were expected: the ranks called collectives with different shapes, dtypes or orders"
        )));
    }
    Ok(())
}

/// Whether the TCP side of a shared-memory link still has a live peer.
enum PeerState {
    Alive,
    Gone,
    /// Bytes arrived on TCP: with data on shared memory, that is an abort frame.
    Pending,
}

fn peer_state(s: &TcpStream) -> PeerState {
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    // SAFETY: a non-blocking peek of one byte into a local buffer.
    let r = unsafe {
        libc::recv(
            s.as_raw_fd(),
            b.as_mut_ptr() as *mut libc::c_void,
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match r {
        0 => PeerState::Gone,
        r if r > 0 => PeerState::Pending,
        _ => match std::io::Error::last_os_error().kind() {
            ErrorKind::WouldBlock | ErrorKind::Interrupted => PeerState::Alive,
            _ => PeerState::Gone,
        },
    }
}

/// Failure of one link operation, before it is tied to a rank.
#[derive(Debug)]
pub(crate) enum LinkError {
    Io(std::io::Error),
    Protocol(String),
    Aborted(String),
}

impl From<std::io::Error> for LinkError {
    fn from(e: std::io::Error) -> Self {
        LinkError::Io(e)
    }
}

impl Link {
    pub fn new(
        stream: TcpStream,
        peer: usize,
        addr: String,
        timeout: Duration,
        keys: Option<([u8; 32], [u8; 32])>,
    ) -> std::io::Result<Link> {
        let Stripe {
            reader,
            writer,
            control,
        } = Stripe::open(stream, timeout, keys)?;
        Ok(Link {
            peer,
            addr,
            timeout,
            reader,
            writer,
            control,
            shm: None,
            cma_pid: None,
            stripes: Vec::new(),
        })
    }

    /// Adds another authenticated connection to the same peer.
    pub fn add_stripe(
        &mut self,
        stream: TcpStream,
        keys: Option<([u8; 32], [u8; 32])>,
    ) -> std::io::Result<()> {
        self.stripes.push(Stripe::open(stream, self.timeout, keys)?);
        Ok(())
    }

    /// Whether `half` (this link's reader or writer: each direction is only ever used by one
    /// thread at a time, so this never waits on the other direction) encrypts its frames. Then
    /// the parts of a striped message are sealed and opened on threads of their own, in
    /// parallel: the cipher is the work.
    fn encrypted(half: &Mutex<Half>) -> bool {
        Self::lock(half).cipher.is_some()
    }

    /// Sends a large message split across all connections at once.
    ///
    /// Unencrypted, one thread writes the parts one after the other: each write returns once
    /// its part is in the kernel's socket buffer, so the connections still carry their parts
    /// at the same time, and no thread is started per message (on a 2-core host running 3
    /// ranks, a thread per part and message cost a quarter of the bandwidth at 10 Gbit/s).
    /// The receiver reads the parts in the same order, so neither side waits on the other's
    /// later parts.
    fn send_striped(&self, group: u32, data: &[u8]) -> Result<(), LinkError> {
        let parts = stripe_ranges(data.len(), 1 + self.stripes.len());
        if !Self::encrypted(&self.writer) {
            let writers =
                std::iter::once(&self.writer).chain(self.stripes.iter().map(|s| &s.writer));
            for (w, r) in writers.zip(&parts) {
                Self::lock(w).write_frame(Kind::Data, group, &data[r.clone()])?;
            }
            return Ok(());
        }
        std::thread::scope(|sc| {
            let rest: Vec<_> = self
                .stripes
                .iter()
                .zip(&parts[1..])
                .map(|(st, r)| {
                    let part = &data[r.clone()];
                    sc.spawn(move || Self::lock(&st.writer).write_frame(Kind::Data, group, part))
                })
                .collect();
            let first =
                Self::lock(&self.writer).write_frame(Kind::Data, group, &data[parts[0].clone()]);
            join_all(first, rest)
        })
    }

    /// Receives a message sent by `send_striped`.
    fn recv_striped(&self, group: u32, out: &mut [u8]) -> Result<(), LinkError> {
        let parts = stripe_ranges(out.len(), 1 + self.stripes.len());
        let mut pieces: Vec<&mut [u8]> = Vec::with_capacity(parts.len());
        let mut rest = out;
        for r in &parts {
            let (a, b) = rest.split_at_mut(r.len());
            pieces.push(a);
            rest = b;
        }
        if !Self::encrypted(&self.reader) {
            // In the sender's order (see `send_striped`).
            let readers =
                std::iter::once(&self.reader).chain(self.stripes.iter().map(|s| &s.reader));
            for (r, piece) in readers.zip(pieces) {
                Self::lock(r).read_frame(group, piece)?;
            }
            return Ok(());
        }
        let mut pieces = pieces.into_iter();
        let first_piece = pieces.next().unwrap_or_default();
        std::thread::scope(|sc| {
            let rest: Vec<_> = self
                .stripes
                .iter()
                .zip(pieces)
                .map(|(st, piece)| {
                    sc.spawn(move || Self::lock(&st.reader).read_frame(group, piece))
                })
                .collect();
            let first = Self::lock(&self.reader).read_frame(group, first_piece);
            join_all(first, rest)
        })
    }

    /// The check a shared-memory wait runs between sleeps: no progress for `patience` times
    /// the timeout, or the TCP side closed or carrying an abort, ends the wait.
    fn shm_check(&self, patience: u32) -> impl FnMut(bool) -> Result<(), LinkError> + '_ {
        let limit = self.timeout * patience.max(1);
        // The stall is timed from the first check without progress: reading the clock on every
        // message (most never wait) costs more than the message itself.
        let mut stalled_since: Option<std::time::Instant> = None;
        move |progressed| {
            if progressed {
                stalled_since = None;
                return Ok(());
            }
            let since = *stalled_since.get_or_insert_with(std::time::Instant::now);
            match peer_state(&self.control) {
                PeerState::Alive if since.elapsed() < limit => Ok(()),
                PeerState::Alive => Err(LinkError::Io(ErrorKind::TimedOut.into())),
                PeerState::Gone => Err(LinkError::Io(ErrorKind::UnexpectedEof.into())),
                PeerState::Pending => Err(LinkError::Io(ErrorKind::ConnectionAborted.into())),
            }
        }
    }

    /// Receives the next frame and hands its payload to `f` in pieces (slices of shared memory
    /// on a same-host link: no copy). `len` is the expected payload size.
    pub fn recv_with(
        &self,
        group: u32,
        len: usize,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<(), LinkError> {
        self.recv_patiently(group, len, f, 1)
    }

    /// [`Self::recv_with`], giving up on a silent peer only after `patience` times the timeout:
    /// for a wait on a peer that may itself be waiting on another (an algorithm's later step),
    /// so that the rank which waits on the hung one directly times out first and its abort,
    /// naming that rank, reaches this one before its own timeout would name the wrong peer.
    pub fn recv_patiently(
        &self,
        group: u32,
        len: usize,
        f: &mut dyn FnMut(&[u8]),
        patience: u32,
    ) -> Result<(), LinkError> {
        if self.shm.is_none() && !self.stripes.is_empty() && len >= STRIPE_MIN {
            let mut buf = std::mem::take(&mut Self::lock(&self.reader).scratch);
            buf.resize(len, 0);
            let res = self.recv_striped(group, &mut buf);
            if res.is_ok() {
                f(&buf);
            }
            Self::lock(&self.reader).scratch = buf;
            return res;
        }
        let mut r = Self::lock(&self.reader);
        let Some(shm) = &self.shm else {
            let mut buf = std::mem::take(&mut r.scratch);
            buf.resize(len, 0);
            let res = r.read_frame_patiently(group, &mut buf, self.timeout, patience);
            if res.is_ok() {
                f(&buf);
            }
            r.scratch = buf;
            return res;
        };
        // Most small messages are found complete by their arrival word, and most of those lie
        // in one piece: header checked and payload passed on straight from the ring.
        let total = SHM_HEADER + len + pad8(len);
        if shm.await_message(len as u64, total)
            && let Some(res) = shm.read_whole(total, |m| {
                let (h, payload) = m.split_at(SHM_HEADER);
                let res = check_shm_header(h, &mut r.seq, group, len);
                if res.is_ok() {
                    f(&payload[..len]);
                }
                res
            })
        {
            return res;
        }
        // Otherwise (not there yet, wrapping, or a long message): the reads below wait as
        // needed (without loading the ring's head if the word showed it all there).
        let mut check = self.shm_check(patience);
        let mut h = [0u8; SHM_HEADER];
        let mut got = 0;
        let res = shm.read_deferred(
            SHM_HEADER,
            &mut |c| {
                h[got..got + c.len()].copy_from_slice(c);
                got += c.len();
            },
            &mut check,
        );
        if let Err(LinkError::Io(e)) = &res
            && e.kind() == ErrorKind::ConnectionAborted
        {
            // The abort frame is on TCP, and we hold the reader.
            return r.read_frame(group, &mut []);
        }
        res?;
        check_shm_header(&h, &mut r.seq, group, len)?;
        // Payload and padding in one read; the padding is not passed on.
        let mut left = len;
        let res = shm.read_with(
            len + pad8(len),
            &mut |c| {
                let take = c.len().min(left);
                if take > 0 {
                    f(&c[..take]);
                    left -= take;
                }
            },
            &mut check,
        );
        if let Err(LinkError::Io(e)) = &res
            && e.kind() == ErrorKind::ConnectionAborted
        {
            return r.read_frame(group, &mut []);
        }
        res
    }

    /// Turns a link failure into an error naming this peer.
    pub fn error(&self, e: LinkError) -> Error {
        let (rank, addr) = (self.peer, self.addr.clone());
        match e {
            LinkError::Io(e) => {
                let msg = match e.kind() {
                    ErrorKind::WouldBlock | ErrorKind::TimedOut => format!(
                        "no progress for {:.1} s: the rank hung, died without closing its connection, or is far behind (raise TESSERA_TIMEOUT if it is only slow)",
                        self.timeout.as_secs_f64()
                    ),
                    ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe => {
                        "connection lost: the process exited or was killed".to_string()
                    }
                    _ => format!("connection failed: {e}"),
                };
                Error::Peer { rank, addr, msg }
            }
            LinkError::Protocol(msg) => Error::Protocol { rank, addr, msg },
            LinkError::Aborted(msg) => Error::Aborted(format!("rank {rank} reports: {msg}")),
        }
    }

    fn lock(m: &Mutex<Half>) -> std::sync::MutexGuard<'_, Half> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one data frame of group `group`.
    pub fn send(&self, group: u32, data: &[u8]) -> Result<(), LinkError> {
        if self.shm.is_none() && !self.stripes.is_empty() && data.len() >= STRIPE_MIN {
            return self.send_striped(group, data);
        }
        let mut w = Self::lock(&self.writer);
        let Some(shm) = &self.shm else {
            return w.write_frame(Kind::Data, group, data);
        };
        // The ring puts the arrival word (the payload length) in front of this.
        let mut h = [0u8; SHM_HEADER - 8];
        h[..4].copy_from_slice(&SHM_MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&group.to_le_bytes());
        h[8..16].copy_from_slice(&w.seq.to_le_bytes());
        w.seq += 1;
        let mut check = self.shm_check(1);
        // Pad to 8 bytes so every message starts aligned (see `ShmPair::read_with`).
        let pad = &[0u8; 8][..pad8(data.len())];
        shm.write_message(data.len() as u64, &[&h, data, pad], &mut check)
    }

    /// Receives the next frame into `out`, which must be exactly the expected payload size.
    pub fn recv(&self, group: u32, out: &mut [u8]) -> Result<(), LinkError> {
        self.recv_into_patiently(group, out, 1)
    }

    /// [`Self::recv`], giving up on a silent peer after `patience` timeouts (see
    /// [`Self::recv_patiently`]).
    pub fn recv_into_patiently(
        &self,
        group: u32,
        out: &mut [u8],
        patience: u32,
    ) -> Result<(), LinkError> {
        if self.shm.is_none() {
            if !self.stripes.is_empty() && out.len() >= STRIPE_MIN {
                return self.recv_striped(group, out);
            }
            return Self::lock(&self.reader).read_frame_patiently(
                group,
                out,
                self.timeout,
                patience,
            );
        }
        let (len, mut at) = (out.len(), 0);
        let mut copy = |c: &[u8]| {
            out[at..at + c.len()].copy_from_slice(c);
            at += c.len();
        };
        self.recv_patiently(group, len, &mut copy, patience)
    }

    /// Best effort: tells the peer this group is aborting and why. A send in progress on this
    /// link (a ring chunk) is given up to 200 ms to finish first, so the abort frame does not
    /// cut a frame in half; after that the connection is closed without it.
    pub fn send_abort(&self, msg: &str) {
        Self::abort_on(&self.writer, msg);
        for st in &self.stripes {
            Self::abort_on(&st.writer, msg);
        }
    }

    fn abort_on(writer: &Mutex<Half>, msg: &str) {
        let give_up = std::time::Instant::now() + Duration::from_millis(200);
        let lock = loop {
            match writer.try_lock() {
                Ok(w) => break Some(w),
                Err(std::sync::TryLockError::Poisoned(p)) => break Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {
                    if std::time::Instant::now() >= give_up {
                        break None;
                    }
                    // Failure path only: wait for the in-flight frame.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        if let Some(mut w) = lock {
            let m = &msg.as_bytes()[..msg.len().min(MAX_ABORT)];
            let _ = w.stream.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = w.write_frame(Kind::Abort, 0, m);
        }
    }

    /// After a write to this peer failed: the reason the peer gave if it aborted (its abort
    /// frame may already sit in our receive buffer), skipping data frames in front of it.
    /// `None` when the reader is busy (its owner will read the abort itself) or nothing comes.
    pub fn pending_abort(&self) -> Option<String> {
        let mut r = self.reader.try_lock().ok()?;
        let _ = r.stream.set_read_timeout(Some(Duration::from_millis(100)));
        let mut found = None;
        for _ in 0..64 {
            let mut h = [0u8; HEADER];
            if r.stream.read_exact(&mut h).is_err() || &h[..4] != MAGIC {
                break;
            }
            let len = u64::from_le_bytes(h[20..28].try_into().unwrap_or_default());
            if h[4] == Kind::Abort as u8 {
                found = r.read_abort(&h).ok();
                break;
            }
            if std::io::copy(&mut (&mut r.stream).take(len), &mut std::io::sink()).is_err() {
                break;
            }
        }
        found
    }

    /// Closes both directions; blocked reads and writes on this link return at once.
    pub fn shutdown(&self) {
        let _ = self.control.shutdown(Shutdown::Both);
        for st in &self.stripes {
            let _ = st.control.shutdown(Shutdown::Both);
        }
    }
}

impl Half {
    fn write_frame(&mut self, kind: Kind, group: u32, data: &[u8]) -> Result<(), LinkError> {
        let (extra, crc) = match self.cipher {
            Some(_) => (TAG, 0),
            None => (0, crc32c(data)),
        };
        let h = header(kind, group, self.seq, (data.len() + extra) as u64, crc);
        let seq = self.seq;
        self.seq += 1;
        let Half {
            stream,
            cipher,
            scratch,
            ..
        } = self;
        match cipher {
            Some(c) => {
                scratch.clear();
                scratch.extend_from_slice(&h);
                scratch.extend_from_slice(data);
                let tag = c
                    .encrypt_in_place_detached(&nonce(seq), &h[..SIGNED], &mut scratch[HEADER..])
                    .map_err(|_| LinkError::Protocol("encryption failed".into()))?;
                scratch.extend_from_slice(&tag);
                stream.write_all(scratch)?;
            }
            None if data.len() <= COALESCE => {
                scratch.clear();
                scratch.extend_from_slice(&h);
                scratch.extend_from_slice(data);
                stream.write_all(scratch)?;
            }
            None => {
                stream.write_all(&h)?;
                stream.write_all(data)?;
            }
        }
        Ok(())
    }

    /// The payload of an abort frame whose header `h` was just read: bounded, and checked by
    /// its CRC or AEAD tag like any frame.
    fn read_abort(&mut self, h: &[u8; HEADER]) -> Result<String, LinkError> {
        let bad = |m: &str| LinkError::Protocol(m.to_string());
        let len = u64::from_le_bytes(h[20..28].try_into().unwrap_or_default()) as usize;
        let extra = if self.cipher.is_some() { TAG } else { 0 };
        if len > MAX_ABORT + extra || len < extra {
            return Err(LinkError::Protocol(format!("abort message of {len} bytes")));
        }
        let mut m = vec![0u8; len];
        self.stream.read_exact(&mut m)?;
        let seq = u64::from_le_bytes(h[12..20].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(h[28..32].try_into().unwrap_or_default());
        if let Some(c) = &self.cipher {
            let tag = Tag::clone_from_slice(&m[len - TAG..]);
            m.truncate(len - TAG);
            c.decrypt_in_place_detached(&nonce(seq), &h[..SIGNED], &mut m, &tag)
                .map_err(|_| bad("abort frame failed authentication"))?;
        } else if crc32c(&m) != crc {
            return Err(bad("abort frame failed its checksum"));
        }
        Ok(String::from_utf8_lossy(&m).into_owned())
    }

    /// [`Self::read_frame`] with the socket's read timeout raised to `patience` times
    /// `timeout` (its usual value) for this frame only.
    fn read_frame_patiently(
        &mut self,
        group: u32,
        out: &mut [u8],
        timeout: Duration,
        patience: u32,
    ) -> Result<(), LinkError> {
        if patience <= 1 {
            return self.read_frame(group, out);
        }
        let _ = self.stream.set_read_timeout(Some(timeout * patience));
        let res = self.read_frame(group, out);
        let _ = self.stream.set_read_timeout(Some(timeout));
        res
    }

    fn read_frame(&mut self, group: u32, out: &mut [u8]) -> Result<(), LinkError> {
        let mut h = [0u8; HEADER];
        // Polling pays where the wake-up is a large part of the wait: small frames. A large
        // one takes far longer to arrive than a wake-up, and polling would only take CPU from
        // the ranks that share this core.
        if out.len() <= POLL_MAX {
            poll_readable(&self.stream);
        }
        self.stream.read_exact(&mut h)?;
        let bad = |m: String| Err(LinkError::Protocol(m));
        if &h[..4] != MAGIC || checksum(&h[..SIGNED]).to_le_bytes() != h[SIGNED..] {
            return bad("corrupted frame header (the stream lost its place)".into());
        }
        let seq = u64::from_le_bytes(h[12..20].try_into().unwrap_or_default());
        let len = u64::from_le_bytes(h[20..28].try_into().unwrap_or_default());
        let g = u32::from_le_bytes(h[8..12].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(h[28..32].try_into().unwrap_or_default());
        // An abort may overtake data sent on shared memory: only data frames must be next.
        if seq != self.seq && h[4] != Kind::Abort as u8 {
            return bad(format!(
                "frame {seq} arrived where frame {} was expected (messages lost or repeated)",
                self.seq
            ));
        }
        self.seq += 1;
        let extra = if self.cipher.is_some() { TAG } else { 0 };
        if h[4] == Kind::Abort as u8 {
            return Err(LinkError::Aborted(self.read_abort(&h)?));
        }
        if h[4] != Kind::Data as u8 {
            return bad(format!("unknown frame kind {}", h[4]));
        }
        if g != group {
            return bad(format!(
                "a frame of group {g:#x} arrived during a collective of group {group:#x}: the ranks called collectives in different orders"
            ));
        }
        if len != (out.len() + extra) as u64 {
            return bad(format!(
                "a {}-byte message arrived where {} bytes were expected: the ranks called collectives with different shapes, dtypes or orders",
                len as usize - extra.min(len as usize),
                out.len()
            ));
        }
        self.stream.read_exact(out)?;
        if let Some(c) = &self.cipher {
            let mut tag = [0u8; TAG];
            self.stream.read_exact(&mut tag)?;
            if c.decrypt_in_place_detached(&nonce(seq), &h[..SIGNED], out, Tag::from_slice(&tag))
                .is_err()
            {
                return bad("a frame failed authentication (tampered with or corrupted)".into());
            }
        } else if crc32c(out) != crc {
            return bad("a frame's payload failed its checksum (corrupted in transit)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair(keys: bool) -> (Link, Link) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        let t = Duration::from_secs(5);
        let ka = keys.then_some((k1, k2));
        let kb = keys.then_some((k2, k1));
        (
            Link::new(a, 1, "a".into(), t, ka).unwrap(),
            Link::new(b, 0, "b".into(), t, kb).unwrap(),
        )
    }

    /// A pair of links with `extra` more connections each (as the mesh adds them).
    fn striped_pair(keys: bool, extra: usize) -> (Link, Link) {
        let (mut a, mut b) = pair(keys);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        for _ in 0..extra {
            let sa = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (sb, _) = l.accept().unwrap();
            let (k1, k2) = ([3u8; 32], [4u8; 32]);
            a.add_stripe(sa, keys.then_some((k1, k2))).unwrap();
            b.add_stripe(sb, keys.then_some((k2, k1))).unwrap();
        }
        (a, b)
    }

    /// Large messages split across several connections (one thread writing the parts in turn
    /// when unencrypted, a thread per part when encrypted) arrive whole, in both directions at
    /// once (each side's send on its own thread, as the ring sends), many times in a row.
    #[test]
    fn striped_messages_arrive_whole_both_ways() {
        for keys in [false, true] {
            let (a, b) = striped_pair(keys, 2);
            let msg = |seed: u32, len: usize| -> Vec<u8> {
                (0..len as u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed) as u8)
                    .collect()
            };
            for (round, len) in [(0u32, 3 << 20), (1, (1 << 20) + 24), (2, 5_000_003)] {
                let (ma, mb) = (msg(round, len), msg(round + 100, len));
                let (mut ga, mut gb) = (vec![0u8; len], vec![0u8; len]);
                std::thread::scope(|sc| {
                    sc.spawn(|| a.send(7, &ma).unwrap());
                    sc.spawn(|| b.send(7, &mb).unwrap());
                    sc.spawn(|| a.recv(7, &mut ga).unwrap());
                    b.recv(7, &mut gb).unwrap();
                });
                assert!(ga == mb && gb == ma, "keys {keys}, {len} bytes");
            }
        }
    }

    #[test]
    fn stripes_cover_the_message_on_8_byte_boundaries() {
        for (len, k) in [(1 << 20, 2), ((1 << 20) + 13, 3), (5_000_001, 4)] {
            let r = stripe_ranges(len, k);
            assert_eq!(r.len(), k);
            assert_eq!(r[0].start, 0);
            assert_eq!(r[k - 1].end, len);
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert_eq!(w[0].end % 8, 0);
            }
        }
    }

    /// A pair of links whose data goes through shared memory (as on one host).
    fn shm_pair(tag: &str) -> (Link, Link) {
        let (mut a, mut b) = pair(false);
        let path = format!("/dev/shm/tessera-link-test-{tag}{}", std::process::id());
        a.shm = Some(ShmPair::create(&path).unwrap());
        b.shm = Some(ShmPair::open(&path).unwrap());
        ShmPair::unlink(&path);
        (a, b)
    }

    /// Messages arrive intact (for shared memory: whole small ones and streamed long ones),
    /// and a message of another length or group is a protocol error naming it, never a hang
    /// or a misread: whether the reader expected a short message and a long one came, or the
    /// reverse. `make(tag)` gives a fresh pair of links.
    fn round_trips_and_mismatches(make: &dyn Fn(&str) -> (Link, Link)) {
        let (a, b) = make("rt");
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
        for _ in 0..3 {
            a.send(7, b"hello").unwrap();
            a.send(7, &big).unwrap();
            let mut out = [0u8; 5];
            b.recv(7, &mut out).unwrap();
            assert_eq!(&out, b"hello");
            let mut out = vec![0u8; big.len()];
            b.recv(7, &mut out).unwrap();
            assert_eq!(out, big);
        }
        let expect = |r: Result<(), LinkError>, what: &str| match r {
            Err(LinkError::Protocol(m)) => assert!(m.contains(what), "{m}"),
            _ => panic!("not detected: {what}"),
        };
        a.send(7, b"abc").unwrap();
        expect(b.recv(7, &mut [0u8; 2]), "3-byte message");
        let (a, b) = make("long");
        a.send(7, &big).unwrap();
        expect(b.recv(7, &mut [0u8; 4]), "200000-byte message");
        let (a, b) = make("short");
        a.send(7, b"abcd").unwrap();
        expect(b.recv(7, &mut vec![0u8; big.len()]), "4-byte message");
        let (a, b) = make("group");
        a.send(8, b"x").unwrap();
        expect(b.recv(7, &mut [0u8; 1]), "group");
    }

    #[test]
    fn shared_memory_messages_round_trip_and_mismatches_are_caught() {
        round_trips_and_mismatches(&shm_pair);
    }

    #[test]
    fn frames_round_trip_and_mismatches_are_caught() {
        for keys in [false, true] {
            round_trips_and_mismatches(&|_| pair(keys));
            // A flipped payload bit is caught (CRC, or the AEAD tag when encrypted).
            let (a, b) = pair(keys);
            {
                let mut w = a.writer.lock().unwrap();
                let mut raw = Vec::new();
                let crc = crc32c(b"payload");
                raw.extend_from_slice(&header(
                    Kind::Data,
                    7,
                    0,
                    7 + if keys { TAG } else { 0 } as u64,
                    if keys { 0 } else { crc },
                ));
                raw.extend_from_slice(b"paYload");
                raw.extend_from_slice(&[0u8; TAG][..if keys { TAG } else { 0 }]);
                w.stream.write_all(&raw).unwrap();
                w.seq += 1;
            }
            let mut seven = [0u8; 7];
            match b.recv(7, &mut seven) {
                Err(LinkError::Protocol(m)) => {
                    assert!(
                        m.contains("checksum") || m.contains("authentication"),
                        "{m}"
                    )
                }
                other => panic!("corruption not detected: {other:?}"),
            }
            // An abort frame too short to hold its tag (or too long) is an error, not a panic.
            let (a, b) = pair(keys);
            {
                let mut w = a.writer.lock().unwrap();
                let mut raw = header(Kind::Abort, 0, 0, 3, crc32c(b"abc")).to_vec();
                raw.extend_from_slice(b"abc");
                w.stream.write_all(&raw).unwrap();
            }
            let mut one = [0u8; 1];
            match b.recv(7, &mut one) {
                Err(LinkError::Protocol(_)) if keys => {}
                Err(LinkError::Aborted(m)) if !keys => assert_eq!(m, "abc"),
                other => panic!("short abort frame: {other:?}"),
            }
            let (a, b) = pair(keys);
            a.send_abort("rank 3 lost");
            match b.recv(7, &mut one) {
                Err(LinkError::Aborted(m)) => assert_eq!(m, "rank 3 lost"),
                _ => panic!("abort not delivered"),
            }
        }
    }
}
