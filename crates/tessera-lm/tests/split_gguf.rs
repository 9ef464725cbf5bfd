//! A real model split across files the way llama.cpp's `gguf-split` writes it loads from its
//! first file and computes exactly what the single file does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use tessera_core::{Array, Dtype, ops};
use tessera_io::gguf::{GgufFile, GgufWriter, Value};
use tessera_lm::load::load;

#[test]
fn smollm2_split_in_three_gives_the_same_logits() {
    let path = common::model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let whole = GgufFile::open(&path).unwrap();
    let dir = std::env::temp_dir().join(format!("tessera-split-lm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let names: Vec<String> = whole.tensors.iter().map(|t| t.name.clone()).collect();
    let parts = 3;
    let per = names.len().div_ceil(parts);
    for k in 0..parts {
        let mut w = GgufWriter::new();
        if k == 0 {
            for (key, v) in whole.metadata.iter() {
                w.metadata.insert(key, v.clone());
            }
            w.metadata
                .insert("split.tensors.count", Value::I32(names.len() as i32));
        }
        w.metadata.insert("split.no", Value::U16(k as u16));
        w.metadata.insert("split.count", Value::U16(parts as u16));
        for name in names.iter().skip(k * per).take(per) {
            let t = whole.info(name).unwrap();
            w.add_tensor(
                name,
                &t.shape,
                t.ggml_type,
                whole.tensor_bytes(name).unwrap().to_vec(),
            )
            .unwrap();
        }
        w.write(dir.join(format!("smol-{:05}-of-{parts:05}.gguf", k + 1)))
            .unwrap();
    }
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
