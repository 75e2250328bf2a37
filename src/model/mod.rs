//! The domain: interface types, hardware types, the catalog of interface
//! implementations, composition, nodes, and the validated fleet.

pub mod catalog;
pub mod compose;
pub mod fleet;
pub mod hardware;
pub mod interface;
pub mod node;
pub mod step;
