//! Custom operations, custom derivatives and gradient checkpointing, all through
//! [`Primitive::Custom`]: one graph node whose forward is a function written with ops.

use crate::array::Array;
use crate::error::Result;
use crate::primitive::{CustomOp, CustomRef, Primitive};
use std::sync::Arc;

/// Applies a custom op to `inputs`: one node. The output's shape and dtype come from tracing the
/// forward once (nothing is computed).
pub fn custom(op: Arc<dyn CustomOp>, inputs: &[Array]) -> Result<Array> {
    let traced = op.forward(inputs)?;
    Ok(Array::lazy(
        Primitive::Custom(CustomRef(op)),
        inputs.to_vec(),
        traced.shape().to_vec(),
        traced.dtype(),
    ))
}

type Forward = dyn Fn(&[Array]) -> Result<Array> + Send + Sync;
type Backward = dyn Fn(&[Array], &Array, &Array) -> Result<Vec<Array>> + Send + Sync;

struct FnOp {
    name: String,
    forward: Box<Forward>,
    vjp: Option<Box<Backward>>,
}

impl CustomOp for FnOp {
    fn name(&self) -> &str {
        &self.name
    }
    fn forward(&self, inputs: &[Array]) -> Result<Array> {
        (self.forward)(inputs)
    }
    fn vjp(
        &self,
        inputs: &[Array],
        output: &Array,
        cotangent: &Array,
    ) -> Option<Result<Vec<Array>>> {
        self.vjp.as_ref().map(|v| v(inputs, output, cotangent))
    }
}

/// Wraps `f` so that its intermediates are not kept for the backward pass: they are recomputed
/// from the inputs when the gradient is taken (memory for compute).
/// ```
/// use tessera_core::{Array, ops, transforms::{checkpoint, grad}};
/// let block = checkpoint(|x: &[Array]| ops::tanh(&ops::exp(&x[0])?));
/// let x = Array::from_slice(&[0.5f64], &[1]).unwrap();
/// let g = grad(|xs| ops::sum(&block(xs)?, ops::Axes::All, false), &[x]).unwrap();
/// let e = 0.5f64.exp();
/// assert!((g[0].item::<f64>().unwrap() - (1.0 - e.tanh().powi(2)) * e).abs() < 1e-12);
/// ```
pub fn checkpoint(
    f: impl Fn(&[Array]) -> Result<Array> + Send + Sync + 'static,
) -> impl Fn(&[Array]) -> Result<Array> {
    let op: Arc<dyn CustomOp> = Arc::new(FnOp {
        name: "checkpoint".into(),
        forward: Box::new(f),
        vjp: None,
    });
    move |xs| custom(op.clone(), xs)
}

/// A function with a user-written VJP: `vjp(inputs, output, cotangent)` returns one cotangent per
/// input (same shapes as the inputs).
/// ```
/// use tessera_core::{Array, ops, transforms::{custom_vjp, grad}};
/// // Straight-through rounding: round in the forward pass, identity gradient.
/// let ste = custom_vjp(|x: &[Array]| ops::round(&x[0]), |_x, _y, ct| Ok(vec![ct.clone()]));
/// let x = Array::from_slice(&[0.4f32, 1.6], &[2]).unwrap();
/// let g = grad(|xs| ops::sum(&ste(xs)?, ops::Axes::All, false), &[x]).unwrap();
/// assert_eq!(g[0].to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
/// ```
pub fn custom_vjp(
    forward: impl Fn(&[Array]) -> Result<Array> + Send + Sync + 'static,
    vjp: impl Fn(&[Array], &Array, &Array) -> Result<Vec<Array>> + Send + Sync + 'static,
) -> impl Fn(&[Array]) -> Result<Array> {
    let op: Arc<dyn CustomOp> = Arc::new(FnOp {
        name: "custom_vjp".into(),
        forward: Box::new(forward),
        vjp: Some(Box::new(vjp)),
    });
    move |xs| custom(op.clone(), xs)
}
