//! MLX community quantized checkpoints: `<name>.weight` (packed u32), `<name>.scales`,
//! `<name>.biases` and `"quantization": {"group_size", "bits"}` in config.json. A random Llama
//! written that way must give the logits of the same model with the dequantized weights stored
//! densely (the quantized matmul accumulates in f32, so only summation order differs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use tessera_core::{Array, Dtype, ops, random};
use tessera_lm::model::Model;
use tessera_lm::models::hf::{HfSource, config_from_hf};

fn rand(shape: &[usize], seed: u64, scale: f64) -> Array {
    random::normal(shape, Dtype::F32, 0.0, scale, Some(&random::key(seed))).unwrap()
}

fn write_model(dir: &std::path::Path, quant: Option<(usize, u32)>, tensors: &[(String, Array)]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut out: Vec<(String, Array)> = Vec::new();
    for (name, a) in tensors {
        match quant {
            Some((g, b)) if a.ndim() == 2 => {
                let (q, s, bi) = ops::quantize(a, g, b).unwrap();
                let stem = name.trim_end_matches(".weight");
                out.push((name.clone(), q));
                out.push((format!("{stem}.scales"), s));
                out.push((format!("{stem}.biases"), bi));
            }
            _ => out.push((name.clone(), a.clone())),
        }
    }
    let refs: Vec<(&str, &Array)> = out.iter().map(|(n, a)| (n.as_str(), a)).collect();
    tessera_io::safetensors::save(dir.join("model.safetensors"), &refs, &BTreeMap::new()).unwrap();
    let mut cfg = serde_json::json!({
        "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "num_hidden_layers": 2,
        "vocab_size": 96, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "max_position_embeddings": 128, "tie_word_embeddings": true
    });
    if let Some((g, b)) = quant {
        cfg["quantization"] = serde_json::json!({"group_size": g, "bits": b});
    }
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
}

fn load(dir: &std::path::Path) -> Model {
    let cfg_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let cfg = config_from_hf(&cfg_json).unwrap();
    let src = HfSource::open(dir, &cfg_json, cfg.arch).unwrap();
    Model::load(cfg, &src, &mut |_, _| {}).unwrap()
}

#[test]
fn mlx_quantized_checkpoint_matches_its_dequantized_weights() {
    for (group, bits) in [(32usize, 4u32), (64, 8), (32, 3)] {
        let mut tensors: Vec<(String, Array)> = vec![
            ("model.embed_tokens.weight".into(), rand(&[96, 64], 1, 1.0)),
            (
                "model.norm.weight".into(),
                ops::ones(&[64], Dtype::F32).unwrap(),
            ),
        ];
        let mut seed = 10;
        for i in 0..2 {
            let l = format!("model.layers.{i}.");
            for (n, shape) in [
                ("self_attn.q_proj", [64, 64]),
                ("self_attn.k_proj", [32, 64]),
                ("self_attn.v_proj", [32, 64]),
                ("self_attn.o_proj", [64, 64]),
                ("mlp.gate_proj", [128, 64]),
                ("mlp.up_proj", [128, 64]),
                ("mlp.down_proj", [64, 128]),
            ] {
                seed += 1;
                tensors.push((format!("{l}{n}.weight"), rand(&shape, seed, 0.2)));
            }
            tensors.push((
                format!("{l}input_layernorm.weight"),
                ops::ones(&[64], Dtype::F32).unwrap(),
            ));
            tensors.push((
                format!("{l}post_attention_layernorm.weight"),
                ops::ones(&[64], Dtype::F32).unwrap(),
            ));
        }
        // The dense twin stores exactly what the quantized one decodes to.
        let dense: Vec<(String, Array)> = tensors
            .iter()
            .map(|(n, a)| {
                if a.ndim() == 2 {
                    let (q, s, b) = ops::quantize(a, group, bits).unwrap();
                    (
                        n.clone(),
                        ops::contiguous(&ops::dequantize(&q, &s, &b, group, bits).unwrap())
                            .unwrap(),
                    )
                } else {
                    (n.clone(), a.clone())
                }
            })
            .collect();
        let base = std::env::temp_dir().join(format!(
            "tessera-mlxq-{}-{group}-{bits}",
            std::process::id()
        ));
        write_model(&base.join("q"), Some((group, bits)), &tensors);
        write_model(&base.join("d"), None, &dense);
        let (mq, md) = (load(&base.join("q")), load(&base.join("d")));
        let ids = Array::from_slice(&[5i32, 17, 42, 3, 88, 61], &[1, 6]).unwrap();
        let run = |m: &Model| {
            // An f32 cache: this compares the weights, and f16 keys would round the two
            // models' slightly different keys apart.
            let mut c = m.new_cache(16).full_precision();
            m.forward(&ids, &mut c, false)
                .unwrap()
                .to_vec::<f32>()
                .unwrap()
        };
        let (a, b) = (run(&mq), run(&md));
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(scale > 1.0, "logits too small to test anything");
        assert!(
            worst < 1e-4 * scale,
            "group {group} bits {bits}: differ by {worst} (scale {scale})"
        );
        std::fs::remove_dir_all(&base).ok();
    }
}
