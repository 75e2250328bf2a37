//! The exec-plugin runner's contract: one JSON request in, one JSON answer
//! out; errors by kind; stderr kept; non-zero exit fatal; a timeout kills.

use std::path::Path;
use std::time::{Duration, Instant};

use rivet::driver::ErrorKind;
use rivet::driver::exec::ExecPlugin;
use serde_json::json;

use crate::support::{TempFleet, root, rt};

fn node(dir: &Path) -> rivet::model::node::Node {
    let loaded = rivet::model::fleet::load(dir);
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    (*loaded.fleet.nodes[0]).clone()
}

fn script(body: &str) -> (TempFleet, ExecPlugin) {
    let fleet = TempFleet::new(&[
        (
            "nodes/n.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\n",
        ),
        ("plugin.sh", body),
    ]);
    let path = fleet.path().join("plugin.sh");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let plugin = ExecPlugin {
        command: vec!["./plugin.sh".into()],
        root: fleet.path().to_path_buf(),
        timeout: Duration::from_millis(1500),
        needs_secrets: false,
    };
    (fleet, plugin)
}

#[test]
fn the_example_plugin_answers_its_methods_and_steps() {
    let fleet = TempFleet::new(&[(
        "nodes/n.toml",
        "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\n",
    )]);
    let n = node(fleet.path());
    let plugin = ExecPlugin {
        command: vec![
            root()
                .join("examples/quickstart/plugins/acme-vendor.py")
                .to_string_lossy()
                .into(),
        ],
        root: fleet.path().to_path_buf(),
        timeout: Duration::from_secs(10),
        needs_secrets: false,
    };
    let info = rt()
        .block_on(plugin.call(
            "vendor.passthru",
            &n,
            json!({"method": "firmware_info", "args": {}}),
        ))
        .unwrap();
    assert_eq!(info["node"], "n1");
    let step = rt()
        .block_on(plugin.call(
            "vendor.deploy_step",
            &n,
            json!({"step": "apply_profile", "args": {"profile": "throughput"}}),
        ))
        .unwrap();
    assert_eq!(step, json!({"profile": "throughput", "applied": true}));
    let bad = rt()
        .block_on(plugin.call(
            "vendor.deploy_step",
            &n,
            json!({"step": "apply_profile", "args": {"profile": "turbo"}}),
        ))
        .unwrap_err();
    assert_eq!(bad.kind, ErrorKind::Invalid);
    assert!(bad.message.contains("unknown profile 'turbo'"), "{bad}");
}

#[test]
fn the_request_carries_the_node_without_secrets() {
    let (fleet, plugin) = script("#!/bin/sh\ncat > request.json\necho '{\"ok\": 1}'\n");
    let n = node(fleet.path());
    assert_eq!(
        rt().block_on(plugin.call("power.get", &n, json!({})))
            .unwrap(),
        json!(1)
    );
    let request: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fleet.path().join("request.json")).unwrap())
            .unwrap();
    assert_eq!(request["version"], 1);
    assert_eq!(request["call"], "power.get");
    assert_eq!(request["node"]["name"], "n1");
    assert_eq!(request["node"]["interfaces"]["power"], "fake");
    assert!(request["node"]["bmc"].get("password").is_none());
}

#[test]
fn error_kinds_stderr_and_exit_status_are_reported() {
    let (fleet, retry) = script(
        "#!/bin/sh\ncat >/dev/null\necho 'bmc busy' >&2\necho '{\"error\": {\"kind\": \"retryable\", \"message\": \"try later\"}}'\n",
    );
    let n = node(fleet.path());
    let e = rt().block_on(retry.call("x.y", &n, json!({}))).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Retryable);
    assert!(
        e.message.contains("try later") && e.message.contains("bmc busy"),
        "{e}"
    );

    let (fleet, crash) = script("#!/bin/sh\ncat >/dev/null\necho 'Traceback: boom' >&2\nexit 3\n");
    let n = node(fleet.path());
    let e = rt().block_on(crash.call("x.y", &n, json!({}))).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Fatal);
    assert!(
        e.message.contains("exit status: 3") && e.message.contains("Traceback: boom"),
        "{e}"
    );

    let (fleet, garbage) = script("#!/bin/sh\ncat >/dev/null\necho 'hello'\n");
    let n = node(fleet.path());
    let e = rt()
        .block_on(garbage.call("x.y", &n, json!({})))
        .unwrap_err();
    assert!(e.message.contains("not JSON"), "{e}");

    let (fleet, neither) = script("#!/bin/sh\ncat >/dev/null\necho '{\"result\": 1}'\n");
    let n = node(fleet.path());
    let e = rt()
        .block_on(neither.call("x.y", &n, json!({})))
        .unwrap_err();
    assert!(e.message.contains("neither `ok` nor `error`"), "{e}");
}

#[test]
fn a_plugin_that_does_not_answer_in_time_is_killed() {
    let (fleet, slow) = script("#!/bin/sh\necho $$ > pid\nexec sleep 30\n");
    let n = node(fleet.path());
    let started = Instant::now();
    let e = rt().block_on(slow.call("x.y", &n, json!({}))).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Retryable);
    assert!(
        e.message
            .contains("did not answer within 1s 500ms and was killed"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let pid: i32 = std::fs::read_to_string(fleet.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    // SAFETY: kill(pid, 0) only asks whether the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(
            Instant::now() < deadline,
            "the plugin process survived its timeout"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plugin that declares `needs_secrets` receives the BMC password on its
/// stdin, through a real `rivet reconcile`; rivet's output, history and state
/// file never hold it.
#[test]
fn a_plugin_that_needs_secrets_gets_the_password_and_nothing_else_does() {
    let canary = "canary-Pa55word-4c1d";
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[hardware]\nenabled_hardware_types = [\"tooled\"]\nenabled_vendor_interfaces = [\"tools\", \"no-vendor\"]\n",
        ),
        (
            "drivers/tools.toml",
            r#"
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
"#,
        ),
        (
            "nodes/n.toml",
            r#"
[[node]]
name = "n1"
driver = "tooled"
bmc = { address = "fake://n1", username = "admin", password_env = "RIVET_TEST_PLUGIN_PASSWORD" }
desired = { provision = "active", power = "on" }

[[node.deploy_steps]]
interface = "vendor"
step = "enroll_bmc_user"
priority = 50
"#,
        ),
        (
            "plugin.sh",
            "#!/bin/sh\ncat > \"seen-$$.json\"\necho '{\"ok\": null}'\n",
        ),
    ]);
    let script = fleet.path().join("plugin.sh");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let rivet = |args: &[&str], node: &[&str]| {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("rivet"))
            .env("RIVET_TEST_PLUGIN_PASSWORD", canary)
            .env("RIVET_LOG", "debug")
            .args(args)
            .arg(fleet.path())
            .args(node)
            .output()
            .unwrap()
    };
    let converge = rivet(&["reconcile"], &[]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&converge.stdout),
        String::from_utf8_lossy(&converge.stderr)
    );
    assert!(converge.status.success(), "{said}");
    assert!(said.contains("vendor.enroll_bmc_user"), "{said}");

    let requests: Vec<serde_json::Value> = std::fs::read_dir(fleet.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seen-")
        })
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect();
    assert_eq!(requests.len(), 1, "one deploy step, one plugin call");
    assert_eq!(requests[0]["call"], "vendor.deploy_step");
    assert_eq!(requests[0]["node"]["bmc"]["username"], "admin");
    assert_eq!(requests[0]["node"]["bmc"]["password"], canary);

    let status = rivet(&["status", "--format", "json"], &["n1"]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(shown.contains("enroll_bmc_user"), "{shown}");
    for (what, text) in [("output", said.as_str()), ("status", &*shown)] {
        assert!(
            !text.contains(canary),
            "the password leaked into rivet's {what}"
        );
    }
    for entry in walkdir::WalkDir::new(fleet.path().join(".rivet")) {
        let path = entry.unwrap().into_path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "the password is in {}",
                path.display()
            );
        }
    }
}
