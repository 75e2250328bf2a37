//! Where one booted agent listens, and the token it was handed at lookup.
//!
//! The callback URL comes from the agent's heartbeat: untrusted text. It is
//! checked once, where the connection is made, so the client only ever
//! builds request URLs from a plain `http(s)://host[:port][/path]`, and no
//! message quotes it (it may be anything the agent sent).

use std::fmt;

use url::Url;

use crate::driver::DriverError;

/// What an agent token shows when printed.
const SHOWN: &str = "******";

/// The agent token: Debug and Display print `******`; [`expose`] only
/// where it is sent.
///
/// [`expose`]: AgentToken::expose
#[derive(Clone, PartialEq, Eq)]
pub struct AgentToken(String);

impl AgentToken {
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// The token itself, for the query of a request to its agent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SHOWN)
    }
}

impl fmt::Display for AgentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SHOWN)
    }
}

/// Where one booted agent listens, and its token.
#[derive(Clone, Debug)]
pub struct AgentConn {
    pub node: String,
    pub callback_url: Url,
    pub token: AgentToken,
}

impl AgentConn {
    /// The agent of `node` at `callback_url`, as its heartbeat said:
    /// `http` or `https`, a host, no credentials, query or fragment (the
    /// client adds its own query, the token's). A path is kept as a prefix
    /// of the agent's API.
    pub fn new(
        node: impl Into<String>,
        callback_url: &str,
        token: AgentToken,
    ) -> Result<Self, DriverError> {
        let node = node.into();
        let refuse = |why: &str| {
            DriverError::invalid(format!(
                "the agent of node {node} sent a callback_url rivet does not call: {why}; the agent's `callback_url` must be `http://HOST:PORT` or `https://HOST:PORT` (check the ramdisk's `ipa-advertise-host` and `ipa-listen-port`)"
            ))
        };
        let url = Url::parse(callback_url).map_err(|e| refuse(&format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refuse(&format!(
                "its scheme is `{}`, not http or https",
                crate::driver::scrub::cut(url.scheme(), 20)
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(refuse("it names no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("it carries credentials"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(refuse("it has a query or a fragment"));
        }
        if token.expose().is_empty() {
            return Err(DriverError::invalid(format!(
                "the agent of node {node} has an empty token: rivet hands every agent a token at lookup, so this connection was not made from one"
            )));
        }
        Ok(Self {
            node,
            callback_url: url,
            token,
        })
    }

    /// `host:port` of the agent, for messages: never its query or path.
    pub fn address(&self) -> String {
        let host = self.callback_url.host_str().unwrap_or("?");
        match self.callback_url.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }

    /// `{callback_url}/v1/commands/` or, for one command, `…/commands/ID`
    /// (the ID one path segment, escaped), without a query. The trailing
    /// slash of the collection matters: IPA answers `/v1/commands` with a
    /// 308 to `/v1/commands/`.
    pub(super) fn commands_url(&self, id: Option<&str>) -> Url {
        let mut url = self.callback_url.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .extend(["v1", "commands", id.unwrap_or("")]);
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::ErrorKind;

    fn token() -> AgentToken {
        AgentToken::new("tok-canary-0123456789abcdef0123456789".into())
    }

    #[test]
    fn a_token_never_prints() {
        let token = token();
        assert_eq!(format!("{token}"), "******");
        assert_eq!(format!("{token:?}"), "******");
        assert_eq!(token.expose(), "tok-canary-0123456789abcdef0123456789");
        let conn = AgentConn::new("n1", "http://127.0.0.1:9999", token).unwrap();
        let shown = format!("{conn:?}");
        assert!(!shown.contains("canary"), "{shown}");
        assert!(shown.contains("******"), "{shown}");
    }

    #[test]
    fn only_plain_http_and_https_callback_urls_are_called() {
        let refused = |url: &str| {
            let e = AgentConn::new("n1", url, token()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Invalid, "{url}: {e}");
            assert!(e.message.starts_with("the agent of node n1 "), "{e}");
            e.message
        };
        assert!(refused("ftp://127.0.0.1:21").contains("scheme is `ftp`"));
        assert!(refused("not a url").contains("not a URL"));
        let credentials = refused("http://ipa:s3cret@127.0.0.1:9999");
        assert!(credentials.contains("credentials"), "{credentials}");
        assert!(!credentials.contains("s3cret"), "{credentials}");
        let query = refused("http://127.0.0.1:9999/?agent_token=leaked");
        assert!(query.contains("query or a fragment"), "{query}");
        assert!(!query.contains("leaked"), "{query}");
        assert!(refused("http://127.0.0.1:9999/#x").contains("query or a fragment"));
        assert!(refused("unix:/run/ipa.sock").contains("scheme is `unix`"));
        let empty = AgentConn::new("n1", "http://127.0.0.1:1", AgentToken::new(String::new()));
        assert!(empty.unwrap_err().message.contains("empty token"));
    }

    #[test]
    fn commands_urls_keep_the_trailing_slash_and_a_path_prefix() {
        let conn = AgentConn::new("n1", "http://127.0.0.1:9999", token()).unwrap();
        assert_eq!(
            conn.commands_url(None).as_str(),
            "http://127.0.0.1:9999/v1/commands/"
        );
        assert_eq!(
            conn.commands_url(Some("abc")).as_str(),
            "http://127.0.0.1:9999/v1/commands/abc"
        );
        assert_eq!(
            conn.commands_url(Some("a/b?c")).as_str(),
            "http://127.0.0.1:9999/v1/commands/a%2Fb%3Fc"
        );
        assert_eq!(conn.address(), "127.0.0.1:9999");
        let proxied = AgentConn::new("n1", "https://agents.example/n1/", token()).unwrap();
        assert_eq!(
            proxied.commands_url(None).as_str(),
            "https://agents.example/n1/v1/commands/"
        );
        assert_eq!(proxied.address(), "agents.example:443");
    }
}
