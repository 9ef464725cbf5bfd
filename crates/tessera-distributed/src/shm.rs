//! Shared memory between two ranks on the same host: one mapped file (created in `/dev/shm`
//! with mode 0600 and unlinked as soon as both ends have mapped it) holding a ring buffer per
//! direction. A message costs two memory copies and no system call while data flows; a side that
//! must wait spins briefly, then sleeps on a futex in the shared page, and the other side wakes it
//! only when someone sleeps.
//!
//! The TCP connection stays open beside it: it carries aborts, and its end-of-file is how a
//! waiting side learns that the other process died (checked every few milliseconds while it
//! waits), so a lost peer is still an error within the timeout, never a hang.

use std::ffi::CString;
use std::io;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Bytes of ring per direction.
const CAP: usize = 8 << 20;
const CTL: usize = 256;
/// Both directions: control block + ring each.
const SIZE: usize = 2 * (CTL + CAP);
/// Messages up to this size (arrival word included) are written whole, word last.
const WHOLE_MAX: usize = 64 << 10;
/// Arrival word flags (low two bits; never zero, so a zeroed slot means "not yet").
const COMPLETE: u64 = 0b11;
const HEADER_ONLY: u64 = 0b10;

/// Bytes past the head whose lines a writer claims after each whole message (see
/// [`Ring::claim_ahead`]): a 1 KiB all-reduce's message, word and header included. (Claiming
/// as much as the message just written, for longer ones, was no faster at 4 KiB: the
/// prefetches then compete with the reads of the peer's message.)
const CLAIM_AHEAD: usize = 1152;

/// A prefetch of the line at `p` for writing (`prefetchw` where the CPU reports it, CPUID
/// 0x8000_0001 ECX bit 8; elsewhere nothing).
///
/// # Safety
/// None beyond a pointer value: a prefetch is a hint and never faults.
#[inline]
unsafe fn prefetch_for_write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let has = *HAS.get_or_init(|| {
            let max = std::arch::x86_64::__cpuid(0x8000_0000).eax;
            max >= 0x8000_0001 && std::arch::x86_64::__cpuid(0x8000_0001).ecx & (1 << 8) != 0
        });
        if has {
            // (The target feature `prfchw` is unstable in Rust, hence the instruction itself.)
            std::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A message's arrival word: its `code` (what the reader expects) and a flag.
fn arrival(code: u64, flag: u64) -> u64 {
    (code << 2) | flag
}

/// The code in an arrival word read back with its message, or `None` if the bytes are not
/// one (a corrupted or desynchronised stream).
pub(crate) fn arrival_code(word: u64) -> Option<u64> {
    (word & HEADER_ONLY != 0).then_some(word >> 2)
}
/// How long a waiting side polls before it sleeps (where ranks have a core each).
const SPIN_FOR: Duration = Duration::from_micros(100);
/// How long a waiting side sleeps before checking the peer is still alive.
pub(crate) const POLL: Duration = Duration::from_millis(20);

#[repr(C)]
struct Ctl {
    head: AtomicU64,
    _p0: [u8; 56],
    tail: AtomicU64,
    _p1: [u8; 56],
    /// Futex words (bumped on every head or tail move while someone sleeps) and sleeper counts.
    data_wake: AtomicU32,
    data_sleepers: AtomicU32,
    _p2: [u8; 56],
    space_wake: AtomicU32,
    space_sleepers: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Ctl>() <= CTL);

fn futex_wait(word: &AtomicU32, expect: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a futex wait on a 4-byte aligned word in shared memory, with a timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expect,
            &ts as *const libc::timespec,
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: wakes waiters of a word in shared memory.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

/// How a waiting side passes the time (see [`Ring::wait`]), chosen once the mesh knows how many
/// ranks share this host.
static WAIT: AtomicU8 = AtomicU8::new(WAIT_MIXED);
/// More ranks than cores: yield at once (the rank we wait for may need this very core).
const WAIT_YIELD: u8 = 0;
/// Bound to cores of our own (`tessera launch` binds): poll, never yield.
const WAIT_POLL: u8 = 1;
/// Unbound: poll briefly, then yield a few times.
const WAIT_MIXED: u8 = 2;

/// Chooses the waiting strategy for `local_ranks` ranks (this one included) on this host.
pub(crate) fn note_local_ranks(local_ranks: usize) {
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let mine = crate::bind::allowed_cpus().len();
    let mode = if local_ranks > online {
        WAIT_YIELD
    } else if mine < online && mine > 0 {
        WAIT_POLL
    } else {
        WAIT_MIXED
    };
    WAIT.store(mode, Ordering::Relaxed);
}

/// Whether this host runs more ranks than it has cores (waits then yield at once).
pub(crate) fn oversubscribed() -> bool {
    WAIT.load(Ordering::Relaxed) == WAIT_YIELD
}

/// How long a TCP receive polls its socket before it blocks in the kernel, and whether it
/// yields between polls, under the same policy as the shared-memory waits: waking a thread
/// blocked in `read` costs tens of µs on a VM (measured between network namespaces: 30-44 µs
/// per 4-byte all_sum against OpenMPI's 11 µs, whose TCP transport polls).
pub(crate) fn socket_poll() -> (Duration, bool) {
    match WAIT.load(Ordering::Relaxed) {
        WAIT_YIELD => (Duration::ZERO, true),
        WAIT_POLL => (SPIN_FOR, false),
        _ => (SPIN_FOR / 2, true),
    }
}

/// Moves the head or tail `index` to `value` and wakes the other side if it sleeps on `wake`.
fn publish(index: &AtomicU64, value: u64, sleepers: &AtomicU32, wake: &AtomicU32) {
    // A sequentially consistent swap orders the store before reading the sleeper count (the
    // sleeper does the reverse): without that a wake-up could be missed and the other side
    // sleep a whole poll period. (A locked exchange costs less than a store and a fence.)
    index.swap(value, Ordering::SeqCst);
    if sleepers.load(Ordering::SeqCst) > 0 {
        wake.fetch_add(1, Ordering::SeqCst);
        futex_wake(wake);
    }
}

/// One direction: a single writer process and a single reader process.
#[repr(align(64))]
struct Ring {
    ctl: *const Ctl,
    data: *mut u8,
    /// This process's last sight of the other side's index (the tail for a writer, the head
    /// for a reader): local memory.
    seen: AtomicU64,
    /// Reader: stream position consumed (may run ahead of the published tail).
    pos: AtomicU64,
    /// Writer: stream position up to which [`Ring::claim_ahead`] has asked for the lines.
    claimed: AtomicU64,
}

/// What a waiting side does between sleeps: `Err` stops the transfer (peer lost, timeout).
pub(crate) type Check<'a, E> = &'a mut dyn FnMut(bool) -> Result<(), E>;

impl Ring {
    fn ctl(&self) -> &Ctl {
        // SAFETY: the control block lives in the mapping for as long as `self`.
        unsafe { &*self.ctl }
    }

    /// Copies all of `data` in, waiting for space as needed. `check(progressed)` runs between
    /// waits. With `seal`, the data ends a message: the 8 bytes after it (where the next
    /// message's arrival word will go) are zeroed before its last piece is published.
    fn write<E>(&self, mut data: &[u8], seal: bool, check: Check<'_, E>) -> Result<(), E> {
        let c = self.ctl();
        let reserve = if seal { 8 } else { 0 };
        loop {
            let head = c.head.load(Ordering::Relaxed);
            let tail = self.tail_for(head, data.len() + reserve);
            let free = CAP - (head - tail) as usize;
            if free >= data.len() + reserve {
                self.copy_in(head, data);
                let end = head + data.len() as u64;
                if seal {
                    self.store_word(end, 0);
                }
                if !data.is_empty() || seal {
                    publish(&c.head, end, &c.data_sleepers, &c.data_wake);
                }
                return Ok(());
            }
            // Not all of it: a piece that leaves at least the last byte for a final one.
            let n = free.min(data.len().saturating_sub(1));
            if n == 0 {
                self.wait_for_space(tail, check)?;
                continue;
            }
            self.copy_in(head, &data[..n]);
            publish(&c.head, head + n as u64, &c.data_sleepers, &c.data_wake);
            data = &data[n..];
        }
    }

    /// Writer: waits until the reader's tail moves from `tail`.
    fn wait_for_space<E>(&self, tail: u64, check: Check<'_, E>) -> Result<(), E> {
        let c = self.ctl();
        self.wait(
            &c.space_wake,
            &c.space_sleepers,
            || c.tail.load(Ordering::SeqCst) != tail,
            check,
        )
    }

    /// The 8-byte word at stream position `at` (8-aligned): a message's arrival word.
    fn word(&self, at: u64) -> &AtomicU64 {
        debug_assert!(at.is_multiple_of(8));
        // SAFETY: `at % CAP` is 8-aligned (CAP is a multiple of 8) and leaves 8 bytes inside
        // the ring; the mapping is page-aligned, so the word is aligned.
        unsafe { &*(self.data.add(at as usize % CAP) as *const AtomicU64) }
    }

    fn store_word(&self, at: u64, value: u64) {
        self.word(at).store(value, Ordering::Release);
    }

    /// The reader's tail as far as the writer needs to know it to write `want` bytes at
    /// `head`: the last one seen while it leaves room, else a fresh load (the tail's cache
    /// line then moves only when the ring runs full, not on every message).
    fn tail_for(&self, head: u64, want: usize) -> u64 {
        let seen = self.seen.load(Ordering::Relaxed);
        if CAP - ((head - seen) as usize) >= want {
            return seen;
        }
        let tail = self.ctl().tail.load(Ordering::SeqCst);
        self.seen.store(tail, Ordering::Relaxed);
        tail
    }

    /// Copies `data` into the ring from stream position `at`, wrapping at its end. The caller
    /// has checked that `[at, at + data.len())` is free space, which only this writer touches
    /// until the head moves past it.
    fn copy_in(&self, at: u64, mut data: &[u8]) {
        let mut at = at as usize;
        let off = at % CAP;
        if off + data.len() <= CAP {
            // In one piece (nearly always).
            // SAFETY: [off, off + len) lies inside the ring, in the free space the caller checked.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.data.add(off), data.len()) };
            return;
        }
        while !data.is_empty() {
            let off = at % CAP;
            let n = data.len().min(CAP - off);
            // SAFETY: [off, off + n) lies inside the ring, in the free space the caller checked.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.data.add(off), n) };
            data = &data[n..];
            at += n;
        }
    }

    /// Writes one message: an 8-byte arrival word made from `code` (the reader's expectation,
    /// see [`Ring::await_message`]), then the concatenation of `parts`. A message of up to
    /// [`WHOLE_MAX`] bytes waits for room for all of it, then goes in with its word written
    /// last and marked complete, and one head move (one wake-up, one cache-line handover);
    /// a longer one streams, its word marked as header only.
    fn write_message<E>(&self, code: u64, parts: &[&[u8]], check: Check<'_, E>) -> Result<(), E> {
        let c = self.ctl();
        let total = 8 + parts.iter().map(|p| p.len()).sum::<usize>();
        debug_assert!(total.is_multiple_of(8) && code < 1 << 62);
        if total > WHOLE_MAX {
            // A long message goes in as its word alone (marked header only), then streams.
            let head = self.wait_for_room(8, check)?;
            self.store_word(head, arrival(code, HEADER_ONLY));
            publish(&c.head, head + 8, &c.data_sleepers, &c.data_wake);
            for (i, p) in parts.iter().enumerate() {
                self.write(p, i + 1 == parts.len(), check)?;
            }
            return Ok(());
        }
        let head = self.wait_for_room(total + 8, check)?;
        let mut at = head + 8;
        for p in parts {
            self.copy_in(at, p);
            at += p.len() as u64;
        }
        // The next message's word slot reads zero until that message is complete; this one's
        // word goes last (release), so seeing it means all of the message is there.
        self.store_word(at, 0);
        self.store_word(head, arrival(code, COMPLETE));
        publish(&c.head, at, &c.data_sleepers, &c.data_wake);
        self.claim_ahead(at);
        Ok(())
    }

    /// Asks for the cache lines of the next [`CLAIM_AHEAD`] bytes from the head `at`, for
    /// writing, while this side goes on to wait for its peer. The ring is 8 MB, so those
    /// lines were last touched a lap ago and sit in L3 or memory; written cold, their
    /// ownership requests lay on the next message's critical path (its arrival word, stored
    /// last, becomes visible only after them).
    fn claim_ahead(&self, at: u64) {
        let want = at + CLAIM_AHEAD as u64;
        // Lines claimed after an earlier message are not asked for again: a run of tiny
        // messages claims about one new line every few messages.
        let from = self.claimed.load(Ordering::Relaxed).max(at) & !63;
        if from >= want {
            return;
        }
        let mut line = from;
        while line < want {
            // SAFETY: the offset is inside the ring; a prefetch never faults or changes memory.
            unsafe { prefetch_for_write(self.data.add(line as usize % CAP)) };
            line += 64;
        }
        self.claimed.store(line, Ordering::Relaxed);
    }

    /// Writer: waits until `room` bytes are free, and returns the head to write them at.
    fn wait_for_room<E>(&self, room: usize, check: Check<'_, E>) -> Result<u64, E> {
        loop {
            let head = self.ctl().head.load(Ordering::Relaxed);
            let tail = self.tail_for(head, room);
            if CAP - ((head - tail) as usize) >= room {
                return Ok(head);
            }
            self.wait_for_space(tail, check)?;
        }
    }

    /// Polls briefly for the next message's arrival word to show a complete message made
    /// from `code` of `total` bytes (word included). True when it is all in the ring (the
    /// reads that follow then need no look at the head); false if it has not come yet, or is
    /// something else (the ordinary reads then wait, or report what arrived instead).
    fn await_message(&self, code: u64, total: usize) -> bool {
        let pos = self.pos.load(Ordering::Relaxed);
        if self.seen.load(Ordering::Relaxed) >= pos + total as u64 {
            return true;
        }
        let want = arrival(code, COMPLETE);
        let word = self.word(pos);
        let spins = match WAIT.load(Ordering::Relaxed) {
            WAIT_POLL => 4096,
            WAIT_MIXED => 32,
            _ => 0,
        };
        for _ in 0..spins {
            let w = word.load(Ordering::Acquire);
            if w == want {
                self.seen.store(pos + total as u64, Ordering::Relaxed);
                return true;
            }
            if w != 0 {
                return false;
            }
            std::hint::spin_loop();
        }
        false
    }

    /// When the next `total` bytes are known to be in the ring (a message seen complete by
    /// [`Ring::await_message`]) and do not wrap around its end: `f` of them, as one slice, and
    /// then their space given back (one tail move). `None`, with nothing read, otherwise.
    fn read_whole<R>(&self, total: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let pos = self.pos.load(Ordering::Relaxed);
        let at = pos as usize % CAP;
        if self.seen.load(Ordering::Relaxed) < pos + total as u64 || at + total > CAP {
            return None;
        }
        // SAFETY: [at, at + total) holds written bytes the writer does not touch until the
        // tail moves past them, which only `release` below does.
        let r = f(unsafe { std::slice::from_raw_parts(self.data.add(at), total) });
        let end = pos + total as u64;
        self.pos.store(end, Ordering::Relaxed);
        self.release(end);
        Some(r)
    }

    /// Passes exactly `len` bytes to `f` in order, as slices of the ring (no copy), waiting
    /// for data as needed. With `defer`, the space read is given back to the writer only by
    /// the next read (or before any wait): a message's header and payload, read in two calls,
    /// then cost one tail move.
    fn read_with<E>(
        &self,
        mut len: usize,
        f: &mut dyn FnMut(&[u8]),
        check: Check<'_, E>,
        defer: bool,
    ) -> Result<(), E> {
        let c = self.ctl();
        let mut pos = self.pos.load(Ordering::Relaxed);
        while len > 0 {
            let mut head = self.seen.load(Ordering::Relaxed);
            if head - pos < len as u64 {
                // The published head may lag what an arrival word showed (the writer stores
                // the word, then moves the head, and may be descheduled in between): never
                // step back from what is known.
                head = c.head.load(Ordering::SeqCst).max(head);
                self.seen.store(head, Ordering::Relaxed);
            }
            let avail = (head - pos) as usize;
            let at = (pos as usize) % CAP;
            let mut n = len.min(avail).min(CAP - at);
            // Pieces end on 8-byte boundaries (messages start on them), so no element of a
            // reduction is ever split between two pieces.
            if n < len {
                n -= n % 8;
            }
            if n == 0 {
                self.release(pos);
                self.wait(
                    &c.data_wake,
                    &c.data_sleepers,
                    || c.head.load(Ordering::SeqCst) > head,
                    check,
                )?;
                continue;
            }
            // SAFETY: [at, at + n) holds written bytes the writer does not touch until the
            // tail moves past them.
            f(unsafe { std::slice::from_raw_parts(self.data.add(at), n) });
            pos += n as u64;
            len -= n;
            self.pos.store(pos, Ordering::Relaxed);
            if len > 0 {
                self.release(pos);
            }
        }
        if !defer {
            self.release(pos);
        }
        Ok(())
    }

    /// Publishes the tail at `pos` if it is not there yet.
    fn release(&self, pos: u64) {
        let c = self.ctl();
        if c.tail.load(Ordering::Relaxed) != pos {
            publish(&c.tail, pos, &c.space_sleepers, &c.space_wake);
        }
    }

    /// Spins briefly, then sleeps on `word` until `ready()` or `POLL` passes, then runs `check`.
    fn wait<E>(
        &self,
        word: &AtomicU32,
        sleepers: &AtomicU32,
        ready: impl Fn() -> bool,
        check: Check<'_, E>,
    ) -> Result<(), E> {
        match WAIT.load(Ordering::Relaxed) {
            WAIT_YIELD => {
                for _ in 0..256 {
                    if ready() {
                        return Ok(());
                    }
                    std::thread::yield_now();
                }
            }
            WAIT_POLL => {
                // Never yield with a core of our own: on a busy machine a yield hands it to
                // another process for a whole time slice (measured while a build ran: 8 ms per
                // 4-byte all_sum, against 0.8-1.6 µs polling). The clock is read only once a
                // first round of polls has failed (most waits end within it).
                let mut start = None;
                loop {
                    for _ in 0..64 {
                        if ready() {
                            return Ok(());
                        }
                        std::hint::spin_loop();
                    }
                    if start.get_or_insert_with(std::time::Instant::now).elapsed() >= SPIN_FOR {
                        break;
                    }
                }
            }
            _ => {
                // Unbound, two ranks may share a core: polling long would starve the peer
                // (measured: 216 µs per all_sum), so yield after a few polls.
                for i in 0..256 {
                    if ready() {
                        return Ok(());
                    }
                    if i >= 32 {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        sleepers.fetch_add(1, Ordering::SeqCst);
        let w = word.load(Ordering::SeqCst);
        if !ready() {
            futex_wait(word, w, POLL);
        }
        sleepers.fetch_sub(1, Ordering::SeqCst);
        check(ready())
    }
}

/// Both directions between this rank and one peer.
pub(crate) struct ShmPair {
    base: *mut u8,
    tx: Ring,
    rx: Ring,
}

// SAFETY: the rings are used under the link's reader/writer locks (one reader, one writer per
// direction); the mapping lives as long as the pair.
unsafe impl Send for ShmPair {}
unsafe impl Sync for ShmPair {}

fn map(path: &str, create: bool) -> io::Result<*mut u8> {
    let c = CString::new(path).map_err(|_| io::Error::other("bad shm path"))?;
    let flags = if create {
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL
    } else {
        libc::O_RDWR
    };
    // SAFETY: plain libc calls on a path we own; every result is checked.
    unsafe {
        let fd = libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o600);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        if create && libc::ftruncate(fd, SIZE as libc::off_t) != 0 {
            let e = io::Error::last_os_error();
            libc::close(fd);
            libc::unlink(c.as_ptr());
            return Err(e);
        }
        let p = libc::mmap(
            std::ptr::null_mut(),
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            // Populated up front: a first touch of each ring page would otherwise fault in
            // the middle of a message.
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            0,
        );
        libc::close(fd);
        if p == libc::MAP_FAILED {
            if create {
                libc::unlink(c.as_ptr());
            }
            return Err(io::Error::last_os_error());
        }
        Ok(p as *mut u8)
    }
}

impl ShmPair {
    /// Creates the file (the lower rank of the pair). Its first direction is ours to write.
    pub fn create(path: &str) -> io::Result<ShmPair> {
        Ok(Self::over(map(path, true)?, true))
    }

    /// Maps the file the peer created (the higher rank).
    pub fn open(path: &str) -> io::Result<ShmPair> {
        Ok(Self::over(map(path, false)?, false))
    }

    /// Removes the file name (both ends have it mapped; the memory stays until unmapped).
    pub fn unlink(path: &str) {
        if let Ok(c) = CString::new(path) {
            // SAFETY: unlinking a path we created.
            unsafe { libc::unlink(c.as_ptr()) };
        }
    }

    fn over(base: *mut u8, creator: bool) -> ShmPair {
        let ring = |k: usize| {
            // SAFETY: both directions lie inside the SIZE-byte mapping.
            unsafe {
                let ctl = base.add(k * (CTL + CAP));
                Ring {
                    ctl: ctl as *const Ctl,
                    data: ctl.add(CTL),
                    seen: AtomicU64::new(0),
                    pos: AtomicU64::new(0),
                    claimed: AtomicU64::new(0),
                }
            }
        };
        let (a, b) = (ring(0), ring(1));
        let (tx, rx) = if creator { (a, b) } else { (b, a) };
        ShmPair { base, tx, rx }
    }

    /// One message: an arrival word from `code`, then `parts` (see [`Ring::write_message`]).
    pub fn write_message<E>(
        &self,
        code: u64,
        parts: &[&[u8]],
        check: Check<'_, E>,
    ) -> Result<(), E> {
        self.tx.write_message(code, parts, check)
    }

    /// Polls briefly for the next message to be all there (see [`Ring::await_message`]).
    pub fn await_message(&self, code: u64, total: usize) -> bool {
        self.rx.await_message(code, total)
    }

    /// The next `total` bytes in one piece, if they are all there and do not wrap (see
    /// [`Ring::read_whole`]).
    pub fn read_whole<R>(&self, total: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.rx.read_whole(total, f)
    }

    #[cfg(test)]
    fn write<E>(&self, data: &[u8], check: Check<'_, E>) -> Result<(), E> {
        self.tx.write(data, false, check)
    }

    pub fn read_with<E>(
        &self,
        len: usize,
        f: &mut dyn FnMut(&[u8]),
        check: Check<'_, E>,
    ) -> Result<(), E> {
        self.rx.read_with(len, f, check, false)
    }

    /// A read whose space is given back with the next read's (see [`Ring::read_with`]).
    pub fn read_deferred<E>(
        &self,
        len: usize,
        f: &mut dyn FnMut(&[u8]),
        check: Check<'_, E>,
    ) -> Result<(), E> {
        self.rx.read_with(len, f, check, true)
    }
}

impl Drop for ShmPair {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping once.
        unsafe { libc::munmap(self.base as *mut libc::c_void, SIZE) };
    }
}

/// Identifies this host and network namespace: ranks with equal ids can share memory. (Ranks in
/// different network namespaces count as different hosts, as a test network of namespaces
/// means them to.)
pub(crate) fn host_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let netns = std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if boot.trim().is_empty() || netns.is_empty() {
        return String::new(); // unknown: never share
    }
    format!("{}|{}", boot.trim(), netns)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ends of a fresh pair (`tag` keeps concurrent tests' files apart).
    fn pair(tag: &str) -> (ShmPair, ShmPair) {
        let path = format!("/dev/shm/tessera-test-{tag}{}", std::process::id());
        let a = ShmPair::create(&path).unwrap();
        let b = ShmPair::open(&path).unwrap();
        ShmPair::unlink(&path);
        (a, b)
    }

    #[test]
    fn a_writer_claims_the_lines_ahead_once() {
        let (a, b) = pair("claim");
        let ok = &mut |_| Ok::<(), ()>(());
        // The first small message claims the lines of CLAIM_AHEAD bytes past its end.
        a.write_message(1, &[&[7u8; 16]], ok).unwrap();
        let end = 8 + 16;
        let claimed = a.tx.claimed.load(Ordering::Relaxed);
        assert_eq!(claimed, (end + CLAIM_AHEAD as u64).div_ceil(64) * 64);
        // The next one only moves the claim by the lines it newly exposes.
        a.write_message(2, &[&[8u8; 64]], ok).unwrap();
        let end2 = end + 8 + 64;
        assert_eq!(
            a.tx.claimed.load(Ordering::Relaxed),
            (end2 + CLAIM_AHEAD as u64).div_ceil(64) * 64
        );
        // The claims change nothing the reader sees.
        assert!(b.await_message(1, 8 + 16));
        assert_eq!(
            b.read_whole(8 + 16, |m| m[8..].to_vec()),
            Some(vec![7u8; 16])
        );
        assert!(b.await_message(2, 8 + 64));
        assert_eq!(
            b.read_whole(8 + 64, |m| m[8..].to_vec()),
            Some(vec![8u8; 64])
        );
    }

    #[test]
    fn a_ring_streams_more_than_its_capacity_in_order() {
        let (a, b) = pair("");
        let data: Vec<u8> = (0..3 * CAP + 12345).map(|i| (i % 251) as u8).collect();
        let mut got = Vec::with_capacity(data.len());
        std::thread::scope(|s| {
            s.spawn(|| a.write::<()>(&data, &mut |_| Ok(())).unwrap());
            b.read_with::<()>(data.len(), &mut |c| got.extend_from_slice(c), &mut |_| {
                Ok(())
            })
            .unwrap();
        });
        assert_eq!(got, data);
    }

    #[test]
    fn messages_arrive_whole_and_in_order_across_the_wrap() {
        let (a, b) = pair("g");
        // Messages of 2 parts with sizes that do not divide the ring, so some straddle its end;
        // more messages in all than the ring holds, so a writer ahead of the reader finds it
        // full; some longer than WHOLE_MAX, which stream.
        let msgs: Vec<[Vec<u8>; 2]> = (0..2000u32)
            .map(|i| {
                let part =
                    |n: usize, k: u32| (0..n).map(|j| (i * 7 + k + j as u32) as u8).collect();
                let long = if i % 97 == 0 { WHOLE_MAX } else { 0 };
                let n = 4000 + (i as usize * 37) % 9000 + long;
                [part(16, 1), part(n + (8 - n % 8) % 8, 2)]
            })
            .collect();
        let total: usize = msgs.iter().flatten().map(Vec::len).sum::<usize>() + 8 * msgs.len();
        assert!(total > 2 * CAP);
        let mut got = Vec::with_capacity(total);
        let mut whole = 0;
        std::thread::scope(|s| {
            s.spawn(|| {
                for (i, m) in msgs.iter().enumerate() {
                    a.write_message::<()>(i as u64, &[&m[0], &m[1]], &mut |_| Ok(()))
                        .unwrap();
                }
            });
            for (i, m) in msgs.iter().enumerate() {
                let len = 8 + m[0].len() + m[1].len();
                // Found or not, the reads that follow must get exactly this message: in one
                // piece when it was seen complete and does not wrap, else piecewise.
                let seen = b.await_message(i as u64, len);
                let mut one = Vec::with_capacity(len);
                match b.read_whole(len, |c| one.extend_from_slice(c)) {
                    Some(()) => {
                        assert!(seen, "message {i} read whole before it was seen complete");
                        whole += 1;
                    }
                    None => {
                        b.read_with::<()>(len, &mut |c| one.extend_from_slice(c), &mut |_| Ok(()))
                            .unwrap();
                    }
                }
                let word = u64::from_le_bytes(one[..8].try_into().unwrap());
                let flag = if len <= WHOLE_MAX {
                    COMPLETE
                } else {
                    HEADER_ONLY
                };
                assert_eq!(word, arrival(i as u64, flag));
                got.extend_from_slice(&one[8..]);
            }
        });
        assert_eq!(got, msgs.concat().concat());
        assert!(whole > 0, "no message was read in one piece");
    }

    #[test]
    fn a_complete_message_across_the_ring_end_is_not_read_in_one_piece() {
        let (a, b) = pair("w");
        // Written and read in turn, so each is complete before it is read; 40 KiB messages
        // do not divide the ring, so one of them straddles its end.
        let body: Vec<u8> = (0..40 << 10).map(|j| (j * 13) as u8).collect();
        let len = 8 + body.len();
        let (mut straddled, mut at) = (0, 0);
        for i in 0..CAP / len + 2 {
            a.write_message::<()>(i as u64, &[&body], &mut |_| Ok(()))
                .unwrap();
            assert!(
                b.await_message(i as u64, len),
                "message {i} not seen complete"
            );
            let mut one = Vec::with_capacity(len);
            let crosses = at % CAP + len > CAP;
            match b.read_whole(len, |c| one.extend_from_slice(c)) {
                Some(()) => assert!(!crosses, "message {i} read whole across the end"),
                None => {
                    assert!(crosses, "message {i} in one piece refused");
                    straddled += 1;
                    b.read_with::<()>(len, &mut |c| one.extend_from_slice(c), &mut |_| Ok(()))
                        .unwrap();
                }
            }
            assert_eq!(one[8..], body[..], "message {i}");
            at += len;
        }
        assert_eq!(straddled, 1);
    }

    /// The writer stores a message's word, then moves the head, and can be descheduled in
    /// between: a reader that took the message by its word and asks for the next one must
    /// then wait, not read past the lagging head.
    #[test]
    fn a_lagging_head_after_a_message_seen_by_its_word_is_waited_for() {
        let (a, b) = pair("lag");
        a.write_message::<()>(5, &[&[7u8; 16]], &mut |_| Ok(()))
            .unwrap();
        // As if the writer had not yet moved the head past the message.
        a.tx.ctl().head.store(0, Ordering::SeqCst);
        let mut found = false;
        for _ in 0..1000 {
            found = found || b.await_message(5, 24);
        }
        assert!(found);
        let mut got = Vec::new();
        b.read_with::<()>(24, &mut |c| got.extend_from_slice(c), &mut |_| Ok(()))
            .unwrap();
        assert_eq!(&got[8..], &[7u8; 16]);
        // The next message has not been written: the read waits and its check stops it.
        let mut read = 0;
        let r = b.read_with::<()>(24, &mut |c| read += c.len(), &mut |progressed| {
            if progressed { Ok(()) } else { Err(()) }
        });
        assert!(r.is_err() && read == 0);
        // The head catches up; the next message then arrives whole.
        a.tx.ctl().head.store(24, Ordering::SeqCst);
        a.write_message::<()>(6, &[&[9u8; 16]], &mut |_| Ok(()))
            .unwrap();
        let mut got = Vec::new();
        b.read_with::<()>(24, &mut |c| got.extend_from_slice(c), &mut |_| Ok(()))
            .unwrap();
        let word = u64::from_le_bytes(got[..8].try_into().unwrap());
        assert_eq!(arrival_code(word), Some(6));
        assert_eq!(&got[8..], &[9u8; 16]);
    }

    #[test]
    fn a_message_is_not_seen_before_it_is_complete_or_from_stale_bytes() {
        let (a, b) = pair("w");
        WAIT.store(WAIT_POLL, Ordering::Relaxed);
        // More than a lap of messages whose payloads are full of what look like complete
        // arrival words for code 5, so the next read position lies over them.
        let fake = arrival(5, COMPLETE).to_le_bytes().repeat(500);
        let count = CAP / (fake.len() + 8) + 3;
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..count {
                    a.write_message::<()>(1, &[&fake], &mut |_| Ok(())).unwrap();
                }
            });
            for _ in 0..count {
                b.read_with::<()>(8 + fake.len(), &mut |_| {}, &mut |_| Ok(()))
                    .unwrap();
            }
        });
        // Nothing written at the read position yet: not found.
        assert!(!b.await_message(5, 24));
        a.write_message::<()>(5, &[&[7u8; 16]], &mut |_| Ok(()))
            .unwrap();
        // A wrong expectation is not taken for this message; the right one is.
        assert!(!b.await_message(6, 24));
        assert!(b.await_message(5, 24));
        let mut got = Vec::new();
        b.read_with::<()>(24, &mut |c| got.extend_from_slice(c), &mut |_| Ok(()))
            .unwrap();
        assert_eq!(&got[8..], &[7u8; 16]);
    }
}
