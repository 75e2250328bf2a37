//! rivet's etcd client: etcd's v3 API through its JSON gateway (`POST
//! /v3/...`) over reqwest, not gRPC (docs/DECISIONS.md says why). What the
//! cluster needs and no more: leases, single keys, prefixes read in pages,
//! transactions, and watches of a prefix.
//!
//! Endpoints are tried in order from the one that answered last; a
//! connection error, a timeout or a 503 (a member without a leader) moves
//! to the next. With a username the client authenticates once and sends
//! the token with every request; when etcd refuses it (it expired, or
//! another member issued it: simple tokens live in one member's memory)
//! the client authenticates again, once, and retries. Answers are
//! untrusted: a body is read up to 64 MiB (a watch line up to 16 MiB), and
//! what is not the gateway's JSON is [`EtcdError::Invalid`], never a panic.

mod watch;
mod wire;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};

use wire::b64;

/// The most of one answer the client reads.
const MAX_BODY: usize = 64 << 20;

/// The most of one line of a watch stream the client reads.
const MAX_WATCH_LINE: usize = 16 << 20;

/// Keys asked for per page of a prefix read; a page too large to read is
/// asked for again with half as many.
const PAGE_KEYS: i64 = 1000;

/// How to reach etcd.
#[derive(Clone)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://127.0.0.1:2379`; tried in this order.
    pub endpoints: Vec<String>,
    /// The root certificate(s) an `https://` endpoint's certificate must
    /// chain to (PEM); without it, the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The client certificate (PEM) and its private key, for etcd's
    /// `--client-cert-auth`; both or neither.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The etcd user to authenticate as; none when etcd's auth is off.
    pub username: Option<String>,
    /// Its password, already read by the caller.
    pub password: Option<String>,
    /// The longest one request (connect, send, whole answer) may take; a
    /// watch uses it to connect and to get its first answer only.
    pub request_timeout: Duration,
}

impl EtcdConfig {
    /// Plain endpoints without TLS or auth, 5 s per request.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password: None,
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "******"))
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// A lease's ID as etcd hands it out.
pub type LeaseId = i64;

#[derive(Debug, Clone, PartialEq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    /// 0 when the key is on no lease.
    pub lease: LeaseId,
}

/// A condition of a transaction, on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// 0 for a key that does not exist.
    CreateRevision(String, Cmp, i64),
    ModRevision(String, Cmp, i64),
    Lease(String, Cmp, LeaseId),
    Version(String, Cmp, i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
    DeletePrefix {
        prefix: String,
    },
    Get {
        key: String,
    },
}

/// If every `compare` holds, `success` runs, else `failure`; atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TxnResult {
    pub succeeded: bool,
    pub revision: i64,
    /// For each [`Op::Get`] in the branch that ran, in order: the kv found
    /// (`None` if absent).
    pub gets: Vec<Option<Kv>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    Put(Kv),
    /// The deleted key with the delete's `mod_revision`; its last value,
    /// create revision, version and lease too when the watch asked for
    /// them ([`Etcd::watch_prefix_with_prev_kv`]), else empty and 0.
    Delete(Kv),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint answered; `endpoints` names every one tried and
    /// `message` says what went wrong with the last.
    #[error("cannot reach etcd at {endpoints}: {message}")]
    Unreachable { endpoints: String, message: String },
    /// etcd does not know the lease (it expired or was revoked).
    #[error("the etcd lease has expired: etcd no longer knows it")]
    LeaseExpired,
    /// etcd answered with an error.
    #[error("etcd answered HTTP {status}: {message}")]
    Status { status: u16, message: String },
    /// A configuration rivet cannot use, or an answer that is not what the
    /// gateway sends.
    #[error("{0}")]
    Invalid(String),
    /// The revision asked for is older than etcd's compaction: the watch
    /// ended (`revision` is the compaction's) or a paged read lost its
    /// snapshot (`revision` is the one it read at). Read again and watch
    /// from the new revision.
    #[error("etcd has compacted its history past revision {revision}: read again and watch anew")]
    Compacted { revision: i64 },
}

/// What an attempt at one endpoint ended with, before it is an
/// [`EtcdError`]: the cases some callers handle themselves.
enum Failure {
    Etcd(EtcdError),
    /// etcd answered an error: its HTTP status, grpc code and message.
    Refused {
        status: u16,
        code: i64,
        message: String,
    },
    /// The answer was longer than the client reads.
    TooLarge(String),
}

impl From<EtcdError> for Failure {
    fn from(e: EtcdError) -> Self {
        Failure::Etcd(e)
    }
}

impl From<Failure> for EtcdError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Etcd(e) => e,
            Failure::Refused {
                status,
                code,
                message,
            } => refusal(status, code, message),
            Failure::TooLarge(message) => EtcdError::Invalid(message),
        }
    }
}

/// The error for etcd's answer `code`/`message` (HTTP `status`).
fn refusal(status: u16, code: i64, message: String) -> EtcdError {
    if wire::is_lease_gone(code, &message) {
        EtcdError::LeaseExpired
    } else if wire::is_compacted(code, &message) {
        EtcdError::Compacted { revision: 0 }
    } else {
        EtcdError::Status { status, message }
    }
}

/// The kinds of request, as [`Etcd::requests`] counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Range,
    Put,
    Txn,
    Delete,
    LeaseGrant,
    Keepalive,
    Revoke,
    Watch,
    Auth,
}

const KINDS: [Kind; 9] = [
    Kind::Range,
    Kind::Put,
    Kind::Txn,
    Kind::Delete,
    Kind::LeaseGrant,
    Kind::Keepalive,
    Kind::Revoke,
    Kind::Watch,
    Kind::Auth,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Range => "range",
            Kind::Put => "put",
            Kind::Txn => "txn",
            Kind::Delete => "delete",
            Kind::LeaseGrant => "lease_grant",
            Kind::Keepalive => "keepalive",
            Kind::Revoke => "revoke",
            Kind::Watch => "watch",
            Kind::Auth => "auth",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Kind::Range => "/v3/kv/range",
            Kind::Put => "/v3/kv/put",
            Kind::Txn => "/v3/kv/txn",
            Kind::Delete => "/v3/kv/deleterange",
            Kind::LeaseGrant => "/v3/lease/grant",
            Kind::Keepalive => "/v3/lease/keepalive",
            Kind::Revoke => "/v3/lease/revoke",
            Kind::Watch => "/v3/watch",
            Kind::Auth => "/v3/auth/authenticate",
        }
    }
}

/// An etcd client; clones share connections, the token and the counts.
#[derive(Clone)]
pub struct Etcd {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    http: reqwest::Client,
    request_timeout: Duration,
    /// The endpoint that answered last: where the next request starts.
    current: AtomicUsize,
    login: Option<Login>,
    token: Mutex<Option<Arc<str>>>,
    /// Held while authenticating, so that many requests finding no token
    /// authenticate once.
    authenticating: tokio::sync::Mutex<()>,
    sent: [AtomicU64; KINDS.len()],
}

struct Login {
    username: String,
    password: String,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.inner.endpoints)
            .finish_non_exhaustive()
    }
}

impl Etcd {
    /// Build the client; reads the CA, certificate and key files (an error
    /// names the file); does not contact etcd.
    pub fn new(config: &EtcdConfig) -> Result<Self, EtcdError> {
        if config.endpoints.is_empty() {
            return Err(EtcdError::Invalid(
                "no etcd endpoint: give at least one client URL, e.g. http://127.0.0.1:2379".into(),
            ));
        }
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        if config.request_timeout.is_zero() {
            return Err(EtcdError::Invalid(
                "the etcd request timeout is 0: give it a positive duration".into(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(ca) = &config.ca_file {
            let pem = read_file("CA file", ca)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|certs| !certs.is_empty())
                .ok_or_else(|| {
                    EtcdError::Invalid(format!(
                        "the etcd CA file {} holds no PEM certificate",
                        ca.display()
                    ))
                })?;
            builder = builder.tls_certs_only(certs);
        }
        match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = read_file("client certificate", cert)?;
                pem.push(b'\n');
                pem.extend(read_file("client key", key)?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    EtcdError::Invalid(format!(
                        "the etcd client certificate {} and key {} are not a PEM certificate and its private key: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            (Some(file), None) | (None, Some(file)) => {
                return Err(EtcdError::Invalid(format!(
                    "{} is given without its pair: an etcd client certificate needs both cert_file and key_file",
                    file.display()
                )));
            }
        }
        let http = builder
            .build()
            .map_err(|e| EtcdError::Invalid(format!("cannot set up the etcd HTTP client: {e}")))?;
        let login = match (&config.username, &config.password) {
            (Some(username), password) => Some(Login {
                username: username.clone(),
                password: password.clone().unwrap_or_default(),
            }),
            (None, Some(_)) => {
                return Err(EtcdError::Invalid(
                    "an etcd password is given without a username: give the username too".into(),
                ));
            }
            (None, None) => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                endpoints,
                http,
                request_timeout: config.request_timeout,
                current: AtomicUsize::new(0),
                login,
                token: Mutex::new(None),
                authenticating: tokio::sync::Mutex::new(()),
                sent: Default::default(),
            }),
        })
    }

    /// One linearizable read that proves the cluster answers (and
    /// authenticates, when a username is set); an error names every
    /// endpoint tried. A user not allowed to read the probed key still
    /// passes: etcd checks permissions after the read reached quorum.
    pub async fn check(&self) -> Result<(), EtcdError> {
        let probe = json!({"key": b64(b"health"), "count_only": true});
        match self.exchange(Kind::Range, &probe).await {
            Ok(body) => wire::parse::<wire::RangeResponse>("a range", &body).map(|_| ()),
            Err(Failure::Refused { code, .. }) if code == wire::CODE_PERMISSION_DENIED => Ok(()),
            Err(f) => Err(f.into()),
        }
    }

    /// A new lease of `ttl` (whole seconds, rounded up); etcd may grant
    /// more (its minimum is 2 s), and says how much.
    pub async fn grant(&self, ttl: Duration) -> Result<(LeaseId, Duration), EtcdError> {
        let seconds = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1);
        let answer: wire::LeaseGrantResponse = self
            .call(Kind::LeaseGrant, &json!({"TTL": seconds.to_string()}))
            .await?;
        if !answer.error.is_empty() {
            return Err(EtcdError::Status {
                status: 200,
                message: wire::quote(answer.error.as_bytes()),
            });
        }
        match (answer.id.0, u64::try_from(answer.ttl.0)) {
            (id, Ok(granted)) if id != 0 && granted > 0 => Ok((id, Duration::from_secs(granted))),
            (id, _) => Err(EtcdError::Invalid(format!(
                "etcd granted lease {id} with TTL {}: not a lease",
                answer.ttl.0
            ))),
        }
    }

    /// Renew `lease`: its TTL as granted while it is alive,
    /// `Err(LeaseExpired)` when etcd says it is gone (an answer without
    /// TTL, or TTL 0).
    pub async fn keepalive(&self, lease: LeaseId) -> Result<Duration, EtcdError> {
        let body = self
            .exchange(Kind::Keepalive, &json!({"ID": lease.to_string()}))
            .await?;
        // The answer is a stream of one message: its first line.
        let line = body
            .split(|b| *b == b'\n')
            .find(|l| !l.trim_ascii().is_empty())
            .unwrap_or_default();
        let message: wire::StreamLine<wire::LeaseKeepAliveResponse> =
            wire::parse("a keepalive", line)?;
        if let Some(e) = message.error {
            let status = u16::try_from(e.http_code.0).unwrap_or(200);
            return Err(refusal(
                status,
                e.grpc_code.0,
                wire::quote(e.message.as_bytes()),
            ));
        }
        let Some(answer) = message.result else {
            return Err(EtcdError::Invalid(format!(
                "etcd's answer to a keepalive has neither result nor error: {}",
                wire::quote(line)
            )));
        };
        match u64::try_from(answer.ttl.0) {
            Ok(ttl) if ttl > 0 => Ok(Duration::from_secs(ttl)),
            _ => Err(EtcdError::LeaseExpired),
        }
    }

    /// End `lease`, deleting its keys; a lease already gone is fine.
    pub async fn revoke(&self, lease: LeaseId) -> Result<(), EtcdError> {
        match self
            .call::<wire::PutResponse>(Kind::Revoke, &json!({"ID": lease.to_string()}))
            .await
        {
            Ok(_) | Err(EtcdError::LeaseExpired) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One key, linearizably.
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        let answer: wire::RangeResponse = self
            .call(Kind::Range, &json!({"key": b64(key.as_bytes())}))
            .await?;
        answer
            .kvs
            .into_iter()
            .next()
            .map(|kv| kv.into_kv())
            .transpose()
    }

    /// Every key under `prefix` (all keys for `""`), read in pages at one
    /// revision, so 100,000 keys work, and that store revision.
    pub async fn range_prefix(&self, prefix: &str) -> Result<(Vec<Kv>, i64), EtcdError> {
        let (mut from, end) = prefix_range(prefix);
        let end = b64(&end);
        let mut kvs = Vec::new();
        let mut revision = 0;
        let mut limit = PAGE_KEYS;
        loop {
            let mut request =
                json!({"key": b64(&from), "range_end": end, "limit": limit.to_string()});
            if revision > 0 {
                request["revision"] = Value::String(revision.to_string());
            }
            let body = match self.exchange(Kind::Range, &request).await {
                Ok(body) => body,
                Err(Failure::TooLarge(_)) if limit > 1 => {
                    limit /= 2;
                    continue;
                }
                Err(f) => {
                    return Err(match EtcdError::from(f) {
                        EtcdError::Compacted { .. } => EtcdError::Compacted { revision },
                        e => e,
                    });
                }
            };
            let page: wire::RangeResponse = wire::parse("a range", &body)?;
            if revision == 0 {
                revision = page.header.revision.0;
            }
            let more = page.more;
            let mut last = None;
            for kv in page.kvs {
                if kv.key.0 < from {
                    return Err(EtcdError::Invalid(format!(
                        "etcd answered a range from `{}` with the earlier key `{}`",
                        wire::quote(&from),
                        wire::quote(&kv.key.0)
                    )));
                }
                last = Some(kv.key.0.clone());
                kvs.push(kv.into_kv()?);
            }
            match (more, last) {
                (false, _) => return Ok((kvs, revision)),
                (true, Some(mut key)) => {
                    // The next page starts just after the last key.
                    key.push(0);
                    from = key;
                }
                (true, None) => {
                    return Err(EtcdError::Invalid(
                        "etcd answered a range page with no key but more to come".into(),
                    ));
                }
            }
        }
    }

    /// Set `key`, on `lease` if given; the revision of the write. A lease
    /// that is gone is `Err(LeaseExpired)`.
    pub async fn put(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<i64, EtcdError> {
        let answer: wire::PutResponse = self
            .call(Kind::Put, &put_request(key, value, lease))
            .await?;
        Ok(answer.header.revision.0)
    }

    /// Delete `key` (a key that is not there is fine).
    pub async fn delete(&self, key: &str) -> Result<(), EtcdError> {
        self.call::<wire::DeleteResponse>(Kind::Delete, &json!({"key": b64(key.as_bytes())}))
            .await
            .map(|_| ())
    }

    /// Run `txn` atomically. A put on a lease that is gone is
    /// `Err(LeaseExpired)`, whichever branch it is in.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResult, EtcdError> {
        let request = json!({
            "compare": txn.compare.iter().map(compare_request).collect::<Vec<_>>(),
            "success": txn.success.iter().map(op_request).collect::<Vec<_>>(),
            "failure": txn.failure.iter().map(op_request).collect::<Vec<_>>(),
        });
        let answer: wire::TxnResponse = self.call(Kind::Txn, &request).await?;
        let branch = if answer.succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        if answer.responses.len() != branch.len() {
            return Err(EtcdError::Invalid(format!(
                "etcd answered a txn branch of {} operations with {} responses",
                branch.len(),
                answer.responses.len()
            )));
        }
        let mut gets = Vec::new();
        for (op, response) in branch.iter().zip(answer.responses) {
            if let Op::Get { key } = op {
                let range = response.response_range.ok_or_else(|| {
                    EtcdError::Invalid(format!(
                        "etcd's txn answer has no range response for the get of `{key}`"
                    ))
                })?;
                gets.push(
                    range
                        .kvs
                        .into_iter()
                        .next()
                        .map(|kv| kv.into_kv())
                        .transpose()?,
                );
            }
        }
        Ok(TxnResult {
            succeeded: answer.succeeded,
            revision: answer.header.revision.0,
            gets,
        })
    }

    /// A watch of every key under `prefix` from `start_revision`
    /// (inclusive; 0 = from now): a stream of event batches, one per
    /// gateway message, in revision order, each with its message's header
    /// revision. Messages without events (created, progress) are not
    /// yielded. The stream ends with an `Err` when the connection ends or
    /// etcd compacted past the revision asked for
    /// ([`EtcdError::Compacted`]): the caller reads again and watches anew.
    /// Only connecting is bounded by the request timeout: a member that
    /// stops answering without closing the connection is noticed by the
    /// caller's lease keepalives, not by the stream.
    pub fn watch_prefix(
        &self,
        prefix: &str,
        start_revision: i64,
    ) -> impl futures_util::Stream<Item = Result<(i64, Vec<WatchEvent>), EtcdError>> + Send + 'static
    {
        watch::stream(self.clone(), prefix, start_revision, false)
    }

    /// [`watch_prefix`](Self::watch_prefix) whose deletes carry the deleted
    /// key's last value, create revision, version and lease.
    pub fn watch_prefix_with_prev_kv(
        &self,
        prefix: &str,
        start_revision: i64,
    ) -> impl futures_util::Stream<Item = Result<(i64, Vec<WatchEvent>), EtcdError>> + Send + 'static
    {
        watch::stream(self.clone(), prefix, start_revision, true)
    }

    /// Requests sent so far (every attempt at an endpoint), by kind:
    /// `range`, `put`, `txn`, `delete`, `lease_grant`, `keepalive`,
    /// `revoke`, `watch`, `auth`.
    pub fn requests(&self) -> BTreeMap<&'static str, u64> {
        KINDS
            .iter()
            .zip(&self.inner.sent)
            .map(|(kind, n)| (kind.name(), n.load(Ordering::Relaxed)))
            .collect()
    }

    /// The endpoint the next request goes to first: the one that answered
    /// last.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoints[self.inner.current.load(Ordering::Relaxed)]
    }

    /// One request's answer parsed as `T`.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        kind: Kind,
        request: &Value,
    ) -> Result<T, EtcdError> {
        let body = self.exchange(kind, request).await?;
        wire::parse(kind.name(), &body)
    }

    /// One request's 2xx body, authenticating again once if etcd refuses
    /// the token.
    async fn exchange(&self, kind: Kind, request: &Value) -> Result<Vec<u8>, Failure> {
        let body = serde_json::to_vec(request).expect("JSON values serialize");
        let mut renewed = false;
        loop {
            let token = self.token().await?;
            match self.send(kind, &body, token.as_deref()).await {
                Err(Failure::Refused { code, message, .. })
                    if self.inner.login.is_some()
                        && !renewed
                        && wire::is_bad_token(code, &message) =>
                {
                    renewed = true;
                    self.forget_token(token.as_deref());
                }
                answer => return answer,
            }
        }
    }

    /// One request to the first endpoint that answers; its 2xx body, or
    /// etcd's refusal.
    async fn send(&self, kind: Kind, body: &[u8], token: Option<&str>) -> Result<Vec<u8>, Failure> {
        let timeout = self.inner.request_timeout;
        let (endpoint, (status, body)) = self
            .over_endpoints(kind, body, token, |request, endpoint| async move {
                let response = request
                    .timeout(timeout)
                    .send()
                    .await
                    .map_err(|e| transport(&endpoint, &e, timeout))?;
                let status = response.status().as_u16();
                let body = read_capped(response, MAX_BODY)
                    .await
                    .map_err(|e| transport(&endpoint, &e, timeout))?;
                if status == 503 {
                    let text = body.as_deref().map(wire::error_of).unwrap_or_default().1;
                    return Err(Miss::next(format!("{endpoint} answered HTTP 503: {text}")));
                }
                Ok((status, body))
            })
            .await?;
        let Some(body) = body else {
            return Err(Failure::TooLarge(format!(
                "etcd at {endpoint} answered a {} with more than {} MiB; rivet reads at most that much of one answer",
                kind.name(),
                MAX_BODY >> 20
            )));
        };
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let (code, message) = wire::error_of(&body);
        Err(Failure::Refused {
            status,
            code,
            message,
        })
    }

    /// Open a streamed request (a watch) at the first endpoint that
    /// answers within the request timeout; its endpoint and response.
    async fn open_stream(
        &self,
        kind: Kind,
        body: &[u8],
        token: Option<&str>,
    ) -> Result<(String, reqwest::Response), EtcdError> {
        let timeout = self.inner.request_timeout;
        self.over_endpoints(kind, body, token, |request, endpoint| async move {
            match tokio::time::timeout(timeout, request.send()).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(e)) => Err(transport(&endpoint, &e, timeout)),
                Err(_) => Err(Miss::next(format!(
                    "{endpoint}: no answer within {}",
                    humantime::format_duration(timeout)
                ))),
            }
        })
        .await
    }

    /// `attempt` at each endpoint in turn, from the one that answered last,
    /// until one succeeds (it becomes the one to start from); its endpoint
    /// and outcome. A request that a reused connection dropped (the member
    /// restarted since) is tried once more at the same endpoint; all
    /// failing is `Unreachable`, naming every endpoint and what went wrong
    /// last.
    async fn over_endpoints<T, F, Fut>(
        &self,
        kind: Kind,
        body: &[u8],
        token: Option<&str>,
        mut attempt: F,
    ) -> Result<(String, T), EtcdError>
    where
        F: FnMut(reqwest::RequestBuilder, String) -> Fut,
        Fut: Future<Output = Result<T, Miss>>,
    {
        let inner = &*self.inner;
        let first = inner.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for step in 0..inner.endpoints.len() {
            let at = (first + step) % inner.endpoints.len();
            let endpoint = &inner.endpoints[at];
            for _ in 0..2 {
                let mut request = inner
                    .http
                    .post(format!("{endpoint}{}", kind.path()))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_vec());
                if let Some(token) = token {
                    request = request.header(reqwest::header::AUTHORIZATION, token);
                }
                inner.sent[kind as usize].fetch_add(1, Ordering::Relaxed);
                match attempt(request, endpoint.clone()).await {
                    Ok(outcome) => {
                        inner.current.store(at, Ordering::Relaxed);
                        return Ok((endpoint.clone(), outcome));
                    }
                    Err(miss) => {
                        last = miss.message;
                        if !miss.again {
                            break;
                        }
                    }
                }
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: inner.endpoints.join(", "),
            message: last,
        })
    }

    /// The auth token to send: none without a username; the one held, or a
    /// new one from etcd.
    async fn token(&self) -> Result<Option<Arc<str>>, EtcdError> {
        let Some(login) = &self.inner.login else {
            return Ok(None);
        };
        if let Some(token) = self.held_token() {
            return Ok(Some(token));
        }
        let _one = self.inner.authenticating.lock().await;
        if let Some(token) = self.held_token() {
            return Ok(Some(token));
        }
        let request = json!({"name": login.username, "password": login.password});
        let body = serde_json::to_vec(&request).expect("JSON values serialize");
        // Whatever comes back is shown without the password, should a
        // server echo it.
        let hide = |text: String| text.replace(login.password.as_str(), "******");
        let answer = match self.send(Kind::Auth, &body, None).await {
            Ok(answer) => answer,
            Err(failure) => {
                return Err(match EtcdError::from(failure) {
                    EtcdError::Status { status, message } => EtcdError::Status {
                        status,
                        message: hide(format!(
                            "cannot authenticate as etcd user `{}`: {message}",
                            login.username
                        )),
                    },
                    EtcdError::Invalid(message) => EtcdError::Invalid(hide(message)),
                    e => e,
                });
            }
        };
        let token = wire::parse::<wire::AuthenticateResponse>("authenticate", &answer)
            .map_err(|e| EtcdError::Invalid(hide(e.to_string())))?
            .token;
        if token.is_empty() {
            return Err(EtcdError::Invalid(
                "etcd's answer to authenticate has no token".into(),
            ));
        }
        let token: Arc<str> = token.into();
        *self.inner.token.lock().expect("token") = Some(Arc::clone(&token));
        Ok(Some(token))
    }

    fn held_token(&self) -> Option<Arc<str>> {
        self.inner.token.lock().expect("token").clone()
    }

    /// Drop the token etcd refused, unless another request already got a
    /// new one.
    fn forget_token(&self, refused: Option<&str>) {
        let mut held = self.inner.token.lock().expect("token");
        if held.as_deref() == refused {
            *held = None;
        }
    }
}

/// A client URL checked and without its trailing `/`.
fn endpoint(text: &str) -> Result<String, EtcdError> {
    let bad = |why: &str| {
        EtcdError::Invalid(format!(
            "the etcd endpoint `{}` {why}: give a client URL such as http://127.0.0.1:2379",
            wire::quote(text.as_bytes())
        ))
    };
    let url = url::Url::parse(text).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("is neither http:// nor https://"));
    }
    if url.host().is_none() {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("carries credentials; give username and password apart"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("has a path, query or fragment"));
    }
    Ok(text.trim_end_matches('/').to_string())
}

fn read_file(what: &str, path: &Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|e| {
        EtcdError::Invalid(format!(
            "cannot read the etcd {what} {}: {e}",
            path.display()
        ))
    })
}

/// The key range of a prefix: its first key and the key after its last.
fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        // etcd reads key "\0" with range end "\0" as every key.
        return (vec![0], vec![0]);
    }
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (prefix.as_bytes().to_vec(), end);
        }
    }
    // Only 0xff bytes: every key from the prefix on.
    (prefix.as_bytes().to_vec(), vec![0])
}

/// Why an attempt at one endpoint failed.
struct Miss {
    message: String,
    /// Worth once more at the same endpoint: a pooled connection closed
    /// under the request before any answer.
    again: bool,
}

impl Miss {
    fn next(message: String) -> Self {
        Self {
            message,
            again: false,
        }
    }
}

/// What went wrong with one request, without its body or headers.
fn transport(endpoint: &str, e: &reqwest::Error, timeout: Duration) -> Miss {
    if e.is_timeout() {
        return Miss::next(format!(
            "{endpoint}: no answer within {}",
            humantime::format_duration(timeout)
        ));
    }
    Miss {
        message: format!("{endpoint}: {}", causes(e)),
        again: e.is_request() && !e.is_connect(),
    }
}

/// What a transport error says, down to its root cause.
fn causes(e: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() {
        causes.push(e.to_string());
    }
    causes.join(": ")
}

/// The body of `response`, or `None` when it is longer than `max` bytes.
async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

fn put_request(key: &str, value: &[u8], lease: Option<LeaseId>) -> Value {
    let mut put = Map::new();
    put.insert("key".into(), b64(key.as_bytes()).into());
    put.insert("value".into(), b64(value).into());
    if let Some(lease) = lease {
        put.insert("lease".into(), lease.to_string().into());
    }
    Value::Object(put)
}

fn compare_request(compare: &Compare) -> Value {
    let (key, target, field, cmp, number) = match compare {
        Compare::CreateRevision(key, cmp, n) => (key, "CREATE", "create_revision", cmp, n),
        Compare::ModRevision(key, cmp, n) => (key, "MOD", "mod_revision", cmp, n),
        Compare::Lease(key, cmp, n) => (key, "LEASE", "lease", cmp, n),
        Compare::Version(key, cmp, n) => (key, "VERSION", "version", cmp, n),
    };
    let result = match cmp {
        Cmp::Equal => "EQUAL",
        Cmp::NotEqual => "NOT_EQUAL",
        Cmp::Greater => "GREATER",
        Cmp::Less => "LESS",
    };
    json!({"key": b64(key.as_bytes()), "target": target, "result": result, field: number.to_string()})
}

fn op_request(op: &Op) -> Value {
    match op {
        Op::Put { key, value, lease } => json!({"request_put": put_request(key, value, *lease)}),
        Op::Delete { key } => json!({"request_delete_range": {"key": b64(key.as_bytes())}}),
        Op::DeletePrefix { prefix } => {
            let (from, end) = prefix_range(prefix);
            json!({"request_delete_range": {"key": b64(&from), "range_end": b64(&end)}})
        }
        Op::Get { key } => json!({"request_range": {"key": b64(key.as_bytes())}}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_range_ends_after_its_last_key() {
        assert_eq!(prefix_range("a/"), (b"a/".to_vec(), b"a0".to_vec()));
        assert_eq!(prefix_range(""), (vec![0], vec![0]));
        assert_eq!(
            prefix_range("a\u{7f}"),
            (b"a\x7f".to_vec(), b"a\x80".to_vec())
        );
    }

    #[test]
    fn endpoints_are_client_urls() {
        assert_eq!(
            endpoint("http://127.0.0.1:2379/").unwrap(),
            "http://127.0.0.1:2379"
        );
        for bad in [
            "127.0.0.1:2379",
            "ftp://h:1",
            "http://u:p@h:1",
            "http://h:1/v3",
            "http://h:1?x=1",
        ] {
            assert!(matches!(endpoint(bad), Err(EtcdError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn a_config_never_shows_its_password() {
        let mut config = EtcdConfig::new(["http://127.0.0.1:2379"]);
        config.username = Some("root".into());
        config.password = Some("canary-pw-51".into());
        assert!(!format!("{config:?}").contains("canary-pw-51"));
    }

    #[test]
    fn a_certificate_needs_its_key() {
        let mut config = EtcdConfig::new(["https://127.0.0.1:2379"]);
        config.cert_file = Some("/nonexistent/client.pem".into());
        let Err(EtcdError::Invalid(message)) = Etcd::new(&config) else {
            panic!("a certificate without a key is refused")
        };
        assert!(message.contains("/nonexistent/client.pem"), "{message}");
        config.key_file = Some("/nonexistent/client.key".into());
        let Err(EtcdError::Invalid(message)) = Etcd::new(&config) else {
            panic!("an unreadable certificate is refused")
        };
        assert!(message.contains("/nonexistent/client.pem"), "{message}");
    }

    #[test]
    fn compares_and_ops_are_the_gateways_json() {
        let c = compare_request(&Compare::CreateRevision("k".into(), Cmp::Equal, 0));
        assert_eq!(
            c,
            json!({"key": "aw==", "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
        );
        let p = op_request(&Op::Put {
            key: "k".into(),
            value: b"v".to_vec(),
            lease: Some(7),
        });
        assert_eq!(
            p,
            json!({"request_put": {"key": "aw==", "value": "dg==", "lease": "7"}})
        );
        let d = op_request(&Op::DeletePrefix {
            prefix: "a/".into(),
        });
        assert_eq!(
            d,
            json!({"request_delete_range": {"key": "YS8=", "range_end": "YTA="}})
        );
    }
}
