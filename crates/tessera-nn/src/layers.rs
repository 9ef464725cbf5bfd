//! Layers. Parameter names follow PyTorch (`weight` stored (out, in), `bias`).

use crate::{Module, check_replacement};
use tessera_core::transforms::Params;
use tessera_core::{Array, Dtype, Error, Result, ops, random};

/// `y = x @ W^T + b` with `W` of shape (out, in), initialised uniform in ±1/sqrt(in) (PyTorch's
/// default).
#[derive(Clone)]
pub struct Linear {
    pub weight: Array,
    pub bias: Option<Array>,
}

impl Linear {
    pub fn new(input: usize, output: usize, bias: bool, key: &Array) -> Result<Linear> {
        let keys = random::split(key, 2)?;
        let k = |i: usize| ops::reshape(&ops::slice_axis(&keys, 0, i, i + 1)?, &[2]);
        let bound = 1.0 / (input.max(1) as f64).sqrt();
        let weight = random::uniform(-bound, bound, &[output, input], Dtype::F32, Some(&k(0)?))?;
        let bias = if bias {
            Some(random::uniform(
                -bound,
                bound,
                &[output],
                Dtype::F32,
                Some(&k(1)?),
            )?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }
}

impl Module for Linear {
    fn parameters(&self) -> Params {
        let mut p = Params::new();
        p.insert("weight".into(), self.weight.clone());
        if let Some(b) = &self.bias {
            p.insert("bias".into(), b.clone());
        }
        p
    }

    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        for (name, v) in params {
            match name.as_str() {
                "weight" => {
                    check_replacement(name, &self.weight, v)?;
                    self.weight = v.clone();
                }
                "bias" => match &mut self.bias {
                    Some(b) => {
                        check_replacement(name, b, v)?;
                        *b = v.clone();
                    }
                    None => return Err(unknown(name)),
                },
                _ => return Err(unknown(name)),
            }
        }
        Ok(())
    }

    fn forward(&self, x: &Array) -> Result<Array> {
        let y = ops::matmul(x, &ops::transpose(&self.weight, None)?)?;
        match &self.bias {
            Some(b) => ops::add(&y, b),
            None => Ok(y),
        }
    }
}

fn unknown(name: &str) -> Error {
    Error::Invalid {
        op: "load_parameters",
        msg: format!("no parameter named {name}"),
    }
}

/// A multilayer perceptron: Linear layers with an activation between them.
#[derive(Clone)]
pub struct Mlp {
    pub layers: Vec<Linear>,
    pub activation: fn(&Array) -> Result<Array>,
}

impl Mlp {
    /// Layer sizes `dims[0] -> dims[1] -> ... -> dims[n]`.
    pub fn new(
        dims: &[usize],
        activation: fn(&Array) -> Result<Array>,
        key: &Array,
    ) -> Result<Mlp> {
        let n = dims.len().saturating_sub(1);
        let keys = random::split(key, n.max(1))?;
        let layers = (0..n)
            .map(|i| {
                let k = ops::reshape(&ops::slice_axis(&keys, 0, i, i + 1)?, &[2])?;
                Linear::new(dims[i], dims[i + 1], true, &k)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Mlp { layers, activation })
    }
}

impl Module for Mlp {
    fn parameters(&self) -> Params {
        let mut p = Params::new();
        for (i, l) in self.layers.iter().enumerate() {
            for (name, v) in l.parameters() {
                p.insert(format!("layers.{i}.{name}"), v);
            }
        }
        p
    }

    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        let mut per: Vec<Params> = vec![Params::new(); self.layers.len()];
        for (name, v) in params {
            let rest = name.strip_prefix("layers.").ok_or_else(|| unknown(name))?;
            let (idx, field) = rest.split_once('.').ok_or_else(|| unknown(name))?;
            let i: usize = idx.parse().map_err(|_| unknown(name))?;
            per.get_mut(i)
                .ok_or_else(|| unknown(name))?
                .insert(field.to_string(), v.clone());
        }
        for (l, p) in self.layers.iter_mut().zip(&per) {
            l.load_parameters(p)?;
        }
        Ok(())
    }

    fn forward(&self, x: &Array) -> Result<Array> {
        let mut h = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i + 1 < self.layers.len() {
                h = (self.activation)(&h)?;
            }
        }
        Ok(h)
    }
}

/// A lookup table of `num` vectors of size `dim`; `weight` is (num, dim), initialised N(0, 1)
/// as PyTorch's. Input: integer indices of any shape; output: indices' shape + (dim,).
#[derive(Clone)]
pub struct Embedding {
    pub weight: Array,
}

impl Embedding {
    pub fn new(num: usize, dim: usize, key: &Array) -> Result<Embedding> {
        Ok(Embedding {
            weight: random::normal(&[num, dim], Dtype::F32, 0.0, 1.0, Some(key))?,
        })
    }
}

impl Module for Embedding {
    fn parameters(&self) -> Params {
        let mut p = Params::new();
        p.insert("weight".into(), self.weight.clone());
        p
    }
    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        for (name, v) in params {
            if name != "weight" {
                return Err(unknown(name));
            }
            check_replacement(name, &self.weight, v)?;
            self.weight = v.clone();
        }
        Ok(())
    }
    fn forward(&self, x: &Array) -> Result<Array> {
        ops::take(&self.weight, x, Some(0))
    }
}

/// Layer normalisation over the last axis: `(x - mean) / sqrt(var + eps) * weight + bias`
/// (biased variance, as PyTorch). `weight` starts at ones, `bias` at zeros.
#[derive(Clone)]
pub struct LayerNorm {
    pub weight: Option<Array>,
    pub bias: Option<Array>,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, eps: f64, affine: bool) -> Result<LayerNorm> {
        let (weight, bias) = if affine {
            (
                Some(ops::contiguous(&ops::ones(&[dim], Dtype::F32)?)?),
                Some(ops::contiguous(&ops::zeros(&[dim], Dtype::F32)?)?),
            )
        } else {
            (None, None)
        };
        Ok(LayerNorm { weight, bias, eps })
    }
}

/// `layer_norm` as a function (the layer's forward): the fused [`ops::layer_norm`] (one pass
/// per row, differentiable).
pub fn layer_norm(
    x: &Array,
    weight: Option<&Array>,
    bias: Option<&Array>,
    eps: f64,
) -> Result<Array> {
    ops::layer_norm(x, weight, bias, eps)
}

/// RMS normalisation over the last axis: `x / sqrt(mean(x^2) + eps) * weight` (the fused
/// [`ops::rms_norm`]: one pass per row, differentiable).
pub fn rms_norm(x: &Array, weight: Option<&Array>, eps: f64) -> Result<Array> {
    ops::rms_norm(x, weight, eps)
}

fn norm_params(weight: &Option<Array>, bias: &Option<Array>) -> Params {
    let mut p = Params::new();
    if let Some(w) = weight {
        p.insert("weight".into(), w.clone());
    }
    if let Some(b) = bias {
        p.insert("bias".into(), b.clone());
    }
    p
}

fn load_norm(weight: &mut Option<Array>, bias: &mut Option<Array>, params: &Params) -> Result<()> {
    for (name, v) in params {
        let slot = match name.as_str() {
            "weight" => weight.as_mut(),
            "bias" => bias.as_mut(),
            _ => None,
        };
        let slot = slot.ok_or_else(|| unknown(name))?;
        check_replacement(name, slot, v)?;
        *slot = v.clone();
    }
    Ok(())
}

impl Module for LayerNorm {
    fn parameters(&self) -> Params {
        norm_params(&self.weight, &self.bias)
    }
    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        load_norm(&mut self.weight, &mut self.bias, params)
    }
    fn forward(&self, x: &Array) -> Result<Array> {
        layer_norm(x, self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }
}

/// RMSNorm (as in Llama): `weight` starts at ones.
#[derive(Clone)]
pub struct RmsNorm {
    pub weight: Option<Array>,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(dim: usize, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: Some(ops::contiguous(&ops::ones(&[dim], Dtype::F32)?)?),
            eps,
        })
    }
}

impl Module for RmsNorm {
    fn parameters(&self) -> Params {
        norm_params(&self.weight, &None)
    }
    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        let mut none = None;
        load_norm(&mut self.weight, &mut none, params)
    }
    fn forward(&self, x: &Array) -> Result<Array> {
        rms_norm(x, self.weight.as_ref(), self.eps)
    }
}

/// Zeroes each element with probability `p` during training and scales the rest by 1/(1-p);
/// the identity in evaluation.
pub fn dropout(x: &Array, p: f64, training: bool, key: Option<&Array>) -> Result<Array> {
    if !training || p == 0.0 {
        return Ok(x.clone());
    }
    if !(0.0..1.0).contains(&p) {
        return Err(Error::Invalid {
            op: "dropout",
            msg: format!("p must be in [0, 1), got {p}"),
        });
    }
    let keep = random::bernoulli(1.0 - p, x.shape(), key)?;
    let scaled = ops::multiply(x, &Array::scalar_of(1.0 / (1.0 - p), x.dtype()))?;
    ops::where_(&keep, &scaled, &Array::scalar_of(0.0, x.dtype()))
}

/// PyTorch's `nn.Dropout(p)`: [`dropout`] as a layer. It starts in training mode, as PyTorch's
/// modules; [`Dropout::eval`] makes it the identity. [`Module::forward`] draws its mask from
/// the global random key (MLX's `nn.Dropout`); [`Dropout::forward_with_key`] from a given key.
/// `p` must be in [0, 1). No parameters. In a `Sequential`, add it with `push_layer` (not
/// `push`) so that `Sequential::set_training` reaches it.
/// ```
/// use tessera_core::{Dtype, ops, random};
/// use tessera_nn::{Module, layers::Dropout};
/// let mut d = Dropout::new(0.5).unwrap();
/// let x = ops::ones(&[1000], Dtype::F32).unwrap();
/// let y = d.forward_with_key(&x, &random::key(0)).unwrap().to_vec::<f32>().unwrap();
/// assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
/// d.eval();
/// assert_eq!(d.forward(&x).unwrap().to_vec::<f32>().unwrap(), vec![1.0; 1000]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Dropout {
    pub p: f64,
    pub training: bool,
}

impl Dropout {
    pub fn new(p: f64) -> Result<Dropout> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::Invalid {
                op: "Dropout",
                msg: format!("p must be in [0, 1), got {p}"),
            });
        }
        Ok(Dropout { p, training: true })
    }

    /// Training mode: elements are dropped.
    pub fn train(&mut self) {
        self.training = true;
    }

    /// Evaluation mode: the identity.
    pub fn eval(&mut self) {
        self.training = false;
    }

    /// The forward pass with the mask drawn from `key` (the identity in evaluation mode).
    pub fn forward_with_key(&self, x: &Array, key: &Array) -> Result<Array> {
        dropout(x, self.p, self.training, Some(key))
    }
}

impl Module for Dropout {
    fn parameters(&self) -> Params {
        Params::new()
    }
    fn load_parameters(&mut self, params: &Params) -> Result<()> {
        match params.keys().next() {
            Some(name) => Err(unknown(name)),
            None => Ok(()),
        }
    }
    fn forward(&self, x: &Array) -> Result<Array> {
        dropout(x, self.p, self.training, None)
    }
}
