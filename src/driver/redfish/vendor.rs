//! The Redfish vendor interface: the `eject_vmedia` passthru.

use async_trait::async_trait;
use serde_json::Value;

use super::RedfishDriver;
use crate::driver::{DriverError, Vendor};
use crate::model::node::Node;

#[async_trait]
impl Vendor for RedfishDriver {
    async fn passthru(
        &self,
        node: &Node,
        method: &str,
        _http_method: &str,
        args: Value,
    ) -> Result<Value, DriverError> {
        match method {
            "eject_vmedia" => {
                self.eject(node, args.get("boot_device").and_then(Value::as_str))
                    .await
            }
            other => Err(DriverError::invalid(format!(
                "No handler for method {other}"
            ))),
        }
    }
}
