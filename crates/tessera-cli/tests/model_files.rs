//! The `tessera` binary on model files, end to end: `quantize` a GGUF into an MLX directory,
//! `info` on both (what they hold, read from the headers), `generate` from the directory, and
//! the errors a user meets (an occupied output directory, a path that is not a model).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn model(name: &str) -> PathBuf {
    let dir = match std::env::var_os("TESSERA_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models"),
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "test model {} is missing: run scripts/fetch-models.sh (or set TESSERA_MODELS)",
        p.display()
    );
    p
}

fn tessera(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env("TESSERA_NUM_THREADS", "2")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn quantize_then_info_and_generate_from_the_directory() {
    let gguf = model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let gguf = gguf.to_str().unwrap();
    let dir = std::env::temp_dir().join(format!("tessera-cli-q8-{}", std::process::id()));
    let d = dir.to_str().unwrap();

    let info = tessera(&["info", gguf]);
    assert!(info.status.success(), "{}", text(&info.stderr));
    let out = text(&info.stdout);
    for want in [
        "format:        GGUF v3",
        "architecture:  llama",
        "30 layers, hidden 576",
    ] {
        assert!(out.contains(want), "GGUF info lacks {want:?}:\n{out}");
    }

    let q = tessera(&["quantize", gguf, d, "--bits", "8", "--group-size", "32"]);
    assert!(q.status.success(), "{}", text(&q.stderr));
    assert!(text(&q.stderr).contains("tessera generate --model"));

    let info = tessera(&["info", d]);
    assert!(info.status.success(), "{}", text(&info.stderr));
    let out = text(&info.stdout);
    for want in [
        "MLX affine 8-bit in groups of 32",
        "architecture:  llama",
        "30 layers, hidden 576",
        "affine q8 x",
        "tokenizer:     tokenizer.gguf",
        "chat template: yes",
    ] {
        assert!(out.contains(want), "directory info lacks {want:?}:\n{out}");
    }
    // The packed matrices count as the parameters they hold: the same total as the GGUF's.
    let params = |s: &str| -> String {
        s.lines()
            .find(|l| l.starts_with("parameters:"))
            .unwrap()
            .to_string()
    };
    assert_eq!(
        params(&out),
        params(&text(&tessera(&["info", gguf]).stdout))
    );

    let g = tessera(&[
        "generate",
        "--model",
        d,
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "1",
        "--temp",
        "0",
    ]);
    assert!(g.status.success(), "{}", text(&g.stderr));
    // The prompt, then the greedy continuation.
    assert_eq!(text(&g.stdout).trim_end(), "The capital of France is Paris");

    // An occupied output directory is refused, and nothing in it changes.
    let before = std::fs::metadata(dir.join("model.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    let again = tessera(&["quantize", gguf, d]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already holds a model"),
        "{}",
        text(&again.stderr)
    );
    let after = std::fs::metadata(dir.join("model.safetensors"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after);

    // A directory that is not a model says what it needs.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let bad = tessera(&["info", empty.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("config.json"),
        "{}",
        text(&bad.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}
