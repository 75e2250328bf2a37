//! fake-hardware: a BMC that lives in rivet's own state file, so every
//! converge path can run without hardware.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{DriverError, Management, Power};
use crate::model::node::Node;
use crate::store::records::FakeBmcRecord;
use crate::store::{Snapshot, Store};
use crate::vocab::{BootDevice, BootMode, PowerState};

/// Where fake BMCs keep their state.
pub trait FakeBmcs: Send + Sync {
    fn get(&self, host: &str) -> Result<FakeBmcRecord, DriverError>;
    fn put(&self, host: &str, record: &FakeBmcRecord) -> Result<(), DriverError>;
}

impl FakeBmcs for Store {
    fn get(&self, host: &str) -> Result<FakeBmcRecord, DriverError> {
        self.fake_bmc(host)
            .map(Option::unwrap_or_default)
            .map_err(|e| DriverError::retryable(e.to_string()))
    }

    fn put(&self, host: &str, record: &FakeBmcRecord) -> Result<(), DriverError> {
        self.put_fake_bmc(host, record)
            .map_err(|e| DriverError::retryable(e.to_string()))
    }
}

/// A read-only view, for `reconcile --dry-run --refresh`.
impl FakeBmcs for Snapshot {
    fn get(&self, host: &str) -> Result<FakeBmcRecord, DriverError> {
        Ok(self.fake_bmcs.get(host).cloned().unwrap_or_default())
    }

    fn put(&self, _host: &str, _record: &FakeBmcRecord) -> Result<(), DriverError> {
        Err(DriverError::invalid("a dry run changes nothing"))
    }
}

/// The fake power and management interfaces.
pub struct FakeDriver {
    bmcs: Arc<dyn FakeBmcs>,
}

impl FakeDriver {
    pub fn new(bmcs: Arc<dyn FakeBmcs>) -> Self {
        Self { bmcs }
    }

    fn host(node: &Node) -> &str {
        &node.bmc.address.host
    }
}

#[async_trait]
impl Power for FakeDriver {
    async fn get_power_state(&self, node: &Node) -> Result<PowerState, DriverError> {
        Ok(self.bmcs.get(Self::host(node))?.power)
    }

    async fn set_power_state(
        &self,
        node: &Node,
        target: PowerState,
        _timeout: Duration,
    ) -> Result<(), DriverError> {
        let mut bmc = self.bmcs.get(Self::host(node))?;
        if bmc.power != target {
            bmc.power = target;
            self.bmcs.put(Self::host(node), &bmc)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Management for FakeDriver {
    async fn get_boot_device(&self, node: &Node) -> Result<Option<BootDevice>, DriverError> {
        Ok(self.bmcs.get(Self::host(node))?.boot_device)
    }

    async fn set_boot_device(
        &self,
        node: &Node,
        device: BootDevice,
        _persistent: bool,
    ) -> Result<(), DriverError> {
        let mut bmc = self.bmcs.get(Self::host(node))?;
        bmc.boot_device = Some(device);
        self.bmcs.put(Self::host(node), &bmc)
    }

    async fn get_boot_mode(&self, node: &Node) -> Result<Option<BootMode>, DriverError> {
        Ok(self.bmcs.get(Self::host(node))?.boot_mode)
    }

    async fn set_boot_mode(&self, node: &Node, mode: BootMode) -> Result<(), DriverError> {
        let mut bmc = self.bmcs.get(Self::host(node))?;
        bmc.boot_mode = Some(mode);
        self.bmcs.put(Self::host(node), &bmc)
    }
}
