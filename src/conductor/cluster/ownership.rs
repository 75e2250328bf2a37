//! Claiming the nodes placed on this daemon, and handing over the ones a
//! new member should have, between their runs only.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::mirror::RemoteRecord;
use super::{Cluster, HANDOVER_BATCH, Owned, SETTLE};
use crate::cluster::etcd::{Cmp, Compare, Op, Txn};
use crate::cluster::placement::place;
use crate::model::fleet::Fleet;
use crate::model::node::Node;
use crate::reconcile::now;
use crate::store::Write;
use crate::store::records::{Event, JournalRecord, NodeRecord, Outcome};

/// Claims in flight at once.
const CLAIMS_IN_FLIGHT: usize = 32;

/// What one ownership tick did.
#[derive(Default)]
pub struct Tick {
    /// The claimed nodes' journals and records from etcd (with a history
    /// note), to commit through the journal before they run.
    pub writes: Vec<Write>,
    pub claimed: Vec<String>,
    pub released: Vec<String>,
}

/// A claim that succeeded.
struct Claimed {
    name: String,
    token: i64,
    journal: Option<JournalRecord>,
    record: Option<NodeRecord>,
}

impl Cluster {
    /// Place every node of `fleet`: claim the ones that are this daemon's
    /// and have no owner, hand over (at most `HANDOVER_BATCH`) the ones
    /// that are now another member's and are not `busy` (in a run), and
    /// let go of the owned nodes that left the declarations.
    pub async fn tick(
        self: &Arc<Self>,
        fleet: &Fleet,
        busy: &(dyn Fn(&str) -> bool + Sync),
    ) -> Tick {
        let mut tick = Tick::default();
        if self.clock.remaining().is_none() || self.lease.load(Ordering::SeqCst) == 0 {
            return tick;
        }
        let mut claims: Vec<Arc<Node>> = Vec::new();
        let mut handovers: Vec<(String, Owned)> = Vec::new();
        {
            let view = self.view();
            if view.last_join.is_some_and(|at| at.elapsed() < SETTLE) {
                return tick;
            }
            let mut groups: HashMap<&str, Vec<&str>> = HashMap::new();
            for member in view.members.values() {
                groups
                    .entry(member.conductor_group.as_str())
                    .or_default()
                    .push(member.host.as_str());
            }
            for node in &fleet.nodes {
                let uuid = node.uuid.to_string();
                let live = groups
                    .get(node.tenancy.conductor_group.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                let placed = place(&uuid, live.iter().copied());
                let mine = view.owned.get(&node.name);
                match (placed == Some(self.host.as_str()), mine) {
                    (true, None) if !view.owners.contains_key(&uuid) => {
                        claims.push(Arc::clone(node))
                    }
                    (false, Some(owned))
                        if placed.is_some()
                            && handovers.len() < HANDOVER_BATCH
                            && !busy(&node.name) =>
                    {
                        handovers.push((node.name.clone(), owned.clone()))
                    }
                    _ => {}
                }
            }
            // Owned nodes gone from the declarations, once nothing runs
            // over them (a prune or the unmanaged mark comes first).
            for (name, owned) in &view.owned {
                if fleet.node(name).is_none() && !busy(name) && handovers.len() < HANDOVER_BATCH {
                    handovers.push((name.clone(), owned.clone()));
                }
            }
        }
        for (name, owned) in handovers {
            if self.release(&name, &owned).await {
                tick.released.push(name);
            }
        }
        let mut set = tokio::task::JoinSet::new();
        let mut pending = claims.into_iter();
        loop {
            while set.len() < CLAIMS_IN_FLIGHT {
                let Some(node) = pending.next() else { break };
                let me = Arc::clone(self);
                set.spawn(async move { me.claim(&node).await.map(|c| (node, c)) });
            }
            let Some(done) = set.join_next().await else {
                break;
            };
            if let Ok(Some((node, claimed))) = done {
                self.claimed(&node, claimed, &mut tick);
            }
        }
        if !tick.claimed.is_empty() || !tick.released.is_empty() {
            tracing::info!(
                claimed = tick.claimed.len(),
                released = tick.released.len(),
                owned = self.view().owned.len(),
                "ownership changed"
            );
        }
        tick
    }

    /// Claim `node` if it has no owner: the owner key is created on this
    /// daemon's lease in the same txn that reads its journal and record.
    async fn claim(&self, node: &Node) -> Option<Claimed> {
        let uuid = node.uuid.to_string();
        let lease = self.lease.load(Ordering::SeqCst);
        if lease == 0 {
            return None;
        }
        let owner = self.keys.owner(&uuid);
        let txn = Txn {
            compare: vec![Compare::CreateRevision(owner.clone(), Cmp::Equal, 0)],
            success: vec![
                Op::Put {
                    key: owner,
                    value: self.host.as_bytes().to_vec(),
                    lease: Some(lease),
                },
                Op::Get {
                    key: self.keys.journal(&uuid),
                },
                Op::Get {
                    key: self.keys.record(&uuid),
                },
            ],
            failure: Vec::new(),
        };
        let answer = match self.etcd.txn(txn).await {
            Ok(answer) if answer.succeeded => answer,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(node = %node.name, error = %e, "could not claim the node");
                return None;
            }
        };
        // A txn with one put creates the key at the txn's revision.
        let token = answer.revision;
        let journal = answer
            .gets
            .first()
            .cloned()
            .flatten()
            .and_then(|kv| serde_json::from_slice::<JournalRecord>(&kv.value).ok());
        let record = answer
            .gets
            .get(1)
            .cloned()
            .flatten()
            .and_then(|kv| serde_json::from_slice::<RemoteRecord>(&kv.value).ok())
            .map(|r| r.record);
        Some(Claimed {
            name: node.name.clone(),
            token,
            journal,
            record,
        })
    }

    /// Take a claimed node in: owned from now on, its journal and record
    /// (from etcd, not this host's older copy) to be committed.
    fn claimed(&self, node: &Node, claimed: Claimed, tick: &mut Tick) {
        let uuid = node.uuid.to_string();
        let Claimed {
            name,
            token,
            journal,
            record,
        } = claimed;
        let previous = record.as_ref().and_then(|r| r.conductor.clone());
        let mut record =
            record.unwrap_or_else(|| NodeRecord::first_seen(uuid.clone(), &node.driver, now()));
        record.conductor = Some(self.host.clone());
        let taken_over = previous.as_deref().is_some_and(|p| p != self.host) || journal.is_some();
        {
            let mut view = self.view();
            view.owned.insert(
                name.clone(),
                Owned {
                    uuid: uuid.clone(),
                    token,
                },
            );
            view.owned_uuids.insert(uuid.clone(), name.clone());
            view.owners.insert(uuid, (self.host.clone(), token));
        }
        self.counters.claims.fetch_add(1, Ordering::Relaxed);
        let detail = match (&previous, &journal) {
            (Some(p), Some(j)) if *p != self.host => format!(
                "claimed from conductor `{p}` (fencing token {token}); resuming run {} at operation {}",
                j.run_id, j.next
            ),
            (_, Some(j)) => format!(
                "claimed (fencing token {token}); resuming run {} at operation {}",
                j.run_id, j.next
            ),
            (Some(p), None) if *p != self.host => {
                format!("claimed from conductor `{p}` (fencing token {token})")
            }
            _ => format!("claimed (fencing token {token})"),
        };
        if taken_over {
            self.counters.takeovers.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(j) = &journal
            && let Err(e) = self.store.raise_run_id(j.run_id)
        {
            tracing::warn!(node = %name, error = %e, "cannot record the run id taken over");
        }
        tick.writes.push(Write::Node(name.clone(), record));
        tick.writes.push(match journal {
            Some(j) => Write::Journal(name.clone(), j),
            None => Write::ClearJournal(name.clone()),
        });
        let mut event = Event::note(&name, "claim", Outcome::Noted, &detail, now());
        event.protocol = Some("rivet".to_string());
        tick.writes.push(Write::Event(event));
        tick.claimed.push(name);
    }

    /// Hand `name` over: no longer owned here from this moment, then its
    /// owner key deleted if the token still holds.
    async fn release(&self, name: &str, owned: &Owned) -> bool {
        {
            let mut view = self.view();
            view.owned.remove(name);
            view.owned_uuids.remove(&owned.uuid);
        }
        let owner = self.keys.owner(&owned.uuid);
        let txn = Txn {
            compare: vec![Compare::CreateRevision(
                owner.clone(),
                Cmp::Equal,
                owned.token,
            )],
            success: vec![Op::Delete { key: owner }],
            failure: Vec::new(),
        };
        match self.etcd.txn(txn).await {
            Ok(_) => {
                self.counters.handovers.fetch_add(1, Ordering::Relaxed);
                tracing::info!(node = %name, "handed over to the member it is placed on");
                true
            }
            Err(e) => {
                // The key goes with this lease at worst.
                tracing::warn!(node = %name, error = %e, "could not release the node's owner key");
                false
            }
        }
    }
}
