//! The HTTP API: routes, shared state and the JSON extractor every handler uses.
//!
//! | route | who | what |
//! | --- | --- | --- |
//! | `GET /healthz` | anyone | liveness and the store backend |
//! | `GET /v1/trust`, `GET /v1/revocations`, `POST /v1/verify` | anyone | public verification material |
//! | `POST /v1/registrations` | registrar, site, admin | pre-register a citizen, get the `RG1:` pass |
//! | `POST /v1/checkins` | site, admin | scan a pass: who, doses, next dose due |
//! | `POST /v1/doses`, `POST /v1/doses:batch` | site, admin | record doses |
//! | `GET /v1/people/{code}` (+ `/pass`, `/certificate`) | site, registrar, admin | a person's record |
//! | `GET /v1/people`, `POST /v1/sites`, `POST /v1/lots` | admin | set-up and listing |
//! | `POST /v1/people/{code}/corrections`, `POST /v1/doses/{id}/corrections`, `POST /v1/revocations`, `GET /v1/audit` | admin | corrections, revocations, audit trail |
//! | `POST /v1/doses:lookup` | admin, site (its own doses) | which dose ids are stored (names people) |
//! | `GET /v1/sites`, `GET /v1/stats`, `GET /metrics` | admin, observer | monitoring |
//! | `GET /v1/live`, `GET /v1/live/stream` (server-sent events) | admin, observer | the console's live feed |
//! | `GET /openapi.json` | any token | this API, as OpenAPI 3 |

mod analytics;
mod corrections;
mod doses;
pub mod live;
mod people;
mod public;
mod setup;

use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use certify::{Limits, RevocationList, Signer, TrustList};
use serde::de::DeserializeOwned;
use store::Store;

use ::analytics::{Analytics, Shipper};

use crate::auth::{Credentials, HasCredentials};
use crate::campaign::Campaign;
use crate::certificates::CertificateDesk;
use crate::config::AllocationSettings;
use crate::error::{self, ApiError};
use crate::feed::AnalyticsFeed;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::writer::WritePath;

/// Limits and timings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most doses in one `doses:batch` request.
    pub max_batch_doses: usize,
    /// `Retry-After` seconds on 503.
    pub retry_after_seconds: u32,
    /// Limits on QR texts submitted for verification or check-in.
    pub qr_limits: Limits,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            max_batch_doses: 1000,
            retry_after_seconds: 1,
            qr_limits: Limits::default(),
        }
    }
}

/// Everything a handler may need, shared by all of them.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub campaign: Arc<Campaign>,
    pub credentials: Credentials,
    pub write_path: WritePath,
    pub certificates: CertificateDesk,
    /// Signs `RG1:` pre-registration passes.
    pub registration_signer: Signer,
    /// The trust list this server publishes (and verifies against).
    pub trust: RwLock<TrustList>,
    pub revocations: RwLock<RevocationList>,
    pub metrics: Arc<Metrics>,
    /// Live aggregates for the console, moved by the shard writers at commit time.
    pub live: Arc<Live>,
    /// Where committed doses are counted (ClickHouse or the embedded rollups).
    pub analytics: Arc<dyn Analytics>,
    /// The write path's side of the analytics outbox.
    pub feed: Arc<AnalyticsFeed>,
    /// Ships the outbox to `analytics`.
    pub shipper: Shipper,
    pub allocation: AllocationSettings,
    /// Analytics lag that raises an alert, seconds (and marks plans and uptake series stale).
    pub analytics_lag_alert_s: u64,
    /// How long an allocation or uptake read waits for the analytics backend before 503.
    pub analytics_read_timeout: std::time::Duration,
    pub config: ApiConfig,
    pub started: Instant,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("backend", &self.store.backend_name())
            .finish_non_exhaustive()
    }
}

impl HasCredentials for Arc<AppState> {
    fn credentials(&self) -> &Credentials {
        &self.credentials
    }
}

pub type Shared = Arc<AppState>;

/// The router with every route, fallback and layer.
pub fn router(state: Shared) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(public::healthz))
        .route("/metrics", get(public::metrics))
        .route("/openapi.json", get(public::openapi))
        .route("/v1/trust", get(public::trust))
        .route(
            "/v1/revocations",
            get(public::revocations).post(corrections::revoke),
        )
        .route("/v1/audit", get(corrections::audit))
        .route(
            "/v1/people/{person_code}/corrections",
            post(corrections::correct_person),
        )
        .route(
            "/v1/doses/{dose_id}/corrections",
            post(corrections::correct_dose),
        )
        .route("/v1/verify", post(public::verify))
        .route("/v1/registrations", post(people::register))
        .route("/v1/checkins", post(people::check_in))
        .route("/v1/people", get(people::list))
        .route("/v1/people/{person_code}", get(people::show))
        .route("/v1/people/{person_code}/pass", get(people::pass))
        .route(
            "/v1/people/{person_code}/certificate",
            get(people::certificate),
        )
        .route("/v1/doses", post(doses::record))
        .route("/v1/doses:batch", post(doses::record_batch))
        .route("/v1/doses:lookup", post(doses::lookup))
        .route("/v1/sites", get(setup::list_sites).post(setup::add_site))
        .route("/v1/lots", post(setup::add_lot))
        .route("/v1/areas", get(setup::list_areas).put(setup::put_areas))
        .route("/v1/stats", get(public::stats))
        .route("/v1/live", get(live::live))
        .route("/v1/live/stream", get(live::stream))
        .route("/v1/allocation", get(analytics::allocation))
        .route("/v1/analytics/uptake", get(analytics::uptake))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Counts every request by route and status, and times it.
async fn count_requests(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    state
        .metrics
        .http_request_seconds
        .get_or_create(&vec![("route", route.clone())])
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .http_requests
        .get_or_create(&vec![("route", route), ("status", status)])
        .inc();
    response
}

/// `axum::Json`, but its rejections answer in our error shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(ApiError::from(rejection as JsonRejection)),
        }
    }
}

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// The current time as unix seconds.
pub(crate) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}
