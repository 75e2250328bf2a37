//! The values stored in redb tables.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::vocab::{BootDevice, BootMode, InterfaceNames, Name, PowerState, ProvisionState};

/// What rivet last observed of a node (table `NODES`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub uuid: String,
    pub driver: Name,
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
    /// The operation running now, e.g. `{"interface": "deploy", "step": "deploy", "priority": 100}`.
    #[serde(default)]
    pub deploy_step: Option<serde_json::Value>,
    /// Fingerprint of the `instance` that is deployed, when active.
    #[serde(default)]
    pub deployed_instance: Option<String>,
    /// The composed interfaces the node was last converged with.
    #[serde(default)]
    pub interfaces: InterfaceNames,
    /// What inspection found: `cpus`, `memory_gib`, `macs`.
    #[serde(default)]
    pub properties: Properties,
    /// Consecutive failed power-state reads (3 → maintenance).
    #[serde(default)]
    pub power_failures: u32,
    /// Removed from the declarations: left as it is and no longer converged.
    #[serde(default)]
    pub unmanaged: bool,
    /// RFC 3339.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// When the state file first saw the node (RFC 3339); set once.
    #[serde(default)]
    pub created_at: Option<String>,
    /// When the last inspection started and, if it succeeded, finished.
    #[serde(default)]
    pub inspection_started_at: Option<String>,
    #[serde(default)]
    pub inspection_finished_at: Option<String>,
    /// The BIOS settings rivet last applied through the bios interface.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bios: BTreeMap<String, Value>,
    /// In a cluster: the daemon (host) that owns the node and wrote this
    /// record. None for a single daemon, which owns every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conductor: Option<String>,
    /// The agent of the deploy ramdisk the node runs now, once it called
    /// back (Ironic's `driver_internal_info.agent_url`); never its token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSeen>,
}

/// Where a node's agent listens and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSeen {
    pub url: String,
    #[serde(default)]
    pub version: Option<String>,
}

impl NodeRecord {
    /// A node rivet has never touched, first seen at `at`.
    pub fn first_seen(uuid: impl Into<String>, driver: &str, at: String) -> Self {
        Self {
            created_at: Some(at),
            ..Self::enrolled(uuid, driver)
        }
    }

    /// A node rivet has never touched.
    pub fn enrolled(uuid: impl Into<String>, driver: &str) -> Self {
        Self {
            uuid: uuid.into(),
            driver: Name::new(driver),
            provision_state: ProvisionState::Enroll,
            target_provision_state: None,
            power_state: None,
            target_power_state: None,
            boot_device: None,
            boot_mode: None,
            maintenance: false,
            fault: None,
            last_error: None,
            deploy_step: None,
            deployed_instance: None,
            interfaces: InterfaceNames::default(),
            properties: Properties::default(),
            power_failures: 0,
            unmanaged: false,
            updated_at: None,
            created_at: None,
            inspection_started_at: None,
            inspection_finished_at: None,
            bios: BTreeMap::new(),
            conductor: None,
            agent: None,
        }
    }
}

/// What inspection found, kept as JSON text: people and the API read it,
/// the engine never does, and the text is a tenth of the size of a parsed
/// map (10,000 records keep ~7 MB less).
#[derive(Clone, Debug, Default)]
pub struct Properties(Option<Box<RawValue>>);

impl Properties {
    pub fn new(found: &serde_json::Map<String, Value>) -> Self {
        if found.is_empty() {
            return Self(None);
        }
        Self(serde_json::value::to_raw_value(found).ok())
    }

    /// The properties as a JSON object (empty when nothing was found).
    pub fn to_map(&self) -> serde_json::Map<String, Value> {
        self.0
            .as_ref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl PartialEq for Properties {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_ref().map(|r| r.get()) == other.0.as_ref().map(|r| r.get())
    }
}

impl Serialize for Properties {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(raw) => raw.serialize(s),
            None => s.collect_map(std::iter::empty::<((), ())>()),
        }
    }
}

impl<'de> Deserialize<'de> for Properties {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let found = serde_json::Map::<String, Value>::deserialize(d)?;
        Ok(Self::new(&found))
    }
}

/// A node's unfinished work (table `JOURNALS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub run_id: u64,
    /// The operations, as the converge engine encodes them.
    pub ops: EncodedOps,
    /// The next operation to run; an operation at this index may have
    /// started before a crash and is run again (operations are idempotent).
    pub next: usize,
    /// RFC 3339.
    pub started_at: String,
}

/// A power drift power sync recorded and has not seen end (table `DRIFTS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftRecord {
    /// The power the BMC reported.
    pub found: PowerState,
    /// The power declared when it was found.
    pub declared: PowerState,
    /// RFC 3339: when it was first found.
    pub since: String,
    /// What power sync put in the node's `last_error` for this drift, if
    /// anything: it clears only its own message, never a run's error.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The last failure to enforce it that went to history: the same
    /// failure again is logged, not recorded again.
    #[serde(default)]
    pub enforce_failure: Option<String>,
}

/// A node's agent channel (table `AGENTS`): opened for one boot of its
/// deploy ramdisk, closed when the agent is powered off or the deploy ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub uuid: String,
    /// The MAC addresses the agent's lookup may name (the node's ports).
    pub macs: Vec<String>,
    /// Which boot of the ramdisk this is: counted by every opening.
    pub boot: u64,
    /// RFC 3339: when this boot's channel opened.
    pub opened_at: String,
    /// What the lookup answers as the node's `properties` and
    /// `instance_info` (root device hints, the image).
    #[serde(default)]
    pub properties: serde_json::Value,
    #[serde(default)]
    pub instance_info: serde_json::Value,
    /// Hex SHA-256 of the token handed out at this boot's first lookup;
    /// the token is kept in memory only.
    #[serde(default)]
    pub token_sha256: Option<String>,
    #[serde(default)]
    pub token_issued_at: Option<String>,
    /// Where the agent listens, from its first accepted heartbeat.
    #[serde(default)]
    pub callback_url: Option<String>,
    #[serde(default)]
    pub agent_version: Option<String>,
    #[serde(default)]
    pub first_heartbeat_at: Option<String>,
}

/// A run's operations as one JSON array, encoded once and shared by every
/// journal write of the run (one before and one after each operation), so
/// a write costs a copy of the text, not a deep copy of parsed values.
#[derive(Clone, Debug)]
pub struct EncodedOps(Arc<RawValue>);

impl EncodedOps {
    pub fn encode<T: Serialize>(ops: &[T]) -> Self {
        Self(Arc::from(
            serde_json::value::to_raw_value(ops).expect("operations serialize"),
        ))
    }

    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<Vec<T>, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

impl PartialEq for EncodedOps {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Serialize for EncodedOps {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for EncodedOps {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(|raw| Self(Arc::from(raw)))
    }
}

/// What happened (table `HISTORY`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Assigned by the store: 1, 2, 3 … without gaps.
    #[serde(default)]
    pub seq: u64,
    pub node: String,
    #[serde(default)]
    pub run_id: Option<u64>,
    /// Index of the operation in the node's journal, when it is one.
    #[serde(default)]
    pub op_index: Option<usize>,
    /// What was done, e.g. `deploy.deploy`, `power on`, `manage`.
    pub action: String,
    pub outcome: Outcome,
    /// `fake`, `redfish`, `ipmi`, `exec`, or `rivet` for bookkeeping.
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub detail: Option<String>,
    /// RFC 3339.
    pub at: String,
}

impl Event {
    /// An event outside any run's operations (drift, maintenance, unmanaged …).
    pub fn note(
        node: &str,
        action: &str,
        outcome: Outcome,
        detail: impl Into<String>,
        at: String,
    ) -> Self {
        Self {
            seq: 0,
            node: node.to_string(),
            run_id: None,
            op_index: None,
            action: action.to_string(),
            outcome,
            protocol: None,
            duration_ms: None,
            detail: Some(detail.into()),
            at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Started,
    Succeeded,
    Failed,
    /// Found started but unfinished after a restart; it runs again.
    Resumed,
    /// Observed without acting (drift reported, node unmanaged, …).
    Noted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub plan_fingerprint: String,
    /// The git commit of the fleet directory, when it is a git checkout.
    #[serde(default)]
    pub source_commit: Option<String>,
    pub status: RunStatus,
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

/// The simulated hardware of one `fake://` BMC.
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
    /// BIOS settings applied by deploy steps.
    #[serde(default)]
    pub bios: BTreeMap<String, serde_json::Value>,
    /// Set by hand to make the BMC stop answering (a fault drill).
    #[serde(default)]
    pub unreachable: bool,
    /// The highest fencing token the BMC accepted, per node: a call with a
    /// lower one comes from a conductor that lost the node, and is refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens: BTreeMap<String, i64>,
}

impl Default for FakeBmcRecord {
    fn default() -> Self {
        Self {
            power: PowerState::Off,
            boot_device: None,
            boot_mode: None,
            virtual_media: None,
            bios: BTreeMap::new(),
            unreachable: false,
            tokens: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_keep_what_was_found_as_json_text() {
        let found = serde_json::json!({"cpus": 2, "macs": ["52:54:00:00:00:01"]});
        let mut record = NodeRecord::enrolled("u", "fake-hardware");
        record.properties = Properties::new(found.as_object().unwrap());
        let text = serde_json::to_string(&record).unwrap();
        assert!(text.contains(r#""properties":{"cpus":2,"macs":["52:54:00:00:00:01"]}"#));
        let back: NodeRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, record);
        assert_eq!(Value::Object(back.properties.to_map()), found);
        // Nothing found is stored as an empty object and read back as nothing.
        let empty = NodeRecord::enrolled("u", "fake-hardware");
        let text = serde_json::to_string(&empty).unwrap();
        assert!(text.contains(r#""properties":{}"#));
        let back: NodeRecord = serde_json::from_str(&text).unwrap();
        assert!(back.properties.is_empty());
        // Records written before this field existed still read.
        let old: NodeRecord =
            serde_json::from_str(r#"{"uuid":"u","driver":"ipmi","provision_state":"enroll"}"#)
                .unwrap();
        assert!(old.properties.is_empty() && old.interfaces.is_empty());
    }
}
