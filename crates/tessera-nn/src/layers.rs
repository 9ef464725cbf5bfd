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
