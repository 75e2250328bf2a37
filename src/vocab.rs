//! The words of the declaration format that every layer shares: interface
//! types, target states, boot devices and modes, step argument info.
//! Nothing here knows about files, spans or drivers.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One of Ironic's interface types.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceType {
    Bios,
    Boot,
    Console,
    Deploy,
    Firmware,
    Inspect,
    Management,
    Network,
    Power,
    Raid,
    Rescue,
    Storage,
    Vendor,
}

impl InterfaceType {
    /// Every type, in alphabetical order (the order output lists them in).
    pub const ALL: [InterfaceType; 13] = [
        Self::Bios,
        Self::Boot,
        Self::Console,
        Self::Deploy,
        Self::Firmware,
        Self::Inspect,
        Self::Management,
        Self::Network,
        Self::Power,
        Self::Raid,
        Self::Rescue,
        Self::Storage,
        Self::Vendor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bios => "bios",
            Self::Boot => "boot",
            Self::Console => "console",
            Self::Deploy => "deploy",
            Self::Firmware => "firmware",
            Self::Inspect => "inspect",
            Self::Management => "management",
            Self::Network => "network",
            Self::Power => "power",
            Self::Raid => "raid",
            Self::Rescue => "rescue",
            Self::Storage => "storage",
            Self::Vendor => "vendor",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Core interfaces must resolve to a real implementation on every node.
    pub fn is_core(self) -> bool {
        matches!(
            self,
            Self::Boot | Self::Deploy | Self::Management | Self::Network | Self::Power
        )
    }

    /// Ironic's tie-breaker between deploy steps of equal priority: the
    /// higher number runs first. Interfaces without steps rank 0.
    pub fn step_rank(self) -> u8 {
        match self {
            Self::Vendor => 7,
            Self::Power => 6,
            Self::Management => 5,
            Self::Firmware => 4,
            Self::Deploy => 3,
            Self::Bios => 2,
            Self::Raid => 1,
            _ => 0,
        }
    }

    /// The node key naming this interface, e.g. `boot_interface`.
    pub fn node_key(self) -> String {
        format!("{}_interface", self.as_str())
    }

    /// The `rivet.toml` key listing enabled implementations.
    pub fn enabled_key(self) -> String {
        format!("enabled_{}_interfaces", self.as_str())
    }

    /// The `rivet.toml` key naming the default implementation.
    pub fn default_key(self) -> String {
        format!("default_{}_interface", self.as_str())
    }

    /// The hardware-type key listing supported implementations.
    pub fn supported_key(self) -> String {
        format!("supported_{}_interfaces", self.as_str())
    }
}

impl fmt::Display for InterfaceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value for each interface type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerInterface<T>(pub [T; 13]);

impl<T> PerInterface<T> {
    pub fn get(&self, kind: InterfaceType) -> &T {
        &self.0[kind as usize]
    }

    pub fn get_mut(&mut self, kind: InterfaceType) -> &mut T {
        &mut self.0[kind as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (InterfaceType, &T)> {
        InterfaceType::ALL.into_iter().zip(self.0.iter())
    }

    pub fn from_fn(f: impl FnMut(InterfaceType) -> T) -> Self {
        Self(InterfaceType::ALL.map(f))
    }
}

/// The provision states a node can be declared to reach.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ProvisionTarget {
    Manageable,
    Available,
    Active,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PowerTarget {
    On,
    Off,
}

/// Boot devices a node can be told to boot from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BootDevice {
    Pxe,
    Disk,
    Cdrom,
    Bios,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    Uefi,
    Bios,
}

/// One argument a step or passthru method accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArgInfo {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub required: bool,
}

/// Ironic's provision states, as its API spells them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum ProvisionState {
    #[serde(rename = "enroll")]
    Enroll,
    #[serde(rename = "verifying")]
    Verifying,
    #[serde(rename = "manageable")]
    Manageable,
    #[serde(rename = "cleaning")]
    Cleaning,
    #[serde(rename = "available")]
    Available,
    #[serde(rename = "deploying")]
    Deploying,
    #[serde(rename = "active")]
    Active,
    #[serde(rename = "deploy failed")]
    DeployFailed,
    #[serde(rename = "deleting")]
    Deleting,
    #[serde(rename = "error")]
    Error,
}

impl ProvisionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enroll => "enroll",
            Self::Verifying => "verifying",
            Self::Manageable => "manageable",
            Self::Cleaning => "cleaning",
            Self::Available => "available",
            Self::Deploying => "deploying",
            Self::Active => "active",
            Self::DeployFailed => "deploy failed",
            Self::Deleting => "deleting",
            Self::Error => "error",
        }
    }

    /// States a node rests in; the others are passed through by an action.
    pub fn is_stable(self) -> bool {
        matches!(
            self,
            Self::Enroll
                | Self::Manageable
                | Self::Available
                | Self::Active
                | Self::DeployFailed
                | Self::Error
        )
    }
}

impl From<ProvisionTarget> for ProvisionState {
    fn from(t: ProvisionTarget) -> Self {
        match t {
            ProvisionTarget::Manageable => Self::Manageable,
            ProvisionTarget::Available => Self::Available,
            ProvisionTarget::Active => Self::Active,
        }
    }
}

impl fmt::Display for ProvisionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ironic's power states, as its API spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PowerState {
    #[serde(rename = "power on")]
    On,
    #[serde(rename = "power off")]
    Off,
    #[serde(rename = "rebooting")]
    Rebooting,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "power on",
            Self::Off => "power off",
            Self::Rebooting => "rebooting",
        }
    }

    /// `on` / `off`, as declarations and plans write it.
    pub fn short(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Rebooting => "rebooting",
        }
    }
}

impl From<PowerTarget> for PowerState {
    fn from(t: PowerTarget) -> Self {
        match t {
            PowerTarget::On => Self::On,
            PowerTarget::Off => Self::Off,
        }
    }
}

impl BootDevice {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pxe => "pxe",
            Self::Disk => "disk",
            Self::Cdrom => "cdrom",
            Self::Bios => "bios",
        }
    }
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uefi => "uefi",
            Self::Bios => "bios",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_indexed_by_discriminant() {
        for (i, kind) in InterfaceType::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i);
            assert_eq!(InterfaceType::parse(kind.as_str()), Some(kind));
        }
    }
}
