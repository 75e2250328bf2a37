//! Exec-plugin `[[interface]]` declarations: their program, timeout,
//! passthru methods and deploy steps, added to the catalog.

use std::sync::Arc;
use std::time::Duration;

use super::{Builder, loc, parse_duration};
use crate::config::raw::InterfaceDecl;
use crate::diag::{Problem, SourceFile, list};
use crate::model::catalog::{InterfaceImpl, Support};
use crate::model::interface::InterfaceType;
use crate::model::step::{HTTP_METHODS, PassthruMethod, StepDef};

impl Builder {
    pub(super) fn exec_interface(&mut self, file: &Arc<SourceFile>, decl: &InterfaceDecl) {
        let kind = *decl.kind.value();
        let name = decl.name.value().clone();
        let at = loc(file, &decl.name);
        if let Some(existing) = self.catalog.get(kind, &name) {
            let mut problem = Problem::new(
                "rivet::interface::duplicate",
                format!("{kind} interface `{name}` is declared twice"),
            )
            .at(&at, "declared again here")
            .help("give the plugin interface a name of its own, e.g. prefixed with your vendor");
            match &existing.declared_at {
                Some(first) => problem = problem.also(first, "first declared here"),
                None => {
                    problem.message = format!("{kind} interface `{name}` is a built-in name");
                }
            }
            self.push(problem);
            return;
        }
        if decl.exec.value().is_empty() || decl.exec.value()[0].trim().is_empty() {
            self.push(
                Problem::new(
                    "rivet::interface::exec",
                    format!("{kind} interface `{name}` has an empty `exec`"),
                )
                .at(&loc(file, &decl.exec), "no program")
                .help("name the plugin program and its arguments, e.g. `exec = [\"plugins/acme-vendor\"]`"),
            );
            return;
        }
        let program = &decl.exec.value()[0];
        // A bare name is looked up on PATH when called; a path must exist now.
        if program.contains('/') {
            let path = self.root.join(program);
            if !path.is_file() {
                self.push(
                    Problem::new(
                        "rivet::interface::exec_missing",
                        format!("{kind} interface `{name}`: plugin program `{program}` does not exist"),
                    )
                    .at(&loc(file, &decl.exec), "no such file")
                    .help("paths in `exec` are relative to the fleet directory; check the path and that the file is committed"),
                );
            }
        }
        let mut timeout_value = Duration::from_secs(60);
        if let Some(timeout) = &decl.timeout
            && let Ok(d) = parse_duration(timeout.value())
        {
            timeout_value = d;
        }
        if let Some(timeout) = &decl.timeout
            && let Err(e) = parse_duration(timeout.value())
        {
            self.push(
                Problem::new(
                    "rivet::interface::timeout",
                    format!("`{}` is not a duration: {e}", timeout.value()),
                )
                .at(&loc(file, timeout), "not a duration")
                .help("write a duration such as `30s`"),
            );
        }
        if !decl.passthru.is_empty() && kind != InterfaceType::Vendor {
            self.push(
                Problem::new(
                    "rivet::interface::passthru_not_vendor",
                    format!("passthru methods belong to vendor interfaces, not to {kind} interface `{name}`"),
                )
                .at(&loc(file, &decl.passthru[0]), "passthru on a non-vendor interface")
                .help("declare the methods on an `[[interface]]` with `type = \"vendor\"`"),
            );
        }
        let mut passthru: Vec<PassthruMethod> = Vec::new();
        for method in &decl.passthru {
            let m = method.value();
            if passthru.iter().any(|p| &p.method == m.method.value()) {
                self.push(
                    Problem::new(
                        "rivet::interface::duplicate_method",
                        format!("passthru method `{}` is declared twice", m.method.value()),
                    )
                    .at(&loc(file, &m.method), "declared again")
                    .help("each method name must be unique within an interface"),
                );
                continue;
            }
            let mut verbs = Vec::new();
            for verb in m.http_methods.iter().flatten() {
                let upper = verb.value().to_ascii_uppercase();
                if HTTP_METHODS.contains(&upper.as_str()) {
                    verbs.push(upper);
                } else {
                    self.push(
                        Problem::new(
                            "rivet::interface::http_method",
                            format!("`{}` is not an HTTP method passthru can use", verb.value()),
                        )
                        .at(&loc(file, verb), "unknown HTTP method")
                        .help(format!("use some of {}", list(&HTTP_METHODS))),
                    );
                }
            }
            if verbs.is_empty() {
                verbs.push("POST".to_string());
            }
            passthru.push(PassthruMethod {
                method: m.method.value().clone(),
                http_methods: verbs,
                is_async: m.is_async.unwrap_or(true),
                description: m.description.clone().unwrap_or_default(),
                attach: m.attach.unwrap_or(false),
                require_exclusive_lock: m.require_exclusive_lock.unwrap_or(true),
                args: m.args.clone(),
            });
        }
        let mut steps: Vec<StepDef> = Vec::new();
        for step in &decl.deploy_step {
            let s = step.value();
            if steps.iter().any(|d| &d.step == s.step.value()) {
                self.push(
                    Problem::new(
                        "rivet::interface::duplicate_step",
                        format!("deploy step `{}` is declared twice", s.step.value()),
                    )
                    .at(&loc(file, &s.step), "declared again")
                    .help("each step name must be unique within an interface"),
                );
                continue;
            }
            steps.push(StepDef {
                interface: kind,
                step: s.step.value().clone(),
                priority: s.priority,
                argsinfo: s.argsinfo.clone(),
                abortable: s.abortable,
                // A plugin's step runs in the plugin, on the conductor.
                by_agent: false,
            });
        }
        self.catalog.insert(InterfaceImpl {
            kind,
            name,
            support: Support::Exec {
                command: decl.exec.value().clone(),
                timeout: timeout_value,
                needs_secrets: decl.needs_secrets.unwrap_or(false),
            },
            steps,
            passthru,
            capabilities: crate::model::catalog::Capabilities::NONE,
            declared_at: Some(at),
        });
    }
}
