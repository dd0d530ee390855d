//! `GET /v1/allocation` (the allocation planner) and `GET /v1/analytics/uptake` (uptake series
//! for the console and dashboards). Observer and admin tokens.

use std::collections::HashMap;

use analytics::allocation::{Level, Plan, PlanError, PlanRequest};
use analytics::planner::{self, Figures, ProposeError};
use analytics::{AreaLevel, Granularity, UptakeQuery};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use store::{ProductCode, Role, SiteId};
use time::{Duration, OffsetDateTime};

use super::Shared;
use crate::auth::Caller;
use crate::error::{ApiError, json_answer};

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// `?product=&quantity=&level=&unit=&window_days=&horizon_days=`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationQuery {
    pub product: String,
    pub quantity: u64,
    pub level: Option<String>,
    pub unit: Option<u32>,
    pub window_days: Option<u32>,
    pub horizon_days: Option<u32>,
}

/// `GET /v1/allocation`: how to split a shipment of one product.
pub async fn allocation(
    State(state): State<Shared>,
    caller: Caller,
    query: QueryResult<AllocationQuery>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Observer])?;
    let Query(query) = query?;
    let plan = propose(&state, &query).await?;
    Ok(json_answer(
        StatusCode::OK,
        json!({
            "analytics_backend": state.analytics.backend_name(),
            "generated_at": OffsetDateTime::now_utc().unix_timestamp(),
            "plan": plan,
        }),
    ))
}

/// Checks the query against the catalogue, gathers the figures and plans. Shared with the tests.
///
/// # Errors
/// 400 for a bad request, 404 for an unknown product, 503 when the analytics backend is away.
pub async fn propose(state: &Shared, query: &AllocationQuery) -> Result<Plan, ApiError> {
    let product = ProductCode::new(&query.product)
        .map_err(|e| ApiError::invalid_field("product", e.message))?;
    if !state.campaign.products().contains_key(&product) {
        return Err(ApiError::not_found(
            "unknown_product",
            format!(
                "no product {product} in the catalogue; GET /v1/stats lists the lots and products"
            ),
        ));
    }
    let level = match &query.level {
        Some(text) => text
            .parse::<Level>()
            .map_err(|e| ApiError::invalid_field("level", e))?,
        None => Level::Site,
    };
    let defaults = state.allocation;
    let request = PlanRequest {
        product: product.to_string(),
        shipment_doses: query.quantity,
        unit_doses: query.unit.unwrap_or(defaults.unit_doses),
        window_days: query.window_days.unwrap_or(defaults.window_days),
        horizon_days: query.horizon_days.unwrap_or(defaults.horizon_days),
        level,
    };
    for (field, value, max) in [
        ("unit", request.unit_doses, 100_000),
        ("window_days", request.window_days, 366),
        ("horizon_days", request.horizon_days, 366),
    ] {
        if value == 0 || value > max {
            return Err(ApiError::invalid_field(
                field,
                format!("must be 1 to {max}, not {value}"),
            ));
        }
    }
    let today = OffsetDateTime::now_utc().date();
    let mut stock_on_hand: HashMap<SiteId, u64> = HashMap::new();
    for stock in state.campaign.lots() {
        if stock.lot.product == product && stock.lot.expires >= today {
            *stock_on_hand.entry(stock.lot.site_id.clone()).or_default() += stock.remaining();
        }
    }
    let sites = state.campaign.sites();
    let totals = state.store.totals().await?;
    planner::propose(
        state.analytics.as_ref(),
        &request,
        Figures {
            sites: &sites,
            stock_on_hand: &stock_on_hand,
            registrations_by_district: &totals.registrations_by_district,
            now: OffsetDateTime::now_utc(),
        },
    )
    .await
    .map_err(|e| match e {
        ProposeError::Analytics(e) => analytics_unavailable(&e),
        ProposeError::Plan(PlanError::NoSites { .. }) => ApiError::conflict(
            "no_sites",
            "there are no vaccination sites yet; add sites before planning a shipment",
        ),
        ProposeError::Plan(e) => ApiError::bad_request("invalid_plan", e.to_string()),
    })
}

fn analytics_unavailable(e: &analytics::AnalyticsError) -> ApiError {
    tracing::warn!(error = %e, "analytics backend could not answer");
    let mut error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "analytics_unavailable",
        format!(
            "the analytics backend could not answer ({e}); doses are still being recorded, try again shortly"
        ),
    );
    error.retry_after = Some(5);
    error
}

/// `?level=province|district|site&granularity=day|hour&days=N&product=&province=`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UptakeParams {
    pub level: Option<AreaLevel>,
    pub granularity: Option<Granularity>,
    /// Days back from now (default 14; at most 366).
    pub days: Option<u32>,
    pub product: Option<String>,
    pub province: Option<String>,
}

/// `GET /v1/analytics/uptake`: doses per area per day or hour.
pub async fn uptake(
    State(state): State<Shared>,
    caller: Caller,
    query: QueryResult<UptakeParams>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Observer])?;
    let Query(params) = query?;
    let days = params.days.unwrap_or(14);
    if !(1..=366).contains(&days) {
        return Err(ApiError::invalid_field(
            "days",
            format!("must be 1 to 366, not {days}"),
        ));
    }
    let granularity = params.granularity.unwrap_or(Granularity::Day);
    let now = OffsetDateTime::now_utc();
    // Whole buckets, the current one included: whole UTC days (served from the daily rollup at
    // province and district level) or whole hours.
    let (since, until) = match granularity {
        Granularity::Day => {
            let tomorrow = now.replace_time(time::Time::MIDNIGHT) + Duration::days(1);
            (tomorrow - Duration::days(i64::from(days)), tomorrow)
        }
        Granularity::Hour => {
            let next_hour = analytics::hour_floor(now) + Duration::hours(1);
            (next_hour - Duration::days(i64::from(days)), next_hour)
        }
    };
    let query = UptakeQuery {
        level: params.level.unwrap_or(AreaLevel::Province),
        granularity,
        since,
        until,
        product: params.product,
        province: params.province,
    };
    let points = state
        .analytics
        .uptake(&query)
        .await
        .map_err(|e| analytics_unavailable(&e))?;
    Ok(json_answer(
        StatusCode::OK,
        json!({
            "analytics_backend": state.analytics.backend_name(),
            "level": query.level,
            "granularity": query.granularity,
            "since": query.since.unix_timestamp(),
            "until": query.until.unix_timestamp(),
            "points": points,
        }),
    ))
}
