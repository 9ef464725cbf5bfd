//! A real model split across files the way llama.cpp's `gguf-split` writes it loads from its
//! first file and computes exactly what the single file does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use tessera_core::{Array, Dtype, ops};
use tessera_io::gguf::GgufFile;
use tessera_lm::load::load;

#[test]
fn smollm2_split_in_three_gives_the_same_logits() {
    let path = common::model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let whole = GgufFile::open(&path).unwrap();
    let dir = std::env::temp_dir().join(format!("tessera-split-lm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    whole.write_split(&dir, "smol", 3).unwrap();
    let a = load(&path, &mut |_, _| {}).unwrap();
    let b = load(dir.join("smol-00001-of-00003.gguf"), &mut |_, _| {}).unwrap();
    let ids = a.tokenizer.encode("The capital of France is", true, false);
    assert_eq!(
        ids,
        b.tokenizer.encode("The capital of France is", true, false)
    );
    let logits = |m: &tessera_lm::load::LoadedModel| -> Vec<f32> {
        let x: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        let mut cache = m.model.new_cache(64);
        let l = m
            .model
            .forward(
                &Array::from_slice(&x, &[1, x.len()]).unwrap(),
                &mut cache,
                false,
            )
            .unwrap();
        ops::astype(&l, Dtype::F32)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    };
    assert_eq!(logits(&a), logits(&b));
    std::fs::remove_dir_all(&dir).ok();
}
