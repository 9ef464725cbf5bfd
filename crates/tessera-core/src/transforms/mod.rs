//! Function transforms: evaluation and reverse-mode differentiation (vjp, grad,
//! value_and_grad, jvp as a transposed VJP, value_and_grad over named parameters) and vmap by
//! graph replay with per-primitive batching rules. checkpoint and compile are still to come.

mod compile;
mod custom;
mod eval;
mod grad;
mod vmap;

pub use compile::{Compiled, compile, expand_fused};
pub use custom::{checkpoint, custom, custom_vjp};
pub use eval::{async_eval, eval, synchronize};
pub use grad::{Params, grad, jvp, value_and_grad, value_and_grad_params, vjp};
pub use vmap::vmap;
