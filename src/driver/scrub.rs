//! What a BMC or a plugin says is untrusted text: it may echo the password
//! it was sent, the `Authorization` header (`base64(user:password)`) or a
//! session token, and it may be any length. Every such text passes through
//! [`Secrets::scrub`] (and [`cut`]) before it becomes a [`DriverError`] or a
//! value rivet stores, logs or serves.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// What replaces a secret in scrubbed text.
pub const MASK: &str = "***";

/// The longest untrusted text an error message keeps, in bytes.
pub const MESSAGE_BYTES: usize = 300;

/// The secrets one BMC or plugin could give back.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    words: Vec<String>,
}

impl Secrets {
    /// A BMC login: the password itself, as JSON writes it, and the Basic
    /// authentication forms of it.
    pub fn login(username: Option<&str>, password: Option<&str>) -> Self {
        let mut secrets = Self::default();
        if let Some(password) = password {
            secrets.add(password);
            let quoted = serde_json::to_string(password).expect("strings serialize");
            secrets.add(&quoted[1..quoted.len() - 1]);
            let user = username.unwrap_or("");
            secrets.add(&STANDARD.encode(format!("{user}:{password}")));
        }
        secrets
    }

    /// Add one more secret (e.g. a session token once it is known).
    pub fn add(&mut self, secret: &str) {
        if !secret.is_empty() && !self.words.iter().any(|w| w == secret) {
            self.words.push(secret.to_string());
            // Longest first, so a secret inside another is not left half shown.
            self.words.sort_by_key(|w| std::cmp::Reverse(w.len()));
        }
    }

    /// `text` with every secret masked.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for word in &self.words {
            if out.contains(word.as_str()) {
                out = out.replace(word.as_str(), MASK);
            }
        }
        out
    }

    /// Every string (and key) in `value` scrubbed.
    pub fn scrub_json(&self, value: &mut Value) {
        if self.words.is_empty() {
            return;
        }
        match value {
            Value::String(s) if self.words.iter().any(|w| s.contains(w.as_str())) => {
                *s = self.scrub(s);
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_json(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut v) in entries {
                    self.scrub_json(&mut v);
                    map.insert(self.scrub(&key), v);
                }
            }
            _ => {}
        }
    }

    /// Untrusted text fit for a message: scrubbed, trimmed and cut to
    /// [`MESSAGE_BYTES`] at a character boundary.
    pub fn message(&self, text: &str) -> String {
        let text = self.scrub(text.trim());
        let kept = cut(&text, MESSAGE_BYTES);
        if kept.len() < text.len() {
            format!("{kept}…")
        } else {
            text
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary (a byte slice could split a character and panic).
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Equal without revealing where they differ through timing: for tokens
/// a caller presents (the API's bearer token, an agent's token digest).
pub fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("ab", "abc"));
        assert!(!same_secret("", "abc"));
    }

    use super::*;

    #[test]
    fn a_cut_never_splits_a_character() {
        let text = format!("{}é tail", "a".repeat(299));
        assert_eq!(cut(&text, 300), "a".repeat(299));
        assert_eq!(cut("short", 300), "short");
        let message = Secrets::default().message(&text);
        assert_eq!(message, format!("{}…", "a".repeat(299)));
    }

    #[test]
    fn passwords_their_basic_form_and_tokens_are_masked() {
        let mut secrets = Secrets::login(Some("admin"), Some("pw\"canary"));
        secrets.add("token-1");
        let basic = STANDARD.encode("admin:pw\"canary");
        let text =
            format!("got pw\"canary, {{\"Password\":\"pw\\\"canary\"}}, Basic {basic}, token-1");
        let scrubbed = secrets.scrub(&text);
        assert_eq!(scrubbed, "got ***, {\"Password\":\"***\"}, Basic ***, ***");
        let mut value = serde_json::json!({ "a": ["x pw\"canary"], "token-1": 1 });
        secrets.scrub_json(&mut value);
        assert_eq!(value, serde_json::json!({ "a": ["x ***"], "***": 1 }));
    }
}
