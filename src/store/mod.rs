//! rivet's state file: one redb database per fleet (default
//! `.rivet/state.redb`). `tables.rs` lists every table; the schema version is
//! checked at open and old files are migrated by numbered functions.

pub mod records;
pub mod tables;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
};

use records::{AgentRecord, DriftRecord, Event, JournalRecord, NodeRecord, RunRecord};
use tables::{AGENTS, DECLARATIONS, DRIFTS, HISTORY, JOURNALS, META, NODE_EVENTS, NODES, RUNS};

/// The layout this build reads and writes.
pub const SCHEMA_VERSION: u64 = 2;

/// Page cache of an open store.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the state file {path} is in use by another rivet process{holder}; \
         wait for it or stop it, or ask a daemon with `rivet status --url`"
    )]
    Locked { path: PathBuf, holder: String },
    #[error(
        "the state file {path} has schema version {found}, newer than this rivet understands ({SCHEMA_VERSION}); upgrade rivet"
    )]
    TooNew { path: PathBuf, found: u64 },
    #[error("cannot use the state file {path}: {message}")]
    Other { path: PathBuf, message: String },
}

impl StoreError {
    fn other(path: &Path, err: impl std::fmt::Display) -> Self {
        Self::Other {
            path: path.to_path_buf(),
            message: err.to_string(),
        }
    }
}

/// Migrations, by the version they upgrade *to*. Version 1 is the first
/// layout: it only creates the tables.
fn migrate_to_1(txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(NODES)?;
    txn.open_table(JOURNALS)?;
    txn.open_table(HISTORY)?;
    txn.open_table(RUNS)?;
    Ok(())
}

/// Version 2 indexes history by node (`NODE_EVENTS`) and keeps the
/// declarations last converged (`DECLARATIONS`).
fn migrate_to_2(txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(DECLARATIONS)?;
    let history = txn.open_table(HISTORY)?;
    let mut index = txn.open_table(NODE_EVENTS)?;
    for entry in history.iter()? {
        let (seq, value) = entry?;
        // Only the node is needed; a record that does not parse is left out
        // of the index rather than failing the upgrade.
        #[derive(serde::Deserialize)]
        struct Owner {
            node: String,
        }
        if let Ok(owner) = serde_json::from_slice::<Owner>(value.value()) {
            index.insert((owner.node.as_str(), seq.value()), ())?;
        }
    }
    Ok(())
}

/// A numbered migration: brings the tables to its version.
type Migration = fn(&redb::WriteTransaction) -> Result<(), redb::Error>;

const MIGRATIONS: &[(u64, Migration)] = &[(1, migrate_to_1), (2, migrate_to_2)];

/// One change to the store; a batch of them commits atomically.
#[derive(Debug, Clone)]
pub enum Write {
    Node(String, NodeRecord),
    Journal(String, JournalRecord),
    ClearJournal(String),
    /// Appended with the next sequence number.
    Event(Event),
    Run(u64, RunRecord),
    /// The declarations just converged, replacing the kept ones: file
    /// texts by relative path.
    Declarations(Vec<(String, Arc<str>)>),
    /// A node's power drift, recorded or changed.
    Drift(String, DriftRecord),
    /// A node's power drift ended (or it is no longer managed).
    ClearDrift(String),
    /// A node's agent channel opened or changed.
    Agent(String, AgentRecord),
    /// A node's agent channel closed.
    ClearAgent(String),
}

/// Told about every committed batch of writes, after the commit.
type CommitObserver = Box<dyn Fn(&[Write]) + Send + Sync>;

/// The state file, open for reading and writing by this process alone.
pub struct Store {
    db: Database,
    path: PathBuf,
    /// Readers that keep copies (the API's node cache, metrics) stay
    /// current through these instead of reading the file again.
    observers: std::sync::RwLock<Vec<CommitObserver>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn map_open_error(path: &Path, err: redb::DatabaseError) -> StoreError {
    match err {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.to_path_buf(),
            holder: std::fs::read_to_string(holder_file(path))
                .ok()
                .and_then(|text| {
                    let (pid, command) = text.trim().split_once(' ')?;
                    Some(format!(", `{command}` (PID {pid})"))
                })
                .unwrap_or_default(),
        },
        other => StoreError::other(path, other),
    }
}

/// Beside the state file while a store holds it: `PID command`, so that a
/// refused second opener can say who holds it.
fn holder_file(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".holder");
    PathBuf::from(name)
}

/// `rivet reconcile`, `rivet daemon`, …: the program and its subcommand.
fn this_command() -> String {
    let mut args = std::env::args();
    let program = args
        .next()
        .map(|p| {
            Path::new(&p)
                .file_name()
                .map_or(p.clone(), |n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "rivet".to_string());
    match args.next() {
        Some(sub) if !sub.starts_with('-') => format!("{program} {sub}"),
        _ => program,
    }
}

/// Beside the state file while the process holding it serves the API: the
/// address it listens on, so that `rivet status` asks that process and no
/// other.
fn api_file(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".api");
    PathBuf::from(name)
}

/// The API address the holder of the state file at `path` recorded, if it
/// serves one.
pub fn api_address(path: &Path) -> Option<std::net::SocketAddr> {
    std::fs::read_to_string(api_file(path))
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(api_file(&self.path));
        let _ = std::fs::remove_file(holder_file(&self.path));
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

impl Store {
    /// Open (creating it and its directory if needed) and migrate. A second
    /// process opening the same file is refused at once.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::other(path, e))?;
        }
        // redb caches up to 1 GiB by default; rivet reads little and writes
        // mostly append-only history, so a small cache keeps the daemon lean.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| map_open_error(path, e))?;
        let store = Self {
            db,
            path: path.to_path_buf(),
            observers: Default::default(),
        };
        store.migrate()?;
        // Best effort: only the refusal message reads it.
        let _ = std::fs::write(
            holder_file(path),
            format!("{} {}\n", std::process::id(), this_command()),
        );
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record the address the API of this process listens on (see
    /// `api_address`); removed when the store closes.
    pub fn record_api_address(&self, addr: std::net::SocketAddr) -> Result<(), StoreError> {
        std::fs::write(api_file(&self.path), format!("{addr}\n"))
            .map_err(|e| StoreError::other(&self.path, e))
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::other(&self.path, e.into())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let found = {
            let meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.get("schema_version")
                .map_err(|e| self.err(e))?
                .map(|v| v.value())
                .unwrap_or(0)
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found,
            });
        }
        for (version, migration) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
            migration(&txn).map_err(|e| self.err(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.insert("schema_version", *version)
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Commit a batch of writes in one durable transaction. Returns the
    /// sequence numbers given to the batch's events, in order.
    pub fn apply(&self, writes: &[Write]) -> Result<Vec<u64>, StoreError> {
        self.apply_as(writes, redb::Durability::Immediate)
    }

    /// Commit a batch of copies kept for reading (a cluster peer's records,
    /// which etcd holds for good) without waiting for the disk: a crash may
    /// lose them, and the next start reads them from etcd again. The next
    /// durable commit persists them.
    pub fn apply_copies(&self, writes: &[Write]) -> Result<Vec<u64>, StoreError> {
        self.apply_as(writes, redb::Durability::None)
    }

    fn apply_as(
        &self,
        writes: &[Write],
        durability: redb::Durability,
    ) -> Result<Vec<u64>, StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(durability).map_err(|e| self.err(e))?;
        let mut seqs = Vec::new();
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let mut nodes = txn.open_table(NODES).map_err(|e| self.err(e))?;
            let mut journals = txn.open_table(JOURNALS).map_err(|e| self.err(e))?;
            let mut history = txn.open_table(HISTORY).map_err(|e| self.err(e))?;
            let mut index = txn.open_table(NODE_EVENTS).map_err(|e| self.err(e))?;
            let mut runs = txn.open_table(RUNS).map_err(|e| self.err(e))?;
            let mut declarations = txn.open_table(DECLARATIONS).map_err(|e| self.err(e))?;
            let mut drifts = txn.open_table(DRIFTS).map_err(|e| self.err(e))?;
            let mut agents = txn.open_table(AGENTS).map_err(|e| self.err(e))?;
            let mut seq = meta
                .get("history_seq")
                .map_err(|e| self.err(e))?
                .map(|v| v.value())
                .unwrap_or(0);
            for write in writes {
                match write {
                    Write::Node(name, record) => {
                        nodes
                            .insert(name.as_str(), json(record).as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    Write::Journal(name, record) => {
                        journals
                            .insert(name.as_str(), json(record).as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    Write::ClearJournal(name) => {
                        journals.remove(name.as_str()).map_err(|e| self.err(e))?;
                    }
                    Write::Event(event) => {
                        seq += 1;
                        let mut event = event.clone();
                        event.seq = seq;
                        history
                            .insert(seq, json(&event).as_slice())
                            .map_err(|e| self.err(e))?;
                        index
                            .insert((event.node.as_str(), seq), ())
                            .map_err(|e| self.err(e))?;
                        seqs.push(seq);
                    }
                    Write::Run(id, record) => {
                        runs.insert(*id, json(record).as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    Write::Declarations(files) => {
                        declarations.retain(|_, _| false).map_err(|e| self.err(e))?;
                        for (name, text) in files {
                            declarations
                                .insert(name.as_str(), text.as_bytes())
                                .map_err(|e| self.err(e))?;
                        }
                    }
                    Write::Drift(name, record) => {
                        drifts
                            .insert(name.as_str(), json(record).as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    Write::ClearDrift(name) => {
                        drifts.remove(name.as_str()).map_err(|e| self.err(e))?;
                    }
                    Write::Agent(name, record) => {
                        agents
                            .insert(name.as_str(), json(record).as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    Write::ClearAgent(name) => {
                        agents.remove(name.as_str()).map_err(|e| self.err(e))?;
                    }
                }
            }
            meta.insert("history_seq", seq).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))?;
        let observers = self.observers.read().unwrap_or_else(|e| e.into_inner());
        for observe in observers.iter() {
            observe(writes);
        }
        Ok(seqs)
    }

    /// Call `f` with every batch committed from now on.
    pub fn observe(&self, f: impl Fn(&[Write]) + Send + Sync + 'static) {
        self.observers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(f));
    }

    /// A new run id.
    pub fn next_run_id(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let id = {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let id = meta
                .get("run_seq")
                .map_err(|e| self.err(e))?
                .map(|v| v.value())
                .unwrap_or(0)
                + 1;
            meta.insert("run_seq", id).map_err(|e| self.err(e))?;
            id
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(id)
    }

    /// Make the next run id larger than `id`: a journal taken over from
    /// another daemon keeps its run id, and this daemon's later runs of that
    /// node must not reuse it.
    pub fn raise_run_id(&self, id: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let now = meta
                .get("run_seq")
                .map_err(|e| self.err(e))?
                .map(|v| v.value())
                .unwrap_or(0);
            if id > now {
                meta.insert("run_seq", id).map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn put_node(&self, name: &str, record: &NodeRecord) -> Result<(), StoreError> {
        self.apply(&[Write::Node(name.to_string(), record.clone())])
            .map(drop)
    }

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        self.db
            .begin_read()
            .map_err(|e| self.err(redb::Error::from(e)))
    }

    pub fn node(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        get_json(&self.read()?, NODES, name, &self.path)
    }

    pub fn nodes(&self) -> Result<BTreeMap<String, NodeRecord>, StoreError> {
        read_all(&self.read()?, NODES, &self.path)
    }

    /// One node's unfinished work, if it has any.
    pub fn journal(&self, name: &str) -> Result<Option<JournalRecord>, StoreError> {
        get_json(&self.read()?, JOURNALS, name, &self.path)
    }

    pub fn journals(&self) -> Result<BTreeMap<String, JournalRecord>, StoreError> {
        read_all(&self.read()?, JOURNALS, &self.path)
    }

    /// Every node's power drift that power sync recorded and has not seen end.
    pub fn drifts(&self) -> Result<BTreeMap<String, DriftRecord>, StoreError> {
        read_all(&self.read()?, DRIFTS, &self.path)
    }

    /// Every node's open agent channel.
    pub fn agents(&self) -> Result<BTreeMap<String, AgentRecord>, StoreError> {
        read_all(&self.read()?, AGENTS, &self.path)
    }

    /// The whole history, oldest first.
    pub fn history(&self) -> Result<Vec<Event>, StoreError> {
        read_history_from(&self.read()?, &self.path, None, usize::MAX)
    }

    /// The last `limit` events of one node, oldest first.
    pub fn node_history(&self, node: &str, limit: usize) -> Result<Vec<Event>, StoreError> {
        read_history_from(&self.read()?, &self.path, Some(node), limit)
    }

    /// The declarations kept by the last converge that left no prune undone.
    pub fn declarations(&self) -> Result<BTreeMap<String, String>, StoreError> {
        declarations_from(&self.read()?, &self.path)
    }

    /// Remove each node's oldest events beyond the newest `keep` (`nodes`,
    /// or every node with history). Returns how many were removed.
    pub fn prune_history(&self, keep: usize, nodes: Option<&[String]>) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let mut removed = 0;
        {
            let mut history = txn.open_table(HISTORY).map_err(|e| self.err(e))?;
            let mut index = txn.open_table(NODE_EVENTS).map_err(|e| self.err(e))?;
            let counts = event_counts(&index, nodes).map_err(|e| self.err(e))?;
            for (node, count) in counts.into_iter().filter(|(_, c)| *c > keep) {
                let excess: Vec<u64> = index
                    .range((node.as_str(), 0)..=(node.as_str(), u64::MAX))
                    .map_err(|e| self.err(e))?
                    .take(count - keep)
                    .map(|entry| entry.map(|(k, _)| k.value().1))
                    .collect::<Result<_, _>>()
                    .map_err(|e| self.err(e))?;
                for seq in excess {
                    index
                        .remove((node.as_str(), seq))
                        .map_err(|e| self.err(e))?;
                    history.remove(seq).map_err(|e| self.err(e))?;
                    removed += 1;
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(removed)
    }

    pub fn runs(&self) -> Result<BTreeMap<u64, RunRecord>, StoreError> {
        let err = |e: redb::Error| StoreError::other(&self.path, e);
        let txn = self.read()?;
        let table = txn.open_table(RUNS).map_err(|e| err(e.into()))?;
        let mut out = BTreeMap::new();
        for entry in table.iter().map_err(|e| err(e.into()))? {
            let (k, v) = entry.map_err(|e| err(e.into()))?;
            let record =
                serde_json::from_slice(v.value()).map_err(|e| StoreError::other(&self.path, e))?;
            out.insert(k.value(), record);
        }
        Ok(out)
    }
}

/// How many events each node has in the index: the given nodes, or all.
fn event_counts(
    index: &impl ReadableTable<(&'static str, u64), ()>,
    nodes: Option<&[String]>,
) -> Result<BTreeMap<String, usize>, redb::Error> {
    let mut counts = BTreeMap::new();
    match nodes {
        Some(nodes) => {
            for node in nodes {
                let n = index
                    .range((node.as_str(), 0)..=(node.as_str(), u64::MAX))?
                    .count();
                counts.insert(node.clone(), n);
            }
        }
        None => {
            for entry in index.iter()? {
                let (key, _) = entry?;
                let node = key.value().0;
                match counts.get_mut(node) {
                    Some(n) => *n += 1,
                    None => {
                        counts.insert(node.to_string(), 1);
                    }
                }
            }
        }
    }
    Ok(counts)
}

fn read_history_from(
    txn: &ReadTransaction,
    path: &Path,
    node: Option<&str>,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let err = |e: redb::Error| StoreError::other(path, e);
    let Some(table) = open_existing(txn, HISTORY, path)? else {
        return Ok(Vec::new());
    };
    let decode = |bytes: &[u8]| -> Result<Event, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::other(path, e))
    };
    // One node's events through the index; a state file from before it
    // (read without upgrading it) falls back to the scan below.
    if let Some(node) = node
        && let Some(index) = open_existing(txn, NODE_EVENTS, path)?
    {
        let mut out = Vec::new();
        let newest_first = index
            .range((node, 0)..=(node, u64::MAX))
            .map_err(|e| err(e.into()))?
            .rev()
            .take(limit);
        for entry in newest_first {
            let (key, _) = entry.map_err(|e| err(e.into()))?;
            if let Some(v) = table.get(key.value().1).map_err(|e| err(e.into()))? {
                out.push(decode(v.value())?);
            }
        }
        out.reverse();
        return Ok(out);
    }
    let mut out = Vec::new();
    // Newest first, so a per-node limit stops early.
    for entry in table.iter().map_err(|e| err(e.into()))?.rev() {
        if out.len() >= limit {
            break;
        }
        let (_, v) = entry.map_err(|e| err(e.into()))?;
        let event = decode(v.value())?;
        if node.is_none_or(|n| n == event.node) {
            out.push(event);
        }
    }
    out.reverse();
    Ok(out)
}

/// A table as a read transaction sees it; None when no write created it yet
/// (a new or older state file read without upgrading it).
fn open_existing<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<K, V>,
    path: &Path,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(StoreError::other(path, redb::Error::from(e))),
    }
}

fn get_json<T: serde::de::DeserializeOwned>(
    txn: &ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
    path: &Path,
) -> Result<Option<T>, StoreError> {
    let err = |e: redb::Error| StoreError::other(path, e);
    let Some(t) = open_existing(txn, table, path)? else {
        return Ok(None);
    };
    match t.get(key).map_err(|e| err(e.into()))? {
        Some(v) => serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|e| StoreError::other(path, format!("record `{key}`: {e}"))),
        None => Ok(None),
    }
}

/// Every record of a table keyed by name, as JSON.
fn read_all<T: serde::de::DeserializeOwned>(
    txn: &ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
    path: &Path,
) -> Result<BTreeMap<String, T>, StoreError> {
    read_table(txn, table, path, |key, bytes| {
        serde_json::from_slice(bytes)
            .map_err(|e| StoreError::other(path, format!("record `{key}`: {e}")))
    })
}

/// Every entry of a table keyed by name, each value decoded by `decode`;
/// a table not created yet is empty.
fn read_table<T>(
    txn: &ReadTransaction,
    table: TableDefinition<&str, &[u8]>,
    path: &Path,
    decode: impl Fn(&str, &[u8]) -> Result<T, StoreError>,
) -> Result<BTreeMap<String, T>, StoreError> {
    let err = |e: redb::Error| StoreError::other(path, e);
    let Some(t) = open_existing(txn, table, path)? else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for entry in t.iter().map_err(|e| err(e.into()))? {
        let (k, v) = entry.map_err(|e| err(e.into()))?;
        out.insert(k.value().to_string(), decode(k.value(), v.value())?);
    }
    Ok(out)
}

/// Read a state file without holding or changing it; None when there is
/// no file.
fn read_file<T>(
    path: &Path,
    read: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let txn = match ReadOnlyDatabase::open(path) {
        Ok(db) => db.begin_read(),
        // A file left by a process that died needs redb's repair, which
        // only a writable open runs; the data it holds is unchanged.
        Err(redb::DatabaseError::RepairAborted) => Database::open(path)
            .map_err(|e| map_open_error(path, e))?
            .begin_read(),
        Err(e) => return Err(map_open_error(path, e)),
    }
    .map_err(|e| StoreError::other(path, e))?;
    read(&txn).map(Some)
}

/// Read history from a state file without holding it: the node's last
/// `limit` events (all nodes when `node` is None), oldest first.
pub fn read_history(
    path: &Path,
    node: Option<&str>,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    read_file(path, |txn| read_history_from(txn, path, node, limit)).map(Option::unwrap_or_default)
}

/// The declarations kept by the last converge that left no prune undone
/// (empty when there was none), read without holding the state file.
pub fn read_declarations(path: &Path) -> Result<BTreeMap<String, String>, StoreError> {
    read_file(path, |txn| declarations_from(txn, path)).map(Option::unwrap_or_default)
}

fn declarations_from(
    txn: &ReadTransaction,
    path: &Path,
) -> Result<BTreeMap<String, String>, StoreError> {
    read_table(txn, DECLARATIONS, path, |_, text| {
        Ok(String::from_utf8_lossy(text).into_owned())
    })
}

/// A read-only view of a state file, for planning without changing anything.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub nodes: BTreeMap<String, NodeRecord>,
    pub journals: BTreeMap<String, JournalRecord>,
}

impl Snapshot {
    pub fn empty() -> Self {
        Self::default()
    }

    /// Read a state file without creating or changing it. A missing file is
    /// an empty snapshot: every node is `enroll` with unknown power.
    pub fn read(path: &Path) -> Result<Self, StoreError> {
        read_file(path, |txn| Self::from_txn(txn, path)).map(Option::unwrap_or_default)
    }

    fn from_txn(txn: &ReadTransaction, path: &Path) -> Result<Self, StoreError> {
        let version = match open_existing(txn, META, path)? {
            Some(meta) => meta
                .get("schema_version")
                .map_err(|e| StoreError::other(path, e))?
                .map(|v| v.value())
                .unwrap_or(0),
            None => 0,
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
            });
        }
        Ok(Self {
            nodes: read_all(txn, NODES, path)?,
            journals: read_all(txn, JOURNALS, path)?,
        })
    }

    /// A snapshot of an open store (the daemon plans from its own handle).
    pub fn of(store: &Store) -> Result<Self, StoreError> {
        Self::from_txn(&store.read()?, &store.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    #[test]
    fn a_second_open_of_the_same_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let first = Store::open(&path).unwrap();
        match Store::open(&path) {
            Err(e @ StoreError::Locked { .. }) => {
                let message = e.to_string();
                assert!(
                    message.contains(&format!("(PID {})", std::process::id())),
                    "{message}"
                );
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        assert!(
            !holder_file(&path).exists(),
            "the holder note goes with the store"
        );
    }

    #[test]
    fn the_recorded_api_address_lasts_as_long_as_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let store = Store::open(&path).unwrap();
        assert_eq!(api_address(&path), None);
        let addr: std::net::SocketAddr = "127.0.0.1:47113".parse().unwrap();
        store.record_api_address(addr).unwrap();
        assert_eq!(api_address(&path), Some(addr));
        drop(store);
        assert_eq!(api_address(&path), None, "the address goes with the store");
    }

    #[test]
    fn records_round_trip_and_snapshot_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Store::open(&path).unwrap();
            let mut rec = NodeRecord::enrolled("u-1", "fake-hardware");
            rec.provision_state = ProvisionStateAlias::Active;
            store.put_node("n1", &rec).unwrap();
            assert_eq!(store.node("n1").unwrap(), Some(rec));
        }
        let snap = Snapshot::read(&path).unwrap();
        assert_eq!(
            snap.nodes["n1"].provision_state,
            ProvisionStateAlias::Active
        );
        assert!(
            Snapshot::read(&dir.path().join("missing.redb"))
                .unwrap()
                .nodes
                .is_empty()
        );
        assert!(!dir.path().join("missing.redb").exists());
    }

    use crate::vocab::ProvisionState as ProvisionStateAlias;

    #[test]
    fn history_sequence_numbers_have_no_gaps_across_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let event = |node: &str| Event {
            seq: 0,
            node: node.to_string(),
            run_id: None,
            op_index: None,
            action: "power on".to_string(),
            outcome: records::Outcome::Succeeded,
            protocol: None,
            duration_ms: None,
            detail: None,
            at: "2026-01-01T00:00:00Z".to_string(),
        };
        assert_eq!(
            store
                .apply(&[Write::Event(event("a")), Write::Event(event("b"))])
                .unwrap(),
            [1, 2]
        );
        assert_eq!(store.apply(&[Write::Event(event("a"))]).unwrap(), [3]);
        let seqs: Vec<u64> = store.history().unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        let a: Vec<u64> = store
            .node_history("a", 10)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(a, [1, 3]);
        assert_eq!(store.node_history("a", 1).unwrap()[0].seq, 3);
    }

    fn event(node: &str, action: &str) -> Event {
        Event::note(
            node,
            action,
            records::Outcome::Noted,
            "",
            "2026-01-01T00:00:00Z".into(),
        )
    }

    fn actions(events: Vec<Event>) -> Vec<String> {
        events.into_iter().map(|e| e.action).collect()
    }

    #[test]
    fn pruning_keeps_each_nodes_newest_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        for i in 0..6 {
            store
                .apply(&[
                    Write::Event(event("a", &format!("a{i}"))),
                    Write::Event(event("b", &format!("b{i}"))),
                ])
                .unwrap();
        }
        store.apply(&[Write::Event(event("c", "c0"))]).unwrap();
        // Only the named nodes.
        assert_eq!(store.prune_history(4, Some(&["a".into()])).unwrap(), 2);
        assert_eq!(
            actions(store.node_history("a", 100).unwrap()),
            ["a2", "a3", "a4", "a5"]
        );
        assert_eq!(store.node_history("b", 100).unwrap().len(), 6);
        // Every node; one under the limit keeps all it has.
        assert_eq!(store.prune_history(2, None).unwrap(), 2 + 4);
        assert_eq!(actions(store.node_history("a", 100).unwrap()), ["a4", "a5"]);
        assert_eq!(actions(store.node_history("b", 100).unwrap()), ["b4", "b5"]);
        assert_eq!(actions(store.node_history("c", 100).unwrap()), ["c0"]);
        assert_eq!(store.history().unwrap().len(), 5);
        assert_eq!(store.prune_history(2, None).unwrap(), 0);
        // Numbering goes on after the newest, never reusing a removed number.
        let next = store.apply(&[Write::Event(event("a", "a6"))]).unwrap();
        assert_eq!(next, [14]);
    }

    #[test]
    fn a_version_1_state_file_gets_its_history_indexed_by_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            // The layout version 1 wrote: history without the node index.
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            migrate_to_1(&txn).unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("schema_version", 1).unwrap();
                meta.insert("history_seq", 3).unwrap();
                let mut history = txn.open_table(HISTORY).unwrap();
                for (seq, node) in [(1, "a"), (2, "b"), (3, "a")] {
                    let mut e = event(node, &format!("{node}{seq}"));
                    e.seq = seq;
                    history.insert(seq, json(&e).as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        // Reading without upgrading falls back to scanning.
        assert_eq!(
            actions(read_history(&path, Some("a"), 10).unwrap()),
            ["a1", "a3"]
        );
        let store = Store::open(&path).unwrap();
        let txn = store.db.begin_read().unwrap();
        let index = txn.open_table(NODE_EVENTS).unwrap();
        assert_eq!(ReadableTableMetadata::len(&index).unwrap(), 3);
        assert_eq!(actions(store.node_history("a", 10).unwrap()), ["a1", "a3"]);
        assert_eq!(store.prune_history(1, None).unwrap(), 1);
        assert_eq!(actions(store.node_history("a", 10).unwrap()), ["a3"]);
    }
}
