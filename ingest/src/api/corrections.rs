//! Corrections and revocations: one operation fixes the record, revokes every certificate that
//! carried the wrong data, issues the corrected certificate, and leaves an audit record of who,
//! when and why. (Wrong data on certificates and slow corrections were the main complaint
//! against the largest deployed system.)

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use store::{
    Area, AuditRecord, Dose, DoseId, LotNumber, PersonCode, Registration, Revocation, Role,
    shard_of,
};
use time::{Date, OffsetDateTime};

use super::{ApiJson, Shared};
use crate::auth::{Caller, Principal};
use crate::campaign::LotLookup;
use crate::error::{ApiError, json_answer};
use crate::rules::{self, Refusal};
use crate::writer::{Correction, CorrectionOutcome};

fn reason(text: &str) -> Result<String, ApiError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > 500 {
        return Err(ApiError::invalid_field(
            "reason",
            "say why, in 1 to 500 characters (it goes into the audit trail)",
        ));
    }
    Ok(text.to_owned())
}

/// The ids of the certificates issued for `series` (one per dose: the series up to that dose),
/// from the dose at `from` on. These are what a correction makes wrong.
fn issued_certificate_ids(
    state: &Shared,
    person: &Registration,
    series: &[Dose],
    from: usize,
) -> Vec<String> {
    let products = state.campaign.products();
    (from..series.len())
        .map(|k| {
            state
                .certificates
                .content(person, &series[..=k], &products)
                .certificate_id
        })
        .collect()
}

/// A correction made, ready to be revoked, audited and answered.
struct Corrected<'a> {
    action: &'static str,
    subject: String,
    why: String,
    /// The person after the correction.
    person: &'a Registration,
    /// The series after the correction.
    after: &'a [Dose],
    revoked_ids: Vec<String>,
    details: Value,
}

/// Revokes the wrong certificates (store first, then the served list), writes the audit record,
/// and answers with the corrected certificate.
async fn finish(
    state: &Shared,
    caller: &Principal,
    corrected: Corrected<'_>,
) -> Result<Response, ApiError> {
    let Corrected {
        action,
        subject,
        why,
        person,
        after,
        revoked_ids,
        details,
    } = corrected;
    let now = store::embedded::now_seconds();
    let revocations: Vec<Revocation> = revoked_ids
        .iter()
        .map(|id| Revocation {
            certificate_id: id.clone(),
            revoked_at: now,
            reason: format!("{action}: {why}"),
        })
        .collect();
    if !revocations.is_empty() {
        state.store.revoke_certificates(&revocations).await?;
        let mut served = state
            .revocations
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in &revoked_ids {
            served.insert(id.clone());
        }
    }
    let certificate = if after.is_empty() {
        None
    } else {
        let content = state
            .certificates
            .content(person, after, &state.campaign.products());
        Some((state.certificates.sign(&content)?, content.certificate_id))
    };
    let mut details = details;
    details["revoked_certificates"] = json!(revoked_ids);
    details["new_certificate_id"] = json!(certificate.as_ref().map(|c| &c.1));
    state
        .store
        .append_audit(&AuditRecord {
            at: now,
            actor: caller.label.clone(),
            action: action.to_owned(),
            subject,
            reason: why,
            details: details.clone(),
        })
        .await?;
    Ok(json_answer(
        StatusCode::OK,
        json!({
            "person": person,
            "doses": after,
            "certificate": certificate.as_ref().map(|c| &c.0),
            "certificate_id": certificate.as_ref().map(|c| &c.1),
            "revoked_certificates": revoked_ids,
        }),
    ))
}

async fn run_correction(
    state: &Shared,
    person: &PersonCode,
    correction: Correction,
) -> Result<CorrectionOutcome, ApiError> {
    let shard = shard_of(person, state.write_path.shard_count());
    let receiver = state.write_path.correct(shard, correction).map_err(|_| {
        ApiError::busy(
            "the write queue is full; retry the correction",
            state.config.retry_after_seconds,
        )
    })?;
    let outcome = receiver
        .await
        .unwrap_or_else(|_| CorrectionOutcome::Failed("the write path stopped".into()));
    match outcome {
        CorrectionOutcome::Refused(refusal) => Err(refusal.into()),
        CorrectionOutcome::NotFound => {
            Err(ApiError::not_found("not_found", "no such person or dose"))
        }
        CorrectionOutcome::Failed(_) => Err(ApiError::store_unavailable(
            "the store did not confirm the correction (it may or may not have been made); retry it: if it was made, the retry is answered 400 no_change",
            state.config.retry_after_seconds,
        )),
        corrected => Ok(corrected),
    }
}

/// `POST /v1/people/{person_code}/corrections`: the fields to change, and why.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonCorrection {
    pub reason: String,
    pub name: Option<String>,
    pub birth_date: Option<Date>,
    pub phone: Option<String>,
    pub area: Option<Area>,
    pub priority_group: Option<u8>,
}

pub async fn correct_person(
    State(state): State<Shared>,
    caller: Caller,
    Path(code): Path<String>,
    ApiJson(change): ApiJson<PersonCorrection>,
) -> Result<Response, ApiError> {
    let principal = caller.require(&[Role::Admin])?.clone();
    let why = reason(&change.reason)?;
    let code =
        PersonCode::new(code).map_err(|e| ApiError::invalid_field("person_code", e.message))?;
    let current =
        state.store.person(&code).await?.ok_or_else(|| {
            ApiError::not_found("unknown_person", format!("no registration {code}"))
        })?;
    let mut corrected = current.clone();
    if let Some(name) = change.name {
        corrected.name = name.trim().to_owned();
    }
    if let Some(birth_date) = change.birth_date {
        corrected.birth_date = birth_date;
    }
    if let Some(phone) = change.phone {
        corrected.phone = Some(phone.trim().to_owned()).filter(|p| !p.is_empty());
    }
    if let Some(area) = change.area {
        corrected.area = area;
    }
    if let Some(group) = change.priority_group {
        corrected.priority_group = group;
    }
    corrected
        .validate(OffsetDateTime::now_utc().date())
        .map_err(|e| ApiError::invalid_field(e.field, e.message))?;
    if corrected.same_person_as(&current) {
        return Err(ApiError::bad_request(
            "no_change",
            "the correction changes nothing",
        ));
    }
    let CorrectionOutcome::Corrected {
        person_before,
        person_after,
        before,
        after,
    } = run_correction(&state, &code, Correction::Person(corrected)).await?
    else {
        return Err(ApiError::internal(
            "a correction outcome that is neither corrected nor an error",
        ));
    };
    // Every certificate issued so far carried the old details.
    let revoked = issued_certificate_ids(&state, &person_before, &before, 0);
    let details = json!({"before": *person_before, "after": *person_after});
    let corrected = Corrected {
        action: "correct_person",
        subject: code.to_string(),
        why,
        person: &person_after,
        after: &after,
        revoked_ids: revoked,
        details,
    };
    finish(&state, &principal, corrected).await
}

/// `POST /v1/doses/{dose_id}/corrections`: what was recorded wrongly, and why.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoseCorrection {
    pub reason: String,
    /// The lot actually used (at the same site).
    pub lot: Option<LotNumber>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub administered_at: Option<OffsetDateTime>,
    pub vaccinator: Option<String>,
}

pub async fn correct_dose(
    State(state): State<Shared>,
    caller: Caller,
    Path(dose_id): Path<uuid::Uuid>,
    ApiJson(change): ApiJson<DoseCorrection>,
) -> Result<Response, ApiError> {
    let principal = caller.require(&[Role::Admin])?.clone();
    let why = reason(&change.reason)?;
    let found = state.store.find_doses(&[DoseId(dose_id)]).await?;
    let current = found
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("unknown_dose", format!("no dose {dose_id}")))?;
    let mut corrected = current.clone();
    if let Some(lot) = change.lot {
        let stock = match state.campaign.lot(&lot, &current.site_id) {
            LotLookup::Found(stock) => stock,
            LotLookup::ElsewhereOnly => {
                return Err(Refusal::LotNotAtSite {
                    lot: lot.to_string(),
                    site: current.site_id.to_string(),
                }
                .into());
            }
            LotLookup::Unknown => {
                return Err(Refusal::UnknownLot {
                    lot: lot.to_string(),
                }
                .into());
            }
        };
        corrected.product = stock.lot.product.clone();
        corrected.lot_number = lot;
    }
    if let Some(at) = change.administered_at {
        corrected.administered_at = at.replace_nanosecond(0).unwrap_or(at);
    }
    if let Some(vaccinator) = change.vaccinator {
        corrected.vaccinator = vaccinator.trim().to_owned();
    }
    corrected
        .validate_shape()
        .map_err(|e| ApiError::invalid_field(e.field, e.message))?;
    if let Some(stock) = state.campaign.stock(&corrected.lot_key()) {
        rules::check_lot(&stock.lot, corrected.administered_at.date())?;
    }
    if corrected.same_event_as(&current) {
        return Err(ApiError::bad_request(
            "no_change",
            "the correction changes nothing",
        ));
    }
    let CorrectionOutcome::Corrected {
        person_before,
        person_after,
        before,
        after,
    } = run_correction(
        &state,
        &current.person_code,
        Correction::Dose(corrected.clone()),
    )
    .await?
    else {
        return Err(ApiError::internal(
            "a correction outcome that is neither corrected nor an error",
        ));
    };
    // Certificates issued from this dose on carried it.
    let position = before
        .iter()
        .position(|d| d.dose_id == current.dose_id)
        .unwrap_or(0);
    let revoked = issued_certificate_ids(&state, &person_before, &before, position);
    let details = json!({"before": current, "after": corrected});
    let corrected = Corrected {
        action: "correct_dose",
        subject: dose_id.to_string(),
        why,
        person: &person_after,
        after: &after,
        revoked_ids: revoked,
        details,
    };
    finish(&state, &principal, corrected).await
}

/// `POST /v1/revocations`: revoke one certificate (issued in error, fraud).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    pub certificate_id: String,
    pub reason: String,
}

pub async fn revoke(
    State(state): State<Shared>,
    caller: Caller,
    ApiJson(request): ApiJson<RevokeRequest>,
) -> Result<Response, ApiError> {
    let principal = caller.require(&[Role::Admin])?.clone();
    let why = reason(&request.reason)?;
    let id = request.certificate_id.trim().to_owned();
    if id.is_empty() || id.len() > 128 {
        return Err(ApiError::invalid_field(
            "certificate_id",
            "must be 1 to 128 characters",
        ));
    }
    let now = store::embedded::now_seconds();
    state
        .store
        .revoke_certificates(&[Revocation {
            certificate_id: id.clone(),
            revoked_at: now,
            reason: why.clone(),
        }])
        .await?;
    state
        .revocations
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(id.clone());
    state
        .store
        .append_audit(&AuditRecord {
            at: now,
            actor: principal.label,
            action: "revoke".into(),
            subject: id.clone(),
            reason: why,
            details: json!({}),
        })
        .await?;
    Ok(json_answer(StatusCode::CREATED, json!({"revoked": id})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub limit: Option<usize>,
}

/// `GET /v1/audit`: the newest audit records.
pub async fn audit(
    State(state): State<Shared>,
    caller: Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin])?;
    let Query(query) = query?;
    let records = state
        .store
        .audit_log(query.limit.unwrap_or(100).clamp(1, 10_000))
        .await?;
    Ok(json_answer(StatusCode::OK, json!({"audit": records})))
}
