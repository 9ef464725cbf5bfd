//! A small persistent thread pool for splitting one kernel across cores.
//!
//! Why not rayon for everything: on a small VM a rayon `join`/`par_iter` costs tens of
//! microseconds of wake-up and work-stealing bookkeeping, which is more than an element-wise op
//! over a few hundred thousand elements takes. This pool keeps `n - 1` workers that spin briefly
//! after each job (so back-to-back ops find them awake; see `SPIN`) and then sleep on a condvar, and the
//! calling thread always does its share of the work.
//!
//! Idle workers also fetch ahead: the graph walk names the weights the next product will
//! stream ([`ThreadPool::hint_prefetch`]), and a worker with nothing to do asks the memory
//! system for their first lines. A decode step's serial stretches (norms, attention, the graph
//! walk) otherwise leave memory idle between its matmuls.
//!
//! Safety design: a job lives on the caller's stack. Workers only touch it between taking a
//! reference (under the pool mutex, while the job is published) and dropping it; the caller
//! unpublishes the job and then waits until no worker holds a reference before returning.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

type TaskFn<'a> = dyn Fn(usize) + Sync + 'a;

struct Job {
    /// Erased `&TaskFn`; valid while `refs > 0` or the job is published.
    f: *const TaskFn<'static>,
    n_tasks: usize,
    next: AtomicUsize,
    refs: AtomicUsize,
    panicked: AtomicBool,
}

impl Job {
    /// Claims and runs tasks until none are left.
    fn run_tasks(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n_tasks {
                return;
            }
            // SAFETY: `f` outlives every reference holder (see module docs).
            let f = unsafe { &*self.f };
            if catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
        }
    }
}

struct JobPtr(*const Job);
// SAFETY: the pointee is only accessed under the protocol described in the module docs.
unsafe impl Send for JobPtr {}

struct State {
    job: Option<JobPtr>,
    generation: u64,
    shutdown: bool,
    /// Workers blocked on the condvar: only then does publishing a job pay for a wake-up
    /// (a futex system call, most of an empty job's cost while the workers are spinning).
    sleepers: usize,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Bumped with `state.generation`, readable without the lock for spinning workers. On a
    /// cache line of its own: the workers spin reading it, and when it shared a line with the
    /// mutex every lock and unlock by the caller had to take the line back from them first.
    generation: Padded<AtomicUsize>,
    /// The latest prefetch request and its generation (bumped with each request; read
    /// without the lock by spinning workers).
    hint: Mutex<Prefetch>,
    hint_generation: Padded<AtomicUsize>,
}

/// Bytes at `addr` that a kernel will soon read, split as [`parallel_chunks`] splits rows.
#[derive(Clone, Copy, Default)]
struct Prefetch {
    addr: usize,
    len: usize,
}

/// How much of each thread's share of the next weights an idle worker asks for. The gaps
/// between a decode step's products last about 5-20 us, in which one core brings in a few
/// hundred KB; 128 KB to 1 MB measured the same (0.5B-shape Q4_0 decode, two rounds each).
const PREFETCH_HEAD: usize = 256 << 10;

/// A value alone on its cache lines (two: the adjacent-line prefetcher pairs them).
#[repr(align(128))]
struct Padded<T>(T);

/// The pool: `threads - 1` workers plus the calling thread.
pub struct ThreadPool {
    shared: Arc<Shared>,
    threads: usize,
    /// Only one caller at a time publishes a job; others run their work inline.
    submit: Mutex<()>,
}

thread_local! {
    static IN_POOL_TASK: Cell<bool> = const { Cell::new(false) };
}

/// How long an idle worker polls for the next job before it sleeps. A decode step has serial
/// stretches (attention, norms, the graph walk) of a few tens of microseconds between its
/// parallel matmuls: with 50 us the worker slept about 10 times per token of a 0.5B model, and
/// each next job ran on the caller alone while it woke; with 300 us about once per token.
const SPIN: Duration = Duration::from_micros(300);

impl ThreadPool {
    /// A pool using `threads` threads in all (the caller counts as one).
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                generation: 0,
                shutdown: false,
                sleepers: 0,
            }),
            wake: Condvar::new(),
            generation: Padded(AtomicUsize::new(0)),
            hint: Mutex::new(Prefetch::default()),
            hint_generation: Padded(AtomicUsize::new(0)),
        });
        for w in 1..threads {
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tessera-worker-{w}"))
                .spawn(move || worker_loop(&shared, w, threads));
            if spawned.is_err() {
                // Fewer workers only means less parallelism; the caller still runs every task.
                break;
            }
        }
        ThreadPool {
            shared,
            threads,
            submit: Mutex::new(()),
        }
    }

    /// Number of threads that share a job, the caller included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Says that the `len` bytes at `addr` (the weights of a coming product) will be read
    /// soon: idle workers prefetch the head of each thread's share of them (thread `t` of `T`
    /// reads from `t * len / T`, as [`parallel_chunks`] splits) until a job arrives, and go on
    /// after it until done or the next request. Only the address is kept: a prefetch never
    /// faults, so the bytes may be freed meanwhile. Does nothing without workers or when
    /// `TESSERA_PREFETCH=0`.
    pub fn hint_prefetch(&self, addr: usize, len: usize) {
        if self.threads < 2 || len == 0 || !prefetch_enabled() {
            return;
        }
        *lock(&self.shared.hint) = Prefetch { addr, len };
        self.shared
            .hint_generation
            .0
            .fetch_add(1, Ordering::Release);
    }

    /// Runs `f(0) .. f(n_tasks - 1)`, spread over the pool; returns when all are done.
    /// Nested calls and concurrent callers run inline (serially) instead of deadlocking.
    pub fn parallel_for(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        let nested = IN_POOL_TASK.with(|c| c.get());
        let guard = if self.threads > 1 && n_tasks > 1 && !nested {
            self.submit.try_lock().ok()
        } else {
            None
        };
        let Some(_guard) = guard else {
            (0..n_tasks).for_each(f);
            return;
        };
        // SAFETY: only the lifetime is erased; the job is unpublished and drained before return.
        let f_static: *const TaskFn<'static> =
            unsafe { std::mem::transmute(f as *const TaskFn<'_>) };
        let job = Job {
            f: f_static,
            n_tasks,
            next: AtomicUsize::new(0),
            refs: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        };
        let sleepers = {
            let mut st = lock(&self.shared.state);
            st.job = Some(JobPtr(&job));
            st.generation += 1;
            self.shared.generation.0.fetch_add(1, Ordering::Release);
            st.sleepers
        };
        // A worker counts itself a sleeper under the lock before it waits, after checking the
        // generation under the same lock: one that did not count itself yet sees this job.
        if sleepers > 0 {
            self.shared.wake.notify_all();
        }
        IN_POOL_TASK.with(|c| c.set(true));
        job.run_tasks();
        IN_POOL_TASK.with(|c| c.set(false));
        lock(&self.shared.state).job = None;
        while job.refs.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        if job.panicked.load(Ordering::Relaxed) {
            panic!("a task of a tessera parallel kernel panicked");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether idle workers prefetch (`TESSERA_PREFETCH=0` turns it off, for measuring).
fn prefetch_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("TESSERA_PREFETCH").map_or(true, |v| v.trim() != "0"))
}

/// A worker's progress through the latest prefetch request.
struct Fetching {
    generation: usize,
    request: Prefetch,
    /// Bytes of each share asked for so far; `None` when done.
    done: Option<usize>,
}

impl Fetching {
    /// Picks up a new request, if any.
    fn refresh(&mut self, shared: &Shared) {
        let g = shared.hint_generation.0.load(Ordering::Acquire);
        if g != self.generation {
            self.generation = g;
            self.request = *lock(&shared.hint);
            self.done = Some(0);
        }
    }

    /// Asks for the next lines of worker `w`'s shares (its own, and worker 1 also the
    /// caller's, share 0) until done or a job is published (generation past `seen`).
    fn run(&mut self, shared: &Shared, seen: u64, w: usize, threads: usize) {
        let Some(mut off) = self.done else { return };
        let Prefetch { addr, len } = self.request;
        let share = len / threads;
        let head = PREFETCH_HEAD.min(share);
        // Lines per check for a job: the check reads a shared line; 8 prefetches take longer.
        const BATCH: usize = 8 * 64;
        while off < head {
            if shared.generation.0.load(Ordering::Relaxed) as u64 != seen {
                self.done = Some(off);
                return;
            }
            let end = (off + BATCH).min(head);
            for t in std::iter::once(w).chain((w == 1).then_some(0)) {
                let base = addr.wrapping_add(t * share);
                let mut at = off;
                while at < end {
                    super::simd::prefetch_l2(base.wrapping_add(at) as *const u8);
                    at += 64;
                }
            }
            off = end;
        }
        self.done = None;
    }
}

/// Worker `w` (1-based) of a pool of `threads`.
fn worker_loop(shared: &Shared, w: usize, threads: usize) {
    IN_POOL_TASK.with(|c| c.set(true));
    let mut seen: u64 = 0;
    let mut fetching = Fetching {
        generation: shared.hint_generation.0.load(Ordering::Relaxed),
        request: Prefetch::default(),
        done: None,
    };
    loop {
        // Spin a little first: consecutive ops arrive microseconds apart. Meanwhile fetch
        // ahead what the next product will read.
        let start = Instant::now();
        while shared.generation.0.load(Ordering::Acquire) as u64 == seen && start.elapsed() < SPIN {
            fetching.refresh(shared);
            fetching.run(shared, seen, w, threads);
            std::hint::spin_loop();
        }
        let job_ptr = {
            let mut st = lock(&shared.state);
            while st.generation == seen && !st.shutdown {
                st.sleepers += 1;
                st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                st.sleepers -= 1;
            }
            if st.shutdown {
                return;
            }
            seen = st.generation;
            match &st.job {
                Some(p) => {
                    // SAFETY: the job is published, so it is alive; we take a reference under the lock.
                    unsafe { (*p.0).refs.fetch_add(1, Ordering::AcqRel) };
                    p.0
                }
                None => continue,
            }
        };
        // SAFETY: we hold a reference, so the caller waits for us before freeing the job.
        let job = unsafe { &*job_ptr };
        job.run_tasks();
        job.refs.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.wake.notify_all();
    }
}

static POOL: OnceLock<ThreadPool> = OnceLock::new();

/// Threads used by default: `TESSERA_NUM_THREADS`, else the number of available cores.
pub fn default_threads() -> usize {
    std::env::var("TESSERA_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

/// The process-wide pool used by CPU kernels.
pub fn global() -> &'static ThreadPool {
    POOL.get_or_init(|| ThreadPool::new(default_threads()))
}

/// Splits `0..len` into at most `threads` contiguous chunks of at least `min_chunk` items and runs
/// `f(start, end)` on each, in parallel when there is more than one chunk.
pub fn parallel_chunks(len: usize, min_chunk: usize, f: &(dyn Fn(usize, usize) + Sync)) {
    let pool = global();
    let max_chunks = len / min_chunk.max(1);
    let n = max_chunks.clamp(1, pool.threads());
    if n <= 1 {
        if len > 0 {
            f(0, len);
        }
        return;
    }
    let per = len.div_ceil(n);
    pool.parallel_for(n, &|i| {
        let s = i * per;
        let e = ((i + 1) * per).min(len);
        if s < e {
            f(s, e);
        }
    });
}

/// [`parallel_chunks`] for work that can fail: a chunk stops at its first error, and one of the
/// errors (if any) is returned once every chunk has finished.
pub(crate) fn try_parallel_chunks<E: Send>(
    len: usize,
    min_chunk: usize,
    f: &(dyn Fn(usize, usize) -> Result<(), E> + Sync),
) -> Result<(), E> {
    let failed = Mutex::new(None);
    parallel_chunks(len, min_chunk, &|s, e| {
        if let Err(err) = f(s, e) {
            *lock(&failed) = Some(err);
        }
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_task_once() {
        let pool = ThreadPool::new(3);
        for n in [1usize, 2, 7, 100] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            pool.parallel_for(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn nested_calls_run_inline() {
        let pool = ThreadPool::new(2);
        let total = AtomicUsize::new(0);
        pool.parallel_for(4, &|_| {
            pool.parallel_for(3, &|_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(total.load(Ordering::Relaxed), 12);
    }

    #[test]
    fn prefetch_hints_never_fault_or_hold_up_jobs() {
        let pool = ThreadPool::new(2);
        let data = vec![1u8; 1 << 20];
        // A live buffer, one already freed, and addresses nothing is mapped at: all hints.
        let freed = vec![0u8; 4096];
        let freed_addr = freed.as_ptr() as usize;
        drop(freed);
        for (addr, len) in [
            (data.as_ptr() as usize, data.len()),
            (freed_addr, 1 << 30),
            (64, 1 << 20),
            (usize::MAX - 4096, 1 << 20),
        ] {
            pool.hint_prefetch(addr, len);
            for n in [2usize, 5] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.parallel_for(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn chunks_cover_range() {
        let sum = AtomicUsize::new(0);
        parallel_chunks(1000, 10, &|s, e| {
            sum.fetch_add((s..e).sum::<usize>(), Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), (0..1000).sum::<usize>());
    }
}
