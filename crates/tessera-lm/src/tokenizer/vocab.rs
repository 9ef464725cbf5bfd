//! The vocabulary as llama.cpp's `llama_vocab::load` reads it from GGUF metadata: token texts,
//! scores and attributes, the special token ids, the `add_*` flags, the end-of-generation set, and
//! the pre-tokenizer chosen by `tokenizer.ggml.pre`.

use tessera_io::gguf::Metadata;

use super::pretokenize::{Class, Pattern, Split};
use super::table::Strings;
use super::{Result, TokenizerError, TokenizerKind};

// Token attributes (llama.cpp's `llama_token_attr` bits).
pub(super) const ATTR_UNKNOWN: u32 = 1 << 0;
pub(super) const ATTR_UNUSED: u32 = 1 << 1;
pub(super) const ATTR_NORMAL: u32 = 1 << 2;
pub(super) const ATTR_CONTROL: u32 = 1 << 3;
pub(super) const ATTR_USER_DEFINED: u32 = 1 << 4;
pub(super) const ATTR_BYTE: u32 = 1 << 5;
pub(super) const ATTR_LSTRIP: u32 = 1 << 7;
pub(super) const ATTR_RSTRIP: u32 = 1 << 8;

const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";

/// Texts llama.cpp recognises as end-of-turn tokens when `eot_token_id` is absent, in the order
/// this crate prefers them (llama.cpp takes whichever its hash map yields first).
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// Texts that end generation (llama.cpp's `special_eog_ids` inference).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

type Slot = fn(&mut SpecialIds) -> &mut Option<u32>;

/// The metadata keys of special token ids (the last three are old names of the FIM ones).
const SPECIAL_KEYS: [(&str, Slot); 17] = [
    ("tokenizer.ggml.bos_token_id", |s| &mut s.bos),
    ("tokenizer.ggml.eos_token_id", |s| &mut s.eos),
    ("tokenizer.ggml.eot_token_id", |s| &mut s.eot),
    ("tokenizer.ggml.eom_token_id", |s| &mut s.eom),
    ("tokenizer.ggml.unknown_token_id", |s| &mut s.unk),
    ("tokenizer.ggml.seperator_token_id", |s| &mut s.sep),
    ("tokenizer.ggml.padding_token_id", |s| &mut s.pad),
    ("tokenizer.ggml.mask_token_id", |s| &mut s.mask),
    ("tokenizer.ggml.fim_pre_token_id", |s| &mut s.fim_pre),
    ("tokenizer.ggml.fim_suf_token_id", |s| &mut s.fim_suf),
    ("tokenizer.ggml.fim_mid_token_id", |s| &mut s.fim_mid),
    ("tokenizer.ggml.fim_pad_token_id", |s| &mut s.fim_pad),
    ("tokenizer.ggml.fim_rep_token_id", |s| &mut s.fim_rep),
    ("tokenizer.ggml.fim_sep_token_id", |s| &mut s.fim_sep),
    ("tokenizer.ggml.prefix_token_id", |s| &mut s.fim_pre),
    ("tokenizer.ggml.suffix_token_id", |s| &mut s.fim_suf),
    ("tokenizer.ggml.middle_token_id", |s| &mut s.fim_mid),
];

/// Special token ids (None: the vocabulary has none).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// Everything read from the metadata.
pub(super) struct Vocab {
    pub kind: TokenizerKind,
    /// `tokenizer.ggml.model`
    pub model: String,
    /// `tokenizer.ggml.pre` as interpreted ("default" when missing)
    pub pre: String,
    /// Token texts; a token's id is its index.
    pub tokens: Strings,
    pub scores: Vec<f32>,
    pub attrs: Vec<u32>,
    pub special: SpecialIds,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    /// BPE: spaces become `▁` before splitting (SentencePiece-style BPE, e.g. Gemma 4).
    pub escape_whitespaces: bool,
    /// BPE: a whole pre-tokenized word that is a token is emitted as is.
    pub ignore_merges: bool,
    /// BPE: words are written in GPT-2's byte alphabet before merging.
    pub byte_encode: bool,
    /// WPM normalizer options.
    pub lowercase: bool,
    pub strip_accents: bool,
    pub splits: Vec<Split>,
    /// Sorted end-of-generation ids.
    pub eog: Vec<u32>,
    pub max_token_len: usize,
}

/// What a pre-tokenizer name sets.
pub(super) struct PreConfig {
    pub splits: Vec<Split>,
    ignore_merges: bool,
    add_bos: bool,
    byte_encode: bool,
    escape_whitespaces: bool,
    no_bos: bool,
}

/// The splits and flags `tokenizer.ggml.pre` = `pre` selects (None: not supported).
pub(super) fn pre_config(pre: &str) -> Option<PreConfig> {
    use Class::*;
    use Pattern::*;
    let gpt2 = vec![Split::Gpt2];
    let llama3 = vec![Split::Llama3 {
        max_digits: 3,
        marks: false,
    }];
    let qwen2 = vec![Split::Llama3 {
        max_digits: 1,
        marks: false,
    }];
    let digits_gpt2 = vec![Split::Pattern(One(Number)), Split::Gpt2];
    let base = |splits: Vec<Split>| PreConfig {
        splits,
        ignore_merges: false,
        add_bos: false,
        byte_encode: true,
        escape_whitespaces: false,
        no_bos: false,
    };
    Some(match pre {
        "default" => base(vec![
            Split::Pattern(Run(PunctDefault)),
            Split::Gpt2,
            Split::Pattern(Run(Number)),
            Split::Pattern(AsciiDigits3),
        ]),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" => PreConfig {
            ignore_merges: true,
            add_bos: true,
            ..base(llama3)
        },
        "dbrx" | "smaug-bpe" => base(llama3),
        "chatglm-bpe" => PreConfig {
            no_bos: true,
            ..base(llama3)
        },
        "glm4" | "glm5" => PreConfig {
            no_bos: true,
            ignore_merges: true,
            ..base(llama3)
        },
        "deepseek-llm" => base(vec![
            Split::Pattern(One(CrLf)),
            Split::Pattern(OptWsRun(DeepseekLetters)),
            Split::Pattern(OptWsRun(DeepseekPunct)),
            Split::Pattern(TrailingWs),
            Split::Pattern(Run(Cjk)),
            Split::Pattern(Run(Number)),
        ]),
        "deepseek-coder" => base(vec![
            Split::Pattern(One(CrLf)),
            Split::Pattern(OptWsRun(Letter)),
            Split::Pattern(OptWsRun(Punct)),
            Split::Pattern(Run(Cjk)),
            Split::Pattern(One(Number)),
        ]),
        "falcon" => base(vec![
            Split::Pattern(Run(PunctFalcon)),
            Split::Gpt2,
            Split::Pattern(AsciiDigits3),
        ]),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b"
        | "mellum2" => base(digits_gpt2),
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de"
        | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe"
        | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling" | "exaone4" => base(gpt2),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2" | "hunyuan"
        | "solar-open" | "grok-2" => base(qwen2),
        "qwen35" => base(vec![Split::Llama3 {
            max_digits: 1,
            marks: true,
        }]),
        "laguna" => base(vec![
            Split::Newlines,
            Split::Llama3 {
                max_digits: 1,
                marks: false,
            },
        ]),
        "poro-chat" | "bloom" | "gpt3-finnish" => base(vec![Split::Pattern(OptSpaceRun(NotBreak))]),
        "viking" => base(vec![
            Split::Pattern(OptSpaceRun(NotBreak)),
            Split::Pattern(One(Number)),
        ]),
        "gemma4" | "granite-embed-multi-311m" | "sarvam-moe" => PreConfig {
            byte_encode: false,
            escape_whitespaces: true,
            ..base(vec![Split::Newlines])
        },
        _ => return None,
    })
}

fn vocab_err(msg: impl Into<String>) -> TokenizerError {
    TokenizerError::Vocab(msg.into())
}

impl Vocab {
    pub fn load(md: &Metadata) -> Result<Vocab> {
        let model = md.str("tokenizer.ggml.model")?.to_string();
        let mut pre = md.str_opt("tokenizer.ggml.pre")?.unwrap_or("").to_string();

        // Per-model defaults, as llama.cpp sets them before reading the metadata.
        let mut special = SpecialIds::default();
        let (kind, mut add_bos, mut add_space_prefix) = match model.as_str() {
            "llama" => {
                special.bos = Some(1);
                special.eos = Some(2);
                special.unk = Some(0);
                (TokenizerKind::Spm, true, true)
            }
            "bert" => {
                special.bos = Some(101);
                special.unk = Some(100);
                special.sep = Some(102);
                special.pad = Some(0);
                special.mask = Some(103);
                (TokenizerKind::Wpm, true, false)
            }
            "gpt2" => {
                special.bos = Some(11);
                special.eos = Some(11);
                (TokenizerKind::Bpe, false, false)
            }
            "gemma4" => {
                pre = "gemma4".to_string();
                (TokenizerKind::Bpe, false, false)
            }
            other => {
                return Err(TokenizerError::Unsupported(format!(
                    "unsupported tokenizer model '{other}' (supported: llama (SentencePiece), gpt2 (byte-level BPE), gemma4, bert (WordPiece))"
                )));
            }
        };
        if pre.is_empty() {
            pre = "default".to_string();
        }
        let mut config = PreConfig {
            splits: Vec::new(),
            ignore_merges: false,
            add_bos: false,
            byte_encode: true,
            escape_whitespaces: false,
            no_bos: false,
        };
        if kind == TokenizerKind::Bpe {
            config = pre_config(&pre).ok_or_else(|| {
                TokenizerError::Unsupported(format!(
                    "unsupported pre-tokenizer '{pre}' (tokenizer.ggml.pre)"
                ))
            })?;
            add_bos = config.add_bos;
            if config.no_bos {
                special.bos = None;
            }
        }
        let mut add_eos = false;

        let tokens = read_tokens(md)?;
        let n = tokens.len();
        let scores = read_scores(md, n)?;
        let mut attrs = read_attrs(md, n)?;
        let max_token_len = tokens.list().iter().map(String::len).max().unwrap_or(0);

        if let Some(v) = md.bool_opt("tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }

        // Default ids outside the vocabulary are dropped; ids from the metadata must be inside.
        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        for slot in [
            &mut special.bos,
            &mut special.eos,
            &mut special.unk,
            &mut special.sep,
            &mut special.pad,
            &mut special.mask,
        ] {
            *slot = in_range(*slot);
        }
        for (key, slot) in SPECIAL_KEYS {
            let slot = slot(&mut special);
            let Some(value) = md.get(key) else { continue };
            let id = value.as_int().ok_or_else(|| {
                vocab_err(format!(
                    "{key} is {:?}, expected an integer",
                    value.value_type()
                ))
            })?;
            if id < 0 {
                // -1 is how some converters write "none".
                continue;
            }
            if id >= n as i128 {
                return Err(vocab_err(format!(
                    "{key} = {id} is out of range (vocabulary size {n})"
                )));
            }
            *slot = Some(id as u32);
        }
        if let Some(v) = md.bool_opt("tokenizer.ggml.add_bos_token")? {
            add_bos = v;
        }
        if let Some(v) = md.bool_opt("tokenizer.ggml.add_eos_token")? {
            add_eos = v;
        }
        if pre == "gemma4" || pre == "granite-embed-multi-311m" {
            add_bos = true;
        }
        let lowercase = md
            .bool_opt("tokenizer.ggml.normalizer.lowercase")?
            .unwrap_or(true);
        let strip_accents = md
            .bool_opt("tokenizer.ggml.normalizer.strip_accents")?
            .unwrap_or(lowercase);

        let mut vocab = Vocab {
            kind,
            model,
            pre,
            tokens,
            scores,
            attrs: Vec::new(),
            special,
            add_bos,
            add_eos,
            add_space_prefix,
            escape_whitespaces: config.escape_whitespaces,
            ignore_merges: config.ignore_merges,
            byte_encode: config.byte_encode,
            lowercase,
            strip_accents,
            splits: config.splits,
            eog: Vec::new(),
            max_token_len,
        };
        vocab.infer_special(&mut attrs);
        vocab.attrs = attrs;
        vocab.model_attrs(md)?;
        vocab.check_byte_tokens()?;
        Ok(vocab)
    }

    pub fn id(&self, text: &str) -> Option<u32> {
        self.tokens.get(text)
    }

    pub fn text(&self, id: u32) -> &str {
        &self.tokens.list()[id as usize]
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// llama.cpp's text-based inference of end-of-turn, FIM and end-of-generation tokens; tokens
    /// it recognises become control tokens.
    pub(super) fn infer_special(&mut self, attrs: &mut [u32]) {
        let ids = &self.tokens;
        let find = |slot: &mut Option<u32>, texts: &[&str], attrs: &mut [u32]| {
            if slot.is_none()
                && let Some(id) = texts.iter().find_map(|t| ids.get(t))
            {
                *slot = Some(id);
                attrs[id as usize] |= ATTR_CONTROL;
            }
        };
        let s = &mut self.special;
        find(&mut s.eot, EOT_TEXTS, attrs);
        find(&mut s.eom, &["<|eom_id|>"], attrs);
        find(&mut s.fim_pre, FIM_PRE_TEXTS, attrs);
        find(&mut s.fim_suf, FIM_SUF_TEXTS, attrs);
        find(&mut s.fim_mid, FIM_MID_TEXTS, attrs);
        find(&mut s.fim_pad, FIM_PAD_TEXTS, attrs);
        find(&mut s.fim_rep, FIM_REP_TEXTS, attrs);
        find(&mut s.fim_sep, FIM_SEP_TEXTS, attrs);

        // Control tokens named "unused..." are unused.
        for (text, attr) in ids.list().iter().zip(attrs.iter_mut()) {
            if *attr & ATTR_CONTROL != 0 && text.contains("unused") {
                *attr |= ATTR_UNUSED;
            }
        }

        let mut eog: Vec<u32> = [s.fim_pad, s.fim_rep, s.fim_sep]
            .into_iter()
            .flatten()
            .collect();
        for text in EOG_TEXTS {
            if let Some(id) = ids.get(text) {
                eog.push(id);
                attrs[id as usize] |= ATTR_CONTROL;
            }
        }
        // gpt-oss: these render even when special tokens are skipped.
        for text in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(id) = ids.get(text) {
                attrs[id as usize] = ATTR_USER_DEFINED;
            }
        }
        eog.extend([s.eos, s.eot, s.eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();

        let text_of = |id: u32| ids.list()[id as usize].as_str();
        let has = |eog: &[u32], t: &str| eog.iter().any(|&id| text_of(id) == t);
        let remove = |eog: &mut Vec<u32>, attrs: &mut [u32], t: &str, attr: u32| {
            if let Some(pos) = eog.iter().position(|&id| text_of(id) == t) {
                attrs[eog[pos] as usize] = attr;
                eog.remove(pos);
            }
        };
        // o200k_harmony / solar-open: "<|end|>" ends a message, not the generation.
        if (has(&eog, "<|return|>") && has(&eog, "<|call|>") && has(&eog, "<|end|>"))
            || (has(&eog, "<|calls|>") && has(&eog, "<|flush|>") && has(&eog, "<|end|>"))
        {
            remove(&mut eog, attrs, "<|end|>", ATTR_USER_DEFINED);
        }
        // Gemma 4 / PLaMo 2: "</s>" is an ordinary token there.
        if has(&eog, "<|tool_response>") || has(&eog, "<|plamo:eos|>") {
            remove(&mut eog, attrs, "</s>", ATTR_NORMAL);
        }
        self.eog = eog;
    }

    /// Per-model attributes llama.cpp sets by model name (they matter when special tokens are
    /// parsed: whitespace next to them is stripped).
    fn model_attrs(&mut self, md: &tessera_io::gguf::Metadata) -> Result<()> {
        let name = md.str_opt("general.name")?.unwrap_or("").to_lowercase();
        let arch = md.str_opt("general.architecture")?.unwrap_or("");
        let pre = self.pre.as_str();
        let set = |attrs: &mut Vec<u32>, ids: &Strings, text: &str, attr: u32, on: bool| {
            if let Some(id) = ids.get(text) {
                let a = &mut attrs[id as usize];
                *a = if on { *a | attr } else { *a & !attr };
            }
        };
        if ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
            .iter()
            .any(|p| pre.contains(p))
            || ["nomic-bert-moe", "jina-bert-v3"]
                .iter()
                .any(|a| arch.contains(a))
        {
            set(&mut self.attrs, &self.tokens, "<mask>", ATTR_LSTRIP, true);
        } else if name.contains("phi-3") || name.contains("phi3") {
            for a in self.attrs.iter_mut() {
                if *a & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN) != 0 {
                    *a |= ATTR_RSTRIP;
                }
            }
            set(&mut self.attrs, &self.tokens, "</s>", ATTR_RSTRIP, true);
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                set(&mut self.attrs, &self.tokens, t, ATTR_RSTRIP, false);
            }
        } else if name.contains("modern-bert") {
            set(&mut self.attrs, &self.tokens, "[MASK]", ATTR_LSTRIP, true);
        }
        Ok(())
    }

    /// Byte tokens must read `<0xHH>` (SentencePiece style).
    fn check_byte_tokens(&self) -> Result<()> {
        for (i, (t, &a)) in self.tokens.list().iter().zip(&self.attrs).enumerate() {
            if a & ATTR_BYTE != 0 && parse_byte_token(t).is_none() {
                return Err(vocab_err(format!(
                    "{KEY_TYPES}: token {i} '{t}' is a byte token but not of the form <0xHH>"
                )));
            }
        }
        Ok(())
    }
}

/// The byte of a `<0xHH>` token.
pub(super) fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn read_tokens(md: &Metadata) -> Result<Strings> {
    let texts = md.strings(KEY_TOKENS)?;
    if texts.is_empty() {
        return Err(vocab_err(format!("{KEY_TOKENS} is empty")));
    }
    if texts.len() >= u32::MAX as usize {
        return Err(vocab_err(format!(
            "{KEY_TOKENS} has {} tokens, more than ids can hold",
            texts.len()
        )));
    }
    let mut tokens = Strings::with_capacity(texts.len());
    for (i, t) in texts.into_iter().enumerate() {
        // As llama.cpp: an empty text gets a placeholder.
        let empty;
        let t = if t.is_empty() {
            empty = format!("[EMPTY_{i}]");
            empty.as_str()
        } else {
            t
        };
        if let Err(first) = tokens.insert(t) {
            return Err(vocab_err(format!(
                "{KEY_TOKENS}: tokens {first} and {i} are both {t:?}"
            )));
        }
    }
    Ok(tokens)
}

fn read_scores(md: &Metadata, n: usize) -> Result<Vec<f32>> {
    if md.get(KEY_SCORES).is_none() {
        return Ok(vec![0.0; n]);
    }
    let scores = md.numbers(KEY_SCORES)?;
    if scores.len() < n {
        return Err(vocab_err(format!(
            "{KEY_SCORES} has {} entries for {n} tokens",
            scores.len()
        )));
    }
    Ok(scores[..n].iter().map(|&s| s as f32).collect())
}

fn read_attrs(md: &Metadata, n: usize) -> Result<Vec<u32>> {
    if md.get(KEY_TYPES).is_none() {
        return Ok(vec![ATTR_NORMAL; n]);
    }
    let types = md.numbers(KEY_TYPES)?;
    if types.len() < n {
        return Err(vocab_err(format!(
            "{KEY_TYPES} has {} entries for {n} tokens",
            types.len()
        )));
    }
    Ok(types[..n]
        .iter()
        .map(|&t| match t as i64 {
            1 => ATTR_NORMAL,
            2 => ATTR_UNKNOWN,
            3 => ATTR_CONTROL,
            4 => ATTR_USER_DEFINED,
            5 => ATTR_UNUSED,
            6 => ATTR_BYTE,
            _ => 0,
        })
        .collect())
}
