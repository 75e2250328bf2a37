//! Exec plugins: an out-of-tree interface is a program rivet runs once per
//! call, with one JSON request on stdin and one JSON response on stdout.
//! See docs/PLUGINS.md for the protocol.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use async_trait::async_trait;

use super::scrub::Secrets;
use super::{DriverError, ErrorKind, Vendor, fence};
use crate::model::node::Node;

/// One plugin program.
#[derive(Debug, Clone)]
pub struct ExecPlugin {
    pub command: Vec<String>,
    /// Relative program paths are resolved against the fleet directory.
    pub root: PathBuf,
    pub timeout: Duration,
    /// Declared `needs_secrets = true`: the request carries `bmc.password`.
    pub needs_secrets: bool,
}

/// The most rivet reads of a plugin's stdout, and of its stderr.
pub const MAX_OUTPUT: usize = 4 << 20;

/// Kills a plugin's whole process group when the call ends, so nothing it
/// started outlives a timeout, an aborted step or a shutdown.
struct ProcessGroup(u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: killpg(2) on the group the plugin leads; a group that is
        // already gone only yields ESRCH.
        unsafe {
            libc::killpg(self.0 as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// What a plugin sees of a node: no secret (see `ExecPlugin::call`).
pub fn node_document(node: &Node) -> Value {
    json!({
        "name": node.name,
        "uuid": node.uuid.to_string(),
        "driver": node.driver,
        "interfaces": node.interface_map(),
        "bmc": { "address": node.bmc.address.to_string(), "username": node.bmc.username },
        "traits": node.traits,
        "instance": node.instance,
    })
}

impl ExecPlugin {
    fn program(&self) -> PathBuf {
        let program = Path::new(&self.command[0]);
        if self.command[0].contains('/') && program.is_relative() {
            // Absolute, because the plugin runs with the fleet directory as
            // its working directory.
            let joined = self.root.join(program);
            std::path::absolute(&joined).unwrap_or(joined)
        } else {
            program.to_path_buf()
        }
    }

    /// Run `call` (e.g. `vendor.passthru`) and return the plugin's `ok` value.
    /// A plugin that declared `needs_secrets` also gets the node's BMC
    /// password as `node.bmc.password`, on its stdin only: never in its
    /// arguments, environment, rivet's logs or errors.
    pub async fn call(&self, call: &str, node: &Node, args: Value) -> Result<Value, DriverError> {
        let mut document = node_document(node);
        let mut secrets = Secrets::default();
        if self.needs_secrets
            && let Some(password) = super::secret::bmc_password(node, &self.root)?
        {
            // What the plugin says may repeat what it was given.
            secrets = Secrets::login(node.bmc.username.as_deref(), Some(&password));
            document["bmc"]["password"] = Value::String(password);
        }
        self.request(call, document, args, &secrets).await
    }

    /// Run a call that concerns no node (driver-level vendor passthru):
    /// the plugin gets `"node": null`.
    pub async fn call_without_node(&self, call: &str, args: Value) -> Result<Value, DriverError> {
        self.request(call, Value::Null, args, &Secrets::default())
            .await
    }

    /// One call; everything the plugin says is scrubbed of `secrets`.
    /// Every call is fenced: the protocol has no call that only reads
    /// (deploy steps and passthru methods may do anything), so each checks
    /// the fence just before the program starts and may run no longer than
    /// the time left on the lease.
    async fn request(
        &self,
        call: &str,
        node: Value,
        args: Value,
        secrets: &Secrets,
    ) -> Result<Value, DriverError> {
        let request = json!({ "version": 1, "call": call, "node": node, "args": args });
        let program = self.program();
        let timeout = fence::check(call)?.cap(self.timeout);
        let mut child = tokio::process::Command::new(&program)
            .args(&self.command[1..])
            .current_dir(&self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so what it starts is stopped with it.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                DriverError::fatal(format!("cannot run plugin {}: {e}", program.display()))
            })?;
        let _group = child.id().map(ProcessGroup);
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr_pipe = child.stderr.take().expect("piped");
        let body = serde_json::to_vec(&request).expect("requests serialize");
        let talk = async {
            // A plugin that exits without reading its request is its own
            // error, reported from its exit status below.
            let _ = stdin.write_all(&body).await;
            drop(stdin);
            let mut out = Vec::new();
            let mut err = Vec::new();
            let limit = MAX_OUTPUT as u64 + 1;
            let mut out_pipe = (&mut stdout).take(limit);
            let mut err_pipe = (&mut stderr_pipe).take(limit);
            let _ = tokio::join!(
                out_pipe.read_to_end(&mut out),
                err_pipe.read_to_end(&mut err),
            );
            if out.len() > MAX_OUTPUT || err.len() > MAX_OUTPUT {
                return Err(DriverError::fatal(format!(
                    "plugin {} wrote more than {} MiB and was killed; rivet reads at most that much",
                    program.display(),
                    MAX_OUTPUT >> 20
                )));
            }
            Ok((out, err, child.wait().await))
        };
        let outcome = tokio::time::timeout(timeout, talk).await;
        let (out, err, status) = match outcome {
            Ok(Ok(done)) => done,
            Ok(Err(too_much)) => return Err(too_much),
            Err(_) => {
                // Kill and reap it: a plugin that overran must not linger.
                let _ = child.kill().await;
                return Err(DriverError::retryable(format!(
                    "plugin {} did not answer within {} and was killed",
                    program.display(),
                    humantime::format_duration(timeout)
                )));
            }
        };
        let status =
            status.map_err(|e| DriverError::fatal(format!("plugin {}: {e}", program.display())))?;
        let output = std::process::Output {
            status,
            stdout: out,
            stderr: err,
        };
        let stderr = secrets.message(&String::from_utf8_lossy(&output.stderr));
        let with_stderr = |message: String| {
            if stderr.is_empty() {
                message
            } else {
                format!("{message}; stderr: {stderr}")
            }
        };
        if !output.status.success() {
            return Err(DriverError::fatal(with_stderr(format!(
                "plugin {} failed ({})",
                program.display(),
                output.status
            ))));
        }
        let mut response: Value = serde_json::from_slice(&output.stdout).map_err(|e| {
            DriverError::fatal(with_stderr(format!(
                "plugin {} answered with something that is not JSON: {e}",
                program.display()
            )))
        })?;
        secrets.scrub_json(&mut response);
        if let Some(ok) = response.get("ok") {
            return Ok(ok.clone());
        }
        if let Some(error) = response.get("error") {
            let kind = match error.get("kind").and_then(Value::as_str) {
                Some("retryable") => ErrorKind::Retryable,
                Some("invalid") => ErrorKind::Invalid,
                _ => ErrorKind::Fatal,
            };
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the plugin reported an error without a message");
            return Err(DriverError {
                kind,
                message: with_stderr(secrets.message(message)),
            });
        }
        Err(DriverError::fatal(format!(
            "plugin {} answered neither `ok` nor `error`",
            program.display()
        )))
    }
}

#[async_trait]
impl Vendor for ExecPlugin {
    async fn passthru(
        &self,
        node: &Node,
        method: &str,
        http_method: &str,
        args: Value,
    ) -> Result<Value, DriverError> {
        let request = json!({ "method": method, "http_method": http_method, "args": args });
        self.call("vendor.passthru", node, request).await
    }
}
