//! Hardware types: which implementations of each interface a kind of
//! server supports, first = preferred.

use super::interface::{InterfaceType, PerInterface};
use super::node::DeployRamdisk;
use crate::diag::Loc;

/// A hardware type (Ironic's "driver").
#[derive(Debug, Clone)]
pub struct HardwareType {
    pub name: String,
    /// The type this one inherits supported lists from.
    pub base: Option<String>,
    pub supported: PerInterface<Vec<String>>,
    /// The agent's ramdisks for its nodes, at most one of each form: its
    /// own, else its base's. None for built-in types.
    pub deploy_ramdisks: Vec<DeployRamdisk>,
    /// Where a custom type is declared; `None` for built-in types.
    pub declared_at: Option<Loc>,
}

impl HardwareType {
    pub fn supported(&self, kind: InterfaceType) -> &[String] {
        self.supported.get(kind)
    }

    pub fn is_builtin(&self) -> bool {
        self.declared_at.is_none()
    }

    /// The BMC address schemes this type talks through, inherited from the
    /// built-in type at the root of its `base` chain.
    pub fn bmc_family(&self, types: &[HardwareType]) -> BmcFamily {
        let mut current = self;
        for _ in 0..=types.len() {
            match current.name.as_str() {
                "ipmi" => return BmcFamily::Ipmi,
                "redfish" => return BmcFamily::Redfish,
                "fake-hardware" => return BmcFamily::Fake,
                "manual-management" => return BmcFamily::Any,
                _ => {}
            }
            match current
                .base
                .as_deref()
                .and_then(|b| types.iter().find(|t| t.name == b))
            {
                Some(base) => current = base,
                None => return BmcFamily::Any,
            }
        }
        BmcFamily::Any
    }
}

/// Which BMC URL schemes fit a hardware type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BmcFamily {
    Ipmi,
    Redfish,
    Fake,
    /// manual-management and types without a built-in root: any scheme.
    Any,
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// What every hardware type starts from (Ironic's `AbstractHardwareType`
/// defaults for the optional interfaces).
fn base_lists() -> PerInterface<Vec<String>> {
    use InterfaceType::*;
    PerInterface::from_fn(|kind| match kind {
        Bios => names(&["no-bios"]),
        Console => names(&["no-console"]),
        Inspect => names(&["no-inspect"]),
        Network => names(&["noop"]),
        Raid => names(&["no-raid"]),
        Rescue => names(&["no-rescue"]),
        Storage => names(&["noop"]),
        Vendor => names(&["no-vendor"]),
        Firmware => names(&["no-firmware"]),
        Boot | Deploy | Management | Power => Vec::new(),
    })
}

/// Ironic's `GenericHardware`, the base of the built-in types.
fn generic_lists() -> PerInterface<Vec<String>> {
    use InterfaceType::*;
    let mut lists = base_lists();
    *lists.get_mut(Boot) = names(&["ipxe", "pxe", "http-ipxe", "http"]);
    *lists.get_mut(Deploy) = names(&[
        "autodetect",
        "direct",
        "ansible",
        "ramdisk",
        "anaconda",
        "bootc",
        "custom-agent",
    ]);
    *lists.get_mut(Inspect) = names(&["agent", "no-inspect"]);
    *lists.get_mut(Network) = names(&["flat", "neutron", "ironic-networking", "noop"]);
    *lists.get_mut(Raid) = names(&["no-raid", "agent"]);
    *lists.get_mut(Rescue) = names(&["no-rescue", "agent"]);
    *lists.get_mut(Storage) = names(&["noop", "cinder", "external"]);
    *lists.get_mut(Firmware) = names(&["no-firmware"]);
    *lists.get_mut(Console) = names(&["no-console", "fake-graphical"]);
    lists
}

fn builtin(name: &str, supported: PerInterface<Vec<String>>) -> HardwareType {
    HardwareType {
        name: name.to_string(),
        base: None,
        supported,
        deploy_ramdisks: Vec::new(),
        declared_at: None,
    }
}

/// The built-in hardware types, as Ironic 39 declares them.
pub fn builtin_hardware_types() -> Vec<HardwareType> {
    use InterfaceType::*;

    let mut ipmi = generic_lists();
    *ipmi.get_mut(Power) = names(&["ipmitool"]);
    *ipmi.get_mut(Management) = names(&["ipmitool", "noop"]);
    *ipmi.get_mut(Vendor) = names(&["ipmitool", "no-vendor"]);
    *ipmi.get_mut(Console) = names(&["ipmitool-socat", "no-console", "fake-graphical"]);

    let mut redfish = generic_lists();
    *redfish.get_mut(Power) = names(&["redfish"]);
    *redfish.get_mut(Management) = names(&["redfish", "noop"]);
    *redfish.get_mut(Bios) = names(&["redfish", "no-bios"]);
    *redfish.get_mut(Boot) = names(&[
        "ipxe",
        "pxe",
        "http-ipxe",
        "http",
        "redfish-virtual-media",
        "redfish-https",
    ]);
    *redfish.get_mut(Inspect) = names(&["redfish", "agent", "no-inspect"]);
    *redfish.get_mut(Raid) = names(&["redfish", "no-raid", "agent"]);
    *redfish.get_mut(Firmware) = names(&["redfish", "no-firmware"]);
    *redfish.get_mut(Vendor) = names(&["redfish", "no-vendor"]);
    *redfish.get_mut(Console) = names(&[
        "redfish-graphical",
        "ipmitool-socat",
        "no-console",
        "fake-graphical",
    ]);

    let mut manual = generic_lists();
    *manual.get_mut(Power) = names(&["agent", "fake"]);
    *manual.get_mut(Management) = names(&["noop", "fake"]);
    *manual.get_mut(Vendor) = names(&["no-vendor"]);
    manual.get_mut(Deploy).push("noop".to_string());

    let generic = generic_lists();
    let mut fake = generic.clone();
    for kind in [
        Bios, Boot, Console, Deploy, Inspect, Raid, Rescue, Storage, Firmware,
    ] {
        let mut list = names(&["fake"]);
        list.extend(generic.get(kind).iter().cloned());
        *fake.get_mut(kind) = list;
    }
    *fake.get_mut(Power) = names(&["fake"]);
    *fake.get_mut(Management) = names(&["fake"]);
    *fake.get_mut(Vendor) = names(&["fake", "no-vendor"]);

    vec![
        builtin("fake-hardware", fake),
        builtin("ipmi", ipmi),
        builtin("manual-management", manual),
        builtin("redfish", redfish),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_hardware_prefers_fake_everywhere_but_network() {
        let types = builtin_hardware_types();
        let fake = types.iter().find(|t| t.name == "fake-hardware").unwrap();
        for (kind, list) in fake.supported.iter() {
            if kind == InterfaceType::Network {
                assert_eq!(list[0], "flat");
            } else {
                assert_eq!(list[0], "fake", "{kind}");
            }
        }
    }
}
