//! What in a declaration file is a secret, and the file's text with every
//! secret blanked: the only text diagnostics show and the loader parses.
//!
//! Secrets are found on the parsed document, on keys and values after
//! unescaping, so no spelling of a key and no escape in a value hides one.
//! A file that does not parse is blanked by what parses of it and, token by
//! token, after anything that looks like a secret's key. Blanking turns
//! bytes into `*` and never removes a byte or a line break, so every span
//! stays valid, and a file that parsed still parses to the same shape.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::lex::{self, Kind, Token};

/// Words that make a key's value a secret wherever they appear in it.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "private_key",
    "privatekey",
    "api_key",
    "apikey",
    "credential",
];

/// Parts of a key (between `_`, `-`, `.`) that are a secret's name alone.
const SECRET_PARTS: &[&str] = &["pwd", "pass", "passw", "pswd", "pword"];

/// Words whose misspellings (within this many edits) name a secret too.
const MISSPELT: &[(&str, usize)] = &[
    ("password", 2),
    ("passphrase", 2),
    ("secret", 1),
    ("token", 1),
];

/// Whether the value of `key` is a secret: it names a password, token,
/// secret, private key or passphrase, or a misspelling of one (`passwd`,
/// `pasword`, `pwd`). A `*_env` or `*_file` key names where a secret is,
/// which is not the secret.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_lowercase();
    !(key.ends_with("_env") || key.ends_with("_file")) && names_secret(&key)
}

/// Whether `key` is a `*_env` key naming the variable that holds a secret
/// (`password_env`, `api_token_env`).
pub fn is_secret_env_key(key: &str) -> bool {
    let key = key.to_lowercase();
    key.strip_suffix("_env").is_some_and(names_secret)
}

fn names_secret(lower: &str) -> bool {
    SECRET_WORDS.iter().any(|word| lower.contains(word))
        || lower
            .split(|c: char| !c.is_alphanumeric())
            .any(|part| SECRET_PARTS.contains(&part) || misspells_secret(part))
}

fn misspells_secret(part: &str) -> bool {
    let len = part.chars().count();
    MISSPELT.iter().any(|&(word, edits)| {
        len + edits >= word.len()
            && len <= word.len() + edits
            && strsim::damerau_levenshtein(part, word) <= edits
    })
}

/// Whether `name` can name an environment variable: letters, digits and
/// `_`, not starting with a digit.
pub fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether the value of a `password_env`-like key may be the secret itself
/// rather than a variable's name: it cannot name a variable, or it looks
/// random (long, no `_`, case and digits mixed all through) and no variable
/// of that name is set.
pub fn env_value_may_be_secret(value: &str) -> bool {
    !is_env_name(value) || (looks_random(value) && std::env::var_os(value).is_none())
}

fn looks_random(name: &str) -> bool {
    let len = name.chars().count();
    if len < 12 || name.contains('_') {
        return false;
    }
    let class = |b: u8| match b {
        b'0'..=b'9' => 0,
        b'A'..=b'Z' => 1,
        _ => 2,
    };
    let bytes = name.as_bytes();
    let changes = bytes
        .windows(2)
        .filter(|w| class(w[0]) != class(w[1]))
        .count();
    let digits = bytes.iter().any(u8::is_ascii_digit);
    changes * 2 >= len || (len >= 24 && digits && changes * 3 >= len)
}

/// Byte ranges of credentials in URLs within `s`: the password of
/// `user:password@host` (the whole user-info after `scheme://` when it has
/// no password, as a token often is) and the values of secret query or
/// fragment parameters (`?token=…`).
pub fn url_secrets(s: &str) -> Vec<Range<usize>> {
    const STOPS: &str = "/?#&;\"'<>()[]{},=";
    let mut out = Vec::new();
    if !s.contains(['@', '=']) {
        return out;
    }
    for (at, _) in s.match_indices('@') {
        let start = s[..at]
            .char_indices()
            .rev()
            .find(|&(_, c)| c.is_whitespace() || STOPS.contains(c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let info = &s[start..at];
        if let Some(colon) = info.find(':') {
            if colon + 1 < info.len() {
                out.push(start + colon + 1..at);
            }
        } else if !info.is_empty() && s[..start].ends_with("://") {
            out.push(start..at);
        }
    }
    for (sep, _) in s.match_indices(['?', '&', '#', ';']) {
        let key_start = sep + 1;
        let rest = &s[key_start..];
        let key_len = rest
            .find(|c: char| c.is_whitespace() || "=&#;?/\"'".contains(c))
            .unwrap_or(rest.len());
        if !rest[key_len..].starts_with('=') || !is_secret_key(&percent_decoded(&rest[..key_len])) {
            continue;
        }
        let value_start = key_start + key_len + 1;
        let value_end = s[value_start..]
            .find(|c: char| c.is_whitespace() || "&#;\"'".contains(c))
            .map_or(s.len(), |i| value_start + i);
        if value_end > value_start {
            out.push(value_start..value_end);
        }
    }
    out
}

/// `s` with every URL credential [`url_secrets`] finds blanked, as the
/// loader blanks a file's: for a URL that comes from elsewhere (a flag).
pub fn blank_url_secrets(s: &str) -> String {
    let blanks: Vec<Blank> = url_secrets(s).into_iter().map(Blank::Chars).collect();
    if blanks.is_empty() {
        s.to_string()
    } else {
        apply(s, &blanks)
    }
}

fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A part of the text to blank.
#[derive(Debug)]
enum Blank {
    /// Every character but line breaks becomes `*`.
    Chars(Range<usize>),
    /// A number becomes a string of `*` of the same length (`"****"`), so
    /// the text still parses.
    AsString(Range<usize>),
}

/// The text to show of a file that parsed as `table`, with its secrets
/// blanked; `None` when it holds none, to be shown as it is.
pub fn redact_parsed(text: &str, table: &DeTable<'_>) -> Option<String> {
    let mut blanks = Vec::new();
    table_blanks(text, table, false, &mut Keys::default(), &mut blanks);
    for token in lex::tokens(text) {
        if token.kind == Kind::Comment {
            comment_blanks(text, &token, &mut blanks);
        }
    }
    (!blanks.is_empty()).then(|| apply(text, &blanks))
}

/// The text to show of a file that does not parse: the secrets of what
/// parses of it blanked, and, token by token, everything after a word that
/// looks like a secret's key to the end of its line (or of its value, when
/// that starts on a later line or spans lines), every URL credential and
/// every `password_env`-like value that may be the password itself.
pub fn redact_unparsable(text: &str) -> String {
    let mut blanks = Vec::new();
    let (partial, _) = DeTable::parse_recoverable(text);
    table_blanks(
        text,
        partial.get_ref(),
        false,
        &mut Keys::default(),
        &mut blanks,
    );
    drop(partial);
    lexical_blanks(text, &mut blanks);
    if blanks.is_empty() {
        text.to_string()
    } else {
        apply(text, &blanks)
    }
}

/// What each key of a file names, found once per distinct key: a file of
/// many nodes repeats the same few.
#[derive(Default)]
struct Keys(std::collections::HashMap<String, (bool, bool)>);

impl Keys {
    /// Whether `key` names a secret, and a `password_env`-like key.
    fn kind(&mut self, key: &str) -> (bool, bool) {
        if let Some(&kind) = self.0.get(key) {
            return kind;
        }
        let kind = (is_secret_key(key), is_secret_env_key(key));
        self.0.insert(key.to_string(), kind);
        kind
    }
}

fn table_blanks(
    text: &str,
    table: &DeTable<'_>,
    secret: bool,
    keys: &mut Keys,
    out: &mut Vec<Blank>,
) {
    for (key, value) in table.iter() {
        let name = key.get_ref();
        if !url_secrets(name).is_empty() {
            out.push(Blank::Chars(string_content(text, key.span())));
        }
        let (secret_key, env_key) = keys.kind(name);
        let secret = secret || secret_key;
        let env = !secret && env_key;
        value_blanks(text, value, secret, env, keys, out);
    }
}

fn value_blanks(
    text: &str,
    value: &Spanned<DeValue<'_>>,
    secret: bool,
    env: bool,
    keys: &mut Keys,
    out: &mut Vec<Blank>,
) {
    let span = value.span();
    match value.get_ref() {
        DeValue::String(s) if secret || (env && env_value_may_be_secret(s)) => {
            out.push(Blank::Chars(string_content(text, span)));
        }
        DeValue::String(s) => string_secrets(text, span, s, out),
        DeValue::Integer(_) | DeValue::Float(_) if secret && span.len() >= 2 => {
            out.push(Blank::AsString(span));
        }
        DeValue::Table(t) => table_blanks(text, t, secret, keys, out),
        DeValue::Array(a) => {
            for v in a.iter() {
                value_blanks(text, v, secret, env, keys, out);
            }
        }
        _ => {}
    }
}

/// Blank the URL credentials in a string whose value is `value` and whose
/// token is at `span`, mapped through the escapes the token is written
/// with; the whole content when the token does not read as `value`.
fn string_secrets(text: &str, span: Range<usize>, value: &str, out: &mut Vec<Blank>) {
    let found = url_secrets(value);
    if found.is_empty() {
        return;
    }
    let content = string_content(text, span.clone());
    let raw = text.get(content.clone()).unwrap_or("");
    let multi_line = content.start >= span.start + 3;
    // A line break right after the opening quotes is not part of the value.
    let skip = match () {
        _ if multi_line && raw.starts_with("\r\n") => 2,
        _ if multi_line && raw.starts_with('\n') => 1,
        _ => 0,
    };
    let raw = &raw[skip..];
    let start = content.start + skip;
    let (read, from) = if text[span.start..].starts_with('"') {
        lex::unescape_mapped(raw)
    } else {
        (raw.to_string(), (0..=raw.len()).collect())
    };
    if read != value {
        out.push(Blank::Chars(content));
        return;
    }
    out.extend(
        found
            .into_iter()
            .map(|r| Blank::Chars(start + from[r.start]..start + from[r.end])),
    );
}

/// The part of a string token between its quotes (`"`, `'`, or three of
/// either); the whole span when it does not start with a quote.
fn string_content(text: &str, span: Range<usize>) -> Range<usize> {
    let raw = text.get(span.clone()).unwrap_or("");
    let quotes = if raw.len() >= 6 && (raw.starts_with("\"\"\"") || raw.starts_with("'''")) {
        3
    } else if raw.starts_with(['"', '\'']) {
        1
    } else {
        0
    };
    let start = span.start + quotes;
    let end = span.end.saturating_sub(quotes).max(start);
    start..end
}

/// In a comment: everything after a word that looks like a secret's key,
/// and every URL credential.
fn comment_blanks(text: &str, token: &Token, out: &mut Vec<Blank>) {
    let comment = &text[token.span.clone()];
    let word_end = comment
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .scan(0, |offset, word| {
            let end = *offset + word.len();
            *offset = end + 1;
            Some((word, end))
        })
        .find(|(word, _)| is_secret_key(word))
        .map(|(_, end)| end);
    if let Some(end) = word_end {
        let start = token.span.start + end;
        if start < token.span.end {
            out.push(Blank::Chars(start..token.span.end));
        }
    }
    let base = token.span.start;
    out.extend(
        url_secrets(comment)
            .into_iter()
            .map(|r| Blank::Chars(base + r.start..base + r.end)),
    );
}

/// Token by token, for text that does not parse.
fn lexical_blanks(text: &str, out: &mut Vec<Blank>) {
    enum After {
        Nothing,
        /// A secret's key: blank to the end of the line, or, when no value
        /// has been blanked yet by then, on to the end of the line of the
        /// first one.
        SecretKey {
            values: usize,
        },
        /// A `password_env`-like key: check the next value.
        EnvKey,
    }
    let mut after = After::Nothing;
    // Whether a token is where a value is (after `=`), not a key: only a
    // key starts blanking, so a value that mentions a token does not hide
    // the lines after it.
    let mut in_value = false;
    for token in lex::tokens(text) {
        match token.kind {
            Kind::Punct(b'=') => in_value = true,
            Kind::Newline | Kind::Punct(b'{' | b',' | b'[') => in_value = false,
            _ => {}
        }
        if let After::SecretKey { values } = &mut after {
            match token.kind {
                Kind::Newline if *values > 0 => after = After::Nothing,
                Kind::Newline | Kind::Punct(_) => {}
                Kind::Comment => out.push(Blank::Chars(token.span)),
                Kind::Word => {
                    out.push(Blank::Chars(token.span));
                    *values += 1;
                }
                Kind::Str { content, .. } => {
                    out.push(Blank::Chars(content));
                    *values += 1;
                }
            }
            continue;
        }
        match token.kind {
            Kind::Newline => after = After::Nothing,
            Kind::Punct(_) => {}
            Kind::Comment => comment_blanks(text, &token, out),
            Kind::Str { .. } | Kind::Word => {
                let value = lex::decoded(text, &token);
                if matches!(after, After::EnvKey) && env_value_may_be_secret(&value) {
                    out.push(Blank::Chars(match token.kind {
                        Kind::Str { content, .. } => content,
                        _ => token.span,
                    }));
                    after = After::Nothing;
                    continue;
                }
                string_secrets(text, token.span.clone(), &value, out);
                after = if in_value {
                    After::Nothing
                } else if is_secret_key(&value) {
                    After::SecretKey { values: 0 }
                } else if is_secret_env_key(&value) {
                    After::EnvKey
                } else {
                    After::Nothing
                };
            }
        }
    }
}

fn apply(text: &str, blanks: &[Blank]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for blank in blanks {
        let (Blank::Chars(range) | Blank::AsString(range)) = blank;
        let range = char_range(text, range);
        for b in &mut bytes[range.clone()] {
            if *b != b'\n' && *b != b'\r' {
                *b = b'*';
            }
        }
        if matches!(blank, Blank::AsString(_)) && range.len() >= 2 {
            bytes[range.start] = b'"';
            bytes[range.end - 1] = b'"';
        }
    }
    // Whole characters were replaced by ASCII, so the bytes are UTF-8.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// `range` within the text, widened to whole characters.
fn char_range(text: &str, range: &Range<usize>) -> Range<usize> {
    let mut start = range.start.min(text.len());
    let mut end = range.end.clamp(start, text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    while !text.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_with_typos_but_not_where_a_secret_is() {
        for key in [
            "password",
            "PassWord",
            "passwd",
            "pasword",
            "passowrd",
            "pwd",
            "bmc_pass",
            "api_token",
            "client_secret",
            "secert",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "password_env",
            "password_file",
            "username",
            "address",
            "bypass",
            "traits",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
        assert!(is_secret_env_key("password_env") && is_secret_env_key("api_token_env"));
        assert!(!is_secret_env_key("home_env"));
    }

    #[test]
    fn env_values_that_cannot_be_names_or_look_random_are_secrets() {
        assert!(env_value_may_be_secret("hunter2!"));
        assert!(env_value_may_be_secret("Xk9fQ2mZpL7vR4tW"));
        assert!(!env_value_may_be_secret("RACK1_BMC_PASSWORD"));
        assert!(!env_value_may_be_secret("RackBmcPassword1"));
        assert!(!env_value_may_be_secret("PATH"));
    }

    #[test]
    fn url_credentials_and_secret_parameters() {
        let found = |s: &'static str| -> Vec<&'static str> {
            url_secrets(s).into_iter().map(|r| &s[r]).collect()
        };
        assert_eq!(
            found("redfish+https://admin:hunter2@10.0.0.9/x"),
            ["hunter2"]
        );
        assert_eq!(found("https://ghp_abc@github.com/x"), ["ghp_abc"]);
        assert_eq!(found("redfish://h/x?latency=2ms&t%6Fken=abc#k"), ["abc"]);
        assert!(url_secrets("ops@example.com").is_empty());
        assert_eq!(
            blank_url_secrets("http://root:hunter2@10.0.0.5:6385"),
            "http://root:*******@10.0.0.5:6385"
        );
        assert!(url_secrets("fake://n1?latency=20ms").is_empty());
    }

    fn redacted(text: &str) -> String {
        let table = DeTable::parse(text).unwrap();
        redact_parsed(text, table.get_ref()).unwrap_or_else(|| text.to_string())
    }

    #[test]
    fn parsed_secrets_are_blanked_in_place_and_the_text_still_parses() {
        let text = concat!(
            "\"pass\\u0077ord\" = \"a\\\"b\"\n",
            "pin.password = 123456\n",
            "multi = { token = \"\"\"x\ny\"\"\" }\n",
            "url = \"r://\\u0061:pw\\u0040h\"\n",
            "lit = \'\'\'\nr://u:pw2@h\'\'\'\n",
            "ok = \"fake://n?latency=1ms\" # old password: hunter2\n",
        );
        let shown = redacted(text);
        assert_eq!(shown.len(), text.len());
        assert_eq!(shown.lines().count(), text.lines().count());
        for secret in ["a\\\"b", "123456", "x\ny", "pw", "hunter2"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("fake://n?latency=1ms"));
        // Through the escapes, only the password is blanked.
        assert!(shown.contains(r#""r://\u0061:**\u0040h""#), "{shown}");
        assert!(shown.contains("r://u:***@h"), "{shown}");
        DeTable::parse(&shown).expect("the blanked text parses");
    }

    #[test]
    fn a_file_that_does_not_parse_is_blanked_after_secret_keys() {
        let text = concat!(
            "a = { password = \"hunter2\"\n",
            "\"pass\\u0077ord\"\n",
            "  \"hunter3\" # hunter4\n",
            "b = \"r://u:hunter5@h\" = \n",
            "password_env = \"hunter6!\" [\n",
            "name = \"kept\"\n",
            "url = \"r://h/?token=hunter7\" }\n",
            "also = \"kept\"\n",
        );
        let shown = redact_unparsable(text);
        assert_eq!(shown.len(), text.len());
        for secret in [
            "hunter2", "hunter3", "hunter4", "hunter5", "hunter6", "hunter7",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("name = \"kept\""));
        // A value that names a token is not a key: the next line is kept.
        assert!(shown.contains("also = \"kept\""), "{shown}");
    }

    #[test]
    fn blanking_keeps_characters_whole() {
        let text = "password = \"é𝄞\"\n";
        let shown = redacted(text);
        assert_eq!(shown.len(), text.len());
        assert!(!shown.contains('é'));
    }
}
