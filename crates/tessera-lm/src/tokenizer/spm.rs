//! SentencePiece-style BPE (Llama, Gemma; llama.cpp's `llm_tokenizer_spm`): start from the
//! characters of the whole fragment and repeatedly merge the adjacent pair whose concatenation is
//! the highest-scoring token (leftmost first on ties); symbols that are not tokens in the end are
//! written as byte tokens `<0xHH>`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

const NIL: usize = usize::MAX;

pub(super) struct Spm {
    /// The token for each byte (`<0xHH>`, else the one-byte text, else the unknown token).
    byte_tokens: [Option<u32>; 256],
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

struct Pair {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Pair {
    fn eq(&self, other: &Pair) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Pair) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pair {
    /// Max-heap order: higher score first, then the leftmost.
    fn cmp(&self, other: &Pair) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

impl Spm {
    pub fn new(vocab: &Vocab) -> Spm {
        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            *slot = vocab
                .id(&format!("<0x{b:02X}>"))
                .or_else(|| {
                    if b < 128 {
                        vocab.id(&char::from(b as u8).to_string())
                    } else {
                        None
                    }
                })
                .or(vocab.special.unk);
        }
        Spm { byte_tokens }
    }

    /// Tokenizes `text` (already prefixed and with spaces escaped as `▁`) onto `out`.
    pub fn tokenize(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let mut syms: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, c) in text.char_indices() {
            let n = syms.len();
            let len = c.len_utf8();
            syms.push(Symbol {
                start: i,
                len,
                prev: if n == 0 { NIL } else { n - 1 },
                next: if i + len == text.len() { NIL } else { n + 1 },
            });
        }
        if syms.is_empty() {
            return;
        }
        let mut heap = BinaryHeap::with_capacity(syms.len());
        let try_pair = |syms: &[Symbol], heap: &mut BinaryHeap<Pair>, left: usize, right: usize| {
            if left == NIL || right == NIL {
                return;
            }
            let (l, r) = (syms[left], syms[right]);
            let len = l.len + r.len;
            if let Some(id) = vocab.id(&text[l.start..l.start + len]) {
                heap.push(Pair {
                    score: vocab.scores[id as usize],
                    left,
                    right,
                    len,
                });
            }
        };
        for i in 1..syms.len() {
            try_pair(&syms, &mut heap, i - 1, i);
        }
        while let Some(pair) = heap.pop() {
            let (l, r) = (syms[pair.left], syms[pair.right]);
            // Stale: a side was merged away or has grown.
            if l.len == 0 || r.len == 0 || l.len + r.len != pair.len {
                continue;
            }
            syms[pair.left].len = pair.len;
            syms[pair.left].next = r.next;
            syms[pair.right].len = 0;
            if r.next != NIL {
                syms[r.next].prev = pair.left;
            }
            try_pair(&syms, &mut heap, l.prev, pair.left);
            try_pair(&syms, &mut heap, pair.left, r.next);
        }
        let mut i = 0;
        while i != NIL {
            let s = syms[i];
            let piece = &text[s.start..s.start + s.len];
            match vocab.id(piece) {
                Some(id) => out.push(id),
                None => out.extend(piece.bytes().filter_map(|b| self.byte_tokens[b as usize])),
            }
            i = s.next;
        }
    }
}
