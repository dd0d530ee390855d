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
//!
//! [allocation]
//! unit_doses = 10                         # allocations in whole vials/boxes of this many doses
//! window_days = 7                         # uptake window
//! horizon_days = 14                       # days of need a shipment should cover
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    pub allocation: AllocationSettings,
}

/// Where committed doses are counted for analytics.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
        }
    }
}

/// Defaults of the allocation planner (each can be given per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllocationSettings {
    pub unit_doses: u32,
    pub window_days: u32,
    pub horizon_days: u32,
}

impl Default for AllocationSettings {
    fn default() -> Self {
        Self {
            unit_doses: 10,
            window_days: 7,
            horizon_days: 14,
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
            allocation: AllocationSettings::default(),
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
        if let Some(url) = &self.analytics.clickhouse
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "analytics.clickhouse must be an http:// URL of ClickHouse's HTTP interface, not {url:?}"
            ));
        }
        let a = &self.allocation;
        if a.unit_doses == 0 || a.window_days == 0 || a.horizon_days == 0 {
            return Err(
                "allocation.unit_doses, window_days and horizon_days must be at least 1".into(),
            );
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

        std::fs::write(&path, "queue_capacty = 8\n").expect("write");
        let err = ServerConfig::from_file(&path).expect_err("typo refused");
        assert!(err.to_string().contains("queue_capacty"), "{err}");
    }
}
