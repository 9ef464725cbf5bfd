//! A tiny character-level transformer language model trained on Natsume Soseki's "Botchan"
//! (public domain; the English text that ships with sentencepiece's sources), then sampled.
//!
//! ```sh
//! scripts/fetch-datasets.sh                        # into .cache/datasets (from PyPI)
//! cargo run --release -p tessera --example tiny_lm [-- STEPS]
//! ```
//! Prints the unigram entropy of the characters (what a model that ignores context can reach),
//! the training and validation loss as it goes, and a generated sample at the end. Exits with an
//! error if the validation loss does not end well below the unigram entropy.

use tessera::core::transforms::Params;
use tessera::nn::layers::{Embedding, Linear, RmsNorm};
use tessera::nn::optim::{Adam, Optimizer};
use tessera::nn::{Module, activations, losses};
use tessera::{Array, Dtype, ops, random};

const CONTEXT: usize = 64;
const DIM: usize = 96;
const HEADS: usize = 4;
const LAYERS: usize = 2;
const BATCH: usize = 32;

/// Pre-norm decoder block: causal self-attention and a GELU MLP, each added to the residual.
#[derive(Clone)]
struct Block {
    norm1: RmsNorm,
    qkv: Linear,
    out: Linear,
    norm2: RmsNorm,
    up: Linear,
    down: Linear,
}

#[derive(Clone)]
struct Gpt {
    tokens: Embedding,
    positions: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    head: Linear,
}

fn nth_key(keys: &Array, i: usize) -> tessera::Result<Array> {
    ops::reshape(&ops::slice_axis(keys, 0, i, i + 1)?, &[2])
}

impl Gpt {
    fn new(vocab: usize, key: &Array) -> tessera::Result<Gpt> {
        let keys = random::split(key, 3 + 4 * LAYERS)?;
        let k = |i| nth_key(&keys, i);
        let small = |e: Embedding| -> tessera::Result<Embedding> {
            let mut p = Params::new();
            p.insert(
                "weight".into(),
                ops::multiply(
                    &e.parameters()["weight"],
                    &Array::scalar_of(0.02, Dtype::F32),
                )?,
            );
            let mut e = e;
            e.load_parameters(&p)?;
            Ok(e)
        };
        let blocks = (0..LAYERS)
            .map(|l| {
                Ok(Block {
                    norm1: RmsNorm::new(DIM, 1e-5)?,
                    qkv: Linear::new(DIM, 3 * DIM, false, &k(3 + 4 * l)?)?,
                    out: Linear::new(DIM, DIM, false, &k(4 + 4 * l)?)?,
                    norm2: RmsNorm::new(DIM, 1e-5)?,
                    up: Linear::new(DIM, 4 * DIM, false, &k(5 + 4 * l)?)?,
                    down: Linear::new(4 * DIM, DIM, false, &k(6 + 4 * l)?)?,
                })
            })
            .collect::<tessera::Result<Vec<_>>>()?;
        Ok(Gpt {
            tokens: small(Embedding::new(vocab, DIM, &k(0)?)?)?,
            positions: small(Embedding::new(CONTEXT, DIM, &k(1)?)?)?,
            blocks,
            norm: RmsNorm::new(DIM, 1e-5)?,
            head: Linear::new(DIM, vocab, false, &k(2)?)?,
        })
    }

    fn named(&self) -> Vec<(String, &dyn ModuleRef)> {
        let mut v: Vec<(String, &dyn ModuleRef)> = vec![
            ("tokens".into(), &self.tokens),
            ("positions".into(), &self.positions),
            ("norm".into(), &self.norm),
            ("head".into(), &self.head),
        ];
        for (i, b) in self.blocks.iter().enumerate() {
            for (n, m) in [
                ("norm1", &b.norm1 as &dyn ModuleRef),
                ("qkv", &b.qkv),
                ("out", &b.out),
                ("norm2", &b.norm2),
                ("up", &b.up),
                ("down", &b.down),
            ] {
                v.push((format!("blocks.{i}.{n}"), m));
            }
        }
        v
    }
}

/// Object-safe access to a child module's parameters (for the name tree above).
trait ModuleRef {
    fn params(&self) -> Params;
}
impl<M: Module> ModuleRef for M {
    fn params(&self) -> Params {
        self.parameters()
    }
}

fn sub(params: &Params, prefix: &str) -> Params {
    params
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('.'))
                .map(|r| (r.to_string(), v.clone()))
        })
        .collect()
}

impl Module for Gpt {
    fn parameters(&self) -> Params {
        let mut p = Params::new();
        for (prefix, m) in self.named() {
            for (k, v) in m.params() {
                p.insert(format!("{prefix}.{k}"), v);
            }
        }
        p
    }

    fn load_parameters(&mut self, params: &Params) -> tessera::Result<()> {
        self.tokens.load_parameters(&sub(params, "tokens"))?;
        self.positions.load_parameters(&sub(params, "positions"))?;
        self.norm.load_parameters(&sub(params, "norm"))?;
        self.head.load_parameters(&sub(params, "head"))?;
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let p = |n: &str| sub(params, &format!("blocks.{i}.{n}"));
            b.norm1.load_parameters(&p("norm1"))?;
            b.qkv.load_parameters(&p("qkv"))?;
            b.out.load_parameters(&p("out"))?;
            b.norm2.load_parameters(&p("norm2"))?;
            b.up.load_parameters(&p("up"))?;
            b.down.load_parameters(&p("down"))?;
        }
        Ok(())
    }

    /// Token ids (b, t) to next-token logits (b, t, vocab).
    fn forward(&self, ids: &Array) -> tessera::Result<Array> {
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        let pos = ops::arange(0.0, t as f64, 1.0, Dtype::I32)?;
        let mut x = ops::add(&self.tokens.forward(ids)?, &self.positions.forward(&pos)?)?;
        // Causal mask: -inf above the diagonal.
        let mask = ops::where_(
            &ops::triu(&ops::ones(&[t, t], Dtype::Bool)?, 1)?,
            &Array::scalar_of(f64::NEG_INFINITY, Dtype::F32),
            &Array::scalar_of(0.0, Dtype::F32),
        )?;
        let hd = DIM / HEADS;
        for blk in &self.blocks {
            let h = blk.norm1.forward(&x)?;
            let qkv = ops::reshape(&blk.qkv.forward(&h)?, &[b, t, 3, HEADS, hd])?;
            let part = |i: usize| -> tessera::Result<Array> {
                let s = ops::slice_axis(&qkv, 2, i, i + 1)?;
                ops::transpose(&ops::reshape(&s, &[b, t, HEADS, hd])?, Some(&[0, 2, 1, 3]))
            };
            let att = ops::sdpa_composite(
                &part(0)?,
                &part(1)?,
                &part(2)?,
                1.0 / (hd as f64).sqrt(),
                Some(&mask),
            )?;
            let att = ops::reshape(&ops::transpose(&att, Some(&[0, 2, 1, 3]))?, &[b, t, DIM])?;
            x = ops::add(&x, &blk.out.forward(&att)?)?;
            let h = blk.norm2.forward(&x)?;
            let m = blk
                .down
                .forward(&activations::gelu(&blk.up.forward(&h)?)?)?;
            x = ops::add(&x, &m)?;
        }
        self.head.forward(&self.norm.forward(&x)?)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(600);
    let dir = std::env::var("TESSERA_DATASETS").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/datasets").to_string()
    });
    let path = std::path::Path::new(&dir).join("botchan.txt");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e}\nfetch it first: scripts/fetch-datasets.sh",
            path.display()
        )
    })?;
    let text = text.trim_start_matches('\u{feff}');
    let mut chars: Vec<char> = text
        .chars()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    chars.sort();
    let index = |c: char| chars.binary_search(&c).unwrap_or(0) as i32;
    let ids: Vec<i32> = text.chars().map(index).collect();
    let split = ids.len() * 9 / 10;
    let (train_ids, val_ids) = ids.split_at(split);

    // What a context-free model can reach: the entropy of the character frequencies.
    let mut counts = vec![0f64; chars.len()];
    for &i in train_ids {
        counts[i as usize] += 1.0;
    }
    let total: f64 = counts.iter().sum();
    let unigram: f64 = counts
        .iter()
        .filter(|&&c| c > 0.0)
        .map(|&c| -(c / total) * (c / total).ln())
        .sum();
    println!(
        "{} characters ({} distinct); unigram entropy {unigram:.3} nats/char",
        ids.len(),
        chars.len()
    );

    let mut model = Gpt::new(chars.len(), &random::key(0))?;
    let mut opt = Adam::adamw(3e-3, 0.01);
    // A batch of random windows: inputs and the next characters.
    let windows = |data: &[i32], seed: u64| -> tessera::Result<(Array, Array)> {
        let starts = random::randint(
            0,
            (data.len() - CONTEXT - 1) as i64,
            &[BATCH],
            Dtype::I32,
            Some(&random::key(seed)),
        )?
        .to_vec::<i32>()?;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for s in starts {
            let s = s as usize;
            x.extend_from_slice(&data[s..s + CONTEXT]);
            y.extend_from_slice(&data[s + 1..s + CONTEXT + 1]);
        }
        Ok((
            Array::from_slice(&x, &[BATCH, CONTEXT])?,
            Array::from_slice(&y, &[BATCH * CONTEXT])?,
        ))
    };
    let loss_of = |m: &Gpt, x: &Array, y: &Array| -> tessera::Result<Array> {
        let logits = ops::reshape(&m.forward(x)?, &[BATCH * CONTEXT, chars.len()])?;
        losses::cross_entropy(&logits, y, 0.0)
    };
    let val_loss = |m: &Gpt| -> tessera::Result<f64> {
        let mut s = 0.0;
        for k in 0..4 {
            let (x, y) = windows(val_ids, 9_000_000 + k)?;
            s += loss_of(m, &x, &y)?.item::<f32>()? as f64;
        }
        Ok(s / 4.0)
    };
    let t0 = std::time::Instant::now();
    let mut running = 0.0;
    for step in 0..steps {
        // Linear warm-up over the first 50 steps.
        opt.lr = 3e-3 * ((step + 1) as f64 / 50.0).min(1.0);
        let (x, y) = windows(train_ids, step as u64 + 1)?;
        let (loss, grads) = tessera::nn::value_and_grad(&model, |m| loss_of(m, &x, &y))?;
        let params = opt.update(&model.parameters(), &grads)?;
        let mut todo: Vec<Array> = params.values().cloned().collect();
        todo.extend(opt.state());
        todo.push(loss.clone());
        tessera::eval(&todo)?;
        model.load_parameters(&params)?;
        let l = loss.item::<f32>()? as f64;
        running = if step == 0 {
            l
        } else {
            0.9 * running + 0.1 * l
        };
        if step % 100 == 0 || step + 1 == steps {
            println!(
                "step {step:4}  train loss {running:.3}  validation loss {:.3}  ({:.1} s)",
                val_loss(&model)?,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    let final_val = val_loss(&model)?;

    // Sample 400 characters, temperature 0.8, from the last CONTEXT characters.
    let mut out: Vec<i32> = "I ".chars().map(index).collect();
    let key = random::key(7);
    let keys = random::split(&key, 400)?;
    for i in 0..400 {
        let ctx = &out[out.len().saturating_sub(CONTEXT)..];
        let x = Array::from_slice(ctx, &[1, ctx.len()])?;
        let logits = model.forward(&x)?;
        let last = ops::slice_axis(&logits, 1, ctx.len() - 1, ctx.len())?;
        let last = ops::reshape(&last, &[chars.len()])?;
        let scaled = ops::divide(&last, &Array::scalar_of(0.8, Dtype::F32))?;
        let next = random::categorical(&scaled, -1, Some(&nth_key(&keys, i)?))?;
        out.push(next.astype(Dtype::I32)?.item::<i32>()?);
    }
    let sample: String = out.iter().map(|&i| chars[i as usize]).collect();
    println!("--- sample ---\n{sample}\n--------------");
    println!(
        "validation loss {final_val:.3} nats/char against a unigram entropy of {unigram:.3} ({:.0}% lower)",
        100.0 * (1.0 - final_val / unigram)
    );
    if final_val > unigram - 0.5 {
        return Err("the model did not get well below the unigram entropy".into());
    }
    Ok(())
}
