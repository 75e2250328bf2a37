//! The fake BMCs' call log (`calls.jsonl`, one line per changing call)
//! read back and held to what fencing promises: a node's BMC never works
//! for two conductors at once, and never accepts a call from an owner
//! older than one it already served.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rivet::driver::fake::CallLine;

/// What a log that keeps the rules holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CallLogSummary {
    pub lines: usize,
    pub accepted: usize,
    pub refused: usize,
    /// Accepted calls per node.
    pub per_node: BTreeMap<String, usize>,
    /// The conductors whose calls were accepted.
    pub hosts: BTreeSet<String>,
}

/// Read the call log at `path` and check, among accepted calls: no two
/// hosts' calls to one node overlap in time (`[start_ns, end_ns)`), and a
/// node's tokens never decrease in the order the BMC accepted them (the
/// log's order: lines are appended under the BMC's lock). Refused calls did
/// nothing and are only counted.
pub fn check_call_log(path: &Path) -> Result<CallLogSummary, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut calls: Vec<CallLine> = Vec::new();
    let mut summary = CallLogSummary::default();
    for (number, line) in text.lines().enumerate() {
        let call: CallLine = serde_json::from_str(line)
            .map_err(|e| format!("{} line {}: {e}: {line}", path.display(), number + 1))?;
        summary.lines += 1;
        if call.refused.is_some() {
            summary.refused += 1;
        } else {
            calls.push(call);
        }
    }
    let mut by_node: BTreeMap<&str, Vec<&CallLine>> = BTreeMap::new();
    for call in &calls {
        by_node.entry(&call.node).or_default().push(call);
    }
    for (node, accepted) in &by_node {
        tokens_never_decrease(node, accepted)?;
        no_two_hosts_overlap(node, accepted)?;
        summary.per_node.insert(node.to_string(), accepted.len());
    }
    summary.accepted = calls.len();
    summary.hosts = calls.iter().map(|c| c.host.clone()).collect();
    Ok(summary)
}

fn describe(call: &CallLine) -> String {
    format!(
        "`{}` from {} (token {}, {}..{} ns)",
        call.op, call.host, call.token, call.start_ns, call.end_ns
    )
}

fn tokens_never_decrease(node: &str, accepted: &[&CallLine]) -> Result<(), String> {
    for pair in accepted.windows(2) {
        if pair[1].token < pair[0].token {
            return Err(format!(
                "node {node}: {} was accepted after {}: its token is older",
                describe(pair[1]),
                describe(pair[0])
            ));
        }
    }
    Ok(())
}

fn no_two_hosts_overlap(node: &str, accepted: &[&CallLine]) -> Result<(), String> {
    let mut by_start = accepted.to_vec();
    by_start.sort_by_key(|c| (c.start_ns, c.end_ns));
    // Per host, its call that ends last among those started so far.
    let mut latest: BTreeMap<&str, &CallLine> = BTreeMap::new();
    for call in by_start {
        for (host, other) in &latest {
            if *host != call.host && other.end_ns > call.start_ns {
                return Err(format!(
                    "node {node}: {} overlaps {}",
                    describe(call),
                    describe(other)
                ));
            }
        }
        let slot = latest.entry(&call.host).or_insert(call);
        if call.end_ns > slot.end_ns {
            *slot = call;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(node: &str, host: &str, token: i64, start: u64, end: u64) -> String {
        serde_json::json!({
            "node": node, "host": host, "token": token, "op": "set_power_state:power on",
            "start_ns": start, "end_ns": end,
        })
        .to_string()
    }

    fn check(lines: &[String]) -> Result<CallLogSummary, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.jsonl");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        check_call_log(&path)
    }

    #[test]
    fn a_log_that_keeps_the_rules_is_summed_up() {
        let refused = serde_json::json!({
            "node": "n1", "host": "a", "token": 3, "op": "set_power_state:power off",
            "start_ns": 250, "end_ns": 260,
            "refused": "fencing token 3 is older than 5: another conductor owns this node",
        })
        .to_string();
        let summary = check(&[
            line("n1", "a", 3, 0, 100),
            // Another host right when the first call ends: no overlap.
            line("n1", "b", 5, 100, 200),
            refused,
            // One host's calls may overlap each other, and other nodes'.
            line("n1", "b", 5, 150, 300),
            line("n2", "a", 3, 120, 180),
        ])
        .unwrap();
        assert_eq!(
            summary,
            CallLogSummary {
                lines: 5,
                accepted: 4,
                refused: 1,
                per_node: [("n1".to_string(), 3), ("n2".to_string(), 1)].into(),
                hosts: ["a".to_string(), "b".to_string()].into(),
            }
        );
    }

    #[test]
    fn two_hosts_working_on_one_node_at_once_are_caught() {
        let error =
            check(&[line("n1", "a", 5, 0, 1_000), line("n1", "b", 5, 200, 300)]).unwrap_err();
        assert!(
            error.starts_with("node n1: ")
                && error.contains("from b")
                && error.contains("overlaps"),
            "{error}"
        );
        // The earlier call may also be the one that ends later.
        let error = check(&[
            line("n1", "b", 5, 200, 300),
            line("n1", "a", 5, 250, 260),
            line("n1", "b", 5, 300, 400),
        ])
        .unwrap_err();
        assert!(error.contains("from a"), "{error}");
    }

    #[test]
    fn a_decreasing_token_is_caught() {
        let error = check(&[line("n1", "a", 7, 0, 10), line("n1", "b", 3, 20, 30)]).unwrap_err();
        assert!(
            error.starts_with("node n1: ") && error.contains("token 3") && error.contains("older"),
            "{error}"
        );
    }

    #[test]
    fn a_line_that_is_not_a_call_names_its_number() {
        let error = check(&[line("n1", "a", 1, 0, 1), "{\"node\": 1}".to_string()]).unwrap_err();
        assert!(error.contains("line 2"), "{error}");
    }
}
