//! Putting the server together, running it, and stopping it without losing work.
//!
//! Shutdown order matters: stop accepting connections and let in-flight requests finish (axum's
//! graceful shutdown), then close the write path so the shard writers drain their queues and
//! commit, then flush the store. Every dose that was acknowledged was durable before its answer;
//! this order also lets the doses already queued be committed rather than dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use analytics::shipper::ShipperConfig;
use analytics::{
    Analytics, ClickHouseAnalytics, ClickHouseConfig, EmbeddedAnalytics, Outbox, Shipper,
};
use certify::{KeyPurpose, RevocationList, Signer};
use store::Store;
use tokio::net::TcpListener;

use crate::api::{self, AppState, Shared};
use crate::auth::Credentials;
use crate::campaign::Campaign;
use crate::certificates::{CertificateDesk, IssuerSettings};
use crate::config::ServerConfig;
use crate::feed::AnalyticsFeed;
use crate::keystore::{Keystore, KeystoreError};
use crate::live::{Live, LiveConfig};
use crate::metrics::Metrics;
use crate::writer::WritePath;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Keys(#[from] KeystoreError),
    #[error("the signing key cannot be used: {0}")]
    Signer(#[from] certify::SignError),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Analytics(#[from] analytics::AnalyticsError),
    #[error("configuration: {0}")]
    Config(String),
    #[error(
        "cannot settle the corrections the last run left unsettled ({0}); start again when the store can be read"
    )]
    Corrections(String),
    #[error(
        "this process lost the ScyllaDB writer lease (its renewal lapsed or another process took it over), so it stopped; start it again: it waits as a standby and loads the campaign afresh when it takes the lease"
    )]
    WriterLeaseLost,
}

/// Builds the shared state over an open store: catalogue, credentials, keys, write path.
///
/// # Errors
/// Store reads, missing or unusable signing keys, thread spawn failures.
pub async fn build_state(
    store: Arc<dyn Store>,
    data: &Path,
    config: &ServerConfig,
) -> Result<Shared, ServeError> {
    let campaign = Arc::new(Campaign::load(store.as_ref()).await?);
    let credentials = Credentials::from_records(store.credentials().await?);
    let keys = Keystore::in_data_dir(data);
    let trust = keys.trust_list(&campaign.issuer)?;
    let certificate_key = keys.signing_key(KeyPurpose::Certificate, &campaign.issuer)?;
    let registration_key = keys.signing_key(KeyPurpose::Registration, &campaign.issuer)?;
    let certificate_valid_from = certificate_key.valid_from();
    // `Signer::new` refuses a key that the trust list does not publish as active.
    let certificate_signer = Signer::new(certificate_key, &trust)?;
    let registration_signer = Signer::new(registration_key, &trust)?;
    let mut revocations = RevocationList::default();
    for revoked in store.revocations().await? {
        revocations.insert(revoked.certificate_id);
    }
    let metrics = Arc::new(Metrics::new());
    // The console's all-time totals, read once before any dose or registration is written; a
    // snapshot adds what was counted since.
    let totals = store.totals().await?;
    let live = Arc::new(
        Live::new(
            campaign.clone(),
            LiveConfig {
                queue_capacity: config.queue_capacity,
                utc_offset_s: config
                    .campaign
                    .utc_offset_seconds()
                    .map_err(ServeError::Config)?,
                max_streams: config.live.max_streams,
                ..LiveConfig::default()
            },
        )
        .with_totals_at_start(totals.doses, totals.registrations),
    );
    let AnalyticsParts {
        backend: analytics,
        feed,
        shipper,
    } = start_analytics(data, config, &campaign)?;
    // Corrections a crash caught between the outbox and the store: their analytics rows are
    // queued or forgotten by what the store holds, before any new correction can touch them.
    let (stored, not_stored) = feed
        .settle_left_corrections(store.as_ref())
        .await
        .map_err(ServeError::Corrections)?;
    if stored + not_stored > 0 {
        tracing::info!(
            stored,
            not_stored,
            "settled the analytics rows of corrections the last run left unsettled"
        );
    }
    // The last days' doses, read once before any dose is written (after the outbox has drained
    // what an earlier run left in it); from here on the shard writers move them.
    crate::live::seed_at_start(
        &live,
        analytics.as_ref(),
        feed.outbox(),
        Duration::from_secs(config.live.seed_timeout_seconds),
    )
    .await;
    let write_path = WritePath::start(
        store.clone(),
        campaign.clone(),
        metrics.clone(),
        live.clone(),
        Some(feed.clone()),
        &config.writer(),
        tokio::runtime::Handle::current(),
    )?;
    let certificates = CertificateDesk::new(
        certificate_signer,
        certificate_valid_from,
        IssuerSettings {
            issuer: campaign.issuer.clone(),
            country: campaign.country.clone(),
            validity_days: config.certificate_validity_days,
        },
        config.certificate_cache_entries,
    );
    tracing::info!(
        backend = store.backend_name(),
        analytics = analytics.backend_name(),
        shards = store.shard_count(),
        certificate_kid = %certificates_kid(&trust, KeyPurpose::Certificate),
        "server state ready"
    );
    Ok(Arc::new(AppState {
        store,
        campaign,
        credentials,
        write_path,
        certificates,
        registration_signer,
        trust: RwLock::new(trust),
        revocations: RwLock::new(revocations),
        metrics,
        live,
        analytics,
        feed,
        shipper,
        allocation: config.allocation,
        analytics_lag_alert_s: config.analytics.lag_alert_seconds,
        analytics_read_timeout: Duration::from_secs(config.analytics.read_timeout_seconds),
        config: config.api(),
        started: Instant::now(),
    }))
}

/// The analytics side of the server, started.
struct AnalyticsParts {
    backend: Arc<dyn Analytics>,
    feed: Arc<AnalyticsFeed>,
    shipper: Shipper,
}

/// Opens the outbox and the analytics backend and starts shipping. Every lot in the catalogue
/// is announced (a lot added or changed on the stopped server becomes a movement; an unchanged
/// one changes nothing).
fn start_analytics(
    data: &Path,
    config: &ServerConfig,
    campaign: &Arc<Campaign>,
) -> Result<AnalyticsParts, ServeError> {
    let settings = &config.analytics;
    let outbox = Arc::new(Outbox::open(
        &data.join("analytics-outbox"),
        settings.outbox_max_bytes,
    )?);
    let backend: Arc<dyn Analytics> = match &settings.clickhouse {
        Some(url) => Arc::new(ClickHouseAnalytics::new(&ClickHouseConfig {
            url: url.clone(),
            database: settings.database.clone(),
            user: settings.user.clone(),
            password: settings.password.clone(),
            ..ClickHouseConfig::new(url.clone())
        })),
        None => Arc::new(EmbeddedAnalytics::open(&data.join("analytics"))?),
    };
    let feed = Arc::new(AnalyticsFeed::new(outbox.clone(), campaign.clone()));
    let lots: Vec<_> = campaign.lots().iter().map(|s| s.lot.clone()).collect();
    feed.lots_allocated(&lots);
    // Schema and migrations now, in the background: the dose path never waits for them, and an
    // unreachable ClickHouse or a refused migration is in the log from the first second.
    let preparing = backend.clone();
    tokio::spawn(async move {
        match preparing.prepare().await {
            Ok(()) => tracing::info!(
                analytics = preparing.backend_name(),
                "analytics schema is ready"
            ),
            Err(e) => tracing::warn!(
                analytics = preparing.backend_name(),
                error = %e,
                "analytics backend not ready; rows wait in the outbox and the schema is applied on the next try"
            ),
        }
    });
    let pending = outbox.status();
    if pending.rows > 0 {
        tracing::info!(
            rows = pending.rows,
            "analytics rows already in the outbox (from set-up commands or the last run) will be shipped first"
        );
    }
    let shipper = Shipper::spawn(outbox, backend.clone(), ShipperConfig::default());
    Ok(AnalyticsParts {
        backend,
        feed,
        shipper,
    })
}

fn certificates_kid(trust: &certify::TrustList, purpose: KeyPurpose) -> String {
    trust
        .active_key(purpose)
        .map_or_else(|| "none".to_owned(), |k| k.kid.to_string())
}

/// Serves on `listener` until `shutdown` completes, then drains the write path and flushes
/// the store.
///
/// # Errors
/// Accept-loop I/O errors and store flush failures.
pub async fn serve(
    listener: TcpListener,
    state: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let app = api::router(state.clone());
    // Live streams never end by themselves: close them when shutdown begins, or the graceful
    // shutdown would wait for them forever.
    let live = state.live.clone();
    let lease_lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = lease_watchdog(state.store.clone(), lease_lost.clone());
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            () = watchdog => {}
        }
        live.close();
    };
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    tracing::info!("no longer accepting requests; draining the write path");
    let draining = state.clone();
    // Joining writer threads blocks; keep it off the async workers.
    let _ = tokio::task::spawn_blocking(move || draining.write_path.close()).await;
    // The outbox holds everything committed; one last shipment, bounded, then it waits on disk.
    if tokio::time::timeout(Duration::from_secs(10), state.shipper.stop())
        .await
        .is_err()
    {
        tracing::warn!("analytics backend did not answer in 10 s; rows stay in the outbox");
    }
    if let Err(e) = state.feed.outbox().close() {
        tracing::error!(error = %e, "could not flush the analytics outbox");
    }
    if let Err(e) = state.analytics.close().await {
        tracing::error!(error = %e, "could not flush the analytics rollups");
    }
    state.store.close().await?;
    if lease_lost.load(std::sync::atomic::Ordering::Acquire) {
        return Err(ServeError::WriterLeaseLost);
    }
    tracing::info!("stopped cleanly");
    result.map_err(ServeError::Io)
}

/// Completes when a store that held the writer lease (ScyllaDB) no longer does; never for a
/// store without one. A process that lost the lease stops instead of waiting to take it again:
/// what it keeps in memory (catalogue, stock, credentials) may have been changed meanwhile by
/// the process that wrote, and only a fresh start loads it all again (see `store::scylla`'s
/// lease). Checking is an atomic read and a clock read, so every 100 ms costs nothing.
async fn lease_watchdog(store: Arc<dyn Store>, lost: Arc<std::sync::atomic::AtomicBool>) {
    if store.holds_writer_lease() != Some(true) {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if store.holds_writer_lease() == Some(false) {
            tracing::error!(
                backend = store.backend_name(),
                "this process lost the writer lease; it stops taking writes and exits so that it restarts as a standby with fresh state"
            );
            lost.store(true, std::sync::atomic::Ordering::Release);
            return;
        }
    }
}

/// Binds `config.listen` and serves the embedded store in `config.data`.
///
/// # Errors
/// See [`build_state`] and [`serve`]; also bind failures.
pub async fn run(
    config: ServerConfig,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let state = build_state(store, &config.data, &config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    serve(listener, state, shutdown).await
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}
