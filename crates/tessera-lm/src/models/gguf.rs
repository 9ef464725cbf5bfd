//! Model configuration from GGUF metadata (`{arch}.block_count`, `{arch}.attention.*`, ...), with
//! the per-family conventions llama.cpp's converter bakes into the file.

use crate::config::{Activation, Arch, ModelConfig, RopeConfig, RopeStyle};
use crate::error::{Error, Result};
use tessera_io::gguf::GgufFile;

/// The configuration of the model in a GGUF file.
pub fn config_from_gguf(f: &GgufFile) -> Result<ModelConfig> {
    let md = &f.metadata;
    let arch_name = md.str("general.architecture")?;
    let arch = Arch::from_name(arch_name)?;
    let key = |k: &str| format!("{arch_name}.{k}");
    let hidden = md.usize(&key("embedding_length"))?;
    let heads = md.usize(&key("attention.head_count"))?;
    if heads == 0 {
        return Err(Error::Config("attention.head_count is 0".into()));
    }
    let kv_heads = md
        .usize_opt(&key("attention.head_count_kv"))?
        .unwrap_or(heads);
    let head_dim = md
        .usize_opt(&key("attention.key_length"))?
        .unwrap_or(hidden / heads);
    let rope_dims = md
        .usize_opt(&key("rope.dimension_count"))?
        .unwrap_or(head_dim);
    let vocab_size = match md.usize_opt(&key("vocab_size"))? {
        Some(v) => v,
        None => md.array("tokenizer.ggml.tokens")?.len(),
    };
    let style = match arch {
        // llama.cpp's converter permutes Llama q/k rows into adjacent pairs.
        Arch::Llama => RopeStyle::Interleaved,
        _ => RopeStyle::Half,
    };
    let linear_factor = match md.str_opt(&key("rope.scaling.type"))? {
        Some("linear") => md.f64_opt(&key("rope.scaling.factor"))?.unwrap_or(1.0),
        _ => 1.0,
    };
    // Frequency scaling stored as F32 tensors of per-frequency divisors: Llama 3.x's
    // `rope_freqs`, LongRoPE's `rope_factors_short` / `rope_factors_long` (Phi-3 128k).
    let factors = |name: &str| -> Result<Option<Vec<f32>>> {
        let Some(info) = f.info(name) else {
            return Ok(None);
        };
        if info.ggml_type != tessera_core::quant::GgmlType::F32 {
            return Err(Error::Unsupported(format!("{name} must be F32")));
        }
        Ok(Some(
            f.tensor_bytes(name)?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ))
    };
    let long_factors = factors("rope_factors_long.weight")?;
    let freq_factors = match factors("rope_factors_short.weight")? {
        Some(short) => Some(short),
        None => factors("rope_freqs.weight")?,
    };
    let context_length = md.usize_opt(&key("context_length"))?.unwrap_or(4096);
    let original_context = md.usize_opt(&key("rope.scaling.original_context_length"))?;
    let attn_factor = match md.f64_opt(&key("rope.scaling.attn_factor"))? {
        Some(a) if a > 0.0 => a,
        _ if long_factors.is_some() => {
            let orig = original_context.unwrap_or(context_length);
            crate::models::hf::longrope_attn_factor(
                context_length as f64 / orig.max(1) as f64,
                orig,
            )
        }
        _ => 1.0,
    };
    let is_gemma3 = arch == Arch::Gemma3;
    let cfg = ModelConfig {
        arch,
        vocab_size,
        hidden,
        layers: md.usize(&key("block_count"))?,
        heads,
        kv_heads,
        head_dim,
        ffn: md.usize(&key("feed_forward_length"))?,
        norm_eps: md
            .f64_opt(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5),
        rope: RopeConfig {
            base: md.f64_opt(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            dims: rope_dims,
            style,
            linear_factor: if linear_factor > 0.0 {
                linear_factor
            } else {
                1.0
            },
            freq_factors,
            original_context: long_factors.as_ref().and(original_context),
            long_factors,
            attn_factor,
        },
        // Gemma 3's local layers keep the original base (hard-coded in the reference too).
        rope_local_base: is_gemma3.then_some(10_000.0),
        context_length,
        sliding_window: md.usize_opt(&key("attention.sliding_window"))?,
        sliding_pattern: is_gemma3.then_some(6),
        activation: if is_gemma3 {
            Activation::GeluTanh
        } else {
            Activation::Silu
        },
        embed_scale: is_gemma3,
        post_norms: is_gemma3,
        qk_norm: matches!(arch, Arch::Gemma3 | Arch::Qwen3),
        attn_scale: 1.0 / (head_dim as f64).sqrt(),
        final_logit_softcap: md.f64_opt(&key("final_logit_softcapping"))?,
    };
    cfg.validate()?;
    Ok(cfg)
}
