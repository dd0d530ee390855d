//! Health, metrics, the API description, public verification material and statistics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use store::Role;

use super::{ApiJson, Shared, unix_now};
use crate::auth::Caller;
use crate::error::{ApiError, json_answer};

/// `GET /healthz`: no token, no store access; the cheapest endpoint (the load generator's
/// baseline).
pub async fn healthz(State(state): State<Shared>) -> Response {
    json_answer(
        StatusCode::OK,
        json!({
            "status": "ok",
            "backend": state.store.backend_name(),
            // False on a ScyllaDB replica that lost the writer lease: the load balancer takes
            // it out of rotation (deploy/haproxy/haproxy.cfg).
            "writer": state.store.holds_writer_lease().unwrap_or(true),
            "uptime_s": state.started.elapsed().as_secs(),
        }),
    )
}

pub async fn metrics(State(state): State<Shared>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Observer])?;
    for (shard, depth) in state.write_path.queue_depths().into_iter().enumerate() {
        state
            .metrics
            .shard_queue_depth
            .get_or_create(&vec![("shard", shard.to_string())])
            .set(depth as i64);
    }
    state
        .metrics
        .record_analytics(&state.feed.outbox().status(), &state.shipper.status());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response())
}

pub async fn openapi(caller: Caller) -> Result<Response, ApiError> {
    // Any valid token: the description is no secret, but every non-public endpoint needs one.
    let _ = caller;
    Ok(json_answer(StatusCode::OK, crate::openapi::document()))
}

pub async fn trust(State(state): State<Shared>) -> Response {
    let trust = state
        .trust
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    json_answer(
        StatusCode::OK,
        serde_json::to_value(&trust).unwrap_or_default(),
    )
}

pub async fn revocations(State(state): State<Shared>) -> Response {
    let list = state
        .revocations
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    json_answer(
        StatusCode::OK,
        serde_json::to_value(&list).unwrap_or_default(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    pub qr: String,
}

/// `POST /v1/verify`: checks a `VC1:` certificate (or an `RG1:` pass) against this server's
/// trust list and revocations. Public, like the material it uses: anyone could do the same
/// offline. An invalid certificate is a 200 with `valid: false`, not an error of the request.
pub async fn verify(
    State(state): State<Shared>,
    ApiJson(request): ApiJson<VerifyRequest>,
) -> Response {
    // Read guards, not copies: the lists are only replaced by key rotation and corrections, and
    // copying the revocation list on every check would grow with every correction.
    let trust = state
        .trust
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let revoked = state
        .revocations
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let text = request.qr.trim();
    let limits = &state.config.qr_limits;
    let answer = if text.starts_with(certify::REGISTRATION_PREFIX) {
        match certify::verify_registration(text, &trust, unix_now(), limits) {
            Ok(v) => {
                json!({"valid": true, "kind": "registration", "kid": v.kid.to_string(), "pass": v.content})
            }
            Err(e) => {
                json!({"valid": false, "kind": "registration", "error": e.code(), "message": e.to_string()})
            }
        }
    } else {
        match certify::verify_certificate(text, &trust, Some(&revoked), unix_now(), limits) {
            Ok(v) => json!({
                "valid": true,
                "kind": "certificate",
                "kid": v.kid.to_string(),
                "status": v.content.status.as_str(),
                "colour": v.content.status.colour(),
                "certificate": v.content,
            }),
            Err(e) => {
                json!({"valid": false, "kind": "certificate", "error": e.code(), "message": e.to_string()})
            }
        }
    };
    json_answer(StatusCode::OK, answer)
}

/// `GET /v1/stats`: a snapshot for the console and the demo. Reads running counters only; no
/// scan of the store.
pub async fn stats(State(state): State<Shared>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Observer])?;
    let totals = state.store.totals().await?;
    // Read once: the figures shown and the alerts drawn from them are of the same moment.
    let outbox = state.feed.outbox().status();
    let shipper = state.shipper.status();
    let alerts = super::live::analytics_figures_of(&state, &outbox, &shipper).alerts();
    let lots: Vec<serde_json::Value> = state
        .campaign
        .lots()
        .iter()
        .map(|s| {
            json!({
                "lot": s.lot.lot_number, "site_id": s.lot.site_id, "product": s.lot.product,
                "quantity": s.lot.quantity, "used": s.used(), "remaining": s.remaining(),
            })
        })
        .collect();
    Ok(json_answer(
        StatusCode::OK,
        json!({
            "uptime_s": state.started.elapsed().as_secs(),
            "backend": state.store.backend_name(),
            "shards": state.write_path.shard_count(),
            "registrations": totals.registrations,
            "doses": totals.doses,
            "commits": state.write_path.counters.commits.load(std::sync::atomic::Ordering::Relaxed),
            "queue_depths": state.write_path.queue_depths(),
            "dose_latency": state.metrics.dose_latency(),
            "stock": lots,
            "analytics": {
                "backend": state.analytics.backend_name(),
                "outbox": outbox,
                "shipper": shipper,
                "alerts": alerts,
            },
        }),
    ))
}
