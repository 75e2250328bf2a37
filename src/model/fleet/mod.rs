//! Building the validated fleet from raw declarations, collecting every
//! problem on the way. One module per concern: `conductor` (`[conductor]`
//! and `[[rollout]]`), `cluster` (`[cluster]`), `host` (the flags of one
//! host over both), `interfaces` (exec-plugin `[[interface]]`s),
//! `hardware` (custom hardware types and `[hardware]`), `nodes` (each
//! `[[node]]`), `instance` (its `instance`), `ports` (its `[[node.ports]]`),
//! `composition` (a node's interfaces), `agent` (the agent's ramdisk and
//! what a deploy through the agent needs), `bmc` (a node's BMC and its address), `steps` (deploy templates, requested steps and the merged
//! steps a deploy runs), `graph` (`depends_on` and its cycles). The last two
//! are also what a plan orders by, so a fleet that validates plans.

mod agent;
mod bmc;
mod cluster;
mod composition;
mod conductor;
pub mod graph;
mod hardware;
mod host;
mod instance;
mod interfaces;
mod nodes;
mod ports;
pub mod steps;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::catalog::{Catalog, InterfaceImpl};
use super::compose::compose;
use super::hardware::{HardwareType, builtin_hardware_types};
use super::interface::InterfaceType;
use super::node::Node;
use crate::config::load::{RawFleet, load_dir};
use crate::config::spanned::Sp;
use crate::diag::{self, Loc, Problem, SourceFile};

pub use bmc::parse_bmc_address;
pub use cluster::{ClusterSettings, DEFAULT_KEY_PREFIX, DEFAULT_LEASE_TTL, MIN_LEASE_TTL};
pub use conductor::{Conductor, Rollout, default_fake_bmc_dir, local_hostname};
pub use hardware::Hardware;
pub use host::HostOverrides;
pub use steps::DeployTemplate;

/// A validated fleet. Nodes with problems are left out; the rest are whole.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub root: PathBuf,
    pub conductor: Conductor,
    /// `[cluster]`: the daemons of this fleet share it through etcd.
    /// `None` without it, when one daemon converges the whole fleet.
    pub cluster: Option<ClusterSettings>,
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
    load_with(dir, &HostOverrides::default())
}

/// Read and validate the fleet in `dir` as this host runs it: `overrides`
/// over the files' per-host settings.
pub fn load_with(dir: &std::path::Path, overrides: &HostOverrides) -> Loaded {
    build_with(load_dir(dir), overrides)
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
    build_with(raw, &HostOverrides::default())
}

/// Validate raw declarations into a fleet, with this host's `overrides`.
pub fn build_with(raw: RawFleet, overrides: &HostOverrides) -> Loaded {
    let mut b = Builder {
        root: raw.root.clone(),
        problems: raw.problems,
        catalog: Catalog::builtin(),
        types: builtin_hardware_types(),
        default_conductor_group: String::new(),
    };
    let (rivet_file, rivet) = match raw.rivet {
        Some((file, decl)) => (Some(file), decl),
        None => (None, Default::default()),
    };
    let mut conductor = b.conductor(rivet_file.as_ref(), &raw.root, &rivet.conductor);
    let mut cluster = b.cluster(rivet_file.as_ref(), &raw.root, rivet.cluster.as_ref());
    b.host_overrides(overrides, &mut conductor, cluster.as_mut());
    if let Some(cluster) = &cluster {
        b.default_conductor_group = cluster.conductor_group.clone();
    }
    for (file, decl) in &raw.interfaces {
        b.exec_interface(file, decl);
    }
    b.custom_types(&raw.hardware_types);
    let hardware = b.hardware(rivet_file.as_ref(), &rivet.hardware);
    let rollouts = b.rollouts(rivet_file.as_ref(), &rivet.rollout);
    let templates = b.templates(&raw.templates);
    let nodes = b.nodes(&raw.nodes, &hardware, &rollouts, &templates);
    let nodes = b.leave_out_cycles(nodes);

    let mut problems = b.problems;
    diag::sort(&mut problems);
    Loaded {
        fleet: Fleet {
            root: raw.root,
            conductor,
            cluster,
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

/// What the checks of every concern share while the fleet is built: the
/// problems found so far, and the catalog and hardware types as declarations
/// extend them.
struct Builder {
    root: PathBuf,
    problems: Vec<Problem>,
    catalog: Catalog,
    types: Vec<HardwareType>,
    /// The conductor group of a node that names none: `[cluster]`'s.
    default_conductor_group: String,
}

impl Builder {
    fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }
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
