//! The keyspace and its tables: created at start-up with `IF NOT EXISTS`, so connecting is also
//! migrating, and a schema version recorded in `settings` so that a later layout is recognised
//! rather than misread.
//!
//! Every table is shaped for one query (ScyllaDB has no joins and no cheap secondary lookups); the
//! comment above each says which.

use scylla::client::session::Session;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};

use super::shard::unavailable;
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
///
/// `without_tablets` adds `AND tablets = {'enabled': false}`. ScyllaDB 6.0 and later give new
/// NetworkTopologyStrategy keyspaces tablets by default, and refuse lightweight transactions in
/// them ("the LWT feature is not supported in keyspaces with tablets enabled"), which the store
/// needs for claims, the writer lease and settings. Older ScyllaDB and Cassandra do not know
/// the option and refuse it: see [`create_keyspace_on`].
pub fn create_keyspace(
    keyspace: &str,
    datacenter: Option<&str>,
    replication_factor: u32,
    without_tablets: bool,
) -> String {
    let placement = match datacenter {
        Some(dc) => format!("'{}': {replication_factor}", dc.replace('\'', "''")),
        None => format!("'replication_factor': {replication_factor}"),
    };
    let tablets = if without_tablets {
        " AND tablets = {'enabled': false}"
    } else {
        ""
    };
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
         {{'class': 'NetworkTopologyStrategy', {placement}}} AND durable_writes = true{tablets}"
    )
}

/// Creates the keyspace if it is missing, with tablets disabled where the server knows them:
/// the statement is sent with `tablets = {'enabled': false}` first, and again without it when
/// the server refuses the option (a syntax, configuration or invalid-request error: Cassandra
/// and ScyllaDB before 6.0). Trying is simpler and surer than reading the server's version or
/// feature list first: the server itself says whether it knows the option. Options are checked
/// before `IF NOT EXISTS`, so this also works on an existing keyspace (which then keeps what it
/// was created with; see [`check_no_tablets`]).
///
/// # Errors
/// [`StoreError::Unavailable`] when both forms fail (the second form's error is reported).
pub async fn create_keyspace_on(
    session: &Session,
    keyspace: &str,
    datacenter: Option<&str>,
    replication_factor: u32,
) -> Result<()> {
    let with_option = create_keyspace(keyspace, datacenter, replication_factor, true);
    match session.query_unpaged(with_option.as_str(), ()).await {
        Ok(_) => return Ok(()),
        Err(e) if refuses_an_option(&e) => {
            tracing::info!(keyspace, reason = %e, "the server does not know the tablets option (Cassandra or ScyllaDB before 6.0); creating the keyspace without it");
        }
        Err(e) => return Err(unavailable("creating the keyspace", e)),
    }
    let plain = create_keyspace(keyspace, datacenter, replication_factor, false);
    session
        .query_unpaged(plain.as_str(), ())
        .await
        .map(drop)
        .map_err(|e| unavailable("creating the keyspace", e))
}

/// The errors a server answers for a keyspace option it does not know.
fn refuses_an_option(e: &ExecutionError) -> bool {
    matches!(
        e,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::SyntaxError | DbError::ConfigError | DbError::Invalid,
            _
        ))
    )
}

/// Refuses a keyspace that uses tablets on a server where LWTs do not work with them.
///
/// A keyspace created by something else (by hand, or by a vaxcamp before this check) on
/// ScyllaDB 6.0 or later has tablets unless it was created with `'enabled': false`, and
/// tablets cannot be turned off on an existing keyspace. Without LWTs the store cannot claim
/// doses or take the writer lease, so it stops here, at start-up, saying what to do, rather than
/// failing on the first dose. `system_schema.scylla_keyspaces.initial_tablets` is set exactly for
/// tablet keyspaces (the driver reads it the same way); Cassandra and ScyllaDB before 6.0 have
/// no such table, and then there are no tablets. A server that lists the `LWT_WITH_TABLETS`
/// feature supports LWTs in tablet keyspaces, and the keyspace is accepted.
///
/// # Errors
/// [`StoreError::Engine`] for a tablet keyspace without LWT support; [`StoreError::Unavailable`]
/// when the server cannot be read.
pub async fn check_no_tablets(session: &Session, keyspace: &str) -> Result<()> {
    // The name is checked (`check_keyspace_name`), so it can be a literal: an unprepared query
    // with bind values would be prepared first, and a missing table would then fail the prepare.
    let query = format!(
        "SELECT initial_tablets FROM system_schema.scylla_keyspaces WHERE keyspace_name = '{keyspace}'"
    );
    let initial: Option<i32> = match session.query_unpaged(query.as_str(), ()).await {
        Ok(result) => result
            .into_rows_result()
            .map_err(|e| unavailable("reading system_schema.scylla_keyspaces", e))?
            .maybe_first_row::<(Option<i32>,)>()
            .map_err(|e| unavailable("reading system_schema.scylla_keyspaces", e))?
            .and_then(|(initial,)| initial),
        // No such table (or column): Cassandra or ScyllaDB before 6.0, which have no tablets.
        Err(ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::Invalid,
            _,
        ))) => None,
        Err(e) => return Err(unavailable("reading system_schema.scylla_keyspaces", e)),
    };
    if initial.is_none() {
        return Ok(());
    }
    if server_features(session)
        .await?
        .iter()
        .any(|f| f == "LWT_WITH_TABLETS")
    {
        return Ok(());
    }
    Err(StoreError::Engine(format!(
        "the keyspace {keyspace} uses tablets (ScyllaDB 6 gives them to new keyspaces unless they are created with tablets = {{'enabled': false}}), and this ScyllaDB does not support lightweight transactions in tablet keyspaces, which vaxcamp needs (dose claims, the writer lease); tablets cannot be turned off on an existing keyspace: if it holds no campaign yet, drop it (DROP KEYSPACE {keyspace};) and start again, and vaxcamp will create it without tablets; otherwise choose another keyspace (--scylla-keyspace) and copy the campaign into it"
    )))
}

/// The server's cluster features (`system.local.supported_features`, ScyllaDB only; empty
/// elsewhere).
async fn server_features(session: &Session) -> Result<Vec<String>> {
    match session
        .query_unpaged(
            "SELECT supported_features FROM system.local WHERE key = 'local'",
            (),
        )
        .await
    {
        Ok(result) => Ok(result
            .into_rows_result()
            .map_err(|e| unavailable("reading system.local", e))?
            .maybe_first_row::<(Option<String>,)>()
            .map_err(|e| unavailable("reading system.local", e))?
            .and_then(|(features,)| features)
            .unwrap_or_default()
            .split(',')
            .map(str::to_owned)
            .collect()),
        Err(ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::Invalid,
            _,
        ))) => Ok(Vec::new()),
        Err(e) => Err(unavailable("reading system.local", e)),
    }
}

/// Warns when an existing keyspace's replication differs from the configuration: the
/// replication factor is used only when the keyspace is created, so a changed setting would
/// otherwise be silently ignored (and a keyspace with fewer replicas than configured would
/// survive fewer node failures than the operator believes).
///
/// # Errors
/// [`StoreError::Unavailable`] when the keyspace's definition cannot be read.
pub async fn warn_on_replication_drift(
    session: &Session,
    keyspace: &str,
    datacenter: Option<&str>,
    replication_factor: u32,
) -> Result<()> {
    let query = format!(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = '{keyspace}'"
    );
    let found: Option<std::collections::HashMap<String, String>> = session
        .query_unpaged(query.as_str(), ())
        .await
        .map_err(|e| unavailable("reading system_schema.keyspaces", e))?
        .into_rows_result()
        .map_err(|e| unavailable("reading system_schema.keyspaces", e))?
        .maybe_first_row::<(Option<std::collections::HashMap<String, String>>,)>()
        .map_err(|e| unavailable("reading system_schema.keyspaces", e))?
        .and_then(|(replication,)| replication);
    if let Some(difference) = found
        .as_ref()
        .and_then(|found| replication_drift(found, datacenter, replication_factor))
    {
        tracing::warn!(
            keyspace,
            configured_replication_factor = replication_factor,
            configured_datacenter = datacenter.unwrap_or("(every datacenter)"),
            found = ?found,
            "{difference}; the replication factor is only used when the keyspace is created: change it with ALTER KEYSPACE (then run a repair) or fix the configuration"
        );
    }
    Ok(())
}

/// How a keyspace's replication (as `system_schema.keyspaces` has it) differs from
/// NetworkTopologyStrategy with `replication_factor` copies in `datacenter` (or in every
/// datacenter listed, when none is named); `None` when it does not.
pub fn replication_drift(
    found: &std::collections::HashMap<String, String>,
    datacenter: Option<&str>,
    replication_factor: u32,
) -> Option<String> {
    let class = found.get("class").map(String::as_str).unwrap_or_default();
    if !class.ends_with("NetworkTopologyStrategy") {
        return Some(format!(
            "the keyspace uses {class}, not NetworkTopologyStrategy"
        ));
    }
    let wanted = replication_factor.to_string();
    match datacenter {
        Some(dc) => match found.get(dc) {
            Some(rf) if *rf == wanted => None,
            Some(rf) => Some(format!(
                "the keyspace keeps {rf} copies in datacenter {dc}, not {wanted}"
            )),
            None => Some(format!("the keyspace has no replicas in datacenter {dc}")),
        },
        None => found
            .iter()
            .filter(|(key, _)| key.as_str() != "class")
            .find(|(_, rf)| **rf != wanted)
            .map(|(dc, rf)| format!("the keyspace keeps {rf} copies in {dc}, not {wanted}")),
    }
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
        let cql = create_keyspace("vc", Some("dc1"), 3, true);
        assert!(cql.contains("'NetworkTopologyStrategy', 'dc1': 3"), "{cql}");
        assert!(cql.ends_with("AND tablets = {'enabled': false}"), "{cql}");
        let cql = create_keyspace("vc", None, 1, false);
        assert!(cql.contains("'replication_factor': 1"), "{cql}");
        assert!(!cql.contains("tablets"), "{cql}");
    }

    #[test]
    fn replication_drift_is_named() {
        let map = |pairs: &[(&str, &str)]| -> std::collections::HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let nts = "org.apache.cassandra.locator.NetworkTopologyStrategy";
        let three = map(&[("class", nts), ("dc1", "3")]);
        assert_eq!(replication_drift(&three, Some("dc1"), 3), None);
        assert_eq!(replication_drift(&three, None, 3), None);
        let drift = replication_drift(&three, Some("dc1"), 5).expect("5 wanted");
        assert!(
            drift.contains("3 copies in datacenter dc1, not 5"),
            "{drift}"
        );
        let drift = replication_drift(&three, Some("dc2"), 3).expect("dc2 wanted");
        assert!(drift.contains("no replicas in datacenter dc2"), "{drift}");
        let two_dcs = map(&[("class", nts), ("dc1", "3"), ("dc2", "1")]);
        let drift = replication_drift(&two_dcs, None, 3).expect("dc2 has 1");
        assert!(drift.contains("1 copies in dc2"), "{drift}");
        let simple = map(&[
            ("class", "org.apache.cassandra.locator.SimpleStrategy"),
            ("replication_factor", "3"),
        ]);
        let drift = replication_drift(&simple, None, 3).expect("simple");
        assert!(drift.contains("SimpleStrategy"), "{drift}");
        // The shorthand as a server without expansion (the test node) keeps it.
        let shorthand = map(&[("class", nts), ("replication_factor", "1")]);
        assert_eq!(replication_drift(&shorthand, None, 1), None);
    }
}
