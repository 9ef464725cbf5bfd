//! tessera: machine learning on your own machines.
//!
//! This facade re-exports the crates of the workspace: [`core`] (arrays, ops, eval, random
//! numbers, transforms, the CPU backend), [`nn`] (layers, losses, optimizers), [`io`] (GGUF,
//! safetensors and NumPy files), [`lm`] (tokenizers, models, sampling, generation) and
//! [`distributed`] (process groups, collectives over TCP, the launcher).
//!
//! ```
//! use tessera::{Array, Dtype, ops, random};
//! # fn main() -> tessera::Result<()> {
//! let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
//! let w = random::normal(&[3, 4], Dtype::F32, 0.0, 1.0, Some(&random::key(0)))?;
//! let y = ops::softmax(&ops::matmul(&a, &w)?, -1)?;   // a graph: nothing computed yet
//! println!("{y}");                                      // evaluated here, printed NumPy-style
//! let total = ops::sum(&y, ops::Axes::All, false)?.item::<f32>()?;
//! assert!((total - 2.0).abs() < 1e-5);
//! # Ok(())
//! # }
//! ```

pub use tessera_core as core;
pub use tessera_core::{Array, Device, Dtype, Error, Result, Stream, eval, ops, random};
pub use tessera_distributed as distributed;
pub use tessera_io as io;
pub use tessera_lm as lm;
pub use tessera_nn as nn;
