//! Gathers the allocation planner's figures — uptake and owed doses from the analytics backend,
//! stock on hand from the caller's live lot counts, people still to start from the store's
//! registrations less those who started — and runs [`allocation::plan`] on them.
//!
//! The same function runs over ClickHouse or the embedded rollups, so on the same doses both
//! give the same plan (tested in `tests/analytics.rs`).

use std::collections::HashMap;

use store::{District, Site, SiteId};
use time::{Duration, OffsetDateTime};

use crate::allocation::{self, DistrictFigures, Plan, PlanError, PlanRequest, SiteFigures};
use crate::{Analytics, AnalyticsError, hour_floor};

/// What the planner needs besides the analytics backend.
#[derive(Debug, Clone, Copy)]
pub struct Figures<'a> {
    /// Sites that may receive the product.
    pub sites: &'a [Site],
    /// Doses of the product in unexpired lots, per site.
    pub stock_on_hand: &'a HashMap<SiteId, u64>,
    /// Registrations per district of residence (the store's running totals).
    pub registrations_by_district: &'a HashMap<District, u64>,
    /// The end of the uptake window.
    pub now: OffsetDateTime,
}

/// Why no plan was made.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error(transparent)]
    Analytics(#[from] AnalyticsError),
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// Proposes how to split `request`'s shipment.
///
/// # Errors
/// When the backend cannot answer, or the request or figures are unusable.
pub async fn propose(
    analytics: &dyn Analytics,
    request: &PlanRequest,
    figures: Figures<'_>,
) -> Result<Plan, ProposeError> {
    // The window ends at the current hour and is whole hours long, the rollups' finest bucket:
    // ClickHouse and the embedded rollups then count exactly the same doses.
    let since = hour_floor(figures.now) - Duration::days(i64::from(request.window_days));
    let (activity, started) = tokio::try_join!(
        analytics.site_activity(&request.product, since),
        analytics.started_by_district()
    )?;
    let activity: HashMap<String, crate::SiteActivity> = activity
        .into_iter()
        .map(|a| (a.site_id.clone(), a))
        .collect();
    let sites: Vec<SiteFigures> = figures
        .sites
        .iter()
        .map(|site| {
            let seen = activity.get(site.site_id.as_str());
            SiteFigures {
                site_id: site.site_id.to_string(),
                name: site.name.clone(),
                province: site.area.province.to_string(),
                district: site.area.district.to_string(),
                daily_capacity: site.daily_capacity,
                doses_in_window: seen.map_or(0, |a| a.doses_in_window),
                stock_on_hand: figures
                    .stock_on_hand
                    .get(&site.site_id)
                    .copied()
                    .unwrap_or(0),
                owed_doses: seen.map_or(0, |a| a.owed_doses),
            }
        })
        .collect();
    let mut districts: Vec<DistrictFigures> = figures
        .registrations_by_district
        .iter()
        .map(|(district, registered)| DistrictFigures {
            province: district.province.to_string(),
            district: district.district.to_string(),
            remaining_registrations: registered
                .saturating_sub(started.get(district).copied().unwrap_or(0)),
        })
        .collect();
    districts.sort_by(|a, b| (&a.province, &a.district).cmp(&(&b.province, &b.district)));
    Ok(allocation::plan(request, &sites, &districts)?)
}
