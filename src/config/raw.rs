//! The declaration files exactly as written: serde types with spans.
//!
//! Field names are part of the file-format contract. Every struct denies
//! unknown keys, so a typo is an error with a suggestion, never ignored.
//! The JSON schemas in `schema/` are generated from these types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::spanned::Sp;
use crate::vocab::{
    ArgInfo, BootDevice, BootMode, DiskFormat, InterfaceType, PowerTarget, ProvisionTarget,
};

/// `rivet.toml`: conductor settings, the cluster several daemons share,
/// interface enablement and rollout groups.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "rivet.toml")]
pub struct RivetFile {
    #[serde(default)]
    pub conductor: ConductorDecl,
    /// Present when several daemons share this fleet through etcd.
    pub cluster: Option<Sp<ClusterDecl>>,
    #[serde(default)]
    pub hardware: HardwareDecl,
    #[serde(default)]
    pub rollout: Vec<Sp<RolloutDecl>>,
}

/// How a drift between declared and observed state is handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftPolicy {
    /// Put the hardware back to the declared state.
    #[default]
    Enforce,
    /// Only record and report the drift.
    Report,
}

/// `[conductor]`: how this rivet process runs.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConductorDecl {
    /// The redb state file, relative to the fleet directory (`--state`
    /// overrides it). Default `.rivet/state.redb`.
    pub state: Option<Sp<String>>,
    /// HTTP API bind address (`--http` overrides it). Default `127.0.0.1:6385`.
    pub http: Option<Sp<String>>,
    /// The name this conductor reports as its host (`--host` overrides it):
    /// printable ASCII without spaces or `/`, at most 255 characters.
    /// Default: the machine's hostname.
    pub host: Option<Sp<String>>,
    /// Nodes converged in parallel. Default 64.
    pub workers: Option<Sp<u32>>,
    /// How often power state is read from every BMC, e.g. `120s`, `5m`. Default `120s`.
    pub power_sync_interval: Option<Sp<String>>,
    /// BMCs read at once by a power sync (each BMC still sees one call at a time). Default 128.
    pub power_sync_workers: Option<Sp<u32>>,
    /// `enforce` (default) puts drifted hardware back; `report` only records it.
    pub drift: Option<DriftPolicy>,
    /// Tear down nodes removed from the files. Default false: they become unmanaged.
    pub prune: Option<bool>,
    /// Environment variable holding the bearer token the HTTP API requires for passthru.
    pub api_token_env: Option<String>,
    /// The shortest pause between two commands to one IPMI BMC, e.g. `5s`, `100ms`.
    /// Default `5s`, as Ironic's `[ipmi] min_command_interval`: many BMCs drop
    /// commands that come faster.
    pub ipmi_min_command_interval: Option<Sp<String>>,
    /// Require the token for reads too (every endpoint but `/`, `/v1` and `/healthz`). Default false.
    pub api_token_reads: Option<bool>,
    /// History events kept per node; older ones are removed. Default 300, as
    /// Ironic's `[conductor] node_history_max_entries`. `0` keeps every event.
    pub history_max_entries: Option<u32>,
    /// How often the daemon removes history beyond `history_max_entries`,
    /// e.g. `1h`, `1d`. Default `1h`. (`rivet reconcile` prunes the nodes it
    /// converged when it ends.)
    pub history_cleanup_interval: Option<Sp<String>>,
    /// The most one power, boot or virtual media operation of a converge may
    /// take, its retries included, e.g. `5m`, `90s`. Default `5m`: past it
    /// the node fails and the run moves on.
    pub operation_timeout: Option<Sp<String>>,
    /// The most one deploy step may take, its retries included, e.g. `30m`,
    /// `2h`. Default `30m`.
    pub deploy_step_timeout: Option<Sp<String>>,
    /// How long a deploy waits for the agent in its ramdisk to heartbeat
    /// once the node is powered on (Ironic's `wait call-back`), e.g. `30m`.
    /// Default `30m`, as Ironic's `[conductor] deploy_callback_timeout`.
    pub deploy_callback_timeout: Option<Sp<String>>,
    /// The `heartbeat_timeout` agents are told at lookup: each heartbeats
    /// every 0.3 to 0.6 of it, e.g. `60s`. Default `60s`. rivet follows
    /// agent commands to their end rather than waiting for heartbeats, so
    /// this only bounds how soon a restarted rivet hears from an agent.
    pub agent_heartbeat_timeout: Option<Sp<String>>,
    /// Where fake-hardware BMCs keep their state and their call log,
    /// relative to the fleet directory; conductors that share it share the
    /// fake BMCs. Default `fake-bmc` beside the state file.
    pub fake_bmc_dir: Option<Sp<String>>,
}

/// `[cluster]`: the etcd cluster several daemons of this fleet coordinate
/// through, one per provisioning host. Without it each daemon converges the
/// whole fleet alone.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterDecl {
    /// The etcd endpoints, e.g. `["https://10.0.0.1:2379", "https://10.0.0.2:2379"]`:
    /// `http://` or `https://` with a host and port, no path; credentials go
    /// in `username` and `password_env`, never in the URL. Required (its
    /// absence is reported as a problem of its own, not a parse error).
    #[schemars(required)]
    pub etcd: Option<Sp<Vec<Sp<String>>>>,
    /// How long a daemon's lease lives without a keep-alive, in whole
    /// seconds, e.g. `10s`; at least `2s` (etcd's minimum). Default `10s`.
    pub lease_ttl: Option<Sp<String>>,
    /// The conductor group of this fleet's daemons, and of every node that
    /// names none: letters, digits, `_`, `-` and `.`, at most 255 characters.
    /// Default `""`.
    pub conductor_group: Option<Sp<String>>,
    /// Where in etcd this fleet's keys live: starts and ends with `/`.
    /// Two fleets sharing one etcd need two prefixes. Default `/rivet/`.
    pub key_prefix: Option<Sp<String>>,
    /// The URL the other daemons forward API requests for this host's nodes
    /// to, e.g. `http://10.0.0.5:6385` (`--advertise-url` overrides it, as it
    /// differs per host): `http://` or `https://`, host and port, no path.
    pub advertise_url: Option<Sp<String>>,
    /// CA bundle (PEM) to verify etcd's certificates with, relative to the
    /// fleet directory or absolute. Needs `https://` endpoints.
    pub ca_file: Option<Sp<String>>,
    /// Client certificate (PEM) for etcd, with `key_file`. Needs `https://` endpoints.
    pub cert_file: Option<Sp<String>>,
    /// The client certificate's private key (PEM), with `cert_file`.
    pub key_file: Option<Sp<String>>,
    /// The etcd user, with `password_env`.
    pub username: Option<Sp<String>>,
    /// Environment variable that holds the etcd user's password.
    pub password_env: Option<Sp<String>>,
}

/// `[hardware]`: which hardware types and interfaces are enabled, and the
/// defaults used when a node names none.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HardwareDecl {
    pub enabled_hardware_types: Option<Sp<Vec<Sp<String>>>>,
    pub enabled_bios_interfaces: Option<Sp<Vec<Sp<String>>>>,
    pub enabled_boot_interfaces: Option<Sp<Vec<Sp<String>>>>,
    pub enabled_console_interfaces: Option<Sp<Vec<Sp<String>>>>,
    pub enabled_deploy_interfaces: Option<Sp<Vec<Sp<String>>>>,
    pub enabled_firmware_interfaces: Option<Sp<Vec<Sp<String>>>>,
    pub enabled_inspect_interfaces: Option<Sp<Vec<Sp<String>>>>,
    pub enabled_management_interfaces: Option<Sp<Vec<Sp<String>>>>,
    pub enabled_network_interfaces: Option<Sp<Vec<Sp<String>>>>,
    pub enabled_power_interfaces: Option<Sp<Vec<Sp<String>>>>,
    pub enabled_raid_interfaces: Option<Sp<Vec<Sp<String>>>>,
    pub enabled_rescue_interfaces: Option<Sp<Vec<Sp<String>>>>,
    pub enabled_storage_interfaces: Option<Sp<Vec<Sp<String>>>>,
    pub enabled_vendor_interfaces: Option<Sp<Vec<Sp<String>>>>,
    pub default_bios_interface: Option<Sp<String>>,
    pub default_boot_interface: Option<Sp<String>>,
    pub default_console_interface: Option<Sp<String>>,
    pub default_deploy_interface: Option<Sp<String>>,
    pub default_firmware_interface: Option<Sp<String>>,
    pub default_inspect_interface: Option<Sp<String>>,
    pub default_management_interface: Option<Sp<String>>,
    pub default_network_interface: Option<Sp<String>>,
    pub default_power_interface: Option<Sp<String>>,
    pub default_raid_interface: Option<Sp<String>>,
    pub default_rescue_interface: Option<Sp<String>>,
    pub default_storage_interface: Option<Sp<String>>,
    pub default_vendor_interface: Option<Sp<String>>,
}

impl HardwareDecl {
    pub fn enabled(&self, kind: InterfaceType) -> Option<&Sp<Vec<Sp<String>>>> {
        use InterfaceType::*;
        match kind {
            Bios => self.enabled_bios_interfaces.as_ref(),
            Boot => self.enabled_boot_interfaces.as_ref(),
            Console => self.enabled_console_interfaces.as_ref(),
            Deploy => self.enabled_deploy_interfaces.as_ref(),
            Firmware => self.enabled_firmware_interfaces.as_ref(),
            Inspect => self.enabled_inspect_interfaces.as_ref(),
            Management => self.enabled_management_interfaces.as_ref(),
            Network => self.enabled_network_interfaces.as_ref(),
            Power => self.enabled_power_interfaces.as_ref(),
            Raid => self.enabled_raid_interfaces.as_ref(),
            Rescue => self.enabled_rescue_interfaces.as_ref(),
            Storage => self.enabled_storage_interfaces.as_ref(),
            Vendor => self.enabled_vendor_interfaces.as_ref(),
        }
    }

    pub fn default_for(&self, kind: InterfaceType) -> Option<&Sp<String>> {
        use InterfaceType::*;
        match kind {
            Bios => self.default_bios_interface.as_ref(),
            Boot => self.default_boot_interface.as_ref(),
            Console => self.default_console_interface.as_ref(),
            Deploy => self.default_deploy_interface.as_ref(),
            Firmware => self.default_firmware_interface.as_ref(),
            Inspect => self.default_inspect_interface.as_ref(),
            Management => self.default_management_interface.as_ref(),
            Network => self.default_network_interface.as_ref(),
            Power => self.default_power_interface.as_ref(),
            Raid => self.default_raid_interface.as_ref(),
            Rescue => self.default_rescue_interface.as_ref(),
            Storage => self.default_storage_interface.as_ref(),
            Vendor => self.default_vendor_interface.as_ref(),
        }
    }
}

/// `[[rollout]]`: a group of nodes converged with limits.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutDecl {
    pub name: Sp<String>,
    /// At most this many nodes of the group converge at once. Default: no limit.
    pub max_parallel: Option<Sp<u32>>,
    /// Stop starting nodes of the group once this many have failed. Default 0.
    pub max_failures: Option<u32>,
}

/// A node file (`nodes/**/*.toml`): any number of `[[node]]` tables.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "rivet node file")]
pub struct NodeFile {
    #[serde(default)]
    pub node: Vec<NodeDecl>,
}

/// `[[node]]`: one physical server.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeDecl {
    /// Unique, DNS-label-like: lowercase letters, digits and `-`.
    pub name: Sp<String>,
    /// Fixed UUID; default: derived from the name, the same every time.
    pub uuid: Option<Sp<String>>,
    /// The hardware type.
    pub driver: Sp<String>,
    pub bios_interface: Option<Sp<String>>,
    pub boot_interface: Option<Sp<String>>,
    pub console_interface: Option<Sp<String>>,
    pub deploy_interface: Option<Sp<String>>,
    pub firmware_interface: Option<Sp<String>>,
    pub inspect_interface: Option<Sp<String>>,
    pub management_interface: Option<Sp<String>>,
    pub network_interface: Option<Sp<String>>,
    pub power_interface: Option<Sp<String>>,
    pub raid_interface: Option<Sp<String>>,
    pub rescue_interface: Option<Sp<String>>,
    pub storage_interface: Option<Sp<String>>,
    pub vendor_interface: Option<Sp<String>>,
    pub bmc: Option<Sp<BmcDecl>>,
    #[serde(default)]
    pub traits: Vec<Sp<String>>,
    /// Nodes that must be `active` before this one deploys.
    #[serde(default)]
    pub depends_on: Vec<Sp<String>>,
    /// The `[[rollout]]` group this node belongs to.
    pub rollout: Option<Sp<String>>,
    pub instance: Option<Sp<InstanceDecl>>,
    /// The agent's kernel URL, for `direct` deploys that boot it from the
    /// network; with `deploy_ramdisk`. Default: the hardware type's.
    pub deploy_kernel: Option<Sp<String>>,
    /// The agent's ramdisk URL, with `deploy_kernel`. Default: the hardware type's.
    pub deploy_ramdisk: Option<Sp<String>>,
    /// The agent as an ISO, for `direct` deploys through a virtual-media
    /// boot interface. Default: the hardware type's.
    pub deploy_iso: Option<Sp<String>>,
    #[serde(default)]
    pub desired: DesiredDecl,
    /// Extra deploy steps; they override driver and template steps with the
    /// same (interface, step).
    #[serde(default)]
    pub deploy_steps: Vec<Sp<StepDecl>>,
    /// The node's network ports, one per NIC, by MAC address.
    #[serde(default)]
    pub ports: Vec<Sp<PortDecl>>,
    /// What the node is scheduled as (Nova's resource class), e.g. `baremetal-gpu`;
    /// at most 80 characters.
    pub resource_class: Option<Sp<String>>,
    /// The project that owns the node.
    pub owner: Option<String>,
    /// The project the node is leased to.
    pub lessee: Option<String>,
    /// The conductor group that manages the node: letters, digits, `_`, `-`
    /// and `.`, at most 255 characters; default `""`.
    pub conductor_group: Option<Sp<String>>,
    /// Free text about the node, at most 4096 characters.
    pub description: Option<Sp<String>>,
    /// Retired: kept, but not to be deployed again. Default false.
    pub retired: Option<bool>,
    /// Why the node is retired.
    pub retired_reason: Option<String>,
    /// The shard the node belongs to, for services that split a fleet by it.
    pub shard: Option<String>,
}

/// `[[node.ports]]`: one network port (NIC) of a node.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortDecl {
    /// The MAC address, six pairs of hex digits separated by `:`; kept in lower case.
    pub address: Sp<String>,
    /// Fixed UUID; default: derived from the node's UUID and the MAC, the same every time.
    pub uuid: Option<Sp<String>>,
    /// Whether the node boots from the network through this port. Default true.
    pub pxe_enabled: Option<bool>,
    /// The physical network the port is attached to.
    pub physical_network: Option<String>,
    /// Where the port is plugged in, as LLDP reports it.
    pub local_link_connection: Option<LocalLinkDecl>,
}

/// `local_link_connection = { … }`: the switch port a node's port is plugged into.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LocalLinkDecl {
    /// The switch's chassis ID, e.g. its MAC address.
    pub switch_id: Option<String>,
    /// The switch port, e.g. `Ethernet3/1`.
    pub port_id: Option<String>,
    /// The switch's name or other information.
    pub switch_info: Option<String>,
}

impl NodeDecl {
    pub fn interface(&self, kind: InterfaceType) -> Option<&Sp<String>> {
        use InterfaceType::*;
        match kind {
            Bios => self.bios_interface.as_ref(),
            Boot => self.boot_interface.as_ref(),
            Console => self.console_interface.as_ref(),
            Deploy => self.deploy_interface.as_ref(),
            Firmware => self.firmware_interface.as_ref(),
            Inspect => self.inspect_interface.as_ref(),
            Management => self.management_interface.as_ref(),
            Network => self.network_interface.as_ref(),
            Power => self.power_interface.as_ref(),
            Raid => self.raid_interface.as_ref(),
            Rescue => self.rescue_interface.as_ref(),
            Storage => self.storage_interface.as_ref(),
            Vendor => self.vendor_interface.as_ref(),
        }
    }
}

/// `bmc = { … }`: how to reach the server's baseboard management controller.
/// There is no `password` key: secrets never live in git.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BmcDecl {
    /// `ipmi://host[:port]`, `redfish://`, `redfish+http://`, `redfish+https://host[/redfish/v1/Systems/ID]`,
    /// `redfish-virtualmedia://…`, `fake://name[?latency=…&fail=…]`.
    pub address: Sp<String>,
    pub username: Option<String>,
    /// Environment variable that holds the BMC password.
    pub password_env: Option<Sp<String>>,
    /// File that holds the BMC password (relative to the fleet directory or absolute).
    pub password_file: Option<Sp<String>>,
    /// Verify the BMC's TLS certificate. Default true.
    pub verify_tls: Option<bool>,
    /// CA bundle (PEM) to verify the BMC's certificate with.
    pub ca_file: Option<String>,
    /// IPMI cipher suite (`-C`); unset = ipmitool's choice.
    pub cipher_suite: Option<Sp<u8>>,
}

/// `instance = { … }`: what to deploy.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceDecl {
    /// Image URL: a whole-disk image (`raw` or `qcow2`) the agent writes
    /// for `direct` deploys, an ISO for ramdisk deploys.
    pub image: Option<Sp<String>>,
    /// `sha256:<hex>` or `sha512:<hex>` of the image; hex in either case.
    /// md5 is refused: ironic-python-agent refuses it by default.
    pub checksum: Option<Sp<String>>,
    /// The image's format for `direct` deploys: `raw` or `qcow2`.
    pub disk_format: Option<Sp<DiskFormat>>,
    /// Kernel URL, for ramdisk deploys without an ISO.
    pub kernel: Option<Sp<String>>,
    /// Ramdisk URL, for ramdisk deploys without an ISO.
    pub ramdisk: Option<Sp<String>>,
    /// Which disk to deploy to, as Ironic's root device hints: a disk must
    /// match every hint given.
    pub root_device: Option<Sp<RootDeviceDecl>>,
    /// The UUID of the instance the node serves (Ironic's `instance_uuid`):
    /// the node counts as associated.
    pub uuid: Option<String>,
}

/// `root_device = { … }`: Ironic's root device hints. String hints take
/// Ironic's operators too (`"<in> samsung"`, `"s== ABC <or> s== DEF"`).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RootDeviceDecl {
    /// Size in GiB: a whole number above 0, or a string with an operator,
    /// e.g. `">= 100"`, `"<or> 100 <or> 200"`.
    pub size: Option<Sp<SizeHint>>,
    /// `true` for a spinning disk, `false` for a solid-state one.
    pub rotational: Option<bool>,
    pub model: Option<Sp<String>>,
    pub vendor: Option<Sp<String>>,
    pub serial: Option<Sp<String>>,
    /// World Wide Name, e.g. `0x4000cca77fc4dba1`.
    pub wwn: Option<Sp<String>>,
    pub wwn_with_extension: Option<Sp<String>>,
    pub wwn_vendor_extension: Option<Sp<String>>,
    /// The device name, e.g. `/dev/sda` (not stable across reboots on every
    /// system: prefer `by_path` or `serial`).
    pub name: Option<Sp<String>>,
    /// SCSI address `host:channel:target:lun`, e.g. `1:0:0:0`.
    pub hctl: Option<Sp<String>>,
    /// The disk's `/dev/disk/by-path/` name.
    pub by_path: Option<Sp<String>>,
}

impl RootDeviceDecl {
    /// The string hints with their names, in Ironic's order.
    pub fn texts(&self) -> [(&'static str, Option<&Sp<String>>); 9] {
        [
            ("model", self.model.as_ref()),
            ("vendor", self.vendor.as_ref()),
            ("serial", self.serial.as_ref()),
            ("wwn", self.wwn.as_ref()),
            ("wwn_with_extension", self.wwn_with_extension.as_ref()),
            ("wwn_vendor_extension", self.wwn_vendor_extension.as_ref()),
            ("name", self.name.as_ref()),
            ("hctl", self.hctl.as_ref()),
            ("by_path", self.by_path.as_ref()),
        ]
    }
}

/// A root device `size` hint as written: GiB, or an expression with them.
// Deserialized by hand, so that a wrong type says what a size is;
// `untagged` is for the schema (an integer or a string).
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[serde(untagged)]
pub enum SizeHint {
    Gib(i64),
    Expression(String),
}

impl<'de> Deserialize<'de> for SizeHint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = SizeHint;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number of GiB or a string such as \">= 100\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SizeHint, E> {
                Ok(SizeHint::Gib(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeHint, E> {
                i64::try_from(v)
                    .map(SizeHint::Gib)
                    .map_err(|_| E::custom("the size is too large"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeHint, E> {
                Ok(SizeHint::Expression(v.to_string()))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// `desired = { … }`: the state rivet converges the node to.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DesiredDecl {
    /// Target provision state. Default `available` (a node is never deployed
    /// unless asked to be).
    pub provision: Option<Sp<ProvisionTarget>>,
    /// Target power state; unset = whatever it is.
    pub power: Option<PowerTarget>,
    pub boot_device: Option<BootDevice>,
    pub boot_mode: Option<BootMode>,
}

/// A deploy step requested by a template or a node.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDecl {
    pub interface: Sp<InterfaceType>,
    pub step: Sp<String>,
    /// Higher runs first; 0 disables the step.
    pub priority: Sp<u32>,
    #[serde(default)]
    pub args: Option<Sp<BTreeMap<String, serde_json::Value>>>,
}

/// A driver file (`drivers/*.toml`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "rivet driver file")]
pub struct DriverFile {
    #[serde(default)]
    pub hardware_type: Vec<HardwareTypeDecl>,
    #[serde(default)]
    pub interface: Vec<InterfaceDecl>,
    #[serde(default)]
    pub deploy_template: Vec<TemplateDecl>,
}

/// `[[hardware_type]]`: a custom hardware type.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HardwareTypeDecl {
    pub name: Sp<String>,
    /// Inherit every supported list from this type, then override the ones named here.
    pub base: Option<Sp<String>>,
    pub supported_bios_interfaces: Option<Vec<Sp<String>>>,
    pub supported_boot_interfaces: Option<Vec<Sp<String>>>,
    pub supported_console_interfaces: Option<Vec<Sp<String>>>,
    pub supported_deploy_interfaces: Option<Vec<Sp<String>>>,
    pub supported_firmware_interfaces: Option<Vec<Sp<String>>>,
    pub supported_inspect_interfaces: Option<Vec<Sp<String>>>,
    pub supported_management_interfaces: Option<Vec<Sp<String>>>,
    pub supported_network_interfaces: Option<Vec<Sp<String>>>,
    pub supported_power_interfaces: Option<Vec<Sp<String>>>,
    pub supported_raid_interfaces: Option<Vec<Sp<String>>>,
    pub supported_rescue_interfaces: Option<Vec<Sp<String>>>,
    pub supported_storage_interfaces: Option<Vec<Sp<String>>>,
    pub supported_vendor_interfaces: Option<Vec<Sp<String>>>,
    /// The agent's kernel URL for every node of this type (a node's own
    /// wins); with `deploy_ramdisk`. Default: the base type's.
    pub deploy_kernel: Option<Sp<String>>,
    /// The agent's ramdisk URL, with `deploy_kernel`. Default: the base type's.
    pub deploy_ramdisk: Option<Sp<String>>,
    /// The agent as an ISO, for virtual-media boot. Default: the base type's.
    pub deploy_iso: Option<Sp<String>>,
}

impl HardwareTypeDecl {
    pub fn supported(&self, kind: InterfaceType) -> Option<&Vec<Sp<String>>> {
        use InterfaceType::*;
        match kind {
            Bios => self.supported_bios_interfaces.as_ref(),
            Boot => self.supported_boot_interfaces.as_ref(),
            Console => self.supported_console_interfaces.as_ref(),
            Deploy => self.supported_deploy_interfaces.as_ref(),
            Firmware => self.supported_firmware_interfaces.as_ref(),
            Inspect => self.supported_inspect_interfaces.as_ref(),
            Management => self.supported_management_interfaces.as_ref(),
            Network => self.supported_network_interfaces.as_ref(),
            Power => self.supported_power_interfaces.as_ref(),
            Raid => self.supported_raid_interfaces.as_ref(),
            Rescue => self.supported_rescue_interfaces.as_ref(),
            Storage => self.supported_storage_interfaces.as_ref(),
            Vendor => self.supported_vendor_interfaces.as_ref(),
        }
    }
}

/// `[[interface]]`: an out-of-tree interface implemented by a program.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InterfaceDecl {
    #[serde(rename = "type")]
    pub kind: Sp<InterfaceType>,
    pub name: Sp<String>,
    /// The program and its arguments, relative to the fleet directory or absolute.
    pub exec: Sp<Vec<String>>,
    /// How long one call may take before the program is killed, e.g. `30s`. Default `60s`.
    pub timeout: Option<Sp<String>>,
    /// Hand the BMC password to the program in its request. Default false.
    pub needs_secrets: Option<bool>,
    #[serde(default)]
    pub passthru: Vec<Sp<PassthruDecl>>,
    #[serde(default)]
    pub deploy_step: Vec<Sp<InterfaceStepDecl>>,
}

/// `[[interface.passthru]]`: a vendor passthru method.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PassthruDecl {
    pub method: Sp<String>,
    /// Default `["POST"]`.
    pub http_methods: Option<Vec<Sp<String>>>,
    /// Answer 202 at once and run in the background. Default true.
    #[serde(rename = "async")]
    pub is_async: Option<bool>,
    pub description: Option<String>,
    pub attach: Option<bool>,
    /// Refuse with 409 while the node is busy. Default true.
    pub require_exclusive_lock: Option<bool>,
    /// Arguments the method takes.
    #[serde(default)]
    pub args: BTreeMap<String, ArgInfo>,
}

/// `[[interface.deploy_step]]`: a deploy step the interface offers.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InterfaceStepDecl {
    pub step: Sp<String>,
    /// Default priority; 0 = runs only when a template or node asks for it.
    #[serde(default)]
    pub priority: u32,
    #[serde(default)]
    pub argsinfo: BTreeMap<String, ArgInfo>,
    #[serde(default)]
    pub abortable: bool,
}

/// `[[deploy_template]]`: steps applied to nodes that carry the trait `name`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateDecl {
    /// A `CUSTOM_*` trait.
    pub name: Sp<String>,
    pub steps: Vec<Sp<StepDecl>>,
}
