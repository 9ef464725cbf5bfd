//! Hugging Face checkpoints: `config.json` into a [`ModelConfig`], and the safetensors tensor
//! names mapped onto the GGUF-style names the shared transformer uses.
//!
//! Conventions handled here: HF rope rotates halves (`rotate_half`), Gemma stores RMSNorm
//! weights as `w` for a scale of `1 + w`, Gemma 3 multimodal checkpoints nest the text model
//! under `language_model`, Phi-3 fuses `qkv_proj` and `gate_up_proj`, and Llama 3 rope scaling
//! becomes per-frequency divisors.

use crate::config::{Activation, Arch, ModelConfig, RopeConfig, RopeStyle};
use crate::error::{Error, Result};
use crate::weights::{Weight, WeightSource};
use serde_json::Value;
use std::path::Path;
use tessera_core::{Array, Dtype, ops};
use tessera_io::safetensors::Safetensors;

fn cfg_err(m: impl Into<String>) -> Error {
    Error::Config(m.into())
}

fn get_usize(c: &Value, k: &str) -> Result<Option<usize>> {
    match c.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|v| Some(v as usize))
            .ok_or_else(|| cfg_err(format!("config.json: '{k}' must be a non-negative integer"))),
    }
}

fn need_usize(c: &Value, k: &str) -> Result<usize> {
    get_usize(c, k)?.ok_or_else(|| cfg_err(format!("config.json lacks '{k}'")))
}

fn get_f64(c: &Value, k: &str) -> Result<Option<f64>> {
    match c.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| cfg_err(format!("config.json: '{k}' must be a number"))),
    }
}

/// Llama 3 rope scaling as per-frequency divisors (the same numbers llama.cpp's converter writes
/// to `rope_freqs.weight`).
fn llama3_factors(s: &Value, base: f64, dims: usize) -> Result<Vec<f32>> {
    let factor = get_f64(s, "factor")?.unwrap_or(8.0);
    let low = get_f64(s, "low_freq_factor")?.unwrap_or(1.0);
    let high = get_f64(s, "high_freq_factor")?.unwrap_or(4.0);
    let old = get_f64(s, "original_max_position_embeddings")?.unwrap_or(8192.0);
    let (low_wl, high_wl) = (old / low, old / high);
    Ok((0..dims / 2)
        .map(|i| {
            let freq = base.powf(-((2 * i) as f64) / dims as f64);
            let wl = 2.0 * std::f64::consts::PI / freq;
            if wl < high_wl {
                1.0
            } else if wl > low_wl {
                factor as f32
            } else {
                let smooth = (old / wl - low) / (high - low);
                let new = (1.0 - smooth) * freq / factor + smooth * freq;
                (freq / new) as f32
            }
        })
        .collect())
}

/// The configuration in a Hugging Face `config.json`.
pub fn config_from_hf(c: &Value) -> Result<ModelConfig> {
    let model_type = c
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| cfg_err("config.json lacks 'model_type'"))?;
    // Multimodal Gemma 3 keeps the language model's settings under text_config.
    let c = match c.get("text_config") {
        Some(t) if t.is_object() => t,
        _ => c,
    };
    let arch = Arch::from_name(model_type)?;
    let hidden = need_usize(c, "hidden_size")?;
    let heads = need_usize(c, "num_attention_heads")?;
    if heads == 0 {
        return Err(cfg_err("num_attention_heads is 0"));
    }
    let head_dim = get_usize(c, "head_dim")?.unwrap_or(hidden / heads);
    let partial = get_f64(c, "partial_rotary_factor")?.unwrap_or(1.0);
    let rope_dims = ((head_dim as f64 * partial) as usize) & !1;
    let base = get_f64(c, "rope_theta")?.unwrap_or(10_000.0);
    let mut linear_factor = 1.0;
    let mut freq_factors = None;
    let mut long_factors = None;
    let mut original_context = None;
    let mut attn_factor = 1.0;
    if let Some(s) = c.get("rope_scaling").filter(|s| s.is_object()) {
        let kind = s
            .get("rope_type")
            .or_else(|| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        match kind {
            "default" => {}
            "linear" => linear_factor = get_f64(s, "factor")?.unwrap_or(1.0),
            "llama3" => freq_factors = Some(llama3_factors(s, base, rope_dims)?),
            // LongRoPE (Phi-3 128k / Phi-3.5): transformers' `_compute_longrope_parameters`.
            "longrope" | "su" => {
                let factors = |k: &str| -> Result<Vec<f32>> {
                    s.get(k)
                        .and_then(Value::as_array)
                        .and_then(|a| a.iter().map(|x| x.as_f64().map(|x| x as f32)).collect())
                        .ok_or_else(|| {
                            cfg_err(format!("rope_scaling.{k} must be a list of numbers"))
                        })
                };
                freq_factors = Some(factors("short_factor")?);
                long_factors = Some(factors("long_factor")?);
                let max_pos = get_usize(c, "max_position_embeddings")?;
                let orig = get_usize(c, "original_max_position_embeddings")?
                    .or(get_usize(s, "original_max_position_embeddings")?)
                    .or(max_pos)
                    .ok_or_else(|| cfg_err("longrope needs original_max_position_embeddings"))?;
                original_context = Some(orig);
                attn_factor = match get_f64(s, "attention_factor")? {
                    Some(a) => a,
                    None => {
                        let factor = max_pos.unwrap_or(orig) as f64 / orig.max(1) as f64;
                        longrope_attn_factor(factor, orig)
                    }
                };
            }
            other => {
                return Err(Error::Unsupported(format!("rope scaling type '{other}'")));
            }
        }
    }
    let is_gemma3 = arch == Arch::Gemma3;
    let sliding_window = if is_gemma3
        || c.get("use_sliding_window")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    {
        get_usize(c, "sliding_window")?
    } else {
        None
    };
    if let Some(f) = c.get("rope_freq_factors").and_then(Value::as_array) {
        let f: Option<Vec<f32>> = f.iter().map(|x| x.as_f64().map(|x| x as f32)).collect();
        freq_factors = Some(f.ok_or_else(|| cfg_err("rope_freq_factors must be numbers"))?);
    }
    let attn_scale = match get_f64(c, "query_pre_attn_scalar")? {
        Some(s) if s > 0.0 => 1.0 / s.sqrt(),
        _ => 1.0 / (head_dim as f64).sqrt(),
    };
    let cfg = ModelConfig {
        arch,
        vocab_size: need_usize(c, "vocab_size")?,
        hidden,
        layers: need_usize(c, "num_hidden_layers")?,
        heads,
        kv_heads: get_usize(c, "num_key_value_heads")?.unwrap_or(heads),
        head_dim,
        ffn: need_usize(c, "intermediate_size")?,
        norm_eps: get_f64(c, "rms_norm_eps")?.unwrap_or(1e-6),
        rope: RopeConfig {
            base,
            dims: rope_dims,
            style: RopeStyle::Half,
            linear_factor: if linear_factor > 0.0 {
                linear_factor
            } else {
                1.0
            },
            freq_factors,
            long_factors,
            original_context,
            attn_factor,
        },
        rope_local_base: if is_gemma3 {
            Some(get_f64(c, "rope_local_base_freq")?.unwrap_or(10_000.0))
        } else {
            None
        },
        context_length: get_usize(c, "max_position_embeddings")?.unwrap_or(4096),
        sliding_window,
        sliding_pattern: if is_gemma3 {
            Some(get_usize(c, "sliding_window_pattern")?.unwrap_or(6))
        } else {
            None
        },
        activation: if is_gemma3 {
            Activation::GeluTanh
        } else {
            Activation::Silu
        },
        embed_scale: is_gemma3,
        post_norms: is_gemma3,
        qk_norm: matches!(arch, Arch::Gemma3 | Arch::Qwen3),
        attn_scale,
        final_logit_softcap: get_f64(c, "final_logit_softcapping")?,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The parsed `config.json` of a model directory.
pub fn read_config(dir: &Path) -> Result<Value> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::Config(format!(
            "{}: {e} (a model directory needs config.json)",
            path.display()
        ))
    })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Config(format!("{}: not valid JSON: {e}", path.display())))
}

/// A Hugging Face checkpoint's tensors under GGUF-style names.
pub struct HfSource {
    pub st: Safetensors,
    prefix: String,
    arch: Arch,
    tied: bool,
    /// MLX quantization (`"quantization": {"group_size", "bits"}` in config.json).
    quant: Option<(usize, u32)>,
}

impl HfSource {
    /// Opens the safetensors of a model directory.
    pub fn open(dir: &Path, config: &Value, arch: Arch) -> Result<HfSource> {
        let st = Safetensors::open(dir)?;
        let prefix = if st
            .info("model.language_model.embed_tokens.weight")
            .is_some()
        {
            "model.language_model."
        } else if st
            .info("language_model.model.embed_tokens.weight")
            .is_some()
        {
            "language_model.model."
        } else {
            "model."
        }
        .to_string();
        let tied = config
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let quant = match config
            .get("quantization")
            .or_else(|| config.get("quantization_config"))
        {
            Some(q) if q.get("bits").is_some() => {
                let bits = get_usize(q, "bits")?.unwrap_or(4) as u32;
                let group = get_usize(q, "group_size")?.unwrap_or(64);
                Some((group, bits))
            }
            _ => None,
        };
        Ok(HfSource {
            st,
            prefix,
            arch,
            tied,
            quant,
        })
    }

    /// The HF name for a GGUF-style name, or None when the model has no such tensor.
    fn hf_name(&self, name: &str) -> Option<String> {
        if self.tied && name.starts_with("output.") {
            return None;
        }
        hf_tensor_name(name, self.arch, &self.prefix)
    }

    fn lookup(&self, name: &str) -> Result<Array> {
        let hf = self
            .hf_name(name)
            .ok_or_else(|| cfg_err(format!("no Hugging Face tensor for '{name}'")))?;
        self.st.tensor(&hf).map_err(|_| {
            cfg_err(format!(
                "tensor '{hf}' (for '{name}') is missing from the checkpoint"
            ))
        })
    }
}

impl WeightSource for HfSource {
    fn has(&self, name: &str) -> bool {
        self.hf_name(name)
            .is_some_and(|n| self.st.info(&n).is_some())
    }

    fn matrix(&self, name: &str) -> Result<Weight> {
        if let Some((group_size, bits)) = self.quant {
            // MLX layout: `<name>.weight` packed u32 with `<name>.scales` and `<name>.biases`.
            let scales_name = name.replace(".weight", ".scales");
            if let Some(hf) = self
                .hf_name(&scales_name)
                .filter(|n| self.st.info(n).is_some())
            {
                let biases = self
                    .st
                    .tensor(&hf.replace(".scales", ".biases"))
                    .map_err(|_| cfg_err(format!("'{hf}' has no matching .biases tensor")))?;
                return Ok(Weight::Affine {
                    packed: self.lookup(name)?,
                    scales: self.st.tensor(&hf)?,
                    biases,
                    group_size,
                    bits,
                });
            }
        }
        let t = self.lookup(name)?;
        if t.ndim() != 2 {
            return Err(cfg_err(format!(
                "'{name}' should be a matrix, has shape {:?}",
                t.shape()
            )));
        }
        Ok(Weight::Dense(t))
    }

    fn vector(&self, name: &str) -> Result<Array> {
        let t = ops::astype(&self.lookup(name)?, Dtype::F32)?;
        // Gemma's RMSNorm scales by (1 + w); GGUF files store 1 + w already.
        let is_norm = name.ends_with("norm.weight");
        let t = if self.arch == Arch::Gemma3 && is_norm {
            ops::add(&t, &Array::scalar(1.0f32))?
        } else {
            t
        };
        Ok(ops::contiguous(&t)?)
    }
}

/// The Hugging Face name of a GGUF-style tensor name (`blk.3.attn_q.weight` ->
/// `{prefix}layers.3.self_attn.q_proj.weight`), or None for tensors HF checkpoints do not have.
pub fn hf_tensor_name(name: &str, arch: Arch, prefix: &str) -> Option<String> {
    let p = prefix;
    let (stem, suffix) = name.rsplit_once('.')?; // weight / bias
    let mapped = match stem {
        "token_embd" => format!("{p}embed_tokens"),
        "output_norm" => format!("{p}norm"),
        "output" => "lm_head".to_string(),
        _ => {
            let rest = stem.strip_prefix("blk.")?;
            let (i, part) = rest.split_once('.')?;
            let l = format!("{p}layers.{i}.");
            let gemma = arch == Arch::Gemma3;
            let m = match part {
                "attn_norm" => "input_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_qkv" => "self_attn.qkv_proj",
                "attn_output" => "self_attn.o_proj",
                "attn_q_norm" => "self_attn.q_norm",
                "attn_k_norm" => "self_attn.k_norm",
                "post_attention_norm" if gemma => "post_attention_layernorm",
                "ffn_norm" if gemma => "pre_feedforward_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                "post_ffw_norm" => "post_feedforward_layernorm",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" if arch == Arch::Phi3 => "mlp.gate_up_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                _ => return None,
            };
            format!("{l}{m}")
        }
    };
    Some(format!("{mapped}.{suffix}"))
}

/// LongRoPE's scale of cos and sin for a context extended `factor` times beyond `original`
/// positions: `sqrt(1 + ln(factor) / ln(original))`, 1 when not extended.
pub fn longrope_attn_factor(factor: f64, original: usize) -> f64 {
    if factor <= 1.0 || original < 2 {
        1.0
    } else {
        (1.0 + factor.ln() / (original as f64).ln()).sqrt()
    }
}

/// A `config.json` (Hugging Face field names) describing `c`, so a converted checkpoint loads
/// back through [`config_from_hf`] to the same configuration. Llama 3 style frequency factors
/// are kept in a tessera-specific `rope_freq_factors` field.
pub fn config_to_hf(c: &ModelConfig, tie_word_embeddings: bool) -> Value {
    let mut v = serde_json::json!({
        "model_type": c.arch.name(),
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden,
        "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads,
        "num_key_value_heads": c.kv_heads,
        "head_dim": c.head_dim,
        "intermediate_size": c.ffn,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope.base,
        "partial_rotary_factor": c.rope.dims as f64 / c.head_dim as f64,
        "max_position_embeddings": c.context_length,
        "tie_word_embeddings": tie_word_embeddings,
        "query_pre_attn_scalar": 1.0 / (c.attn_scale * c.attn_scale),
    });
    if c.rope.linear_factor != 1.0 {
        v["rope_scaling"] =
            serde_json::json!({"rope_type": "linear", "factor": c.rope.linear_factor});
    }
    match (&c.rope.long_factors, &c.rope.freq_factors) {
        (Some(long), Some(short)) => {
            v["rope_scaling"] = serde_json::json!({
                "rope_type": "longrope",
                "short_factor": short,
                "long_factor": long,
                "original_max_position_embeddings": c.rope.original_context,
                "attention_factor": c.rope.attn_factor,
            });
        }
        (_, Some(f)) => v["rope_freq_factors"] = serde_json::json!(f),
        _ => {}
    }
    if let Some(w) = c.sliding_window {
        v["sliding_window"] = serde_json::json!(w);
        v["use_sliding_window"] = serde_json::json!(true);
    }
    if let Some(p) = c.sliding_pattern {
        v["sliding_window_pattern"] = serde_json::json!(p);
    }
    if let Some(b) = c.rope_local_base {
        v["rope_local_base_freq"] = serde_json::json!(b);
    }
    if let Some(s) = c.final_logit_softcap {
        v["final_logit_softcapping"] = serde_json::json!(s);
    }
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn longrope_config_round_trips_and_computes_its_attention_factor() {
        let short: Vec<f64> = (0..8).map(|i| 1.0 + 0.1 * i as f64).collect();
        let long: Vec<f64> = (0..8).map(|i| 1.0 + i as f64).collect();
        let c = serde_json::json!({
            "model_type": "phi3", "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 4, "intermediate_size": 128, "num_hidden_layers": 2,
            "vocab_size": 100, "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096,
            "rope_scaling": {"type": "longrope", "short_factor": short, "long_factor": long}
        });
        let cfg = config_from_hf(&c).unwrap();
        let r = &cfg.rope;
        assert_eq!(r.original_context, Some(4096));
        assert_eq!(r.long_factors.as_ref().unwrap()[7], 8.0);
        assert_eq!(r.freq_factors.as_ref().unwrap()[1], 1.1);
        // Phi-3-mini-128k: sqrt(1 + ln(32) / ln(4096)) = 1.1902...
        let expect = (1.0 + (32f64).ln() / (4096f64).ln()).sqrt();
        assert!((r.attn_factor - expect).abs() < 1e-12);
        let back = config_from_hf(&config_to_hf(&cfg, false)).unwrap();
        assert_eq!(back.rope, cfg.rope);
        // A bad factor list is a clear error.
        let mut bad = c.clone();
        bad["rope_scaling"]["long_factor"] = serde_json::json!("x");
        assert!(
            config_from_hf(&bad)
                .unwrap_err()
                .to_string()
                .contains("long_factor")
        );
    }
}
