//! Optimizers with PyTorch's update rules. An optimizer maps (parameters, gradients) to new
//! parameters and keeps its state per parameter name.

use std::collections::BTreeMap;
use tessera_core::transforms::Params;
use tessera_core::{Array, Error, Result, ops};

/// Updates parameters from their gradients.
pub trait Optimizer {
    /// New parameters after one step (lazy arrays; evaluate them with the loss).
    fn update(&mut self, params: &Params, grads: &Params) -> Result<Params>;
    /// The per-parameter state maps by slot name (PyTorch's names where it has them:
    /// `momentum_buffer`, `exp_avg`, `exp_avg_sq`, ...).
    fn slots(&self) -> Vec<(&'static str, &State)>;
    /// The same maps, to restore them.
    fn slots_mut(&mut self) -> Vec<(&'static str, &mut State)>;
    /// The step counter, for optimizers that keep one.
    fn step_count(&mut self) -> Option<&mut i32> {
        None
    }

    /// The optimizer's state arrays, to evaluate alongside the parameters.
    fn state(&self) -> Vec<Array> {
        self.slots()
            .into_iter()
            .flat_map(|(_, m)| m.values().cloned())
            .collect()
    }

    /// Everything needed to resume training exactly: `"<slot>.<parameter>"` arrays and, when
    /// kept, `"step"` (an i32 scalar). Save it with [`save_state`].
    fn state_dict(&mut self) -> Result<Params> {
        let mut out = Params::new();
        for (slot, m) in self.slots() {
            for (name, a) in m {
                out.insert(format!("{slot}.{name}"), a.clone());
            }
        }
        if let Some(step) = self.step_count() {
            out.insert("step".into(), Array::from_slice(&[*step], &[])?);
        }
        Ok(out)
    }

    /// Restores what [`Optimizer::state_dict`] returned (replacing the current state).
    fn load_state_dict(&mut self, state: &Params) -> Result<()> {
        let mut step = None;
        let mut restored: Vec<(String, String, Array)> = Vec::new();
        let slots: Vec<&'static str> = self.slots().into_iter().map(|(n, _)| n).collect();
        for (key, a) in state {
            if key == "step" {
                step = Some(a.astype(tessera_core::Dtype::I32)?.item::<i32>()?);
                continue;
            }
            let (slot, name) = key
                .split_once('.')
                .filter(|(slot, _)| slots.contains(slot))
                .ok_or_else(|| Error::Invalid {
                    op: "load_state_dict",
                    msg: format!("'{key}' is not state of this optimizer (slots: {slots:?})"),
                })?;
            restored.push((slot.to_string(), name.to_string(), a.clone()));
        }
        for (_, m) in self.slots_mut() {
            m.clear();
        }
        for (slot, name, a) in restored {
            for (n, m) in self.slots_mut() {
                if n == slot {
                    m.insert(name.clone(), a.clone());
                }
            }
        }
        match (self.step_count(), step) {
            (Some(s), Some(v)) => *s = v,
            (Some(_), None) => {
                return Err(Error::Invalid {
                    op: "load_state_dict",
                    msg: "the saved state has no 'step'".into(),
                });
            }
            _ => {}
        }
        Ok(())
    }
}

/// Saves an optimizer's state to a safetensors file, to resume training with [`load_state`].
pub fn save_state(opt: &mut dyn Optimizer, path: impl AsRef<std::path::Path>) -> Result<()> {
    let state = opt.state_dict()?;
    let refs: Vec<(&str, &Array)> = state.iter().map(|(k, v)| (k.as_str(), v)).collect();
    tessera_io::safetensors::save(path.as_ref(), &refs, &BTreeMap::new()).map_err(io_err)
}

/// Restores an optimizer's state saved by [`save_state`].
pub fn load_state(opt: &mut dyn Optimizer, path: impl AsRef<std::path::Path>) -> Result<()> {
    let f = tessera_io::safetensors::SafetensorsFile::open(path.as_ref()).map_err(io_err)?;
    let mut state = Params::new();
    for t in &f.tensors {
        state.insert(t.name.clone(), f.tensor(&t.name).map_err(io_err)?);
    }
    opt.load_state_dict(&state)
}

fn io_err(e: tessera_io::Error) -> Error {
    Error::Invalid {
        op: "optimizer state file",
        msg: e.to_string(),
    }
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

    fn slots(&self) -> Vec<(&'static str, &State)> {
        vec![("momentum_buffer", &self.buffers)]
    }

    fn slots_mut(&mut self) -> Vec<(&'static str, &mut State)> {
        vec![("momentum_buffer", &mut self.buffers)]
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

    fn slots(&self) -> Vec<(&'static str, &State)> {
        vec![("exp_avg", &self.m), ("exp_avg_sq", &self.v)]
    }

    fn slots_mut(&mut self) -> Vec<(&'static str, &mut State)> {
        vec![("exp_avg", &mut self.m), ("exp_avg_sq", &mut self.v)]
    }

    fn step_count(&mut self) -> Option<&mut i32> {
        Some(&mut self.step)
    }
}

/// Per-parameter state arrays by name (momentum buffers, second moments, ...).
pub type State = BTreeMap<String, Array>;

fn get_or_zeros(state: &State, name: &str, like: &Array) -> Result<Array> {
    match state.get(name) {
        Some(a) => Ok(a.clone()),
        None => ops::zeros_like(like),
    }
}

fn add_decay(g: Array, p: &Array, wd: f64) -> Result<Array> {
    if wd == 0.0 {
        Ok(g)
    } else {
        ops::add(&g, &ops::multiply(p, &s(wd, p))?)
    }
}

/// RMSprop (PyTorch's rule): optional centering and momentum.
pub struct RmsProp {
    pub lr: f64,
    pub alpha: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub centered: bool,
    sq: State,
    avg: State,
    buf: State,
}

impl RmsProp {
    pub fn new(lr: f64) -> RmsProp {
        RmsProp {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            sq: State::new(),
            avg: State::new(),
            buf: State::new(),
        }
    }
}

impl Optimizer for RmsProp {
    fn update(&mut self, params: &Params, grads: &Params) -> Result<Params> {
        let mut out = Params::new();
        for (name, p) in params {
            let g = add_decay(grad_of(grads, name)?.clone(), p, self.weight_decay)?;
            let a = self.alpha;
            let v = ops::add(
                &ops::multiply(&get_or_zeros(&self.sq, name, &g)?, &s(a, &g))?,
                &ops::multiply(&ops::square(&g)?, &s(1.0 - a, &g))?,
            )?;
            self.sq.insert(name.clone(), v.clone());
            let denom_sq = if self.centered {
                let m = ops::add(
                    &ops::multiply(&get_or_zeros(&self.avg, name, &g)?, &s(a, &g))?,
                    &ops::multiply(&g, &s(1.0 - a, &g))?,
                )?;
                self.avg.insert(name.clone(), m.clone());
                ops::subtract(&v, &ops::square(&m)?)?
            } else {
                v
            };
            let denom = ops::add(&ops::sqrt(&denom_sq)?, &s(self.eps, &g))?;
            let step = if self.momentum > 0.0 {
                let b = ops::add(
                    &ops::multiply(&get_or_zeros(&self.buf, name, &g)?, &s(self.momentum, &g))?,
                    &ops::divide(&g, &denom)?,
                )?;
                self.buf.insert(name.clone(), b.clone());
                b
            } else {
                ops::divide(&g, &denom)?
            };
            out.insert(
                name.clone(),
                ops::subtract(p, &ops::multiply(&step, &s(self.lr, &step))?)?,
            );
        }
        Ok(out)
    }
    fn slots(&self) -> Vec<(&'static str, &State)> {
        vec![
            ("square_avg", &self.sq),
            ("grad_avg", &self.avg),
            ("momentum_buffer", &self.buf),
        ]
    }

    fn slots_mut(&mut self) -> Vec<(&'static str, &mut State)> {
        vec![
            ("square_avg", &mut self.sq),
            ("grad_avg", &mut self.avg),
            ("momentum_buffer", &mut self.buf),
        ]
    }
}

/// Adagrad (PyTorch's rule, with learning-rate decay).
pub struct Adagrad {
    pub lr: f64,
    pub lr_decay: f64,
    pub eps: f64,
    pub weight_decay: f64,
    step: i32,
    sum: State,
}

impl Adagrad {
    pub fn new(lr: f64) -> Adagrad {
        Adagrad {
            lr,
            lr_decay: 0.0,
            eps: 1e-10,
            weight_decay: 0.0,
            step: 0,
            sum: State::new(),
        }
    }
}

impl Optimizer for Adagrad {
    fn update(&mut self, params: &Params, grads: &Params) -> Result<Params> {
        self.step += 1;
        let clr = self.lr / (1.0 + (self.step - 1) as f64 * self.lr_decay);
        let mut out = Params::new();
        for (name, p) in params {
            let g = add_decay(grad_of(grads, name)?.clone(), p, self.weight_decay)?;
            let acc = ops::add(&get_or_zeros(&self.sum, name, &g)?, &ops::square(&g)?)?;
            self.sum.insert(name.clone(), acc.clone());
            let upd = ops::divide(&g, &ops::add(&ops::sqrt(&acc)?, &s(self.eps, &g))?)?;
            out.insert(
                name.clone(),
                ops::subtract(p, &ops::multiply(&upd, &s(clr, &upd))?)?,
            );
        }
        Ok(out)
    }
    fn slots(&self) -> Vec<(&'static str, &State)> {
        vec![("sum", &self.sum)]
    }

    fn slots_mut(&mut self) -> Vec<(&'static str, &mut State)> {
        vec![("sum", &mut self.sum)]
    }

    fn step_count(&mut self) -> Option<&mut i32> {
        Some(&mut self.step)
    }
}

/// Adamax (PyTorch's rule): Adam with an infinity-norm second moment.
pub struct Adamax {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    step: i32,
    m: State,
    u: State,
}

impl Adamax {
    pub fn new(lr: f64) -> Adamax {
        Adamax {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            step: 0,
            m: State::new(),
            u: State::new(),
        }
    }
}

impl Optimizer for Adamax {
    fn update(&mut self, params: &Params, grads: &Params) -> Result<Params> {
        self.step += 1;
        let (b1, b2) = self.betas;
        let mut out = Params::new();
        for (name, p) in params {
            let g = grad_of(grads, name)?.clone();
            let m = ops::add(
                &ops::multiply(&get_or_zeros(&self.m, name, &g)?, &s(b1, &g))?,
                &ops::multiply(&g, &s(1.0 - b1, &g))?,
            )?;
            let u = ops::maximum(
                &ops::multiply(&get_or_zeros(&self.u, name, &g)?, &s(b2, &g))?,
                &ops::add(&ops::abs(&g)?, &s(self.eps, &g))?,
            )?;
            let clr = self.lr / (1.0 - b1.powi(self.step));
            out.insert(
                name.clone(),
                ops::subtract(p, &ops::multiply(&ops::divide(&m, &u)?, &s(clr, &g))?)?,
            );
            self.m.insert(name.clone(), m);
            self.u.insert(name.clone(), u);
        }
        Ok(out)
    }
    fn slots(&self) -> Vec<(&'static str, &State)> {
        vec![("exp_avg", &self.m), ("exp_inf", &self.u)]
    }

    fn slots_mut(&mut self) -> Vec<(&'static str, &mut State)> {
        vec![("exp_avg", &mut self.m), ("exp_inf", &mut self.u)]
    }

    fn step_count(&mut self) -> Option<&mut i32> {
        Some(&mut self.step)
    }
}

/// Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"): sign of an
/// interpolated momentum, decoupled weight decay.
pub struct Lion {
    pub lr: f64,
    pub betas: (f64, f64),
    pub weight_decay: f64,
    m: State,
}

impl Lion {
    pub fn new(lr: f64) -> Lion {
        Lion {
            lr,
            betas: (0.9, 0.99),
            weight_decay: 0.0,
            m: State::new(),
        }
    }
}

impl Optimizer for Lion {
    fn update(&mut self, params: &Params, grads: &Params) -> Result<Params> {
        let (b1, b2) = self.betas;
        let mut out = Params::new();
        for (name, p) in params {
            let g = grad_of(grads, name)?.clone();
            let m0 = get_or_zeros(&self.m, name, &g)?;
            let c = ops::add(
                &ops::multiply(&m0, &s(b1, &g))?,
                &ops::multiply(&g, &s(1.0 - b1, &g))?,
            )?;
            let p1 = if self.weight_decay != 0.0 {
                ops::multiply(p, &s(1.0 - self.lr * self.weight_decay, p))?
            } else {
                p.clone()
            };
            out.insert(
                name.clone(),
                ops::subtract(&p1, &ops::multiply(&ops::sign(&c)?, &s(self.lr, &c))?)?,
            );
            self.m.insert(
                name.clone(),
                ops::add(
                    &ops::multiply(&m0, &s(b2, &g))?,
                    &ops::multiply(&g, &s(1.0 - b2, &g))?,
                )?,
            );
        }
        Ok(out)
    }
    fn slots(&self) -> Vec<(&'static str, &State)> {
        vec![("exp_avg", &self.m)]
    }

    fn slots_mut(&mut self) -> Vec<(&'static str, &mut State)> {
        vec![("exp_avg", &mut self.m)]
    }
}

/// AdaDelta (PyTorch's rule).
pub struct AdaDelta {
    pub lr: f64,
    pub rho: f64,
    pub eps: f64,
    v: State,
    u: State,
}

impl AdaDelta {
    pub fn new(lr: f64) -> AdaDelta {
        AdaDelta {
            lr,
            rho: 0.9,
            eps: 1e-6,
            v: State::new(),
            u: State::new(),
        }
    }
}

impl Optimizer for AdaDelta {
    fn update(&mut self, params: &Params, grads: &Params) -> Result<Params> {
        let r = self.rho;
        let mut out = Params::new();
        for (name, p) in params {
            let g = grad_of(grads, name)?.clone();
            let v = ops::add(
                &ops::multiply(&get_or_zeros(&self.v, name, &g)?, &s(r, &g))?,
                &ops::multiply(&ops::square(&g)?, &s(1.0 - r, &g))?,
            )?;
            let u0 = get_or_zeros(&self.u, name, &g)?;
            let delta = ops::multiply(
                &ops::divide(
                    &ops::sqrt(&ops::add(&u0, &s(self.eps, &g))?)?,
                    &ops::sqrt(&ops::add(&v, &s(self.eps, &g))?)?,
                )?,
                &g,
            )?;
            let u = ops::add(
                &ops::multiply(&u0, &s(r, &g))?,
                &ops::multiply(&ops::square(&delta)?, &s(1.0 - r, &g))?,
            )?;
            out.insert(
                name.clone(),
                ops::subtract(p, &ops::multiply(&delta, &s(self.lr, &delta))?)?,
            );
            self.v.insert(name.clone(), v);
            self.u.insert(name.clone(), u);
        }
        Ok(out)
    }
    fn slots(&self) -> Vec<(&'static str, &State)> {
        vec![("square_avg", &self.v), ("acc_delta", &self.u)]
    }

    fn slots_mut(&mut self) -> Vec<(&'static str, &mut State)> {
        vec![("square_avg", &mut self.v), ("acc_delta", &mut self.u)]
    }
}

/// Scales all gradients so their global L2 norm is at most `max_norm`; returns them and the
/// norm before clipping (PyTorch's `clip_grad_norm_`, with its 1e-6 guard).
pub fn clip_grad_norm(grads: &Params, max_norm: f64) -> Result<(Params, Array)> {
    let mut total: Option<Array> = None;
    for g in grads.values() {
        let sq = ops::sum(
            &ops::square(&g.astype(tessera_core::Dtype::F32.max(g.dtype()))?)?,
            ops::Axes::All,
            false,
        )?;
        total = Some(match total {
            Some(t) => ops::add(&t, &sq)?,
            None => sq,
        });
    }
    let norm = ops::sqrt(&total.unwrap_or_else(|| Array::scalar(0.0f32)))?;
    let scale = ops::minimum(
        &ops::divide(
            &Array::scalar_of(max_norm, norm.dtype()),
            &ops::add(&norm, &Array::scalar_of(1e-6, norm.dtype()))?,
        )?,
        &Array::scalar_of(1.0, norm.dtype()),
    )?;
    let clipped = grads
        .iter()
        .map(|(k, g)| Ok((k.clone(), ops::multiply(g, &scale.astype(g.dtype())?)?)))
        .collect::<Result<Params>>()?;
    Ok((clipped, norm))
}

/// Learning-rate schedules: functions of the step number (0-based).
pub mod schedules {
    /// A schedule: step -> learning rate.
    pub type Schedule = Box<dyn Fn(usize) -> f64 + Send + Sync>;

    /// `init * gamma^(step / step_size)` (PyTorch's StepLR).
    pub fn step_decay(init: f64, gamma: f64, step_size: usize) -> Schedule {
        Box::new(move |t| init * gamma.powi((t / step_size.max(1)) as i32))
    }
    /// `init * gamma^step`.
    pub fn exponential_decay(init: f64, gamma: f64) -> Schedule {
        Box::new(move |t| init * gamma.powi(t as i32))
    }
    /// Cosine from `init` to `end` over `steps`, then `end`.
    pub fn cosine_decay(init: f64, steps: usize, end: f64) -> Schedule {
        Box::new(move |t| {
            let f = (t.min(steps) as f64) / steps.max(1) as f64;
            end + (init - end) * 0.5 * (1.0 + (std::f64::consts::PI * f).cos())
        })
    }
    /// Linear from `start` to `end` over `steps` (warm-up), then `end`.
    pub fn linear(start: f64, end: f64, steps: usize) -> Schedule {
        Box::new(move |t| start + (end - start) * (t.min(steps) as f64 / steps.max(1) as f64))
    }
    /// Schedule `i` runs from `boundaries[i - 1]` (its own step 0) to `boundaries[i]`.
    pub fn join(schedules: Vec<Schedule>, boundaries: Vec<usize>) -> Schedule {
        Box::new(move |t| {
            let i = boundaries
                .iter()
                .take_while(|&&b| t >= b)
                .count()
                .min(schedules.len().saturating_sub(1));
            let start = if i == 0 { 0 } else { boundaries[i - 1] };
            schedules.get(i).map(|s| s(t - start)).unwrap_or(0.0)
        })
    }
}

/// Adafactor (Shazeer & Stern, 2018) as PyTorch's `torch.optim.Adafactor`: second moments of
/// matrices kept factored (a running mean per row and per column instead of per element), a
/// relative step size `min(lr, 1/sqrt(step))` scaled by the parameter's RMS, and the update's
/// RMS clipped at `d`. Memory for a (rows, cols) matrix is rows + cols instead of rows * cols.
pub struct Adafactor {
    pub lr: f64,
    pub beta2_decay: f64,
    /// Floor of the second-moment estimate (`None`: the dtype's machine epsilon).
    pub eps1: Option<f64>,
    /// Floor of the parameter RMS that scales the step.
    pub eps2: f64,
    /// Clipping threshold of the update's RMS.
    pub d: f64,
    pub weight_decay: f64,
    step: i32,
    row_var: State,
    col_var: State,
    variance: State,
}

impl Adafactor {
    /// PyTorch's defaults: `lr = 1e-2`, `beta2_decay = -0.8`, `eps = (None, 1e-3)`, `d = 1`.
    pub fn new(lr: f64) -> Adafactor {
        Adafactor {
            lr,
            beta2_decay: -0.8,
            eps1: None,
            eps2: 1e-3,
            d: 1.0,
            weight_decay: 0.0,
            step: 0,
            row_var: State::new(),
            col_var: State::new(),
            variance: State::new(),
        }
    }
    pub fn weight_decay(mut self, wd: f64) -> Adafactor {
        self.weight_decay = wd;
        self
    }
}

/// Root mean square of all elements, as a scalar array.
fn rms(x: &Array) -> Result<Array> {
    ops::sqrt(&ops::mean(&ops::square(x)?, ops::Axes::All, false)?)
}

/// `x + w (y - x)` (PyTorch's `lerp`).
fn lerp(x: &Array, y: &Array, w: f64) -> Result<Array> {
    ops::add(x, &ops::multiply(&ops::subtract(y, x)?, &s(w, x))?)
}

impl Optimizer for Adafactor {
    fn update(&mut self, params: &Params, grads: &Params) -> Result<Params> {
        self.step += 1;
        let step = self.step as f64;
        let w = step.powf(self.beta2_decay);
        let rho = self.lr.min(1.0 / step.sqrt());
        let mut out = Params::new();
        for (name, p) in params {
            let g = grad_of(grads, name)?;
            let eps1 = self.eps1.unwrap_or_else(|| match p.dtype() {
                tessera_core::Dtype::F64 => f64::EPSILON,
                tessera_core::Dtype::F16 => 9.765625e-4,
                tessera_core::Dtype::BF16 => 7.8125e-3,
                _ => f32::EPSILON as f64,
            });
            // The step size, from the parameter before weight decay.
            let alpha = ops::multiply(&ops::maximum(&rms(p)?, &s(self.eps2, p))?, &s(rho, p))?;
            let mut p = p.clone();
            if self.weight_decay != 0.0 {
                p = ops::multiply(&p, &s(1.0 - self.lr * self.weight_decay, &p))?;
            }
            let g2 = ops::square(g)?;
            let var_estimate = if g.ndim() > 1 {
                let row0 = match self.row_var.get(name) {
                    Some(r) => r.clone(),
                    None => ops::zeros_like(&ops::mean(&g2, -1, true)?)?,
                };
                let col0 = match self.col_var.get(name) {
                    Some(c) => c.clone(),
                    None => ops::zeros_like(&ops::mean(&g2, -2, true)?)?,
                };
                let row = lerp(&row0, &ops::mean(&g2, -1, true)?, w)?;
                let col = lerp(&col0, &ops::mean(&g2, -2, true)?, w)?;
                let row_mean = ops::maximum(&ops::mean(&row, -2, true)?, &s(eps1, &row))?;
                let est = ops::divide(&ops::matmul(&row, &col)?, &row_mean)?;
                self.row_var.insert(name.clone(), row);
                self.col_var.insert(name.clone(), col);
                est
            } else {
                let v0 = get_or_zeros(&self.variance, name, g)?;
                let v = lerp(&v0, &g2, w)?;
                self.variance.insert(name.clone(), v.clone());
                v
            };
            let update = ops::multiply(
                &ops::rsqrt(&ops::maximum(&var_estimate, &s(eps1 * eps1, g))?)?,
                g,
            )?;
            let denom = ops::maximum(&ops::divide(&rms(&update)?, &s(self.d, g))?, &s(1.0, g))?;
            let scaled = ops::multiply(&update, &ops::divide(&alpha, &denom)?)?;
            out.insert(name.clone(), ops::subtract(&p, &scaled)?);
        }
        Ok(out)
    }

    fn slots(&self) -> Vec<(&'static str, &State)> {
        vec![
            ("row_var", &self.row_var),
            ("col_var", &self.col_var),
            ("variance", &self.variance),
        ]
    }

    fn slots_mut(&mut self) -> Vec<(&'static str, &mut State)> {
        vec![
            ("row_var", &mut self.row_var),
            ("col_var", &mut self.col_var),
            ("variance", &mut self.variance),
        ]
    }

    fn step_count(&mut self) -> Option<&mut i32> {
        Some(&mut self.step)
    }
}
