//! Optimizers with PyTorch's update rules. An optimizer maps (parameters, gradients) to new
//! parameters and keeps its state per parameter name.

use std::collections::BTreeMap;
use tessera_core::transforms::Params;
use tessera_core::{Array, Error, Result, ops};

/// Updates parameters from their gradients.
pub trait Optimizer {
    /// New parameters after one step (lazy arrays; evaluate them with the loss).
    fn update(&mut self, params: &Params, grads: &Params) -> Result<Params>;
    /// The optimizer's state arrays, to evaluate alongside the parameters.
    fn state(&self) -> Vec<Array>;
}

fn s(v: f64, like: &Array) -> Array {
    Array::scalar_of(v, like.dtype())
}

fn grad_of<'a>(grads: &'a Params, name: &str) -> Result<&'a Array> {
    grads.get(name).ok_or_else(|| Error::Invalid {
        op: "optimizer",
        msg: format!("no gradient for parameter {name}"),
    })
}

/// Stochastic gradient descent with optional momentum, dampening, Nesterov momentum and L2
/// weight decay (PyTorch's `torch.optim.SGD`).
pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    buffers: BTreeMap<String, Array>,
}

impl Sgd {
    pub fn new(lr: f64) -> Sgd {
        Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            buffers: BTreeMap::new(),
        }
    }
    pub fn momentum(mut self, m: f64, nesterov: bool) -> Sgd {
        self.momentum = m;
        self.nesterov = nesterov;
        self
    }
    pub fn weight_decay(mut self, wd: f64) -> Sgd {
        self.weight_decay = wd;
        self
    }
}

impl Optimizer for Sgd {
    fn update(&mut self, params: &Params, grads: &Params) -> Result<Params> {
        let mut out = Params::new();
        for (name, p) in params {
            let mut g = grad_of(grads, name)?.clone();
            if self.weight_decay != 0.0 {
                g = ops::add(&g, &ops::multiply(p, &s(self.weight_decay, p))?)?;
            }
            if self.momentum != 0.0 {
                let buf = match self.buffers.get(name) {
                    None => g.clone(),
                    Some(b) => ops::add(
                        &ops::multiply(b, &s(self.momentum, b))?,
                        &ops::multiply(&g, &s(1.0 - self.dampening, &g))?,
                    )?,
                };
                self.buffers.insert(name.clone(), buf.clone());
                g = if self.nesterov {
                    ops::add(&g, &ops::multiply(&buf, &s(self.momentum, &buf))?)?
                } else {
                    buf
                };
            }
            out.insert(
                name.clone(),
                ops::subtract(p, &ops::multiply(&g, &s(self.lr, &g))?)?,
            );
        }
        Ok(out)
    }

    fn state(&self) -> Vec<Array> {
        self.buffers.values().cloned().collect()
    }
}

/// Adam (`decoupled == false`, with L2 `weight_decay` added to the gradient) and AdamW
/// (`decoupled == true`: the decay is applied to the parameters directly), as PyTorch's.
pub struct Adam {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    pub decoupled: bool,
    step: i32,
    m: BTreeMap<String, Array>,
    v: BTreeMap<String, Array>,
}

impl Adam {
    pub fn new(lr: f64) -> Adam {
        Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            step: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
        }
    }
    /// Adam with L2 weight decay added to the gradient.
    pub fn weight_decay(mut self, wd: f64) -> Adam {
        self.weight_decay = wd;
        self
    }
    /// AdamW: decoupled weight decay (PyTorch's default is 0.01).
    pub fn adamw(lr: f64, weight_decay: f64) -> Adam {
        Adam {
            weight_decay,
            decoupled: true,
            ..Adam::new(lr)
        }
    }
}

impl Optimizer for Adam {
    fn update(&mut self, params: &Params, grads: &Params) -> Result<Params> {
        self.step += 1;
        let (b1, b2) = self.betas;
        let (c1, c2) = (1.0 - b1.powi(self.step), 1.0 - b2.powi(self.step));
        let mut out = Params::new();
        for (name, p) in params {
            let mut g = grad_of(grads, name)?.clone();
            let mut p = p.clone();
            if self.weight_decay != 0.0 {
                if self.decoupled {
                    p = ops::multiply(&p, &s(1.0 - self.lr * self.weight_decay, &p))?;
                } else {
                    g = ops::add(&g, &ops::multiply(&p, &s(self.weight_decay, &p))?)?;
                }
            }
            let m0 = self.m.get(name).cloned().unwrap_or(ops::zeros_like(&g)?);
            let v0 = self.v.get(name).cloned().unwrap_or(ops::zeros_like(&g)?);
            let m = ops::add(
                &ops::multiply(&m0, &s(b1, &g))?,
                &ops::multiply(&g, &s(1.0 - b1, &g))?,
            )?;
            let v = ops::add(
                &ops::multiply(&v0, &s(b2, &g))?,
                &ops::multiply(&ops::square(&g)?, &s(1.0 - b2, &g))?,
            )?;
            let denom = ops::add(
                &ops::divide(&ops::sqrt(&v)?, &s(c2.sqrt(), &v))?,
                &s(self.eps, &v),
            )?;
            let upd = ops::divide(&ops::multiply(&m, &s(self.lr / c1, &m))?, &denom)?;
            out.insert(name.clone(), ops::subtract(&p, &upd)?);
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(out)
    }

    fn state(&self) -> Vec<Array> {
        self.m.values().chain(self.v.values()).cloned().collect()
    }
}
