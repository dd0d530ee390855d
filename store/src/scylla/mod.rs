//! The ScyllaDB backend (feature `scylla`): the same [`Store`] contract as the embedded engine,
//! for a national campaign on a cluster.
//!
//! # Layout
//! - `schema`: the keyspace (NetworkTopologyStrategy, without tablets where the server knows
//!   them: the store needs LWTs, which ScyllaDB 6 refuses in tablet keyspaces) and one table per
//!   query, created with `IF NOT EXISTS` at start-up; the schema version, shard and bucket counts
//!   in `settings`.
//! - `statements`: every statement, prepared once at start-up with its consistency and
//!   idempotence.
//! - `rows`: model records to and from typed CQL rows.
//! - `shard`: exactly-once writes per shard (redo journal, LWT claims, absolute totals), and
//!   the bounded retry of a failed shard write (recover, then the same entries again).
//! - `retry`: the driver's retry policy: idempotent requests resent a few times after timeouts,
//!   overload and broken connections; which errors no resend cures (`StoreError::Engine`).
//!
//! # Tables, each for one query
//! | table | key | serves |
//! | --- | --- | --- |
//! | `people` | `(person_code)` | `person`, `register`'s LWT insert-if-absent |
//! | `people_by_bucket` | `((bucket), person_code)` | `people(after, limit)` in code order |
//! | `doses_by_person` | `((person_code), dose_id)` | `doses_of`, `find_doses` |
//! | `doses_by_site_day` | `((site_id, day), administered_at, dose_id)` | a site's day (analytics) |
//! | `dose_ids` | `(dose_id)` | `find_doses`; the claim that counts a dose once |
//! | `shard_totals` | `((shard), kind, a, b)` | `totals` (absolute values per shard) |
//! | `shard_journal` | `((shard, version), entry)` | recovery of an interrupted write |
//! | `sites`, `products`, `credentials`, `revocations`, `settings` | their id | the catalogue |
//! | `lots` | `((site_id), lot_number)` | the catalogue; a site's lots |
//! | `audit_months`, `audit_log` | `((scope), month)`, `((month), at DESC, id DESC)` | `audit_log` |
//!
//! **People in code order.** `people` is partitioned by person code, so its rows come back in
//! token order, not code order. `people_by_bucket` keeps a copy of each registration in one of a
//! fixed number of buckets (`shard_of(code, people_buckets)`), clustered by code; a page is a
//! k-way merge of the buckets, each read lazily from the last code it returned. The shard index
//! is not used as the bucket because the shard count is small (cores of one ingest host):
//! 30 million people in 8 shards would be partitions of ~500 MB, where ScyllaDB wants them well
//! under 100 MB. 256 buckets keep them near 20 MB at that scale; the cost is up to 256 small
//! reads for the first page, which suits an export or an admin listing (the only callers).
//!
//! # Exactly once
//! See `shard.rs`: doses and registrations are claimed with LWTs that carry the shard's journal
//! version, and totals are absolute values rewritten per write from the previous snapshot, not CQL
//! counters, so that a resend after an ambiguous failure (a timeout after the write happened) can
//! never count twice, and a write that failed half-way is finished from the journal.
//!
//! # One writer per keyspace
//! See `lease.rs`: `connect` takes the keyspace's writer lease (an LWT row, renewed every third
//! of `lease_duration`; once lost, never taken again by the same store) and every write request
//! checks it first; without it writes fail with
//! [`StoreError::Unavailable`] and reads still work, so a standby can serve lookups. A process
//! that takes the lease reloads each shard's totals and replays its journal before its first
//! write. `close` releases the lease so that a standby takes over at once.
//!
//! # Requests
//! All statements are prepared; each request binds the full partition key, so the driver routes
//! it to a replica (token-aware, preferring the configured datacenter). A shard's write runs at
//! most `max_in_flight_per_shard` entries at once, each a short sequence of single-partition
//! requests. There are no multi-partition batches: a logged batch across partitions costs a
//! batchlog write on extra replicas and an unlogged one makes the coordinator fan out, both
//! slower than concurrent single-partition writes. The one batch, the totals, is single-partition.
//! Every statement is idempotent and resent by the driver after a timeout, an overloaded node or
//! a broken connection, at most twice (`retry.rs`); a shard write that still fails is recovered
//! and tried again, at most four attempts in all and none started once `request_timeout` has
//! passed (`shard.rs`). Errors no resend can cure (an invalid statement, missing permissions)
//! are [`StoreError::Engine`] and never retried.
//!
//! # TLS
//! Behind the feature `scylla-tls` (the driver's `openssl-010` backend, linking the system's
//! OpenSSL; `rustls-023` is not used because its default crypto provider, aws-lc-rs, is a large
//! C build). With `tls: true` every connection, the control connection included, is TLS 1.2 or
//! newer, and the node's certificate must chain to `tls_ca_file` (only that CA, when given) or to
//! the system trust store. The driver connects to IP addresses (the contact points resolved,
//! then the addresses the cluster reports in `system.peers`), and checks the certificate against
//! that IP address (OpenSSL's `X509_VERIFY_PARAM_set1_ip`): each node's certificate must carry
//! its IP address as a subject alternative name, as the one clients reach it on. DNS names in a
//! certificate are not matched, even for a contact point given by name. No client certificate is
//! sent (ScyllaDB's `require_client_auth` is not supported). A node that does not speak TLS, an
//! untrusted certificate or one without the node's address fails `connect` with
//! [`StoreError::Unavailable`] saying what to check. Without the feature, `tls: true` is refused
//! with a message naming it.

mod lease;
mod retry;
mod rows;
mod schema;
mod shard;
mod statements;
#[cfg(feature = "scylla-tls")]
mod tls;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::response::PagingState;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
pub use scylla::statement::{Consistency, SerialConsistency};
use tokio::sync::Mutex;

use crate::error::{Result, StoreError};
use crate::model::{
    AuditRecord, Credential, Dose, DoseId, Lot, PersonCode, Product, Registration, Revocation, Site,
};
use crate::{ImportCounts, Registered, Store, Totals, shard_of};
use retry::request_failed;
use rows::{corrupt, to_i32};
use shard::{Entry, ShardState, unavailable};
use statements::{Levels, Statements};

/// What to check when a connection with TLS on fails: most failures then are a certificate the
/// client does not trust or a node that does not speak TLS on that port.
fn tls_hint(config: &ScyllaConfig) -> String {
    if !config.tls {
        return String::new();
    }
    let trusted = config.tls_ca_file.as_ref().map_or_else(
        || "the system trust store".to_string(),
        |ca| format!("the CA file {}", ca.display()),
    );
    format!(
        " (TLS is on: check that each node serves TLS on that port (client_encryption_options) with a certificate signed by a CA in {trusted} and naming the node's IP address in its subject alternative names)"
    )
}

/// How to reach the cluster and how to lay out the campaign in it. Defaults suit a three-node
/// cluster in one datacenter on the default port. `Debug` leaves the password out.
#[derive(Clone)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`. Default: `127.0.0.1:9042`.
    pub nodes: Vec<String>,
    /// The keyspace holding the campaign. Default: `vaxcamp`.
    pub keyspace: String,
    /// The local datacenter: replication is placed there and requests prefer its nodes. `None`
    /// replicates `replication_factor` times in every datacenter. Default: `None`.
    pub datacenter: Option<String>,
    /// Copies of each row, used when the keyspace is created. Default: 3.
    pub replication_factor: u32,
    /// Consistency of writes. Default: LOCAL_QUORUM.
    pub write_consistency: Consistency,
    /// Consistency of reads. Must overlap the writes' (R + W > RF) for the exactly-once
    /// recovery to see the last write. Default: LOCAL_QUORUM.
    pub read_consistency: Consistency,
    /// Consistency of the LWT (Paxos) phase of claims. Default: LOCAL_SERIAL.
    pub serial_consistency: SerialConsistency,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Encrypt connections with TLS (1.2 or newer) and verify each node's certificate. Needs
    /// the feature `scylla-tls`; without it `true` is refused. See "# TLS" in the module docs.
    /// Default: `false`.
    pub tls: bool,
    /// The CA certificate(s), PEM, that signed the nodes' certificates: when set, only these are
    /// trusted; when `None`, the system trust store is. Only with `tls`. Default: `None`.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Shards to create a new campaign with; an existing keyspace must agree. Default: the
    /// number of CPU cores, 2 to 64 (as the embedded store).
    pub shards: usize,
    /// Buckets of `people_by_bucket`, fixed at creation like `shards`. Default: 256.
    pub people_buckets: usize,
    /// Entries a shard writer has in flight at once (each a few sequential requests). Default: 64.
    pub max_in_flight_per_shard: usize,
    /// How long one request may take, with the driver's resends of it (see `retry.rs`), before
    /// it fails; also how long a failed shard write keeps starting new attempts. Keep it at least the cluster's own write timeout (ScyllaDB's
    /// `write_request_timeout_in_ms`, 2 s by default): the coordinator works on the driver's
    /// last resend for up to that long after it arrives, so a write may still land up to
    /// `2 × request_timeout` after it was sent, which the writer lease's margin allows for
    /// (`crate::lease_timing`). Default: 2 s.
    pub request_timeout: Duration,
    /// How far apart the hosts' clocks may be (NTP keeps them within milliseconds; this is the
    /// allowance). With `request_timeout` it makes the margin a lease holder stops writing
    /// before its lease expires (see `lease.rs`). Default: 1 s.
    pub max_clock_skew: Duration,
    /// How long the writer lease lasts without renewal. It is renewed every third of this; this
    /// process stops writing `2 × request_timeout + max_clock_skew` before it expires, so a
    /// write it sent at the last moment, resent by the driver and kept by a coordinator, has
    /// landed or been dropped before another process, even one whose clock runs ahead, can take
    /// over; that happens this long after this one dies (or at once after `close`). That margin
    /// must not exceed a third of it (`crate::lease_timing::check`). Default: 15 s (writes stop
    /// 10 s after the last renewal, renewals come every 5 s).
    pub lease_duration: Duration,
    /// How long `connect` waits while another process holds the writer lease: `None` fails at
    /// once, naming the holder and when its lease expires. Default: 30 s (twice the default
    /// lease, so a restarted process outwaits its own previous incarnation's lease).
    pub wait_for_lease: Option<Duration>,
}

impl std::fmt::Debug for ScyllaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named, so that a new one cannot be forgotten here.
        let Self {
            nodes,
            keyspace,
            datacenter,
            replication_factor,
            write_consistency,
            read_consistency,
            serial_consistency,
            username,
            password,
            tls,
            tls_ca_file,
            shards,
            people_buckets,
            max_in_flight_per_shard,
            request_timeout,
            max_clock_skew,
            lease_duration,
            wait_for_lease,
        } = self;
        f.debug_struct("ScyllaConfig")
            .field("nodes", nodes)
            .field("keyspace", keyspace)
            .field("datacenter", datacenter)
            .field("replication_factor", replication_factor)
            .field("write_consistency", write_consistency)
            .field("read_consistency", read_consistency)
            .field("serial_consistency", serial_consistency)
            .field("username", username)
            .field("password", &password.as_ref().map(|_| "<redacted>"))
            .field("tls", tls)
            .field("tls_ca_file", tls_ca_file)
            .field("shards", shards)
            .field("people_buckets", people_buckets)
            .field("max_in_flight_per_shard", max_in_flight_per_shard)
            .field("request_timeout", request_timeout)
            .field("max_clock_skew", max_clock_skew)
            .field("lease_duration", lease_duration)
            .field("wait_for_lease", wait_for_lease)
            .finish()
    }
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self {
            nodes: vec!["127.0.0.1:9042".into()],
            keyspace: "vaxcamp".into(),
            datacenter: None,
            replication_factor: 3,
            write_consistency: Consistency::LocalQuorum,
            read_consistency: Consistency::LocalQuorum,
            serial_consistency: SerialConsistency::LocalSerial,
            username: None,
            password: None,
            tls: false,
            tls_ca_file: None,
            shards: cores.clamp(2, 64),
            people_buckets: 256,
            max_in_flight_per_shard: 64,
            request_timeout: Duration::from_secs(2),
            max_clock_skew: Duration::from_secs(1),
            lease_duration: Duration::from_secs(15),
            wait_for_lease: Some(Duration::from_secs(30)),
        }
    }
}

/// The campaign's records in a ScyllaDB keyspace. See the module docs.
pub struct ScyllaStore {
    /// Shared with the lease renewal task.
    session: Arc<Session>,
    statements: Statements,
    levels: Levels,
    keyspace: String,
    /// One lock per shard, held for the whole of a write that moves totals: the totals are
    /// absolute values computed from the previous ones, so a shard has one writer at a time.
    shards: Vec<Mutex<ShardState>>,
    /// Set when a shard's write failed and its journal may hold a half-done write; cleared once
    /// it is finished. Reads check it so that nothing is answered from a half-done write.
    in_doubt: Vec<std::sync::atomic::AtomicBool>,
    people_buckets: usize,
    max_in_flight: usize,
    /// How long a failed shard write keeps starting new attempts (`shard.rs`, `run_attempt`):
    /// the configured request timeout.
    retry_for: Duration,
    /// Whether this process may write; checked before every write request.
    lease: Arc<lease::Lease>,
    /// The task renewing the lease; aborted on drop.
    renewal: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for ScyllaStore {
    fn drop(&mut self) {
        if let Some(task) = self.renewal.take() {
            task.abort();
        }
        // Best effort: release the lease in the background so that a standby need not wait for
        // it to expire. Without a runtime (or if this fails) it simply expires.
        if !self.lease.released()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (lease, session, statements) = (
                Arc::clone(&self.lease),
                Arc::clone(&self.session),
                self.statements.lease.clone(),
            );
            runtime.spawn(async move { lease.release(&session, &statements).await });
        }
    }
}

impl std::fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaStore")
            .field("keyspace", &self.keyspace)
            .field("shards", &self.shards.len())
            .field("writer", &self.lease.held())
            .finish()
    }
}

impl ScyllaStore {
    /// Connects, creates or checks the keyspace and its tables, prepares every statement and
    /// finishes any write a previous process left half-done.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the cluster cannot be reached; [`StoreError::Engine`] for
    /// a bad configuration or when the keyspace was created with another shard or bucket count;
    /// [`StoreError::Corrupt`] when it has a schema version this build does not know.
    pub async fn connect(config: ScyllaConfig) -> Result<Self> {
        schema::check_keyspace_name(&config.keyspace)?;
        if !config.tls
            && let Some(ca) = &config.tls_ca_file
        {
            return Err(StoreError::Engine(format!(
                "a ScyllaDB CA file ({}) is set but TLS is off; turn TLS on (--scylla-tls, [scylla] tls = true) or drop the CA file",
                ca.display()
            )));
        }
        #[cfg(not(feature = "scylla-tls"))]
        if config.tls {
            return Err(StoreError::Engine(
                "TLS to ScyllaDB is not in this build of vaxcamp; build it with `--features scylla-tls` (needs OpenSSL: libssl-dev and pkg-config), or connect over a private network or a TLS tunnel".into(),
            ));
        }
        for (what, n, max) in [
            ("shards", config.shards, 256),
            (
                "lease_duration (ms)",
                usize::try_from(config.lease_duration.as_millis()).unwrap_or(usize::MAX),
                600_000,
            ),
            ("people_buckets", config.people_buckets, 65_536),
            (
                "max_in_flight_per_shard",
                config.max_in_flight_per_shard,
                65_536,
            ),
        ] {
            if n == 0 || n > max || (what.starts_with("lease") && n < 30) {
                return Err(StoreError::Engine(format!(
                    "{what} must be 1 to {max}, not {n}"
                )));
            }
        }
        let margin = crate::lease_timing::check(
            config.request_timeout,
            config.max_clock_skew,
            config.lease_duration,
        )
        .map_err(|e| {
            StoreError::Engine(format!(
                "request_timeout, max_clock_skew and lease_duration do not fit together: {e}"
            ))
        })?;
        let session = Self::build_session(&config).await?;
        let ks = config.keyspace.as_str();
        schema::create_keyspace_on(
            &session,
            ks,
            config.datacenter.as_deref(),
            config.replication_factor,
        )
        .await?;
        // Before any table or LWT: a keyspace someone else made with tablets is refused here,
        // with what to do, rather than on the first dose.
        schema::check_no_tablets(&session, ks).await?;
        schema::warn_on_replication_drift(
            &session,
            ks,
            config.datacenter.as_deref(),
            config.replication_factor,
        )
        .await?;
        for statement in schema::create_tables(ks) {
            session
                .query_unpaged(statement.as_str(), ())
                .await
                .map_err(|e| request_failed("creating the schema", &e))?;
        }
        session
            .await_schema_agreement()
            .await
            .map_err(|e| unavailable("waiting for schema agreement", e))?;
        let levels = Levels {
            read: config.read_consistency,
            write: config.write_consistency,
            serial: config.serial_consistency,
        };
        let statements = Statements::prepare_all(&session, ks, levels).await?;
        let mut store = Self {
            session: Arc::new(session),
            statements,
            levels,
            keyspace: config.keyspace.clone(),
            shards: (0..config.shards).map(|_| Mutex::new(None)).collect(),
            in_doubt: (0..config.shards)
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            people_buckets: config.people_buckets,
            max_in_flight: config.max_in_flight_per_shard,
            retry_for: config.request_timeout,
            lease: Arc::new(lease::Lease::new(ks, config.lease_duration, margin)),
            renewal: None,
        };
        store
            .claim_setting(schema::SCHEMA_KEY, schema::SCHEMA_VERSION)
            .await?;
        store
            .claim_setting(schema::SHARDS_KEY, &config.shards.to_string())
            .await?;
        store
            .claim_setting(schema::BUCKETS_KEY, &config.people_buckets.to_string())
            .await?;
        store.take_lease(config.wait_for_lease).await?;
        store.renewal = Some(tokio::spawn(
            Arc::clone(&store.lease)
                .keep(Arc::clone(&store.session), store.statements.lease.clone()),
        ));
        // Finish whatever a previous process left in the journals, so `totals` is right at once.
        let epoch = store.lease.check()?;
        for shard in 0..store.shards.len() {
            let mut snapshot = store.recover(shard).await?;
            snapshot.epoch = epoch;
            if let Some(lock) = store.shards.get(shard) {
                *lock.lock().await = Some(snapshot);
            }
        }
        tracing::debug!(keyspace = ks, shards = config.shards, "scylla store open");
        Ok(store)
    }

    /// Takes the writer lease, waiting up to `wait` while another process holds it.
    async fn take_lease(&self, wait: Option<Duration>) -> Result<()> {
        let started = std::time::Instant::now();
        let mut logged = false;
        loop {
            let lease::Taken::Busy {
                holder,
                owner,
                expires_at,
            } = self
                .lease
                .try_take(&self.session, &self.statements.lease)
                .await?
            else {
                return Ok(());
            };
            let waited = started.elapsed();
            if wait.is_none_or(|w| waited >= w) {
                let left = expires_at - time::OffsetDateTime::now_utc();
                return Err(StoreError::Unavailable(format!(
                    "another vaxcamp process ({holder}, owner {owner}) holds the writer lease of keyspace {} until {expires_at} ({} ms from now); one process writes a keyspace at a time, so stop it or wait for its lease to expire{}",
                    self.keyspace,
                    left.whole_milliseconds().max(0),
                    wait.map_or(String::new(), |w| format!(" (waited {} ms)", w.as_millis())),
                )));
            }
            if !logged {
                tracing::info!(keyspace = %self.keyspace, %holder, %owner, %expires_at, "waiting for the writer lease");
                logged = true;
            }
            tokio::time::sleep(lease::poll_interval(self.lease.duration())).await;
        }
    }

    /// Whether this process holds the keyspace's writer lease now, i.e. whether its writes are
    /// accepted (a standby's are refused; reads work either way).
    pub fn holds_writer_lease(&self) -> bool {
        self.lease.held()
    }

    /// This store's identity in the lease row: its owner id and holder (host and pid).
    pub fn writer_lease_owner(&self) -> (uuid::Uuid, &str) {
        (self.lease.owner(), self.lease.holder())
    }

    async fn build_session(config: &ScyllaConfig) -> Result<Session> {
        let mut policy = DefaultPolicy::builder().token_aware(true);
        if let Some(dc) = &config.datacenter {
            policy = policy
                .prefer_datacenter(dc.clone())
                .permit_dc_failover(false);
        }
        let profile = ExecutionProfile::builder()
            .consistency(config.read_consistency)
            .serial_consistency(Some(config.serial_consistency))
            .request_timeout(Some(config.request_timeout))
            .load_balancing_policy(policy.build())
            .retry_policy(Arc::new(retry::IdempotentRetryPolicy))
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .connection_timeout(config.request_timeout)
            // Client-side, monotonic write timestamps: a write that was abandoned on a timeout
            // and lands late carries its old timestamp and loses to anything written since
            // (last-write-wins), so a stale totals snapshot can never overwrite a newer one.
            .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()))
            .default_execution_profile_handle(profile.into_handle());
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.user(user, password);
        }
        #[cfg(feature = "scylla-tls")]
        if config.tls {
            builder = builder.tls_context(Some(tls::context(config.tls_ca_file.as_deref())?));
        }
        builder.build().await.map_err(|e| {
            StoreError::Unavailable(format!(
                "could not connect to ScyllaDB at {}: {e}{}",
                config.nodes.join(", "),
                tls_hint(config)
            ))
        })
    }

    /// Records `value` under `name` if absent; refuses a keyspace that holds another value.
    async fn claim_setting(&self, name: &str, value: &str) -> Result<()> {
        // Before the lease is taken (an insert-if-absent of a fixed value: harmless without
        // it), so that a wrong shard count is refused at once rather than after a wait.
        self.session
            .execute_unpaged(&self.statements.setting_claim, (name, value))
            .await
            .map_err(|e| request_failed("ScyllaDB request failed", &e))?;
        let found = self.read_setting(name).await?;
        if found.as_deref() == Some(value) {
            return Ok(());
        }
        let found = found.unwrap_or_default();
        if name == schema::SCHEMA_KEY {
            return Err(StoreError::Corrupt {
                key: format!("{}.settings/{name}", self.keyspace),
                reason: format!(
                    "schema version {found:?}, this build reads {}",
                    schema::SCHEMA_VERSION
                ),
            });
        }
        Err(StoreError::Engine(format!(
            "the keyspace {} was created with {name} = {found} but {value} was asked for; it is fixed when a campaign is created",
            self.keyspace
        )))
    }

    async fn read_setting(&self, name: &str) -> Result<Option<String>> {
        let found: Vec<(Option<String>,)> =
            self.rows(&self.statements.setting_get, (name,)).await?;
        Ok(found.into_iter().next().and_then(|(v,)| v))
    }

    /// The keyspace this store uses.
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// The driver session, for tests and tools that look at the tables directly.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Sends one write; refused without the writer lease (see `lease.rs`).
    async fn execute(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult> {
        self.lease.check()?;
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(|e| request_failed("ScyllaDB request failed", &e))
    }

    /// Every row a statement selects, paged.
    async fn rows<T>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<T>>
    where
        T: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    {
        self.session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(|e| request_failed("ScyllaDB read failed", &e))?
            .rows_stream::<T>()
            .map_err(|e| StoreError::Engine(format!("unexpected columns: {e}")))?
            .try_collect()
            .await
            .map_err(|e| request_failed("ScyllaDB read failed", &e))
    }

    async fn fetch_person(&self, code: &PersonCode) -> Result<Option<Registration>> {
        let found: Vec<rows::PersonRow> = self
            .rows(&self.statements.person_get, (code.as_str(),))
            .await?;
        found.into_iter().next().map(rows::person_from).transpose()
    }

    /// One page of a bucket, after `after`, at most `size` rows; `true` when the bucket has more.
    async fn bucket_page(
        &self,
        bucket: usize,
        after: &str,
        size: usize,
    ) -> Result<(Vec<Registration>, bool)> {
        let mut statement = self.statements.bucket_page.clone();
        statement.set_page_size(to_i32(size, "page size")?);
        let (result, paging) = self
            .session
            .execute_single_page(
                &statement,
                (to_i32(bucket, "bucket")?, after),
                PagingState::start(),
            )
            .await
            .map_err(|e| request_failed("reading people", &e))?;
        let rows = result
            .into_rows_result()
            .map_err(|e| corrupt("people_by_bucket", e))?;
        let page = rows
            .rows::<rows::PersonRow>()
            .map_err(|e| corrupt("people_by_bucket", e))?
            .map(|row| {
                row.map_err(|e| corrupt("people_by_bucket", e))
                    .and_then(rows::person_from)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((page, !paging.finished()))
    }

    fn check_shard(&self, shard: usize, doses: &[Dose]) -> Result<()> {
        for dose in doses {
            if shard_of(&dose.person_code, self.shards.len()) != shard {
                return Err(StoreError::Engine(format!(
                    "dose {} belongs to another shard",
                    dose.dose_id
                )));
            }
        }
        Ok(())
    }
}

/// Entries per attempt: bounds the journal partition and the work redone after a failure.
const MAX_ENTRIES_PER_ATTEMPT: usize = 1000;

/// One bucket's place in the merge of `people`.
struct BucketCursor {
    bucket: usize,
    buffered: VecDeque<Registration>,
    /// The last code read from the bucket; the next read starts after it.
    last: String,
    more: bool,
}

#[async_trait]
impl Store for ScyllaStore {
    fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn holds_writer_lease(&self) -> Option<bool> {
        Some(self.lease.held())
    }

    fn backend_name(&self) -> &'static str {
        "scylla"
    }

    async fn put_site(&self, site: &Site) -> Result<()> {
        self.execute(&self.statements.site_put, rows::site_values(site)?)
            .await
            .map(drop)
    }

    async fn sites(&self) -> Result<Vec<Site>> {
        let mut sites = self
            .rows(&self.statements.sites, ())
            .await?
            .into_iter()
            .map(rows::site_from)
            .collect::<Result<Vec<_>>>()?;
        sites.sort_by(|a, b| a.site_id.cmp(&b.site_id));
        Ok(sites)
    }

    async fn put_product(&self, product: &Product) -> Result<()> {
        self.execute(&self.statements.product_put, rows::product_values(product))
            .await
            .map(drop)
    }

    async fn products(&self) -> Result<Vec<Product>> {
        let mut products = self
            .rows(&self.statements.products, ())
            .await?
            .into_iter()
            .map(rows::product_from)
            .collect::<Result<Vec<_>>>()?;
        products.sort_by(|a, b| a.code.cmp(&b.code));
        Ok(products)
    }

    async fn put_lot(&self, lot: &Lot) -> Result<()> {
        self.execute(&self.statements.lot_put, rows::lot_values(lot)?)
            .await
            .map(drop)
    }

    async fn lots(&self) -> Result<Vec<Lot>> {
        let mut lots = self
            .rows(&self.statements.lots, ())
            .await?
            .into_iter()
            .map(rows::lot_from)
            .collect::<Result<Vec<_>>>()?;
        lots.sort_by_key(Lot::key);
        Ok(lots)
    }

    async fn put_credential(&self, credential: &Credential) -> Result<()> {
        self.execute(
            &self.statements.credential_put,
            rows::credential_values(credential),
        )
        .await
        .map(drop)
    }

    async fn credentials(&self) -> Result<Vec<Credential>> {
        let mut credentials = self
            .rows(&self.statements.credentials, ())
            .await?
            .into_iter()
            .map(rows::credential_from)
            .collect::<Result<Vec<_>>>()?;
        credentials.sort_by_key(|c| c.token_sha256);
        Ok(credentials)
    }

    async fn setting(&self, name: &str) -> Result<Option<String>> {
        self.read_setting(name).await
    }

    async fn put_setting(&self, name: &str, value: &str) -> Result<()> {
        self.execute(&self.statements.setting_put, (name, value))
            .await
            .map(drop)
    }

    async fn register(&self, registration: &Registration) -> Result<Registered> {
        let shard = shard_of(&registration.person_code, self.shards.len());
        let mut outcomes = self
            .run_attempt(shard, vec![Entry::Register(registration.clone())])
            .await?;
        outcomes
            .pop()
            .and_then(|applied| applied.registered)
            .ok_or_else(|| StoreError::Engine("registration produced no outcome".into()))
    }

    async fn import_registrations(&self, registrations: &[Registration]) -> Result<ImportCounts> {
        let shards = self.shards.len();
        let mut by_shard: Vec<Vec<Entry>> = vec![Vec::new(); shards];
        let mut seen = std::collections::HashSet::new();
        let mut counts = ImportCounts::default();
        for registration in registrations {
            // A code twice in one batch is one person: the first wins, as in the embedded store.
            if !seen.insert(&registration.person_code) {
                counts.already_present += 1;
                continue;
            }
            by_shard[shard_of(&registration.person_code, shards)]
                .push(Entry::Register(registration.clone()));
        }
        let mut attempts = Vec::new();
        for (shard, entries) in by_shard.into_iter().enumerate() {
            let mut entries = entries.into_iter().peekable();
            while entries.peek().is_some() {
                let chunk: Vec<Entry> = entries.by_ref().take(MAX_ENTRIES_PER_ATTEMPT).collect();
                attempts.push((shard, chunk));
            }
        }
        // Shards write in parallel; each shard's chunks queue on its lock.
        let results: Vec<Result<Vec<shard::Applied>>> = futures_util::stream::iter(attempts)
            .map(|(shard, chunk)| self.run_attempt(shard, chunk))
            .buffer_unordered(shards.max(1))
            .collect()
            .await;
        for result in results {
            for applied in result? {
                match applied.registered {
                    Some(Registered::Created(_)) => counts.created += 1,
                    _ => counts.already_present += 1,
                }
            }
        }
        Ok(counts)
    }

    async fn person(&self, code: &PersonCode) -> Result<Option<Registration>> {
        self.fetch_person(code).await
    }

    async fn people(&self, after: Option<&PersonCode>, limit: usize) -> Result<Vec<Registration>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let start = after.map(|c| c.as_str().to_owned()).unwrap_or_default();
        // Read each bucket a little past its fair share of the page, so that most pages need one
        // read per bucket.
        let chunk = (limit.div_ceil(self.people_buckets) * 2).clamp(8, limit.max(8));
        let mut cursors: Vec<BucketCursor> = (0..self.people_buckets)
            .map(|bucket| BucketCursor {
                bucket,
                buffered: VecDeque::new(),
                last: start.clone(),
                more: true,
            })
            .collect();
        let mut page = Vec::with_capacity(limit);
        while page.len() < limit {
            // Refill every empty bucket that has more before choosing the smallest head: a
            // bucket's next code may be smaller than any other bucket's buffered one.
            let wanted: Vec<(usize, usize, String)> = cursors
                .iter()
                .enumerate()
                .filter(|(_, c)| c.buffered.is_empty() && c.more)
                .map(|(i, c)| (i, c.bucket, c.last.clone()))
                .collect();
            let refills: Vec<(usize, Result<(Vec<Registration>, bool)>)> =
                futures_util::stream::iter(wanted)
                    .map(move |(i, bucket, last)| async move {
                        (i, self.bucket_page(bucket, &last, chunk).await)
                    })
                    .buffer_unordered(self.max_in_flight)
                    .collect()
                    .await;
            for (i, result) in refills {
                let (rows, more) = result?;
                if let Some(cursor) = cursors.get_mut(i) {
                    if let Some(last) = rows.last() {
                        cursor.last = last.person_code.as_str().to_owned();
                    }
                    cursor.more = more && !rows.is_empty();
                    cursor.buffered.extend(rows);
                }
            }
            let smallest = cursors
                .iter_mut()
                .filter(|c| !c.buffered.is_empty())
                .min_by(|a, b| {
                    let (a, b) = (a.buffered.front(), b.buffered.front());
                    a.map(|r| &r.person_code).cmp(&b.map(|r| &r.person_code))
                });
            let Some(cursor) = smallest else { break };
            // Take from this bucket while it stays the smallest and has rows in hand.
            if let Some(registration) = cursor.buffered.pop_front() {
                page.push(registration);
            }
        }
        Ok(page)
    }

    async fn doses_of(&self, person: &PersonCode) -> Result<Vec<Dose>> {
        self.settle().await?;
        let mut doses = self
            .rows(&self.statements.doses_of, (person.as_str(),))
            .await?
            .into_iter()
            .map(rows::dose_from)
            .collect::<Result<Vec<_>>>()?;
        doses.sort_by_key(|d| (d.dose_number, d.administered_at));
        Ok(doses)
    }

    async fn find_doses(&self, ids: &[DoseId]) -> Result<Vec<Dose>> {
        self.settle().await?;
        let found: Vec<Result<Option<Dose>>> = futures_util::stream::iter(ids.iter().copied())
            .map(move |id| async move {
                let people: Vec<(Option<String>,)> =
                    self.rows(&self.statements.dose_id_get, (id.0,)).await?;
                let Some((Some(person),)) = people.into_iter().next() else {
                    return Ok(None);
                };
                let doses: Vec<rows::DoseRow> =
                    self.rows(&self.statements.dose_get, (person, id.0)).await?;
                doses.into_iter().next().map(rows::dose_from).transpose()
            })
            .buffered(self.max_in_flight)
            .collect()
            .await;
        found.into_iter().filter_map(Result::transpose).collect()
    }

    async fn commit_doses(&self, shard: usize, doses: &[Dose]) -> Result<()> {
        self.check_shard(shard, doses)?;
        let mut seen = std::collections::HashSet::new();
        let entries: Vec<Entry> = doses
            .iter()
            .filter(|d| seen.insert(d.dose_id))
            .map(|d| Entry::Dose(d.clone()))
            .collect();
        let mut conflict = None;
        for chunk in entries.chunks(MAX_ENTRIES_PER_ATTEMPT) {
            for applied in self.run_attempt(shard, chunk.to_vec()).await? {
                if conflict.is_none() {
                    conflict = applied.conflict;
                }
            }
        }
        // Reported after the rest is committed, as the embedded store does.
        conflict.map_or(Ok(()), Err)
    }

    async fn totals(&self) -> Result<Totals> {
        let mut totals = Totals::default();
        for shard in 0..self.shards.len() {
            let snapshot = self.load_snapshot(shard).await?;
            totals.registrations += u64::try_from(snapshot.registrations).unwrap_or(0);
            totals.doses += u64::try_from(snapshot.doses).unwrap_or(0);
            for (lot, n) in snapshot.lots {
                *totals.lot_usage.entry(lot).or_default() += u64::try_from(n).unwrap_or(0);
            }
            for (district, n) in snapshot.districts {
                *totals
                    .registrations_by_district
                    .entry(district)
                    .or_default() += u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(totals)
    }

    async fn correct_registration(&self, registration: &Registration) -> Result<()> {
        let shard = shard_of(&registration.person_code, self.shards.len());
        let Some(lock) = self.shards.get(shard) else {
            return Err(StoreError::Engine(format!("no shard {shard}")));
        };
        // Recover first, so that the record read as `previous` includes any correction a failed
        // write left in the journal. Corrections come from one operator request at a time; the
        // district read here is the one the person is counted in.
        {
            let mut state = lock.lock().await;
            self.make_current(shard, &mut state).await?;
        }
        let Some(previous) = self.fetch_person(&registration.person_code).await? else {
            return Err(StoreError::Engine(format!(
                "no registration {} to correct",
                registration.person_code
            )));
        };
        self.run_attempt(
            shard,
            vec![Entry::CorrectPerson {
                registration: registration.clone(),
                from: previous.area.district_key(),
            }],
        )
        .await
        .map(drop)
    }

    async fn correct_dose(&self, shard: usize, corrected: &Dose) -> Result<()> {
        self.check_shard(shard, std::slice::from_ref(corrected))?;
        if let Some(lock) = self.shards.get(shard) {
            let mut state = lock.lock().await;
            self.make_current(shard, &mut state).await?;
        }
        let found: Vec<rows::DoseRow> = self
            .rows(
                &self.statements.dose_get,
                (corrected.person_code.as_str(), corrected.dose_id.0),
            )
            .await?;
        let Some(old) = found.into_iter().next().map(rows::dose_from).transpose()? else {
            return Err(StoreError::Engine(format!(
                "no dose {} to correct",
                corrected.dose_id
            )));
        };
        self.run_attempt(
            shard,
            vec![Entry::CorrectDose {
                corrected: corrected.clone(),
                old,
            }],
        )
        .await
        .map(drop)
    }

    async fn revoke_certificates(&self, revocations: &[Revocation]) -> Result<()> {
        let results: Vec<Result<QueryResult>> =
            futures_util::stream::iter(revocations.iter().cloned())
                .map(move |r| async move {
                    self.execute(
                        &self.statements.revocation_put,
                        (r.certificate_id.as_str(), r.revoked_at, r.reason.as_str()),
                    )
                    .await
                })
                .buffer_unordered(self.max_in_flight)
                .collect()
                .await;
        results.into_iter().try_for_each(|r| r.map(drop))
    }

    async fn revocations(&self) -> Result<Vec<Revocation>> {
        let mut revocations: Vec<Revocation> = self
            .rows(&self.statements.revocations, ())
            .await?
            .into_iter()
            .map(rows::revocation_from)
            .collect();
        revocations.sort_by(|a, b| a.certificate_id.cmp(&b.certificate_id));
        Ok(revocations)
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        let month = rows::audit_month(record.at);
        let details = serde_json::to_string(&record.details)
            .map_err(|e| StoreError::Engine(format!("could not encode audit details: {e}")))?;
        // The month is listed first, so a record is never in a month `audit_log` cannot find.
        self.execute(&self.statements.audit_month_put, ("audit", month.as_str()))
            .await?;
        self.execute(
            &self.statements.audit_put,
            (
                month.as_str(),
                record.at,
                uuid::Uuid::new_v4(),
                record.actor.as_str(),
                record.action.as_str(),
                record.subject.as_str(),
                record.reason.as_str(),
                details,
            ),
        )
        .await
        .map(drop)
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        let months: Vec<(String,)> = self.rows(&self.statements.audit_months, ("audit",)).await?;
        let mut months: Vec<String> = months.into_iter().map(|(m,)| m).collect();
        // Clustered newest first already; sorting keeps the order right whatever the server.
        months.sort_by(|a, b| b.cmp(a));
        let mut log = Vec::new();
        for month in months {
            if log.len() >= limit {
                break;
            }
            let mut records = self
                .rows(&self.statements.audit_in_month, (month.as_str(),))
                .await?
                .into_iter()
                .map(rows::audit_from)
                .collect::<Result<Vec<_>>>()?;
            records.sort_by_key(|r| std::cmp::Reverse(r.at));
            log.extend(records.into_iter().take(limit - log.len()));
        }
        Ok(log)
    }

    async fn close(&self) -> Result<()> {
        // Every acknowledged write is already at its consistency level; nothing is buffered.
        // Give the lease up so that a standby takes over at once rather than when it expires.
        self.lease
            .release(&self.session, &self.statements.lease)
            .await;
        Ok(())
    }
}
