//! Interface implementations: the traits every driver implements, the
//! registry that maps composed interface names to implementations, and the
//! built-in drivers.
//!
//! Contract shared by every method: it is safe to call again after a crash
//! (idempotent or safely repeatable), it never logs or returns a secret, and
//! its error says whether trying again may help ([`DriverError::retryable`]).

pub mod agent;
pub mod body;
pub mod exec;
pub mod fake;
pub mod fence;
pub mod ipmi;
pub mod redfish;
pub mod registry;
pub mod scrub;
pub mod secret;

use std::time::Duration;

use async_trait::async_trait;

use crate::model::node::Node;
use crate::vocab::{BootDevice, BootMode, PowerState};

/// What went wrong talking to a BMC or plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DriverError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Transient (connection refused, timeout, 5xx): trying again may work.
    Retryable,
    /// The BMC refused for good (bad credentials, unsupported operation).
    Fatal,
    /// The request itself was wrong (bad argument).
    Invalid,
    /// This implementation cannot do that (yet).
    Unsupported,
    /// Not sent, or refused by the BMC, because this conductor may no
    /// longer own the node (its lease expired, or a newer owner's fencing
    /// token reached the BMC first). Not retried: the node's owner resumes it.
    Fenced,
}

impl DriverError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Retryable,
            message: message.into(),
        }
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Fatal,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Invalid,
            message: message.into(),
        }
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Unsupported,
            message: message.into(),
        }
    }

    pub fn fenced(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Fenced,
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }
}

/// The `power` interface.
#[async_trait]
pub trait Power: Send + Sync {
    /// The power state the BMC reports now. Read-only.
    async fn get_power_state(&self, node: &Node) -> Result<PowerState, DriverError>;

    /// Ask for `target` and block until the BMC reports it, polling, or until
    /// `timeout` passes (then a retryable error). A node already in `target`
    /// is success without a request; a BMC that answers "already in that
    /// state" is success too.
    async fn set_power_state(
        &self,
        node: &Node,
        target: PowerState,
        timeout: Duration,
    ) -> Result<(), DriverError>;
}

/// The `management` interface: boot device and boot mode.
#[async_trait]
pub trait Management: Send + Sync {
    /// The next-boot device the BMC reports, if it reports one. Read-only.
    async fn get_boot_device(&self, node: &Node) -> Result<Option<BootDevice>, DriverError>;

    /// Set the boot device (persistent across reboots when `persistent`),
    /// then read it back; a read-back that differs is an error.
    async fn set_boot_device(
        &self,
        node: &Node,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError>;

    /// The boot mode the BMC reports, if it reports one. Read-only.
    async fn get_boot_mode(&self, node: &Node) -> Result<Option<BootMode>, DriverError>;

    async fn set_boot_mode(&self, node: &Node, mode: BootMode) -> Result<(), DriverError>;
}

/// The `boot` interface's virtual media.
#[async_trait]
pub trait Boot: Send + Sync {
    /// Present `image` as the node's virtual CD. Inserting the image that is
    /// already inserted is success; another image is ejected first.
    async fn insert_media(&self, node: &Node, image: &str) -> Result<(), DriverError>;

    /// Eject virtual media (`cd`, `floppy`, or every device when `None`);
    /// returns what was ejected. Nothing inserted is success.
    async fn eject_media(
        &self,
        node: &Node,
        device: Option<&str>,
    ) -> Result<serde_json::Value, DriverError>;
}

/// The `bios` interface.
#[async_trait]
pub trait Bios: Send + Sync {
    /// Apply `settings` (a list of `{name, value}`); idempotent.
    async fn apply_configuration(
        &self,
        node: &Node,
        settings: &serde_json::Value,
    ) -> Result<(), DriverError>;

    /// Reset BIOS settings to the factory defaults; idempotent.
    async fn factory_reset(&self, node: &Node) -> Result<(), DriverError>;
}

/// The `inspect` interface (out of band).
#[async_trait]
pub trait Inspect: Send + Sync {
    /// What the BMC knows of the hardware: `cpus`, `memory_gib`, `macs`.
    /// Read-only.
    async fn inspect(&self, node: &Node) -> Result<serde_json::Value, DriverError>;
}

/// The `vendor` interface's passthru methods.
#[async_trait]
pub trait Vendor: Send + Sync {
    /// Call `method` (declared in the catalog, arguments already checked
    /// against it) and return its value, which a sync method's HTTP answer
    /// carries as its body.
    async fn passthru(
        &self,
        node: &Node,
        method: &str,
        http_method: &str,
        args: serde_json::Value,
    ) -> Result<serde_json::Value, DriverError>;
}
