//! A node's plan flattened into operations: each one driver call (or one
//! bookkeeping change), idempotent, journaled before and after it runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::node::Node;
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
        }
    }

    /// Whether a declaration change may interrupt it mid-way.
    pub fn abortable(&self) -> bool {
        matches!(
            self,
            Op::Step {
                abortable: true,
                ..
            }
        )
    }

    /// Bookkeeping only: no BMC is called.
    pub fn is_bookkeeping(&self) -> bool {
        matches!(self, Op::Begin { .. } | Op::End { .. } | Op::Release)
    }
}

/// The operations of one deploy step. A `ramdisk` deploy (and `autodetect`,
/// which deploys the same way) is the boot interface's work made visible:
/// power off, present the image (virtual media) or network boot, set the
/// boot device, power on; the step completes when the node is up.
fn step_ops(node: &Node, step: &crate::plan::steps::PlannedStep) -> Vec<Op> {
    let deploy = node.interfaces.get(InterfaceType::Deploy).as_str();
    if step.interface == InterfaceType::Deploy
        && step.step == "deploy"
        && matches!(deploy, "ramdisk" | "autodetect")
    {
        let mut ops = vec![Op::SetPower {
            target: PowerState::Off,
        }];
        let image = node.instance.as_ref().and_then(|i| i.image.clone());
        match (node.interfaces.get(InterfaceType::Boot).as_str(), image) {
            ("redfish-virtual-media", Some(image)) => {
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

/// The operations that carry out a node's planned actions, in order.
pub fn flatten(plan: &NodePlan, node: &Node, instance: &str) -> Vec<Op> {
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
                        if matches!(
                            node.interfaces.get(InterfaceType::Inspect).as_str(),
                            "redfish" | "fake"
                        ) {
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
                            ops.extend(step_ops(node, step));
                        }
                        // A deploy ends with the instance booted.
                        ops.push(Op::SetPower {
                            target: PowerState::On,
                        });
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
