//! Each `[[node]]`: name, UUID, hardware type, traits, dependencies,
//! rollout group, instance (`instance`), ports (`ports`), what a deploy
//! through the agent needs (`agent`) and the fields Ironic's users find it
//! by (resource class, owner, conductor group, …); the node is whole only
//! when every check of it passes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use super::agent::RamdiskKeys;
use super::ports::DeclaredMacs;
use super::steps::{TemplateReports, step_request};
use super::{Builder, DeployTemplate, Hardware, Rollout, is_dns_label, is_trait, loc};
use crate::config::raw::NodeDecl;
use crate::diag::{self, Loc, Problem, SourceFile, list};
use crate::model::hardware::HardwareType;
use crate::model::node::{
    Desired, Located, Node, ProvisionTarget, StepRequest, StepSource, Tenancy, derived_uuid,
};
use crate::vocab::Name;

/// What a conductor group may be, as Ironic's: letters, digits, `_`, `-`
/// and `.`, at most 255 characters (kept in lower case).
pub(super) fn is_conductor_group(text: &str) -> bool {
    text.len() <= 255
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

pub(super) const CONDUCTOR_GROUP_HELP: &str =
    "use letters, digits, `_`, `-` and `.`, at most 255 characters, e.g. `rack-7`";

impl Builder {
    pub(super) fn nodes(
        &mut self,
        decls: &[(Arc<SourceFile>, NodeDecl)],
        hardware: &Hardware,
        rollouts: &[Rollout],
        templates: &[DeployTemplate],
    ) -> Vec<Arc<Node>> {
        let names: BTreeSet<&str> = decls.iter().map(|(_, d)| d.name.value().as_str()).collect();
        let mut by_name: HashMap<&str, Loc> = HashMap::new();
        let mut by_uuid: HashMap<Uuid, Loc> = HashMap::new();
        let mut template_reported = TemplateReports::new();
        let macs = DeclaredMacs::of(decls);
        let mut port_uuids: HashMap<Uuid, Loc> = HashMap::new();
        let mut out = Vec::with_capacity(decls.len());
        for (file, decl) in decls {
            let before = self.problems.len();
            let name = decl.name.value().as_str();
            let at = loc(file, &decl.name);
            if !is_dns_label(name) {
                self.push(
                    Problem::new("rivet::node::name", format!("`{name}` is not a valid node name"))
                        .at(&at, "invalid name")
                        .help("use a DNS label: lowercase letters, digits and `-`, at most 63 characters, e.g. `rack1-node07`"),
                );
            }
            if let Some(first) = by_name.get(name) {
                self.push(
                    Problem::new(
                        "rivet::node::duplicate_name",
                        format!("node `{name}` is declared twice"),
                    )
                    .at(&at, "declared again here")
                    .also(first, "first declared here")
                    .help("node names are unique across all files: rename or remove one"),
                );
                continue;
            }
            by_name.insert(name, at.clone());
            let uuid = match &decl.uuid {
                Some(text) => match Uuid::parse_str(text.value()) {
                    Ok(u) => u,
                    Err(e) => {
                        self.push(
                            Problem::new(
                                "rivet::node::uuid",
                                format!("`{}` is not a UUID: {e}", text.value()),
                            )
                            .at(&loc(file, text), "invalid UUID")
                            .help("write a UUID like `1be26c0b-03f2-4d2e-ae87-c02d7f33c123`, or remove `uuid` to derive one from the name"),
                        );
                        continue;
                    }
                },
                None => derived_uuid(name),
            };
            let uuid_at = decl.uuid.as_ref().map_or(at.clone(), |u| loc(file, u));
            if let Some(first) = by_uuid.get(&uuid) {
                self.push(
                    Problem::new(
                        "rivet::node::duplicate_uuid",
                        format!("UUID {uuid} is used by two nodes"),
                    )
                    .at(&uuid_at, "used again here")
                    .also(first, "first used here")
                    .help("every node needs its own UUID: change or remove one `uuid`"),
                );
            } else {
                by_uuid.insert(uuid, uuid_at);
            }

            let Some(hw) = self.driver(file, decl, hardware) else {
                continue;
            };
            let interfaces = self.compose_node(file, decl, &hw, hardware);
            let bmc = self.bmc(file, decl, &hw);
            let traits = self.traits(file, decl);
            let depends_on = self.depends_on(file, decl, &names);
            let rollout = self.rollout_of(file, decl, rollouts);
            let ports = self.ports(file, decl, &uuid, &macs, &mut port_uuids);
            let tenancy = self.tenancy(file, decl);
            let instance = self.instance_of(file, decl);
            let own_ramdisks =
                self.declared_ramdisks(file, &format!("node `{name}`"), RamdiskKeys::of_node(decl));
            let desired = Desired {
                provision: decl
                    .desired
                    .provision
                    .as_ref()
                    .map_or(ProvisionTarget::Available, |p| *p.value()),
                power: decl.desired.power,
                boot_device: decl.desired.boot_device,
                boot_mode: decl.desired.boot_mode,
            };
            let deploy_steps: Vec<StepRequest> = decl
                .deploy_steps
                .iter()
                .map(|s| step_request(file, s, StepSource::Node))
                .collect();
            let (Some(interfaces), Some(bmc)) = (interfaces, bmc) else {
                continue;
            };
            if self.problems.len() != before {
                continue;
            }
            let mut node = Node {
                name: name.to_string(),
                uuid,
                driver: Name::new(&hw.name),
                interfaces,
                bmc,
                traits,
                depends_on,
                rollout,
                instance,
                agent_image: None,
                deploy_ramdisk: None,
                desired,
                deploy_steps,
                ports,
                tenancy,
                at,
            };
            node.deploy_ramdisk = self.deploy_ramdisk(&node, &hw, own_ramdisks);
            self.instance_missing(file, decl, &node);
            node.agent_image = self.agent_deploy(file, decl, &node);
            let steps_ok = self.node_steps(&node, templates, &mut template_reported);
            if steps_ok && self.problems.len() == before {
                out.push(Arc::new(node));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn driver(
        &mut self,
        file: &Arc<SourceFile>,
        decl: &NodeDecl,
        hardware: &Hardware,
    ) -> Option<HardwareType> {
        let driver = decl.driver.value();
        let at = loc(file, &decl.driver);
        let Some(hw) = self.types.iter().find(|t| &t.name == driver).cloned() else {
            let known: Vec<&str> = self.types.iter().map(|t| t.name.as_str()).collect();
            let mut help = format!("known hardware types: {}", list(&known));
            if let Some(near) = diag::nearest(driver, known.iter().copied()) {
                help = format!("did you mean `{near}`? {help}");
            }
            self.push(
                Problem::new(
                    "rivet::composition::driver_not_found",
                    format!(
                        "node `{}`: hardware type `{driver}` does not exist (DriverNotFound)",
                        decl.name.value()
                    ),
                )
                .at(&at, "unknown hardware type")
                .help(help),
            );
            return None;
        };
        if !hardware.enabled_types.contains(driver) {
            self.push(
                Problem::new(
                    "rivet::composition::type_not_enabled",
                    format!(
                        "node `{}`: hardware type `{driver}` is not enabled",
                        decl.name.value()
                    ),
                )
                .at(&at, "not in enabled_hardware_types")
                .help(format!(
                    "add `{driver}` to `enabled_hardware_types` in rivet.toml; enabled now: {}",
                    list(&hardware.enabled_types)
                )),
            );
            return None;
        }
        Some(hw)
    }

    /// The fields Ironic's users find and schedule the node by, within
    /// Ironic's limits.
    fn tenancy(&mut self, file: &Arc<SourceFile>, decl: &NodeDecl) -> Tenancy {
        let node = decl.name.value();
        if let Some(rc) = &decl.resource_class
            && rc.value().chars().count() > 80
        {
            self.push(
                Problem::new(
                    "rivet::node::resource_class",
                    format!("node `{node}`: the resource class is longer than 80 characters"),
                )
                .at(&loc(file, rc), "too long")
                .help("shorten it to at most 80 characters, e.g. `baremetal-gpu`"),
            );
        }
        // A node's own group wins; one that names none gets `[cluster]`'s.
        let conductor_group = match &decl.conductor_group {
            None => self.default_conductor_group.clone(),
            Some(group) => {
                let text = group.value();
                if !is_conductor_group(text) {
                    self.push(
                        Problem::new(
                            "rivet::node::conductor_group",
                            format!("node `{node}`: `{text}` is not a valid conductor group"),
                        )
                        .at(&loc(file, group), "invalid conductor group")
                        .help(CONDUCTOR_GROUP_HELP),
                    );
                }
                text.to_ascii_lowercase()
            }
        };
        if let Some(d) = &decl.description
            && d.value().chars().count() > 4096
        {
            self.push(
                Problem::new(
                    "rivet::node::description",
                    format!("node `{node}`: the description is longer than 4096 characters"),
                )
                .at(&loc(file, d), "too long")
                .help("shorten it to at most 4096 characters"),
            );
        }
        let instance_uuid = decl.instance.as_ref().and_then(|instance| {
            let text = instance.value().uuid.as_ref()?;
            match Uuid::parse_str(text) {
                Ok(u) => Some(u.to_string()),
                Err(e) => {
                    self.push(
                        Problem::new(
                            "rivet::node::instance_uuid",
                            format!("node `{node}`: instance UUID `{text}` is not a UUID: {e}"),
                        )
                        .at(&loc(file, instance), "in this instance")
                        .help("write the instance's UUID like `1be26c0b-03f2-4d2e-ae87-c02d7f33c123`, or remove `uuid`"),
                    );
                    None
                }
            }
        });
        Tenancy {
            resource_class: decl.resource_class.as_ref().map(|r| r.value().clone()),
            owner: decl.owner.clone(),
            lessee: decl.lessee.clone(),
            conductor_group,
            description: decl.description.as_ref().map(|d| d.value().clone()),
            retired: decl.retired.unwrap_or(false),
            retired_reason: decl.retired_reason.clone(),
            shard: decl.shard.clone(),
            instance_uuid,
        }
    }

    fn traits(&mut self, file: &Arc<SourceFile>, decl: &NodeDecl) -> Vec<String> {
        let mut out = Vec::new();
        for t in &decl.traits {
            if is_trait(t.value()) {
                if !out.contains(t.value()) {
                    out.push(t.value().clone());
                }
            } else {
                self.push(
                    Problem::new("rivet::node::trait", format!("`{}` is not a valid trait", t.value()))
                        .at(&loc(file, t), "invalid trait")
                        .help("traits are upper case, digits and `_`; custom ones start with `CUSTOM_`, e.g. `CUSTOM_HYPERTHREADING_ON`"),
                );
            }
        }
        out
    }

    fn depends_on(
        &mut self,
        file: &Arc<SourceFile>,
        decl: &NodeDecl,
        names: &BTreeSet<&str>,
    ) -> Vec<Located<String>> {
        let node = decl.name.value();
        let mut out: Vec<Located<String>> = Vec::new();
        for dep in &decl.depends_on {
            let at = loc(file, dep);
            if dep.value() == node {
                self.push(
                    Problem::new(
                        "rivet::node::self_dependency",
                        format!("node `{node}` depends on itself"),
                    )
                    .at(&at, "a node cannot wait for itself")
                    .help("remove it from `depends_on`"),
                );
            } else if !names.contains(dep.value().as_str()) {
                let mut help = "`depends_on` names other nodes of this fleet".to_string();
                if let Some(near) = diag::nearest(dep.value(), names.iter().copied()) {
                    help = format!("did you mean `{near}`? {help}");
                }
                self.push(
                    Problem::new(
                        "rivet::node::unknown_dependency",
                        format!(
                            "node `{node}` depends on `{}`, which is not declared",
                            dep.value()
                        ),
                    )
                    .at(&at, "no such node")
                    .help(help),
                );
            } else if !out.iter().any(|d| &d.value == dep.value()) {
                out.push(Located {
                    value: dep.value().clone(),
                    at,
                });
            }
        }
        out
    }

    fn rollout_of(
        &mut self,
        file: &Arc<SourceFile>,
        decl: &NodeDecl,
        rollouts: &[Rollout],
    ) -> Option<String> {
        let group = decl.rollout.as_ref()?;
        if rollouts.iter().any(|r| &r.name == group.value()) {
            return Some(group.value().clone());
        }
        let known: Vec<&str> = rollouts.iter().map(|r| r.name.as_str()).collect();
        let mut help = format!(
            "declare it as a [[rollout]] in rivet.toml; declared groups: {}",
            list(&known)
        );
        if let Some(near) = diag::nearest(group.value(), known.iter().copied()) {
            help = format!("did you mean `{near}`? {help}");
        }
        self.push(
            Problem::new(
                "rivet::node::unknown_rollout",
                format!(
                    "node `{}`: rollout group `{}` is not declared",
                    decl.name.value(),
                    group.value()
                ),
            )
            .at(&loc(file, group), "unknown rollout group")
            .help(help),
        );
        None
    }
}
