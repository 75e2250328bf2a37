//! rivet's client of the ironic-python-agent's command API: once the agent
//! of a deploy ramdisk has looked itself up and heartbeated, it listens at
//! its `callback_url`, and rivet sends it commands there
//! (`POST /v1/commands/`), follows the asynchronous ones
//! (`GET /v1/commands/ID`) and lists what it ran (`GET /v1/commands/`).
//!
//! Every request carries the node's agent token in its query
//! (`?agent_token=T`: IPA reads it nowhere else), so the token is in every
//! URL this module builds: no URL reaches a message or a log (reqwest's
//! errors are taken `without_url`), no redirect is followed (a 308 would
//! carry the token elsewhere), no proxy is used (it would see the query),
//! and what the agent answers is scrubbed of the token before it is kept.

mod command;
mod conn;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;
use url::Url;

pub use self::command::{Command, CommandStatus, ERROR_BYTES};
pub use self::conn::{AgentConn, AgentToken};
use crate::driver::body::{BodyError, read_capped};
use crate::driver::scrub::Secrets;
use crate::driver::{DriverError, fence};

/// The most rivet reads of one agent answer. IPA's answers are small (a
/// hardware inventory is tens of KiB); a larger body is an error, not a
/// gigabyte of memory.
pub const MAX_BODY: usize = 1 << 20;

/// How history names the calls made to an agent.
pub const PROTOCOL: &str = "agent";

/// How long a TCP connection to an agent may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound of one request that should answer at once (a list, a poll).
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The bound of one `wait=true` request while following a command.
const LONG_POLL: Duration = Duration::from_secs(30);

/// How many `wait=true` requests rivet abandons (its bound passed) while
/// following one command before it polls without `wait`. IPA joins the
/// command's thread with no timeout, so an abandoned wait keeps one of the
/// agent's 10 API threads until the command ends; a long image write would
/// otherwise take them all, and the agent would answer nothing else.
const ABANDONED_WAITS: u32 = 3;

/// The pause between polls of a command that is still running.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Idle connections are dropped before IPA's server closes them (it waits
/// 10 s for the next request on a kept-alive connection), so a command is
/// never sent on a connection the agent is closing.
const POOL_IDLE: Duration = Duration::from_secs(5);

/// The client of every agent: one reqwest client (rustls), shared by all
/// nodes.
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    /// [`LONG_POLL`] but in tests.
    long_poll: Duration,
}

impl AgentClient {
    pub fn new() -> Result<Self, DriverError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| {
                DriverError::fatal(format!(
                    "cannot set up the agent client: {}",
                    e.without_url()
                ))
            })?;
        Ok(Self {
            http,
            long_poll: LONG_POLL,
        })
    }

    /// `POST {callback_url}/v1/commands/?agent_token=T&wait=true|false`
    /// with `{"name": name, "params": params}`: the command's result as the
    /// agent answers it (done when `wait`, else usually RUNNING for an
    /// asynchronous command). Fence-checked immediately before it is sent;
    /// `timeout` is capped by the permit's time left.
    pub async fn start(
        &self,
        conn: &AgentConn,
        name: &str,
        params: Value,
        wait: bool,
        timeout: Duration,
    ) -> Result<Command, DriverError> {
        if !params.is_object() {
            return Err(DriverError::invalid(format!(
                "the parameters of agent command {name} for node {} are not a JSON object; the agent takes only an object",
                conn.node
            )));
        }
        let url = with_query(conn, conn.commands_url(None), &[("wait", bool_word(wait))]);
        let what = format!("POST /v1/commands/ ({name})");
        let request = self
            .http
            .post(url)
            .json(&json!({ "name": name, "params": params }));
        let sent = fence::check(&format!("agent command {name} of node {}", conn.node))?;
        let timeout = sent.cap(timeout);
        let answer = self
            .exchange(conn, &what, request.timeout(timeout), timeout)
            .await
            .map_err(|f| f.error)?;
        Command::from_answer(answer, &secrets(conn)).map_err(|why| not_valid(conn, &what, &why))
    }

    /// Follow command `id` until it is no longer RUNNING: `GET
    /// /v1/commands/ID?agent_token=T&wait=true`, each request bounded, again
    /// until the agent answers it done or `within` passes (then a retryable
    /// "still running" error). Not fenced: it only reads.
    pub async fn follow(
        &self,
        conn: &AgentConn,
        id: &str,
        within: Duration,
    ) -> Result<Command, DriverError> {
        let deadline = Instant::now() + within;
        let what = "GET /v1/commands/ID";
        let mut abandoned = 0;
        let mut last_seen: Option<Command> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(still_running(conn, id, within, last_seen.as_ref()));
            }
            let wait = abandoned < ABANDONED_WAITS;
            let bound = if wait { self.long_poll } else { READ_TIMEOUT }.min(left);
            let url = with_query(
                conn,
                conn.commands_url(Some(id)),
                &[("wait", bool_word(wait))],
            );
            let request = self.http.get(url).timeout(bound);
            match self.exchange(conn, what, request, bound).await {
                Ok(answer) => {
                    let command = Command::from_answer(answer, &secrets(conn))
                        .map_err(|why| not_valid(conn, what, &why))?;
                    if !command.is_running() {
                        return Ok(command);
                    }
                    last_seen = Some(command);
                    // An agent that answers RUNNING at once ignores `wait`
                    // (or it is polled without): do not spin on it.
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(POLL_INTERVAL.min(left)).await;
                }
                // A long command outlasting one wait: wait again.
                Err(failure) if failure.timed_out && wait => abandoned += 1,
                Err(failure) => return Err(failure.error),
            }
        }
    }

    /// `GET /v1/commands/`: every command the agent ran since it booted,
    /// oldest first (how a restarted conductor finds a command it started).
    /// Not fenced: it only reads.
    pub async fn commands(&self, conn: &AgentConn) -> Result<Vec<Command>, DriverError> {
        let what = "GET /v1/commands/";
        let url = with_query(conn, conn.commands_url(None), &[]);
        let request = self.http.get(url).timeout(READ_TIMEOUT);
        let answer = self
            .exchange(conn, what, request, READ_TIMEOUT)
            .await
            .map_err(|f| f.error)?;
        Command::list_from_answer(answer, &secrets(conn)).map_err(|why| not_valid(conn, what, &why))
    }

    /// Send one request and read its answer as JSON, classing every
    /// failure; `what` names the request in messages (never its query).
    async fn exchange(
        &self,
        conn: &AgentConn,
        what: &str,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<Value, Failure> {
        let response = request
            .send()
            .await
            .map_err(|e| Failure::transport(conn, what, e, timeout))?;
        let status = response.status();
        let body = read_body(conn, what, response, timeout).await?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                Failure::from(not_valid(conn, what, &format!("it is not JSON ({e})")))
            });
        }
        Err(Failure::from(refused(conn, what, status, &body)))
    }
}

/// Why a request failed, and whether it was its own bound that ended it.
struct Failure {
    error: DriverError,
    timed_out: bool,
}

impl From<DriverError> for Failure {
    fn from(error: DriverError) -> Self {
        Self {
            error,
            timed_out: false,
        }
    }
}

impl Failure {
    /// A request that got no (whole) answer: the agent is booting, gone,
    /// or slow; trying again may help, except for an untrusted certificate.
    fn transport(conn: &AgentConn, what: &str, e: reqwest::Error, timeout: Duration) -> Self {
        // The URL carries the token in its query: never shown.
        let e = e.without_url();
        let timed_out = e.is_timeout();
        let cause = secrets(conn).message(&causes(&e));
        let whom = whom(conn);
        let error = if timed_out {
            DriverError::retryable(format!(
                "{whom} does not answer: {what} got no answer within {}; rivet tries again",
                humantime::format_duration(timeout)
            ))
        } else if cause.contains("certificate") {
            DriverError::fatal(format!(
                "{whom} presented a certificate rivet does not trust ({cause}); rivet verifies an agent's TLS against the system's roots: give the ramdisk a certificate they sign, or let it listen on http"
            ))
        } else {
            DriverError::retryable(format!(
                "{whom} does not answer ({what}: {cause}); it may still be booting or have powered off; rivet tries again"
            ))
        };
        Self { error, timed_out }
    }
}

/// The whole source chain of an error, outermost first: reqwest's own
/// message says little ("error sending request"), the innermost says why
/// ("Connection refused").
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text = format!("{text}: {next}");
        }
        source = s.source();
    }
    text
}

/// The body of `response`, at most [`MAX_BODY`] bytes of it.
async fn read_body(
    conn: &AgentConn,
    what: &str,
    response: reqwest::Response,
    timeout: Duration,
) -> Result<Vec<u8>, Failure> {
    read_capped(response, MAX_BODY).await.map_err(|e| match e {
        BodyError::TooLarge => Failure::from(not_valid(
            conn,
            what,
            &format!(
                "it is larger than {} MiB, the most rivet reads of one agent answer",
                MAX_BODY >> 20
            ),
        )),
        BodyError::Broken(e) => Failure::transport(conn, what, e, timeout),
    })
}

/// The error for an answer that is not a success, classed by its status,
/// with what the agent said (IPA's `faultstring`) scrubbed and cut.
fn refused(conn: &AgentConn, what: &str, status: StatusCode, body: &[u8]) -> DriverError {
    let whom = whom(conn);
    let said = secrets(conn).message(&fault(body));
    match status {
        StatusCode::UNAUTHORIZED => DriverError::fatal(format!(
            "{whom} refused rivet's token ({what}: HTTP 401): the ramdisk was booted for another deploy; power-cycle the node"
        )),
        StatusCode::CONFLICT => DriverError::retryable(format!(
            "{whom} is busy with another command ({what}: {said}); rivet tries again once it is done"
        )),
        StatusCode::BAD_REQUEST => DriverError::invalid(format!(
            "{whom} refused {what}: {said} (an agent older than rivet expects, or a ramdisk whose hardware managers do not offer it)"
        )),
        s if s.is_redirection() => DriverError::fatal(format!(
            "{whom} answered {what} with {s}; rivet follows no redirect from an agent (it would carry the token elsewhere): the agent's callback_url must be where its API answers"
        )),
        s => DriverError::fatal(format!(
            "{whom} answered {what} with {s}: {said}; the agent's log on the node says more"
        )),
    }
}

/// What an error body says: IPA's `faultstring`, else its text.
fn fault(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("faultstring")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| text.into_owned())
}

fn not_valid(conn: &AgentConn, what: &str, why: &str) -> DriverError {
    DriverError::fatal(format!(
        "the agent's answer is not valid: {why} (node {}, {what} to {}); is an ironic-python-agent listening at the node's callback_url?",
        conn.node,
        conn.address()
    ))
}

fn still_running(
    conn: &AgentConn,
    id: &str,
    within: Duration,
    last_seen: Option<&Command>,
) -> DriverError {
    let within = humantime::format_duration(within);
    let secrets = secrets(conn);
    let id = secrets.message(id);
    match last_seen {
        Some(command) => DriverError::retryable(format!(
            "agent command {} ({id}) of node {} is still running after {within}; rivet follows it again",
            command.name, conn.node
        )),
        None => DriverError::retryable(format!(
            "agent command {id} of node {} did not end within {within} (the agent at {} answered no poll in that time); rivet follows it again",
            conn.node,
            conn.address()
        )),
    }
}

/// Who a message is about: the node and where its agent listens.
fn whom(conn: &AgentConn) -> String {
    format!("the agent of node {} at {}", conn.node, conn.address())
}

/// `url` with the token and `extra` in its query.
fn with_query(conn: &AgentConn, mut url: Url, extra: &[(&str, &str)]) -> Url {
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("agent_token", conn.token.expose());
        for (key, value) in extra {
            query.append_pair(key, value);
        }
    }
    url
}

fn bool_word(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

/// The token as an agent could echo it: as rivet sent it in the query
/// (form-encoded) and as it is.
fn secrets(conn: &AgentConn) -> Secrets {
    let token = conn.token.expose();
    let mut secrets = Secrets::default();
    secrets.add(token);
    let encoded: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    secrets.add(&encoded);
    secrets
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn after_three_abandoned_waits_a_command_is_polled_without_wait() {
        // An agent whose command outlasts every wait: it answers only polls
        // without `wait`, and those say the command is done.
        let waits = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&waits);
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let seen = Arc::clone(&seen);
            async move {
                let wait = uri.query().unwrap_or("").contains("wait=true");
                seen.lock().unwrap().push(wait);
                if wait {
                    std::future::pending::<()>().await;
                }
                axum::Json(json!({"id": "c1", "command_name": "execute_deploy_step",
                                  "command_status": "SUCCEEDED", "command_result": {},
                                  "command_error": null}))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let conn = AgentConn::new(
            "n1",
            &format!("http://{addr}"),
            AgentToken::new("t".repeat(32)),
        )
        .unwrap();
        let mut client = AgentClient::new().unwrap();
        client.long_poll = Duration::from_millis(200);
        let done = client
            .follow(&conn, "c1", Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(done.status, CommandStatus::Succeeded);
        assert_eq!(*waits.lock().unwrap(), [true, true, true, false]);
    }

    #[test]
    fn the_query_carries_the_token_encoded_and_messages_never_do() {
        let conn = AgentConn::new(
            "n1",
            "http://127.0.0.1:9",
            AgentToken::new("a b&c=d".into()),
        )
        .unwrap();
        let url = with_query(&conn, conn.commands_url(None), &[("wait", "true")]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/v1/commands/?agent_token=a+b%26c%3Dd&wait=true"
        );
        let echoed = refused(
            &conn,
            "GET /v1/commands/",
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"faultstring": "bad query agent_token=a+b%26c%3Dd, a b&c=d"}"#,
        );
        assert_eq!(
            echoed.message,
            "the agent of node n1 at 127.0.0.1:9 answered GET /v1/commands/ with 500 Internal Server Error: bad query agent_token=***, ***; the agent's log on the node says more"
        );
    }

    #[test]
    fn statuses_are_classed() {
        let conn =
            AgentConn::new("n1", "http://127.0.0.1:9", AgentToken::new("t".repeat(32))).unwrap();
        let class = |status: u16, body: &str| {
            refused(
                &conn,
                "POST /v1/commands/ (x.y)",
                StatusCode::from_u16(status).unwrap(),
                body.as_bytes(),
            )
        };
        let token = class(
            401,
            r#"{"faultcode": "Client", "faultstring": "401 Unauthorized: Token invalid."}"#,
        );
        assert_eq!(token.kind, crate::driver::ErrorKind::Fatal);
        assert!(token.message.contains("power-cycle the node"), "{token}");
        let busy = class(
            409,
            r#"{"faultcode": "Client", "faultstring": "Agent is busy: executing command deploy.execute_deploy_step"}"#,
        );
        assert!(busy.is_retryable());
        assert!(busy.message.contains("Agent is busy: executing command"));
        let bad = class(
            400,
            r#"{"faultcode": "Client", "faultstring": "Invalid command: Unknown command: install_bootloader"}"#,
        );
        assert_eq!(bad.kind, crate::driver::ErrorKind::Invalid);
        assert!(bad.message.contains("Unknown command: install_bootloader"));
        let moved = class(308, "<html>Redirecting</html>");
        assert_eq!(moved.kind, crate::driver::ErrorKind::Fatal);
        assert!(moved.message.contains("follows no redirect"), "{moved}");
        let gone = class(404, "not json");
        assert_eq!(gone.kind, crate::driver::ErrorKind::Fatal);
        assert!(
            gone.message
                .ends_with("404 Not Found: not json; the agent's log on the node says more"),
            "{gone}"
        );
    }
}
