//! The Redfish bios interface: pending settings and factory reset.

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};

use super::RedfishDriver;
use super::client::Client;
use crate::driver::{Bios, DriverError};
use crate::model::node::Node;

impl RedfishDriver {
    async fn bios_path(client: &Client) -> Result<String, DriverError> {
        let system = client.system().await?;
        Ok(system
            .pointer("/Bios/@odata.id")
            .and_then(Value::as_str)
            .ok_or_else(|| DriverError::unsupported("the system has no BIOS resource"))?
            .to_string())
    }

    /// Apply BIOS settings through the pending-settings resource.
    async fn apply_bios(&self, node: &Node, settings: &Value) -> Result<(), DriverError> {
        let client = self.client(node)?;
        let bios = Self::bios_path(&client).await?;
        let mut attributes = serde_json::Map::new();
        for setting in settings
            .as_array()
            .ok_or_else(|| DriverError::invalid("`settings` must be a list of {name, value}"))?
        {
            let name = setting["name"]
                .as_str()
                .ok_or_else(|| DriverError::invalid("every setting needs a `name`"))?;
            attributes.insert(name.to_string(), setting["value"].clone());
        }
        let settings_path = client
            .get(&bios)
            .await?
            .pointer("/@Redfish.Settings/SettingsObject/@odata.id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(format!("{bios}/Settings"));
        let body = json!({ "Attributes": attributes });
        let (status, text) = client
            .send(Method::PATCH, &settings_path, Some(&body))
            .await?;
        if !status.is_success() {
            return Err(client.http_error("PATCH", &settings_path, status, &text));
        }
        Ok(())
    }
}

#[async_trait]
impl Bios for RedfishDriver {
    async fn apply_configuration(&self, node: &Node, settings: &Value) -> Result<(), DriverError> {
        self.apply_bios(node, settings).await
    }

    async fn factory_reset(&self, node: &Node) -> Result<(), DriverError> {
        let client = self.client(node)?;
        let bios = Self::bios_path(&client).await?;
        let path = format!("{bios}/Actions/Bios.ResetBios");
        let (status, text) = client.send(Method::POST, &path, Some(&json!({}))).await?;
        if !status.is_success() {
            return Err(client.http_error("POST", &path, status, &text));
        }
        Ok(())
    }
}
