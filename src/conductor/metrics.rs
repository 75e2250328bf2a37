//! Counters and histograms for `GET /metrics`, rendered in Prometheus' text
//! format. Converge operations and BMC call latencies are counted from the
//! history events the store commits (so they cover every writer), passthru
//! calls by the API, pass durations by the daemon; node gauges are read
//! from the node index at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::store::records::Outcome;
use crate::store::{Store, Write};
use crate::vocab::ProvisionState;

use super::passthru::Scope;

/// Upper bounds of latency buckets, in seconds.
const BMC_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const PASS_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, not cumulative; rendering accumulates.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            self.counts[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug)]
struct Counters {
    /// Converge operations finished, by outcome.
    operations: BTreeMap<&'static str, u64>,
    /// Operations that failed because rivet itself panicked.
    internal_errors: u64,
    /// BMC (or plugin) call latency per protocol.
    bmc: BTreeMap<String, Histogram>,
    passthru: BTreeMap<(Scope, u16), u64>,
    passes: Histogram,
}

/// Everything `/metrics` counts.
#[derive(Debug)]
pub struct Metrics {
    counters: Mutex<Counters>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            counters: Mutex::new(Counters {
                operations: [("succeeded", 0), ("failed", 0)].into(),
                internal_errors: 0,
                bmc: BTreeMap::new(),
                passthru: BTreeMap::new(),
                passes: Histogram::new(PASS_BUCKETS),
            }),
        }
    }
}

/// What the scrape reads from elsewhere at that moment.
pub struct Gauges {
    pub nodes_by_state: BTreeMap<ProvisionState, u64>,
    pub maintenance: u64,
    pub watcher_alive: bool,
    pub last_pass_age: Option<Duration>,
    pub declaration_problems: usize,
}

impl Metrics {
    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count the history events of every batch `store` commits from now on.
    pub fn watch(self: &std::sync::Arc<Self>, store: &Store) {
        let metrics = std::sync::Arc::clone(self);
        store.observe(move |writes| metrics.record_events(writes));
    }

    fn record_events(&self, writes: &[Write]) {
        let mut c = self.counters();
        for w in writes {
            let Write::Event(e) = w else { continue };
            if e.op_index.is_some() {
                match e.outcome {
                    Outcome::Succeeded => *c.operations.entry("succeeded").or_default() += 1,
                    Outcome::Failed => {
                        *c.operations.entry("failed").or_default() += 1;
                        if e.detail.as_deref().is_some_and(|d| {
                            d.starts_with(crate::reconcile::unwind::INTERNAL_ERROR)
                        }) {
                            c.internal_errors += 1;
                        }
                    }
                    _ => {}
                }
            }
            if let (Some(ms), Some(protocol)) = (e.duration_ms, e.protocol.as_deref())
                && protocol != "rivet"
            {
                c.bmc
                    .entry(protocol.to_string())
                    .or_insert_with(|| Histogram::new(BMC_BUCKETS))
                    .observe(ms as f64 / 1000.0);
            }
        }
    }

    pub fn passthru_call(&self, scope: Scope, status: u16) {
        *self.counters().passthru.entry((scope, status)).or_default() += 1;
    }

    pub fn pass_finished(&self, took: Duration) {
        self.counters().passes.observe(took.as_secs_f64());
    }

    /// The text format, version 0.0.4.
    pub fn render(&self, gauges: &Gauges) -> String {
        let c = self.counters();
        let mut out = String::with_capacity(4096);
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut out,
            "rivet_nodes",
            "gauge",
            "Nodes by provision state.",
        );
        for (state, n) in &gauges.nodes_by_state {
            let _ = writeln!(out, "rivet_nodes{{provision_state=\"{state}\"}} {n}");
        }
        head(
            &mut out,
            "rivet_nodes_in_maintenance",
            "gauge",
            "Nodes in maintenance.",
        );
        let _ = writeln!(out, "rivet_nodes_in_maintenance {}", gauges.maintenance);
        head(
            &mut out,
            "rivet_operations_total",
            "counter",
            "Converge operations (steps, power and boot actions) finished, by outcome.",
        );
        for (outcome, n) in &c.operations {
            let _ = writeln!(out, "rivet_operations_total{{outcome=\"{outcome}\"}} {n}");
        }
        head(
            &mut out,
            "rivet_internal_errors_total",
            "counter",
            "Operations failed by a bug in rivet (a panic), not by a BMC.",
        );
        let _ = writeln!(out, "rivet_internal_errors_total {}", c.internal_errors);
        head(
            &mut out,
            "rivet_bmc_call_duration_seconds",
            "histogram",
            "Duration of operations that call a BMC or plugin, by protocol.",
        );
        for (protocol, h) in &c.bmc {
            h.render(
                &mut out,
                "rivet_bmc_call_duration_seconds",
                &format!("protocol=\"{protocol}\""),
            );
        }
        head(
            &mut out,
            "rivet_passthru_calls_total",
            "counter",
            "Vendor passthru requests, by scope and HTTP status code.",
        );
        for ((scope, code), n) in &c.passthru {
            let _ = writeln!(
                out,
                "rivet_passthru_calls_total{{scope=\"{}\",code=\"{code}\"}} {n}",
                scope.as_str()
            );
        }
        head(
            &mut out,
            "rivet_reconcile_pass_duration_seconds",
            "histogram",
            "Duration of converge passes.",
        );
        c.passes
            .render(&mut out, "rivet_reconcile_pass_duration_seconds", "");
        head(
            &mut out,
            "rivet_last_pass_age_seconds",
            "gauge",
            "Seconds since the last converge pass finished; absent before the first.",
        );
        if let Some(age) = gauges.last_pass_age {
            let _ = writeln!(out, "rivet_last_pass_age_seconds {}", age.as_secs_f64());
        }
        head(
            &mut out,
            "rivet_watcher_alive",
            "gauge",
            "1 while the declaration files are watched.",
        );
        let _ = writeln!(
            out,
            "rivet_watcher_alive {}",
            u8::from(gauges.watcher_alive)
        );
        head(
            &mut out,
            "rivet_declaration_problems",
            "gauge",
            "Problems of the last reload that failed (the last good declarations stay in force).",
        );
        let _ = writeln!(
            out,
            "rivet_declaration_problems {}",
            gauges.declaration_problems
        );
        out
    }
}

/// Every provision state, so each series exists from the first scrape.
pub const ALL_STATES: [ProvisionState; 11] = [
    ProvisionState::Enroll,
    ProvisionState::Verifying,
    ProvisionState::Manageable,
    ProvisionState::Cleaning,
    ProvisionState::Available,
    ProvisionState::Deploying,
    ProvisionState::WaitCallBack,
    ProvisionState::Active,
    ProvisionState::DeployFailed,
    ProvisionState::Deleting,
    ProvisionState::Error,
];

/// The cluster's gauges and counters: what this member owns, its lease,
/// claims and takeovers, calls fenced, and its etcd requests by kind.
pub fn render_cluster(cluster: &super::cluster::Cluster) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let status = cluster.status();
    let c = &cluster.counters;
    let (gauge, counter) = ("gauge", "counter");
    let metrics: [(&str, &str, &str, u64); 12] = [
        (
            "rivet_cluster_owned_nodes",
            gauge,
            "Nodes this conductor owns.",
            status.owned as u64,
        ),
        (
            "rivet_cluster_members",
            gauge,
            "Live members of the cluster.",
            status.members.len() as u64,
        ),
        (
            "rivet_cluster_lease_valid",
            gauge,
            "1 while this conductor's lease is valid by its local deadline.",
            u64::from(status.lease_valid),
        ),
        (
            "rivet_cluster_lease_renewals_total",
            counter,
            "Lease keepalives etcd answered.",
            c.renewals.load(Relaxed),
        ),
        (
            "rivet_cluster_lease_renewal_failures_total",
            counter,
            "Lease keepalives that failed.",
            c.renewal_failures.load(Relaxed),
        ),
        (
            "rivet_cluster_leases_lost_total",
            counter,
            "Times this conductor lost its lease and fenced itself.",
            c.leases_lost.load(Relaxed),
        ),
        (
            "rivet_cluster_claims_total",
            counter,
            "Nodes claimed.",
            c.claims.load(Relaxed),
        ),
        (
            "rivet_cluster_takeovers_total",
            counter,
            "Nodes claimed from another conductor or with a run to resume.",
            c.takeovers.load(Relaxed),
        ),
        (
            "rivet_cluster_handovers_total",
            counter,
            "Nodes handed to the member they are placed on.",
            c.handovers.load(Relaxed),
        ),
        (
            "rivet_cluster_fenced_calls_total",
            counter,
            "Mutating BMC calls refused because the lease's local deadline had passed.",
            cluster.clock.fenced_calls(),
        ),
        (
            "rivet_cluster_journal_batches_total",
            counter,
            "Journal batches written to etcd.",
            c.mirrored_batches.load(Relaxed),
        ),
        (
            "rivet_cluster_journal_refusals_total",
            counter,
            "Node writes etcd refused because the node's token no longer held.",
            c.mirror_refusals.load(Relaxed),
        ),
    ];
    let mut out = String::with_capacity(2048);
    for (name, kind, help, value) in metrics {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP rivet_cluster_etcd_requests_total etcd requests sent, by kind.\n# TYPE rivet_cluster_etcd_requests_total counter"
    );
    for (kind, n) in cluster.requests() {
        let _ = writeln!(
            out,
            "rivet_cluster_etcd_requests_total{{kind=\"{kind}\"}} {n}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_end_with_inf() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let mut out = String::new();
        h.render(&mut out, "x", "p=\"fake\"");
        assert_eq!(
            out,
            "x_bucket{p=\"fake\",le=\"0.1\"} 1\nx_bucket{p=\"fake\",le=\"1\"} 2\nx_bucket{p=\"fake\",le=\"+Inf\"} 3\nx_sum{p=\"fake\"} 5.55\nx_count{p=\"fake\"} 3\n"
        );
    }
}
