//! `GET /v1/allocation` (the allocation planner) and `GET /v1/analytics/uptake` (uptake series
//! for the console and dashboards). Observer and admin tokens.
//!
//! Both read the analytics backend, so both are bounded by `[analytics] read_timeout_seconds`
//! (503 `analytics_unavailable` with `Retry-After` when it is slow, down or black-holed), and
//! both say how fresh the figures are (`analytics`: the outbox still waiting, rows dropped, and
//! whether the answer is stale). Parameters are checked one by one, each bad one answered 400
//! `invalid_field` naming it and saying what it must be.

use std::collections::HashMap;
use std::future::Future;

use analytics::allocation::{Level, Plan, PlanError, PlanRequest};
use analytics::planner::{self, Figures, ProposeError};
use analytics::{AreaLevel, Granularity, UptakeQuery};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use store::{ProductCode, Role, SiteId};
use time::{Duration, OffsetDateTime};

use super::Shared;
use crate::auth::Caller;
use crate::config::{MAX_DAYS, MAX_LAPSE_DAYS, MAX_UNIT_DOSES};
use crate::error::{ApiError, json_answer};

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// The largest shipment a plan takes: far beyond any real one, small enough that every sum the
/// planner makes stays exact.
pub const MAX_SHIPMENT_DOSES: u64 = 1_000_000_000;

/// `?product=&quantity=&level=&unit=&window_days=&horizon_days=&owed_lapse_days=`, as typed:
/// each value is checked by [`propose`], so a bad one is named in the answer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationQuery {
    pub product: Option<String>,
    pub quantity: Option<String>,
    pub level: Option<String>,
    pub unit: Option<String>,
    pub window_days: Option<String>,
    pub horizon_days: Option<String>,
    pub owed_lapse_days: Option<String>,
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
            "analytics": freshness(&state),
            "plan": plan,
        }),
    ))
}

/// A whole number from `min` to `max` for `field`, or its default when absent.
fn number<T>(field: &str, text: Option<&str>, default: T, min: T, max: T) -> Result<T, ApiError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(text) = text else {
        return Ok(default);
    };
    match text.trim().parse::<T>() {
        Ok(value) if value >= min && value <= max => Ok(value),
        _ => Err(ApiError::invalid_field(
            field,
            format!("must be a whole number from {min} to {max}, not {text:?}"),
        )),
    }
}

/// Checks the query against the catalogue, gathers the figures and plans. Shared with the tests.
///
/// # Errors
/// 400 for a bad request, 404 for an unknown product, 409 when no site gives or stocks the
/// product, 503 when the analytics backend is away or slower than its read timeout.
pub async fn propose(state: &Shared, query: &AllocationQuery) -> Result<Plan, ApiError> {
    let product = query.product.as_deref().ok_or_else(|| {
        ApiError::invalid_field(
            "product",
            "required: the product code of the shipment, e.g. product=COMIRNATY",
        )
    })?;
    let product = ProductCode::new(product.trim())
        .map_err(|e| ApiError::invalid_field("product", e.message))?;
    if query.quantity.is_none() {
        return Err(ApiError::invalid_field(
            "quantity",
            "required: the doses in the shipment, e.g. quantity=12000 (0 shows the need only)",
        ));
    }
    let defaults = state.allocation;
    let shipment_doses = number(
        "quantity",
        query.quantity.as_deref(),
        0,
        0,
        MAX_SHIPMENT_DOSES,
    )?;
    let level = match &query.level {
        Some(text) => text
            .parse::<Level>()
            .map_err(|e| ApiError::invalid_field("level", e))?,
        None => Level::Site,
    };
    let request = PlanRequest {
        product: product.to_string(),
        shipment_doses,
        unit_doses: number(
            "unit",
            query.unit.as_deref(),
            defaults.unit_doses,
            1,
            MAX_UNIT_DOSES,
        )?,
        window_days: number(
            "window_days",
            query.window_days.as_deref(),
            defaults.window_days,
            1,
            MAX_DAYS,
        )?,
        horizon_days: number(
            "horizon_days",
            query.horizon_days.as_deref(),
            defaults.horizon_days,
            1,
            MAX_DAYS,
        )?,
        owed_lapse_days: number(
            "owed_lapse_days",
            query.owed_lapse_days.as_deref(),
            defaults.owed_lapse_days,
            0,
            MAX_LAPSE_DAYS,
        )?,
        level,
    };
    // The interval as the catalogue has it now: owed doses fall due by it (a product whose
    // interval was revised moves every owed dose's due day with it).
    let Some(min_interval_days) = state
        .campaign
        .products()
        .get(&product)
        .map(|p| p.min_interval_days)
    else {
        return Err(ApiError::not_found(
            "unknown_product",
            format!(
                "no product {product} in the catalogue; GET /v1/stats lists the lots and products"
            ),
        ));
    };
    let today = OffsetDateTime::now_utc().date();
    // Every site that holds (or held) a lot of the product has an entry, even at 0: it stocks
    // the product and is planned for. Quantities are admin-set: summed without overflow.
    let mut stock_on_hand: HashMap<SiteId, u64> = HashMap::new();
    for stock in state.campaign.lots() {
        if stock.lot.product != product {
            continue;
        }
        let on_hand = stock_on_hand.entry(stock.lot.site_id.clone()).or_default();
        if stock.lot.expires >= today {
            *on_hand = on_hand.saturating_add(stock.remaining());
        }
    }
    let sites = state.campaign.sites();
    let totals = state.store.totals().await?;
    let plan = read_analytics(
        state,
        planner::propose(
            state.analytics.as_ref(),
            &request,
            Figures {
                sites: &sites,
                stock_on_hand: &stock_on_hand,
                registrations_by_district: &totals.registrations_by_district,
                min_interval_days,
                now: OffsetDateTime::now_utc(),
            },
        ),
    )
    .await?;
    plan.map_err(|e| match e {
        ProposeError::Analytics(e) => analytics_unavailable(&e),
        ProposeError::Plan(PlanError::NoSites { product }) => ApiError::conflict(
            "no_sites",
            format!(
                "no site gives or stocks {product}: allocate a lot of it to a site (POST /v1/lots) before planning a shipment"
            ),
        ),
        ProposeError::Plan(e) => ApiError::bad_request("invalid_plan", e.to_string()),
    })
}

/// Runs a read of the analytics backend, giving up after the configured read timeout: a
/// ClickHouse that accepts connections and never answers must not hang the request.
async fn read_analytics<T>(state: &Shared, read: impl Future<Output = T>) -> Result<T, ApiError> {
    let limit = state.analytics_read_timeout;
    tokio::time::timeout(limit, read).await.map_err(|_| {
        tracing::warn!(
            timeout_s = limit.as_secs(),
            backend = state.analytics.backend_name(),
            "analytics read timed out"
        );
        unavailable(format!(
            "the analytics backend ({}) did not answer within {} s; doses are still being recorded, try again shortly",
            state.analytics.backend_name(),
            limit.as_secs()
        ))
    })
}

fn unavailable(message: String) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "analytics_unavailable",
        message,
    );
    error.retry_after = Some(5);
    error
}

fn analytics_unavailable(e: &analytics::AnalyticsError) -> ApiError {
    tracing::warn!(error = %e, "analytics backend could not answer");
    unavailable(format!(
        "the analytics backend could not answer ({e}); doses are still being recorded, try again shortly"
    ))
}

/// How fresh the analytics figures are: every dose committed before `as_of` is counted, the
/// rest still waits in the outbox (or was dropped from a full one, or set aside). `stale` when
/// the oldest waiting row is older than the lag alert, or rows were dropped or set aside.
pub fn freshness(state: &Shared) -> Value {
    freshness_of(
        &state.feed.outbox().status(),
        state.shipper.status().last_error.as_deref(),
        state.analytics_lag_alert_s,
        OffsetDateTime::now_utc(),
    )
}

fn freshness_of(
    outbox: &analytics::OutboxStatus,
    last_error: Option<&str>,
    lag_alert_s: u64,
    now: OffsetDateTime,
) -> Value {
    let waiting_ms = if outbox.rows > 0 {
        outbox.oldest_age_ms
    } else {
        0
    };
    let lag_s = waiting_ms / 1000;
    let as_of = now - Duration::milliseconds(i64::try_from(waiting_ms).unwrap_or(i64::MAX));
    let lagging = outbox.rows > 0 && lag_s >= lag_alert_s;
    let mut notes = Vec::new();
    if lagging {
        notes.push(format!(
            "analytics are {lag_s} s behind: {} rows wait in the outbox, doses recorded since then are not counted yet",
            outbox.rows
        ));
    }
    if outbox.dropped_rows > 0 {
        notes.push(format!(
            "{} analytics rows were dropped when the outbox was full: the figures miss those doses",
            outbox.dropped_rows
        ));
    }
    if outbox.set_aside > 0 {
        notes.push(format!(
            "{} analytics rows were set aside because the backend cannot hold them: the figures miss those doses until they are corrected",
            outbox.set_aside
        ));
    }
    json!({
        "as_of": as_of.unix_timestamp(),
        "stale": lagging || outbox.dropped_rows > 0 || outbox.set_aside > 0,
        "lag_seconds": lag_s,
        "outbox_rows": outbox.rows,
        "dropped_rows": outbox.dropped_rows,
        "set_aside_rows": outbox.set_aside,
        "last_error": last_error,
        "note": (!notes.is_empty()).then(|| notes.join("; ")),
    })
}

/// `?level=province|district|site&granularity=day|hour&days=N&product=&province=`, as typed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UptakeParams {
    pub level: Option<String>,
    pub granularity: Option<String>,
    /// Days back from now (default 14; at most 366).
    pub days: Option<String>,
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
    let days: u32 = number("days", params.days.as_deref(), 14, 1, MAX_DAYS)?;
    let level = match params.level.as_deref().map(str::trim) {
        None => AreaLevel::Province,
        Some("province") => AreaLevel::Province,
        Some("district") => AreaLevel::District,
        Some("site") => AreaLevel::Site,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "level",
                format!("must be province, district or site, not {other:?}"),
            ));
        }
    };
    let granularity = match params.granularity.as_deref().map(str::trim) {
        None | Some("day") => Granularity::Day,
        Some("hour") => Granularity::Hour,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "granularity",
                format!("must be day or hour, not {other:?}"),
            ));
        }
    };
    let product = params
        .product
        .as_deref()
        .map(|p| {
            ProductCode::new(p.trim())
                .map(|p| p.to_string())
                .map_err(|e| ApiError::invalid_field("product", e.message))
        })
        .transpose()?;
    let province = params
        .province
        .as_deref()
        .map(|p| {
            store::AreaCode::new(p.trim())
                .map(|p| p.to_string())
                .map_err(|e| ApiError::invalid_field("province", e.message))
        })
        .transpose()?;
    let now = OffsetDateTime::now_utc();
    // Whole buckets, the current one included: whole UTC days or whole hours, both summed from
    // the hourly rollups.
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
        level,
        granularity,
        since,
        until,
        product,
        province,
    };
    let points = read_analytics(&state, state.analytics.uptake(&query))
        .await?
        .map_err(|e| analytics_unavailable(&e))?;
    Ok(json_answer(
        StatusCode::OK,
        json!({
            "analytics_backend": state.analytics.backend_name(),
            "analytics": freshness(&state),
            "level": query.level,
            "granularity": query.granularity,
            "since": query.since.unix_timestamp(),
            "until": query.until.unix_timestamp(),
            "points": points,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-21 10:00 UTC);

    #[test]
    fn an_empty_outbox_means_the_figures_are_current() {
        let fresh = freshness_of(&analytics::OutboxStatus::default(), None, 60, NOW);
        assert_eq!(fresh["as_of"], NOW.unix_timestamp());
        assert_eq!(fresh["stale"], false);
        assert_eq!(fresh["note"], Value::Null);
    }

    #[test]
    fn a_lagging_or_overflowed_outbox_makes_the_figures_stale() {
        let lagging = analytics::OutboxStatus {
            rows: 1200,
            entries: 30,
            oldest_age_ms: 300_500,
            ..Default::default()
        };
        let stale = freshness_of(&lagging, Some("ClickHouse: timeout"), 60, NOW);
        assert_eq!(stale["stale"], true);
        assert_eq!(stale["as_of"], NOW.unix_timestamp() - 301);
        assert_eq!(stale["lag_seconds"], 300);
        assert_eq!(stale["last_error"], "ClickHouse: timeout");
        let note = stale["note"].as_str().expect("a note");
        assert!(
            note.contains("300 s behind") && note.contains("1200 rows"),
            "{note}"
        );
        // Behind, but less than the alert: current enough, and says as of when.
        let recent = analytics::OutboxStatus {
            oldest_age_ms: 2_000,
            ..lagging
        };
        let fresh = freshness_of(&recent, None, 60, NOW);
        assert_eq!(fresh["stale"], false);
        assert_eq!(fresh["as_of"], NOW.unix_timestamp() - 2);
        let dropped = analytics::OutboxStatus {
            dropped_rows: 5,
            ..Default::default()
        };
        let stale = freshness_of(&dropped, None, 60, NOW);
        assert_eq!(stale["stale"], true);
        assert!(
            stale["note"]
                .as_str()
                .is_some_and(|n| n.contains("5 analytics rows were dropped"))
        );
        let set_aside = analytics::OutboxStatus {
            set_aside: 1,
            ..Default::default()
        };
        let stale = freshness_of(&set_aside, None, 60, NOW);
        assert_eq!(stale["stale"], true);
        assert_eq!(stale["set_aside_rows"], 1);
        assert!(
            stale["note"]
                .as_str()
                .is_some_and(|n| n.contains("1 analytics rows were set aside"))
        );
    }

    #[test]
    fn numbers_are_checked_with_a_message_naming_the_range() {
        assert_eq!(number("unit", None, 10u32, 1, 100).ok(), Some(10));
        assert_eq!(number("unit", Some(" 6 "), 10u32, 1, 100).ok(), Some(6));
        for bad in ["0", "101", "-1", "six", "", "99999999999999999999"] {
            let error = number("unit", Some(bad), 10u32, 1, 100).expect_err(bad);
            assert_eq!(error.code, "invalid_field");
            assert!(
                error
                    .message
                    .contains("unit: must be a whole number from 1 to 100"),
                "{}",
                error.message
            );
        }
    }
}
