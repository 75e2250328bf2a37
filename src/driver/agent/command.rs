//! IPA's command results as rivet reads them: `{"id", "command_name",
//! "command_status", "command_result", "command_error"}`, one per command
//! or a list of them (`{"commands": [...]}`, oldest first).
//!
//! What an agent answers is untrusted: every string is scrubbed of the
//! agent's token before it is kept, and its error is made one readable,
//! bounded line.

use serde::Deserialize;
use serde_json::Value;

use crate::driver::scrub::{Secrets, cut};

/// The longest error text a [`Command`] keeps, in bytes, its `…` included.
pub const ERROR_BYTES: usize = 4096;

/// Where one command is: IPA's `RUNNING`, `SUCCEEDED`, `FAILED`,
/// `CLEAN_VERSION_MISMATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandStatus {
    Running,
    Succeeded,
    Failed,
    /// The agent's hardware managers are not the versions the steps were
    /// read from (it was rebooted or replaced): read the steps again.
    VersionMismatch,
}

impl CommandStatus {
    fn parse(word: &str) -> Option<Self> {
        match word {
            "RUNNING" => Some(Self::Running),
            "SUCCEEDED" => Some(Self::Succeeded),
            "FAILED" => Some(Self::Failed),
            // IPA 13 says CLEAN_VERSION_MISMATCH; later releases renamed it.
            "CLEAN_VERSION_MISMATCH" | "VERSION_MISMATCH" => Some(Self::VersionMismatch),
            _ => None,
        }
    }

    /// IPA's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::VersionMismatch => "CLEAN_VERSION_MISMATCH",
        }
    }
}

/// One command an agent ran or runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: String,
    pub name: String,
    pub status: CommandStatus,
    /// `command_result`, scrubbed of the token.
    pub result: Option<Value>,
    /// `command_error` made readable: IPA's error type, message and details
    /// (`ImageChecksumError: Error verifying image checksum: …`), scrubbed,
    /// at most [`ERROR_BYTES`].
    pub error: Option<String>,
}

impl Command {
    pub fn is_running(&self) -> bool {
        self.status == CommandStatus::Running
    }

    /// One command result; `Err` says what is wrong with its shape.
    pub(super) fn from_answer(value: Value, secrets: &Secrets) -> Result<Self, String> {
        let wire: Wire = serde_json::from_value(value).map_err(|e| format!("{e}"))?;
        let status = CommandStatus::parse(&wire.command_status).ok_or_else(|| {
            format!(
                "command_status `{}` is none of RUNNING, SUCCEEDED, FAILED, CLEAN_VERSION_MISMATCH",
                secrets.message(&wire.command_status)
            )
        })?;
        let result = wire.command_result.map(|mut result| {
            secrets.scrub_json(&mut result);
            result
        });
        Ok(Self {
            id: secrets.scrub(&wire.id),
            name: secrets.scrub(&wire.command_name),
            status,
            result,
            error: wire
                .command_error
                .as_ref()
                .and_then(readable_error)
                .map(|text| bounded(&secrets.scrub(&text))),
        })
    }

    /// `{"commands": [...]}`, oldest first as the agent keeps them.
    pub(super) fn list_from_answer(value: Value, secrets: &Secrets) -> Result<Vec<Self>, String> {
        let Value::Object(mut answer) = value else {
            return Err("it is not an object with `commands`".into());
        };
        let Some(Value::Array(commands)) = answer.remove("commands") else {
            return Err("it has no `commands` list".into());
        };
        commands
            .into_iter()
            .enumerate()
            .map(|(i, c)| Self::from_answer(c, secrets).map_err(|e| format!("commands[{i}]: {e}")))
            .collect()
    }
}

/// A command result as IPA serializes it; other keys (older agents add
/// `command_params`) are ignored.
#[derive(Deserialize)]
struct Wire {
    id: String,
    command_name: String,
    command_status: String,
    #[serde(default)]
    command_result: Option<Value>,
    #[serde(default)]
    command_error: Option<Value>,
}

/// IPA's `command_error` as one line. An agent error (IPA's `RESTError`)
/// serializes as `{"type", "code", "message", "details"}`; a synchronous
/// command that failed with a bare string as `{"error": "…"}`.
fn readable_error(error: &Value) -> Option<String> {
    match error {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        Value::Object(fields) => {
            let part = |key: &str| {
                fields
                    .get(key)
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
            };
            let parts: Vec<&str> = ["type", "message", "details", "error"]
                .into_iter()
                .filter_map(part)
                .collect();
            if parts.is_empty() {
                Some(error.to_string())
            } else {
                Some(parts.join(": "))
            }
        }
        other => Some(other.to_string()),
    }
}

/// `text` cut to [`ERROR_BYTES`] at a character boundary, `…` marking a cut.
fn bounded(text: &str) -> String {
    if text.len() <= ERROR_BYTES {
        return text.to_string();
    }
    let kept = cut(text, ERROR_BYTES - '…'.len_utf8());
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TOKEN: &str = "tok-canary-0123456789abcdef0123456789";

    fn secrets() -> Secrets {
        let mut secrets = Secrets::default();
        secrets.add(TOKEN);
        secrets
    }

    #[test]
    fn a_synchronous_result_parses_with_its_result() {
        // deploy.get_deploy_steps as IPA 13 answers it (TESTBEDS.md).
        let answer = json!({
            "id": "5e0c5a43-5d0a-4f0e-9c1f-7b2a0e3f6d11",
            "command_name": "get_deploy_steps",
            "command_status": "SUCCEEDED",
            "command_error": null,
            "command_result": {
                "deploy_steps": {"LoopbackHardwareManager": [
                    {"step": "write_image", "priority": 0, "interface": "deploy", "reboot_requested": false}
                ]},
                "hardware_manager_version": {"rivet_loopback": "1.0"}
            }
        });
        let command = Command::from_answer(answer, &secrets()).unwrap();
        assert_eq!(command.id, "5e0c5a43-5d0a-4f0e-9c1f-7b2a0e3f6d11");
        assert_eq!(command.name, "get_deploy_steps");
        assert_eq!(command.status, CommandStatus::Succeeded);
        assert!(!command.is_running());
        assert_eq!(command.error, None);
        let result = command.result.unwrap();
        assert_eq!(
            result["hardware_manager_version"],
            json!({"rivet_loopback": "1.0"})
        );
        assert_eq!(
            result["deploy_steps"]["LoopbackHardwareManager"][0]["step"],
            "write_image"
        );
    }

    #[test]
    fn a_running_command_has_neither_result_nor_error() {
        let answer = json!({
            "id": "a1", "command_name": "execute_deploy_step",
            "command_status": "RUNNING", "command_error": null, "command_result": null,
            "command_params": {"step": {"step": "write_image"}}
        });
        let command = Command::from_answer(answer, &secrets()).unwrap();
        assert!(command.is_running());
        assert_eq!((command.result, command.error), (None, None));
    }

    #[test]
    fn an_agent_error_reads_as_its_type_message_and_details() {
        // IPA's ImageChecksumError, as RESTError serializes it.
        let answer = json!({
            "id": "a2", "command_name": "execute_deploy_step", "command_status": "FAILED",
            "command_result": null,
            "command_error": {
                "type": "ImageChecksumError", "code": 500,
                "message": "Error verifying image checksum",
                "details": format!("Image failed to verify against checksum. location: http://127.0.0.1:8080/disk.raw?token={TOKEN}; image ID: rivet-raw; image checksum: 00; verification checksum: 0491e7ff")
            }
        });
        let command = Command::from_answer(answer, &secrets()).unwrap();
        assert_eq!(command.status, CommandStatus::Failed);
        let error = command.error.unwrap();
        assert!(
            error.starts_with(
                "ImageChecksumError: Error verifying image checksum: Image failed to verify"
            ),
            "{error}"
        );
        assert!(error.contains("?token=***;"), "{error}");
        assert!(!error.contains(TOKEN));
    }

    #[test]
    fn other_error_shapes_stay_readable_and_a_version_mismatch_is_its_own_status() {
        let parse = |status: &str, error: Value| {
            Command::from_answer(
                json!({"id": "x", "command_name": "c", "command_status": status, "command_error": error}),
                &secrets(),
            )
            .unwrap()
        };
        assert_eq!(
            parse("FAILED", json!({"error": "boom"})).error.as_deref(),
            Some("boom")
        );
        assert_eq!(
            parse("FAILED", json!("plain text")).error.as_deref(),
            Some("plain text")
        );
        assert_eq!(
            parse("FAILED", json!({"code": 3})).error.as_deref(),
            Some("{\"code\":3}")
        );
        let mismatch = parse(
            "CLEAN_VERSION_MISMATCH",
            json!({"type": "VersionMismatch", "code": 409,
                   "message": "Hardware managers version mismatch, reload agent with correct version",
                   "details": "Current versions: {'rivet_loopback': '1.0'}, versions used by ironic: {'rivet_loopback': '0.9'}"}),
        );
        assert_eq!(mismatch.status, CommandStatus::VersionMismatch);
        assert_eq!(mismatch.status.as_str(), "CLEAN_VERSION_MISMATCH");
        assert!(mismatch.error.unwrap().starts_with("VersionMismatch: "));
    }

    #[test]
    fn a_long_error_is_cut_at_a_character_boundary() {
        let details = "é".repeat(5000);
        let answer = json!({"id": "x", "command_name": "c", "command_status": "FAILED",
                            "command_error": {"type": "T", "message": "m", "details": details}});
        let error = Command::from_answer(answer, &secrets())
            .unwrap()
            .error
            .unwrap();
        assert!(error.len() <= ERROR_BYTES, "{}", error.len());
        assert!(error.len() > ERROR_BYTES - 8, "{}", error.len());
        assert!(error.starts_with("T: m: éé"));
        assert!(error.ends_with("é…"));
    }

    #[test]
    fn results_are_scrubbed_of_the_token() {
        let answer = json!({"id": "x", "command_name": "c", "command_status": "SUCCEEDED",
                            "command_result": {"echo": format!("agent_token={TOKEN}"), TOKEN: 1}});
        let result = Command::from_answer(answer, &secrets())
            .unwrap()
            .result
            .unwrap();
        assert_eq!(result, json!({"echo": "agent_token=***", "***": 1}));
    }

    #[test]
    fn wrong_shapes_say_what_is_wrong() {
        let secrets = secrets();
        let missing = Command::from_answer(json!({"id": "x"}), &secrets).unwrap_err();
        assert!(missing.contains("command_name"), "{missing}");
        let status = Command::from_answer(
            json!({"id": "x", "command_name": "c", "command_status": "DONE"}),
            &secrets,
        )
        .unwrap_err();
        assert!(status.contains("`DONE`"), "{status}");
        assert!(Command::list_from_answer(json!([]), &secrets).is_err());
        assert!(Command::list_from_answer(json!({"x": []}), &secrets).is_err());
        let second = Command::list_from_answer(
            json!({"commands": [{"id": "a", "command_name": "c", "command_status": "RUNNING"}, {}]}),
            &secrets,
        )
        .unwrap_err();
        assert!(second.starts_with("commands[1]: "), "{second}");
    }

    #[test]
    fn a_list_keeps_the_agents_order() {
        let answer = json!({"commands": [
            {"id": "first", "command_name": "get_deploy_steps", "command_status": "SUCCEEDED", "command_result": {}, "command_error": null},
            {"id": "second", "command_name": "execute_deploy_step", "command_status": "RUNNING", "command_result": null, "command_error": null}
        ]});
        let list = Command::list_from_answer(answer, &secrets()).unwrap();
        let ids: Vec<&str> = list.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["first", "second"]);
        assert!(list[1].is_running());
        assert!(
            Command::list_from_answer(json!({"commands": []}), &secrets())
                .unwrap()
                .is_empty()
        );
    }
}
