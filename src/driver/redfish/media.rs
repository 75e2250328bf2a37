//! Virtual media (the `redfish-virtual-media` boot interface): the virtual
//! CD found on the system or its manager, inserted and ejected.

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Value, json};

use super::RedfishDriver;
use super::client::{Client, members};
use crate::driver::{Boot, DriverError};
use crate::model::node::Node;

impl RedfishDriver {
    /// Insert `image` as the system's virtual CD.
    async fn insert_cd(&self, node: &Node, image: &str) -> Result<(), DriverError> {
        let client = self.client(node)?;
        let cd = self.virtual_cd(&client).await?;
        let media = client.get(&cd).await?;
        if media["Inserted"].as_bool() == Some(true) {
            if media["Image"].as_str() == Some(image) {
                return Ok(());
            }
            self.eject_one(&client, &cd, &media).await?;
        }
        let path = media
            .pointer("/Actions/#VirtualMedia.InsertMedia/target")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(format!("{cd}/Actions/VirtualMedia.InsertMedia"));
        let body = json!({ "Image": image, "Inserted": true, "WriteProtected": true });
        let (status, text) = client.send(Method::POST, &path, Some(&body)).await?;
        if !status.is_success() {
            return Err(client.http_error("POST", &path, status, &text));
        }
        Ok(())
    }

    /// Eject virtual media: `cd`, `floppy`, or every device when `None`.
    pub(super) async fn eject(
        &self,
        node: &Node,
        device: Option<&str>,
    ) -> Result<Value, DriverError> {
        let client = self.client(node)?;
        let collection = self.media_collection(&client).await?;
        let mut ejected = Vec::new();
        for member in members(&client.get(&collection).await?) {
            let media = client.get(&member).await?;
            let types: Vec<String> = media["MediaTypes"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_ascii_lowercase)
                        .collect()
                })
                .unwrap_or_default();
            let id = media["Id"].as_str().unwrap_or("").to_ascii_lowercase();
            let wanted = match device {
                None => true,
                Some("cd") => id == "cd" || types.iter().any(|t| t == "cd" || t == "dvd"),
                Some("floppy") => id == "floppy" || types.iter().any(|t| t == "floppy"),
                Some(other) => {
                    return Err(DriverError::invalid(format!(
                        "boot_device `{other}` is not a virtual media device: use cd or floppy"
                    )));
                }
            };
            if wanted && media["Inserted"].as_bool() == Some(true) {
                self.eject_one(&client, &member, &media).await?;
                ejected.push(media["Id"].clone());
            }
        }
        Ok(json!({ "ejected": ejected }))
    }

    async fn eject_one(
        &self,
        client: &Client,
        member: &str,
        media: &Value,
    ) -> Result<(), DriverError> {
        let path = media
            .pointer("/Actions/#VirtualMedia.EjectMedia/target")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(format!("{member}/Actions/VirtualMedia.EjectMedia"));
        let (status, text) = client.send(Method::POST, &path, Some(&json!({}))).await?;
        if !status.is_success() {
            return Err(client.http_error("POST", &path, status, &text));
        }
        Ok(())
    }

    /// The VirtualMedia collection: on the system (newer Redfish) or its manager.
    async fn media_collection(&self, client: &Client) -> Result<String, DriverError> {
        let system = client.system().await?;
        if let Some(path) = system
            .pointer("/VirtualMedia/@odata.id")
            .and_then(Value::as_str)
        {
            return Ok(path.to_string());
        }
        let manager = system
            .pointer("/Links/ManagedBy/0/@odata.id")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                DriverError::unsupported("the system has no virtual media and no manager")
            })?;
        client
            .get(manager)
            .await?
            .pointer("/VirtualMedia/@odata.id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| DriverError::unsupported("the BMC offers no virtual media"))
    }

    async fn virtual_cd(&self, client: &Client) -> Result<String, DriverError> {
        let collection = self.media_collection(client).await?;
        for member in members(&client.get(&collection).await?) {
            let media = client.get(&member).await?;
            let is_cd = media["Id"]
                .as_str()
                .is_some_and(|i| i.eq_ignore_ascii_case("cd"))
                || media["MediaTypes"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|x| matches!(x.as_str(), Some("CD" | "DVD"))));
            if is_cd {
                return Ok(member);
            }
        }
        Err(DriverError::unsupported(
            "the BMC has no virtual CD/DVD drive",
        ))
    }
}

#[async_trait]
impl Boot for RedfishDriver {
    async fn insert_media(&self, node: &Node, image: &str) -> Result<(), DriverError> {
        self.insert_cd(node, image).await
    }

    async fn eject_media(&self, node: &Node, device: Option<&str>) -> Result<Value, DriverError> {
        self.eject(node, device).await
    }
}
