//! Normalisation layers over channels-last inputs: [`GroupNorm`] and [`BatchNorm`] (PyTorch's
//! `BatchNorm1d`/`BatchNorm2d`). [`crate::layers::LayerNorm`] and [`crate::layers::RmsNorm`]
//! live in `layers`.
//!
//! # Layout
//!
//! Channels last, as MLX and the convolutions of this crate: inputs are `(N, C)`, `(N, L, C)`,
//! `(N, H, W, C)` where PyTorch takes `(N, C)`, `(N, C, L)`, `(N, C, H, W)`. A PyTorch
//! activation `x` is `x.movedim(1, -1)` here. Parameters and buffers have PyTorch's names and
//! shapes (`weight`, `bias`, `running_mean`, `running_var` of shape `(C,)`,
//! `num_batches_tracked` an `i64` scalar), so a PyTorch `state_dict` loads unchanged.
//!
//! Everything is written with public core ops, so gradients, `vmap` and `compile` apply.

use crate::conv::fmt_shape;
use crate::{Module, check_replacement};
use tessera_core::transforms::Params;
use tessera_core::{Array, Dtype, Error, Result, ops};

fn err(layer: &str, msg: String) -> Error {
    Error::Invalid {
        op: "nn",
        msg: format!("[{layer}] {msg}"),
    }
}

fn unknown(layer: &str, name: &str) -> Error {
    err(layer, format!("no parameter or buffer named {name}"))
}

fn ones(c: usize) -> Result<Array> {
    ops::contiguous(&ops::ones(&[c], Dtype::F32)?)
}

fn zeros(c: usize) -> Result<Array> {
    ops::contiguous(&ops::zeros(&[c], Dtype::F32)?)
}

/// Replaces `slot` by `v` if it exists (same shape), else an unknown-name error.
fn load_slot(layer: &str, name: &str, slot: Option<&mut Array>, v: &Array) -> Result<()> {
    let slot = slot.ok_or_else(|| unknown(layer, name))?;
    check_replacement(name, slot, v)?;
    *slot = v.clone();
    Ok(())
}

fn check_float(layer: &str, x: &Array) -> Result<()> {
    if !x.dtype().is_float() {
        return Err(err(
            layer,
            format!(
                "the input must be a float array, got {} {}",
                x.dtype(),
                fmt_shape(x.shape())
            ),
        ));
    }
    Ok(())
}

/// Group normalisation (PyTorch's `nn.GroupNorm`) over a channels-last input `(N, ..., C)`:
/// the `C` channels are split into `groups` consecutive groups of `C / groups` (PyTorch's
/// grouping: group `g` holds channels `g*C/G .. (g+1)*C/G`), each normalised over its channels
/// and every spatial position with the biased variance, then scaled and shifted per channel.
///
/// PyTorch takes `(N, C, ...)`: the same numbers moved with `movedim(1, -1)`. (MLX's
/// `GroupNorm` with `pytorch_compatible=True` is this layer.) `weight` starts at ones and `bias`
/// at zeros, both `(C,)`.
#[derive(Clone)]
pub struct GroupNorm {
    pub groups: usize,
    pub channels: usize,
    pub eps: f64,
    pub weight: Option<Array>,
    pub bias: Option<Array>,
}

impl GroupNorm {
    pub fn new(groups: usize, channels: usize, eps: f64, affine: bool) -> Result<GroupNorm> {
        if groups == 0 || channels == 0 || !channels.is_multiple_of(groups) {
            return Err(err(
                "GroupNorm",
                format!("channels ({channels}) must be a positive multiple of groups ({groups})"),
            ));
        }
        if eps.is_nan() || eps < 0.0 {
            return Err(err("GroupNorm", format!("eps must be >= 0, got {eps}")));
        }
        let (weight, bias) = if affine {
            (Some(ones(channels)?), Some(zeros(channels)?))
        } else {
            (None, None)
        };
        Ok(GroupNorm {
            groups,
            channels,
            eps,
            weight,
            bias,
        })
    }
}

impl Module for GroupNorm {
    fn parameters(&self) -> Params {
        let mut p = Params::new();
        if let Some(w) = &self.weight {
            p.insert("weight".into(), w.clone());
        }
        if let Some(b) = &self.bias {
            p.insert("bias".into(), b.clone());
        }
        p
    }

    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        for (name, v) in params {
            match name.as_str() {
                "weight" => load_slot("GroupNorm", name, self.weight.as_mut(), v)?,
                "bias" => load_slot("GroupNorm", name, self.bias.as_mut(), v)?,
                _ => return Err(unknown("GroupNorm", name)),
            }
        }
        Ok(())
    }

    fn forward(&self, x: &Array) -> Result<Array> {
        check_float("GroupNorm", x)?;
        let s = x.shape();
        if x.ndim() < 2 || s[s.len() - 1] != self.channels {
            return Err(err(
                "GroupNorm",
                format!(
                    "expected a channels-last input (N, ..., {}), got {}",
                    self.channels,
                    fmt_shape(s)
                ),
            ));
        }
        let n = s[0];
        let spatial: usize = s[1..s.len() - 1].iter().product();
        let g = self.groups;
        let xg = ops::reshape(x, &[n, spatial, g, self.channels / g])?;
        let axes: Vec<isize> = vec![1, 3];
        let m = ops::mean(&xg, axes.clone(), true)?;
        let dx = ops::subtract(&xg, &m)?;
        let v = ops::mean(&ops::square(&dx)?, axes, true)?;
        let y = ops::multiply(
            &dx,
            &ops::rsqrt(&ops::add(&v, &Array::scalar_of(self.eps, v.dtype()))?)?,
        )?;
        let mut y = ops::reshape(&y, s)?;
        if let Some(w) = &self.weight {
            y = ops::multiply(&y, w)?;
        }
        if let Some(b) = &self.bias {
            y = ops::add(&y, b)?;
        }
        Ok(y)
    }
}

/// The running statistics of a [`BatchNorm`] (PyTorch's buffers).
#[derive(Clone)]
pub struct BatchNormBuffers {
    /// `(C,)`, starts at zeros.
    pub running_mean: Array,
    /// `(C,)`, starts at ones.
    pub running_var: Array,
    /// `i64` scalar: the number of training batches seen.
    pub num_batches_tracked: Array,
}

/// Batch normalisation (PyTorch's `BatchNorm1d` for `(N, C)` / `(N, L, C)` and `BatchNorm2d`
/// for `(N, H, W, C)`; channels last): `(x - mean) / sqrt(var + eps) * weight + bias` per
/// channel.
///
/// # Modes and buffers
///
/// - Training (`training == true`, the default, as PyTorch): the statistics of the batch
///   (biased variance) normalise. The running statistics are updated by
///   `running = (1 - momentum) * running + momentum * batch` (the *unbiased* batch variance for
///   `running_var`; with `momentum: None` a cumulative average, factor
///   `1 / num_batches_tracked`), and `num_batches_tracked` grows by one.
/// - Evaluation (`training == false`): the running statistics normalise; without
///   `track_running_stats` there are none and the batch statistics are used in both modes.
///
/// [`Module::forward`] takes `&self`, so it never changes the module: in training it only
/// normalises with the batch statistics. The updated buffers come back as new arrays from
/// [`BatchNorm::forward_with_buffers`] (install them with [`BatchNorm::set_buffers`]), or
/// [`BatchNorm::forward_update`] does both, like a PyTorch training forward. The new buffers are
/// built from `stop_gradient` of the batch statistics, so no gradient flows through them.
///
/// [`Module::parameters`] holds only the trainable `weight` and `bias` (PyTorch's
/// `parameters()`), so gradients and optimizers never touch the buffers; [`BatchNorm::buffers`]
/// and [`BatchNorm::state_dict`] add them, and [`Module::load_parameters`] accepts both kinds of
/// name, so a PyTorch `state_dict` loads with one call.
#[derive(Clone)]
pub struct BatchNorm {
    pub num_features: usize,
    /// Input rank: 1 for `BatchNorm1d` (`(N, C)` or `(N, L, C)`), 2 for `BatchNorm2d`.
    pub dims: usize,
    pub eps: f64,
    /// `None`: cumulative moving average.
    pub momentum: Option<f64>,
    pub weight: Option<Array>,
    pub bias: Option<Array>,
    /// `None` without `track_running_stats`.
    pub buffers: Option<BatchNormBuffers>,
    pub training: bool,
}

impl BatchNorm {
    /// A batch norm for `dims` spatial dims (1: `(N, C)` or `(N, L, C)`; 2: `(N, H, W, C)`).
    pub fn new(
        dims: usize,
        num_features: usize,
        eps: f64,
        momentum: Option<f64>,
        affine: bool,
        track_running_stats: bool,
    ) -> Result<BatchNorm> {
        let name = if dims == 2 {
            "BatchNorm2d"
        } else {
            "BatchNorm1d"
        };
        if !(1..=3).contains(&dims) || num_features == 0 {
            return Err(err(
                name,
                format!(
                    "dims must be 1, 2 or 3 and num_features positive, got dims {dims}, num_features {num_features}"
                ),
            ));
        }
        if eps.is_nan() || eps < 0.0 {
            return Err(err(name, format!("eps must be >= 0, got {eps}")));
        }
        if let Some(m) = momentum
            && !(0.0..=1.0).contains(&m)
        {
            return Err(err(name, format!("momentum must be in [0, 1], got {m}")));
        }
        let (weight, bias) = if affine {
            (Some(ones(num_features)?), Some(zeros(num_features)?))
        } else {
            (None, None)
        };
        let buffers = if track_running_stats {
            Some(BatchNormBuffers {
                running_mean: zeros(num_features)?,
                running_var: ones(num_features)?,
                num_batches_tracked: Array::scalar(0i64),
            })
        } else {
            None
        };
        Ok(BatchNorm {
            num_features,
            dims,
            eps,
            momentum,
            weight,
            bias,
            buffers,
            training: true,
        })
    }

    /// PyTorch's `BatchNorm1d(num_features)` defaults: eps 1e-5, momentum 0.1, affine, tracking.
    pub fn new_1d(num_features: usize) -> Result<BatchNorm> {
        BatchNorm::new(1, num_features, 1e-5, Some(0.1), true, true)
    }

    /// PyTorch's `BatchNorm2d(num_features)` defaults.
    pub fn new_2d(num_features: usize) -> Result<BatchNorm> {
        BatchNorm::new(2, num_features, 1e-5, Some(0.1), true, true)
    }

    fn name(&self) -> &'static str {
        match self.dims {
            1 => "BatchNorm1d",
            2 => "BatchNorm2d",
            _ => "BatchNorm3d",
        }
    }

    /// Training mode (batch statistics, buffer updates).
    pub fn train(&mut self) {
        self.training = true;
    }

    /// Evaluation mode (running statistics).
    pub fn eval(&mut self) {
        self.training = false;
    }

    /// `running_mean`, `running_var`, `num_batches_tracked` (empty without tracking).
    pub fn buffers(&self) -> Params {
        let mut p = Params::new();
        if let Some(b) = &self.buffers {
            p.insert("running_mean".into(), b.running_mean.clone());
            p.insert("running_var".into(), b.running_var.clone());
            p.insert("num_batches_tracked".into(), b.num_batches_tracked.clone());
        }
        p
    }

    /// Parameters and buffers, as PyTorch's `state_dict()`.
    pub fn state_dict(&self) -> Params {
        let mut p = self.parameters();
        p.extend(self.buffers());
        p
    }

    /// Installs buffers returned by [`BatchNorm::forward_with_buffers`].
    pub fn set_buffers(&mut self, buffers: BatchNormBuffers) {
        self.buffers = Some(buffers);
    }

    fn check_input(&self, x: &Array) -> Result<()> {
        check_float(self.name(), x)?;
        let s = x.shape();
        let ok_rank = match self.dims {
            1 => x.ndim() == 2 || x.ndim() == 3,
            d => x.ndim() == d + 2,
        };
        if !ok_rank || s[s.len() - 1] != self.num_features {
            let layout = match self.dims {
                1 => "(N, C) or (N, L, C)",
                2 => "(N, H, W, C)",
                _ => "(N, D, H, W, C)",
            };
            return Err(err(
                self.name(),
                format!(
                    "expected a channels-last input {layout} with C = {}, got {}",
                    self.num_features,
                    fmt_shape(s)
                ),
            ));
        }
        Ok(())
    }

    fn affine(&self, y: Array) -> Result<Array> {
        let mut y = y;
        if let Some(w) = &self.weight {
            y = ops::multiply(&y, w)?;
        }
        if let Some(b) = &self.bias {
            y = ops::add(&y, b)?;
        }
        Ok(y)
    }

    /// The forward pass and, in training mode with running statistics, the updated buffers
    /// (new arrays; the module is unchanged).
    pub fn forward_with_buffers(&self, x: &Array) -> Result<(Array, Option<BatchNormBuffers>)> {
        self.check_input(x)?;
        let axes: Vec<isize> = (0..x.ndim() as isize - 1).collect();
        let eps = |v: &Array| ops::add(v, &Array::scalar_of(self.eps, v.dtype()));
        match (&self.buffers, self.training) {
            (Some(b), false) => {
                let m = ops::astype(&b.running_mean, x.dtype())?;
                let v = ops::astype(&b.running_var, x.dtype())?;
                let y = ops::multiply(&ops::subtract(x, &m)?, &ops::rsqrt(&eps(&v)?)?)?;
                Ok((self.affine(y)?, None))
            }
            (buffers, training) => {
                let count: usize = x.shape()[..x.ndim() - 1].iter().product();
                if training && count < 2 {
                    return Err(err(
                        self.name(),
                        format!(
                            "expected more than 1 value per channel when training, got input {}",
                            fmt_shape(x.shape())
                        ),
                    ));
                }
                let m = ops::mean(x, axes.clone(), false)?;
                let dx = ops::subtract(x, &m)?;
                let v = ops::mean(&ops::square(&dx)?, axes, false)?;
                let y = self.affine(ops::multiply(&dx, &ops::rsqrt(&eps(&v)?)?)?)?;
                let new = match (buffers, training) {
                    (Some(b), true) => Some(self.updated(b, &m, &v, count)?),
                    _ => None,
                };
                Ok((y, new))
            }
        }
    }

    fn updated(
        &self,
        b: &BatchNormBuffers,
        mean: &Array,
        var: &Array,
        count: usize,
    ) -> Result<BatchNormBuffers> {
        let nbt = ops::add(
            &b.num_batches_tracked,
            &Array::scalar_of(1.0, b.num_batches_tracked.dtype()),
        )?;
        let dt = b.running_mean.dtype();
        let factor = match self.momentum {
            Some(m) => Array::scalar_of(m, dt),
            None => ops::reciprocal(&ops::astype(&nbt, dt)?)?,
        };
        let keep = ops::subtract(&Array::scalar_of(1.0, dt), &factor)?;
        let mean = ops::astype(&ops::stop_gradient(mean)?, dt)?;
        let unbiased = ops::multiply(
            &ops::astype(&ops::stop_gradient(var)?, dt)?,
            &Array::scalar_of(count as f64 / (count - 1) as f64, dt),
        )?;
        let mix = |old: &Array, new: &Array| {
            ops::add(&ops::multiply(old, &keep)?, &ops::multiply(new, &factor)?)
        };
        Ok(BatchNormBuffers {
            running_mean: mix(&b.running_mean, &mean)?,
            running_var: mix(&b.running_var, &unbiased)?,
            num_batches_tracked: nbt,
        })
    }

    /// A PyTorch-style forward: in training mode the buffers are updated in place.
    pub fn forward_update(&mut self, x: &Array) -> Result<Array> {
        let (y, b) = self.forward_with_buffers(x)?;
        if let Some(b) = b {
            self.buffers = Some(b);
        }
        Ok(y)
    }
}

impl Module for BatchNorm {
    /// `weight` and `bias` only; see [`BatchNorm::state_dict`] for the buffers.
    fn parameters(&self) -> Params {
        let mut p = Params::new();
        if let Some(w) = &self.weight {
            p.insert("weight".into(), w.clone());
        }
        if let Some(b) = &self.bias {
            p.insert("bias".into(), b.clone());
        }
        p
    }

    /// Accepts parameters and buffers (a whole PyTorch `state_dict`).
    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        let name_ = self.name();
        for (name, v) in params {
            let b = self.buffers.as_mut();
            match name.as_str() {
                "weight" => load_slot(name_, name, self.weight.as_mut(), v)?,
                "bias" => load_slot(name_, name, self.bias.as_mut(), v)?,
                "running_mean" => load_slot(name_, name, b.map(|b| &mut b.running_mean), v)?,
                "running_var" => load_slot(name_, name, b.map(|b| &mut b.running_var), v)?,
                "num_batches_tracked" => {
                    load_slot(name_, name, b.map(|b| &mut b.num_batches_tracked), v)?
                }
                _ => return Err(unknown(name_, name)),
            }
        }
        Ok(())
    }

    /// Normalises without changing the module (see the type's documentation).
    fn forward(&self, x: &Array) -> Result<Array> {
        Ok(self.forward_with_buffers(x)?.0)
    }
}
