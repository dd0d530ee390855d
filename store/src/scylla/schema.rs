//! The keyspace and its tables: created at start-up with `IF NOT EXISTS`, so connecting is also
//! migrating, and a schema version recorded in `settings` so that a later layout is recognised
//! rather than misread.
//!
//! Every table is shaped for one query (ScyllaDB has no joins and no cheap secondary lookups); the
//! comment above each says which.

use crate::error::{Result, StoreError};

/// The layout version this build writes and reads, kept in `settings` under [`SCHEMA_KEY`].
pub const SCHEMA_VERSION: &str = "1";
pub const SCHEMA_KEY: &str = "scylla_schema_version";
pub const SHARDS_KEY: &str = "shards";
pub const BUCKETS_KEY: &str = "people_buckets";

/// Checks a keyspace name before it is written into DDL (it cannot be a bind marker there).
pub fn check_keyspace_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 48
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if valid {
        Ok(())
    } else {
        Err(StoreError::Engine(format!(
            "keyspace name {name:?} must be 1 to 48 ASCII letters, digits or '_', starting with a letter"
        )))
    }
}

/// `CREATE KEYSPACE` with NetworkTopologyStrategy: `replication_factor` copies in the named
/// datacenter, or in every datacenter when none is named (ScyllaDB expands the shorthand).
pub fn create_keyspace(
    keyspace: &str,
    datacenter: Option<&str>,
    replication_factor: u32,
) -> String {
    let placement = match datacenter {
        Some(dc) => format!("'{}': {replication_factor}", dc.replace('\'', "''")),
        None => format!("'replication_factor': {replication_factor}"),
    };
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
         {{'class': 'NetworkTopologyStrategy', {placement}}} AND durable_writes = true"
    )
}

/// The tables, in creation order. `{ks}` is replaced by the keyspace name.
const TABLES: &[&str] = &[
    // Campaign settings, the shard and bucket counts and the schema version: point reads by name.
    "CREATE TABLE IF NOT EXISTS {ks}.settings (name text PRIMARY KEY, value text)",
    // The catalogue is small and read whole at start-up: one partition per entry, full scans.
    "CREATE TABLE IF NOT EXISTS {ks}.sites (site_id text PRIMARY KEY, name text, province text, \
     district text, commune text, daily_capacity int)",
    "CREATE TABLE IF NOT EXISTS {ks}.products (code text PRIMARY KEY, name text, \
     doses_in_series int, min_interval_days int, allows_mixing boolean)",
    // Lots by site: the lots a site holds are one partition.
    "CREATE TABLE IF NOT EXISTS {ks}.lots (site_id text, lot_number text, product text, \
     expires date, quantity bigint, PRIMARY KEY ((site_id), lot_number))",
    "CREATE TABLE IF NOT EXISTS {ks}.credentials (token_sha256 blob PRIMARY KEY, role text, \
     site_id text, label text, created_at timestamp, revoked boolean)",
    "CREATE TABLE IF NOT EXISTS {ks}.revocations (certificate_id text PRIMARY KEY, \
     revoked_at timestamp, reason text)",
    // The audit trail, one partition per month (bounded: corrections are rare), newest first.
    // `audit_months` lists the months that have records, newest first, so that `audit_log`
    // knows where to start and when to stop.
    "CREATE TABLE IF NOT EXISTS {ks}.audit_months (scope text, month text, \
     PRIMARY KEY ((scope), month)) WITH CLUSTERING ORDER BY (month DESC)",
    "CREATE TABLE IF NOT EXISTS {ks}.audit_log (month text, at timestamp, id uuid, actor text, \
     action text, subject text, reason text, details text, PRIMARY KEY ((month), at, id)) \
     WITH CLUSTERING ORDER BY (at DESC, id DESC)",
    // Registrations by person code: check-in's point read and `register`'s insert-if-absent
    // (LWT). `version` is the shard journal version that created the row (see `shard.rs`).
    "CREATE TABLE IF NOT EXISTS {ks}.people (person_code text PRIMARY KEY, name text, \
     birth_date date, phone text, province text, district text, commune text, \
     priority_group int, registered_at timestamp, version bigint)",
    // People in code order for `people(after, limit)`: a fixed number of hash buckets, each a
    // partition clustered by code, merged client-side (see `ScyllaConfig::people_buckets`).
    "CREATE TABLE IF NOT EXISTS {ks}.people_by_bucket (bucket int, person_code text, name text, \
     birth_date date, phone text, province text, district text, commune text, \
     priority_group int, registered_at timestamp, PRIMARY KEY ((bucket), person_code))",
    // A person's doses: one small partition per person.
    "CREATE TABLE IF NOT EXISTS {ks}.doses_by_person (person_code text, dose_id uuid, \
     product text, lot_number text, dose_number int, site_id text, vaccinator text, \
     administered_at timestamp, recorded_at timestamp, PRIMARY KEY ((person_code), dose_id))",
    // Doses given at a site on a (UTC) day: bounded by the site's daily capacity.
    "CREATE TABLE IF NOT EXISTS {ks}.doses_by_site_day (site_id text, day date, \
     administered_at timestamp, dose_id uuid, person_code text, product text, lot_number text, \
     dose_number int, vaccinator text, recorded_at timestamp, \
     PRIMARY KEY ((site_id, day), administered_at, dose_id))",
    // Dose id → person: `find_doses`, and the claim that makes a dose count exactly once.
    "CREATE TABLE IF NOT EXISTS {ks}.dose_ids (dose_id uuid PRIMARY KEY, person_code text, \
     shard int, version bigint)",
    // Each shard's running totals as absolute values, one partition per shard, rewritten with a
    // single-partition batch per commit. kind: 'meta' (a = version|doses|registrations),
    // 'lot' (a = site, b = lot number), 'district' (a = province, b = district).
    "CREATE TABLE IF NOT EXISTS {ks}.shard_totals (shard int, kind text, a text, b text, \
     value bigint, PRIMARY KEY ((shard), kind, a, b))",
    // The writer lease (see `lease.rs`): one row, taken and renewed with LWTs.
    "CREATE TABLE IF NOT EXISTS {ks}.writer_lease (name text PRIMARY KEY, owner uuid, \
     holder text, epoch bigint, expires_at timestamp)",
    // The redo journal of the shard's commit in progress: one partition per (shard, version).
    "CREATE TABLE IF NOT EXISTS {ks}.shard_journal (shard int, version bigint, entry text, \
     record text, PRIMARY KEY ((shard, version), entry))",
];

/// The `CREATE TABLE` statements for `keyspace`.
pub fn create_tables(keyspace: &str) -> Vec<String> {
    TABLES.iter().map(|t| t.replace("{ks}", keyspace)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_names_are_checked_before_they_reach_ddl() {
        assert!(check_keyspace_name("vaxcamp").is_ok());
        assert!(check_keyspace_name("vaxcamp_test_01").is_ok());
        assert!(check_keyspace_name("").is_err());
        assert!(check_keyspace_name("1abc").is_err());
        assert!(check_keyspace_name("a; DROP KEYSPACE x").is_err());
    }

    #[test]
    fn replication_names_the_datacenter() {
        let cql = create_keyspace("vc", Some("dc1"), 3);
        assert!(cql.contains("'NetworkTopologyStrategy', 'dc1': 3"), "{cql}");
        let cql = create_keyspace("vc", None, 1);
        assert!(cql.contains("'replication_factor': 1"), "{cql}");
    }
}
