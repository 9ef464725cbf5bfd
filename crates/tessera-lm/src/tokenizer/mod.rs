//! Tokenizers read from a GGUF file's vocabulary, producing the same token ids as llama.cpp, or
//! from a Hugging Face `tokenizer.json` ([`Tokenizer::from_hf_dir`], run by the `tokenizers`
//! crate; see `hf.rs`).
//!
//! ```no_run
//! use tessera_io::gguf::GgufFile;
//! use tessera_lm::tokenizer::Tokenizer;
//!
//! let file = GgufFile::open("model.gguf")?;
//! let tok = Tokenizer::from_gguf(&file)?;
//! let ids = tok.encode("The capital of France is", true, false);
//! let text = tok.decode(&ids, true)?;
//! let mut stream = tok.stream_decoder(true);
//! for &id in &ids {
//!     print!("{}", stream.push(id)?);
//! }
//! print!("{}", stream.flush());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # API
//!
//! - [`Tokenizer::from_gguf`] / [`Tokenizer::from_metadata`]: load (`tokenizer.ggml.*` keys).
//! - [`Tokenizer::from_hf_dir`] / [`Tokenizer::from_hf_json`]: load a Hugging Face tokenizer
//!   (`tokenizer.json`, `tokenizer_config.json`); [`read_chat_template`] reads its chat template.
//!   Every accessor below works the same on it; `encode` follows Hugging Face `tokenizers`
//!   (`parse_special = false` is its `encode_special_tokens`), `add_special` its post-processor
//!   or `tokenizer_config.json`'s `add_bos_token`/`add_eos_token`.
//! - [`Tokenizer::encode`]`(text, add_special, parse_special) -> Vec<u32>`: llama.cpp's
//!   `llama_tokenize`. With `parse_special`, control tokens written in the text (`<|im_end|>`,
//!   `<start_of_turn>`) become their ids; user-defined tokens are always recognised (as in
//!   llama.cpp and Hugging Face). With `add_special`, BOS/EOS are added as the vocabulary's
//!   `add_bos_token`/`add_eos_token` say (WordPiece: CLS and SEP).
//! - [`Tokenizer::decode`]`(ids, skip_special) -> Result<String>` and
//!   [`Tokenizer::token_to_bytes`]: pieces as llama.cpp's `token_to_piece` writes them (byte
//!   tokens `<0xHH>` are that byte, `▁` is a space for SentencePiece, GPT-2's byte alphabet is
//!   undone for BPE). `skip_special` drops control and unknown tokens.
//! - [`StreamDecoder`] ([`Tokenizer::stream_decoder`]): token by token, whole characters only.
//! - Accessors: [`bos_id`](Tokenizer::bos_id), [`eos_id`](Tokenizer::eos_id),
//!   [`eot_id`](Tokenizer::eot_id), [`stop_ids`](Tokenizer::stop_ids) /
//!   [`is_eog`](Tokenizer::is_eog) (every end-of-generation token, inferred as llama.cpp's
//!   `llama_vocab::is_eog` does), [`vocab_size`](Tokenizer::vocab_size),
//!   [`token_str`](Tokenizer::token_str), [`token_id`](Tokenizer::token_id).
//!
//! # Models
//!
//! - `llama`: SentencePiece BPE over scores (Llama 1/2, Mistral, Phi-3, Gemma).
//! - `gpt2`: byte-level BPE over merges, with the pre-tokenizer named by `tokenizer.ggml.pre`
//!   (see `vocab.rs` for the names: default, llama-bpe, qwen2, smollm, gpt-2, falcon, starcoder,
//!   deepseek-llm, deepseek-coder, command-r, mpt, refact, ...). A pre-tokenizer llama.cpp runs
//!   through a general regex engine that is not reproduced here (tekken, gpt-4o, deepseek-v3,
//!   chameleon, ...) is an `Unsupported` error at load, never a silent approximation.
//! - `gemma4`: SentencePiece-style BPE over merges (raw UTF-8, `▁` for spaces).
//! - `bert`: WordPiece.
//! - `t5` (Unigram), `rwkv`, `plamo2` and vocabulary-less files: `Unsupported`.
//!
//! # How it is checked
//!
//! `tests/tokenizer_vocab.rs` runs llama.cpp's own test vectors (`ggml-vocab-*.gguf.inp/.out`)
//! for every vocabulary that has them, and known ids of SmolLM2 and Gemma 3 cross-checked with
//! Hugging Face `tokenizers` and `sentencepiece`; `pretokenize.rs` compares every supported
//! pre-tokenizer with splits produced by llama.cpp's `unicode.cpp` itself
//! (`testdata/pretokenize_llama_cpp.json`); `special.rs` compares the special-token partition
//! with a literal port of llama.cpp's loop on random texts.
//!
//! Speed (10 KB of mixed text, one core): about 2 ms (SmolLM2) and 3.5 ms (Gemma 3) optimised,
//! 10 ms unoptimised. Building a tokenizer from parsed metadata: SmolLM2 0.05 s, Gemma 3 0.2 s,
//! Gemma 4's 262k tokens and 514k merges 0.55 s optimised (0.07, 0.25, 1.0 s unoptimised; the
//! merge table's hash lookups are cache-miss bound).
//!
//! # Decoding rules and differences from llama.cpp
//!
//! - An id outside the vocabulary is an error ([`TokenizerError::IdOutOfRange`]).
//! - Bytes that are not valid UTF-8 (a lone byte token) become U+FFFD.
//! - SentencePiece vocabularies that add a space prefix when encoding: decode removes the
//!   leading space of the first token that is not BOS, so `decode(encode(s)) == s` with or
//!   without BOS (llama.cpp keeps it after a BOS).
//! - No `clean_up_tokenization_spaces` (llama.cpp's `clean_spaces` rewriting of " ," and " 's"),
//!   which would break round trips.
//! - When several tokens match llama.cpp's text lists for EOT/FIM, the first in the list is
//!   taken (llama.cpp takes whichever its hash map yields first).
//! - Vocabularies that llama.cpp loads with a warning but that are inconsistent are errors here:
//!   a special token id outside the vocabulary, a duplicated token text, a merge without a space,
//!   a byte token not of the form `<0xHH>`.

mod bpe;
mod hf;
mod pretokenize;
mod special;
mod spm;
mod stream;
mod table;
mod unicode;
#[rustfmt::skip] // generated, several entries to a line
mod unicode_tables;
mod vocab;
mod wpm;

use tessera_io::gguf::{GgufFile, Metadata};

pub use hf::read_chat_template;
pub use stream::StreamDecoder;

use bpe::Bpe;
use special::{Fragment, SpecialTokens};
use spm::Spm;
use stream::Pieces;
use vocab::{ATTR_CONTROL, ATTR_UNKNOWN, Vocab};

/// Errors from loading a vocabulary or decoding ids.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The GGUF metadata is missing a key or has the wrong type.
    #[error(transparent)]
    Gguf(#[from] tessera_io::Error),
    /// The vocabulary is inconsistent.
    #[error("tokenizer vocabulary: {0}")]
    Vocab(String),
    /// A tokenizer model or pre-tokenizer this crate does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// A token id outside the vocabulary.
    #[error("token id {id} is out of range (vocabulary size {vocab_size})")]
    IdOutOfRange { id: u32, vocab_size: usize },
    /// A Hugging Face tokenizer file that is missing, unreadable or malformed.
    #[error("{path}: {message}")]
    File { path: String, message: String },
    /// The Hugging Face `tokenizers` library failed to encode a text.
    #[error("tokenizer.json: {0}")]
    Encode(String),
}

pub type Result<T> = std::result::Result<T, TokenizerError>;

/// The tokenization algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerKind {
    /// SentencePiece-style BPE over token scores (`tokenizer.ggml.model` = "llama").
    Spm,
    /// BPE over merge ranks ("gpt2": byte-level; "gemma4": raw UTF-8).
    Bpe,
    /// WordPiece ("bert"; `WordPiece` in a Hugging Face tokenizer.json).
    Wpm,
    /// Unigram (a Hugging Face tokenizer.json's `Unigram` model; not read from GGUF files).
    Unigram,
}

enum Model {
    Spm(Box<Spm>),
    Bpe(Box<Bpe>),
    Wpm,
}

/// How text becomes ids.
enum Engine {
    /// llama.cpp's algorithms over a GGUF vocabulary.
    Gguf {
        model: Model,
        special: SpecialTokens,
    },
    /// Hugging Face `tokenizers` over a tokenizer.json.
    Hf(Box<hf::HfEngine>),
}

/// A tokenizer built from a GGUF vocabulary or a Hugging Face tokenizer.json. See the
/// [module docs](self).
pub struct Tokenizer {
    /// Token texts, attributes and special ids (for tokenizer.json, filled from it and
    /// tokenizer_config.json).
    vocab: Vocab,
    engine: Engine,
    pieces: Pieces,
    /// Decoding removes the space that encoding put before the text.
    strip_leading_space: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.vocab.model)
            .field("pre", &self.vocab.pre)
            .field("vocab_size", &self.vocab.len())
            .finish()
    }
}

impl Tokenizer {
    /// Reads the tokenizer of a GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer> {
        Tokenizer::from_metadata(&file.metadata)
    }

    /// Reads a tokenizer from GGUF metadata (`tokenizer.ggml.*`).
    pub fn from_metadata(md: &Metadata) -> Result<Tokenizer> {
        let vocab = Vocab::load(md)?;
        let model = match vocab.kind {
            TokenizerKind::Spm => Model::Spm(Box::new(Spm::new(&vocab))),
            TokenizerKind::Bpe => Model::Bpe(Box::new(Bpe::new(&vocab, md)?)),
            TokenizerKind::Wpm => Model::Wpm,
            TokenizerKind::Unigram => {
                return Err(TokenizerError::Unsupported(
                    "Unigram vocabularies are read from tokenizer.json only".into(),
                ));
            }
        };
        let special = SpecialTokens::new(&vocab);
        let pieces = Pieces::new(&vocab);
        let strip_leading_space = vocab.kind == TokenizerKind::Spm && vocab.add_space_prefix;
        Ok(Tokenizer {
            vocab,
            engine: Engine::Gguf { model, special },
            pieces,
            strip_leading_space,
        })
    }

    /// Tokenizes `text` as llama.cpp's `llama_tokenize(vocab, text, add_special, parse_special)`
    /// (GGUF vocabularies) or as Hugging Face `tokenizers` does (tokenizer.json; see
    /// [`from_hf_dir`](Tokenizer::from_hf_dir)). A tokenizer.json that cannot encode the text (a
    /// WordPiece model without its unknown token, say) gives the unknown token, or nothing when
    /// there is none: [`try_encode`](Tokenizer::try_encode) reports that error instead.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        self.try_encode(text, add_special, parse_special)
            .unwrap_or_else(|_| self.vocab.special.unk.into_iter().collect())
    }

    /// [`encode`](Tokenizer::encode), with the Hugging Face library's errors reported (GGUF
    /// vocabularies never fail).
    pub fn try_encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>> {
        let (model, special) = match &self.engine {
            Engine::Gguf { model, special } => (model, special),
            Engine::Hf(hf) => return hf.encode(&self.vocab, text, add_special, parse_special),
        };
        let v = &self.vocab;
        let fragments = if text.is_empty() {
            Vec::new()
        } else {
            special.partition(v, text, parse_special)
        };
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        let bos = if v.kind == TokenizerKind::Wpm {
            true
        } else {
            v.add_bos
        };
        if add_special && bos {
            out.extend(v.special.bos);
        }
        let mut prev_special = true;
        let mut buf = String::new();
        for fragment in fragments {
            let range = match fragment {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                    continue;
                }
                Fragment::Text(range) => range,
            };
            let piece = &text[range];
            match model {
                Model::Spm(spm) => {
                    buf.clear();
                    if v.add_space_prefix && prev_special {
                        buf.push(' ');
                    }
                    buf.push_str(piece);
                    let escaped = buf.replace(' ', "▁");
                    spm.tokenize(v, &escaped, &mut out);
                }
                Model::Bpe(bpe) if v.escape_whitespaces => {
                    bpe.tokenize(v, &piece.replace(' ', "▁"), &mut out)
                }
                Model::Bpe(bpe) => bpe.tokenize(v, piece, &mut out),
                Model::Wpm => wpm::tokenize(v, piece, &mut out),
            }
            prev_special = false;
        }
        if add_special {
            match v.kind {
                TokenizerKind::Wpm => out.extend(v.special.sep),
                _ if v.add_eos => out.extend(v.special.eos),
                _ => {}
            }
        }
        Ok(out)
    }

    /// The text of `ids` (see the module docs for the rules); `skip_special` leaves out control
    /// and unknown tokens. An id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let mut stream = self.stream_decoder(skip_special);
        let mut out = String::new();
        for &id in ids {
            out.push_str(&stream.push(id)?);
        }
        out.push_str(&stream.flush());
        Ok(out)
    }

    /// A decoder fed one token at a time (for generation).
    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, skip_special)
    }

    /// The bytes token `id` stands for, special tokens as their text (llama.cpp's
    /// `token_to_piece(id, special = true)`); `None` outside the vocabulary.
    pub fn token_to_bytes(&self, id: u32) -> Option<&[u8]> {
        self.pieces.get(id)
    }

    /// The piece of `id`, empty for control/unknown tokens when `skip_special`.
    fn piece(&self, id: u32, skip_special: bool) -> Result<&[u8]> {
        let bytes = self.pieces.get(id).ok_or(TokenizerError::IdOutOfRange {
            id,
            vocab_size: self.vocab.len(),
        })?;
        let special = self.vocab.attrs[id as usize] & (ATTR_CONTROL | ATTR_UNKNOWN) != 0;
        Ok(if skip_special && special { &[] } else { bytes })
    }

    /// Whether decoding removes the space that encoding put before the text.
    fn strips_leading_space(&self) -> bool {
        self.strip_leading_space
    }

    pub fn kind(&self) -> TokenizerKind {
        self.vocab.kind
    }

    /// `tokenizer.ggml.model`; for a tokenizer.json, its model's type (`BPE`, `WordPiece`,
    /// `Unigram`, `WordLevel`).
    pub fn model_name(&self) -> &str {
        &self.vocab.model
    }

    /// The pre-tokenizer name in use (BPE; "default" when the file names none; "tokenizer.json"
    /// for a Hugging Face tokenizer, whose pre-tokenizer the file itself describes).
    pub fn pre(&self) -> &str {
        &self.vocab.pre
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.vocab.special.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.vocab.special.eos
    }

    /// End of turn: `tokenizer.ggml.eot_token_id`, else a token llama.cpp recognises by its text
    /// (`<|eot_id|>`, `<|im_end|>`, `<end_of_turn>`, `<|endoftext|>`, ...).
    pub fn eot_id(&self) -> Option<u32> {
        self.vocab.special.eot
    }

    /// End of message (`<|eom_id|>`).
    pub fn eom_id(&self) -> Option<u32> {
        self.vocab.special.eom
    }

    pub fn unk_id(&self) -> Option<u32> {
        self.vocab.special.unk
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.vocab.special.pad
    }

    /// Every token that ends generation, sorted: EOS, EOT, EOM, FIM pad/repo/file-separator and
    /// the control tokens llama.cpp treats as such by their text.
    pub fn stop_ids(&self) -> &[u32] {
        &self.vocab.eog
    }

    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.binary_search(&id).is_ok()
    }

    /// Whether `encode(.., add_special = true, ..)` starts with BOS / ends with EOS.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }

    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos
    }

    /// Whether `id` is a control token (rendered only when special tokens are not skipped).
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab
            .attrs
            .get(id as usize)
            .is_some_and(|a| a & ATTR_CONTROL != 0)
    }

    /// The vocabulary text of `id` (for BPE, in GPT-2's byte alphabet: `Ġthe`).
    pub fn token_str(&self, id: u32) -> Option<&str> {
        self.vocab
            .tokens
            .list()
            .get(id as usize)
            .map(String::as_str)
    }

    /// The id of the token whose vocabulary text is `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }

    /// The score of `id` (SentencePiece merge priority; 0 where the file has none).
    pub fn token_score(&self, id: u32) -> Option<f32> {
        self.vocab.scores.get(id as usize).copied()
    }
}
