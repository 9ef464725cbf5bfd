//! Cutting special tokens out of the text before tokenizing the rest (llama.cpp's
//! `tokenizer_st_partition`).
//!
//! llama.cpp takes the control, user-defined and unknown tokens longest first and, for each, splits
//! every remaining text fragment at each of its occurrences (control and unknown ones only when
//! special tokens are parsed; user-defined ones always). A token with the LSTRIP/RSTRIP attribute
//! also eats the whitespace beside it. This finds the candidates with a byte trie and claims them
//! in that same priority order, which gives the same fragments without a pass per token.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::Range;

use super::vocab::{
    ATTR_CONTROL, ATTR_LSTRIP, ATTR_RSTRIP, ATTR_UNKNOWN, ATTR_USER_DEFINED, Vocab,
};

/// A piece of the input: text still to tokenize, or a special token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

#[derive(Default)]
struct Node {
    /// Sorted by byte.
    children: Vec<(u8, u32)>,
    /// Priority of the special token ending here.
    token: Option<u32>,
}

/// A byte trie of token texts.
#[derive(Default)]
struct Trie {
    nodes: Vec<Node>,
}

impl Trie {
    fn insert(&mut self, text: &[u8], priority: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(Node::default());
        }
        let mut node = 0usize;
        for &b in text {
            let next = match self.nodes[node]
                .children
                .binary_search_by_key(&b, |&(c, _)| c)
            {
                Ok(i) => self.nodes[node].children[i].1 as usize,
                Err(i) => {
                    let id = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[node].children.insert(i, (b, id as u32));
                    id
                }
            };
            node = next;
        }
        self.nodes[node].token = Some(priority);
    }

    /// The priority of the longest token of at most `max_len` bytes that `text` starts with
    /// (at one position, longer means higher priority).
    fn longest(&self, text: &[u8], max_len: usize) -> Option<u32> {
        let mut best = None;
        let mut node = 0usize;
        for &b in text.iter().take(max_len) {
            let Some(n) = self.nodes.get(node) else { break };
            match n.children.binary_search_by_key(&b, |&(c, _)| c) {
                Ok(i) => node = n.children[i].1 as usize,
                Err(_) => break,
            }
            if let Some(p) = self.nodes[node].token {
                best = Some(p);
            }
        }
        best
    }
}

/// The special tokens of a vocabulary, ready to cut text with.
pub(super) struct SpecialTokens {
    /// Token ids by priority: longer texts first, then lower ids.
    order: Vec<u32>,
    /// All special tokens (used when parsing special tokens).
    all: Trie,
    /// Only the user-defined ones (always parsed).
    user: Trie,
}

const STATE_FREE: u8 = 0;
const STATE_TOKEN: u8 = 1;
const STATE_STRIPPED: u8 = 2;

/// `isspace` in the C locale.
fn c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

impl SpecialTokens {
    pub fn new(vocab: &Vocab) -> SpecialTokens {
        let mut order: Vec<u32> = (0..vocab.len() as u32)
            .filter(|&id| {
                vocab.attrs[id as usize] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN) != 0
            })
            .collect();
        order.sort_by(|&a, &b| {
            vocab
                .text(b)
                .len()
                .cmp(&vocab.text(a).len())
                .then(a.cmp(&b))
        });
        let mut all = Trie::default();
        let mut user = Trie::default();
        for (priority, &id) in order.iter().enumerate() {
            let text = vocab.text(id).as_bytes();
            all.insert(text, priority as u32);
            if vocab.attrs[id as usize] & (ATTR_CONTROL | ATTR_UNKNOWN) == 0 {
                user.insert(text, priority as u32);
            }
        }
        SpecialTokens { order, all, user }
    }

    /// Splits `text` into fragments (`text` is not empty).
    pub fn partition(&self, vocab: &Vocab, text: &str, parse_special: bool) -> Vec<Fragment> {
        let bytes = text.as_bytes();
        let trie = if parse_special { &self.all } else { &self.user };
        // Occurrences are claimed in priority order, then left to right, as llama.cpp's
        // token-by-token splitting does. The heap holds, for each position, the best occurrence
        // not yet tried there; a shorter one at the same position is queued only when a longer
        // one fails, so memory stays linear in the text even for long runs of whitespace tokens.
        let mut heap: BinaryHeap<Reverse<(u32, usize)>> = (0..bytes.len())
            .filter(|&start| text.is_char_boundary(start))
            .filter_map(|start| {
                trie.longest(&bytes[start..], usize::MAX)
                    .map(|p| Reverse((p, start)))
            })
            .collect();
        if heap.is_empty() {
            return vec![Fragment::Text(0..bytes.len())];
        }
        let mut state = vec![STATE_FREE; bytes.len()];
        let mut claimed: Vec<(usize, usize, u32)> = Vec::new();
        while let Some(Reverse((priority, start))) = heap.pop() {
            // Taken already: so is every later candidate here (state is never freed).
            if state[start] != STATE_FREE {
                continue;
            }
            let id = self.order[priority as usize];
            let len = vocab.text(id).len();
            let end = start + len;
            // Everything claimed so far is at least as long as this token, so an overlap shows at
            // one of its ends (stripped whitespace always borders a claimed token).
            if state[end - 1] != STATE_FREE {
                if let Some(shorter) = trie.longest(&bytes[start..], len - 1) {
                    heap.push(Reverse((shorter, start)));
                }
                continue;
            }
            state[start..end].fill(STATE_TOKEN);
            claimed.push((start, end, id));
            let attr = vocab.attrs[id as usize];
            if attr & ATTR_LSTRIP != 0 {
                let mut i = start;
                while i > 0 && state[i - 1] == STATE_FREE && c_space(bytes[i - 1]) {
                    i -= 1;
                    state[i] = STATE_STRIPPED;
                }
            }
            if attr & ATTR_RSTRIP != 0 {
                let mut i = end;
                while i < bytes.len() && state[i] == STATE_FREE && c_space(bytes[i]) {
                    state[i] = STATE_STRIPPED;
                    i += 1;
                }
            }
        }
        claimed.sort_unstable();

        let mut out = Vec::with_capacity(2 * claimed.len() + 1);
        let push_text = |from: usize, to: usize, out: &mut Vec<Fragment>| {
            // The free bytes of [from, to), as maximal runs.
            let mut i = from;
            while i < to {
                if state[i] != STATE_FREE {
                    i += 1;
                    continue;
                }
                let s = i;
                while i < to && state[i] == STATE_FREE {
                    i += 1;
                }
                out.push(Fragment::Text(s..i));
            }
        };
        let mut pos = 0;
        for (start, end, id) in claimed {
            push_text(pos, start, &mut out);
            out.push(Fragment::Token(id));
            pos = end;
        }
        push_text(pos, bytes.len(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use tessera_io::gguf::{Metadata, Value, ValueType};

    use super::*;

    /// llama.cpp's algorithm, literally: each special token in priority order splits every text
    /// fragment at each of its occurrences.
    fn reference(vocab: &Vocab, order: &[u32], text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut frags = vec![Fragment::Text(0..text.len())];
        for &id in order {
            let attr = vocab.attrs[id as usize];
            if !parse_special && attr & (ATTR_CONTROL | ATTR_UNKNOWN) != 0 {
                continue;
            }
            let tok = vocab.text(id);
            let mut next = Vec::new();
            for frag in frags {
                let Fragment::Text(r) = frag else {
                    next.push(frag);
                    continue;
                };
                let (mut base, end) = (r.start, r.end);
                loop {
                    let Some(off) = text[base..end].find(tok) else {
                        if base < end {
                            next.push(Fragment::Text(base..end));
                        }
                        break;
                    };
                    let m = base + off;
                    let mut left_end = m;
                    if attr & ATTR_LSTRIP != 0 {
                        while left_end > base && c_space(text.as_bytes()[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > base {
                        next.push(Fragment::Text(base..left_end));
                    }
                    next.push(Fragment::Token(id));
                    base = m + tok.len();
                    if attr & ATTR_RSTRIP != 0 {
                        while base < end && c_space(text.as_bytes()[base]) {
                            base += 1;
                        }
                    }
                }
            }
            frags = next;
        }
        frags
    }

    #[test]
    fn partition_matches_llama_cpp() {
        let tokens = [
            "a", "b", " ", "\n", "<", ">", "ab", "ba", "aba", "a b", "<a>", " <a>", "bb", "<b>",
            "b\n",
        ];
        // 1 normal, 3 control, 4 user-defined
        let types = [1, 1, 1, 1, 1, 1, 4, 3, 4, 3, 3, 4, 4, 3, 4];
        let mut md = Metadata::new();
        md.insert("tokenizer.ggml.model", Value::String("llama".into()));
        md.insert(
            "tokenizer.ggml.tokens",
            Value::Array(
                ValueType::String,
                tokens
                    .iter()
                    .map(|t| Value::String(t.to_string()))
                    .collect(),
            ),
        );
        md.insert(
            "tokenizer.ggml.token_type",
            Value::Array(
                ValueType::I32,
                types.iter().map(|&t| Value::I32(t)).collect(),
            ),
        );
        let mut vocab = Vocab::load(&md).unwrap_or_else(|e| panic!("{e}"));
        vocab.attrs[10] |= ATTR_LSTRIP | ATTR_RSTRIP; // <a>
        vocab.attrs[13] |= ATTR_RSTRIP; // <b>
        vocab.attrs[7] |= ATTR_LSTRIP; // ba
        let special = SpecialTokens::new(&vocab);
        let alphabet = ['a', 'b', ' ', '\n', '<', '>'];
        let mut tokens_found = [0usize; 2];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 24) as usize + 1;
            let text: String = (0..len)
                .map(|k| alphabet[((seed >> (k % 60)) as usize + k * 7) % alphabet.len()])
                .collect();
            for parse in [false, true] {
                let want = reference(&vocab, &special.order, &text, parse);
                tokens_found[parse as usize] += want
                    .iter()
                    .filter(|f| matches!(f, Fragment::Token(_)))
                    .count();
                assert_eq!(
                    special.partition(&vocab, &text, parse),
                    want,
                    "{text:?} parse_special={parse}"
                );
            }
        }
        assert!(
            tokens_found[0] > 1000 && tokens_found[1] > tokens_found[0],
            "{tokens_found:?}"
        );
    }
}
