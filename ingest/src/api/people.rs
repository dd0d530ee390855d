//! Registrations, check-in and a person's record.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use certify::RegistrationPass;
use serde::Deserialize;
use serde_json::json;
use store::{Area, PersonCode, Registered, Registration, Role};
use time::Date;

use super::{ApiJson, Shared, unix_now};
use crate::auth::Caller;
use crate::certificates::Format;
use crate::error::{ApiError, json_answer};
use crate::rules;

/// `POST /v1/registrations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationRequest {
    /// The national ID or insurance number; generated when absent.
    pub person_code: Option<PersonCode>,
    pub name: String,
    pub birth_date: Date,
    pub phone: Option<String>,
    pub area: Area,
    /// 1 (highest) to 10; 10 when absent.
    pub priority_group: Option<u8>,
}

/// The registration of `code`, or 404 `unknown_person`.
async fn registered(state: &Shared, code: &PersonCode) -> Result<Registration, ApiError> {
    state.store.person(code).await?.ok_or_else(|| {
        ApiError::not_found(
            "unknown_person",
            format!("no registration with person code {code}"),
        )
    })
}

fn person_code(raw: &str) -> Result<PersonCode, ApiError> {
    PersonCode::new(raw).map_err(|e| ApiError::invalid_field("person_code", e.message))
}

/// The signed pre-registration pass for a person. Deterministic: the same person always gets
/// the same text from the same key.
pub(crate) fn pass_for(state: &Shared, person: &Registration) -> Result<String, ApiError> {
    let pass = RegistrationPass {
        person_code: person.person_code.to_string(),
        issuer: state.campaign.issuer.clone(),
        issued_at: person
            .registered_at
            .unix_timestamp()
            .max(state.registration_signer_valid_from()),
        expires_at: None,
    };
    state
        .registration_signer
        .sign_registration(&pass)
        .map_err(ApiError::internal)
}

impl super::AppState {
    fn registration_signer_valid_from(&self) -> i64 {
        let kid = self.registration_signer.kid();
        self.trust
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(kid)
            .map_or(0, |k| k.valid_from)
    }
}

pub async fn register(
    State(state): State<Shared>,
    caller: Caller,
    ApiJson(request): ApiJson<RegistrationRequest>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Registrar, Role::Site, Role::Admin])?;
    let person_code = match request.person_code {
        Some(code) => code,
        None => {
            let mut random = [0u8; 8];
            getrandom::fill(&mut random).map_err(ApiError::internal)?;
            PersonCode::generate(u64::from_le_bytes(random))
        }
    };
    let registration = Registration {
        person_code,
        name: request.name.trim().to_owned(),
        birth_date: request.birth_date,
        phone: request.phone.filter(|p| !p.trim().is_empty()),
        area: request.area,
        priority_group: request.priority_group.unwrap_or(10),
        registered_at: store::embedded::now_seconds(),
    };
    let today = time::OffsetDateTime::now_utc().date();
    registration
        .validate(today)
        .map_err(|e| ApiError::invalid_field(e.field, e.message))?;
    let (status, stored) = match state.store.register(&registration).await? {
        Registered::Created(r) => {
            // Also the live feed's count of registrations since start.
            state.metrics.registrations.inc();
            (StatusCode::CREATED, r)
        }
        Registered::Existing(existing) if existing.same_person_as(&registration) => {
            (StatusCode::OK, existing)
        }
        Registered::Existing(existing) => {
            return Err(ApiError::conflict(
                "person_code_taken",
                format!(
                    "person code {} is already registered with different details; correct the existing registration instead",
                    existing.person_code
                ),
            ));
        }
    };
    let qr = pass_for(&state, &stored)?;
    Ok(json_answer(
        status,
        json!({"person_code": stored.person_code, "registration_qr": qr, "created": status == StatusCode::CREATED, "person": stored}),
    ))
}

/// `POST /v1/checkins`: the scanned pass, or the person code typed by hand when the QR is
/// damaged.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckInRequest {
    pub qr: Option<String>,
    pub person_code: Option<String>,
}

pub async fn check_in(
    State(state): State<Shared>,
    caller: Caller,
    ApiJson(request): ApiJson<CheckInRequest>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Site, Role::Admin])?;
    let code = match (request.qr, request.person_code) {
        (Some(qr), None) => {
            let verified = certify::verify_registration(
                qr.trim(),
                &state
                    .trust
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                unix_now(),
                &state.config.qr_limits,
            )
            .map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_pass",
                    format!("the pre-registration QR was refused: {e}"),
                )
                .with("reason", e.code())
            })?;
            person_code(&verified.content.person_code)?
        }
        (None, Some(code)) => person_code(&code)?,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "send exactly one of `qr` (the scanned pass) or `person_code`",
            ));
        }
    };
    let person = registered(&state, &code).await?;
    let doses = state.store.doses_of(&code).await?;
    let next = rules::next_dose(
        &doses,
        &state.campaign.products(),
        time::OffsetDateTime::now_utc().date(),
    );
    state.metrics.checkins.inc();
    Ok(json_answer(
        StatusCode::OK,
        json!({
            "person": person,
            "doses": doses,
            "next_dose": next,
            "eligible_today": next.eligible_today,
            "reason": next.reason,
        }),
    ))
}

pub async fn show(
    State(state): State<Shared>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Site, Role::Registrar, Role::Admin])?;
    let code = person_code(&code)?;
    let person = registered(&state, &code).await?;
    let doses = state.store.doses_of(&code).await?;
    let next = rules::next_dose(
        &doses,
        &state.campaign.products(),
        time::OffsetDateTime::now_utc().date(),
    );
    Ok(json_answer(
        StatusCode::OK,
        json!({"person": person, "doses": doses, "next_dose": next}),
    ))
}

pub async fn pass(
    State(state): State<Shared>,
    caller: Caller,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Site, Role::Registrar, Role::Admin])?;
    let code = person_code(&code)?;
    let person = registered(&state, &code).await?;
    let qr = pass_for(&state, &person)?;
    Ok(json_answer(
        StatusCode::OK,
        json!({"person_code": code, "registration_qr": qr}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateQuery {
    pub format: Option<Format>,
}

pub async fn certificate(
    State(state): State<Shared>,
    caller: Caller,
    Path(code): Path<String>,
    query: Result<Query<CertificateQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Site, Role::Registrar, Role::Admin])?;
    let Query(query) = query.map_err(|_| {
        ApiError::bad_request(
            "invalid_query",
            "format must be one of text, svg, png, terminal",
        )
    })?;
    let code = person_code(&code)?;
    let person = registered(&state, &code).await?;
    let doses = state.store.doses_of(&code).await?;
    if doses.is_empty() {
        return Err(ApiError::not_found(
            "no_doses",
            format!("{code} has no recorded dose, so there is no certificate yet"),
        ));
    }
    let content = state
        .certificates
        .content(&person, &doses, &state.campaign.products());
    let format = query.format.unwrap_or(Format::Text);
    let bytes = state.certificates.render(&content, format)?;
    let content_type = match format {
        Format::Text | Format::Terminal => "text/plain; charset=utf-8",
        Format::Svg => "image/svg+xml",
        Format::Png => "image/png",
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::HeaderName::from_static("x-certificate-id"),
                content.certificate_id.clone(),
            ),
            (
                header::HeaderName::from_static("x-certificate-status"),
                content.status.as_str().to_owned(),
            ),
        ],
        bytes.as_ref().clone(),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub after: Option<String>,
    pub limit: Option<usize>,
}

pub async fn list(
    State(state): State<Shared>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin])?;
    let Query(query) = query?;
    let after = query.after.as_deref().map(person_code).transpose()?;
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    let page = state.store.people(after.as_ref(), limit).await?;
    let next = (page.len() == limit)
        .then(|| page.last().map(|p| p.person_code.clone()))
        .flatten();
    Ok(json_answer(
        StatusCode::OK,
        json!({"people": page, "next": next}),
    ))
}
