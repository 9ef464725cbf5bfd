//! Function transforms: evaluation and reverse-mode differentiation (vjp, grad,
//! value_and_grad). jvp, vmap, checkpoint and compile are still to come.

mod eval;
mod grad;

pub use eval::{async_eval, eval, synchronize};
pub use grad::{Params, grad, jvp, value_and_grad, value_and_grad_params, vjp};
