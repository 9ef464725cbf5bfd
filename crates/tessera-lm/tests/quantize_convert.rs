//! `tessera quantize` on the real SmolLM2 GGUF: the 8-bit MLX-layout checkpoint it writes loads
//! back (config.json, safetensors, tokenizer.gguf), matches the NumPy f32 reference forward pass
//! of the original weights closely (8-bit groups of already 4-bit values, f32 activations), and
//! still answers " Paris".
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use tessera_core::Array;
use tessera_lm::generate::{GenerateOptions, Generator};

#[test]
fn smollm2_quantized_to_8_bits_round_trips() {
    let src = common::model(common::SMOLLM2);
    let dir = std::env::temp_dir().join(format!("tessera-quantize-{}", std::process::id()));
    let mut calls = 0;
    tessera_lm::convert::quantize_gguf(&src, &dir, 32, 8, &mut |_, _, _| calls += 1).unwrap();
    assert!(calls > 200, "progress was reported per tensor");
    for f in ["config.json", "model.safetensors", "tokenizer.gguf"] {
        assert!(dir.join(f).exists(), "{f} written");
    }
    let m = tessera_lm::load::load(&dir, &mut |_, _| {}).unwrap();
    assert!(m.chat_template.is_some());

    let golden: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/reference_logits.json")).unwrap();
    let case = golden["smollm2"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["text"] == "The capital of France is")
        .unwrap();
    let ids: Vec<u32> = case["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(
        m.tokenizer.encode("The capital of France is", true, false),
        ids
    );
    let mut cache = m.model.new_cache(64);
    let toks = Array::from_vec(ids.iter().map(|&t| t as i32).collect(), &[1, ids.len()]).unwrap();
    let logits = m
        .model
        .forward(&toks, &mut cache, true)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let worst = case["top_ids"]
        .as_array()
        .unwrap()
        .iter()
        .zip(case["top_logits"].as_array().unwrap())
        .map(|(i, l)| (logits[i.as_u64().unwrap() as usize] - l.as_f64().unwrap() as f32).abs())
        .fold(0f32, f32::max);
    eprintln!("8-bit checkpoint vs f32 reference: max |logit diff| over the top 10 = {worst}");
    assert!(worst < 0.25, "logits differ by {worst}");

    let mut g = Generator::new(&m.model, 64);
    let opts = GenerateOptions {
        max_tokens: 1,
        ..Default::default()
    };
    let (out, _) = g.generate(&ids, &opts, &mut |_| true).unwrap();
    assert_eq!(m.tokenizer.decode(&out, true).unwrap(), " Paris");

    // The same directory with a Hugging Face tokenizer.json instead of tokenizer.gguf (SmolLM2's,
    // converted from the GGUF by transformers; see tests/hf_tokenizer.rs).
    let template = m.chat_template.clone();
    drop(m);
    std::fs::remove_file(dir.join("tokenizer.gguf")).unwrap();
    let load_err = |dir: &std::path::Path| match tessera_lm::load::load(dir, &mut |_, _| {}) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    };
    let e = load_err(&dir);
    assert!(e.contains("no tokenizer.json or tokenizer.gguf"), "{e}");
    std::fs::write(dir.join("tokenizer.json"), "{\"model\": 3").unwrap();
    let e = load_err(&dir);
    assert!(e.contains("tokenizer.json: not a tokenizer.json"), "{e}");
    let hf = common::model("hf/SmolLM2-135M-Instruct");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(hf.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("tokenizer_config.json"), "{\"chat_template\": 1}").unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("tokenizer_config.json: chat_template is neither"),
        "{e}"
    );
    std::fs::copy(
        hf.join("tokenizer_config.json"),
        dir.join("tokenizer_config.json"),
    )
    .unwrap();
    std::fs::copy(
        hf.join("chat_template.jinja"),
        dir.join("chat_template.jinja"),
    )
    .unwrap();
    let m = tessera_lm::load::load(&dir, &mut |_, _| {}).unwrap();
    assert_eq!(m.chat_template, template);
    assert_eq!(
        m.tokenizer.encode("The capital of France is", true, false),
        ids
    );
    let im_end = m.tokenizer.token_id("<|im_end|>").unwrap();
    assert!(m.tokenizer.is_eog(im_end));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_quantize_arguments_are_errors() {
    let src = common::model(common::SMOLLM2);
    let dir = std::env::temp_dir().join("tessera-quantize-never-written");
    for (g, b) in [(48usize, 4u32), (64, 7), (64, 1)] {
        let e = tessera_lm::convert::quantize_gguf(&src, &dir, g, b, &mut |_, _, _| {});
        assert!(e.is_err());
    }
    assert!(!dir.exists());
}
