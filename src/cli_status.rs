//! `rivet status`: what the state file says about each node.

use std::path::Path;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::cli::Format;
use crate::model::fleet::load;
use crate::store::records::{Event, NodeRecord};
use crate::store::{Snapshot, read_history};

fn node_json(
    name: &str,
    record: Option<&NodeRecord>,
    declared: bool,
    journal: Option<usize>,
) -> Value {
    match record {
        Some(r) => json!({
            "name": name,
            "uuid": r.uuid,
            "driver": r.driver,
            "declared": declared,
            "unmanaged": r.unmanaged,
            "provision_state": r.provision_state,
            "target_provision_state": r.target_provision_state,
            "power_state": r.power_state,
            "target_power_state": r.target_power_state,
            "boot_device": r.boot_device,
            "boot_mode": r.boot_mode,
            "maintenance": r.maintenance,
            "fault": r.fault,
            "last_error": r.last_error,
            "deploy_step": r.deploy_step,
            "pending_operation": journal,
            "updated_at": r.updated_at,
        }),
        None => json!({
            "name": name,
            "declared": declared,
            "unmanaged": false,
            "provision_state": "enroll",
            "power_state": null,
            "maintenance": false,
            "last_error": null,
            "deploy_step": null,
            "note": "never converged",
        }),
    }
}

fn event_line(e: &Event) -> String {
    let mut line = format!("{:>6}  {}  {:<26} {:?}", e.seq, e.at, e.action, e.outcome);
    if let Some(ms) = e.duration_ms {
        line.push_str(&format!(" ({ms} ms)"));
    }
    if let Some(p) = &e.protocol {
        line.push_str(&format!(" via {p}"));
    }
    if let Some(d) = &e.detail {
        line.push_str(&format!(": {d}"));
    }
    line
}

pub fn status(dir: &Path, node: Option<&str>, format: Format) -> std::io::Result<ExitCode> {
    let loaded = load(dir);
    let fleet = &loaded.fleet;
    let state = &fleet.conductor.state;
    let snapshot = match Snapshot::read(state) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let mut names: Vec<String> = fleet.nodes.iter().map(|n| n.name.clone()).collect();
    names.extend(snapshot.nodes.keys().cloned());
    names.sort();
    names.dedup();

    if let Some(name) = node {
        if !names.iter().any(|n| n == name) {
            eprintln!(
                "error: no node `{name}` is declared or recorded in {}",
                dir.display()
            );
            return Ok(ExitCode::from(1));
        }
        let doc = node_json(
            name,
            snapshot.nodes.get(name),
            fleet.node(name).is_some(),
            snapshot.journals.get(name).map(|j| j.next),
        );
        let history = read_history(state, Some(name), 20).unwrap_or_default();
        match format {
            Format::Json => {
                let out = json!({ "node": doc, "history": history });
                println!("{}", serde_json::to_string_pretty(&out).expect("json"));
            }
            Format::Human => {
                for (key, value) in doc.as_object().expect("an object") {
                    let shown = match value {
                        Value::Null => "-".to_string(),
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    println!("{key:>24}: {shown}");
                }
                println!("\nRecent history:");
                for e in &history {
                    println!("{}", event_line(e));
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }

    let docs: Vec<Value> = names
        .iter()
        .map(|n| {
            node_json(
                n,
                snapshot.nodes.get(n),
                fleet.node(n).is_some(),
                snapshot.journals.get(n).map(|j| j.next),
            )
        })
        .collect();
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "nodes": docs })).expect("json")
        ),
        Format::Human => {
            let width = names.iter().map(String::len).max().unwrap_or(4).max(4);
            println!(
                "{:width$}  {:<13} {:<11} {:<10} {:<6} {:<26} LAST ERROR",
                "NODE", "PROVISION", "TARGET", "POWER", "MAINT", "CURRENT STEP"
            );
            for d in &docs {
                let s = |k: &str| d[k].as_str().map_or("-".to_string(), str::to_string);
                let mut provision = s("provision_state");
                if d["unmanaged"] == json!(true) {
                    provision = format!("{provision}*");
                }
                let step = d["deploy_step"].as_object().map_or("-".to_string(), |o| {
                    format!(
                        "{}.{}",
                        o["interface"].as_str().unwrap_or("?"),
                        o["step"].as_str().unwrap_or("?")
                    )
                });
                println!(
                    "{:width$}  {:<13} {:<11} {:<10} {:<6} {:<26} {}",
                    d["name"].as_str().unwrap_or("?"),
                    provision,
                    s("target_provision_state"),
                    s("power_state"),
                    if d["maintenance"] == json!(true) {
                        "yes"
                    } else {
                        "no"
                    },
                    step,
                    s("last_error"),
                );
            }
            if docs.iter().any(|d| d["unmanaged"] == json!(true)) {
                println!("\n* unmanaged: removed from the declarations and left as it is");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
