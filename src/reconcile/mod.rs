//! Converging hardware toward the plan.
//!
//! The shape follows kube-runtime's controller: `runner::run_node` does one
//! pass over one node (its journaled operations), `scheduler::converge`
//! decides which nodes run when (DAG order, worker pool, rollout limits), and
//! failures become backoff or maintenance by policy, not in each driver.
//!
//! Invariants:
//! - Never two runs over one node at once (the node lock).
//! - Before an operation calls a BMC, it and its index are committed to
//!   redb; its outcome is committed with the next one's start (or the run's
//!   end), and bookkeeping, which calls nothing, with the next BMC call. A
//!   restart resumes at the recorded operation, so a `kill -9` loses
//!   nothing and repeats no completed BMC call.
//! - Every operation is idempotent: the one in flight at a crash runs again.
//! - Every pass logs why it ran.
//! - Every operation runs under the node's permit (`driver::fence`); one
//!   refused, or a BMC call fenced, stops the run with its journal kept,
//!   for the node's owner to resume.

pub mod agent;
pub mod agent_deploy;
pub mod journal;
pub mod locks;
pub mod ops;
pub mod pass;
pub mod power_sync;
pub mod runner;
pub mod scheduler;
pub mod unwind;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::driver::fence::Permits;
use crate::driver::registry::Registry;
use crate::model::fleet::Fleet;
use journal::Journal;
use locks::NodeLocks;

/// What runners share.
pub struct Ctx {
    pub fleet: Arc<Fleet>,
    pub registry: Arc<Registry>,
    pub journal: Journal,
    pub locks: Arc<dyn NodeLocks>,
    /// Retries of one operation on retryable errors.
    pub attempts: u32,
    pub retry: Backoff,
    /// How long a power change may take to show.
    pub power_timeout: Duration,
    /// Whether this conductor may act on a node now, and with which
    /// fencing token: asked before each operation and each power sync.
    pub permits: Arc<dyn Permits>,
    /// The agent channels of deploys that boot an agent ramdisk.
    pub agents: Arc<agent::Agents>,
}

/// Why runners stop early.
#[derive(Clone, Default)]
pub struct Stop {
    /// The process is shutting down: finish (or abort, if abortable) the
    /// current operation and keep the journal, so a restart resumes.
    pub shutdown: CancellationToken,
    /// Per node: its declaration changed, so stop and drop the journal; the
    /// next pass plans it again from its recorded state.
    replan: Arc<std::sync::Mutex<std::collections::HashMap<String, CancellationToken>>>,
}

impl Stop {
    /// Stop signals that end with `shutdown`.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            replan: Default::default(),
        }
    }

    /// The token a runner watches for its node.
    pub fn replan_token(&self, node: &str) -> CancellationToken {
        self.replan
            .lock()
            .expect("replan tokens")
            .entry(node.to_string())
            .or_default()
            .clone()
    }

    /// Ask the run over `node` (running now or not yet started) to stop.
    pub fn replan(&self, node: &str) {
        self.replan_token(node).cancel();
    }
}

/// Progress of a converge, for displays and logs.
#[derive(Debug, Clone)]
pub enum Progress {
    NodeStarted {
        node: String,
        ops: usize,
        resumed_at: Option<usize>,
    },
    OpFinished {
        node: String,
        index: usize,
        total: usize,
        label: String,
        ok: bool,
        duration: Duration,
        error: Option<String>,
    },
    NodeFinished {
        node: String,
        outcome: runner::NodeOutcome,
    },
    NodeSkipped {
        node: String,
        reason: String,
    },
}

/// RFC 3339 now, to the microsecond: history events a few milliseconds
/// apart keep their order and their durations readable.
pub fn now() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}
