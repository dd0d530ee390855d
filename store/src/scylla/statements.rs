//! Every statement the store runs, prepared once at start-up.
//!
//! Preparing gives the driver each statement's partition key positions, so it routes every
//! request to a replica that owns the partition (token-aware) without a second hop. Each statement
//! carries its consistency; the ones that are safe to send twice are marked idempotent so that the
//! driver's retry policy may resend them after a timeout. The LWTs are marked idempotent too, on
//! purpose: a resent claim that finds *its own* earlier write recognises it by the journal
//! version it carries (see `shard.rs`), so a resend changes nothing.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};

use crate::error::{Result, StoreError};

/// The consistency levels statements are prepared with.
#[derive(Debug, Clone, Copy)]
pub struct Levels {
    pub read: Consistency,
    pub write: Consistency,
    pub serial: SerialConsistency,
}

pub struct Statements {
    pub setting_get: PreparedStatement,
    pub setting_put: PreparedStatement,
    pub setting_claim: PreparedStatement,
    pub site_put: PreparedStatement,
    pub sites: PreparedStatement,
    pub product_put: PreparedStatement,
    pub products: PreparedStatement,
    pub lot_put: PreparedStatement,
    pub lots: PreparedStatement,
    pub credential_put: PreparedStatement,
    pub credentials: PreparedStatement,
    pub revocation_put: PreparedStatement,
    pub revocations: PreparedStatement,
    pub audit_month_put: PreparedStatement,
    pub audit_months: PreparedStatement,
    pub audit_put: PreparedStatement,
    pub audit_in_month: PreparedStatement,
    pub person_claim: PreparedStatement,
    pub person_get: PreparedStatement,
    pub person_update: PreparedStatement,
    pub bucket_put: PreparedStatement,
    pub bucket_page: PreparedStatement,
    pub dose_put: PreparedStatement,
    pub doses_of: PreparedStatement,
    pub dose_get: PreparedStatement,
    pub site_day_put: PreparedStatement,
    pub site_day_delete: PreparedStatement,
    pub dose_claim: PreparedStatement,
    pub dose_id_get: PreparedStatement,
    pub totals_put: PreparedStatement,
    pub totals_get: PreparedStatement,
    pub journal_put: PreparedStatement,
    pub journal_get: PreparedStatement,
    pub journal_clear: PreparedStatement,
    pub lease: super::lease::LeaseStatements,
}

const PERSON_COLUMNS: &str = "person_code, name, birth_date, phone, province, district, commune, \
                              priority_group, registered_at";
const DOSE_COLUMNS: &str = "person_code, dose_id, product, lot_number, dose_number, site_id, \
                            vaccinator, administered_at, recorded_at";

/// What a statement does, which decides its consistency and whether it may be resent.
#[derive(Clone, Copy)]
enum Kind {
    Read,
    Write,
    Lwt,
}

async fn prepare(
    session: &Session,
    levels: Levels,
    kind: Kind,
    cql: String,
) -> Result<PreparedStatement> {
    let mut statement = session
        .prepare(cql.as_str())
        .await
        .map_err(|e| StoreError::Engine(format!("could not prepare `{cql}`: {e}")))?;
    match kind {
        Kind::Read => statement.set_consistency(levels.read),
        Kind::Write => statement.set_consistency(levels.write),
        Kind::Lwt => {
            statement.set_consistency(levels.write);
            statement.set_serial_consistency(Some(levels.serial));
        }
    }
    // No statement here is a counter update, so every one is safe to resend (see module docs).
    statement.set_is_idempotent(true);
    Ok(statement)
}

impl Statements {
    pub async fn prepare_all(session: &Session, ks: &str, levels: Levels) -> Result<Self> {
        use Kind::{Lwt, Read, Write};
        let p = |kind: Kind, cql: String| prepare(session, levels, kind, cql);
        Ok(Self {
            setting_get: p(
                Read,
                format!("SELECT value FROM {ks}.settings WHERE name = ?"),
            )
            .await?,
            setting_put: p(
                Write,
                format!("INSERT INTO {ks}.settings (name, value) VALUES (?, ?)"),
            )
            .await?,
            setting_claim: p(
                Lwt,
                format!("INSERT INTO {ks}.settings (name, value) VALUES (?, ?) IF NOT EXISTS"),
            )
            .await?,
            site_put: p(
                Write,
                format!(
                    "INSERT INTO {ks}.sites (site_id, name, province, district, commune, \
                     daily_capacity) VALUES (?, ?, ?, ?, ?, ?)"
                ),
            )
            .await?,
            sites: p(
                Read,
                format!(
                    "SELECT site_id, name, province, district, commune, daily_capacity \
                     FROM {ks}.sites"
                ),
            )
            .await?,
            product_put: p(
                Write,
                format!(
                    "INSERT INTO {ks}.products (code, name, doses_in_series, min_interval_days, \
                     allows_mixing) VALUES (?, ?, ?, ?, ?)"
                ),
            )
            .await?,
            products: p(
                Read,
                format!(
                    "SELECT code, name, doses_in_series, min_interval_days, allows_mixing \
                     FROM {ks}.products"
                ),
            )
            .await?,
            lot_put: p(
                Write,
                format!(
                    "INSERT INTO {ks}.lots (site_id, lot_number, product, expires, quantity) \
                     VALUES (?, ?, ?, ?, ?)"
                ),
            )
            .await?,
            lots: p(
                Read,
                format!("SELECT site_id, lot_number, product, expires, quantity FROM {ks}.lots"),
            )
            .await?,
            credential_put: p(
                Write,
                format!(
                    "INSERT INTO {ks}.credentials (token_sha256, role, site_id, label, \
                     created_at, revoked) VALUES (?, ?, ?, ?, ?, ?)"
                ),
            )
            .await?,
            credentials: p(
                Read,
                format!(
                    "SELECT token_sha256, role, site_id, label, created_at, revoked \
                     FROM {ks}.credentials"
                ),
            )
            .await?,
            revocation_put: p(
                Write,
                format!(
                    "INSERT INTO {ks}.revocations (certificate_id, revoked_at, reason) \
                     VALUES (?, ?, ?)"
                ),
            )
            .await?,
            revocations: p(
                Read,
                format!("SELECT certificate_id, revoked_at, reason FROM {ks}.revocations"),
            )
            .await?,
            audit_month_put: p(
                Write,
                format!("INSERT INTO {ks}.audit_months (scope, month) VALUES (?, ?)"),
            )
            .await?,
            audit_months: p(
                Read,
                format!("SELECT month FROM {ks}.audit_months WHERE scope = ?"),
            )
            .await?,
            audit_put: p(
                Write,
                format!(
                    "INSERT INTO {ks}.audit_log (month, at, id, actor, action, subject, reason, \
                     details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                ),
            )
            .await?,
            audit_in_month: p(
                Read,
                format!(
                    "SELECT actor, action, subject, reason, details, at FROM {ks}.audit_log \
                     WHERE month = ?"
                ),
            )
            .await?,
            person_claim: p(
                Lwt,
                format!(
                    "INSERT INTO {ks}.people ({PERSON_COLUMNS}, version) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
                ),
            )
            .await?,
            person_get: p(
                Read,
                format!("SELECT {PERSON_COLUMNS} FROM {ks}.people WHERE person_code = ?"),
            )
            .await?,
            person_update: p(
                Write,
                format!(
                    "UPDATE {ks}.people SET name = ?, birth_date = ?, phone = ?, province = ?, \
                     district = ?, commune = ?, priority_group = ?, registered_at = ? \
                     WHERE person_code = ?"
                ),
            )
            .await?,
            bucket_put: p(
                Write,
                format!(
                    "INSERT INTO {ks}.people_by_bucket (bucket, {PERSON_COLUMNS}) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
            )
            .await?,
            bucket_page: p(
                Read,
                format!(
                    "SELECT {PERSON_COLUMNS} FROM {ks}.people_by_bucket \
                     WHERE bucket = ? AND person_code > ?"
                ),
            )
            .await?,
            dose_put: p(
                Write,
                format!(
                    "INSERT INTO {ks}.doses_by_person ({DOSE_COLUMNS}) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
            )
            .await?,
            doses_of: p(
                Read,
                format!("SELECT {DOSE_COLUMNS} FROM {ks}.doses_by_person WHERE person_code = ?"),
            )
            .await?,
            dose_get: p(
                Read,
                format!(
                    "SELECT {DOSE_COLUMNS} FROM {ks}.doses_by_person \
                     WHERE person_code = ? AND dose_id = ?"
                ),
            )
            .await?,
            site_day_put: p(
                Write,
                format!(
                    "INSERT INTO {ks}.doses_by_site_day (site_id, day, administered_at, dose_id, \
                     person_code, product, lot_number, dose_number, vaccinator, recorded_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
            )
            .await?,
            site_day_delete: p(
                Write,
                format!(
                    "DELETE FROM {ks}.doses_by_site_day WHERE site_id = ? AND day = ? \
                     AND administered_at = ? AND dose_id = ?"
                ),
            )
            .await?,
            dose_claim: p(
                Lwt,
                format!(
                    "INSERT INTO {ks}.dose_ids (dose_id, person_code, shard, version) \
                     VALUES (?, ?, ?, ?) IF NOT EXISTS"
                ),
            )
            .await?,
            dose_id_get: p(
                Read,
                format!("SELECT person_code FROM {ks}.dose_ids WHERE dose_id = ?"),
            )
            .await?,
            totals_put: p(
                Write,
                format!(
                    "INSERT INTO {ks}.shard_totals (shard, kind, a, b, value) \
                     VALUES (?, ?, ?, ?, ?)"
                ),
            )
            .await?,
            totals_get: p(
                Read,
                format!("SELECT kind, a, b, value FROM {ks}.shard_totals WHERE shard = ?"),
            )
            .await?,
            journal_put: p(
                Write,
                format!(
                    "INSERT INTO {ks}.shard_journal (shard, version, entry, record) \
                     VALUES (?, ?, ?, ?)"
                ),
            )
            .await?,
            journal_get: p(
                Read,
                format!("SELECT record FROM {ks}.shard_journal WHERE shard = ? AND version = ?"),
            )
            .await?,
            journal_clear: p(
                Write,
                format!("DELETE FROM {ks}.shard_journal WHERE shard = ? AND version = ?"),
            )
            .await?,
            lease: super::lease::LeaseStatements {
                get: {
                    let mut get = p(
                        Read,
                        format!(
                            "SELECT owner, holder, epoch, expires_at FROM {ks}.writer_lease \
                             WHERE name = ?"
                        ),
                    )
                    .await?;
                    // A linearizable read: it sees any lease change a Paxos round has accepted.
                    get.set_consistency(match levels.serial {
                        SerialConsistency::Serial => Consistency::Serial,
                        _ => Consistency::LocalSerial,
                    });
                    get
                },
                create: p(
                    Lwt,
                    format!(
                        "INSERT INTO {ks}.writer_lease (name, owner, holder, epoch, expires_at) \
                         VALUES (?, ?, ?, ?, ?) IF NOT EXISTS"
                    ),
                )
                .await?,
                take: p(
                    Lwt,
                    format!(
                        "UPDATE {ks}.writer_lease SET owner = ?, holder = ?, epoch = ?, \
                         expires_at = ? WHERE name = ? IF owner = ? AND epoch = ?"
                    ),
                )
                .await?,
                renew: p(
                    Lwt,
                    format!(
                        "UPDATE {ks}.writer_lease SET expires_at = ? WHERE name = ? \
                         IF owner = ? AND epoch = ?"
                    ),
                )
                .await?,
            },
        })
    }
}
