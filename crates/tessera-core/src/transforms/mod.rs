//! Function transforms: evaluation; reverse-mode differentiation (vjp, grad, value_and_grad,
//! value_and_grad over named parameters) and forward-mode differentiation (jvp, one forward pass
//! with per-primitive tangent rules); custom ops with their own derivatives (custom_vjp,
//! custom_jvp, CustomFunction) and checkpoint; vmap by graph replay with per-primitive batching
//! rules; compile. Every rule is written with the public ops, so the transforms compose.

mod compile;
mod custom;
mod eval;
pub(crate) mod grad;
mod vmap;

pub use compile::{Compiled, compile, compile_shapeless, expand_fused};
pub use custom::{CustomFunction, checkpoint, custom, custom_jvp, custom_vjp};
pub use eval::{async_eval, eval, synchronize};
pub use grad::{Params, grad, jvp, value_and_grad, value_and_grad_params, vjp};
pub(crate) use grad::{jvp_partial, transpose_pullback};
pub use vmap::vmap;

/// Identity of a node, for maps keyed by node during graph walks.
pub(crate) fn node_key(a: &crate::Array) -> *const crate::array::Node {
    std::sync::Arc::as_ptr(&a.node)
}

/// `value`, evaluated only after every array of `after` (a `Depends` node): orders evaluation
/// without changing the value.
pub(crate) fn depends(value: &crate::Array, after: &[crate::Array]) -> crate::Array {
    let mut inputs = Vec::with_capacity(after.len() + 1);
    inputs.push(value.clone());
    inputs.extend(after.iter().cloned());
    crate::Array::lazy(
        crate::Primitive::Depends,
        inputs,
        value.shape().to_vec(),
        value.dtype(),
    )
}

/// A fresh identity node over `a`: transforms trace functions on these so the graph they build
/// can be told apart from everything else.
pub(crate) fn tracer(a: &crate::Array) -> crate::Array {
    crate::Array::lazy(
        crate::Primitive::Copy,
        vec![a.clone()],
        a.shape().to_vec(),
        a.dtype(),
    )
}
