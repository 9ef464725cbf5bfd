//! Shared helpers: where the test models are (fetched by scripts/fetch-models.sh, which CI runs
//! first). A missing model fails the test with what to run, never a silent pass.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

pub fn models_dir() -> PathBuf {
    match std::env::var_os("TESSERA_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models"),
    }
}

pub fn model(name: &str) -> PathBuf {
    let p = models_dir().join(name);
    assert!(
        p.exists(),
        "test model {} is missing: run scripts/fetch-models.sh (or set TESSERA_MODELS)",
        p.display()
    );
    p
}

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

use tessera_core::quant::GgmlType;
use tessera_core::{Array, ops};
use tessera_lm::weights::{Weight, WeightSource};

/// A source whose quantized matrices (`blocks`, `format`, `in_features`) are replaced by
/// `self.1` of them; everything else passes through.
pub struct MapQuantized<S, F = fn(Array, GgmlType, usize) -> tessera_lm::Result<Weight>>(
    pub S,
    pub F,
);

impl<S, F> WeightSource for MapQuantized<S, F>
where
    S: WeightSource,
    F: Fn(Array, GgmlType, usize) -> tessera_lm::Result<Weight>,
{
    fn has(&self, name: &str) -> bool {
        self.0.has(name)
    }
    fn matrix(&self, name: &str) -> tessera_lm::Result<Weight> {
        Ok(match self.0.matrix(name)? {
            Weight::Quantized {
                blocks,
                format,
                in_features,
            } => (self.1)(blocks, format, in_features)?,
            w => w,
        })
    }
    fn vector(&self, name: &str) -> tessera_lm::Result<Array> {
        self.0.vector(name)
    }
}

/// The model's tensors with every quantized matrix decoded to f32: the architecture's math
/// without the 8-bit activation rounding of the quantized kernels.
pub fn dequantized<S: WeightSource>(src: S) -> MapQuantized<S> {
    MapQuantized(src, |blocks, format, in_features| {
        let d = ops::gguf_dequantize(&blocks, format, in_features)?;
        d.eval()?;
        Ok(Weight::Dense(d))
    })
}

/// Runs this test binary's tests `names` again with the kernels capped to AVX2, to AVX2 with
/// AVX-VNNI (where the CPU has it) and to the portable path (`TESSERA_SIMD`, read once per
/// process, hence a child process), so the real-model checks cover every kernel family on a
/// machine with AVX-512. Inside those children it does nothing.
#[allow(dead_code)]
pub fn rerun_on_every_kernel_family(names: &[&str]) {
    if std::env::var_os("TESSERA_SIMD").is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    #[cfg(target_arch = "x86_64")]
    let avx_vnni = std::arch::is_x86_feature_detected!("avxvnni");
    #[cfg(not(target_arch = "x86_64"))]
    let avx_vnni = false;
    let families = ["avx2", "avxvnni", "scalar"];
    for isa in families.into_iter().filter(|&f| f != "avxvnni" || avx_vnni) {
        for name in names {
            let out = std::process::Command::new(&exe)
                .args([name, "--exact", "--test-threads", "1"])
                .env("TESSERA_SIMD", isa)
                .output()
                .unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success() && all.contains("1 passed"),
                "{name} with TESSERA_SIMD={isa}:\n{all}"
            );
        }
    }
}

/// The logits after the last of `ids`, from one forward pass over them in a fresh f32 cache
/// (the references compute in f32; what the default f16 cache changes is measured on its own,
/// in `kv_cache_q8.rs`).
pub fn last_logits(model: &tessera_lm::model::Model, ids: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(256).full_precision();
    let toks = Array::from_vec(ids.iter().map(|&t| t as i32).collect(), &[1, ids.len()]).unwrap();
    model
        .forward(&toks, &mut cache, true)
        .unwrap()
        .to_vec::<f32>()
        .unwrap()
}

/// One prompt of the NumPy reference (`fixtures/reference_logits.json`, written by
/// scripts/gen-lm-reference.py from the f32 weights of the GGUF file).
pub struct ReferenceCase {
    pub text: String,
    pub ids: Vec<u32>,
    /// The 10 largest next-token logits, largest first, and their token ids.
    pub top_ids: Vec<usize>,
    pub top_logits: Vec<f32>,
    /// Greedy continuation, each token with its lead over the runner-up.
    pub greedy: Vec<u32>,
    pub greedy_margins: Vec<f32>,
}

/// The reference's prompts for `model_key` (`"smollm2"`, `"gemma3"`).
pub fn reference_cases(model_key: &str) -> Vec<ReferenceCase> {
    let golden: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/reference_logits.json")).unwrap();
    let numbers = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    golden[model_key]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| ReferenceCase {
            text: case["text"].as_str().unwrap().to_string(),
            ids: numbers(&case["ids"]).iter().map(|&x| x as u32).collect(),
            top_ids: numbers(&case["top_ids"])
                .iter()
                .map(|&x| x as usize)
                .collect(),
            top_logits: numbers(&case["top_logits"])
                .iter()
                .map(|&x| x as f32)
                .collect(),
            greedy: numbers(&case["greedy"]).iter().map(|&x| x as u32).collect(),
            greedy_margins: numbers(&case["greedy_margins"])
                .iter()
                .map(|&x| x as f32)
                .collect(),
        })
        .collect()
}
