//! Moves rows from the outbox to the analytics backend, in batches, for as long as it takes.
//!
//! One task per server. It ships whatever is waiting, then lingers up to `flush_interval` for
//! more so that ClickHouse gets few, large inserts (it prefers about one per second) while the
//! lag stays around that interval. A failed batch stays in the outbox and is retried with
//! exponential back-off; the backends make the retry harmless.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::outbox::Outbox;
use crate::row::nanos;
use crate::{Analytics, Event};

/// How the shipper batches and backs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShipperConfig {
    /// Rows per insert at most.
    pub batch_rows: usize,
    /// How long to wait for a batch to fill before shipping what there is.
    pub flush_interval: Duration,
    /// First retry delay after a failure; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        Self {
            batch_rows: 100_000,
            flush_interval: Duration::from_millis(500),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// What the shipper has done, for `/v1/stats`, the console and the alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShipperStatus {
    pub backend: &'static str,
    pub shipped_rows: u64,
    pub batches: u64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_shipped_at: Option<OffsetDateTime>,
    /// Commit → visible in the backend, for the last batch shipped: from the append of its
    /// oldest entry to the backend's acknowledgement, in milliseconds.
    pub last_lag_ms: u64,
    /// The largest `last_lag_ms` since start.
    pub max_lag_ms: u64,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
}

/// The running shipper.
pub struct Shipper {
    status: Arc<Mutex<ShipperStatus>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Shipper {
    /// Starts shipping `outbox` to `analytics` on the current tokio runtime.
    pub fn spawn(
        outbox: Arc<Outbox>,
        analytics: Arc<dyn Analytics>,
        config: ShipperConfig,
    ) -> Self {
        let status = Arc::new(Mutex::new(ShipperStatus {
            backend: analytics.backend_name(),
            ..ShipperStatus::default()
        }));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(outbox, analytics, config, status.clone(), stopped));
        Self {
            status,
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    pub fn status(&self) -> ShipperStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Ships what is waiting (one last try) and stops. Rows that could not be shipped stay in the
    /// outbox for the next start.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run(
    outbox: Arc<Outbox>,
    analytics: Arc<dyn Analytics>,
    config: ShipperConfig,
    status: Arc<Mutex<ShipperStatus>>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut backoff = config.min_backoff;
    loop {
        let stopping = *stopped.borrow();
        let batch = match outbox.peek(config.batch_rows) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the analytics outbox");
                record_failure(&status, e.to_string());
                Vec::new()
            }
        };
        if batch.is_empty() {
            if stopping {
                return;
            }
            tokio::select! {
                () = outbox.appended.notified() => {}
                _ = stopped.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            // Let a batch build up (bounded by the interval) instead of one insert per commit.
            if !*stopped.borrow() {
                tokio::select! {
                    () = tokio::time::sleep(config.flush_interval) => {}
                    _ = stopped.changed() => {}
                }
            }
            continue;
        }
        let rows = batch.iter().map(|p| p.entry.events.len()).sum::<usize>();
        let events: Vec<Event> = batch
            .iter()
            .flat_map(|p| p.entry.events.iter().cloned())
            .collect();
        match analytics.apply(&events).await {
            Ok(()) => {
                if let Err(e) = outbox.remove(&batch) {
                    tracing::warn!(error = %e, "shipped rows could not be removed from the outbox; they will be shipped again");
                }
                let oldest = batch.iter().map(|p| p.entry.appended_at).min().unwrap_or(0);
                let lag_ms = nanos(OffsetDateTime::now_utc()).saturating_sub(oldest) / 1_000_000;
                {
                    let mut s = status
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if s.consecutive_failures > 0 {
                        tracing::info!(
                            after_failures = s.consecutive_failures,
                            "analytics backend is back"
                        );
                    }
                    s.shipped_rows += rows as u64;
                    s.last_lag_ms = lag_ms;
                    s.max_lag_ms = s.max_lag_ms.max(lag_ms);
                    s.batches += 1;
                    s.last_shipped_at = Some(OffsetDateTime::now_utc());
                    s.last_error = None;
                    s.consecutive_failures = 0;
                }
                backoff = config.min_backoff;
                if rows < config.batch_rows && !stopping {
                    tokio::select! {
                        () = tokio::time::sleep(config.flush_interval) => {}
                        _ = stopped.changed() => {}
                    }
                }
            }
            Err(e) => {
                let failures = record_failure(&status, e.to_string());
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(error = %e, rows, failures, "analytics backend refused a batch; it stays in the outbox");
                }
                if stopping {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stopped.changed() => {}
                }
                backoff = (backoff * 2).min(config.max_backoff);
            }
        }
    }
}

fn record_failure(status: &Mutex<ShipperStatus>, error: String) -> u32 {
    let mut s = status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    s.last_error = Some(error);
    s.consecutive_failures = s.consecutive_failures.saturating_add(1);
    s.consecutive_failures
}
