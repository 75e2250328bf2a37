//! A node's interfaces, composed by Ironic's algorithm, with a problem for
//! each one that cannot be chosen or that rivet cannot drive.

use std::sync::Arc;

use super::{Builder, Hardware, loc};
use crate::config::raw::NodeDecl;
use crate::diag::{Loc, Problem, SourceFile, list};
use crate::model::catalog::{InterfaceImpl, Support};
use crate::model::compose::{ComposeError, compose};
use crate::model::hardware::HardwareType;
use crate::model::interface::{InterfaceType, PerInterface};
use crate::model::node::Located;
use crate::vocab::Name;

impl Builder {
    pub(super) fn compose_node(
        &mut self,
        file: &Arc<SourceFile>,
        decl: &NodeDecl,
        hw: &HardwareType,
        hardware: &Hardware,
    ) -> Option<PerInterface<Name>> {
        let node = decl.name.value();
        let mut result = PerInterface::<Option<Name>>::default();
        let mut ok = true;
        for kind in InterfaceType::ALL {
            let explicit = decl.interface(kind);
            let default = hardware.defaults.get(kind).as_ref();
            let outcome = compose(
                kind,
                hw,
                explicit.map(|e| e.value().as_str()),
                default.map(|d| d.value.as_str()),
                hardware.enabled.get(kind),
            );
            let at = explicit.map_or_else(|| loc(file, &decl.driver), |e| loc(file, e));
            match outcome {
                Ok(name) => {
                    if let Some(InterfaceImpl {
                        support: Support::Unsupported(why),
                        ..
                    }) = self.catalog.get(kind, &name)
                    {
                        let drivable: Vec<&String> = hw
                            .supported(kind)
                            .iter()
                            .filter(|n| self.catalog.is_drivable(kind, n))
                            .collect();
                        let label = if explicit.is_some() {
                            "rivet cannot drive this".to_string()
                        } else {
                            format!("{kind} interface chosen by default for this hardware type")
                        };
                        let mut problem = Problem::new(
                            "rivet::composition::not_drivable",
                            format!(
                                "node `{node}`: rivet cannot drive {kind} interface `{name}`: {why}"
                            ),
                        )
                        .at(&at, label)
                        .help(format!(
                            "set `{}` to one rivet drives: {}",
                            kind.node_key(),
                            list(&drivable)
                        ));
                        if let (None, Some(d)) = (explicit, default) {
                            problem = problem.also(&d.at, "the default that chose it");
                        }
                        self.push(problem);
                        ok = false;
                    } else {
                        *result.get_mut(kind) = Some(Name::new(&name));
                    }
                }
                Err(err) => {
                    ok = false;
                    let problem = composition_problem(node, &err, &at, default);
                    self.push(problem);
                }
            }
        }
        ok.then(|| {
            PerInterface::from_fn(|kind| {
                result
                    .get(kind)
                    .clone()
                    .expect("every interface type composed")
            })
        })
    }
}

fn composition_problem(
    node: &str,
    err: &ComposeError,
    at: &Loc,
    default: Option<&Located<String>>,
) -> Problem {
    match err {
        ComposeError::NotEnabled { kind, name, enabled } => Problem::new(
            "rivet::composition::not_enabled",
            format!("node `{node}`: {kind} interface `{name}` is not enabled"),
        )
        .at(at, "not enabled")
        .help(format!(
            "add `{name}` to `{}` in rivet.toml, or choose an enabled one: {}",
            kind.enabled_key(),
            list(enabled)
        )),
        ComposeError::Incompatible {
            kind,
            name,
            hardware_type,
            supported,
        } => Problem::new(
            "rivet::composition::incompatible",
            format!(
                "node `{node}`: {kind} interface implementation `{name}` is not supported by hardware type `{hardware_type}`"
            ),
        )
        .at(at, "not supported by this hardware type")
        .help(format!("`{hardware_type}` supports: {}", list(supported))),
        ComposeError::NoValidDefault {
            kind,
            hardware_type,
            default: configured,
            enabled,
            supported,
        } => {
            let both: Vec<&String> = supported.iter().filter(|s| enabled.contains(s)).collect();
            let mut problem = Problem::new(
                "rivet::composition::no_valid_default",
                format!(
                    "node `{node}`: no valid default {kind} interface for hardware type `{hardware_type}`"
                ),
            )
            .at(at, format!("no {kind} interface can be chosen"));
            problem = match (configured, default) {
                (Some(name), Some(d)) => problem
                    .also(&d.at, format!("`{name}` does not fit `{hardware_type}`"))
                    .help(format!(
                        "`{}` is `{name}`, which `{hardware_type}` {}; set `{}` on the node to one of {}",
                        kind.default_key(),
                        if supported.contains(name) { "supports but is not enabled" } else { "does not support" },
                        kind.node_key(),
                        if both.is_empty() { list(supported) } else { list(&both) },
                    )),
                _ => problem.help(format!(
                    "none of `{hardware_type}`'s {kind} interfaces ({}) is enabled (enabled: {}); add one to `{}`",
                    list(supported),
                    list(enabled),
                    kind.enabled_key()
                )),
            };
            problem
        }
    }
}
