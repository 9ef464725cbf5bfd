//! Opt-in timing of evaluation, per primitive (`TESSERA_PROFILE=1`, or [`set_enabled`]);
//! `TESSERA_PROFILE=shapes` keys the table by primitive and output shape.
//!
//! Why: a decode step is hundreds of small ops; knowing which kinds take the time (and how much
//! of an evaluation is spent between kernels) is the first question of any speed work. Off by
//! default: the check is one relaxed atomic load per op.
//!
//! ```
//! tessera_core::profile::set_enabled(true);
//! let a = tessera_core::ops::exp(&tessera_core::Array::from_slice(&[1f32, 2.0], &[2]).unwrap()).unwrap();
//! a.eval().unwrap();
//! assert!(tessera_core::profile::report().contains("Unary(Exp)"));
//! ```

use crate::primitive::Primitive;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// 0: not read from the environment yet, 1: off, 2: on, 3: on, by shape.
static STATE: AtomicU8 = AtomicU8::new(0);

#[derive(Default)]
struct Totals {
    /// Per primitive kind: (calls, time in its kernel).
    kinds: HashMap<String, (u64, Duration)>,
    /// Wall time of whole evaluations (kernels plus the walk between them).
    evals: (u64, Duration),
}

static TOTALS: Mutex<Option<Totals>> = Mutex::new(None);

/// Whether timings are being recorded.
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let v = std::env::var("TESSERA_PROFILE").unwrap_or_default();
            let state = match v.as_str() {
                "" | "0" => 1,
                "shapes" => 3,
                _ => 2,
            };
            STATE.store(state, Ordering::Relaxed);
            state > 1
        }
        s => s > 1,
    }
}

/// Turns recording on or off (overrides `TESSERA_PROFILE`).
pub fn set_enabled(on: bool) {
    STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

fn with_totals(f: impl FnOnce(&mut Totals)) {
    let mut t = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    f(t.get_or_insert_with(Totals::default));
}

/// The kind of a primitive: its name and leading unit parameter, without the rest
/// (`QuantizedMatmul`, `Unary(Exp)`, `Reduce(Sum)`).
fn kind(p: &Primitive) -> String {
    let s = format!("{p:?}");
    let end = s.find([' ', '{', ',']).unwrap_or(s.len());
    let mut k = s[..end].to_string();
    let open = k
        .matches('(')
        .count()
        .saturating_sub(k.matches(')').count());
    k.extend(std::iter::repeat_n(')', open));
    k
}

pub(crate) fn record_kernel(p: &Primitive, shape: &[usize], dt: Duration) {
    let mut k = kind(p);
    if STATE.load(Ordering::Relaxed) == 3 {
        k += &format!(" {shape:?}");
    }
    with_totals(|t| {
        let e = t.kinds.entry(k).or_default();
        e.0 += 1;
        e.1 += dt;
    });
}

pub(crate) fn record_eval(dt: Duration) {
    with_totals(|t| {
        t.evals.0 += 1;
        t.evals.1 += dt;
    });
}

/// Clears the recorded timings.
pub fn reset() {
    *TOTALS.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// A table of the recorded timings: per primitive kind, calls, total and mean time and share of
/// kernel time, slowest first; then the evaluations' wall time and the part spent outside
/// kernels (graph walk, buffer hand-over).
pub fn report() -> String {
    let t = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(t) = t.as_ref() else {
        return "no timings recorded (set TESSERA_PROFILE=1)\n".into();
    };
    let mut rows: Vec<_> = t.kinds.iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.1));
    let kernels: Duration = rows.iter().map(|r| r.1.1).sum();
    let mut out = format!(
        "{:<40} {:>9} {:>11} {:>9} {:>6}\n",
        "primitive", "calls", "total ms", "mean us", "share"
    );
    for (name, (calls, time)) in rows {
        out += &format!(
            "{:<40} {:>9} {:>11.2} {:>9.2} {:>5.1}%\n",
            name,
            calls,
            time.as_secs_f64() * 1e3,
            time.as_secs_f64() * 1e6 / (*calls).max(1) as f64,
            100.0 * time.as_secs_f64() / kernels.as_secs_f64().max(1e-12)
        );
    }
    let (n, wall) = t.evals;
    out += &format!(
        "kernels {:.2} ms; {n} evaluations {:.2} ms wall, {:.2} ms outside kernels\n",
        kernels.as_secs_f64() * 1e3,
        wall.as_secs_f64() * 1e3,
        wall.saturating_sub(kernels).as_secs_f64() * 1e3
    );
    out
}
