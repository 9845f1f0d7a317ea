//! Splitting one line into tokens, and reading numbers.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::Op;

/// One token of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tok<'a> {
    /// A run of `[A-Za-z0-9_]`: a number if it starts with a digit, else a name or keyword.
    Word(&'a str),
    /// `+`, `-` or `|`.
    Op(Op),
    /// `,`
    Comma,
    /// `=` (in `list NAME = ...`)
    Eq,
    /// `=>`
    Arrow,
    /// `(`
    LParen,
    /// `)`
    RParen,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The tokens of `line`, which has no comment left in it. Work is linear in its length.
pub(super) fn tokens(line: &str) -> Result<Vec<Tok<'_>>, String> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let (tok, len) = match b {
            b' ' | b'\t' => {
                i += 1;
                continue;
            }
            b'+' => (Tok::Op(Op::Add), 1),
            b'-' => (Tok::Op(Op::Sub), 1),
            b'|' => (Tok::Op(Op::Or), 1),
            b',' => (Tok::Comma, 1),
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'=' if bytes.get(i + 1) == Some(&b'>') => (Tok::Arrow, 2),
            b'=' => (Tok::Eq, 1),
            _ if is_word_byte(b) => {
                let len = bytes
                    .get(i..)
                    .unwrap_or_default()
                    .iter()
                    .take_while(|&&b| is_word_byte(b))
                    .count();
                // Word bytes are ASCII, so both ends are character boundaries.
                (Tok::Word(line.get(i..i + len).unwrap_or_default()), len)
            }
            _ => {
                let c = line.get(i..).and_then(|s| s.chars().next()).unwrap_or('?');
                return Err(format!("unexpected character {}", describe_char(c)));
            }
        };
        out.push(tok);
        i += len;
    }
    Ok(out)
}

fn describe_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("U+{:04X}", c as u32)
    } else {
        format!("`{c}`")
    }
}

/// Quotes a token for a message, shortening a long one.
pub(super) fn quote(word: &str) -> String {
    const MAX: usize = 40;
    let mut chars = word.chars();
    let head: String = chars.by_ref().take(MAX).collect();
    if chars.next().is_some() {
        format!("`{head}...`")
    } else {
        format!("`{head}`")
    }
}

/// How a message names a token it found.
pub(super) fn describe(tok: Option<&Tok<'_>>) -> String {
    match tok {
        None => "end of line".into(),
        Some(Tok::Word(w)) => quote(w),
        Some(Tok::Op(Op::Add)) => "`+`".into(),
        Some(Tok::Op(Op::Sub)) => "`-`".into(),
        Some(Tok::Op(Op::Or)) => "`|`".into(),
        Some(Tok::Comma) => "`,`".into(),
        Some(Tok::Eq) => "`=`".into(),
        Some(Tok::Arrow) => "`=>`".into(),
        Some(Tok::LParen) => "`(`".into(),
        Some(Tok::RParen) => "`)`".into(),
    }
}

/// Whether a word is a number (starts with a digit).
pub(super) fn is_number(word: &str) -> bool {
    word.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

/// Reads a number: decimal or `0x` hex, `_` separators, optional `K`/`M`/`G` suffix.
pub(super) fn number(word: &str) -> Result<u64, String> {
    let (body, shift) = if let Some(b) = word.strip_suffix('K') {
        (b, 10)
    } else if let Some(b) = word.strip_suffix('M') {
        (b, 20)
    } else if let Some(b) = word.strip_suffix('G') {
        (b, 30)
    } else {
        (word, 0)
    };
    let (digits, radix, kind) = match body.strip_prefix("0x") {
        Some(h) => (h, 16, "hex"),
        None => (body, 10, "decimal"),
    };
    let too_big = || format!("{} does not fit in 64 bits", quote(word));
    let mut value: u64 = 0;
    let mut any = false;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        let d = c.to_digit(radix).ok_or_else(|| {
            format!(
                "invalid number {}: `{c}` is not a {kind} digit (numbers are decimal or 0x hex, with an optional K, M or G suffix)",
                quote(word)
            )
        })?;
        value = value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(d)))
            .ok_or_else(too_big)?;
        any = true;
    }
    if !any {
        return Err(format!("invalid number {}: no digits", quote(word)));
    }
    value.checked_mul(1 << shift).ok_or_else(too_big)
}
