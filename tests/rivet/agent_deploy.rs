//! Ironic's `direct` deploy end to end, with the real ironic-python-agent
//! 13.0.0 as each node's booted deploy ramdisk (`tests/testbeds/ipa/`):
//! fake-hardware power and boot, the boot simulator (`RamdiskBoots`)
//! starting a bed when rivet powers a node on into its network boot, the
//! agent looking itself up and heartbeating at rivet's agent channel, and
//! rivet driving its commands until the image is on the bed's loop device.
//!
//! They need root, loop devices and `.venv-ipa` (`scripts/test` installs
//! it); without them they fail with how to get them, unless
//! `RIVET_SKIP_EMULATORS=1` is set: then they say they were skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rivet::store::Store;
use rivet::store::records::{Event, NodeRecord, Outcome};

use crate::daemon_process::DaemonProcess;
use crate::image_server::ImageServer;
use crate::ipa_bed::{self, BedSettings, Image, Images};
use crate::ramdisk_boots::{RamdiskBoots, SimNode};
use crate::support::TempFleet;

const CANARY: &str = "canary-Pw-agent-5d1c0e77";
const CANARY_ENV: &str = "RIVET_TEST_AGENT_CANARY";

fn bed_can_run(test: &str) -> bool {
    if crate::support::skip_emulator_test(test) {
        return false;
    }
    ipa_bed::assert_installed();
    true
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `direct` node of a test fleet.
struct DirectNode {
    name: &'static str,
    mac: &'static str,
    image_url: String,
    disk_format: &'static str,
    checksum: String,
    /// More TOML for the node, after its ports.
    extra: &'static str,
}

fn rivet_toml(port: u16, callback_timeout: &str) -> String {
    format!(
        r#"[conductor]
http = "127.0.0.1:{port}"
fake_bmc_dir = "fake-bmc"
deploy_callback_timeout = "{callback_timeout}"
agent_heartbeat_timeout = "6s"

[hardware]
enabled_deploy_interfaces = ["direct", "fake"]
"#
    )
}

fn node_toml(node: &DirectNode) -> String {
    format!(
        r#"[[node]]
name = "{name}"
driver = "fake-hardware"
deploy_interface = "direct"
bmc = {{ address = "fake://{name}", username = "admin", password_env = "{CANARY_ENV}" }}
deploy_kernel = "http://127.0.0.1:1/ipa.kernel"
deploy_ramdisk = "http://127.0.0.1:1/ipa.initramfs"
instance = {{ image = "{image}", checksum = "{checksum}", disk_format = "{format}" }}
desired = {{ provision = "active" }}

[[node.ports]]
address = "{mac}"
{extra}"#,
        name = node.name,
        image = node.image_url,
        checksum = node.checksum,
        format = node.disk_format,
        mac = node.mac,
        extra = node.extra,
    )
}

/// A fleet of `direct` nodes, the images, their server and the boot
/// simulator, with rivet's API on a port of its own.
///
/// Fields drop in order: the ramdisks stop before their run roots (in the
/// fleet directory) are removed.
struct Bed {
    boots: Option<RamdiskBoots>,
    fleet: TempFleet,
    port: u16,
    images: Images,
    server: ImageServer,
    _images_dir: tempfile::TempDir,
}

impl Bed {
    fn new(
        nodes: impl Fn(&Images, &ImageServer) -> Vec<DirectNode>,
        callback_timeout: &str,
        booted: &[&str],
    ) -> Self {
        Self::paced(nodes, callback_timeout, booted, Duration::ZERO)
    }

    /// With images served `pace` apart per 64 KiB.
    fn paced(
        nodes: impl Fn(&Images, &ImageServer) -> Vec<DirectNode>,
        callback_timeout: &str,
        booted: &[&str],
        pace: Duration,
    ) -> Self {
        let images_dir = tempfile::tempdir().unwrap();
        let images = Images::make(images_dir.path());
        let server = ImageServer::serve_paced(&images.dir, pace);
        let port = free_port();
        let nodes = nodes(&images, &server);
        let toml = rivet_toml(port, callback_timeout);
        let text: String = nodes.iter().map(node_toml).collect::<Vec<_>>().join("\n");
        let fleet = TempFleet::new(&[
            ("rivet.toml", toml.as_str()),
            ("nodes/direct.toml", text.as_str()),
        ]);
        let sims = nodes
            .iter()
            .filter(|n| booted.contains(&n.name))
            .map(|n| SimNode {
                node_name: n.name.to_string(),
                bmc_host: n.name.to_string(),
                mac: n.mac.to_string(),
                run_root: fleet.path().join("beds").join(n.name),
            })
            .collect();
        let settings = BedSettings {
            lookup_timeout: Some(Duration::from_secs(90)),
            power_off_delay: Some(Duration::from_millis(500)),
            ..BedSettings::default()
        };
        std::fs::create_dir_all(fleet.path().join("fake-bmc")).unwrap();
        let boots = RamdiskBoots::watch_with(
            &fleet.path().join("fake-bmc"),
            &format!("http://127.0.0.1:{port}"),
            sims,
            settings,
        );
        Self {
            fleet,
            port,
            images,
            server,
            boots: Some(boots),
            _images_dir: images_dir,
        }
    }

    fn dir(&self) -> &Path {
        self.fleet.path()
    }

    fn boots(&self) -> &RamdiskBoots {
        self.boots.as_ref().unwrap()
    }

    fn rivet(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rivet"));
        command
            .current_dir(self.dir())
            .env(CANARY_ENV, CANARY)
            .env("RIVET_LOG", "rivet=debug")
            .env("NO_COLOR", "1");
        command
    }

    fn reconcile(&self) -> Output {
        self.rivet()
            .arg("reconcile")
            .arg(self.dir())
            .output()
            .unwrap()
    }

    fn spawn_reconcile(&self) -> Child {
        self.rivet()
            .arg("reconcile")
            .arg(self.dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// rivet's API, where the ramdisks look themselves up.
    fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A node's document from a daemon serving the API.
    fn api_node(&self, name: &str) -> serde_json::Value {
        reqwest::blocking::get(format!("{}/v1/nodes/{name}", self.api()))
            .unwrap()
            .json()
            .unwrap()
    }

    /// `rivet daemon` on the fleet with `args` (and the canary password).
    fn daemon(&self, log: &str, args: &[&str]) -> DaemonProcess {
        DaemonProcess::start_with(
            self.dir(),
            log,
            &[(CANARY_ENV, CANARY)],
            args,
            Duration::from_secs(30),
        )
    }

    fn state(&self) -> PathBuf {
        self.dir().join(".rivet/state.redb")
    }

    fn record(&self, node: &str) -> NodeRecord {
        Store::open(&self.state())
            .unwrap()
            .node(node)
            .unwrap()
            .unwrap()
    }

    fn history(&self, node: &str) -> Vec<Event> {
        Store::open(&self.state())
            .unwrap()
            .history()
            .unwrap()
            .into_iter()
            .filter(|e| e.node == node)
            .collect()
    }

    /// The agent log of a node's last ramdisk; empty before one is up.
    fn agent_log(&self, node: &str) -> String {
        self.boots()
            .last_bed(node)
            .and_then(|bed| std::fs::read_to_string(&bed.log).ok())
            .unwrap_or_default()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn image_bytes(image: &Image) -> Vec<u8> {
    std::fs::read(&image.path).unwrap()
}

/// The disk holds `image` from its first byte, then zeros.
fn assert_disk_holds(disk: &[u8], image: &[u8], node: &str) {
    assert!(
        disk.len() >= image.len(),
        "{node}: disk smaller than the image"
    );
    assert!(
        disk[..image.len()] == *image,
        "{node}: the disk does not start with the image"
    );
    assert!(
        disk[image.len()..].iter().all(|b| *b == 0),
        "{node}: the disk has bytes beyond the image"
    );
}

/// How often the agent ran the write_image step in its log.
fn write_image_runs(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("execute_deploy_step") && l.contains("Executing command"))
        .count()
}

fn succeeded(history: &[Event], action: &str) -> Vec<Event> {
    history
        .iter()
        .filter(|e| e.action == action && e.outcome == Outcome::Succeeded)
        .cloned()
        .collect()
}

/// Wait until `done` holds, polling every 50 ms, failing after `within`.
fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fleet of one raw node, `name` with `mac`, whose image is the MBR one
/// and whose checksum is `checksum`'s.
fn one_raw_node(
    name: &'static str,
    mac: &'static str,
    checksum: fn(&Images) -> &Image,
) -> impl Fn(&Images, &ImageServer) -> Vec<DirectNode> {
    move |images, server| {
        vec![DirectNode {
            name,
            mac,
            image_url: server.url(images.mbr_raw.name()),
            disk_format: "raw",
            checksum: format!("sha256:{}", checksum(images).sha256),
            extra: "",
        }]
    }
}

fn three_nodes(images: &Images, server: &ImageServer) -> Vec<DirectNode> {
    vec![
        DirectNode {
            name: "mbr",
            mac: "52:54:00:d1:00:01",
            image_url: server.url(images.mbr_raw.name()),
            disk_format: "raw",
            checksum: format!("sha256:{}", images.mbr_raw.sha256),
            extra: "",
        },
        DirectNode {
            name: "gpt",
            mac: "52:54:00:d1:00:02",
            image_url: server.url(images.gpt_raw.name()),
            disk_format: "raw",
            checksum: format!("sha256:{}", images.gpt_raw.sha256.to_uppercase()),
            extra: "",
        },
        DirectNode {
            name: "qcow",
            mac: "52:54:00:d1:00:03",
            image_url: server.url(images.mbr_qcow2.name()),
            disk_format: "qcow2",
            checksum: format!("sha256:{}", images.mbr_qcow2.sha256),
            extra: "",
        },
    ]
}

/// Every file under `dir`, as raw bytes, has none of `needles`.
fn assert_no_file_holds(dir: &Path, needles: &[&str]) {
    for entry in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
    {
        if !entry.file_type().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds a secret",
                entry.path().display()
            );
        }
    }
}

#[test]
fn three_direct_nodes_converge_to_active_with_their_images_on_disk() {
    if !bed_can_run("an ironic-python-agent deploy test") {
        return;
    }
    let bed = Bed::new(three_nodes, "120s", &["mbr", "gpt", "qcow"]);
    let plan = bed
        .rivet()
        .args(["reconcile", "--dry-run"])
        .arg(bed.dir())
        .output()
        .unwrap();
    let plan_text = text(&plan.stdout);
    assert!(plan.status.success(), "{plan_text}{}", text(&plan.stderr));
    let write = plan_text.find("deploy.write_image").expect(&plan_text);
    let prepare = plan_text
        .find("deploy.prepare_instance_boot")
        .expect(&plan_text);
    assert!(
        write < prepare,
        "the agent's step runs before prepare_instance_boot: {plan_text}"
    );
    assert!(
        plan_text.contains("agent"),
        "the agent's step is marked: {plan_text}"
    );

    let started = Instant::now();
    let out = bed.reconcile();
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "reconcile failed:\n{}\n{stderr}",
        text(&out.stdout)
    );
    eprintln!("three direct deploys took {:?}", started.elapsed());

    for node in ["mbr", "gpt", "qcow"] {
        let record = bed.record(node);
        assert_eq!(
            record.provision_state.as_str(),
            "active",
            "{node}: {record:?}"
        );
        assert_eq!(record.last_error, None);
        let history = bed.history(node);
        for action in [
            "wait call-back",
            "deploy.write_image (agent)",
            "agent standby.get_partition_uuids",
            "agent standby.power_off",
        ] {
            let done = succeeded(&history, action);
            assert_eq!(done.len(), 1, "{node}: {action} once in {history:#?}");
            assert!(
                done[0].duration_ms.is_some(),
                "{node}: {action} has a duration"
            );
        }
        assert_eq!(
            write_image_runs(&bed.agent_log(node)),
            1,
            "{node}: write_image ran once"
        );
        // The ramdisk booted once, then the instance from disk (the
        // simulator may still be reading the BMC's last calls).
        let boots = bed
            .boots()
            .wait_for(node, "the instance boot", Duration::from_secs(30), |b| {
                b.len() >= 2 && b[0].ended.is_some()
            });
        assert_eq!(boots.len(), 2, "{node}: {boots:#?}");
        assert!(boots[0].bed().is_some());
        assert_eq!(boots[1].device, Some(rivet::vocab::BootDevice::Disk));
    }
    let mbr = image_bytes(&bed.images.mbr_raw);
    assert_disk_holds(&bed.boots().disk("mbr").unwrap(), &mbr, "mbr");
    // qcow2 is converted: the disk holds the raw image it came from.
    assert_disk_holds(&bed.boots().disk("qcow").unwrap(), &mbr, "qcow");
    // GPT: the agent moves the backup table to the disk's end; the
    // partition table entries and the partition are the image's.
    let gpt = image_bytes(&bed.images.gpt_raw);
    let disk = bed.boots().disk("gpt").unwrap();
    let (from, to) = (2 * 512, gpt.len() - 33 * 512);
    assert!(
        disk[from..to] == gpt[from..to],
        "gpt: the partition content is the image's"
    );
    let uuids = succeeded(&bed.history("mbr"), "agent standby.get_partition_uuids");
    assert!(
        uuids[0]
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("0x52495654"),
        "the MBR disk id is read back: {:?}",
        uuids[0].detail
    );
    for image in [
        &bed.images.mbr_raw,
        &bed.images.gpt_raw,
        &bed.images.mbr_qcow2,
    ] {
        assert_eq!(
            bed.server.downloads(image.name()),
            1,
            "{} downloaded once",
            image.name()
        );
    }

    let check = bed
        .rivet()
        .args(["reconcile", "--dry-run", "--detailed-exitcode"])
        .arg(bed.dir())
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    // The agent logs the requests it served, rivet's command URLs with
    // their token among them: each boot's token, which rivet never shows.
    let tokens: Vec<String> = ["mbr", "gpt", "qcow"]
        .iter()
        .filter_map(|node| agent_token_in(&bed.agent_log(node)))
        .collect();
    assert_eq!(tokens.len(), 3, "each agent's log names its token");
    let mut secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
    secrets.push(CANARY);
    let said = format!("{}{stderr}", text(&out.stdout));
    for secret in &secrets {
        assert!(!said.contains(secret), "rivet's output holds a secret");
    }
    assert_no_file_holds(&bed.dir().join(".rivet"), &secrets);
    assert_no_file_holds(&bed.dir().join("fake-bmc"), &secrets);
}

/// The agent token in an agent's log, where it logged a request to its API.
fn agent_token_in(log: &str) -> Option<String> {
    let at = log.find("agent_token=")? + "agent_token=".len();
    let token: String = log[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (token.len() >= 32).then_some(token)
}

#[test]
fn a_wrong_checksum_fails_the_deploy_with_the_agents_message() {
    if !bed_can_run("an ironic-python-agent deploy test") {
        return;
    }
    let bed = Bed::new(
        one_raw_node("wrong", "52:54:00:d2:00:01", |i| &i.gpt_raw),
        "120s",
        &["wrong"],
    );
    let out = bed.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let record = bed.record("wrong");
    assert_eq!(record.provision_state.as_str(), "deploy failed");
    let error = record.last_error.unwrap_or_default();
    assert!(error.contains("deploy.write_image"), "{error}");
    assert!(
        error.contains("ImageChecksumError"),
        "the agent's message: {error}"
    );
    assert_eq!(
        record.power_state,
        Some(rivet::vocab::PowerState::Off),
        "powered off after the failure"
    );
    bed.boots()
        .wait_for("wrong", "the ramdisk stops", Duration::from_secs(30), |b| {
            b.last().is_some_and(|last| last.ended.is_some())
        });
    // The channel is closed: the agent may not call back into another run.
    let store = Store::open(&bed.state()).unwrap();
    assert!(store.agents().unwrap().is_empty());
}

#[test]
fn an_agent_that_never_calls_back_fails_the_deploy_after_the_callback_timeout() {
    if !bed_can_run("an ironic-python-agent deploy test") {
        return;
    }
    // No ramdisk boots for this node: the test plays a confused agent.
    let bed = Bed::new(
        one_raw_node("silent", "52:54:00:d3:00:01", |i| &i.mbr_raw),
        "8s",
        &[],
    );
    let daemon = bed.daemon("rivet=debug", &[]);
    let api = bed.api();
    let http = reqwest::blocking::Client::new();
    let node = |field: &str| bed.api_node("silent")[field].clone();
    wait_until(
        "the node waits for its agent",
        Duration::from_secs(30),
        || node("provision_state") == "wait call-back",
    );
    assert_eq!(node("deploy_step")["step"], "deploy");
    assert_eq!(node("target_provision_state"), "active");
    if let Some(program) = crate::api_baremetal::baremetal() {
        let cli = crate::api_baremetal::Cli {
            program,
            url: api.clone(),
        };
        let shown: serde_json::Value = serde_json::from_str(&cli.ok(&[
            "node",
            "show",
            "silent",
            "-f",
            "json",
            "-c",
            "provision_state",
            "-c",
            "deploy_step",
        ]))
        .unwrap();
        assert_eq!(shown["provision_state"], "wait call-back", "{shown}");
        assert_eq!(shown["deploy_step"]["step"], "deploy", "{shown}");
    }

    let lookup = |query: &str| http.get(format!("{api}/v1/lookup?{query}")).send().unwrap();
    assert_eq!(
        lookup("addresses=52:54:00:ff:ff:ff").status(),
        404,
        "an unknown MAC"
    );
    let first: serde_json::Value = lookup("addresses=52:54:00:D3:00:01").json().unwrap();
    let token = first["config"]["agent_token"].as_str().unwrap().to_string();
    assert!(
        token.len() >= 32 && token != "******",
        "a token on the first lookup"
    );
    let second: serde_json::Value = lookup("addresses=52:54:00:d3:00:01").json().unwrap();
    assert_eq!(second["config"]["agent_token"], "******");
    let uuid = first["node"]["uuid"].as_str().unwrap().to_string();
    let wrong = "wrong-token-0123456789abcdef0123456789";
    let beat = http
        .post(format!("{api}/v1/heartbeat/{uuid}"))
        .json(&serde_json::json!({"callback_url": "http://127.0.0.1:9", "agent_token": wrong, "agent_version": "13.0.0"}))
        .send()
        .unwrap();
    assert_eq!(beat.status(), 400);

    wait_until("the deploy fails", Duration::from_secs(40), || {
        node("provision_state") == "deploy failed"
    });
    let error = node("last_error");
    assert!(
        error
            .as_str()
            .unwrap()
            .contains("no agent called back within 8s"),
        "{error}"
    );
    let logs = daemon.stop().join("\n");
    assert!(logs.contains("heartbeat refused"), "the refusal is logged");
    for secret in [&token, wrong, CANARY] {
        assert!(!logs.contains(secret), "a secret in the logs");
    }
    assert_no_file_holds(&bed.dir().join(".rivet"), &[&token, CANARY]);
}

/// Kill -9 `rivet reconcile` once `ready` holds, run it again, and check
/// the deploy completes with write_image run once.
/// The image comes at about 3 s for 16 MiB, so the write is still running
/// when the test kills rivet; `still` checks it was, right after the kill.
fn killed_and_resumed(
    ready: impl Fn(&Bed) -> bool,
    what: &str,
    still: impl Fn(&Bed) -> bool,
    resumed_at: &str,
) {
    let bed = Bed::paced(
        one_raw_node("crash", "52:54:00:d4:00:01", |i| &i.mbr_raw),
        "120s",
        &["crash"],
        Duration::from_millis(12),
    );
    let mut child = bed.spawn_reconcile();
    wait_until(what, Duration::from_secs(60), || ready(&bed));
    child.kill().unwrap();
    let _ = child.wait();
    assert!(still(&bed), "killed too late: {what} was over");
    let out = bed.reconcile();
    assert!(
        out.status.success(),
        "the resumed reconcile: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(bed.record("crash").provision_state.as_str(), "active");
    assert_eq!(
        write_image_runs(&bed.agent_log("crash")),
        1,
        "write_image ran once"
    );
    let boots = bed
        .boots()
        .wait_for("crash", "the instance boot", Duration::from_secs(30), |b| {
            b.last()
                .is_some_and(|last| last.device == Some(rivet::vocab::BootDevice::Disk))
        });
    let ramdisks = boots.iter().filter(|b| b.bed().is_some()).count();
    assert_eq!(ramdisks, 1, "the ramdisk booted once");
    assert_disk_holds(
        &bed.boots().disk("crash").unwrap(),
        &image_bytes(&bed.images.mbr_raw),
        "crash",
    );
    let history = bed.history("crash");
    let resumed: Vec<&str> = history
        .iter()
        .filter(|e| e.outcome == Outcome::Resumed)
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(resumed, [resumed_at], "{history:#?}");
}

#[test]
fn a_reconcile_killed_in_deploy_wait_resumes_and_completes() {
    if !bed_can_run("an ironic-python-agent deploy test") {
        return;
    }
    // Killed as soon as the node powers on into its ramdisk: the agent
    // comes up while no rivet listens, and looks up until one does.
    killed_and_resumed(
        |bed| !bed.boots().boots("crash").is_empty(),
        "the node powers on into its ramdisk",
        |bed| write_image_runs(&bed.agent_log("crash")) == 0,
        "wait call-back",
    );
}

#[test]
fn a_reconcile_killed_while_the_image_is_written_resumes_and_writes_it_once() {
    if !bed_can_run("an ironic-python-agent deploy test") {
        return;
    }
    killed_and_resumed(
        |bed| {
            bed.boots().last_bed("crash").is_some()
                && write_image_runs(&bed.agent_log("crash")) == 1
        },
        "the agent writes the image",
        |bed| {
            !bed.agent_log("crash")
                .contains("execute_deploy_step completed")
        },
        "deploy.write_image (agent)",
    );
}

#[test]
fn an_in_band_step_the_agent_does_not_offer_fails_the_deploy_before_the_image_is_written() {
    if !bed_can_run("an ironic-python-agent deploy test") {
        return;
    }
    let bed = Bed::new(
        |images, server| {
            let mut node =
                one_raw_node("inband", "52:54:00:d5:00:01", |i| &i.mbr_raw)(images, server)
                    .remove(0);
            node.extra = "\n[[node.deploy_steps]]\ninterface = \"deploy\"\nstep = \"erase_devices_metadata\"\npriority = 90\n";
            vec![node]
        },
        "120s",
        &["inband"],
    );
    let plan = bed
        .rivet()
        .args(["reconcile", "--dry-run"])
        .arg(bed.dir())
        .output()
        .unwrap();
    let plan_text = text(&plan.stdout);
    assert!(plan.status.success(), "{plan_text}{}", text(&plan.stderr));
    let steps: Vec<&str> = plan_text
        .lines()
        .filter(|l| l.contains("priority"))
        .map(str::trim)
        .collect();
    assert!(
        steps[1].contains("deploy.erase_devices_metadata") && steps[1].ends_with("(by the agent)"),
        "{plan_text}"
    );
    assert!(steps[2].contains("deploy.write_image"), "{plan_text}");

    let out = bed.reconcile();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let record = bed.record("inband");
    assert_eq!(record.provision_state.as_str(), "deploy failed");
    let error = record.last_error.unwrap_or_default();
    assert!(
        error.contains("the agent offers no deploy step `deploy.erase_devices_metadata` (it offers: write_image)"),
        "{error}"
    );
    assert_eq!(
        write_image_runs(&bed.agent_log("inband")),
        0,
        "nothing was written"
    );
}

#[test]
fn in_a_cluster_an_agent_that_calls_any_daemon_reaches_the_one_whose_deploy_waits_for_it() {
    if !bed_can_run("an ironic-python-agent deploy test on etcd") {
        return;
    }
    let etcd = crate::etcd_server::EtcdServer::start();
    // Every ramdisk is told h1's URL (`ipa-api-url`), whichever daemon
    // deploys its node.
    let bed = Bed::new(
        |images, server| {
            ["c1", "c2", "c3", "c4"]
                .iter()
                .zip([
                    "52:54:00:d6:00:01",
                    "52:54:00:d6:00:02",
                    "52:54:00:d6:00:03",
                    "52:54:00:d6:00:04",
                ])
                .map(|(name, mac)| DirectNode {
                    name,
                    mac,
                    image_url: server.url(images.mbr_raw.name()),
                    disk_format: "raw",
                    checksum: format!("sha256:{}", images.mbr_raw.sha256),
                    extra: "",
                })
                .collect()
        },
        "120s",
        &["c1", "c2", "c3", "c4"],
    );
    let rivet_toml = format!(
        "{}\n[cluster]\netcd = [\"{}\"]\nlease_ttl = \"3s\"\n",
        rivet_toml(bed.port, "120s").replace(
            "[conductor]\n",
            "[conductor]\npower_sync_interval = \"1h\"\n"
        ),
        etcd.url
    );
    std::fs::write(bed.dir().join("rivet.toml"), rivet_toml).unwrap();
    let nodes = bed.dir().join("nodes/direct.toml");
    let active = std::fs::read_to_string(&nodes).unwrap();
    std::fs::write(
        &nodes,
        active.replace("provision = \"active\"", "provision = \"available\""),
    )
    .unwrap();

    let daemon = |host: &str, port: u16| {
        let state = bed.dir().join(format!("{host}.redb"));
        let http = format!("127.0.0.1:{port}");
        let args = [
            "--host",
            host,
            "--state",
            state.to_str().unwrap(),
            "--http",
            &http,
        ];
        bed.daemon("info", &args)
    };
    let h1 = daemon("h1", bed.port);
    let h2 = daemon("h2", free_port());
    let node = |name: &str| bed.api_node(name);
    let names = ["c1", "c2", "c3", "c4"];
    let settled = || {
        names.iter().all(|n| {
            let doc = node(n);
            doc["provision_state"] == "available" && doc["conductor"].is_string()
        })
    };
    wait_until(
        "every node available and owned",
        Duration::from_secs(60),
        settled,
    );
    let owners: Vec<String> = names
        .iter()
        .map(|n| node(n)["conductor"].as_str().unwrap().to_string())
        .collect();
    assert!(
        owners.iter().any(|o| o == "h2"),
        "h2 owns a node: {owners:?}"
    );

    std::fs::write(&nodes, active).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !names.iter().all(|n| node(n)["provision_state"] == "active") {
        if Instant::now() > deadline {
            let states: Vec<String> = names
                .iter()
                .map(|n| {
                    let doc = node(n);
                    format!(
                        "{n}: {} {} {}",
                        doc["provision_state"], doc["conductor"], doc["last_error"]
                    )
                })
                .collect();
            let logs: Vec<String> = h1
                .logs()
                .into_iter()
                .chain(h2.logs())
                .filter(|l| !l.contains("rivet::api::request"))
                .collect();
            panic!(
                "not every node active within 120s: {states:#?}\n{}",
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (name, owner) in names.iter().zip(&owners) {
        assert_eq!(
            node(name)["conductor"],
            owner.as_str(),
            "{name} stayed with its owner"
        );
        assert_eq!(
            write_image_runs(&bed.agent_log(name)),
            1,
            "{name}: write_image once"
        );
        let disk = bed.boots().disk(name).unwrap();
        assert_disk_holds(&disk, &image_bytes(&bed.images.mbr_raw), name);
    }
    let logs = format!("{}\n{}", h1.stop().join("\n"), h2.stop().join("\n"));
    assert!(!logs.contains(CANARY));
}

#[test]
fn while_the_agent_writes_the_daemon_shows_deploying_its_step_and_where_the_agent_listens() {
    if !bed_can_run("an ironic-python-agent deploy test") {
        return;
    }
    let bed = Bed::paced(
        one_raw_node("shown", "52:54:00:d7:00:01", |i| &i.mbr_raw),
        "120s",
        &["shown"],
        Duration::from_millis(12),
    );
    let daemon = bed.daemon("info", &[]);
    let node = || bed.api_node("shown");
    wait_until(
        "the agent writes the image",
        Duration::from_secs(60),
        || node()["deploy_step"]["step"] == "write_image",
    );
    let doc = node();
    assert_eq!(doc["provision_state"], "deploying", "{doc}");
    assert_eq!(doc["target_provision_state"], "active");
    assert_eq!(doc["deploy_step"]["priority"], 80);
    // The agent may call back before `ipa-up.sh` has returned to the
    // simulator: wait for the bed's own record of where it listens.
    let boots = bed
        .boots()
        .wait_for("shown", "the ramdisk is up", Duration::from_secs(30), |b| {
            b.last().and_then(|last| last.bed()).is_some()
        });
    let bed_url = boots.last().unwrap().bed().unwrap().callback_url.clone();
    let internal = &doc["driver_internal_info"];
    assert_eq!(
        internal["agent_url"]
            .as_str()
            .map(|u| u.trim_end_matches('/')),
        Some(bed_url.as_str())
    );
    assert_eq!(internal["agent_version"], "13.0.0");
    assert_eq!(internal["agent_secret_token"], "******");
    wait_until("the node is active", Duration::from_secs(60), || {
        node()["provision_state"] == "active"
    });
    let doc = node();
    assert_eq!(
        doc["driver_internal_info"],
        serde_json::json!({}),
        "the agent is gone"
    );
    assert_eq!(doc["deploy_step"], serde_json::json!({}));
    daemon.stop();
}
