//! Which implementation serves each composed interface name: one explicit
//! list, so "what can rivet drive" is answered by reading this file.

use std::sync::Arc;

use super::fake::{FakeBmcs, FakeDriver};
use super::{DriverError, Management, Power};
use crate::model::node::Node;
use crate::vocab::InterfaceType;

/// The implementations a converge or refresh uses.
pub struct Registry {
    fake: Arc<FakeDriver>,
}

impl Registry {
    pub fn new(fake_bmcs: Arc<dyn FakeBmcs>) -> Self {
        Self {
            fake: Arc::new(FakeDriver::new(fake_bmcs)),
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
}

fn not_yet(kind: InterfaceType, name: &str) -> DriverError {
    DriverError::unsupported(format!(
        "the {kind} interface `{name}` cannot be called by this build of rivet"
    ))
}
