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
type Tangent = dyn Fn(&[Array], &Array, &[Array]) -> Result<Array> + Send + Sync;

struct FnOp {
    name: String,
    forward: Box<Forward>,
    vjp: Option<Box<Backward>>,
    jvp: Option<Box<Tangent>>,
}

/// Zero tangents in place of missing ones (at least float32, shaped like the inputs).
fn filled(inputs: &[Array], tangents: &[Option<Array>]) -> Result<Vec<Array>> {
    inputs
        .iter()
        .zip(tangents)
        .map(|(i, t)| match t {
            Some(t) => Ok(t.clone()),
            None => crate::ops::zeros(i.shape(), i.dtype().at_least_float()),
        })
        .collect()
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
        if let Some(v) = &self.vjp {
            return Some(v(inputs, output, cotangent));
        }
        // Only a JVP: its transpose (the JVP is linear in the tangents, so its VJP at zero
        // tangents with this cotangent is Jᵀ·cotangent), so reverse mode follows the user's rule.
        let jvp = self.jvp.as_ref()?;
        Some((|| {
            let zeros = filled(inputs, &vec![None; inputs.len()])?;
            let (_, cts) = super::vjp(
                |ts| Ok(vec![jvp(inputs, output, ts)?]),
                &zeros,
                std::slice::from_ref(cotangent),
            )?;
            Ok(cts)
        })())
    }
    fn jvp(
        &self,
        inputs: &[Array],
        output: &Array,
        tangents: &[Option<Array>],
    ) -> Option<Result<Array>> {
        let jvp = self.jvp.as_ref()?;
        Some(filled(inputs, tangents).and_then(|ts| jvp(inputs, output, &ts)))
    }
}

/// A function made into one custom op, with optional user-written derivatives; [`custom_vjp`]
/// and [`custom_jvp`] are shorthands for one rule.
///
/// - `vjp(inputs, output, cotangent)` returns one cotangent per input (shapes of the inputs).
/// - `jvp(inputs, output, tangents)` returns the output's tangent (shape of the output); it is
///   given one tangent per input (zeros for inputs that carry none) and must be linear in them.
///
/// With both, each mode uses its own rule. With one, the other mode uses its transpose (so
/// forward and reverse mode agree with the rule given). With none, both differentiate `forward`.
/// ```
/// use tessera_core::{Array, ops, transforms::{CustomFunction, grad, jvp}};
/// // A clipped identity whose derivative is taken to be 1 everywhere, in both modes.
/// let f = CustomFunction::new(|x: &[Array]| ops::clip(&x[0], Some(&Array::scalar(-1.0f32)), Some(&Array::scalar(1.0f32))))
///     .name("clip_ste")
///     .vjp(|_x, _y, ct| Ok(vec![ct.clone()]))
///     .jvp(|_x, _y, t| Ok(t[0].clone()))
///     .build();
/// let x = Array::from_slice(&[0.5f32, 3.0], &[2]).unwrap();
/// let g = grad(|xs| ops::sum(&f(xs)?, ops::Axes::All, false), &[x.clone()]).unwrap();
/// assert_eq!(g[0].to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
/// let (_, t) = jvp(|xs| Ok(vec![f(xs)?]), &[x], &[ops::ones(&[2], tessera_core::Dtype::F32).unwrap()]).unwrap();
/// assert_eq!(t[0].to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
/// ```
pub struct CustomFunction {
    op: FnOp,
}

impl CustomFunction {
    /// A custom function computing `forward` (built with ops), with no derivative rules yet.
    pub fn new(forward: impl Fn(&[Array]) -> Result<Array> + Send + Sync + 'static) -> Self {
        CustomFunction {
            op: FnOp {
                name: "custom".into(),
                forward: Box::new(forward),
                vjp: None,
                jvp: None,
            },
        }
    }

    /// The op's name, shown when the graph is printed and in error messages.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.op.name = name.into();
        self
    }

    /// Sets the reverse-mode rule `vjp(inputs, output, cotangent) -> cotangents`.
    pub fn vjp(
        mut self,
        vjp: impl Fn(&[Array], &Array, &Array) -> Result<Vec<Array>> + Send + Sync + 'static,
    ) -> Self {
        self.op.vjp = Some(Box::new(vjp));
        self
    }

    /// Sets the forward-mode rule `jvp(inputs, output, tangents) -> output tangent`.
    pub fn jvp(
        mut self,
        jvp: impl Fn(&[Array], &Array, &[Array]) -> Result<Array> + Send + Sync + 'static,
    ) -> Self {
        self.op.jvp = Some(Box::new(jvp));
        self
    }

    /// The function: each call adds one node of this op.
    pub fn build(self) -> impl Fn(&[Array]) -> Result<Array> {
        let op: Arc<dyn CustomOp> = Arc::new(self.op);
        move |xs| custom(op.clone(), xs)
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
    CustomFunction::new(f).name("checkpoint").build()
}

/// A function with a user-written VJP: `vjp(inputs, output, cotangent)` returns one cotangent per
/// input (same shapes as the inputs). Forward mode uses the transpose of that rule.
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
    CustomFunction::new(forward)
        .name("custom_vjp")
        .vjp(vjp)
        .build()
}

/// A function with a user-written JVP: `jvp(inputs, output, tangents)` returns the output's
/// tangent (shape of the output) given one tangent per input (zeros for inputs that carry none);
/// it must be linear in the tangents. Reverse mode (`grad`, `vjp`) uses the transpose of that
/// rule.
/// ```
/// use tessera_core::{Array, Dtype, ops, transforms::{custom_jvp, grad, jvp}};
/// // log(1 + e^x) with its derivative written as sigmoid(x).
/// let softplus = custom_jvp(
///     |x: &[Array]| ops::logaddexp(&x[0], &Array::scalar(0.0f64)),
///     |x, _y, t| ops::multiply(&ops::sigmoid(&x[0])?, &t[0]),
/// );
/// let x = Array::from_slice(&[0.0f64, 2.0], &[2]).unwrap();
/// let (_, dy) = jvp(|xs| Ok(vec![softplus(xs)?]), &[x.clone()], &[ops::ones(&[2], Dtype::F64).unwrap()]).unwrap();
/// let g = grad(|xs| ops::sum(&softplus(xs)?, ops::Axes::All, false), &[x]).unwrap();
/// let s = 1.0 / (1.0 + (-2.0f64).exp());
/// assert_eq!(dy[0].to_vec::<f64>().unwrap(), vec![0.5, s]);
/// assert_eq!(g[0].to_vec::<f64>().unwrap(), vec![0.5, s]);
/// ```
pub fn custom_jvp(
    forward: impl Fn(&[Array]) -> Result<Array> + Send + Sync + 'static,
    jvp: impl Fn(&[Array], &Array, &[Array]) -> Result<Array> + Send + Sync + 'static,
) -> impl Fn(&[Array]) -> Result<Array> {
    CustomFunction::new(forward)
        .name("custom_jvp")
        .jvp(jvp)
        .build()
}
