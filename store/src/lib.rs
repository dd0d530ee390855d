//! The campaign's records behind one trait, [`Store`], and the embedded engine that implements it
//! on one machine with no server to install.
//!
//! # Layout
//! - [`model`]: registrations, sites, products, lots, doses, credentials, audit records.
//! - [`error`]: [`StoreError`], what went wrong and what the operator can do.
//! - [`embedded`]: [`EmbeddedStore`], N fjall databases (one per shard) plus a catalogue database.
//! - [`lease_timing`]: the timing rule of the ScyllaDB writer lease, which the server's
//!   configuration checks too.
//! - `conformance` (feature `conformance`): the checks every backend must pass.
//!
//! # Sharding
//! Everything about one person (registration, doses) lives in one shard,
//! `shard_of(person) = first 8 bytes of SHA-256(person code) mod N`, so the write path can give each
//! shard a single writer that sees a person's whole history without locks, the way ScyllaDB gives
//! each core its own shard. The catalogue (sites, products, lots, credentials, settings, audit) is
//! small and shared.

pub mod embedded;
pub mod error;
pub mod lease_timing;
pub mod model;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "scylla")]
pub mod scylla;

use std::collections::HashMap;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use error::{Result, StoreError};
pub use model::*;
#[cfg(feature = "scylla")]
pub use scylla::{ScyllaConfig, ScyllaStore};

/// Which shard holds a person's records. Stable across versions and machines: changing it would
/// strand every stored record, so it is fixed here and tested.
pub fn shard_of(person: &PersonCode, shards: usize) -> usize {
    let digest = Sha256::digest(person.as_str().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // `shards` is at least 1 (checked where stores are built); max(1) keeps this total anyway.
    (u64::from_be_bytes(first) % shards.max(1) as u64) as usize
}

/// The outcome of an insert-if-absent registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// The registration was new and is now stored.
    Created(Registration),
    /// A registration with that person code was already there; it is returned unchanged.
    Existing(Registration),
}

/// What a bulk import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportCounts {
    pub created: u64,
    pub already_present: u64,
}

/// Running totals the store keeps as it writes, so that reading them costs no scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub registrations: u64,
    pub doses: u64,
    /// Doses given from each lot, summed over shards.
    pub lot_usage: HashMap<LotKey, u64>,
    /// Registrations per district of residence (moved by corrections that change the district).
    /// The allocation planner reads the people still to vaccinate from these.
    pub registrations_by_district: HashMap<District, u64>,
}

/// The campaign's persistent records.
///
/// Contract for implementers (checked by the conformance suite):
/// - Writes return only once durable: on disk for the embedded engine, acknowledged at the
///   configured consistency for ScyllaDB.
/// - `commit_doses` is called by one writer per shard at a time, with doses that all belong to
///   that shard; writing a dose whose id is already stored for the same person is a no-op (a
///   retry after an ambiguous failure must not count twice); a dose whose id is stored for
///   another person, in any shard, is not written and `commit_doses` answers
///   [`StoreError::DoseConflict`] after writing the others.
/// - `register` is insert-if-absent and atomic per person code.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The number of shards; fixed when the campaign is created.
    fn shard_count(&self) -> usize;

    /// A short name for logs and `/healthz` (`embedded`, `scylla`).
    fn backend_name(&self) -> &'static str;

    // Campaign set-up: small, read into memory by the server at start-up.
    async fn put_site(&self, site: &Site) -> Result<()>;
    async fn sites(&self) -> Result<Vec<Site>>;
    async fn put_product(&self, product: &Product) -> Result<()>;
    async fn products(&self) -> Result<Vec<Product>>;
    async fn put_lot(&self, lot: &Lot) -> Result<()>;
    async fn lots(&self) -> Result<Vec<Lot>>;
    async fn put_credential(&self, credential: &Credential) -> Result<()>;
    async fn credentials(&self) -> Result<Vec<Credential>>;
    async fn setting(&self, name: &str) -> Result<Option<String>>;
    async fn put_setting(&self, name: &str, value: &str) -> Result<()>;

    // Registrations, sharded by person.
    async fn register(&self, registration: &Registration) -> Result<Registered>;
    /// Insert-if-absent for many registrations at once (bulk import); faster than `register` in a
    /// loop because each shard gets one durable write per call.
    async fn import_registrations(&self, registrations: &[Registration]) -> Result<ImportCounts>;
    async fn person(&self, code: &PersonCode) -> Result<Option<Registration>>;
    /// People in person-code order, starting after `after`.
    async fn people(&self, after: Option<&PersonCode>, limit: usize) -> Result<Vec<Registration>>;

    // Doses, sharded by person.
    /// A person's doses, ordered by dose number.
    async fn doses_of(&self, person: &PersonCode) -> Result<Vec<Dose>>;
    /// Every stored dose with one of these ids, across all shards. Normally zero or one per id;
    /// the ledger check uses it to prove "exactly once".
    async fn find_doses(&self, ids: &[DoseId]) -> Result<Vec<Dose>>;
    /// Durably writes doses that all belong to `shard`, and counts them.
    async fn commit_doses(&self, shard: usize, doses: &[Dose]) -> Result<()>;
    async fn totals(&self) -> Result<Totals>;

    /// Replaces a person's registration (a correction; the person code stays).
    async fn correct_registration(&self, registration: &Registration) -> Result<()>;
    /// Replaces a stored dose with its corrected record (same id, same person), moving the lot
    /// counters if the lot changed. Called by the shard's writer, like `commit_doses`.
    async fn correct_dose(&self, shard: usize, corrected: &Dose) -> Result<()>;

    // Revoked certificates, served to verifiers.
    async fn revoke_certificates(&self, revocations: &[Revocation]) -> Result<()>;
    async fn revocations(&self) -> Result<Vec<Revocation>>;

    // The audit trail of corrections and revocations.
    async fn append_audit(&self, record: &AuditRecord) -> Result<()>;
    /// The newest `limit` audit records, newest first.
    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>>;

    /// Flushes anything buffered and stops background work. Called once at shutdown.
    async fn close(&self) -> Result<()>;

    /// Whether this process may write: `None` for a backend with no such notion (the embedded
    /// store is opened by one process only), `Some(false)` for a ScyllaDB process that does not
    /// hold the keyspace's writer lease (its writes are refused; see `scylla::lease`).
    fn holds_writer_lease(&self) -> Option<bool> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_of_is_stable() {
        // These values are part of the on-disk format: if this test fails, existing data
        // directories would be read from the wrong shards.
        let code = PersonCode::new("001090012345").expect("valid");
        assert_eq!(shard_of(&code, 1), 0);
        let got: Vec<usize> = [2, 4, 8].iter().map(|&n| shard_of(&code, n)).collect();
        assert_eq!(got, SHARD_OF_001090012345);
    }

    // Recorded from the first release; see `shard_of_is_stable`.
    const SHARD_OF_001090012345: [usize; 3] = [1, 3, 7];

    #[test]
    fn shard_of_spreads_people() {
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let code = PersonCode::new(format!("P{i:09}")).expect("valid");
            counts[shard_of(&code, 4)] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread: {counts:?}");
        }
    }
}
