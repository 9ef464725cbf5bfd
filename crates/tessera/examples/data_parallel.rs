//! Data-parallel training across processes: every rank holds the same model, computes gradients
//! on its own shard of the data, averages them with `all_sum` (a lazy op in the same graph as
//! the backward pass), and takes the same optimizer step, so the models stay identical.
//!
//! ```sh
//! cargo build --release -p tessera --example data_parallel
//! cargo run --release -p tessera-cli -- launch -n 3 -- target/release/examples/data_parallel
//! ```
//! Started without the launcher it trains alone (a group of one; every collective is a no-op).

#[path = "shared/teacher_task.rs"]
mod teacher_task;

use tessera::distributed::{Backend, init};
use tessera::nn::layers::Mlp;
use tessera::nn::optim::{Adam, Optimizer};
use tessera::nn::{Module, activations, losses};
use tessera::{Array, Dtype, ops, random};

const DIM: usize = 16;
const CLASSES: usize = 4;
const BATCH: usize = 128;
const STEPS: usize = 300;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let group = init(Backend::Any)?;
    let (rank, n) = (group.rank(), group.size());
    let teacher = teacher_task::teacher(DIM, CLASSES)?;
    // Same seed on every rank: identical initial parameters.
    let mut model = Mlp::new(&[DIM, 64, CLASSES], activations::relu, &random::key(1))?;
    let mut opt = Adam::new(3e-3);
    let scale = Array::scalar_of(1.0 / n as f64, Dtype::F32);
    for step in 0..STEPS {
        let (x, y) =
            teacher_task::batch(&teacher, BATCH, 1_000_000 * (rank as u64 + 1) + step as u64)?;
        let (loss, grads) = tessera::nn::value_and_grad(&model, |m| {
            losses::cross_entropy(&m.forward(&x)?, &y, 0.0)
        })?;
        // Average the gradients over ranks: one all_sum per parameter, inside the graph.
        let mut avg = grads.clone();
        for g in avg.values_mut() {
            *g = ops::multiply(&group.all_sum(g)?, &scale)?;
        }
        let params = opt.update(&model.parameters(), &avg)?;
        let mean_loss = ops::multiply(&group.all_sum(&loss)?, &scale)?;
        let mut todo: Vec<Array> = params.values().cloned().collect();
        todo.extend(opt.state());
        todo.push(mean_loss.clone());
        tessera::eval(&todo)?;
        model.load_parameters(&params)?;
        if rank == 0 && (step % 50 == 0 || step + 1 == STEPS) {
            println!("step {step:4}  loss {:.4}", mean_loss.item::<f32>()?);
        }
    }
    // Held-out accuracy, counted over all ranks' test shards.
    let (x, y) = teacher_task::batch(&teacher, BATCH, 7_000_000 + rank as u64)?;
    let pred = ops::argmax(&model.forward(&x)?, Some(-1), false)?.astype(Dtype::I32)?;
    let correct = ops::sum(
        &ops::equal(&pred, &y)?.astype(Dtype::F32)?,
        ops::Axes::All,
        false,
    )?;
    let total = group.all_sum(&correct)?.item::<f32>()?;
    // The replicas must have stayed identical: max - min over ranks of every parameter is 0.
    let mut spread = 0.0f32;
    for p in model.parameters().values() {
        let d = ops::subtract(&group.all_max(p)?, &group.all_min(p)?)?;
        spread = spread.max(ops::max(&d, ops::Axes::All, false)?.item::<f32>()?);
    }
    if rank == 0 {
        println!(
            "{n} rank(s): held-out accuracy {:.1}% on {} examples; replicas identical: {}",
            100.0 * total / (n * BATCH) as f32,
            n * BATCH,
            if spread == 0.0 { "yes" } else { "NO" }
        );
    }
    if spread != 0.0 {
        return Err(format!("replicas diverged by {spread}").into());
    }
    Ok(())
}
