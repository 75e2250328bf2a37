//! Every interface implementation rivet knows by name: the built-in ones
//! (Ironic's names, with what rivet can drive) and the exec plugins a fleet
//! declares. Composition picks names; this says what each name offers.

use std::collections::BTreeMap;

use super::interface::InterfaceType;
use super::step::{PassthruMethod, StepDef, args};
use crate::diag::Loc;

/// Whether rivet can drive an implementation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Built into rivet.
    Builtin,
    /// An out-of-tree program (`exec`) speaks for it.
    Exec {
        command: Vec<String>,
        timeout: std::time::Duration,
        needs_secrets: bool,
    },
    /// Known from Ironic so composition can name it, but rivet cannot drive
    /// it; the text says why.
    Unsupported(&'static str),
}

/// One implementation of one interface type.
#[derive(Debug, Clone)]
pub struct InterfaceImpl {
    pub kind: InterfaceType,
    pub name: String,
    pub support: Support,
    pub steps: Vec<StepDef>,
    pub passthru: Vec<PassthruMethod>,
    /// Where an exec plugin is declared; `None` for built-ins.
    pub declared_at: Option<Loc>,
}

impl InterfaceImpl {
    pub fn step(&self, name: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.step == name)
    }
}

/// All known implementations, by (type, name).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    impls: BTreeMap<(InterfaceType, String), InterfaceImpl>,
}

impl Catalog {
    pub fn builtin() -> Self {
        let mut catalog = Self::default();
        for imp in builtin_interfaces() {
            catalog.insert(imp);
        }
        catalog
    }

    pub fn insert(&mut self, imp: InterfaceImpl) {
        self.impls.insert((imp.kind, imp.name.clone()), imp);
    }

    pub fn get(&self, kind: InterfaceType, name: &str) -> Option<&InterfaceImpl> {
        self.impls.get(&(kind, name.to_string()))
    }

    /// Names known for one interface type, sorted.
    pub fn names(&self, kind: InterfaceType) -> Vec<&str> {
        self.impls
            .range((kind, String::new())..)
            .take_while(|((k, _), _)| *k == kind)
            .map(|((_, name), _)| name.as_str())
            .collect()
    }

    pub fn is_drivable(&self, kind: InterfaceType, name: &str) -> bool {
        self.get(kind, name)
            .is_some_and(|imp| !matches!(imp.support, Support::Unsupported(_)))
    }
}

const NEEDS_AGENT: &str = "it needs the ironic-python-agent ramdisk, which rivet does not run";

fn imp(kind: InterfaceType, name: &str, support: Support) -> InterfaceImpl {
    InterfaceImpl {
        kind,
        name: name.to_string(),
        support,
        steps: Vec::new(),
        passthru: Vec::new(),
        declared_at: None,
    }
}

fn step(
    kind: InterfaceType,
    name: &str,
    priority: u32,
    argsinfo: &[(&str, &str, bool)],
) -> StepDef {
    StepDef {
        interface: kind,
        step: name.to_string(),
        priority,
        argsinfo: args(argsinfo),
        abortable: false,
    }
}

fn method(
    name: &str,
    is_async: bool,
    exclusive: bool,
    description: &str,
    arguments: &[(&str, &str, bool)],
) -> PassthruMethod {
    PassthruMethod {
        method: name.to_string(),
        http_methods: vec!["POST".to_string()],
        is_async,
        description: description.to_string(),
        attach: false,
        require_exclusive_lock: exclusive,
        args: args(arguments),
    }
}

fn bios_steps() -> Vec<StepDef> {
    vec![
        step(
            InterfaceType::Bios,
            "apply_configuration",
            0,
            &[(
                "settings",
                "A list of BIOS settings, each {name, value}.",
                true,
            )],
        ),
        step(InterfaceType::Bios, "factory_reset", 0, &[]),
    ]
}

fn deploy_step() -> Vec<StepDef> {
    vec![step(InterfaceType::Deploy, "deploy", 100, &[])]
}

/// The registry of built-in names: every name any built-in hardware type
/// lists, plus `fake` and `noop` where Ironic has them.
pub fn builtin_interfaces() -> Vec<InterfaceImpl> {
    use InterfaceType::*;
    use Support::{Builtin, Unsupported};

    let mut all = Vec::new();
    // The fake implementations of every type, and the "does nothing" ones.
    for kind in InterfaceType::ALL {
        all.push(imp(kind, "fake", Builtin));
    }
    for (kind, name) in [
        (Bios, "no-bios"),
        (Console, "no-console"),
        (Console, "fake-graphical"),
        (Firmware, "no-firmware"),
        (Inspect, "no-inspect"),
        (Management, "noop"),
        (Network, "noop"),
        (Raid, "no-raid"),
        (Rescue, "no-rescue"),
        (Storage, "noop"),
        (Vendor, "no-vendor"),
        (Deploy, "noop"),
        // rivet never reconfigures switches: a flat network is one it
        // leaves alone, which is what `flat` means without Neutron.
        (Network, "flat"),
        (Storage, "external"),
        (Boot, "pxe"),
        (Boot, "ipxe"),
        (Boot, "redfish-virtual-media"),
        (Power, "ipmitool"),
        (Power, "redfish"),
        (Management, "ipmitool"),
        (Management, "redfish"),
        (Inspect, "redfish"),
    ] {
        all.push(imp(kind, name, Builtin));
    }
    for (kind, name, why) in [
        (Boot, "http", "rivet does not drive UEFI HTTP boot yet"),
        (Boot, "http-ipxe", "rivet does not drive UEFI HTTP boot yet"),
        (
            Boot,
            "redfish-https",
            "rivet does not drive UEFI HTTP boot yet",
        ),
        (
            Console,
            "ipmitool-socat",
            "rivet has no serial console proxy",
        ),
        (
            Console,
            "redfish-graphical",
            "rivet has no graphical console proxy",
        ),
        (Deploy, "direct", NEEDS_AGENT),
        (Deploy, "ansible", NEEDS_AGENT),
        (
            Deploy,
            "anaconda",
            "rivet does not run Anaconda kickstart deploys",
        ),
        (Deploy, "bootc", NEEDS_AGENT),
        (Deploy, "custom-agent", NEEDS_AGENT),
        (Firmware, "redfish", "rivet does not update firmware yet"),
        (Inspect, "agent", NEEDS_AGENT),
        (Network, "neutron", "it needs OpenStack Neutron"),
        (Network, "ironic-networking", "it needs OpenStack Neutron"),
        (Power, "agent", NEEDS_AGENT),
        (Raid, "agent", NEEDS_AGENT),
        (Raid, "redfish", "rivet does not build RAID volumes yet"),
        (Rescue, "agent", NEEDS_AGENT),
        (Storage, "cinder", "it needs OpenStack Cinder"),
    ] {
        all.push(imp(kind, name, Unsupported(why)));
    }

    // Deploy interfaces rivet drives all boot the node and finish when it is
    // up: one core step, as Ironic's `ramdisk` and `fake` have. `autodetect`
    // has no agent to hand an image to, so it deploys the way `ramdisk` does.
    for name in ["fake", "ramdisk", "autodetect"] {
        let mut deploy = imp(Deploy, name, Builtin);
        deploy.steps = deploy_step();
        all.retain(|i| !(i.kind == Deploy && i.name == name));
        all.push(deploy);
    }
    for name in ["fake", "redfish"] {
        let mut bios = imp(Bios, name, Builtin);
        bios.steps = bios_steps();
        all.retain(|i| !(i.kind == Bios && i.name == name));
        all.push(bios);
    }

    let mut fake_vendor = imp(Vendor, "fake", Builtin);
    let bar = [("bar", "A string to compare.", true)];
    fake_vendor.passthru = vec![
        method(
            "fourth_method_shared_lock",
            true,
            false,
            "Test if the value of bar is woof",
            &bar,
        ),
        method(
            "log_passthrough",
            true,
            true,
            "Test pass-through to wait.",
            &[],
        ),
        method(
            "second_method",
            true,
            true,
            "Test if the value of bar is kazoo",
            &bar,
        ),
        method(
            "third_method_sync",
            false,
            true,
            "Test if the value of bar is meow",
            &bar,
        ),
    ];
    let mut ipmi_vendor = imp(Vendor, "ipmitool", Builtin);
    ipmi_vendor.passthru = vec![
        method(
            "bmc_reset",
            true,
            true,
            "Reset the BMC. Optional argument: 'warm' (default true) for a warm reset.",
            &[(
                "warm",
                "Warm reset when true (the default), cold when false.",
                false,
            )],
        ),
        method(
            "send_raw",
            true,
            true,
            "Send raw bytes to the BMC. Required argument: 'raw_bytes' - a string of raw bytes (e.g. '0x00 0x01').",
            &[(
                "raw_bytes",
                "Space-separated bytes, e.g. '0x06 0x01'.",
                true,
            )],
        ),
    ];
    let mut redfish_vendor = imp(Vendor, "redfish", Builtin);
    redfish_vendor.passthru = vec![method(
        "eject_vmedia",
        true,
        true,
        "Eject a virtual media device. Optional argument: 'boot_device' (cd, floppy); all devices when absent.",
        &[("boot_device", "The device to eject: cd or floppy.", false)],
    )];
    all.retain(|i| !(i.kind == Vendor && i.name == "fake"));
    all.extend([fake_vendor, ipmi_vendor, redfish_vendor]);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::hardware::builtin_hardware_types;

    #[test]
    fn every_name_a_builtin_type_lists_is_in_the_catalog() {
        let catalog = Catalog::builtin();
        for hw in builtin_hardware_types() {
            for (kind, names) in hw.supported.iter() {
                for name in names {
                    assert!(
                        catalog.get(kind, name).is_some(),
                        "{} lists {kind} `{name}` which the catalog lacks",
                        hw.name
                    );
                }
            }
        }
    }

    #[test]
    fn every_builtin_type_can_drive_some_choice_of_each_interface() {
        let catalog = Catalog::builtin();
        for hw in builtin_hardware_types() {
            for (kind, names) in hw.supported.iter() {
                assert!(
                    names.iter().any(|n| catalog.is_drivable(kind, n)),
                    "{}: no drivable {kind} interface",
                    hw.name
                );
            }
        }
    }
}
