//! A daemon as one member of a cluster on etcd (`[cluster]`).
//!
//! - **Membership**: one lease per daemon (`lease_ttl`) kept alive every
//!   third of it, and a member key on it naming the daemon's API URL and
//!   conductor group. The lease's local view, `LeaseClock`, is what every
//!   mutating BMC request checks first (`driver::fence`).
//! - **Ownership** (`ownership`): a node belongs to the live member of its
//!   group that rendezvous hashing of its UUID picks; the owner holds an
//!   owner key on its lease, claimed only when absent, whose create
//!   revision is the node's fencing token.
//! - **State that outlives the host** (`mirror`): the journal writer's
//!   batches go to etcd first, in one guarded txn per batch (per 40 nodes),
//!   then to the state file; a claim brings the node's journal and record
//!   from etcd into the state file, so the run resumes there exactly as
//!   after a restart.
//! - **A view of every node** (`watch`): the records of nodes other members
//!   own are copied into this daemon's state file as they change, so its API
//!   lists the whole fleet; per-node calls for a peer's node are forwarded
//!   by the API to the owner's URL.
//!
//! A lost lease (etcd says so, or it could not be renewed before the local
//! deadline) fences at once: the clock expires, every ownership is dropped,
//! and the member joins again with a new lease once etcd answers.

mod mirror;
mod ownership;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::cluster::etcd::{Etcd, EtcdConfig, EtcdError, LeaseId};
use crate::cluster::keys::{Keys, Member};
use crate::driver::fence::LeaseClock;
use crate::model::fleet::ClusterSettings;
use crate::store::Store;

pub use mirror::ClusterPermits;
pub use ownership::Tick;

/// How long a membership stays unchanged after a member joined before
/// nodes move: daemons starting together settle on one placement instead of
/// handing nodes round. A member leaving moves its nodes at once.
const SETTLE: Duration = Duration::from_millis(500);
/// At most this many nodes are handed to another member per tick, so a
/// joining member takes its share over a few ticks, not in one burst.
pub const HANDOVER_BATCH: usize = 50;
/// Retrying etcd while it does not answer.
const RECONNECT: Backoff = Backoff {
    base: Duration::from_millis(200),
    cap: Duration::from_secs(2),
};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach etcd at {endpoints}: {message}")]
    Unreachable { endpoints: String, message: String },
    #[error("etcd: {0}")]
    Etcd(String),
    #[error("{0}")]
    Settings(String),
}

impl From<EtcdError> for ClusterError {
    fn from(e: EtcdError) -> Self {
        match e {
            EtcdError::Unreachable { endpoints, message } => {
                ClusterError::Unreachable { endpoints, message }
            }
            other => ClusterError::Etcd(other.to_string()),
        }
    }
}

/// A node this daemon owns.
#[derive(Debug, Clone)]
struct Owned {
    uuid: String,
    token: i64,
}

/// What the watch and the ticks keep of the cluster.
#[derive(Default)]
struct View {
    /// Live members by host.
    members: BTreeMap<String, Member>,
    /// Owner keys by node UUID: (host, fencing token).
    owners: HashMap<String, (String, i64)>,
    /// The nodes this daemon owns, by name.
    owned: HashMap<String, Owned>,
    /// UUID → name of the owned nodes.
    owned_uuids: HashMap<String, String>,
    /// When a member last joined (placement waits `SETTLE` after it).
    last_join: Option<Instant>,
    /// Since when etcd has not answered, and why.
    etcd_down: Option<(Instant, String)>,
}

/// Counters `/metrics` reports.
#[derive(Default)]
pub struct ClusterCounters {
    pub renewals: AtomicU64,
    pub renewal_failures: AtomicU64,
    pub leases_lost: AtomicU64,
    pub claims: AtomicU64,
    pub takeovers: AtomicU64,
    pub handovers: AtomicU64,
    pub mirrored_batches: AtomicU64,
    pub mirror_refusals: AtomicU64,
}

/// This daemon as a cluster member.
pub struct Cluster {
    etcd: Etcd,
    keys: Keys,
    pub host: String,
    group: String,
    ttl: Duration,
    pub clock: Arc<LeaseClock>,
    lease: AtomicI64,
    /// A lost lease that could not be revoked then (etcd down): revoked
    /// before the next one is taken, so its keys go at once.
    lost_lease: AtomicI64,
    view: Mutex<View>,
    store: Arc<Store>,
    /// Told when this daemon gains nodes or a peer's record changes: the
    /// daemon plans again.
    changed: Notify,
    pub counters: ClusterCounters,
    /// The runtime the journal thread sends its etcd requests on.
    runtime: OnceLock<tokio::runtime::Handle>,
    /// The URL peers forward to, known once the API is bound.
    url: OnceLock<String>,
    /// The endpoints, for messages.
    endpoints: String,
}

/// What `/healthz` says of the cluster.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterStatus {
    pub host: String,
    pub conductor_group: String,
    pub lease_valid: bool,
    pub members: Vec<String>,
    pub owned: usize,
    /// etcd has not answered: what this daemon serves may be stale.
    pub stale: Option<String>,
}

/// The margin kept between the local lease deadline and the lease's end
/// at etcd: a fifth of the TTL, at least 500 ms. Mutating BMC requests may
/// take no longer than what is left of the deadline.
pub fn margin(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_millis(500))
}

impl Cluster {
    /// The member `host` of the cluster `[cluster]` describes; contacts
    /// nothing yet.
    pub fn new(
        settings: &ClusterSettings,
        host: &str,
        fleet_dir: &Path,
        store: Arc<Store>,
    ) -> Result<Arc<Self>, ClusterError> {
        let password = match &settings.password_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                ClusterError::Settings(format!(
                    "`[cluster] password_env` names `{var}`, which is not set; set it to the etcd password"
                ))
            })?),
            None => None,
        };
        let file = |f: &Option<std::path::PathBuf>| f.as_ref().map(|p| fleet_dir.join(p));
        let config = EtcdConfig {
            endpoints: settings.etcd.clone(),
            ca_file: file(&settings.ca_file),
            cert_file: file(&settings.cert_file),
            key_file: file(&settings.key_file),
            username: settings.username.clone(),
            password,
            request_timeout: margin(settings.lease_ttl),
        };
        let etcd = Etcd::new(&config)?;
        Ok(Arc::new(Self {
            etcd,
            keys: Keys::new(&settings.key_prefix),
            host: host.to_string(),
            group: settings.conductor_group.clone(),
            ttl: settings.lease_ttl,
            clock: Arc::new(LeaseClock::new(margin(settings.lease_ttl))),
            lease: AtomicI64::new(0),
            lost_lease: AtomicI64::new(0),
            view: Mutex::new(View::default()),
            store,
            changed: Notify::new(),
            counters: ClusterCounters::default(),
            runtime: OnceLock::new(),
            url: OnceLock::new(),
            endpoints: settings.etcd.join(", "),
        }))
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Join: prove etcd answers (an error names the endpoints), take a
    /// lease, write the member key, read the cluster, then keep the lease
    /// alive and watch the cluster in the background until `shutdown`.
    pub async fn join(
        self: &Arc<Self>,
        url: String,
        shutdown: CancellationToken,
    ) -> Result<(), ClusterError> {
        let _ = self.runtime.set(tokio::runtime::Handle::current());
        let _ = self.url.set(url);
        self.etcd.check().await?;
        self.wait_for_host_name().await?;
        self.enter().await?;
        let keeper = Arc::clone(self);
        let stop = shutdown.clone();
        tokio::spawn(async move { keeper.keep_lease(stop).await });
        watch::start(self, shutdown);
        Ok(())
    }

    /// A member key of this host name may be a previous run of this daemon
    /// (killed less than a TTL ago) or another daemon given the same name:
    /// wait for it to go, and refuse if it outlives a TTL (its lease is
    /// being renewed), since two members of one name would share nodes.
    async fn wait_for_host_name(&self) -> Result<(), ClusterError> {
        let key = self.keys.member(&self.host);
        let deadline = Instant::now() + self.ttl + Duration::from_secs(1);
        let mut said = false;
        while self.etcd.get(&key).await?.is_some() {
            if Instant::now() > deadline {
                return Err(ClusterError::Settings(format!(
                    "another daemon is a live member of this fleet's cluster as host `{}`; give each daemon its own `--host`",
                    self.host
                )));
            }
            if !said {
                tracing::warn!(host = %self.host, "a member of this host name is still there (a previous run?); waiting for its lease to end");
                said = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Take a new lease and write the member key on it.
    async fn enter(&self) -> Result<(), ClusterError> {
        let lost = self.lost_lease.swap(0, Ordering::SeqCst);
        if lost != 0 && self.etcd.revoke(lost).await.is_err() {
            self.lost_lease.store(lost, Ordering::SeqCst);
        }
        let sent = Instant::now();
        let (lease, ttl) = self.etcd.grant(self.ttl).await?;
        let member = Member {
            host: self.host.clone(),
            url: self.url.get().cloned().unwrap_or_default(),
            conductor_group: self.group.clone(),
        };
        let value = serde_json::to_vec(&member).expect("a member serializes");
        self.etcd
            .put(&self.keys.member(&self.host), &value, Some(lease))
            .await?;
        self.lease.store(lease, Ordering::SeqCst);
        self.clock.renewed(sent, ttl);
        self.view().last_join = Some(Instant::now());
        tracing::info!(host = %self.host, lease = %format!("{lease:x}"), ttl = ?ttl, "joined the cluster");
        Ok(())
    }

    /// Keep the lease alive every third of its TTL; on loss, fence and join
    /// again.
    async fn keep_lease(self: Arc<Self>, shutdown: CancellationToken) {
        let every = self.ttl / 3;
        let mut failures = 0u32;
        loop {
            let pause = if failures == 0 {
                every
            } else {
                RECONNECT.ceiling(failures).min(every)
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            let lease: LeaseId = self.lease.load(Ordering::SeqCst);
            if lease == 0 {
                // Lost earlier: join again.
                match self.enter().await {
                    Ok(()) => {
                        failures = 0;
                        self.view().etcd_down = None;
                        self.changed.notify_one();
                    }
                    Err(e) => {
                        failures += 1;
                        self.etcd_failed(&e.to_string());
                    }
                }
                continue;
            }
            let sent = Instant::now();
            match self.etcd.keepalive(lease).await {
                Ok(ttl) => {
                    failures = 0;
                    self.clock.renewed(sent, ttl);
                    self.counters.renewals.fetch_add(1, Ordering::Relaxed);
                    self.view().etcd_down = None;
                }
                Err(EtcdError::LeaseExpired) => {
                    self.lose("etcd says the lease has expired").await;
                    failures = 1;
                }
                Err(e) => {
                    failures += 1;
                    self.counters
                        .renewal_failures
                        .fetch_add(1, Ordering::Relaxed);
                    self.etcd_failed(&e.to_string());
                    if self.clock.remaining().is_none() {
                        self.lose(&format!("the lease could not be renewed in time: {e}"))
                            .await;
                    }
                }
            }
        }
    }

    fn etcd_failed(&self, message: &str) {
        let mut view = self.view();
        if view.etcd_down.is_none() {
            tracing::warn!(endpoints = %self.endpoints, error = %message, "etcd does not answer; retrying");
            view.etcd_down = Some((Instant::now(), message.to_string()));
        }
    }

    /// The lease is gone: stop acting at once, drop every ownership, and
    /// let the keeper join again.
    async fn lose(&self, why: &str) {
        self.clock.expire();
        let old = self.lease.swap(0, Ordering::SeqCst);
        let dropped = {
            let mut view = self.view();
            view.owned_uuids.clear();
            std::mem::take(&mut view.owned).len()
        };
        self.counters.leases_lost.fetch_add(1, Ordering::Relaxed);
        tracing::error!(host = %self.host, reason = %why, dropped, "lost the cluster lease: fenced, no BMC is called until this conductor joins again");
        if old != 0 && self.etcd.revoke(old).await.is_err() {
            // Its keys (this member, the nodes it owned) go at once when
            // etcd answers, instead of at the end of the TTL.
            self.lost_lease.store(old, Ordering::SeqCst);
        }
    }

    /// Leave at shutdown: the lease is revoked, so peers take the nodes at
    /// once.
    pub async fn leave(&self) {
        self.clock.expire();
        let lease = self.lease.swap(0, Ordering::SeqCst);
        if lease != 0 {
            let _ = self.etcd.revoke(lease).await;
        }
    }

    /// Told when this daemon gains nodes or a peer's record changes.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Whether this daemon owns `name` now.
    pub fn owns(&self, name: &str) -> bool {
        self.view().owned.contains_key(name)
    }

    /// The names of the nodes this daemon owns.
    pub fn owned(&self) -> std::collections::BTreeSet<String> {
        self.view().owned.keys().cloned().collect()
    }

    /// The live member owning the node `uuid`, if one does.
    pub fn owner(&self, uuid: &str) -> Option<Member> {
        let view = self.view();
        let (host, _) = view.owners.get(uuid)?;
        view.members.get(host).cloned()
    }

    /// The live members, by host.
    pub fn members(&self) -> Vec<Member> {
        self.view().members.values().cloned().collect()
    }

    /// etcd requests sent so far, by kind.
    pub fn requests(&self) -> BTreeMap<&'static str, u64> {
        self.etcd.requests()
    }

    pub fn status(&self) -> ClusterStatus {
        let view = self.view();
        let lease_valid = self.clock.remaining().is_some();
        let stale = view
            .etcd_down
            .as_ref()
            .map(|(since, why)| {
                format!(
                    "etcd has not answered for {} ({why}): node data may be stale and nothing is converged",
                    humantime::format_duration(Duration::from_secs(since.elapsed().as_secs()))
                )
            })
            .or_else(|| {
                (!lease_valid).then(|| {
                    "this conductor holds no valid lease: it converges nothing until it joins again"
                        .to_string()
                })
            });
        ClusterStatus {
            host: self.host.clone(),
            conductor_group: self.group.clone(),
            lease_valid,
            members: view.members.keys().cloned().collect(),
            owned: view.owned.len(),
            stale,
        }
    }

    /// Run `fut` on the runtime from a thread outside it (the journal's).
    fn block_on<F: std::future::Future>(&self, fut: F) -> Option<F::Output> {
        self.runtime.get().map(|rt| rt.block_on(fut))
    }
}
