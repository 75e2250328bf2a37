//! How the booted deploy ramdisk appears when rivet powers a node on: a
//! boot simulator over fake-hardware's BMCs. Shared by the tests and the
//! benchmarks through `#[path]`.
//!
//! The decision: a fake BMC has no machine behind it, so [`RamdiskBoots`]
//! plays the machine. It tails the fake BMCs' call log (`calls.jsonl` in
//! `[conductor] fake_bmc_dir`, one [`CallLine`] per change a BMC accepted,
//! read every 20 ms) and, for each node it is given:
//!
//! - an accepted power-on of a node that is off, with the BMC's boot device
//!   network (`pxe`) or `cdrom`, boots the deploy ramdisk: a fresh
//!   [`IpaBed`] in that node's run root, with the node's MAC, looking itself
//!   up at the API URL given (rivet's). A fresh boot has a fresh, zeroed
//!   disk: the disk tests read is the last boot's;
//! - an accepted power-off of a node that is on cuts its power: the
//!   ramdisk dies (`ipa-down.sh`; the agent may have exited already, after
//!   `standby.power_off`), its disk, log and state are kept;
//! - a reboot is a power-off then a power-on;
//! - a power-on with any other boot device (`disk`: the instance boots,
//!   `bios`) starts no bed, and is recorded as a boot all the same;
//! - a power-on of a node already on, or a power-off of one already off,
//!   changes nothing (the BMC logs every call, also one that finds it as
//!   asked).
//!
//! The power state and boot device start as the BMC's JSON says when the
//! watch begins; after that they follow the call log only (an edit of the
//! JSON behind rivet's back is not seen), and only calls logged after the
//! watch began count. Each node has its own thread, so nodes boot side by
//! side and one node's events are handled in the BMC's order. Dropping the
//! simulator stops every bed.

// Each user takes the part it needs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rivet::driver::fake::{CallLine, FakeBmcDir, FakeBmcs};
use rivet::vocab::{BootDevice, PowerState};

use super::ipa_bed::{self, BedInfo, BedSettings, IpaBed};

/// How often the call log is read for new lines.
const POLL: Duration = Duration::from_millis(20);

/// A node whose boots are simulated.
#[derive(Debug, Clone)]
pub struct SimNode {
    /// The node's name, as call lines name it.
    pub node_name: String,
    /// Its fake BMC's host (`fake://HOST`), naming the BMC's JSON file.
    pub bmc_host: String,
    /// The MAC its ramdisk looks itself up by.
    pub mac: String,
    /// Its beds' directory, reused by every boot.
    pub run_root: PathBuf,
}

/// What a boot brought up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Booted {
    /// The ramdisk is starting (`ipa-up.sh` runs).
    Starting,
    /// The ramdisk's agent runs (or ran, once the boot ended).
    Ramdisk(BedInfo),
    /// `ipa-up.sh` failed: why.
    Failed(String),
    /// Not a network or cdrom boot: no ramdisk (the instance, from disk).
    NoRamdisk,
}

/// One power-on of a node.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The boot device it booted from (`None`: never set).
    pub device: Option<BootDevice>,
    /// When the BMC accepted the power-on (its call line's `start_ns`).
    pub accepted_ns: u64,
    /// When the simulator read that line.
    pub seen_at: Instant,
    pub booted: Booted,
    /// When the ramdisk was up (`ipa-up.sh` returned).
    pub up_at: Option<Instant>,
    /// When the power went away and the ramdisk was stopped, with
    /// `ipa-down.sh`'s summary or failure.
    pub ended: Option<(Instant, Result<String, String>)>,
}

impl Boot {
    /// The ramdisk's bed, if this boot brought one up.
    pub fn bed(&self) -> Option<&BedInfo> {
        match &self.booted {
            Booted::Ramdisk(info) => Some(info),
            _ => None,
        }
    }
}

/// What the call log asks of a node's machine.
enum Action {
    Boot {
        device: Option<BootDevice>,
        accepted_ns: u64,
        seen_at: Instant,
    },
    CutPower,
}

type Boots = Arc<Mutex<BTreeMap<String, Vec<Boot>>>>;

pub struct RamdiskBoots {
    boots: Boots,
    errors: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    watcher: Option<JoinHandle<()>>,
    machines: Vec<JoinHandle<()>>,
}

/// What the watcher knows of one node's BMC.
struct Tracked {
    on: bool,
    device: Option<BootDevice>,
    machine: Sender<Action>,
}

impl RamdiskBoots {
    /// Simulate the boots of `nodes`, whose fake BMCs are in
    /// `fake_bmc_dir`; their ramdisks look themselves up at `api_url`.
    pub fn watch(fake_bmc_dir: &Path, api_url: &str, nodes: Vec<SimNode>) -> Self {
        Self::watch_with(fake_bmc_dir, api_url, nodes, BedSettings::default())
    }

    /// [`watch`](Self::watch), every bed started with `settings`.
    pub fn watch_with(
        fake_bmc_dir: &Path,
        api_url: &str,
        nodes: Vec<SimNode>,
        settings: BedSettings,
    ) -> Self {
        let bmcs = FakeBmcDir::new(fake_bmc_dir.to_path_buf(), true);
        let log_path = bmcs.call_log();
        let start = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let boots: Boots = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tracked = BTreeMap::new();
        let mut machines = Vec::new();
        for node in nodes {
            let record = bmcs.get(&node.bmc_host).unwrap_or_default();
            let (machine, actions) = channel();
            boots
                .lock()
                .unwrap()
                .insert(node.node_name.clone(), Vec::new());
            tracked.insert(
                node.node_name.clone(),
                Tracked {
                    on: record.power != PowerState::Off,
                    device: record.boot_device,
                    machine,
                },
            );
            let (boots, api_url, settings) =
                (Arc::clone(&boots), api_url.to_string(), settings.clone());
            machines.push(std::thread::spawn(move || {
                run_machine(&node, &api_url, &settings, &actions, &boots);
            }));
        }
        let watcher = {
            let (stop, errors) = (Arc::clone(&stop), Arc::clone(&errors));
            std::thread::spawn(move || watch_log(&log_path, start, tracked, &stop, &errors))
        };
        Self {
            boots,
            errors,
            stop,
            watcher: Some(watcher),
            machines,
        }
    }

    /// A node's boots, oldest first.
    pub fn boots(&self, node: &str) -> Vec<Boot> {
        self.boots
            .lock()
            .unwrap()
            .get(node)
            .cloned()
            .unwrap_or_default()
    }

    /// The bed of the node's ramdisk while it runs: its last boot brought
    /// one up and the power has not gone away since.
    pub fn bed(&self, node: &str) -> Option<BedInfo> {
        let boots = self.boots(node);
        let last = boots.last()?;
        last.ended.is_none().then(|| last.bed().cloned()).flatten()
    }

    /// The bed of the node's last ramdisk, running or not: whose disk,
    /// log and state are in the node's run root.
    pub fn last_bed(&self, node: &str) -> Option<BedInfo> {
        self.boots(node).iter().rev().find_map(|b| b.bed().cloned())
    }

    /// The bytes of the last ramdisk's disk, as they are now.
    pub fn disk(&self, node: &str) -> Option<Vec<u8>> {
        let info = self.last_bed(node)?;
        std::fs::read(&info.disk_image).ok()
    }

    /// Poll until `ready` holds for the node's boots, failing after
    /// `within`; the boots then.
    pub fn wait_for(
        &self,
        node: &str,
        what: &str,
        within: Duration,
        ready: impl Fn(&[Boot]) -> bool,
    ) -> Vec<Boot> {
        ipa_bed::eventually(&format!("node {node}: {what}"), within, || {
            let boots = self.boots(node);
            if ready(&boots) {
                Ok(boots)
            } else {
                Err(format!("boots {boots:#?}; errors {:?}", self.errors()))
            }
        })
    }

    /// Call log lines the simulator could not read.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

impl Drop for RamdiskBoots {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The watcher's end closes every machine's channel: each stops its
        // bed and ends.
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
        for machine in self.machines.drain(..) {
            let _ = machine.join();
        }
    }
}

/// A node's machine: boots and power cuts in the BMC's order.
fn run_machine(
    node: &SimNode,
    api_url: &str,
    settings: &BedSettings,
    actions: &Receiver<Action>,
    boots: &Boots,
) {
    let update = |f: &mut dyn FnMut(&mut Boot)| {
        if let Some(last) = boots
            .lock()
            .unwrap()
            .get_mut(&node.node_name)
            .and_then(|b| b.last_mut())
        {
            f(last);
        }
    };
    let mut bed: Option<IpaBed> = None;
    for action in actions {
        match action {
            Action::Boot {
                device,
                accepted_ns,
                seen_at,
            } => {
                let ramdisk = matches!(device, Some(BootDevice::Pxe | BootDevice::Cdrom));
                boots
                    .lock()
                    .unwrap()
                    .entry(node.node_name.clone())
                    .or_default()
                    .push(Boot {
                        device,
                        accepted_ns,
                        seen_at,
                        booted: if ramdisk {
                            Booted::Starting
                        } else {
                            Booted::NoRamdisk
                        },
                        up_at: None,
                        ended: None,
                    });
                if !ramdisk {
                    continue;
                }
                match IpaBed::up_with(&node.run_root, api_url, &node.mac, settings) {
                    Ok(up) => {
                        let info = up.info.clone();
                        bed = Some(up);
                        update(&mut |b| {
                            b.booted = Booted::Ramdisk(info.clone());
                            b.up_at = Some(Instant::now());
                        });
                    }
                    Err(why) => update(&mut |b| b.booted = Booted::Failed(why.clone())),
                }
            }
            Action::CutPower => {
                let summary = match bed.take() {
                    Some(mut running) => running.down(),
                    None => Ok("no ramdisk running".to_string()),
                };
                update(&mut |b| b.ended = Some((Instant::now(), summary.clone())));
            }
        }
    }
    // The simulator stops: power is lost.
    if let Some(mut running) = bed.take() {
        let _ = running.down();
    }
    let _ = ipa_bed::down(&node.run_root);
}

/// Tail the call log from `offset` until `stop`, turning each accepted
/// change of a tracked node into its machine's actions.
fn watch_log(
    path: &Path,
    mut offset: u64,
    mut tracked: BTreeMap<String, Tracked>,
    stop: &AtomicBool,
    errors: &Mutex<Vec<String>>,
) {
    let mut partial = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let fresh = read_from(path, &mut offset);
        partial.extend_from_slice(&fresh);
        while let Some(end) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            match serde_json::from_slice::<CallLine>(&line) {
                Ok(call) => apply(&call, &mut tracked),
                Err(e) => errors.lock().unwrap().push(format!(
                    "{}: {e}: {}",
                    path.display(),
                    String::from_utf8_lossy(&line).trim_end()
                )),
            }
        }
        if fresh.is_empty() {
            std::thread::sleep(POLL);
        }
    }
}

/// What the log holds past `offset`, moving `offset` past it.
fn read_from(path: &Path, offset: &mut u64) -> Vec<u8> {
    let mut fresh = Vec::new();
    let Ok(mut file) = std::fs::File::open(path) else {
        return fresh;
    };
    if file.seek(SeekFrom::Start(*offset)).is_ok()
        && let Ok(n) = file.read_to_end(&mut fresh)
    {
        *offset += n as u64;
    }
    fresh
}

/// A change a call line makes to a BMC that a boot depends on.
enum Change {
    Power(PowerState),
    BootDevice(BootDevice),
}

/// The change `op` names (`set_power_state:power on`,
/// `set_boot_device:pxe`), in the fake driver's own words.
fn change_of(op: &str) -> Option<Change> {
    if let Some(device) = op.strip_prefix("set_boot_device:") {
        return serde_json::from_value(serde_json::Value::String(device.to_string()))
            .ok()
            .map(Change::BootDevice);
    }
    let power = op.strip_prefix("set_power_state:")?;
    [PowerState::On, PowerState::Off, PowerState::Rebooting]
        .into_iter()
        .find(|state| state.as_str() == power)
        .map(Change::Power)
}

/// One call line: what it changes of a tracked node's machine. A send
/// fails only once the simulator ends, when nothing boots any more.
fn apply(call: &CallLine, tracked: &mut BTreeMap<String, Tracked>) {
    if call.refused.is_some() {
        return;
    }
    let (Some(node), Some(change)) = (tracked.get_mut(&call.node), change_of(&call.op)) else {
        return;
    };
    let boot = |device| Action::Boot {
        device,
        accepted_ns: call.start_ns,
        seen_at: Instant::now(),
    };
    match change {
        Change::BootDevice(device) => node.device = Some(device),
        Change::Power(PowerState::On) => {
            if !node.on {
                node.on = true;
                let _ = node.machine.send(boot(node.device));
            }
        }
        Change::Power(PowerState::Off) => {
            if node.on {
                node.on = false;
                let _ = node.machine.send(Action::CutPower);
            }
        }
        Change::Power(PowerState::Rebooting) => {
            if node.on {
                let _ = node.machine.send(Action::CutPower);
            }
            node.on = true;
            let _ = node.machine.send(boot(node.device));
        }
    }
}
