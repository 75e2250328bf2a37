//! A node's plan flattened into operations: each one driver call (or one
//! bookkeeping change), idempotent, journaled before and after it runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::catalog::{Capabilities, Catalog};
use crate::model::node::{DeployRamdisk, Node};
use crate::plan::provision::Verb;
use crate::plan::{Action, NodePlan};
use crate::vocab::{BootDevice, BootMode, InterfaceType, PowerState, ProvisionState};

/// One unit of work on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A provision verb starts: the node enters its first transitional state.
    Begin {
        verb: Verb,
        before: ProvisionState,
        after: ProvisionState,
    },
    /// Read the power state: proves the BMC answers (Ironic's "verifying").
    Verify,
    /// Read CPUs, memory and NICs from the BMC (out-of-band inspection).
    Inspect,
    SetPower {
        target: PowerState,
    },
    Step {
        interface: InterfaceType,
        step: String,
        priority: u32,
        #[serde(default)]
        args: BTreeMap<String, serde_json::Value>,
        #[serde(default)]
        abortable: bool,
    },
    /// Insert the instance image as virtual media (the boot interface's part of a ramdisk deploy).
    InsertMedia {
        image: String,
    },
    SetBootDevice {
        device: BootDevice,
    },
    SetBootMode {
        mode: BootMode,
    },
    /// Stop managing the node (after a prune undeployed it).
    Release,
    /// A deploy step made of several operations starts: the node's
    /// `deploy_step` names it (an agent deploy's conductor-side steps).
    BeginStep {
        interface: InterfaceType,
        step: String,
        priority: u32,
    },
    /// Open the node's agent channel for a new boot of its deploy ramdisk,
    /// before the node is powered on into it: an earlier boot's token and
    /// callback URL are void.
    OpenAgent,
    /// Wait for the agent's first heartbeat (Ironic's `wait call-back`),
    /// at most `[conductor] deploy_callback_timeout`.
    AwaitAgent,
    /// A deploy step the agent runs (`deploy.execute_deploy_step`),
    /// followed to its end; a restarted conductor finds it among the
    /// agent's commands instead of sending it twice.
    AgentStep {
        interface: InterfaceType,
        step: String,
        priority: u32,
        #[serde(default)]
        args: BTreeMap<String, serde_json::Value>,
    },
    /// One agent command (`extension.command`), waited for.
    AgentCommand {
        command: String,
    },
    /// Close the node's agent channel: its agent is powered off.
    CloseAgent,
    /// A provision verb completes: the node rests in `after`.
    End {
        verb: Verb,
        after: ProvisionState,
        /// For deploys: the fingerprint of the instance now deployed.
        #[serde(default)]
        instance: Option<String>,
    },
}

impl Op {
    /// How history and progress name it.
    pub fn label(&self) -> String {
        match self {
            Op::Begin { verb, .. } => verb.as_str().to_string(),
            Op::Verify => "verify".to_string(),
            Op::Inspect => "inspect".to_string(),
            Op::SetPower { target } => format!("power {}", target.short()),
            Op::Step {
                interface, step, ..
            } => format!("{interface}.{step}"),
            Op::InsertMedia { .. } => "boot.insert_media".to_string(),
            Op::SetBootDevice { device } => format!("boot device {}", device.as_str()),
            Op::SetBootMode { mode } => format!("boot mode {}", mode.as_str()),
            Op::End { verb, .. } => format!("{} done", verb.as_str()),
            Op::Release => "release".to_string(),
            Op::BeginStep {
                interface, step, ..
            } => format!("{interface}.{step} begins"),
            Op::OpenAgent => "agent channel open".to_string(),
            Op::AwaitAgent => "wait call-back".to_string(),
            Op::AgentStep {
                interface, step, ..
            } => format!("{interface}.{step} (agent)"),
            Op::AgentCommand { command } => format!("agent {command}"),
            Op::CloseAgent => "agent channel close".to_string(),
        }
    }

    /// Whether the agent in the node's ramdisk carries it out.
    pub fn is_agent_call(&self) -> bool {
        matches!(self, Op::AgentStep { .. } | Op::AgentCommand { .. })
    }

    /// Whether a declaration change or shutdown may interrupt it mid-way.
    /// Waiting for an agent and following its step may: the agent keeps
    /// working, and a resumed run finds its command again.
    pub fn abortable(&self) -> bool {
        matches!(
            self,
            Op::Step {
                abortable: true,
                ..
            } | Op::AwaitAgent
                | Op::AgentStep { .. }
        )
    }

    /// Bookkeeping only: no BMC or agent is called, nothing is recorded
    /// outside the run's own commit.
    pub fn is_bookkeeping(&self) -> bool {
        matches!(
            self,
            Op::Begin { .. } | Op::End { .. } | Op::Release | Op::BeginStep { .. }
        )
    }
}

/// What the implementation of `kind` a node is composed with can do.
fn capabilities(catalog: &Catalog, node: &Node, kind: InterfaceType) -> Capabilities {
    catalog.capabilities(kind, node.interfaces.get(kind))
}

/// The operations of one deploy step. A deploy interface that boots the node
/// to deploy (`ramdisk`, and `autodetect`, which deploys the same way) is
/// the boot interface's work made visible: power off, present the image
/// (virtual media) or network boot, set the boot device, power on; the step
/// completes when the node is up.
fn step_ops(catalog: &Catalog, node: &Node, step: &crate::plan::steps::PlannedStep) -> Vec<Op> {
    if capabilities(catalog, node, InterfaceType::Deploy).contains(Capabilities::NEEDS_AGENT) {
        return agent_step_ops(catalog, node, step);
    }
    if step.interface == InterfaceType::Deploy
        && step.step == "deploy"
        && capabilities(catalog, node, InterfaceType::Deploy)
            .contains(Capabilities::BOOTS_TO_DEPLOY)
    {
        let mut ops = vec![Op::SetPower {
            target: PowerState::Off,
        }];
        let image = node.instance.as_ref().and_then(|i| i.image.clone());
        let virtual_media =
            capabilities(catalog, node, InterfaceType::Boot).contains(Capabilities::VIRTUAL_MEDIA);
        match image {
            Some(image) if virtual_media => {
                ops.push(Op::InsertMedia { image });
                ops.push(Op::SetBootDevice {
                    device: BootDevice::Cdrom,
                });
            }
            _ => ops.push(Op::SetBootDevice {
                device: BootDevice::Pxe,
            }),
        }
        ops.push(Op::SetPower {
            target: PowerState::On,
        });
        return ops;
    }
    vec![Op::Step {
        interface: step.interface,
        step: step.step.clone(),
        priority: step.priority,
        args: step.args.clone(),
        abortable: step.abortable,
    }]
}

/// The operations of one step of a deploy through the agent in the node's
/// ramdisk, Ironic's `direct` deploy: `deploy` boots the ramdisk and waits
/// for the agent to call back, the agent's own steps (`write_image`) run
/// in it, `prepare_instance_boot` reads the partition UUIDs and sets the
/// boot device to disk, `tear_down_agent` powers the agent off (then the
/// BMC, in case it did not), `boot_instance` powers the instance on.
fn agent_step_ops(
    catalog: &Catalog,
    node: &Node,
    step: &crate::plan::steps::PlannedStep,
) -> Vec<Op> {
    let begin = Op::BeginStep {
        interface: step.interface,
        step: step.step.clone(),
        priority: step.priority,
    };
    let power = |target| Op::SetPower { target };
    if step.by_agent {
        let mut args = step.args.clone();
        if step.interface == InterfaceType::Deploy && step.step == "write_image" {
            args.extend(write_image_args(node));
        }
        return vec![Op::AgentStep {
            interface: step.interface,
            step: step.step.clone(),
            priority: step.priority,
            args,
        }];
    }
    if step.interface != InterfaceType::Deploy {
        return vec![Op::Step {
            interface: step.interface,
            step: step.step.clone(),
            priority: step.priority,
            args: step.args.clone(),
            abortable: step.abortable,
        }];
    }
    match step.step.as_str() {
        "deploy" => {
            let mut ops = vec![begin, power(PowerState::Off)];
            let virtual_media = capabilities(catalog, node, InterfaceType::Boot)
                .contains(Capabilities::VIRTUAL_MEDIA);
            match &node.deploy_ramdisk {
                Some(DeployRamdisk::VirtualMedia { iso }) if virtual_media => {
                    ops.push(Op::InsertMedia { image: iso.clone() });
                    ops.push(Op::SetBootDevice {
                        device: BootDevice::Cdrom,
                    });
                }
                _ => ops.push(Op::SetBootDevice {
                    device: BootDevice::Pxe,
                }),
            }
            ops.extend([Op::OpenAgent, power(PowerState::On), Op::AwaitAgent]);
            ops
        }
        "prepare_instance_boot" => vec![
            begin,
            Op::AgentCommand {
                command: "standby.get_partition_uuids".into(),
            },
            Op::SetBootDevice {
                device: BootDevice::Disk,
            },
        ],
        "tear_down_agent" => vec![
            begin,
            Op::AgentCommand {
                command: "standby.power_off".into(),
            },
            Op::CloseAgent,
            power(PowerState::Off),
        ],
        "boot_instance" => vec![begin, power(PowerState::On)],
        _ => vec![Op::Step {
            interface: step.interface,
            step: step.step.clone(),
            priority: step.priority,
            args: step.args.clone(),
            abortable: step.abortable,
        }],
    }
}

/// `write_image`'s arguments as Ironic sends them for a whole-disk image:
/// `image_info` (the agent names its cache file after `id`, so it is a
/// UUID derived from the URL, not the URL) and no config drive.
fn write_image_args(node: &Node) -> BTreeMap<String, serde_json::Value> {
    let Some(image) = &node.agent_image else {
        return BTreeMap::new();
    };
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, image.url.as_bytes());
    let info = serde_json::json!({
        "id": id.to_string(),
        "urls": [image.url],
        "disk_format": image.disk_format.as_str(),
        "container_format": "bare",
        "os_hash_algo": image.checksum.algo,
        "os_hash_value": image.checksum.value,
        "stream_raw_images": true,
        "node_uuid": node.uuid.to_string(),
        "image_type": "whole-disk",
    });
    BTreeMap::from([
        ("image_info".to_string(), info),
        ("configdrive".to_string(), serde_json::Value::Null),
    ])
}

/// The operations that carry out a node's planned actions, in order; what
/// its implementations can do comes from `catalog`.
pub fn flatten(catalog: &Catalog, plan: &NodePlan, node: &Node, instance: &str) -> Vec<Op> {
    let mut ops = Vec::new();
    for action in &plan.actions {
        match action {
            Action::Provision {
                verb,
                before,
                after,
                ..
            } => {
                ops.push(Op::Begin {
                    verb: *verb,
                    before: *before,
                    after: *after,
                });
                match verb {
                    Verb::Manage => {
                        ops.push(Op::Verify);
                        if capabilities(catalog, node, InterfaceType::Inspect)
                            .contains(Capabilities::INSPECTS_OUT_OF_BAND)
                        {
                            ops.push(Op::Inspect);
                        }
                    }
                    // rivet's cleaning has no agent to erase disks: it leaves
                    // the node powered off, as Ironic does after cleaning.
                    Verb::Provide | Verb::Undeploy => ops.push(Op::SetPower {
                        target: PowerState::Off,
                    }),
                    Verb::Deploy | Verb::Rebuild => {
                        for step in &plan.steps {
                            ops.extend(step_ops(catalog, node, step));
                        }
                        // A deploy ends with the instance booted (an agent
                        // deploy's `boot_instance` step did).
                        let booted = capabilities(catalog, node, InterfaceType::Deploy)
                            .contains(Capabilities::NEEDS_AGENT)
                            && matches!(
                                ops.last(),
                                Some(Op::SetPower {
                                    target: PowerState::On
                                })
                            );
                        if !booted {
                            ops.push(Op::SetPower {
                                target: PowerState::On,
                            });
                        }
                    }
                }
                ops.push(Op::End {
                    verb: *verb,
                    after: *after,
                    instance: verb.deploys().then(|| instance.to_string()),
                });
            }
            Action::Power { after, .. } => ops.push(Op::SetPower { target: *after }),
            Action::BootDevice { after, .. } => ops.push(Op::SetBootDevice { device: *after }),
            Action::BootMode { after, .. } => ops.push(Op::SetBootMode { mode: *after }),
        }
    }
    ops
}

/// Operations that undeploy a node removed from the declarations
/// (`prune = true`) and then stop managing it.
pub fn prune(current: ProvisionState) -> Vec<Op> {
    let mut ops = Vec::new();
    if matches!(
        current,
        ProvisionState::Active
            | ProvisionState::DeployFailed
            | ProvisionState::Error
            | ProvisionState::Deploying
            | ProvisionState::WaitCallBack
    ) {
        ops.push(Op::Begin {
            verb: Verb::Undeploy,
            before: current,
            after: ProvisionState::Available,
        });
        ops.push(Op::SetPower {
            target: PowerState::Off,
        });
        ops.push(Op::End {
            verb: Verb::Undeploy,
            after: ProvisionState::Available,
            instance: None,
        });
    }
    ops.push(Op::Release);
    ops
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use super::*;

    /// The string literals of Rust source before its `#[cfg(test)]` module,
    /// comments left out: enough of Rust's lexer for this crate's code.
    fn string_literals(source: &str) -> Vec<String> {
        let code = source.split("#[cfg(test)]").next().unwrap_or_default();
        let chars: Vec<char> = code.chars().collect();
        let mut found = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let rest = &chars[i..];
            match rest {
                ['/', '/', ..] => {
                    while i < chars.len() && chars[i] != '\n' {
                        i += 1;
                    }
                }
                ['/', '*', ..] => {
                    i += 2;
                    while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                        i += 1;
                    }
                    i += 2;
                }
                // A char literal (`'"'`, `'\''`); otherwise a lifetime.
                ['\'', '\\', ..] => {
                    i += 2;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                }
                ['\'', _, '\'', ..] => i += 3,
                ['r', '#' | '"', ..] if i == 0 || !chars[i - 1].is_alphanumeric() => {
                    let hashes = rest[1..].iter().take_while(|c| **c == '#').count();
                    if rest.get(1 + hashes) != Some(&'"') {
                        i += 1;
                        continue;
                    }
                    let close: Vec<char> = std::iter::once('"')
                        .chain(std::iter::repeat_n('#', hashes))
                        .collect();
                    let start = i + 2 + hashes;
                    let mut end = start;
                    while end < chars.len() && !chars[end..].starts_with(&close) {
                        end += 1;
                    }
                    found.push(chars[start..end].iter().collect());
                    i = end + close.len();
                }
                ['"', ..] => {
                    let mut text = String::new();
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        if chars[i] == '\\' {
                            i += 1;
                        }
                        text.extend(chars.get(i));
                        i += 1;
                    }
                    found.push(text);
                    i += 1;
                }
                _ => i += 1,
            }
        }
        found
    }

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Every interface implementation name the built-in catalog knows.
    fn implementation_names() -> BTreeSet<String> {
        let catalog = Catalog::builtin();
        InterfaceType::ALL
            .into_iter()
            .flat_map(|kind| catalog.names(kind).into_iter().map(str::to_string))
            .collect()
    }

    fn names_in(source: &str, names: &BTreeSet<String>) -> Vec<String> {
        string_literals(source)
            .into_iter()
            .filter(|literal| names.contains(literal))
            .collect()
    }

    #[test]
    fn the_scan_finds_a_match_on_an_implementation_name() {
        let names = implementation_names();
        let code = r##"
            // "ramdisk" in a comment is no match
            let quote = '"'; let tick = '\''; fn f<'a>(x: &'a str) {}
            if matches!(deploy, "ramdisk" | "autodetect") && boot == r#"redfish-virtual-media"# {}
            let text = "the \"fake\" is not one literal";
        "##;
        assert_eq!(
            names_in(code, &names),
            ["ramdisk", "autodetect", "redfish-virtual-media"]
        );
    }

    /// The converge and the planner read capabilities; only the driver
    /// registry maps implementation names to code.
    #[test]
    fn reconcile_and_plan_code_never_match_on_an_implementation_name() {
        let names = implementation_names();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src.join("reconcile"), &mut files);
        rust_files(&src.join("plan"), &mut files);
        assert!(files.len() > 5, "the scan found the sources: {files:?}");
        let offending: Vec<(String, Vec<String>)> = files
            .iter()
            .map(|path| {
                let source = std::fs::read_to_string(path).unwrap();
                (path.display().to_string(), names_in(&source, &names))
            })
            .filter(|(_, found)| !found.is_empty())
            .collect();
        assert!(
            offending.is_empty(),
            "implementation names in code (declare a capability in model::catalog instead): {offending:?}"
        );
    }

    /// The operations of each node's deploy, between `Begin` and `End`.
    fn deploy_ops(nodes: &str) -> BTreeMap<String, Vec<Op>> {
        per_verb(nodes, Verb::Deploy)
    }

    fn per_verb(nodes: &str, wanted: Verb) -> BTreeMap<String, Vec<Op>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("rivet.toml"),
            "[hardware]\n\
             enabled_hardware_types = [\"redfish\", \"ipmi\", \"fake-hardware\"]\n\
             enabled_boot_interfaces = [\"pxe\", \"redfish-virtual-media\", \"fake\"]\n\
             enabled_deploy_interfaces = [\"ramdisk\", \"autodetect\", \"fake\", \"direct\"]\n\
             enabled_inspect_interfaces = [\"redfish\", \"no-inspect\", \"fake\"]\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("nodes")).unwrap();
        std::fs::write(dir.path().join("nodes/n.toml"), nodes).unwrap();
        let loaded = crate::model::fleet::load(dir.path());
        assert!(loaded.is_valid(), "{:?}", loaded.problems);
        let fleet = loaded.fleet;
        let plan = crate::plan::build(&fleet, &BTreeMap::new(), Vec::new()).unwrap();
        plan.nodes
            .iter()
            .map(|node_plan| {
                let node = fleet.node(&node_plan.name).unwrap();
                let ops = flatten(&fleet.catalog, node_plan, node, "instance");
                let verb_ops = ops
                    .iter()
                    .skip_while(|op| !matches!(op, Op::Begin { verb, .. } if *verb == wanted))
                    .skip(1)
                    .take_while(|op| !matches!(op, Op::End { .. }))
                    .cloned()
                    .collect();
                (node_plan.name.clone(), verb_ops)
            })
            .collect()
    }

    const REDFISH: &str = "driver = \"redfish\"\nbmc = { address = \"redfish+http://127.0.0.1:1/redfish/v1/Systems/1\" }\n";
    const ACTIVE: &str = "desired = { provision = \"active\" }\n";

    fn power(target: PowerState) -> Op {
        Op::SetPower { target }
    }

    fn boot_device(device: BootDevice) -> Op {
        Op::SetBootDevice { device }
    }

    #[test]
    fn a_boot_to_deploy_interface_is_power_media_or_pxe_boot_device_and_power() {
        let image = "instance = { image = \"http://images/a.iso\" }\n";
        let kernel = "instance = { kernel = \"http://images/k\", ramdisk = \"http://images/r\" }\n";
        let nodes = [
            ("vmedia", "redfish-virtual-media", "ramdisk", image),
            ("vmedia-autodetect", "redfish-virtual-media", "autodetect", image),
            ("vmedia-kernel", "redfish-virtual-media", "ramdisk", kernel),
            ("pxe", "pxe", "ramdisk", image),
        ]
        .map(|(name, boot, deploy, instance)| {
            format!(
                "[[node]]\nname = \"{name}\"\n{REDFISH}boot_interface = \"{boot}\"\ndeploy_interface = \"{deploy}\"\n{instance}{ACTIVE}\n"
            )
        })
        .concat();
        let ops = deploy_ops(&nodes);
        let media = [
            power(PowerState::Off),
            Op::InsertMedia {
                image: "http://images/a.iso".into(),
            },
            boot_device(BootDevice::Cdrom),
            power(PowerState::On),
            power(PowerState::On),
        ];
        let network = [
            power(PowerState::Off),
            boot_device(BootDevice::Pxe),
            power(PowerState::On),
            power(PowerState::On),
        ];
        assert_eq!(ops["vmedia"], media);
        assert_eq!(
            ops["vmedia-autodetect"], media,
            "autodetect deploys as ramdisk"
        );
        assert_eq!(ops["vmedia-kernel"], network, "no image to present: PXE");
        assert_eq!(ops["pxe"], network);
    }

    #[test]
    fn a_deploy_that_does_not_boot_to_deploy_is_its_step() {
        let ops = deploy_ops(&format!(
            "[[node]]\nname = \"f\"\ndriver = \"fake-hardware\"\n{ACTIVE}"
        ));
        assert_eq!(
            ops["f"],
            [
                Op::Step {
                    interface: InterfaceType::Deploy,
                    step: "deploy".into(),
                    priority: 100,
                    args: BTreeMap::new(),
                    abortable: false,
                },
                power(PowerState::On),
            ]
        );
    }

    #[test]
    fn manage_inspects_only_through_an_out_of_band_inspect_interface() {
        let nodes = format!(
            "[[node]]\nname = \"rf\"\n{REDFISH}\n\
             [[node]]\nname = \"rf-none\"\n{REDFISH}inspect_interface = \"no-inspect\"\n\n\
             [[node]]\nname = \"f\"\ndriver = \"fake-hardware\"\n\n\
             [[node]]\nname = \"ipmi\"\ndriver = \"ipmi\"\nbmc = {{ address = \"ipmi://127.0.0.1:1\" }}\n"
        );
        let manage = per_verb(&nodes, Verb::Manage);
        assert_eq!(manage["rf"], [Op::Verify, Op::Inspect]);
        assert_eq!(manage["f"], [Op::Verify, Op::Inspect]);
        assert_eq!(manage["rf-none"], [Op::Verify]);
        assert_eq!(manage["ipmi"], [Op::Verify]);
    }

    #[test]
    fn a_direct_deploy_boots_the_ramdisk_waits_for_its_agent_and_runs_ironics_steps_in_order() {
        let sha = "a".repeat(64);
        let direct = format!(
            "deploy_interface = \"direct\"\n\
             instance = {{ image = \"http://images/disk.qcow2\", checksum = \"sha256:{sha}\", disk_format = \"qcow2\", root_device = {{ serial = \"S1\" }} }}\n\
             {ACTIVE}"
        );
        let nodes = format!(
            "[[node]]\nname = \"net\"\ndriver = \"fake-hardware\"\n\
             deploy_kernel = \"http://ipa/k\"\ndeploy_ramdisk = \"http://ipa/r\"\n{direct}\
             [[node.ports]]\naddress = \"52:54:00:00:00:01\"\n\n\
             [[node]]\nname = \"vmedia\"\n{REDFISH}boot_interface = \"redfish-virtual-media\"\n\
             deploy_iso = \"http://ipa/ipa.iso\"\n{direct}\
             [[node.ports]]\naddress = \"52:54:00:00:00:02\"\n"
        );
        let ops = deploy_ops(&nodes);
        let begin = |step: &str, priority| Op::BeginStep {
            interface: InterfaceType::Deploy,
            step: step.into(),
            priority,
        };
        let expected_after_boot = |boot: Vec<Op>| {
            let mut all = vec![begin("deploy", 100), power(PowerState::Off)];
            all.extend(boot);
            all.extend([Op::OpenAgent, power(PowerState::On), Op::AwaitAgent]);
            all
        };
        let net = &ops["net"];
        assert_eq!(
            net[..6],
            expected_after_boot(vec![boot_device(BootDevice::Pxe)])[..]
        );
        let vmedia = &ops["vmedia"];
        assert_eq!(
            vmedia[..7],
            expected_after_boot(vec![
                Op::InsertMedia {
                    image: "http://ipa/ipa.iso".into()
                },
                boot_device(BootDevice::Cdrom),
            ])[..]
        );
        // Then the same for both (but each node's UUID in the image
        // information): the agent's step, and Ironic's after it.
        let rest = &net[6..];
        assert_eq!(rest[1..], vmedia[8..]);
        let Op::AgentStep {
            step,
            priority,
            args,
            ..
        } = &rest[0]
        else {
            panic!("the agent's step first: {rest:?}");
        };
        assert_eq!((step.as_str(), *priority), ("write_image", 80));
        let info = &args["image_info"];
        assert_eq!(info["urls"][0], "http://images/disk.qcow2");
        assert_eq!(info["disk_format"], "qcow2");
        assert_eq!(info["os_hash_algo"], "sha256");
        assert_eq!(info["os_hash_value"], sha.as_str());
        assert_eq!(info["image_type"], "whole-disk");
        assert!(
            !info["id"].as_str().unwrap().contains('/'),
            "the id names a cache file"
        );
        assert_eq!(
            rest[1..],
            [
                begin("prepare_instance_boot", 60),
                Op::AgentCommand {
                    command: "standby.get_partition_uuids".into()
                },
                boot_device(BootDevice::Disk),
                begin("tear_down_agent", 40),
                Op::AgentCommand {
                    command: "standby.power_off".into()
                },
                Op::CloseAgent,
                power(PowerState::Off),
                begin("boot_instance", 20),
                power(PowerState::On),
            ],
            "no second power on after boot_instance"
        );
    }
}
