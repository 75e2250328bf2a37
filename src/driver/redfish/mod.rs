//! Redfish over HTTP(S) with reqwest and rustls: power, boot device and mode,
//! virtual media, BIOS settings, inspection, and the `eject_vmedia` passthru.
//!
//! One client per BMC, shared by every call to it. Authentication: a Redfish
//! session (X-Auth-Token) when the BMC has a SessionService, HTTP Basic
//! otherwise; a 401 on a session logs in again once.

mod bios;
mod client;
mod inspect;
mod management;
mod media;
mod power;
mod vendor;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::DriverError;
use super::secret::bmc_password;
use crate::backoff::Backoff;
use crate::model::node::Node;
use client::{Client, Login};

/// How long calls may take and how often transient failures are retried.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub connect: Duration,
    pub request: Duration,
    /// Attempts of one request on connection errors and 5xx answers.
    pub attempts: u32,
    /// The wait after the first failed attempt; it doubles after each.
    pub first_retry: Duration,
    /// Power state polling interval (it doubles up to 4× this).
    pub poll: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
            attempts: 4,
            first_retry: Duration::from_millis(250),
            poll: Duration::from_millis(250),
        }
    }
}

impl Timing {
    /// The wait after failed attempt `attempt` (from 1) of one request:
    /// `first_retry` doubling, without jitter. No cap is needed: `attempts`
    /// bounds it.
    fn retry_wait(&self, attempt: u32) -> Duration {
        let backoff = Backoff {
            base: self.first_retry,
            cap: Duration::MAX,
        };
        backoff.ceiling(attempt.saturating_sub(1))
    }
}

/// The Redfish power, management, boot, bios, inspect and vendor interfaces.
pub struct RedfishDriver {
    root: PathBuf,
    timing: Timing,
    clients: Mutex<HashMap<String, Arc<Client>>>,
    /// Requests in flight per endpoint (`scheme://host:port`), shared by
    /// every system behind it.
    endpoints: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// Logins (sessions) per endpoint and user, shared by the systems
    /// behind it: at most one session per BMC and user.
    logins: Mutex<HashMap<String, Arc<Login>>>,
}

/// Requests one BMC endpoint serves at once. Many systems can sit behind
/// one endpoint (a chassis manager, an aggregator); without a limit a large
/// converge overwhelms it.
const REQUESTS_PER_ENDPOINT: usize = 8;

impl RedfishDriver {
    pub fn new(root: PathBuf, timing: Timing) -> Self {
        Self {
            root,
            timing,
            clients: Mutex::new(HashMap::new()),
            endpoints: Mutex::new(HashMap::new()),
            logins: Mutex::new(HashMap::new()),
        }
    }

    /// Delete every session rivet holds (at shutdown).
    pub async fn close(&self) {
        let clients: Vec<Arc<Client>> = self
            .clients
            .lock()
            .expect("clients")
            .drain()
            .map(|(_, c)| c)
            .collect();
        self.logins.lock().expect("logins").clear();
        for client in clients {
            client.log_out().await;
        }
    }

    /// Forget the clients of BMCs no node in `kept` uses any more, deleting
    /// their sessions (a node left the fleet or moved to another BMC).
    pub async fn retain(&self, kept: &[&Node]) {
        let keys: std::collections::HashSet<String> = kept.iter().map(|n| key(n).1).collect();
        let gone: Vec<Arc<Client>> = {
            let mut clients = self.clients.lock().expect("clients");
            let gone_keys: Vec<String> = clients
                .keys()
                .filter(|k| !keys.contains(*k))
                .cloned()
                .collect();
            gone_keys.iter().filter_map(|k| clients.remove(k)).collect()
        };
        let still: std::collections::HashSet<String> = self
            .clients
            .lock()
            .expect("clients")
            .values()
            .map(|c| login_key(&c.base, c.username.as_deref()))
            .collect();
        for client in gone {
            let login = login_key(&client.base, client.username.as_deref());
            if !still.contains(&login) {
                self.logins.lock().expect("logins").remove(&login);
                client.log_out().await;
            }
        }
    }

    fn client(&self, node: &Node) -> Result<Arc<Client>, DriverError> {
        let address = &node.bmc.address;
        let (base, key) = key(node);
        if let Some(client) = self.clients.lock().expect("clients").get(&key) {
            return Ok(Arc::clone(client));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.timing.connect)
            .timeout(self.timing.request)
            .redirect(client::redirect_policy())
            .no_proxy();
        if address.tls {
            if !node.bmc.verify_tls {
                builder = builder.tls_danger_accept_invalid_certs(true);
            } else if let Some(ca) = &node.bmc.ca_file {
                let path = if ca.is_relative() {
                    self.root.join(ca)
                } else {
                    ca.clone()
                };
                let pem = std::fs::read(&path).map_err(|e| {
                    DriverError::fatal(format!("cannot read the CA file {}: {e}", path.display()))
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    DriverError::fatal(format!("{} holds no PEM certificate: {e}", path.display()))
                })?;
                builder = builder.tls_certs_only(certs);
            }
        }
        let http = builder
            .build()
            .map_err(|e| DriverError::fatal(format!("cannot set up an HTTPS client: {e}")))?;
        let system = tokio::sync::OnceCell::new();
        if !address.path.is_empty() {
            let _ = system.set(address.path.clone());
        }
        let in_flight = Arc::clone(
            self.endpoints
                .lock()
                .expect("endpoints")
                .entry(base.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(REQUESTS_PER_ENDPOINT))),
        );
        let password = bmc_password(node, &self.root)?;
        let login = Arc::clone(
            self.logins
                .lock()
                .expect("logins")
                .entry(login_key(&base, node.bmc.username.as_deref()))
                .or_insert_with(|| {
                    Arc::new(Login::new(
                        node.bmc.username.as_deref(),
                        password.as_deref(),
                    ))
                }),
        );
        let client = Arc::new(Client {
            in_flight,
            http,
            base,
            system,
            username: node.bmc.username.clone(),
            password,
            login,
            timing: self.timing,
        });
        self.clients
            .lock()
            .expect("clients")
            .insert(key, Arc::clone(&client));
        Ok(client)
    }
}

/// A node's BMC endpoint (`scheme://host[:port]`) and the key of its client.
fn key(node: &Node) -> (String, String) {
    let address = &node.bmc.address;
    let scheme = if address.tls { "https" } else { "http" };
    let base = match address.port {
        Some(port) => format!("{scheme}://{}:{port}", address.host),
        None => format!("{scheme}://{}", address.host),
    };
    let key = format!(
        "{base}|{}|{}",
        node.bmc.username.as_deref().unwrap_or(""),
        address.path
    );
    (base, key)
}

fn login_key(base: &str, username: Option<&str>) -> String {
    format!("{base}|{}", username.unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_retried_from_first_retry_doubling_without_jitter() {
        let timing = Timing::default();
        let waits: Vec<Duration> = (1..timing.attempts)
            .map(|attempt| timing.retry_wait(attempt))
            .collect();
        assert_eq!(waits, [250, 500, 1000].map(Duration::from_millis));
    }
}
