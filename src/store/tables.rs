//! Every redb table rivet keeps, with what its keys and values are.
//!
//! Values are JSON-encoded versioned records (`records.rs`), never ad hoc
//! tuples, so a field can be added without a migration.

use redb::TableDefinition;

/// Store metadata. Key: a setting name. Value: a number.
/// - `schema_version`: the layout of every other table (see `migrations`).
/// - `history_seq`: the last history sequence number handed out.
/// - `run_seq`: the last run id handed out.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Observed state of each managed node. Key: node name. Value: JSON
/// [`super::records::NodeRecord`].
pub const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");

/// The journal of each node's unfinished work: the operations it was
/// planned and the index of the next one. Present only while a node has
/// work in flight; a restart resumes from here. Key: node name. Value: JSON
/// [`super::records::JournalRecord`].
pub const JOURNALS: TableDefinition<&str, &[u8]> = TableDefinition::new("journals");

/// Append-only history of everything done to nodes. Key: global sequence
/// number (1, 2, 3 …, handed out without gaps; a node's oldest events
/// beyond `history_max_entries` are removed by pruning). Value: JSON
/// [`super::records::Event`].
pub const HISTORY: TableDefinition<u64, &[u8]> = TableDefinition::new("history");

/// `HISTORY` by node, so one node's events are read and pruned without
/// scanning everyone's (schema version 2). Key: (node name, sequence
/// number). Value: nothing. Written in the same transaction as the event.
pub const NODE_EVENTS: TableDefinition<(&str, u64), ()> = TableDefinition::new("node_events");

/// Converge runs. Key: run id. Value: JSON [`super::records::RunRecord`].
pub const RUNS: TableDefinition<u64, &[u8]> = TableDefinition::new("runs");

/// The declarations of the last converge that left no prune undone (one
/// that failed keeps the older ones, which still hold its node): each file's text (literal secrets blanked, as loaded) by its
/// path relative to the fleet directory. Replaced whole. What lets a node
/// removed from the files be pruned by a later run or a restarted daemon,
/// which no longer have its declaration. Key: path. Value: UTF-8 text.
pub const DECLARATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("declarations");

/// The power drift of each node that power sync has recorded and not yet
/// seen end, so an unchanged drift is recorded once, not on every sweep,
/// and a restarted daemon does not record it again. Key: node name. Value:
/// JSON [`super::records::DriftRecord`]. Created by its first write: a file
/// without it has no drift recorded.
pub const DRIFTS: TableDefinition<&str, &[u8]> = TableDefinition::new("drifts");

/// The agent channel of each node whose deploy ramdisk rivet is waiting
/// for or talking to (Ironic's `wait call-back` and the agent's deploy
/// steps), so a restarted conductor still answers its agent's heartbeats.
/// Key: node name. Value: JSON [`super::records::AgentRecord`]; the agent
/// token itself is never stored, only its SHA-256 digest. Created by its
/// first write: a file without it has no channel open.
pub const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
