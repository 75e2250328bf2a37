//! Reading a BMC password from where the declaration says it is. The value
//! is handed only to the driver call that needs it, never logged or stored.

use std::path::Path;

use super::DriverError;
use crate::model::node::{Node, SecretSource};

/// The node's BMC password, if it has one. A relative `password_file` is
/// relative to the fleet directory.
pub fn bmc_password(node: &Node, root: &Path) -> Result<Option<String>, DriverError> {
    match &node.bmc.password {
        None => Ok(None),
        Some(SecretSource::Env(var)) => match std::env::var(var) {
            Ok(value) => Ok(Some(value)),
            Err(_) => Err(DriverError::fatal(format!(
                "the BMC password variable `{var}` of node {} is not set in rivet's environment",
                node.name
            ))),
        },
        Some(SecretSource::File(path)) => {
            let path = if path.is_relative() {
                root.join(path)
            } else {
                path.clone()
            };
            std::fs::read_to_string(&path)
                .map(|text| Some(text.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| {
                    DriverError::fatal(format!(
                        "cannot read the BMC password file {} of node {}: {e}",
                        path.display(),
                        node.name
                    ))
                })
        }
    }
}
