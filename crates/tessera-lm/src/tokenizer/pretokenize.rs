//! Pre-tokenizers: the regex splits a BPE vocabulary applies (per `tokenizer.ggml.pre`) before
//! merging, written by hand.
//!
//! llama.cpp runs a list of regexes, each refining the pieces the previous one left. The common
//! regexes (GPT-2's, Llama 3's, Qwen 2's) have hand-written matchers there too; the rest run
//! through C++ `std::regex` (ECMAScript: leftmost match, first alternative that succeeds) on a
//! "collapsed" text where every non-ASCII codepoint is replaced by one byte standing for its
//! category (`\p{L}` -> 0xD2, ...) and non-ASCII whitespace by `\v`. [`Pattern`] reproduces those
//! regexes with those semantics, including the collapse (so `\s` is ASCII whitespace plus
//! non-ASCII `White_Space`, and a literal non-ASCII space never matches a bracket).

use std::ops::Range;

use super::unicode::{self, Flags};

/// One split step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Split {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    Gpt2,
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    /// with `max_digits` for the `{1,3}` (Qwen 2: 1) and, with `marks`, `[\p{L}\p{M}]` for
    /// `\p{L}` (Qwen 3.5).
    Llama3 { max_digits: usize, marks: bool },
    /// `[^\n]+|[\n]+`
    Newlines,
    /// One of the regexes llama.cpp runs through `std::regex`.
    Pattern(Pattern),
}

/// The `std::regex` shapes the supported pre-tokenizers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pattern {
    /// `C+`
    Run(Class),
    /// `C`
    One(Class),
    /// `[0-9][0-9][0-9]`
    AsciiDigits3,
    /// `\s?C+`
    OptWsRun(Class),
    /// ` ?C+`
    OptSpaceRun(Class),
    /// `\s+$`
    TrailingWs,
}

/// Bracket expressions and classes, as `std::regex` sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    /// `[\p{P}\$\+<=>\^~\|]`
    PunctDefault,
    /// `[\p{P}\$\+<=>\^~\|`]`
    PunctFalcon,
    /// `\p{N}`
    Number,
    /// `\p{L}`
    Letter,
    /// `\p{P}`
    Punct,
    /// `[\r\n]`
    CrLf,
    /// DeepSeek LLM's Latin/Greek/Cyrillic/... letter ranges.
    DeepseekLetters,
    /// `[!-/:-~！-／：-～‘-‟　-。]`
    DeepseekPunct,
    /// `[一-龥ࠀ-一가-퟿]`
    Cjk,
    /// `[^(\s|.,!?…。，、।۔،)]` (Bloom, Poro, Viking)
    NotBreak,
}

/// DeepSeek LLM's letter class, from its `tokenizer.json`.
const DEEPSEEK_LETTERS: [(u32, u32); 87] = [
    (0x41, 0x5A),
    (0x61, 0x7A),
    (0xB5, 0xB5),
    (0xC0, 0xD6),
    (0xD8, 0xF6),
    (0xF8, 0x1BA),
    (0x1BC, 0x1BF),
    (0x1C4, 0x293),
    (0x295, 0x2AF),
    (0x370, 0x373),
    (0x376, 0x376),
    (0x377, 0x377),
    (0x37B, 0x37D),
    (0x37F, 0x37F),
    (0x386, 0x386),
    (0x388, 0x38A),
    (0x38C, 0x38C),
    (0x38E, 0x3A1),
    (0x3A3, 0x3F5),
    (0x3F7, 0x481),
    (0x48A, 0x52F),
    (0x531, 0x556),
    (0x10A0, 0x10C5),
    (0x13A0, 0x13F5),
    (0x13F8, 0x13FD),
    (0x1C90, 0x1CBA),
    (0x1CBD, 0x1CBF),
    (0x1D00, 0x1D2B),
    (0x1D6B, 0x1D77),
    (0x1D79, 0x1D9A),
    (0x1E00, 0x1F15),
    (0x1F18, 0x1F1D),
    (0x1F20, 0x1F45),
    (0x1F48, 0x1F4D),
    (0x1F50, 0x1F57),
    (0x1F59, 0x1F59),
    (0x1F5B, 0x1F5B),
    (0x1F5D, 0x1F5D),
    (0x1F5F, 0x1F7D),
    (0x1F80, 0x1FB4),
    (0x1FB6, 0x1FBC),
    (0x1FBE, 0x1FBE),
    (0x1FC2, 0x1FC4),
    (0x1FC6, 0x1FCC),
    (0x1FD0, 0x1FD3),
    (0x1FD6, 0x1FDB),
    (0x1FE0, 0x1FEC),
    (0x1FF2, 0x1FF4),
    (0x1FF6, 0x1FFC),
    (0x2102, 0x2102),
    (0x2107, 0x2107),
    (0x210A, 0x2113),
    (0x2115, 0x2115),
    (0x2119, 0x211D),
    (0x2124, 0x2124),
    (0x2126, 0x2126),
    (0x2128, 0x2128),
    (0x212A, 0x212D),
    (0x212F, 0x2134),
    (0x2139, 0x2139),
    (0x213C, 0x213F),
    (0x2145, 0x2149),
    (0x214E, 0x214E),
    (0x2183, 0x2183),
    (0x2184, 0x2184),
    (0x2C00, 0x2C7B),
    (0x2C7E, 0x2CE4),
    (0x2CEB, 0x2CEE),
    (0x2CF2, 0x2CF2),
    (0x2CF3, 0x2CF3),
    (0xA640, 0xA66D),
    (0xA680, 0xA69B),
    (0xA722, 0xA76F),
    (0xA771, 0xA787),
    (0xA78B, 0xA78E),
    (0xAB70, 0xABBF),
    (0xFB00, 0xFB06),
    (0xFB13, 0xFB17),
    (0xFF21, 0xFF3A),
    (0xFF41, 0xFF5A),
    (0x10400, 0x1044F),
    (0x104B0, 0x104D3),
    (0x104D8, 0x104FB),
    (0x10C80, 0x10CB2),
    (0x10CC0, 0x10CF2),
    (0x118A0, 0x118DF),
    (0x1E900, 0x1E943),
];

const DEEPSEEK_PUNCT: [(u32, u32); 6] = [
    (0x21, 0x2F),
    (0x3A, 0x7E),
    (0xFF01, 0xFF0F),
    (0xFF1A, 0xFF5E),
    (0x2018, 0x201F),
    (0x3000, 0x3002),
];

const CJK: [(u32, u32); 3] = [(0x4E00, 0x9FA5), (0x800, 0x4E00), (0xAC00, 0xD7FF)];

/// Sentinel for "past the end of the piece" (never a codepoint).
const OUT: u32 = u32::MAX;

/// A text as codepoints, with their classes and byte offsets.
struct Text {
    cps: Vec<u32>,
    flags: Vec<Flags>,
    /// Byte offset of each codepoint, plus the text's length.
    offs: Vec<usize>,
}

impl Text {
    fn new(s: &str) -> Text {
        let n = s.chars().count();
        let mut cps = Vec::with_capacity(n);
        let mut flags = Vec::with_capacity(n);
        let mut offs = Vec::with_capacity(n + 1);
        for (i, c) in s.char_indices() {
            cps.push(c as u32);
            flags.push(unicode::flags(c as u32));
            offs.push(i);
        }
        offs.push(s.len());
        Text { cps, flags, offs }
    }
}

/// Splits `s` by the `splits` in turn; returns the pieces as byte ranges covering `s`.
pub(super) fn split(s: &str, splits: &[Split]) -> Vec<Range<usize>> {
    if s.is_empty() {
        return Vec::new();
    }
    let text = Text::new(s);
    // Piece lengths, in codepoints.
    let mut pieces = vec![text.cps.len()];
    for step in splits {
        let mut out = Vec::with_capacity(pieces.len() * 2);
        let mut start = 0;
        for &len in &pieces {
            let (ini, end) = (start, start + len);
            match *step {
                Split::Gpt2 => gpt2(&text, ini, end, &mut out),
                Split::Llama3 { max_digits, marks } => {
                    llama3(&text, ini, end, max_digits, marks, &mut out)
                }
                Split::Newlines => newlines(&text, ini, end, &mut out),
                Split::Pattern(p) => pattern(&text, ini, end, p, &mut out),
            }
            start = end;
        }
        pieces = out;
    }
    let mut ranges = Vec::with_capacity(pieces.len());
    let mut start = 0;
    for len in pieces {
        ranges.push(text.offs[start]..text.offs[start + len]);
        start += len;
    }
    ranges
}

/// Cursor over one piece `[ini, end)` that emits the sub-pieces.
struct Piece<'a> {
    text: &'a Text,
    end: usize,
    prev: usize,
    out: &'a mut Vec<usize>,
}

impl Piece<'_> {
    fn cpt(&self, pos: usize) -> u32 {
        if pos < self.end {
            self.text.cps[pos]
        } else {
            OUT
        }
    }
    fn flags(&self, pos: usize) -> Flags {
        if pos < self.end {
            self.text.flags[pos]
        } else {
            Flags::NONE
        }
    }
    /// Ends the current sub-piece at `end` (empty ones are dropped).
    fn add(&mut self, end: usize) {
        if end > self.prev {
            self.out.push(end - self.prev);
        }
        self.prev = end;
    }
    fn is_cr_or_lf(&self, pos: usize) -> bool {
        matches!(self.cpt(pos), 0x0A | 0x0D)
    }
    /// Length of the contraction (`'s`, `'re`, ...) at `pos`, if any; `fold` matches any case.
    fn contraction(&self, pos: usize, fold: bool) -> Option<usize> {
        if self.cpt(pos) != '\'' as u32 || pos + 1 >= self.end {
            return None;
        }
        let lower = |c: u32| if fold { unicode::to_lower(c) } else { c };
        let next = lower(self.cpt(pos + 1));
        if [b's', b't', b'm', b'd'].iter().any(|&c| next == c as u32) {
            return Some(2);
        }
        if pos + 2 < self.end {
            let pair = (next, lower(self.cpt(pos + 2)));
            let two = [(b'r', b'e'), (b'v', b'e'), (b'l', b'l')];
            if two.iter().any(|&(a, b)| pair == (a as u32, b as u32)) {
                return Some(3);
            }
        }
        None
    }
    /// Counts the whitespace run at `pos`; returns it and the end of its last CR/LF (0: none).
    fn whitespace_run(&self, pos: usize) -> (usize, usize) {
        let (mut n, mut last_newline_end) = (0, 0);
        while self.flags(pos + n).ws {
            if self.is_cr_or_lf(pos + n) {
                last_newline_end = pos + n + 1;
            }
            n += 1;
        }
        (n, last_newline_end)
    }
}

fn gpt2(text: &Text, ini: usize, end: usize, out: &mut Vec<usize>) {
    let mut p = Piece {
        text,
        end,
        prev: ini,
        out,
    };
    let mut pos = ini;
    while pos < end {
        let cpt = p.cpt(pos);
        let flags = p.flags(pos);
        if let Some(len) = p.contraction(pos, false) {
            pos += len;
            p.add(pos);
            continue;
        }
        let space = usize::from(cpt == ' ' as u32);
        let mut f2 = if space == 1 { p.flags(pos + 1) } else { flags };
        // ` ?\p{L}+`, ` ?\p{N}+`
        if f2.is_letter() || f2.is_number() {
            let letter = f2.is_letter();
            pos += space;
            while (letter && f2.is_letter()) || (!letter && f2.is_number()) {
                pos += 1;
                f2 = p.flags(pos);
            }
            p.add(pos);
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+`
        if !(f2.ws || f2.is_letter() || f2.is_number()) && f2.is_some() {
            pos += space;
            while !(f2.ws || f2.is_letter() || f2.is_number()) && f2.is_some() {
                pos += 1;
                f2 = p.flags(pos);
            }
            p.add(pos);
            continue;
        }
        let (n_ws, _) = p.whitespace_run(pos);
        // `\s+(?!\S)`: all but the last whitespace before a non-space.
        if n_ws > 1 && p.cpt(pos + n_ws) != OUT {
            pos += n_ws - 1;
            p.add(pos);
            continue;
        }
        // `\s+`
        if n_ws > 0 {
            pos += n_ws;
            p.add(pos);
            continue;
        }
        pos += 1;
        p.add(pos);
    }
}

fn llama3(
    text: &Text,
    ini: usize,
    end: usize,
    max_digits: usize,
    marks: bool,
    out: &mut Vec<usize>,
) {
    let mut p = Piece {
        text,
        end,
        prev: ini,
        out,
    };
    let is_word = |f: Flags| f.is_letter() || (marks && f.is_mark());
    let mut pos = ini;
    while pos < end {
        let cpt = p.cpt(pos);
        let flags = p.flags(pos);
        if let Some(len) = p.contraction(pos, true) {
            pos += len;
            p.add(pos);
            continue;
        }
        // `[^\r\n\p{L}\p{N}]?\p{L}+`
        if !(p.is_cr_or_lf(pos) || flags.is_number())
            && (is_word(flags) || is_word(p.flags(pos + 1)))
        {
            pos += 1;
            while is_word(p.flags(pos)) {
                pos += 1;
            }
            p.add(pos);
            continue;
        }
        // `\p{N}{1,max_digits}`
        if flags.is_number() {
            let mut group = pos;
            while p.flags(pos).is_number() {
                pos += 1;
                if pos - group >= max_digits {
                    p.add(pos);
                    group = pos;
                }
            }
            p.add(pos);
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (llama.cpp tests the first codepoint's own flags for
        // "is a codepoint", which always holds)
        let other = |f: Flags| !(f.ws || f.is_letter() || (marks && f.is_mark()) || f.is_number());
        let mut f2 = if cpt == ' ' as u32 {
            p.flags(pos + 1)
        } else {
            flags
        };
        if other(f2) && flags.is_some() {
            pos += usize::from(cpt == ' ' as u32);
            while other(f2) && f2.is_some() {
                pos += 1;
                f2 = p.flags(pos);
            }
            while p.is_cr_or_lf(pos) {
                pos += 1;
            }
            p.add(pos);
            continue;
        }
        let (n_ws, last_newline_end) = p.whitespace_run(pos);
        // `\s*[\r\n]+`
        if last_newline_end > 0 {
            pos = last_newline_end;
            p.add(pos);
            continue;
        }
        // `\s+(?!\S)`
        if n_ws > 1 && p.cpt(pos + n_ws) != OUT {
            pos += n_ws - 1;
            p.add(pos);
            continue;
        }
        // `\s+`
        if n_ws > 0 {
            pos += n_ws;
            p.add(pos);
            continue;
        }
        pos += 1;
        p.add(pos);
    }
}

fn newlines(text: &Text, ini: usize, end: usize, out: &mut Vec<usize>) {
    let mut pos = ini;
    while pos < end {
        let newline = text.cps[pos] == '\n' as u32;
        let start = pos;
        while pos < end && (text.cps[pos] == '\n' as u32) == newline {
            pos += 1;
        }
        out.push(pos - start);
    }
}

/// The byte `std::regex` sees for codepoint `cp` in a regex that uses `\p{..}`: ASCII as is,
/// whitespace as `\v`, other codepoints as their category's stand-in byte.
fn collapsed(cp: u32, f: Flags) -> u32 {
    if cp < 128 {
        cp
    } else if f.ws {
        0x0B
    } else {
        match f.cat {
            unicode::NUMBER => 0xD1,
            unicode::LETTER => 0xD2,
            unicode::PUNCTUATION => 0xD3,
            unicode::MARK => 0xD4,
            unicode::SYMBOL => 0xD5,
            _ => 0xD0,
        }
    }
}

/// The codepoint `std::wregex` sees (regexes with non-ASCII literals): non-ASCII whitespace as `\v`.
fn wide(cp: u32, f: Flags) -> u32 {
    if cp >= 128 && f.ws { 0x0B } else { cp }
}

/// `\s` of `std::regex` in the C locale.
fn regex_space(v: u32) -> bool {
    matches!(v, 0x09..=0x0D | 0x20)
}

/// ASCII punctuation (general category P), what `\p{P}` covers below 128.
fn ascii_punct(v: u32) -> bool {
    matches!(v, 0x21..=0x23 | 0x25..=0x2A | 0x2C..=0x2F | 0x3A..=0x3B | 0x3F..=0x40 | 0x5B..=0x5D | 0x5F | 0x7B | 0x7D)
}

fn in_ranges(v: u32, ranges: &[(u32, u32)]) -> bool {
    ranges.iter().any(|&(lo, hi)| lo <= v && v <= hi)
}

fn class_has(class: Class, cp: u32, f: Flags) -> bool {
    let c = collapsed(cp, f);
    let w = wide(cp, f);
    match class {
        Class::PunctDefault => {
            c == 0xD3 || ascii_punct(c) || b"$+<=>^~|".contains(&(c as u8)) && c < 128
        }
        Class::PunctFalcon => {
            c == 0xD3 || ascii_punct(c) || b"$+<=>^~|`".contains(&(c as u8)) && c < 128
        }
        Class::Number => c == 0xD1 || (0x30..=0x39).contains(&c),
        Class::Letter => c == 0xD2 || (0x41..=0x5A).contains(&c) || (0x61..=0x7A).contains(&c),
        Class::Punct => c == 0xD3 || ascii_punct(c),
        Class::CrLf => w == 0x0A || w == 0x0D,
        Class::DeepseekLetters => in_ranges(w, &DEEPSEEK_LETTERS),
        Class::DeepseekPunct => in_ranges(w, &DEEPSEEK_PUNCT),
        Class::Cjk => in_ranges(w, &CJK),
        Class::NotBreak => !regex_space(w) && !"(|.,!?…。，、।۔،)".chars().any(|b| b as u32 == w),
    }
}

/// Emulates `std::regex_iterator` over one piece: each match is a sub-piece, and so is each
/// stretch between matches.
fn pattern(text: &Text, ini: usize, end: usize, pat: Pattern, out: &mut Vec<usize>) {
    let has =
        |class: Class, pos: usize| pos < end && class_has(class, text.cps[pos], text.flags[pos]);
    let space = |pos: usize| pos < end && regex_space(wide(text.cps[pos], text.flags[pos]));
    let run_end = |class: Class, mut pos: usize| {
        while has(class, pos) {
            pos += 1;
        }
        pos
    };
    // The end of a match starting at `pos`, if one does.
    let match_at = |pos: usize| -> Option<usize> {
        match pat {
            Pattern::Run(c) => has(c, pos).then(|| run_end(c, pos)),
            Pattern::One(c) => has(c, pos).then_some(pos + 1),
            Pattern::AsciiDigits3 => (0..3)
                .all(|k| pos + k < end && (0x30..=0x39).contains(&text.cps[pos + k]))
                .then_some(pos + 3),
            Pattern::OptWsRun(c) => {
                if space(pos) && has(c, pos + 1) {
                    Some(run_end(c, pos + 1))
                } else {
                    has(c, pos).then(|| run_end(c, pos))
                }
            }
            Pattern::OptSpaceRun(c) => {
                if pos < end && text.cps[pos] == ' ' as u32 && has(c, pos + 1) {
                    Some(run_end(c, pos + 1))
                } else {
                    has(c, pos).then(|| run_end(c, pos))
                }
            }
            // Handled below: a match needs whitespace up to the end.
            Pattern::TrailingWs => None,
        }
    };
    let mut q = ini;
    while q < end {
        let found = if pat == Pattern::TrailingWs {
            let mut start = end;
            while start > q && space(start - 1) {
                start -= 1;
            }
            (start < end).then_some((start, end))
        } else {
            (q..end).find_map(|pos| match_at(pos).map(|e| (pos, e)))
        };
        let Some((start, stop)) = found else { break };
        if start > q {
            out.push(start - q);
        }
        out.push(stop - start);
        q = stop;
    }
    if q < end {
        out.push(end - q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words<'a>(s: &'a str, splits: &[Split]) -> Vec<&'a str> {
        split(s, splits).into_iter().map(|r| &s[r]).collect()
    }

    #[test]
    fn gpt2_splits() {
        assert_eq!(
            words("Hello world's  3.14 !!\n\n  x", &[Split::Gpt2]),
            [
                "Hello", " world", "'s", " ", " 3", ".", "14", " !!", "\n\n ", " x"
            ]
        );
    }

    #[test]
    fn llama3_splits() {
        let l3 = Split::Llama3 {
            max_digits: 3,
            marks: false,
        };
        assert_eq!(
            words("I'VE 12345 ok!?\n\n  \tz", &[l3]),
            ["I", "'VE", " ", "123", "45", " ok", "!?\n\n", "  ", "\tz"]
        );
    }

    #[test]
    fn patterns() {
        let default = [
            Split::Pattern(Pattern::Run(Class::PunctDefault)),
            Split::Gpt2,
            Split::Pattern(Pattern::Run(Class::Number)),
            Split::Pattern(Pattern::AsciiDigits3),
        ];
        assert_eq!(
            words("a+=1234567", &default),
            ["a", "+=", "123", "456", "7"]
        );
        let trailing = [Split::Pattern(Pattern::TrailingWs)];
        assert_eq!(words("ab  ", &trailing), ["ab", "  "]);
        let ws_letters = [Split::Pattern(Pattern::OptWsRun(Class::Letter))];
        assert_eq!(words("1 ab\tcd", &ws_letters), ["1", " ab", "\tcd"]);
    }

    /// Every supported pre-tokenizer against llama.cpp's own splits of 489 texts (the vocab
    /// test inputs, and random mixes of letters, marks, digits, punctuation, symbols, emoji, CJK,
    /// ASCII and Unicode whitespace, control and unassigned codepoints).
    #[test]
    fn same_splits_as_llama_cpp() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("testdata/pretokenize_llama_cpp.json"))
                .unwrap_or_else(|e| panic!("fixture: {e}"));
        let texts: Vec<&str> = fixture["texts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
            .collect();
        let splits = fixture["splits"]
            .as_object()
            .unwrap_or_else(|| panic!("fixture: no splits"));
        assert_eq!((texts.len(), splits.len()), (489, 12));
        for (pre, lines) in splits {
            let config =
                super::super::vocab::pre_config(pre).unwrap_or_else(|| panic!("{pre} unsupported"));
            let lines: Vec<&str> = lines
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l.as_str())
                .collect();
            assert_eq!(lines.len(), texts.len());
            for (text, want) in texts.iter().zip(lines) {
                let got: Vec<String> = split(text, &config.splits)
                    .into_iter()
                    .map(|r| r.len().to_string())
                    .collect();
                assert_eq!(got.join(" "), want, "{pre}: {text:?}");
            }
        }
    }
}
