//! Detokenizing: token pieces (llama.cpp's `token_to_piece`) and a streaming decoder that only
//! ever hands out whole UTF-8 characters.

use super::unicode::char_to_byte;
use super::vocab::{
    ATTR_BYTE, ATTR_CONTROL, ATTR_NORMAL, ATTR_UNKNOWN, ATTR_USER_DEFINED, Vocab, parse_byte_token,
};
use super::{Result, Tokenizer, TokenizerKind};

/// Every token's piece, special tokens rendered as their text, in one buffer.
pub(super) struct Pieces {
    data: Vec<u8>,
    /// `offs[id]..offs[id + 1]` is token `id`'s piece.
    offs: Vec<usize>,
}

impl Pieces {
    pub fn new(vocab: &Vocab) -> Pieces {
        let mut data = Vec::new();
        let mut offs = Vec::with_capacity(vocab.len() + 1);
        offs.push(0);
        for (text, &attr) in vocab.tokens.list().iter().zip(&vocab.attrs) {
            piece(vocab, text, attr, &mut data);
            offs.push(data.len());
        }
        Pieces { data, offs }
    }

    /// The pieces of `n` tokens, `write(id, out)` appending token `id`'s bytes.
    pub fn build(n: usize, mut write: impl FnMut(usize, &mut Vec<u8>)) -> Pieces {
        let mut data = Vec::new();
        let mut offs = Vec::with_capacity(n + 1);
        offs.push(0);
        for id in 0..n {
            write(id, &mut data);
            offs.push(data.len());
        }
        Pieces { data, offs }
    }

    pub fn get(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        let (&start, &end) = (self.offs.get(i)?, self.offs.get(i + 1)?);
        Some(&self.data[start..end])
    }
}

/// Appends the bytes token `text` (with attributes `attr`) stands for.
fn piece(vocab: &Vocab, text: &str, attr: u32, out: &mut Vec<u8>) {
    if attr & (ATTR_UNKNOWN | ATTR_CONTROL | ATTR_USER_DEFINED) != 0 {
        out.extend_from_slice(text.as_bytes());
    } else if attr & ATTR_NORMAL != 0 {
        if vocab.kind == TokenizerKind::Bpe && vocab.byte_encode {
            // GPT-2 byte alphabet back to bytes; a character outside it is kept as is.
            for c in text.chars() {
                match char_to_byte(c) {
                    Some(b) => out.push(b),
                    None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
        } else {
            out.extend_from_slice(text.replace('▁', " ").as_bytes());
        }
    } else if attr & ATTR_BYTE != 0 {
        out.extend(parse_byte_token(text));
    }
}

/// Turns token ids into text incrementally: [`push`](StreamDecoder::push) returns the text that is
/// complete so far and holds back a UTF-8 character split across tokens until its last byte
/// arrives; [`flush`](StreamDecoder::flush) returns what is left. Pushing every token then flushing
/// gives exactly [`Tokenizer::decode`].
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    skip_special: bool,
    pending: Vec<u8>,
    /// Still before the first text token (whose added leading space is removed).
    at_start: bool,
}

impl<'a> StreamDecoder<'a> {
    pub(super) fn new(tok: &'a Tokenizer, skip_special: bool) -> StreamDecoder<'a> {
        StreamDecoder {
            tok,
            skip_special,
            pending: Vec::new(),
            at_start: true,
        }
    }

    /// Adds one token; returns the text completed by it (often empty mid-character). An id
    /// outside the vocabulary is an error and changes nothing.
    pub fn push(&mut self, id: u32) -> Result<String> {
        let bytes = self.tok.piece(id, self.skip_special)?;
        if self.at_start {
            if self.tok.vocab.special.bos == Some(id) {
                // Rendered or not, BOS comes before the text whose prefix space we remove.
                self.pending.extend_from_slice(bytes);
                return Ok(self.take_complete());
            }
            self.at_start = false;
            if self.tok.strips_leading_space() {
                self.pending
                    .extend_from_slice(bytes.strip_prefix(b" ").unwrap_or(bytes));
                return Ok(self.take_complete());
            }
        }
        self.pending.extend_from_slice(bytes);
        Ok(self.take_complete())
    }

    /// Returns the bytes still held back (an incomplete character at the very end becomes
    /// U+FFFD) and resets the decoder for a new sequence.
    pub fn flush(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        self.at_start = true;
        out
    }

    /// The complete characters of `pending`; invalid bytes (not a prefix of a character) become
    /// U+FFFD, an unfinished character at the end stays.
    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            rest = &after[bad..];
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let total = self.pending.len();
        self.pending.drain(..total - keep);
        out
    }
}
