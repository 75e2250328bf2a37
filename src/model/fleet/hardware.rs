//! Custom `[[hardware_type]]`s, resolved in `base` order, and `[hardware]`:
//! the enabled hardware types and interfaces, and the global defaults.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::agent::RamdiskKeys;
use super::{Builder, is_dns_label, loc};
use crate::config::raw::{HardwareDecl, HardwareTypeDecl};
use crate::config::spanned::Sp;
use crate::diag::{self, Loc, Problem, SourceFile, list};
use crate::model::compose::calculated_enabled;
use crate::model::hardware::{HardwareType, builtin_hardware_types};
use crate::model::interface::{InterfaceType, PerInterface};
use crate::model::node::{DeployRamdisk, Located};

/// `[hardware]` resolved: what is enabled, and the defaults.
#[derive(Debug, Clone)]
pub struct Hardware {
    pub enabled_types: Vec<String>,
    pub enabled: PerInterface<Vec<String>>,
    pub defaults: PerInterface<Option<Located<String>>>,
}

impl Builder {
    /// Custom hardware types, resolved in `base` order.
    pub(super) fn custom_types(&mut self, decls: &[(Arc<SourceFile>, HardwareTypeDecl)]) {
        let mut pending: Vec<&(Arc<SourceFile>, HardwareTypeDecl)> = Vec::new();
        let mut seen: HashMap<&str, Loc> = HashMap::new();
        for entry in decls {
            let (file, decl) = entry;
            let name = decl.name.value().as_str();
            let at = loc(file, &decl.name);
            if self.types.iter().any(|t| t.name == name && t.is_builtin()) {
                self.push(
                    Problem::new(
                        "rivet::hardware_type::builtin_name",
                        format!("`{name}` is a built-in hardware type"),
                    )
                    .at(&at, "redeclares a built-in type")
                    .help(format!(
                        "name the custom type differently and set `base = \"{name}\"` to inherit from it"
                    )),
                );
                continue;
            }
            if let Some(first) = seen.get(name) {
                self.push(
                    Problem::new(
                        "rivet::hardware_type::duplicate",
                        format!("hardware type `{name}` is declared twice"),
                    )
                    .at(&at, "declared again here")
                    .also(first, "first declared here")
                    .help("remove one of the two declarations or rename one"),
                );
                continue;
            }
            if !is_dns_label(name) {
                self.push(
                    Problem::new(
                        "rivet::hardware_type::name",
                        format!("`{name}` is not a valid hardware type name"),
                    )
                    .at(&at, "invalid name")
                    .help("use lowercase letters, digits and `-`, e.g. `acme-redfish`"),
                );
                continue;
            }
            seen.insert(name, at);
            pending.push(entry);
        }
        // Resolve types whose base is known, until no progress: what is left
        // has a missing base or is part of a cycle.
        loop {
            let before = pending.len();
            let mut rest = Vec::new();
            for entry in pending {
                let base = entry.1.base.as_ref().map(|b| b.value().as_str());
                let base_known = base.is_none_or(|b| self.types.iter().any(|t| t.name == b));
                if base_known {
                    self.resolve_type(&entry.0, &entry.1);
                } else {
                    rest.push(entry);
                }
            }
            pending = rest;
            if pending.is_empty() || pending.len() == before {
                break;
            }
        }
        let unresolved: BTreeSet<&str> =
            pending.iter().map(|e| e.1.name.value().as_str()).collect();
        for (file, decl) in pending {
            let base = decl
                .base
                .as_ref()
                .expect("only types with a base stay pending");
            let known: Vec<&str> = self
                .types
                .iter()
                .map(|t| t.name.as_str())
                .chain(unresolved.iter().copied())
                .collect();
            let problem = if unresolved.contains(base.value().as_str()) {
                Problem::new(
                    "rivet::hardware_type::base_cycle",
                    format!(
                        "hardware type `{}` inherits from itself through `base`",
                        decl.name.value()
                    ),
                )
                .at(&loc(file, base), "part of a base cycle")
                .help("make the chain of `base` end at a built-in type")
            } else {
                let mut help = format!("known hardware types: {}", list(&known));
                if let Some(near) = diag::nearest(base.value(), known.iter().copied()) {
                    help = format!("did you mean `{near}`? {help}");
                }
                Problem::new(
                    "rivet::hardware_type::unknown_base",
                    format!("base hardware type `{}` does not exist", base.value()),
                )
                .at(&loc(file, base), "unknown base")
                .help(help)
            };
            self.push(problem);
        }
        self.types.sort_by(|a, b| a.name.cmp(&b.name));
    }

    fn resolve_type(&mut self, file: &Arc<SourceFile>, decl: &HardwareTypeDecl) {
        let base = decl.base.as_ref().map(|b| b.value().clone());
        let base_type = base
            .as_ref()
            .and_then(|b| self.types.iter().find(|t| &t.name == b));
        let mut supported = match (&base, base_type) {
            (Some(_), Some(t)) => t.supported.clone(),
            (Some(_), None) => PerInterface::default(),
            // Without a base a type starts from Ironic's GenericHardware.
            (None, _) => generic_supported(),
        };
        let inherited = base_type.map_or_else(Vec::new, |t| t.deploy_ramdisks.clone());
        let own = self.declared_ramdisks(
            file,
            &format!("hardware type `{}`", decl.name.value()),
            RamdiskKeys::of_type(decl),
        );
        let deploy_ramdisks = DeployRamdisk::over(own, &inherited);
        for kind in InterfaceType::ALL {
            let Some(names) = decl.supported(kind) else {
                continue;
            };
            let mut resolved = Vec::new();
            for name in names {
                if self.catalog.get(kind, name.value()).is_some() {
                    resolved.push(name.value().clone());
                } else {
                    let known = self.catalog.names(kind);
                    let mut help = format!("known {kind} interfaces: {}", list(&known));
                    if let Some(near) = diag::nearest(name.value(), known.iter().copied()) {
                        help = format!("did you mean `{near}`? {help}");
                    }
                    self.push(
                        Problem::new(
                            "rivet::hardware_type::unknown_interface",
                            format!("{kind} interface `{}` does not exist", name.value()),
                        )
                        .at(&loc(file, name), "unknown interface")
                        .help(format!(
                            "{help}; a plugin interface needs an [[interface]] with type = \"{kind}\""
                        )),
                    );
                }
            }
            *supported.get_mut(kind) = resolved;
        }
        for kind in [InterfaceType::Power, InterfaceType::Management] {
            if supported.get(kind).is_empty() {
                self.push(
                    Problem::new(
                        "rivet::hardware_type::no_core_interface",
                        format!(
                            "hardware type `{}` supports no {kind} interface",
                            decl.name.value()
                        ),
                    )
                    .at(&loc(file, &decl.name), "incomplete hardware type")
                    .help(format!(
                        "set `base` to a built-in type or list `{}`",
                        kind.supported_key()
                    )),
                );
            }
        }
        self.types.push(HardwareType {
            name: decl.name.value().clone(),
            base,
            supported,
            deploy_ramdisks,
            declared_at: Some(loc(file, &decl.name)),
        });
    }

    pub(super) fn hardware(
        &mut self,
        file: Option<&Arc<SourceFile>>,
        decl: &HardwareDecl,
    ) -> Hardware {
        let all_types: Vec<String> = self.types.iter().map(|t| t.name.clone()).collect();
        let enabled_types = match (&decl.enabled_hardware_types, file) {
            (Some(list), Some(file)) => {
                let mut out = Vec::new();
                for name in list.value() {
                    if all_types.contains(name.value()) {
                        out.push(name.value().clone());
                    } else {
                        let mut help = format!("known hardware types: {}", diag::list(&all_types));
                        if let Some(near) =
                            diag::nearest(name.value(), all_types.iter().map(String::as_str))
                        {
                            help = format!("did you mean `{near}`? {help}");
                        }
                        self.push(
                            Problem::new(
                                "rivet::hardware::unknown_type",
                                format!("hardware type `{}` does not exist", name.value()),
                            )
                            .at(&loc(file, name), "unknown hardware type")
                            .help(help),
                        );
                    }
                }
                out
            }
            // Unset: every type rivet knows, built-in and declared.
            _ => all_types,
        };
        let enabled_hw: Vec<&HardwareType> = enabled_types
            .iter()
            .filter_map(|n| self.types.iter().find(|t| &t.name == n))
            .collect();
        let mut enabled = PerInterface::<Vec<String>>::default();
        let mut defaults = PerInterface::<Option<Located<String>>>::default();
        let mut problems = Vec::new();
        for kind in InterfaceType::ALL {
            *enabled.get_mut(kind) = match (decl.enabled(kind), file) {
                (Some(names), Some(file)) => {
                    let mut out = Vec::new();
                    for name in names.value() {
                        if self.catalog.get(kind, name.value()).is_some() {
                            out.push(name.value().clone());
                        } else {
                            problems.push(self.unknown_interface(
                                file,
                                kind,
                                name,
                                &kind.enabled_key(),
                            ));
                        }
                    }
                    out
                }
                _ => calculated_enabled(kind, enabled_hw.iter().copied(), |n| {
                    self.catalog.enabled_by_default(kind, n)
                }),
            };
            if let (Some(default), Some(file)) = (decl.default_for(kind), file) {
                if self.catalog.get(kind, default.value()).is_some() {
                    *defaults.get_mut(kind) = Some(Located {
                        value: default.value().clone(),
                        at: loc(file, default),
                    });
                } else {
                    problems.push(self.unknown_interface(file, kind, default, &kind.default_key()));
                }
            }
        }
        self.problems.extend(problems);
        Hardware {
            enabled_types,
            enabled,
            defaults,
        }
    }

    fn unknown_interface(
        &self,
        file: &Arc<SourceFile>,
        kind: InterfaceType,
        name: &Sp<String>,
        key: &str,
    ) -> Problem {
        let known = self.catalog.names(kind);
        let mut help = format!("known {kind} interfaces: {}", list(&known));
        if let Some(near) = diag::nearest(name.value(), known.iter().copied()) {
            help = format!("did you mean `{near}`? {help}");
        }
        Problem::new(
            "rivet::hardware::unknown_interface",
            format!(
                "{kind} interface `{}` in `{key}` does not exist",
                name.value()
            ),
        )
        .at(&loc(file, name), "unknown interface")
        .help(help)
    }
}

fn generic_supported() -> PerInterface<Vec<String>> {
    // Every built-in type but fake-hardware and manual-management extends
    // GenericHardware without changing these; take ipmi's and drop its own.
    let ipmi = builtin_hardware_types()
        .into_iter()
        .find(|t| t.name == "ipmi")
        .expect("ipmi is built in")
        .supported;
    PerInterface::from_fn(|kind| match kind {
        InterfaceType::Power | InterfaceType::Management => Vec::new(),
        InterfaceType::Vendor => vec!["no-vendor".to_string()],
        InterfaceType::Console => vec!["no-console".to_string(), "fake-graphical".to_string()],
        _ => ipmi.get(kind).clone(),
    })
}
