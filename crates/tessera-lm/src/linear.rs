//! Linear layers, and groups of them that read the same input.
//!
//! A transformer block applies three maps to the normed input of attention (q, k, v) and two
//! to the input of its MLP (gate, up). Stored as one matrix each, a decode step runs two matmuls
//! instead of five: the activations are quantized once, the threads are handed work once, and
//! the small k and v matrices (a few tens of kilobytes, too short for the memory system to
//! reach full speed on) stream as part of a larger one. The outputs are views into the one
//! result.

use crate::error::{Error, Result};
use crate::weights::{Weight, WeightSource};
use tessera_core::memory::Arena;
use tessera_core::{Array, ops};

/// A linear layer: a weight and an optional bias.
#[derive(Clone)]
pub struct Linear {
    pub weight: Weight,
    pub bias: Option<Array>,
}

impl Linear {
    pub(crate) fn load(src: &dyn WeightSource, name: &str) -> Result<Linear> {
        let bias_name = format!("{name}.bias");
        Ok(Linear {
            weight: src.matrix(&format!("{name}.weight"))?,
            bias: if src.has(&bias_name) {
                Some(src.vector(&bias_name)?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        let y = self.weight.apply(x)?;
        Ok(match &self.bias {
            Some(b) => ops::add(&y, b)?,
            None => y,
        })
    }

    /// The same layer with its weight in the CPU kernels' preferred layout, in `arena`
    /// ([`Weight::for_matmul`]).
    pub fn for_matmul(self, arena: &Arena) -> Result<Linear> {
        Ok(Linear {
            weight: self.weight.for_matmul(arena)?,
            bias: self.bias,
        })
    }
}

/// Several linear maps of one input, computed as few matmuls as their storage allows.
#[derive(Clone)]
pub struct LinearGroup {
    /// Each layer with the sizes of the consecutive outputs it produces.
    layers: Vec<(Linear, Vec<usize>)>,
}

/// `TESSERA_FUSE_LINEAR=0` keeps every map a matrix of its own (for comparisons).
fn fusing_enabled() -> bool {
    std::env::var("TESSERA_FUSE_LINEAR").map_or(true, |v| v != "0")
}

impl LinearGroup {
    /// One layer per map, stacked into one matrix when they share a storage format, all or
    /// none have a bias, and the stacked copy fits the memory budget
    /// (`tessera_core::memory::fits_in_budget`; a model larger than memory keeps streaming its
    /// matrices from the file instead).
    pub fn fuse(parts: Vec<Linear>) -> Result<LinearGroup> {
        let sizes: Vec<usize> = parts.iter().map(|l| l.weight.out_features()).collect();
        let bytes: usize = parts.iter().map(|l| l.weight.nbytes()).sum();
        let biased = parts.iter().filter(|l| l.bias.is_some()).count();
        let alone = |parts: Vec<Linear>| LinearGroup {
            layers: parts
                .into_iter()
                .map(|l| {
                    let n = l.weight.out_features();
                    (l, vec![n])
                })
                .collect(),
        };
        if parts.len() < 2
            || !fusing_enabled()
            || (biased != 0 && biased != parts.len())
            || !tessera_core::memory::fits_in_budget(bytes)
        {
            return Ok(alone(parts));
        }
        let weights: Vec<&Weight> = parts.iter().map(|l| &l.weight).collect();
        let Some(weight) = Weight::concat_rows(&weights)? else {
            return Ok(alone(parts));
        };
        let bias = if biased == 0 {
            None
        } else {
            let b: Vec<Array> = parts.iter().filter_map(|l| l.bias.clone()).collect();
            let b = ops::concatenate(&b, 0)?;
            b.eval()?;
            Some(b)
        };
        Ok(LinearGroup {
            layers: vec![(Linear { weight, bias }, sizes)],
        })
    }

    /// A layer whose matrix already stacks the maps (Phi-3's `qkv_proj`, `gate_up_proj`),
    /// `sizes` output rows each.
    pub fn stacked(linear: Linear, sizes: Vec<usize>) -> Result<LinearGroup> {
        let total: usize = sizes.iter().sum();
        if total != linear.weight.out_features() {
            return Err(Error::Config(format!(
                "cannot split {} output rows into {sizes:?}",
                linear.weight.out_features()
            )));
        }
        if let Some(b) = &linear.bias
            && b.shape() != [total]
        {
            return Err(Error::Config(format!(
                "a bias of shape {:?} does not fit {total} output rows",
                b.shape()
            )));
        }
        Ok(LinearGroup {
            layers: vec![(linear, sizes)],
        })
    }

    /// Each map's output `(..., out_i)`, in order.
    pub fn forward(&self, x: &Array) -> Result<Vec<Array>> {
        let mut out = Vec::new();
        for (layer, sizes) in &self.layers {
            let y = layer.forward(x)?;
            if sizes.len() == 1 {
                out.push(y);
                continue;
            }
            let axis = y.ndim() - 1;
            let mut start = 0;
            for &n in sizes {
                out.push(ops::slice_axis(&y, axis, start, start + n)?);
                start += n;
            }
        }
        Ok(out)
    }

    /// `(out, in)` of each map, in order.
    pub fn shapes(&self) -> Vec<(usize, usize)> {
        self.layers
            .iter()
            .flat_map(|(l, sizes)| sizes.iter().map(|&n| (n, l.weight.in_features())))
            .collect()
    }

    /// How many matmuls `forward` runs.
    pub fn matmuls(&self) -> usize {
        self.layers.len()
    }

    /// The stored matrices (each read once per forward pass).
    pub fn weights(&self) -> impl Iterator<Item = &Weight> {
        self.layers.iter().map(|(l, _)| &l.weight)
    }

    /// The group with every matrix in the CPU kernels' preferred layout, in `arena`.
    pub fn for_matmul(self, arena: &Arena) -> Result<LinearGroup> {
        Ok(LinearGroup {
            layers: self
                .layers
                .into_iter()
                .map(|(l, s)| Ok((l.for_matmul(arena)?, s)))
                .collect::<Result<_>>()?,
        })
    }
}
