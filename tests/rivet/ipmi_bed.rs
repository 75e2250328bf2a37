//! A test bed of IPMI BMCs: OpenIPMI's `ipmi_sim`, one process per BMC on a
//! free UDP port of 127.0.0.1, each with a chassis kept as files
//! (`tests/testbeds/ipmi-chassis.sh`) that tests read and change behind the
//! BMC's back. Dropping the bed stops its processes.
//!
//! Without `ipmi_sim` or `ipmitool` the tests fail and say how to install
//! them, unless `RIVET_SKIP_EMULATORS=1` is set: then they say they were
//! skipped and pass.

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What Get Device ID (`raw 0x06 0x01`) answers, from the `mc_add` line of
/// every BMC's emulation file: device 0x12, revision 5, firmware 2.34,
/// IPMI 2.0, manufacturer 0x1a2b3c, product 0x0102.
pub const GET_DEVICE_ID: &str = "12 05 02 34 02 9f 3c 2b 1a 02 01 00 00 00 00";

pub const USER: &str = "admin";

const EMULATION: &str = "mc_setbmc 0x20
mc_add 0x20 0x12 no-device-sdrs 0x05 2 0x34 0x9f 0x1a2b3c 0x0102 persist_sdr
mc_enable 0x20
";

/// Ports handed out in this process: the kernel may give the same free port
/// to two tests, and ipmi_sim binds with SO_REUSEADDR, so a second one on a
/// port starts without error and both answer.
static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

pub struct IpmiBed {
    pub bmcs: Vec<SimBmc>,
    pub password: String,
    dir: tempfile::TempDir,
}

/// One running ipmi_sim.
pub struct SimBmc {
    pub port: u16,
    /// The chassis files: `power`, `boot`, `chassis.log`.
    pub dir: PathBuf,
    child: Child,
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

/// Whether the emulator tests can run; fails with install instructions when
/// they cannot, unless skipping was asked for.
pub fn emulators_available(test: &str) -> bool {
    let missing: Vec<&str> = ["ipmi_sim", "ipmitool"]
        .into_iter()
        .filter(|p| !on_path(p))
        .collect();
    if crate::support::skip_emulator_test(test) {
        return false;
    }
    if missing.is_empty() {
        return true;
    }
    panic!(
        "{test} needs {} on PATH: apt-get install -y ipmitool openipmi \
         (or set RIVET_SKIP_EMULATORS=1 to skip the emulator tests)",
        missing.join(" and ")
    );
}

/// A UDP port of 127.0.0.1 nothing is bound to, not handed out before.
fn free_port() -> u16 {
    loop {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        let port = socket.local_addr().unwrap().port();
        if TAKEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

impl IpmiBed {
    /// `n` BMCs with user `admin` and a fresh random password, powered off,
    /// no boot override; `None` when the tests are skipped.
    pub fn start(test: &str, n: usize) -> Option<Self> {
        let password = format!("Pw-{:016x}", fastrand::u64(..));
        Self::start_with_password(test, n, &password)
    }

    /// Like `start`, with the given password (at most 20 bytes, IPMI 2.0's limit).
    pub fn start_with_password(test: &str, n: usize, password: &str) -> Option<Self> {
        if !emulators_available(test) {
            return None;
        }
        assert!(
            password.len() <= 20,
            "IPMI 2.0 passwords have at most 20 bytes"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut bed = Self {
            bmcs: Vec::new(),
            password: password.to_string(),
            dir,
        };
        // Start every process first, then wait for each: start-up overlaps.
        for i in 0..n {
            let bmc = bed.spawn(i);
            bed.bmcs.push(bmc);
        }
        for i in 0..n {
            bed.wait_ready(i);
        }
        Some(bed)
    }

    fn spawn(&self, index: usize) -> SimBmc {
        let port = free_port();
        let dir = self.dir.path().join(format!("bmc{index}"));
        std::fs::create_dir_all(dir.join("persist")).unwrap();
        std::fs::write(dir.join("power"), "0\n").unwrap();
        std::fs::write(dir.join("boot"), "none\n").unwrap();
        let chassis = crate::support::root().join("tests/testbeds/ipmi-chassis.sh");
        // RMCP+ (lanplus) needs a `guid` in `startlan`; one per BMC.
        let lan = format!(
            r#"name "bmc{index}"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid {guid:032x}
  endlan
  chassis_control "{chassis} {dir}"
  user 2 true "{USER}" "{password}" admin 10 none md2 md5 straight
"#,
            guid = (u128::from(port) << 64) | fastrand::u128(..u128::from(u64::MAX)),
            chassis = chassis.display(),
            dir = dir.display(),
            password = self.password,
        );
        std::fs::write(dir.join("lan.conf"), lan).unwrap();
        std::fs::write(dir.join("sim.emu"), EMULATION).unwrap();
        let log = std::fs::File::create(dir.join("sim.log")).unwrap();
        // -n: no console on stdin (ipmi_sim dies without one otherwise); it
        // never daemonizes, so the child is the BMC.
        let child = Command::new("ipmi_sim")
            .arg("-n")
            .arg("-c")
            .arg(dir.join("lan.conf"))
            .arg("-f")
            .arg(dir.join("sim.emu"))
            .arg("-s")
            .arg(dir.join("persist"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start ipmi_sim");
        SimBmc { port, dir, child }
    }

    /// Poll Get Device ID until it answers; a BMC that dies (its port was
    /// taken after all) is started again on another port.
    fn wait_ready(&mut self, index: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let probe =
                self.ipmitool_with(index, &["-N", "1", "-R", "1"], &["raw", "0x06", "0x01"]);
            if probe.status.success() {
                return;
            }
            let bmc = &mut self.bmcs[index];
            if let Some(status) = bmc.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(bmc.dir.join("sim.log")).unwrap_or_default();
                eprintln!("ipmi_sim on port {} exited ({status}): {log}", bmc.port);
                std::fs::remove_dir_all(&bmc.dir).unwrap();
                self.bmcs[index] = self.spawn(index);
            }
            assert!(
                Instant::now() < deadline,
                "ipmi_sim on port {} is not ready: {}",
                self.bmcs[index].port,
                String::from_utf8_lossy(&probe.stderr)
            );
            // Pace the probes; the next one waits for the condition itself.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Run ipmitool against BMC `index` as the tests' own witness (never
    /// through rivet).
    pub fn ipmitool(&self, index: usize, args: &[&str]) -> Output {
        self.ipmitool_with(index, &[], args)
    }

    fn ipmitool_with(&self, index: usize, options: &[&str], args: &[&str]) -> Output {
        Command::new("ipmitool")
            .args([
                "-I",
                "lanplus",
                "-C",
                "3",
                "-H",
                "127.0.0.1",
                "-U",
                USER,
                "-E",
            ])
            .args(["-p", &self.bmcs[index].port.to_string()])
            .args(options)
            .args(args)
            .env("IPMI_PASSWORD", &self.password)
            .output()
            .expect("run ipmitool")
    }

    /// A node declaration for BMC `index`, without the closing of the table.
    pub fn bmc_decl(&self, index: usize, password: &str) -> String {
        format!(
            r#"bmc = {{ address = "ipmi://127.0.0.1:{}", username = "{USER}", {password}, cipher_suite = 3 }}"#,
            self.bmcs[index].port
        )
    }
}

impl SimBmc {
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Whether the chassis is powered on, read from its file.
    pub fn power_on(&self) -> bool {
        self.read("power") == "1"
    }

    /// Change the power behind the BMC's back.
    pub fn set_power(&self, on: bool) {
        std::fs::write(self.dir.join("power"), if on { "1\n" } else { "0\n" }).unwrap();
    }

    /// The boot device the chassis holds: none, pxe, default, cdrom, bios.
    pub fn boot(&self) -> String {
        self.read("boot")
    }

    /// Every chassis call: (unix time in seconds, "get power" / "set boot pxe" …).
    pub fn chassis_log(&self) -> Vec<(f64, String)> {
        std::fs::read_to_string(self.dir.join("chassis.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (time, call) = line.split_once(' ')?;
                Some((time.parse().ok()?, call.trim().to_string()))
            })
            .collect()
    }
}

impl Drop for IpmiBed {
    fn drop(&mut self) {
        // SIGTERM to all first: each takes about a second to act on it.
        for bmc in &mut self.bmcs {
            // Not yet reaped, so the id is still this child's.
            if let Ok(None) = bmc.child.try_wait() {
                unsafe { libc::kill(bmc.child.id() as libc::pid_t, libc::SIGTERM) };
            }
        }
        for bmc in &mut self.bmcs {
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(bmc.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(bmc.child.try_wait(), Ok(None)) {
                let _ = bmc.child.kill();
            }
            let _ = bmc.child.wait();
        }
    }
}
