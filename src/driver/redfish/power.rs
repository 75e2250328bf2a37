//! The Redfish power interface: ComputerSystem.Reset, polled until the
//! system reports the target.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::RedfishDriver;
use super::client::Client;
use crate::driver::{DriverError, Power};
use crate::model::node::Node;
use crate::vocab::PowerState;

impl RedfishDriver {
    fn power_of(system: &Value) -> PowerState {
        match system["PowerState"].as_str() {
            Some("On") => PowerState::On,
            Some("Off") => PowerState::Off,
            // PoweringOn/PoweringOff: on its way; neither target is reached.
            _ => PowerState::Rebooting,
        }
    }

    /// The ResetType for `target` that this system allows.
    fn reset_type(system: &Value, target: PowerState) -> Result<&'static str, DriverError> {
        let allowed: Vec<&str> = system
            .pointer("/Actions/#ComputerSystem.Reset/ResetType@Redfish.AllowableValues")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let preferences: &[&'static str] = match target {
            PowerState::On => &["On", "ForceOn"],
            PowerState::Off => &["ForceOff", "GracefulShutdown"],
            PowerState::Rebooting => &["ForceRestart", "GracefulRestart"],
        };
        if allowed.is_empty() {
            return Ok(preferences[0]);
        }
        preferences
            .iter()
            .find(|p| allowed.contains(p))
            .copied()
            .ok_or_else(|| {
                DriverError::unsupported(format!(
                    "the system allows ResetType {allowed:?}, none of which turns it {}",
                    target.short()
                ))
            })
    }

    async fn reset(
        &self,
        client: &Client,
        system: &Value,
        target: PowerState,
    ) -> Result<(), DriverError> {
        let reset = Self::reset_type(system, target)?;
        let path = system
            .pointer("/Actions/#ComputerSystem.Reset/target")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(format!(
                "{}/Actions/ComputerSystem.Reset",
                client.system_path().await?
            ));
        let (status, text) = client
            .send(Method::POST, &path, Some(&json!({ "ResetType": reset })))
            .await?;
        if status.is_success() {
            return Ok(());
        }
        // 400/409 "already in that state" is success.
        if matches!(status, StatusCode::BAD_REQUEST | StatusCode::CONFLICT)
            && Self::power_of(&client.system().await?) == target
        {
            return Ok(());
        }
        Err(client.http_error("POST", &path, status, &text))
    }
}

#[async_trait]
impl Power for RedfishDriver {
    async fn get_power_state(&self, node: &Node) -> Result<PowerState, DriverError> {
        let client = self.client(node)?;
        Ok(Self::power_of(&client.system().await?))
    }

    async fn set_power_state(
        &self,
        node: &Node,
        target: PowerState,
        timeout: Duration,
    ) -> Result<(), DriverError> {
        let client = self.client(node)?;
        let system = client.system().await?;
        if Self::power_of(&system) == target {
            return Ok(());
        }
        self.reset(&client, &system, target).await?;
        let started = Instant::now();
        let mut last_request = Instant::now();
        let mut wait = self.timing.poll;
        loop {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.timing.poll * 4);
            let system = client.system().await?;
            if Self::power_of(&system) == target {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                return Err(DriverError::retryable(format!(
                    "the BMC {} did not report power {} within {}",
                    client.base,
                    target.short(),
                    humantime::format_duration(timeout)
                )));
            }
            // Some BMCs drop a request that arrives while an earlier change
            // is still applying: ask again now and then.
            if last_request.elapsed() >= Duration::from_secs(15) {
                self.reset(&client, &system, target).await?;
                last_request = Instant::now();
            }
        }
    }
}
