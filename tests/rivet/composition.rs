//! Ironic's composition outcomes, case by case, through the whole loader:
//! explicit choice, configured default, first enabled supported, and each
//! error, across the four built-in hardware types and custom types.

use rivet::model::fleet::load;
use rivet::vocab::InterfaceType::{self, *};

use crate::support::TempFleet;

const DRIVERS: &str = r#"
[[hardware_type]]
name = "acme"
base = "redfish"
supported_vendor_interfaces = ["acme-tools", "no-vendor"]

[[hardware_type]]
name = "acme-pxe"
base = "ipmi"
supported_boot_interfaces = ["pxe"]

[[interface]]
type = "vendor"
name = "acme-tools"
exec = ["plugins/acme"]
"#;

enum Expect {
    Composed(&'static str),
    Error(&'static str),
}
use Expect::*;

struct Case {
    name: &'static str,
    hardware: &'static str,
    driver: &'static str,
    node: &'static str,
    kind: InterfaceType,
    expect: Expect,
}

const fn case(
    name: &'static str,
    hardware: &'static str,
    driver: &'static str,
    node: &'static str,
    kind: InterfaceType,
    expect: Expect,
) -> Case {
    Case {
        name,
        hardware,
        driver,
        node,
        kind,
        expect,
    }
}

const CASES: &[Case] = &[
    // fake-hardware
    case(
        "fake: power first supported",
        "",
        "fake-hardware",
        "",
        Power,
        Composed("fake"),
    ),
    case(
        "fake: boot first supported",
        "",
        "fake-hardware",
        "",
        Boot,
        Composed("fake"),
    ),
    case(
        "fake: network falls to flat",
        "",
        "fake-hardware",
        "",
        Network,
        Composed("flat"),
    ),
    case(
        "fake: explicit boot not in calculated list",
        "",
        "fake-hardware",
        r#"boot_interface = "redfish-virtual-media""#,
        Boot,
        Error("rivet::composition::not_enabled"),
    ),
    case(
        "fake: explicit pxe once enabled",
        r#"enabled_boot_interfaces = ["fake", "pxe"]"#,
        "fake-hardware",
        r#"boot_interface = "pxe""#,
        Boot,
        Composed("pxe"),
    ),
    case(
        "fake: explicit ipmitool power incompatible",
        "",
        "fake-hardware",
        r#"power_interface = "ipmitool""#,
        Power,
        Error("rivet::composition::incompatible"),
    ),
    case(
        "fake: default boot applies",
        "enabled_boot_interfaces = [\"fake\", \"pxe\"]\ndefault_boot_interface = \"pxe\"",
        "fake-hardware",
        "",
        Boot,
        Composed("pxe"),
    ),
    case(
        "fake: default deploy ramdisk",
        "enabled_deploy_interfaces = [\"fake\", \"ramdisk\"]\ndefault_deploy_interface = \"ramdisk\"",
        "fake-hardware",
        "",
        Deploy,
        Composed("ramdisk"),
    ),
    case(
        "fake: unsupported default power",
        r#"default_power_interface = "ipmitool""#,
        "fake-hardware",
        "",
        Power,
        Error("rivet::composition::no_valid_default"),
    ),
    case(
        "fake: no supported power enabled",
        r#"enabled_power_interfaces = ["ipmitool"]"#,
        "fake-hardware",
        "",
        Power,
        Error("rivet::composition::no_valid_default"),
    ),
    case(
        "fake: explicit beats default",
        "enabled_boot_interfaces = [\"fake\", \"pxe\"]\ndefault_boot_interface = \"pxe\"",
        "fake-hardware",
        r#"boot_interface = "fake""#,
        Boot,
        Composed("fake"),
    ),
    case(
        "fake: default enabled but not listed first",
        "enabled_vendor_interfaces = [\"no-vendor\", \"fake\"]",
        "fake-hardware",
        "",
        Vendor,
        Composed("fake"),
    ),
    // ipmi
    case("ipmi: power", "", "ipmi", "", Power, Composed("ipmitool")),
    case(
        "ipmi: management",
        "",
        "ipmi",
        "",
        Management,
        Composed("ipmitool"),
    ),
    case("ipmi: vendor", "", "ipmi", "", Vendor, Composed("ipmitool")),
    case(
        "ipmi: deploy autodetect",
        "",
        "ipmi",
        "",
        Deploy,
        Composed("autodetect"),
    ),
    case(
        "ipmi: console skips undrivable socat",
        "",
        "ipmi",
        "",
        Console,
        Composed("no-console"),
    ),
    case(
        "ipmi: explicit socat is composed but not drivable",
        r#"enabled_console_interfaces = ["ipmitool-socat", "no-console"]"#,
        "ipmi",
        r#"console_interface = "ipmitool-socat""#,
        Console,
        Error("rivet::composition::not_drivable"),
    ),
    case(
        "ipmi: explicit noop management",
        "",
        "ipmi",
        r#"management_interface = "noop""#,
        Management,
        Composed("noop"),
    ),
    case(
        "ipmi: first enabled in supported order",
        r#"enabled_boot_interfaces = ["redfish-virtual-media", "pxe"]"#,
        "ipmi",
        "",
        Boot,
        Composed("pxe"),
    ),
    case(
        "ipmi: explicit virtual media incompatible",
        r#"enabled_boot_interfaces = ["pxe", "redfish-virtual-media"]"#,
        "ipmi",
        r#"boot_interface = "redfish-virtual-media""#,
        Boot,
        Error("rivet::composition::incompatible"),
    ),
    case(
        "ipmi: enabled but unknown-to-type default",
        r#"default_vendor_interface = "redfish""#,
        "ipmi",
        "",
        Vendor,
        Error("rivet::composition::no_valid_default"),
    ),
    // redfish
    case(
        "redfish: power",
        "",
        "redfish",
        "",
        Power,
        Composed("redfish"),
    ),
    case(
        "redfish: bios",
        "",
        "redfish",
        "",
        Bios,
        Composed("redfish"),
    ),
    case(
        "redfish: raid skips undrivable redfish raid",
        "",
        "redfish",
        "",
        Raid,
        Composed("no-raid"),
    ),
    case(
        "redfish: explicit virtual media",
        r#"enabled_boot_interfaces = ["pxe", "redfish-virtual-media"]"#,
        "redfish",
        r#"boot_interface = "redfish-virtual-media""#,
        Boot,
        Composed("redfish-virtual-media"),
    ),
    case(
        "redfish: default no-vendor",
        r#"default_vendor_interface = "no-vendor""#,
        "redfish",
        "",
        Vendor,
        Composed("no-vendor"),
    ),
    case(
        "redfish: default not enabled",
        "enabled_vendor_interfaces = [\"redfish\"]\ndefault_vendor_interface = \"no-vendor\"",
        "redfish",
        "",
        Vendor,
        Error("rivet::composition::no_valid_default"),
    ),
    case(
        "redfish: agent deploy not drivable",
        r#"enabled_deploy_interfaces = ["custom-agent"]"#,
        "redfish",
        "",
        Deploy,
        Error("rivet::composition::not_drivable"),
    ),
    // manual-management
    case(
        "manual: power skips agent",
        "",
        "manual-management",
        "",
        Power,
        Composed("fake"),
    ),
    case(
        "manual: management noop",
        "",
        "manual-management",
        "",
        Management,
        Composed("noop"),
    ),
    case(
        "manual: vendor no-vendor",
        "",
        "manual-management",
        "",
        Vendor,
        Composed("no-vendor"),
    ),
    // custom types with base
    case(
        "acme: vendor from its own list",
        "",
        "acme",
        "",
        Vendor,
        Composed("acme-tools"),
    ),
    case(
        "acme: power inherited from redfish",
        "",
        "acme",
        "",
        Power,
        Composed("redfish"),
    ),
    case(
        "acme: vendor when only no-vendor enabled",
        r#"enabled_vendor_interfaces = ["no-vendor"]"#,
        "acme",
        "",
        Vendor,
        Composed("no-vendor"),
    ),
    case(
        "acme: base's vendor no longer supported",
        "",
        "acme",
        r#"vendor_interface = "redfish""#,
        Vendor,
        Error("rivet::composition::incompatible"),
    ),
    case(
        "acme-pxe: overridden boot list",
        "",
        "acme-pxe",
        "",
        Boot,
        Composed("pxe"),
    ),
    case(
        "acme-pxe: ipxe dropped by override",
        "",
        "acme-pxe",
        r#"boot_interface = "ipxe""#,
        Boot,
        Error("rivet::composition::incompatible"),
    ),
    // hardware type errors
    case(
        "unknown hardware type",
        "",
        "acme-redfish",
        "",
        Power,
        Error("rivet::composition::driver_not_found"),
    ),
    case(
        "type not enabled",
        r#"enabled_hardware_types = ["fake-hardware"]"#,
        "ipmi",
        "",
        Power,
        Error("rivet::composition::type_not_enabled"),
    ),
];

fn bmc_for(driver: &str) -> &'static str {
    match driver {
        "ipmi" | "acme-pxe" => r#"bmc = { address = "ipmi://127.0.0.1:9000" }"#,
        "redfish" | "acme" => r#"bmc = { address = "redfish+http://127.0.0.1:8000" }"#,
        _ => "",
    }
}

#[test]
fn composition_follows_ironic_for_every_case() {
    assert!(CASES.len() >= 25);
    let mut failures = Vec::new();
    for c in CASES {
        let rivet = format!("[hardware]\n{}\n", c.hardware);
        let node = format!(
            "[[node]]\nname = \"n1\"\ndriver = \"{}\"\n{}\n{}\n",
            c.driver,
            c.node,
            bmc_for(c.driver)
        );
        let fleet = TempFleet::new(&[
            ("rivet.toml", &rivet),
            ("drivers/acme.toml", DRIVERS),
            ("nodes/n.toml", &node),
        ]);
        let loaded = load(fleet.path());
        let codes: Vec<&str> = loaded.problems.iter().map(|p| p.code).collect();
        match c.expect {
            Composed(want) => match loaded.fleet.node("n1") {
                Some(n) if n.interfaces.get(c.kind) == want => {}
                Some(n) => failures.push(format!(
                    "{}: composed `{}`, want `{want}`",
                    c.name,
                    n.interfaces.get(c.kind)
                )),
                None => failures.push(format!("{}: node invalid: {codes:?}", c.name)),
            },
            Error(code) => {
                if !codes.contains(&code) {
                    failures.push(format!("{}: want {code}, got {codes:?}", c.name));
                }
                if loaded.fleet.node("n1").is_some() {
                    failures.push(format!(
                        "{}: node with an error still counted valid",
                        c.name
                    ));
                }
                let message = loaded
                    .problems
                    .iter()
                    .find(|p| p.code == code)
                    .map(|p| p.message.clone())
                    .unwrap_or_default();
                let names_type = code.contains("driver") || code.contains("type_not_enabled");
                if !names_type && !message.contains(c.kind.as_str()) {
                    failures.push(format!(
                        "{}: message does not name the {} interface: {message}",
                        c.name, c.kind
                    ));
                }
                if !message.contains("n1") {
                    failures.push(format!(
                        "{}: message does not name the node: {message}",
                        c.name
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unset_enabled_lists_are_calculated_from_enabled_types() {
    let fleet = TempFleet::new(&[
        (
            "rivet.toml",
            "[hardware]\nenabled_hardware_types = [\"ipmi\", \"redfish\"]\n",
        ),
        (
            "nodes/n.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"ipmi\"\nbmc = { address = \"ipmi://h\" }\n",
        ),
    ]);
    let loaded = load(fleet.path());
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    let hw = &loaded.fleet.hardware;
    assert_eq!(hw.enabled.get(Power), &["ipmitool", "redfish"]);
    assert_eq!(hw.enabled.get(Management), &["ipmitool", "redfish"]);
    assert_eq!(hw.enabled.get(Vendor), &["ipmitool", "redfish"]);
    assert_eq!(hw.enabled.get(Boot), &["ipxe"]);
}
