//! Rotary position embeddings (Su et al., "RoFormer", 2021), with the two pairings in use and
//! per-frequency scaling factors: Llama 3, and LongRoPE (Ding et al., 2024; Phi-3 128k and
//! Phi-3.5), whose short or long factors are chosen by the context in use and whose cos/sin
//! carry an attention factor.

use crate::config::{RopeConfig, RopeStyle};
use crate::error::Result;
use tessera_core::{Array, ops};

/// Precomputed inverse frequencies for one rope configuration.
#[derive(Clone)]
pub struct Rope {
    pub config: RopeConfig,
    inv_freq: Vec<f32>,
    /// LongRoPE's frequencies for contexts past the original one.
    inv_freq_long: Option<Vec<f32>>,
}

fn frequencies(config: &RopeConfig, base: f64, factors: Option<&Vec<f32>>) -> Vec<f32> {
    (0..config.dims / 2)
        .map(|i| {
            let f = base.powf(-((2 * i) as f64) / config.dims as f64);
            let factor = factors
                .and_then(|v| v.get(i))
                .map(|&x| x as f64)
                .unwrap_or(1.0);
            (f / factor / config.linear_factor) as f32
        })
        .collect()
}

impl Rope {
    /// Frequencies `base^(-2i/dims) / factor_i` for `i < dims/2`.
    pub fn new(config: &RopeConfig, base: f64) -> Rope {
        Rope {
            config: config.clone(),
            inv_freq: frequencies(config, base, config.freq_factors.as_ref()),
            inv_freq_long: config
                .long_factors
                .as_ref()
                .map(|l| frequencies(config, base, Some(l))),
        }
    }

    /// Whether a context of `len` positions uses LongRoPE's long factors (llama.cpp's rule:
    /// the context in use, here the KV cache's capacity, exceeds the original one).
    pub fn uses_long(&self, len: usize) -> bool {
        self.inv_freq_long.is_some() && self.config.original_context.is_some_and(|orig| len > orig)
    }

    /// `(cos, sin)` of shape `(t, dims/2)` for positions `offset .. offset + t` in a context of
    /// `context` positions, both scaled by the attention factor. Angles are computed in f64
    /// then rounded, so long positions keep their precision.
    pub fn tables(&self, offset: usize, t: usize, context: usize) -> Result<(Array, Array)> {
        let freqs = match &self.inv_freq_long {
            Some(long) if self.uses_long(context) => long,
            _ => &self.inv_freq,
        };
        let half = freqs.len();
        let scale = self.config.attn_factor;
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in offset..offset + t {
            for &f in freqs {
                let a = p as f64 * f as f64;
                cos.push((a.cos() * scale) as f32);
                sin.push((a.sin() * scale) as f32);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_rope_switches_factors_by_context_and_scales() {
        let cfg = RopeConfig {
            base: 10_000.0,
            dims: 4,
            style: RopeStyle::Half,
            linear_factor: 1.0,
            freq_factors: Some(vec![1.0, 2.0]),
            long_factors: Some(vec![3.0, 5.0]),
            original_context: Some(64),
            attn_factor: 1.25,
        };
        let rope = Rope::new(&cfg, cfg.base);
        let expect = |p: f64, factors: [f64; 2]| -> Vec<f32> {
            (0..2)
                .map(|i| {
                    let f = 10_000f64.powf(-(2.0 * i as f64) / 4.0) / factors[i];
                    ((p * (f as f32) as f64).cos() * 1.25) as f32
                })
                .collect()
        };
        let (c, _) = rope.tables(10, 1, 64).unwrap();
        assert_eq!(c.to_vec::<f32>().unwrap(), expect(10.0, [1.0, 2.0]));
        let (c, s) = rope.tables(10, 1, 65).unwrap();
        assert_eq!(c.to_vec::<f32>().unwrap(), expect(10.0, [3.0, 5.0]));
        let f0 = (10_000f64.powf(0.0) / 3.0) as f32 as f64;
        assert_eq!(
            s.to_vec::<f32>().unwrap()[0],
            ((10.0 * f0).sin() * 1.25) as f32
        );
        assert!(rope.uses_long(65) && !rope.uses_long(64));
    }
}
