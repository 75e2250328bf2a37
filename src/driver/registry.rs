//! Which implementation serves each composed interface name: one explicit
//! list, so "what can rivet drive" is answered by reading this file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::exec::ExecPlugin;
use super::fake::{FakeBmcs, FakeDriver};
use super::ipmi::IpmiDriver;
use super::redfish::{RedfishDriver, Timing};
use super::{Bios, Boot, DriverError, Inspect, Management, Power, Vendor};
use crate::model::catalog::{InterfaceImpl, Support};
use crate::model::fleet::Fleet;
use crate::model::node::Node;
use crate::vocab::InterfaceType;

/// The implementations a converge or refresh uses.
pub struct Registry {
    fake: Arc<FakeDriver>,
    redfish: Arc<RedfishDriver>,
    /// One for every ipmitool node, so the per-BMC pacing spans them all.
    ipmi: Arc<IpmiDriver>,
    root: PathBuf,
}

impl Registry {
    pub fn new(root: PathBuf, fake_bmcs: Arc<dyn FakeBmcs>) -> Self {
        Self::with_timing(root, fake_bmcs, Timing::default())
    }

    /// With other Redfish timeouts (tests of faults use short ones).
    pub fn with_timing(root: PathBuf, fake_bmcs: Arc<dyn FakeBmcs>, timing: Timing) -> Self {
        Self {
            fake: Arc::new(FakeDriver::new(fake_bmcs)),
            redfish: Arc::new(RedfishDriver::new(root.clone(), timing)),
            ipmi: Arc::new(IpmiDriver::new(root.clone())),
            root,
        }
    }

    /// With `[conductor] ipmi_min_command_interval` instead of the default.
    pub fn with_ipmi_min_command_interval(mut self, gap: Duration) -> Self {
        self.ipmi = Arc::new(IpmiDriver::new(self.root.clone()).with_min_command_interval(gap));
        self
    }

    /// The protocol a node's BMC calls go through, for history records.
    /// Delete every BMC session the drivers hold (at shutdown).
    pub async fn close(&self) {
        self.redfish.close().await;
    }

    /// Forget BMC clients no node of `nodes` uses, deleting their sessions.
    pub async fn retain(&self, nodes: &[&Node]) {
        self.redfish.retain(nodes).await;
    }

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
            "redfish" => Ok(self.redfish.clone()),
            "ipmitool" => Ok(self.ipmi.clone()),
            other => Err(not_yet(InterfaceType::Power, other)),
        }
    }

    /// The management implementation of a node's composed `management_interface`.
    pub fn management(&self, node: &Node) -> Result<Arc<dyn Management>, DriverError> {
        match node.interfaces.get(InterfaceType::Management).as_str() {
            "fake" => Ok(self.fake.clone()),
            "redfish" => Ok(self.redfish.clone()),
            "ipmitool" => Ok(self.ipmi.clone()),
            other => Err(not_yet(InterfaceType::Management, other)),
        }
    }

    /// The boot implementation's virtual media.
    pub fn boot(&self, node: &Node) -> Result<Arc<dyn Boot>, DriverError> {
        match node.interfaces.get(InterfaceType::Boot).as_str() {
            "redfish-virtual-media" => Ok(self.redfish.clone()),
            "fake" => Ok(self.fake.clone()),
            other => Err(DriverError::unsupported(format!(
                "the boot interface `{other}` has no virtual media"
            ))),
        }
    }

    /// The bios implementation.
    pub fn bios(&self, node: &Node) -> Result<Arc<dyn Bios>, DriverError> {
        match node.interfaces.get(InterfaceType::Bios).as_str() {
            "redfish" => Ok(self.redfish.clone()),
            "fake" => Ok(self.fake.clone()),
            other => Err(not_yet(InterfaceType::Bios, other)),
        }
    }

    /// The inspect implementation (out of band).
    pub fn inspect(&self, node: &Node) -> Result<Arc<dyn Inspect>, DriverError> {
        match node.interfaces.get(InterfaceType::Inspect).as_str() {
            "redfish" => Ok(self.redfish.clone()),
            "fake" => Ok(self.fake.clone()),
            other => Err(not_yet(InterfaceType::Inspect, other)),
        }
    }

    /// The vendor implementation: built in, or an exec plugin.
    pub fn vendor(&self, fleet: &Fleet, node: &Node) -> Result<Arc<dyn Vendor>, DriverError> {
        let imp = fleet
            .interface_of(node, InterfaceType::Vendor)
            .ok_or_else(|| {
                DriverError::fatal(format!("node {} has no vendor interface", node.name))
            })?;
        if let Some(plugin) = self.plugin(imp) {
            return Ok(Arc::new(plugin));
        }
        match imp.name.as_str() {
            "fake" => Ok(self.fake.clone()),
            "redfish" => Ok(self.redfish.clone()),
            "ipmitool" => Ok(self.ipmi.clone()),
            other => Err(not_yet(InterfaceType::Vendor, other)),
        }
    }

    fn plugin(&self, imp: &InterfaceImpl) -> Option<ExecPlugin> {
        match &imp.support {
            Support::Exec {
                command,
                timeout,
                needs_secrets,
            } => Some(ExecPlugin {
                command: command.clone(),
                root: self.root.clone(),
                timeout: *timeout,
                needs_secrets: *needs_secrets,
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
        let done = |()| Value::Null;
        match (kind, imp.name.as_str(), step) {
            (InterfaceType::Deploy, "fake", "deploy") => self.fake.deploy(node).await.map(done),
            (InterfaceType::Bios, _, "apply_configuration") => {
                let settings = args.get("settings").cloned().unwrap_or(Value::Null);
                self.bios(node)?
                    .apply_configuration(node, &settings)
                    .await
                    .map(done)
            }
            (InterfaceType::Bios, _, "factory_reset") => {
                self.bios(node)?.factory_reset(node).await.map(done)
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
        self.vendor(fleet, node)?
            .passthru(node, method, http_method, args)
            .await
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
