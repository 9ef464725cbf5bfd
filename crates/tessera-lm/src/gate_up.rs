//! A gated MLP's input side: the gate and up maps and the activation between them,
//! `act(x @ gateᵀ) * (x @ upᵀ)`, the input of its down projection.
//!
//! Quantized gate and up matrices are stored as one, their rows alternating 8 at a time
//! (`ops::interleave_gate_up`), and a decode step runs them as one gated product
//! (`ops::gguf_gated_matmul`): each thread gates the outputs it has just computed, so the
//! activation costs no separate op, no pass over memory, and no reads from the other core's
//! cache (with gate and up stacked end to end, the first thread computed all the gates and the
//! second all the ups). Other storage stacks the two end to end ([`LinearGroup`]) and gates with
//! a compiled element-wise kernel.

use crate::config::Activation;
use crate::error::{Error, Result};
use crate::linear::{Linear, LinearGroup};
use crate::weights::Weight;
use tessera_core::memory::Arena;
use tessera_core::{Array, ops};

/// The gate and up maps of one MLP.
#[derive(Clone)]
pub struct GateUp {
    form: Form,
    /// Outputs of each map (the MLP's hidden width).
    width: usize,
}

#[derive(Clone)]
enum Form {
    /// One matrix of `2 * width` rows, gate and up alternating every 8.
    Paired(Weight),
    /// The two maps as a group (stacked end to end where their storage allows).
    Group(LinearGroup),
}

/// `TESSERA_FUSE_GATE=0` keeps gate and up stacked end to end with a separate activation op
/// (for comparisons); `TESSERA_FUSE_LINEAR=0` keeps them separate matrices altogether.
fn pairing_enabled() -> bool {
    let on = |var: &str| std::env::var(var).map_or(true, |v| v != "0");
    on("TESSERA_FUSE_GATE") && on("TESSERA_FUSE_LINEAR")
}

impl GateUp {
    /// The maps as stored in most checkpoints: two matrices. Paired when both are quantized
    /// alike, without biases, and the paired copy fits the memory budget; otherwise a
    /// [`LinearGroup`].
    pub fn new(gate: Linear, up: Linear) -> Result<GateUp> {
        let width = gate.weight.out_features();
        let bytes = gate.weight.nbytes() + up.weight.nbytes();
        if pairing_enabled()
            && gate.bias.is_none()
            && up.bias.is_none()
            && tessera_core::memory::fits_in_budget(bytes)
            && let Some(w) = Weight::interleave_gate_up(&gate.weight, &up.weight)?
        {
            return Ok(GateUp {
                form: Form::Paired(w),
                width,
            });
        }
        Ok(GateUp {
            form: Form::Group(LinearGroup::fuse(vec![gate, up])?),
            width,
        })
    }

    /// The maps stacked end to end in one matrix (Phi-3's `gate_up_proj`), `width` rows each:
    /// split and paired as [`GateUp::new`] pairs two matrices, or kept as they are.
    pub fn stacked(linear: Linear, width: usize) -> Result<GateUp> {
        if linear.weight.out_features() != 2 * width {
            return Err(Error::Config(format!(
                "cannot split {} output rows into gate and up maps of {width}",
                linear.weight.out_features()
            )));
        }
        // Paired into a new copy, as `new` does: only without a bias and within the budget.
        if linear.bias.is_none() && tessera_core::memory::fits_in_budget(linear.weight.nbytes()) {
            let half = |r0: usize| -> Result<Linear> {
                Ok(Linear {
                    weight: linear.weight.row_range(r0, r0 + width)?,
                    bias: None,
                })
            };
            let (gate, up) = (half(0)?, half(width)?);
            if let Some(w) = pairing_enabled()
                .then(|| Weight::interleave_gate_up(&gate.weight, &up.weight))
                .transpose()?
                .flatten()
            {
                return Ok(GateUp {
                    form: Form::Paired(w),
                    width,
                });
            }
        }
        Ok(GateUp {
            form: Form::Group(LinearGroup::stacked(linear, vec![width, width])?),
            width,
        })
    }

    /// `activation(x @ gateᵀ) * (x @ upᵀ)`: `(..., in) -> (..., width)`.
    pub fn forward(&self, x: &Array, activation: Activation) -> Result<Array> {
        match &self.form {
            Form::Paired(w) => match w.apply_gated(x, activation)? {
                Some(y) => Ok(y),
                None => gate_interleaved(&w.apply(x)?, self.width, activation),
            },
            Form::Group(g) => {
                let [gate, up]: [Array; 2] = g
                    .forward(x)?
                    .try_into()
                    .map_err(|_| Error::Config("the gate/up group must give two outputs".into()))?;
                gated(activation, &gate, &up)
            }
        }
    }

    /// `(out, in)` of the gate and the up map.
    pub fn shapes(&self) -> Vec<(usize, usize)> {
        match &self.form {
            Form::Paired(w) => vec![(self.width, w.in_features()); 2],
            Form::Group(g) => g.shapes(),
        }
    }

    /// The stored matrices (each read once per forward pass).
    pub fn weights(&self) -> Box<dyn Iterator<Item = &Weight> + '_> {
        match &self.form {
            Form::Paired(w) => Box::new(std::iter::once(w)),
            Form::Group(g) => Box::new(g.weights()),
        }
    }

    /// True when gate and up run as one gated product.
    pub fn is_paired(&self) -> bool {
        matches!(self.form, Form::Paired(_))
    }

    /// The maps with their matrices in the CPU kernels' preferred layout, in `arena`.
    pub fn for_matmul(self, arena: &Arena) -> Result<GateUp> {
        let form = match self.form {
            Form::Paired(w) => Form::Paired(w.for_matmul(arena)?),
            Form::Group(g) => Form::Group(g.for_matmul(arena)?),
        };
        Ok(GateUp { form, ..self })
    }
}

/// Gates a product whose last axis holds gate and up values alternating 8 at a time (a paired
/// matrix on storage without a fused kernel): views of the two, the compiled activation.
fn gate_interleaved(y: &Array, width: usize, activation: Activation) -> Result<Array> {
    let (gate, up) = ops::gate_up_views(y)?;
    let mut shape = y.shape().to_vec();
    *shape.last_mut().unwrap_or(&mut 0) = width;
    Ok(ops::reshape(&gated(activation, &gate, &up)?, &shape)?)
}

/// A function of arrays, as `compile` takes it.
type ArrayFn = fn(&[Array]) -> tessera_core::Result<Vec<Array>>;
/// A compiled function of two arrays giving one.
type Compiled2 = tessera_core::transforms::Compiled<ArrayFn>;

fn silu_gate(x: &[Array]) -> tessera_core::Result<Vec<Array>> {
    Ok(vec![ops::multiply(
        &ops::gate_activation(&x[0], Activation::Silu)?,
        &x[1],
    )?])
}

fn gelu_tanh_gate(x: &[Array]) -> tessera_core::Result<Vec<Array>> {
    Ok(vec![ops::multiply(
        &ops::gate_activation(&x[0], Activation::GeluTanh)?,
        &x[1],
    )?])
}

/// `act(g) * u`, compiled once per process for any shape (as mlx-lm compiles its swiglu): one
/// fused kernel reads the gate and up views in place and writes the product, where the ops one
/// by one made 3 (SiLU) or 9 (GELU) nodes and passes over memory. Same element functions in
/// the same order: the same bits.
pub(crate) fn gated(act: Activation, g: &Array, u: &Array) -> Result<Array> {
    static SILU: std::sync::OnceLock<Compiled2> = std::sync::OnceLock::new();
    static GELU: std::sync::OnceLock<Compiled2> = std::sync::OnceLock::new();
    let (cell, f): (_, ArrayFn) = match act {
        Activation::Silu => (&SILU, silu_gate),
        Activation::GeluTanh => (&GELU, gelu_tanh_gate),
    };
    let c = cell.get_or_init(|| tessera_core::transforms::compile_shapeless(f));
    let mut out = c.call(&[g.clone(), u.clone()])?;
    out.pop()
        .ok_or_else(|| Error::Config("the compiled activation gave no output".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::Dtype;

    /// The compiled gated activation gives the ops' results bit for bit, on the strided gate and
    /// up halves of a stacked projection, for prefill-like and decode-like shapes (one compiled
    /// function serves both).
    #[test]
    fn compiled_gated_activations_equal_the_ops() {
        for act in [Activation::Silu, Activation::GeluTanh] {
            for (t, f) in [(5usize, 1100usize), (1, 64), (3, 2048)] {
                let gu = tessera_core::random::uniform(
                    -4.0,
                    4.0,
                    &[1, t, 2 * f],
                    Dtype::F32,
                    Some(&tessera_core::random::key(t as u64)),
                )
                .unwrap();
                let g =
                    ops::slice(&gu, &[0, 0, 0], &[1, t as isize, f as isize], &[1, 1, 1]).unwrap();
                let u = ops::slice(
                    &gu,
                    &[0, 0, f as isize],
                    &[1, t as isize, 2 * f as isize],
                    &[1, 1, 1],
                )
                .unwrap();
                let want = match act {
                    Activation::Silu => tessera_nn::activations::silu(&g),
                    Activation::GeluTanh => tessera_nn::activations::gelu_tanh(&g),
                }
                .and_then(|a| ops::multiply(&a, &u))
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
                let got = gated(act, &g, &u).unwrap().to_vec::<f32>().unwrap();
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same && got.len() == want.len(), "{act:?} at {t}x{f}");
            }
        }
    }
}
