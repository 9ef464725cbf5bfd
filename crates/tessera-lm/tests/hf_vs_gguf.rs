//! The same random weights written as a Hugging Face checkpoint (config.json + safetensors) and
//! as a GGUF file laid out the way llama.cpp's converter lays it out (Llama q/k rows permuted
//! to adjacent rope pairs, Gemma norms stored as 1 + w, GGUF metadata keys) must give the same
//! logits: this pins down both loaders' conventions against each other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use tessera_core::quant::GgmlType;
use tessera_core::{Array, Dtype, ops, random};
use tessera_io::gguf::{GgufFile, GgufWriter, Value};
use tessera_lm::model::Model;
use tessera_lm::models::hf::{HfSource, config_from_hf};
use tessera_lm::weights::GgufSource;

struct Dims {
    hidden: usize,
    heads: usize,
    kv: usize,
    hd: usize,
    ffn: usize,
    layers: usize,
    vocab: usize,
}

const D: Dims = Dims {
    hidden: 64,
    heads: 4,
    kv: 2,
    hd: 16,
    ffn: 96,
    layers: 2,
    vocab: 100,
};

fn rand(shape: &[usize], seed: u64, scale: f64) -> Vec<f32> {
    let a = random::normal(shape, Dtype::F32, 0.0, scale, Some(&random::key(seed))).unwrap();
    a.to_vec::<f32>().unwrap()
}

/// llama.cpp's converter: within each head, rows [first half; second half] -> interleaved pairs.
fn permute(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    let hd = rows / heads;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for j in 0..hd / 2 {
            for (half, dst) in [(0, 2 * j), (1, 2 * j + 1)] {
                let src_row = h * hd + half * hd / 2 + j;
                let dst_row = h * hd + dst;
                out[dst_row * cols..(dst_row + 1) * cols]
                    .copy_from_slice(&w[src_row * cols..(src_row + 1) * cols]);
            }
        }
    }
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn check(model_type: &str) {
    let gemma = model_type == "gemma3";
    let llama = model_type == "llama";
    let qwen2 = model_type == "qwen2";
    let qwen3 = model_type == "qwen3";
    let phi3 = model_type == "phi3";
    let dir = std::env::temp_dir().join(format!("tessera-hf-{model_type}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut hf: Vec<(String, Array)> = Vec::new();
    let mut gg = GgufWriter::new();
    let mut seed = 0u64;
    let mut add = |hf_name: &str, gguf_name: &str, shape: &[usize], kind: &str| {
        seed += 1;
        // Large q/k weights make attention sharp, so a rope or permutation mistake shows.
        let scale = match kind {
            "norm" => 0.1,
            "q" | "k" => 0.6,
            "embed" => 1.0,
            _ => 0.15,
        };
        let v = rand(shape, seed, scale);
        hf.push((hf_name.to_string(), Array::from_slice(&v, shape).unwrap()));
        let g: Vec<f32> = match kind {
            "norm" if gemma => v.iter().map(|x| x + 1.0).collect(),
            "q" if llama => permute(&v, D.heads, shape.get(1).copied().unwrap_or(1)),
            "k" if llama => permute(&v, D.kv, shape.get(1).copied().unwrap_or(1)),
            _ => v.clone(),
        };
        gg.add_tensor(gguf_name, shape, GgmlType::F32, f32_bytes(&g))
            .unwrap();
    };
    let norm = if gemma { "norm" } else { "plain" };
    add(
        "model.embed_tokens.weight",
        "token_embd.weight",
        &[D.vocab, D.hidden],
        "embed",
    );
    add("model.norm.weight", "output_norm.weight", &[D.hidden], norm);
    for i in 0..D.layers {
        let l = format!("model.layers.{i}.");
        let b = format!("blk.{i}.");
        add(
            &format!("{l}input_layernorm.weight"),
            &format!("{b}attn_norm.weight"),
            &[D.hidden],
            norm,
        );
        add(
            &format!("{l}self_attn.q_proj.weight"),
            &format!("{b}attn_q.weight"),
            &[D.heads * D.hd, D.hidden],
            "q",
        );
        add(
            &format!("{l}self_attn.k_proj.weight"),
            &format!("{b}attn_k.weight"),
            &[D.kv * D.hd, D.hidden],
            "k",
        );
        add(
            &format!("{l}self_attn.v_proj.weight"),
            &format!("{b}attn_v.weight"),
            &[D.kv * D.hd, D.hidden],
            "plain",
        );
        if qwen2 {
            add(
                &format!("{l}self_attn.q_proj.bias"),
                &format!("{b}attn_q.bias"),
                &[D.heads * D.hd],
                "plain",
            );
            add(
                &format!("{l}self_attn.k_proj.bias"),
                &format!("{b}attn_k.bias"),
                &[D.kv * D.hd],
                "plain",
            );
            add(
                &format!("{l}self_attn.v_proj.bias"),
                &format!("{b}attn_v.bias"),
                &[D.kv * D.hd],
                "plain",
            );
        }
        add(
            &format!("{l}self_attn.o_proj.weight"),
            &format!("{b}attn_output.weight"),
            &[D.hidden, D.heads * D.hd],
            "plain",
        );
        if qwen3 {
            add(
                &format!("{l}self_attn.q_norm.weight"),
                &format!("{b}attn_q_norm.weight"),
                &[D.hd],
                "norm",
            );
            add(
                &format!("{l}self_attn.k_norm.weight"),
                &format!("{b}attn_k_norm.weight"),
                &[D.hd],
                "norm",
            );
        }
        if gemma {
            add(
                &format!("{l}self_attn.q_norm.weight"),
                &format!("{b}attn_q_norm.weight"),
                &[D.hd],
                norm,
            );
            add(
                &format!("{l}self_attn.k_norm.weight"),
                &format!("{b}attn_k_norm.weight"),
                &[D.hd],
                norm,
            );
            add(
                &format!("{l}post_attention_layernorm.weight"),
                &format!("{b}post_attention_norm.weight"),
                &[D.hidden],
                norm,
            );
            add(
                &format!("{l}pre_feedforward_layernorm.weight"),
                &format!("{b}ffn_norm.weight"),
                &[D.hidden],
                norm,
            );
            add(
                &format!("{l}post_feedforward_layernorm.weight"),
                &format!("{b}post_ffw_norm.weight"),
                &[D.hidden],
                norm,
            );
        } else {
            add(
                &format!("{l}post_attention_layernorm.weight"),
                &format!("{b}ffn_norm.weight"),
                &[D.hidden],
                norm,
            );
        }
        add(
            &format!("{l}mlp.gate_proj.weight"),
            &format!("{b}ffn_gate.weight"),
            &[D.ffn, D.hidden],
            "plain",
        );
        add(
            &format!("{l}mlp.up_proj.weight"),
            &format!("{b}ffn_up.weight"),
            &[D.ffn, D.hidden],
            "plain",
        );
        add(
            &format!("{l}mlp.down_proj.weight"),
            &format!("{b}ffn_down.weight"),
            &[D.hidden, D.ffn],
            "plain",
        );
    }
    if phi3 {
        // Phi-3 checkpoints fuse q/k/v and gate/up; the GGUF side keeps them apart, so the
        // loader's splitting is checked against the separate matrices.
        let take = |hf: &mut Vec<(String, Array)>, name: &str| -> Array {
            let i = hf.iter().position(|(n, _)| n == name).unwrap();
            hf.remove(i).1
        };
        for i in 0..D.layers {
            let l = format!("model.layers.{i}.");
            let q = take(&mut hf, &format!("{l}self_attn.q_proj.weight"));
            let k = take(&mut hf, &format!("{l}self_attn.k_proj.weight"));
            let v = take(&mut hf, &format!("{l}self_attn.v_proj.weight"));
            hf.push((
                format!("{l}self_attn.qkv_proj.weight"),
                ops::concatenate(&[q, k, v], 0).unwrap(),
            ));
            let g = take(&mut hf, &format!("{l}mlp.gate_proj.weight"));
            let u = take(&mut hf, &format!("{l}mlp.up_proj.weight"));
            hf.push((
                format!("{l}mlp.gate_up_proj.weight"),
                ops::concatenate(&[g, u], 0).unwrap(),
            ));
        }
    }
    // Phi-3 128k's LongRoPE: distinct short and long factors, original context 32 (< 64, the
    // cache used below, so the long ones apply; a 32-position cache takes the short ones).
    let short: Vec<f32> = (0..D.hd / 2).map(|i| 1.0 + 0.05 * i as f32).collect();
    let long: Vec<f32> = (0..D.hd / 2).map(|i| 1.0 + 0.5 * i as f32).collect();
    if phi3 {
        gg.add_tensor(
            "rope_factors_short.weight",
            &[D.hd / 2],
            GgmlType::F32,
            f32_bytes(&short),
        )
        .unwrap();
        gg.add_tensor(
            "rope_factors_long.weight",
            &[D.hd / 2],
            GgmlType::F32,
            f32_bytes(&long),
        )
        .unwrap();
    }
    let refs: Vec<(&str, &Array)> = hf.iter().map(|(n, a)| (n.as_str(), a)).collect();
    tessera_io::safetensors::save(dir.join("model.safetensors"), &refs, &BTreeMap::new()).unwrap();
    let config = serde_json::json!({
        "model_type": model_type, "hidden_size": D.hidden, "num_attention_heads": D.heads,
        "num_key_value_heads": D.kv, "head_dim": D.hd, "intermediate_size": D.ffn,
        "num_hidden_layers": D.layers, "vocab_size": D.vocab, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "max_position_embeddings": 256, "tie_word_embeddings": true,
        "sliding_window": 4, "sliding_window_pattern": 2, "query_pre_attn_scalar": D.hd,
        "rope_local_base_freq": 10000.0, "use_sliding_window": false
    });
    let mut config = config;
    if phi3 {
        config["rope_scaling"] =
            serde_json::json!({"type": "longrope", "short_factor": short, "long_factor": long});
        config["original_max_position_embeddings"] = serde_json::json!(32);
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();

    let arch = model_type;
    let md = &mut gg.metadata;
    md.insert("general.architecture", Value::String(arch.into()));
    for (k, v) in [
        ("embedding_length", D.hidden),
        ("block_count", D.layers),
        ("feed_forward_length", D.ffn),
        ("attention.head_count", D.heads),
        ("attention.head_count_kv", D.kv),
        ("attention.key_length", D.hd),
        ("context_length", 256),
        ("vocab_size", D.vocab),
    ] {
        md.insert(format!("{arch}.{k}"), Value::U32(v as u32));
    }
    md.insert(
        format!("{arch}.attention.layer_norm_rms_epsilon"),
        Value::F32(1e-6),
    );
    md.insert(format!("{arch}.rope.freq_base"), Value::F32(10000.0));
    if gemma {
        md.insert(format!("{arch}.attention.sliding_window"), Value::U32(4));
    }
    if phi3 {
        md.insert(
            format!("{arch}.rope.scaling.original_context_length"),
            Value::U32(32),
        );
    }
    gg.write(dir.join("model.gguf")).unwrap();

    let cfg_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let mut hf_cfg = config_from_hf(&cfg_json).unwrap();
    if gemma {
        // The GGUF side hard-codes Gemma 3's pattern of 6; use the same in both.
        hf_cfg.sliding_pattern = Some(6);
    }
    let src = HfSource::open(&dir, &cfg_json, hf_cfg.arch).unwrap();
    let hf_model = Model::load(hf_cfg, &src, &mut |_, _| {}).unwrap();
    let f = GgufFile::open(dir.join("model.gguf")).unwrap();
    let gg_cfg = tessera_lm::models::gguf::config_from_gguf(&f).unwrap();
    let gg_model = Model::load(gg_cfg, &GgufSource { file: &f }, &mut |_, _| {}).unwrap();

    // 20 tokens, well past the sliding window of 4 (Gemma's local layers rotate their cache).
    let ids: Vec<i32> = vec![
        3, 17, 42, 99, 0, 56, 23, 8, 71, 5, 64, 12, 88, 31, 7, 45, 90, 2, 19, 60,
    ];
    // Logits of every position, feeding the tokens in chunks of the given sizes.
    let run_in = |m: &Model, chunks: &[usize], capacity: usize| -> Vec<f32> {
        let mut cache = m.new_cache(capacity);
        let mut out = Vec::new();
        let mut at = 0;
        for &c in chunks {
            let part = Array::from_slice(&ids[at..at + c], &[1, c]).unwrap();
            let logits = m.forward(&part, &mut cache, false).unwrap();
            out.extend(
                ops::astype(&logits, Dtype::F32)
                    .unwrap()
                    .to_vec::<f32>()
                    .unwrap(),
            );
            at += c;
        }
        assert_eq!(at, ids.len());
        out
    };
    let run = |m: &Model, chunks: &[usize]| run_in(m, chunks, 64);
    let ones = vec![1; ids.len()];
    let (a, b) = (
        run(&hf_model, &[6, 1, 1, 12]),
        run(&gg_model, &[6, 1, 1, 12]),
    );
    assert_eq!(a.len(), ids.len() * D.vocab);
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    eprintln!("{model_type}: max |logit| {scale}, max difference {worst}");
    assert!(
        scale > 1.0,
        "{model_type}: logits too small to test anything"
    );
    assert!(
        worst < 1e-4 * scale,
        "{model_type}: HF and GGUF logits differ by {worst}"
    );
    // However the tokens are chunked (one at a time, chunks that straddle the window, all at
    // once), the cache gives the same logits as one full pass.
    for chunks in [
        &ones[..],
        &[3, 5, 1, 2, 9][..],
        &[20][..],
        &[4, 4, 4, 4, 4][..],
    ] {
        let c = run(&gg_model, chunks);
        let worst = c
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-4 * scale,
            "{model_type}: chunks {chunks:?} differ by {worst}"
        );
    }
    if phi3 {
        // Both loaders read the same LongRoPE; a context within the original 32 positions uses
        // the short factors, which must change the logits (the factors are not ignored).
        assert_eq!(hf_model.config.rope, gg_model.config.rope);
        assert!(hf_model.config.rope.attn_factor > 1.0);
        let short_run = run_in(&gg_model, &[20], 32);
        let moved = short_run
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            moved > 1e-2 * scale,
            "short factors changed nothing ({moved})"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn llama_hf_and_gguf_agree() {
    check("llama");
}

#[test]
fn qwen2_hf_and_gguf_agree() {
    check("qwen2");
}

#[test]
fn gemma3_hf_and_gguf_agree() {
    check("gemma3");
}

#[test]
fn qwen3_hf_and_gguf_agree() {
    check("qwen3");
}

#[test]
fn phi3_fused_hf_and_separate_gguf_agree() {
    check("phi3");
}
