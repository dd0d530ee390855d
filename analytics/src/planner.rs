//! Gathers the allocation planner's figures — uptake, owed and lapsed doses and doses received
//! from the analytics backend, stock on hand from the caller's live lot counts, people still to
//! start from the store's registrations less those who started — and runs [`allocation::plan`]
//! on them, for the sites that give or stock the product.
//!
//! The same function runs over ClickHouse or the embedded rollups, so on the same doses both
//! give the same plan (tested in `analytics/tests/backends.rs`).

use std::collections::HashMap;

use store::{District, Site, SiteId};
use time::{Duration, OffsetDateTime};

use crate::allocation::{self, DistrictFigures, Plan, PlanError, PlanRequest, SiteFigures};
use crate::{Analytics, AnalyticsError, OwedWindow, hour_floor};

/// What the planner needs besides the analytics backend.
#[derive(Debug, Clone, Copy)]
pub struct Figures<'a> {
    /// Every site. Only those that give or stock the product are planned for: a site with a lot
    /// of the product (an entry in `stock_on_hand`, even 0), or doses of it given, received,
    /// owed or lapsed there. A site that never gives the product would otherwise be handed a
    /// share of its district's people.
    pub sites: &'a [Site],
    /// Per site holding (or having held) a lot of the product: doses left in its unexpired lots.
    pub stock_on_hand: &'a HashMap<SiteId, u64>,
    /// Registrations per district of residence (the store's running totals).
    pub registrations_by_district: &'a HashMap<District, u64>,
    /// The product's minimum interval between doses, in days, from the campaign's catalogue as
    /// it is now: an owed dose falls due this long after the dose that left it owed (the
    /// backends keep owed doses by that dose's day and apply the interval when asked).
    pub min_interval_days: u16,
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
    let owed = OwedWindow::new(
        crate::row::utc_day(figures.now),
        request.horizon_days,
        request.owed_lapse_days,
        figures.min_interval_days,
    );
    let (activity, started, received) = tokio::try_join!(
        analytics.site_activity(&request.product, since, owed),
        analytics.started_by_district(),
        analytics.received_by_site(&request.product),
    )?;
    let activity: HashMap<String, crate::SiteActivity> = activity
        .into_iter()
        .map(|a| (a.site_id.clone(), a))
        .collect();
    let sites: Vec<SiteFigures> = figures
        .sites
        .iter()
        .filter(|site| {
            figures.stock_on_hand.contains_key(&site.site_id)
                || activity.contains_key(site.site_id.as_str())
                || received.contains_key(site.site_id.as_str())
        })
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
                lapsed_doses: seen.map_or(0, |a| a.lapsed_doses),
                received_doses: received
                    .get(site.site_id.as_str())
                    .map_or(0, |&n| u64::try_from(n).unwrap_or(0)),
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
