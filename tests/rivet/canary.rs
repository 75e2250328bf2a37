//! One canary password, set through `password_env`, followed through every
//! command and every place rivet writes: it must never appear, plain or as
//! `base64(user:password)`, in any output, trace log line, API answer,
//! history entry or file under the state directory (read as raw bytes).
//! The fleet has an exec plugin with `needs_secrets` that prints the
//! password to stderr and into its errors, and a Redfish BMC (the fault
//! server: no emulator echoes credentials) that echoes them in its error
//! bodies.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine;

use crate::daemon_process::DaemonProcess;
use crate::fault_server::{FaultServer, json};
use crate::redfish::system_doc;
use crate::support::TempFleet;

const CANARY: &str = "canary-Pw-7f3e9b21";
const ENV: &str = "RIVET_TEST_CANARY_PASSWORD";

const TOOLS: &str = r#"
[[hardware_type]]
name = "tooled"
base = "fake-hardware"
supported_vendor_interfaces = ["tools"]

[[interface]]
type = "vendor"
name = "tools"
exec = ["./plugin.sh"]
needs_secrets = true

[[interface.deploy_step]]
step = "enroll_bmc_user"
priority = 0

[[interface.passthru]]
method = "show_secret"
http_methods = ["POST"]
async = false
require_exclusive_lock = false
description = "Says the password back, as a careless plugin would"
"#;

/// Prints its whole request (password included) and the Basic form of the
/// credentials to stderr; a passthru call fails with both in its message.
const PLUGIN: &str = r#"#!/bin/sh
read -r request
pw=$(printf '%s' "$request" | sed -n 's/.*"password":"\([^"]*\)".*/\1/p')
basic=$(printf 'admin:%s' "$pw" | base64)
echo "basic: $basic password: $pw" >&2
echo "request: $request" >&2
case "$request" in
  *'"vendor.passthru"'*) echo "{\"error\": {\"message\": \"refused $pw ($basic)\"}}" ;;
  *) echo '{"ok": null}' ;;
esac
"#;

fn node_file(bmc_port: u16) -> String {
    format!(
        r#"
[[node]]
name = "n1"
driver = "tooled"
bmc = {{ address = "fake://n1", username = "admin", password_env = "{ENV}" }}
desired = {{ provision = "active", power = "on" }}

[[node.deploy_steps]]
interface = "vendor"
step = "enroll_bmc_user"
priority = 50

[[node]]
name = "rf"
driver = "redfish"
bmc = {{ address = "redfish+http://127.0.0.1:{bmc_port}/redfish/v1/Systems/1", username = "admin", password_env = "{ENV}" }}
desired = {{ power = "on" }}
"#
    )
}

fn rivet(dir: &Path, args: &[&str], after: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rivet"))
        .env("NO_COLOR", "1")
        .env("RIVET_LOG", "trace")
        .env(ENV, CANARY)
        .args(args)
        .arg(dir)
        .args(after)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_canary_password_appears_nowhere_across_every_command() {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{CANARY}"));
    let forms = [CANARY.to_string(), basic.clone()];
    // The BMC echoes whatever credentials it was sent in every error body.
    let server = FaultServer::start(|s| {
        let echo = format!(
            "{{\"error\":{{\"message\":\"denied: {} password {CANARY} body {}\"}}}}",
            s.header("Authorization").unwrap_or(""),
            s.body.replace('"', "'")
        );
        match s.method.as_str() {
            "POST" if s.path.contains("Sessions") => Some((404, vec![], echo)),
            "POST" | "PATCH" => Some((400, vec![], echo)),
            _ => json(200, system_doc("Off")),
        }
    });
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[conductor]\nhttp = \"127.0.0.1:0\"\npower_sync_interval = \"1h\"\n\n\
             [hardware]\nenabled_hardware_types = [\"tooled\", \"redfish\"]\n\
             enabled_vendor_interfaces = [\"tools\", \"no-vendor\", \"redfish\"]\n",
        ),
        ("drivers/tools.toml", TOOLS),
        ("nodes/n.toml", &node_file(server.port)),
        ("plugin.sh", PLUGIN),
    ]);
    let dir = fleet.path();
    std::fs::set_permissions(
        dir.join("plugin.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let mut seen: Vec<(String, String)> = Vec::new();
    let validate = rivet(dir, &["validate"], &[]);
    assert!(validate.status.success(), "{}", text(&validate));
    seen.push(("validate".into(), text(&validate)));
    let plan = rivet(dir, &["reconcile", "--dry-run", "--refresh"], &[]);
    assert!(plan.status.success(), "{}", text(&plan));
    seen.push(("plan".into(), text(&plan)));
    let converge = rivet(dir, &["reconcile"], &[]);
    let said = text(&converge);
    // The Redfish node fails on the echoing BMC; the plugin's node converges.
    assert_eq!(converge.status.code(), Some(1), "{said}");
    assert!(said.contains("vendor.enroll_bmc_user"), "{said}");
    assert!(said.contains("denied"), "the BMC's echo is shown: {said}");
    seen.push(("reconcile".into(), said));

    let daemon =
        DaemonProcess::start_with(dir, "trace", &[(ENV, CANARY)], &[], Duration::from_secs(30));
    let url = format!("http://{}", daemon.http_addr());
    daemon.wait_for(
        "the first pass",
        |l| l.contains("converge pass done"),
        Duration::from_secs(30),
    );
    let http = reqwest::blocking::Client::new();
    for path in [
        "/v1/nodes?detail=true",
        "/v1/nodes/n1",
        "/v1/nodes/rf",
        "/v1/nodes/n1/history",
        "/v1/nodes/rf/history",
        "/v1/nodes/n1/vendor_passthru/methods",
        "/v1/drivers/tooled",
        "/v1/drivers/tooled/properties",
        "/healthz",
        "/metrics",
    ] {
        let answer = http.get(format!("{url}{path}")).send().unwrap();
        let headers = format!("{:?}", answer.headers());
        seen.push((
            format!("GET {path}"),
            format!("{headers}\n{}", answer.text().unwrap()),
        ));
    }
    let rf = http
        .get(format!("{url}/v1/nodes/rf"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        rf.contains("***"),
        "rf's last_error holds the scrubbed echo: {rf}"
    );
    let call = http
        .post(format!(
            "{url}/v1/nodes/n1/vendor_passthru?method=show_secret"
        ))
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    let answer = call.text().unwrap();
    assert!(answer.contains("refused ***"), "{answer}");
    assert!(
        answer.contains("basic: ***") && answer.contains("password: ***"),
        "the plugin's stderr is shown, scrubbed: {answer}"
    );
    seen.push(("API passthru".into(), answer));
    let status = rivet(dir, &["status"], &[]);
    assert!(status.status.success(), "{}", text(&status));
    seen.push(("status via the daemon".into(), text(&status)));
    let status = rivet(dir, &["status", "--format", "json"], &["rf"]);
    seen.push(("status rf via the daemon".into(), text(&status)));
    let passthru = Command::new(env!("CARGO_BIN_EXE_rivet"))
        .env("RIVET_LOG", "trace")
        .args(["passthru", "n1", "show_secret", "--url", &url])
        .output()
        .unwrap();
    assert_eq!(passthru.status.code(), Some(1), "{}", text(&passthru));
    assert!(
        text(&passthru).contains("refused ***"),
        "{}",
        text(&passthru)
    );
    seen.push(("rivet passthru".into(), text(&passthru)));
    let logs = daemon.stop();
    assert!(
        logs.iter().any(|l| l.contains("\"level\":\"TRACE\"")),
        "the daemon logged at trace"
    );
    seen.push(("daemon logs".into(), logs.join("\n")));

    let status = rivet(dir, &["status", "--format", "json"], &["n1"]);
    seen.push(("status n1 from the state file".into(), text(&status)));
    let status = rivet(dir, &["status", "--format", "json"], &["rf"]);
    seen.push(("status rf from the state file".into(), text(&status)));

    for (what, shown) in &seen {
        for form in &forms {
            assert!(
                !shown.contains(form.as_str()),
                "the password (as `{form}`) is in {what}:\n{shown}"
            );
        }
    }
    let mut files = 0;
    for entry in walkdir::WalkDir::new(dir.join(".rivet")) {
        let path = entry.unwrap().into_path();
        if path.is_file() {
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            for form in &forms {
                assert!(
                    !bytes.windows(form.len()).any(|w| w == form.as_bytes()),
                    "the password (as `{form}`) is in {}",
                    path.display()
                );
            }
        }
    }
    assert!(files >= 1, "the state file was read");
    assert!(
        server.requests("POST", "Reset").iter().any(|r| r
            .header("Authorization")
            .is_some_and(|h| h.contains(&basic))),
        "the BMC was sent the credentials it echoed"
    );
}
