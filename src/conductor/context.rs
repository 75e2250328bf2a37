//! The converge context and the retry policy: one place that decides how
//! runners retry, how long power may take, and which drivers they call.

use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::driver::fake::FakeBmcDir;
use crate::driver::fence::Solo;
use crate::driver::registry::Registry;
use crate::model::fleet::Fleet;
use crate::reconcile::Ctx;
use crate::reconcile::agent::Agents;
use crate::reconcile::journal::Journal;
use crate::reconcile::locks::{LocalLocks, NodeLocks};

/// Attempts of one operation on retryable errors (the first try included).
pub const ATTEMPTS: u32 = 3;
/// The pause between two attempts of one operation.
pub const RETRY: Backoff = Backoff {
    base: Duration::from_millis(200),
    cap: Duration::from_secs(5),
};
/// How long a power change may take to show.
pub const POWER_TIMEOUT: Duration = Duration::from_secs(60);

/// The drivers of `fleet`. `read_only` fake BMCs are never created (a
/// refresh reads only); a converge creates them.
pub fn registry(fleet: &Fleet, read_only: bool) -> Registry {
    let bmcs = Arc::new(FakeBmcDir::new(
        fleet.conductor.fake_bmc_dir.clone(),
        read_only,
    ));
    Registry::new(fleet.root.clone(), bmcs)
        .with_ipmi_min_command_interval(fleet.conductor.ipmi_min_command_interval)
}

/// The shared context for converging `fleet` with a fresh lock table and
/// fresh drivers: one `rivet reconcile`.
pub fn context(fleet: Arc<Fleet>, journal: Journal) -> Arc<Ctx> {
    let registry = Arc::new(registry(&fleet, false));
    let agents = Arc::new(Agents::empty(
        Arc::clone(journal.store()),
        fleet.conductor.agent_heartbeat_timeout,
    ));
    with(
        fleet,
        registry,
        journal,
        Arc::new(LocalLocks::default()),
        agents,
    )
}

/// The shared context over drivers and node locks that outlive it (the
/// daemon keeps them across passes and sweeps).
pub fn with(
    fleet: Arc<Fleet>,
    registry: Arc<Registry>,
    journal: Journal,
    locks: Arc<dyn NodeLocks>,
    agents: Arc<Agents>,
) -> Arc<Ctx> {
    let permits = Arc::new(Solo(Arc::from(fleet.conductor.host.as_str())));
    with_permits(fleet, registry, journal, locks, permits, agents)
}

/// As `with`, acting under `permits` (a cluster member's).
pub fn with_permits(
    fleet: Arc<Fleet>,
    registry: Arc<Registry>,
    journal: Journal,
    locks: Arc<dyn NodeLocks>,
    permits: Arc<dyn crate::driver::fence::Permits>,
    agents: Arc<Agents>,
) -> Arc<Ctx> {
    Arc::new(Ctx {
        agents,
        registry,
        fleet,
        journal,
        locks,
        attempts: ATTEMPTS,
        retry: RETRY,
        power_timeout: POWER_TIMEOUT,
        permits,
    })
}
