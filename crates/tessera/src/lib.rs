//! tessera: machine learning on your own machines.
//!
//! This facade re-exports the crates of the workspace. Today: [`core`] (arrays, ops, eval,
//! CPU backend). See the repository README for what is planned.

pub use tessera_core as core;
pub use tessera_core::{Array, Device, Dtype, Error, Result, Stream, eval, ops, random};
