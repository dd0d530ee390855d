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
    /// Longest wait for the backend to take one batch. The clickhouse client has no request
    /// timeout of its own, so a black-holed server would otherwise hold the shipper forever;
    /// past this the batch counts as failed and is retried.
    pub apply_timeout: Duration,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        Self {
            batch_rows: 100_000,
            flush_interval: Duration::from_millis(500),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            apply_timeout: Duration::from_secs(60),
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
    /// Rows set aside since start because the backends cannot hold them (see
    /// [`Event::unrepresentable`]); the outbox keeps them and counts them across restarts.
    pub set_aside_rows: u64,
    /// Why the last row was set aside.
    pub last_set_aside: Option<String>,
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
        lock(&self.status).clone()
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
        let (events, unshippable) = split_shippable(&batch);
        let applied = if events.is_empty() {
            Ok(())
        } else {
            match tokio::time::timeout(config.apply_timeout, analytics.apply(&events)).await {
                Ok(result) => result,
                Err(_) => Err(crate::AnalyticsError::Invalid(format!(
                    "the analytics backend did not take a batch of {} rows within {:?}",
                    events.len(),
                    config.apply_timeout
                ))),
            }
        };
        // Rows that cannot be shipped are set aside only once the rest of their batch is in:
        // while the backend refuses the batch it stays whole in the queue, and setting them
        // aside on every retry would store them again each time.
        let applied = applied.and_then(|()| set_aside(&outbox, &unshippable, &status));
        match applied {
            Ok(()) => {
                if let Err(e) = outbox.remove(&batch) {
                    tracing::warn!(error = %e, "shipped rows could not be removed from the outbox; they will be shipped again");
                }
                let oldest = batch.iter().map(|p| p.entry.appended_at).min().unwrap_or(0);
                let lag_ms = nanos(OffsetDateTime::now_utc()).saturating_sub(oldest) / 1_000_000;
                {
                    let mut s = lock(&status);
                    if s.consecutive_failures > 0 {
                        tracing::info!(
                            after_failures = s.consecutive_failures,
                            "analytics backend is back"
                        );
                    }
                    s.shipped_rows += events.len() as u64;
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

/// Keeps the rows the backends cannot hold out of the queue, logged and counted.
///
/// # Errors
/// When they cannot be written; the batch is then retried whole (the backends absorb the
/// replay of its other rows).
fn set_aside(
    outbox: &Outbox,
    unshippable: &[(Event, String)],
    status: &Mutex<ShipperStatus>,
) -> crate::Result<()> {
    if unshippable.is_empty() {
        return Ok(());
    }
    outbox.set_aside_events(unshippable)?;
    for (_, reason) in unshippable {
        tracing::warn!(reason = %reason, "analytics row set aside: the backends cannot hold it");
    }
    let mut s = lock(status);
    s.set_aside_rows += unshippable.len() as u64;
    s.last_set_aside = unshippable.last().map(|(_, reason)| reason.clone());
    Ok(())
}

/// The events of a batch the backends can take, and those to set aside with the reason.
fn split_shippable(batch: &[crate::outbox::Pending]) -> (Vec<Event>, Vec<(Event, String)>) {
    let mut shippable = Vec::new();
    let mut unshippable = Vec::new();
    for event in batch.iter().flat_map(|p| p.entry.events.iter().cloned()) {
        match event.shippable() {
            Ok(event) => shippable.push(event),
            Err(refused) => unshippable.push(*refused),
        }
    }
    (shippable, unshippable)
}

fn lock(status: &Mutex<ShipperStatus>) -> std::sync::MutexGuard<'_, ShipperStatus> {
    status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn record_failure(status: &Mutex<ShipperStatus>, error: String) -> u32 {
    let mut s = lock(status);
    s.last_error = Some(error);
    s.consecutive_failures = s.consecutive_failures.saturating_add(1);
    s.consecutive_failures
}
