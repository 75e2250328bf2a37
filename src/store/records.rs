//! The values stored in redb tables.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::vocab::{BootDevice, BootMode, PowerState, ProvisionState};

/// What rivet last observed of a node (table `NODES`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub uuid: String,
    pub driver: String,
    pub provision_state: ProvisionState,
    #[serde(default)]
    pub target_provision_state: Option<ProvisionState>,
    #[serde(default)]
    pub power_state: Option<PowerState>,
    #[serde(default)]
    pub target_power_state: Option<PowerState>,
    #[serde(default)]
    pub boot_device: Option<BootDevice>,
    #[serde(default)]
    pub boot_mode: Option<BootMode>,
    #[serde(default)]
    pub maintenance: bool,
    #[serde(default)]
    pub fault: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Fingerprint of the `instance` that is deployed, when active.
    #[serde(default)]
    pub deployed_instance: Option<String>,
    /// The composed interfaces the node was last converged with.
    #[serde(default)]
    pub interfaces: BTreeMap<String, String>,
    /// RFC 3339.
    #[serde(default)]
    pub updated_at: Option<String>,
}

impl NodeRecord {
    /// A node rivet has never touched.
    pub fn enrolled(uuid: impl Into<String>, driver: impl Into<String>) -> Self {
        Self {
            uuid: uuid.into(),
            driver: driver.into(),
            provision_state: ProvisionState::Enroll,
            target_provision_state: None,
            power_state: None,
            target_power_state: None,
            boot_device: None,
            boot_mode: None,
            maintenance: false,
            fault: None,
            last_error: None,
            deployed_instance: None,
            interfaces: BTreeMap::new(),
            updated_at: None,
        }
    }
}

/// The state of one fake BMC (table `FAKE_BMC`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FakeBmcRecord {
    pub power: PowerState,
    #[serde(default)]
    pub boot_device: Option<BootDevice>,
    #[serde(default)]
    pub boot_mode: Option<BootMode>,
    /// Image inserted as virtual media, if any.
    #[serde(default)]
    pub virtual_media: Option<String>,
}

impl Default for FakeBmcRecord {
    fn default() -> Self {
        Self {
            power: PowerState::Off,
            boot_device: None,
            boot_mode: None,
            virtual_media: None,
        }
    }
}
