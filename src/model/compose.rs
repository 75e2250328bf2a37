//! Ironic's interface composition, per node and interface type.
//!
//! 1. The node names an implementation: it must be enabled and supported by
//!    the hardware type.
//! 2. Else `default_X_interface`, when set: it must be enabled and supported.
//! 3. Else the first name in the type's supported list that is enabled.

use super::hardware::HardwareType;
use super::interface::InterfaceType;

/// Why an interface could not be composed (Ironic's exception names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeError {
    /// `InterfaceNotFoundInEntrypoint`: the node's explicit choice is not enabled.
    NotEnabled {
        kind: InterfaceType,
        name: String,
        enabled: Vec<String>,
    },
    /// `IncompatibleInterface`: the node's explicit choice is not supported by its type.
    Incompatible {
        kind: InterfaceType,
        name: String,
        hardware_type: String,
        supported: Vec<String>,
    },
    /// `NoValidDefaultForInterface`: no default applies to this type.
    NoValidDefault {
        kind: InterfaceType,
        hardware_type: String,
        /// The configured `default_X_interface` that did not fit, if any.
        default: Option<String>,
        enabled: Vec<String>,
        supported: Vec<String>,
    },
}

/// Pick the implementation of `kind` for a node of type `hw`.
pub fn compose(
    kind: InterfaceType,
    hw: &HardwareType,
    explicit: Option<&str>,
    default: Option<&str>,
    enabled: &[String],
) -> Result<String, ComposeError> {
    let supported = hw.supported(kind);
    let is_enabled = |name: &str| enabled.iter().any(|e| e == name);
    let is_supported = |name: &str| supported.iter().any(|s| s == name);

    if let Some(name) = explicit {
        if !is_enabled(name) {
            return Err(ComposeError::NotEnabled {
                kind,
                name: name.to_string(),
                enabled: enabled.to_vec(),
            });
        }
        if !is_supported(name) {
            return Err(ComposeError::Incompatible {
                kind,
                name: name.to_string(),
                hardware_type: hw.name.clone(),
                supported: supported.to_vec(),
            });
        }
        return Ok(name.to_string());
    }

    let no_default = || ComposeError::NoValidDefault {
        kind,
        hardware_type: hw.name.clone(),
        default: default.map(str::to_string),
        enabled: enabled.to_vec(),
        supported: supported.to_vec(),
    };
    if let Some(name) = default {
        return if is_enabled(name) && is_supported(name) {
            Ok(name.to_string())
        } else {
            Err(no_default())
        };
    }
    supported
        .iter()
        .find(|name| is_enabled(name))
        .cloned()
        .ok_or_else(no_default)
}

/// Ironic's calculated `enabled_X_interfaces` for an unset list: the first
/// supported name of every enabled hardware type, in order, without
/// duplicates. rivet skips the names `eligible` refuses (what it cannot
/// drive, and what needs the agent), so an unset list never selects an
/// interface that would fail at run time or need more declared.
pub fn calculated_enabled<'a>(
    kind: InterfaceType,
    types: impl IntoIterator<Item = &'a HardwareType>,
    eligible: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for hw in types {
        if let Some(first) = hw.supported(kind).iter().find(|n| eligible(n))
            && !out.contains(first)
        {
            out.push(first.clone());
        }
    }
    out
}
