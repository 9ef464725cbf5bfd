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

    /// Rotates `x` of shape `(b, t, heads, head_dim)` (positions along axis 1) with the fused
    /// [`ops::rope`] kernel.
    pub fn apply(&self, x: &Array, cos: &Array, sin: &Array) -> Result<Array> {
        let interleaved = self.config.style == RopeStyle::Interleaved;
        Ok(ops::rope(x, cos, sin, interleaved)?)
    }
}
