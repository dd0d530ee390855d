//! Admin set-up on a running server: sites, lots and area names. The same operations as
//! `vaxcamp site add`, `vaxcamp lot add` and `vaxcamp import areas`, which work on a stopped
//! server's data directory.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use store::{Lot, Role, Site};

use super::{ApiJson, Shared};
use crate::areas::AreaNames;
use crate::auth::Caller;
use crate::error::{ApiError, json_answer};
use crate::setup::{self, SetupError};

impl From<SetupError> for ApiError {
    fn from(e: SetupError) -> Self {
        match e {
            SetupError::Invalid { field, message } => ApiError::invalid_field(field, message),
            SetupError::Store(e) => e.into(),
            other => ApiError::internal(other),
        }
    }
}

/// `GET /v1/sites`: sites with their lots and stock.
pub async fn list_sites(State(state): State<Shared>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Observer])?;
    let lots = state.campaign.lots();
    let sites: Vec<serde_json::Value> = state
        .campaign
        .sites()
        .into_iter()
        .map(|site| {
            let site_lots: Vec<serde_json::Value> = lots
                .iter()
                .filter(|s| s.lot.site_id == site.site_id)
                .map(|s| {
                    json!({
                        "lot": s.lot.lot_number, "product": s.lot.product, "expires": s.lot.expires,
                        "quantity": s.lot.quantity, "remaining": s.remaining(),
                    })
                })
                .collect();
            json!({
                "site_id": site.site_id, "name": site.name, "area": site.area,
                "daily_capacity": site.daily_capacity, "lots": site_lots,
            })
        })
        .collect();
    Ok(json_answer(StatusCode::OK, json!({"sites": sites})))
}

/// `POST /v1/sites`: adds a site and answers with its token, shown this once.
pub async fn add_site(
    State(state): State<Shared>,
    caller: Caller,
    ApiJson(site): ApiJson<Site>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin])?;
    let (token, credential) = setup::add_site(state.store.as_ref(), &site).await?;
    state.credentials.upsert(&credential);
    state.campaign.upsert_site(site.clone());
    Ok(json_answer(
        StatusCode::CREATED,
        json!({"site": site, "token": token}),
    ))
}

/// `POST /v1/lots`: allocates a lot's doses to a site (or updates the allocation).
pub async fn add_lot(
    State(state): State<Shared>,
    caller: Caller,
    ApiJson(lot): ApiJson<Lot>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin])?;
    setup::add_lot(state.store.as_ref(), &lot).await?;
    state.campaign.upsert_lot(lot.clone());
    state.feed.lot_allocated(&lot);
    Ok(json_answer(StatusCode::CREATED, json!({"lot": lot})))
}

/// `GET /v1/areas`: the province and district names the console shows.
pub async fn list_areas(State(state): State<Shared>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Observer])?;
    let names = state.campaign.area_names();
    Ok(json_answer(
        StatusCode::OK,
        json!({"areas": names.as_map()}),
    ))
}

/// `PUT /v1/areas` body: the whole list of names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreasBody {
    /// `{"01": "Hà Nội", "01/001": "Ba Đình"}`.
    pub areas: BTreeMap<String, String>,
}

/// `PUT /v1/areas`: replaces the province and district names (all of them); the console shows
/// them from the next snapshot. A list with any bad entry changes nothing.
pub async fn put_areas(
    State(state): State<Shared>,
    caller: Caller,
    ApiJson(body): ApiJson<AreasBody>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin])?;
    let names = AreaNames::from_map(body.areas).map_err(|errors| {
        let shown: Vec<&str> = errors.iter().take(10).map(String::as_str).collect();
        ApiError::bad_request(
            "invalid_areas",
            format!(
                "{} bad entries, nothing was changed (keys are a province code like \"01\" or \"01/001\" for a district; names 1 to {} characters): {}",
                errors.len(),
                crate::areas::MAX_NAME_CHARS,
                shown.join("; ")
            ),
        )
    })?;
    setup::put_area_names(state.store.as_ref(), &names).await?;
    let count = names.len();
    state.campaign.set_area_names(names);
    Ok(json_answer(StatusCode::OK, json!({"areas": count})))
}
