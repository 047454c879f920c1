//! [`StoreError`], and the one mapping from redb's errors to it.

use std::path::{Path, PathBuf};

/// Why the session store could not be opened, read or written. Every message names the path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("cannot create the state directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a redb database, is corrupt, is not a session store, or holds a record that does not decode.
    /// Never skipped or wiped: the operator decides.
    #[error(
        "the session store {} is corrupt or not a session store ({detail}); move it away to start with an empty \
         store, or run with --no-persist",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },
    /// Written by a newer mqtt-llm (a higher format version than this build reads).
    #[error(
        "the session store {} has format version {found}, this mqtt-llm reads version {supported}; upgrade \
         mqtt-llm or use another --state-dir",
        path.display()
    )]
    NewerFormat { path: PathBuf, found: u32, supported: u32 },
    /// Another process (or another open in this process) holds the file's lock.
    #[error(
        "the session store {} is in use by another process (another mqtt-llm?); give each instance its own \
         --state-dir",
        path.display()
    )]
    InUse { path: PathBuf },
    /// Any other I/O, storage or transaction error while opening, reading or writing (permission denied, disk
    /// full, ...).
    #[error("I/O error on the session store {}: {detail}", path.display())]
    Io { path: PathBuf, detail: String },
}

impl StoreError {
    pub(super) fn corrupt(path: &Path, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.to_owned(),
            detail: detail.into(),
        }
    }

    pub(super) fn io(path: &Path, detail: impl ToString) -> Self {
        Self::Io {
            path: path.to_owned(),
            detail: detail.to_string(),
        }
    }

    /// Map an error from opening the database.
    pub(super) fn from_database(path: &Path, err: redb::DatabaseError) -> Self {
        match err {
            redb::DatabaseError::DatabaseAlreadyOpen => Self::InUse { path: path.to_owned() },
            // redb's check of the file's magic number.
            redb::DatabaseError::Storage(redb::StorageError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                Self::corrupt(path, "not a redb database: its header is not redb's")
            }
            redb::DatabaseError::Storage(e) => Self::from_storage(path, e),
            // RepairAborted (we never abort a repair, but a corrupt file can make it fail), UpgradeRequired (a
            // pre-1.0 redb file format: not one of ours).
            other => Self::corrupt(path, other.to_string()),
        }
    }

    /// Map a storage-layer error. redb reports a file without its magic number (garbage, another format) as
    /// `Io(InvalidData)`, and a structure that does not check out as `Corrupted`.
    pub(super) fn from_storage(path: &Path, err: redb::StorageError) -> Self {
        match err {
            redb::StorageError::Corrupted(_) => Self::corrupt(path, err.to_string()),
            redb::StorageError::Io(ref e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                Self::corrupt(path, err.to_string())
            }
            other => Self::io(path, other),
        }
    }

    /// Map an error from opening a table. A table of the wrong key or value type means the file is not ours.
    pub(super) fn from_table(path: &Path, err: redb::TableError) -> Self {
        match err {
            redb::TableError::Storage(e) => Self::from_storage(path, e),
            redb::TableError::TableTypeMismatch { .. }
            | redb::TableError::TypeDefinitionChanged { .. }
            | redb::TableError::TableIsMultimap(_)
            | redb::TableError::TableIsNotMultimap(_)
            // Only read transactions get this: `open` creates every table with the format version.
            | redb::TableError::TableDoesNotExist(_) => Self::corrupt(path, err.to_string()),
            other => Self::io(path, other),
        }
    }

    pub(super) fn from_transaction(path: &Path, err: redb::TransactionError) -> Self {
        match err {
            redb::TransactionError::Storage(e) => Self::from_storage(path, e),
            other => Self::io(path, other),
        }
    }

    pub(super) fn from_commit(path: &Path, err: redb::CommitError) -> Self {
        match err {
            redb::CommitError::Storage(e) => Self::from_storage(path, e),
            other => Self::io(path, other),
        }
    }
}
