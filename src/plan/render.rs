//! Plans for people (like `terraform plan`) and for machines (JSON). Both
//! are byte-for-byte deterministic for the same plan.

use std::fmt::Write as _;

use owo_colors::OwoColorize;

use super::{Action, Change, NodePlan, Plan, Removal, RemovedNode};

/// Pretty JSON with a trailing newline.
pub fn json(plan: &Plan) -> String {
    let mut text = serde_json::to_string_pretty(plan).expect("plans serialize");
    text.push('\n');
    text
}

struct Paint {
    color: bool,
}

impl Paint {
    fn change(&self, change: Change, text: &str) -> String {
        if !self.color {
            return text.to_string();
        }
        match change {
            Change::Create => text.green().to_string(),
            Change::Update => text.yellow().to_string(),
            Change::Replace | Change::Delete => text.red().to_string(),
            Change::None => text.to_string(),
        }
    }

    fn bold(&self, text: &str) -> String {
        if self.color {
            text.bold().to_string()
        } else {
            text.to_string()
        }
    }

    fn dim(&self, text: &str) -> String {
        if self.color {
            text.dimmed().to_string()
        } else {
            text.to_string()
        }
    }
}

fn or_unknown<T: AsRef<str>>(value: Option<T>) -> String {
    value.map_or_else(|| "unknown".to_string(), |v| v.as_ref().to_string())
}

/// The human plan. `color` adds ANSI colours (only for a terminal).
pub fn human(plan: &Plan, color: bool) -> String {
    let paint = Paint { color };
    let mut out = String::new();
    let changed: Vec<&NodePlan> = plan
        .nodes
        .iter()
        .filter(|n| n.change != Change::None)
        .collect();
    if changed.is_empty() && plan.removed.is_empty() {
        out.push_str("No changes. Every node matches its declaration.\n\n");
    } else {
        out.push_str("rivet will perform the following actions:\n\n");
    }
    for node in changed {
        render_node(&mut out, &paint, node);
    }
    for node in &plan.removed {
        render_removed(&mut out, &paint, node);
    }
    if !plan.waves.is_empty() {
        out.push_str(&paint.bold("Waves"));
        out.push_str(" (nodes in one wave converge in parallel):\n");
        for (i, wave) in plan.waves.iter().enumerate() {
            let _ = writeln!(out, "  {:>2}. {}", i + 1, wave.join(", "));
        }
        out.push('\n');
    }
    let limited: Vec<String> = plan
        .rollouts
        .iter()
        .map(|r| {
            let parallel = r
                .max_parallel
                .map_or("no limit".to_string(), |m| m.to_string());
            format!(
                "{} ({} {}, max_parallel {parallel}, max_failures {})",
                r.name,
                r.nodes,
                if r.nodes == 1 { "node" } else { "nodes" },
                r.max_failures
            )
        })
        .collect();
    if !limited.is_empty() {
        let _ = writeln!(out, "Rollout groups: {}\n", limited.join("; "));
    }
    for warning in &plan.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    if !plan.warnings.is_empty() {
        out.push('\n');
    }
    out.push_str(&paint.bold(&summary_line(plan)));
    out.push('\n');
    out
}

fn render_removed(out: &mut String, paint: &Paint, node: &RemovedNode) {
    let (change, what) = match node.removal {
        Removal::Prune => (
            Change::Delete,
            "removed from the declarations: undeployed (power off, back to available), then unmanaged",
        ),
        Removal::Unmanage => (
            Change::Update,
            "removed from the declarations: left as it is, no longer managed",
        ),
    };
    let symbol = match node.removal {
        Removal::Prune => "-",
        Removal::Unmanage => "~",
    };
    let _ = writeln!(
        out,
        "{} {} {}",
        paint.change(change, &format!("{symbol:>3}")),
        paint.bold(&format!("node {}", node.name)),
        paint.dim(&format!(
            "({}, power {})",
            node.provision_state.as_str(),
            or_unknown(node.power_state.map(|p| p.as_str()))
        ))
    );
    let _ = writeln!(out, "      {what}");
    if let Some(note) = &node.note {
        let _ = writeln!(out, "      note: {note}");
    }
    out.push('\n');
}

fn render_node(out: &mut String, paint: &Paint, node: &NodePlan) {
    let symbol = paint.change(node.change, &format!("{:>3}", node.change.symbol()));
    let mut meta = vec![node.driver.clone()];
    if let Some(group) = &node.rollout {
        meta.push(format!("rollout {group}"));
    }
    if let Some(wave) = node.wave {
        meta.push(format!("wave {wave}"));
    }
    let _ = writeln!(
        out,
        "{symbol} {} {}",
        paint.bold(&node.name),
        paint.dim(&format!("({})", meta.join(", ")))
    );
    for action in &node.actions {
        match action {
            Action::Provision {
                verb,
                before,
                after,
                via,
                resumes,
            } => {
                let via: Vec<&str> = via.iter().map(|s| s.as_str()).collect();
                let resume = if *resumes {
                    "; resumes an interrupted run"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "      {:<10} {before} → {after} {}",
                    verb.as_str(),
                    paint.dim(&format!("(via {}{resume})", via.join(", ")))
                );
                if verb.deploys() {
                    let width = node.steps.iter().map(|s| s.id().len()).max().unwrap_or(0);
                    for (i, step) in node.steps.iter().enumerate() {
                        let mut source = match &step.source {
                            crate::model::node::StepSource::Driver => "driver".to_string(),
                            crate::model::node::StepSource::Template(t) => format!("template {t}"),
                            crate::model::node::StepSource::Node => "node".to_string(),
                        };
                        if step.by_agent {
                            source.push_str(" (by the agent)");
                        }
                        let _ = writeln!(
                            out,
                            "        {:>2}. {:<width$}  priority {:>3}  {}",
                            i + 1,
                            step.id(),
                            step.priority,
                            paint.dim(&source)
                        );
                    }
                }
            }
            Action::Power { before, after } => {
                let _ = writeln!(
                    out,
                    "      {:<10} {} → {}",
                    "power",
                    or_unknown(before.map(|p| p.short())),
                    after.short()
                );
            }
            Action::BootDevice { before, after } => {
                let _ = writeln!(
                    out,
                    "      {:<10} {} → {}",
                    "boot",
                    or_unknown(before.map(|d| d.as_str())),
                    after.as_str()
                );
            }
            Action::BootMode { before, after } => {
                let _ = writeln!(
                    out,
                    "      {:<10} {} → {}",
                    "boot mode",
                    or_unknown(before.map(|m| m.as_str())),
                    after.as_str()
                );
            }
        }
    }
    out.push('\n');
}

/// `Plan: 3 to deploy, 1 to power on, 0 to undeploy, 12 unchanged.`
pub fn summary_line(plan: &Plan) -> String {
    let s = &plan.summary;
    let mut parts = vec![format!("{} to deploy", s.deploy)];
    if s.rebuild > 0 {
        parts.push(format!("{} to rebuild", s.rebuild));
    }
    parts.push(format!("{} to power on", s.power_on));
    if s.power_off > 0 {
        parts.push(format!("{} to power off", s.power_off));
    }
    if s.change > 0 {
        parts.push(format!("{} to change", s.change));
    }
    parts.push(format!("{} to undeploy", s.undeploy));
    if s.prune > 0 {
        parts.push(format!("{} to prune", s.prune));
    }
    if s.unmanage > 0 {
        parts.push(format!("{} to unmanage", s.unmanage));
    }
    parts.push(format!("{} unchanged", s.unchanged));
    format!("Plan: {}.", parts.join(", "))
}
