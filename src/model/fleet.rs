//! Building the validated fleet from raw declarations, collecting every
//! problem on the way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::catalog::{Catalog, InterfaceImpl, Support};
use super::compose::{ComposeError, calculated_enabled, compose};
use super::hardware::{BmcFamily, HardwareType, builtin_hardware_types};
use super::interface::{InterfaceType, PerInterface};
use super::node::{
    Bmc, BmcAddress, BmcProtocol, Desired, Located, Node, ProvisionTarget, SecretSource,
    StepRequest, StepSource, derived_uuid,
};
use super::step::{ArgInfo, HTTP_METHODS, PassthruMethod, StepDef};
use crate::config::load::{RawFleet, load_dir};
use crate::config::raw::{
    DriftPolicy, HardwareDecl, HardwareTypeDecl, InterfaceDecl, NodeDecl, StepDecl, TemplateDecl,
};
use crate::config::secret::is_env_name;
use crate::config::spanned::Sp;
use crate::diag::{self, Loc, Problem, SourceFile, list};
use crate::vocab::Name;

/// `[conductor]` with defaults applied.
#[derive(Debug, Clone)]
pub struct Conductor {
    pub state: PathBuf,
    pub http: SocketAddr,
    pub host: String,
    pub workers: u32,
    pub power_sync_interval: Duration,
    pub power_sync_workers: u32,
    pub drift: DriftPolicy,
    pub prune: bool,
    pub api_token_env: Option<String>,
    /// The shortest pause between two commands to one IPMI BMC.
    pub ipmi_min_command_interval: Duration,
    pub api_token_reads: bool,
    /// Events kept per node; `None` keeps every event.
    pub history_max_entries: Option<usize>,
    pub history_cleanup_interval: Duration,
}

/// `[hardware]` resolved: what is enabled, and the defaults.
#[derive(Debug, Clone)]
pub struct Hardware {
    pub enabled_types: Vec<String>,
    pub enabled: PerInterface<Vec<String>>,
    pub defaults: PerInterface<Option<Located<String>>>,
}

/// A rollout group.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub name: String,
    pub max_parallel: Option<u32>,
    pub max_failures: u32,
    pub at: Loc,
}

/// A deploy template: steps for nodes carrying the trait `name`.
#[derive(Debug, Clone)]
pub struct DeployTemplate {
    pub name: String,
    pub steps: Vec<StepRequest>,
    pub at: Loc,
}

/// A validated fleet. Nodes with problems are left out; the rest are whole.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub root: PathBuf,
    pub conductor: Conductor,
    pub hardware: Hardware,
    /// Built-in and custom hardware types, sorted by name.
    pub types: Vec<HardwareType>,
    pub catalog: Catalog,
    pub templates: Vec<DeployTemplate>,
    pub rollouts: Vec<Rollout>,
    /// Valid nodes, sorted by name; shared, so the work of a converge and
    /// the API refer to them instead of copying them.
    pub nodes: Vec<Arc<Node>>,
    pub files: Vec<Arc<SourceFile>>,
}

impl Fleet {
    pub fn hardware_type(&self, name: &str) -> Option<&HardwareType> {
        self.types.iter().find(|t| t.name == name)
    }

    pub fn node(&self, name: &str) -> Option<&Arc<Node>> {
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    /// The implementation a node uses for `kind`.
    pub fn interface_of(&self, node: &Node, kind: InterfaceType) -> Option<&InterfaceImpl> {
        self.catalog.get(kind, node.interfaces.get(kind))
    }

    /// What a hardware type resolves to with no node override: Ironic's
    /// `default_X_interface` in `GET /v1/drivers?detail=true`. `None` when no
    /// default applies.
    pub fn type_default(&self, hw: &HardwareType, kind: InterfaceType) -> Option<String> {
        let default = self
            .hardware
            .defaults
            .get(kind)
            .as_ref()
            .map(|d| d.value.as_str());
        compose(kind, hw, None, default, self.hardware.enabled.get(kind)).ok()
    }

    /// The enabled implementations a type supports, in enabled order.
    pub fn type_enabled(&self, hw: &HardwareType, kind: InterfaceType) -> Vec<String> {
        self.hardware
            .enabled
            .get(kind)
            .iter()
            .filter(|name| hw.supported(kind).contains(name))
            .cloned()
            .collect()
    }
}

/// A fleet and everything wrong with its declarations.
#[derive(Debug)]
pub struct Loaded {
    pub fleet: Fleet,
    pub problems: Vec<Problem>,
}

impl Loaded {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Read and validate the fleet in `dir`.
pub fn load(dir: &std::path::Path) -> Loaded {
    build(load_dir(dir))
}

/// Validate declarations kept as texts (the last converged ones, from the
/// state file) as if they were the files of `dir`.
pub fn load_stored(
    dir: &std::path::Path,
    files: &std::collections::BTreeMap<String, String>,
) -> Loaded {
    build(crate::config::load::load_stored(dir, files))
}

/// Validate raw declarations into a fleet.
pub fn build(raw: RawFleet) -> Loaded {
    let mut b = Builder {
        root: raw.root.clone(),
        problems: raw.problems,
        catalog: Catalog::builtin(),
        types: builtin_hardware_types(),
    };
    let (rivet_file, rivet) = match raw.rivet {
        Some((file, decl)) => (Some(file), decl),
        None => (None, Default::default()),
    };
    let conductor = b.conductor(rivet_file.as_ref(), &raw.root, &rivet.conductor);
    for (file, decl) in &raw.interfaces {
        b.exec_interface(file, decl);
    }
    b.custom_types(&raw.hardware_types);
    let hardware = b.hardware(rivet_file.as_ref(), &rivet.hardware);
    let rollouts = b.rollouts(rivet_file.as_ref(), &rivet.rollout);
    let templates = b.templates(&raw.templates);
    let nodes = b.nodes(&raw.nodes, &hardware, &rollouts, &templates);

    let mut problems = b.problems;
    diag::sort(&mut problems);
    Loaded {
        fleet: Fleet {
            root: raw.root,
            conductor,
            hardware,
            types: b.types,
            catalog: b.catalog,
            templates,
            rollouts,
            nodes,
            files: raw.files,
        },
        problems,
    }
}

struct Builder {
    root: PathBuf,
    problems: Vec<Problem>,
    catalog: Catalog,
    types: Vec<HardwareType>,
}

fn loc<T>(file: &Arc<SourceFile>, sp: &Sp<T>) -> Loc {
    Loc::new(file, sp.span())
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is_trait(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

fn not_a_duration(
    file: &Arc<SourceFile>,
    value: &Sp<String>,
    error: &str,
    examples: &str,
) -> Problem {
    Problem::new(
        "rivet::conductor::duration",
        format!("`{}` is not a duration: {error}", value.value()),
    )
    .at(&loc(file, value), "not a duration")
    .help(format!("write a duration such as {examples}"))
}

impl Builder {
    fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// A `[conductor]` duration that must not be zero; a problem otherwise.
    fn positive_duration(
        &mut self,
        file: &Arc<SourceFile>,
        value: &Sp<String>,
        key: &str,
        examples: &str,
        zero_help: &str,
    ) -> Option<Duration> {
        match parse_duration(value.value()) {
            Ok(d) if !d.is_zero() => return Some(d),
            Ok(_) => self.push(
                Problem::new(
                    "rivet::conductor::duration",
                    format!("`{key}` must be longer than zero"),
                )
                .at(&loc(file, value), "zero")
                .help(format!("write a duration such as {examples}{zero_help}")),
            ),
            Err(e) => self.push(not_a_duration(file, value, &e, examples)),
        }
        None
    }

    fn conductor(
        &mut self,
        file: Option<&Arc<SourceFile>>,
        root: &std::path::Path,
        decl: &crate::config::raw::ConductorDecl,
    ) -> Conductor {
        let mut conductor = Conductor {
            state: root.join(".rivet/state.redb"),
            http: SocketAddr::from(([127, 0, 0, 1], 6385)),
            host: decl.host.clone().unwrap_or_else(local_hostname),
            workers: 64,
            power_sync_interval: Duration::from_secs(120),
            power_sync_workers: 128,
            drift: decl.drift.unwrap_or_default(),
            prune: decl.prune.unwrap_or(false),
            api_token_env: decl.api_token_env.clone(),
            ipmi_min_command_interval: Duration::from_secs(5),
            api_token_reads: decl.api_token_reads.unwrap_or(false),
            history_max_entries: match decl.history_max_entries {
                Some(0) => None,
                Some(n) => Some(n as usize),
                None => Some(300),
            },
            history_cleanup_interval: Duration::from_secs(3600),
        };
        // Only rivet.toml has a [conductor]; without the file there is nothing to check.
        let Some(file) = file else {
            return conductor;
        };
        if let Some(state) = &decl.state {
            conductor.state = root.join(state.value());
        }
        if let Some(http) = &decl.http {
            match http.parse::<SocketAddr>() {
                Ok(addr) => conductor.http = addr,
                Err(_) => self.push(
                    Problem::new(
                        "rivet::conductor::http",
                        format!("`{}` is not an address to listen on", http.value()),
                    )
                    .at(&loc(file, http), "expected IP:PORT")
                    .help("write an IP address and port, e.g. `127.0.0.1:6385`"),
                ),
            }
        }
        if let Some(workers) = &decl.workers {
            if *workers.value() == 0 {
                self.push(
                    Problem::new("rivet::conductor::workers", "`workers` must be at least 1")
                        .at(&loc(file, workers), "zero workers would converge nothing")
                        .help("set `workers` to 1 or more (default 64)"),
                );
            } else {
                conductor.workers = *workers.value();
            }
        }
        if let Some(n) = &decl.power_sync_workers {
            if *n.value() == 0 {
                self.push(
                    Problem::new(
                        "rivet::conductor::workers",
                        "`power_sync_workers` must be at least 1",
                    )
                    .at(&loc(file, n), "zero would never read a BMC")
                    .help("set `power_sync_workers` to 1 or more (default 128)"),
                );
            } else {
                conductor.power_sync_workers = *n.value();
            }
        }
        if let Some(interval) = &decl.power_sync_interval
            && let Some(d) =
                self.positive_duration(file, interval, "power_sync_interval", "`120s` or `5m`", "")
        {
            conductor.power_sync_interval = d;
        }
        if let Some(interval) = &decl.history_cleanup_interval
            && let Some(d) = self.positive_duration(
                file,
                interval,
                "history_cleanup_interval",
                "`1h` or `1d`",
                "; to keep every event, set `history_max_entries = 0`",
            )
        {
            conductor.history_cleanup_interval = d;
        }
        if let Some(gap) = &decl.ipmi_min_command_interval {
            // Zero is allowed: it turns the pause off for BMCs that keep up.
            match parse_duration(gap.value()) {
                Ok(d) => conductor.ipmi_min_command_interval = d,
                Err(e) => self.push(not_a_duration(file, gap, &e, "`5s` or `100ms`")),
            }
        }
        conductor
    }

    fn exec_interface(&mut self, file: &Arc<SourceFile>, decl: &InterfaceDecl) {
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
            declared_at: Some(at),
        });
    }

    /// Custom hardware types, resolved in `base` order.
    fn custom_types(&mut self, decls: &[(Arc<SourceFile>, HardwareTypeDecl)]) {
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
        let mut supported = match &base {
            Some(b) => self
                .types
                .iter()
                .find(|t| &t.name == b)
                .map(|t| t.supported.clone())
                .unwrap_or_default(),
            // Without a base a type starts from Ironic's GenericHardware.
            None => generic_supported(),
        };
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
            declared_at: Some(loc(file, &decl.name)),
        });
    }

    fn hardware(&mut self, file: Option<&Arc<SourceFile>>, decl: &HardwareDecl) -> Hardware {
        let all_types: Vec<String> = self.types.iter().map(|t| t.name.clone()).collect();
        let enabled_types = match (&decl.enabled_hardware_types, file) {
            (Some(list), Some(file)) => {
                let mut out = Vec::new();
                for name in list.value() {
                    if all_types.contains(name.value()) {
                        out.push(name.value().clone());
                    } else {
                        let mut help = format!("known hardware types: {}", list_of(&all_types));
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
                    self.catalog.is_drivable(kind, n)
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

    fn rollouts(
        &mut self,
        file: Option<&Arc<SourceFile>>,
        decls: &[Sp<crate::config::raw::RolloutDecl>],
    ) -> Vec<Rollout> {
        let Some(file) = file else {
            return Vec::new();
        };
        let mut out: Vec<Rollout> = Vec::new();
        for decl in decls {
            let d = decl.value();
            let at = loc(file, &d.name);
            if let Some(first) = out.iter().find(|r| &r.name == d.name.value()) {
                let problem = Problem::new(
                    "rivet::rollout::duplicate",
                    format!("rollout group `{}` is declared twice", d.name.value()),
                )
                .at(&at, "declared again here")
                .also(&first.at, "first declared here")
                .help("merge the two [[rollout]] tables or rename one");
                self.push(problem);
                continue;
            }
            if let Some(mp) = &d.max_parallel
                && *mp.value() == 0
            {
                self.push(
                    Problem::new(
                        "rivet::rollout::max_parallel",
                        format!("rollout group `{}` has `max_parallel = 0`", d.name.value()),
                    )
                    .at(&loc(file, mp), "would never start a node")
                    .help("set `max_parallel` to 1 or more, or remove it for no limit"),
                );
            }
            out.push(Rollout {
                name: d.name.value().clone(),
                max_parallel: d.max_parallel.as_ref().map(|m| *m.value()),
                max_failures: d.max_failures.unwrap_or(0),
                at,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn templates(&mut self, decls: &[(Arc<SourceFile>, TemplateDecl)]) -> Vec<DeployTemplate> {
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

    fn nodes(
        &mut self,
        decls: &[(Arc<SourceFile>, NodeDecl)],
        hardware: &Hardware,
        rollouts: &[Rollout],
        templates: &[DeployTemplate],
    ) -> Vec<Arc<Node>> {
        let names: BTreeSet<&str> = decls.iter().map(|(_, d)| d.name.value().as_str()).collect();
        let mut by_name: HashMap<&str, Loc> = HashMap::new();
        let mut by_uuid: HashMap<Uuid, Loc> = HashMap::new();
        let mut template_reported: BTreeSet<(String, usize, Name)> = BTreeSet::new();
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
            let node = Node {
                name: name.to_string(),
                uuid,
                driver: Name::new(&hw.name),
                interfaces,
                bmc,
                traits,
                depends_on,
                rollout,
                instance: decl.instance.as_ref().map(|i| i.value().clone()),
                desired,
                deploy_steps,
                at,
            };
            self.instance(file, decl, &node);
            let mut steps_ok = true;
            for step in &node.deploy_steps {
                if let Some(p) = self.check_step(&node, step, None) {
                    self.push(p);
                }
            }
            for template in templates.iter().filter(|t| node.traits.contains(&t.name)) {
                for (i, step) in template.steps.iter().enumerate() {
                    let implementation = node.interfaces.get(step.interface).clone();
                    if let Some(p) = self.check_step(&node, step, Some(template)) {
                        steps_ok = false;
                        // One report per template step and implementation, not per node.
                        if template_reported.insert((template.name.clone(), i, implementation)) {
                            self.push(p);
                        }
                    }
                }
            }
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
                    list_of(&hardware.enabled_types)
                )),
            );
            return None;
        }
        Some(hw)
    }

    fn compose_node(
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

    fn bmc(&mut self, file: &Arc<SourceFile>, decl: &NodeDecl, hw: &HardwareType) -> Option<Bmc> {
        let node = decl.name.value();
        let family = hw.bmc_family(&self.types);
        let Some(bmc) = &decl.bmc else {
            if matches!(family, BmcFamily::Fake | BmcFamily::Any) {
                // A node without a BMC gets an in-process fake one named after it.
                return Some(Bmc {
                    address: BmcAddress {
                        protocol: BmcProtocol::Fake,
                        scheme: "fake".to_string(),
                        host: node.clone(),
                        port: None,
                        path: String::new(),
                        query: None,
                        tls: false,
                        virtual_media: false,
                    },
                    username: None,
                    password: None,
                    verify_tls: true,
                    ca_file: None,
                    cipher_suite: None,
                });
            }
            let example = match family {
                BmcFamily::Ipmi => {
                    "bmc = { address = \"ipmi://10.0.0.7\", username = \"admin\", password_env = \"BMC_PASSWORD\" }"
                }
                _ => {
                    "bmc = { address = \"redfish+https://10.0.0.7/redfish/v1/Systems/1\", username = \"admin\", password_env = \"BMC_PASSWORD\" }"
                }
            };
            self.push(
                Problem::new("rivet::bmc::missing", format!("node `{node}` has no `bmc`"))
                    .at(
                        &loc(file, &decl.driver),
                        format!("a `{}` node needs a BMC", hw.name),
                    )
                    .help(format!("add {example}")),
            );
            return None;
        };
        let b = bmc.value();
        let at = loc(file, &b.address);
        let address = match parse_bmc_address(b.address.value()) {
            Ok(a) => a,
            Err((message, help)) => {
                self.push(
                    Problem::new("rivet::bmc::address", format!("node `{node}`: {message}"))
                        .at(&at, "malformed BMC address")
                        .help(help),
                );
                return None;
            }
        };
        let fits = match family {
            BmcFamily::Ipmi => address.protocol == BmcProtocol::Ipmi,
            BmcFamily::Redfish => address.protocol == BmcProtocol::Redfish,
            BmcFamily::Fake => address.protocol == BmcProtocol::Fake,
            BmcFamily::Any => true,
        };
        if !fits {
            let schemes = match family {
                BmcFamily::Ipmi => "ipmi://host[:port]",
                BmcFamily::Redfish => {
                    "redfish://, redfish+http://, redfish+https:// or redfish-virtualmedia://"
                }
                _ => "fake://name",
            };
            self.push(
                Problem::new(
                    "rivet::bmc::scheme_mismatch",
                    format!(
                        "node `{node}`: a `{}://` address does not fit hardware type `{}`",
                        address.scheme, hw.name
                    ),
                )
                .at(&at, "wrong protocol for this driver")
                .help(format!("`{}` talks to its BMC through {schemes}", hw.name)),
            );
            return None;
        }
        let password = match (&b.password_env, &b.password_file) {
            (Some(env), Some(_)) => {
                self.push(
                    Problem::new(
                        "rivet::bmc::two_passwords",
                        format!("node `{node}` sets both `password_env` and `password_file`"),
                    )
                    .at(&loc(file, env), "one of two password sources")
                    .help("keep one: `password_env` or `password_file`"),
                );
                return None;
            }
            (Some(env), None) => {
                if !is_env_name(env.value()) {
                    // Not quoted: a value that is no variable's name may be
                    // the password itself (the loader has blanked it).
                    self.push(
                        Problem::new(
                            "rivet::bmc::password_env",
                            format!("node `{node}`: `password_env` must name an environment variable"),
                        )
                        .at(&loc(file, env), "not a variable name")
                        .help("name the variable that holds the password, e.g. `RACK1_BMC_PASSWORD` (letters, digits, `_`), never the password itself"),
                    );
                    return None;
                }
                Some(SecretSource::Env(env.value().clone()))
            }
            (None, Some(path)) => Some(SecretSource::File(PathBuf::from(path.value()))),
            (None, None) => None,
        };
        if let Some(cs) = &b.cipher_suite
            && address.protocol != BmcProtocol::Ipmi
        {
            self.push(
                Problem::new(
                    "rivet::bmc::cipher_suite",
                    format!("node `{node}`: `cipher_suite` applies to IPMI only"),
                )
                .at(&loc(file, cs), "not an IPMI BMC")
                .help("remove `cipher_suite`, or use an `ipmi://` address"),
            );
            return None;
        }
        Some(Bmc {
            address,
            username: b.username.clone(),
            password,
            verify_tls: b.verify_tls.unwrap_or(true),
            ca_file: b.ca_file.as_ref().map(PathBuf::from),
            cipher_suite: b.cipher_suite.as_ref().map(|c| *c.value()),
        })
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

    /// Deploy interfaces that boot an image need to be told which one.
    fn instance(&mut self, file: &Arc<SourceFile>, decl: &NodeDecl, node: &Node) {
        if node.desired.provision != ProvisionTarget::Active {
            return;
        }
        let deploy = node.interfaces.get(InterfaceType::Deploy);
        if !matches!(deploy.as_str(), "ramdisk" | "autodetect") {
            return;
        }
        let has_boot_media = node
            .instance
            .as_ref()
            .is_some_and(|i| i.image.is_some() || (i.kernel.is_some() && i.ramdisk.is_some()));
        if !has_boot_media {
            let at = decl
                .desired
                .provision
                .as_ref()
                .map_or_else(|| node.at.clone(), |p| loc(file, p));
            self.push(
                Problem::new(
                    "rivet::node::instance_missing",
                    format!("node `{}` is to be active with the `{deploy}` deploy interface but declares nothing to boot", node.name),
                )
                .at(&at, "needs an instance")
                .help("add `instance = { image = \"http://…/boot.iso\" }` (or `kernel` and `ramdisk`)"),
            );
        }
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

fn step_request(file: &Arc<SourceFile>, decl: &Sp<StepDecl>, source: StepSource) -> StepRequest {
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

fn list_of(names: &[String]) -> String {
    list(names)
}

/// Parse a BMC URL; on error, (message, help).
pub fn parse_bmc_address(text: &str) -> Result<BmcAddress, (String, String)> {
    let schemes_help = "use one of ipmi://host[:port], redfish://host, redfish+http://host[:port], \
                        redfish+https://host[/redfish/v1/Systems/ID], redfish-virtualmedia://host, fake://name";
    let url = url::Url::parse(text).map_err(|e| {
        (
            format!("`{text}` is not a URL: {e}"),
            schemes_help.to_string(),
        )
    })?;
    let scheme = url.scheme().to_string();
    let (protocol, tls, virtual_media) = match scheme.as_str() {
        "ipmi" => (BmcProtocol::Ipmi, false, false),
        "redfish" | "redfish+https" => (BmcProtocol::Redfish, true, false),
        "redfish+http" => (BmcProtocol::Redfish, false, false),
        "redfish-virtualmedia" | "redfish-virtualmedia+https" => (BmcProtocol::Redfish, true, true),
        "redfish-virtualmedia+http" => (BmcProtocol::Redfish, false, true),
        "fake" => (BmcProtocol::Fake, false, false),
        other => {
            return Err((
                format!("`{other}` is not a BMC address scheme"),
                schemes_help.to_string(),
            ));
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err((
            "the BMC address carries credentials".to_string(),
            "remove `user:password@` from the address; set `username` and `password_env` instead"
                .to_string(),
        ));
    }
    let host = url.host_str().unwrap_or("").to_string();
    if host.is_empty() {
        return Err((
            format!("`{text}` names no host"),
            format!("write the BMC's host name or IP address after `{scheme}://`"),
        ));
    }
    let path = url.path().trim_end_matches('/').to_string();
    match protocol {
        BmcProtocol::Ipmi if !path.is_empty() => {
            return Err((
                format!("an IPMI address has no path, but `{text}` has `{path}`"),
                "write `ipmi://host` or `ipmi://host:port`".to_string(),
            ))
        }
        BmcProtocol::Redfish if !path.is_empty() && !path.starts_with("/redfish/v1/") => {
            return Err((
                format!("`{path}` is not a Redfish system path"),
                "write the system's path, e.g. `/redfish/v1/Systems/1`, or leave it out to use the only system".to_string(),
            ))
        }
        _ => {}
    }
    if url.query().is_some() && protocol != BmcProtocol::Fake {
        return Err((
            "only `fake://` addresses take `?options`".to_string(),
            "remove the `?…` part".to_string(),
        ));
    }
    Ok(BmcAddress {
        protocol,
        scheme,
        host,
        port: url.port(),
        path,
        query: url.query().map(str::to_string),
        tls,
        virtual_media,
    })
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
