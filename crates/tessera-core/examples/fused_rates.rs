//! Compute rates of compiled element-wise programs, in ns per value, on data that stays in the
//! caches (so the executors' own cost shows rather than memory): `bench train`'s chains over
//! 16M values are bound by memory or by tanh, and move with the machine's speed.
//!
//! `cargo run --release -p tessera-core --example fused_rates [N [REPS [CASE]]]` (defaults:
//! 16384 values, 1200 calls; every case). Run with `TESSERA_NUM_THREADS=1` for one core's rate.
//! Each case prints the best of five timings of REPS calls, three rounds.
//!
//! Cases: `cheap10` (`chain10_cheap`'s mix: x1.01, +0.5, max -0.9, min 2, -0.25, twice),
//! `arith10` (multiplies, adds and subtracts), `maxmin10` (max / min against scalars), `tanh10`
//! (`chain10`'s mix: x1.01, +0.5, tanh), `add1` (one add: the cost of a call and one pass) and
//! `dag10` (ten cheap ops that read earlier results: the chunked executor); `bias4` and
//! `full4` (bias, ReLU, scale, bias over rows of 1024, the biases broadcast or full-size; N must
//! then be a multiple of 1024).

use tessera_core::transforms::compile;
use tessera_core::{Array, Result, ops};

type Op = fn(usize, &Array) -> Result<Array>;

/// A linear chain of `steps` ops `op(0..steps)`, compiled.
fn chain(op: Op, steps: usize) -> impl Fn(&[Array]) -> Result<Vec<Array>> {
    move |xs: &[Array]| {
        let mut y = xs[0].clone();
        for i in 0..steps {
            y = op(i, &y)?;
        }
        Ok(vec![y])
    }
}

/// Ten cheap ops in a DAG (results read again later), which the tiled executor does not take.
fn dag10(xs: &[Array]) -> Result<Vec<Array>> {
    let x = &xs[0];
    let a = ops::multiply(x, &Array::scalar(1.01f32))?;
    let b = ops::add(x, &Array::scalar(0.5f32))?;
    let c = ops::maximum(&a, &b)?;
    let d = ops::subtract(&c, x)?;
    let e = ops::multiply(&d, &a)?;
    let f = ops::minimum(&e, &Array::scalar(2.0f32))?;
    let g = ops::add(&f, &b)?;
    let h = ops::multiply(&g, &Array::scalar(0.25f32))?;
    let i = ops::subtract(&h, &c)?;
    Ok(vec![ops::add(&i, x)?])
}

/// A bias, a ReLU, a scale and a second bias over rows of 1024 (`x` is `[n / 1024, 1024]`):
/// the biases broadcast over the rows (`bias4`), or are full-size arrays (`full4`).
fn affine4(xs: &[Array]) -> Result<Vec<Array>> {
    let y = ops::add(&xs[0], &xs[1])?;
    let y = ops::maximum(&y, &Array::scalar(0f32))?;
    let y = ops::multiply(&y, &Array::scalar(1.5f32))?;
    Ok(vec![ops::add(&y, &xs[2])?])
}

fn main() -> Result<()> {
    let arg = |i: usize| std::env::args().nth(i);
    let n: usize = arg(1).and_then(|s| s.parse().ok()).unwrap_or(16384);
    let reps: usize = arg(2).and_then(|s| s.parse().ok()).unwrap_or(1200);
    let only = arg(3);
    let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    let x = Array::from_slice(&values, &[n])?;
    let rows = Array::from_slice(&values, &[n / 1024, 1024])?;
    let bias = Array::from_slice(&values[..1024], &[1024])?;
    let full_bias = ops::contiguous(&ops::broadcast_to(&bias, &[n / 1024, 1024])?)?;
    full_bias.eval()?;
    let cheap: Op = |i, y| match i % 5 {
        0 => ops::multiply(y, &Array::scalar(1.01f32)),
        1 => ops::add(y, &Array::scalar(0.5f32)),
        2 => ops::maximum(y, &Array::scalar(-0.9f32)),
        3 => ops::minimum(y, &Array::scalar(2.0f32)),
        _ => ops::subtract(y, &Array::scalar(0.25f32)),
    };
    let arith: Op = |i, y| match i % 3 {
        0 => ops::multiply(y, &Array::scalar(1.01f32)),
        1 => ops::add(y, &Array::scalar(0.5f32)),
        _ => ops::subtract(y, &Array::scalar(0.25f32)),
    };
    let maxmin: Op = |i, y| match i % 2 {
        0 => ops::maximum(y, &Array::scalar(-0.9f32)),
        _ => ops::minimum(y, &Array::scalar(2.0f32)),
    };
    let tanh: Op = |i, y| match i % 3 {
        0 => ops::multiply(y, &Array::scalar(1.01f32)),
        1 => ops::add(y, &Array::scalar(0.5f32)),
        _ => ops::tanh(y),
    };
    let add: Op = |_, y| ops::add(y, &Array::scalar(0.5f32));
    type Program = Box<dyn Fn(&[Array]) -> Result<Vec<Array>>>;
    let cases: Vec<(&str, Program)> = vec![
        ("cheap10", Box::new(chain(cheap, 10))),
        ("arith10", Box::new(chain(arith, 10))),
        ("maxmin10", Box::new(chain(maxmin, 10))),
        ("tanh10", Box::new(chain(tanh, 10))),
        ("add1", Box::new(chain(add, 1))),
        ("dag10", Box::new(dag10)),
        ("bias4", Box::new(affine4)),
        ("full4", Box::new(affine4)),
    ];
    for round in 0..3 {
        for (name, program) in &cases {
            if only.as_deref().is_some_and(|o| o != *name) {
                continue;
            }
            let f = compile(program);
            let inputs = match *name {
                "bias4" => vec![rows.clone(), bias.clone(), bias.clone()],
                "full4" => vec![rows.clone(), full_bias.clone(), full_bias.clone()],
                _ => vec![x.clone()],
            };
            let input = &inputs[..];
            f.call(input)?[0].eval()?;
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    f.call(input)?[0].eval()?;
                }
                best = best.min(t.elapsed().as_secs_f64() * 1e9 / (reps * n) as f64);
            }
            println!("round {round} {name}: {best:.3} ns/value");
        }
    }
    Ok(())
}
