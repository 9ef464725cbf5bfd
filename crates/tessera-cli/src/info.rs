//! `tessera info PATH`: what a model file (GGUF) or directory (Hugging Face / MLX: config.json
//! and safetensors) holds, without loading the weights.

use std::collections::BTreeMap;
use tessera::io::gguf::GgufFile;

pub fn run(args: &[String]) -> Result<(), String> {
    let path = match args {
        [p] => p,
        _ => return Err("usage: tessera info MODEL.gguf|MODEL_DIR".into()),
    };
    if std::path::Path::new(path).is_dir() {
        return run_dir(std::path::Path::new(path));
    }
    let f = GgufFile::open(path).map_err(|e| e.to_string())?;
    let md = &f.metadata;
    let arch = md.str("general.architecture").unwrap_or("unknown");
    println!("file:          {path}");
    println!("format:        GGUF v{}", f.version);
    if let Ok(name) = md.str("general.name") {
        println!("name:          {name}");
    }
    println!("architecture:  {arch}");
    let params: usize = f.tensors.iter().map(|t| t.numel()).sum();
    println!("parameters:    {} ({params})", human(params as f64, ""));
    println!(
        "tensor data:   {} in {} tensors",
        human(f.data_bytes() as f64, "B"),
        f.tensors.len()
    );
    let mut types: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for t in &f.tensors {
        let e = types.entry(t.ggml_type.name()).or_default();
        e.0 += 1;
        e.1 += t.nbytes;
    }
    print_tensor_types(&types);
    print_config(tessera::lm::models::gguf::config_from_gguf(&f));
    if let Ok(m) = md.str("tokenizer.ggml.model") {
        let n = md
            .array("tokenizer.ggml.tokens")
            .map(|a| a.len())
            .unwrap_or(0);
        println!("tokenizer:     {m}, {n} tokens");
    }
    println!(
        "chat template: {}",
        if md.get("tokenizer.chat_template").is_some() {
            "yes"
        } else {
            "no"
        }
    );
    Ok(())
}

/// A Hugging Face or MLX directory: config.json, the safetensors headers, the tokenizer files.
fn run_dir(dir: &std::path::Path) -> Result<(), String> {
    let config = tessera::lm::models::hf::read_config(dir).map_err(|e| e.to_string())?;
    let st = tessera::io::safetensors::Safetensors::open(dir).map_err(|e| e.to_string())?;
    let quant = config
        .get("quantization")
        .and_then(|q| Some((q.get("group_size")?.as_u64()?, q.get("bits")?.as_u64()?)));
    println!("directory:     {}", dir.display());
    let format = match quant {
        Some((g, b)) => format!("safetensors, MLX affine {b}-bit in groups of {g}"),
        None => "safetensors".to_string(),
    };
    println!("format:        {format}");
    let arch = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown");
    println!("architecture:  {arch}");
    // Parameters as the model counts them: a packed matrix holds 32 / bits values per word.
    let (mut params, mut bytes, mut count) = (0usize, 0usize, 0usize);
    let mut types: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for name in st.names() {
        let Some(t) = st.info(name) else { continue };
        let n: usize = t.shape.iter().product();
        let nbytes = t.end - t.start;
        bytes += nbytes;
        count += 1;
        let stem = name.strip_suffix(".weight");
        let packed = match (quant, stem) {
            (Some((_, b)), Some(stem)) if st.info(&format!("{stem}.scales")).is_some() => {
                Some(b as usize)
            }
            _ => None,
        };
        let kind = match packed {
            Some(b) => {
                params += n * 32 / b;
                format!("affine q{b}")
            }
            None if name.ends_with(".scales") || name.ends_with(".biases") => {
                format!("{} (scales, biases)", t.dtype_name)
            }
            None => {
                params += n;
                t.dtype_name.clone()
            }
        };
        let e = types.entry(kind).or_default();
        e.0 += 1;
        e.1 += nbytes;
    }
    println!("parameters:    {} ({params})", human(params as f64, ""));
    println!(
        "tensor data:   {} in {count} tensors",
        human(bytes as f64, "B")
    );
    print_tensor_types(&types);
    print_config(tessera::lm::models::hf::config_from_hf(&config));
    let tokenizer = ["tokenizer.json", "tokenizer.gguf"]
        .into_iter()
        .find(|f| dir.join(f).is_file());
    println!("tokenizer:     {}", tokenizer.unwrap_or("none found"));
    let template_in_config = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get("chat_template").is_some());
    let has_template = dir.join("chat_template.jinja").is_file()
        || dir.join("chat_template.json").is_file()
        || template_in_config
        || (tokenizer == Some("tokenizer.gguf")
            && GgufFile::open(dir.join("tokenizer.gguf"))
                .is_ok_and(|f| f.metadata.get("tokenizer.chat_template").is_some()));
    println!("chat template: {}", if has_template { "yes" } else { "no" });
    Ok(())
}

/// The shape lines of a model tessera can run, or why it cannot.
/// `tensor types:` with each type's tensor count and bytes (`types`: name -> (count, bytes)).
fn print_tensor_types<K: std::fmt::Display>(types: &BTreeMap<K, (usize, usize)>) {
    let list: Vec<String> = types
        .iter()
        .map(|(k, (n, b))| format!("{k} x{n} ({})", human(*b as f64, "B")))
        .collect();
    println!("tensor types:  {}", list.join(", "));
}

fn print_config(c: tessera::lm::Result<tessera::lm::config::ModelConfig>) {
    match c {
        Ok(c) => {
            println!(
                "shape:         {} layers, hidden {}, ffn {}, {} heads ({} kv) of {}, vocab {}",
                c.layers, c.hidden, c.ffn, c.heads, c.kv_heads, c.head_dim, c.vocab_size
            );
            println!("context:       {} tokens", c.context_length);
            if let Some(w) = c.sliding_window {
                println!("sliding window: {w}");
            }
        }
        Err(e) => println!("config:        not runnable by tessera: {e}"),
    }
}

/// 1234567 -> "1.23M".
pub fn human(v: f64, unit: &str) -> String {
    let (div, suffix) = if v >= 1e9 {
        (1e9, "G")
    } else if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    format!("{:.2}{suffix}{unit}", v / div)
}
