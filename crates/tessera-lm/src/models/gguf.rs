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
    // Llama 3.x stores its frequency scaling as a tensor of per-frequency divisors.
    let freq_factors = if f.info("rope_freqs.weight").is_some() {
        let bytes = f.tensor_bytes("rope_freqs.weight")?;
        if f.info("rope_freqs.weight").map(|i| i.ggml_type)
            != Some(tessera_core::quant::GgmlType::F32)
        {
            return Err(Error::Unsupported("rope_freqs.weight must be F32".into()));
        }
        Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    } else {
        None
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
        },
        // Gemma 3's local layers keep the original base (hard-coded in the reference too).
        rope_local_base: is_gemma3.then_some(10_000.0),
        context_length: md.usize_opt(&key("context_length"))?.unwrap_or(4096),
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
