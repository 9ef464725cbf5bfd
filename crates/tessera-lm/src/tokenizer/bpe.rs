//! Byte-level BPE (GPT-2 style, llama.cpp's `llm_tokenizer_bpe`): pre-tokenize, write each word in
//! GPT-2's byte alphabet, then repeatedly merge the adjacent pair with the lowest merge rank
//! (leftmost first on ties) until no pair has one.
//!
//! Strings are interned to ids once at load: every vocabulary token keeps its token id, and merge
//! halves or results that are not tokens get ids past the vocabulary. A merge is then a lookup of
//! an id pair, and a word's symbols form a linked list driven by a binary heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use tessera_io::gguf::Metadata;

use super::pretokenize;
use super::table::{PairMap, Strings};
use super::unicode::BYTE_TO_CHAR;
use super::vocab::Vocab;
use super::{Result, TokenizerError};

/// No symbol id: a character that no token or merge mentions.
const NONE: u32 = u32::MAX;
const NIL: usize = usize::MAX;

pub(super) struct Bpe {
    /// `(left, right) -> (rank, merged)` over interned ids.
    merges: PairMap,
    /// Interned strings that are not tokens (`n_vocab + index` is the id).
    extra: Strings,
    n_vocab: u32,
    /// Token for each byte when a symbol is not a token.
    byte_fallback: [Option<u32>; 256],
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    end: usize,
    id: u32,
    prev: usize,
    next: usize,
}

impl Bpe {
    pub fn new(vocab: &Vocab, md: &Metadata) -> Result<Bpe> {
        let key = "tokenizer.ggml.merges";
        let merges = md.strings(key)?;
        let n_vocab = vocab.len() as u32;
        let mut bpe = Bpe {
            merges: PairMap::with_capacity(merges.len()),
            extra: Strings::default(),
            n_vocab,
            byte_fallback: [None; 256],
        };
        for (rank, line) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte.
            let split = line
                .bytes()
                .skip(1)
                .position(|b| b == b' ')
                .map(|p| p + 1)
                .ok_or_else(|| {
                    TokenizerError::Vocab(format!(
                        "{key}[{rank}] = {line:?} is not two tokens separated by a space"
                    ))
                })?;
            let (left, right) = (&line[..split], &line[split + 1..]);
            let l = bpe.intern(vocab, left, "");
            let r = bpe.intern(vocab, right, "");
            let merged = bpe.intern(vocab, left, right);
            // The first rank given for a pair wins.
            bpe.merges.insert_first(l, r, (rank as u32, merged));
        }
        for b in 0..=255u8 {
            bpe.byte_fallback[b as usize] = if vocab.byte_encode {
                // llama.cpp looks each byte of the unknown symbol up as a one-byte string.
                if b < 128 {
                    vocab.id(&char::from(b).to_string())
                } else {
                    None
                }
            } else {
                vocab.id(&format!("<0x{b:02X}>"))
            };
        }
        Ok(bpe)
    }

    /// The id of `a + b`: its token id, else an id past the vocabulary (added if new).
    fn intern(&mut self, vocab: &Vocab, a: &str, b: &str) -> u32 {
        if let Some(id) = vocab.tokens.get2(a, b) {
            return id;
        }
        match self.extra.insert2(a, b) {
            Ok(i) | Err(i) => self.n_vocab + i,
        }
    }

    fn symbol_id(&self, vocab: &Vocab, s: &str) -> u32 {
        vocab
            .id(s)
            .or_else(|| self.extra.get(s).map(|i| self.n_vocab + i))
            .unwrap_or(NONE)
    }

    /// Tokenizes one text fragment (no special tokens in it) onto `out`.
    pub fn tokenize(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let mut word = String::new();
        let mut state = State::default();
        for range in pretokenize::split(text, &vocab.splits) {
            let raw = &text[range];
            word.clear();
            if vocab.byte_encode {
                word.extend(raw.bytes().map(|b| BYTE_TO_CHAR[b as usize]));
            } else {
                word.push_str(raw);
            }
            self.word(vocab, &word, &mut state, out);
        }
    }

    fn word(&self, vocab: &Vocab, word: &str, st: &mut State, out: &mut Vec<u32>) {
        if vocab.ignore_merges
            && let Some(id) = vocab.id(word)
        {
            out.push(id);
            return;
        }
        // Gemma 4: a run of newlines that is a token stays whole.
        if !vocab.byte_encode
            && word.bytes().all(|b| b == b'\n')
            && let Some(id) = vocab.id(word)
        {
            out.push(id);
            return;
        }
        let syms = &mut st.symbols;
        syms.clear();
        for (i, c) in word.char_indices() {
            let end = i + c.len_utf8();
            let n = syms.len();
            syms.push(Symbol {
                start: i,
                end,
                id: self.symbol_id(vocab, &word[i..end]),
                prev: if n == 0 { NIL } else { n - 1 },
                next: if end == word.len() { NIL } else { n + 1 },
            });
        }
        let heap = &mut st.heap;
        heap.clear();
        for i in 1..syms.len() {
            self.push_pair(syms, heap, i - 1, i);
        }
        while let Some(Reverse((_, left, right, merged))) = heap.pop() {
            let (l, r) = (syms[left], syms[right]);
            // Stale: one side was merged away or has grown since the pair was queued.
            if l.start == l.end || r.start == r.end || l.next != right || l.end != r.start {
                continue;
            }
            if self.merges.get(l.id, r.id).map(|m| m.1) != Some(merged) {
                continue;
            }
            syms[left].end = r.end;
            syms[left].id = merged;
            syms[left].next = r.next;
            syms[right].end = syms[right].start;
            if r.next != NIL {
                syms[r.next].prev = left;
            }
            if l.prev != NIL {
                self.push_pair(syms, heap, l.prev, left);
            }
            if r.next != NIL {
                self.push_pair(syms, heap, left, r.next);
            }
        }
        for s in syms.iter().filter(|s| s.start < s.end) {
            if s.id < self.n_vocab {
                out.push(s.id);
            } else {
                // Not a token: one token per byte where there is one (llama.cpp drops the rest).
                out.extend(
                    word[s.start..s.end]
                        .bytes()
                        .filter_map(|b| self.byte_fallback[b as usize]),
                );
            }
        }
    }

    fn push_pair(
        &self,
        syms: &[Symbol],
        heap: &mut BinaryHeap<Reverse<(u32, usize, usize, u32)>>,
        left: usize,
        right: usize,
    ) {
        let (l, r) = (syms[left].id, syms[right].id);
        if l == NONE || r == NONE {
            return;
        }
        if let Some((rank, merged)) = self.merges.get(l, r) {
            heap.push(Reverse((rank, left, right, merged)));
        }
    }
}

/// Scratch buffers reused across the words of one call.
#[derive(Default)]
struct State {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Reverse<(u32, usize, usize, u32)>>,
}
