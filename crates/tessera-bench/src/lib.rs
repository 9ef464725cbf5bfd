//! The tessera benchmark harness: named cases, each timed as the median of several runs after a
//! warm-up, reported as `{"case": ..., "value": ..., "unit": ...}` JSON lines.
//!
//! Benchmarks are not tests: nothing here asserts speed. `scripts/compare-bench.sh` runs the
//! same cases with NumPy, PyTorch and MLX and writes the side-by-side table in BENCHMARKS.md.

mod collectives;
mod llm;
mod ops_cases;
mod quant_cases;
mod train_cases;

use std::time::Instant;

pub use collectives::{CollectiveBench, CollectiveKind, run_collectives};
pub use llm::{LlmBench, run_llm};
pub use ops_cases::ops_cases;
pub use train_cases::train_cases;

/// One measured result.
#[derive(Debug, Clone)]
pub struct Record {
    pub case: String,
    pub value: f64,
    pub unit: &'static str,
}

impl Record {
    /// The JSON line for this record.
    pub fn to_json(&self) -> String {
        let v = if self.value.is_finite() {
            format!("{:.4}", self.value)
        } else {
            "null".into()
        };
        format!(
            "{{\"case\": \"{}\", \"value\": {}, \"unit\": \"{}\"}}",
            self.case, v, self.unit
        )
    }
}

/// A benchmark case: a name, a unit, and a closure that sets up and returns the timed body plus
/// the amount of work per run (FLOPs, bytes, ops) used to turn seconds into the unit.
pub struct Case {
    pub name: String,
    pub unit: &'static str,
    pub setup: Box<dyn Fn() -> Body>,
}

/// The timed body and its work per run.
pub struct Body {
    pub run: Box<dyn FnMut()>,
    /// Work per run; the reported value is `work / seconds / scale` (or seconds-based units).
    pub work: f64,
    /// For cases that measure a ratio themselves (e.g. GEMV against the read bandwidth measured
    /// in the same moment): called instead of timing `run`; the median of its results is reported.
    pub measure: Option<Box<dyn FnMut() -> f64>>,
}

impl Body {
    /// A body timed by the harness.
    pub fn timed(run: impl FnMut() + 'static, work: f64) -> Body {
        Body {
            run: Box::new(run),
            work,
            measure: None,
        }
    }
}

/// How many runs and how long to spend.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub min_runs: usize,
    pub max_runs: usize,
    pub target_seconds: f64,
}

impl Settings {
    pub fn normal() -> Settings {
        Settings {
            min_runs: 5,
            max_runs: 50,
            target_seconds: 1.5,
        }
    }
    pub fn quick() -> Settings {
        Settings {
            min_runs: 3,
            max_runs: 10,
            target_seconds: 0.3,
        }
    }
}

/// Median seconds of `body` after one warm-up run.
pub fn time_median(body: &mut dyn FnMut(), s: Settings) -> f64 {
    body();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < s.min_runs
        || (times.len() < s.max_runs && start.elapsed().as_secs_f64() < s.target_seconds)
    {
        let t = Instant::now();
        body();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

/// Runs the cases whose name contains `filter`, calling `report` after each.
pub fn run(
    cases: Vec<Case>,
    filter: Option<&str>,
    s: Settings,
    mut report: impl FnMut(&Record),
) -> Vec<Record> {
    let mut out = Vec::new();
    for c in cases {
        if filter.is_some_and(|f| !c.name.contains(f)) {
            continue;
        }
        let mut body = (c.setup)();
        if let Some(measure) = body.measure.as_mut() {
            measure();
            let mut v: Vec<f64> = (0..s.min_runs.max(5)).map(|_| measure()).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            let r = Record {
                case: c.name,
                value: v[v.len() / 2],
                unit: c.unit,
            };
            report(&r);
            out.push(r);
            continue;
        }
        let secs = time_median(&mut body.run, s);
        let value = match c.unit {
            "GFLOPS" => body.work / secs / 1e9,
            "GB/s" => body.work / secs / 1e9,
            "us/op" => secs * 1e6 / body.work,
            "ms" => secs * 1e3,
            "steps/s" => body.work / secs,
            _ => secs,
        };
        let r = Record {
            case: c.name,
            value,
            unit: c.unit,
        };
        report(&r);
        out.push(r);
    }
    out
}
