//! Several `rivet daemon` processes on one fleet directory, one etcd, and
//! fake BMCs shared in one directory with their call log: what the cluster
//! tests check and the cluster benchmark times. Shared by both through
//! `#[path]`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::daemon_process::DaemonProcess;

/// One fleet and its hosts' state directories.
pub struct ClusterBed {
    pub root: tempfile::TempDir,
    pub ttl: Duration,
    pub nodes: usize,
    http: reqwest::blocking::Client,
}

/// A fleet of `nodes` fake nodes at `latency` per BMC call, desired active,
/// in chains of `chain` (each node but a chain's first depends on the one
/// before), on etcd at `etcd` with `lease_ttl = ttl`.
pub struct Fleet<'a> {
    pub nodes: usize,
    pub latency: &'a str,
    pub chain: usize,
    pub ttl: &'a str,
    pub etcd: &'a str,
    /// Extra `[conductor]` lines.
    pub conductor: &'a str,
}

impl ClusterBed {
    pub fn new(fleet: &Fleet) -> Self {
        let root = tempfile::tempdir().expect("a temporary directory");
        let dir = root.path().join("fleet");
        std::fs::create_dir_all(dir.join("nodes")).unwrap();
        std::fs::write(
            dir.join("rivet.toml"),
            format!(
                "[conductor]\nfake_bmc_dir = \"../bmcs\"\npower_sync_interval = \"1h\"\n{}\n\n[cluster]\netcd = [\"{}\"]\nlease_ttl = \"{}\"\n",
                fleet.conductor, fleet.etcd, fleet.ttl
            ),
        )
        .unwrap();
        let mut text = String::new();
        for i in 0..fleet.nodes {
            let depends = if fleet.chain > 1 && i % fleet.chain != 0 {
                format!("depends_on = [\"n{:05}\"]\n", i - 1)
            } else {
                String::new()
            };
            text.push_str(&format!(
                "[[node]]\nname = \"n{i:05}\"\ndriver = \"fake-hardware\"\nbmc = {{ address = \"fake://n{i:05}?latency={}\" }}\n{depends}desired = {{ provision = \"active\", power = \"on\" }}\n\n",
                fleet.latency
            ));
        }
        std::fs::write(dir.join("nodes/fleet.toml"), text).unwrap();
        let ttl = humantime::parse_duration(fleet.ttl).unwrap();
        Self {
            root,
            ttl,
            nodes: fleet.nodes,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.root.path().join("fleet")
    }

    pub fn state(&self, host: &str) -> PathBuf {
        self.root.path().join(host).join("state.redb")
    }

    pub fn call_log(&self) -> PathBuf {
        self.root.path().join("bmcs/calls.jsonl")
    }

    /// Start the daemon of `host`, with its own state file and a free port.
    pub fn start(&self, host: &str) -> DaemonProcess {
        std::fs::create_dir_all(self.root.path().join(host)).unwrap();
        let state = self.state(host);
        DaemonProcess::start_with(
            &self.dir(),
            "info",
            &[],
            &[
                "--host",
                host,
                "--state",
                state.to_str().unwrap(),
                "--http",
                "127.0.0.1:0",
            ],
            Duration::from_secs(30),
        )
    }

    /// GET a JSON answer, whatever its status.
    pub fn get(&self, daemon: &DaemonProcess, path: &str) -> serde_json::Value {
        self.get_status(daemon, path).1
    }

    /// GET with the answer's status.
    pub fn get_status(&self, daemon: &DaemonProcess, path: &str) -> (u16, serde_json::Value) {
        let url = format!("http://{}{path}", daemon.http_addr());
        let answer = self
            .http
            .get(&url)
            .header("X-OpenStack-Ironic-API-Version", "1.95")
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = answer.status().as_u16();
        (status, answer.json().unwrap_or(serde_json::Value::Null))
    }

    /// Every node's (provision state, conductor) as `daemon` lists them,
    /// page by page.
    pub fn nodes(&self, daemon: &DaemonProcess) -> BTreeMap<String, (String, Option<String>)> {
        let mut all = BTreeMap::new();
        let mut marker = String::new();
        loop {
            let doc = self.get(
                daemon,
                &format!("/v1/nodes?fields=uuid,name,provision_state,conductor&limit=1000{marker}"),
            );
            let page = doc["nodes"].as_array().expect("a node list");
            for n in page {
                all.insert(
                    n["name"].as_str().unwrap().to_string(),
                    (
                        n["provision_state"].as_str().unwrap_or("").to_string(),
                        n["conductor"].as_str().map(str::to_string),
                    ),
                );
            }
            match page.last() {
                Some(last) if page.len() == 1000 => {
                    marker = format!("&marker={}", last["uuid"].as_str().unwrap());
                }
                _ => return all,
            }
        }
    }

    /// Wait until `check` holds, polling every 50 ms; panics at `within`
    /// with `what`.
    pub fn wait_until(&self, what: &str, within: Duration, check: impl FnMut() -> bool) -> Instant {
        self.wait_every(what, within, Duration::from_millis(50), check)
    }

    /// As `wait_until`, polling every `every` (a benchmark polls less, so
    /// its reads cost the daemons little).
    pub fn wait_every(
        &self,
        what: &str,
        within: Duration,
        every: Duration,
        mut check: impl FnMut() -> bool,
    ) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if check() {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting until {what}"
            );
            std::thread::sleep(every);
        }
    }
}

/// Unix time now in nanoseconds, the call log's clock.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Every line of a call log.
pub fn calls(path: &Path) -> Vec<rivet::driver::fake::CallLine> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("call log line {l}: {e}")))
        .collect()
}
