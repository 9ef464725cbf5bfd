//! WordPiece (BERT; llama.cpp's `llm_tokenizer_wpm`): normalize (lowercase, strip accents), split
//! at whitespace and around punctuation and CJK characters, then cover each word `▁word` greedily
//! with the longest tokens; a word that cannot be covered becomes the unknown token.

use super::unicode;
use super::vocab::Vocab;

/// Tokenizes one text fragment onto `out`.
pub(super) fn tokenize(vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
    for word in words(vocab, text) {
        let word = format!("▁{word}");
        let bytes = word.as_bytes();
        let n = bytes.len();
        let before = out.len();
        let mut i = 0;
        while i < n {
            let longest = (i + 1..=n.min(i + vocab.max_token_len + 1))
                .rev()
                .find_map(|j| word.get(i..j).and_then(|s| vocab.id(s)).map(|id| (id, j)));
            match longest {
                Some((id, j)) => {
                    out.push(id);
                    i = j;
                }
                None => {
                    out.truncate(before);
                    break;
                }
            }
        }
        if out.len() == before
            && let Some(unk) = vocab.special.unk
        {
            out.push(unk);
        }
    }
}

fn is_chinese(cp: u32) -> bool {
    matches!(cp, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// The normalized words of `text`.
fn words(vocab: &Vocab, text: &str) -> Vec<String> {
    let mut words = vec![String::new()];
    for c in text.chars() {
        let mut cp = c as u32;
        if vocab.strip_accents {
            cp = unicode::nfd_first(cp);
        }
        let f = unicode::flags(cp);
        if f.ws {
            if !words.last().is_some_and(String::is_empty) {
                words.push(String::new());
            }
            continue;
        }
        if cp == 0 || cp == 0xFFFD || f.is_control() {
            continue;
        }
        if vocab.strip_accents && f.is_mark() {
            continue;
        }
        let out = if vocab.lowercase {
            unicode::to_lower(cp)
        } else {
            cp
        };
        let Some(ch) = char::from_u32(out) else {
            continue;
        };
        let Some(last) = words.last_mut() else {
            continue;
        };
        if f.is_punctuation() || (cp < 0x7F && f.is_symbol()) || is_chinese(cp) {
            if !last.is_empty() {
                words.push(String::new());
            }
            if let Some(last) = words.last_mut() {
                last.push(ch);
            }
            words.push(String::new());
        } else {
            last.push(ch);
        }
    }
    words.retain(|w| !w.is_empty());
    words
}
