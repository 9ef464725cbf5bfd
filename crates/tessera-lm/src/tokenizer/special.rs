//! Cutting special tokens out of the text before tokenizing the rest (llama.cpp's
//! `tokenizer_st_partition`).
//!
//! llama.cpp takes the control, user-defined and unknown tokens longest first and, for each, splits
//! every remaining text fragment at each of its occurrences (control and unknown ones only when
//! special tokens are parsed; user-defined ones always). A token with the LSTRIP/RSTRIP attribute
//! also eats the whitespace beside it. This finds every occurrence of every such token in one
//! pass with a byte trie, then claims them in that same priority order, which gives the same
//! fragments in time linear in the text.

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

    /// Calls `f(priority)` for every token that `text` starts with.
    fn prefixes(&self, text: &[u8], mut f: impl FnMut(u32)) {
        if self.nodes.is_empty() {
            return;
        }
        let mut node = 0usize;
        for &b in text {
            match self.nodes[node]
                .children
                .binary_search_by_key(&b, |&(c, _)| c)
            {
                Ok(i) => node = self.nodes[node].children[i].1 as usize,
                Err(_) => return,
            }
            if let Some(p) = self.nodes[node].token {
                f(p);
            }
        }
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
        // Every occurrence: (priority, start).
        let mut found: Vec<(u32, usize)> = Vec::new();
        for start in 0..bytes.len() {
            if text.is_char_boundary(start) {
                trie.prefixes(&bytes[start..], |p| found.push((p, start)));
            }
        }
        if found.is_empty() {
            return vec![Fragment::Text(0..bytes.len())];
        }
        found.sort_unstable();

        let mut state = vec![STATE_FREE; bytes.len()];
        let mut claimed: Vec<(usize, usize, u32)> = Vec::new();
        for (priority, start) in found {
            let id = self.order[priority as usize];
            let end = start + vocab.text(id).len();
            if state[start..end].iter().any(|&s| s != STATE_FREE) {
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
