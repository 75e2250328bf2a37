//! A node: one physical server, as validated from its declaration.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use uuid::Uuid;

use crate::diag::Loc;
pub use crate::vocab::{BootDevice, BootMode, PowerTarget, ProvisionTarget};
use crate::vocab::{Name, PerInterface};

/// A value with the place it was declared.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub at: Loc,
}

/// Where a BMC password comes from. Never the password itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// The protocol a BMC address speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BmcProtocol {
    Ipmi,
    Redfish,
    Fake,
}

/// A parsed BMC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmcAddress {
    pub protocol: BmcProtocol,
    /// The scheme as written, e.g. `redfish+https`.
    pub scheme: String,
    pub host: String,
    pub port: Option<u16>,
    /// Redfish system path, e.g. `/redfish/v1/Systems/1`; empty when not given.
    pub path: String,
    /// Only `fake://` takes options (`latency`, `fail`).
    pub query: Option<String>,
    /// Redfish over TLS (`redfish://` and `redfish+https://`).
    pub tls: bool,
    /// `redfish-virtualmedia://`: boot from virtual media.
    pub virtual_media: bool,
}

impl fmt::Display for BmcAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        f.write_str(&self.path)?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

/// How to reach a node's BMC.
#[derive(Debug, Clone)]
pub struct Bmc {
    pub address: BmcAddress,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    pub verify_tls: bool,
    pub ca_file: Option<PathBuf>,
    pub cipher_suite: Option<u8>,
}

/// What the node should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub provision: ProvisionTarget,
    pub power: Option<PowerTarget>,
    pub boot_device: Option<BootDevice>,
    pub boot_mode: Option<BootMode>,
}

/// Where a requested deploy step came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum StepSource {
    Driver,
    Template(String),
    Node,
}

/// A deploy step a template or the node itself asks for.
#[derive(Debug, Clone)]
pub struct StepRequest {
    pub interface: crate::vocab::InterfaceType,
    pub step: String,
    pub priority: u32,
    pub args: BTreeMap<String, serde_json::Value>,
    pub source: StepSource,
    pub at: Loc,
}

/// A validated node.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub uuid: Uuid,
    pub driver: Name,
    /// The composed implementation of every interface type.
    pub interfaces: PerInterface<Name>,
    pub bmc: Bmc,
    pub traits: Vec<String>,
    pub depends_on: Vec<Located<String>>,
    pub rollout: Option<String>,
    pub instance: Option<crate::config::raw::InstanceDecl>,
    pub desired: Desired,
    pub deploy_steps: Vec<StepRequest>,
    /// The declared ports, in declaration order.
    pub ports: Vec<Port>,
    /// Who and what the node is for, in Ironic's terms.
    pub tenancy: Tenancy,
    /// The node's `name` value.
    pub at: Loc,
}

/// The fields by which Ironic's users find and schedule a node, as the
/// operator declares them (`GET /v1/nodes` filters on them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenancy {
    pub resource_class: Option<String>,
    pub owner: Option<String>,
    pub lessee: Option<String>,
    /// Lower case; `""` when not declared, as in Ironic.
    pub conductor_group: String,
    pub description: Option<String>,
    pub retired: bool,
    pub retired_reason: Option<String>,
    pub shard: Option<String>,
    /// The instance's UUID (`instance.uuid`), lower case.
    pub instance_uuid: Option<String>,
}

/// Where a node's port is plugged in.
pub type LocalLink = crate::config::raw::LocalLinkDecl;

/// A declared network port: a NIC of the node, by its MAC address.
#[derive(Debug, Clone)]
pub struct Port {
    pub uuid: Uuid,
    /// Lower case, `:`-separated.
    pub address: String,
    pub pxe_enabled: bool,
    pub physical_network: Option<String>,
    pub local_link_connection: LocalLink,
    /// The port's `address` value.
    pub at: Loc,
}

impl Node {
    /// The composed interfaces by type name, e.g. `{"boot": "pxe", …}`.
    pub fn interface_map(&self) -> std::collections::BTreeMap<String, String> {
        self.interfaces
            .iter()
            .map(|(kind, name)| (kind.as_str().to_string(), name.to_string()))
            .collect()
    }
}

/// The UUID a node without an explicit one gets: the same for the same name,
/// on every machine.
pub fn derived_uuid(name: &str) -> Uuid {
    // A fixed namespace for rivet node names (itself a v5 UUID of "rivet" in the URL namespace).
    let namespace = Uuid::new_v5(&Uuid::NAMESPACE_URL, b"rivet");
    Uuid::new_v5(&namespace, name.as_bytes())
}

/// The UUID of a port without an explicit one: the same for the same node
/// and MAC, on every machine (declared and inspected ports alike).
pub fn derived_port_uuid(node: &Uuid, mac: &str) -> Uuid {
    Uuid::new_v5(node, mac.as_bytes())
}

/// A MAC address in the form Ironic keeps: six pairs of hex digits joined
/// by `:`, lower case; None when `text` is not one.
pub fn normalize_mac(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_six_hex_pairs_kept_in_lower_case() {
        assert_eq!(
            normalize_mac("52:54:00:AB:cd:0F").as_deref(),
            Some("52:54:00:ab:cd:0f")
        );
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:11",
            "52-54-00-ab-cd-0f",
            "52:54:00:ab:cd:0g",
            "5:54:00:ab:cd:0f1",
        ] {
            assert_eq!(normalize_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn port_uuids_derive_from_node_and_mac() {
        let node = derived_uuid("n1");
        let a = derived_port_uuid(&node, "52:54:00:00:00:01");
        assert_eq!(a, derived_port_uuid(&node, "52:54:00:00:00:01"));
        assert_ne!(a, derived_port_uuid(&node, "52:54:00:00:00:02"));
        assert_ne!(
            a,
            derived_port_uuid(&derived_uuid("n2"), "52:54:00:00:00:01")
        );
    }
}
