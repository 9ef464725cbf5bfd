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

use tessera_io::gguf::{GgufFile, Metadata, Value, ValueType};
use tessera_lm::tokenizer::{Tokenizer, TokenizerError, TokenizerKind};

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
    // Byte-level BPE and SentencePiece are lossless; WordPiece lowercases and drops accents.
    if tok.kind() != TokenizerKind::Wpm {
        for text in cases.keys() {
            let ids = tok.encode(text, false, false);
            let back = tok.decode(&ids, false).unwrap();
            if &back != text {
                failures.push(format!("  {text:?} decodes to {back:?}"));
            }
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

/// Vocabularies without test vectors: they load (or are rejected clearly) and round-trip.
#[test]
fn vocab_without_vectors() {
    let text = "Hello, world! naïve café 日本語 🦙\n\n  indented\ttab 12345";
    for name in ["aquila", "baichuan", "gpt-neox"] {
        let tok = load(&format!("vocab/ggml-vocab-{name}.gguf"));
        let ids = tok.encode(text, false, false);
        assert!(!ids.is_empty());
        assert_eq!(tok.decode(&ids, false).unwrap(), text, "{name}");
    }
    let file = GgufFile::open(model_file("vocab/ggml-vocab-nomic-bert-moe.gguf")).unwrap();
    match Tokenizer::from_gguf(&file) {
        Err(TokenizerError::Unsupported(msg)) => assert!(msg.contains("'t5'"), "{msg}"),
        other => panic!("expected an unsupported-model error, got {other:?}"),
    }
}

/// Texts for round trips: emoji (multi-codepoint, flags, ZWJ), CJK, accents (composed and
/// combining), whitespace runs, tabs, CR/LF, control characters.
const VARIED: &[&str] = &[
    "The capital of France is Paris.",
    "naïve café, façade — “quoted” ‘single’ …",
    "e\u{301} combining, precomposed é, Å, ñ; Ελληνικά; Русский; עברית; العربية; हिन्दी; ไทย",
    "日本語のテキストと中文混合、한국어 텍스트。",
    "emoji 🦙 👩‍👩‍👧‍👦 🇫🇷 🏳️‍🌈 ❤️‍🔥 👍🏽",
    "   leading, trailing and  inner   spaces   ",
    "\n\nnew\nlines\r\nand\ttabs\t\t\n \n",
    "def f(x):\n    return x ** 2  # comment\n",
    "numbers 3 33 333 3333 3.14159 1,000,000 ½ ² ⅔",
    "\u{0} nul, \u{7} bell, \u{85} next-line, \u{a0} nbsp, \u{3000} ideographic space",
    "I'm you're he'll she'd IT'S we'VE",
    "",
];

fn check_round_trips(tok: &Tokenizer, name: &str) {
    for text in VARIED {
        for add_special in [false, true] {
            let ids = tok.encode(text, add_special, false);
            let back = tok.decode(&ids, true).unwrap();
            assert_eq!(&back, text, "{name}: add_special={add_special} ids={ids:?}");
        }
        // Special tokens spelled in the text survive a round trip either way.
        let ids = tok.encode(text, false, true);
        assert_eq!(
            tok.decode(&ids, false).unwrap(),
            *text,
            "{name}: parse_special"
        );
    }
}

/// Feeds `ids` one at a time; the output must be `want` exactly, with no U+FFFD, and some
/// token must end inside a character (so holding back is exercised).
fn check_stream(tok: &Tokenizer, ids: &[u32], want: &str) {
    let mut stream = tok.stream_decoder(true);
    let mut out = String::new();
    let mut held = 0;
    for &id in ids {
        let piece = stream.push(id).unwrap();
        assert!(!piece.contains('\u{FFFD}'), "U+FFFD after token {id}");
        if piece.is_empty() && !tok.token_to_bytes(id).unwrap().is_empty() {
            held += 1;
        }
        out.push_str(&piece);
    }
    out.push_str(&stream.flush());
    assert_eq!(out, want);
    assert!(held > 0, "no token ended inside a character");
}

#[test]
fn smollm2() {
    let tok = load("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(
        (tok.kind(), tok.pre(), tok.vocab_size()),
        (TokenizerKind::Bpe, "smollm", 49152)
    );
    // Expected ids cross-checked with Hugging Face `tokenizers` (a BPE built from this file's
    // vocabulary and merges with SmolLM2's pre-tokenizer: single digits, then GPT-2 byte level).
    let cases: &[(&str, &[u32])] = &[
        ("The capital of France is", &[504, 3575, 282, 4649, 314]),
        (
            "Hello, world! 1234",
            &[19556, 28, 905, 17, 216, 33, 34, 35, 36],
        ),
        (
            "naïve café 日本語 🦙",
            &[
                3546, 46494, 37366, 17097, 241, 115, 40993, 179, 120, 248, 15107, 116, 243,
            ],
        ),
    ];
    for (text, want) in cases {
        assert_eq!(tok.encode(text, false, false), *want, "{text:?}");
        // add_bos_token is false for this model.
        assert_eq!(tok.encode(text, true, false), *want, "{text:?}");
    }
    let chat = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n";
    assert_eq!(
        tok.encode(chat, false, true),
        [1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198]
    );
    let literal = tok.encode(chat, false, false);
    assert!(
        !literal.contains(&1) && !literal.contains(&2),
        "control tokens parsed without parse_special"
    );
    assert_eq!(tok.decode(&literal, false).unwrap(), chat);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.eot_id()),
        (Some(1), Some(2), Some(2))
    );
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert_eq!(tok.token_str(504), Some("The"));
    // <|endoftext|>, <|im_end|>, and <reponame>, which llama.cpp takes for a FIM repo token.
    assert_eq!(tok.token_str(4), Some("<reponame>"));
    assert_eq!(tok.stop_ids(), [0, 2, 4]);
    assert!(tok.is_eog(2) && !tok.is_eog(1));
    // Special tokens render unless skipped.
    let ids = tok.encode(chat, false, true);
    assert_eq!(tok.decode(&ids, false).unwrap(), chat);
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nWhat is 2+2?\n");
    check_round_trips(&tok, "smollm2");
    let text = "naïve café 日本語 🦙 👩‍👩‍👧‍👦";
    check_stream(&tok, &tok.encode(text, false, false), text);
}

#[test]
fn gemma3() {
    let tok = load("gemma-3-270m-q4_k_m.gguf");
    assert_eq!((tok.kind(), tok.vocab_size()), (TokenizerKind::Spm, 262144));
    // Expected ids cross-checked with `sentencepiece` (a BPE model built from this file's pieces,
    // scores and types, no dummy prefix: add_space_prefix is false here).
    let capital = [818, 5279, 529, 7001, 563];
    assert_eq!(
        tok.encode("The capital of France is", false, false),
        capital
    );
    assert_eq!(
        tok.encode("The capital of France is", true, false),
        [&[2][..], &capital].concat()
    );
    assert_eq!(
        tok.encode("Hello, world! 1234", false, false),
        [
            9259, 236764, 1902, 236888, 236743, 236770, 236778, 236800, 236812
        ]
    );
    assert_eq!(
        tok.encode("naïve café 日本語 🦙", false, false),
        [
            1789, 238527, 560, 33443, 33375, 238582, 236743, 478, 397, 404, 391
        ]
    );
    // Chat markers are single tokens only when special tokens are parsed.
    let (start, end) = (
        tok.token_id("<start_of_turn>").unwrap(),
        tok.token_id("<end_of_turn>").unwrap(),
    );
    assert_eq!((start, end), (105, 106));
    let chat = "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n";
    let ids = tok.encode(chat, true, true);
    assert_eq!(ids.iter().filter(|&&id| id == start).count(), 2);
    assert_eq!(ids.iter().filter(|&&id| id == end).count(), 1);
    assert_eq!(
        ids[..4],
        [
            2,
            start,
            tok.token_id("user").unwrap(),
            tok.token_id("\n").unwrap()
        ]
    );
    assert_eq!(tok.decode(&ids, false).unwrap(), format!("<bos>{chat}"));
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nHi\nmodel\n");
    let literal = tok.encode(chat, false, false);
    assert!(!literal.contains(&start) && !literal.contains(&end));
    assert_eq!(tok.decode(&literal, false).unwrap(), chat);
    // End of generation: <eos> and <end_of_turn>.
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.eot_id()),
        (Some(2), Some(1), Some(106))
    );
    assert!(tok.is_eog(1) && tok.is_eog(106) && !tok.is_eog(105));
    // Byte tokens and `▁`.
    assert_eq!(
        tok.token_to_bytes(tok.token_id("<0x0A>").unwrap()),
        Some(&b"\n"[..])
    );
    assert_eq!(
        tok.token_to_bytes(tok.token_id("▁capital").unwrap()),
        Some(&b" capital"[..])
    );
    assert_eq!(tok.token_to_bytes(262144), None);
    check_round_trips(&tok, "gemma3");
    let text = "emoji 🦙 👩‍👩‍👧‍👦 and rare 𓀀𓀁 hieroglyphs";
    check_stream(&tok, &tok.encode(text, true, false), text);
}

fn strings(items: &[&str]) -> Value {
    Value::Array(
        ValueType::String,
        items.iter().map(|s| Value::String(s.to_string())).collect(),
    )
}

/// A tiny byte-level BPE vocabulary: the printable ASCII bytes, "Ġ" (space), and merges.
fn tiny_bpe() -> Metadata {
    let mut tokens: Vec<String> = (b'!'..=b'~').map(|b| char::from(b).to_string()).collect();
    tokens.extend(["Ġ", "he", "ll", "hell", "hello", "Ġw", "<|end|>"].map(String::from));
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut md = Metadata::new();
    md.insert("tokenizer.ggml.model", Value::String("gpt2".into()));
    md.insert("tokenizer.ggml.pre", Value::String("gpt-2".into()));
    md.insert("tokenizer.ggml.tokens", strings(&tokens));
    let mut types = vec![Value::I32(1); tokens.len()];
    types[tokens.len() - 1] = Value::I32(3);
    md.insert(
        "tokenizer.ggml.token_type",
        Value::Array(ValueType::I32, types),
    );
    md.insert(
        "tokenizer.ggml.merges",
        strings(&["h e", "l l", "he ll", "hell o", "Ġ w"]),
    );
    md
}

#[test]
fn tiny_vocabulary() {
    let tok = Tokenizer::from_metadata(&tiny_bpe()).unwrap();
    let id = |t: &str| tok.token_id(t).unwrap();
    assert_eq!(
        tok.encode("hello world", false, false),
        [id("hello"), id("Ġw"), id("o"), id("r"), id("l"), id("d")]
    );
    assert_eq!(
        tok.encode("hello<|end|>", false, true),
        [id("hello"), id("<|end|>")]
    );
    assert_eq!(
        tok.decode(&tok.encode("hello world", false, false), false)
            .unwrap(),
        "hello world"
    );
    // BPE defaults to BOS = EOS = 11 ("," here) when the file names none, as llama.cpp does.
    assert_eq!(tok.bos_id(), Some(11));
    assert!(tok.is_eog(id("<|end|>")));
    // A character with no token is dropped, as llama.cpp does (no byte tokens for it).
    assert_eq!(tok.encode("hé", false, false), [id("h")]);
}

#[test]
fn malformed_vocabularies_are_errors() {
    let err = |md: &Metadata| match Tokenizer::from_metadata(md) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted a malformed vocabulary"),
    };
    let mut md = tiny_bpe();
    md.insert("tokenizer.ggml.merges", strings(&["h e", "hello"]));
    assert!(err(&md).contains("merges[1]"), "{}", err(&md));

    let mut md = tiny_bpe();
    md.insert("tokenizer.ggml.eos_token_id", Value::U32(1000));
    assert!(
        err(&md).contains("eos_token_id = 1000 is out of range"),
        "{}",
        err(&md)
    );

    let mut md = tiny_bpe();
    md.insert("tokenizer.ggml.tokens", strings(&["a", "b", "a"]));
    md.insert(
        "tokenizer.ggml.token_type",
        Value::Array(ValueType::I32, vec![Value::I32(1); 3]),
    );
    assert!(err(&md).contains("both \"a\""), "{}", err(&md));

    let mut md = tiny_bpe();
    md.insert(
        "tokenizer.ggml.token_type",
        Value::Array(ValueType::I32, vec![Value::I32(1); 2]),
    );
    assert!(
        err(&md).contains("token_type has 2 entries"),
        "{}",
        err(&md)
    );

    let mut md = tiny_bpe();
    md.insert("tokenizer.ggml.pre", Value::String("tekken".into()));
    assert!(
        err(&md).contains("unsupported pre-tokenizer 'tekken'"),
        "{}",
        err(&md)
    );

    let mut md = Metadata::new();
    md.insert("tokenizer.ggml.model", Value::String("gpt2".into()));
    assert!(err(&md).contains("tokenizer.ggml.tokens"), "{}", err(&md));

    // Ids outside the vocabulary: an error to decode, None as bytes.
    let tok = Tokenizer::from_metadata(&tiny_bpe()).unwrap();
    let n = tok.vocab_size() as u32;
    assert!(
        matches!(tok.decode(&[0, n], false), Err(TokenizerError::IdOutOfRange { id, .. }) if id == n)
    );
    assert!(tok.stream_decoder(false).push(u32::MAX).is_err());
    assert_eq!(tok.token_to_bytes(n), None);
}

/// Encoding speed on ~10 KB of mixed text (printed; unoptimised test builds are several times
/// slower than release).
#[test]
fn encode_speed() {
    let mut text = String::new();
    while text.len() < 10_000 {
        for t in VARIED {
            text.push_str(t);
            text.push('\n');
        }
    }
    for rel in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        let tok = load(rel);
        let t0 = Instant::now();
        let ids = tok.encode(&text, false, false);
        let encode = t0.elapsed();
        let t0 = Instant::now();
        let back = tok.decode(&ids, false).unwrap();
        let decode = t0.elapsed();
        assert_eq!(back, text);
        eprintln!(
            "{rel}: {} bytes -> {} tokens, encode {:.2} ms, decode {:.2} ms",
            text.len(),
            ids.len(),
            encode.as_secs_f64() * 1e3,
            decode.as_secs_f64() * 1e3
        );
        // Long runs of one character stay linear: one huge BPE word for SmolLM2, overlapping
        // candidates for Gemma's user-defined tokens (runs of up to 31 spaces or newlines).
        for run in [" ", "\n"] {
            let text = run.repeat(100_000);
            let t0 = Instant::now();
            let ids = tok.encode(&text, false, true);
            let took = t0.elapsed();
            assert_eq!(tok.decode(&ids, false).unwrap(), text);
            eprintln!(
                "{rel}: 100000 x {run:?} -> {} tokens, {:.1} ms",
                ids.len(),
                took.as_secs_f64() * 1e3
            );
        }
    }
}

/// Parsing special tokens: phi-3's special tokens strip the whitespace after them (llama.cpp sets
/// RSTRIP on them by model name), and SentencePiece puts a space before text after a special token.
#[test]
fn special_tokens_phi3() {
    let tok = load("vocab/ggml-vocab-phi-3.gguf");
    let id = |t: &str| tok.token_id(t).unwrap();
    let (user, end, assistant) = (id("<|user|>"), id("<|end|>"), id("<|assistant|>"));
    let hi = tok.encode("Hi", false, false); // "▁Hi"
    let got = tok.encode("<|user|>\nHi<|end|>\n<|assistant|>", true, true);
    let want = [&[tok.bos_id().unwrap(), user][..], &hi, &[end, assistant]].concat();
    assert_eq!(got, want);
    // Without parse_special the markers are plain text.
    let plain = tok.encode("<|user|>", false, false);
    assert!(plain.len() > 1 && !plain.contains(&user));
    // <|end|> and <|endoftext|> end generation.
    assert!(
        tok.is_eog(end) && tok.is_eog(id("<|endoftext|>")) && tok.is_eog(tok.eos_id().unwrap())
    );
    assert_eq!(tok.eot_id(), Some(end));
}
