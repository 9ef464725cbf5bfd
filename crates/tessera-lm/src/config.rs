//! One configuration type for every supported architecture. The families differ in a handful of
//! switches (rope style, biases, q/k norms, post-norms, gated activation, sliding windows), so a
//! single transformer implementation reads these flags instead of one copy per family.

use crate::error::{Error, Result};

/// The supported families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3/3.x, SmolLM, TinyLlama, Mistral.
    Llama,
    Qwen2,
    Qwen3,
    Gemma3,
    Phi3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
            Arch::Phi3 => "phi3",
        }
    }

    /// The family for a GGUF `general.architecture` or a Hugging Face `model_type`.
    pub fn from_name(name: &str) -> Result<Arch> {
        Ok(match name {
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma3" | "gemma3_text" => Arch::Gemma3,
            "phi3" => Arch::Phi3,
            other => {
                return Err(Error::Unsupported(format!(
                    "architecture '{other}' (supported: llama, mistral, qwen2, qwen3, gemma3, phi3)"
                )));
            }
        })
    }
}

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (`x[2i]`, `x[2i+1]`): llama.cpp's "normal" rope, used for Llama GGUF files
    /// (the converter permutes q/k weights to it).
    Interleaved,
    /// First half with second half (`x[i]`, `x[i+d/2]`): GPT-NeoX / Hugging Face `rotate_half`.
    Half,
}

/// Rotary embedding parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub base: f64,
    /// Rotated dims per head (the rest pass through).
    pub dims: usize,
    pub style: RopeStyle,
    /// Linear position scaling (positions divided by this).
    pub linear_factor: f64,
    /// Per-frequency divisors (Llama 3 scaling; LongRoPE's short factors), length dims/2.
    pub freq_factors: Option<Vec<f32>>,
    /// LongRoPE (Phi-3 128k, Phi-3.5): divisors used instead of `freq_factors` when the
    /// context in use is longer than `original_context`, as llama.cpp decides.
    pub long_factors: Option<Vec<f32>>,
    /// The pretraining context LongRoPE extends.
    pub original_context: Option<usize>,
    /// Scale of cos and sin (LongRoPE's attention factor); 1 otherwise.
    pub attn_factor: f64,
}

/// The feed-forward activation of a gated MLP (`Silu` or `GeluTanh`): the core's enum, which
/// the fused gated product takes as it is.
pub use tessera_core::GateActivation as Activation;

/// Everything the shared transformer needs to know about a model.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub norm_eps: f64,
    pub rope: RopeConfig,
    /// Rope base for sliding-window layers when it differs (Gemma 3: 10 000).
    pub rope_local_base: Option<f64>,
    pub context_length: usize,
    /// Sliding-window size for local layers.
    pub sliding_window: Option<usize>,
    /// Every `n`-th layer (the last of each group) is global, the others local. `None` with a
    /// window: every layer is local (Mistral).
    pub sliding_pattern: Option<usize>,
    pub activation: Activation,
    /// Multiply embeddings by sqrt(hidden) (Gemma).
    pub embed_scale: bool,
    /// Extra RMSNorms after attention and MLP outputs (Gemma 2/3).
    pub post_norms: bool,
    /// Per-head RMSNorm of queries and keys (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Attention score scale (default 1/sqrt(head_dim)).
    pub attn_scale: f64,
    /// tanh soft-capping of final logits (Gemma 2).
    pub final_logit_softcap: Option<f64>,
}

impl ModelConfig {
    /// Whether layer `i` attends only within the sliding window.
    pub fn is_local_layer(&self, i: usize) -> bool {
        match (self.sliding_window, self.sliding_pattern) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(_), Some(p)) => !(i + 1).is_multiple_of(p.max(1)),
        }
    }

    /// Checks the numbers fit together (a malformed file must not cause a panic later).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.hidden == 0 || self.layers == 0 || self.heads == 0 || self.kv_heads == 0 {
            return bad(format!(
                "hidden {}, layers {}, heads {}, kv heads {} must all be positive",
                self.hidden, self.layers, self.heads, self.kv_heads
            ));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!(
                "{} query heads are not a multiple of {} kv heads",
                self.heads, self.kv_heads
            ));
        }
        if self.head_dim == 0 || self.rope.dims > self.head_dim || !self.rope.dims.is_multiple_of(2)
        {
            return bad(format!(
                "rope dims {} must be even and at most the head dim {}",
                self.rope.dims, self.head_dim
            ));
        }
        if let Some(f) = &self.rope.long_factors
            && f.len() != self.rope.dims / 2
        {
            return Err(Error::Config(format!(
                "{} long rope factors for {} rotated dims (expected {})",
                f.len(),
                self.rope.dims,
                self.rope.dims / 2
            )));
        }
        if let Some(f) = &self.rope.freq_factors
            && f.len() != self.rope.dims / 2
        {
            return bad(format!(
                "{} rope frequency factors for {} rotated dims (expected {})",
                f.len(),
                self.rope.dims,
                self.rope.dims / 2
            ));
        }
        if self.sliding_pattern == Some(0) || self.sliding_window == Some(0) {
            return bad("the sliding window and its layer pattern must be positive".into());
        }
        if self.vocab_size == 0 {
            return bad("vocabulary size is 0".into());
        }
        Ok(())
    }
}
