//! A node: one physical server, as validated from its declaration.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use uuid::Uuid;

use crate::diag::Loc;
pub use crate::vocab::{BootDevice, BootMode, DiskFormat, PowerTarget, ProvisionTarget};
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

/// What a node deploys, as its `instance` declares it: what the API shows,
/// exec plugins receive, and the instance fingerprint is made of (so its
/// serde form is kept: a field added later is left out while unset).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instance {
    pub image: Option<String>,
    /// As written; [`ImageChecksum::parse`] reads it.
    pub checksum: Option<String>,
    pub kernel: Option<String>,
    pub ramdisk: Option<String>,
    /// Ironic's root device hints by name.
    pub root_device: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_format: Option<DiskFormat>,
    /// As written; `Tenancy::instance_uuid` has it checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// An image checksum the agent verifies (Ironic's `image_os_hash_algo` and
/// `image_os_hash_value`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageChecksum {
    /// `sha256` or `sha512`.
    pub algo: String,
    /// The digest in lower-case hex.
    pub value: String,
}

/// Why a checksum is not one the agent verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadChecksum {
    /// Hex without `algo:`; the algorithm its length fits, if any.
    NoAlgorithm { fits: Option<&'static str> },
    /// md5, which the agent refuses unless told otherwise.
    Md5,
    /// An algorithm neither sha256 nor sha512.
    UnknownAlgorithm(String),
    /// Not hex, or not as long as the algorithm's digests.
    BadDigest { algo: &'static str, hex_len: usize },
}

/// The checksum algorithms the agent verifies by default, with the length
/// of their digests in hex.
pub const CHECKSUM_ALGORITHMS: [(&str, usize); 2] = [("sha256", 64), ("sha512", 128)];

impl ImageChecksum {
    /// `algo:hex`, the algorithm `sha256` or `sha512` (any case), the hex
    /// in either case and as long as the algorithm's digests.
    pub fn parse(text: &str) -> Result<Self, BadChecksum> {
        let text = text.trim();
        let is_hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        let Some((algo, value)) = text.split_once(':') else {
            let fits = is_hex(text)
                .then(|| {
                    CHECKSUM_ALGORITHMS
                        .iter()
                        .chain(&[("md5", 32)])
                        .find(|(_, len)| *len == text.len())
                        .map(|(algo, _)| *algo)
                })
                .flatten();
            return Err(match fits {
                Some("md5") => BadChecksum::Md5,
                fits => BadChecksum::NoAlgorithm { fits },
            });
        };
        let algo = algo.to_ascii_lowercase();
        if algo == "md5" {
            return Err(BadChecksum::Md5);
        }
        let Some(&(name, len)) = CHECKSUM_ALGORITHMS.iter().find(|(a, _)| *a == algo) else {
            return Err(BadChecksum::UnknownAlgorithm(algo));
        };
        if !is_hex(value) || value.len() != len {
            return Err(BadChecksum::BadDigest {
                algo: name,
                hex_len: len,
            });
        }
        Ok(Self {
            algo: name.to_string(),
            value: value.to_ascii_lowercase(),
        })
    }
}

/// What the agent writes to a node's disk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentImage {
    /// `http://` or `https://`: the agent downloads it.
    pub url: String,
    pub disk_format: DiskFormat,
    pub checksum: ImageChecksum,
    /// Ironic's root device hints; empty: the agent picks the smallest disk
    /// of at least 4 GiB.
    pub root_device: BTreeMap<String, serde_json::Value>,
}

/// The agent's ramdisk, in the form a boot interface boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployRamdisk {
    /// `deploy_kernel` and `deploy_ramdisk`, booted from the network.
    Network { kernel: String, ramdisk: String },
    /// `deploy_iso`, inserted as virtual media.
    VirtualMedia { iso: String },
}

impl DeployRamdisk {
    pub fn is_virtual_media(&self) -> bool {
        matches!(self, Self::VirtualMedia { .. })
    }

    /// `own`, and each form of `inherited` that `own` does not give: a
    /// declaration's kernel and ramdisk replace the pair it inherits,
    /// never one of the two.
    pub fn over(own: Vec<Self>, inherited: &[Self]) -> Vec<Self> {
        let mut out = own;
        for ramdisk in inherited {
            if !out
                .iter()
                .any(|o| o.is_virtual_media() == ramdisk.is_virtual_media())
            {
                out.push(ramdisk.clone());
            }
        }
        out
    }
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
    pub instance: Option<Instance>,
    /// What the agent writes: `Some` on a node whose deploy interface needs
    /// the agent and that is to be active.
    pub agent_image: Option<AgentImage>,
    /// The agent's ramdisk fitting the node's boot interface: the node's
    /// own, else its hardware type's (inherited through `base`).
    pub deploy_ramdisk: Option<DeployRamdisk>,
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

    const SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn checksums_name_sha256_or_sha512_and_keep_their_hex_in_lower_case() {
        let upper = format!("SHA256:{}", SHA256.to_ascii_uppercase());
        assert_eq!(
            ImageChecksum::parse(&upper),
            Ok(ImageChecksum {
                algo: "sha256".into(),
                value: SHA256.into()
            })
        );
        let sha512 = "ab".repeat(64);
        assert_eq!(
            ImageChecksum::parse(&format!("sha512:{sha512}")).map(|c| c.algo),
            Ok("sha512".to_string())
        );
        assert_eq!(
            ImageChecksum::parse(SHA256),
            Err(BadChecksum::NoAlgorithm {
                fits: Some("sha256")
            })
        );
        assert_eq!(
            ImageChecksum::parse("abc"),
            Err(BadChecksum::NoAlgorithm { fits: None })
        );
        assert_eq!(ImageChecksum::parse(&"0".repeat(32)), Err(BadChecksum::Md5));
        assert_eq!(
            ImageChecksum::parse(&format!("md5:{}", "0".repeat(32))),
            Err(BadChecksum::Md5)
        );
        assert_eq!(
            ImageChecksum::parse("sha1:00"),
            Err(BadChecksum::UnknownAlgorithm("sha1".into()))
        );
        for bad in [
            "sha256:00",
            &format!("sha256:{}", "g".repeat(64)),
            &format!("sha512:{SHA256}"),
        ] {
            assert!(
                matches!(
                    ImageChecksum::parse(bad),
                    Err(BadChecksum::BadDigest { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_declared_ramdisk_replaces_the_inherited_one_of_its_form_only() {
        let network = |k: &str| DeployRamdisk::Network {
            kernel: format!("http://x/{k}.kernel"),
            ramdisk: format!("http://x/{k}.initramfs"),
        };
        let iso = DeployRamdisk::VirtualMedia {
            iso: "http://x/ipa.iso".into(),
        };
        let inherited = [network("base"), iso.clone()];
        assert_eq!(
            DeployRamdisk::over(vec![network("own")], &inherited),
            [network("own"), iso.clone()]
        );
        assert_eq!(DeployRamdisk::over(Vec::new(), &inherited), inherited);
    }

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
