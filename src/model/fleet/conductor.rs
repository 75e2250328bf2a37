//! `rivet.toml`'s `[conductor]` settings with their defaults, and its
//! `[[rollout]]` groups.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::host::{HOST_HELP, host_name_error};
use super::{Builder, loc, parse_duration};
use crate::config::raw::DriftPolicy;
use crate::config::spanned::Sp;
use crate::diag::{Loc, Problem, SourceFile};

/// `[conductor]` with defaults applied.
#[derive(Debug, Clone)]
pub struct Conductor {
    pub state: PathBuf,
    pub http: SocketAddr,
    pub host: String,
    pub workers: u32,
    pub power_sync_interval: Duration,
    pub power_sync_workers: u32,
    pub drift: DriftPolicy,
    pub prune: bool,
    pub api_token_env: Option<String>,
    /// The shortest pause between two commands to one IPMI BMC.
    pub ipmi_min_command_interval: Duration,
    pub api_token_reads: bool,
    /// Events kept per node; `None` keeps every event.
    pub history_max_entries: Option<usize>,
    pub history_cleanup_interval: Duration,
    /// The total deadline of one power, boot or media operation.
    pub operation_timeout: Duration,
    /// The total deadline of one deploy step.
    pub deploy_step_timeout: Duration,
    /// How long a deploy waits for its agent's first heartbeat.
    pub deploy_callback_timeout: Duration,
    /// The heartbeat timeout agents are told at lookup.
    pub agent_heartbeat_timeout: Duration,
    /// Where fake-hardware BMCs keep their state and call log.
    pub fake_bmc_dir: PathBuf,
}

/// The fake BMCs' directory when `fake_bmc_dir` is not set: `fake-bmc`
/// beside the state file.
pub fn default_fake_bmc_dir(state: &Path) -> PathBuf {
    state.parent().unwrap_or(Path::new(".")).join("fake-bmc")
}

/// A rollout group.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub name: String,
    pub max_parallel: Option<u32>,
    pub max_failures: u32,
    pub at: Loc,
}

fn not_a_duration(
    file: &Arc<SourceFile>,
    value: &Sp<String>,
    error: &str,
    examples: &str,
) -> Problem {
    Problem::new(
        "rivet::conductor::duration",
        format!("`{}` is not a duration: {error}", value.value()),
    )
    .at(&loc(file, value), "not a duration")
    .help(format!("write a duration such as {examples}"))
}

impl Builder {
    /// A `[conductor]` duration that must not be zero; a problem otherwise.
    fn positive_duration(
        &mut self,
        file: &Arc<SourceFile>,
        value: &Sp<String>,
        key: &str,
        examples: &str,
        zero_help: &str,
    ) -> Option<Duration> {
        match parse_duration(value.value()) {
            Ok(d) if !d.is_zero() => return Some(d),
            Ok(_) => self.push(
                Problem::new(
                    "rivet::conductor::duration",
                    format!("`{key}` must be longer than zero"),
                )
                .at(&loc(file, value), "zero")
                .help(format!("write a duration such as {examples}{zero_help}")),
            ),
            Err(e) => self.push(not_a_duration(file, value, &e, examples)),
        }
        None
    }

    pub(super) fn conductor(
        &mut self,
        file: Option<&Arc<SourceFile>>,
        root: &std::path::Path,
        decl: &crate::config::raw::ConductorDecl,
    ) -> Conductor {
        let state = root.join(".rivet/state.redb");
        let mut conductor = Conductor {
            fake_bmc_dir: default_fake_bmc_dir(&state),
            state,
            http: SocketAddr::from(([127, 0, 0, 1], 6385)),
            host: local_hostname(),
            workers: 64,
            power_sync_interval: Duration::from_secs(120),
            power_sync_workers: 128,
            drift: decl.drift.unwrap_or_default(),
            prune: decl.prune.unwrap_or(false),
            api_token_env: decl.api_token_env.clone(),
            ipmi_min_command_interval: Duration::from_secs(5),
            api_token_reads: decl.api_token_reads.unwrap_or(false),
            history_max_entries: match decl.history_max_entries {
                Some(0) => None,
                Some(n) => Some(n as usize),
                None => Some(300),
            },
            history_cleanup_interval: Duration::from_secs(3600),
            operation_timeout: Duration::from_secs(300),
            deploy_step_timeout: Duration::from_secs(1800),
            deploy_callback_timeout: Duration::from_secs(1800),
            agent_heartbeat_timeout: Duration::from_secs(60),
        };
        // Only rivet.toml has a [conductor]; without the file there is nothing to check.
        let Some(file) = file else {
            return conductor;
        };
        if let Some(state) = &decl.state {
            conductor.state = root.join(state.value());
            conductor.fake_bmc_dir = default_fake_bmc_dir(&conductor.state);
        }
        if let Some(dir) = &decl.fake_bmc_dir {
            if dir.value().trim().is_empty() {
                self.push(
                    Problem::new(
                        "rivet::conductor::fake_bmc_dir",
                        "`fake_bmc_dir` is empty",
                    )
                    .at(&loc(file, dir), "no directory")
                    .help("name a directory relative to the fleet directory, such as `shared/bmcs`, or remove the key for the default: `fake-bmc` beside the state file"),
                );
            } else {
                conductor.fake_bmc_dir = root.join(dir.value());
            }
        }
        if let Some(host) = &decl.host {
            match host_name_error(host.value()) {
                None => conductor.host = host.value().clone(),
                Some(why) => self.push(
                    Problem::new(
                        "rivet::conductor::host",
                        format!("`{}` is not a host name: {why}", host.value()),
                    )
                    .at(&loc(file, host), "not a host name")
                    .help(HOST_HELP),
                ),
            }
        }
        if let Some(http) = &decl.http {
            match http.parse::<SocketAddr>() {
                Ok(addr) => conductor.http = addr,
                Err(_) => self.push(
                    Problem::new(
                        "rivet::conductor::http",
                        format!("`{}` is not an address to listen on", http.value()),
                    )
                    .at(&loc(file, http), "expected IP:PORT")
                    .help("write an IP address and port, e.g. `127.0.0.1:6385`"),
                ),
            }
        }
        if let Some(workers) = &decl.workers {
            if *workers.value() == 0 {
                self.push(
                    Problem::new("rivet::conductor::workers", "`workers` must be at least 1")
                        .at(&loc(file, workers), "zero workers would converge nothing")
                        .help("set `workers` to 1 or more (default 64)"),
                );
            } else {
                conductor.workers = *workers.value();
            }
        }
        if let Some(n) = &decl.power_sync_workers {
            if *n.value() == 0 {
                self.push(
                    Problem::new(
                        "rivet::conductor::workers",
                        "`power_sync_workers` must be at least 1",
                    )
                    .at(&loc(file, n), "zero would never read a BMC")
                    .help("set `power_sync_workers` to 1 or more (default 128)"),
                );
            } else {
                conductor.power_sync_workers = *n.value();
            }
        }
        // The durations that must be longer than zero: (the value, its key,
        // examples, what else to say about zero, where it goes).
        let positive = [
            (
                &decl.power_sync_interval,
                "power_sync_interval",
                "`120s` or `5m`",
                "",
                &mut conductor.power_sync_interval,
            ),
            (
                &decl.history_cleanup_interval,
                "history_cleanup_interval",
                "`1h` or `1d`",
                "; to keep every event, set `history_max_entries = 0`",
                &mut conductor.history_cleanup_interval,
            ),
            (
                &decl.operation_timeout,
                "operation_timeout",
                "`5m` or `90s`",
                "; zero would fail every operation",
                &mut conductor.operation_timeout,
            ),
            (
                &decl.deploy_step_timeout,
                "deploy_step_timeout",
                "`30m` or `2h`",
                "; zero would fail every deploy step",
                &mut conductor.deploy_step_timeout,
            ),
            (
                &decl.deploy_callback_timeout,
                "deploy_callback_timeout",
                "`30m` or `10m`",
                "; zero would fail every agent deploy before its agent could call back",
                &mut conductor.deploy_callback_timeout,
            ),
            (
                &decl.agent_heartbeat_timeout,
                "agent_heartbeat_timeout",
                "`60s` or `5m`",
                "; agents need a positive heartbeat timeout",
                &mut conductor.agent_heartbeat_timeout,
            ),
        ];
        for (value, key, examples, zero_help, target) in positive {
            if let Some(value) = value
                && let Some(d) = self.positive_duration(file, value, key, examples, zero_help)
            {
                *target = d;
            }
        }
        if let Some(gap) = &decl.ipmi_min_command_interval {
            // Zero is allowed: it turns the pause off for BMCs that keep up.
            match parse_duration(gap.value()) {
                Ok(d) => conductor.ipmi_min_command_interval = d,
                Err(e) => self.push(not_a_duration(file, gap, &e, "`5s` or `100ms`")),
            }
        }
        conductor
    }

    pub(super) fn rollouts(
        &mut self,
        file: Option<&Arc<SourceFile>>,
        decls: &[Sp<crate::config::raw::RolloutDecl>],
    ) -> Vec<Rollout> {
        let Some(file) = file else {
            return Vec::new();
        };
        let mut out: Vec<Rollout> = Vec::new();
        for decl in decls {
            let d = decl.value();
            let at = loc(file, &d.name);
            if let Some(first) = out.iter().find(|r| &r.name == d.name.value()) {
                let problem = Problem::new(
                    "rivet::rollout::duplicate",
                    format!("rollout group `{}` is declared twice", d.name.value()),
                )
                .at(&at, "declared again here")
                .also(&first.at, "first declared here")
                .help("merge the two [[rollout]] tables or rename one");
                self.push(problem);
                continue;
            }
            if let Some(mp) = &d.max_parallel
                && *mp.value() == 0
            {
                self.push(
                    Problem::new(
                        "rivet::rollout::max_parallel",
                        format!("rollout group `{}` has `max_parallel = 0`", d.name.value()),
                    )
                    .at(&loc(file, mp), "would never start a node")
                    .help("set `max_parallel` to 1 or more, or remove it for no limit"),
                );
            }
            out.push(Rollout {
                name: d.name.value().clone(),
                max_parallel: d.max_parallel.as_ref().map(|m| *m.value()),
                max_failures: d.max_failures.unwrap_or(0),
                at,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// This machine's host name, the default `[conductor] host`.
pub fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
