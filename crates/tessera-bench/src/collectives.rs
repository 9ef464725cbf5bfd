//! `bench collectives`: all_sum bandwidth and latency by message size, on the group the process
//! was launched into (`tessera launch -n 3 -- tessera bench collectives --json`).
//!
//! Definitions as in nccl-tests: algorithm bandwidth = bytes / time; bus bandwidth = algorithm
//! bandwidth × 2(n-1)/n, the rate each link carries in an optimal all-reduce, comparable with
//! the link's own rate whatever the rank count. The time of one repetition is the slowest
//! rank's; the reported value is the median over repetitions.

use crate::Record;
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
            // A fresh, evaluated input owned only by the all_sum node: reduced in place.
            let x = ops::full(&[elems], 1.0, Dtype::F32)?;
            x.eval()?;
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
        // The slowest rank's time per repetition.
        let t = Array::from_slice(&times, &[times.len()])?;
        let slowest = g.all_max(&t)?.to_vec::<f64>()?;
        let secs = median(slowest);
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
