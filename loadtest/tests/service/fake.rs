//! A fake of the vaxcamp HTTP contract, strict about what it accepts, so the tests catch a generator
//! that sends the wrong shape, the wrong token, or doses out of order. It keeps doses in memory and
//! enforces dose order and the dose interval as the real server does; it signs nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

pub const SITE_TOKEN: &str = "site-token-1";
pub const ADMIN_TOKEN: &str = "admin-token";
pub const INTERVAL_DAYS: i64 = 21;

#[derive(Debug, Clone, PartialEq)]
pub struct StoredDose {
    pub person_code: String,
    pub dose_number: u8,
    pub administered_at: OffsetDateTime,
    /// How many times the store holds it (tests set this to 2 to fake a duplicate).
    pub copies: u64,
}

#[derive(Default)]
pub struct Fake {
    pub doses: Mutex<HashMap<Uuid, (Value, StoredDose)>>,
    /// Lookup requests seen, with the number of ids in each.
    pub lookups: Mutex<Vec<usize>>,
}

type Shared = State<Arc<Fake>>;

fn error(status: StatusCode, code: &str) -> Response {
    (status, axum::Json(json!({"error": code, "message": code}))).into_response()
}

fn bearer_is(headers: &HeaderMap, token: &str) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {token}"))
}

pub fn app(fake: Arc<Fake>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/v1/people/{code}/pass", get(pass))
        .route("/v1/people/{code}/certificate", get(certificate))
        .route("/v1/checkins", post(checkin))
        .route("/v1/doses", post(dose))
        .route("/v1/doses:batch", post(batch))
        .route("/v1/doses:lookup", post(lookup))
        .route("/v1/verify", post(verify))
        .with_state(fake)
}

async fn pass(headers: HeaderMap, Path(code): Path<String>) -> Response {
    if !bearer_is(&headers, SITE_TOKEN) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    axum::Json(json!({"person_code": code, "registration_qr": format!("RG1:{code}")}))
        .into_response()
}

#[derive(Deserialize)]
struct CertificateQuery {
    format: String,
}

async fn certificate(
    State(fake): Shared,
    headers: HeaderMap,
    Path(code): Path<String>,
    Query(q): Query<CertificateQuery>,
) -> Response {
    if !bearer_is(&headers, SITE_TOKEN) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    if !fake
        .doses
        .lock()
        .expect("lock")
        .values()
        .any(|(_, d)| d.person_code == code)
    {
        return error(StatusCode::NOT_FOUND, "no_certificate");
    }
    match q.format.as_str() {
        "png" => (
            [("content-type", "image/png")],
            vec![0x89, b'P', b'N', b'G'],
        )
            .into_response(),
        "svg" => ([("content-type", "image/svg+xml")], "<svg/>").into_response(),
        _ => error(StatusCode::BAD_REQUEST, "bad_format"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QrBody {
    qr: String,
}

/// Doses of a person, in order.
fn history(fake: &Fake, person: &str) -> Vec<StoredDose> {
    let mut doses: Vec<StoredDose> = fake
        .doses
        .lock()
        .expect("lock")
        .values()
        .filter(|(_, d)| d.person_code == person)
        .map(|(_, d)| d.clone())
        .collect();
    doses.sort_by_key(|d| d.dose_number);
    doses
}

async fn checkin(
    State(fake): Shared,
    headers: HeaderMap,
    axum::Json(body): axum::Json<QrBody>,
) -> Response {
    if !bearer_is(&headers, SITE_TOKEN) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let Some(code) = body.qr.strip_prefix("RG1:") else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "bad_qr");
    };
    let doses = history(&fake, code);
    let person = json!({"person_code": code});
    // The shapes of the real server's answer: `next_dose` is always an object, its `dose_number`
    // null once the series is complete, and `reason` a sentence.
    let next =
        |number: Option<u8>, product: Option<&str>, eligible: bool, reason: Option<String>| {
            json!({"dose_number": number, "product": product, "mixable_with": [], "earliest": null,
               "eligible_today": eligible, "reason": reason, "series_complete": number.is_none()})
        };
    let next_dose = match doses.last() {
        None => next(Some(1), None, true, None),
        Some(last) if last.dose_number == 1 => {
            let earliest = last.administered_at + time::Duration::days(INTERVAL_DAYS);
            let eligible = earliest <= OffsetDateTime::now_utc();
            let reason =
                (!eligible).then(|| format!("too early: dose 2 is due from {}", earliest.date()));
            next(Some(2), Some("COMIRNATY"), eligible, reason)
        }
        Some(_) => next(
            None,
            None,
            false,
            Some("series complete: 2 of 2 doses given".into()),
        ),
    };
    let answer = json!({"person": person, "doses": doses.len(), "next_dose": next_dose,
                        "eligible_today": next_dose["eligible_today"], "reason": next_dose["reason"]});
    axum::Json(answer).into_response()
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct DoseBody {
    dose_id: Uuid,
    person_code: String,
    lot: String,
    dose_number: u8,
    vaccinator: String,
    administered_at: String,
}

/// Records one dose with the real server's rules; returns (status, error code).
fn record(fake: &Fake, body: &DoseBody, raw: Value) -> (StatusCode, Option<&'static str>) {
    let Ok(at) = OffsetDateTime::parse(&body.administered_at, &Rfc3339) else {
        return (StatusCode::UNPROCESSABLE_ENTITY, Some("bad_time"));
    };
    if body.lot != "LOT-A" || body.vaccinator.is_empty() {
        return (StatusCode::UNPROCESSABLE_ENTITY, Some("lot_not_at_site"));
    }
    let history = history(fake, &body.person_code);
    let mut doses = fake.doses.lock().expect("lock");
    if let Some((stored, _)) = doses.get(&body.dose_id) {
        return if *stored == raw {
            (StatusCode::OK, None)
        } else {
            (StatusCode::CONFLICT, Some("dose_conflict"))
        };
    }
    if usize::from(body.dose_number) != history.len() + 1 {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("dose_out_of_sequence"),
        );
    }
    if let Some(last) = history.last()
        && at < last.administered_at + time::Duration::days(INTERVAL_DAYS)
    {
        return (StatusCode::UNPROCESSABLE_ENTITY, Some("too_early"));
    }
    let stored = StoredDose {
        person_code: body.person_code.clone(),
        dose_number: body.dose_number,
        administered_at: at,
        copies: 1,
    };
    doses.insert(body.dose_id, (raw, stored));
    (StatusCode::CREATED, None)
}

async fn dose(
    State(fake): Shared,
    headers: HeaderMap,
    axum::Json(raw): axum::Json<Value>,
) -> Response {
    if !bearer_is(&headers, SITE_TOKEN) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let Ok(body) = serde_json::from_value::<DoseBody>(raw.clone()) else {
        return error(StatusCode::BAD_REQUEST, "bad_dose");
    };
    match record(&fake, &body, raw.clone()) {
        (status, None) => (
            status,
            axum::Json(json!({"dose": raw, "certificate": format!("VC1:{}", body.dose_id)})),
        )
            .into_response(),
        (status, Some(code)) => error(status, code),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    doses: Vec<Value>,
}

async fn batch(
    State(fake): Shared,
    headers: HeaderMap,
    axum::Json(body): axum::Json<BatchBody>,
) -> Response {
    if !bearer_is(&headers, SITE_TOKEN) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    if body.doses.len() > 1000 {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large");
    }
    let mut results = Vec::new();
    for raw in body.doses {
        let Ok(dose) = serde_json::from_value::<DoseBody>(raw.clone()) else {
            return error(StatusCode::BAD_REQUEST, "bad_dose");
        };
        let (status, code) = record(&fake, &dose, raw);
        results.push(match code {
            None => json!({"dose_id": dose.dose_id, "status": status.as_u16()}),
            Some(code) => json!({"dose_id": dose.dose_id, "status": status.as_u16(), "error": code, "message": code}),
        });
    }
    axum::Json(json!({"results": results})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupBody {
    dose_ids: Vec<Uuid>,
}

async fn lookup(
    State(fake): Shared,
    headers: HeaderMap,
    axum::Json(body): axum::Json<LookupBody>,
) -> Response {
    if !bearer_is(&headers, ADMIN_TOKEN) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    if body.dose_ids.len() > 10_000 {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "too_many_ids");
    }
    fake.lookups.lock().expect("lock").push(body.dose_ids.len());
    let doses = fake.doses.lock().expect("lock");
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    for id in body.dose_ids {
        match doses.get(&id) {
            Some((_, d)) => found.push(json!({"dose_id": id, "person_code": d.person_code, "dose_number": d.dose_number, "copies": d.copies})),
            None => missing.push(json!(id)),
        }
    }
    axum::Json(json!({"found": found, "missing": missing})).into_response()
}

async fn verify(headers: HeaderMap, axum::Json(body): axum::Json<QrBody>) -> Response {
    if headers.contains_key("authorization") {
        // Public endpoint; a generator sending a site token here would be leaking it.
        return error(StatusCode::BAD_REQUEST, "unexpected_token");
    }
    axum::Json(json!({"valid": body.qr.starts_with("VC1:")})).into_response()
}
