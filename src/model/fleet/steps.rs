//! Deploy templates; each requested deploy step (from a template or a node)
//! checked against what the node's interfaces offer; and the steps a deploy
//! runs once the composed interfaces' own steps, the templates matched by
//! the node's traits and the node's steps are merged. Validation and the
//! plan both merge with [`deploy_steps`], so a node that validates plans.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use super::{Builder, is_trait, loc};
use crate::config::raw::{StepDecl, TemplateDecl};
use crate::config::spanned::Sp;
use crate::diag::{self, Loc, Problem, SourceFile, list};
use crate::model::catalog::Catalog;
use crate::model::interface::InterfaceType;
use crate::model::node::{Node, StepRequest, StepSource};
use crate::model::step::ArgInfo;
use crate::vocab::Name;

/// A deploy template: steps for nodes carrying the trait `name`.
#[derive(Debug, Clone)]
pub struct DeployTemplate {
    pub name: String,
    pub steps: Vec<StepRequest>,
    pub at: Loc,
}

/// The template steps already reported wrong, by (template, step index,
/// implementation): a template's problem is reported once, naming the first
/// node it breaks, not once per node.
pub(super) type TemplateReports = BTreeSet<(String, usize, Name)>;

impl Builder {
    pub(super) fn templates(
        &mut self,
        decls: &[(Arc<SourceFile>, TemplateDecl)],
    ) -> Vec<DeployTemplate> {
        let mut out: Vec<DeployTemplate> = Vec::new();
        for (file, decl) in decls {
            let name = decl.name.value();
            let at = loc(file, &decl.name);
            if !name.starts_with("CUSTOM_") || !is_trait(name) {
                self.push(
                    Problem::new(
                        "rivet::template::name",
                        format!("deploy template name `{name}` is not a custom trait"),
                    )
                    .at(&at, "must look like CUSTOM_SOMETHING")
                    .help("a template is matched by a node trait: name it `CUSTOM_` followed by A-Z, 0-9 and `_`"),
                );
                continue;
            }
            if let Some(first) = out.iter().find(|t| &t.name == name) {
                let problem = Problem::new(
                    "rivet::template::duplicate",
                    format!("deploy template `{name}` is declared twice"),
                )
                .at(&at, "declared again here")
                .also(&first.at, "first declared here")
                .help("merge the steps into one [[deploy_template]]");
                self.push(problem);
                continue;
            }
            let steps = decl
                .steps
                .iter()
                .map(|s| step_request(file, s, StepSource::Template(name.clone())))
                .collect();
            out.push(DeployTemplate {
                name: name.clone(),
                steps,
                at,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Check the steps `node` asks for, itself and through its templates,
    /// and the steps a deploy of it runs once they are merged. False when any
    /// is wrong, even when the problem was reported for an earlier node.
    pub(super) fn node_steps(
        &mut self,
        node: &Node,
        templates: &[DeployTemplate],
        reported: &mut TemplateReports,
    ) -> bool {
        let mut ok = true;
        for step in &node.deploy_steps {
            if let Some(p) = self.check_step(node, step, None) {
                ok = false;
                self.push(p);
            }
        }
        for template in templates.iter().filter(|t| node.traits.contains(&t.name)) {
            for (i, step) in template.steps.iter().enumerate() {
                let implementation = node.interfaces.get(step.interface).clone();
                if let Some(p) = self.check_step(node, step, Some(template)) {
                    ok = false;
                    if reported.insert((template.name.clone(), i, implementation)) {
                        self.push(p);
                    }
                }
            }
        }
        if let Err(problems) = deploy_steps(&self.catalog, templates, node) {
            ok = false;
            self.problems.extend(problems);
        }
        ok
    }

    /// Check a requested step against what the node's interfaces offer.
    fn check_step(
        &self,
        node: &Node,
        step: &StepRequest,
        template: Option<&DeployTemplate>,
    ) -> Option<Problem> {
        let kind = step.interface;
        let implementation = node.interfaces.get(kind);
        let whose = match template {
            Some(t) => format!(
                "deploy template `{}` (used by node `{}`)",
                t.name, node.name
            ),
            None => format!("node `{}`", node.name),
        };
        let offered = self.catalog.get(kind, implementation);
        if in_band(&self.catalog, node, kind, &step.step) {
            // The agent lists its steps only once it runs: the deploy
            // checks this one against them before it sends anything.
            return None;
        }
        let Some(def) = offered.and_then(|imp| imp.step(&step.step)) else {
            let steps: Vec<&str> = offered
                .map(|imp| imp.steps.iter().map(|s| s.step.as_str()).collect())
                .unwrap_or_default();
            let mut help = format!(
                "{kind} interface `{implementation}` offers: {}",
                list(&steps)
            );
            if let Some(near) = diag::nearest(&step.step, steps.iter().copied()) {
                help = format!("did you mean `{near}`? {help}");
            }
            return Some(
                Problem::new(
                    "rivet::step::unknown",
                    format!(
                        "{whose}: {kind} interface `{implementation}` has no deploy step `{}`",
                        step.step
                    ),
                )
                .at(&step.at, "unknown step")
                .help(help),
            );
        };
        if step.priority == 0 {
            return None; // disabled: its arguments are never used
        }
        let missing: Vec<&String> = def
            .argsinfo
            .iter()
            .filter(|(name, info)| info.required && !step.args.contains_key(*name))
            .map(|(name, _)| name)
            .collect();
        if !missing.is_empty() {
            return Some(
                Problem::new(
                    "rivet::step::missing_argument",
                    format!(
                        "{whose}: step `{kind}.{}` is missing required argument {}",
                        step.step,
                        list(&missing)
                    ),
                )
                .at(&step.at, "missing arguments")
                .help(format!(
                    "add `args = {{ {} }}`; {}",
                    missing
                        .iter()
                        .map(|m| format!("{m} = …"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    describe_args(&def.argsinfo)
                )),
            );
        }
        let unknown: Vec<&String> = step
            .args
            .keys()
            .filter(|k| !def.argsinfo.contains_key(*k))
            .collect();
        if !unknown.is_empty() {
            return Some(
                Problem::new(
                    "rivet::step::unknown_argument",
                    format!(
                        "{whose}: step `{kind}.{}` takes no argument {}",
                        step.step,
                        list(&unknown)
                    ),
                )
                .at(&step.at, "unknown arguments")
                .help(describe_args(&def.argsinfo)),
            );
        }
        None
    }
}

fn describe_args(argsinfo: &BTreeMap<String, ArgInfo>) -> String {
    if argsinfo.is_empty() {
        return "this step takes no arguments".to_string();
    }
    let parts: Vec<String> = argsinfo
        .iter()
        .map(|(name, info)| {
            let req = if info.required {
                "required"
            } else {
                "optional"
            };
            if info.description.is_empty() {
                format!("`{name}` ({req})")
            } else {
                format!("`{name}` ({req}): {}", info.description)
            }
        })
        .collect();
    format!("arguments: {}", parts.join("; "))
}

pub(super) fn step_request(
    file: &Arc<SourceFile>,
    decl: &Sp<StepDecl>,
    source: StepSource,
) -> StepRequest {
    let s = decl.value();
    StepRequest {
        interface: *s.interface.value(),
        step: s.step.value().clone(),
        priority: *s.priority.value(),
        args: s
            .args
            .as_ref()
            .map(|a| a.value().clone())
            .unwrap_or_default(),
        source,
        at: Loc::new(file, decl.span()),
    }
}

/// A deploy step as it will run.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    pub interface: InterfaceType,
    pub step: String,
    pub priority: u32,
    pub args: BTreeMap<String, serde_json::Value>,
    /// `driver`, `template` or `node`.
    #[serde(serialize_with = "source_kind")]
    pub source: StepSource,
    /// The deploy template, when `source` is `template`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub abortable: bool,
    /// The agent runs it on the node (`"by_agent": true`; absent when the
    /// conductor does, so plans without agent deploys keep their form).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub by_agent: bool,
    #[serde(skip)]
    pub at: Option<Loc>,
}

fn source_kind<S: serde::Serializer>(source: &StepSource, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match source {
        StepSource::Driver => "driver",
        StepSource::Template(_) => "template",
        StepSource::Node => "node",
    })
}

impl PlannedStep {
    /// `interface.step`, as Ironic names steps.
    pub fn id(&self) -> String {
        format!("{}.{}", self.interface, self.step)
    }
}

/// Ironic's order: priority descending, then interface rank (vendor 7 …
/// raid 1), then interface name and step name for a total order.
pub fn sort(steps: &mut [PlannedStep]) {
    steps.sort_by(|a, b| {
        (
            Reverse(a.priority),
            Reverse(a.interface.step_rank()),
            a.interface.as_str(),
            &a.step,
        )
            .cmp(&(
                Reverse(b.priority),
                Reverse(b.interface.step_rank()),
                b.interface.as_str(),
                &b.step,
            ))
    });
}

/// The steps a deploy of `node` runs, in order: the composed interfaces'
/// own steps, then the deploy templates matched by its traits, then its own;
/// a later source overrides an earlier one by (interface, step), and
/// priority 0 removes a step. What is wrong is judged on the merged steps: a
/// step two templates set conflicts unless the node sets it too, and an
/// interface's step that runs by default needs its required arguments
/// unless a template or the node replaces it.
pub fn deploy_steps(
    catalog: &Catalog,
    templates: &[DeployTemplate],
    node: &Node,
) -> Result<Vec<PlannedStep>, Vec<Problem>> {
    type Key = (InterfaceType, String);
    let mut chosen: BTreeMap<Key, PlannedStep> = BTreeMap::new();
    // Interface steps that would run without the arguments they require.
    let mut unsatisfied: BTreeMap<Key, Problem> = BTreeMap::new();

    for kind in InterfaceType::ALL {
        let Some(imp) = catalog.get(kind, node.interfaces.get(kind)) else {
            continue;
        };
        for def in imp.steps.iter().filter(|s| s.priority > 0) {
            let key = (kind, def.step.clone());
            let missing: Vec<&String> = def
                .argsinfo
                .iter()
                .filter(|(_, info)| info.required)
                .map(|(name, _)| name)
                .collect();
            if !missing.is_empty() {
                let problem = Problem::new(
                    "rivet::step::missing_argument",
                    format!(
                        "node `{}`: step `{kind}.{}` of {kind} interface `{}` runs by default (priority {}) but needs {}",
                        node.name,
                        def.step,
                        imp.name,
                        def.priority,
                        list(&missing)
                    ),
                )
                .help(format!(
                    "give the arguments in a [[node.deploy_steps]] for `{kind}.{}`, or set its priority to 0 there to skip it",
                    def.step
                ));
                let problem = match &imp.declared_at {
                    Some(at) => problem
                        .at(at, "declared here")
                        .also(&node.at, "for this node"),
                    None => problem.at(&node.at, "this node"),
                };
                unsatisfied.insert(key.clone(), problem);
            }
            chosen.insert(
                key,
                PlannedStep {
                    interface: kind,
                    step: def.step.clone(),
                    priority: def.priority,
                    args: BTreeMap::new(),
                    source: StepSource::Driver,
                    template: None,
                    abortable: def.abortable,
                    by_agent: def.by_agent,
                    at: imp.declared_at.clone(),
                },
            );
        }
    }

    let set_by_node: BTreeSet<Key> = node
        .deploy_steps
        .iter()
        .map(|req| (req.interface, req.step.clone()))
        .collect();
    let mut conflicts = Vec::new();
    let mut from_template: BTreeMap<Key, (&str, &Loc)> = BTreeMap::new();
    for template in templates.iter().filter(|t| node.traits.contains(&t.name)) {
        for req in &template.steps {
            let key = (req.interface, req.step.clone());
            if let Some((other, other_at)) = from_template.get(&key) {
                // The node's own step decides between them.
                if !set_by_node.contains(&key) {
                    conflicts.push(
                        Problem::new(
                            "rivet::step::template_conflict",
                            format!(
                                "node `{}`: deploy templates `{other}` and `{}` both set step `{}.{}`",
                                node.name, template.name, req.interface, req.step
                            ),
                        )
                        .at(&req.at, format!("set by {}", template.name))
                        .also(other_at, format!("also set by {other}"))
                        .also(&node.at, "the node carrying both traits")
                        .help("keep the step in one template, or set it on the node with [[node.deploy_steps]] to decide"),
                    );
                }
                continue;
            }
            from_template.insert(key.clone(), (&template.name, &req.at));
            unsatisfied.remove(&key);
            chosen.insert(key, planned(catalog, node, req));
        }
    }
    for req in &node.deploy_steps {
        let key = (req.interface, req.step.clone());
        unsatisfied.remove(&key);
        chosen.insert(key, planned(catalog, node, req));
    }
    let mut problems: Vec<Problem> = unsatisfied.into_values().collect();
    problems.append(&mut conflicts);
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut steps: Vec<PlannedStep> = chosen.into_values().filter(|s| s.priority > 0).collect();
    sort(&mut steps);
    Ok(steps)
}

/// Whether a requested step the deploy interface does not declare is one
/// its agent may offer (Ironic's in-band deploy steps, from a hardware
/// manager): a deploy step of an interface that deploys through the agent.
fn in_band(catalog: &Catalog, node: &Node, kind: InterfaceType, step: &str) -> bool {
    use crate::model::catalog::Capabilities;
    kind == InterfaceType::Deploy
        && catalog
            .capabilities(kind, node.interfaces.get(kind))
            .contains(Capabilities::NEEDS_AGENT)
        && catalog
            .get(kind, node.interfaces.get(kind))
            .and_then(|imp| imp.step(step))
            .is_none()
}

fn planned(catalog: &Catalog, node: &Node, req: &StepRequest) -> PlannedStep {
    // Who runs a step and whether it can be aborted are the interface's
    // to say, whatever priority or arguments a template or node gives it.
    let def = catalog
        .get(req.interface, node.interfaces.get(req.interface))
        .and_then(|imp| imp.step(&req.step));
    PlannedStep {
        interface: req.interface,
        step: req.step.clone(),
        priority: req.priority,
        args: req.args.clone(),
        source: req.source.clone(),
        template: match &req.source {
            StepSource::Template(name) => Some(name.clone()),
            _ => None,
        },
        abortable: def.is_some_and(|d| d.abortable),
        by_agent: def.is_some_and(|d| d.by_agent)
            || in_band(catalog, node, req.interface, &req.step),
        at: Some(req.at.clone()),
    }
}
