//! The per-op work of building and evaluating graph nodes, for counting instructions with
//! callgrind (`scripts/count-op-instructions.sh` runs it): the machine's speed moves from minute
//! to minute, an instruction count does not.
//!
//! `op_instructions all_sum N`: N times, a fresh 4-float input, `all_sum` on a no-op
//! two-rank communicator, the input dropped, `eval` (what `tessera bench collectives` times
//! as the graph op); only `timed_all_sum` is meant to be counted (`--toggle-collect`).
//! `op_instructions chain N`: N chains of 100 `add(x, 1)` on 1000 floats, each evaluated
//! (`op_overhead_chain100`'s loop); `timed_chain` is counted.

use std::sync::Arc;
use tessera_core::collective::{CollectiveReduce, Communicator, GroupRef};
use tessera_core::{Array, Dtype, Result, ops};

/// A group of two whose collectives move nothing: what is left is the graph's own cost.
struct NoOp;

impl Communicator for NoOp {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        2
    }
    fn backend(&self) -> &str {
        "no-op"
    }
    fn all_reduce(&self, _: CollectiveReduce, _: Dtype, data: &mut [u8]) -> Result<()> {
        std::hint::black_box(data);
        Ok(())
    }
    fn all_gather(&self, _: &[u8], _: &mut [u8]) -> Result<()> {
        Ok(())
    }
    fn reduce_scatter(&self, _: CollectiveReduce, _: Dtype, _: &[u8], _: &mut [u8]) -> Result<()> {
        Ok(())
    }
    fn send(&self, _: &[u8], _: usize) -> Result<()> {
        Ok(())
    }
    fn recv(&self, _: &mut [u8], _: usize) -> Result<()> {
        Ok(())
    }
}

#[inline(never)]
fn timed_all_sum(x: Array, g: &GroupRef) -> Result<Array> {
    let y = ops::all_sum(&x, g)?;
    drop(x);
    y.eval()?;
    Ok(y)
}

#[inline(never)]
fn timed_chain(x: &Array, one: &Array) -> Result<Array> {
    let mut y = x.clone();
    for _ in 0..100 {
        y = ops::add(&y, one)?;
    }
    y.eval()?;
    Ok(y)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: op_instructions all_sum|chain N";
    let (Some(mode), Some(n)) = (
        args.get(1),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    match mode.as_str() {
        "all_sum" => {
            let g = GroupRef(Arc::new(NoOp));
            for _ in 0..n {
                let x = Array::from_vec(vec![1f32; 4], &[4])?;
                let y = timed_all_sum(x, &g)?;
                std::hint::black_box(&y);
            }
        }
        "chain" => {
            let x = Array::from_vec(vec![1f32; 1000], &[1000])?;
            let one = Array::scalar(1f32);
            for _ in 0..n {
                std::hint::black_box(timed_chain(&x, &one)?);
            }
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
    Ok(())
}
