//! The ipmitool power interface: `power on|off`, confirmed by `power status`.

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::IpmiDriver;
use crate::driver::{DriverError, Power};
use crate::model::node::Node;
use crate::vocab::PowerState;

/// How long to wait between two power status polls, on top of the gap.
const POWER_POLL_PAUSE: Duration = Duration::from_millis(200);

impl IpmiDriver {
    /// `power status`.
    async fn power_status(&self, node: &Node) -> Result<PowerState, DriverError> {
        let out = self.run(node, &["power", "status"]).await?;
        parse_power(&out).ok_or_else(|| {
            DriverError::fatal(format!(
                "node {}: `ipmitool power status` answered `{}`",
                node.name,
                out.trim()
            ))
        })
    }

    /// Ask for on or off, then poll until the BMC reports it.
    async fn power_to(
        &self,
        node: &Node,
        target: PowerState,
        deadline: Instant,
    ) -> Result<(), DriverError> {
        let verb = if target == PowerState::On {
            "on"
        } else {
            "off"
        };
        self.run_change(node, &["power", verb]).await?;
        loop {
            if self.power_status(node).await? == target {
                return Ok(());
            }
            if Instant::now() + POWER_POLL_PAUSE >= deadline {
                return Err(DriverError::retryable(format!(
                    "node {}: asked for power {verb}, but the BMC still does not report it",
                    node.name
                )));
            }
            tokio::time::sleep(POWER_POLL_PAUSE).await;
        }
    }
}

#[async_trait]
impl Power for IpmiDriver {
    async fn get_power_state(&self, node: &Node) -> Result<PowerState, DriverError> {
        self.power_status(node).await
    }

    async fn set_power_state(
        &self,
        node: &Node,
        target: PowerState,
        timeout: Duration,
    ) -> Result<(), DriverError> {
        let deadline = Instant::now() + timeout;
        let now = self.power_status(node).await?;
        match target {
            PowerState::On | PowerState::Off if now == target => Ok(()),
            PowerState::On | PowerState::Off => self.power_to(node, target, deadline).await,
            // Ironic reboots as off, then on, each confirmed, rather than
            // `power cycle`, which BMCs refuse for a node that is off.
            PowerState::Rebooting => {
                if now != PowerState::Off {
                    self.power_to(node, PowerState::Off, deadline).await?;
                }
                self.power_to(node, PowerState::On, deadline).await
            }
        }
    }
}

fn parse_power(out: &str) -> Option<PowerState> {
    out.lines()
        .find_map(|line| line.trim().strip_prefix("Chassis Power is "))
        .and_then(|state| match state.trim() {
            "on" => Some(PowerState::On),
            "off" => Some(PowerState::Off),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_status_parses_on_and_off_only() {
        assert_eq!(parse_power("Chassis Power is on\n"), Some(PowerState::On));
        assert_eq!(parse_power("Chassis Power is off"), Some(PowerState::Off));
        assert_eq!(parse_power("Chassis Power is sleepy"), None);
        assert_eq!(parse_power(""), None);
    }
}
