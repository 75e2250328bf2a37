//! The operations of a deploy through the agent in the node's ramdisk
//! (`Op::OpenAgent`, `AwaitAgent`, `AgentStep`, `AgentCommand`,
//! `CloseAgent`): the channel in `reconcile::agent`, the commands through
//! `driver::agent`.
//!
//! Ironic moves an agent deploy on when a heartbeat comes (every 90 to 180
//! s at its defaults) and then polls the agent's commands. rivet follows
//! each command instead (`wait=true`, or `GET /v1/commands/{id}?wait=true`
//! for the long ones), so a deploy moves on the moment a command ends;
//! heartbeats only say where the agent listens and that it lives.
//!
//! A deploy step the node asks for that the deploy interface does not
//! declare runs in the agent (Ironic's in-band steps): it must be among the
//! steps the agent lists, or the deploy fails before sending it.
//!
//! Crash safety: a run resumed at `AgentStep` waits for the agent's next
//! heartbeat (which carries the token the restarted conductor no longer
//! holds), then looks among the agent's commands for the step before it
//! sends anything: a step already running is followed, one that ended is
//! taken as its result, so `write_image` never runs twice in one boot.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::Ctx;
use super::agent::Waited;
use crate::driver::DriverError;
use crate::driver::agent::{AgentConn, Command, CommandStatus};
use crate::model::node::Node;
use crate::vocab::InterfaceType;

/// Agents' deploy steps are sent as this command.
const EXECUTE_DEPLOY_STEP: &str = "deploy.execute_deploy_step";
const GET_DEPLOY_STEPS: &str = "deploy.get_deploy_steps";
/// How long one synchronous agent command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The node as the agent is told of it, in lookups and commands: its
/// UUID, root device hints and image.
pub fn node_document(node: &Node) -> (Value, Value) {
    let mut properties = serde_json::Map::new();
    let mut instance_info = serde_json::Map::new();
    if let Some(image) = &node.agent_image {
        if !image.root_device.is_empty() {
            properties.insert("root_device".into(), json!(image.root_device));
        }
        instance_info.insert("image_source".into(), json!(image.url));
        instance_info.insert(
            "image_disk_format".into(),
            json!(image.disk_format.as_str()),
        );
        instance_info.insert("image_os_hash_algo".into(), json!(image.checksum.algo));
        instance_info.insert("image_os_hash_value".into(), json!(image.checksum.value));
    }
    (Value::Object(properties), Value::Object(instance_info))
}

fn node_param(node: &Node) -> Value {
    let (properties, instance_info) = node_document(node);
    json!({
        "uuid": node.uuid.to_string(),
        "properties": properties,
        "instance_info": instance_info,
        "driver_internal_info": {},
    })
}

/// `Op::OpenAgent`.
pub async fn open(ctx: &Ctx, node: &Node) -> Result<(), DriverError> {
    let (properties, instance_info) = node_document(node);
    let macs = node.ports.iter().map(|p| p.address.clone()).collect();
    ctx.agents
        .open(
            &node.name,
            &node.uuid.to_string(),
            macs,
            properties,
            instance_info,
        )
        .await
}

/// After a failed agent deploy: power the node off through the BMC, so
/// its ramdisk does not keep running (the next deploy boots it afresh).
pub async fn power_off_after_failure(ctx: &Ctx, node: &Node) -> Result<(), DriverError> {
    ctx.registry
        .power(node)?
        .set_power_state(node, crate::vocab::PowerState::Off, ctx.power_timeout)
        .await
}

/// `Op::CloseAgent`.
pub async fn close(ctx: &Ctx, node: &Node) -> Result<(), DriverError> {
    ctx.agents.close(&node.name).await
}

/// `Op::AwaitAgent`: the agent's first heartbeat, within
/// `[conductor] deploy_callback_timeout`.
pub async fn await_agent(ctx: &Ctx, node: &Node) -> Result<String, DriverError> {
    let timeout = ctx.fleet.conductor.deploy_callback_timeout;
    match ctx.agents.connection(&node.name, timeout).await {
        Ok(conn) => Ok(format!("the agent calls back at {}", conn.callback_url)),
        Err(Waited::TimedOut) => Err(DriverError::fatal(format!(
            "no agent called back within {}: the node did not boot its deploy ramdisk, or its agent cannot reach rivet at `[conductor] http`; \
             check the node's console, or raise `[conductor] deploy_callback_timeout`",
            humantime::format_duration(timeout)
        ))),
        Err(Waited::Closed) => Err(closed()),
        Err(Waited::Invalid(e)) => Err(e),
    }
}

fn closed() -> DriverError {
    DriverError::fatal(
        "the agent channel of this boot is not open here (it was closed, or another conductor's state file held it): deploy again",
    )
}

/// The agent's connection for a command: known once it heartbeated to
/// this process; after a restart, its next heartbeat.
async fn connection(ctx: &Ctx, node: &Node) -> Result<AgentConn, DriverError> {
    let within = ctx.agents.heartbeat_timeout();
    match ctx.agents.connection(&node.name, within).await {
        Ok(conn) => Ok(conn),
        Err(Waited::TimedOut) => Err(DriverError::fatal(format!(
            "the agent sent no heartbeat within {}: it stopped, or lost its way to rivet",
            humantime::format_duration(within)
        ))),
        Err(Waited::Closed) => Err(closed()),
        Err(Waited::Invalid(e)) => Err(e),
    }
}

/// What a command's end means for the operation.
fn finished(what: &str, command: Command) -> Result<Command, DriverError> {
    match command.status {
        CommandStatus::Succeeded => Ok(command),
        CommandStatus::Failed => Err(DriverError::fatal(format!(
            "the agent's {what} failed: {}",
            command.error.as_deref().unwrap_or("no error given")
        ))),
        CommandStatus::VersionMismatch => Err(DriverError::fatal(format!(
            "the agent's {what} was refused: its hardware managers changed since it listed its steps ({}); deploy again",
            command.error.as_deref().unwrap_or("version mismatch")
        ))),
        CommandStatus::Running => Err(DriverError::retryable(format!(
            "the agent's {what} is still running"
        ))),
    }
}

/// `Op::AgentStep`: find the step among the agent's commands (a resumed
/// run), else list the agent's steps (for its hardware managers' version)
/// and send it; follow it to its end.
pub async fn agent_step(
    ctx: &Ctx,
    node: &Node,
    interface: InterfaceType,
    step: &str,
    priority: u32,
    args: &BTreeMap<String, Value>,
) -> Result<String, DriverError> {
    let conn = connection(ctx, node).await?;
    let client = ctx.agents.client()?;
    let within = ctx.fleet.conductor.deploy_step_timeout;
    let what = format!("{interface}.{step}");
    // The agent runs one boot's steps; the last deploy step command of
    // this boot is this one when it was sent before a restart.
    let sent = client
        .commands(&conn)
        .await?
        .into_iter()
        .rev()
        .find(is_deploy_step);
    let command = match sent {
        Some(command) => {
            tracing::info!(node = %node.name, step = %what, command = %command.id, status = ?command.status, "found the step among the agent's commands: following it, not sending it again");
            command
        }
        None => {
            let steps = client
                .start(
                    &conn,
                    GET_DEPLOY_STEPS,
                    json!({ "node": node_param(node), "ports": [] }),
                    true,
                    COMMAND_TIMEOUT,
                )
                .await?;
            let steps = finished("step list", steps)?;
            let offered = offered_steps(steps.result.as_ref(), interface);
            if !offered.iter().any(|s| s == step) {
                return Err(DriverError::fatal(format!(
                    "the agent offers no deploy step `{what}` (it offers: {}): its ramdisk's hardware managers do not have it; remove the step, or boot a ramdisk whose managers offer it",
                    if offered.is_empty() {
                        "none".to_string()
                    } else {
                        offered.join(", ")
                    }
                )));
            }
            let version = steps
                .result
                .as_ref()
                .and_then(|r| r.get("hardware_manager_version"))
                .cloned()
                .unwrap_or(Value::Null);
            let params = json!({
                "step": { "interface": interface, "step": step, "priority": priority, "args": args },
                "node": node_param(node),
                "ports": [],
                "deploy_version": version,
            });
            client
                .start(&conn, EXECUTE_DEPLOY_STEP, params, false, COMMAND_TIMEOUT)
                .await?
        }
    };
    let command = match command.status {
        CommandStatus::Running => client.follow(&conn, &command.id, within).await?,
        _ => command,
    };
    let id = command.id.clone();
    finished(&what, command)?;
    Ok(format!("agent command {id}"))
}

/// The `interface` steps of `get_deploy_steps`'s answer, every hardware
/// manager's: `{"deploy_steps": {"Manager": [{"step", "interface", …}]}}`.
fn offered_steps(result: Option<&Value>, interface: InterfaceType) -> Vec<String> {
    let mut names: Vec<String> = result
        .and_then(|r| r.get("deploy_steps"))
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|managers| managers.values())
        .filter_map(Value::as_array)
        .flatten()
        .filter(|s| s.get("interface").and_then(Value::as_str) == Some(interface.as_str()))
        .filter_map(|s| s.get("step").and_then(Value::as_str))
        .map(|s| crate::driver::scrub::cut(s, 80).to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn is_deploy_step(command: &Command) -> bool {
    let name = command.name.as_str();
    name == EXECUTE_DEPLOY_STEP || name == "execute_deploy_step"
}

/// `Op::AgentCommand`. `standby.power_off` tolerates an agent that is
/// gone: it may have powered off before a restart, and the BMC powers
/// the node off next either way.
pub async fn agent_command(ctx: &Ctx, node: &Node, command: &str) -> Result<String, DriverError> {
    let tolerant = command == "standby.power_off";
    let conn = match connection(ctx, node).await {
        Ok(conn) => conn,
        Err(e) if tolerant => {
            tracing::warn!(node = %node.name, error = %e, "the agent is not there to power off: the BMC powers the node off");
            return Ok(format!(
                "agent not reached ({e}); the BMC powers the node off"
            ));
        }
        Err(e) => return Err(e),
    };
    let client = ctx.agents.client()?;
    let answer = client
        .start(&conn, command, json!({}), true, COMMAND_TIMEOUT)
        .await;
    let answer = match answer {
        Err(e) if tolerant && e.is_retryable() => {
            tracing::warn!(node = %node.name, error = %e, "the agent did not answer power off: the BMC powers the node off");
            return Ok(format!(
                "agent not reached ({e}); the BMC powers the node off"
            ));
        }
        other => other?,
    };
    let answer = finished(command, answer)?;
    Ok(match answer.result {
        Some(Value::Object(result)) if !result.is_empty() => {
            crate::driver::scrub::cut(&Value::Object(result).to_string(), 512).to_string()
        }
        _ => String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steps_an_agent_offers_are_every_managers_of_the_interface() {
        let answer = json!({
            "deploy_steps": {
                "LoopbackHardwareManager": [
                    {"step": "write_image", "priority": 0, "interface": "deploy", "reboot_requested": false}
                ],
                "VendorManager": [
                    {"step": "apply_configuration", "priority": 0, "interface": "bios"},
                    {"step": "write_image", "priority": 0, "interface": "deploy"},
                    {"step": "erase_devices_metadata", "priority": 0, "interface": "deploy"}
                ]
            },
            "hardware_manager_version": {"rivet_loopback": "1.0"}
        });
        assert_eq!(
            offered_steps(Some(&answer), InterfaceType::Deploy),
            ["erase_devices_metadata", "write_image"]
        );
        assert_eq!(
            offered_steps(Some(&answer), InterfaceType::Bios),
            ["apply_configuration"]
        );
        assert!(
            offered_steps(
                Some(&json!({"deploy_steps": "garbage"})),
                InterfaceType::Deploy
            )
            .is_empty()
        );
        assert!(offered_steps(None, InterfaceType::Deploy).is_empty());
    }
}
