//! `tessera quantize`: a model rewritten as an MLX-style affine-quantized checkpoint directory:
//! `config.json` (Hugging Face fields plus `"quantization": {group_size, bits}`),
//! `model.safetensors` (`<name>.weight` packed u32, `.scales`, `.biases`, Hugging Face names) and
//! the tokenizer. The input is a GGUF file ([`quantize_gguf`]: its tokenizer and chat template go
//! to a tensor-free `tokenizer.gguf`) or a Hugging Face directory of unquantized safetensors
//! ([`quantize_hf`]: its tokenizer files are copied). [`quantize`] picks by the input.
//!
//! From GGUF, conventions are undone on the way: Llama q/k rows go back from llama.cpp's
//! adjacent-pair order to Hugging Face's half-split order, and Gemma norms from `1 + w` to `w`.

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
    check_format(group_size, bits)?;
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
        // Up to 4 bits, matrices are quantized from f16, as MLX quantizes an f16 model: the
        // scales and biases come out in f16 (0.5 bits per value at groups of 64, where f32
        // takes 1), and 4-bit ones load as interleaved Q4_1 (`Weight::for_matmul`). f16's
        // rounding is 2^-7 of a 4-bit step; with more bits it starts to show (SmolLM2 at 8
        // bits: top-10 logits 0.17 from the f32 reference with f32 scales, 0.28 with f16), so
        // those keep f32.
        if bits <= 4 && quantizable(&hf, &a, group_size) {
            a = ops::astype(&a, Dtype::F16)?;
        }
        push_tensor(&mut out, hf, a, group_size, bits)?;
    }
    progress(total, total, "");
    write_checkpoint(out_dir, &out, config_to_hf(&cfg, tied), group_size, bits)?;

    let mut tok = GgufWriter::new();
    for (k, v) in f.metadata.iter() {
        if k.starts_with("tokenizer.") || k == "general.architecture" || k == "general.name" {
            tok.metadata.insert(k, v.clone());
        }
    }
    tok.write(out_dir.join("tokenizer.gguf"))?;
    Ok(())
}

/// The formats `ops::quantize` takes, as a CLI-facing error.
fn check_format(group_size: usize, bits: u32) -> Result<()> {
    if ![32, 64, 128].contains(&group_size) || !(2..=8).contains(&bits) || bits == 7 {
        return Err(Error::Invalid(format!(
            "--bits must be 2, 3, 4, 5, 6 or 8 and --group-size 32, 64 or 128 (got {bits} and {group_size})"
        )));
    }
    Ok(())
}

/// Whether [`push_tensor`] quantizes tensor `name`: a float matrix's `.weight` whose rows
/// split into whole groups.
fn quantizable(name: &str, a: &Array, group_size: usize) -> bool {
    name.ends_with(".weight")
        && a.ndim() == 2
        && a.shape()[1].is_multiple_of(group_size)
        && a.dtype().is_float()
}

/// Appends tensor `name`: a matrix (a linear layer's or an embedding's `.weight`) whose rows
/// split into whole groups becomes `.weight` (packed), `.scales` and `.biases`, as MLX
/// quantizes; anything else is kept as it is.
fn push_tensor(
    out: &mut Vec<(String, Array)>,
    name: String,
    a: Array,
    group_size: usize,
    bits: u32,
) -> Result<()> {
    if quantizable(&name, &a, group_size) {
        let (q, s, b) = ops::quantize(&a, group_size, bits)?;
        let stem = name.trim_end_matches(".weight");
        tessera_core::eval(&[q.clone(), s.clone(), b.clone()])?;
        out.push((format!("{stem}.scales"), s));
        out.push((format!("{stem}.biases"), b));
        out.push((name, q));
    } else {
        let a = ops::contiguous(&a)?;
        a.eval()?;
        out.push((name, a));
    }
    Ok(())
}

/// Creates `out_dir` with `model.safetensors` (the tensors) and `config.json` (`config` with
/// the quantization added).
fn write_checkpoint(
    out_dir: &Path,
    tensors: &[(String, Array)],
    mut config: serde_json::Value,
    group_size: usize,
    bits: u32,
) -> Result<()> {
    std::fs::create_dir_all(out_dir)
        .map_err(|e| Error::Invalid(format!("cannot create {}: {e}", out_dir.display())))?;
    let refs: Vec<(&str, &Array)> = tensors.iter().map(|(n, a)| (n.as_str(), a)).collect();
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("format".to_string(), "mlx".to_string());
    tessera_io::safetensors::save(out_dir.join("model.safetensors"), &refs, &meta)?;
    config["quantization"] = serde_json::json!({"group_size": group_size, "bits": bits});
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| Error::Invalid(format!("config.json: {e}")))?;
    std::fs::write(out_dir.join("config.json"), text)
        .map_err(|e| Error::Invalid(format!("cannot write config.json: {e}")))?;
    Ok(())
}

/// The tokenizer and generation files of a Hugging Face directory, copied as they are.
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "tokenizer.gguf",
    "vocab.json",
    "merges.txt",
];

/// Writes the quantized checkpoint of the Hugging Face model directory `input` (config.json and
/// unquantized safetensors, one file or shards with `model.safetensors.index.json`) into
/// `out_dir`. Tensors keep their names; matrices become packed weights with scales and biases in
/// the matrix's own float type (as MLX writes them), the rest keep their type. The tokenizer
/// files are copied. `progress(done, total, tensor_name)` is called per tensor.
pub fn quantize_hf(
    input: &Path,
    out_dir: &Path,
    group_size: usize,
    bits: u32,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<()> {
    check_format(group_size, bits)?;
    let config = crate::models::hf::read_config(input)?;
    if config.get("quantization").is_some() || config.get("quantization_config").is_some() {
        return Err(Error::Invalid(format!(
            "{} is already quantized: quantize the original (unquantized) checkpoint instead",
            input.display()
        )));
    }
    // Only architectures tessera runs: a checkpoint it could not load is not worth writing.
    crate::models::hf::config_from_hf(&config)?;
    let st = tessera_io::safetensors::Safetensors::open(input)?;
    let mut names: Vec<String> = st.names().map(str::to_string).collect();
    names.sort();
    let total = names.len();
    let mut out: Vec<(String, Array)> = Vec::with_capacity(total + total / 2);
    for (i, name) in names.into_iter().enumerate() {
        progress(i, total, &name);
        let a = st.tensor(&name)?;
        push_tensor(&mut out, name, a, group_size, bits)?;
    }
    progress(total, total, "");
    write_checkpoint(out_dir, &out, config, group_size, bits)?;
    for f in TOKENIZER_FILES {
        let from = input.join(f);
        if from.is_file() {
            std::fs::copy(&from, out_dir.join(f))
                .map_err(|e| Error::Invalid(format!("cannot copy {}: {e}", from.display())))?;
        }
    }
    Ok(())
}

/// [`quantize_hf`] for a directory, else [`quantize_gguf`].
pub fn quantize(
    input: &Path,
    out_dir: &Path,
    group_size: usize,
    bits: u32,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<()> {
    if input.is_dir() {
        quantize_hf(input, out_dir, group_size, bits, progress)
    } else {
        quantize_gguf(input, out_dir, group_size, bits, progress)
    }
}
