//! # tessera-nn
//!
//! Layers, activations, losses and optimizers on top of `tessera-core`.
//!
//! Design: a [`Module`] exposes its parameters as a flat map of dotted names
//! (`"layers.0.weight"`, as PyTorch and Hugging Face name them) and can load such a map back.
//! Training differentiates a loss with respect to that map ([`value_and_grad`]), and an
//! [`optim::Optimizer`] updates the map. Everything stays lazy: a training step is one graph.

pub mod activations;
pub mod attention;
pub mod containers;
pub mod conv;
pub mod init;
pub mod io;
pub mod layers;
pub mod losses;
pub mod norms;
pub mod optim;
pub mod pool;
pub mod transformer;

use tessera_core::transforms::{self, Params};
use tessera_core::{Array, Error, Result};

/// A model: named parameters and a forward pass.
pub trait Module: Clone {
    /// All parameters, by dotted name.
    fn parameters(&self) -> Params;
    /// Replaces parameters by name; every name must exist with the same shape.
    fn load_parameters(&mut self, params: &Params) -> Result<()>;
    /// The forward pass.
    fn forward(&self, x: &Array) -> Result<Array>;
}

/// Loss value and its gradient with respect to every parameter of `model`, by name.
pub fn value_and_grad<M: Module>(
    model: &M,
    loss: impl FnOnce(&M) -> Result<Array>,
) -> Result<(Array, Params)> {
    transforms::value_and_grad_params(
        |traced| {
            let mut m = model.clone();
            m.load_parameters(traced)?;
            loss(&m)
        },
        &model.parameters(),
    )
}

/// Checks that `new` can replace `old` (same shape), naming the parameter if not.
pub(crate) fn check_replacement(name: &str, old: &Array, new: &Array) -> Result<()> {
    if old.shape() != new.shape() {
        return Err(Error::Invalid {
            op: "load_parameters",
            msg: format!(
                "parameter {name} has shape {:?}, the replacement {:?}",
                old.shape(),
                new.shape()
            ),
        });
    }
    Ok(())
}
