//! The API of a live `rivet daemon` process over a real socket: every
//! passthru status code, the 409 race with a converge holding the node
//! lock, async results in history, secrets kept in, and the CLI clients.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::{fault, passthru_cases};
use crate::daemon_process::DaemonProcess;
use crate::support::TempFleet;

/// A daemon on a free loopback port, its JSON logs (at debug) collected.
pub struct LiveDaemon {
    process: DaemonProcess,
    pub url: String,
}

impl LiveDaemon {
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        let process = DaemonProcess::start(dir, "debug", env, Duration::from_secs(20));
        let addr = process.http_addr();
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        Self {
            process,
            url: format!("http://{addr}"),
        }
    }

    /// SIGTERM, expect a clean exit, return every log line.
    pub fn stop(self) -> Vec<String> {
        self.process.stop()
    }
}

/// Every response body seen, for the secret scan.
#[derive(Default)]
pub struct Http {
    client: reqwest::Client,
    pub seen: Mutex<Vec<String>>,
}

impl Http {
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut request = self
            .client
            .request(method.parse().unwrap(), url)
            .header("X-OpenStack-Ironic-API-Version", "latest");
        if let Some(b) = body {
            request = request
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let mut seen = self.seen.lock().unwrap();
        seen.push(format!("{headers:?}"));
        seen.push(text.clone());
        (status, headers, text)
    }

    pub async fn json(&self, url: &str) -> Value {
        let (status, _, text) = self.send("GET", url, None, None).await;
        assert_eq!(status, StatusCode::OK, "{url}: {text}");
        serde_json::from_str(&text).unwrap()
    }
}

/// Poll `check` until it holds (deadline 30 s).
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn slow_fleet(extra_rivet: &str) -> TempFleet {
    TempFleet::new(&[
        (
            "rivet.toml",
            &format!("[conductor]\npower_sync_interval = \"1h\"\n{extra_rivet}"),
        ),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"slow\"\ndriver = \"fake-hardware\"\nbmc = { address = \"fake://slow?latency=2s\" }\ndesired = { provision = \"active\", power = \"on\" }\n\n\
             [[node]]\nname = \"quick\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"active\", power = \"on\" }\n",
        ),
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_converge_holding_the_lock_means_409_for_exclusive_methods_only() {
    let fleet = slow_fleet("");
    let daemon = LiveDaemon::start(fleet.path(), &[]);
    let http = Http::default();
    let url = &daemon.url;
    let host = http.json(&format!("{url}/v1/nodes/slow")).await["conductor"]
        .as_str()
        .unwrap()
        .to_string();

    until("the converge holds the lock of `slow`", || async {
        http.json(&format!("{url}/v1/nodes/slow")).await["reservation"] != Value::Null
    })
    .await;
    let vp = format!("{url}/v1/nodes/slow/vendor_passthru");
    for method in ["third_method_sync", "second_method"] {
        let (status, _, body) = http
            .send(
                "POST",
                &format!("{vp}?method={method}"),
                Some(r#"{"bar":"meow"}"#),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(
            fault(&body),
            format!(
                "Node slow is locked by host {host}, please retry after the current operation is completed."
            )
        );
    }
    // A method that does not need the exclusive lock runs during the step.
    let (status, _, body) = http
        .send(
            "POST",
            &format!("{vp}?method=fourth_method_shared_lock"),
            Some(r#"{"bar":"woof"}"#),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, "");
    let still_locked = http.json(&format!("{url}/v1/nodes/slow")).await;
    assert_ne!(
        still_locked["reservation"],
        Value::Null,
        "the step was still running"
    );
    until("the shared-lock call is in the history", || async {
        let h = http.json(&format!("{url}/v1/nodes/slow/history")).await;
        h["history"].as_array().unwrap().iter().any(|e| {
            e["action"] == "vendor_passthru.fourth_method_shared_lock" && e["detail"] == "true"
        })
    })
    .await;

    until("`slow` is active and unlocked", || async {
        let n = http.json(&format!("{url}/v1/nodes/slow")).await;
        n["provision_state"] == "active" && n["reservation"] == Value::Null
    })
    .await;
    let (status, _, body) = http
        .send(
            "POST",
            &format!("{vp}?method=third_method_sync"),
            Some(r#"{"bar":"meow"}"#),
            None,
        )
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "true"));
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_passthru_code_over_a_socket_and_async_results_in_history() {
    let fleet = slow_fleet("");
    let daemon = LiveDaemon::start(fleet.path(), &[]);
    let http = Http::default();
    let url = &daemon.url;
    until("`quick` is active and unlocked", || async {
        let n = http.json(&format!("{url}/v1/nodes/quick")).await;
        n["provision_state"] == "active" && n["reservation"] == Value::Null
    })
    .await;
    let vp = format!("{url}/v1/nodes/quick/vendor_passthru");
    for case in passthru_cases() {
        let body = (!case.body.is_empty()).then_some(case.body);
        let (status, headers, text) = http.send(case.verb, &case.uri(&vp, url), body, None).await;
        assert_eq!(headers["x-openstack-ironic-api-version"], "1.115");
        case.check(status.as_u16(), &text);
    }
    let methods = http.json(&format!("{vp}/methods")).await;
    assert_eq!(
        methods["second_method"],
        json!({"http_methods": ["POST"], "async": true, "description": "Test if the value of bar is kazoo", "attach": false, "require_exclusive_lock": true})
    );
    let (status, _, _) = http
        .send("GET", &format!("{url}/v1/nodes/quick"), None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, text) = http
        .send("DELETE", &format!("{url}/v1/nodes/quick"), None, None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{text}");

    until("the async result is in the history", || async {
        let h = http.json(&format!("{url}/v1/nodes/quick/history")).await;
        h["history"].as_array().unwrap().iter().any(|e| {
            e["action"] == "vendor_passthru.second_method"
                && e["outcome"] == "succeeded"
                && e["detail"] == "true"
        })
    })
    .await;
    let (_, _, metrics) = http
        .send("GET", &format!("{url}/metrics"), None, None)
        .await;
    assert!(
        metrics.contains("rivet_passthru_calls_total{scope=\"node\",code=\"202\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("rivet_operations_total{outcome=\"succeeded\"}"));
    assert!(metrics.contains("rivet_bmc_call_duration_seconds_count{protocol=\"fake\"}"));
    let health = http.json(&format!("{url}/healthz")).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["watcher_alive"], true);
    let logs = daemon.stop();
    assert!(logs.iter().any(|l| l.contains("\"message\":\"stopped\"")));
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_appear_in_no_response_log_line_or_metric() {
    let canary = "canary-pw-7f3a9c2e51";
    let token = "token-b81d44e0aa";
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[conductor]\npower_sync_interval = \"200ms\"\napi_token_env = \"RIVET_TEST_API_TOKEN\"\n",
        ),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"c1\"\ndriver = \"fake-hardware\"\nbmc = { address = \"fake://c1\", username = \"admin\", password_env = \"RIVET_CANARY_PASSWORD\" }\ndesired = { provision = \"active\", power = \"on\" }\n",
        ),
    ]);
    let daemon = LiveDaemon::start(
        fleet.path(),
        &[
            ("RIVET_CANARY_PASSWORD", canary),
            ("RIVET_TEST_API_TOKEN", token),
        ],
    );
    let http = Http::default();
    let url = &daemon.url;
    until("c1 is active", || async {
        http.json(&format!("{url}/v1/nodes/c1")).await["provision_state"] == "active"
    })
    .await;
    let c1 = http.json(&format!("{url}/v1/nodes/c1")).await;
    assert_eq!(c1["driver_info"]["fake_password"], "******");
    for path in [
        "/",
        "/v1",
        "/v1/nodes",
        "/v1/nodes?detail=true",
        "/v1/nodes/c1/states",
        "/v1/nodes/c1/history",
        "/v1/nodes/c1/vendor_passthru/methods",
        "/v1/drivers?detail=true",
        "/v1/drivers/fake-hardware/properties",
        "/healthz",
        "/metrics",
        "/v1/nodes/nope",
    ] {
        http.send("GET", &format!("{url}{path}"), None, None).await;
    }
    let vp = format!("{url}/v1/nodes/c1/vendor_passthru?method=second_method");
    let (status, _, body) = http
        .send("POST", &vp, Some(r#"{"bar":"kazoo"}"#), None)
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "passthru needs the token: {body}"
    );
    let (status, _, _) = http
        .send("POST", &vp, Some(r#"{"bar":"kazoo"}"#), Some("wrong"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = http
        .send("POST", &vp, Some(r#"{"bar":"kazoo"}"#), Some(token))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    until("the call is in the history", || async {
        let h = http.json(&format!("{url}/v1/nodes/c1/history")).await;
        h["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "vendor_passthru.second_method")
    })
    .await;
    http.send("GET", &format!("{url}/metrics"), None, None)
        .await;
    let logs = daemon.stop();
    assert!(
        logs.iter().any(|l| l.contains("\"message\":\"request\"")),
        "requests are logged"
    );
    let seen = http.seen.lock().unwrap();
    assert!(seen.len() > 30);
    for text in seen.iter().chain(logs.iter()) {
        assert!(!text.contains(canary), "the BMC password leaked: {text}");
        assert!(!text.contains(token), "the API token leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rivet_status_and_passthru_talk_to_a_running_daemon() {
    let fleet = slow_fleet("http = \"127.0.0.1:0\"\n");
    let daemon = LiveDaemon::start(fleet.path(), &[]);
    let http = Http::default();
    let url = daemon.url.clone();
    until("`quick` is active and unlocked", || async {
        let n = http.json(&format!("{url}/v1/nodes/quick")).await;
        n["provision_state"] == "active" && n["reservation"] == Value::Null
    })
    .await;
    let rivet = |args: &[&str]| {
        Command::new(assert_cmd::cargo::cargo_bin("rivet"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = rivet(&["status", "--url", &url]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("NODE"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("quick ") && l.contains("active")),
        "{stdout}"
    );

    let out = rivet(&["status", "--url", &url, "quick", "--format", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["node"]["provision_state"], "active");
    assert!(
        doc["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "deploy.deploy")
    );

    // Without --url, the state file is held by the daemon: status asks the
    // address it recorded (`[conductor] http` says port 0 here).
    let dir = fleet.path().to_str().unwrap();
    let out = rivet(&["status", dir]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("asking its API at {url}")),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("quick ")),
        "{stderr}"
    );

    let out = rivet(&[
        "passthru",
        "quick",
        "third_method_sync",
        "--arg",
        "bar=meow",
        "--url",
        &url,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "true");
    let out = rivet(&[
        "passthru",
        "quick",
        "second_method",
        "--arg",
        "bar=kazoo",
        "--url",
        &url,
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("accepted"));
    let out = rivet(&["passthru", "quick", "third_method_sync", "--url", &url]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: Parameter 'bar' not passed to method 'third_method_sync'. (HTTP 400)"
    );
    daemon.stop();
}
