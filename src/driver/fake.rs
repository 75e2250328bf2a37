//! fake-hardware: BMCs simulated in-process, so every converge path runs
//! without hardware.
//!
//! A fake BMC's "hardware" (power, boot device, BIOS settings) is a JSON
//! file `<fake_bmc_dir>/<host>.json` (`[conductor] fake_bmc_dir`, by default
//! `fake-bmc` beside the state file), kept apart from rivet's own records on
//! purpose: like a real BMC it can change behind rivet's back (edit the
//! file), and `"unreachable": true` makes it stop answering.
//! The BMC URL tunes it: `fake://n1?latency=200ms&fail=power:0.1` adds 200 ms
//! to every call and fails one power call in ten (retryably);
//! `fake://n1?panic=power` makes power calls panic, as a driver bug would.
//!
//! Several processes (the conductors of a cluster) can share one directory
//! of fake BMCs. Every call that changes a BMC is a request the BMC
//! accepts under one lock (an advisory lock on `<dir>/lock`, which orders
//! processes, behind a mutex, which orders this process's threads): the
//! fence is checked ([`fence::check`]), the caller's fencing token is
//! compared with the highest the BMC has accepted for the node (a lower one
//! is refused: the caller lost the node), the BMC's JSON is read, changed
//! and written, and the call is appended to the call log `<dir>/calls.jsonl`
//! ([`CallLine`]), all before the lock is released. The BMC then takes the
//! URL's latency to do the work; a real BMC finishes what it accepted
//! whatever its client does meanwhile (even a client stopped by SIGSTOP),
//! so the call ends at `start_ns + latency` by the BMC's clock, and the
//! client waits that long, or only the time left on its lease, past which
//! it gives up as on a request timeout. Reads wait the latency, then read
//! the file without the lock (writes replace it whole) and are not logged.
//! Every call to a changing method is sent and logged, also one that finds
//! the BMC as asked already.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::fence::{self, Sent};
use super::{Bios, Boot, DriverError, Inspect, Management, Power, Vendor};
use crate::model::node::Node;
use crate::store::records::FakeBmcRecord;
use crate::vocab::{BootDevice, BootMode, PowerState};

/// Where fake BMCs keep their state.
pub trait FakeBmcs: Send + Sync {
    fn get(&self, host: &str) -> Result<FakeBmcRecord, DriverError>;
    /// Replace a BMC's state, as an edit behind rivet's back does.
    fn put(&self, host: &str, record: &FakeBmcRecord) -> Result<(), DriverError>;
    /// One changing call from `call.node` to the BMC at `host`, accepted
    /// as the module documentation says: fenced, token compared, `change`
    /// applied, logged. What the request was sent with, for its wait.
    fn accept(
        &self,
        host: &str,
        call: &Call<'_>,
        change: &mut dyn FnMut(&mut FakeBmcRecord),
    ) -> Result<Sent, DriverError>;
}

/// A changing call as the BMC sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub node: &'a str,
    /// Its kind and argument, e.g. `set_power_state:power on`.
    pub op: &'a str,
    /// How long the BMC takes to do it.
    pub latency: Duration,
}

/// One line of the call log: a changing call the BMC accepted or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLine {
    pub node: String,
    /// The conductor that sent it.
    pub host: String,
    pub token: i64,
    pub op: String,
    /// When the BMC accepted it (Unix time, nanoseconds).
    pub start_ns: u64,
    /// When the BMC finished it: `start_ns` + the latency.
    pub end_ns: u64,
    /// Why the BMC refused it; absent when it was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// The call log's name in the directory of fake BMCs.
pub const CALL_LOG: &str = "calls.jsonl";

/// The lock file and the call log, open once.
struct Shared {
    lock: File,
    log: File,
}

/// Holds the lock file's lock; released when dropped, even by a panic.
struct Held<'a>(&'a File);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Fake BMC state as JSON files in a directory.
pub struct FakeBmcDir {
    dir: PathBuf,
    read_only: bool,
    /// Opened at the first change; the mutex orders this process's threads.
    shared: Mutex<Option<Shared>>,
}

impl FakeBmcDir {
    /// The fake BMCs in `dir`.
    pub fn new(dir: PathBuf, read_only: bool) -> Self {
        Self {
            dir,
            read_only,
            shared: Mutex::new(None),
        }
    }

    /// The directory beside a state file: `<dir of state>/fake-bmc`, the
    /// default of `[conductor] fake_bmc_dir`.
    pub fn beside(state: &Path, read_only: bool) -> Self {
        Self::new(crate::model::fleet::default_fake_bmc_dir(state), read_only)
    }

    pub fn file(&self, host: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", host.replace(['/', '\\'], "_")))
    }

    /// The call log: one [`CallLine`] per changing call.
    pub fn call_log(&self) -> PathBuf {
        self.dir.join(CALL_LOG)
    }

    fn io(host: &str) -> impl Fn(std::io::Error) -> DriverError + '_ {
        move |e| DriverError::retryable(format!("fake BMC `{host}`: {e}"))
    }

    /// Run `f` under the lock, with the call log to append to.
    fn locked<T>(
        &self,
        host: &str,
        f: impl FnOnce(&mut File) -> Result<T, DriverError>,
    ) -> Result<T, DriverError> {
        if self.read_only {
            return Err(DriverError::invalid("a dry run changes nothing"));
        }
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if shared.is_none() {
            std::fs::create_dir_all(&self.dir).map_err(Self::io(host))?;
            let open = |name: &str| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join(name))
            };
            let (lock, log) = (open("lock"), open(CALL_LOG));
            *shared = Some(Shared {
                lock: lock.map_err(Self::io(host))?,
                log: log.map_err(Self::io(host))?,
            });
        }
        let Shared { lock, log } = shared.as_mut().expect("opened above");
        lock.lock().map_err(Self::io(host))?;
        let _held = Held(lock);
        f(log)
    }

    fn read(&self, host: &str) -> Result<FakeBmcRecord, DriverError> {
        match std::fs::read(self.file(host)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                DriverError::fatal(format!("fake BMC `{host}` state is not valid: {e}"))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FakeBmcRecord::default()),
            Err(e) => Err(Self::io(host)(e)),
        }
    }

    /// Write then rename, so a crash never leaves half a file and a read
    /// without the lock sees the old state or the new one.
    fn write(&self, host: &str, record: &FakeBmcRecord) -> Result<(), DriverError> {
        let path = self.file(host);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(record).expect("records serialize");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(Self::io(host))
    }
}

fn unix_ns(at: SystemTime) -> u64 {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    u64::try_from(since).unwrap_or(u64::MAX)
}

fn does_not_answer(host: &str) -> DriverError {
    DriverError::retryable(format!("fake BMC `{host}` does not answer"))
}

impl FakeBmcs for FakeBmcDir {
    fn get(&self, host: &str) -> Result<FakeBmcRecord, DriverError> {
        self.read(host)
    }

    fn put(&self, host: &str, record: &FakeBmcRecord) -> Result<(), DriverError> {
        self.locked(host, |_| self.write(host, record))
    }

    fn accept(
        &self,
        host: &str,
        call: &Call<'_>,
        change: &mut dyn FnMut(&mut FakeBmcRecord),
    ) -> Result<Sent, DriverError> {
        self.locked(host, |log| {
            // Checked under the lock: nothing comes between it and the change.
            let sent = fence::check(call.op)?;
            let mut bmc = self.read(host)?;
            if bmc.unreachable {
                return Err(does_not_answer(host));
            }
            let start_ns = unix_ns(SystemTime::now());
            let latency = u64::try_from(call.latency.as_nanos()).unwrap_or(u64::MAX);
            let mut line = CallLine {
                node: call.node.to_string(),
                host: sent.host.to_string(),
                token: sent.token,
                op: call.op.to_string(),
                start_ns,
                end_ns: start_ns.saturating_add(latency),
                refused: None,
            };
            // No token recorded is 0, a single conductor's: a fleet that
            // never ran as a cluster writes none.
            let newest = bmc.tokens.get(call.node).copied().unwrap_or(0);
            let refused = (sent.token < newest).then(|| {
                format!(
                    "fencing token {} is older than {newest}: another conductor owns this node",
                    sent.token
                )
            });
            if refused.is_none() {
                let before = bmc.clone();
                if sent.token > newest {
                    bmc.tokens.insert(call.node.to_string(), sent.token);
                }
                change(&mut bmc);
                if bmc != before {
                    self.write(host, &bmc)?;
                }
            }
            line.refused.clone_from(&refused);
            let mut text = serde_json::to_vec(&line).expect("call lines serialize");
            text.push(b'\n');
            log.write_all(&text).map_err(Self::io(host))?;
            match refused {
                Some(why) => Err(DriverError::fenced(why)),
                None => Ok(sent),
            }
        })
    }
}

/// Behaviour a `fake://` URL asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FakeTuning {
    pub latency: Duration,
    /// Failure probability per call kind: `power`, `management`, `deploy`, `bios`, `any`.
    pub fail: BTreeMap<String, f64>,
    /// Call kinds that panic (a driver bug), e.g. `power`.
    pub panic: Vec<String>,
}

impl FakeTuning {
    /// Parse `latency=200ms&fail=power:0.1,deploy:1`.
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut tuning = Self::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "latency" => {
                    tuning.latency = humantime::parse_duration(value)
                        .map_err(|e| format!("latency `{value}`: {e}"))?;
                }
                "fail" => {
                    for item in value.split(',') {
                        let (kind, p) = item.split_once(':').ok_or_else(|| {
                            format!("fail `{item}`: write kind:probability, e.g. power:0.1")
                        })?;
                        let p: f64 = p
                            .parse()
                            .map_err(|_| format!("fail `{item}`: `{p}` is not a number"))?;
                        if !(0.0..=1.0).contains(&p) {
                            return Err(format!(
                                "fail `{item}`: the probability must be between 0 and 1"
                            ));
                        }
                        tuning.fail.insert(kind.to_string(), p);
                    }
                }
                "panic" => tuning.panic = value.split(',').map(str::to_string).collect(),
                other => {
                    return Err(format!(
                        "unknown option `{other}` (use latency, fail, panic)"
                    ));
                }
            }
        }
        Ok(tuning)
    }
}

/// The fake power, management, deploy and bios interfaces.
pub struct FakeDriver {
    bmcs: Arc<dyn FakeBmcs>,
}

impl FakeDriver {
    pub fn new(bmcs: Arc<dyn FakeBmcs>) -> Self {
        Self { bmcs }
    }

    fn host(node: &Node) -> &str {
        &node.bmc.address.host
    }

    /// The URL's tuning, with its injected panics and faults for `kind`.
    fn tuning(node: &Node, kind: &str) -> Result<FakeTuning, DriverError> {
        let tuning =
            FakeTuning::parse(node.bmc.address.query.as_deref()).map_err(DriverError::invalid)?;
        if tuning.panic.iter().any(|k| k == kind || k == "any") {
            panic!("injected {kind} panic");
        }
        Ok(tuning)
    }

    /// Whether this call fails by injection (retryably).
    fn injected_fault(tuning: &FakeTuning, kind: &str) -> Result<(), DriverError> {
        let p = tuning
            .fail
            .get(kind)
            .or_else(|| tuning.fail.get("any"))
            .copied()
            .unwrap_or(0.0);
        if p > 0.0 && fastrand::f64() < p {
            return Err(DriverError::retryable(format!("injected {kind} fault")));
        }
        Ok(())
    }

    /// A reading call: wait the configured latency, maybe fail, then read
    /// the BMC.
    async fn read(&self, node: &Node, kind: &str) -> Result<FakeBmcRecord, DriverError> {
        let tuning = Self::tuning(node, kind)?;
        if !tuning.latency.is_zero() {
            tokio::time::sleep(tuning.latency).await;
        }
        Self::injected_fault(&tuning, kind)?;
        let record = self.bmcs.get(Self::host(node))?;
        if record.unreachable {
            return Err(does_not_answer(Self::host(node)));
        }
        Ok(record)
    }

    /// A changing call `op` (kind and argument): maybe fail, then the BMC
    /// accepts it and does `change` in the configured latency, which the
    /// client waits for, no longer than its lease allows.
    async fn change(
        &self,
        node: &Node,
        kind: &str,
        op: &str,
        change: impl FnOnce(&mut FakeBmcRecord),
    ) -> Result<(), DriverError> {
        let tuning = Self::tuning(node, kind)?;
        if let Err(fault) = Self::injected_fault(&tuning, kind) {
            // A failing BMC takes its time to fail, as a reading one does.
            tokio::time::sleep(tuning.latency).await;
            return Err(fault);
        }
        let host = Self::host(node);
        let call = Call {
            node: &node.name,
            op,
            latency: tuning.latency,
        };
        let mut change = Some(change);
        let sent = self.bmcs.accept(host, &call, &mut |bmc| {
            if let Some(change) = change.take() {
                change(bmc);
            }
        });
        let sent = match sent {
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(tuning.latency).await;
                return Err(e);
            }
            other => other?,
        };
        let wait = sent.cap(tuning.latency);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if wait < tuning.latency {
            return Err(DriverError::retryable(format!(
                "fake BMC `{host}` did not finish {op} within the time left on this conductor's lease"
            )));
        }
        Ok(())
    }
}
#[async_trait]
impl Inspect for FakeDriver {
    /// A small, fixed machine with one NIC whose MAC derives from the host.
    async fn inspect(&self, node: &Node) -> Result<serde_json::Value, DriverError> {
        self.read(node, "inspect").await?;
        let h = Self::host(node)
            .bytes()
            .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(b.into()));
        Ok(serde_json::json!({
            "cpus": 2,
            "memory_gib": 4,
            "macs": [format!("52:54:00:{:02x}:{:02x}:{:02x}", (h >> 16) & 255, (h >> 8) & 255, h & 255)],
        }))
    }
}

impl FakeDriver {
    /// `deploy.deploy`: boot the instance from disk, powered on.
    pub async fn deploy(&self, node: &Node) -> Result<(), DriverError> {
        self.change(node, "deploy", "deploy.deploy", |bmc| {
            bmc.boot_device = Some(BootDevice::Disk);
            bmc.power = PowerState::On;
        })
        .await
    }
}

#[async_trait]
impl Bios for FakeDriver {
    async fn apply_configuration(
        &self,
        node: &Node,
        settings: &serde_json::Value,
    ) -> Result<(), DriverError> {
        let settings = settings
            .as_array()
            .ok_or_else(|| DriverError::invalid("`settings` must be a list of {name, value}"))?;
        let mut applied = Vec::with_capacity(settings.len());
        for setting in settings {
            let name = setting
                .get("name")
                .and_then(|n| n.as_str())
                .ok_or_else(|| DriverError::invalid("every setting needs a `name`"))?;
            let value = setting
                .get("value")
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            applied.push((name.to_string(), value));
        }
        self.change(node, "bios", "bios.apply_configuration", |bmc| {
            bmc.bios.extend(applied);
        })
        .await
    }

    async fn factory_reset(&self, node: &Node) -> Result<(), DriverError> {
        self.change(node, "bios", "bios.factory_reset", |bmc| bmc.bios.clear())
            .await
    }
}

#[async_trait]
impl Boot for FakeDriver {
    async fn insert_media(&self, node: &Node, image: &str) -> Result<(), DriverError> {
        let op = format!("insert_media:{image}");
        self.change(node, "boot", &op, |bmc| {
            bmc.virtual_media = Some(image.to_string());
        })
        .await
    }

    async fn eject_media(
        &self,
        node: &Node,
        _device: Option<&str>,
    ) -> Result<serde_json::Value, DriverError> {
        let mut ejected = None;
        self.change(node, "boot", "eject_media", |bmc| {
            ejected = bmc.virtual_media.take();
        })
        .await?;
        Ok(serde_json::json!({ "ejected": ejected.map(|_| vec!["Cd"]).unwrap_or_default() }))
    }
}

#[async_trait]
impl Vendor for FakeDriver {
    /// Ironic's FakeVendorB: each method answers whether `bar` has its
    /// word, and changes nothing, so none is fenced or logged.
    async fn passthru(
        &self,
        _node: &Node,
        method: &str,
        _http_method: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, DriverError> {
        let word = match method {
            "second_method" => "kazoo",
            "third_method_sync" => "meow",
            "fourth_method_shared_lock" => "woof",
            "log_passthrough" => return Ok(serde_json::Value::Null),
            other => {
                return Err(DriverError::invalid(format!(
                    "No handler for method {other}"
                )));
            }
        };
        Ok(serde_json::json!(
            args.get("bar") == Some(&serde_json::json!(word))
        ))
    }
}

#[async_trait]
impl Power for FakeDriver {
    async fn get_power_state(&self, node: &Node) -> Result<PowerState, DriverError> {
        Ok(self.read(node, "power").await?.power)
    }

    async fn set_power_state(
        &self,
        node: &Node,
        target: PowerState,
        _timeout: Duration,
    ) -> Result<(), DriverError> {
        let op = format!("set_power_state:{}", target.as_str());
        self.change(node, "power", &op, |bmc| bmc.power = target)
            .await
    }
}

#[async_trait]
impl Management for FakeDriver {
    async fn get_boot_device(&self, node: &Node) -> Result<Option<BootDevice>, DriverError> {
        Ok(self.read(node, "management").await?.boot_device)
    }

    async fn set_boot_device(
        &self,
        node: &Node,
        device: BootDevice,
        _persistent: bool,
    ) -> Result<(), DriverError> {
        let op = format!("set_boot_device:{}", device.as_str());
        self.change(node, "management", &op, |bmc| {
            bmc.boot_device = Some(device);
        })
        .await
    }

    async fn get_boot_mode(&self, node: &Node) -> Result<Option<BootMode>, DriverError> {
        Ok(self.read(node, "management").await?.boot_mode)
    }

    async fn set_boot_mode(&self, node: &Node, mode: BootMode) -> Result<(), DriverError> {
        let op = format!("set_boot_mode:{}", mode.as_str());
        self.change(node, "management", &op, |bmc| bmc.boot_mode = Some(mode))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_from_two_processes_sharing_the_directory_are_never_lost() {
        let dir = tempfile::tempdir().unwrap();
        // Two handles open the lock file twice, as two processes do.
        let sides = [
            Arc::new(FakeBmcDir::new(dir.path().to_path_buf(), false)),
            Arc::new(FakeBmcDir::new(dir.path().to_path_buf(), false)),
        ];
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let bmcs = Arc::clone(&sides[t % 2]);
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let name = format!("setting-{t}-{i}");
                        let call = Call {
                            node: "n1",
                            op: "bios.apply_configuration",
                            latency: Duration::ZERO,
                        };
                        bmcs.accept("n1", &call, &mut |bmc| {
                            bmc.bios.insert(name.clone(), serde_json::json!(i));
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(
            sides[0].get("n1").unwrap().bios.len(),
            200,
            "no lost update"
        );
        let log = std::fs::read_to_string(sides[1].call_log()).unwrap();
        let lines: Vec<CallLine> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 200);
        assert!(lines.iter().all(|l| l.node == "n1" && l.token == 0));
    }

    #[test]
    fn tuning_parses_latency_and_faults_and_rejects_nonsense() {
        let t = FakeTuning::parse(Some("latency=200ms&fail=power:0.1,deploy:1")).unwrap();
        assert_eq!(t.latency, Duration::from_millis(200));
        assert_eq!(t.fail["power"], 0.1);
        assert_eq!(t.fail["deploy"], 1.0);
        assert!(FakeTuning::parse(Some("fail=power:2")).is_err());
        assert!(FakeTuning::parse(Some("speed=fast")).is_err());
        assert_eq!(FakeTuning::parse(None).unwrap(), FakeTuning::default());
    }
}
