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
    /// The node's `name` value.
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
