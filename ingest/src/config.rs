//! Server configuration: defaults here, overridden by a TOML file, then by environment variables
//! and flags (the CLI applies those last two).
//!
//! ```toml
//! # vaxcamp.toml — every key is optional; shown with its default.
//! listen = "127.0.0.1:8080"
//! data = "./data"
//! queue_capacity = 1024          # write jobs waiting per shard before 503
//! max_commit_batch = 2000        # doses per group commit
//! max_body_bytes = 2097152       # 2 MiB
//! max_batch_doses = 1000
//! retry_after_seconds = 1
//! certificate_validity_days = 365
//! certificate_cache_entries = 10000
//!
//! [analytics]
//! clickhouse = "http://127.0.0.1:8123"   # unset: the embedded rollups in <data>/analytics
//! database = "vaxcamp"
//! user = "default"                       # password: VAXCAMP_CLICKHOUSE_PASSWORD only
//! outbox_max_bytes = 1073741824          # 1 GiB of rows waiting for ClickHouse, then dropped
//! lag_alert_seconds = 60
//! read_timeout_seconds = 10              # allocation and uptake reads: 503 analytics_unavailable after this
//!
//! [scylla]                               # the dose store; without `nodes`, the embedded store in `data`
//! nodes = ["10.0.0.11:9042", "10.0.0.12:9042", "10.0.0.13:9042"]   # contact points
//! keyspace = "vaxcamp"
//! datacenter = "dc1"                     # unset: RF copies in every datacenter, no DC preference
//! replication_factor = 3                 # used when the keyspace is created
//! write_consistency = "LOCAL_QUORUM"
//! read_consistency = "LOCAL_QUORUM"      # reads and writes must overlap (R + W > RF)
//! username = "vaxcamp"                   # password: VAXCAMP_SCYLLA_PASSWORD only
//! tls = false                            # TLS to the nodes; needs a build with `--features scylla-tls`
//! tls_ca_file = "/etc/vaxcamp/scylla-ca.pem"   # with tls: trust only this CA (unset: the system's)
//! shards = 16                            # fixed when the keyspace is created; same everywhere
//! max_in_flight_per_shard = 64
//! request_timeout_ms = 2000              # a request with the driver's retries; >= the cluster's write timeout
//! max_clock_skew_ms = 1000               # allowed between hosts' clocks
//! lease_duration_ms = 15000              # the writer lease; >= 3 × (2 × request_timeout_ms + max_clock_skew_ms)
//!
//! [allocation]
//! unit_doses = 10                         # allocations in whole vials/boxes of this many doses
//! window_days = 7                         # uptake window
//! horizon_days = 14                       # days of need a shipment should cover
//! owed_lapse_days = 90                    # overdue longer than this: lapsed (reported), not owed (planned)
//!
//! [campaign]
//! utc_offset = "+07:00"                   # the campaign's time zone: when "today" starts (Viet Nam)
//!
//! [live]
//! max_streams = 64                        # console streams served at once; one more gets 503
//! seed_timeout_seconds = 10               # start-up wait for the outbox to drain and the last days' doses
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

use crate::api::ApiConfig;
use crate::writer::WriterConfig;

/// Everything `vaxcamp serve` can be told.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data directory (embedded store and keys).
    pub data: PathBuf,
    pub queue_capacity: usize,
    pub max_commit_batch: usize,
    pub max_body_bytes: usize,
    pub max_batch_doses: usize,
    pub retry_after_seconds: u32,
    pub certificate_validity_days: u32,
    pub certificate_cache_entries: usize,
    pub analytics: AnalyticsSettings,
    pub scylla: ScyllaSettings,
    pub allocation: AllocationSettings,
    pub campaign: CampaignSettings,
    pub live: LiveSettings,
}

/// The campaign's calendar.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CampaignSettings {
    /// The campaign's time zone as a fixed offset from UTC, `+HH:MM` or `-HH:MM`: its midnight
    /// starts "today" on the console and the days of the uptake behind days of supply. Default
    /// `+07:00`, Viet Nam's (no daylight saving time), where the product comes from.
    pub utc_offset: String,
}

impl Default for CampaignSettings {
    fn default() -> Self {
        Self {
            utc_offset: "+07:00".into(),
        }
    }
}

impl CampaignSettings {
    /// The offset in seconds east of UTC.
    ///
    /// # Errors
    /// What is wrong with the text, and what it should look like.
    pub fn utc_offset_seconds(&self) -> Result<i64, String> {
        parse_utc_offset(&self.utc_offset)
    }
}

/// How `[campaign] utc_offset` is written: a sign, then two-digit hours and minutes.
const UTC_OFFSET: &[BorrowedFormatItem<'_>] =
    format_description!("[offset_hour sign:mandatory padding:zero]:[offset_minute padding:zero]");

/// `+07:00`, `-03:30`, `+05:45` (also `Z` or `UTC` for +00:00) as seconds east of UTC, within
/// ±14:00 (the offsets in use on Earth).
///
/// # Errors
/// A message naming the text and the expected form.
pub fn parse_utc_offset(text: &str) -> Result<i64, String> {
    let wrong = || {
        format!(
            "campaign.utc_offset {text:?} is not an offset from UTC like \"+07:00\" or \"-03:30\""
        )
    };
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("z") || trimmed.eq_ignore_ascii_case("utc") {
        return Ok(0);
    }
    let offset = time::UtcOffset::parse(trimmed, UTC_OFFSET).map_err(|_| wrong())?;
    let seconds = i64::from(offset.whole_seconds());
    if seconds.abs() > 14 * 3_600 {
        return Err(format!("{}: offsets run from -14:00 to +14:00", wrong()));
    }
    Ok(seconds)
}

/// The console's live feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveSettings {
    /// Live streams (`GET /v1/live/stream`) served at once; one more is answered 503 with
    /// `Retry-After`. Each costs a connection and a second's worth of JSON a second. Default 64.
    pub max_streams: usize,
    /// At start-up, how long to wait for the analytics outbox to drain and for the backend to
    /// answer the last days' doses per site, which seed the console's "today" and days of
    /// supply. Start-up waits this long when ClickHouse is down. Default 10.
    pub seed_timeout_seconds: u64,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            max_streams: 64,
            seed_timeout_seconds: 10,
        }
    }
}

/// Where doses are stored at national scale: a ScyllaDB cluster. Plain values here (the
/// binary turns them into the store's `ScyllaConfig`), so this crate needs no driver. `Debug`
/// leaves the password out.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScyllaSettings {
    /// Contact points, `host:port`. Empty: the embedded store in the data directory.
    pub nodes: Vec<String>,
    pub keyspace: String,
    /// The local datacenter: replicas are placed there and requests prefer its nodes.
    pub datacenter: Option<String>,
    /// Copies of each row, used when the keyspace is created.
    pub replication_factor: u32,
    /// A CQL consistency level name, e.g. `LOCAL_QUORUM`.
    pub write_consistency: String,
    pub read_consistency: String,
    pub username: Option<String>,
    /// Never in the file: from `VAXCAMP_SCYLLA_PASSWORD`.
    #[serde(skip)]
    pub password: Option<String>,
    /// Encrypt connections (TLS 1.2+, each node's certificate verified, including its IP
    /// address). Needs a binary built with the feature `scylla-tls`; without it the store
    /// refuses `true`, saying so.
    pub tls: bool,
    /// With `tls`: the PEM file of the CA that signed the nodes' certificates, trusted instead
    /// of the system trust store.
    pub tls_ca_file: Option<PathBuf>,
    /// Shards of the campaign, fixed when the keyspace is created. Unlike the embedded store this
    /// is not the core count: every replica and set-up command, on any machine, must agree.
    pub shards: usize,
    /// Entries one shard's group commit has in flight at once.
    pub max_in_flight_per_shard: usize,
    /// How long one request may take, with the driver's retries of it, before it fails. At
    /// least the cluster's own write timeout (`write_request_timeout_in_ms`).
    pub request_timeout_ms: u64,
    /// How far apart the hosts' clocks may be. With twice the request timeout, the margin a
    /// writer lease holder stops writing before its lease expires.
    pub max_clock_skew_ms: u64,
    /// How long the writer lease lasts without renewal (the failover time when a holder dies).
    /// At least three times `2 × request_timeout_ms + max_clock_skew_ms`
    /// (`store::lease_timing`).
    pub lease_duration_ms: u64,
}

/// Shown instead of a password in `Debug` output (configurations end up in logs).
const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for ScyllaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Every field named, so that a new one cannot be forgotten here.
        let Self {
            nodes,
            keyspace,
            datacenter,
            replication_factor,
            write_consistency,
            read_consistency,
            username,
            password,
            tls,
            tls_ca_file,
            shards,
            max_in_flight_per_shard,
            request_timeout_ms,
            max_clock_skew_ms,
            lease_duration_ms,
        } = self;
        f.debug_struct("ScyllaSettings")
            .field("nodes", nodes)
            .field("keyspace", keyspace)
            .field("datacenter", datacenter)
            .field("replication_factor", replication_factor)
            .field("write_consistency", write_consistency)
            .field("read_consistency", read_consistency)
            .field("username", username)
            .field("password", &password.as_ref().map(|_| REDACTED))
            .field("tls", tls)
            .field("tls_ca_file", tls_ca_file)
            .field("shards", shards)
            .field("max_in_flight_per_shard", max_in_flight_per_shard)
            .field("request_timeout_ms", request_timeout_ms)
            .field("max_clock_skew_ms", max_clock_skew_ms)
            .field("lease_duration_ms", lease_duration_ms)
            .finish()
    }
}

/// Default shard count of a ScyllaDB campaign (see [`ScyllaSettings::shards`]).
pub const SCYLLA_DEFAULT_SHARDS: usize = 16;

/// Consistency levels a read or write may use, with the replicas each waits for.
const CONSISTENCY_LEVELS: &[&str] = &[
    "ANY",
    "ONE",
    "TWO",
    "THREE",
    "QUORUM",
    "ALL",
    "LOCAL_QUORUM",
    "EACH_QUORUM",
    "LOCAL_ONE",
];

/// Replicas (of `rf` in a datacenter) that answer at `level`; `None` for an unknown level.
fn replicas_at(level: &str, rf: u32) -> Option<u32> {
    Some(match level {
        "ANY" => 0,
        "ONE" | "LOCAL_ONE" => 1,
        "TWO" => 2,
        "THREE" => 3,
        "QUORUM" | "LOCAL_QUORUM" | "EACH_QUORUM" => rf / 2 + 1,
        "ALL" => rf,
        _ => return None,
    })
}

impl Default for ScyllaSettings {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            keyspace: "vaxcamp".into(),
            datacenter: None,
            replication_factor: 3,
            write_consistency: "LOCAL_QUORUM".into(),
            read_consistency: "LOCAL_QUORUM".into(),
            username: None,
            password: None,
            tls: false,
            tls_ca_file: None,
            shards: SCYLLA_DEFAULT_SHARDS,
            max_in_flight_per_shard: 64,
            request_timeout_ms: 2000,
            max_clock_skew_ms: 1000,
            lease_duration_ms: 15_000,
        }
    }
}

impl ScyllaSettings {
    /// Whether the campaign lives in ScyllaDB rather than the embedded store.
    pub fn enabled(&self) -> bool {
        !self.nodes.is_empty()
    }

    /// # Errors
    /// A description of the first value that cannot work, saying what to change.
    pub fn validate(&self) -> Result<(), String> {
        for node in &self.nodes {
            let port_ok = node
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(format!(
                    "scylla.nodes: {node:?} is not host:port (e.g. \"10.0.0.11:9042\")"
                ));
            }
        }
        let ks = &self.keyspace;
        if ks.is_empty()
            || ks.len() > 48
            || !ks.starts_with(|c: char| c.is_ascii_alphabetic())
            || !ks.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!(
                "scylla.keyspace {ks:?} must be 1 to 48 ASCII letters, digits or '_', starting with a letter"
            ));
        }
        if self.datacenter.as_deref().is_some_and(str::is_empty) {
            return Err(
                "scylla.datacenter is empty; name the local datacenter or leave it out".into(),
            );
        }
        if !(1..=15).contains(&self.replication_factor) {
            return Err(format!(
                "scylla.replication_factor must be 1 to 15, not {} (3 for a production cluster)",
                self.replication_factor
            ));
        }
        let rf = self.replication_factor;
        let level = |key: &str, value: &str| -> Result<u32, String> {
            replicas_at(value, rf).ok_or_else(|| {
                format!(
                    "scylla.{key} {value:?} is not a consistency level; use one of {}",
                    CONSISTENCY_LEVELS.join(", ")
                )
            })
        };
        let write = level("write_consistency", &self.write_consistency)?;
        let read = level("read_consistency", &self.read_consistency)?;
        if self.read_consistency == "ANY" {
            return Err("scylla.read_consistency ANY is for writes only; use LOCAL_QUORUM".into());
        }
        if write == 0 {
            return Err(
                "scylla.write_consistency ANY does not make a dose durable on any replica; use LOCAL_QUORUM"
                    .into(),
            );
        }
        if write > rf || read > rf {
            return Err(format!(
                "scylla consistency {} / {} needs more replicas than replication_factor {rf}",
                self.write_consistency, self.read_consistency
            ));
        }
        if read + write <= rf {
            return Err(format!(
                "scylla.read_consistency {} and write_consistency {} do not overlap with replication_factor {rf} \
                 (R + W must exceed RF, or a restart may miss the last acknowledged write); use LOCAL_QUORUM for both",
                self.read_consistency, self.write_consistency
            ));
        }
        if !self.tls
            && let Some(ca) = &self.tls_ca_file
        {
            return Err(format!(
                "scylla.tls_ca_file is {} but scylla.tls is off; set tls = true (--scylla-tls) or drop the CA file",
                ca.display()
            ));
        }
        if !(1..=256).contains(&self.shards) {
            return Err(format!(
                "scylla.shards must be 1 to 256, not {}",
                self.shards
            ));
        }
        if !(1..=65_536).contains(&self.max_in_flight_per_shard) {
            return Err("scylla.max_in_flight_per_shard must be 1 to 65536".into());
        }
        if !(100..=600_000).contains(&self.request_timeout_ms) {
            return Err("scylla.request_timeout_ms must be 100 to 600000".into());
        }
        if !(1_000..=600_000).contains(&self.lease_duration_ms) {
            return Err("scylla.lease_duration_ms must be 1000 to 600000".into());
        }
        // The rule the store enforces at connect, checked here so that a bad file is refused
        // before anything connects.
        let ms = std::time::Duration::from_millis;
        store::lease_timing::check(
            ms(self.request_timeout_ms),
            ms(self.max_clock_skew_ms),
            ms(self.lease_duration_ms),
        )
        .map_err(|e| {
            format!("scylla.request_timeout_ms, max_clock_skew_ms and lease_duration_ms: {e}")
        })?;
        Ok(())
    }
}

/// Where committed doses are counted for analytics. `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsSettings {
    /// ClickHouse HTTP URL; `None` uses the embedded rollups.
    pub clickhouse: Option<String>,
    pub database: String,
    pub user: Option<String>,
    /// Never in the file: from `VAXCAMP_CLICKHOUSE_PASSWORD`.
    #[serde(skip)]
    pub password: Option<String>,
    pub outbox_max_bytes: u64,
    pub lag_alert_seconds: u64,
    /// How long `GET /v1/allocation`, `GET /v1/analytics/uptake` (and so `vaxcamp allocate`)
    /// wait for the analytics backend before answering 503 `analytics_unavailable`: a ClickHouse
    /// that accepts connections and never answers must not hang them.
    pub read_timeout_seconds: u64,
}

impl std::fmt::Debug for AnalyticsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            clickhouse,
            database,
            user,
            password,
            outbox_max_bytes,
            lag_alert_seconds,
            read_timeout_seconds,
        } = self;
        f.debug_struct("AnalyticsSettings")
            .field("clickhouse", clickhouse)
            .field("database", database)
            .field("user", user)
            .field("password", &password.as_ref().map(|_| REDACTED))
            .field("outbox_max_bytes", outbox_max_bytes)
            .field("lag_alert_seconds", lag_alert_seconds)
            .field("read_timeout_seconds", read_timeout_seconds)
            .finish()
    }
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        Self {
            clickhouse: None,
            database: "vaxcamp".into(),
            user: None,
            password: None,
            outbox_max_bytes: 1 << 30,
            lag_alert_seconds: 60,
            read_timeout_seconds: 10,
        }
    }
}

/// Largest `unit` (doses per vial or box) a plan accepts.
pub const MAX_UNIT_DOSES: u32 = 100_000;
/// Longest uptake window and planning horizon, in days.
pub const MAX_DAYS: u32 = 366;
/// Longest grace before an owed dose lapses, in days.
pub const MAX_LAPSE_DAYS: u32 = 3650;

/// Defaults of the allocation planner (each can be given per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllocationSettings {
    pub unit_doses: u32,
    pub window_days: u32,
    pub horizon_days: u32,
    /// A person more than this many days overdue for their next dose counts as lapsed: shown on
    /// the plan to be called back, no dose reserved (default 90: three times the longest
    /// interval in the catalogue, long past any second-dose campaign's recall).
    pub owed_lapse_days: u32,
}

impl Default for AllocationSettings {
    fn default() -> Self {
        Self {
            unit_doses: 10,
            window_days: 7,
            horizon_days: 14,
            owed_lapse_days: analytics::allocation::DEFAULT_OWED_LAPSE_DAYS,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        let writer = WriterConfig::default();
        let api = ApiConfig::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data: PathBuf::from("./data"),
            queue_capacity: writer.queue_capacity,
            max_commit_batch: writer.max_commit_batch,
            max_body_bytes: api.max_body_bytes,
            max_batch_doses: api.max_batch_doses,
            retry_after_seconds: api.retry_after_seconds,
            certificate_validity_days: 365,
            certificate_cache_entries: 10_000,
            analytics: AnalyticsSettings::default(),
            scylla: ScyllaSettings::default(),
            allocation: AllocationSettings::default(),
            campaign: CampaignSettings::default(),
            live: LiveSettings::default(),
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("configuration file {path}: {reason}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub reason: String,
}

impl ServerConfig {
    /// Reads a TOML file; unknown keys are errors (a typo must not silently fall back to a default).
    ///
    /// # Errors
    /// When the file cannot be read or parsed, or has unknown keys.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let config: Self = toml::from_str(&text).map_err(|e| ConfigError {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        config.validate().map_err(|reason| ConfigError {
            path: path.to_owned(),
            reason,
        })?;
        Ok(config)
    }

    /// # Errors
    /// A description of the first value out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.queue_capacity == 0 || self.max_commit_batch == 0 {
            return Err("queue_capacity and max_commit_batch must be at least 1".into());
        }
        if !(1..=10_000).contains(&self.max_batch_doses) {
            return Err("max_batch_doses must be 1 to 10000".into());
        }
        if self.max_body_bytes < 4096 {
            return Err("max_body_bytes must be at least 4096".into());
        }
        if self.analytics.outbox_max_bytes < 1 << 20 {
            return Err("analytics.outbox_max_bytes must be at least 1048576 (1 MiB)".into());
        }
        if let Some(url) = &self.analytics.clickhouse {
            // The clickhouse client is built without TLS (see ARCHITECTURE.md): an https URL
            // would start the server and then fail every shipment, so refuse it here.
            if url.starts_with("https://") {
                return Err(format!(
                    "analytics.clickhouse {url:?}: this build speaks plain HTTP to ClickHouse; \
                     reach it over a private network or a local TLS proxy (e.g. stunnel) and give its http:// address"
                ));
            }
            if !url.starts_with("http://") {
                return Err(format!(
                    "analytics.clickhouse must be an http:// URL of ClickHouse's HTTP interface, not {url:?}"
                ));
            }
        }
        self.scylla.validate()?;
        if !(1..=3600).contains(&self.analytics.read_timeout_seconds) {
            return Err("analytics.read_timeout_seconds must be 1 to 3600".into());
        }
        let a = &self.allocation;
        if a.unit_doses == 0 || a.window_days == 0 || a.horizon_days == 0 {
            return Err(
                "allocation.unit_doses, window_days and horizon_days must be at least 1".into(),
            );
        }
        if a.unit_doses > MAX_UNIT_DOSES || a.window_days > MAX_DAYS || a.horizon_days > MAX_DAYS {
            return Err(format!(
                "allocation.unit_doses must be at most {MAX_UNIT_DOSES}, window_days and \
                 horizon_days at most {MAX_DAYS}"
            ));
        }
        if a.owed_lapse_days > MAX_LAPSE_DAYS {
            return Err(format!(
                "allocation.owed_lapse_days must be at most {MAX_LAPSE_DAYS}"
            ));
        }
        self.campaign.utc_offset_seconds()?;
        if !(1..=100_000).contains(&self.live.max_streams) {
            return Err("live.max_streams must be 1 to 100000".into());
        }
        if !(1..=600).contains(&self.live.seed_timeout_seconds) {
            return Err("live.seed_timeout_seconds must be 1 to 600".into());
        }
        Ok(())
    }

    pub fn writer(&self) -> WriterConfig {
        WriterConfig {
            queue_capacity: self.queue_capacity,
            max_commit_batch: self.max_commit_batch,
        }
    }

    pub fn api(&self) -> ApiConfig {
        ApiConfig {
            max_body_bytes: self.max_body_bytes,
            max_batch_doses: self.max_batch_doses,
            retry_after_seconds: self.retry_after_seconds,
            ..ApiConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_password() {
        let mut config = ServerConfig::default();
        config.scylla.username = Some("vaxcamp".into());
        config.scylla.password = Some("scylla-secret-123".into());
        config.analytics.password = Some("clickhouse-secret-456".into());
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("scylla-secret-123"), "{shown}");
        assert!(!shown.contains("clickhouse-secret-456"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(
            shown.contains("vaxcamp"),
            "the rest is still shown: {shown}"
        );
    }

    #[test]
    fn files_override_defaults_and_refuse_unknown_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vaxcamp.toml");
        std::fs::write(&path, "listen = \"0.0.0.0:9000\"\nqueue_capacity = 8\n").expect("write");
        let config = ServerConfig::from_file(&path).expect("parse");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.queue_capacity, 8);
        assert_eq!(
            config.max_commit_batch,
            ServerConfig::default().max_commit_batch
        );

        std::fs::write(
            &path,
            "[analytics]\nclickhouse = \"http://127.0.0.1:8123\"\n[allocation]\nunit_doses = 6\n",
        )
        .expect("write");
        let config = ServerConfig::from_file(&path).expect("parse");
        assert_eq!(
            config.analytics.clickhouse.as_deref(),
            Some("http://127.0.0.1:8123")
        );
        assert_eq!(config.allocation.unit_doses, 6);
        assert_eq!(config.allocation.window_days, 7);

        std::fs::write(&path, "[analytics]\nclickhouse = \"127.0.0.1:8123\"\n").expect("write");
        let err = ServerConfig::from_file(&path).expect_err("not a URL");
        assert!(err.to_string().contains("http://"), "{err}");
        std::fs::write(
            &path,
            "[analytics]\nclickhouse = \"https://ch.example:8443\"\n",
        )
        .expect("write");
        let err = ServerConfig::from_file(&path).expect_err("no TLS to ClickHouse in this build");
        assert!(err.to_string().contains("plain HTTP"), "{err}");

        std::fs::write(
            &path,
            "[scylla]\nnodes = [\"10.0.0.11:9042\", \"10.0.0.12:9042\"]\ndatacenter = \"dc1\"\n",
        )
        .expect("write");
        let config = ServerConfig::from_file(&path).expect("parse");
        assert!(config.scylla.enabled());
        assert_eq!(config.scylla.nodes.len(), 2);
        assert_eq!(config.scylla.write_consistency, "LOCAL_QUORUM");
        assert_eq!(config.scylla.shards, SCYLLA_DEFAULT_SHARDS);
        assert!(!ServerConfig::default().scylla.enabled());

        for (text, needle) in [
            ("nodes = [\"10.0.0.11\"]", "host:port"),
            ("keyspace = \"vax-camp\"", "keyspace"),
            ("write_consistency = \"LOCAL_QUORUMM\"", "LOCAL_QUORUM"),
            (
                "write_consistency = \"ONE\"\nread_consistency = \"ONE\"",
                "overlap",
            ),
            ("replication_factor = 0", "replication_factor"),
            ("password = \"secret\"", "password"),
            ("tls_ca_file = \"/etc/ca.pem\"", "tls is off"),
            ("request_timeout_ms = 5000", "a third of the lease duration"),
            // The former default: it fits only if the driver's resends are not counted.
            ("request_timeout_ms = 3000", "a third of the lease duration"),
            (
                "lease_duration_ms = 9000\nmax_clock_skew_ms = 1000",
                "scylla.request_timeout_ms, max_clock_skew_ms and lease_duration_ms",
            ),
        ] {
            std::fs::write(&path, format!("[scylla]\n{text}\n")).expect("write");
            let err = ServerConfig::from_file(&path).expect_err(text);
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
        // One replica: ONE/ONE overlaps (1 + 1 > 1).
        let single = ScyllaSettings {
            replication_factor: 1,
            write_consistency: "ONE".into(),
            read_consistency: "ONE".into(),
            ..ScyllaSettings::default()
        };
        assert_eq!(single.validate(), Ok(()));

        std::fs::write(
            &path,
            "[campaign]\nutc_offset = \"-03:30\"\n[live]\nmax_streams = 8\nseed_timeout_seconds = 3\n",
        )
        .expect("write");
        let config = ServerConfig::from_file(&path).expect("parse");
        assert_eq!(config.campaign.utc_offset_seconds(), Ok(-12_600));
        assert_eq!(config.live.max_streams, 8);
        assert_eq!(config.live.seed_timeout_seconds, 3);
        std::fs::write(&path, "[live]\nseed_timeout_seconds = 0\n").expect("write");
        let err = ServerConfig::from_file(&path).expect_err("no time to seed");
        assert!(
            err.to_string()
                .contains("seed_timeout_seconds must be 1 to 600"),
            "{err}"
        );
        assert_eq!(
            ServerConfig::default().campaign.utc_offset_seconds(),
            Ok(25_200),
            "Viet Nam by default"
        );
        for bad in [
            "7", "+7:00", "+07", "+15:00", "+14:30", "UTC+7", "+07:60", "07:00", "+07:00x",
        ] {
            std::fs::write(&path, format!("[campaign]\nutc_offset = \"{bad}\"\n")).expect("write");
            let err = ServerConfig::from_file(&path).expect_err(bad);
            assert!(err.to_string().contains("+07:00"), "{bad}: {err}");
        }
        assert_eq!(parse_utc_offset("+05:45"), Ok(20_700));
        assert_eq!(parse_utc_offset("-09:30"), Ok(-34_200));
        assert_eq!(parse_utc_offset("+14:00"), Ok(50_400));
        assert_eq!(parse_utc_offset("-00:00"), Ok(0));
        assert_eq!(parse_utc_offset("-00:30"), Ok(-1_800));
        assert_eq!(parse_utc_offset(" utc "), Ok(0));
        assert_eq!(parse_utc_offset("Z"), Ok(0));
        assert!(
            parse_utc_offset("-14:01")
                .expect_err("beyond -14:00")
                .contains("from -14:00 to +14:00")
        );

        std::fs::write(&path, "queue_capacty = 8\n").expect("write");
        let err = ServerConfig::from_file(&path).expect_err("typo refused");
        assert!(err.to_string().contains("queue_capacty"), "{err}");
    }
}
