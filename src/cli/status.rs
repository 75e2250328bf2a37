//! `rivet status`: what the state file (or, while a daemon holds it, the
//! daemon's API) says about each node; and `rivet passthru`. The local view
//! comes from the conductor, the remote one from the API client.

use std::path::Path;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::{Format, PassthruArgs};
use crate::api::client::{CallResult, Client, ClientError};
use crate::conductor::status::{RECENT_HISTORY, Source, View, local};
use crate::store::records::Event;

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

/// A node document of the API in the shape `conductor::status::node_json` gives.
fn from_api(d: &Value) -> Value {
    let step = match &d["deploy_step"] {
        Value::Object(o) if o.is_empty() => Value::Null,
        other => other.clone(),
    };
    json!({
        "name": d["name"],
        "uuid": d["uuid"],
        "driver": d["driver"],
        "declared": d["extra"]["declared"],
        "unmanaged": d["extra"]["unmanaged"],
        "provision_state": d["provision_state"],
        "target_provision_state": d["target_provision_state"],
        "power_state": d["power_state"],
        "target_power_state": d["target_power_state"],
        "boot_device": d["extra"]["boot_device"],
        "boot_mode": d["boot_mode"],
        "maintenance": d["maintenance"],
        "fault": d["fault"],
        "last_error": d["last_error"],
        "deploy_step": step,
        "reservation": d["reservation"],
        "updated_at": d["updated_at"],
    })
}

async fn remote_view(client: &Client, node: Option<&str>) -> Result<View, ClientError> {
    let Some(name) = node else {
        let mut docs: Vec<Value> = client.nodes().await?.iter().map(from_api).collect();
        docs.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        return Ok(View {
            docs,
            history: Vec::new(),
        });
    };
    let doc = client.get(&format!("/v1/nodes/{name}")).await?;
    let items = client
        .get(&format!("/v1/nodes/{name}/history?limit={RECENT_HISTORY}"))
        .await?;
    let history = items["history"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| {
                    let mut event = i.clone();
                    event["node"] = json!(name);
                    event["at"] = i["created_at"].clone();
                    serde_json::from_value(event).ok()
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(View {
        docs: vec![from_api(&doc)],
        history,
    })
}

fn block_on<T>(
    url: &str,
    work: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Unreachable {
            url: url.to_string(),
            message: e.to_string(),
        })?;
    runtime.block_on(work)
}

fn remote(url: &str, token: Option<&str>, node: Option<&str>) -> Result<View, ClientError> {
    let client = Client::new(url, token)?;
    block_on(url, remote_view(&client, node))
}

/// The view of the daemon holding `dir`'s state file, asked at `addr` once
/// it has said it serves that fleet: whatever else listens there is refused.
fn held(
    dir: &Path,
    addr: std::net::SocketAddr,
    identity: &str,
    token: Option<&str>,
    node: Option<&str>,
) -> Result<View, String> {
    let url = format!("http://{addr}");
    let ask_it = "the state file is held by a running daemon: ask its API with `rivet status --url http://HOST:PORT`";
    let client = Client::new(&url, token).map_err(|e| e.to_string())?;
    let answered = block_on(&url, async {
        let serves = client.fleet_identity().await?;
        if serves.as_deref() != Some(identity) {
            return Ok(None);
        }
        remote_view(&client, node).await.map(Some)
    });
    match answered {
        Ok(Some(view)) => Ok(view),
        Ok(None) => Err(format!(
            "the API at {url} serves another fleet than {}\n  {ask_it}",
            dir.display()
        )),
        Err(e) => Err(format!("{e}\n  {ask_it}")),
    }
}

pub fn status(
    dir: &Path,
    node: Option<&str>,
    format: Format,
    url: Option<&str>,
    token: Option<&str>,
) -> std::io::Result<ExitCode> {
    let view = match url {
        Some(url) => remote(url, token, node).map_err(|e| e.to_string()),
        None => match local(dir, node) {
            Source::View(view) => Ok(view),
            Source::Failed(message) => Err(message),
            Source::Locked { addr, identity } => {
                eprintln!(
                    "note: a running daemon holds the state file; asking its API at http://{addr} (choose another with `rivet status --url URL`)"
                );
                held(dir, addr, &identity, token, node)
            }
        },
    };
    match view {
        Ok(view) => {
            print_view(&view, node.is_some(), format);
            Ok(ExitCode::SUCCESS)
        }
        Err(message) => {
            eprintln!("error: {message}");
            Ok(ExitCode::from(1))
        }
    }
}

fn print_view(view: &View, one: bool, format: Format) {
    let docs = &view.docs;
    if one {
        let doc = &docs[0];
        let history = &view.history;
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
                for e in history {
                    println!("{}", event_line(e));
                }
            }
        }
        return;
    }
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "nodes": docs })).expect("json")
        ),
        Format::Human => {
            let width = docs
                .iter()
                .map(|d| d["name"].as_str().map_or(0, str::len))
                .max()
                .unwrap_or(4)
                .max(4);
            println!(
                "{:width$}  {:<13} {:<11} {:<10} {:<6} {:<26} LAST ERROR",
                "NODE", "PROVISION", "TARGET", "POWER", "MAINT", "CURRENT STEP"
            );
            for d in docs {
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
}

/// `KEY=VALUE` → (key, JSON value, else the text as a string).
fn parse_arg(text: &str) -> Result<(String, Value), String> {
    let (key, value) = text
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{text}`: write --arg KEY=VALUE"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
    Ok((key.to_string(), value))
}

/// `rivet passthru NODE METHOD`
pub fn passthru(args: &PassthruArgs) -> std::io::Result<ExitCode> {
    let mut map = serde_json::Map::new();
    for text in &args.args {
        match parse_arg(text) {
            Ok((k, v)) => {
                map.insert(k, v);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    let result = Client::new(&args.url, args.token.as_deref()).and_then(|client| {
        block_on(
            &args.url,
            client.passthru(&args.node, &args.method, &args.http_method, &map),
        )
    });
    match result {
        Ok(CallResult::Returned(value)) => {
            println!("{}", serde_json::to_string_pretty(&value).expect("json"));
            Ok(ExitCode::SUCCESS)
        }
        Ok(CallResult::Accepted) => {
            println!(
                "accepted: `{}` runs in the background; its result will be in the history of {} (rivet status --url {} {})",
                args.method, args.node, args.url, args.node
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_json_when_they_parse_and_strings_otherwise() {
        assert_eq!(
            parse_arg("warm=false").unwrap(),
            ("warm".into(), json!(false))
        );
        assert_eq!(
            parse_arg("bar=meow").unwrap(),
            ("bar".into(), json!("meow"))
        );
        assert_eq!(parse_arg("n=3").unwrap(), ("n".into(), json!(3)));
        assert!(parse_arg("=x").is_err());
        assert!(parse_arg("novalue").is_err());
    }
}
