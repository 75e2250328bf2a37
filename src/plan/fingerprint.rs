//! A fingerprint of everything a plan was made from: every declaration file
//! and the observed state of every node. A saved plan is applied only while
//! its fingerprint still matches, and a mismatch says what changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Observed;
use crate::model::fleet::Fleet;

/// `sha256:<hex>` of some bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Digest over everything below.
    pub digest: String,
    /// Per declaration file (path relative to the fleet directory).
    pub files: BTreeMap<String, String>,
    /// Per node: its observed state.
    pub observed: BTreeMap<String, String>,
}

impl Fingerprint {
    pub fn of(fleet: &Fleet, observed: &BTreeMap<String, Observed>) -> Self {
        let files: BTreeMap<String, String> = fleet
            .files
            .iter()
            .map(|f| (f.name.clone(), digest(f.text.as_bytes())))
            .collect();
        let observed: BTreeMap<String, String> = fleet
            .nodes
            .iter()
            .map(|n| {
                let seen = observed
                    .get(&n.name)
                    .cloned()
                    .unwrap_or_else(Observed::unknown);
                let text = serde_json::to_string(&seen).expect("observed state serializes");
                (n.name.clone(), digest(text.as_bytes()))
            })
            .collect();
        let mut all = Sha256::new();
        for (name, d) in files.iter().chain(observed.iter()) {
            all.update(name.as_bytes());
            all.update([0]);
            all.update(d.as_bytes());
            all.update([0]);
        }
        Self {
            digest: format!("sha256:{}", hex::encode(all.finalize())),
            files,
            observed,
        }
    }

    /// What differs between a saved fingerprint (`self`) and the current one,
    /// one line each; empty when they match.
    pub fn changes_since(&self, now: &Fingerprint) -> Vec<String> {
        let mut out = Vec::new();
        diff("declaration file", &self.files, &now.files, &mut out);
        diff(
            "observed state of node",
            &self.observed,
            &now.observed,
            &mut out,
        );
        out
    }
}

fn diff(
    what: &str,
    then: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
    out: &mut Vec<String>,
) {
    for (name, d) in then {
        match now.get(name) {
            None => out.push(format!("{what} `{name}` is gone")),
            Some(n) if n != d => out.push(format!("{what} `{name}` changed")),
            _ => {}
        }
    }
    for name in now.keys().filter(|n| !then.contains_key(*n)) {
        out.push(format!("{what} `{name}` is new"));
    }
}
