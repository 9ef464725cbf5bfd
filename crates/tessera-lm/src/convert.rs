//! `tessera quantize`: a GGUF model rewritten as an MLX-style affine-quantized checkpoint
//! directory: `config.json` (Hugging Face fields plus `"quantization": {group_size, bits}`),
//! `model.safetensors` (`<name>.weight` packed u32, `.scales`, `.biases`, Hugging Face names)
//! and `tokenizer.gguf` (the GGUF's tokenizer and chat template, tensor-free, since tessera does
//! not read `tokenizer.json` yet).
//!
//! Conventions are undone on the way: Llama q/k rows go back from llama.cpp's adjacent-pair
//! order to Hugging Face's half-split order, and Gemma norms from `1 + w` to `w`.

use crate::config::Arch;
use crate::error::{Error, Result};
use crate::models::hf::{config_to_hf, hf_tensor_name};
use std::path::Path;
use tessera_core::{Array, Dtype, ops};
use tessera_io::gguf::{GgufFile, GgufWriter};

/// Rows of each head back from adjacent pairs (2j, 2j+1) to halves (j, hd/2 + j).
fn unpermute(w: &Array, heads: usize) -> Result<Array> {
    let (rows, cols) = (w.shape()[0], w.shape().get(1).copied().unwrap_or(1));
    let hd = rows / heads.max(1);
    let x = ops::reshape(w, &[heads, hd / 2, 2, cols])?;
    let x = ops::transpose(&x, Some(&[0, 2, 1, 3]))?;
    Ok(ops::reshape(&ops::contiguous(&x)?, w.shape())?)
}

/// Writes the quantized checkpoint of the GGUF model at `input` into `out_dir` (created).
/// `progress(done, total, tensor_name)` is called per tensor.
pub fn quantize_gguf(
    input: &Path,
    out_dir: &Path,
    group_size: usize,
    bits: u32,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<()> {
    if ![32, 64, 128].contains(&group_size) || !(2..=8).contains(&bits) || bits == 7 {
        return Err(Error::Invalid(format!(
            "--bits must be 2, 3, 4, 5, 6 or 8 and --group-size 32, 64 or 128 (got {bits} and {group_size})"
        )));
    }
    let f = GgufFile::open(input)?;
    let cfg = crate::models::gguf::config_from_gguf(&f)?;
    let tied = f.info("output.weight").is_none();
    let mut out: Vec<(String, Array)> = Vec::new();
    let total = f.tensors.len();
    for (i, t) in f.tensors.iter().enumerate() {
        progress(i, total, &t.name);
        if matches!(
            t.name.as_str(),
            "rope_freqs.weight" | "rope_factors_long.weight" | "rope_factors_short.weight"
        ) {
            continue; // kept in config.json (rope_freq_factors, or rope_scaling for LongRoPE)
        }
        let hf = hf_tensor_name(&t.name, cfg.arch, "model.").ok_or_else(|| {
            Error::Unsupported(format!(
                "tensor '{}' has no Hugging Face counterpart",
                t.name
            ))
        })?;
        let raw = f.tensor(&t.name)?;
        let mut a = if t.ggml_type.is_quantized() {
            let k = t.shape.last().copied().unwrap_or(0);
            ops::reshape(&ops::gguf_dequantize(&raw, t.ggml_type, k)?, &t.shape)?
        } else {
            ops::astype(&raw, Dtype::F32)?
        };
        if cfg.arch == Arch::Llama {
            if t.name.ends_with("attn_q.weight") {
                a = unpermute(&a, cfg.heads)?;
            } else if t.name.ends_with("attn_k.weight") {
                a = unpermute(&a, cfg.kv_heads)?;
            }
        }
        if cfg.arch == Arch::Gemma3 && t.name.ends_with("norm.weight") {
            a = ops::subtract(&a, &Array::scalar(1.0f32))?;
        }
        let quantizable = a.ndim() == 2 && a.shape()[1] % group_size == 0;
        if quantizable {
            let (q, s, b) = ops::quantize(&a, group_size, bits)?;
            let stem = hf.trim_end_matches(".weight");
            tessera_core::eval(&[q.clone(), s.clone(), b.clone()])?;
            out.push((format!("{stem}.scales"), s));
            out.push((format!("{stem}.biases"), b));
            out.push((hf, q));
        } else {
            let a = ops::contiguous(&a)?;
            a.eval()?;
            out.push((hf, a));
        }
    }
    progress(total, total, "");
    std::fs::create_dir_all(out_dir)
        .map_err(|e| Error::Invalid(format!("cannot create {}: {e}", out_dir.display())))?;
    let refs: Vec<(&str, &Array)> = out.iter().map(|(n, a)| (n.as_str(), a)).collect();
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("format".to_string(), "mlx".to_string());
    tessera_io::safetensors::save(out_dir.join("model.safetensors"), &refs, &meta)?;

    let mut config = config_to_hf(&cfg, tied);
    config["quantization"] = serde_json::json!({"group_size": group_size, "bits": bits});
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| Error::Invalid(format!("config.json: {e}")))?;
    std::fs::write(out_dir.join("config.json"), text)
        .map_err(|e| Error::Invalid(format!("cannot write config.json: {e}")))?;

    let mut tok = GgufWriter::new();
    for (k, v) in f.metadata.iter() {
        if k.starts_with("tokenizer.") || k == "general.architecture" || k == "general.name" {
            tok.metadata.insert(k, v.clone());
        }
    }
    tok.write(out_dir.join("tokenizer.gguf"))?;
    Ok(())
}
