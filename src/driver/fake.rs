//! fake-hardware: BMCs simulated in-process, so every converge path runs
//! without hardware.
//!
//! A fake BMC's "hardware" (power, boot device, BIOS settings) is a JSON
//! file `<state dir>/fake-bmc/<host>.json`, kept apart from rivet's own
//! records on purpose: like a real BMC it can change behind rivet's back
//! (edit the file), and `"unreachable": true` makes it stop answering.
//! The BMC URL tunes it: `fake://n1?latency=200ms&fail=power:0.1` adds 200 ms
//! to every call and fails one power call in ten (retryably);
//! `fake://n1?panic=power` makes power calls panic, as a driver bug would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Bios, Boot, DriverError, Inspect, Management, Power, Vendor};
use crate::model::node::Node;
use crate::store::records::FakeBmcRecord;
use crate::vocab::{BootDevice, BootMode, PowerState};

/// Where fake BMCs keep their state.
pub trait FakeBmcs: Send + Sync {
    fn get(&self, host: &str) -> Result<FakeBmcRecord, DriverError>;
    fn put(&self, host: &str, record: &FakeBmcRecord) -> Result<(), DriverError>;
}

/// Fake BMC state as JSON files in a directory.
pub struct FakeBmcDir {
    dir: PathBuf,
    read_only: bool,
}

impl FakeBmcDir {
    /// The directory beside a state file: `<dir of state>/fake-bmc`.
    pub fn beside(state: &Path, read_only: bool) -> Self {
        let dir = state.parent().unwrap_or(Path::new(".")).join("fake-bmc");
        Self { dir, read_only }
    }

    pub fn file(&self, host: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", host.replace(['/', '\\'], "_")))
    }
}

impl FakeBmcs for FakeBmcDir {
    fn get(&self, host: &str) -> Result<FakeBmcRecord, DriverError> {
        match std::fs::read(self.file(host)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                DriverError::fatal(format!("fake BMC `{host}` state is not valid: {e}"))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FakeBmcRecord::default()),
            Err(e) => Err(DriverError::retryable(format!("fake BMC `{host}`: {e}"))),
        }
    }

    fn put(&self, host: &str, record: &FakeBmcRecord) -> Result<(), DriverError> {
        if self.read_only {
            return Err(DriverError::invalid("a dry run changes nothing"));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| DriverError::retryable(e.to_string()))?;
        // Write then rename, so a crash never leaves half a file.
        let path = self.file(host);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(record).expect("records serialize");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| DriverError::retryable(format!("fake BMC `{host}`: {e}")))
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

    /// Every call: wait the configured latency, maybe fail, then read the BMC.
    async fn call(&self, node: &Node, kind: &str) -> Result<FakeBmcRecord, DriverError> {
        let tuning =
            FakeTuning::parse(node.bmc.address.query.as_deref()).map_err(DriverError::invalid)?;
        if !tuning.latency.is_zero() {
            tokio::time::sleep(tuning.latency).await;
        }
        let p = tuning
            .fail
            .get(kind)
            .or_else(|| tuning.fail.get("any"))
            .copied()
            .unwrap_or(0.0);
        if tuning.panic.iter().any(|k| k == kind || k == "any") {
            panic!("injected {kind} panic");
        }
        if p > 0.0 && fastrand::f64() < p {
            return Err(DriverError::retryable(format!("injected {kind} fault")));
        }
        let record = self.bmcs.get(Self::host(node))?;
        if record.unreachable {
            return Err(DriverError::retryable(format!(
                "fake BMC `{}` does not answer",
                Self::host(node)
            )));
        }
        Ok(record)
    }
}

#[async_trait]
impl Inspect for FakeDriver {
    /// A small, fixed machine with one NIC whose MAC derives from the host.
    async fn inspect(&self, node: &Node) -> Result<serde_json::Value, DriverError> {
        self.call(node, "inspect").await?;
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
        let mut bmc = self.call(node, "deploy").await?;
        bmc.boot_device = Some(BootDevice::Disk);
        bmc.power = PowerState::On;
        self.bmcs.put(Self::host(node), &bmc)
    }
}

#[async_trait]
impl Bios for FakeDriver {
    async fn apply_configuration(
        &self,
        node: &Node,
        settings: &serde_json::Value,
    ) -> Result<(), DriverError> {
        let mut bmc = self.call(node, "bios").await?;
        let settings = settings
            .as_array()
            .ok_or_else(|| DriverError::invalid("`settings` must be a list of {name, value}"))?;
        for setting in settings {
            let name = setting
                .get("name")
                .and_then(|n| n.as_str())
                .ok_or_else(|| DriverError::invalid("every setting needs a `name`"))?;
            let value = setting
                .get("value")
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            bmc.bios.insert(name.to_string(), value);
        }
        self.bmcs.put(Self::host(node), &bmc)
    }

    async fn factory_reset(&self, node: &Node) -> Result<(), DriverError> {
        let mut bmc = self.call(node, "bios").await?;
        bmc.bios.clear();
        self.bmcs.put(Self::host(node), &bmc)
    }
}

#[async_trait]
impl Boot for FakeDriver {
    async fn insert_media(&self, node: &Node, image: &str) -> Result<(), DriverError> {
        let mut bmc = self.call(node, "boot").await?;
        bmc.virtual_media = Some(image.to_string());
        self.bmcs.put(Self::host(node), &bmc)
    }

    async fn eject_media(
        &self,
        node: &Node,
        _device: Option<&str>,
    ) -> Result<serde_json::Value, DriverError> {
        let mut bmc = self.call(node, "boot").await?;
        let ejected = bmc.virtual_media.take();
        self.bmcs.put(Self::host(node), &bmc)?;
        Ok(serde_json::json!({ "ejected": ejected.map(|_| vec!["Cd"]).unwrap_or_default() }))
    }
}

#[async_trait]
impl Vendor for FakeDriver {
    /// Ironic's FakeVendorB: each method answers whether `bar` has its word.
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
        Ok(self.call(node, "power").await?.power)
    }

    async fn set_power_state(
        &self,
        node: &Node,
        target: PowerState,
        _timeout: Duration,
    ) -> Result<(), DriverError> {
        let mut bmc = self.call(node, "power").await?;
        if bmc.power != target {
            bmc.power = target;
            self.bmcs.put(Self::host(node), &bmc)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Management for FakeDriver {
    async fn get_boot_device(&self, node: &Node) -> Result<Option<BootDevice>, DriverError> {
        Ok(self.call(node, "management").await?.boot_device)
    }

    async fn set_boot_device(
        &self,
        node: &Node,
        device: BootDevice,
        _persistent: bool,
    ) -> Result<(), DriverError> {
        let mut bmc = self.call(node, "management").await?;
        bmc.boot_device = Some(device);
        self.bmcs.put(Self::host(node), &bmc)
    }

    async fn get_boot_mode(&self, node: &Node) -> Result<Option<BootMode>, DriverError> {
        Ok(self.call(node, "management").await?.boot_mode)
    }

    async fn set_boot_mode(&self, node: &Node, mode: BootMode) -> Result<(), DriverError> {
        let mut bmc = self.call(node, "management").await?;
        bmc.boot_mode = Some(mode);
        self.bmcs.put(Self::host(node), &bmc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
