//! The cluster as this daemon sees it: members, owners and the records of
//! the nodes peers own, each listed once and then followed by a watch from
//! the revision after the listing. A watch that breaks (etcd restarted, a
//! compaction) lists again and watches from there.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::mirror::RemoteRecord;
use super::{Cluster, RECONNECT};
use crate::cluster::etcd::{Kv, WatchEvent};
use crate::cluster::keys::{Key, Member};
use crate::store::Write;

/// Changes a watch brings within this window are applied together: peers'
/// records are copied into the state file in one commit.
const IMPORT_EVERY: Duration = Duration::from_millis(100);

/// Start following the three prefixes.
pub(super) fn start(cluster: &Arc<Cluster>, shutdown: CancellationToken) {
    for prefix in [
        cluster.keys.members(),
        cluster.keys.owners(),
        cluster.keys.records(),
    ] {
        let cluster = Arc::clone(cluster);
        let stop = shutdown.clone();
        tokio::spawn(async move { follow(cluster, prefix, stop).await });
    }
}

/// List `prefix`, then watch it, for as long as the daemon runs.
async fn follow(cluster: Arc<Cluster>, prefix: String, shutdown: CancellationToken) {
    let mut failures = 0u32;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let listed = tokio::select! {
            () = shutdown.cancelled() => return,
            listed = cluster.etcd.range_prefix(&prefix) => listed,
        };
        let revision = match listed {
            Ok((kvs, revision)) => {
                failures = 0;
                cluster.listed(&prefix, kvs).await;
                revision
            }
            Err(e) => {
                cluster.etcd_failed(&e.to_string());
                failures += 1;
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RECONNECT.ceiling(failures)) => {}
                }
                continue;
            }
        };
        let mut stream = std::pin::pin!(cluster.etcd.watch_prefix(&prefix, revision + 1));
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                next = stream.next() => next,
            };
            let mut events = match next {
                Some(Ok((_, events))) => events,
                Some(Err(e)) => {
                    tracing::debug!(prefix = %prefix, error = %e, "watch ended; listing again");
                    break;
                }
                None => break,
            };
            // Gather what else comes within the window: one commit and
            // one re-plan for many changes, however many txns made them.
            let window = tokio::time::sleep(IMPORT_EVERY);
            let mut window = std::pin::pin!(window);
            let mut ended = false;
            loop {
                tokio::select! {
                    () = &mut window => break,
                    more = stream.next() => match more {
                        Some(Ok((_, more))) => events.extend(more),
                        _ => {
                            ended = true;
                            break;
                        }
                    },
                }
            }
            cluster.watched(events).await;
            if ended {
                break;
            }
        }
    }
}

impl Cluster {
    /// A fresh listing of `prefix` replaces what was known under it.
    async fn listed(&self, prefix: &str, kvs: Vec<Kv>) {
        let mut imports = Vec::new();
        {
            let mut view = self.view();
            if prefix == self.keys.members() {
                view.members.clear();
            } else if prefix == self.keys.owners() {
                view.owners.clear();
            }
            for kv in kvs {
                self.apply_put(&mut view, &kv, &mut imports);
            }
        }
        self.import(imports).await;
        self.changed.notify_one();
    }

    async fn watched(&self, events: Vec<WatchEvent>) {
        let mut imports = Vec::new();
        let mut lost_mine = false;
        {
            let mut view = self.view();
            for event in events {
                match event {
                    WatchEvent::Put(kv) => self.apply_put(&mut view, &kv, &mut imports),
                    WatchEvent::Delete(kv) => match self.keys.parse(&kv.key) {
                        Some(Key::Member(host)) => {
                            view.members.remove(host);
                        }
                        Some(Key::Owner(uuid)) => {
                            view.owners.remove(uuid);
                            // Our own key gone (the lease expired at etcd):
                            // the node is no longer ours.
                            if let Some(name) = view.owned_uuids.remove(uuid) {
                                view.owned.remove(&name);
                                lost_mine = true;
                                tracing::warn!(node = %name, "this conductor's owner key is gone");
                            }
                        }
                        _ => {}
                    },
                }
            }
        }
        if lost_mine {
            tracing::error!(host = %self.host, "owner keys of this conductor were deleted at etcd");
        }
        self.import(imports).await;
        self.changed.notify_one();
    }

    fn apply_put(&self, view: &mut super::View, kv: &Kv, imports: &mut Vec<Write>) {
        match self.keys.parse(&kv.key) {
            Some(Key::Member(host)) => {
                if let Ok(member) = serde_json::from_slice::<Member>(&kv.value) {
                    if !view.members.contains_key(host) {
                        view.last_join = Some(std::time::Instant::now());
                    }
                    view.members.insert(host.to_string(), member);
                }
            }
            Some(Key::Owner(uuid)) => {
                let host = String::from_utf8_lossy(&kv.value).into_owned();
                view.owners
                    .insert(uuid.to_string(), (host, kv.create_revision));
            }
            Some(Key::Record(uuid)) => {
                // Ours are written here first; an echo could be older.
                if view.owned_uuids.contains_key(uuid) {
                    return;
                }
                if let Ok(remote) = serde_json::from_slice::<RemoteRecord>(&kv.value)
                    && remote.record.uuid == uuid
                {
                    imports.push(Write::Node(remote.name, remote.record));
                }
            }
            _ => {}
        }
    }

    /// Copy peers' records into the state file (the API and the planner
    /// read them there), one commit per batch.
    async fn import(&self, imports: Vec<Write>) {
        if imports.is_empty() {
            return;
        }
        let store = Arc::clone(&self.store);
        match tokio::task::spawn_blocking(move || store.apply_copies(&imports)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot copy peers' records"),
            Err(e) => tracing::warn!(error = %e, "copying peers' records stopped"),
        }
    }
}
