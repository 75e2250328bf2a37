//! Random requests to `api::router` over a real `Conductor`, for the fuzz
//! test and the `fuzz_api` benchmark: methods, paths built from the
//! router's own routes and then mutated (segments swapped, percent-encoded,
//! huge, multibyte, broken escapes), queries, headers (microversion
//! garbage, tokens, content types) and bodies. Every answer must come
//! within a timeout and never be a 5xx. A seed makes a run repeatable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use rivet::conductor::Conductor;
use rivet::store::Write;
use rivet::store::records::{Event, NodeRecord, Outcome};
use tower::ServiceExt;

/// How long one request may take before the run calls it a hang.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

const NODES: &str = r#"
[[node]]
name = "n1"
uuid = "6ad3a2a4-3c2f-4e0b-9d57-5d7c1c0b2a11"
driver = "fake-hardware"
desired = { provision = "active", power = "on" }

[[node]]
name = "n2"
driver = "fake-hardware"
desired = { provision = "available" }
"#;

/// The router over a fleet of two fake nodes, one with a record and
/// history, as a daemon serves it.
pub struct Target {
    pub app: Router,
    _shared: Arc<Conductor>,
    _dir: tempfile::TempDir,
}

impl Target {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("nodes")).unwrap();
        std::fs::write(dir.path().join("nodes/a.toml"), NODES).unwrap();
        let shared = Conductor::open(dir.path(), &Default::default()).unwrap();
        let mut record =
            NodeRecord::enrolled("6ad3a2a4-3c2f-4e0b-9d57-5d7c1c0b2a11", "fake-hardware");
        record.updated_at = Some("2026-01-01T00:00:00Z".into());
        let mut writes = vec![Write::Node("n1".into(), record)];
        for i in 0..5 {
            writes.push(Write::Event(Event::note(
                "n1",
                "power on",
                Outcome::Succeeded,
                format!("event {i}"),
                "2026-01-01T00:00:00Z".into(),
            )));
        }
        shared.store.apply(&writes).unwrap();
        // As in a running daemon: `/healthz` answers 200, not 503.
        shared.watcher_alive.store(true, Ordering::SeqCst);
        let app = rivet::api::router(rivet::daemon::api_state(&shared).unwrap());
        Self {
            app,
            _shared: shared,
            _dir: dir,
        }
    }
}

/// Every path the router declares, read from its source so that a route
/// added later is fuzzed too.
pub fn routes() -> Vec<String> {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/mod.rs"))
        .expect("the router's source");
    let mut routes = Vec::new();
    let mut rest = source.as_str();
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let Some(open) = rest.find('"') else { break };
        let after = &rest[open + 1..];
        let Some(close) = after.find('"') else { break };
        routes.push(after[..close].to_string());
        rest = &after[close..];
    }
    assert!(routes.len() >= 15, "found the routes: {routes:?}");
    routes
}

fn pick<'a>(rng: &mut fastrand::Rng, items: &[&'a str]) -> &'a str {
    items[rng.usize(..items.len())]
}

/// A segment that is no real name: long, multibyte, escapes, dots.
fn odd_segment(rng: &mut fastrand::Rng) -> String {
    match rng.u8(..10) {
        0 => "a".repeat(rng.usize(1000..30_000)),
        1 => "é🦀".repeat(rng.usize(1..1000)),
        2 => pick(
            rng,
            &[
                "%00",
                "%ff",
                "%C3",
                "%zz",
                "%",
                "%2F",
                "%2e%2e",
                "%E2%80%AE",
            ],
        )
        .into(),
        3 => pick(rng, &["..", ".", "", "~", "*", "{id}", "detail", "latest"]).into(),
        4 => u64::MAX.to_string(),
        5 => format!("-{}", rng.u32(..)),
        6 => "ノード名".into(),
        7 => (0..rng.usize(1..40))
            .map(|_| char::from(rng.u8(0x21..0x7f)))
            .collect(),
        8 => "6ad3a2a4-3c2f-4e0b-9d57-5d7c1c0b2a11".into(),
        _ => "x".repeat(rng.usize(1..300)),
    }
}

/// A value for a route parameter: mostly real ones, sometimes not.
fn fill(rng: &mut fastrand::Rng, param: &str) -> String {
    if rng.u8(..4) == 0 {
        return odd_segment(rng);
    }
    match param {
        "{id}" => pick(
            rng,
            &["n1", "n2", "6ad3a2a4-3c2f-4e0b-9d57-5d7c1c0b2a11", "nope"],
        )
        .into(),
        "{name}" => pick(rng, &["fake-hardware", "ipmi", "redfish", "none"]).into(),
        "{event}" => pick(rng, &["1", "3", "0", "999999", "-1", "abc"]).into(),
        "{*change}" => pick(rng, &["power", "provision", "boot_device", "raid", "a/b/c"]).into(),
        "{method}" => pick(
            rng,
            &[
                "second_method",
                "third_method_sync",
                "fourth_method_shared_lock",
                "log_passthrough",
                "nope",
            ],
        )
        .into(),
        other => other.into(),
    }
}

/// Percent-encode what a URI cannot carry as it is; '%' stays, so broken
/// escapes reach the router.
fn encode(text: &str, keep: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric()
            || b"-._~%!$'()*+,;:@".contains(&byte)
            || keep.as_bytes().contains(&byte)
        {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn path(rng: &mut fastrand::Rng, routes: &[String]) -> String {
    let route = &routes[rng.usize(..routes.len())];
    let mut segments: Vec<String> = route
        .split('/')
        .skip(1)
        .map(|s| {
            if s.starts_with('{') {
                fill(rng, s)
            } else {
                s.to_string()
            }
        })
        .collect();
    for _ in 0..rng.usize(..3) {
        if segments.is_empty() {
            break;
        }
        let i = rng.usize(..segments.len());
        match rng.u8(..6) {
            0 => {
                let j = rng.usize(..segments.len());
                segments.swap(i, j);
            }
            1 => segments[i] = odd_segment(rng),
            2 => segments.insert(i, odd_segment(rng)),
            3 => {
                segments.remove(i);
            }
            4 => segments[i] = segments[i].to_uppercase(),
            _ => segments.push(String::new()),
        }
    }
    let mut out = String::new();
    for s in &segments {
        out.push('/');
        out.push_str(&encode(s, "&="));
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn query(rng: &mut fastrand::Rng) -> String {
    const KEYS: &[&str] = &[
        "limit",
        "marker",
        "fields",
        "detail",
        "sort_key",
        "sort_dir",
        "provision_state",
        "maintenance",
        "associated",
        "driver",
        "fault",
        "resource_class",
        "conductor_group",
        "owner",
        "instance_uuid",
        "nope",
    ];
    const VALUES: &[&str] = &[
        "1",
        "0",
        "-1",
        "100000000000000000000",
        "1000",
        "true",
        "false",
        "yes",
        "",
        "name",
        "uuid,name",
        "name,,",
        "asc",
        "desc",
        "n1",
        "active",
        "null",
        "1e3",
        "0x10",
    ];
    let mut pairs = Vec::new();
    for _ in 0..rng.usize(..5) {
        let key = if rng.u8(..8) == 0 {
            odd_segment(rng)
        } else {
            pick(rng, KEYS).to_string()
        };
        let value = if rng.u8(..5) == 0 {
            odd_segment(rng)
        } else {
            pick(rng, VALUES).to_string()
        };
        pairs.push(format!("{}={}", encode(&key, "/?"), encode(&value, "/?")));
    }
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

fn version_header(rng: &mut fastrand::Rng) -> Vec<u8> {
    let text = match rng.u8(..8) {
        0 => return (0..rng.usize(..60)).map(|_| rng.u8(0x80..=0xff)).collect(),
        1 => format!("{}.{}", rng.u64(..), rng.u64(..)),
        2 => "9".repeat(rng.usize(1..400)),
        _ => pick(
            rng,
            &[
                "1.1", "1.9", "1.99", "1.100", "2.0", "0.1", "latest", "LATEST", "1.", ".1",
                "1.-1", "1..2", "", " 1.9", "1.9 ", "a.b", "1.9,1.10", "1.0x10",
            ],
        )
        .to_string(),
    };
    text.into_bytes()
}

/// One random request, and a short description of it for failures.
pub fn request(rng: &mut fastrand::Rng, routes: &[String]) -> (Request<Body>, String) {
    let method = match rng.u8(..12) {
        0..=4 => Method::GET,
        5 | 6 => Method::POST,
        7 => Method::PUT,
        8 => Method::PATCH,
        9 => Method::DELETE,
        10 => pick(rng, &["HEAD", "OPTIONS", "TRACE"]).parse().unwrap(),
        _ => Method::from_bytes(b"FROB").unwrap(),
    };
    // http's `Uri` holds at most 64 KiB; longer ones never reach a router.
    let uri = std::iter::repeat_with(|| format!("{}{}", path(rng, routes), query(rng)))
        .find(|uri| uri.len() < 65_000)
        .expect("some URI is short enough");
    let mut builder = Request::builder().method(method.clone()).uri(uri.as_str());
    if rng.bool() {
        builder = builder.header("X-OpenStack-Ironic-API-Version", version_header(rng));
    }
    if rng.u8(..4) == 0 {
        builder = builder.header(
            "Authorization",
            pick(
                rng,
                &["Bearer ", "Bearer x", "Basic YTpi", "", "Bearer ééé"],
            )
            .as_bytes(),
        );
    }
    if rng.bool() {
        builder = builder.header(
            "Content-Type",
            pick(
                rng,
                &[
                    "application/json",
                    "text/plain",
                    "application/json; charset=latin1",
                    "multipart/form-data",
                    "",
                    "*/*",
                ],
            ),
        );
    }
    if rng.u8(..4) == 0 {
        builder = builder.header(
            "Accept",
            pick(rng, &["application/json", "text/html", "*/*", "", ";;;"]),
        );
    }
    let body: Vec<u8> = match rng.u8(..8) {
        0..=2 => Vec::new(),
        3 => br#"{"bar": "kazoo"}"#.to_vec(),
        4 => pick(rng, &["{", "[]", "null", "\"s\"", "{\"bar\": {\"bar\": []}}", "{\"a\":1e999}", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]).as_bytes().to_vec(),
        5 => (0..rng.usize(..2000)).map(|_| rng.u8(..)).collect(),
        6 => format!("{{\"bar\": \"{}\"}}", "é".repeat(rng.usize(..5000))).into_bytes(),
        _ => vec![b'x'; rng.usize(1024 * 1024 - 10..1024 * 1024 + 10)],
    };
    let shown = format!(
        "{method} {} ({} body bytes)",
        rivet::driver::scrub::cut(&uri, 200),
        body.len()
    );
    let request = builder
        .body(Body::from(body))
        .unwrap_or_else(|e| panic!("the generator builds valid requests: {shown}: {e}"));
    (request, shown)
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    pub requests: usize,
    pub by_status: BTreeMap<u16, usize>,
    pub slowest: Duration,
    pub slowest_request: String,
    pub elapsed: Duration,
}

/// Send `count` requests drawn from `seed`, one at a time; the first 5xx
/// or hang ends the run with what was sent.
pub async fn run(seed: u64, count: usize) -> Result<Report, String> {
    let target = Target::new();
    let routes = routes();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut report = Report::default();
    let started = Instant::now();
    for i in 0..count {
        let (request, shown) = request(&mut rng, &routes);
        let began = Instant::now();
        let answered = tokio::time::timeout(REQUEST_DEADLINE, async {
            let response = target
                .app
                .clone()
                .oneshot(request)
                .await
                .expect("infallible");
            let status = response.status();
            let body = response.into_body().collect().await.map(|b| b.to_bytes());
            (status, body)
        })
        .await;
        let took = began.elapsed();
        let (status, body) = answered.map_err(|_| {
            format!("seed {seed}, request {i}: no answer within {REQUEST_DEADLINE:?}: {shown}")
        })?;
        let body =
            body.map_err(|e| format!("seed {seed}, request {i}: the body failed: {e}: {shown}"))?;
        if status.is_server_error() {
            return Err(format!(
                "seed {seed}, request {i}: {status}: {}: {shown}",
                String::from_utf8_lossy(&body)
            ));
        }
        *report.by_status.entry(status.as_u16()).or_default() += 1;
        if took > report.slowest {
            report.slowest = took;
            report.slowest_request = shown;
        }
        report.requests += 1;
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
