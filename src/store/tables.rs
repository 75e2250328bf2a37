//! Every redb table rivet keeps, with what its keys and values are.
//!
//! Values are JSON-encoded versioned records (`records.rs`), never ad hoc
//! tuples, so a field can be added without a migration.

use redb::TableDefinition;

/// Store metadata. Key: a setting name. Value: a number.
/// - `schema_version`: the layout of every other table (see `migrations`).
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Observed state of each managed node. Key: node name. Value: JSON
/// [`super::records::NodeRecord`].
pub const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");

/// The BMC state of `fake://` nodes (the fake-hardware driver's "hardware").
/// Key: the fake BMC's host part (by default the node name). Value: JSON
/// [`super::records::FakeBmcRecord`].
pub const FAKE_BMC: TableDefinition<&str, &[u8]> = TableDefinition::new("fake_bmc");
