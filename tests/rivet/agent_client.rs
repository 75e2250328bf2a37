//! `driver::agent`, rivet's client of ironic-python-agent's command API.
//!
//! The fake agent here exists for the faults the real agent cannot be made
//! to produce (garbage and oversized bodies, a server that never answers, a
//! 500 echoing the token, a redirect, a wait that returns RUNNING); what the
//! real agent does is proven against it, in the deploy-ramdisk bed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rivet::driver::ErrorKind;
use rivet::driver::agent::{AgentClient, AgentConn, AgentToken, CommandStatus, MAX_BODY};
use rivet::driver::fence::{self, LeaseClock, Permit};
use serde_json::{Value, json};

const TOKEN: &str = "agent-canary-Zq7xW2pL9mN4vB8cR1tY6uI3oP5aS0dF";

/// One request as the fake agent saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Value,
}

impl Seen {
    fn query_value(&self, key: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

/// What the fake agent answers.
enum Reply {
    Json(StatusCode, Value),
    Raw(StatusCode, Vec<(header::HeaderName, String)>, Vec<u8>),
    /// A body streamed in chunks, without a Content-Length.
    Chunked(Vec<Bytes>),
    /// Never answer.
    Hang,
}

type Script = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// The fake agent's state: what it saw, and its script.
type Agent = (Arc<Mutex<Vec<Seen>>>, Arc<Script>);

struct FakeAgent {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeAgent {
    /// Serve `script` on 127.0.0.1: it gets each request and how many came
    /// before it.
    async fn start(script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = (Arc::clone(&seen), Arc::new(script) as Arc<Script>);
        let app = Router::new().fallback(answer).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, seen }
    }

    fn conn(&self) -> AgentConn {
        AgentConn::new(
            "node-7",
            &format!("http://{}", self.addr),
            AgentToken::new(TOKEN.into()),
        )
        .unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(State((seen, script)): State<Agent>, request: Request) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let request = Seen {
        method,
        path,
        query,
        body,
    };
    let before = {
        let mut seen = seen.lock().unwrap();
        seen.push(request.clone());
        seen.len() - 1
    };
    match script(&request, before) {
        Reply::Json(status, value) => (status, axum::Json(value)).into_response(),
        Reply::Raw(status, headers, body) => {
            let mut response = (status, body).into_response();
            for (name, value) in headers {
                response
                    .headers_mut()
                    .insert(name, HeaderValue::from_str(&value).unwrap());
            }
            response
        }
        Reply::Chunked(chunks) => {
            let stream = futures_util::stream::iter(
                chunks.into_iter().map(Ok::<_, std::convert::Infallible>),
            );
            Body::from_stream(stream).into_response()
        }
        Reply::Hang => std::future::pending().await,
    }
}

fn command(id: &str, status: &str) -> Value {
    json!({
        "id": id,
        "command_name": "execute_deploy_step",
        "command_status": status,
        "command_result": if status == "SUCCEEDED" {
            json!({"deploy_result": null, "deploy_step": {"step": "write_image"}})
        } else {
            Value::Null
        },
        "command_error": null,
    })
}

fn assert_no_token(text: &str) {
    assert!(!text.contains(TOKEN), "the token leaked: {text}");
    assert!(!text.contains("agent_token="), "a query leaked: {text}");
}

/// The call that began at `begun` ended within `limit`.
fn assert_within(begun: Instant, limit: Duration) {
    let took = begun.elapsed();
    assert!(took < limit, "took {took:?}, more than {limit:?}");
}

const STEP: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_command_is_posted_with_the_token_and_wait_to_the_collection_with_its_slash() {
    let agent =
        FakeAgent::start(|_, _| Reply::Json(StatusCode::OK, command("c1", "RUNNING"))).await;
    let client = AgentClient::new().unwrap();
    let params = json!({"node": {"uuid": "u1"}, "ports": []});
    let started = client
        .start(
            &agent.conn(),
            "deploy.execute_deploy_step",
            params.clone(),
            false,
            STEP,
        )
        .await
        .unwrap();
    assert_eq!(started.id, "c1");
    assert_eq!(started.status, CommandStatus::Running);
    let seen = agent.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/commands/");
    assert_eq!(seen[0].query_value("agent_token").as_deref(), Some(TOKEN));
    assert_eq!(seen[0].query_value("wait").as_deref(), Some("false"));
    assert_eq!(
        seen[0].body,
        json!({"name": "deploy.execute_deploy_step", "params": params})
    );
}

#[tokio::test]
async fn follow_waits_again_while_the_command_runs_and_returns_it_done() {
    let agent = FakeAgent::start(|_, before| {
        let status = if before == 0 { "RUNNING" } else { "SUCCEEDED" };
        Reply::Json(StatusCode::OK, command("c/1", status))
    })
    .await;
    let client = AgentClient::new().unwrap();
    let done = client
        .follow(&agent.conn(), "c/1", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.status, CommandStatus::Succeeded);
    assert_eq!(done.result.unwrap()["deploy_step"]["step"], "write_image");
    let seen = agent.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for request in &seen {
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/v1/commands/c%2F1");
        assert_eq!(request.query_value("wait").as_deref(), Some("true"));
        assert_eq!(request.query_value("agent_token").as_deref(), Some(TOKEN));
    }
}

#[tokio::test]
async fn a_command_still_running_at_the_bound_is_a_retryable_error() {
    let agent =
        FakeAgent::start(|_, _| Reply::Json(StatusCode::OK, command("c1", "RUNNING"))).await;
    let client = AgentClient::new().unwrap();
    let begun = Instant::now();
    let error = client
        .follow(&agent.conn(), "c1", Duration::from_millis(700))
        .await
        .unwrap_err();
    assert_within(begun, Duration::from_secs(5));
    assert_eq!(error.kind, ErrorKind::Retryable, "{error}");
    assert!(
        error.message.starts_with(
            "agent command execute_deploy_step (c1) of node node-7 is still running after 700ms"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn an_agent_that_never_answers_is_retryable_within_the_bound() {
    let agent = FakeAgent::start(|_, _| Reply::Hang).await;
    let client = AgentClient::new().unwrap();
    let conn = agent.conn();
    let begun = Instant::now();
    let error = client
        .start(
            &conn,
            "standby.power_off",
            json!({}),
            true,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert_within(begun, Duration::from_secs(3));
    assert_eq!(error.kind, ErrorKind::Retryable, "{error}");
    assert_eq!(
        error.message,
        format!(
            "the agent of node node-7 at {} does not answer: POST /v1/commands/ (standby.power_off) got no answer within 300ms; rivet tries again",
            agent.addr
        )
    );

    let begun = Instant::now();
    let error = client
        .follow(&conn, "c1", Duration::from_millis(500))
        .await
        .unwrap_err();
    assert_within(begun, Duration::from_secs(3));
    assert_eq!(error.kind, ErrorKind::Retryable, "{error}");
    assert!(
        error.message.contains("did not end within 500ms")
            && error.message.contains("answered no poll"),
        "{error}"
    );
    assert_no_token(&error.message);
}

#[tokio::test]
async fn a_closed_port_is_retryable_and_names_node_and_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let conn = AgentConn::new(
        "node-7",
        &format!("http://{addr}"),
        AgentToken::new(TOKEN.into()),
    )
    .unwrap();
    let error = AgentClient::new()
        .unwrap()
        .commands(&conn)
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Retryable, "{error}");
    assert!(
        error.message.starts_with(&format!(
            "the agent of node node-7 at {addr} does not answer (GET /v1/commands/: "
        )),
        "{error}"
    );
    assert_no_token(&error.message);
}

#[tokio::test]
async fn garbage_is_not_a_valid_answer() {
    let agent = FakeAgent::start(|seen, _| {
        if seen.method == "POST" {
            Reply::Raw(StatusCode::OK, vec![], b"<html>hello</html>".to_vec())
        } else {
            Reply::Json(StatusCode::OK, json!({"commands": [{"id": 1}]}))
        }
    })
    .await;
    let client = AgentClient::new().unwrap();
    let conn = agent.conn();
    let error = client
        .start(&conn, "deploy.get_deploy_steps", json!({}), true, STEP)
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Fatal, "{error}");
    assert!(
        error
            .message
            .starts_with("the agent's answer is not valid: it is not JSON"),
        "{error}"
    );
    assert!(error.message.contains("node node-7"), "{error}");
    let error = client.commands(&conn).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Fatal, "{error}");
    assert!(
        error
            .message
            .starts_with("the agent's answer is not valid: commands[0]: "),
        "{error}"
    );
}

#[tokio::test]
async fn an_answer_over_the_cap_is_refused_with_or_without_its_length() {
    let huge = vec![b' '; MAX_BODY + 1];
    let agent = FakeAgent::start(move |seen, _| {
        if seen.method == "POST" {
            Reply::Raw(StatusCode::OK, vec![], huge.clone())
        } else {
            // A JSON list padded past the cap in 64 KiB chunks.
            let mut chunks = vec![Bytes::from_static(b"{\"commands\": [")];
            chunks.extend((0..20).map(|_| Bytes::from(vec![b' '; 64 << 10])));
            chunks.push(Bytes::from_static(b"]}"));
            Reply::Chunked(chunks)
        }
    })
    .await;
    let client = AgentClient::new().unwrap();
    let conn = agent.conn();
    for error in [
        client
            .start(&conn, "deploy.get_deploy_steps", json!({}), true, STEP)
            .await
            .unwrap_err(),
        client.commands(&conn).await.unwrap_err(),
    ] {
        assert_eq!(error.kind, ErrorKind::Fatal, "{error}");
        assert!(
            error
                .message
                .starts_with("the agent's answer is not valid: it is larger than 1 MiB"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn an_error_body_echoing_the_token_is_scrubbed() {
    let agent = FakeAgent::start(|seen, _| {
        let echoed = format!("cannot run: token {} from {}", TOKEN, seen.query);
        Reply::Json(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"faultcode": "Server", "faultstring": echoed}),
        )
    })
    .await;
    let error = AgentClient::new()
        .unwrap()
        .start(&agent.conn(), "standby.sync", json!({}), true, STEP)
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Fatal, "{error}");
    assert_eq!(
        error.message,
        format!(
            "the agent of node node-7 at {} answered POST /v1/commands/ (standby.sync) with 500 Internal Server Error: cannot run: token *** from agent_token=***&wait=true; the agent's log on the node says more",
            agent.addr
        )
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let agent = FakeAgent::start(|seen, _| {
        if seen.path == "/elsewhere" {
            return Reply::Json(StatusCode::OK, command("c1", "SUCCEEDED"));
        }
        // What IPA answers without the trailing slash: its Location carries
        // the query, token and all.
        Reply::Raw(
            StatusCode::PERMANENT_REDIRECT,
            vec![(header::LOCATION, format!("/elsewhere?{}", seen.query))],
            b"<!doctype html><title>Redirecting...</title>".to_vec(),
        )
    })
    .await;
    let error = AgentClient::new()
        .unwrap()
        .start(&agent.conn(), "standby.power_off", json!({}), true, STEP)
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Fatal, "{error}");
    assert!(
        error
            .message
            .contains("answered POST /v1/commands/ (standby.power_off) with 308 Permanent Redirect; rivet follows no redirect"),
        "{error}"
    );
    assert_no_token(&error.message);
    let paths: Vec<String> = agent.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/v1/commands/"]);
}

#[tokio::test]
async fn a_command_under_an_expired_lease_is_not_sent() {
    let agent =
        FakeAgent::start(|_, _| Reply::Json(StatusCode::OK, command("c1", "SUCCEEDED"))).await;
    let client = AgentClient::new().unwrap();
    let clock = Arc::new(LeaseClock::new(Duration::ZERO));
    let permit = Permit {
        host: Arc::from("c1"),
        token: 3,
        clock: Some(Arc::clone(&clock)),
    };
    let conn = agent.conn();
    let error = fence::within(
        permit,
        client.start(&conn, "standby.power_off", json!({}), true, STEP),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Fenced, "{error}");
    assert!(agent.seen().is_empty(), "{:?}", agent.seen());
    // Reads are not fenced: the list is still there to be read.
    let listed = fence::within(
        Permit {
            host: Arc::from("c1"),
            token: 3,
            clock: Some(clock),
        },
        async {
            let _ = client.commands(&conn).await;
        },
    );
    listed.await;
    assert_eq!(agent.seen().len(), 1);
}

#[tokio::test]
async fn parameters_that_are_no_object_are_refused_before_sending() {
    let agent =
        FakeAgent::start(|_, _| Reply::Json(StatusCode::OK, command("c1", "SUCCEEDED"))).await;
    let error = AgentClient::new()
        .unwrap()
        .start(&agent.conn(), "standby.sync", json!([1]), true, STEP)
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Invalid, "{error}");
    assert!(agent.seen().is_empty());
}
