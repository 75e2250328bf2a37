//! The deploy-ramdisk bed's reference Ironic side
//! (`tests/testbeds/ipa/reference/fake_ironic.py`, run by the bed's venv
//! Python): lookup, Ironic's token rules and heartbeats for the nodes it is
//! given, and its test-only state. What proves the bed without rivet, and a
//! yardstick for rivet's own answers. Shared by the tests and the
//! benchmarks through `#[path]`.

// Each user takes the part it needs.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ipa_bed;

/// How long the reference may take to write its port (two shared cores).
const READY_WITHIN: Duration = Duration::from_secs(30);

pub struct FakeIronic {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
    http: reqwest::blocking::Client,
}

impl FakeIronic {
    /// A fresh fake Ironic on a free port that knows `nodes` (UUID, MAC).
    pub fn start(nodes: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port_file = dir.path().join("port");
        let log = std::fs::File::create(dir.path().join("ironic.out")).unwrap();
        let mut command = Command::new(ipa_bed::python());
        command
            .arg(ipa_bed::bed_dir().join("reference/fake_ironic.py"))
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .arg("--log")
            .arg(dir.path().join("requests.jsonl"));
        for (uuid, mac) in nodes {
            command.arg("--node").arg(format!("{uuid}={mac}"));
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", ipa_bed::python().display()));
        let deadline = Instant::now() + READY_WITHIN;
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.trim().parse::<u16>().ok())
            {
                break port;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "fake_ironic.py exited with {status}: {}",
                    std::fs::read_to_string(dir.path().join("ironic.out")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("fake_ironic.py wrote no port within {READY_WITHIN:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
            dir,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// `GET /_test/state`: per node its token, callback_url,
    /// agent_version, lookups, heartbeats, first_heartbeat_at (Unix time)
    /// and rejected heartbeats.
    pub fn state(&self) -> serde_json::Value {
        let url = format!("{}/_test/state", self.url);
        self.http
            .get(&url)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// One node's part of [`state`](Self::state).
    pub fn node(&self, uuid: &str) -> serde_json::Value {
        self.state()["nodes"][uuid].clone()
    }

    /// Forget a node's agent token and callback URL, as Ironic does on
    /// every power off and reboot: the next boot's lookup gets a new one.
    pub fn wipe_token(&self, uuid: &str) {
        let url = format!("{}/_test/nodes/{uuid}/wipe_token", self.url);
        let status = self
            .http
            .post(&url)
            .send()
            .unwrap_or_else(|e| panic!("POST {url}: {e}"))
            .status();
        assert_eq!(status.as_u16(), 204, "POST {url}");
    }

    /// Poll until `node`'s state satisfies `ready`, failing after `within`.
    pub fn wait_for(
        &self,
        uuid: &str,
        what: &str,
        within: Duration,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        ipa_bed::eventually(&format!("node {uuid}: {what}"), within, || {
            let node = self.node(uuid);
            if ready(&node) {
                Ok(node)
            } else {
                Err(node.to_string())
            }
        })
    }

    /// Every request it answered, one JSON document each.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.requests_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn requests_path(&self) -> PathBuf {
        self.dir.path().join("requests.jsonl")
    }
}

impl Drop for FakeIronic {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
