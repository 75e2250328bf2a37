//! What `rivet status` shows of a fleet from its state file: one document
//! per node and, for one node, its recent history. While a daemon holds the
//! state file, the caller asks that daemon's API instead.

use std::path::Path;

use serde_json::{Value, json};

use crate::model::fleet::load;
use crate::store::records::{Event, NodeRecord};
use crate::store::{Snapshot, StoreError, api_address, read_history};

/// How many history events `rivet status NODE` shows.
pub const RECENT_HISTORY: usize = 20;

/// One document per node (sorted by name) and, for one node, its recent
/// history.
pub struct View {
    pub docs: Vec<Value>,
    pub history: Vec<Event>,
}

/// Where a status comes from.
pub enum Source {
    View(View),
    /// A daemon holds the state file; its API is expected at this address
    /// (the one it recorded beside the state file, else `[conductor] http`)
    /// and answers with this fleet identity.
    Locked {
        addr: std::net::SocketAddr,
        identity: String,
    },
    Failed(String),
}

/// Which fleet a daemon serves: a digest of its declaration directory and
/// its state file, both canonical, so that `rivet status DIR` can tell DIR's
/// daemon from another fleet's answering at the address it asked.
pub fn fleet_identity(dir: &Path, state: &Path) -> String {
    use sha2::Digest;
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mut digest = sha2::Sha256::new();
    digest.update(canonical(dir).as_os_str().as_encoded_bytes());
    digest.update([0]);
    digest.update(canonical(state).as_os_str().as_encoded_bytes());
    hex::encode(&digest.finalize()[..16])
}

/// A node's status document: its record, or what an unconverged node is.
pub fn node_json(
    name: &str,
    record: Option<&NodeRecord>,
    declared: bool,
    journal: Option<usize>,
) -> Value {
    match record {
        Some(r) => json!({
            "name": name,
            "uuid": r.uuid,
            "driver": r.driver,
            "declared": declared,
            "unmanaged": r.unmanaged,
            "provision_state": r.provision_state,
            "target_provision_state": r.target_provision_state,
            "power_state": r.power_state,
            "target_power_state": r.target_power_state,
            "boot_device": r.boot_device,
            "boot_mode": r.boot_mode,
            "maintenance": r.maintenance,
            "fault": r.fault,
            "last_error": r.last_error,
            "deploy_step": r.deploy_step,
            "pending_operation": journal,
            "updated_at": r.updated_at,
        }),
        None => json!({
            "name": name,
            "declared": declared,
            "unmanaged": false,
            "provision_state": "enroll",
            "power_state": null,
            "maintenance": false,
            "last_error": null,
            "deploy_step": null,
            "note": "never converged",
        }),
    }
}

/// The status of the fleet in `dir` (or of one node) from its state file.
pub fn local(dir: &Path, node: Option<&str>) -> Source {
    let loaded = load(dir);
    let fleet = &loaded.fleet;
    let state = &fleet.conductor.state;
    let snapshot = match Snapshot::read(state) {
        Ok(s) => s,
        Err(StoreError::Locked { .. }) => {
            return Source::Locked {
                addr: api_address(state).unwrap_or(fleet.conductor.http),
                identity: fleet_identity(dir, state),
            };
        }
        Err(e) => return Source::Failed(e.to_string()),
    };
    let mut names: Vec<String> = fleet.nodes.iter().map(|n| n.name.clone()).collect();
    names.extend(snapshot.nodes.keys().cloned());
    names.sort();
    names.dedup();
    if let Some(name) = node {
        if !names.iter().any(|n| n == name) {
            return Source::Failed(format!(
                "no node `{name}` is declared or recorded in {}",
                dir.display()
            ));
        }
        names = vec![name.to_string()];
    }
    let docs = names
        .iter()
        .map(|n| {
            node_json(
                n,
                snapshot.nodes.get(n),
                fleet.node(n).is_some(),
                snapshot.journals.get(n).map(|j| j.next),
            )
        })
        .collect();
    let history = match node {
        Some(name) => read_history(state, Some(name), RECENT_HISTORY).unwrap_or_default(),
        None => Vec::new(),
    };
    Source::View(View { docs, history })
}
