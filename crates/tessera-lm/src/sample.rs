//! Choosing the next token from logits: penalties, logit bias, top-k, top-p, min-p, temperature,
//! and a seeded random draw. Runs on the host over the last position's logits (one vocabulary
//! row per step), in the order llama.cpp applies them.

use crate::error::{Error, Result};
use std::collections::HashMap;

/// Sampling parameters. The defaults give greedy decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1: off).
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one (0: off).
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of recent tokens (1: off).
    pub repetition_penalty: f32,
    /// Subtract from the logits of tokens seen recently (0: off).
    pub presence_penalty: f32,
    /// Subtract per occurrence of tokens seen recently (0: off).
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub penalty_last_n: usize,
    /// Added to the logits of given tokens (`f32::NEG_INFINITY` bans a token).
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplerConfig {
    /// Rejects values that make no sense, with the reason.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top-p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min-p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(format!(
                "repetition penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        if !self.presence_penalty.is_finite() || !self.frequency_penalty.is_finite() {
            return bad("presence and frequency penalties must be finite".into());
        }
        if self.logit_bias.iter().any(|(_, b)| b.is_nan()) {
            return bad("a logit bias is NaN".into());
        }
        Ok(())
    }
}

/// A sampler with its own random stream.
pub struct Sampler {
    pub config: SamplerConfig,
    state: u64,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Result<Sampler> {
        config.validate()?;
        let state = config.seed ^ 0x9E37_79B9_7F4A_7C15;
        Ok(Sampler { config, state })
    }

    /// splitmix64: small, fast, and reproducible across platforms.
    fn next_f64(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Picks the next token from `logits` given the tokens so far (for the penalties).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::Invalid("no logits to sample from".into()));
        }
        let c = &self.config;
        for &(id, bias) in &c.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        let penalised =
            c.repetition_penalty != 1.0 || c.presence_penalty != 0.0 || c.frequency_penalty != 0.0;
        if penalised && c.penalty_last_n > 0 {
            let recent = &history[history.len().saturating_sub(c.penalty_last_n)..];
            let mut counts: HashMap<u32, u32> = HashMap::new();
            for &t in recent {
                *counts.entry(t).or_default() += 1;
            }
            for (&t, &n) in &counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / c.repetition_penalty
                    } else {
                        *l * c.repetition_penalty
                    };
                    *l -= c.presence_penalty + c.frequency_penalty * n as f32;
                }
            }
        }
        if c.temperature == 0.0 {
            return Ok(argmax(logits));
        }
        // Candidates; NaN and -inf logits never win.
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan() && **l != f32::NEG_INFINITY)
            .map(|(i, &l)| (i as u32, l))
            .collect();
        if cand.is_empty() {
            return Err(Error::Invalid(
                "every token is banned (all logits are -inf or NaN)".into(),
            ));
        }
        let desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        if c.top_k > 0 && c.top_k < cand.len() {
            cand.select_nth_unstable_by(c.top_k - 1, desc);
            cand.truncate(c.top_k);
        }
        // top-p and min-p look at probabilities at temperature 1 over the remaining tokens (as
        // llama.cpp's default chain). Neither needs a full sort: min-p is a threshold, and top-p
        // sorts a growing prefix (64, 256, ... tokens) until it holds the wanted mass, so a
        // 262k vocabulary costs a few linear passes, not an n log n sort per token.
        if c.top_p < 1.0 || c.min_p > 0.0 {
            let max = cand.iter().fold(f32::NEG_INFINITY, |m, x| m.max(x.1)) as f64;
            let z: f64 = cand.iter().map(|x| (x.1 as f64 - max).exp()).sum();
            if c.min_p > 0.0 {
                // p >= min_p * p_max  <=>  logit >= max + ln(min_p)
                let floor = max + (c.min_p as f64).ln();
                cand.retain(|x| x.1 as f64 >= floor);
            }
            if c.top_p < 1.0 {
                let mut n = 64.min(cand.len());
                loop {
                    if n < cand.len() {
                        cand.select_nth_unstable_by(n - 1, desc);
                    }
                    cand[..n].sort_unstable_by(desc);
                    let mut acc = 0.0;
                    let hit = cand[..n].iter().position(|x| {
                        acc += (x.1 as f64 - max).exp() / z;
                        acc >= c.top_p as f64
                    });
                    if let Some(i) = hit {
                        cand.truncate(i + 1);
                        break;
                    }
                    if n == cand.len() {
                        break;
                    }
                    n = (n * 4).min(cand.len());
                }
            }
        }
        let probs = softmax(&cand, c.temperature);
        debug_assert!(!probs.is_empty());
        let r = self.next_f64();
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if r < acc {
                return Ok(cand[i].0);
            }
        }
        Ok(cand[cand.len() - 1].0)
    }
}

fn softmax(cand: &[(u32, f32)], temperature: f32) -> Vec<f64> {
    let max = cand.iter().fold(f32::NEG_INFINITY, |m, x| m.max(x.1)) as f64;
    let t = temperature as f64;
    let e: Vec<f64> = cand
        .iter()
        .map(|&(_, l)| ((l as f64 - max) / t).exp())
        .collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// Index of the largest logit (the first on ties; NaN never wins; 0 when every logit is NaN
/// or the slice is empty).
///
/// Two passes: the maximum with sixteen independent lanes (vectorises; a vocabulary of 150K
/// logits took a tenth of a millisecond per token one compare-and-branch at a time), then the
/// first position holding it.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = logits.chunks_exact(16);
    let mut max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for c in chunks {
        for j in 0..16 {
            lanes[j] = lanes[j].max(c[j]);
        }
    }
    max = lanes.iter().fold(max, |m, &x| m.max(x));
    logits.iter().position(|&x| x == max).unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(f: impl FnOnce(&mut SamplerConfig)) -> Sampler {
        let mut c = SamplerConfig::default();
        f(&mut c);
        Sampler::new(c).unwrap()
    }

    #[test]
    fn argmax_takes_the_first_maximum_and_skips_nan() {
        let mut v: Vec<f32> = (0..37).map(|i| (i % 7) as f32).collect();
        assert_eq!(argmax(&v), 6);
        v[20] = f32::NAN;
        v[35] = 9.0; // in the part after the last full chunk of 16
        assert_eq!(argmax(&v), 35);
        v[3] = 9.0;
        assert_eq!(argmax(&v), 3);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY, -1.0]), 1);
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = sampler(|_| {});
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0], &[]).unwrap(), 1);
    }

    #[test]
    fn repetition_penalty_changes_the_winner() {
        let mut s = sampler(|c| c.repetition_penalty = 2.0);
        // 3.0 / 2 = 1.5 < 2.0
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0], &[1]).unwrap(), 2);
    }

    #[test]
    fn logit_bias_can_ban() {
        let mut s = sampler(|c| c.logit_bias = vec![(1, f32::NEG_INFINITY)]);
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0], &[]).unwrap(), 2);
    }

    #[test]
    fn top_k_one_is_greedy_at_any_temperature() {
        let mut s = sampler(|c| {
            c.temperature = 5.0;
            c.top_k = 1;
        });
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [0.1, 3.0, 2.0, 2.9], &[]).unwrap(), 1);
        }
    }

    #[test]
    fn frequencies_follow_the_softmax() {
        // logits ln(1), ln(2), ln(3), ln(4): probabilities 0.1, 0.2, 0.3, 0.4.
        let logits: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0].iter().map(|v| v.ln()).collect();
        let mut s = sampler(|c| {
            c.temperature = 1.0;
            c.seed = 7;
        });
        let mut counts = [0usize; 4];
        let n = 40_000;
        for _ in 0..n {
            counts[s.sample(&mut logits.clone(), &[]).unwrap() as usize] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let p = c as f64 / n as f64;
            let want = (i + 1) as f64 / 10.0;
            assert!((p - want).abs() < 0.01, "token {i}: {p} vs {want}");
        }
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        let logits: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0].iter().map(|v| v.ln()).collect();
        // top-p 0.7: {4, 3} reach 0.7, so tokens 0 and 1 never appear.
        let mut s = sampler(|c| {
            c.temperature = 1.0;
            c.top_p = 0.7;
        });
        for _ in 0..2000 {
            assert!(s.sample(&mut logits.clone(), &[]).unwrap() >= 2);
        }
        // min-p 0.6: keeps tokens with p >= 0.24: {0.3, 0.4}.
        let mut s = sampler(|c| {
            c.temperature = 1.0;
            c.min_p = 0.6;
        });
        for _ in 0..2000 {
            assert!(s.sample(&mut logits.clone(), &[]).unwrap() >= 2);
        }
    }

    #[test]
    fn top_p_over_a_large_vocabulary() {
        // p_i proportional to i + 1 over 1000 tokens: top-p 0.5 keeps the largest ids whose
        // mass reaches one half (more than the first prefix of 64 the sampler sorts).
        let logits: Vec<f32> = (0..1000).map(|i| ((i + 1) as f32).ln()).collect();
        let total: f64 = (1..=1000).map(|v| v as f64).sum();
        let (mut acc, mut smallest_kept) = (0.0, 0);
        for i in (0..1000).rev() {
            acc += (i + 1) as f64 / total;
            if acc >= 0.5 {
                smallest_kept = i;
                break;
            }
        }
        let mut s = sampler(|c| {
            c.temperature = 1.0;
            c.top_p = 0.5;
            c.seed = 1;
        });
        let mut lowest = u32::MAX;
        for _ in 0..3000 {
            lowest = lowest.min(s.sample(&mut logits.clone(), &[]).unwrap());
        }
        assert!(lowest >= smallest_kept as u32, "{lowest} < {smallest_kept}");
        assert!(
            lowest < smallest_kept as u32 + 20,
            "the kept set looks too small: {lowest}"
        );
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits = vec![0.5f32, 0.4, 0.3, 0.2, 0.1];
        let run = || {
            let mut s = sampler(|c| {
                c.temperature = 1.0;
                c.seed = 42;
            });
            (0..20)
                .map(|_| s.sample(&mut logits.clone(), &[]).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn bad_parameters_are_errors() {
        for f in [
            |c: &mut SamplerConfig| c.temperature = -1.0,
            |c: &mut SamplerConfig| c.top_p = 0.0,
            |c: &mut SamplerConfig| c.min_p = 2.0,
            |c: &mut SamplerConfig| c.repetition_penalty = 0.0,
        ] {
            let mut c = SamplerConfig::default();
            f(&mut c);
            assert!(Sampler::new(c).is_err());
        }
    }
}
