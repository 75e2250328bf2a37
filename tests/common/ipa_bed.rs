//! The deploy-ramdisk bed (`tests/testbeds/ipa/`): the real
//! ironic-python-agent 13.0.0 as a booted deploy ramdisk, on a loop device
//! over a sparse file in the bed's own directory, driven through the bed's
//! scripts. [`IpaBed`] is one boot of one node; [`Images`] are the bed's
//! deterministic whole-disk images. Shared by the tests and the benchmarks
//! through `#[path]`.
//!
//! What is missing to run a bed ([`missing`]) is a failure that says how to
//! install it; deciding to skip (`RIVET_SKIP_EMULATORS=1`) is the caller's,
//! before it starts one.

// Each user takes the part it needs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

/// The bed's scripts.
pub fn bed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testbeds/ipa")
}

/// The agent's venv: `$RIVET_IPA_VENV`, or `.venv-ipa` in the project
/// (which `scripts/test` makes).
pub fn venv() -> PathBuf {
    std::env::var_os("RIVET_IPA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-ipa"))
}

/// The venv's interpreter, which also runs the bed's reference Ironic.
pub fn python() -> PathBuf {
    venv().join("bin/python")
}

/// What this machine lacks to run a bed, with how to get it; `None` when
/// nothing is missing.
pub fn missing() -> Option<String> {
    let mut missing = Vec::new();
    if !venv().join("bin/rivet-ipa-double").is_file() {
        missing.push(format!(
            "{} has no ironic-python-agent bed: run scripts/test, which installs it \
             (or tests/testbeds/ipa/install.sh {0}; RIVET_IPA_VENV picks another venv)",
            venv().display()
        ));
    }
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root: the bed attaches a loop device (losetup)".to_string());
    }
    if !Path::new("/dev/loop-control").exists() {
        missing.push(
            "/dev/loop-control: the bed needs loop devices (a container: --privileged)".to_string(),
        );
    }
    (!missing.is_empty()).then(|| {
        format!(
            "the ironic-python-agent bed cannot run: {} (or set RIVET_SKIP_EMULATORS=1 to skip \
             the emulator tests)",
            missing.join("; ")
        )
    })
}

/// Panics with [`missing`]'s how-to when a bed cannot run here.
pub fn assert_installed() {
    if let Some(why) = missing() {
        panic!("{why}");
    }
}

/// Poll `probe` every 20 ms until it finds what it looks for, panicking
/// after `within` with `what` and the last thing it saw instead.
pub fn eventually<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(found) => return found,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {within:?}; last {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// `ipa-up.sh`'s optional settings; `None` keeps the bed's default.
#[derive(Debug, Clone, Default)]
pub struct BedSettings {
    /// How long the agent retries its lookup before it exits 1 (60 s),
    /// whole seconds.
    pub lookup_timeout: Option<Duration>,
    /// How long the agent lives on after `standby.power_off` (2 s).
    pub power_off_delay: Option<Duration>,
    /// The agent API's port on 127.0.0.1 (a free one).
    pub listen_port: Option<u16>,
    /// The loop disk's size in MiB, at least 32 (64).
    pub disk_mb: Option<u32>,
}

/// The JSON line `ipa-up.sh` prints (and keeps in `RUN_ROOT/bed.json`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BedInfo {
    pub pid: u32,
    #[serde(rename = "loop")]
    pub loop_device: String,
    pub callback_url: String,
    pub disk_image: PathBuf,
    pub log: PathBuf,
    pub mac: String,
    pub api_url: String,
}

/// One boot of the deploy ramdisk: an agent running until [`down`]
/// (`ipa-down.sh`), which dropping the bed also runs, so a failing test
/// leaves no agent and no loop device behind. The disk image, logs and
/// state stay in `run_root` for reading afterwards.
///
/// [`down`]: IpaBed::down
#[derive(Debug)]
pub struct IpaBed {
    pub run_root: PathBuf,
    pub info: BedInfo,
    /// How long `ipa-up.sh` took.
    pub up_took: Duration,
    /// When it returned: the agent's checks passed, its lookups begin.
    pub up_at: SystemTime,
    stopped: bool,
}

fn run(command: &mut Command) -> Result<Output, String> {
    command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

impl IpaBed {
    /// A fresh boot in `run_root` (created; a bed already up there is
    /// stopped first and its disk zeroed) that looks itself up at `api_url`
    /// by `mac`.
    pub fn up(run_root: &Path, api_url: &str, mac: &str) -> Result<Self, String> {
        Self::up_with(run_root, api_url, mac, &BedSettings::default())
    }

    /// [`up`](Self::up) with `settings`.
    pub fn up_with(
        run_root: &Path,
        api_url: &str,
        mac: &str,
        settings: &BedSettings,
    ) -> Result<Self, String> {
        let mut command = Command::new(bed_dir().join("ipa-up.sh"));
        command.arg(run_root).arg(api_url).arg(mac);
        match (settings.listen_port, settings.disk_mb) {
            (port, Some(mb)) => {
                command.arg(port.map(|p| p.to_string()).unwrap_or_default());
                command.arg(mb.to_string());
            }
            (Some(port), None) => {
                command.arg(port.to_string());
            }
            (None, None) => {}
        }
        command.env("IPA_VENV", venv());
        if let Some(timeout) = settings.lookup_timeout {
            command.env("IPA_LOOKUP_TIMEOUT", timeout.as_secs().max(1).to_string());
        }
        if let Some(delay) = settings.power_off_delay {
            command.env("IPA_POWER_OFF_DELAY", format!("{:.3}", delay.as_secs_f64()));
        }
        let started = Instant::now();
        let output = run(&mut command)?;
        let up_took = started.elapsed();
        if !output.status.success() {
            return Err(format!(
                "ipa-up.sh {} failed ({}): {}",
                run_root.display(),
                output.status,
                text(&output.stderr)
            ));
        }
        let stdout = text(&output.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        let info: BedInfo = match serde_json::from_str(line) {
            Ok(info) => info,
            Err(e) => {
                // Up, but unreadable: stop what it started.
                let _ = down(run_root);
                return Err(format!(
                    "ipa-up.sh printed `{stdout}`, not its JSON line: {e}"
                ));
            }
        };
        Ok(Self {
            run_root: run_root.to_path_buf(),
            info,
            up_took,
            up_at: SystemTime::now(),
            stopped: false,
        })
    }

    /// Stop the agent and detach its loop device (`ipa-down.sh`, which is
    /// idempotent); its summary line.
    pub fn down(&mut self) -> Result<String, String> {
        let summary = down(&self.run_root)?;
        self.stopped = true;
        Ok(summary)
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.info.log).unwrap_or_default()
    }

    /// Why the agent stopped (`state/exit`, e.g. `0 agent stopped
    /// (simulated power action)`); `None` while it runs.
    pub fn exit(&self) -> Option<String> {
        read_state(&self.run_root, "exit")
    }

    /// The simulated power actions (`state/power_event`: `poweroff <unix
    /// time>` per line), oldest first.
    pub fn power_events(&self) -> Vec<String> {
        read_state(&self.run_root, "power_event")
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// The bytes of the disk the agent writes to (the loop device's backing
    /// file), as they are now.
    pub fn disk(&self) -> Vec<u8> {
        std::fs::read(&self.info.disk_image)
            .unwrap_or_else(|e| panic!("read {}: {e}", self.info.disk_image.display()))
    }

    /// Whether the agent process is still running (a zombie is not).
    pub fn agent_alive(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.info.pid));
        // The state follows the command name's closing parenthesis.
        stat.ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().to_string())
            })
            .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
            && !leftovers(&self.run_root).processes.is_empty()
    }
}

impl Drop for IpaBed {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = down(&self.run_root);
        }
    }
}

fn read_state(run_root: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(run_root.join("state").join(name))
        .ok()
        .map(|t| t.trim_end().to_string())
}

/// `ipa-down.sh run_root`: stops the agent booted there, if any, and
/// detaches its loop device; its summary line.
pub fn down(run_root: &Path) -> Result<String, String> {
    let output = run(Command::new(bed_dir().join("ipa-down.sh")).arg(run_root))?;
    if output.status.success() {
        Ok(text(&output.stdout))
    } else {
        Err(format!(
            "ipa-down.sh {} failed ({}): {} {}",
            run_root.display(),
            output.status,
            text(&output.stdout),
            text(&output.stderr)
        ))
    }
}

/// What a bed in a directory still holds of the machine.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Live processes carrying the bed's marker in their environment.
    pub processes: Vec<u32>,
    /// Loop devices backed by the bed's disk image (`losetup -j`).
    pub loop_devices: Vec<String>,
}

/// The processes and loop devices of the bed in `run_root` that are still
/// there: both empty once it is down.
pub fn leftovers(run_root: &Path) -> Leftovers {
    let root = std::fs::canonicalize(run_root).unwrap_or_else(|_| run_root.to_path_buf());
    let marker = format!("RIVET_IPA_STATE_DIR={}", root.join("state").display());
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A zombie's environment reads as empty: it holds nothing.
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
            processes.push(pid);
        }
    }
    let image = root.join("disk.img");
    let mut loop_devices = Vec::new();
    if image.exists() {
        let listed = Command::new("losetup")
            .args(["-n", "-O", "NAME", "-j"])
            .arg(&image)
            .env("PATH", with_sbin())
            .output();
        if let Ok(listed) = listed {
            loop_devices = text(&listed.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
        }
    }
    Leftovers {
        processes,
        loop_devices,
    }
}

/// PATH with sbin, where losetup lives, in case a non-root PATH lacks it.
fn with_sbin() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{path}:/usr/sbin:/sbin")
}

/// One of the bed's images and its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub path: PathBuf,
    /// Hex sha256, from `SHA256SUMS`.
    pub sha256: String,
}

impl Image {
    /// The file's name, as an image server serves it.
    pub fn name(&self) -> &str {
        self.path.file_name().and_then(|n| n.to_str()).unwrap()
    }
}

/// The bed's whole-disk images (`images.sh`): 16 MiB each, an MBR one
/// (disk id 0x52495654) and a GPT one, raw and qcow2. The raw bytes never
/// change; the qcow2 bytes depend on the qemu-img version, hence the sums.
#[derive(Debug, Clone)]
pub struct Images {
    pub dir: PathBuf,
    pub mbr_raw: Image,
    pub gpt_raw: Image,
    pub mbr_qcow2: Image,
    pub gpt_qcow2: Image,
}

impl Images {
    /// Write the images into `out_dir` (created).
    pub fn make(out_dir: &Path) -> Self {
        let output = run(Command::new(bed_dir().join("images.sh")).arg(out_dir))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            output.status.success(),
            "images.sh {} failed ({}): {} {}",
            out_dir.display(),
            output.status,
            text(&output.stdout),
            text(&output.stderr)
        );
        let dir = std::fs::canonicalize(out_dir).unwrap();
        let sums_path = dir.join("SHA256SUMS");
        let sums: BTreeMap<String, String> = std::fs::read_to_string(&sums_path)
            .unwrap_or_else(|e| panic!("read {}: {e}", sums_path.display()))
            .lines()
            .filter_map(|l| l.split_once("  "))
            .map(|(sum, name)| (name.to_string(), sum.to_string()))
            .collect();
        let image = |name: &str| Image {
            path: dir.join(name),
            sha256: sums
                .get(name)
                .unwrap_or_else(|| panic!("SHA256SUMS has no {name}: {sums:?}"))
                .clone(),
        };
        Self {
            mbr_raw: image("disk-mbr.raw"),
            gpt_raw: image("disk-gpt.raw"),
            mbr_qcow2: image("disk-mbr.qcow2"),
            gpt_qcow2: image("disk-gpt.qcow2"),
            dir,
        }
    }

    /// All four, raw first.
    pub fn all(&self) -> [&Image; 4] {
        [
            &self.mbr_raw,
            &self.gpt_raw,
            &self.mbr_qcow2,
            &self.gpt_qcow2,
        ]
    }
}
