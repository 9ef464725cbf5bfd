//! Handwritten digits (the scikit-learn set: 1797 images of 8x8 pixels) with an MLP and a small
//! CNN, trained with Adam; prints progress and the test accuracy of each.
//!
//! ```sh
//! scripts/fetch-datasets.sh                       # into .cache/datasets (from PyPI)
//! cargo run --release -p tessera --example digits
//! ```
//! Exits with an error if either model stays under 97% test accuracy.

use tessera::core::transforms::Params;
use tessera::nn::conv::{Conv2d, ConvOptions};
use tessera::nn::layers::{Linear, Mlp};
use tessera::nn::optim::{Adam, Optimizer};
use tessera::nn::pool::MaxPool2d;
use tessera::nn::{Module, activations, losses};
use tessera::{Array, Dtype, ops, random};

const TARGET: f64 = 0.97;

struct Data {
    x: Vec<f32>, // n x 64, scaled to [0, 1]
    y: Vec<i32>,
}

fn load() -> Result<Data, String> {
    let dir = std::env::var("TESSERA_DATASETS").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/datasets").to_string()
    });
    let path = std::path::Path::new(&dir).join("digits.csv");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e}\nfetch it first: scripts/fetch-datasets.sh",
            path.display()
        )
    })?;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let v: Vec<f32> = line
            .split(',')
            .map(|s| s.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: line {}: {e}", path.display(), i + 1))?;
        if v.len() != 65 {
            return Err(format!(
                "{}: line {} has {} values, expected 65",
                path.display(),
                i + 1,
                v.len()
            ));
        }
        x.extend(v[..64].iter().map(|p| p / 16.0));
        y.push(v[64] as i32);
    }
    Ok(Data { x, y })
}

/// Two 3x3 convolutions with max pooling, then a linear classifier (channels last: N, H, W, C).
#[derive(Clone)]
struct Cnn {
    conv1: Conv2d,
    conv2: Conv2d,
    head: Linear,
}

impl Cnn {
    fn new(key: &Array) -> tessera::Result<Cnn> {
        let keys = random::split(key, 3)?;
        let k = |i: usize| ops::reshape(&ops::slice_axis(&keys, 0, i, i + 1)?, &[2]);
        let same = || ConvOptions::default().padding(1);
        Ok(Cnn {
            conv1: Conv2d::new(1, 16, 3, true, same(), &k(0)?)?,
            conv2: Conv2d::new(16, 32, 3, true, same(), &k(1)?)?,
            head: Linear::new(2 * 2 * 32, 10, true, &k(2)?)?,
        })
    }
}

impl Module for Cnn {
    fn parameters(&self) -> Params {
        let mut p = Params::new();
        for (prefix, m) in [
            ("conv1", self.conv1.parameters()),
            ("conv2", self.conv2.parameters()),
            ("head", self.head.parameters()),
        ] {
            for (k, v) in m {
                p.insert(format!("{prefix}.{k}"), v);
            }
        }
        p
    }

    fn load_parameters(&mut self, params: &Params) -> tessera::Result<()> {
        let part = |prefix: &str| -> Params {
            params
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(prefix)
                        .and_then(|r| r.strip_prefix('.'))
                        .map(|r| (r.to_string(), v.clone()))
                })
                .collect()
        };
        self.conv1.load_parameters(&part("conv1"))?;
        self.conv2.load_parameters(&part("conv2"))?;
        self.head.load_parameters(&part("head"))
    }

    fn forward(&self, x: &Array) -> tessera::Result<Array> {
        let n = x.shape()[0];
        let pool = MaxPool2d::new(2);
        let x = ops::reshape(x, &[n, 8, 8, 1])?;
        let x = pool.forward(&activations::relu(&self.conv1.forward(&x)?)?)?; // 4x4x16
        let x = pool.forward(&activations::relu(&self.conv2.forward(&x)?)?)?; // 2x2x32
        self.head.forward(&ops::reshape(&x, &[n, 2 * 2 * 32])?)
    }
}

fn accuracy(model: &impl Module, x: &Array, y: &Array) -> tessera::Result<f64> {
    let pred = ops::argmax(&model.forward(x)?, Some(-1), false)?.astype(Dtype::I32)?;
    let hits = ops::sum(
        &ops::equal(&pred, y)?.astype(Dtype::F32)?,
        ops::Axes::All,
        false,
    )?;
    Ok(hits.item::<f32>()? as f64 / y.shape()[0] as f64)
}

/// Trains `model` with Adam on mini-batches, reshuffled each epoch; returns the test accuracy.
fn train(
    name: &str,
    mut model: impl Module,
    data: &Data,
    epochs: usize,
    lr: f64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let n = data.y.len();
    // A fixed shuffle, then 80% train / 20% test.
    let order = random::permutation(n, Some(&random::key(42)))?.to_vec::<i32>()?;
    let n_train = n * 4 / 5;
    let pick = |idx: &[i32]| -> tessera::Result<(Array, Array)> {
        let mut x = Vec::with_capacity(idx.len() * 64);
        let mut y = Vec::with_capacity(idx.len());
        for &i in idx {
            x.extend_from_slice(&data.x[i as usize * 64..(i as usize + 1) * 64]);
            y.push(data.y[i as usize]);
        }
        Ok((
            Array::from_slice(&x, &[idx.len(), 64])?,
            Array::from_slice(&y, &[idx.len()])?,
        ))
    };
    let (train_idx, test_idx) = order.split_at(n_train);
    let (x_test, y_test) = pick(test_idx)?;
    let mut opt = Adam::new(lr);
    let batch = 64;
    for epoch in 0..epochs {
        let perm = random::permutation(n_train, Some(&random::key(1000 + epoch as u64)))?
            .to_vec::<i32>()?;
        let mut total = 0.0;
        let mut batches = 0;
        for chunk in perm.chunks(batch) {
            let idx: Vec<i32> = chunk.iter().map(|&j| train_idx[j as usize]).collect();
            let (x, y) = pick(&idx)?;
            let (loss, grads) = tessera::nn::value_and_grad(&model, |m| {
                losses::cross_entropy(&m.forward(&x)?, &y, 0.0)
            })?;
            let params = opt.update(&model.parameters(), &grads)?;
            let mut todo: Vec<Array> = params.values().cloned().collect();
            todo.extend(opt.state());
            todo.push(loss.clone());
            tessera::eval(&todo)?;
            model.load_parameters(&params)?;
            total += loss.item::<f32>()? as f64;
            batches += 1;
        }
        if epoch % 5 == 4 || epoch + 1 == epochs {
            println!(
                "{name} epoch {:3}: train loss {:.4}, test accuracy {:.2}%",
                epoch + 1,
                total / batches as f64,
                100.0 * accuracy(&model, &x_test, &y_test)?
            );
        }
    }
    Ok(accuracy(&model, &x_test, &y_test)?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = load()?;
    println!(
        "{} images, {} for training, {} for testing",
        data.y.len(),
        data.y.len() * 4 / 5,
        data.y.len() - data.y.len() * 4 / 5
    );
    let t = std::time::Instant::now();
    let mlp = Mlp::new(&[64, 128, 10], activations::relu, &random::key(0))?;
    let mlp_acc = train("mlp", mlp, &data, 60, 1e-3)?;
    let t_mlp = t.elapsed();
    let t = std::time::Instant::now();
    let cnn_acc = train("cnn", Cnn::new(&random::key(1))?, &data, 30, 2e-3)?;
    let t_cnn = t.elapsed();
    println!(
        "test accuracy: MLP {:.2}% ({:.1} s), CNN {:.2}% ({:.1} s)",
        100.0 * mlp_acc,
        t_mlp.as_secs_f64(),
        100.0 * cnn_acc,
        t_cnn.as_secs_f64()
    );
    if mlp_acc < TARGET || cnn_acc < TARGET {
        return Err(format!("below the {:.0}% target", 100.0 * TARGET).into());
    }
    Ok(())
}
