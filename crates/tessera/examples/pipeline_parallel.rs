//! Pipeline-parallel training across two processes: rank 0 holds the first layer and sends its
//! activations to rank 1, which holds the second layer and the loss. Each rank differentiates
//! only its own stage: rank 1's backward pass sends the activations' gradient back (the rule of
//! `recv`), rank 0's receives it (the rule of `send`), and both update their own parameters.
//! Neither process ever holds the whole model.
//!
//! ```sh
//! cargo build --release -p tessera --example pipeline_parallel
//! cargo run --release -p tessera-cli -- launch -n 2 -- target/release/examples/pipeline_parallel
//! ```
//! Started without the launcher it runs both stages in one process (no messages), which gives
//! the same losses: the pipeline changes where the work runs, not the result.

#[path = "shared/teacher_task.rs"]
mod teacher_task;

use tessera::distributed::{Backend, Group, init};
use tessera::nn::layers::Linear;
use tessera::nn::optim::{Adam, Optimizer};
use tessera::nn::{Module, activations, losses};
use tessera::{Array, Dtype, ops, random};

const DIM: usize = 16;
const HIDDEN: usize = 64;
const CLASSES: usize = 4;
const BATCH: usize = 128;
const STEPS: usize = 300;

/// Stage 1: a hidden layer with ReLU.
fn stage1(layer: &Linear, x: &Array) -> tessera::Result<Array> {
    activations::relu(&layer.forward(x)?)
}

/// One step of stage 1 on rank 0: forward, send, and the backward pass through the send, whose
/// cotangent arrives from rank 1.
fn step_first(group: &Group, layer: &mut Linear, opt: &mut Adam, x: &Array) -> tessera::Result<()> {
    let params = layer.parameters();
    let names: Vec<String> = params.keys().cloned().collect();
    let values: Vec<Array> = params.values().cloned().collect();
    let zero = ops::zeros(&[BATCH, HIDDEN], Dtype::F32)?;
    let (_, grads) = tessera::core::transforms::vjp(
        |ps| {
            let mut l = layer.clone();
            l.load_parameters(&names.iter().cloned().zip(ps.iter().cloned()).collect())?;
            // The stage's output is the send; rank 0 has no loss of its own (zero cotangent).
            Ok(vec![group.send(&stage1(&l, x)?, 1)?])
        },
        &values,
        std::slice::from_ref(&zero),
    )?;
    let grads = names.into_iter().zip(grads).collect();
    let new = opt.update(&params, &grads)?;
    let mut todo: Vec<Array> = new.values().cloned().collect();
    todo.extend(opt.state());
    tessera::eval(&todo)?;
    layer.load_parameters(&new)
}

/// One step of stage 2 on rank 1 (or of both stages in one process): returns the loss.
fn step_last(
    group: &Group,
    first: Option<(&mut Linear, &mut Adam, &Array)>,
    layer: &mut Linear,
    opt: &mut Adam,
    y: &Array,
) -> tessera::Result<f32> {
    let (loss, grads) = match first {
        // Alone: one model of both stages, differentiated as a whole.
        Some((l1, opt1, x)) => {
            let both = (l1.clone(), layer.clone());
            let mut params = tessera::core::transforms::Params::new();
            for (k, v) in both.0.parameters() {
                params.insert(format!("0.{k}"), v);
            }
            for (k, v) in both.1.parameters() {
                params.insert(format!("1.{k}"), v);
            }
            let (loss, grads) = tessera::core::transforms::value_and_grad_params(
                |p| {
                    let (mut a, mut b) = both.clone();
                    a.load_parameters(&sub(p, "0."))?;
                    b.load_parameters(&sub(p, "1."))?;
                    losses::cross_entropy(&b.forward(&stage1(&a, x)?)?, y, 0.0)
                },
                &params,
            )?;
            let new1 = opt1.update(&l1.parameters(), &sub(&grads, "0."))?;
            let mut todo: Vec<Array> = new1.values().cloned().collect();
            todo.extend(opt1.state());
            tessera::eval(&todo)?;
            l1.load_parameters(&new1)?;
            (loss, sub(&grads, "1."))
        }
        // Rank 1: the activations come from rank 0; the backward pass sends their gradient back.
        None => tessera::nn::value_and_grad(layer, |m| {
            let h = group.recv(&[BATCH, HIDDEN], Dtype::F32, 0)?;
            losses::cross_entropy(&m.forward(&h)?, y, 0.0)
        })?,
    };
    let new = opt.update(&layer.parameters(), &grads)?;
    let mut todo: Vec<Array> = new.values().cloned().collect();
    todo.extend(opt.state());
    todo.push(loss.clone());
    tessera::eval(&todo)?;
    layer.load_parameters(&new)?;
    loss.item::<f32>()
}

/// The entries of `p` whose names start with `prefix`, without it.
fn sub(p: &tessera::core::transforms::Params, prefix: &str) -> tessera::core::transforms::Params {
    p.iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let group = init(Backend::Any)?;
    let (rank, n) = (group.rank(), group.size());
    if n > 2 {
        return Err(format!("this example has two stages: run it on 1 or 2 ranks, not {n}").into());
    }
    let teacher = teacher_task::teacher(DIM, CLASSES)?;
    // Each rank builds only its own stage (the same seeds as the single-process run).
    let mut first = Linear::new(DIM, HIDDEN, true, &random::key(1))?;
    let mut last = Linear::new(HIDDEN, CLASSES, true, &random::key(2))?;
    let (mut opt1, mut opt2) = (Adam::new(3e-3), Adam::new(3e-3));
    for step in 0..STEPS {
        let (x, y) = teacher_task::batch(&teacher, BATCH, 1_000_000 + step as u64)?;
        let loss = if n == 1 {
            Some(step_last(
                &group,
                Some((&mut first, &mut opt1, &x)),
                &mut last,
                &mut opt2,
                &y,
            )?)
        } else if rank == 0 {
            step_first(&group, &mut first, &mut opt1, &x)?;
            None
        } else {
            Some(step_last(&group, None, &mut last, &mut opt2, &y)?)
        };
        if let Some(loss) = loss
            && (step % 50 == 0 || step + 1 == STEPS)
        {
            println!("step {step:4}  loss {loss:.4}");
        }
    }
    // Held-out accuracy: the activations take the same path once more, without gradients.
    let (x, y) = teacher_task::batch(&teacher, BATCH, 7_000_000)?;
    let logits = if n == 1 {
        Some(last.forward(&stage1(&first, &x)?)?)
    } else if rank == 0 {
        group.send(&stage1(&first, &x)?, 1)?.eval()?;
        None
    } else {
        let h = group.recv(&[BATCH, HIDDEN], Dtype::F32, 0)?;
        Some(last.forward(&h)?)
    };
    if let Some(logits) = logits {
        let pred = ops::argmax(&logits, Some(-1), false)?.astype(Dtype::I32)?;
        let correct = ops::sum(
            &ops::equal(&pred, &y)?.astype(Dtype::F32)?,
            ops::Axes::All,
            false,
        )?
        .item::<f32>()?;
        println!(
            "{n} process(es): held-out accuracy {:.1}% on {BATCH} examples",
            100.0 * correct / BATCH as f32
        );
    }
    Ok(())
}
