//! The generation loop: chunked prefill, then one token per step, with a prompt cache that
//! keeps the KV entries of the longest common prefix across calls (chat turns re-send the
//! history; only the new part is computed).

use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::model::Model;
use crate::sample::{Sampler, SamplerConfig};
use std::time::Instant;
use tessera_core::{Array, Dtype};

/// Options of one generation call.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Tokens that end generation (not emitted).
    pub stop_ids: Vec<u32>,
    /// Prompt tokens run per forward pass during prefill (bounds activation memory).
    pub prefill_chunk: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampler: SamplerConfig::default(),
            stop_ids: Vec::new(),
            prefill_chunk: 512,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token.
    Stop,
    /// `max_tokens` reached, or the context is full.
    Length,
    /// The token callback asked to stop (a stop string, a closed connection).
    Callback,
}

/// Counts and timings of one call.
#[derive(Clone, Debug)]
pub struct GenerationStats {
    /// Prompt tokens given.
    pub prompt_tokens: usize,
    /// Of those, tokens whose KV entries were reused from the previous call.
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
    pub finish: FinishReason,
}

impl GenerationStats {
    /// Prompt tokens computed per second.
    pub fn prefill_tps(&self) -> f64 {
        (self.prompt_tokens - self.reused_tokens) as f64 / self.prefill_secs.max(1e-9)
    }

    /// Generated tokens per second, first token (timed with the prefill) excluded.
    pub fn decode_tps(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_secs.max(1e-9)
    }
}

/// A model with its cache and the tokens the cache holds.
pub struct Generator<'m> {
    pub model: &'m Model,
    cache: KvCache,
    tokens: Vec<u32>,
}

impl<'m> Generator<'m> {
    /// A generator whose context holds up to `max_len` tokens.
    pub fn new(model: &'m Model, max_len: usize) -> Generator<'m> {
        Generator {
            model,
            cache: model.new_cache(max_len),
            tokens: Vec::new(),
        }
    }

    /// A generator over a cache made by the caller (e.g. an 8-bit one, see
    /// [`KvCache::quantized_8bit`]).
    pub fn with_cache(model: &'m Model, cache: KvCache) -> Generator<'m> {
        Generator {
            model,
            cache,
            tokens: Vec::new(),
        }
    }

    /// Tokens currently in the context.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forgets the context.
    pub fn reset(&mut self) {
        self.cache.truncate(0);
        self.tokens.clear();
    }

    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// Runs `tokens` through the model at the current position; returns the last position's
    /// logits as a host vector.
    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let ids = Array::from_vec(
            tokens.iter().map(|&t| t as i32).collect(),
            &[1, tokens.len()],
        )?;
        let logits = self.model.forward(&ids, &mut self.cache, true)?;
        let logits = tessera_core::ops::astype(&logits, Dtype::F32)?;
        self.tokens.extend_from_slice(tokens);
        Ok(logits.to_vec::<f32>()?)
    }

    /// Feeds `prompt` (reusing the cached common prefix) and returns the logits after it.
    pub fn prefill(&mut self, prompt: &[u32], chunk: usize) -> Result<(Vec<f32>, usize)> {
        if prompt.is_empty() {
            return Err(Error::Invalid("the prompt is empty".into()));
        }
        let vocab = self.model.config.vocab_size as u32;
        if let Some(&bad) = prompt.iter().find(|&&t| t >= vocab) {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        if prompt.len() > self.cache.max_len() {
            return Err(Error::Invalid(format!(
                "the prompt has {} tokens, the context holds {}",
                prompt.len(),
                self.cache.max_len()
            )));
        }
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        // Recompute at least the last prompt token: its logits are needed.
        let reuse = self.cache.reusable(common.min(prompt.len() - 1));
        self.cache.truncate(reuse);
        self.tokens.truncate(reuse);
        // Room for the whole prompt at once: the chunks then do not copy the cache as it grows.
        self.cache.reserve(prompt.len());
        let mut logits = Vec::new();
        for part in prompt[reuse..].chunks(chunk.max(1)) {
            logits = self.step(part)?;
        }
        Ok((logits, reuse))
    }

    /// Generates up to `opts.max_tokens` tokens after `prompt`, calling `on_token` with each
    /// (return false to stop early).
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32) -> bool,
    ) -> Result<(Vec<u32>, GenerationStats)> {
        let mut sampler = Sampler::new(opts.sampler.clone())?;
        let t0 = Instant::now();
        let (mut logits, reused) = self.prefill(prompt, opts.prefill_chunk)?;
        let mut out = Vec::new();
        let mut history: Vec<u32> = prompt.to_vec();
        let mut finish = FinishReason::Length;
        let mut prefill_secs = 0.0;
        let mut t1 = Instant::now();
        while out.len() < opts.max_tokens {
            let tok = sampler.sample(&mut logits, &history)?;
            if out.is_empty() {
                // The first token's time belongs to the prompt (time to first token).
                prefill_secs = t0.elapsed().as_secs_f64();
                t1 = Instant::now();
            }
            if opts.stop_ids.contains(&tok) {
                finish = FinishReason::Stop;
                break;
            }
            out.push(tok);
            history.push(tok);
            if !on_token(tok) {
                finish = FinishReason::Callback;
                break;
            }
            if out.len() == opts.max_tokens || self.tokens.len() >= self.cache.max_len() {
                break;
            }
            logits = self.step(&[tok])?;
        }
        if out.is_empty() && prefill_secs == 0.0 {
            prefill_secs = t0.elapsed().as_secs_f64();
        }
        let stats = GenerationStats {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            generated_tokens: out.len(),
            prefill_secs,
            decode_secs: t1.elapsed().as_secs_f64(),
            finish,
        };
        Ok((out, stats))
    }
}
