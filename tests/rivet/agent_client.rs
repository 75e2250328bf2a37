//! `driver::agent`, rivet's client of ironic-python-agent's command API.
//!
//! What the real agent does is proven against it, in the deploy-ramdisk bed
//! (ironic-python-agent 13.0.0 on a loop device, looked up at the bed's
//! reference Ironic): a whole-disk deploy, its refusals and failures. The
//! in-process fake agent exists for the faults the real agent cannot be
//! made to produce (garbage and oversized bodies, a server that never
//! answers, a 500 echoing the token, a redirect, a wait that returns
//! RUNNING).

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

use crate::fake_ironic::FakeIronic;
use crate::image_server::ImageServer;
use crate::ipa_bed::{self, BedSettings, Images, IpaBed};

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

// ---- the real agent --------------------------------------------------------

/// Whether a real-agent test runs: `false` when emulator tests are skipped;
/// a panic with how to install what a bed needs when it is missing.
fn bed_can_run() -> bool {
    if crate::support::skip_emulator_test("an ironic-python-agent client test") {
        return false;
    }
    ipa_bed::assert_installed();
    true
}

/// One booted agent, looked up at the reference Ironic, with the images
/// served beside it.
struct RealAgent {
    uuid: &'static str,
    conn: AgentConn,
    bed: IpaBed,
    images: Images,
    server: ImageServer,
    // Dropped last: the bed's directory and the Ironic it heartbeats at.
    _ironic: FakeIronic,
    _dir: tempfile::TempDir,
}

impl RealAgent {
    fn boot(node: &str, uuid: &'static str, mac: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::make(&dir.path().join("images"));
        let server = ImageServer::serve(&images.dir);
        let ironic = FakeIronic::start(&[(uuid, mac)]);
        let settings = BedSettings {
            lookup_timeout: Some(Duration::from_secs(30)),
            power_off_delay: Some(Duration::from_millis(500)),
            ..BedSettings::default()
        };
        let bed = IpaBed::up_with(&dir.path().join("bed"), &ironic.url, mac, &settings).unwrap();
        // What rivet's API learns at lookup (the token it hands out) and
        // heartbeat (the callback URL).
        let state = ironic.wait_for(uuid, "a heartbeat", Duration::from_secs(60), |n| {
            n["heartbeats"].as_u64() >= Some(1)
        });
        let conn = AgentConn::new(
            node,
            state["callback_url"].as_str().unwrap(),
            AgentToken::new(state["token"].as_str().unwrap().to_string()),
        )
        .unwrap();
        Self {
            uuid,
            conn,
            bed,
            images,
            server,
            _ironic: ironic,
            _dir: dir,
        }
    }

    fn node_doc(&self) -> Value {
        json!({"uuid": self.uuid, "properties": {}, "instance_info": {},
               "driver_internal_info": {}})
    }

    /// `deploy.get_deploy_steps`, the first command of a deploy.
    async fn deploy_steps(&self, client: &AgentClient) -> rivet::driver::agent::Command {
        let params = json!({"node": self.node_doc(), "ports": []});
        client
            .start(&self.conn, "deploy.get_deploy_steps", params, true, STEP)
            .await
            .unwrap()
    }

    /// `deploy.execute_deploy_step` parameters writing `image` whole-disk,
    /// checked against `sha256`.
    fn write_image(&self, image_file: &str, sha256: &str, deploy_version: &Value) -> Value {
        json!({
            "step": {"interface": "deploy", "step": "write_image", "priority": 80,
                     "args": {"image_info": {
                         "id": format!("rivet-{image_file}"),
                         "urls": [self.server.url(image_file)],
                         "disk_format": "raw", "container_format": "bare",
                         "os_hash_algo": "sha256", "os_hash_value": sha256,
                         "stream_raw_images": true, "node_uuid": self.uuid,
                         "image_type": "whole-disk"},
                     "configdrive": null}},
            "node": self.node_doc(), "ports": [], "deploy_version": deploy_version,
        })
    }
}

#[test]
fn a_whole_disk_deploy_through_the_real_agent_writes_the_image_byte_for_byte() {
    if !bed_can_run() {
        return;
    }
    let agent = RealAgent::boot(
        "deploy-1",
        "a9e00000-0000-4000-8000-525400a9e001",
        "52:54:00:a9:e0:01",
    );
    let client = AgentClient::new().unwrap();
    let conn = &agent.conn;
    let rt = crate::support::rt();
    let begun = Instant::now();

    let steps = rt.block_on(agent.deploy_steps(&client));
    assert_eq!(steps.status, CommandStatus::Succeeded, "{steps:?}");
    let result = steps.result.unwrap();
    assert_eq!(
        result["deploy_steps"]["LoopbackHardwareManager"][0]["step"],
        "write_image"
    );
    let version = result["hardware_manager_version"].clone();
    assert_eq!(version, json!({"rivet_loopback": "1.0"}));

    let image = &agent.images.mbr_raw;
    let writing = rt
        .block_on(client.start(
            conn,
            "deploy.execute_deploy_step",
            agent.write_image(image.name(), &image.sha256, &version),
            false,
            STEP,
        ))
        .unwrap();
    assert_eq!(writing.status, CommandStatus::Running, "{writing:?}");
    let write_begun = Instant::now();
    let written = rt
        .block_on(client.follow(conn, &writing.id, Duration::from_secs(120)))
        .unwrap();
    let write_took = write_begun.elapsed();
    assert_eq!(written.status, CommandStatus::Succeeded, "{written:?}");
    assert_eq!(written.id, writing.id);
    assert_eq!(
        written.result.as_ref().unwrap()["deploy_step"]["step"],
        "write_image"
    );
    assert_eq!(agent.server.downloads(image.name()), 1);

    // What a conductor restarted mid-write reads to find its command.
    let listed = rt.block_on(client.commands(conn)).unwrap();
    let names: Vec<&str> = listed.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["get_deploy_steps", "execute_deploy_step"]);
    assert_eq!(listed[1], written);

    let uuids = rt
        .block_on(client.start(conn, "standby.get_partition_uuids", json!({}), true, STEP))
        .unwrap();
    assert_eq!(uuids.status, CommandStatus::Succeeded, "{uuids:?}");
    assert_eq!(uuids.result.unwrap()["root uuid"], "0x52495654");

    let off = rt
        .block_on(client.start(conn, "standby.power_off", json!({}), true, STEP))
        .unwrap();
    assert_eq!(off.status, CommandStatus::Succeeded, "{off:?}");
    let deploy_took = begun.elapsed();

    let disk = agent.bed.disk();
    let raw = std::fs::read(&image.path).unwrap();
    assert!(disk.len() > raw.len(), "the disk is larger than the image");
    assert!(
        disk[..raw.len()] == raw[..],
        "the disk starts with the image, byte for byte"
    );
    assert!(
        disk[raw.len()..].iter().all(|b| *b == 0),
        "and holds nothing after it"
    );

    // Powered off, the agent goes: a retryable error, as for a node still
    // booting.
    ipa_bed::eventually("the agent gone", Duration::from_secs(20), || {
        agent.bed.exit().ok_or_else(|| "still running".to_string())
    });
    let gone = rt.block_on(client.commands(conn)).unwrap_err();
    assert_eq!(gone.kind, ErrorKind::Retryable, "{gone}");
    assert!(
        gone.message.starts_with(&format!(
            "the agent of node deploy-1 at {} does not answer",
            conn.address()
        )),
        "{gone}"
    );
    assert_no_token(&gone.message);
    assert!(!gone.message.contains(conn.token.expose()), "{gone}");
    eprintln!(
        "real agent: write_image followed in {:.2} s; get_deploy_steps..power_off in {:.2} s",
        write_took.as_secs_f64(),
        deploy_took.as_secs_f64()
    );
}

#[test]
fn the_real_agent_refuses_a_wrong_token_a_second_command_and_a_wrong_checksum() {
    if !bed_can_run() {
        return;
    }
    let agent = RealAgent::boot(
        "deploy-2",
        "a9e00000-0000-4000-8000-525400a9e002",
        "52:54:00:a9:e0:02",
    );
    let client = AgentClient::new().unwrap();
    let conn = &agent.conn;
    let rt = crate::support::rt();

    const WRONG: &str = "wrong-token-Hq2mX8vL4nB7cR1tY6uI3oP5aS0dF9gK";
    let stranger = AgentConn::new(
        "deploy-2",
        conn.callback_url.as_str(),
        AgentToken::new(WRONG.into()),
    )
    .unwrap();
    for refused in [
        rt.block_on(client.commands(&stranger)).unwrap_err(),
        rt.block_on(client.start(&stranger, "standby.sync", json!({}), true, STEP))
            .unwrap_err(),
    ] {
        assert_eq!(refused.kind, ErrorKind::Fatal, "{refused}");
        assert!(
            refused.message.contains("refused rivet's token")
                && refused.message.ends_with("power-cycle the node"),
            "{refused}"
        );
        assert!(!refused.message.contains(WRONG), "{refused}");
        assert!(!refused.message.contains(conn.token.expose()), "{refused}");
    }

    let steps = rt.block_on(agent.deploy_steps(&client));
    let version = steps.result.unwrap()["hardware_manager_version"].clone();
    let image = &agent.images.mbr_raw;
    let wrong_sum = "0".repeat(64);
    let writing = rt
        .block_on(client.start(
            conn,
            "deploy.execute_deploy_step",
            agent.write_image(image.name(), &wrong_sum, &version),
            false,
            STEP,
        ))
        .unwrap();
    assert_eq!(writing.status, CommandStatus::Running, "{writing:?}");

    // A 16 MiB write takes over a second: this comes while it runs.
    let busy = rt
        .block_on(client.start(conn, "standby.sync", json!({}), true, STEP))
        .unwrap_err();
    assert_eq!(busy.kind, ErrorKind::Retryable, "{busy}");
    assert!(
        busy.message.contains("is busy with another command")
            && busy.message.contains("Agent is busy: executing command"),
        "{busy}"
    );
    assert_no_token(&busy.message);

    let failed = rt
        .block_on(client.follow(conn, &writing.id, Duration::from_secs(120)))
        .unwrap();
    assert_eq!(failed.status, CommandStatus::Failed, "{failed:?}");
    let error = failed.error.unwrap();
    assert!(
        error.starts_with("ImageChecksumError: Error verifying image checksum: "),
        "{error}"
    );
    assert!(error.contains(&wrong_sum), "{error}");
    assert!(!error.contains(conn.token.expose()), "{error}");
    let listed = rt.block_on(client.commands(conn)).unwrap();
    assert_eq!(listed.last().unwrap().id, writing.id);
    assert_eq!(listed.last().unwrap().status, CommandStatus::Failed);
    // The refused command left no trace in the agent's list.
    assert_eq!(listed.len(), 2, "{listed:?}");
}
