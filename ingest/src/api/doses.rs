//! Recording doses: one at a time from a site's tablet, or a batch from a queue or a ledger.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use store::{Dose, DoseId, LotNumber, PersonCode, ProductCode, Role, SiteId, shard_of};
use time::OffsetDateTime;

use super::{ApiJson, Shared};
use crate::auth::{Caller, Principal};
use crate::campaign::LotLookup;
use crate::error::{ApiError, json_answer};
use crate::rules::{self, Refusal};
use crate::writer::DoseOutcome;

/// One dose as a site reports it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoseRequest {
    /// Made by the client before the first attempt (a UUID) and reused on every retry.
    pub dose_id: uuid::Uuid,
    pub person_code: PersonCode,
    /// The lot number printed on the vial.
    pub lot: LotNumber,
    pub dose_number: u8,
    pub vaccinator: String,
    #[serde(with = "time::serde::rfc3339")]
    pub administered_at: OffsetDateTime,
    /// Optional cross-check: the product the site believes it used. Must match the lot's.
    pub product: Option<ProductCode>,
    /// Required for admin tokens (ledger imports); for site tokens it must be the token's site.
    pub site_id: Option<SiteId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub doses: Vec<DoseRequest>,
}

/// Turns a request into a dose to write, checking what can be checked without the person's
/// history: the site, the lot at that site, its expiry and product, the field shapes.
///
/// `asked` is the request's `site_id`, taken out of it by the caller (so that it can be
/// borrowed for counting the outcome); the request's own is not read.
fn prepare(
    state: &Shared,
    caller: &Principal,
    asked: Option<&SiteId>,
    request: DoseRequest,
) -> Result<Dose, ApiError> {
    let site_id = match (caller.role, &caller.site_id, asked) {
        (Role::Site, Some(own), None) => own.clone(),
        (Role::Site, Some(own), Some(asked)) if own == asked => own.clone(),
        (Role::Site, _, Some(asked)) => {
            return Err(ApiError::forbidden(format!(
                "this token records doses for its own site only, not {asked}"
            )));
        }
        (Role::Admin, _, Some(asked)) => asked.clone(),
        (Role::Admin, _, None) => {
            return Err(ApiError::invalid_field(
                "site_id",
                "is required when recording with an admin token",
            ));
        }
        _ => {
            return Err(ApiError::forbidden(
                "only site and admin tokens record doses",
            ));
        }
    };
    if !state.campaign.has_site(&site_id) {
        return Err(ApiError::invalid_field(
            "site_id",
            format!("no site {site_id}"),
        ));
    }
    let stock = match state.campaign.lot(&request.lot, &site_id) {
        LotLookup::Found(stock) => stock,
        LotLookup::ElsewhereOnly => {
            return Err(Refusal::LotNotAtSite {
                lot: request.lot.to_string(),
                site: site_id.to_string(),
            }
            .into());
        }
        LotLookup::Unknown => {
            return Err(Refusal::UnknownLot {
                lot: request.lot.to_string(),
            }
            .into());
        }
    };
    rules::check_lot(&stock.lot, request.administered_at.date())?;
    if let Some(product) = &request.product
        && *product != stock.lot.product
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "lot_product_mismatch",
            format!(
                "lot {} is {}, not {product}; check the vial",
                request.lot, stock.lot.product
            ),
        )
        .with("rule", "lot_product_mismatch"));
    }
    let dose = Dose {
        dose_id: DoseId(request.dose_id),
        person_code: request.person_code,
        product: stock.lot.product.clone(),
        lot_number: request.lot,
        dose_number: request.dose_number,
        site_id,
        vaccinator: request.vaccinator.trim().to_owned(),
        // Whole seconds: what the certificate and a retry compare.
        administered_at: request
            .administered_at
            .replace_nanosecond(0)
            .unwrap_or(request.administered_at),
        recorded_at: OffsetDateTime::UNIX_EPOCH,
    };
    dose.validate_shape()
        .map_err(|e| ApiError::invalid_field(e.field, e.message))?;
    Ok(dose)
}

fn outcome_error(state: &Shared, outcome: &DoseOutcome) -> Option<ApiError> {
    let retry = state.config.retry_after_seconds;
    match outcome {
        DoseOutcome::Created { .. } | DoseOutcome::Duplicate { .. } => None,
        DoseOutcome::Conflict { existing } => Some(
            ApiError::conflict(
                "dose_conflict",
                format!("dose id {} is already recorded with different content; make a new dose id for a new dose", existing.dose_id),
            )
            .with("existing", serde_json::to_value(existing).unwrap_or(Value::Null)),
        ),
        DoseOutcome::Refused(refusal) => Some(refusal.clone().into()),
        DoseOutcome::InProgress => {
            let mut e = ApiError::busy("a dose with this id is being recorded right now; retry with the same dose id", retry);
            e.code = "dose_in_progress";
            Some(e)
        }
        // The writer answers `Failed` only when nothing of the dose was acknowledged (its cause
        // is logged by the writer): a store timeout, an overloaded or unreachable replica. The
        // retry with the same id is safe and either records it or finds it recorded.
        DoseOutcome::Failed(_) => Some(ApiError::store_unavailable("the dose was not recorded (the store did not confirm the write); retry with the same dose id", retry)),
    }
}

/// Counts a dose's outcome: in the `dose_outcomes` metric, and (failures) in the console's
/// live aggregates, nationally and for the site the dose was for.
fn count(state: &Shared, site: Option<&SiteId>, outcome: &'static str, rule: Option<&'static str>) {
    state.metrics.dose_outcome(outcome, rule);
    state.live.record_outcome(site, outcome, rule);
}

fn count_outcome(state: &Shared, site: Option<&SiteId>, outcome: &DoseOutcome) {
    let (name, rule) = match outcome {
        DoseOutcome::Created { .. } => ("created", None),
        DoseOutcome::Duplicate { .. } => ("duplicate", None),
        DoseOutcome::Conflict { .. } => ("conflict", None),
        DoseOutcome::Refused(r) => ("refused", Some(r.code())),
        DoseOutcome::InProgress => ("in_progress", None),
        DoseOutcome::Failed(_) => ("failed", None),
    };
    count(state, site, name, rule);
}

/// The site a dose request is for: the token's own site, or the one an admin names (`asked`).
fn site_of<'a>(caller: &'a Principal, asked: Option<&'a SiteId>) -> Option<&'a SiteId> {
    caller.site_id.as_ref().or(asked)
}

/// The answer to a recorded dose: the dose and the certificate for the series up to and
/// including it, so a retry gets the very same answer even after later doses.
fn answer_with_certificate(
    state: &Shared,
    status: StatusCode,
    dose: Dose,
    person: &store::Registration,
    series: &[Dose],
) -> Result<Response, ApiError> {
    let upto: Vec<Dose> = series
        .iter()
        .filter(|d| d.dose_number <= dose.dose_number)
        .cloned()
        .collect();
    let content = state
        .certificates
        .content(person, &upto, &state.campaign.products());
    let text = state.certificates.sign(&content)?;
    state.metrics.certificates_signed.inc();
    Ok(json_answer(
        status,
        json!({
            "dose": dose,
            "certificate": text,
            "certificate_id": content.certificate_id,
            "series_status": content.status.as_str(),
        }),
    ))
}

/// `POST /v1/doses`: 201 with the dose and its certificate; 200 with the same answer on a retry.
pub async fn record(
    State(state): State<Shared>,
    caller: Caller,
    ApiJson(mut request): ApiJson<DoseRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    caller.require(&[Role::Site, Role::Admin])?;
    let asked = request.site_id.take();
    let site = site_of(&caller.0, asked.as_ref());
    let dose = prepare(&state, &caller.0, asked.as_ref(), request).inspect_err(|e| {
        if e.status == StatusCode::UNPROCESSABLE_ENTITY {
            count(&state, site, "refused", Some(e.code));
        }
    })?;
    let shard = shard_of(&dose.person_code, state.write_path.shard_count());
    let receiver = state.write_path.submit(shard, vec![dose]).map_err(|_| {
        count(&state, site, "busy", None);
        ApiError::busy(
            "the dose queue is full; retry with the same dose id",
            state.config.retry_after_seconds,
        )
    })?;
    let outcome = receiver
        .await
        .ok()
        .and_then(|mut v| v.pop())
        .unwrap_or_else(|| DoseOutcome::Failed("the write path stopped".into()));
    count_outcome(&state, site, &outcome);
    let result = match outcome {
        DoseOutcome::Created {
            dose,
            person,
            series,
        } => answer_with_certificate(&state, StatusCode::CREATED, dose, &person, &series),
        DoseOutcome::Duplicate {
            dose,
            person,
            series,
        } => answer_with_certificate(&state, StatusCode::OK, dose, &person, &series),
        other => Err(outcome_error(&state, &other)
            .unwrap_or_else(|| ApiError::internal("a failed outcome without an error"))),
    };
    state.metrics.record_dose_latency(started.elapsed());
    result
}

/// One line of a batch answer.
fn batch_line(dose_id: uuid::Uuid, status: StatusCode, error: Option<&ApiError>) -> Value {
    match error {
        None => json!({"dose_id": dose_id, "status": status.as_u16()}),
        Some(e) => {
            json!({"dose_id": dose_id, "status": e.status.as_u16(), "error": e.code, "message": e.message})
        }
    }
}

/// `POST /v1/doses:batch`: up to 1000 doses, one result per dose in request order. Certificates
/// are not signed here (a site prints them on request), so signing never caps batch ingest.
pub async fn record_batch(
    State(state): State<Shared>,
    caller: Caller,
    ApiJson(request): ApiJson<BatchRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    caller.require(&[Role::Site, Role::Admin])?;
    let max = state.config.max_batch_doses;
    if request.doses.is_empty() || request.doses.len() > max {
        return Err(ApiError::bad_request(
            "batch_size",
            format!(
                "a batch holds 1 to {max} doses, not {}",
                request.doses.len()
            ),
        ));
    }
    let total = request.doses.len();
    let mut lines: Vec<Option<Value>> = vec![None; total];
    let ids: Vec<uuid::Uuid> = request.doses.iter().map(|d| d.dose_id).collect();
    // The sites the doses name, moved out of the requests (not copied) so that each dose's
    // outcome is counted for its site by reference.
    let mut doses = request.doses;
    let asked: Vec<Option<SiteId>> = doses.iter_mut().map(|d| d.site_id.take()).collect();
    let sites: Vec<Option<&SiteId>> = asked
        .iter()
        .map(|asked| site_of(&caller.0, asked.as_ref()))
        .collect();
    let shards = state.write_path.shard_count();
    let mut by_shard: HashMap<usize, (Vec<usize>, Vec<Dose>)> = HashMap::new();
    let mut refused = 0usize;
    for (i, request) in doses.into_iter().enumerate() {
        match prepare(&state, &caller.0, asked[i].as_ref(), request) {
            Ok(dose) => {
                let entry = by_shard
                    .entry(shard_of(&dose.person_code, shards))
                    .or_default();
                entry.0.push(i);
                entry.1.push(dose);
            }
            Err(e) => {
                if e.status == StatusCode::UNPROCESSABLE_ENTITY {
                    count(&state, sites[i], "refused", Some(e.code));
                }
                refused += 1;
                lines[i] = Some(batch_line(ids[i], e.status, Some(&e)));
            }
        }
    }
    let mut pending = Vec::new();
    for (shard, (positions, doses)) in by_shard {
        match state.write_path.submit(shard, doses) {
            Ok(receiver) => pending.push((positions, receiver)),
            Err(_) => {
                let busy = ApiError::busy(
                    "the dose queue is full; retry these doses with the same ids",
                    state.config.retry_after_seconds,
                );
                for i in positions {
                    count(&state, sites[i], "busy", None);
                    lines[i] = Some(batch_line(ids[i], busy.status, Some(&busy)));
                }
            }
        }
    }
    let (mut created, mut duplicates) = (0usize, 0usize);
    for (positions, receiver) in pending {
        let outcomes = receiver.await.unwrap_or_default();
        for (k, i) in positions.into_iter().enumerate() {
            let outcome = outcomes
                .get(k)
                .cloned()
                .unwrap_or_else(|| DoseOutcome::Failed("the write path stopped".into()));
            count_outcome(&state, sites[i], &outcome);
            lines[i] = Some(match &outcome {
                DoseOutcome::Created { .. } => {
                    created += 1;
                    batch_line(ids[i], StatusCode::CREATED, None)
                }
                DoseOutcome::Duplicate { .. } => {
                    duplicates += 1;
                    batch_line(ids[i], StatusCode::OK, None)
                }
                other => {
                    let e = outcome_error(&state, other)
                        .unwrap_or_else(|| ApiError::internal("a failed outcome without an error"));
                    if e.status == StatusCode::UNPROCESSABLE_ENTITY {
                        refused += 1;
                    }
                    batch_line(ids[i], e.status, Some(&e))
                }
            });
        }
    }
    let results: Vec<Value> = lines
        .into_iter()
        .map(|l| l.unwrap_or(Value::Null))
        .collect();
    let failed = total - created - duplicates - refused;
    // Each dose of the batch waited this long for its answer.
    state
        .metrics
        .record_doses_latency(started.elapsed(), total as u64);
    Ok(json_answer(
        StatusCode::OK,
        json!({"results": results, "created": created, "duplicates": duplicates, "refused": refused, "failed": failed}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    pub dose_ids: Vec<uuid::Uuid>,
}

/// `POST /v1/doses:lookup`: which of these dose ids are stored, and how many copies of each
/// (the ledger check proves "exactly once" with it).
///
/// The answer names people (their person codes), so it is for admin and site tokens only: the
/// steering committee's observer tokens see aggregates, never personal data. A site token sees
/// only the doses given at its own site; any other id is `missing` to it, so it cannot even
/// learn that a dose exists elsewhere.
pub async fn lookup(
    State(state): State<Shared>,
    caller: Caller,
    ApiJson(request): ApiJson<LookupRequest>,
) -> Result<Response, ApiError> {
    let caller = caller.require(&[Role::Admin, Role::Site])?;
    let own_site = match caller.role {
        Role::Site => Some(
            caller
                .site_id
                .clone()
                .ok_or_else(|| ApiError::forbidden("this site token names no site"))?,
        ),
        _ => None,
    };
    if request.dose_ids.len() > 10_000 {
        return Err(ApiError::bad_request(
            "batch_size",
            "look up at most 10000 dose ids at a time",
        ));
    }
    let ids: Vec<DoseId> = request.dose_ids.iter().copied().map(DoseId).collect();
    let stored = state.store.find_doses(&ids).await?;
    let mut copies: HashMap<DoseId, Vec<&Dose>> = HashMap::new();
    for dose in stored
        .iter()
        .filter(|d| own_site.as_ref().is_none_or(|own| d.site_id == *own))
    {
        copies.entry(dose.dose_id).or_default().push(dose);
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        match copies.get(&id) {
            Some(doses) => found.push(json!({
                "dose_id": id,
                "person_code": doses[0].person_code,
                "dose_number": doses[0].dose_number,
                "copies": doses.len(),
            })),
            None => missing.push(id),
        }
    }
    Ok(json_answer(
        StatusCode::OK,
        json!({"found": found, "missing": missing}),
    ))
}
