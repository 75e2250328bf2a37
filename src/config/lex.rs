//! A forgiving tokenizer of TOML-like text, for text that may not parse:
//! finding what looks like a secret in a broken file, and a place for the
//! few parse errors that come without one. It never fails: an unterminated
//! string ends at the end of its line (or of the file, for a multi-line
//! one), and anything else that is not a string, a comment or punctuation
//! is a word.

use std::ops::Range;

/// One token: its kind and its byte range in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub span: Range<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A quoted string (or key). `content` is the part between the quotes.
    Str {
        content: Range<usize>,
        /// `"…"` or `"""…"""`: escapes apply.
        basic: bool,
    },
    /// A bare key, number, boolean, date or any other run of text.
    Word,
    /// `#` to the end of the line; the span leaves the `#` out.
    Comment,
    /// `=`, `[`, `]`, `{`, `}` or `,`.
    Punct(u8),
    /// A line break (`\n`).
    Newline,
}

fn is_punct(b: u8) -> bool {
    matches!(b, b'=' | b'[' | b']' | b'{' | b'}' | b',')
}

/// Every token of `text`, in order. Spaces, tabs and `\r` separate tokens
/// and are not tokens themselves.
pub fn tokens(text: &str) -> Tokens<'_> {
    Tokens {
        bytes: text.as_bytes(),
        at: 0,
    }
}

/// The tokens of a text, one at a time (see [`tokens`]).
pub struct Tokens<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Iterator for Tokens<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let bytes = self.bytes;
        while self.at < bytes.len() && matches!(bytes[self.at], b' ' | b'\t' | b'\r') {
            self.at += 1;
        }
        let start = self.at;
        let b = *bytes.get(start)?;
        let (kind, end) = match b {
            b'\n' => (Kind::Newline, start + 1),
            b'#' => {
                let end = line_end(bytes, start);
                self.at = end;
                return Some(Token {
                    kind: Kind::Comment,
                    span: start + 1..end,
                });
            }
            b'"' | b'\'' => {
                let (content, end) = string_at(bytes, start);
                let basic = b == b'"';
                (Kind::Str { content, basic }, end)
            }
            b if is_punct(b) => (Kind::Punct(b), start + 1),
            _ => {
                let mut end = start;
                while end < bytes.len()
                    && !matches!(
                        bytes[end],
                        b' ' | b'\t' | b'\r' | b'\n' | b'#' | b'"' | b'\''
                    )
                    && !is_punct(bytes[end])
                {
                    end += 1;
                }
                (Kind::Word, end)
            }
        };
        self.at = end;
        Some(Token {
            kind,
            span: start..end,
        })
    }
}

fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |n| from + n)
}

/// The content range and the end of the string that opens at `start`.
fn string_at(bytes: &[u8], start: usize) -> (Range<usize>, usize) {
    let quote = bytes[start];
    let basic = quote == b'"';
    let triple = bytes[start..].starts_with(&[quote; 3]);
    let open = if triple { 3 } else { 1 };
    let mut i = start + open;
    while i < bytes.len() {
        let b = bytes[i];
        if basic && b == b'\\' {
            // An escape; a backslash at the end of a one-line string does
            // not carry it onto the next line.
            i += if !triple && bytes.get(i + 1) == Some(&b'\n') {
                1
            } else {
                2
            };
            continue;
        }
        if !triple && b == b'\n' {
            // Unterminated: the string ends with its line.
            return (start + open..i, i);
        }
        if b == quote && (!triple || bytes[i..].starts_with(&[quote; 3])) {
            let close = if triple { 3 } else { 1 };
            return (start + open..i, i + close);
        }
        i += 1;
    }
    let end = bytes.len();
    (start + open..end.max(start + open), end)
}

/// The text a basic string's content stands for: escapes decoded, a
/// line-ending backslash joining lines. Invalid escapes stay as written.
pub fn unescape(raw: &str) -> String {
    unescape_mapped(raw).0
}

/// [`unescape`], with where in `raw` each byte of the result comes from:
/// `from[i]` is the offset in `raw` of the escape or character that gave
/// byte `i`, and one more entry is `raw.len()`.
pub fn unescape_mapped(raw: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(raw.len());
    let mut from = Vec::with_capacity(raw.len() + 1);
    let push = |out: &mut String, from: &mut Vec<usize>, c: char, at: usize| {
        out.push(c);
        from.extend(std::iter::repeat_n(at, c.len_utf8()));
    };
    let mut chars = raw.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c != '\\' {
            push(&mut out, &mut from, c, at);
            continue;
        }
        let Some(&(_, next)) = chars.peek() else {
            push(&mut out, &mut from, '\\', at);
            break;
        };
        let simple = match next {
            'b' => Some('\u{8}'),
            't' => Some('\t'),
            'n' => Some('\n'),
            'f' => Some('\u{c}'),
            'r' => Some('\r'),
            'e' => Some('\u{1b}'),
            '"' => Some('"'),
            '\\' => Some('\\'),
            _ => None,
        };
        if let Some(decoded) = simple {
            chars.next();
            push(&mut out, &mut from, decoded, at);
            continue;
        }
        let digits = match next {
            'x' => 2,
            'u' => 4,
            'U' => 8,
            _ => 0,
        };
        if digits > 0 {
            let hex_start = at + 2;
            let decoded = raw
                .get(hex_start..hex_start + digits)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32);
            if let Some(decoded) = decoded {
                push(&mut out, &mut from, decoded, at);
                for _ in 0..=digits {
                    chars.next();
                }
                continue;
            }
        }
        if next == ' ' || next == '\t' || next == '\r' || next == '\n' {
            // A line-ending backslash: the line break and the white space
            // after it are trimmed.
            let rest = &raw[at + 1..];
            let blank = rest
                .find(|c: char| !c.is_whitespace())
                .unwrap_or(rest.len());
            if rest[..blank].contains('\n') {
                while chars.peek().is_some_and(|&(i, _)| i < at + 1 + blank) {
                    chars.next();
                }
                continue;
            }
        }
        push(&mut out, &mut from, '\\', at);
    }
    from.push(raw.len());
    (out, from)
}

/// The text a string or word token stands for.
pub fn decoded(text: &str, token: &Token) -> String {
    match token.kind {
        Kind::Str {
            ref content,
            basic: true,
        } => unescape(&text[content.clone()]),
        Kind::Str { ref content, .. } => text[content.clone()].to_string(),
        _ => text[token.span.clone()].to_string(),
    }
}

/// Where the key with the most dotted parts starts: the place of a key too
/// deep to parse, which the parser reports without one.
pub fn deepest_key(text: &str) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    let mut run = 0;
    let mut run_start = None;
    let mut in_value = false;
    for token in tokens(text) {
        match token.kind {
            Kind::Newline | Kind::Punct(b'{' | b',' | b'[') => {
                in_value = false;
                run = 0;
                run_start = None;
            }
            Kind::Punct(b'=') => in_value = true,
            Kind::Word | Kind::Str { .. } if !in_value => {
                let start = *run_start.get_or_insert(token.span.start);
                if token.kind == Kind::Word {
                    run += text[token.span.clone()].matches('.').count();
                }
                if run > 0 && best.is_none_or(|(most, _)| run > most) {
                    best = Some((run, start));
                }
            }
            _ => {}
        }
    }
    best.map(|(_, at)| at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, &str)> {
        tokens(text).map(|t| (t.kind, &text[t.span])).collect()
    }

    #[test]
    fn strings_comments_words_and_punctuation() {
        let text = "a.b = \"x\\\"y\" # note\n[t]\n";
        let got = kinds(text);
        assert_eq!(got[0], (Kind::Word, "a.b"));
        assert_eq!(got[1], (Kind::Punct(b'='), "="));
        assert!(matches!(got[2].0, Kind::Str { basic: true, .. }));
        assert_eq!(got[2].1, "\"x\\\"y\"");
        assert_eq!(got[3], (Kind::Comment, " note"));
        assert_eq!(got[4].0, Kind::Newline);
        assert_eq!(got[5], (Kind::Punct(b'['), "["));
    }

    #[test]
    fn an_unterminated_string_ends_with_its_line() {
        let text = "a = \"open\nb = 1";
        let got = kinds(text);
        assert_eq!(got[2].1, "\"open");
        assert_eq!(got[3].0, Kind::Newline);
        assert_eq!(got[4], (Kind::Word, "b"));
    }

    #[test]
    fn a_multi_line_string_spans_lines_and_an_open_one_runs_to_the_end() {
        let text = "a = '''x\ny''' b\nc = \"\"\"open\nstill";
        let got = kinds(text);
        assert_eq!(got[2].1, "'''x\ny'''");
        assert_eq!(got[3], (Kind::Word, "b"));
        assert_eq!(got.last().unwrap().1, "\"\"\"open\nstill");
    }

    #[test]
    fn unescape_decodes_unicode_and_keeps_invalid_escapes() {
        assert_eq!(unescape(r"pass\u0077ord"), "password");
        assert_eq!(unescape(r"a\U00000040b"), "a@b");
        assert_eq!(unescape(r"\q\u00zz"), r"\q\u00zz");
        assert_eq!(unescape("a\\\n   b"), "ab");
        assert_eq!(unescape("tab\\tend\\"), "tab\tend\\");
    }

    #[test]
    fn unescape_maps_each_byte_to_where_it_was_written() {
        let (text, from) = unescape_mapped(r"a\u0040é");
        assert_eq!(text, "a@é");
        assert_eq!(from, [0, 1, 7, 7, 9]);
    }

    #[test]
    fn the_deepest_key_is_found_in_headers_and_dotted_keys() {
        let text = "x = 1.5\n[a.b]\nc.d.e.f = 2\n";
        assert_eq!(deepest_key(text), Some(text.find("c.d").unwrap()));
        let text = "\"q\" . \"r\" . s = 1\n";
        assert_eq!(deepest_key(text), Some(0));
        assert_eq!(deepest_key("a = 1\n"), None);
    }
}
