//! Deploy templates, and each requested deploy step (from a template or a
//! node) checked against what the node's interfaces offer.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Builder, is_trait, loc};
use crate::config::raw::{StepDecl, TemplateDecl};
use crate::config::spanned::Sp;
use crate::diag::{self, Loc, Problem, SourceFile, list};
use crate::model::node::{Node, StepRequest, StepSource};
use crate::model::step::ArgInfo;

/// A deploy template: steps for nodes carrying the trait `name`.
#[derive(Debug, Clone)]
pub struct DeployTemplate {
    pub name: String,
    pub steps: Vec<StepRequest>,
    pub at: Loc,
}

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

    /// Check a requested step against what the node's interfaces offer.
    pub(super) fn check_step(
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
