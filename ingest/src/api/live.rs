//! The console's data feed: `GET /v1/live` (one snapshot) and `GET /v1/live/stream` (server-sent
//! events, one snapshot a second). Both are for observer and admin tokens.
//!
//! A snapshot reads in-memory counters only (see [`crate::live`]), never the store. It is built
//! at most once a second however many callers there are: `GET /v1/live` and every stream share
//! the newest build, so a wall of consoles costs what one does. Streams are capped
//! (`[live] max_streams`); one more is answered 503 with `Retry-After`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use analytics::{OutboxStatus, ShipperStatus};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use store::Role;
use tokio::time::MissedTickBehavior;

use super::{Shared, unix_now};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::live::{AnalyticsFigures, LiveInputs, LiveSnapshot, LotLevel};

/// How often the stream sends a snapshot.
const STREAM_INTERVAL: Duration = Duration::from_secs(1);
/// A snapshot younger than this is served as it is rather than built again.
const REUSE_WITHIN: Duration = Duration::from_millis(900);

/// Builds a snapshot of the campaign now, from the state's in-memory counters: no store read.
pub fn snapshot(state: &Shared) -> LiveSnapshot {
    let lots = state
        .campaign
        .lots()
        .iter()
        .map(|stock| LotLevel {
            site_id: stock.lot.site_id.clone(),
            product: stock.lot.product.clone(),
            remaining: stock.remaining(),
            used: stock.used(),
        })
        .collect();
    let inputs = LiveInputs {
        backend: state.store.backend_name().to_owned(),
        sites: state.campaign.sites(),
        lots,
        registrations_since_start: state.metrics.registrations.get(),
        checkins_since_start: state.metrics.checkins.get(),
        certificates_signed: state.metrics.certificates_signed.get(),
        queue_depths: state.write_path.queue_depths(),
        latency: state.metrics.dose_latency_window(),
        analytics: analytics_figures(state),
        area_names: state.campaign.area_names(),
    };
    state.live.snapshot_at(unix_now(), inputs)
}

pub(crate) fn analytics_figures(state: &Shared) -> AnalyticsFigures {
    analytics_figures_of(
        state,
        &state.feed.outbox().status(),
        &state.shipper.status(),
    )
}

/// The analytics figures of an outbox and shipper status already read.
pub(crate) fn analytics_figures_of(
    state: &Shared,
    outbox: &OutboxStatus,
    shipper: &ShipperStatus,
) -> AnalyticsFigures {
    AnalyticsFigures {
        backend: state.analytics.backend_name().to_owned(),
        outbox_rows: outbox.rows,
        outbox_bytes: outbox.bytes,
        outbox_max_bytes: outbox.max_bytes,
        lag_ms: outbox.oldest_age_ms,
        dropped_rows: outbox.dropped_rows,
        set_aside: outbox.set_aside,
        last_error: shipper.last_error.clone(),
        lag_alert_s: state.analytics_lag_alert_s,
    }
}

/// The newest snapshot as JSON, built if the last is older than [`REUSE_WITHIN`].
async fn current_json(state: &Shared) -> Result<Arc<str>, ApiError> {
    state
        .live
        .shared_json(REUSE_WITHIN, || {
            serde_json::to_string(&snapshot(state))
                .map(Arc::from)
                .map_err(ApiError::internal)
        })
        .await
}

/// `GET /v1/live`: the campaign now (at most a second old).
pub async fn live(State(state): State<Shared>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Observer])?;
    let json = current_json(&state).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json.to_string(),
    )
        .into_response())
}

/// `GET /v1/live/stream`: an `event: snapshot` a second, each `data:` line one snapshot as in
/// `GET /v1/live`. The stream ends when the server shuts down; clients reconnect.
///
/// The client must send `Accept: text/event-stream` (as `EventSource` does): a client that
/// expects one document gets a 406 telling it to use `GET /v1/live` instead of a body that never
/// ends. When `[live] max_streams` streams are open, one more gets 503 `too_many_streams`.
pub async fn stream(
    State(state): State<Shared>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(&[Role::Admin, Role::Observer])?;
    let accepts_events = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    if !accepts_events {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "this endpoint streams server-sent events: send `Accept: text/event-stream`, or use GET /v1/live for one snapshot",
        ));
    }
    // Held by the stream until it ends (the client goes, or the server shuts down).
    let Some(permit) = state.live.stream_permit() else {
        let mut busy = ApiError::busy(
            format!(
                "{} live streams are open, as many as this server serves; retry later, or read GET /v1/live",
                state.live.config().max_streams
            ),
            state.config.retry_after_seconds.max(5),
        );
        busy.code = "too_many_streams";
        return Err(busy);
    };
    let mut ticks = tokio::time::interval(STREAM_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let closed = state.live.closed();
    let events = futures_util::stream::unfold(
        (state, ticks, closed, permit),
        |(state, mut ticks, mut closed, permit)| async move {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = closed.wait_for(|closed| *closed) => return None,
            }
            let event = match current_json(&state).await {
                Ok(json) => Event::default().event("snapshot").data(&*json),
                Err(e) => Event::default().event("error").data(e.message),
            };
            Some((Ok(event), (state, ticks, closed, permit)))
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use serde_json::Value;
    use store::{
        Area, AreaCode, EmbeddedOptions, EmbeddedStore, Lot, LotNumber, ProductCode, Site, SiteId,
        Store,
    };
    use tower::ServiceExt;

    use super::*;
    use crate::{ServerConfig, build_state, setup};

    struct Fixture {
        state: Shared,
        observer: String,
        site: String,
        _dir: tempfile::TempDir,
    }

    async fn fixture() -> Fixture {
        fixture_with(|_| {}).await
    }

    async fn fixture_with(tweak: impl FnOnce(&mut ServerConfig)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            EmbeddedStore::create(
                dir.path(),
                &EmbeddedOptions {
                    shards: 2,
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        setup::init_campaign(store.as_ref(), dir.path(), "VN-MOH", "VN")
            .await
            .unwrap();
        let hn = Site {
            site_id: SiteId::new("hn-01").unwrap(),
            name: "Bach Mai".into(),
            area: Area {
                province: AreaCode::new("01").unwrap(),
                district: AreaCode::new("001").unwrap(),
                commune: None,
            },
            daily_capacity: 2000,
        };
        let (site, _) = setup::add_site(store.as_ref(), &hn).await.unwrap();
        setup::add_lot(
            store.as_ref(),
            &Lot {
                lot_number: LotNumber::new("FK100").unwrap(),
                site_id: hn.site_id.clone(),
                product: ProductCode::new("COMIRNATY").unwrap(),
                expires: time::macros::date!(2099 - 12 - 31),
                quantity: 500,
            },
        )
        .await
        .unwrap();
        let observer = setup::add_token(store.as_ref(), Role::Observer, None, "committee")
            .await
            .unwrap();
        // The province has a name, the district not; another province is named, without sites.
        let names = "province,district,name\n01,,Hà Nội\n79,,TP. Hồ Chí Minh\n";
        let names = crate::areas::AreaNames::from_csv(names.as_bytes()).unwrap();
        setup::put_area_names(store.as_ref(), &names).await.unwrap();
        let mut config = ServerConfig {
            data: dir.path().to_owned(),
            ..ServerConfig::default()
        };
        tweak(&mut config);
        let state = build_state(store, dir.path(), &config).await.unwrap();
        Fixture {
            state,
            observer,
            site,
            _dir: dir,
        }
    }

    fn get(path: &str, token: &str, accept: Option<&str>) -> Request<Body> {
        let mut request = Request::get(path);
        if !token.is_empty() {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        request.body(Body::empty()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_answers_observers() {
        let f = fixture().await;
        let app = super::super::router(f.state.clone());
        let response = app
            .clone()
            .oneshot(get("/v1/live", &f.observer, None))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["sites"][0]["site_id"], "hn-01");
        assert_eq!(json["sites"][0]["province"], "01");
        assert_eq!(
            json["area_names"],
            serde_json::json!({"01": "Hà Nội"}),
            "the names of the areas with sites, read from the store at start-up"
        );
        assert_eq!(json["sites"][0]["remaining"], 500);
        assert_eq!(json["stock"]["remaining"], 500);
        assert_eq!(json["queues"]["depths"].as_array().unwrap().len(), 2);
        assert_eq!(
            json["doses"]["history_per_s"].as_array().unwrap().len(),
            600
        );

        f.state.write_path.close();
    }

    /// The status and the JSON error code of a refused request.
    async fn refusal(app: &axum::Router, request: Request<Body>) -> (StatusCode, String) {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{status}"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
        (status, json["error"].as_str().unwrap().to_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_feed_refuses_missing_tokens_and_site_tokens_in_json() {
        let f = fixture().await;
        let app = super::super::router(f.state.clone());
        for path in ["/v1/live", "/v1/live/stream"] {
            let accept = Some("text/event-stream");
            assert_eq!(
                refusal(&app, get(path, "", accept)).await,
                (StatusCode::UNAUTHORIZED, "missing_token".into()),
                "{path}"
            );
            assert_eq!(
                refusal(&app, get(path, "vxc_observer_not-a-token", accept)).await,
                (StatusCode::UNAUTHORIZED, "invalid_token".into()),
                "{path}"
            );
            assert_eq!(
                refusal(&app, get(path, &f.site, accept)).await,
                (StatusCode::FORBIDDEN, "forbidden".into()),
                "{path}"
            );
        }
        f.state.write_path.close();
    }

    /// Many `GET /v1/live` callers share one build a second: ten requests in a row are served
    /// by one build per reuse window they span, not one build each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_requests_share_the_cached_build() {
        const REQUESTS: u64 = 10;
        let f = fixture().await;
        let app = super::super::router(f.state.clone());
        let before = f.state.live.snapshots_built();
        let started = std::time::Instant::now();
        for _ in 0..REQUESTS {
            let response = app
                .clone()
                .oneshot(get("/v1/live", &f.observer, None))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.into_body().collect().await.unwrap();
        }
        // However slow the machine, a build is reused for REUSE_WITHIN: at most one per window.
        let windows = 1 + started.elapsed().as_millis() / REUSE_WITHIN.as_millis();
        let built = f.state.live.snapshots_built() - before;
        assert!(
            built >= 1 && u128::from(built) <= windows,
            "{built} builds for {REQUESTS} requests over {windows} reuse windows"
        );
        f.state.write_path.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_beyond_the_cap_are_answered_503() {
        let f = fixture_with(|config| config.live.max_streams = 1).await;
        let app = super::super::router(f.state.clone());
        let open = app
            .clone()
            .oneshot(get(
                "/v1/live/stream",
                &f.observer,
                Some("text/event-stream"),
            ))
            .await
            .unwrap();
        assert_eq!(open.status(), StatusCode::OK);
        let full = app
            .clone()
            .oneshot(get(
                "/v1/live/stream",
                &f.observer,
                Some("text/event-stream"),
            ))
            .await
            .unwrap();
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(full.headers().contains_key("retry-after"));
        let body = full.into_body().collect().await.unwrap().to_bytes();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"], "too_many_streams", "{json}");
        // The first stream ends (the console went away): its place is free again.
        drop(open);
        let again = app
            .oneshot(get(
                "/v1/live/stream",
                &f.observer,
                Some("text/event-stream"),
            ))
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        f.state.write_path.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stream_sends_snapshots_until_the_server_closes_it() {
        let f = fixture().await;
        let app = super::super::router(f.state.clone());
        let not_acceptable = app
            .clone()
            .oneshot(get("/v1/live/stream", &f.observer, None))
            .await
            .unwrap();
        assert_eq!(not_acceptable.status(), StatusCode::NOT_ACCEPTABLE);

        let response = app
            .oneshot(get(
                "/v1/live/stream",
                &f.observer,
                Some("text/event-stream"),
            ))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{:?}",
            response.headers()
        );
        let mut body = response.into_body();
        // The first snapshot comes at once (the interval's first tick is immediate).
        let mut text = String::new();
        while !text.contains("\n\n") {
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .expect("a snapshot within 10 s")
                .unwrap()
                .unwrap();
            if let Ok(data) = frame.into_data() {
                text.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
        assert!(text.starts_with("event: snapshot\ndata: {"), "{text}");
        let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let json: Value = serde_json::from_str(data).unwrap();
        assert_eq!(json["sites"][0]["site_id"], "hn-01");

        // Shutting down ends the stream.
        f.state.live.close();
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(frame) = body.frame().await {
                frame.unwrap();
            }
        })
        .await;
        assert!(end.is_ok(), "the stream ends when the server closes");
        f.state.write_path.close();
    }
}
