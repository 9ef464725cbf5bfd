//! Rotary position embeddings (Su et al., "RoFormer", 2021), with the two pairings in use and
//! per-frequency scaling factors (Llama 3, long-rope).

use crate::config::{RopeConfig, RopeStyle};
use crate::error::Result;
use tessera_core::{Array, ops};

/// Precomputed inverse frequencies for one rope configuration.
#[derive(Clone)]
pub struct Rope {
    pub config: RopeConfig,
    inv_freq: Vec<f32>,
}

impl Rope {
    /// Frequencies `base^(-2i/dims) / factor_i` for `i < dims/2`.
    pub fn new(config: &RopeConfig, base: f64) -> Rope {
        let half = config.dims / 2;
        let inv_freq = (0..half)
            .map(|i| {
                let f = base.powf(-((2 * i) as f64) / config.dims as f64);
                let factor = config
                    .freq_factors
                    .as_ref()
                    .and_then(|v| v.get(i))
                    .map(|&x| x as f64)
                    .unwrap_or(1.0);
                (f / factor / config.linear_factor) as f32
            })
            .collect();
        Rope {
            config: config.clone(),
            inv_freq,
        }
    }

    /// `(cos, sin)` of shape `(t, dims/2)` for positions `offset .. offset + t`. Angles are
    /// computed in f64 then rounded, so long positions keep their precision.
    pub fn tables(&self, offset: usize, t: usize) -> Result<(Array, Array)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in offset..offset + t {
            for &f in &self.inv_freq {
                let a = p as f64 * f as f64;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Ok((
            Array::from_vec(cos, &[t, half])?,
            Array::from_vec(sin, &[t, half])?,
        ))
    }

    /// Rotates `x` of shape `(b, t, heads, head_dim)` (positions along axis 1).
    pub fn apply(&self, x: &Array, cos: &Array, sin: &Array) -> Result<Array> {
        let sh = x.shape().to_vec();
        let (t, d) = (sh[1], sh[3]);
        let dims = self.config.dims;
        let half = dims / 2;
        // (t, 1, half) broadcasts over batch and heads.
        let c = ops::reshape(cos, &[t, 1, half])?;
        let s = ops::reshape(sin, &[t, 1, half])?;
        let xr = if dims < d {
            ops::slice_axis(x, 3, 0, dims)?
        } else {
            x.clone()
        };
        let rotated = match self.config.style {
            RopeStyle::Half => {
                let x1 = ops::slice_axis(&xr, 3, 0, half)?;
                let x2 = ops::slice_axis(&xr, 3, half, dims)?;
                let a = ops::subtract(&ops::multiply(&x1, &c)?, &ops::multiply(&x2, &s)?)?;
                let b = ops::add(&ops::multiply(&x2, &c)?, &ops::multiply(&x1, &s)?)?;
                ops::concatenate(&[a, b], 3)?
            }
            RopeStyle::Interleaved => {
                let pairs = ops::reshape(&xr, &[sh[0], t, sh[2], half, 2])?;
                let x1 = ops::squeeze(&ops::slice_axis(&pairs, 4, 0, 1)?, 4)?;
                let x2 = ops::squeeze(&ops::slice_axis(&pairs, 4, 1, 2)?, 4)?;
                let a = ops::subtract(&ops::multiply(&x1, &c)?, &ops::multiply(&x2, &s)?)?;
                let b = ops::add(&ops::multiply(&x2, &c)?, &ops::multiply(&x1, &s)?)?;
                ops::reshape(&ops::stack(&[a, b], 4)?, &[sh[0], t, sh[2], dims])?
            }
        };
        let out = if dims < d {
            ops::concatenate(&[rotated, ops::slice_axis(x, 3, dims, d)?], 3)?
        } else {
            rotated
        };
        Ok(out)
    }
}
