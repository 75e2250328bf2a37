//! ipmitool: Ironic's `ipmitool` power, management and vendor interfaces,
//! driving the `ipmitool` program over IPMI 2.0 (lanplus).
//!
//! Every call runs `ipmitool` once, with an argument vector (never a shell
//! line). The password travels through a private file (mode 0600, deleted
//! when the call ends) named with `-f`: never on a command line, where any
//! user can read it, nor in the environment, which children inherit.
//!
//! BMCs are small and easily overwhelmed: at most one `ipmitool` runs
//! against a BMC (host:port) at a time, and consecutive commands to one BMC
//! are at least `min_command_interval` apart (Ironic's default is 5 s).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;

use super::{DriverError, Management, Power, Vendor};
use crate::model::node::Node;
use crate::vocab::{BootDevice, BootMode, PowerState};

/// The IPMI port when an `ipmi://` address names none.
pub const DEFAULT_PORT: u16 = 623;

/// Answers a BMC gives when it is busy for a moment (Ironic's list of
/// retryable IPMI failures): the same command soon after usually works.
const BUSY_ANSWERS: [&str; 5] = [
    "insufficient resources for session",
    "node busy",
    "timeout",
    "out of space",
    "bmc initialization in progress",
];

/// How long to wait before asking a busy BMC again, on top of the gap.
const BUSY_PAUSE: Duration = Duration::from_secs(1);

/// How long to wait between two power status polls, on top of the gap.
const POWER_POLL_PAUSE: Duration = Duration::from_millis(200);

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

/// The ipmitool power, management and vendor interfaces.
#[derive(Debug, Clone)]
pub struct IpmiDriver {
    /// The fleet directory: a relative `password_file` is relative to it.
    root: PathBuf,
    program: PathBuf,
    min_command_interval: Duration,
    /// How long a busy BMC is asked again before its answer is returned.
    retry_window: Duration,
    /// A hard limit on one `ipmitool` run (it gives up by itself after
    /// `-N 5 -R 1`, about 10 s, when nothing answers).
    command_timeout: Duration,
    /// Where password files are made; the system's temporary directory when unset.
    secret_dir: Option<PathBuf>,
}

impl IpmiDriver {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            program: PathBuf::from("ipmitool"),
            min_command_interval: Duration::from_secs(5),
            retry_window: Duration::from_secs(60),
            command_timeout: Duration::from_secs(30),
            secret_dir: None,
        }
    }

    /// The shortest pause between two commands to one BMC.
    pub fn with_min_command_interval(mut self, gap: Duration) -> Self {
        self.min_command_interval = gap;
        self
    }

    /// How long a busy BMC is asked again before its answer is returned.
    pub fn with_retry_window(mut self, window: Duration) -> Self {
        self.retry_window = window;
        self
    }

    /// Run another program instead of `ipmitool` from PATH.
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Make password files in `dir` instead of the temporary directory.
    pub fn with_secret_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.secret_dir = Some(dir.into());
        self
    }

    pub fn min_command_interval(&self) -> Duration {
        self.min_command_interval
    }

    /// The node's BMC password, if it declares where one is.
    fn password(&self, node: &Node) -> Result<Option<Secret>, DriverError> {
        Ok(super::secret::bmc_password(node, &self.root)?.map(Secret))
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

    /// Run one ipmitool command against the node's BMC and return its
    /// stdout. A busy BMC is asked again until `retry_window` passes.
    async fn run(&self, node: &Node, command: &[&str]) -> Result<String, DriverError> {
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
                    .run_once(node, &host, port, password.as_ref(), command)
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
        let output =
            match tokio::time::timeout(self.command_timeout, child.wait_with_output()).await {
                Ok(Ok(output)) => output,
                Ok(Err(e)) => return Err(Failure::NoAnswer(format!("ipmitool: {e}"))),
                Err(_) => {
                    return Err(Failure::NoAnswer(format!(
                        "ipmitool did not finish within {} and was killed",
                        humantime::format_duration(self.command_timeout)
                    )));
                }
            };
        drop(file);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = meaningful_stderr(&String::from_utf8_lossy(&output.stderr), password);
        classify(output.status.success(), stdout, stderr)
    }

    /// `power status`.
    async fn power_status(&self, node: &Node) -> Result<PowerState, DriverError> {
        let out = self.run(node, &["power", "status"]).await?;
        parse_power(&out).ok_or_else(|| {
            DriverError::fatal(format!(
                "node {}: `ipmitool power status` answered `{}`",
                node.name,
                out.trim()
            ))
        })
    }

    /// Ask for on or off, then poll until the BMC reports it.
    async fn power_to(
        &self,
        node: &Node,
        target: PowerState,
        deadline: Instant,
    ) -> Result<(), DriverError> {
        let verb = if target == PowerState::On {
            "on"
        } else {
            "off"
        };
        self.run(node, &["power", verb]).await?;
        loop {
            if self.power_status(node).await? == target {
                return Ok(());
            }
            if Instant::now() + POWER_POLL_PAUSE >= deadline {
                return Err(DriverError::retryable(format!(
                    "node {}: asked for power {verb}, but the BMC still does not report it",
                    node.name
                )));
            }
            tokio::time::sleep(POWER_POLL_PAUSE).await;
        }
    }

    /// `chassis bootparam get 5`, parsed.
    async fn boot_flags(&self, node: &Node) -> Result<BootFlags, DriverError> {
        let out = self
            .run(node, &["chassis", "bootparam", "get", "5"])
            .await?;
        BootFlags::parse(&out).ok_or_else(|| {
            DriverError::fatal(format!(
                "node {}: `ipmitool chassis bootparam get 5` has no boot device selector",
                node.name
            ))
        })
    }

    /// `chassis bootdev DEVICE options=…`. IPMI sets the boot mode only
    /// together with a device, so both go in one command.
    async fn bootdev(
        &self,
        node: &Node,
        device: &str,
        persistent: bool,
        uefi: bool,
    ) -> Result<(), DriverError> {
        let flags: Vec<&str> = [(persistent, "persistent"), (uefi, "efiboot")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        let options = (!flags.is_empty()).then(|| format!("options={}", flags.join(",")));
        let mut command = vec!["chassis", "bootdev", device];
        command.extend(options.as_deref());
        self.run(node, &command).await.map(drop)
    }

    /// The ipmitool vendor passthru methods: `send_raw` and `bmc_reset`.
    async fn vendor_call(
        &self,
        node: &Node,
        method: &str,
        args: &Value,
    ) -> Result<Value, DriverError> {
        match method {
            "send_raw" => {
                let text = args
                    .get("raw_bytes")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        DriverError::invalid("`raw_bytes` is required, e.g. \"0x06 0x01\"")
                    })?;
                let bytes = raw_bytes(text).map_err(DriverError::invalid)?;
                let mut command = vec!["raw"];
                command.extend(bytes.iter().map(String::as_str));
                let out = self.run(node, &command).await?;
                Ok(Value::String(
                    out.split_whitespace().collect::<Vec<_>>().join(" "),
                ))
            }
            "bmc_reset" => {
                let warm = match args.get("warm") {
                    None | Some(Value::Null) => true,
                    Some(value) => flag(value).ok_or_else(|| {
                        DriverError::invalid(format!("`warm` must be true or false, not {value}"))
                    })?,
                };
                let kind = if warm { "warm" } else { "cold" };
                self.run(node, &["mc", "reset", kind]).await?;
                Ok(Value::Null)
            }
            other => Err(DriverError::unsupported(format!(
                "the ipmitool vendor interface has no method `{other}` (send_raw, bmc_reset)"
            ))),
        }
    }
}

#[async_trait]
impl Vendor for IpmiDriver {
    async fn passthru(
        &self,
        node: &Node,
        method: &str,
        _http_method: &str,
        args: Value,
    ) -> Result<Value, DriverError> {
        self.vendor_call(node, method, &args).await
    }
}

#[async_trait]
impl Power for IpmiDriver {
    async fn get_power_state(&self, node: &Node) -> Result<PowerState, DriverError> {
        self.power_status(node).await
    }

    async fn set_power_state(
        &self,
        node: &Node,
        target: PowerState,
        timeout: Duration,
    ) -> Result<(), DriverError> {
        let deadline = Instant::now() + timeout;
        let now = self.power_status(node).await?;
        match target {
            PowerState::On | PowerState::Off if now == target => Ok(()),
            PowerState::On | PowerState::Off => self.power_to(node, target, deadline).await,
            // Ironic reboots as off, then on, each confirmed, rather than
            // `power cycle`, which BMCs refuse for a node that is off.
            PowerState::Rebooting => {
                if now != PowerState::Off {
                    self.power_to(node, PowerState::Off, deadline).await?;
                }
                self.power_to(node, PowerState::On, deadline).await
            }
        }
    }
}

#[async_trait]
impl Management for IpmiDriver {
    async fn get_boot_device(&self, node: &Node) -> Result<Option<BootDevice>, DriverError> {
        Ok(self.boot_flags(node).await?.device)
    }

    async fn set_boot_device(
        &self,
        node: &Node,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError> {
        // `bootdev` without `efiboot` switches a UEFI node to legacy: keep
        // the declared mode (as Ironic keeps the node's boot mode).
        let uefi = node.desired.boot_mode == Some(BootMode::Uefi);
        self.bootdev(node, bootdev_name(device), persistent, uefi)
            .await?;
        // Only the device is compared: some BMCs (ipmi_sim among them) keep
        // the device but not the persistence.
        let now = self.boot_flags(node).await?.device;
        if now == Some(device) {
            Ok(())
        } else {
            Err(DriverError::fatal(format!(
                "node {}: set the boot device to {}, but the BMC reports {}",
                node.name,
                device.as_str(),
                now.map_or("no override", BootDevice::as_str)
            )))
        }
    }

    async fn get_boot_mode(&self, node: &Node) -> Result<Option<BootMode>, DriverError> {
        Ok(self.boot_flags(node).await?.mode())
    }

    async fn set_boot_mode(&self, node: &Node, mode: BootMode) -> Result<(), DriverError> {
        // The mode is a flag of the boot device override: set it with the
        // declared device, or else the one in force (or none). Not read back:
        // see `BootFlags::mode`.
        let device = match node.desired.boot_device {
            Some(device) => Some(device),
            None => self.boot_flags(node).await?.device,
        };
        self.bootdev(
            node,
            device.map_or("none", bootdev_name),
            true,
            mode == BootMode::Uefi,
        )
        .await
    }
}

/// `ipmitool chassis bootdev` names.
fn bootdev_name(device: BootDevice) -> &'static str {
    match device {
        BootDevice::Pxe => "pxe",
        BootDevice::Disk => "disk",
        BootDevice::Cdrom => "cdrom",
        BootDevice::Bios => "bios",
    }
}

/// The boot flags `chassis bootparam get 5` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BootFlags {
    /// The override in force; `None` for "No override" and devices rivet
    /// has no name for (floppy, safe mode, …).
    device: Option<BootDevice>,
    /// "Boot Flag Valid": the BMC applies these flags at the next boot.
    valid: bool,
    efi: bool,
}

impl BootFlags {
    fn parse(out: &str) -> Option<Self> {
        let selector = out
            .lines()
            .find_map(|line| line.split_once("Boot Device Selector :"))?
            .1
            .trim();
        // Ironic's table of ipmitool's selector texts.
        let device = match selector {
            "Force PXE" => Some(BootDevice::Pxe),
            "Force Boot from default Hard-Drive" => Some(BootDevice::Disk),
            "Force Boot from CD/DVD" => Some(BootDevice::Cdrom),
            "Force Boot into BIOS Setup" => Some(BootDevice::Bios),
            _ => None,
        };
        Some(Self {
            device,
            valid: out.contains("Boot Flag Valid"),
            efi: out.contains("BIOS EFI boot"),
        })
    }

    /// The boot mode, when the BMC says its flags are in force. Flags marked
    /// invalid carry a mode bit that means nothing: ipmi_sim, for one,
    /// always reports "Boot Flag Invalid" and legacy, whatever was set, so
    /// reading it as legacy would report a drift that is not there.
    fn mode(&self) -> Option<BootMode> {
        self.valid.then_some(if self.efi {
            BootMode::Uefi
        } else {
            BootMode::Bios
        })
    }
}

fn parse_power(out: &str) -> Option<PowerState> {
    out.lines()
        .find_map(|line| line.trim().strip_prefix("Chassis Power is "))
        .and_then(|state| match state.trim() {
            "on" => Some(PowerState::On),
            "off" => Some(PowerState::Off),
            _ => None,
        })
}

/// `"0x06 0x01"` → `["0x06", "0x01"]`, each checked to be one byte.
fn raw_bytes(text: &str) -> Result<Vec<String>, String> {
    let bytes: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if bytes.len() < 2 {
        return Err(format!(
            "`raw_bytes` needs at least a network function and a command, e.g. \"0x06 0x01\"; got `{text}`"
        ));
    }
    for byte in &bytes {
        let value = match byte.strip_prefix("0x").or_else(|| byte.strip_prefix("0X")) {
            Some(hex) => u8::from_str_radix(hex, 16).ok(),
            None => byte.parse::<u8>().ok(),
        };
        if value.is_none() {
            return Err(format!(
                "`{byte}` in `raw_bytes` is not a byte (write 0x00 to 0xff)"
            ));
        }
    }
    Ok(bytes)
}

/// A passthru flag: JSON true/false or Ironic's strings ("true", "no", "1", …).
fn flag(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" | "y" | "t" => Some(true),
            "false" | "no" | "off" | "0" | "n" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
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

/// How an ipmitool run ended, before it becomes a [`DriverError`].
#[derive(Debug)]
enum Failure {
    /// The BMC answered that it cannot serve now.
    Busy(String),
    /// Nothing answered.
    NoAnswer(String),
    /// The BMC refused the user name or password.
    Credentials(String),
    /// The BMC refused the privilege level or cipher suite.
    Refused(String),
    /// The BMC does not implement the command.
    NotImplemented(String),
    /// Any other failure of the command.
    Command(String),
    Driver(DriverError),
}

/// What ipmitool says (in lower case) when a session or command fails, and
/// what that means; the first match wins.
type Tell = (&'static [&'static str], fn(String) -> Failure);
const TELLS: [Tell; 4] = [
    (
        &[
            "rakp 2 hmac is invalid",
            "unauthorized name",
            "rakp 2 message indicates an error",
        ],
        Failure::Credentials,
    ),
    (
        &[
            "insufficient privilege",
            "invalid authentication algorithm",
            "invalid integrity algorithm",
            "invalid encryption algorithm",
        ],
        Failure::Refused,
    ),
    (
        &[
            "get auth capabilities error",
            "no response from remote controller",
        ],
        Failure::NoAnswer,
    ),
    (&BUSY_ANSWERS, Failure::Busy),
];

fn classify(success: bool, stdout: String, stderr: String) -> Result<String, Failure> {
    let lower = stderr.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    for (tells, failure) in TELLS {
        if has(tells) {
            return Err(failure(stderr));
        }
    }
    // ipmitool exits 0 after some refused settings (`bootdev floppy` on
    // ipmi_sim prints "… failed: Unspecified error"), so stderr decides too.
    if !success || lower.contains(" failed") || lower.contains("unable to") {
        if has(&["invalid command", "not supported", "command not supported"]) {
            return Err(Failure::NotImplemented(stderr));
        }
        if has(&["unable to establish ipmi v2"]) {
            return Err(Failure::NoAnswer(stderr));
        }
        return Err(Failure::Command(stderr));
    }
    Ok(stdout)
}

impl Failure {
    fn into_error(self, node: &Node, command: &[&str]) -> DriverError {
        let what = format!("node {}: ipmitool {}", node.name, command.join(" "));
        let bmc = &node.bmc.address;
        match self {
            Failure::Driver(e) => e,
            Failure::Busy(said) => {
                DriverError::retryable(format!("{what}: the BMC stayed busy: {said}"))
            }
            Failure::NoAnswer(said) => DriverError::retryable(format!(
                "{what}: the BMC at {bmc} does not answer ({said}); check the address and that the BMC is up"
            )),
            Failure::Credentials(said) => DriverError::fatal(format!(
                "{what}: the BMC at {bmc} refused the credentials ({said}); check the node's bmc username and password_env/password_file"
            )),
            Failure::Refused(said) => DriverError::fatal(format!(
                "{what}: the BMC at {bmc} refused the session ({said}); check that the user has ADMINISTRATOR privilege and the node's bmc cipher_suite"
            )),
            Failure::NotImplemented(said) => DriverError::fatal(format!(
                "{what}: the BMC does not support this command ({said})"
            )),
            Failure::Command(said) => DriverError::fatal(format!("{what} failed: {said}")),
        }
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

    const BOOTPARAM: &str = "Boot parameter version: 1
Boot parameter 5 is valid/unlocked
Boot parameter data: 0004000000
 Boot Flags :
   - Boot Flag Invalid
   - Options apply to only next boot
   - BIOS PC Compatible (legacy) boot
   - Boot Device Selector : Force PXE
   - BIOS verbosity : System Default
";

    #[test]
    fn boot_flags_read_the_selector_and_the_mode_only_when_valid() {
        let flags = BootFlags::parse(BOOTPARAM).unwrap();
        assert_eq!(flags.device, Some(BootDevice::Pxe));
        assert_eq!(flags.mode(), None, "invalid flags say nothing of the mode");
        let valid = BOOTPARAM
            .replace("Boot Flag Invalid", "Boot Flag Valid")
            .replace("BIOS PC Compatible (legacy) boot", "BIOS EFI boot")
            .replace("Force PXE", "Force Boot from default Hard-Drive");
        let flags = BootFlags::parse(&valid).unwrap();
        assert_eq!(flags.device, Some(BootDevice::Disk));
        assert_eq!(flags.mode(), Some(BootMode::Uefi));
        let none = BOOTPARAM.replace("Force PXE", "No override");
        assert_eq!(BootFlags::parse(&none).unwrap().device, None);
        assert_eq!(BootFlags::parse("Chassis Power is on"), None);
    }

    #[test]
    fn power_status_parses_on_and_off_only() {
        assert_eq!(parse_power("Chassis Power is on\n"), Some(PowerState::On));
        assert_eq!(parse_power("Chassis Power is off"), Some(PowerState::Off));
        assert_eq!(parse_power("Chassis Power is sleepy"), None);
        assert_eq!(parse_power(""), None);
    }

    #[test]
    fn raw_bytes_must_be_bytes() {
        assert_eq!(raw_bytes("0x06 0x01").unwrap(), ["0x06", "0x01"]);
        assert_eq!(raw_bytes(" 6  1 255 ").unwrap(), ["6", "1", "255"]);
        assert!(raw_bytes("0x06").is_err());
        assert!(raw_bytes("0x06 0x100").is_err());
        assert!(raw_bytes("0x06 0x01; reboot").is_err());
    }

    #[test]
    fn failures_are_told_apart_by_what_ipmitool_says() {
        let session = "Error: Unable to establish IPMI v2 / RMCP+ session";
        let class =
            |success: bool, stderr: &str| match classify(success, String::new(), stderr.into()) {
                Ok(_) => "ok",
                Err(Failure::Credentials(_)) => "credentials",
                Err(Failure::NoAnswer(_)) => "no answer",
                Err(Failure::NotImplemented(_)) => "not implemented",
                Err(Failure::Command(_)) => "command",
                Err(Failure::Busy(_)) => "busy",
                Err(Failure::Refused(_)) => "refused",
                Err(Failure::Driver(_)) => "driver",
            };
        for (success, stderr, expected) in [
            (
                false,
                format!("> RAKP 2 HMAC is invalid; {session}"),
                "credentials",
            ),
            (
                false,
                format!("Get Auth Capabilities error; {session}"),
                "no answer",
            ),
            (false, session.to_string(), "no answer"),
            (
                false,
                "MC reset command failed: Invalid command".into(),
                "not implemented",
            ),
            // ipmitool exits 0 after this one.
            (
                true,
                "Set Chassis Boot Parameter 5 failed: Unspecified error".into(),
                "command",
            ),
            (false, "Error: Node busy".into(), "busy"),
            (false, "Invalid authentication algorithm".into(), "refused"),
            (true, String::new(), "ok"),
        ] {
            assert_eq!(class(success, &stderr), expected, "{stderr}");
        }
    }

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

    #[test]
    fn flags_accept_ironic_spellings() {
        assert_eq!(flag(&Value::Bool(false)), Some(false));
        assert_eq!(flag(&Value::String("True".into())), Some(true));
        assert_eq!(flag(&Value::String("0".into())), Some(false));
        assert_eq!(flag(&Value::String("maybe".into())), None);
    }
}
