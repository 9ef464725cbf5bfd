//! Function transforms. Today: evaluation. Later issues add grad, vjp, jvp, vmap, checkpoint
//! and compile, written with the public ops so they compose.

mod eval;

pub use eval::{async_eval, eval, synchronize};
