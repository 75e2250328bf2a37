//! The Redfish management interface: boot source override target and mode.

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};

use super::RedfishDriver;
use crate::driver::{DriverError, Management};
use crate::model::node::Node;
use crate::vocab::{BootDevice, BootMode};

fn device_to_redfish(device: BootDevice) -> &'static str {
    match device {
        BootDevice::Pxe => "Pxe",
        BootDevice::Disk => "Hdd",
        BootDevice::Cdrom => "Cd",
        BootDevice::Bios => "BiosSetup",
    }
}

fn device_from_redfish(target: &str) -> Option<BootDevice> {
    match target {
        "Pxe" => Some(BootDevice::Pxe),
        "Hdd" => Some(BootDevice::Disk),
        "Cd" => Some(BootDevice::Cdrom),
        "BiosSetup" => Some(BootDevice::Bios),
        _ => None,
    }
}

#[async_trait]
impl Management for RedfishDriver {
    async fn get_boot_device(&self, node: &Node) -> Result<Option<BootDevice>, DriverError> {
        let client = self.client(node)?;
        let system = client.system().await?;
        Ok(system
            .pointer("/Boot/BootSourceOverrideTarget")
            .and_then(Value::as_str)
            .and_then(device_from_redfish))
    }

    async fn set_boot_device(
        &self,
        node: &Node,
        device: BootDevice,
        persistent: bool,
    ) -> Result<(), DriverError> {
        let client = self.client(node)?;
        let system = client.system().await?;
        let target = device_to_redfish(device);
        let allowed: Vec<&str> = system
            .pointer("/Boot/BootSourceOverrideTarget@Redfish.AllowableValues")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !allowed.is_empty() && !allowed.contains(&target) {
            return Err(DriverError::unsupported(format!(
                "the system cannot boot from {} (it allows {allowed:?})",
                device.as_str()
            )));
        }
        let enabled = if persistent { "Continuous" } else { "Once" };
        let body = json!({ "Boot": { "BootSourceOverrideTarget": target, "BootSourceOverrideEnabled": enabled } });
        let path = client.system_path().await?.to_string();
        let (status, text) = client.send(Method::PATCH, &path, Some(&body)).await?;
        if !status.is_success() {
            return Err(client.http_error("PATCH", &path, status, &text));
        }
        match self.get_boot_device(node).await? {
            Some(read) if read == device => Ok(()),
            other => Err(DriverError::retryable(format!(
                "the BMC {} accepted boot device {} but reports {}",
                client.base,
                device.as_str(),
                other.map_or("none", |d| d.as_str())
            ))),
        }
    }

    async fn get_boot_mode(&self, node: &Node) -> Result<Option<BootMode>, DriverError> {
        let client = self.client(node)?;
        let system = client.system().await?;
        Ok(
            match system
                .pointer("/Boot/BootSourceOverrideMode")
                .and_then(Value::as_str)
            {
                Some("UEFI") => Some(BootMode::Uefi),
                Some("Legacy") => Some(BootMode::Bios),
                _ => None,
            },
        )
    }

    async fn set_boot_mode(&self, node: &Node, mode: BootMode) -> Result<(), DriverError> {
        let client = self.client(node)?;
        let value = match mode {
            BootMode::Uefi => "UEFI",
            BootMode::Bios => "Legacy",
        };
        let path = client.system_path().await?.to_string();
        let body = json!({ "Boot": { "BootSourceOverrideMode": value } });
        let (status, text) = client.send(Method::PATCH, &path, Some(&body)).await?;
        if !status.is_success() {
            return Err(client.http_error("PATCH", &path, status, &text));
        }
        match self.get_boot_mode(node).await? {
            Some(read) if read == mode => Ok(()),
            _ => Err(DriverError::retryable(format!(
                "the BMC {} accepted boot mode {} but reports another",
                client.base,
                mode.as_str()
            ))),
        }
    }
}
