//! `tessera info PATH`: what a model file holds, without loading the weights.

use std::collections::BTreeMap;
use tessera::io::gguf::GgufFile;

pub fn run(args: &[String]) -> Result<(), String> {
    let path = match args {
        [p] => p,
        _ => return Err("usage: tessera info MODEL.gguf".into()),
    };
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
    let list: Vec<String> = types
        .iter()
        .map(|(k, (n, b))| format!("{k} x{n} ({})", human(*b as f64, "B")))
        .collect();
    println!("tensor types:  {}", list.join(", "));
    match tessera::lm::models::gguf::config_from_gguf(&f) {
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
