//! The on-disk conversation store: every session and project template, in one [redb](https://www.redb.org) file,
//! so conversations survive a restart.
//!
//! # File layout
//! One file, `<state dir>/sessions.redb` ([`Store::file_in`]). [`Store::open`] creates the state directory (mode
//! 0700, parents too) when missing and the file when missing or empty (redb file format v3, which redb 3.x also
//! reads). The file is locked (`flock`) while a [`Store`] is open: a second open, from this process or another,
//! fails with [`StoreError::InUse`].
//!
//! # Tables
//! - `meta`: `&str → u32`; `"format_version"` holds the store's format version, written when the store is
//!   created.
//! - `sessions`: `&[u8] → &[u8]`; the key encodes `(project, session)` as the project's byte length (u32,
//!   big-endian), the project's bytes, then the session's bytes: unambiguous for any names, and one project's
//!   sessions are one key range (project `a` shares no key prefix with project `ab`). The value is the
//!   [`StoredSession`], whole, as JSON.
//! - `templates`: `&str → &str`, project → the project-wide system prompt.
//!
//! # Format version policy
//! [`FORMAT_VERSION`] is the version this build writes and reads. A store with a higher version is refused
//! ([`StoreError::NewerFormat`]), never read or rewritten; a change of the layout above or of the record encoding
//! that an older build would misread takes a new version (and this build then reads the older ones it knows). A
//! redb file without the version (a non-empty file that is not a session store) is [`StoreError::Corrupt`].
//!
//! # Errors and recovery
//! No error deletes, truncates or rewrites the file: a file that is not a redb database, that redb finds corrupt,
//! or that holds a record that does not decode is refused ([`StoreError::Corrupt`]), and the operator decides.
//! The one write an open may make to an existing store is redb's own repair after an unclean shutdown, which
//! rebuilds its allocator state and keeps every committed transaction.
//!
//! # Durability
//! [`Store::write`] applies a [`Batch`] in one write transaction committed with
//! [`redb::Durability::Immediate`]: once `write` returns `Ok`, the batch is on disk (fsync'd). Its parts apply in
//! the order [`Batch`] documents: project-wide deletes, upserts, deletes, templates. A crash (power loss,
//! SIGKILL) mid-write leaves the previous committed state: the next open finds every batch whose `write`
//! returned, and a batch whose `write` did not return either whole or not at all.
//!
//! All methods block on disk I/O: call them from `spawn_blocking` (or a thread of their own), never on an async
//! worker.

mod error;
mod record;

pub use error::StoreError;
pub use record::{Batch, Recovered, StoredOwner, StoredSession, StoredTurn, WriteStats};

use record::{decode_key, prefix_end, project_prefix, session_key};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The store's format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The name of the file inside the state directory.
const FILE_NAME: &str = "sessions.redb";

/// redb's page cache (its default is 1 GiB). The store is read whole once, at open, and then only written.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
const FORMAT_VERSION_KEY: &str = "format_version";
const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
const TEMPLATES: TableDefinition<&str, &str> = TableDefinition::new("templates");

/// A handle to the open store; clones share the one database (and its file lock, released when the last clone is
/// dropped). All methods are blocking.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Database,
    /// The file, `dir/sessions.redb`.
    path: PathBuf,
}

impl Store {
    /// The file inside `dir`: `dir/sessions.redb`.
    pub fn file_in(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }

    /// Create `dir` (mode 0700, parents too) if missing, open or create the database, check its format version,
    /// and read everything back. Errors name the path.
    pub fn open(dir: &Path) -> Result<(Store, Recovered), StoreError> {
        create_dir(dir)?;
        let path = Self::file_in(dir);
        let db = Database::builder()
            .create_with_file_format_v3(true)
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| StoreError::from_database(&path, e))?;
        let store = Store {
            inner: Arc::new(Inner { db, path }),
        };
        store.check_format()?;
        let recovered = store.read_all()?;
        Ok((store, recovered))
    }

    /// Apply `batch` in one write transaction (its parts in the order [`Batch`] documents), fsync'd before this
    /// returns. An empty batch writes nothing. On an error nothing of the batch is applied.
    pub fn write(&self, batch: &Batch) -> Result<WriteStats, StoreError> {
        let mut stats = WriteStats {
            sessions_written: 0,
            deleted: 0,
            bytes: 0,
        };
        if batch.is_empty() {
            return Ok(stats);
        }
        let path = self.path();
        let txn = self.begin_durable()?;
        {
            let mut sessions = txn.open_table(SESSIONS).map_err(|e| StoreError::from_table(path, e))?;
            for project in &batch.delete_projects {
                let prefix = project_prefix(project);
                let end = prefix_end(&prefix);
                let range = (
                    Bound::Included(prefix.as_slice()),
                    end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
                );
                sessions
                    .retain_in::<&[u8], _>(range, |_, _| {
                        stats.deleted += 1;
                        false
                    })
                    .map_err(|e| StoreError::from_storage(path, e))?;
            }
            for session in &batch.upserts {
                let key = session_key(&session.project, &session.session);
                let value = serde_json::to_vec(session).map_err(|e| StoreError::io(path, e))?;
                sessions
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(|e| StoreError::from_storage(path, e))?;
                stats.sessions_written += 1;
                stats.bytes += (key.len() + value.len()) as u64;
            }
            for (project, session) in &batch.deletes {
                let key = session_key(project, session);
                if sessions
                    .remove(key.as_slice())
                    .map_err(|e| StoreError::from_storage(path, e))?
                    .is_some()
                {
                    stats.deleted += 1;
                }
            }
            let mut templates = txn.open_table(TEMPLATES).map_err(|e| StoreError::from_table(path, e))?;
            for (project, prompt) in &batch.templates {
                match prompt {
                    Some(prompt) => {
                        templates
                            .insert(project.as_str(), prompt.as_str())
                            .map_err(|e| StoreError::from_storage(path, e))?;
                        stats.bytes += (project.len() + prompt.len()) as u64;
                    }
                    None => {
                        templates
                            .remove(project.as_str())
                            .map_err(|e| StoreError::from_storage(path, e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| StoreError::from_commit(path, e))?;
        Ok(stats)
    }

    /// The database file (`dir/sessions.redb`).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Check the format version; on a store with no tables at all (just created, or an empty redb file), write it.
    fn check_format(&self) -> Result<(), StoreError> {
        let path = self.path();
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(|e| StoreError::from_transaction(path, e))?;
        match txn.open_table(META) {
            Ok(meta) => {
                let found = meta
                    .get(FORMAT_VERSION_KEY)
                    .map_err(|e| StoreError::from_storage(path, e))?
                    .map(|v| v.value())
                    .ok_or_else(|| StoreError::corrupt(path, "its meta table has no format version"))?;
                if found > FORMAT_VERSION {
                    Err(StoreError::NewerFormat {
                        path: path.to_owned(),
                        found,
                        supported: FORMAT_VERSION,
                    })
                } else if found == 0 {
                    Err(StoreError::corrupt(path, "format version 0"))
                } else {
                    Ok(())
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {
                let tables = txn
                    .list_tables()
                    .map_err(|e| StoreError::from_storage(path, e))?
                    .count();
                let multimaps = txn
                    .list_multimap_tables()
                    .map_err(|e| StoreError::from_storage(path, e))?
                    .count();
                if tables + multimaps > 0 {
                    return Err(StoreError::corrupt(path, "a redb database without a format version"));
                }
                drop(txn);
                self.initialize()
            }
            Err(e) => Err(StoreError::from_table(path, e)),
        }
    }

    /// A write transaction whose commit is on disk when it returns (fsync).
    fn begin_durable(&self) -> Result<redb::WriteTransaction, StoreError> {
        let mut txn = self
            .inner
            .db
            .begin_write()
            .map_err(|e| StoreError::from_transaction(self.path(), e))?;
        txn.set_durability(Durability::Immediate);
        Ok(txn)
    }

    /// Write the format version and create the tables, in one durable transaction.
    fn initialize(&self) -> Result<(), StoreError> {
        let path = self.path();
        let txn = self.begin_durable()?;
        {
            let mut meta = txn.open_table(META).map_err(|e| StoreError::from_table(path, e))?;
            meta.insert(FORMAT_VERSION_KEY, FORMAT_VERSION)
                .map_err(|e| StoreError::from_storage(path, e))?;
            txn.open_table(SESSIONS).map_err(|e| StoreError::from_table(path, e))?;
            txn.open_table(TEMPLATES).map_err(|e| StoreError::from_table(path, e))?;
        }
        txn.commit().map_err(|e| StoreError::from_commit(path, e))
    }

    /// Every session and template. A record that does not decode, or whose key does not match its content, is
    /// [`StoreError::Corrupt`]: never skipped.
    fn read_all(&self) -> Result<Recovered, StoreError> {
        let path = self.path();
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(|e| StoreError::from_transaction(path, e))?;
        let mut recovered = Recovered::default();

        let sessions = txn.open_table(SESSIONS).map_err(|e| StoreError::from_table(path, e))?;
        for entry in sessions.iter().map_err(|e| StoreError::from_storage(path, e))? {
            let (key, value) = entry.map_err(|e| StoreError::from_storage(path, e))?;
            let (project, session) = decode_key(key.value()).ok_or_else(|| {
                StoreError::corrupt(path, format!("a session key does not decode: {:?}", key.value()))
            })?;
            let record: StoredSession = serde_json::from_slice(value.value()).map_err(|e| {
                StoreError::corrupt(
                    path,
                    format!("the record of session {session:?} of project {project:?}: {e}"),
                )
            })?;
            if record.project != project || record.session != session {
                return Err(StoreError::corrupt(
                    path,
                    format!("the record under session {session:?} of project {project:?} names another session"),
                ));
            }
            recovered.sessions.push(record);
        }

        let templates = txn.open_table(TEMPLATES).map_err(|e| StoreError::from_table(path, e))?;
        for entry in templates.iter().map_err(|e| StoreError::from_storage(path, e))? {
            let (project, prompt) = entry.map_err(|e| StoreError::from_storage(path, e))?;
            recovered
                .templates
                .push((project.value().to_owned(), prompt.value().to_owned()));
        }
        Ok(recovered)
    }
}

/// Create the state directory, mode 0700 (parents too), when missing; an existing one is left as it is.
fn create_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
