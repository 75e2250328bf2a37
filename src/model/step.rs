//! Deploy steps and vendor passthru methods as interfaces declare them.

use std::collections::BTreeMap;

use serde::Serialize;

pub use crate::vocab::ArgInfo;
use crate::vocab::InterfaceType;

/// A deploy step an interface offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepDef {
    pub interface: InterfaceType,
    pub step: String,
    /// The priority it runs at unless a template or node says otherwise;
    /// 0 means it exists but only runs when asked for.
    pub priority: u32,
    pub argsinfo: BTreeMap<String, ArgInfo>,
    pub abortable: bool,
    /// ironic-python-agent runs it on the node, not the conductor: it waits
    /// for the agent's heartbeat and hands the agent a command.
    pub by_agent: bool,
}

/// A vendor passthru method, in Ironic's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassthruMethod {
    pub method: String,
    pub http_methods: Vec<String>,
    pub is_async: bool,
    pub description: String,
    pub attach: bool,
    pub require_exclusive_lock: bool,
    pub args: BTreeMap<String, ArgInfo>,
}

/// What HTTP verbs a passthru method may declare.
pub const HTTP_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

pub(crate) fn args(list: &[(&str, &str, bool)]) -> BTreeMap<String, ArgInfo> {
    list.iter()
        .map(|(name, description, required)| {
            (
                name.to_string(),
                ArgInfo {
                    description: description.to_string(),
                    required: *required,
                },
            )
        })
        .collect()
}
