//! `bench collectives`: all_sum bandwidth and latency by message size, on the group the process
//! was launched into (`tessera launch -n 3 -- tessera bench collectives --json`).
//!
//! Definitions as in nccl-tests: algorithm bandwidth = bytes / time; bus bandwidth = algorithm
//! bandwidth × 2(n-1)/n, the rate each link carries in an optimal all-reduce, comparable with
//! the link's own rate whatever the rank count. The time of one repetition is the slowest
//! rank's; the reported value is the median over repetitions.
//!
//! Small sizes are timed twice: through the graph (`all_sum` on an array, then `eval`: what a
//! program pays) and on the group's communicator directly (`comm_latency`: the transport alone,
//! the same call an MPI benchmark times), so the graph op's own cost shows as the difference.
//! With `breakdown`, small all_sums are also timed in segments (building the node, eval up to
//! the transport, the transport, eval after it: rank 0's own medians), through a wrapper that
//! stamps the communicator's entry and exit.

use crate::Record;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tessera_core::collective::{CollectiveReduce, Communicator, GroupRef};
use tessera_core::{Array, Dtype, ops};
use tessera_distributed::Group;

/// What to measure.
pub struct CollectiveBench {
    /// Largest message in bytes (sizes go up by 4x from 4 bytes).
    pub max_bytes: usize,
    /// Timed repetitions per size (after one warm-up).
    pub repeats: usize,
    /// Which collective: `all_sum` (sizes are the array's bytes) or `all_gather` (sizes are the
    /// gathered output's bytes, each rank contributing `1/n` of them, as nccl-tests count).
    pub op: CollectiveKind,
    /// Also time small all_sums in segments (see the module docs).
    pub breakdown: bool,
}

/// The collectives `bench collectives` can time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectiveKind {
    AllSum,
    AllGather,
}

impl CollectiveKind {
    pub fn parse(s: &str) -> Option<CollectiveKind> {
        match s {
            "all_sum" => Some(CollectiveKind::AllSum),
            "all_gather" => Some(CollectiveKind::AllGather),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            CollectiveKind::AllSum => "all_sum",
            CollectiveKind::AllGather => "all_gather",
        }
    }

    /// nccl-tests' bus bandwidth factor for `n` ranks.
    fn bus_factor(self, n: usize) -> f64 {
        let n = n as f64;
        match self {
            CollectiveKind::AllSum => 2.0 * (n - 1.0) / n,
            CollectiveKind::AllGather => (n - 1.0) / n,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn size_name(b: usize) -> String {
    if b >= 1 << 20 {
        format!("{}MiB", b >> 20)
    } else if b >= 1 << 10 {
        format!("{}KiB", b >> 10)
    } else {
        format!("{b}B")
    }
}

/// Times `run(setup())` `reps` times after one warm-up, each repetition started from a
/// barrier (the setup, and dropping what `run` returns, outside the timed region), and returns
/// the median over repetitions of the slowest rank's time. Every rank must call it.
fn slowest_median<T, R>(
    g: &Group,
    reps: usize,
    mut setup: impl FnMut() -> tessera_core::Result<T>,
    mut run: impl FnMut(T) -> tessera_core::Result<R>,
) -> tessera_core::Result<f64> {
    let mut times = Vec::with_capacity(reps);
    for rep in 0..=reps {
        let input = setup()?;
        ops::barrier(g.handle())?;
        let t = std::time::Instant::now();
        let result = run(input)?;
        let dt = t.elapsed().as_secs_f64();
        drop(result);
        if rep > 0 {
            times.push(dt);
        }
    }
    let t = Array::from_slice(&times, &[times.len()])?;
    Ok(median(g.all_max(&t)?.to_vec::<f64>()?))
}

/// A communicator that records when its all-reduce starts and ends (ns since `epoch`).
struct Stamped {
    inner: Arc<dyn Communicator>,
    epoch: Instant,
    enter: AtomicU64,
    exit: AtomicU64,
}

impl Stamped {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

impl Communicator for Stamped {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn backend(&self) -> &str {
        self.inner.backend()
    }
    fn all_reduce(
        &self,
        op: CollectiveReduce,
        dtype: Dtype,
        data: &mut [u8],
    ) -> tessera_core::Result<()> {
        self.enter.store(self.now(), Ordering::Relaxed);
        let r = self.inner.all_reduce(op, dtype, data);
        self.exit.store(self.now(), Ordering::Relaxed);
        r
    }
    fn all_gather(&self, input: &[u8], output: &mut [u8]) -> tessera_core::Result<()> {
        self.inner.all_gather(input, output)
    }
    fn reduce_scatter(
        &self,
        op: CollectiveReduce,
        dtype: Dtype,
        input: &[u8],
        output: &mut [u8],
    ) -> tessera_core::Result<()> {
        self.inner.reduce_scatter(op, dtype, input, output)
    }
    fn send(&self, data: &[u8], dst: usize) -> tessera_core::Result<()> {
        self.inner.send(data, dst)
    }
    fn recv(&self, data: &mut [u8], src: usize) -> tessera_core::Result<()> {
        self.inner.recv(data, src)
    }
}

/// The graph all_sum of `elems` floats in segments, this rank's medians over `reps` (after one
/// warm-up), in µs: building the node, eval up to the transport, the transport, eval after it.
/// Every rank must call it.
fn all_sum_segments(g: &Group, reps: usize, elems: usize) -> tessera_core::Result<[f64; 4]> {
    let stamped = Arc::new(Stamped {
        inner: g.handle().0.clone(),
        epoch: Instant::now(),
        enter: AtomicU64::new(0),
        exit: AtomicU64::new(0),
    });
    let group = GroupRef(stamped.clone());
    let mut seg: [Vec<f64>; 4] = Default::default();
    for rep in 0..=reps {
        let x = Array::from_vec(vec![1f32; elems], &[elems])?;
        ops::barrier(g.handle())?;
        let t0 = stamped.now();
        let y = ops::all_sum(&x, &group)?;
        let t1 = stamped.now();
        drop(x);
        y.eval()?;
        let t4 = stamped.now();
        let (t2, t3) = (
            stamped.enter.load(Ordering::Relaxed),
            stamped.exit.load(Ordering::Relaxed),
        );
        if rep > 0 {
            for (s, d) in seg.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3]) {
                s.push(d as f64 / 1e3);
            }
        }
    }
    Ok(seg.map(median))
}

/// Runs the sweep; every rank must call it. `emit` is called on rank 0 only.
pub fn run_collectives(
    g: &Group,
    b: &CollectiveBench,
    emit: &mut dyn FnMut(Record),
) -> tessera_core::Result<()> {
    let n = g.size();
    let backend = g.handle().0.backend().to_string();
    let mut bytes = 4usize;
    let gather = b.op == CollectiveKind::AllGather;
    while bytes <= b.max_bytes.max(4) {
        // Each rank's input: the whole message for a reduction, its share for a gather.
        let elems = if gather { bytes / 4 / n } else { bytes / 4 };
        if elems == 0 {
            bytes *= 4;
            continue;
        }
        // Fewer repetitions for the big sizes: they are long and steady.
        let reps = if bytes >= 64 << 20 {
            b.repeats.min(5)
        } else {
            b.repeats
        }
        .max(1);
        // A fresh, evaluated, contiguous input owned only by the node (an all_sum reduces it in
        // place). (Not `ops::full`: that is a broadcast view of one scalar, which the node would
        // first have to copy out into a new buffer, inside the timed region.)
        let secs = slowest_median(
            g,
            reps,
            || Array::from_vec(vec![1f32; elems], &[elems]),
            |x| {
                let y = if gather {
                    g.all_gather(&x)?
                } else {
                    g.all_sum(&x)?
                };
                drop(x);
                y.eval()?;
                Ok(y)
            },
        )?;
        let small = bytes <= 64 << 10;
        let comm_secs = if small {
            let comm = &g.handle().0;
            let mut out = vec![0u8; if gather { elems * 4 * n } else { 0 }];
            Some(slowest_median(
                g,
                reps,
                || Ok(1f32.to_le_bytes().repeat(elems)),
                |mut buf| {
                    if gather {
                        comm.all_gather(&buf, &mut out)?;
                    } else {
                        comm.all_reduce(CollectiveReduce::Sum, Dtype::F32, &mut buf)?;
                    }
                    Ok(buf)
                },
            )?)
        } else {
            None
        };
        let segments = if small && !gather && b.breakdown {
            Some(all_sum_segments(g, b.repeats.max(1), elems)?)
        } else {
            None
        };
        if g.rank() == 0 {
            let msg = if gather { elems * 4 * n } else { bytes };
            let algbw = msg as f64 / secs / 1e9;
            let busbw = algbw * b.op.bus_factor(n);
            let op = b.op.name();
            let case = |what: &str| format!("{op}/{backend}/n{n}/{}/{what}", size_name(bytes));
            if small {
                emit(Record {
                    case: case("latency"),
                    value: secs * 1e6,
                    unit: "us",
                });
            }
            if let Some(c) = comm_secs {
                emit(Record {
                    case: case("comm_latency"),
                    value: c * 1e6,
                    unit: "us",
                });
            }
            if let Some(segs) = segments {
                let names = ["build", "before_transport", "transport", "after_transport"];
                for (what, v) in names.iter().zip(segs) {
                    emit(Record {
                        case: case(&format!("graph_{what}")),
                        value: v,
                        unit: "us",
                    });
                }
            }
            if bytes >= 64 << 10 {
                emit(Record {
                    case: case("algbw"),
                    value: algbw,
                    unit: "GB/s",
                });
                emit(Record {
                    case: case("busbw"),
                    value: busbw,
                    unit: "GB/s",
                });
            }
        }
        bytes *= 4;
    }
    Ok(())
}
