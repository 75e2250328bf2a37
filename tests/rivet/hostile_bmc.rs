//! Findings from attacking rivet as a hostile BMC or plugin would. Each test
//! is named after its finding. Hostile answers sushy-tools cannot give come
//! from the in-process `fault_server`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use rivet::vocab::PowerState;

use crate::fault_server::{FaultServer, json, trickled};
use crate::redfish::{fault_node, read_power, registry, run, short, system_doc};
use crate::support::{TempFleet, rt};

/// 299 ASCII bytes then a two-byte character across byte 300.
fn multibyte_at_300() -> String {
    format!("{}é and more after it", "a".repeat(299))
}

#[test]
fn a_redfish_error_body_with_a_multibyte_character_at_byte_300_is_an_error_not_a_panic() {
    // Fault server: sushy-tools never answers a non-JSON error body.
    let server = FaultServer::start(|s| match (s.method.as_str(), s.path.as_str()) {
        ("POST", p) if p.contains("Sessions") => Some((404, vec![], String::new())),
        ("POST", _) => Some((400, vec![], multibyte_at_300())),
        ("GET", "/redfish/v1/Systems/2") => Some((400, vec![], multibyte_at_300())),
        _ => json(200, system_doc("Off")),
    });
    let (dir, fleet) = fault_node(&server);
    let node = fleet.node("n1").unwrap();
    let power = registry(&fleet, short()).power(node).unwrap();
    let err = rt()
        .block_on(power.set_power_state(node, PowerState::On, Duration::from_secs(1)))
        .unwrap_err();
    assert!(
        err.message.contains("400") && err.message.ends_with(&format!("{}…", "a".repeat(299))),
        "{err}"
    );
    drop(dir);
    let other_dir = crate::redfish::one_node(
        &format!(
            "redfish+http://127.0.0.1:{}/redfish/v1/Systems/2",
            server.port
        ),
        "",
    );
    let other = crate::redfish::load(other_dir.path());
    let err = read_power(&other, other.node("n1").unwrap()).unwrap_err();
    assert!(err.message.contains('…'), "{err}");
    // The whole run reports the failure and exits non-zero.
    let out = run(other_dir.path(), &["reconcile"], &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("panicked") && text.contains('…'), "{text}");
}

#[test]
fn a_panicking_node_task_fails_the_node_and_the_run_exits_non_zero() {
    let fleet = TempFleet::new(&[(
        "nodes/n.toml",
        "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\nbmc = { address = \"fake://n1?panic=power\" }\ndesired = { power = \"on\" }\n",
    )]);
    let out = run(fleet.path(), &["reconcile"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        !stdout.contains("Converged 0 node(s)") || stdout.contains("failed"),
        "{stdout}"
    );
    assert!(stdout.contains("internal error"), "{stdout}");
    let status = run(fleet.path(), &["status", "--format", "json"], &[]);
    let doc = String::from_utf8_lossy(&status.stdout);
    assert!(
        doc.contains("internal error: injected power panic"),
        "the node's last_error says what happened: {doc}"
    );
}

#[test]
fn a_bmc_redirect_never_sends_the_password_to_another_host() {
    let elsewhere = FaultServer::start(|_| json(200, serde_json::json!({})));
    let target = format!(
        "http://127.0.0.1:{}/redfish/v1/SessionService/Sessions",
        elsewhere.port
    );
    let location = target.clone();
    let server = FaultServer::start(move |s| {
        if s.path.contains("Sessions") {
            Some((
                307,
                vec![("Location".into(), location.clone())],
                String::new(),
            ))
        } else {
            json(200, system_doc("On"))
        }
    });
    let (_dir, fleet) = fault_node(&server);
    let err = read_power(&fleet, fleet.node("n1").unwrap()).unwrap_err();
    assert!(
        elsewhere.seen.lock().unwrap().is_empty(),
        "nothing reached the other host"
    );
    assert!(
        err.message.contains(&target)
            && err.message.contains(&format!("127.0.0.1:{}", server.port)),
        "the error names both URLs: {err}"
    );
    assert!(!err.is_retryable(), "{err:?}");
}

#[test]
fn a_bmc_echoing_the_authorization_header_or_password_is_scrubbed() {
    // Fault server: no emulator echoes credentials back.
    let server = FaultServer::start(|s| {
        let echo = format!(
            "{{\"error\":{{\"message\":\"denied: {} {}\"}}}}",
            s.header("Authorization").unwrap_or(""),
            s.body.replace('"', "\\\"")
        );
        if s.path.contains("Sessions") {
            Some((400, vec![], echo))
        } else {
            Some((403, vec![], echo))
        }
    });
    let (_dir, fleet) = fault_node(&server);
    let err = read_power(&fleet, fleet.node("n1").unwrap()).unwrap_err();
    let basic = base64::engine::general_purpose::STANDARD.encode("admin:pw-canary");
    assert!(err.message.contains("denied"), "{err}");
    assert!(
        !err.message.contains("pw-canary") && !err.message.contains(&basic),
        "{err}"
    );
    assert!(err.message.contains("***"), "{err}");
}

#[test]
fn a_body_larger_than_the_cap_is_refused_not_buffered() {
    let big = "x".repeat(5 << 20);
    let server = FaultServer::start(move |s| {
        if s.path.contains("Sessions") {
            Some((404, vec![], String::new()))
        } else {
            Some((200, vec![], big.clone()))
        }
    });
    let (_dir, fleet) = fault_node(&server);
    let err = read_power(&fleet, fleet.node("n1").unwrap()).unwrap_err();
    assert!(err.message.contains("more than 4 MiB"), "{err}");
}

#[test]
fn a_self_signed_certificate_says_what_to_set() {
    if crate::redfish_bed::skipped() {
        return;
    }
    let sushy = crate::redfish_bed::Sushy::start(crate::redfish_bed::SushyOptions {
        systems: 1,
        tls: true,
        ..crate::redfish_bed::SushyOptions::default()
    });
    let fleet = crate::redfish::one_node(&format!("redfish+https://127.0.0.1:{}", sushy.port), "");
    let fleet = crate::redfish::load(fleet.path());
    let err = read_power(&fleet, fleet.node("n1").unwrap()).unwrap_err();
    assert!(
        err.message.contains("ca_file") && err.message.contains("verify_tls = false"),
        "{err}"
    );
}

/// Logins made and sessions still open on a `session_bmc`.
struct Sessions {
    logins: Arc<AtomicUsize>,
    live: Arc<std::sync::Mutex<std::collections::BTreeSet<usize>>>,
}

/// A Redfish BMC with a SessionService (sushy-tools offers none): every
/// login is a numbered session until it is deleted; systems power as told.
fn session_bmc() -> (FaultServer, Sessions) {
    let logins = Arc::new(AtomicUsize::new(0));
    let live = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let (counter, sessions) = (Arc::clone(&logins), Arc::clone(&live));
    let on = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let server = FaultServer::start(move |s| {
        if s.method == "POST" && s.path.contains("ComputerSystem.Reset") {
            on.store(!s.body.contains("Off"), Ordering::SeqCst);
            return Some((204, vec![], String::new()));
        }
        if s.method == "POST" && s.path.ends_with("SessionService/Sessions") {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            sessions.lock().unwrap().insert(n);
            return Some((
                201,
                vec![
                    ("X-Auth-Token".into(), format!("token-{n}")),
                    (
                        "Location".into(),
                        format!("/redfish/v1/SessionService/Sessions/{n}"),
                    ),
                ],
                "{}".into(),
            ));
        }
        if s.method == "DELETE" {
            let n: usize = s.path.rsplit('/').next().unwrap().parse().unwrap();
            sessions.lock().unwrap().remove(&n);
            return Some((204, vec![], String::new()));
        }
        json(
            200,
            system_doc(if on.load(Ordering::SeqCst) {
                "On"
            } else {
                "Off"
            }),
        )
    });
    (server, Sessions { logins, live })
}

/// Three nodes behind `server`, one system each.
fn three_session_nodes(server: &FaultServer, desired: &str) -> TempFleet {
    let address = format!(
        "redfish+http://127.0.0.1:{}/redfish/v1/Systems/",
        server.port
    );
    let nodes: String = (1..=3)
        .map(|i| {
            format!(
                "[[node]]\nname = \"n{i}\"\ndriver = \"redfish\"\nbmc = {{ address = \"{address}{i}\", username = \"admin\", password_file = \"bmc.pass\" }}\n{desired}"
            )
        })
        .collect();
    TempFleet::new(&[("nodes/n.toml", &nodes), ("bmc.pass", "pw-canary\n")])
}

#[test]
fn redfish_sessions_are_kept_across_sweeps_and_deleted_at_shutdown() {
    let (server, Sessions { logins, live }) = session_bmc();
    let dir = three_session_nodes(&server, "");
    let conductor = rivet::conductor::Conductor::open(dir.path(), &Default::default()).unwrap();
    rt().block_on(async {
        // A pass enrolls the nodes, so that sweeps read them.
        let pass = conductor
            .plan_pass(None, Default::default(), &Default::default())
            .unwrap();
        let stop = rivet::reconcile::Stop::new(tokio_util::sync::CancellationToken::new());
        pass.run(stop).await.unwrap();
        for _ in 0..10 {
            conductor.power_sync().await;
        }
    });
    assert_eq!(
        logins.load(Ordering::SeqCst),
        1,
        "one login for three systems behind one BMC over 10 sweeps"
    );
    assert_eq!(live.lock().unwrap().len(), 1);
    rt().block_on(conductor.close_sessions());
    assert!(live.lock().unwrap().is_empty(), "the session was deleted");
}

#[test]
fn a_plugin_with_secrets_printing_the_password_is_scrubbed() {
    let dir = TempFleet::new(&[
        (
            "nodes/n.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\nbmc = { address = \"fake://n1\", username = \"admin\", password_file = \"bmc.pass\" }\n",
        ),
        ("bmc.pass", "pw-canary\n"),
        (
            "plugin.sh",
            "#!/bin/sh\nread -r request\necho \"seen $request\" >&2\necho '{\"error\": {\"message\": \"bad pw-canary YWRtaW46cHctY2FuYXJ5\"}}'\n",
        ),
    ]);
    let path = dir.path().join("plugin.sh");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let plugin = rivet::driver::exec::ExecPlugin {
        command: vec!["./plugin.sh".into()],
        root: dir.path().to_path_buf(),
        timeout: Duration::from_secs(5),
        needs_secrets: true,
    };
    let fleet = crate::redfish::load(dir.path());
    let err = rt()
        .block_on(plugin.call(
            "vendor.passthru",
            fleet.node("n1").unwrap(),
            serde_json::json!({}),
        ))
        .unwrap_err();
    assert!(
        err.message.contains("bad ***") && err.message.contains("stderr: seen"),
        "{err}"
    );
    assert!(
        !err.message.contains("pw-canary") && !err.message.contains("YWRtaW46cHctY2FuYXJ5"),
        "{err}"
    );
}

#[test]
fn a_bmc_stuck_in_powering_on_or_trickling_its_body_cannot_hold_a_run_past_the_deadline() {
    // Fault server: sushy-tools neither stalls a power change nor trickles.
    // One system stays `PoweringOn` whatever it is asked; the other sends
    // its system document a byte every 200 ms (about 80 s in all, each
    // request within the client's 30 s timeout, retried).
    let stuck = FaultServer::start(|s| match s.method.as_str() {
        "POST" if s.path.contains("Sessions") => Some((404, vec![], String::new())),
        "POST" => Some((204, vec![], String::new())),
        _ => json(200, system_doc("PoweringOn")),
    });
    let slow = FaultServer::start(|s| match s.method.as_str() {
        "POST" if s.path.contains("Sessions") => Some((404, vec![], String::new())),
        _ => trickled(200, system_doc("Off"), 200),
    });
    let node = |name: &str, port: u16| {
        format!(
            "[[node]]\nname = \"{name}\"\ndriver = \"redfish\"\n\
             bmc = {{ address = \"redfish+http://127.0.0.1:{port}/redfish/v1/Systems/1\", username = \"admin\", password_env = \"RIVET_TEST_PW\" }}\n\
             desired = {{ power = \"on\" }}\n"
        )
    };
    let fleet = TempFleet::new(&[
        ("rivet.toml", "[conductor]\noperation_timeout = \"3s\"\n"),
        (
            "nodes/n.toml",
            &format!("{}\n{}", node("stuck", stuck.port), node("slow", slow.port)),
        ),
    ]);
    let started = std::time::Instant::now();
    let out = run(fleet.path(), &["reconcile"], &[("RIVET_TEST_PW", "pw")]);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    // Both nodes run in parallel: one deadline, plus start-up and writes.
    assert!(
        took < Duration::from_secs(3 + 12),
        "took {took:?}: {stdout}"
    );
    let status = run(fleet.path(), &["status", "--format", "json"], &[]);
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let last_error = |name: &str| {
        doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .and_then(|n| n["last_error"].as_str())
            .unwrap_or_else(|| panic!("{name} has a last_error: {doc}"))
            .to_string()
    };
    let stuck_error = last_error("stuck");
    assert!(stuck_error.starts_with("power "), "{stuck_error}");
    let slow_error = last_error("slow");
    assert!(slow_error.starts_with("verify"), "{slow_error}");
    for error in [stuck_error, slow_error] {
        assert!(
            error.contains("did not finish within 3s")
                && error.contains("`[conductor] operation_timeout`"),
            "{error}"
        );
    }
}

#[test]
fn rivet_reconcile_deletes_its_redfish_sessions_before_it_exits() {
    let (server, Sessions { logins, live }) = session_bmc();
    let dir = three_session_nodes(&server, "desired = { power = \"off\" }\n");
    let plan = run(dir.path(), &["reconcile", "--dry-run", "--refresh"], &[]);
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    assert_eq!(logins.load(Ordering::SeqCst), 1, "the refresh logged in");
    assert!(
        live.lock().unwrap().is_empty(),
        "the refresh's session was deleted"
    );
    let out = run(dir.path(), &["reconcile"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        logins.load(Ordering::SeqCst),
        2,
        "one login for the converge of three systems behind one BMC"
    );
    assert!(!server.requests("POST", "ComputerSystem.Reset").is_empty());
    assert!(
        live.lock().unwrap().is_empty(),
        "the converge's session was deleted"
    );
}

#[test]
fn a_deploy_step_that_never_ends_fails_at_deploy_step_timeout() {
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[conductor]\ndeploy_step_timeout = \"2s\"\n\n[hardware]\nenabled_hardware_types = [\"stalling\"]\nenabled_vendor_interfaces = [\"stall\", \"no-vendor\"]\n",
        ),
        (
            "drivers/stall.toml",
            "[[hardware_type]]\nname = \"stalling\"\nbase = \"fake-hardware\"\nsupported_vendor_interfaces = [\"stall\"]\n\n\
             [[interface]]\ntype = \"vendor\"\nname = \"stall\"\nexec = [\"./plugin.sh\"]\ntimeout = \"1h\"\n\n\
             [[interface.deploy_step]]\nstep = \"flash\"\npriority = 0\n",
        ),
        (
            "nodes/n.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"stalling\"\ndesired = { provision = \"active\" }\n\n\
             [[node.deploy_steps]]\ninterface = \"vendor\"\nstep = \"flash\"\npriority = 50\n",
        ),
        // A plugin that takes an hour to answer.
        ("plugin.sh", "#!/bin/sh\ncat >/dev/null\nexec sleep 3600\n"),
    ]);
    std::fs::set_permissions(
        fleet.path().join("plugin.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = run(fleet.path(), &["reconcile"], &[]);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        took < Duration::from_secs(2 + 12),
        "took {took:?}: {stdout}"
    );
    let status = run(fleet.path(), &["status", "--format", "json"], &[]);
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let error = doc["nodes"][0]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("vendor.flash: did not finish within 2s")
            && error.contains("`[conductor] deploy_step_timeout`"),
        "{doc}"
    );
}
