//! The `mpi` backend (cargo feature `mpi`): collectives through the system's MPI library, via
//! the `mpi` crate (rsmpi) for initialisation and its raw bindings for the calls themselves, so
//! every return code is checked and becomes an [`Error::Distributed`](tessera_core::Error).
//!
//! - Start the ranks with the MPI launcher (`mpirun -n 4 my-program`) and call
//!   [`init(Backend::Mpi)`](crate::init) (or set `TESSERA_BACKEND=mpi`).
//! - MPI is initialised once per process (`MPI_THREAD_SERIALIZED`) and finalised when the
//!   process exits with status 0. A process exiting with any other status (a panic, an error
//!   from `main`) skips `MPI_Finalize`, so the launcher sees a failed rank and ends the job
//!   promptly instead of the others waiting in `MPI_Finalize` for a rank that will not come.
//!   (Only glibc reports the exit status; elsewhere MPI is always finalised at exit.) If the
//!   program initialised MPI itself, finalising it stays the program's job.
//! - Every group works on its own duplicate of `MPI_COMM_WORLD` (or a split of one), with
//!   `MPI_ERRORS_RETURN`, so tessera's traffic never matches the program's own MPI messages.
//! - The calls of all MPI groups of the process are serialised by one lock: one collective at a
//!   time per process, as with the ring backend's connections.
//! - `F16` and `BF16` have no standard MPI type: they are reduced as `f32` and rounded once.
//!   Float max and min use user-defined operations that propagate NaN (as the ring does and as
//!   NumPy's `maximum`); sums use `MPI_SUM`. `Bool` reduces with `MPI_LOR` (sum, max) and
//!   `MPI_LAND` (min).
//! - Every call is watched: one that has not returned after `TESSERA_TIMEOUT` seconds (120 by
//!   default, as the ring backend) makes the rank print what it waited for and exit with status
//!   70, and the launcher then ends the job: never a silent hang. (MPI can neither cancel a
//!   blocking call nor say which rank is missing; the calls stay blocking because Open MPI's
//!   non-blocking collectives measured 1.5-4x slower here.) A rank that dies is reported by the
//!   launcher, which ends the job.

use crate::error::{Error, Result};
use crate::group::{Group, Splitter};
use crate::reduce::reduce_into;
use ::mpi::environment::{self, Threading, Universe};
use ::mpi::ffi;
use half::{bf16, f16};
use std::ffi::{c_char, c_int, c_void};
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};
use tessera_core::Dtype;
use tessera_core::collective::{CollectiveOp, CollectiveReduce, Communicator};

/// Elements per MPI call (counts are C ints); larger buffers go in several calls. Tests lower
/// it with `TESSERA_MPI_MAX_COUNT` to exercise the split calls on small buffers.
const MAX_COUNT: usize = 1 << 30;
/// The tag of tessera's point-to-point messages (below 32767, the least `MPI_TAG_UB` allowed).
const TAG: c_int = 0x7e55;

/// What the process learned when it initialised MPI.
struct Runtime {
    /// `MPI_IN_PLACE` of this MPI library, a macro the bindings cannot export: `1` in Open MPI,
    /// `-1` in MPICH and its derivatives. `None` for a library not recognised, whose in-place
    /// all-reduces then go through a copy.
    in_place: Option<usize>,
    /// NaN-propagating max and min of `f32` and `f64`.
    max_f32: Op,
    min_f32: Op,
    max_f64: Op,
    min_f64: Op,
    /// Elements (bytes for gathers and messages) per MPI call.
    max_count: usize,
    /// How long one call may block before the rank gives up (`TESSERA_TIMEOUT`).
    timeout: std::time::Duration,
}

/// An MPI handle shared between threads: only used under [`CALLS`].
#[derive(Clone, Copy)]
struct Op(ffi::MPI_Op);
// SAFETY: a handle (an address the MPI library owns); MPI calls are serialised by `CALLS`.
unsafe impl Send for Op {}
unsafe impl Sync for Op {}

/// Serialises this crate's MPI calls (MPI is initialised with `MPI_THREAD_SERIALIZED`).
static CALLS: Mutex<()> = Mutex::new(());
/// The universe, when this crate initialised MPI: taken (finalising MPI) at a clean exit.
static UNIVERSE: Mutex<Option<Universe>> = Mutex::new(None);
static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

fn lock() -> MutexGuard<'static, ()> {
    CALLS.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime() -> Result<&'static Runtime> {
    RUNTIME
        .get_or_init(start)
        .as_ref()
        .map_err(|m| Error::Config(format!("mpi: {m}")))
}

fn start() -> std::result::Result<Runtime, String> {
    let _g = lock();
    if environment::is_finalized() {
        return Err("MPI was already finalised in this process".into());
    }
    let provided = match ::mpi::initialize_with_threading(Threading::Serialized) {
        Some((universe, provided)) => {
            *UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()) = Some(universe);
            finalize_at_exit();
            provided
        }
        // The program (or another library) initialised MPI: it finalises it too.
        None => environment::threading_support(),
    };
    if provided < Threading::Serialized {
        return Err(format!(
            "the MPI library provides thread support {provided:?}; tessera needs \
             MPI_THREAD_SERIALIZED (collectives may run on any thread)"
        ));
    }
    let version = environment::library_version().unwrap_or_default();
    let in_place = if version.starts_with("Open MPI") {
        Some(1)
    } else if ["MPICH", "Intel(R) MPI", "MVAPICH"]
        .iter()
        .any(|k| version.contains(k))
    {
        Some(usize::MAX)
    } else {
        None
    };
    let max_count = std::env::var("TESSERA_MPI_MAX_COUNT")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&v| v > 0)
        .unwrap_or(MAX_COUNT)
        .min(MAX_COUNT);
    let op =
        |f: unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_int, *mut ffi::MPI_Datatype),
         what: &str|
         -> std::result::Result<Op, String> {
            let mut op = MaybeUninit::<ffi::MPI_Op>::uninit();
            // SAFETY: MPI is initialised; `op` is written on success.
            let rc = unsafe { ffi::MPI_Op_create(Some(f), 1, op.as_mut_ptr()) };
            if rc != 0 {
                return Err(format!("MPI_Op_create ({what}): {}", error_string(rc)));
            }
            // SAFETY: written by the successful call.
            Ok(Op(unsafe { op.assume_init() }))
        };
    Ok(Runtime {
        in_place,
        max_f32: op(user_op::<f32, true>, "f32 max")?,
        min_f32: op(user_op::<f32, false>, "f32 min")?,
        max_f64: op(user_op::<f64, true>, "f64 max")?,
        min_f64: op(user_op::<f64, false>, "f64 min")?,
        max_count,
        timeout: crate::config::timeout_from_env().map_err(|e| e.to_string())?,
    })
}

/// The MPI call under way (calls are serialised, so there is at most one) and when it started,
/// for the watchdog thread.
static WATCHED: Mutex<Option<(std::time::Instant, usize, usize, &'static str)>> = Mutex::new(None);

/// While alive, the watchdog knows that `call` of this rank is blocking in MPI.
struct Watch;

impl Watch {
    fn start(rt: &'static Runtime, rank: usize, size: usize, call: &'static str) -> Watch {
        static THREAD: OnceLock<()> = OnceLock::new();
        THREAD.get_or_init(|| {
            let timeout = rt.timeout;
            let spawned = std::thread::Builder::new()
                .name("tessera-mpi-watchdog".into())
                .spawn(move || watchdog(timeout));
            if let Err(e) = spawned {
                eprintln!("tessera: mpi: no watchdog thread ({e}): MPI calls are not timed");
            }
        });
        *WATCHED.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), rank, size, call));
        Watch
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        *WATCHED.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Checks a few times a second whether the MPI call under way has blocked longer than
/// `timeout`; if so, says which and ends the process (the launcher then ends the job). It makes
/// no MPI call itself: MPI is initialised for one thread at a time.
fn watchdog(timeout: std::time::Duration) {
    let tick = (timeout / 20).clamp(
        std::time::Duration::from_millis(10),
        std::time::Duration::from_millis(250),
    );
    loop {
        std::thread::sleep(tick);
        let late = WATCHED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(since, ..)| since.elapsed() > timeout)
            .map(|&(_, rank, size, call)| (rank, size, call));
        if let Some((rank, size, call)) = late {
            eprintln!(
                "tessera: rank {rank} of {size}: {call} did not complete within {:.1} s (TESSERA_TIMEOUT): another rank \
                 hung, died or called a different collective. MPI cannot cancel the call; \
                 ending this rank so the launcher ends the job.",
                timeout.as_secs_f64()
            );
            std::process::exit(70);
        }
    }
}

/// Finalises MPI (drops the universe) if this crate initialised it and no MPI call is under
/// way on another thread (finalising under it would be undefined; the launcher then reports
/// this rank's exit as abnormal, which it is).
fn finalize() {
    let _g = match CALLS.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => return,
    };
    let universe = UNIVERSE.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(universe);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn finalize_at_exit() {
    unsafe extern "C" {
        fn on_exit(f: extern "C" fn(c_int, *mut c_void), arg: *mut c_void) -> c_int;
    }
    extern "C" fn at_exit(status: c_int, _: *mut c_void) {
        if status == 0 {
            finalize();
        }
    }
    // SAFETY: registers a plain function; glibc calls it at `exit` with the exit status.
    unsafe { on_exit(at_exit, std::ptr::null_mut()) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn finalize_at_exit() {
    extern "C" fn at_exit() {
        finalize();
    }
    // SAFETY: registers a plain function called at `exit`.
    unsafe { libc::atexit(at_exit) };
}

/// A float type the user-defined max/min operations handle.
trait Float: Copy {
    const DTYPE: Dtype;
}
impl Float for f32 {
    const DTYPE: Dtype = Dtype::F32;
}
impl Float for f64 {
    const DTYPE: Dtype = Dtype::F64;
}

/// `MPI_User_function`: `inout[i] = in[i] (max or min) inout[i]`, NaN propagating (the
/// crate's own reduction, as the ring backend uses).
unsafe extern "C" fn user_op<T: Float, const MAX: bool>(
    input: *mut c_void,
    inout: *mut c_void,
    len: *mut c_int,
    _: *mut ffi::MPI_Datatype,
) {
    let n = (*len).max(0) as usize * std::mem::size_of::<T>();
    if n == 0 {
        return;
    }
    // SAFETY: MPI passes two distinct buffers of `len` elements of the operation's type.
    let acc = std::slice::from_raw_parts_mut(inout as *mut u8, n);
    let x = std::slice::from_raw_parts(input as *const u8, n);
    let op = if MAX {
        CollectiveReduce::Max
    } else {
        CollectiveReduce::Min
    };
    reduce_into(op, T::DTYPE, acc, x);
}

fn error_string(rc: c_int) -> String {
    let mut buf = vec![0u8; ffi::MPI_MAX_ERROR_STRING as usize + 1];
    let mut len: c_int = 0;
    // SAFETY: the buffer holds MPI_MAX_ERROR_STRING characters.
    let ok = unsafe { ffi::MPI_Error_string(rc, buf.as_mut_ptr() as *mut c_char, &mut len) };
    if ok != 0 {
        return format!("MPI error {rc}");
    }
    buf.truncate(len.clamp(0, buf.len() as c_int) as usize);
    String::from_utf8_lossy(&buf).into_owned()
}

/// An MPI communicator that this crate created (a duplicate or a split), freed on drop.
struct Comm(ffi::MPI_Comm);
// SAFETY: a handle; every MPI call on it is made under `CALLS`.
unsafe impl Send for Comm {}
unsafe impl Sync for Comm {}

impl Drop for Comm {
    fn drop(&mut self) {
        let _g = lock();
        if !environment::is_finalized() {
            // SAFETY: a communicator this crate created and nothing uses any more.
            unsafe { ffi::MPI_Comm_free(&mut self.0) };
        }
    }
}

/// A group over an MPI communicator.
pub(crate) struct MpiComm {
    comm: Comm,
    rank: usize,
    size: usize,
    rt: &'static Runtime,
}

/// The world group: initialises MPI on first use; every rank of the job must call it (it
/// duplicates `MPI_COMM_WORLD`, a collective).
pub(crate) fn world() -> Result<Group> {
    let rt = runtime()?;
    // SAFETY: reads an initialised constant of the MPI library.
    let world = unsafe { ffi::RSMPI_COMM_WORLD };
    let comm = dup_or_split(world, None).map_err(|m| Error::Config(format!("mpi: {m}")))?;
    Ok(Group::from_backend(Arc::new(MpiComm::new(comm, rt)?)))
}

/// `MPI_Comm_dup` (`split` is `None`) or `MPI_Comm_split(color, key)` of `parent`, with errors
/// returned rather than fatal.
fn dup_or_split(
    parent: ffi::MPI_Comm,
    split: Option<(c_int, c_int)>,
) -> std::result::Result<Comm, String> {
    let _g = lock();
    let mut new = MaybeUninit::<ffi::MPI_Comm>::uninit();
    // SAFETY: MPI is initialised; `parent` is a live communicator; `new` is written on success.
    let (rc, what) = unsafe {
        match split {
            // The program's own MPI_COMM_WORLD keeps its error handler (fatal by default).
            None => (ffi::MPI_Comm_dup(parent, new.as_mut_ptr()), "MPI_Comm_dup"),
            Some((color, key)) => (
                ffi::MPI_Comm_split(parent, color, key, new.as_mut_ptr()),
                "MPI_Comm_split",
            ),
        }
    };
    if rc != 0 {
        return Err(format!("{what}: {}", error_string(rc)));
    }
    // SAFETY: written by the successful call.
    let comm = Comm(unsafe { new.assume_init() });
    // SAFETY: a live communicator.
    unsafe { ffi::MPI_Comm_set_errhandler(comm.0, ffi::RSMPI_ERRORS_RETURN) };
    Ok(comm)
}

impl MpiComm {
    fn new(comm: Comm, rt: &'static Runtime) -> Result<MpiComm> {
        let (mut rank, mut size): (c_int, c_int) = (0, 0);
        let _g = lock();
        // SAFETY: a live communicator; the outputs are plain ints.
        let rc = unsafe {
            let a = ffi::MPI_Comm_rank(comm.0, &mut rank);
            if a != 0 {
                a
            } else {
                ffi::MPI_Comm_size(comm.0, &mut size)
            }
        };
        if rc != 0 {
            return Err(Error::Config(format!("mpi: {}", error_string(rc))));
        }
        Ok(MpiComm {
            comm,
            rank: rank as usize,
            size: size as usize,
            rt,
        })
    }

    fn check(&self, op: &'static str, call: &str, rc: c_int) -> tessera_core::Result<()> {
        if rc == 0 {
            return Ok(());
        }
        Err(tessera_core::Error::Distributed {
            op,
            msg: format!(
                "{call} failed on rank {} of {}: {}",
                self.rank,
                self.size,
                error_string(rc)
            ),
        })
    }

    fn peer(&self, op: &'static str, r: usize) -> tessera_core::Result<c_int> {
        if r >= self.size || r == self.rank {
            return Err(tessera_core::Error::Invalid {
                op,
                msg: format!(
                    "rank {r} is not a peer of rank {} in a group of {}",
                    self.rank, self.size
                ),
            });
        }
        Ok(r as c_int)
    }

    /// The MPI operation and element type reducing `dtype` (F16/BF16 travel as f32).
    fn op_type(&self, op: CollectiveReduce, dtype: Dtype) -> (ffi::MPI_Op, ffi::MPI_Datatype) {
        use CollectiveReduce::{Max, Min, Sum};
        let rt = self.rt;
        // SAFETY: reads initialised constants of the MPI library.
        unsafe {
            let std = |t: ffi::MPI_Datatype| {
                let o = match op {
                    Sum => ffi::RSMPI_SUM,
                    Max => ffi::RSMPI_MAX,
                    Min => ffi::RSMPI_MIN,
                };
                (o, t)
            };
            match dtype {
                Dtype::Bool => match op {
                    Sum | Max => (ffi::RSMPI_LOR, ffi::RSMPI_UINT8_T),
                    Min => (ffi::RSMPI_LAND, ffi::RSMPI_UINT8_T),
                },
                Dtype::U8 => std(ffi::RSMPI_UINT8_T),
                Dtype::U32 => std(ffi::RSMPI_UINT32_T),
                Dtype::I32 => std(ffi::RSMPI_INT32_T),
                Dtype::I64 => std(ffi::RSMPI_INT64_T),
                Dtype::F16 | Dtype::BF16 | Dtype::F32 => match op {
                    Sum => (ffi::RSMPI_SUM, ffi::RSMPI_FLOAT),
                    Max => (rt.max_f32.0, ffi::RSMPI_FLOAT),
                    Min => (rt.min_f32.0, ffi::RSMPI_FLOAT),
                },
                Dtype::F64 => match op {
                    Sum => (ffi::RSMPI_SUM, ffi::RSMPI_DOUBLE),
                    Max => (rt.max_f64.0, ffi::RSMPI_DOUBLE),
                    Min => (rt.min_f64.0, ffi::RSMPI_DOUBLE),
                },
            }
        }
    }

    /// In-place `MPI_Allreduce` of `count` elements of `esize` bytes at `data`.
    fn allreduce_raw(
        &self,
        name: &'static str,
        data: &mut [u8],
        esize: usize,
        op: CollectiveReduce,
        dtype: Dtype,
    ) -> tessera_core::Result<()> {
        let (mop, mtype) = self.op_type(op, dtype);
        let step = self.rt.max_count * esize;
        let mut copy = Vec::new();
        let _g = lock();
        let _w = Watch::start(self.rt, self.rank, self.size, "MPI_Allreduce");
        for chunk in data.chunks_mut(step) {
            let count = (chunk.len() / esize) as c_int;
            let send: *const c_void = match self.rt.in_place {
                Some(p) => p as *const c_void,
                None => {
                    copy.clear();
                    copy.extend_from_slice(chunk);
                    copy.as_ptr() as *const c_void
                }
            };
            // SAFETY: `chunk` holds `count` elements of `mtype`; `send` is MPI_IN_PLACE or a
            // copy of the chunk.
            let rc = unsafe {
                ffi::MPI_Allreduce(
                    send,
                    chunk.as_mut_ptr() as *mut c_void,
                    count,
                    mtype,
                    mop,
                    self.comm.0,
                )
            };
            self.check(name, "MPI_Allreduce", rc)?;
        }
        Ok(())
    }

    /// `MPI_Reduce_scatter_block`: `input` is `size` blocks of `block` bytes (`esize`-byte
    /// elements), `output` one block.
    fn reduce_scatter_raw(
        &self,
        input: &[u8],
        output: &mut [u8],
        esize: usize,
        op: CollectiveReduce,
        dtype: Dtype,
    ) -> tessera_core::Result<()> {
        let (mop, mtype) = self.op_type(op, dtype);
        let (n, block) = (self.size, output.len());
        let step = self.rt.max_count * esize;
        let mut packed = Vec::new();
        let _g = lock();
        let _w = Watch::start(self.rt, self.rank, self.size, "MPI_Reduce_scatter_block");
        for start in (0..block).step_by(step) {
            let len = step.min(block - start);
            let send = if len == block {
                input
            } else {
                // Block k's part of this call, for every k.
                packed.clear();
                for k in 0..n {
                    packed.extend_from_slice(&input[k * block + start..][..len]);
                }
                &packed[..]
            };
            // SAFETY: `send` holds `size` parts of `len` bytes; the output part holds `len`.
            let rc = unsafe {
                ffi::MPI_Reduce_scatter_block(
                    send.as_ptr() as *const c_void,
                    output[start..].as_mut_ptr() as *mut c_void,
                    (len / esize) as c_int,
                    mtype,
                    mop,
                    self.comm.0,
                )
            };
            self.check("sum_scatter", "MPI_Reduce_scatter_block", rc)?;
        }
        Ok(())
    }
}

/// Half-precision buffers as f32 and back.
fn widen(dtype: Dtype, data: &[u8]) -> Vec<f32> {
    let it = data.chunks_exact(2).map(|c| [c[0], c[1]]);
    if dtype == Dtype::F16 {
        it.map(|b| f16::from_le_bytes(b).to_f32()).collect()
    } else {
        it.map(|b| bf16::from_le_bytes(b).to_f32()).collect()
    }
}

fn narrow(dtype: Dtype, wide: &[f32], out: &mut [u8]) {
    for (o, &v) in out.chunks_exact_mut(2).zip(wide) {
        let b = if dtype == Dtype::F16 {
            f16::from_f32(v).to_le_bytes()
        } else {
            bf16::from_f32(v).to_le_bytes()
        };
        o.copy_from_slice(&b);
    }
}

fn f32_bytes_mut(v: &mut [f32]) -> &mut [u8] {
    let n = std::mem::size_of_val(v);
    // SAFETY: f32 values viewed as their bytes.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, n) }
}

fn f32_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 values viewed as their bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

fn is_half(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F16 | Dtype::BF16)
}

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn backend(&self) -> &str {
        "mpi"
    }

    fn transport(&self, _peer: usize) -> tessera_core::collective::Transport {
        tessera_core::collective::Transport::Mpi
    }

    fn all_reduce(
        &self,
        op: CollectiveReduce,
        dtype: Dtype,
        data: &mut [u8],
    ) -> tessera_core::Result<()> {
        let name = CollectiveOp::AllReduce(op).name();
        let esize = dtype.size();
        if !data.len().is_multiple_of(esize) {
            return Err(tessera_core::Error::Invalid {
                op: name,
                msg: format!("{} bytes of {dtype}", data.len()),
            });
        }
        if self.size == 1 || data.is_empty() {
            return Ok(());
        }
        if is_half(dtype) {
            let mut wide = widen(dtype, data);
            self.allreduce_raw(name, f32_bytes_mut(&mut wide), 4, op, dtype)?;
            narrow(dtype, &wide, data);
            return Ok(());
        }
        self.allreduce_raw(name, data, esize, op, dtype)
    }

    fn all_gather(&self, input: &[u8], output: &mut [u8]) -> tessera_core::Result<()> {
        let (n, b) = (self.size, input.len());
        if output.len() != b * n {
            return Err(tessera_core::Error::Invalid {
                op: "all_gather",
                msg: format!("output of {} bytes for {n} blocks of {b}", output.len()),
            });
        }
        if n == 1 || b == 0 {
            output.copy_from_slice(input);
            return Ok(());
        }
        // Bytes per rank and call; the total of one call stays within a C int too.
        let step = (self.rt.max_count / n).max(1);
        let mut tmp = Vec::new();
        let _g = lock();
        let _w = Watch::start(self.rt, self.rank, self.size, "MPI_Allgather");
        // SAFETY (below): reads an initialised constant of the MPI library.
        let byte = unsafe { ffi::RSMPI_UINT8_T };
        for start in (0..b).step_by(step) {
            let len = step.min(b - start);
            let whole = len == b;
            if !whole {
                tmp.resize(len * n, 0);
            }
            let recv = if whole {
                output.as_mut_ptr()
            } else {
                tmp.as_mut_ptr()
            };
            // SAFETY: `input[start..]` holds `len` bytes, `recv` holds `size * len`.
            let rc = unsafe {
                ffi::MPI_Allgather(
                    input[start..].as_ptr() as *const c_void,
                    len as c_int,
                    byte,
                    recv as *mut c_void,
                    len as c_int,
                    byte,
                    self.comm.0,
                )
            };
            self.check("all_gather", "MPI_Allgather", rc)?;
            if !whole {
                for k in 0..n {
                    output[k * b + start..][..len].copy_from_slice(&tmp[k * len..][..len]);
                }
            }
        }
        Ok(())
    }

    fn reduce_scatter(
        &self,
        op: CollectiveReduce,
        dtype: Dtype,
        input: &[u8],
        output: &mut [u8],
    ) -> tessera_core::Result<()> {
        let (n, b) = (self.size, output.len());
        let esize = dtype.size();
        if input.len() != b * n || !b.is_multiple_of(esize) {
            return Err(tessera_core::Error::Invalid {
                op: "sum_scatter",
                msg: format!(
                    "input of {} bytes for {n} blocks of {b} bytes of {dtype}",
                    input.len()
                ),
            });
        }
        if n == 1 || b == 0 {
            output.copy_from_slice(&input[self.rank * b..(self.rank + 1) * b]);
            return Ok(());
        }
        if is_half(dtype) {
            let wide = widen(dtype, input);
            let mut out = vec![0f32; b / 2];
            self.reduce_scatter_raw(f32_bytes(&wide), f32_bytes_mut(&mut out), 4, op, dtype)?;
            narrow(dtype, &out, output);
            return Ok(());
        }
        self.reduce_scatter_raw(input, output, esize, op, dtype)
    }

    fn send(&self, data: &[u8], dst: usize) -> tessera_core::Result<()> {
        let dst = self.peer("send", dst)?;
        let _g = lock();
        let _w = Watch::start(self.rt, self.rank, self.size, "MPI_Send");
        // SAFETY (below): reads an initialised constant of the MPI library.
        let byte = unsafe { ffi::RSMPI_UINT8_T };
        for chunk in data.chunks(self.rt.max_count) {
            // SAFETY: `chunk` holds `len` bytes.
            let rc = unsafe {
                ffi::MPI_Send(
                    chunk.as_ptr() as *const c_void,
                    chunk.len() as c_int,
                    byte,
                    dst,
                    TAG,
                    self.comm.0,
                )
            };
            self.check("send", "MPI_Send", rc)?;
        }
        Ok(())
    }

    fn recv(&self, data: &mut [u8], src: usize) -> tessera_core::Result<()> {
        let src = self.peer("recv", src)?;
        let _g = lock();
        let _w = Watch::start(self.rt, self.rank, self.size, "MPI_Recv");
        // SAFETY (below): reads an initialised constant of the MPI library.
        let byte = unsafe { ffi::RSMPI_UINT8_T };
        for chunk in data.chunks_mut(self.rt.max_count) {
            let mut status = MaybeUninit::<ffi::MPI_Status>::zeroed();
            let mut got: c_int = 0;
            // SAFETY: `chunk` holds `len` bytes; the status is written by MPI_Recv.
            let rc = unsafe {
                let rc = ffi::MPI_Recv(
                    chunk.as_mut_ptr() as *mut c_void,
                    chunk.len() as c_int,
                    byte,
                    src,
                    TAG,
                    self.comm.0,
                    status.as_mut_ptr(),
                );
                if rc == 0 {
                    ffi::MPI_Get_count(status.as_ptr(), byte, &mut got)
                } else {
                    rc
                }
            };
            self.check("recv", "MPI_Recv", rc)?;
            if got as usize != chunk.len() {
                return Err(tessera_core::Error::Distributed {
                    op: "recv",
                    msg: format!(
                        "rank {} of {} expected {} bytes from rank {src} and got a message of {got}",
                        self.rank,
                        self.size,
                        chunk.len()
                    ),
                });
            }
        }
        Ok(())
    }
}

impl Splitter for MpiComm {
    fn split(&self, color: u32, key: i64) -> Result<Group> {
        // MPI's colors and keys are non-negative C ints: gather everyone's (color, key) and
        // pass dense indices, ordered as the ring orders them (by key, ties by rank).
        let n = self.size;
        let mut mine = [0u8; 12];
        mine[..4].copy_from_slice(&color.to_le_bytes());
        mine[4..].copy_from_slice(&key.to_le_bytes());
        let mut all = vec![0u8; 12 * n];
        self.all_gather(&mine, &mut all)
            .map_err(|e| Error::Aborted(format!("split: {e}")))?;
        let entry = |r: usize| {
            let e = &all[12 * r..12 * (r + 1)];
            let c = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let mut k = [0u8; 8];
            k.copy_from_slice(&e[4..]);
            (c, i64::from_le_bytes(k))
        };
        let mut colors: Vec<u32> = (0..n).map(|r| entry(r).0).collect();
        colors.sort_unstable();
        colors.dedup();
        let dense_color = colors.iter().position(|&c| c == color).unwrap_or(0);
        let mut same: Vec<(i64, usize)> = (0..n)
            .filter(|&r| entry(r).0 == color)
            .map(|r| (entry(r).1, r))
            .collect();
        same.sort();
        let position = same
            .iter()
            .position(|&(_, r)| r == self.rank)
            .ok_or_else(|| {
                Error::Config("split: this rank is missing from its own color".into())
            })?;
        let comm = dup_or_split(self.comm.0, Some((dense_color as c_int, position as c_int)))
            .map_err(|m| Error::Aborted(format!("split: {m}")))?;
        Ok(Group::from_backend(Arc::new(MpiComm::new(comm, self.rt)?)))
    }
}
