//! A model file whose metadata does not fit its tensors (or makes no sense) must be a clear
//! error at load, never a panic: each case takes a small valid Llama GGUF, changes one thing,
//! and loads it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tessera_core::quant::GgmlType;
use tessera_io::gguf::{GgufWriter, Value};

fn f32_bytes(n: usize, v: f32) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (v + (i % 7) as f32 * 0.01).to_le_bytes())
        .collect()
}

/// A 2-layer Llama with hidden 32, 4 heads (2 kv) of 8, ffn 48, vocab 40, and a tiny BPE vocab.
fn base(skip: Option<&str>) -> GgufWriter {
    let mut w = GgufWriter::new();
    let md = &mut w.metadata;
    md.insert("general.architecture", Value::String("llama".into()));
    for (k, v) in [
        ("llama.embedding_length", 32u32),
        ("llama.block_count", 2),
        ("llama.feed_forward_length", 48),
        ("llama.attention.head_count", 4),
        ("llama.attention.head_count_kv", 2),
        ("llama.context_length", 64),
    ] {
        md.insert(k, Value::U32(v));
    }
    md.insert("tokenizer.ggml.model", Value::String("gpt2".into()));
    md.insert("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    let toks: Vec<Value> = (0..40).map(|i| Value::String(format!("t{i}"))).collect();
    md.insert(
        "tokenizer.ggml.tokens",
        Value::Array(tessera_io::gguf::ValueType::String, toks),
    );
    md.insert(
        "tokenizer.ggml.merges",
        Value::Array(
            tessera_io::gguf::ValueType::String,
            vec![Value::String("t 1".into())],
        ),
    );
    let mut add = |name: &str, shape: &[usize]| {
        if skip == Some(name) {
            return;
        }
        let n: usize = shape.iter().product();
        w.add_tensor(name, shape, GgmlType::F32, f32_bytes(n, 0.1))
            .unwrap();
    };
    add("token_embd.weight", &[40, 32]);
    add("output_norm.weight", &[32]);
    for i in 0..2 {
        add(&format!("blk.{i}.attn_norm.weight"), &[32]);
        add(&format!("blk.{i}.attn_q.weight"), &[32, 32]);
        add(&format!("blk.{i}.attn_k.weight"), &[16, 32]);
        add(&format!("blk.{i}.attn_v.weight"), &[16, 32]);
        add(&format!("blk.{i}.attn_output.weight"), &[32, 32]);
        add(&format!("blk.{i}.ffn_norm.weight"), &[32]);
        add(&format!("blk.{i}.ffn_gate.weight"), &[48, 32]);
        add(&format!("blk.{i}.ffn_up.weight"), &[48, 32]);
        add(&format!("blk.{i}.ffn_down.weight"), &[32, 48]);
    }
    w
}

fn load(w: &GgufWriter, tag: &str) -> Result<(), String> {
    let p = std::env::temp_dir().join(format!(
        "tessera-malformed-{}-{tag}.gguf",
        std::process::id()
    ));
    w.write(&p).unwrap();
    let r = tessera_lm::load::load(&p, &mut |_, _| {})
        .map(|_| ())
        .map_err(|e| e.to_string());
    std::fs::remove_file(&p).ok();
    r
}

#[test]
fn the_base_model_loads() {
    load(&base(None), "base").unwrap();
}

#[test]
fn inconsistent_metadata_is_an_error() {
    let cases: Vec<(&str, Value)> = vec![
        ("llama.attention.head_count", Value::U32(0)),
        ("llama.attention.head_count", Value::U32(3)),
        ("llama.attention.head_count_kv", Value::U32(0)),
        ("llama.attention.head_count_kv", Value::U32(3)),
        ("llama.embedding_length", Value::U32(33)),
        ("llama.block_count", Value::U32(3)),
        ("llama.feed_forward_length", Value::U32(47)),
        ("llama.rope.dimension_count", Value::U32(9)),
        ("llama.attention.key_length", Value::U32(0)),
        ("llama.embedding_length", Value::String("many".into())),
        ("general.architecture", Value::String("mamba".into())),
        ("tokenizer.ggml.model", Value::String("nonsense".into())),
        ("llama.vocab_size", Value::U32(10)),
    ];
    for (key, value) in cases {
        let mut w = base(None);
        w.metadata.insert(key, value.clone());
        let err = load(&w, key).expect_err(&format!("{key} = {value:?} loaded"));
        assert!(!err.is_empty());
    }
}

#[test]
fn missing_tensors_are_named() {
    for name in [
        "blk.1.ffn_down.weight",
        "output_norm.weight",
        "token_embd.weight",
    ] {
        let err = load(&base(Some(name)), name).expect_err(name);
        assert!(err.contains(name), "{err}");
    }
}
