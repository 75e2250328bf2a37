//! Redfish over HTTP(S) with reqwest and rustls: power, boot device and mode,
//! virtual media, BIOS settings, inspection, and the `eject_vmedia` passthru.
//!
//! One client per BMC, shared by every call to it. Authentication: a Redfish
//! session (X-Auth-Token) when the BMC has a SessionService, HTTP Basic
//! otherwise; a 401 on a session logs in again once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::secret::bmc_password;
use super::{Bios, Boot, DriverError, Inspect, Management, Power, Vendor};
use crate::model::node::Node;
use crate::vocab::{BootDevice, BootMode, PowerState};

/// How long calls may take and how often transient failures are retried.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub connect: Duration,
    pub request: Duration,
    /// Attempts of one request on connection errors and 5xx answers.
    pub attempts: u32,
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

/// The Redfish power, management, boot, bios, inspect and vendor interfaces.
pub struct RedfishDriver {
    root: PathBuf,
    timing: Timing,
    clients: Mutex<HashMap<String, Arc<Client>>>,
    /// Requests in flight per endpoint (`scheme://host:port`), shared by
    /// every system behind it.
    endpoints: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

/// Requests one BMC endpoint serves at once. Many systems can sit behind
/// one endpoint (a chassis manager, an aggregator); without a limit a large
/// converge overwhelms it.
const REQUESTS_PER_ENDPOINT: usize = 8;

enum Auth {
    Unknown,
    Basic,
    Session(String),
}

struct Client {
    http: reqwest::Client,
    /// `http(s)://host[:port]`
    base: String,
    system: tokio::sync::OnceCell<String>,
    username: Option<String>,
    password: Option<String>,
    auth: tokio::sync::Mutex<Auth>,
    timing: Timing,
    in_flight: Arc<tokio::sync::Semaphore>,
}

fn device_to_redfish(device: BootDevice) -> &'static str {
    match device {
        BootDevice::Pxe => "Pxe",
        BootDevice::Disk => "Hdd",
        BootDevice::Cdrom => "Cd",
        BootDevice::Bios => "BiosSetup",
    }
}

fn device_from_redfish(target: &str) -> Option<BootDevice> {
    match target {
        "Pxe" => Some(BootDevice::Pxe),
        "Hdd" => Some(BootDevice::Disk),
        "Cd" => Some(BootDevice::Cdrom),
        "BiosSetup" => Some(BootDevice::Bios),
        _ => None,
    }
}

/// The message a Redfish error body carries, or its text.
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        v.pointer("/error/@Message.ExtendedInfo/0/Message")
            .or_else(|| v.pointer("/error/message"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    from_json.unwrap_or_else(|| {
        let text = body.trim();
        if text.len() > 300 {
            format!("{}…", &text[..300])
        } else {
            text.to_string()
        }
    })
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn login(&self, auth: &mut Auth) -> Result<(), DriverError> {
        let (Some(user), Some(pass)) = (&self.username, &self.password) else {
            *auth = Auth::Basic;
            return Ok(());
        };
        let response = self
            .http
            .post(self.url("/redfish/v1/SessionService/Sessions"))
            .json(&json!({ "UserName": user, "Password": pass }))
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => {
                match r
                    .headers()
                    .get("X-Auth-Token")
                    .and_then(|t| t.to_str().ok())
                {
                    Some(token) => *auth = Auth::Session(token.to_string()),
                    None => *auth = Auth::Basic,
                }
                Ok(())
            }
            // No SessionService, or one that wants authentication before a
            // session (404/405/401/…): Basic authentication on every request,
            // whose answer says whether the credentials are good.
            Ok(_) => {
                *auth = Auth::Basic;
                Ok(())
            }
            Err(e) => Err(transport(&self.base, &e)),
        }
    }

    /// One request with authentication, retrying transport errors and 5xx.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, String), DriverError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .expect("the endpoint limit stays open");
        let mut attempt = 0;
        let mut relogged = false;
        loop {
            attempt += 1;
            let mut auth = self.auth.lock().await;
            if matches!(*auth, Auth::Unknown) {
                match self.login(&mut auth).await {
                    Ok(()) => {}
                    Err(e) if e.is_retryable() && attempt < self.timing.attempts => {
                        drop(auth);
                        tokio::time::sleep(self.timing.first_retry * 2u32.pow(attempt - 1)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let mut request = self.http.request(method.clone(), self.url(path));
            request = match &*auth {
                Auth::Session(token) => request.header("X-Auth-Token", token),
                _ => match (&self.username, &self.password) {
                    (Some(u), p) => request.basic_auth(u, p.as_deref()),
                    _ => request,
                },
            };
            drop(auth);
            if let Some(body) = body {
                request = request.json(body);
            }
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    match response.text().await {
                        Ok(text) => Ok((status, text)),
                        Err(e) => Err(transport(&self.base, &e)),
                    }
                }
                Err(e) => Err(transport(&self.base, &e)),
            };
            match outcome {
                Ok((StatusCode::UNAUTHORIZED, _)) if !relogged => {
                    let mut auth = self.auth.lock().await;
                    if matches!(*auth, Auth::Session(_)) {
                        // The session expired: log in again, once.
                        *auth = Auth::Unknown;
                        relogged = true;
                        continue;
                    }
                    return Err(credentials_refused(&self.base));
                }
                Ok((StatusCode::UNAUTHORIZED, _)) => return Err(credentials_refused(&self.base)),
                Ok((status, text))
                    if status.is_server_error() && attempt < self.timing.attempts =>
                {
                    tracing::debug!(bmc = %self.base, %status, "BMC error; retrying");
                    let _ = text;
                }
                Ok(answer) => return Ok(answer),
                Err(e) if e.is_retryable() && attempt < self.timing.attempts => {
                    tracing::debug!(bmc = %self.base, error = %e, "BMC unreachable; retrying");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(self.timing.first_retry * 2u32.pow(attempt - 1)).await;
        }
    }

    /// GET a resource as JSON.
    async fn get(&self, path: &str) -> Result<Value, DriverError> {
        let (status, text) = self.send(Method::GET, path, None).await?;
        if !status.is_success() {
            return Err(http_error(&self.base, "GET", path, status, &text));
        }
        serde_json::from_str(&text).map_err(|_| {
            DriverError::retryable(format!(
                "the BMC {} answered GET {path} with something that is not JSON",
                self.base
            ))
        })
    }

    async fn system_path(&self) -> Result<&str, DriverError> {
        self.system
            .get_or_try_init(|| async {
                let systems = self.get("/redfish/v1/Systems").await?;
                let members: Vec<&str> = systems["Members"]
                    .as_array()
                    .map(|m| m.iter().filter_map(|x| x["@odata.id"].as_str()).collect())
                    .unwrap_or_default();
                match members.as_slice() {
                    [one] => Ok(one.to_string()),
                    [] => Err(DriverError::fatal(format!(
                        "the BMC {} lists no systems",
                        self.base
                    ))),
                    many => Err(DriverError::invalid(format!(
                        "the BMC {} has {} systems ({}); name one in the address, e.g. {}{}",
                        self.base,
                        many.len(),
                        many.join(", "),
                        self.base,
                        many[0]
                    ))),
                }
            })
            .await
            .map(String::as_str)
    }

    async fn system(&self) -> Result<Value, DriverError> {
        let path = self.system_path().await?.to_string();
        self.get(&path).await
    }
}

fn transport(base: &str, e: &reqwest::Error) -> DriverError {
    let what = if e.is_timeout() {
        "did not answer in time"
    } else if e.is_connect() {
        "cannot be reached"
    } else {
        "failed"
    };
    // reqwest errors carry the URL, which never holds a secret here (the
    // address may not carry credentials); the source chain says why.
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    DriverError::retryable(format!("the BMC {base} {what}: {cause}"))
}

fn credentials_refused(base: &str) -> DriverError {
    DriverError::fatal(format!(
        "the BMC {base} refused the credentials (HTTP 401): check the node's bmc `username` and its password_env/password_file"
    ))
}

fn http_error(base: &str, method: &str, path: &str, status: StatusCode, body: &str) -> DriverError {
    let message = format!(
        "the BMC {base} answered {method} {path} with {status}: {}",
        error_message(body)
    );
    if status.is_server_error() {
        DriverError::retryable(message)
    } else if status == StatusCode::NOT_FOUND {
        DriverError::fatal(message)
    } else {
        DriverError::invalid(message)
    }
}

impl RedfishDriver {
    pub fn new(root: PathBuf, timing: Timing) -> Self {
        Self {
            root,
            timing,
            clients: Mutex::new(HashMap::new()),
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, node: &Node) -> Result<Arc<Client>, DriverError> {
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
        if let Some(client) = self.clients.lock().expect("clients").get(&key) {
            return Ok(Arc::clone(client));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.timing.connect)
            .timeout(self.timing.request)
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
        let client = Arc::new(Client {
            in_flight,
            http,
            base,
            system,
            username: node.bmc.username.clone(),
            password: bmc_password(node, &self.root)?,
            auth: tokio::sync::Mutex::new(Auth::Unknown),
            timing: self.timing,
        });
        self.clients
            .lock()
            .expect("clients")
            .insert(key, Arc::clone(&client));
        Ok(client)
    }

    fn power_of(system: &Value) -> PowerState {
        match system["PowerState"].as_str() {
            Some("On") => PowerState::On,
            Some("Off") => PowerState::Off,
            // PoweringOn/PoweringOff: on its way; neither target is reached.
            _ => PowerState::Rebooting,
        }
    }

    /// The ResetType for `target` that this system allows.
    fn reset_type(system: &Value, target: PowerState) -> Result<&'static str, DriverError> {
        let allowed: Vec<&str> = system
            .pointer("/Actions/#ComputerSystem.Reset/ResetType@Redfish.AllowableValues")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let preferences: &[&'static str] = match target {
            PowerState::On => &["On", "ForceOn"],
            PowerState::Off => &["ForceOff", "GracefulShutdown"],
            PowerState::Rebooting => &["ForceRestart", "GracefulRestart"],
        };
        if allowed.is_empty() {
            return Ok(preferences[0]);
        }
        preferences
            .iter()
            .find(|p| allowed.contains(p))
            .copied()
            .ok_or_else(|| {
                DriverError::unsupported(format!(
                    "the system allows ResetType {allowed:?}, none of which turns it {}",
                    target.short()
                ))
            })
    }

    async fn reset(
        &self,
        client: &Client,
        system: &Value,
        target: PowerState,
    ) -> Result<(), DriverError> {
        let reset = Self::reset_type(system, target)?;
        let path = system
            .pointer("/Actions/#ComputerSystem.Reset/target")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(format!(
                "{}/Actions/ComputerSystem.Reset",
                client.system_path().await?
            ));
        let (status, text) = client
            .send(Method::POST, &path, Some(&json!({ "ResetType": reset })))
            .await?;
        if status.is_success() {
            return Ok(());
        }
        // 400/409 "already in that state" is success.
        if matches!(status, StatusCode::BAD_REQUEST | StatusCode::CONFLICT)
            && Self::power_of(&client.system().await?) == target
        {
            return Ok(());
        }
        Err(http_error(&client.base, "POST", &path, status, &text))
    }

    /// Insert `image` as the system's virtual CD.
    async fn insert_cd(&self, node: &Node, image: &str) -> Result<(), DriverError> {
        let client = self.client(node)?;
        let cd = self.virtual_cd(&client).await?;
        let media = client.get(&cd).await?;
        if media["Inserted"].as_bool() == Some(true) {
            if media["Image"].as_str() == Some(image) {
                return Ok(());
            }
            self.eject_one(&client, &cd, &media).await?;
        }
        let path = media
            .pointer("/Actions/#VirtualMedia.InsertMedia/target")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(format!("{cd}/Actions/VirtualMedia.InsertMedia"));
        let body = json!({ "Image": image, "Inserted": true, "WriteProtected": true });
        let (status, text) = client.send(Method::POST, &path, Some(&body)).await?;
        if !status.is_success() {
            return Err(http_error(&client.base, "POST", &path, status, &text));
        }
        Ok(())
    }

    /// Eject virtual media: `cd`, `floppy`, or every device when `None`.
    async fn eject(&self, node: &Node, device: Option<&str>) -> Result<Value, DriverError> {
        let client = self.client(node)?;
        let collection = self.media_collection(&client).await?;
        let mut ejected = Vec::new();
        for member in members(&client.get(&collection).await?) {
            let media = client.get(&member).await?;
            let types: Vec<String> = media["MediaTypes"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_ascii_lowercase)
                        .collect()
                })
                .unwrap_or_default();
            let id = media["Id"].as_str().unwrap_or("").to_ascii_lowercase();
            let wanted = match device {
                None => true,
                Some("cd") => id == "cd" || types.iter().any(|t| t == "cd" || t == "dvd"),
                Some("floppy") => id == "floppy" || types.iter().any(|t| t == "floppy"),
                Some(other) => {
                    return Err(DriverError::invalid(format!(
                        "boot_device `{other}` is not a virtual media device: use cd or floppy"
                    )));
                }
            };
            if wanted && media["Inserted"].as_bool() == Some(true) {
                self.eject_one(&client, &member, &media).await?;
                ejected.push(media["Id"].clone());
            }
        }
        Ok(json!({ "ejected": ejected }))
    }

    async fn eject_one(
        &self,
        client: &Client,
        member: &str,
        media: &Value,
    ) -> Result<(), DriverError> {
        let path = media
            .pointer("/Actions/#VirtualMedia.EjectMedia/target")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(format!("{member}/Actions/VirtualMedia.EjectMedia"));
        let (status, text) = client.send(Method::POST, &path, Some(&json!({}))).await?;
        if !status.is_success() {
            return Err(http_error(&client.base, "POST", &path, status, &text));
        }
        Ok(())
    }

    /// The VirtualMedia collection: on the system (newer Redfish) or its manager.
    async fn media_collection(&self, client: &Client) -> Result<String, DriverError> {
        let system = client.system().await?;
        if let Some(path) = system
            .pointer("/VirtualMedia/@odata.id")
            .and_then(Value::as_str)
        {
            return Ok(path.to_string());
        }
        let manager = system
            .pointer("/Links/ManagedBy/0/@odata.id")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                DriverError::unsupported("the system has no virtual media and no manager")
            })?;
        client
            .get(manager)
            .await?
            .pointer("/VirtualMedia/@odata.id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| DriverError::unsupported("the BMC offers no virtual media"))
    }

    async fn virtual_cd(&self, client: &Client) -> Result<String, DriverError> {
        let collection = self.media_collection(client).await?;
        for member in members(&client.get(&collection).await?) {
            let media = client.get(&member).await?;
            let is_cd = media["Id"]
                .as_str()
                .is_some_and(|i| i.eq_ignore_ascii_case("cd"))
                || media["MediaTypes"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|x| matches!(x.as_str(), Some("CD" | "DVD"))));
            if is_cd {
                return Ok(member);
            }
        }
        Err(DriverError::unsupported(
            "the BMC has no virtual CD/DVD drive",
        ))
    }

    async fn bios_path(client: &Client) -> Result<String, DriverError> {
        let system = client.system().await?;
        Ok(system
            .pointer("/Bios/@odata.id")
            .and_then(Value::as_str)
            .ok_or_else(|| DriverError::unsupported("the system has no BIOS resource"))?
            .to_string())
    }

    /// Apply BIOS settings through the pending-settings resource.
    async fn apply_bios(&self, node: &Node, settings: &Value) -> Result<(), DriverError> {
        let client = self.client(node)?;
        let bios = Self::bios_path(&client).await?;
        let mut attributes = serde_json::Map::new();
        for setting in settings
            .as_array()
            .ok_or_else(|| DriverError::invalid("`settings` must be a list of {name, value}"))?
        {
            let name = setting["name"]
                .as_str()
                .ok_or_else(|| DriverError::invalid("every setting needs a `name`"))?;
            attributes.insert(name.to_string(), setting["value"].clone());
        }
        let settings_path = client
            .get(&bios)
            .await?
            .pointer("/@Redfish.Settings/SettingsObject/@odata.id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(format!("{bios}/Settings"));
        let body = json!({ "Attributes": attributes });
        let (status, text) = client
            .send(Method::PATCH, &settings_path, Some(&body))
            .await?;
        if !status.is_success() {
            return Err(http_error(
                &client.base,
                "PATCH",
                &settings_path,
                status,
                &text,
            ));
        }
        Ok(())
    }

    async fn read_macs(&self, client: &Client, nics: &str) -> Result<Vec<String>, DriverError> {
        let mut macs = Vec::new();
        for member in members(&client.get(nics).await?) {
            if let Some(mac) = client.get(&member).await?["MACAddress"].as_str() {
                macs.push(mac.to_ascii_lowercase());
            }
        }
        Ok(macs)
    }

    /// CPU count, memory and NIC MACs, as the BMC reports them.
    async fn read_hardware(&self, node: &Node) -> Result<Value, DriverError> {
        let client = self.client(node)?;
        let system = client.system().await?;
        // NICs are optional: a BMC that cannot list them leaves the MACs
        // unknown rather than failing the whole inspection.
        let mut macs = Value::Null;
        if let Some(nics) = system
            .pointer("/EthernetInterfaces/@odata.id")
            .and_then(Value::as_str)
        {
            match self.read_macs(&client, nics).await {
                Ok(found) => macs = json!(found),
                Err(e) => {
                    tracing::warn!(node = %node.name, error = %e, "inspection: NICs not readable")
                }
            }
        }
        Ok(json!({
            "cpus": system.pointer("/ProcessorSummary/Count"),
            "memory_gib": system.pointer("/MemorySummary/TotalSystemMemoryGiB"),
            "macs": macs,
        }))
    }
}

fn members(collection: &Value) -> Vec<String> {
    collection["Members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| x["@odata.id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[async_trait]
impl Power for RedfishDriver {
    async fn get_power_state(&self, node: &Node) -> Result<PowerState, DriverError> {
        let client = self.client(node)?;
        Ok(Self::power_of(&client.system().await?))
    }

    async fn set_power_state(
        &self,
        node: &Node,
        target: PowerState,
        timeout: Duration,
    ) -> Result<(), DriverError> {
        let client = self.client(node)?;
        let system = client.system().await?;
        if Self::power_of(&system) == target {
            return Ok(());
        }
        self.reset(&client, &system, target).await?;
        let started = Instant::now();
        let mut last_request = Instant::now();
        let mut wait = self.timing.poll;
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.timing.poll * 4);
            let system = client.system().await?;
            if Self::power_of(&system) == target {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                return Err(DriverError::retryable(format!(
                    "the BMC {} did not report power {} within {}",
                    client.base,
                    target.short(),
                    humantime::format_duration(timeout)
                )));
            }
            // Some BMCs drop a request that arrives while an earlier change
            // is still applying: ask again now and then.
            if last_request.elapsed() >= Duration::from_secs(15) {
                self.reset(&client, &system, target).await?;
                last_request = Instant::now();
            }
        }
    }
}

#[async_trait]
impl Management for RedfishDriver {
    async fn get_boot_device(&self, node: &Node) -> Result<Option<BootDevice>, DriverError> {
        let client = self.client(node)?;
        let system = client.system().await?;
        Ok(system
            .pointer("/Boot/BootSourceOverrideTarget")
            .and_then(Value::as_str)
            .and_then(device_from_redfish))
    }

    async fn set_boot_device(
        &self,
        node: &Node,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError> {
        let client = self.client(node)?;
        let system = client.system().await?;
        let target = device_to_redfish(device);
        let allowed: Vec<&str> = system
            .pointer("/Boot/BootSourceOverrideTarget@Redfish.AllowableValues")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !allowed.is_empty() && !allowed.contains(&target) {
            return Err(DriverError::unsupported(format!(
                "the system cannot boot from {} (it allows {allowed:?})",
                device.as_str()
            )));
        }
        let enabled = if persistent { "Continuous" } else { "Once" };
        let body = json!({ "Boot": { "BootSourceOverrideTarget": target, "BootSourceOverrideEnabled": enabled } });
        let path = client.system_path().await?.to_string();
        let (status, text) = client.send(Method::PATCH, &path, Some(&body)).await?;
        if !status.is_success() {
            return Err(http_error(&client.base, "PATCH", &path, status, &text));
        }
        match self.get_boot_device(node).await? {
            Some(read) if read == device => Ok(()),
            other => Err(DriverError::retryable(format!(
                "the BMC {} accepted boot device {} but reports {}",
                client.base,
                device.as_str(),
                other.map_or("none", |d| d.as_str())
            ))),
        }
    }

    async fn get_boot_mode(&self, node: &Node) -> Result<Option<BootMode>, DriverError> {
        let client = self.client(node)?;
        let system = client.system().await?;
        Ok(
            match system
                .pointer("/Boot/BootSourceOverrideMode")
                .and_then(Value::as_str)
            {
                Some("UEFI") => Some(BootMode::Uefi),
                Some("Legacy") => Some(BootMode::Bios),
                _ => None,
            },
        )
    }

    async fn set_boot_mode(&self, node: &Node, mode: BootMode) -> Result<(), DriverError> {
        let client = self.client(node)?;
        let value = match mode {
            BootMode::Uefi => "UEFI",
            BootMode::Bios => "Legacy",
        };
        let path = client.system_path().await?.to_string();
        let body = json!({ "Boot": { "BootSourceOverrideMode": value } });
        let (status, text) = client.send(Method::PATCH, &path, Some(&body)).await?;
        if !status.is_success() {
            return Err(http_error(&client.base, "PATCH", &path, status, &text));
        }
        match self.get_boot_mode(node).await? {
            Some(read) if read == mode => Ok(()),
            _ => Err(DriverError::retryable(format!(
                "the BMC {} accepted boot mode {} but reports another",
                client.base,
                mode.as_str()
            ))),
        }
    }
}

#[async_trait]
impl Boot for RedfishDriver {
    async fn insert_media(&self, node: &Node, image: &str) -> Result<(), DriverError> {
        self.insert_cd(node, image).await
    }

    async fn eject_media(&self, node: &Node, device: Option<&str>) -> Result<Value, DriverError> {
        self.eject(node, device).await
    }
}

#[async_trait]
impl Bios for RedfishDriver {
    async fn apply_configuration(&self, node: &Node, settings: &Value) -> Result<(), DriverError> {
        self.apply_bios(node, settings).await
    }

    async fn factory_reset(&self, node: &Node) -> Result<(), DriverError> {
        let client = self.client(node)?;
        let bios = Self::bios_path(&client).await?;
        let path = format!("{bios}/Actions/Bios.ResetBios");
        let (status, text) = client.send(Method::POST, &path, Some(&json!({}))).await?;
        if !status.is_success() {
            return Err(http_error(&client.base, "POST", &path, status, &text));
        }
        Ok(())
    }
}

#[async_trait]
impl Inspect for RedfishDriver {
    async fn inspect(&self, node: &Node) -> Result<Value, DriverError> {
        self.read_hardware(node).await
    }
}

#[async_trait]
impl Vendor for RedfishDriver {
    async fn passthru(
        &self,
        node: &Node,
        method: &str,
        _http_method: &str,
        args: Value,
    ) -> Result<Value, DriverError> {
        match method {
            "eject_vmedia" => {
                self.eject(node, args.get("boot_device").and_then(Value::as_str))
                    .await
            }
            other => Err(DriverError::invalid(format!(
                "No handler for method {other}"
            ))),
        }
    }
}
