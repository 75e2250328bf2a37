//! rivet's state file: one redb database per fleet (default
//! `.rivet/state.redb`). `tables.rs` lists every table; the schema version is
//! checked at open and old files are migrated by numbered functions.

pub mod records;
pub mod tables;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable};

use records::{FakeBmcRecord, NodeRecord};
use tables::{FAKE_BMC, META, NODES};

/// The layout this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the state file {path} is in use by another rivet process (a running `rivet daemon`?); \
         stop it, or ask it with `rivet status --url`"
    )]
    Locked { path: PathBuf },
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
    txn.open_table(FAKE_BMC)?;
    Ok(())
}

/// A numbered migration: brings the tables to its version.
type Migration = fn(&redb::WriteTransaction) -> Result<(), redb::Error>;

const MIGRATIONS: &[(u64, Migration)] = &[(1, migrate_to_1)];

/// The state file, open for reading and writing by this process alone.
pub struct Store {
    db: Database,
    path: PathBuf,
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
        },
        other => StoreError::other(path, other),
    }
}

impl Store {
    /// Open (creating it and its directory if needed) and migrate.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::other(path, e))?;
        }
        let db = Database::create(path).map_err(|e| map_open_error(path, e))?;
        let store = Self {
            db,
            path: path.to_path_buf(),
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let err = |e: redb::Error| StoreError::other(&self.path, e);
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        let found = {
            let meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            meta.get("schema_version")
                .map_err(|e| err(e.into()))?
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
            migration(&txn).map_err(err)?;
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            meta.insert("schema_version", *version)
                .map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))
    }

    pub fn put_node(&self, name: &str, record: &NodeRecord) -> Result<(), StoreError> {
        self.put_json(NODES, name, record)
    }

    pub fn node(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        self.get_json(NODES, name)
    }

    pub fn nodes(&self) -> Result<BTreeMap<String, NodeRecord>, StoreError> {
        read_all(&self.db, NODES, &self.path)
    }

    pub fn put_fake_bmc(&self, host: &str, record: &FakeBmcRecord) -> Result<(), StoreError> {
        self.put_json(FAKE_BMC, host, record)
    }

    pub fn fake_bmc(&self, host: &str) -> Result<Option<FakeBmcRecord>, StoreError> {
        self.get_json(FAKE_BMC, host)
    }

    fn put_json<T: serde::Serialize>(
        &self,
        table: redb::TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let err = |e: redb::Error| StoreError::other(&self.path, e);
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::other(&self.path, e))?;
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut t = txn.open_table(table).map_err(|e| err(e.into()))?;
            t.insert(key, bytes.as_slice()).map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))
    }

    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        table: redb::TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        get_json(&self.db, table, key, &self.path)
    }
}

fn get_json<T: serde::de::DeserializeOwned>(
    db: &impl ReadableDatabase,
    table: redb::TableDefinition<&str, &[u8]>,
    key: &str,
    path: &Path,
) -> Result<Option<T>, StoreError> {
    let err = |e: redb::Error| StoreError::other(path, e);
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let t = match txn.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(err(e.into())),
    };
    match t.get(key).map_err(|e| err(e.into()))? {
        Some(v) => serde_json::from_slice(v.value())
            .map(Some)
            .map_err(|e| StoreError::other(path, format!("record `{key}`: {e}"))),
        None => Ok(None),
    }
}

fn read_all<T: serde::de::DeserializeOwned>(
    db: &impl ReadableDatabase,
    table: redb::TableDefinition<&str, &[u8]>,
    path: &Path,
) -> Result<BTreeMap<String, T>, StoreError> {
    let err = |e: redb::Error| StoreError::other(path, e);
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let t = match txn.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
        Err(e) => return Err(err(e.into())),
    };
    let mut out = BTreeMap::new();
    for entry in t.iter().map_err(|e| err(e.into()))? {
        let (k, v) = entry.map_err(|e| err(e.into()))?;
        let record = serde_json::from_slice(v.value())
            .map_err(|e| StoreError::other(path, format!("record `{}`: {e}", k.value())))?;
        out.insert(k.value().to_string(), record);
    }
    Ok(out)
}

/// A read-only view of a state file, for planning without changing anything.
pub struct Snapshot {
    pub nodes: BTreeMap<String, NodeRecord>,
    pub fake_bmcs: BTreeMap<String, FakeBmcRecord>,
}

impl Snapshot {
    pub fn empty() -> Self {
        Self {
            nodes: BTreeMap::new(),
            fake_bmcs: BTreeMap::new(),
        }
    }

    /// Read a state file without creating or changing it. A missing file is
    /// an empty snapshot: every node is `enroll` with unknown power.
    pub fn read(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Ok(Self::empty());
        }
        let db = ReadOnlyDatabase::open(path).map_err(|e| map_open_error(path, e))?;
        Self::from_db(&db, path)
    }

    fn from_db(db: &impl ReadableDatabase, path: &Path) -> Result<Self, StoreError> {
        let err = |e: redb::Error| StoreError::other(path, e);
        let txn = db.begin_read().map_err(|e| err(e.into()))?;
        let version = match txn.open_table(META) {
            Ok(meta) => meta
                .get("schema_version")
                .map_err(|e| err(e.into()))?
                .map(|v| v.value())
                .unwrap_or(0),
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(err(e.into())),
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
            });
        }
        Ok(Self {
            nodes: read_all(db, NODES, path)?,
            fake_bmcs: read_all(db, FAKE_BMC, path)?,
        })
    }

    /// A snapshot of an open store (the daemon plans from its own handle).
    pub fn of(store: &Store) -> Result<Self, StoreError> {
        Self::from_db(&store.db, &store.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_the_same_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let _first = Store::open(&path).unwrap();
        match Store::open(&path) {
            Err(StoreError::Locked { .. }) => {}
            other => panic!("expected Locked, got {other:?}"),
        }
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
}
