//! The Redfish driver against sushy-tools (a real Redfish service) and, for
//! faults it cannot produce, against the in-process fault server.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use rivet::driver::ErrorKind;
use rivet::driver::fake::FakeBmcDir;
use rivet::driver::redfish::Timing;
use rivet::driver::registry::Registry;
use rivet::model::fleet::Fleet;
use rivet::store::Store;
use rivet::store::records::Outcome;
use rivet::vocab::PowerState;
use serde_json::json;

use crate::fault_server::{FaultServer, json};
use crate::redfish_bed::{ImageServer, Sushy, SushyOptions, free_port, skipped, system_id};
use crate::support::{TempFleet, rt};

pub(crate) fn run(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("rivet"));
    cmd.env("NO_COLOR", "1").args(args).arg(dir);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn three_systems(sushy: &Sushy, image: &str) -> TempFleet {
    let address = |i| {
        format!(
            "redfish+http://127.0.0.1:{}/redfish/v1/Systems/{}",
            sushy.port,
            system_id(sushy.port, i)
        )
    };
    let nodes = format!(
        "[[node]]\nname = \"rf1\"\ndriver = \"redfish\"\nboot_interface = \"redfish-virtual-media\"\nbmc = {{ address = \"{}\" }}\ninstance = {{ image = \"{image}\" }}\ndesired = {{ provision = \"active\", power = \"on\", boot_mode = \"uefi\" }}\n\n\
         [[node]]\nname = \"rf2\"\ndriver = \"redfish\"\nbmc = {{ address = \"{}\" }}\ndesired = {{ provision = \"manageable\", power = \"on\", boot_device = \"pxe\" }}\n\n\
         [[node]]\nname = \"rf3\"\ndriver = \"redfish\"\nbmc = {{ address = \"{}\" }}\ndesired = {{ provision = \"manageable\", power = \"off\", boot_device = \"disk\" }}\n",
        address(1),
        address(2),
        address(3)
    );
    TempFleet::new(&[
        (
            "rivet.toml",
            "[hardware]\nenabled_hardware_types = [\"redfish\"]\nenabled_boot_interfaces = [\"pxe\", \"redfish-virtual-media\"]\nenabled_deploy_interfaces = [\"ramdisk\"]\n",
        ),
        ("nodes/rf.toml", &nodes),
    ])
}

#[test]
fn a_fleet_converges_on_sushy_and_the_emulator_agrees() {
    if skipped() {
        return;
    }
    let sushy = Sushy::start(SushyOptions::default());
    let images = ImageServer::start(65_536);
    let fleet = three_systems(&sushy, &images.url("boot.iso"));
    let out = run(fleet.path(), &["reconcile"], &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Read the emulator back, independently of rivet.
    let (s1, s2, s3) = (sushy.system(1), sushy.system(2), sushy.system(3));
    assert_eq!(s1["PowerState"], "On");
    assert_eq!(s1["Boot"]["BootSourceOverrideTarget"], "Cd");
    assert_eq!(s1["Boot"]["BootSourceOverrideMode"], "UEFI");
    assert_eq!(s2["PowerState"], "On");
    assert_eq!(s2["Boot"]["BootSourceOverrideTarget"], "Pxe");
    assert_eq!(s3["PowerState"], "Off");
    assert_eq!(s3["Boot"]["BootSourceOverrideTarget"], "Hdd");
    let cd = sushy.get(
        &format!(
            "/redfish/v1/Systems/{}/VirtualMedia/Cd",
            system_id(sushy.port, 1)
        ),
        None,
    );
    assert_eq!(cd["Inserted"], true);
    assert_eq!(cd["Image"], images.url("boot.iso"));

    // Nothing left to do, even reading the BMCs live.
    let again = run(
        fleet.path(),
        &["reconcile", "--dry-run", "--detailed-exitcode", "--refresh"],
        &[],
    );
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    // Inspection read the NIC from the BMC during `manage`.
    let store_check = Store::open(&fleet.path().join(".rivet/state.redb")).unwrap();
    let rf1 = store_check.node("rf1").unwrap().unwrap();
    assert_eq!(
        rf1.properties.to_map()["macs"],
        json!([format!(
            "52:54:{:02x}:{:02x}:00:01",
            sushy.port >> 8,
            sushy.port & 255
        )])
    );
    drop(store_check);

    // The virtual-media ramdisk deploy walked its operations in plan order,
    // each recorded with the protocol it used.
    let store = Store::open(&fleet.path().join(".rivet/state.redb")).unwrap();
    let deploy: Vec<(String, Option<String>)> = store
        .node_history("rf1", 200)
        .unwrap()
        .into_iter()
        .filter(|e| e.outcome == Outcome::Succeeded)
        .skip_while(|e| e.action != "deploy")
        .take_while(|e| e.action != "deploy done")
        .map(|e| (e.action, e.protocol))
        .collect();
    let redfish = Some("redfish".to_string());
    assert_eq!(
        deploy,
        [
            ("deploy".to_string(), Some("rivet".to_string())),
            ("power off".to_string(), redfish.clone()),
            ("boot.insert_media".to_string(), redfish.clone()),
            ("boot device cdrom".to_string(), redfish.clone()),
            ("power on".to_string(), redfish.clone()),
            ("power on".to_string(), redfish),
        ]
    );
}

pub(crate) fn load(dir: &Path) -> Arc<Fleet> {
    let loaded = rivet::model::fleet::load(dir);
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    Arc::new(loaded.fleet)
}

pub(crate) fn registry(fleet: &Fleet, timing: Timing) -> Registry {
    Registry::with_timing(
        fleet.root.clone(),
        Arc::new(FakeBmcDir::beside(&fleet.conductor.state, false)),
        timing,
    )
}

pub(crate) fn one_node(address: &str, extra: &str) -> TempFleet {
    TempFleet::new(&[(
        "nodes/n.toml",
        &format!(
            "[[node]]\nname = \"n1\"\ndriver = \"redfish\"\nbmc = {{ address = \"{address}\"{extra} }}\n"
        ),
    )])
}

#[test]
fn https_with_a_custom_ca_and_basic_auth_and_refused_credentials() {
    if skipped() {
        return;
    }
    let sushy = Sushy::start(SushyOptions {
        systems: 1,
        tls: true,
        auth: Some(("admin", "s3cret-canary")),
        power_delay: 0,
    });
    let ca = sushy.ca_file();
    let extra = format!(
        ", username = \"admin\", password_env = \"RIVET_TEST_RF_PASSWORD\", ca_file = {:?}",
        ca.to_str().unwrap()
    );
    let fleet = one_node(&format!("redfish+https://127.0.0.1:{}", sushy.port), &extra);
    let fleet_dir = fleet.path();
    let good = run(
        fleet_dir,
        &["reconcile", "--dry-run", "--refresh", "--format", "json"],
        &[("RIVET_TEST_RF_PASSWORD", "s3cret-canary")],
    );
    assert!(good.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&good.stdout).unwrap();
    assert_eq!(
        plan["warnings"],
        json!([]),
        "the BMC was read over HTTPS with the CA and Basic auth"
    );
    assert_eq!(plan["nodes"][0]["observed"]["power_state"], "power off");

    let bad = run(
        fleet_dir,
        &["reconcile"],
        &[("RIVET_TEST_RF_PASSWORD", "wrong-canary")],
    );
    assert_eq!(bad.status.code(), Some(1));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&bad.stdout),
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(
        !text.contains("wrong-canary") && !text.contains("s3cret-canary"),
        "a password leaked: {text}"
    );

    // Without the CA, the certificate is not trusted.
    let untrusted = one_node(
        &format!("redfish+https://127.0.0.1:{}", sushy.port),
        ", username = \"admin\", password_env = \"RIVET_TEST_RF_PASSWORD\"",
    );
    let out = run(
        untrusted.path(),
        &["reconcile", "--dry-run", "--refresh"],
        &[("RIVET_TEST_RF_PASSWORD", "s3cret-canary")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Refused for its certificate: not for credentials or a closed port.
    assert!(
        stdout.contains("cannot read power state") && stdout.contains("certificate"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("refused the credentials") && !stdout.contains("s3cret-canary"),
        "{stdout}"
    );
}

#[test]
fn eject_vmedia_passthru_ejects_the_inserted_image() {
    if skipped() {
        return;
    }
    let sushy = Sushy::start(SushyOptions {
        systems: 1,
        ..SushyOptions::default()
    });
    let images = ImageServer::start(4096);
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[hardware]\nenabled_boot_interfaces = [\"redfish-virtual-media\"]\n",
        ),
        (
            "nodes/n.toml",
            &format!(
                "[[node]]\nname = \"n1\"\ndriver = \"redfish\"\nbmc = {{ address = \"redfish+http://127.0.0.1:{}\" }}\n",
                sushy.port
            ),
        ),
    ]);
    let fleet = load(fleet.path());
    let registry = registry(&fleet, Timing::default());
    let node = fleet.node("n1").unwrap();
    let cd = format!(
        "/redfish/v1/Systems/{}/VirtualMedia/Cd",
        system_id(sushy.port, 1)
    );
    rt().block_on(
        registry
            .boot(node)
            .unwrap()
            .insert_media(node, &images.url("a.iso")),
    )
    .unwrap();
    assert_eq!(sushy.get(&cd, None)["Inserted"], true);
    let answer = rt()
        .block_on(registry.passthru(
            &fleet,
            node,
            "eject_vmedia",
            "POST",
            json!({ "boot_device": "cd" }),
        ))
        .unwrap();
    assert_eq!(answer, json!({ "ejected": ["Cd"] }));
    assert_eq!(sushy.get(&cd, None)["Inserted"], false);
    let bad = rt().block_on(registry.passthru(
        &fleet,
        node,
        "eject_vmedia",
        "POST",
        json!({ "boot_device": "usb" }),
    ));
    assert_eq!(bad.unwrap_err().kind, ErrorKind::Invalid);
}

pub(crate) fn short() -> Timing {
    Timing {
        connect: Duration::from_millis(500),
        request: Duration::from_millis(800),
        attempts: 3,
        first_retry: Duration::from_millis(20),
        poll: Duration::from_millis(50),
    }
}

pub(crate) fn system_doc(power: &str) -> serde_json::Value {
    json!({
        "Id": "1", "PowerState": power,
        "Boot": { "BootSourceOverrideTarget": "Hdd" },
        "Bios": { "@odata.id": "/redfish/v1/Systems/1/Bios" },
        "Actions": { "#ComputerSystem.Reset": { "target": "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
            "ResetType@Redfish.AllowableValues": ["On", "ForceOff"] } }
    })
}

/// One power read through the registry, with the short fault timing.
pub(crate) fn read_power(
    fleet: &Fleet,
    node: &rivet::model::node::Node,
) -> Result<PowerState, rivet::driver::DriverError> {
    rt().block_on(
        registry(fleet, short())
            .power(node)
            .unwrap()
            .get_power_state(node),
    )
}

pub(crate) fn fault_node(server: &FaultServer) -> (TempFleet, Arc<Fleet>) {
    let dir = one_node(
        &format!(
            "redfish+http://127.0.0.1:{}/redfish/v1/Systems/1",
            server.port
        ),
        ", username = \"admin\", password_file = \"bmc.pass\"",
    );
    std::fs::write(dir.path().join("bmc.pass"), "pw-canary\n").unwrap();
    let fleet = load(dir.path());
    (dir, fleet)
}

#[test]
fn server_errors_are_retried_and_then_reported_as_retryable() {
    let server = FaultServer::start(|_| {
        Some((
            500,
            vec![],
            "{\"error\": {\"message\": \"internal trouble\"}}".into(),
        ))
    });
    let (_dir, fleet) = fault_node(&server);
    let err = rt()
        .block_on(
            registry(&fleet, short())
                .power(fleet.node("n1").unwrap())
                .unwrap()
                .get_power_state(fleet.node("n1").unwrap()),
        )
        .unwrap_err();
    assert!(err.is_retryable());
    assert!(
        err.message.contains("500") && err.message.contains("internal trouble"),
        "{err}"
    );
    assert_eq!(server.requests("GET", "/Systems/1").len(), 3, "3 attempts");
}

#[test]
fn a_garbage_body_is_an_error_not_a_crash() {
    let server = FaultServer::start(|s| {
        if s.path.contains("Sessions") {
            Some((404, vec![], String::new()))
        } else {
            Some((200, vec![], "<html>not json".into()))
        }
    });
    let (_dir, fleet) = fault_node(&server);
    let node = fleet.node("n1").unwrap();
    let err = read_power(&fleet, node).unwrap_err();
    assert!(err.message.contains("not JSON"), "{err}");
}

#[test]
fn a_bmc_that_never_answers_times_out_and_a_closed_port_is_unreachable() {
    let server = FaultServer::start(|_| None);
    let (_dir, fleet) = fault_node(&server);
    let node = fleet.node("n1").unwrap();
    let started = Instant::now();
    let err = read_power(&fleet, node).unwrap_err();
    assert!(
        err.is_retryable() && err.message.contains("did not answer in time"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let closed = one_node(&format!("redfish+http://127.0.0.1:{}", free_port()), "");
    let fleet = load(closed.path());
    let node = fleet.node("n1").unwrap();
    let err = read_power(&fleet, node).unwrap_err();
    assert!(
        err.is_retryable() && err.message.contains("cannot be reached"),
        "{err}"
    );
}

#[test]
fn power_that_never_arrives_times_out_and_already_there_is_success() {
    let server = FaultServer::start(|s| match (s.method.as_str(), s.path.as_str()) {
        ("POST", p) if p.contains("Sessions") => Some((404, vec![], String::new())),
        // The BMC accepts the reset and never applies it.
        ("POST", _) => Some((204, vec![], String::new())),
        _ => json(200, system_doc("Off")),
    });
    let (_dir, fleet) = fault_node(&server);
    let node = fleet.node("n1").unwrap();
    let power = registry(&fleet, short()).power(node).unwrap();
    let err = rt()
        .block_on(power.set_power_state(node, PowerState::On, Duration::from_millis(600)))
        .unwrap_err();
    assert!(
        err.is_retryable() && err.message.contains("did not report power on"),
        "{err}"
    );
    let resets = server.requests("POST", "ComputerSystem.Reset");
    assert!(resets[0].body.contains("\"On\""), "{:?}", resets[0]);
    // Already off: success without a request.
    rt().block_on(power.set_power_state(node, PowerState::Off, Duration::from_secs(1)))
        .unwrap();
    assert_eq!(
        server.requests("POST", "ComputerSystem.Reset").len(),
        resets.len()
    );
}

#[test]
fn sessions_are_used_when_offered_and_renewed_after_a_401() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let logins = Arc::new(AtomicUsize::new(0));
    let expired = Arc::new(AtomicBool::new(false));
    let (counter, first_expired) = (Arc::clone(&logins), Arc::clone(&expired));
    // The server only answers; what it saw is checked by the test below.
    let server = FaultServer::start(move |s| {
        if s.method == "POST" && s.path.contains("SessionService/Sessions") {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            return Some((
                201,
                vec![("X-Auth-Token".into(), format!("token-{n}"))],
                "{}".into(),
            ));
        }
        match s.header("X-Auth-Token") {
            // The first session works until the test lets it expire.
            Some("token-1") if !first_expired.load(Ordering::SeqCst) => json(200, system_doc("On")),
            Some("token-2") => json(200, system_doc("On")),
            _ => Some((401, vec![], String::new())),
        }
    });
    let (_dir, fleet) = fault_node(&server);
    let node = fleet.node("n1").unwrap();
    // One registry, so one client and its session across both reads.
    let registry = registry(&fleet, short());
    let power = registry.power(node).unwrap();
    assert_eq!(
        rt().block_on(power.get_power_state(node)).unwrap(),
        PowerState::On
    );
    assert_eq!(logins.load(Ordering::SeqCst), 1, "logged in once");
    let token_1_answered = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.header("X-Auth-Token") == Some("token-1"))
        .count();
    assert!(token_1_answered >= 1, "the first session was used");

    expired.store(true, Ordering::SeqCst);
    assert_eq!(
        rt().block_on(power.get_power_state(node)).unwrap(),
        PowerState::On
    );
    assert_eq!(
        logins.load(Ordering::SeqCst),
        2,
        "logged in again after the 401, and only then"
    );
    let seen = server.seen.lock().unwrap();
    let login_bodies: Vec<&str> = seen
        .iter()
        .filter(|s| s.method == "POST" && s.path.contains("SessionService/Sessions"))
        .map(|s| s.body.as_str())
        .collect();
    assert_eq!(login_bodies.len(), 2);
    for body in login_bodies {
        assert!(
            body.contains("\"UserName\":\"admin\"") && body.contains("pw-canary"),
            "a login without the declared credentials: {body}"
        );
    }
    assert!(
        seen.iter()
            .any(|s| s.header("X-Auth-Token") == Some("token-2")),
        "the new session was used"
    );
    assert!(
        seen.iter().all(|s| s.header("Authorization").is_none()),
        "no Basic auth once sessions work"
    );
}

#[test]
fn bios_settings_are_patched_into_the_pending_settings() {
    let server = FaultServer::start(|s| match (s.method.as_str(), s.path.as_str()) {
        ("POST", _) => Some((404, vec![], String::new())),
        ("GET", "/redfish/v1/Systems/1/Bios") => json(
            200,
            json!({ "Attributes": { "LogicalProc": "Disabled" },
            "@Redfish.Settings": { "SettingsObject": { "@odata.id": "/redfish/v1/Systems/1/Bios/Settings" } } }),
        ),
        ("PATCH", "/redfish/v1/Systems/1/Bios/Settings") => Some((204, vec![], String::new())),
        _ => json(200, system_doc("On")),
    });
    let (_dir, fleet) = fault_node(&server);
    let node = fleet.node("n1").unwrap();
    let args = [(
        "settings".to_string(),
        json!([{ "name": "LogicalProc", "value": "Enabled" }]),
    )]
    .into();
    rt().block_on(registry(&fleet, short()).run_step(
        &fleet,
        node,
        rivet::vocab::InterfaceType::Bios,
        "apply_configuration",
        &args,
    ))
    .unwrap();
    let patches = server.requests("PATCH", "/Bios/Settings");
    assert_eq!(patches.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&patches[0].body).unwrap();
    assert_eq!(body, json!({ "Attributes": { "LogicalProc": "Enabled" } }));
}

#[test]
fn power_changes_use_only_the_reset_types_the_system_allows() {
    use std::sync::Mutex;
    // A system that allows no ForceOff and no On: only GracefulShutdown
    // and ForceOn. Its power follows the last reset it was sent.
    let power = Arc::new(Mutex::new("On".to_string()));
    let state = Arc::clone(&power);
    let server = FaultServer::start(move |s| {
        if s.method == "POST" && s.path.ends_with("ComputerSystem.Reset") {
            let after = if s.body.contains("GracefulShutdown") || s.body.contains("ForceOff") {
                "Off"
            } else {
                "On"
            };
            *state.lock().unwrap() = after.to_string();
            return Some((204, vec![], String::new()));
        }
        let mut doc = system_doc(&state.lock().unwrap());
        doc["Actions"]["#ComputerSystem.Reset"]["ResetType@Redfish.AllowableValues"] =
            json!(["GracefulShutdown", "ForceOn"]);
        json(200, doc)
    });
    let (_dir, fleet) = fault_node(&server);
    let node = fleet.node("n1").unwrap();
    let registry = registry(&fleet, short());
    let driver = registry.power(node).unwrap();
    rt().block_on(driver.set_power_state(node, PowerState::Off, Duration::from_secs(10)))
        .unwrap();
    assert_eq!(*power.lock().unwrap(), "Off");
    rt().block_on(driver.set_power_state(node, PowerState::On, Duration::from_secs(10)))
        .unwrap();
    assert_eq!(*power.lock().unwrap(), "On");
    let resets: Vec<String> = server
        .requests("POST", "ComputerSystem.Reset")
        .into_iter()
        .map(|s| {
            let body: serde_json::Value = serde_json::from_str(&s.body).unwrap();
            body["ResetType"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(!resets.is_empty());
    assert!(
        resets
            .iter()
            .all(|r| r == "GracefulShutdown" || r == "ForceOn"),
        "a reset type the system does not allow was sent: {resets:?}"
    );
    assert!(
        resets.contains(&"GracefulShutdown".to_string()) && resets.contains(&"ForceOn".to_string())
    );
}

#[test]
fn at_most_eight_requests_are_in_flight_per_bmc_endpoint() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const SYSTEMS: usize = 20;
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (in_flight, peak) = (Arc::clone(&now), Arc::clone(&most));
    // Every answer takes 150 ms, so requests pile up if nothing holds them back.
    let server = FaultServer::start(move |_| {
        let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(n, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(150));
        in_flight.fetch_sub(1, Ordering::SeqCst);
        json(200, system_doc("On"))
    });
    let mut nodes = String::new();
    for i in 1..=SYSTEMS {
        nodes.push_str(&format!(
            "[[node]]\nname = \"n{i}\"\ndriver = \"redfish\"\nbmc = {{ address = \"redfish+http://127.0.0.1:{}/redfish/v1/Systems/{i}\" }}\n\n",
            server.port
        ));
    }
    let dir = TempFleet::new(&[("nodes/n.toml", &nodes)]);
    let fleet = load(dir.path());
    // Default timing: no request times out and is sent again while the
    // server still holds the first (which would count twice).
    let registry = Arc::new(registry(&fleet, Timing::default()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let reads: Vec<_> = fleet
        .nodes
        .iter()
        .map(|node| {
            let (registry, node) = (Arc::clone(&registry), Arc::clone(node));
            runtime.spawn(async move { registry.power(&node)?.get_power_state(&node).await })
        })
        .collect();
    for read in reads {
        assert_eq!(runtime.block_on(read).unwrap().unwrap(), PowerState::On);
    }
    let peak = most.load(Ordering::SeqCst);
    assert!(peak <= 8, "{peak} requests were in flight at once");
    assert!(peak >= 4, "the reads ran one by one ({peak} at once)");
    assert!(server.seen.lock().unwrap().len() >= SYSTEMS);
}
