//! [`Sequential`]: layers applied in order, named `"0"`, `"1"`, ... as PyTorch's
//! `nn.Sequential` (parameters `"0.weight"`, `"2.bias"`; a parameter-free layer such as an
//! activation takes an index too, as in PyTorch).
//!
//! # Design
//!
//! [`Module`] requires `Clone`, so `Box<dyn Module>` is impossible. [`Layer`] is the
//! object-safe face of a module: the same three methods plus `clone_box`, and the optional
//! hooks a container needs for stateful layers (buffers, training mode, a forward that updates
//! state). Every `Module + 'static` becomes a layer through the [`ModuleLayer`] wrapper
//! ([`Sequential::push`]); [`BatchNorm`] implements [`Layer`] itself so its running statistics
//! are visible (`buffers`) and updated by [`Sequential::forward_update`], and so does
//! [`Dropout`] so that [`Sequential::set_training`] switches it;
//! [`Fn`]-style activations are [`Lambda`]s ([`Sequential::push_fn`]). An enum of layer kinds
//! was the alternative: it is closed to user types, which this keeps open.

use crate::layers::Dropout;
use crate::norms::BatchNorm;
use crate::{Module, attention::err};
use std::sync::Arc;
use tessera_core::transforms::Params;
use tessera_core::{Array, Result};

/// An object-safe module (see the module documentation).
pub trait Layer {
    /// [`Module::parameters`].
    fn layer_parameters(&self) -> Params;
    /// [`Module::load_parameters`] (buffers too, for stateful layers).
    fn layer_load_parameters(&mut self, params: &Params) -> Result<()>;
    /// [`Module::forward`].
    fn layer_forward(&self, x: &Array) -> Result<Array>;
    fn clone_box(&self) -> Box<dyn Layer>;
    /// Non-trainable state (PyTorch's buffers); empty by default.
    fn buffers(&self) -> Params {
        Params::new()
    }
    /// Switches between training and evaluation behaviour; nothing by default.
    fn set_training(&mut self, _training: bool) {}
    /// A forward that may update the layer's state (BatchNorm's running statistics); the plain
    /// forward by default.
    fn forward_update(&mut self, x: &Array) -> Result<Array> {
        self.layer_forward(x)
    }
}

/// Any [`Module`] as a [`Layer`].
#[derive(Clone)]
pub struct ModuleLayer<M>(pub M);

impl<M: Module + 'static> Layer for ModuleLayer<M> {
    fn layer_parameters(&self) -> Params {
        self.0.parameters()
    }
    fn layer_load_parameters(&mut self, params: &Params) -> Result<()> {
        self.0.load_parameters(params)
    }
    fn layer_forward(&self, x: &Array) -> Result<Array> {
        self.0.forward(x)
    }
    fn clone_box(&self) -> Box<dyn Layer> {
        Box::new(self.clone())
    }
}

impl Layer for BatchNorm {
    fn layer_parameters(&self) -> Params {
        Module::parameters(self)
    }
    fn layer_load_parameters(&mut self, params: &Params) -> Result<()> {
        Module::load_parameters(self, params)
    }
    fn layer_forward(&self, x: &Array) -> Result<Array> {
        Module::forward(self, x)
    }
    fn clone_box(&self) -> Box<dyn Layer> {
        Box::new(self.clone())
    }
    fn buffers(&self) -> Params {
        BatchNorm::buffers(self)
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
    fn forward_update(&mut self, x: &Array) -> Result<Array> {
        BatchNorm::forward_update(self, x)
    }
}

impl Layer for Dropout {
    fn layer_parameters(&self) -> Params {
        Module::parameters(self)
    }
    fn layer_load_parameters(&mut self, params: &Params) -> Result<()> {
        Module::load_parameters(self, params)
    }
    fn layer_forward(&self, x: &Array) -> Result<Array> {
        Module::forward(self, x)
    }
    fn clone_box(&self) -> Box<dyn Layer> {
        Box::new(self.clone())
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}

/// The function a [`Lambda`] applies.
pub type LayerFn = Arc<dyn Fn(&Array) -> Result<Array>>;

/// A parameter-free function as a layer (an activation: `Lambda::new("ReLU", relu)`).
#[derive(Clone)]
pub struct Lambda {
    pub name: String,
    pub f: LayerFn,
}

impl Lambda {
    pub fn new(name: &str, f: impl Fn(&Array) -> Result<Array> + 'static) -> Lambda {
        Lambda {
            name: name.to_string(),
            f: Arc::new(f),
        }
    }
}

impl Layer for Lambda {
    fn layer_parameters(&self) -> Params {
        Params::new()
    }
    fn layer_load_parameters(&mut self, params: &Params) -> Result<()> {
        match params.keys().next() {
            Some(k) => Err(err(&self.name, format!("no parameter named {k}"))),
            None => Ok(()),
        }
    }
    fn layer_forward(&self, x: &Array) -> Result<Array> {
        (self.f)(x)
    }
    fn clone_box(&self) -> Box<dyn Layer> {
        Box::new(self.clone())
    }
}

/// Layers applied in order (PyTorch's `nn.Sequential`): layer `i`'s parameters are named
/// `"{i}.{name}"`. It is itself a [`Module`] and a [`Layer`], so sequences nest
/// (`"1.0.weight"`).
#[derive(Default)]
pub struct Sequential {
    pub layers: Vec<Box<dyn Layer>>,
}

impl Clone for Sequential {
    fn clone(&self) -> Self {
        Sequential {
            layers: self.layers.iter().map(|l| l.clone_box()).collect(),
        }
    }
}

impl Sequential {
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// Appends a [`Module`] (builder style).
    pub fn push<M: Module + 'static>(mut self, m: M) -> Sequential {
        self.layers.push(Box::new(ModuleLayer(m)));
        self
    }

    /// Appends a [`Layer`] as it is (a [`BatchNorm`], a [`Lambda`], a nested [`Sequential`]).
    pub fn push_layer(mut self, l: impl Layer + 'static) -> Sequential {
        self.layers.push(Box::new(l));
        self
    }

    /// Appends a parameter-free function (an activation).
    pub fn push_fn(self, name: &str, f: impl Fn(&Array) -> Result<Array> + 'static) -> Sequential {
        self.push_layer(Lambda::new(name, f))
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Every layer's buffers, by dotted name.
    pub fn buffers(&self) -> Params {
        let mut p = Params::new();
        for (i, l) in self.layers.iter().enumerate() {
            for (k, v) in l.buffers() {
                p.insert(format!("{i}.{k}"), v);
            }
        }
        p
    }

    /// Parameters and buffers, as PyTorch's `state_dict()`.
    pub fn state_dict(&self) -> Params {
        let mut p = Module::parameters(self);
        p.extend(Sequential::buffers(self));
        p
    }

    /// Training (`true`) or evaluation mode for every layer.
    pub fn set_training(&mut self, training: bool) {
        for l in &mut self.layers {
            l.set_training(training);
        }
    }

    /// The forward pass, updating stateful layers (BatchNorm's running statistics in training).
    pub fn forward_update(&mut self, x: &Array) -> Result<Array> {
        let mut h = x.clone();
        for l in &mut self.layers {
            h = l.forward_update(&h)?;
        }
        Ok(h)
    }
}

impl Module for Sequential {
    fn parameters(&self) -> Params {
        let mut p = Params::new();
        for (i, l) in self.layers.iter().enumerate() {
            for (k, v) in l.layer_parameters() {
                p.insert(format!("{i}.{k}"), v);
            }
        }
        p
    }

    /// Names `"{i}.{rest}"`: `rest` goes to layer `i` (parameters or, for BatchNorm, buffers).
    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        let mut per: Vec<Params> = vec![Params::new(); self.layers.len()];
        for (name, v) in params {
            let bad = || {
                err(
                    "Sequential",
                    format!(
                        "no parameter named {name} (names are \"<index>.<name>\" with index < {})",
                        self.layers.len()
                    ),
                )
            };
            let (idx, rest) = name.split_once('.').ok_or_else(bad)?;
            let i: usize = idx.parse().map_err(|_| bad())?;
            per.get_mut(i)
                .ok_or_else(bad)?
                .insert(rest.to_string(), v.clone());
        }
        for (i, (l, p)) in self.layers.iter_mut().zip(&per).enumerate() {
            if !p.is_empty() {
                l.layer_load_parameters(p).map_err(|e| {
                    let names: Vec<String> = p.keys().map(|k| format!("{i}.{k}")).collect();
                    err(
                        "Sequential",
                        format!("layer {i} rejected {}: {e}", names.join(", ")),
                    )
                })?;
            }
        }
        Ok(())
    }

    fn forward(&self, x: &Array) -> Result<Array> {
        let mut h = x.clone();
        for l in &self.layers {
            h = l.layer_forward(&h)?;
        }
        Ok(h)
    }
}

impl Layer for Sequential {
    fn layer_parameters(&self) -> Params {
        Module::parameters(self)
    }
    fn layer_load_parameters(&mut self, params: &Params) -> Result<()> {
        Module::load_parameters(self, params)
    }
    fn layer_forward(&self, x: &Array) -> Result<Array> {
        Module::forward(self, x)
    }
    fn clone_box(&self) -> Box<dyn Layer> {
        Box::new(self.clone())
    }
    fn buffers(&self) -> Params {
        Sequential::buffers(self)
    }
    fn set_training(&mut self, training: bool) {
        Sequential::set_training(self, training)
    }
    fn forward_update(&mut self, x: &Array) -> Result<Array> {
        Sequential::forward_update(self, x)
    }
}
