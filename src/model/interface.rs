//! Interface types (defined in `vocab`, the shared file-format words).

pub use crate::vocab::{InterfaceType, PerInterface};
