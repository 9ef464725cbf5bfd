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

use crate::Record;
use tessera_core::collective::CollectiveReduce;
use tessera_core::{Array, Dtype, ops};
use tessera_distributed::Group;

/// What to measure.
pub struct CollectiveBench {
    /// Largest message in bytes (sizes go up by 4x from 4 bytes).
    pub max_bytes: usize,
    /// Timed repetitions per size (after one warm-up).
    pub repeats: usize,
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

/// The median over repetitions of the slowest rank's time (every rank must call it).
fn slowest_median(g: &Group, times: &[f64]) -> tessera_core::Result<f64> {
    let t = Array::from_slice(times, &[times.len()])?;
    Ok(median(g.all_max(&t)?.to_vec::<f64>()?))
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
    while bytes <= b.max_bytes.max(4) {
        let elems = bytes / 4;
        // Fewer repetitions for the big sizes: they are long and steady.
        let reps = if bytes >= 64 << 20 {
            b.repeats.min(5)
        } else {
            b.repeats
        }
        .max(1);
        let mut times = Vec::with_capacity(reps);
        for rep in 0..=reps {
            // A fresh, evaluated, contiguous input owned only by the all_sum node: reduced in
            // place. (Not `ops::full`: that is a broadcast view of one scalar, which the node
            // would first have to copy out into a new buffer, inside the timed region.)
            let x = Array::from_vec(vec![1f32; elems], &[elems])?;
            ops::barrier(g.handle())?;
            let t = std::time::Instant::now();
            let y = g.all_sum(&x)?;
            drop(x);
            y.eval()?;
            let dt = t.elapsed().as_secs_f64();
            if rep > 0 {
                times.push(dt);
            }
        }
        let secs = slowest_median(g, &times)?;
        let comm_secs = if bytes <= 64 << 10 {
            let mut buf = vec![0u8; bytes];
            let mut times = Vec::with_capacity(reps);
            for rep in 0..=reps {
                buf.chunks_exact_mut(4)
                    .for_each(|c| c.copy_from_slice(&1f32.to_le_bytes()));
                ops::barrier(g.handle())?;
                let t = std::time::Instant::now();
                g.handle()
                    .0
                    .all_reduce(CollectiveReduce::Sum, Dtype::F32, &mut buf)?;
                let dt = t.elapsed().as_secs_f64();
                if rep > 0 {
                    times.push(dt);
                }
            }
            Some(slowest_median(g, &times)?)
        } else {
            None
        };
        if g.rank() == 0 {
            let algbw = bytes as f64 / secs / 1e9;
            let busbw = algbw * 2.0 * (n - 1) as f64 / n as f64;
            let case = |what: &str| format!("all_sum/{backend}/n{n}/{}/{what}", size_name(bytes));
            if bytes <= 64 << 10 {
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
