//! Out-of-band inspection: what the system resource and its NICs report.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::RedfishDriver;
use super::client::{Client, members};
use crate::driver::{DriverError, Inspect};
use crate::model::node::Node;

impl RedfishDriver {
    async fn read_macs(&self, client: &Client, nics: &str) -> Result<Vec<String>, DriverError> {
        let mut macs = Vec::new();
        for member in members(&client.get(nics).await?) {
            if let Some(mac) = client.get(&member).await?["MACAddress"].as_str() {
                macs.push(mac.to_ascii_lowercase());
            }
        }
        Ok(macs)
    }

    /// CPU count, memory and NIC MACs, as the BMC reports them.
    async fn read_hardware(&self, node: &Node) -> Result<Value, DriverError> {
        let client = self.client(node)?;
        let system = client.system().await?;
        // NICs are optional: a BMC that cannot list them leaves the MACs
        // unknown rather than failing the whole inspection.
        let mut macs = Value::Null;
        if let Some(nics) = system
            .pointer("/EthernetInterfaces/@odata.id")
            .and_then(Value::as_str)
        {
            match self.read_macs(&client, nics).await {
                Ok(found) => macs = json!(found),
                Err(e) => {
                    tracing::warn!(node = %node.name, error = %e, "inspection: NICs not readable")
                }
            }
        }
        Ok(json!({
            "cpus": system.pointer("/ProcessorSummary/Count"),
            "memory_gib": system.pointer("/MemorySummary/TotalSystemMemoryGiB"),
            "macs": macs,
        }))
    }
}

#[async_trait]
impl Inspect for RedfishDriver {
    async fn inspect(&self, node: &Node) -> Result<Value, DriverError> {
        self.read_hardware(node).await
    }
}
