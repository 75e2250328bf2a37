//! Which implementation serves each composed interface name: one explicit
//! list, so "what can rivet drive" is answered by reading this file.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};

use super::exec::ExecPlugin;
use super::fake::{FakeBmcs, FakeDriver};
use super::{DriverError, Management, Power};
use crate::model::catalog::{InterfaceImpl, Support};
use crate::model::fleet::Fleet;
use crate::model::node::Node;
use crate::vocab::InterfaceType;

/// The implementations a converge or refresh uses.
pub struct Registry {
    fake: Arc<FakeDriver>,
    root: PathBuf,
}

impl Registry {
    pub fn new(root: PathBuf, fake_bmcs: Arc<dyn FakeBmcs>) -> Self {
        Self {
            fake: Arc::new(FakeDriver::new(fake_bmcs)),
            root,
        }
    }

    /// The protocol a node's BMC calls go through, for history records.
    pub fn protocol(&self, node: &Node) -> &'static str {
        match node.interfaces.get(InterfaceType::Power).as_str() {
            "fake" => "fake",
            "redfish" => "redfish",
            "ipmitool" => "ipmi",
            _ => "exec",
        }
    }

    /// The power implementation of a node's composed `power_interface`.
    pub fn power(&self, node: &Node) -> Result<Arc<dyn Power>, DriverError> {
        match node.interfaces.get(InterfaceType::Power).as_str() {
            "fake" => Ok(self.fake.clone()),
            other => Err(not_yet(InterfaceType::Power, other)),
        }
    }

    /// The management implementation of a node's composed `management_interface`.
    pub fn management(&self, node: &Node) -> Result<Arc<dyn Management>, DriverError> {
        match node.interfaces.get(InterfaceType::Management).as_str() {
            "fake" => Ok(self.fake.clone()),
            other => Err(not_yet(InterfaceType::Management, other)),
        }
    }

    fn plugin(&self, imp: &InterfaceImpl) -> Option<ExecPlugin> {
        match &imp.support {
            Support::Exec {
                command, timeout, ..
            } => Some(ExecPlugin {
                command: command.clone(),
                root: self.root.clone(),
                timeout: *timeout,
            }),
            _ => None,
        }
    }

    /// Run one deploy step through the node's composed interface.
    pub async fn run_step(
        &self,
        fleet: &Fleet,
        node: &Node,
        kind: InterfaceType,
        step: &str,
        args: &std::collections::BTreeMap<String, Value>,
    ) -> Result<Value, DriverError> {
        let imp = fleet.interface_of(node, kind).ok_or_else(|| {
            DriverError::fatal(format!("node {} has no {kind} interface", node.name))
        })?;
        if let Some(plugin) = self.plugin(imp) {
            let request = json!({ "step": step, "args": args });
            return plugin
                .call(&format!("{kind}.deploy_step"), node, request)
                .await;
        }
        match (kind, imp.name.as_str(), step) {
            (InterfaceType::Deploy, "fake", "deploy") => {
                self.fake.deploy(node).await.map(|()| Value::Null)
            }
            (InterfaceType::Bios, "fake", name) => {
                self.fake.bios(node, name, args).await.map(|()| Value::Null)
            }
            (_, name, step_name) => Err(DriverError::unsupported(format!(
                "the {kind} interface `{name}` cannot run step `{step_name}` in this build of rivet"
            ))),
        }
    }

    /// Call a vendor passthru method through the node's vendor interface.
    pub async fn passthru(
        &self,
        fleet: &Fleet,
        node: &Node,
        method: &str,
        http_method: &str,
        args: Value,
    ) -> Result<Value, DriverError> {
        let imp = fleet
            .interface_of(node, InterfaceType::Vendor)
            .ok_or_else(|| {
                DriverError::fatal(format!("node {} has no vendor interface", node.name))
            })?;
        if let Some(plugin) = self.plugin(imp) {
            let request = json!({ "method": method, "http_method": http_method, "args": args });
            return plugin.call("vendor.passthru", node, request).await;
        }
        match (imp.name.as_str(), method) {
            // Ironic's FakeVendorB answers whether `bar` has the magic word.
            ("fake", "second_method") => Ok(json!(args.get("bar") == Some(&json!("kazoo")))),
            ("fake", "third_method_sync") => Ok(json!(args.get("bar") == Some(&json!("meow")))),
            ("fake", "fourth_method_shared_lock") => {
                Ok(json!(args.get("bar") == Some(&json!("woof"))))
            }
            ("fake", "log_passthrough") => Ok(Value::Null),
            (name, _) => Err(DriverError::unsupported(format!(
                "the vendor interface `{name}` cannot call `{method}` in this build of rivet"
            ))),
        }
    }
}

impl Registry {
    /// Call a driver-level vendor passthru method through `vendor` (a
    /// hardware type's default vendor interface), without a node. Only exec
    /// plugins offer driver-level methods; built-in vendors have none, as
    /// Ironic's fake, ipmitool and redfish vendors have none.
    pub async fn driver_passthru(
        &self,
        vendor: &InterfaceImpl,
        method: &str,
        http_method: &str,
        args: Value,
    ) -> Result<Value, DriverError> {
        match self.plugin(vendor) {
            Some(plugin) => {
                let request = json!({ "method": method, "http_method": http_method, "args": args });
                plugin
                    .call_without_node("vendor.driver_passthru", request)
                    .await
            }
            None => Err(DriverError::unsupported(format!(
                "the vendor interface `{}` has no driver-level method `{method}`",
                vendor.name
            ))),
        }
    }
}

fn not_yet(kind: InterfaceType, name: &str) -> DriverError {
    DriverError::unsupported(format!(
        "the {kind} interface `{name}` cannot be called by this build of rivet"
    ))
}
