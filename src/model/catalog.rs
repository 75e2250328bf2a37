//! Every interface implementation rivet knows by name: the built-in ones
//! (Ironic's names, with what rivet can drive) and the exec plugins a fleet
//! declares. Composition picks names; this says what each name offers, and
//! what the converge needs to know about it (its [`Capabilities`]), so that
//! only the driver registry ever maps a name to code.

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

/// What the converge needs to know about an implementation to turn a plan
/// into operations: a small set of flags, read instead of names.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u8);

impl Capabilities {
    pub const NONE: Self = Self(0);
    /// A deploy interface whose `deploy` step boots the node on the declared
    /// image and finishes when it is up: the converge runs it as its
    /// operations (power off, virtual media or PXE, boot device, power on).
    pub const BOOTS_TO_DEPLOY: Self = Self(1);
    /// A boot interface that presents an image as the node's virtual CD.
    pub const VIRTUAL_MEDIA: Self = Self(1 << 1);
    /// An inspect interface that reads the hardware from the BMC, without
    /// booting the node.
    pub const INSPECTS_OUT_OF_BAND: Self = Self(1 << 2);
    /// Needs ironic-python-agent running on the node.
    pub const NEEDS_AGENT: Self = Self(1 << 3);
    /// Does nothing, by design: rivet leaves that part of the node alone.
    pub const NO_OP: Self = Self(1 << 4);

    const NAMES: [(Self, &'static str); 5] = [
        (Self::BOOTS_TO_DEPLOY, "boots_to_deploy"),
        (Self::VIRTUAL_MEDIA, "virtual_media"),
        (Self::INSPECTS_OUT_OF_BAND, "inspects_out_of_band"),
        (Self::NEEDS_AGENT, "needs_agent"),
        (Self::NO_OP, "no_op"),
    ];

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The names of the flags set, in declaration order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(flag, _)| self.contains(*flag))
            .map(|(_, name)| name)
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// One implementation of one interface type.
#[derive(Debug, Clone)]
pub struct InterfaceImpl {
    pub kind: InterfaceType,
    pub name: String,
    pub support: Support,
    /// What the converge needs to know about it; none for exec plugins,
    /// whose steps say what they do.
    pub capabilities: Capabilities,
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

    /// Whether an unset `enabled_X_interfaces` may list `name`: rivet can
    /// drive it without anything more declared. What needs the agent also
    /// needs a ramdisk and ports declared, so it is enabled only by name
    /// (and a fleet written before rivet drove the agent composes as it did).
    pub fn enabled_by_default(&self, kind: InterfaceType, name: &str) -> bool {
        self.is_drivable(kind, name)
            && !self
                .capabilities(kind, name)
                .contains(Capabilities::NEEDS_AGENT)
    }

    /// What the implementation `name` of `kind` can do; none when unknown.
    pub fn capabilities(&self, kind: InterfaceType, name: &str) -> Capabilities {
        self.get(kind, name)
            .map_or(Capabilities::NONE, |imp| imp.capabilities)
    }
}

const NEEDS_AGENT: &str =
    "it needs ironic-python-agent, which rivet runs only for the `direct` deploy";

fn imp(kind: InterfaceType, name: &str, support: Support) -> InterfaceImpl {
    InterfaceImpl {
        kind,
        name: name.to_string(),
        support,
        capabilities: Capabilities::NONE,
        steps: Vec::new(),
        passthru: Vec::new(),
        declared_at: None,
    }
}

fn with(mut imp: InterfaceImpl, capabilities: Capabilities) -> InterfaceImpl {
    imp.capabilities = capabilities;
    imp
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
        by_agent: false,
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

/// Ironic's `direct` deploy steps: boot the agent and wait for it, have it
/// write the image, make the node boot from disk, power the agent off, boot
/// the instance. Ironic's `switch_to_tenant_network` (priority 30) is left
/// out: rivet's network interfaces (`noop`, `flat`) never move a node
/// between networks, so there is nothing to switch.
fn direct_steps() -> Vec<StepDef> {
    use InterfaceType::Deploy;
    let write_image = StepDef {
        by_agent: true,
        ..step(Deploy, "write_image", 80, &[])
    };
    vec![
        step(Deploy, "deploy", 100, &[]),
        write_image,
        step(Deploy, "prepare_instance_boot", 60, &[]),
        step(Deploy, "tear_down_agent", 40, &[]),
        step(Deploy, "boot_instance", 20, &[]),
    ]
}

/// The registry of built-in names: every name any built-in hardware type
/// lists, plus `fake` and `noop` where Ironic has them.
pub fn builtin_interfaces() -> Vec<InterfaceImpl> {
    use InterfaceType::*;
    use Support::{Builtin, Unsupported};

    let none = Capabilities::NONE;
    let no_op = Capabilities::NO_OP;
    let mut all = Vec::new();
    // The fake implementations of every type. The fake inspection reads the
    // simulated BMC, as an out-of-band one reads a real BMC.
    for kind in InterfaceType::ALL {
        let capabilities = match kind {
            Inspect => Capabilities::INSPECTS_OUT_OF_BAND,
            _ => none,
        };
        all.push(with(imp(kind, "fake", Builtin), capabilities));
    }
    // The "does nothing" ones, and what rivet drives.
    for (kind, name, capabilities) in [
        (Bios, "no-bios", no_op),
        (Console, "no-console", no_op),
        (Console, "fake-graphical", none),
        (Firmware, "no-firmware", no_op),
        (Inspect, "no-inspect", no_op),
        (Management, "noop", no_op),
        (Network, "noop", no_op),
        (Raid, "no-raid", no_op),
        (Rescue, "no-rescue", no_op),
        (Storage, "noop", no_op),
        (Vendor, "no-vendor", no_op),
        (Deploy, "noop", no_op),
        // rivet never reconfigures switches: a flat network is one it
        // leaves alone, which is what `flat` means without Neutron.
        (Network, "flat", no_op),
        (Storage, "external", no_op),
        (Boot, "pxe", none),
        (Boot, "ipxe", none),
        (Boot, "redfish-virtual-media", Capabilities::VIRTUAL_MEDIA),
        (Power, "ipmitool", none),
        (Power, "redfish", none),
        (Management, "ipmitool", none),
        (Management, "redfish", none),
        (Inspect, "redfish", Capabilities::INSPECTS_OUT_OF_BAND),
    ] {
        all.push(with(imp(kind, name, Builtin), capabilities));
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
        (
            Deploy,
            "anaconda",
            "rivet does not run Anaconda kickstart deploys",
        ),
        (Firmware, "redfish", "rivet does not update firmware yet"),
        (Network, "neutron", "it needs OpenStack Neutron"),
        (Network, "ironic-networking", "it needs OpenStack Neutron"),
        (Raid, "redfish", "rivet does not build RAID volumes yet"),
        (Storage, "cinder", "it needs OpenStack Cinder"),
    ] {
        all.push(imp(kind, name, Unsupported(why)));
    }
    for (kind, name) in [
        (Deploy, "ansible"),
        (Deploy, "bootc"),
        (Deploy, "custom-agent"),
        (Inspect, "agent"),
        (Power, "agent"),
        (Raid, "agent"),
        (Rescue, "agent"),
    ] {
        let agent = imp(kind, name, Unsupported(NEEDS_AGENT));
        all.push(with(agent, Capabilities::NEEDS_AGENT));
    }
    // The one deploy through the agent rivet drives.
    let mut direct = with(imp(Deploy, "direct", Builtin), Capabilities::NEEDS_AGENT);
    direct.steps = direct_steps();
    all.push(direct);

    // Deploy interfaces rivet drives all boot the node and finish when it is
    // up: one core step, as Ironic's `ramdisk` and `fake` have. `autodetect`
    // has no agent to hand an image to, so it deploys the way `ramdisk` does;
    // the fake deploy is one call to the simulated BMC.
    for (name, capabilities) in [
        ("fake", none),
        ("ramdisk", Capabilities::BOOTS_TO_DEPLOY),
        ("autodetect", Capabilities::BOOTS_TO_DEPLOY),
    ] {
        let mut deploy = with(imp(Deploy, name, Builtin), capabilities);
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

    fn carrying(catalog: &Catalog, flag: Capabilities) -> Vec<(InterfaceType, &str)> {
        InterfaceType::ALL
            .into_iter()
            .flat_map(|kind| catalog.names(kind).into_iter().map(move |n| (kind, n)))
            .filter(|(kind, name)| catalog.capabilities(*kind, name).contains(flag))
            .collect()
    }

    #[test]
    fn the_converge_capabilities_sit_on_the_implementations_that_need_them() {
        use InterfaceType::*;
        let catalog = Catalog::builtin();
        assert_eq!(
            carrying(&catalog, Capabilities::BOOTS_TO_DEPLOY),
            [(Deploy, "autodetect"), (Deploy, "ramdisk")]
        );
        assert_eq!(
            carrying(&catalog, Capabilities::VIRTUAL_MEDIA),
            [(Boot, "redfish-virtual-media")]
        );
        assert_eq!(
            carrying(&catalog, Capabilities::INSPECTS_OUT_OF_BAND),
            [(Inspect, "fake"), (Inspect, "redfish")]
        );
        assert_eq!(
            catalog.capabilities(Deploy, "no-such-deploy"),
            Capabilities::NONE
        );
    }

    #[test]
    fn of_what_needs_an_agent_only_the_direct_deploy_is_driven() {
        let catalog = Catalog::builtin();
        let agents = carrying(&catalog, Capabilities::NEEDS_AGENT);
        assert!(agents.contains(&(InterfaceType::Deploy, "direct")));
        assert!(agents.contains(&(InterfaceType::Deploy, "custom-agent")));
        for imp in builtin_interfaces() {
            let needs_agent = imp.capabilities.contains(Capabilities::NEEDS_AGENT);
            let direct = imp.kind == InterfaceType::Deploy && imp.name == "direct";
            let said = imp.support == Support::Unsupported(NEEDS_AGENT);
            assert_eq!(needs_agent && !direct, said, "{} `{}`", imp.kind, imp.name);
        }
        assert!(catalog.is_drivable(InterfaceType::Deploy, "direct"));
        assert!(!catalog.enabled_by_default(InterfaceType::Deploy, "direct"));
        assert!(catalog.enabled_by_default(InterfaceType::Deploy, "ramdisk"));
    }

    #[test]
    fn the_direct_deploy_has_ironics_steps_and_the_agent_writes_the_image() {
        let catalog = Catalog::builtin();
        let direct = catalog.get(InterfaceType::Deploy, "direct").unwrap();
        let steps: Vec<(&str, u32, bool)> = direct
            .steps
            .iter()
            .map(|s| (s.step.as_str(), s.priority, s.by_agent))
            .collect();
        assert_eq!(
            steps,
            [
                ("deploy", 100, false),
                ("write_image", 80, true),
                ("prepare_instance_boot", 60, false),
                ("tear_down_agent", 40, false),
                ("boot_instance", 20, false),
            ]
        );
        let by_agent = builtin_interfaces()
            .into_iter()
            .flat_map(|i| i.steps)
            .filter(|s| s.by_agent)
            .count();
        assert_eq!(by_agent, 1, "only `write_image` runs in the agent");
    }

    #[test]
    fn a_no_op_offers_nothing_else() {
        let no_ops: Vec<InterfaceImpl> = builtin_interfaces()
            .into_iter()
            .filter(|i| i.capabilities.contains(Capabilities::NO_OP))
            .collect();
        assert!(no_ops.iter().any(|i| i.name == "flat"));
        for imp in no_ops {
            assert_eq!(imp.capabilities, Capabilities::NO_OP, "{}", imp.name);
            assert!(
                imp.steps.is_empty() && imp.passthru.is_empty(),
                "{}",
                imp.name
            );
            assert_eq!(imp.support, Support::Builtin, "{}", imp.name);
        }
    }

    #[test]
    fn capabilities_combine_and_print_their_names() {
        let both = Capabilities::BOOTS_TO_DEPLOY | Capabilities::VIRTUAL_MEDIA;
        assert!(both.contains(Capabilities::VIRTUAL_MEDIA));
        assert!(both.contains(Capabilities::NONE));
        assert!(!both.contains(Capabilities::VIRTUAL_MEDIA | Capabilities::NEEDS_AGENT));
        assert_eq!(
            format!("{both:?}"),
            r#"{"boots_to_deploy", "virtual_media"}"#
        );
        assert_eq!(format!("{:?}", Capabilities::NONE), "{}");
    }
}
