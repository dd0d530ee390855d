//! Errors a store can return. Messages say what happened and, where the operator can act, what
//! to do about it.

use std::path::PathBuf;

/// A store failure. Rule refusals are not store errors: they are decided by the caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(
        "the data directory {path} is in use by another vaxcamp process; stop it first or use the HTTP API"
    )]
    Locked { path: PathBuf },

    #[error(
        "the data directory {path} was created with {found} shards but {expected} were asked for; the shard count is fixed when a campaign is created"
    )]
    ShardCountMismatch {
        path: PathBuf,
        found: usize,
        expected: usize,
    },

    #[error("the data directory {path} has no campaign; run `vaxcamp init --data {path}` first")]
    NotInitialized { path: PathBuf },

    #[error(
        "the record {key} could not be decoded ({reason}); the data may be from a newer vaxcamp"
    )]
    Corrupt { key: String, reason: String },

    #[error("storage engine error: {0}")]
    Engine(String),

    /// A dose id already recorded for another person: that dose was not written (the write's
    /// other doses were). Ids are made by the client once per dose, so this is a client bug or
    /// a copied id; the existing record stays as it is.
    #[error(
        "dose id {dose_id} is already recorded for person {recorded_for}, not {sent_for}; that dose was not written (the other doses of the write were)"
    )]
    DoseConflict {
        dose_id: String,
        recorded_for: String,
        sent_for: String,
    },

    #[error("the store is unavailable: {0}; retry later")]
    Unavailable(String),

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        StoreError::Engine(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
