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
fn the_documented_cluster_defaults_hold_and_nodes_take_its_conductor_group() {
    let two_nodes = format!(
        "{ONE_NODE}\n[[node]]\nname = \"n2\"\ndriver = \"fake-hardware\"\nconductor_group = \"Rack-2\"\n"
    );
    // Without [cluster] there is none, and a node's group stays "".
    let plain = TempFleet::new(&[("nodes/a.toml", &two_nodes)]);
    let loaded = load(plain.path());
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    assert!(loaded.fleet.cluster.is_none());
    assert_eq!(loaded.fleet.nodes[0].tenancy.conductor_group, "");

    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[cluster]\netcd = [\"http://10.0.0.1:2379/\"]\n",
        ),
        ("nodes/a.toml", &two_nodes),
    ]);
    let loaded = load(fleet.path());
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    let cluster = loaded.fleet.cluster.as_ref().unwrap();
    assert_eq!(cluster.etcd, ["http://10.0.0.1:2379"]);
    assert_eq!(cluster.lease_ttl, Duration::from_secs(10));
    assert_eq!(cluster.conductor_group, "");
    assert_eq!(cluster.key_prefix, "/rivet/");
    assert_eq!(cluster.advertise_url, None);
    assert!(cluster.ca_file.is_none() && cluster.cert_file.is_none() && cluster.key_file.is_none());
    assert!(cluster.username.is_none() && cluster.password_env.is_none());

    // Every setting, TLS files relative to the fleet directory; a node
    // without a group gets the cluster's, a node's own wins.
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[cluster]\netcd = [\"https://10.0.0.1:2379\", \"https://10.0.0.2:2379\"]\n\
             lease_ttl = \"30s\"\nconductor_group = \"Rack-1\"\nkey_prefix = \"/rivet/site-a/\"\n\
             advertise_url = \"http://10.0.0.5:6385\"\nca_file = \"tls/ca.pem\"\n\
             cert_file = \"tls/client.pem\"\nkey_file = \"tls/client-key.pem\"\n\
             username = \"rivet\"\npassword_env = \"RIVET_ETCD_PASSWORD\"\n",
        ),
        ("tls/ca.pem", "ca\n"),
        ("tls/client.pem", "cert\n"),
        ("tls/client-key.pem", "key\n"),
        ("nodes/a.toml", &two_nodes),
    ]);
    let loaded = load(fleet.path());
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    let cluster = loaded.fleet.cluster.as_ref().unwrap();
    assert_eq!(cluster.etcd.len(), 2);
    assert_eq!(cluster.lease_ttl, Duration::from_secs(30));
    assert_eq!(cluster.conductor_group, "rack-1");
    assert_eq!(cluster.key_prefix, "/rivet/site-a/");
    assert_eq!(
        cluster.advertise_url.as_deref(),
        Some("http://10.0.0.5:6385")
    );
    assert_eq!(cluster.ca_file, Some(fleet.path().join("tls/ca.pem")));
    assert_eq!(cluster.cert_file, Some(fleet.path().join("tls/client.pem")));
    assert_eq!(
        cluster.key_file,
        Some(fleet.path().join("tls/client-key.pem"))
    );
    assert_eq!(cluster.username.as_deref(), Some("rivet"));
    assert_eq!(cluster.password_env.as_deref(), Some("RIVET_ETCD_PASSWORD"));
    let groups: Vec<&str> = loaded
        .fleet
        .nodes
        .iter()
        .map(|n| n.tenancy.conductor_group.as_str())
        .collect();
    assert_eq!(groups, ["rack-1", "rack-2"]);
}

#[test]
fn host_flags_win_over_the_file_and_state_is_relative_to_where_rivet_runs() {
    use rivet::model::fleet::{HostOverrides, load_with};
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[conductor]\nhost = \"from-file\"\nstate = \"db/state.redb\"\nhttp = \"127.0.0.1:7000\"\n\
             [cluster]\netcd = [\"http://10.0.0.1:2379\"]\nadvertise_url = \"http://10.0.0.9:7000\"\n",
        ),
        ("nodes/a.toml", ONE_NODE),
    ]);
    let from_file = load(fleet.path()).fleet;
    assert_eq!(from_file.conductor.host, "from-file");
    assert_eq!(
        from_file.conductor.state,
        fleet.path().join("db/state.redb")
    );
    let overrides = HostOverrides {
        host: Some("prov-2".into()),
        state: Some("here/state.redb".into()),
        http: Some("127.0.0.1:7002".parse().unwrap()),
        advertise_url: Some("http://10.0.0.2:7002".into()),
    };
    let loaded = load_with(fleet.path(), &overrides);
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    let fleet = loaded.fleet;
    assert_eq!(fleet.conductor.host, "prov-2");
    // Not joined to the fleet directory: a path on the command line.
    assert_eq!(fleet.conductor.state, Path::new("here/state.redb"));
    assert_eq!(fleet.conductor.http.to_string(), "127.0.0.1:7002");
    assert_eq!(
        fleet.cluster.unwrap().advertise_url.as_deref(),
        Some("http://10.0.0.2:7002")
    );
}

/// `GET /healthz` of a daemon.
fn healthz(addr: &str) -> Value {
    reqwest::blocking::get(format!("http://{addr}/healthz"))
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn two_daemons_on_one_fleet_directory_each_run_as_their_own_host() {
    let fleet = TempFleet::new(&[
        ("rivet.toml", "[conductor]\npower_sync_interval = \"1h\"\n"),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"manageable\" }\n",
        ),
    ]);
    let hosts = tempfile::tempdir().unwrap();
    let state_of = |host: &str| hosts.path().join(host).join("state.redb");
    let start = |host: &str| {
        let state = state_of(host);
        DaemonProcess::start_with(
            fleet.path(),
            "info",
            &[],
            &[
                "--host",
                host,
                "--state",
                state.to_str().unwrap(),
                "--http",
                "127.0.0.1:0",
            ],
            WAIT,
        )
    };
    let daemons = [("prov-a", start("prov-a")), ("prov-b", start("prov-b"))];
    let mut identities = Vec::new();
    for (host, daemon) in &daemons {
        daemon.wait_for("the first pass", |l| l.contains("converge pass done"), WAIT);
        let health = healthz(&daemon.http_addr());
        assert_eq!(health["host"], *host, "{health}");
        identities.push(health["fleet"].clone());
    }
    assert_ne!(identities[0], identities[1]);
    // A reload keeps each host's flags.
    let more = "[[node]]\nname = \"n2\"\ndriver = \"fake-hardware\"\n\n[[node]]\nname = \"n3\"\ndriver = \"fake-hardware\"\n";
    std::fs::write(fleet.path().join("nodes/b.toml"), more).unwrap();
    for (host, daemon) in &daemons {
        daemon.wait_for("the reload", reloaded_with(3), WAIT);
        assert_eq!(healthz(&daemon.http_addr())["host"], *host);
    }
    for (host, daemon) in daemons {
        daemon.stop();
        let store = Store::open(&state_of(host)).unwrap();
        let record = store
            .node("n1")
            .unwrap()
            .expect("n1 converged in this host's state file");
        assert_eq!(
            record.provision_state,
            rivet::vocab::ProvisionState::Manageable,
            "{host}"
        );
    }
    // Nothing went to the file's default state file.
    assert!(!fleet.path().join(".rivet/state.redb").exists());
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
    let conductor = Conductor::open(fleet.path(), &Default::default()).unwrap();
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
