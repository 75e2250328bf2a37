//! `rivet.toml`'s `[cluster]`: the etcd cluster the daemons of one fleet
//! coordinate through, how they reach it, and the URL each one is reached
//! at by the others. Without `[cluster]` a fleet has none of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::bmc::not_an_env_name;
use super::nodes::{CONDUCTOR_GROUP_HELP, is_conductor_group};
use super::{Builder, loc, parse_duration};
use crate::config::raw::ClusterDecl;
use crate::config::spanned::Sp;
use crate::diag::{Loc, Problem, SourceFile};

/// `[cluster]` with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The etcd endpoints as written, without a trailing `/`.
    pub etcd: Vec<String>,
    pub lease_ttl: Duration,
    /// In lower case, as Ironic keeps it; `""` when unset.
    pub conductor_group: String,
    pub key_prefix: String,
    /// Where the other daemons forward API requests for this host's nodes;
    /// `--advertise-url` over `[cluster] advertise_url`.
    pub advertise_url: Option<String>,
    /// TLS files, resolved against the fleet directory.
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_env: Option<String>,
}

/// The shortest lease etcd grants.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
pub const DEFAULT_KEY_PREFIX: &str = "/rivet/";

/// Which URL of `[cluster]` is checked: they differ in what they need and
/// in the advice on what is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UrlOf {
    /// An etcd client URL.
    Etcd,
    /// The URL this daemon's API is reached at by its peers.
    Advertise,
}

impl UrlOf {
    fn example(self) -> &'static str {
        match self {
            UrlOf::Etcd => "https://10.0.0.1:2379",
            UrlOf::Advertise => "http://10.0.0.5:6385",
        }
    }

    fn credentials_help(self) -> &'static str {
        match self {
            UrlOf::Etcd => {
                "remove `user:password@` from the URL; set `username` and `password_env` (the variable that holds the password) in [cluster] instead"
            }
            UrlOf::Advertise => {
                "remove `user:password@` from the URL: peers call each other's API with the token of `[conductor] api_token_env`, never with URL credentials"
            }
        }
    }
}

/// What is wrong with a URL: the message, the label at its place, the help.
#[derive(Debug)]
pub(super) struct BadUrl {
    pub message: String,
    pub label: &'static str,
    pub help: String,
}

/// Check a URL of `[cluster]` (`subject` names it in messages): `http` or
/// `https`, a host, no credentials, path, query or fragment, and for the
/// advertised URL a port. `text` has its secrets blanked already; the
/// message of a URL with credentials does not quote it all the same.
pub(super) fn service_url(text: &str, of: UrlOf, subject: &str) -> Result<url::Url, BadUrl> {
    let example = of.example();
    let url = url::Url::parse(text).map_err(|e| BadUrl {
        message: format!("{subject} `{text}` is not a URL: {e}"),
        label: "not a URL",
        help: format!("write `http://HOST:PORT` or `https://HOST:PORT`, e.g. `{example}`"),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(BadUrl {
            message: format!(
                "{subject} `{text}` is not an `http://` or `https://` URL, but `{}://`",
                url.scheme()
            ),
            label: "not http or https",
            help: format!("write `http://HOST:PORT` or `https://HOST:PORT`, e.g. `{example}`"),
        });
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BadUrl {
            message: format!("{subject} carries credentials"),
            label: "credentials in a URL",
            help: of.credentials_help().to_string(),
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(BadUrl {
            message: format!("{subject} `{text}` has a query or a fragment"),
            label: "`?…` or `#…`",
            help: format!(
                "remove the `?…` or `#…` part: write only scheme, host and port, e.g. `{example}`"
            ),
        });
    }
    if !matches!(url.path(), "" | "/") {
        return Err(BadUrl {
            message: format!("{subject} `{text}` has a path, `{}`", url.path()),
            label: "a path",
            help: format!("write only scheme, host and port, e.g. `{example}`"),
        });
    }
    if of == UrlOf::Advertise && !writes_a_port(text) {
        return Err(BadUrl {
            message: format!("{subject} `{text}` names no port"),
            label: "no port",
            help: format!("add the port this daemon's API listens on, e.g. `{example}`"),
        });
    }
    Ok(url)
}

/// Whether a URL that parsed writes its port (the URL parser forgets a
/// scheme's default port, so `url.port()` cannot tell).
fn writes_a_port(text: &str) -> bool {
    let rest = text.split_once("://").map_or(text, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let after_host = match host_port.rfind(']') {
        Some(end) => &host_port[end + 1..],
        None => host_port,
    };
    after_host
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

impl Builder {
    pub(super) fn cluster(
        &mut self,
        file: Option<&Arc<SourceFile>>,
        root: &Path,
        decl: Option<&Sp<ClusterDecl>>,
    ) -> Option<ClusterSettings> {
        let (file, table) = (file?, decl?);
        let decl = table.value();
        let mut cluster = ClusterSettings {
            etcd: Vec::new(),
            lease_ttl: DEFAULT_LEASE_TTL,
            conductor_group: String::new(),
            key_prefix: DEFAULT_KEY_PREFIX.to_string(),
            advertise_url: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: decl.username.as_ref().map(|u| u.value().clone()),
            password_env: None,
        };
        let plain_endpoints = self.etcd_endpoints(file, table, &mut cluster);
        if let Some(ttl) = &decl.lease_ttl
            && let Some(ttl) = self.lease_ttl(file, ttl)
        {
            cluster.lease_ttl = ttl;
        }
        if let Some(group) = &decl.conductor_group {
            if is_conductor_group(group.value()) {
                cluster.conductor_group = group.value().to_ascii_lowercase();
            } else {
                self.push(
                    Problem::new(
                        "rivet::cluster::conductor_group",
                        format!("`{}` is not a valid conductor group", group.value()),
                    )
                    .at(&loc(file, group), "invalid conductor group")
                    .help(CONDUCTOR_GROUP_HELP),
                );
            }
        }
        if let Some(prefix) = &decl.key_prefix
            && self.key_prefix(file, prefix)
        {
            cluster.key_prefix = prefix.value().clone();
        }
        if let Some(advertise) = &decl.advertise_url {
            match service_url(advertise.value(), UrlOf::Advertise, "advertise URL") {
                Ok(_) => cluster.advertise_url = Some(advertise.value().clone()),
                Err(bad) => self.push(bad_url(
                    "rivet::cluster::advertise_url",
                    file,
                    advertise,
                    bad,
                )),
            }
        }
        self.tls(file, root, decl, &plain_endpoints, &mut cluster);
        self.credentials(file, decl, &mut cluster);
        Some(cluster)
    }

    /// Check `etcd` and keep its valid endpoints; the places of those that
    /// are `http://`, for the TLS check.
    fn etcd_endpoints(
        &mut self,
        file: &Arc<SourceFile>,
        table: &Sp<ClusterDecl>,
        cluster: &mut ClusterSettings,
    ) -> Vec<(Loc, String)> {
        let example = "etcd = [\"https://10.0.0.1:2379\", \"https://10.0.0.2:2379\"]";
        let Some(list) = &table.value().etcd else {
            self.push(
                Problem::new("rivet::cluster::etcd", "[cluster] names no etcd endpoints")
                    .at(&loc(file, table), "`etcd` is missing")
                    .help(format!(
                        "add the client URLs of the etcd members: `{example}`"
                    )),
            );
            return Vec::new();
        };
        if list.value().is_empty() {
            self.push(
                Problem::new("rivet::cluster::etcd", "`etcd` lists no endpoint")
                    .at(&loc(file, list), "empty")
                    .help(format!(
                        "list the client URLs of the etcd members: `{example}`"
                    )),
            );
        }
        let mut plain = Vec::new();
        for endpoint in list.value() {
            match service_url(endpoint.value(), UrlOf::Etcd, "etcd endpoint") {
                Ok(url) => {
                    if url.scheme() == "http" {
                        plain.push((loc(file, endpoint), endpoint.value().clone()));
                    }
                    cluster
                        .etcd
                        .push(endpoint.value().trim_end_matches('/').to_string());
                }
                Err(bad) => self.push(bad_url("rivet::cluster::etcd", file, endpoint, bad)),
            }
        }
        plain
    }

    fn lease_ttl(&mut self, file: &Arc<SourceFile>, ttl: &Sp<String>) -> Option<Duration> {
        let at = loc(file, ttl);
        let problem = |message: String, label: &str, help: &str| {
            Problem::new("rivet::cluster::lease_ttl", message)
                .at(&at, label)
                .help(help.to_string())
        };
        let problem = match parse_duration(ttl.value()) {
            Err(e) => problem(
                format!("`{}` is not a duration: {e}", ttl.value()),
                "not a duration",
                "write a duration in whole seconds such as `10s` or `30s`",
            ),
            Ok(d) if d < MIN_LEASE_TTL => problem(
                format!(
                    "`lease_ttl` is {}, shorter than etcd's shortest lease of 2s",
                    ttl.value()
                ),
                "too short",
                "write 2s or more (default `10s`): a daemon whose lease runs out loses its nodes to the others",
            ),
            Ok(d) if d.subsec_nanos() != 0 => problem(
                format!("`lease_ttl` is {}, not whole seconds", ttl.value()),
                "a fraction of a second",
                "etcd grants leases in whole seconds: write e.g. `10s`",
            ),
            Ok(d) => return Some(d),
        };
        self.push(problem);
        None
    }

    /// Whether `prefix` can be the fleet's key prefix; a problem otherwise.
    fn key_prefix(&mut self, file: &Arc<SourceFile>, prefix: &Sp<String>) -> bool {
        let text = prefix.value();
        let why = if !text.bytes().all(|b| b.is_ascii_graphic()) {
            "holds characters other than printable ASCII (spaces included)"
        } else if !(text.starts_with('/') && text.ends_with('/')) {
            "must start and end with `/`"
        } else {
            return true;
        };
        self.push(
            Problem::new(
                "rivet::cluster::key_prefix",
                format!("the key prefix `{text}` {why}"),
            )
            .at(&loc(file, prefix), "not a key prefix")
            .help("write a path of printable ASCII that starts and ends with `/`, e.g. `/rivet/` or `/rivet/site-a/`; two fleets that share one etcd need two prefixes"),
        );
        false
    }

    /// `ca_file`, `cert_file` and `key_file`: files that exist, a
    /// certificate with its key, and `https://` endpoints to use them on.
    fn tls(
        &mut self,
        file: &Arc<SourceFile>,
        root: &Path,
        decl: &ClusterDecl,
        plain_endpoints: &[(Loc, String)],
        cluster: &mut ClusterSettings,
    ) {
        let files = [
            ("ca_file", &decl.ca_file, &mut cluster.ca_file),
            ("cert_file", &decl.cert_file, &mut cluster.cert_file),
            ("key_file", &decl.key_file, &mut cluster.key_file),
        ];
        let mut first_set: Option<(&str, Loc)> = None;
        for (key, value, target) in files {
            let Some(value) = value else { continue };
            let at = loc(file, value);
            first_set.get_or_insert((key, at.clone()));
            let path = root.join(value.value());
            if path.is_file() {
                *target = Some(path);
                continue;
            }
            let (what, label) = if path.exists() {
                ("is not a file", "not a file")
            } else {
                ("does not exist", "no such file")
            };
            self.push(
                Problem::new(
                    "rivet::cluster::file",
                    format!("`{key}`: `{}` {what}", value.value()),
                )
                .at(&at, label)
                .help("write the path of a PEM file, relative to the fleet directory or absolute"),
            );
        }
        let pair = match (&decl.cert_file, &decl.key_file) {
            (Some(cert), None) => Some(("cert_file", "key_file", cert)),
            (None, Some(key)) => Some(("key_file", "cert_file", key)),
            _ => None,
        };
        if let Some((set, unset, value)) = pair {
            self.push(
                Problem::new(
                    "rivet::cluster::tls_pair",
                    format!("`{set}` is set without `{unset}`"),
                )
                .at(&loc(file, value), format!("no `{unset}` beside it"))
                .help("a client certificate goes with its private key: set both `cert_file` and `key_file`, or neither"),
            );
        }
        let Some((key, tls_at)) = first_set else {
            return;
        };
        for (at, endpoint) in plain_endpoints {
            self.push(
                Problem::new(
                    "rivet::cluster::tls_scheme",
                    format!("etcd endpoint `{endpoint}` is not `https://`, but [cluster] sets `{key}`"),
                )
                .at(at, "plain HTTP")
                .also(&tls_at, "TLS set here")
                .help("write `https://` endpoints to reach etcd over TLS, or remove `ca_file`, `cert_file` and `key_file`"),
            );
        }
    }

    /// `username` and `password_env`: both or neither, and a variable's name.
    fn credentials(
        &mut self,
        file: &Arc<SourceFile>,
        decl: &ClusterDecl,
        cluster: &mut ClusterSettings,
    ) {
        let help = "etcd authenticates a user by a password: set both `username` and `password_env` (the variable that holds the password), or neither";
        match (&decl.username, &decl.password_env) {
            (Some(user), None) => self.push(
                Problem::new(
                    "rivet::cluster::credentials",
                    "`username` is set without `password_env`",
                )
                .at(&loc(file, user), "no password for this user")
                .help(help),
            ),
            (None, Some(env)) => self.push(
                Problem::new(
                    "rivet::cluster::credentials",
                    "`password_env` is set without `username`",
                )
                .at(&loc(file, env), "a password for no user")
                .help(help),
            ),
            _ => {}
        }
        if let Some(env) = &decl.password_env {
            match not_an_env_name(
                "rivet::cluster::password_env",
                "[cluster]",
                &loc(file, env),
                env.value(),
                "RIVET_ETCD_PASSWORD",
            ) {
                Some(problem) => self.push(problem),
                None => cluster.password_env = Some(env.value().clone()),
            }
        }
    }
}

/// The problem of a bad URL of the file, at its value.
fn bad_url(code: &'static str, file: &Arc<SourceFile>, value: &Sp<String>, bad: BadUrl) -> Problem {
    Problem::new(code, bad.message)
        .at(&loc(file, value), bad.label)
        .help(bad.help)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_port_is_found_even_where_the_parser_forgets_it() {
        for (text, written) in [
            ("http://h:6385", true),
            ("http://h:80", true),
            ("https://[::1]:443/", true),
            ("http://h", false),
            ("http://[::1]", false),
            ("http://u:p@h", false),
            ("http://h:/", false),
        ] {
            assert_eq!(writes_a_port(text), written, "{text}");
        }
    }

    #[test]
    fn service_urls_are_http_with_a_host_and_nothing_after_it() {
        let ok = |text: &str, of| service_url(text, of, "x").is_ok();
        assert!(ok("https://10.0.0.1:2379", UrlOf::Etcd));
        assert!(ok("http://etcd1/", UrlOf::Etcd));
        assert!(ok("http://10.0.0.5:6385", UrlOf::Advertise));
        assert!(!ok("http://10.0.0.5", UrlOf::Advertise));
        for bad in [
            "unix:///run/etcd.sock",
            "etcd1:2379",
            "http://etcd1:2379/v3",
            "http://etcd1:2379?x=1",
            "http://etcd1:2379#x",
            "http://root:***@etcd1:2379",
            "not a url",
        ] {
            assert!(!ok(bad, UrlOf::Etcd), "{bad}");
        }
        let credentials = service_url("http://root:***@etcd1:2379", UrlOf::Etcd, "x").unwrap_err();
        assert!(
            !credentials.message.contains("root"),
            "{}",
            credentials.message
        );
    }
}
