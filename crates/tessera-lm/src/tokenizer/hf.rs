//! Hugging Face tokenizers: a `tokenizer.json` run by the `tokenizers` crate (pure Rust, its
//! `fancy-regex` engine), wrapped in the same [`Tokenizer`] as the GGUF vocabularies.
//!
//! The file's model, normalizer, pre-tokenizer and added tokens do the encoding. This side holds
//! what the rest of the crate asks of a tokenizer:
//! - token texts and attributes: added tokens are control tokens when `special`, user-defined
//!   otherwise (always matched in the text, as in llama.cpp); `<0xHH>` tokens of a byte-fallback
//!   model are byte tokens; the model's unknown token is unknown;
//! - every token's true bytes ([`Tokenizer::token_to_bytes`], which the streaming decoder uses),
//!   from the file's decoder: `ByteLevel` undoes GPT-2's byte alphabet; `Replace`, `Metaspace`,
//!   `ByteFallback`, `Fuse` and `Strip` (SentencePiece style) turn `▁` into a space and `<0xHH>`
//!   into its byte; `WordPiece` drops the `##` of word continuations and puts a space before the
//!   other tokens. A decoder outside these is an `Unsupported` error at load, never an
//!   approximation;
//! - special ids and flags from `tokenizer_config.json` (`bos_token`, `eos_token`, `unk_token`,
//!   `pad_token`, `sep_token`, `mask_token`, `add_bos_token`, `add_eos_token`). When the config
//!   sets neither flag, `encode(.., add_special = true, ..)` runs the file's post-processor (what
//!   `transformers` does), and BOS/EOS and the flags are read off what it adds; when it sets one,
//!   BOS/EOS are added as the flags say (as `transformers` rebuilds the post-processor from them);
//! - end-of-generation ids: EOS, the tokens llama.cpp recognises by their text (`<|eot_id|>`,
//!   `<|im_end|>`, `<end_of_turn>`, ...), and every `eos_token_id` of `generation_config.json` and
//!   `config.json`.
//!
//! Differences from `transformers`' `decode`: no `clean_up_tokenization_spaces`, and the space a
//! SentencePiece-style tokenizer puts before the text is removed after a rendered BOS too (as for
//! the GGUF vocabularies), so that `decode(encode(s)) == s`.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use serde::Deserialize;
use serde_json::Value;

use super::stream::Pieces;
use super::table::Strings;
use super::unicode::char_to_byte;
use super::vocab::{
    ATTR_BYTE, ATTR_CONTROL, ATTR_LSTRIP, ATTR_NORMAL, ATTR_RSTRIP, ATTR_UNKNOWN, ATTR_UNUSED,
    ATTR_USER_DEFINED, SpecialIds, Vocab, parse_byte_token,
};
use super::{Engine, Result, Tokenizer, TokenizerError, TokenizerKind};

/// The encoder of a tokenizer.json.
pub(super) struct HfEngine {
    /// Behind a lock because parsing special tokens or not is a setting of the tokenizer.
    tok: Mutex<tokenizers::Tokenizer>,
    /// `add_special` runs the file's post-processor (else BOS/EOS are added as the flags say).
    post_process: bool,
}

impl HfEngine {
    pub fn encode(
        &self,
        vocab: &Vocab,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>> {
        let ids = {
            let mut tok = self.tok.lock().unwrap_or_else(PoisonError::into_inner);
            encode_with(
                &mut tok,
                text,
                add_special && self.post_process,
                parse_special,
            )?
        };
        if !add_special || self.post_process {
            return Ok(ids);
        }
        let mut out = Vec::with_capacity(ids.len() + 2);
        if vocab.add_bos {
            out.extend(vocab.special.bos);
        }
        out.extend_from_slice(&ids);
        if vocab.add_eos {
            out.extend(vocab.special.eos);
        }
        Ok(out)
    }
}

fn encode_with(
    tok: &mut tokenizers::Tokenizer,
    text: &str,
    post_process: bool,
    parse_special: bool,
) -> Result<Vec<u32>> {
    tok.set_encode_special_tokens(!parse_special);
    let enc = tok
        .encode_fast(text, post_process)
        .map_err(|e| TokenizerError::Encode(e.to_string()))?;
    Ok(enc.get_ids().to_vec())
}

/// The parts of tokenizer.json read here (the `tokenizers` crate reads the whole file).
#[derive(Deserialize)]
struct FileInfo {
    #[serde(default)]
    added_tokens: Vec<AddedToken>,
    #[serde(default)]
    decoder: Option<Value>,
    model: ModelInfo,
}

#[derive(Deserialize)]
struct AddedToken {
    id: u32,
    content: String,
    #[serde(default)]
    special: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
}

#[derive(Deserialize)]
struct ModelInfo {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    unk_token: Option<String>,
    /// Unigram's unknown token.
    #[serde(default)]
    unk_id: Option<u32>,
    #[serde(default)]
    byte_fallback: bool,
}

/// What the decoder does to one token's text.
#[derive(Default)]
struct DecodeRules {
    /// GPT-2's byte alphabet back to bytes.
    byte_level: bool,
    /// String replacements, in order (`▁` -> space).
    replace: Vec<(String, String)>,
    /// `<0xHH>` tokens are that byte.
    byte_fallback: bool,
    /// The first space of the text is removed.
    strip_start: bool,
    /// WordPiece: continuations start with this; other tokens get a space before them.
    wordpiece_prefix: Option<String>,
}

fn read_decoder(d: &Value, rules: &mut DecodeRules) -> std::result::Result<(), String> {
    let kind = d.get("type").and_then(Value::as_str).unwrap_or("");
    let str_field = |name: &str| d.get(name).and_then(Value::as_str);
    match kind {
        "Sequence" => {
            let list = d
                .get("decoders")
                .and_then(Value::as_array)
                .ok_or("a Sequence decoder without a list of decoders")?;
            for inner in list {
                read_decoder(inner, rules)?;
            }
        }
        "ByteLevel" => rules.byte_level = true,
        "ByteFallback" => rules.byte_fallback = true,
        "Fuse" => {}
        "Replace" => {
            let pattern = d
                .get("pattern")
                .and_then(|p| p.get("String"))
                .and_then(Value::as_str)
                .ok_or("a Replace decoder with a regex pattern is not supported")?;
            let content = str_field("content").ok_or("a Replace decoder without content")?;
            rules
                .replace
                .push((pattern.to_string(), content.to_string()));
        }
        "Strip" => {
            let start = d.get("start").and_then(Value::as_u64).unwrap_or(0);
            let stop = d.get("stop").and_then(Value::as_u64).unwrap_or(0);
            match (str_field("content"), start, stop) {
                (_, 0, 0) => {}
                (Some(" "), 1, 0) => rules.strip_start = true,
                _ => return Err(format!("the Strip decoder {d} is not supported")),
            }
        }
        "Metaspace" => {
            let replacement = str_field("replacement").unwrap_or("▁");
            rules
                .replace
                .push((replacement.to_string(), " ".to_string()));
            let prepends = match str_field("prepend_scheme") {
                Some(scheme) => scheme != "never",
                None => d
                    .get("add_prefix_space")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            };
            rules.strip_start |= prepends;
        }
        "WordPiece" => {
            rules.wordpiece_prefix = Some(str_field("prefix").unwrap_or("##").to_string());
            rules.strip_start = true;
        }
        other => return Err(format!("the {other:?} decoder is not supported")),
    }
    Ok(())
}

/// Appends the bytes of the normal token `text`.
fn normal_piece(rules: &DecodeRules, text: &str, out: &mut Vec<u8>) {
    if let Some(prefix) = &rules.wordpiece_prefix {
        match text.strip_prefix(prefix.as_str()) {
            Some(rest) => out.extend_from_slice(rest.as_bytes()),
            None => {
                out.push(b' ');
                out.extend_from_slice(text.as_bytes());
            }
        }
        return;
    }
    let mut text = text.to_string();
    for (from, to) in &rules.replace {
        if !from.is_empty() {
            text = text.replace(from.as_str(), to);
        }
    }
    if rules.byte_level {
        for c in text.chars() {
            match char_to_byte(c) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// The text of a special token in tokenizer_config.json: a string or `{"content": ...}`.
fn token_text(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    }
}

/// Every id of an `eos_token_id` entry (a number or a list of numbers).
fn ids_of(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|i| i as u32).into_iter().collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|i| i as u32)
            .collect(),
        _ => Vec::new(),
    }
}

fn file_err(path: &str, message: impl Into<String>) -> TokenizerError {
    TokenizerError::File {
        path: path.to_string(),
        message: message.into(),
    }
}

/// Reads a JSON file that may be absent.
fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_err(&path.display().to_string(), e.to_string())),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| file_err(&path.display().to_string(), format!("not valid JSON: {e}")))
}

/// The chat template of a Hugging Face directory: `chat_template.jinja`, else
/// `tokenizer_config.json`'s `chat_template` (a string, or a list of `{"name", "template"}` of
/// which the one named "default" is taken; a list without one gives none). `None` when there is
/// no template; unreadable or malformed files are errors naming the file.
pub fn read_chat_template(dir: impl AsRef<Path>) -> Result<Option<String>> {
    let dir = dir.as_ref();
    let jinja = dir.join("chat_template.jinja");
    match std::fs::read_to_string(&jinja) {
        Ok(t) => return Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_err(&jinja.display().to_string(), e.to_string())),
    }
    let cfg_path = dir.join("tokenizer_config.json");
    let Some(cfg) = read_json_opt(&cfg_path)? else {
        return Ok(None);
    };
    let bad = |what: &str| file_err(&cfg_path.display().to_string(), what.to_string());
    match cfg.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(list)) => {
            for entry in list {
                let name = entry.get("name").and_then(Value::as_str);
                let template = entry.get("template").and_then(Value::as_str);
                match (name, template) {
                    (Some("default"), Some(t)) => return Ok(Some(t.to_string())),
                    (Some(_), Some(_)) => {}
                    _ => {
                        return Err(bad(
                            "chat_template: a list entry is not {\"name\": ..., \"template\": ...}",
                        ));
                    }
                }
            }
            Ok(None)
        }
        Some(_) => Err(bad("chat_template is neither a string nor a list")),
    }
}

impl Tokenizer {
    /// Reads a Hugging Face tokenizer from a model directory: `tokenizer.json`, with
    /// `tokenizer_config.json` (special tokens, `add_bos_token`/`add_eos_token`) and the
    /// `eos_token_id`s of `generation_config.json` and `config.json` when present. See the
    /// module docs of `tokenizer/hf.rs` for what is read from where.
    pub fn from_hf_dir(dir: impl AsRef<Path>) -> Result<Tokenizer> {
        let dir = dir.as_ref();
        let path = dir.join("tokenizer.json");
        let label = path.display().to_string();
        let json = std::fs::read(&path).map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                "no such file (a Hugging Face tokenizer is a tokenizer.json)".to_string()
            } else {
                e.to_string()
            };
            file_err(&label, why)
        })?;
        let config = read_json_opt(&dir.join("tokenizer_config.json"))?;
        let mut extra_eos = Vec::new();
        let mut bos_fallback = None;
        for name in ["generation_config.json", "config.json"] {
            if let Some(c) = read_json_opt(&dir.join(name))? {
                extra_eos.extend(ids_of(c.get("eos_token_id")));
                if bos_fallback.is_none() {
                    bos_fallback = ids_of(c.get("bos_token_id")).first().copied();
                }
            }
        }
        Tokenizer::hf_build(
            &label,
            &json,
            config.as_ref(),
            &extra_eos,
            bos_fallback,
            &dir.join("tokenizer_config.json").display().to_string(),
        )
    }

    /// Builds a tokenizer from the bytes of a tokenizer.json and, optionally, the parsed
    /// tokenizer_config.json; `extra_stop_ids` also end generation (a model config's
    /// `eos_token_id`s; ids outside the vocabulary are ignored).
    pub fn from_hf_json(
        tokenizer_json: &[u8],
        tokenizer_config: Option<&Value>,
        extra_stop_ids: &[u32],
    ) -> Result<Tokenizer> {
        Tokenizer::hf_build(
            "tokenizer.json",
            tokenizer_json,
            tokenizer_config,
            extra_stop_ids,
            None,
            "tokenizer_config.json",
        )
    }

    fn hf_build(
        label: &str,
        json: &[u8],
        config: Option<&Value>,
        extra_eos: &[u32],
        bos_fallback: Option<u32>,
        config_label: &str,
    ) -> Result<Tokenizer> {
        let info: FileInfo = serde_json::from_slice(json)
            .map_err(|e| file_err(label, format!("not a tokenizer.json: {e}")))?;
        let mut tok = tokenizers::Tokenizer::from_bytes(json)
            .map_err(|e| file_err(label, format!("the tokenizers library rejects it: {e}")))?;

        let model_name = match &info.model.kind {
            Some(k) => k.clone(),
            None => match tok.get_model() {
                tokenizers::ModelWrapper::BPE(_) => "BPE".to_string(),
                tokenizers::ModelWrapper::WordPiece(_) => "WordPiece".to_string(),
                tokenizers::ModelWrapper::Unigram(_) => "Unigram".to_string(),
                tokenizers::ModelWrapper::WordLevel(_) => "WordLevel".to_string(),
            },
        };
        let kind = match model_name.as_str() {
            "BPE" => TokenizerKind::Bpe,
            "WordPiece" => TokenizerKind::Wpm,
            "Unigram" => TokenizerKind::Unigram,
            other => {
                return Err(TokenizerError::Unsupported(format!(
                    "{label}: the {other} model is not supported (BPE, WordPiece and Unigram are)"
                )));
            }
        };
        let mut rules = DecodeRules::default();
        match &info.decoder {
            Some(d) if !d.is_null() => read_decoder(d, &mut rules)
                .map_err(|e| TokenizerError::Unsupported(format!("{label}: {e}")))?,
            _ => {
                return Err(TokenizerError::Unsupported(format!(
                    "{label}: the file has no decoder, so the bytes of its tokens are unknown"
                )));
            }
        }

        // Token texts by id (with the added tokens); an id nothing names gets a placeholder.
        let by_text = tok.get_vocab(true);
        let n = by_text
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        let mut texts: Vec<Option<String>> = vec![None; n];
        for (text, id) in by_text {
            texts[id as usize] = Some(text);
        }
        let mut tokens = Strings::with_capacity(n);
        let mut attrs = vec![ATTR_NORMAL; n];
        for (id, text) in texts.into_iter().enumerate() {
            let text = text.unwrap_or_else(|| {
                attrs[id] = ATTR_UNUSED;
                format!("<tessera:no token {id}>")
            });
            if let Err(other) = tokens.insert(&text) {
                return Err(file_err(
                    label,
                    format!("tokens {other} and {id} have the same text {text:?}"),
                ));
            }
        }
        let byte_tokens = info.model.byte_fallback || rules.byte_fallback;
        if byte_tokens {
            for (id, text) in tokens.list().iter().enumerate() {
                if attrs[id] == ATTR_NORMAL && parse_byte_token(text).is_some() {
                    attrs[id] = ATTR_BYTE;
                }
            }
        }
        let mut special = SpecialIds {
            unk: match (&info.model.unk_token, info.model.unk_id) {
                (Some(t), _) => tokens.get(t),
                (None, Some(id)) if (id as usize) < n => Some(id),
                _ => None,
            },
            ..SpecialIds::default()
        };
        if let Some(unk) = special.unk {
            attrs[unk as usize] = ATTR_UNKNOWN;
        }
        for t in &info.added_tokens {
            let Some(a) = attrs.get_mut(t.id as usize) else {
                continue;
            };
            if tokens.list()[t.id as usize] != t.content {
                continue;
            }
            *a = if t.special {
                ATTR_CONTROL
            } else {
                ATTR_USER_DEFINED
            };
            if t.lstrip {
                *a |= ATTR_LSTRIP;
            }
            if t.rstrip {
                *a |= ATTR_RSTRIP;
            }
        }

        // What the post-processor adds around a text.
        let with = encode_with(&mut tok, "a", true, true)?;
        let without = encode_with(&mut tok, "a", false, true)?;
        let (prefix, suffix): (&[u32], &[u32]) =
            match (0..=with.len().saturating_sub(without.len()))
                .find(|&i| with[i..].starts_with(&without))
            {
                Some(i) => (&with[..i], &with[i + without.len()..]),
                None => (&[], &[]),
            };

        let cfg_token = |key: &str| -> Result<Option<u32>> {
            let Some(v) = config.and_then(|c| c.get(key)) else {
                return Ok(None);
            };
            if v.is_null() {
                return Ok(None);
            }
            let text = token_text(v)
                .ok_or_else(|| file_err(config_label, format!("{key} is not a token: {v}")))?;
            tokens.get(text).map(Some).ok_or_else(|| {
                file_err(
                    config_label,
                    format!("{key} {text:?} is not a token of {label}"),
                )
            })
        };
        let cfg_flag = |key: &str| -> Result<Option<bool>> {
            match config.and_then(|c| c.get(key)) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(v) => Err(file_err(
                    config_label,
                    format!("{key} is {v}, expected true or false"),
                )),
            }
        };
        special.bos = cfg_token("bos_token")?
            .or_else(|| prefix.first().copied())
            .or_else(|| bos_fallback.filter(|&id| (id as usize) < n));
        special.eos = cfg_token("eos_token")?
            .or_else(|| suffix.last().copied())
            .or_else(|| extra_eos.iter().copied().find(|&id| (id as usize) < n));
        if let Some(unk) = cfg_token("unk_token")? {
            special.unk = Some(unk);
        }
        special.pad = cfg_token("pad_token")?;
        special.sep = cfg_token("sep_token")?;
        special.mask = cfg_token("mask_token")?;
        let (flag_bos, flag_eos) = (cfg_flag("add_bos_token")?, cfg_flag("add_eos_token")?);
        let post_process = flag_bos.is_none() && flag_eos.is_none();
        let add_bos = flag_bos.unwrap_or(!prefix.is_empty());
        let add_eos = flag_eos.unwrap_or(!suffix.is_empty());

        let max_token_len = tokens.list().iter().map(String::len).max().unwrap_or(0);
        let mut vocab = Vocab {
            kind,
            model: model_name,
            pre: "tokenizer.json".to_string(),
            tokens,
            scores: vec![0.0; n],
            attrs: Vec::new(),
            special,
            add_bos,
            add_eos,
            add_space_prefix: rules.strip_start,
            escape_whitespaces: false,
            ignore_merges: false,
            byte_encode: rules.byte_level,
            lowercase: false,
            strip_accents: false,
            splits: Vec::new(),
            eog: Vec::new(),
            max_token_len,
        };
        // llama.cpp's inference of end-of-turn and end-of-generation tokens by their text, without
        // its attribute changes: which tokens are special is the file's to say (Gemma's "</s>" is
        // an ordinary added token there, a control token for llama.cpp).
        let mut scratch = attrs.clone();
        vocab.infer_special(&mut scratch);
        vocab.attrs = attrs;
        vocab
            .eog
            .extend(extra_eos.iter().copied().filter(|&id| (id as usize) < n));
        vocab.eog.sort_unstable();
        vocab.eog.dedup();

        let pieces = Pieces::build(n, |id, out| {
            let text = vocab.text(id as u32);
            let attr = vocab.attrs[id];
            if attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED) != 0 {
                out.extend_from_slice(text.as_bytes());
            } else if attr & ATTR_BYTE != 0 {
                out.extend(parse_byte_token(text));
            } else if attr & ATTR_NORMAL != 0 {
                normal_piece(&rules, text, out);
            }
        });
        Ok(Tokenizer {
            vocab,
            engine: Engine::Hf(Box::new(HfEngine {
                tok: Mutex::new(tok),
                post_process,
            })),
            pieces,
            strip_leading_space: rules.strip_start,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A tiny byte-level BPE tokenizer.json: "a", "b", "ab", "Ġ" (space) and two added tokens.
    fn tiny(decoder: &str) -> String {
        format!(
            r#"{{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [
    {{"id": 4, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}},
    {{"id": 5, "content": "<think>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false}}
  ],
  "normalizer": null,
  "pre_tokenizer": {{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}},
  "post_processor": {{"type": "TemplateProcessing",
    "single": [{{"SpecialToken": {{"id": "<s>", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}],
    "pair": [{{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"Sequence": {{"id": "B", "type_id": 1}}}}],
    "special_tokens": {{"<s>": {{"id": "<s>", "ids": [4], "tokens": ["<s>"]}}}}}},
  "decoder": {decoder},
  "model": {{"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
    "vocab": {{"a": 0, "b": 1, "ab": 2, "Ġ": 3}},
    "merges": [["a", "b"]]}}
}}"#
        )
    }

    const BYTE_LEVEL: &str = r#"{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}"#;

    #[test]
    fn tiny_byte_level() {
        let tok = Tokenizer::from_hf_json(tiny(BYTE_LEVEL).as_bytes(), None, &[]).unwrap();
        assert_eq!(tok.vocab_size(), 6);
        assert_eq!(tok.kind(), TokenizerKind::Bpe);
        assert_eq!(tok.encode("ab a", false, false), vec![2, 3, 0]);
        // The post-processor's BOS, read off what it adds.
        assert_eq!((tok.bos_id(), tok.add_bos()), (Some(4), true));
        assert_eq!(tok.encode("ab", true, false), vec![4, 2]);
        // Special tokens in the text: parsed only when asked; user-defined ones always.
        assert_eq!(tok.encode("<s>ab<think>", false, true), vec![4, 2, 5]);
        assert_ne!(tok.encode("<s>ab", false, false)[0], 4);
        assert_eq!(tok.encode("<s>ab<think>", false, false).last(), Some(&5));
        assert!(tok.is_control(4) && !tok.is_control(5));
        assert_eq!(tok.token_to_bytes(3), Some(&b" "[..]));
        assert_eq!(tok.decode(&[4, 2, 3, 0], true).unwrap(), "ab a");
        assert_eq!(tok.decode(&[4, 2, 3, 0], false).unwrap(), "<s>ab a");
    }

    #[test]
    fn config_flags_override_the_post_processor() {
        let cfg: Value = serde_json::json!({
            "bos_token": {"content": "<s>"}, "eos_token": "<think>",
            "add_bos_token": false, "add_eos_token": true
        });
        let tok =
            Tokenizer::from_hf_json(tiny(BYTE_LEVEL).as_bytes(), Some(&cfg), &[1, 99]).unwrap();
        assert_eq!(tok.encode("ab", true, false), vec![2, 5]);
        assert_eq!(tok.stop_ids(), &[1, 5]);
    }

    #[test]
    fn bad_files_are_errors() {
        let err = |json: &str, cfg: Option<Value>| match Tokenizer::from_hf_json(
            json.as_bytes(),
            cfg.as_ref(),
            &[],
        ) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err("{", None).contains("not a tokenizer.json"));
        let e = err(&tiny(r#"{"type": "BPEDecoder", "suffix": "</w>"}"#), None);
        assert!(e.contains("\"BPEDecoder\" decoder is not supported"), "{e}");
        let e = err(&tiny(r#"{"type": "CTC"}"#), None);
        assert!(e.contains("the tokenizers library rejects it"), "{e}");
        let e = err(&tiny("null"), None);
        assert!(e.contains("no decoder"), "{e}");
        let e = err(
            &tiny(BYTE_LEVEL),
            Some(serde_json::json!({"bos_token": "<nope>"})),
        );
        assert!(
            e.contains("tokenizer_config.json: bos_token \"<nope>\""),
            "{e}"
        );
        let e = err(
            &tiny(BYTE_LEVEL),
            Some(serde_json::json!({"add_bos_token": "yes"})),
        );
        assert!(e.contains("add_bos_token"), "{e}");
    }

    #[test]
    fn chat_template_sources() {
        let dir = std::env::temp_dir().join(format!("tessera-hf-tpl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("tokenizer_config.json");
        assert_eq!(read_chat_template(&dir).unwrap(), None);
        std::fs::write(&cfg, r#"{"chat_template": "T"}"#).unwrap();
        assert_eq!(read_chat_template(&dir).unwrap().as_deref(), Some("T"));
        std::fs::write(
            &cfg,
            r#"{"chat_template": [{"name": "tool_use", "template": "U"}, {"name": "default", "template": "D"}]}"#,
        )
        .unwrap();
        assert_eq!(read_chat_template(&dir).unwrap().as_deref(), Some("D"));
        std::fs::write(&cfg, r#"{"chat_template": 3}"#).unwrap();
        assert!(read_chat_template(&dir).is_err());
        std::fs::write(&cfg, "{").unwrap();
        let e = read_chat_template(&dir).unwrap_err().to_string();
        assert!(e.contains("tokenizer_config.json: not valid JSON"), "{e}");
        std::fs::write(dir.join("chat_template.jinja"), "J").unwrap();
        assert_eq!(read_chat_template(&dir).unwrap().as_deref(), Some("J"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
