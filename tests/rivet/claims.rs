//! What README and docs/ promise and no other test checked: the documented
//! defaults, graceful stop on SIGINT, the watch debounce, `rivet status`
//! asking a running daemon by itself, shutdown waiting for async passthru
//! calls, and Ironic's page limit of 1,000 nodes.

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rivet::conductor::Conductor;
use rivet::model::fleet::load;
use rivet::store::Store;
use rivet::store::records::Outcome;
use serde_json::Value;
use tower::ServiceExt;

use crate::daemon_process::DaemonProcess;
use crate::support::TempFleet;

const WAIT: Duration = Duration::from_secs(30);

const ONE_NODE: &str = "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\n";

fn reloaded_with(nodes: usize) -> impl Fn(&str) -> bool {
    move |l: &str| {
        l.contains("\"message\":\"declarations reloaded\"")
            && l.contains(&format!("\"nodes\":{nodes}"))
    }
}

#[test]
fn the_documented_conductor_defaults_hold() {
    let fleet = TempFleet::new(&[("nodes/a.toml", ONE_NODE)]);
    let loaded = load(fleet.path());
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    let c = &loaded.fleet.conductor;
    assert!(c.state.ends_with(".rivet/state.redb"), "{:?}", c.state);
    assert_eq!(c.http.to_string(), "127.0.0.1:6385");
    assert_eq!(c.workers, 64);
    assert_eq!(c.power_sync_interval, Duration::from_secs(120));
    assert_eq!(c.power_sync_workers, 128);
    assert_eq!(format!("{:?}", c.drift).to_lowercase(), "enforce");
    assert!(!c.prune);
    assert_eq!(c.ipmi_min_command_interval, Duration::from_secs(5));
    assert_eq!(c.history_max_entries, Some(300));
    assert_eq!(c.history_cleanup_interval, Duration::from_secs(3600));
    assert_eq!(c.operation_timeout, Duration::from_secs(300));
    assert_eq!(c.deploy_step_timeout, Duration::from_secs(1800));
    assert!(c.api_token_env.is_none() && !c.api_token_reads);

    // `history_max_entries = 0` keeps every event.
    let keep_all = TempFleet::new(&[
        ("rivet.toml", "[conductor]\nhistory_max_entries = 0\n"),
        ("nodes/a.toml", ONE_NODE),
    ]);
    assert_eq!(
        load(keep_all.path()).fleet.conductor.history_max_entries,
        None
    );
}

#[test]
fn a_daemon_stops_gracefully_on_sigint() {
    let fleet = TempFleet::new(&[
        ("rivet.toml", "[conductor]\npower_sync_interval = \"1h\"\n"),
        ("nodes/a.toml", ONE_NODE),
    ]);
    let daemon = DaemonProcess::start(fleet.path(), "info", &[], WAIT);
    daemon.wait_for("the first pass", |l| l.contains("converge pass done"), WAIT);
    // `stop_with` requires exit status 0.
    let logs = daemon.stop_with(libc::SIGINT);
    assert!(
        logs.iter().any(|l| l.contains("\"message\":\"stopped\"")),
        "{logs:#?}"
    );
    // The state file is released: another process can open it.
    Store::open(&fleet.path().join(".rivet/state.redb")).unwrap();
}

#[test]
fn writes_in_quick_succession_are_one_reload() {
    let fleet = TempFleet::new(&[
        ("rivet.toml", "[conductor]\npower_sync_interval = \"1h\"\n"),
        ("nodes/a.toml", ONE_NODE),
    ]);
    let daemon = DaemonProcess::start(fleet.path(), "info", &[], WAIT);
    let nodes = fleet.path().join("nodes/a.toml");
    let two = format!("{ONE_NODE}\n[[node]]\nname = \"n2\"\ndriver = \"fake-hardware\"\n");
    // Three writes of the same two-node file, one after the other: well
    // inside the 100 ms debounce.
    for _ in 0..3 {
        std::fs::write(&nodes, &two).unwrap();
    }
    daemon.wait_for("the burst's reload", reloaded_with(2), WAIT);
    // A later, different edit is a reload of its own; once it is seen, every
    // reload the burst caused has been logged before it.
    let three = format!("{two}\n[[node]]\nname = \"n3\"\ndriver = \"fake-hardware\"\n");
    std::fs::write(&nodes, three).unwrap();
    daemon.wait_for("the later reload", reloaded_with(3), WAIT);
    assert_eq!(daemon.count(reloaded_with(2)), 1, "{:#?}", daemon.logs());
    daemon.stop();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rivet(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rivet"))
        .args(args)
        .arg(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn rivet_status_asks_the_running_daemon_by_itself() {
    let port = free_port();
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            &format!("[conductor]\nhttp = \"127.0.0.1:{port}\"\npower_sync_interval = \"1h\"\n"),
        ),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"manageable\" }\n",
        ),
    ]);
    // No --http: the daemon listens where rivet.toml says.
    let daemon = DaemonProcess::start_with(fleet.path(), "info", &[], &[], WAIT);
    daemon.wait_for("the first pass", |l| l.contains("converge pass done"), WAIT);
    let out = rivet(fleet.path(), &["status", "--format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("asking its API at http://127.0.0.1:{port}")),
        "{stderr}"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = doc["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{doc}");
    assert_eq!(nodes[0]["name"], "n1");
    assert_eq!(nodes[0]["provision_state"], "manageable");
    daemon.stop();
}

/// `rivet status DIR` can show another fleet: DIR's daemon serves elsewhere
/// (`--http`) while another fleet's daemon answers at DIR's
/// `[conductor] http`. Status asks the address DIR's daemon recorded, and
/// refuses an answer from a daemon of another fleet.
#[test]
fn rivet_status_never_shows_another_fleet() {
    let configured = free_port();
    let fleet_of = |node: &str| {
        TempFleet::new(&[
            (
                "rivet.toml",
                &format!(
                    "[conductor]\nhttp = \"127.0.0.1:{configured}\"\npower_sync_interval = \"1h\"\n"
                ),
            ),
            (
                "nodes/a.toml",
                &format!(
                    "[[node]]\nname = \"{node}\"\ndriver = \"fake-hardware\"\ndesired = {{ provision = \"manageable\" }}\n"
                ),
            ),
        ])
    };
    let a = fleet_of("a-node");
    let b = fleet_of("b-node");
    let a_daemon =
        DaemonProcess::start_with(a.path(), "info", &[], &["--http", "127.0.0.1:0"], WAIT);
    let a_addr = a_daemon.http_addr();
    let b_daemon = DaemonProcess::start_with(
        b.path(),
        "info",
        &[],
        &["--http", &format!("127.0.0.1:{configured}")],
        WAIT,
    );
    b_daemon.http_addr();
    a_daemon.wait_for("A's first pass", |l| l.contains("converge pass done"), WAIT);

    let out = rivet(a.path(), &["status", "--format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("asking its API at http://{a_addr}")),
        "{stderr}"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, ["a-node"], "{doc}");

    // Without the recorded address, status falls back to `[conductor] http`,
    // where fleet B answers: refused, never B's nodes.
    let recorded = a.path().join(".rivet/state.redb.api");
    assert!(recorded.exists(), "the daemon records its API address");
    std::fs::remove_file(&recorded).unwrap();
    let out = rivet(a.path(), &["status", "--format", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("serves another fleet"), "{stderr}");
    assert!(stderr.contains("rivet status --url"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("b-node"));

    a_daemon.stop();
    b_daemon.stop();
    assert!(!recorded.exists());
}

#[test]
fn shutdown_waits_for_async_passthru_calls_and_records_them() {
    let fleet = TempFleet::new(&[
        ("rivet.toml", "[conductor]\npower_sync_interval = \"1h\"\n"),
        (
            "drivers/slow.toml",
            "[[hardware_type]]\nname = \"slow-fake\"\nbase = \"fake-hardware\"\nsupported_vendor_interfaces = [\"slow\"]\n\n\
             [[interface]]\ntype = \"vendor\"\nname = \"slow\"\nexec = [\"plugins/slow.sh\"]\n\n\
             [[interface.passthru]]\nmethod = \"nap\"\nhttp_methods = [\"POST\"]\nasync = true\nrequire_exclusive_lock = false\ndescription = \"Answers after 1.5 s\"\n",
        ),
        (
            "plugins/slow.sh",
            "#!/bin/sh\ncat >/dev/null\nsleep 1.5\necho '{\"ok\": \"rested\"}'\n",
        ),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"slow-fake\"\n",
        ),
    ]);
    let plugin = fleet.path().join("plugins/slow.sh");
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let daemon = DaemonProcess::start(fleet.path(), "info", &[], WAIT);
    let addr = daemon.http_addr();
    let answer = reqwest::blocking::Client::new()
        .post(format!(
            "http://{addr}/v1/nodes/n1/vendor_passthru?method=nap"
        ))
        .header("X-OpenStack-Ironic-API-Version", "latest")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 202);
    // At once, while the plugin still sleeps.
    daemon.stop();
    let store = Store::open(&fleet.path().join(".rivet/state.redb")).unwrap();
    let history = store.history().unwrap();
    let call = history
        .iter()
        .find(|e| e.node == "n1" && e.action == "vendor_passthru.nap")
        .expect("the call's result was recorded before the daemon stopped");
    assert_eq!(call.outcome, Outcome::Succeeded, "{call:?}");
    assert_eq!(call.detail.as_deref(), Some("\"rested\""));
    assert!(call.duration_ms.unwrap() >= 1000, "{call:?}");
}

#[tokio::test]
async fn a_node_list_page_holds_at_most_1000_nodes() {
    let mut nodes = String::new();
    for i in 0..1001 {
        nodes.push_str(&format!(
            "[[node]]\nname = \"n{i:04}\"\ndriver = \"fake-hardware\"\n\n"
        ));
    }
    let fleet = TempFleet::new(&[("nodes/a.toml", &nodes)]);
    let conductor = Conductor::open(fleet.path()).unwrap();
    let app = rivet::api::router(rivet::daemon::api_state(&conductor).unwrap());
    for uri in ["/v1/nodes", "/v1/nodes?limit=5000"] {
        let response = app
            .clone()
            .oneshot(
                Request::get(uri)
                    .header("X-OpenStack-Ironic-API-Version", "latest")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let doc: Value = serde_json::from_slice(&body).unwrap();
        let page = doc["nodes"].as_array().unwrap();
        assert_eq!(page.len(), 1000, "{uri}");
        assert_eq!(page[999]["name"], "n0999", "{uri}");
        let next = doc["next"].as_str().expect("a next link");
        assert!(next.contains("marker="), "{uri}: {next}");
    }
}
