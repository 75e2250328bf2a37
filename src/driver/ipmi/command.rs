//! Running `ipmitool` once against a node's BMC: the argument vector, the
//! password file, the per-BMC lane and its gap, and asking a busy BMC again.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::failure::{Failure, classify};
use super::{DEFAULT_PORT, IpmiDriver};
use crate::driver::secret::bmc_password;
use crate::driver::{DriverError, fence};
use crate::model::node::Node;

/// How long to wait before asking a busy BMC again, on top of the gap.
const BUSY_PAUSE: Duration = Duration::from_secs(1);

/// What `-v` adds to stderr on every call; left out of error messages.
const VERBOSE_CHATTER: [&str; 7] = [
    "Loading IANA PEN Registry",
    "Running Get VSO Capabilities",
    "Invalid completion code received",
    "Discovered IPMB address",
    "Get HPM.x Capabilities",
    "RAW REQ",
    "RAW RSP",
];

impl IpmiDriver {
    /// The node's BMC password, if it declares where one is.
    fn password(&self, node: &Node) -> Result<Option<Secret>, DriverError> {
        Ok(bmc_password(node, &self.root)?.map(Secret))
    }

    /// A private file holding the password, removed when dropped.
    fn password_file(&self, password: &Secret) -> Result<tempfile::NamedTempFile, DriverError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("rivet-ipmi-");
        // NamedTempFile creates the file with mode 0600 on Unix.
        let made = match &self.secret_dir {
            Some(dir) => builder.tempfile_in(dir),
            None => builder.tempfile(),
        };
        let mut file =
            made.map_err(|e| DriverError::retryable(format!("cannot make a password file: {e}")))?;
        file.write_all(password.0.as_bytes())
            .and_then(|()| file.flush())
            .map_err(|e| DriverError::retryable(format!("cannot write a password file: {e}")))?;
        Ok(file)
    }

    fn endpoint(node: &Node) -> (String, u16) {
        let address = &node.bmc.address;
        (address.host.clone(), address.port.unwrap_or(DEFAULT_PORT))
    }

    /// Run one ipmitool command that only reads (`power status`, `chassis
    /// bootparam get`) and return its stdout.
    pub(super) async fn run(&self, node: &Node, command: &[&str]) -> Result<String, DriverError> {
        self.run_command(node, command, Acts::Reads).await
    }

    /// Run one ipmitool command that changes something (power, bootdev,
    /// raw, mc reset): each run checks the fence just before ipmitool
    /// starts and may take no longer than the time left on the lease.
    pub(super) async fn run_change(
        &self,
        node: &Node,
        command: &[&str],
    ) -> Result<String, DriverError> {
        self.run_command(node, command, Acts::Changes).await
    }

    /// Run one ipmitool command against the node's BMC and return its
    /// stdout. A busy BMC is asked again until `retry_window` passes.
    async fn run_command(
        &self,
        node: &Node,
        command: &[&str],
        acts: Acts,
    ) -> Result<String, DriverError> {
        let password = self.password(node)?;
        let (host, port) = Self::endpoint(node);
        let lane = lane(&format!("{host}:{port}"));
        let started = Instant::now();
        loop {
            let attempt = {
                let mut last_done = lane.lock().await;
                if let Some(done) = *last_done {
                    tokio::time::sleep_until(done + self.min_command_interval).await;
                }
                let attempt = self
                    .run_once(node, &host, port, password.as_ref(), command, acts)
                    .await;
                *last_done = Some(Instant::now());
                attempt
            };
            match attempt {
                Err(Failure::Busy(message))
                    if started.elapsed() + BUSY_PAUSE + self.min_command_interval
                        < self.retry_window =>
                {
                    tracing::debug!(node = %node.name, %message, "BMC busy; asking again");
                    tokio::time::sleep(BUSY_PAUSE).await;
                }
                Err(failure) => return Err(failure.into_error(node, command)),
                Ok(stdout) => return Ok(stdout),
            }
        }
    }

    async fn run_once(
        &self,
        node: &Node,
        host: &str,
        port: u16,
        password: Option<&Secret>,
        command: &[&str],
        acts: Acts,
    ) -> Result<String, Failure> {
        let port = port.to_string();
        let mut args: Vec<&str> = vec!["-I", "lanplus", "-H", host, "-p", &port];
        if let Some(user) = &node.bmc.username {
            args.extend(["-U", user]);
        }
        let file = password
            .map(|p| self.password_file(p))
            .transpose()
            .map_err(Failure::Driver)?;
        let file_path = file
            .as_ref()
            .map(|f| f.path().to_string_lossy().into_owned());
        if let Some(path) = &file_path {
            args.extend(["-f", path]);
        }
        let suite = node.bmc.cipher_suite.map(|c| c.to_string());
        if let Some(suite) = &suite {
            // Without -C, ipmitool first asks for the cipher suites, which
            // some BMCs (ipmi_sim among them) never answer: 10 s lost per call.
            args.extend(["-C", suite]);
        }
        // -v: the only way to tell refused credentials from a BMC that does
        // not answer; both end in "Unable to establish IPMI v2 / RMCP+ session".
        args.extend(["-L", "ADMINISTRATOR", "-R", "1", "-N", "5", "-v"]);
        args.extend(command);
        tracing::debug!(node = %node.name, ?args, "ipmitool");

        let timeout = match acts {
            Acts::Reads => self.command_timeout,
            Acts::Changes => {
                let what = format!("ipmitool {}", command.join(" "));
                fence::check(&what)
                    .map_err(Failure::Driver)?
                    .cap(self.command_timeout)
            }
        };
        let child = tokio::process::Command::new(&self.program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Failure::Driver(DriverError::fatal(format!(
                    "{} is not installed: apt-get install ipmitool",
                    self.program.display()
                ))));
            }
            Err(e) => {
                return Err(Failure::Driver(DriverError::fatal(format!(
                    "cannot run {}: {e}",
                    self.program.display()
                ))));
            }
        };
        let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(Failure::NoAnswer(format!("ipmitool: {e}"))),
            Err(_) => {
                return Err(Failure::NoAnswer(format!(
                    "ipmitool did not finish within {} and was killed",
                    humantime::format_duration(timeout)
                )));
            }
        };
        drop(file);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = meaningful_stderr(&String::from_utf8_lossy(&output.stderr), password);
        classify(output.status.success(), stdout, stderr)
    }
}

/// Whether a command changes something, and so is fenced.
#[derive(Debug, Clone, Copy)]
enum Acts {
    Reads,
    Changes,
}

/// A password. Its `Debug` hides it, so it cannot reach a log by accident.
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(******)")
    }
}

/// What ipmitool said on stderr that matters: `-v` chatter dropped and, in
/// case a BMC or ipmitool ever echoes it, the password masked.
fn meaningful_stderr(stderr: &str, password: Option<&Secret>) -> String {
    let text = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !VERBOSE_CHATTER.iter().any(|c| line.starts_with(c)))
        .collect::<Vec<_>>()
        .join("; ");
    match password {
        // Masking a password of a few characters would mangle the text and
        // tell more about it than leaving it.
        Some(p) if p.0.len() >= 4 => text.replace(&p.0, "******"),
        _ => text,
    }
}

/// One BMC's turn: held while a command runs, holding when the last one ended.
type Lane = Arc<tokio::sync::Mutex<Option<Instant>>>;

/// The lane of the BMC at `key` (host:port). The table is process-wide
/// rather than per driver because a BMC's limits are its own: passes and
/// power-sync sweeps each build their own registry and may reach one BMC at
/// the same moment.
fn lane(key: &str) -> Lane {
    static LANES: OnceLock<Mutex<HashMap<String, Lane>>> = OnceLock::new();
    let mut lanes = LANES
        .get_or_init(Mutex::default)
        .lock()
        .expect("lane table");
    Arc::clone(lanes.entry(key.to_string()).or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_loses_verbose_chatter_and_the_password() {
        let secret = Secret("hunter22".into());
        let text = meaningful_stderr(
            "Loading IANA PEN Registry...\nDiscovered IPMB address 0x0\nbad hunter22 here\n",
            Some(&secret),
        );
        assert_eq!(text, "bad ****** here");
        assert_eq!(format!("{secret:?}"), "Secret(******)");
    }
}
