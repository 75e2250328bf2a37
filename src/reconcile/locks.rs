//! Per-node exclusive locks: one converge run or exclusive passthru call per
//! node at a time. Behind a trait so a fleet sharded across several daemons
//! can hold them in a distributed store instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Who may work on which node.
pub trait NodeLocks: Send + Sync {
    /// Take the node's lock for `purpose`, or say who holds it.
    fn try_lock(&self, node: &str, purpose: &str) -> Result<NodeGuard, String>;
    /// What holds the node's lock now, if anything.
    fn holder(&self, node: &str) -> Option<String>;
}

/// Held while working on a node; the lock is released on drop.
pub struct NodeGuard {
    release: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// Locks held in this process: the default, for one daemon.
#[derive(Default, Clone)]
pub struct LocalLocks {
    held: Arc<Mutex<HashMap<String, String>>>,
}

impl NodeLocks for LocalLocks {
    fn try_lock(&self, node: &str, purpose: &str) -> Result<NodeGuard, String> {
        let mut held = self.held.lock().expect("lock table");
        if let Some(holder) = held.get(node) {
            return Err(holder.clone());
        }
        held.insert(node.to_string(), purpose.to_string());
        let table = Arc::clone(&self.held);
        let node = node.to_string();
        Ok(NodeGuard {
            release: Some(Box::new(move || {
                table.lock().expect("lock table").remove(&node);
            })),
        })
    }

    fn holder(&self, node: &str) -> Option<String> {
        self.held.lock().expect("lock table").get(node).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_names_its_holder_until_dropped() {
        let locks = LocalLocks::default();
        let guard = locks.try_lock("n1", "deploy").unwrap();
        assert_eq!(
            locks.try_lock("n1", "passthru").err().as_deref(),
            Some("deploy")
        );
        assert!(locks.try_lock("n2", "deploy").is_ok());
        drop(guard);
        assert!(locks.try_lock("n1", "passthru").is_ok());
        assert_eq!(locks.holder("n1"), None);
    }
}
