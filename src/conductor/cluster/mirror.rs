//! The journal writer's batches in etcd, and the permits runners act under.
//!
//! A batch's journals and records go to etcd in one txn per 40 nodes (etcd
//! allows 128 operations a txn), each guarded by the create revision of the
//! node's owner key being this daemon's token. A txn that fails is split:
//! the owner keys are read, the nodes whose token no longer holds are
//! dropped (and refused to their runners, which stop with the journal where
//! it was), and the rest are written again.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::{Cluster, Owned};
use crate::cluster::etcd::{Cmp, Compare, Op, Txn};
use crate::driver::fence::{Fenced, Permit, Permits};
use crate::model::node::Node;
use crate::reconcile::journal::Mirror;
use crate::store::Write;
use crate::store::records::{JournalRecord, NodeRecord};

/// Nodes per txn: one compare and up to two operations each.
const NODES_PER_TXN: usize = 40;

/// A record as etcd keeps it: with the node's name, which the state files
/// key it by.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RemoteRecord {
    pub name: String,
    pub record: NodeRecord,
}

/// What a batch changes of one node.
#[derive(Default)]
struct NodeChange<'a> {
    record: Option<&'a NodeRecord>,
    /// Some(None): the journal is cleared.
    journal: Option<Option<&'a JournalRecord>>,
}

/// The cluster as the journal's mirror.
pub(super) struct ClusterMirror(pub Arc<Cluster>);

impl Mirror for ClusterMirror {
    fn mirror(&self, writes: &[&Write]) -> Result<HashSet<String>, String> {
        let cluster = &self.0;
        let mut changes: BTreeMap<&str, NodeChange> = BTreeMap::new();
        for write in writes {
            match write {
                Write::Node(name, record) => changes.entry(name).or_default().record = Some(record),
                Write::Journal(name, journal) => {
                    changes.entry(name).or_default().journal = Some(Some(journal))
                }
                Write::ClearJournal(name) => changes.entry(name).or_default().journal = Some(None),
                _ => {}
            }
        }
        let mut refused = HashSet::new();
        if changes.is_empty() {
            return Ok(refused);
        }
        if cluster.clock.remaining().is_none() {
            return Err("this conductor holds no valid lease".to_string());
        }
        let mut guarded: Vec<(&str, Owned, NodeChange)> = Vec::with_capacity(changes.len());
        {
            let view = cluster.view();
            for (name, change) in changes {
                match view.owned.get(name) {
                    Some(owned) => guarded.push((name, owned.clone(), change)),
                    None => {
                        refused.insert(name.to_string());
                    }
                }
            }
        }
        for chunk in guarded.chunks(NODES_PER_TXN) {
            let Chunk { lost, unwritten } = cluster
                .block_on(write_chunk(cluster, chunk))
                .ok_or_else(|| "the cluster is not joined yet".to_string())??;
            refused.extend(unwritten);
            if !lost.is_empty() {
                cluster
                    .counters
                    .mirror_refusals
                    .fetch_add(lost.len() as u64, Ordering::Relaxed);
                let mut view = cluster.view();
                for name in &lost {
                    if let Some(owned) = view.owned.remove(name) {
                        view.owned_uuids.remove(&owned.uuid);
                    }
                    tracing::warn!(node = %name, "ownership lost: another conductor owns the node now");
                }
            }
            refused.extend(lost);
        }
        cluster
            .counters
            .mirrored_batches
            .fetch_add(1, Ordering::Relaxed);
        Ok(refused)
    }
}

/// What of a chunk was not written.
struct Chunk {
    /// Nodes whose token no longer holds: no longer this daemon's.
    lost: HashSet<String>,
    /// Nodes still owned whose writes were not made either (ownership kept
    /// moving under the chunk): refused this time, owned still.
    unwritten: HashSet<String>,
}

/// Write one chunk; the nodes whose token no longer holds are left out and
/// the rest written.
async fn write_chunk(
    cluster: &Cluster,
    chunk: &[(&str, Owned, NodeChange<'_>)],
) -> Result<Chunk, String> {
    let mut lost = HashSet::new();
    let done = |lost| Chunk {
        lost,
        unwritten: HashSet::new(),
    };
    // The second try leaves out what the first found lost; a third would
    // mean ownership moving under us again: refuse the rest.
    for _ in 0..2 {
        let live: Vec<&(&str, Owned, NodeChange)> = chunk
            .iter()
            .filter(|(n, _, _)| !lost.contains(*n))
            .collect();
        if live.is_empty() {
            return Ok(done(lost));
        }
        let mut txn = Txn {
            compare: Vec::with_capacity(live.len()),
            success: Vec::with_capacity(live.len() * 2),
            failure: Vec::with_capacity(live.len()),
        };
        for (name, owned, change) in &live {
            let owner = cluster.keys.owner(&owned.uuid);
            txn.compare.push(Compare::CreateRevision(
                owner.clone(),
                Cmp::Equal,
                owned.token,
            ));
            txn.failure.push(Op::Get { key: owner });
            if let Some(record) = change.record {
                let mut record = record.clone();
                record.conductor = Some(cluster.host.clone());
                let value = serde_json::to_vec(&RemoteRecord {
                    name: name.to_string(),
                    record,
                })
                .expect("a record serializes");
                txn.success.push(Op::Put {
                    key: cluster.keys.record(&owned.uuid),
                    value,
                    lease: None,
                });
            }
            match change.journal {
                Some(Some(journal)) => txn.success.push(Op::Put {
                    key: cluster.keys.journal(&owned.uuid),
                    value: serde_json::to_vec(journal).expect("a journal serializes"),
                    lease: None,
                }),
                Some(None) => txn.success.push(Op::Delete {
                    key: cluster.keys.journal(&owned.uuid),
                }),
                None => {}
            }
        }
        let answer = cluster.etcd.txn(txn).await.map_err(|e| e.to_string())?;
        if answer.succeeded {
            return Ok(done(lost));
        }
        // Which tokens failed: the failure branch read every owner key.
        for ((name, owned, _), found) in live.iter().zip(answer.gets.iter()) {
            let holds = found
                .as_ref()
                .is_some_and(|kv| kv.create_revision == owned.token);
            if !holds {
                lost.insert(name.to_string());
            }
        }
    }
    let unwritten = chunk
        .iter()
        .map(|(n, _, _)| n.to_string())
        .filter(|n| !lost.contains(n))
        .collect();
    Ok(Chunk { lost, unwritten })
}

/// Permits from the cluster: only for an owned node, and only while the
/// lease clock is valid.
pub struct ClusterPermits(pub(super) Arc<Cluster>);

impl Permits for ClusterPermits {
    fn permit(&self, node: &Node) -> Result<Permit, Fenced> {
        let cluster = &self.0;
        if cluster.clock.remaining().is_none() {
            return Err(Fenced(
                "this conductor holds no valid cluster lease; it calls no BMC until it joins again"
                    .to_string(),
            ));
        }
        let view = cluster.view();
        match view.owned.get(&node.name) {
            Some(owned) => Ok(Permit {
                host: Arc::from(cluster.host.as_str()),
                token: owned.token,
                clock: Some(Arc::clone(&cluster.clock)),
            }),
            None => Err(Fenced(match view.owners.get(&node.uuid.to_string()) {
                Some((host, _)) => format!("`{}` is owned by conductor `{host}`", node.name),
                None => format!("`{}` is owned by no conductor now", node.name),
            })),
        }
    }
}

impl Cluster {
    /// The journal's mirror.
    pub fn mirror(self: &Arc<Self>) -> Arc<dyn Mirror> {
        Arc::new(ClusterMirror(Arc::clone(self)))
    }

    /// The permits runners, sweeps and passthru calls act under.
    pub fn permits(self: &Arc<Self>) -> Arc<dyn Permits> {
        Arc::new(ClusterPermits(Arc::clone(self)))
    }
}
