//! A `rivet daemon` child process whose JSON log lines are collected with
//! the moment each arrived: what the integration tests wait on and what the
//! benchmarks time. Shared by both through `#[path]`.

// Each user takes the part it needs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct DaemonProcess {
    pub child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl DaemonProcess {
    /// Start `rivet --log-format json daemon --http 127.0.0.1:0 DIR` with
    /// `RIVET_LOG=log` and `env`; returns once it logs `daemon ready`.
    pub fn start(dir: &Path, log: &str, env: &[(&str, &str)], ready_within: Duration) -> Self {
        Self::start_with(dir, log, env, &["--http", "127.0.0.1:0"], ready_within)
    }

    /// Start `rivet --log-format json daemon ARGS DIR`, as `start` does.
    pub fn start_with(
        dir: &Path,
        log: &str,
        env: &[(&str, &str)],
        args: &[&str],
        ready_within: Duration,
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rivet"));
        command
            .args(["--log-format", "json", "daemon"])
            .args(args)
            .arg(dir)
            .env("RIVET_LOG", log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("rivet daemon starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        let daemon = Self { child, lines };
        daemon.wait_for("ready", |l| l.contains("daemon ready"), ready_within);
        daemon
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// When the first line matching `pred` after `after` arrived.
    pub fn first_at(&self, pred: impl Fn(&str) -> bool, after: Instant) -> Option<Instant> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(at, l)| *at >= after && pred(l))
            .map(|(at, _)| *at)
    }

    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| pred(l))
            .count()
    }

    /// Wait until more than `already` lines match; returns when the
    /// `already + 1`-th arrived. Panics with the logs at the deadline or
    /// when the daemon exits.
    pub fn wait_for_more(
        &self,
        what: &str,
        already: usize,
        pred: impl Fn(&str) -> bool,
        within: Duration,
    ) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            let found = {
                let lines = self.lines.lock().unwrap();
                lines
                    .iter()
                    .filter(|(_, l)| pred(l))
                    .nth(already)
                    .map(|(at, _)| *at)
            };
            if let Some(at) = found {
                return at;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; logs:\n{}",
                self.logs().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool, within: Duration) -> Instant {
        self.wait_for_more(what, 0, pred, within)
    }

    /// The address the HTTP API listens on, from its log line.
    pub fn http_addr(&self) -> String {
        let listening = |l: &str| l.contains("\"message\":\"HTTP API listening\"");
        self.wait_for("the HTTP API", listening, Duration::from_secs(20));
        self.logs()
            .iter()
            .filter(|l| listening(l))
            .find_map(|l| {
                let doc: serde_json::Value = serde_json::from_str(l).ok()?;
                doc["fields"]["addr"].as_str().map(str::to_string)
            })
            .expect("the listening line names its address")
    }

    /// SIGTERM, expect exit status 0 within 30 s, and return every log line
    /// (what was left in the pipe included).
    pub fn stop(self) -> Vec<String> {
        self.stop_with(libc::SIGTERM)
    }

    /// `signal`, then as `stop`.
    pub fn stop_with(mut self, signal: i32) -> Vec<String> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "daemon exited with {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not stop on signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The reader thread ends at the pipe's end, dropping its handle.
        let drained = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.lines) > 1 && Instant::now() < drained {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.logs()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        // A test that failed half-way leaves no daemon behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
