//! The vaccine allocation planner: where the next shipment of one product should go.
//!
//! District and province health departments receive a shipment (say 6,000 doses of one product) and
//! must split it between vaccination sites, or between districts or provinces. This module proposes
//! that split from figures the caller has already gathered (recent uptake, stock on hand, second doses
//! owed, people still waiting to start, site capacity). It is pure: no I/O, no clock, no randomness,
//! so the same figures always give the same plan and every number can be checked by hand.
//!
//! # The method
//!
//! Notation, per site `i`: `d` doses given in the last `W = window_days`, `c` daily capacity
//! (`0` = unknown), `s` stock on hand, `o` doses owed; `H = horizon_days`; `S = shipment_doses`;
//! `u = unit_doses`.
//!
//! **Owed** means: people whose last dose of this product was given at the site, whose series is
//! not complete, and whose next dose falls due by the last day of the horizon — the due day being
//! the last dose's day plus the product's minimum interval, as the catalogue has it when the plan
//! is made (a revised interval moves every owed dose's due day) — unless it was due more than
//! `owed_lapse_days` ago. Those are **lapsed**: they dropped out, no dose is planned for them, and
//! the plan reports them (`lapsed_doses`, and a note) so the department can call them back. People
//! whose next dose falls due after the horizon are not this shipment's. (The caller counts them:
//! see [`crate::OwedWindow`].)
//!
//! 1. **Pace.** `rate = d / W` doses a day, capped at `c` when the capacity is known. The doses the
//!    site would give over the horizon at that pace are `pace = ceil(d × H / W)`, capped at `c × H`.
//! 2. **Owed doses first.** People due for their next dose are served before new starts, even at a
//!    site with no recent uptake: `owed = min(o, c × H)` (no cap when `c` is unknown), because a site
//!    cannot give more than its capacity in the horizon.
//! 3. **Then new starts**, in the pace left over and bounded by the people still waiting in the
//!    district: `room = max(pace − owed, 0)`, and the district's new starts are
//!    `min(Σ room, registrations)` over its sites. At site level the district's remaining
//!    registrations are spread over its sites in proportion to each site's `room`, in whole people
//!    by largest remainder, and each site plans `new = min(room, share)`. Weighting by room means
//!    no site's share exceeds its room while the district has room for everyone — a share a site
//!    could not use goes to the sites that can — so the sites of a district plan exactly the
//!    district's `min(Σ room, registrations)` between them. (When no site has room, the people are
//!    shared equally for display; none is planned.)
//! 4. **Need.** `planned = owed + new` doses over the horizon; `need = max(planned − s, 0)`.
//! 5. **Share the shipment.**
//!    - If `Σ need ≤ S` every line gets its need and the rest is **held back** (reported, never pushed
//!      to a line that does not need it).
//!    - Otherwise the shipment is **water-filled**: every line with a need is raised to the same level
//!      of cover, `L` days of its planned use (`planned / H` a day), lowest cover first. A line whose
//!      stock already covers `L` days gets nothing. With `A` the lines that receive doses,
//!      `L = H × (S + Σ_A s) / Σ_A planned` and `target_i = L × planned_i / H − s_i`. `L < H`
//!      whenever the shipment is short, so no line is ever given more than its need. Where the
//!      planned use equals the pace (the usual case) this makes the days of supply after allocation
//!      equal; filling on planned use rather than on the raw rate is what lets a site with owed
//!      doses but no recent uptake still be served, and stops a site with few people left from
//!      soaking up doses at its old pace.
//! 6. **Whole units.** Each target is floored to a whole number of units (vials or boxes of `u`
//!    doses); the units still free (`floor(S / u)` minus those already given) go one at a time to the
//!    largest remainders, ties broken by area id, never past a line's need rounded up to a unit.
//!    The total never exceeds the shipment; a shipment smaller than one unit allocates nothing.
//!
//! All of this is done in exact integer arithmetic (fractions over a common denominator), so
//! rounding never depends on floating-point noise; only the reported rates and days are `f64`.
//!
//! At **district** or **province** level the sites' figures are summed per area first (rates, stock,
//! owed doses after the capacity cap) and the same rule runs on the sums. New starts are capped by
//! registrations **district by district and then summed**, so people in a district with no room
//! are never matched against room in another district: the planned doses of a province are the
//! sum of its districts', and a district's are the sum of its sites' (tested). Stock at one site of
//! a district does count against another site's need in the same district: the district can move
//! it. So the areas agree on planned doses, and on need whenever no site holds more than its own
//! planned use.
//!
//! Days of supply are `stock / rate` at the current pace, `None` when the rate is 0. Lines are sorted
//! by area id.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The administrative level the shipment is split across.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// One line per vaccination site.
    Site,
    /// One line per district ("PROVINCE/DISTRICT"), its sites' figures summed.
    District,
    /// One line per province, its sites' figures summed.
    Province,
}

impl Level {
    /// The lowercase name used in URLs, the CLI and JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Site => "site",
            Level::District => "district",
            Level::Province => "province",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level name that is not `site`, `district` or `province`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLevelError {
    /// What the user typed, kept so the message can quote it.
    pub input: String,
}

impl fmt::Display for ParseLevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown allocation level {:?}: use site, district or province",
            self.input
        )
    }
}

impl std::error::Error for ParseLevelError {}

impl FromStr for Level {
    type Err = ParseLevelError;

    /// Accepts `site`, `district` or `province`, in any case and with surrounding spaces, because
    /// these come from query strings and command lines typed by people.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        match input.trim().to_ascii_lowercase().as_str() {
            "site" => Ok(Level::Site),
            "district" => Ok(Level::District),
            "province" => Ok(Level::Province),
            _ => Err(ParseLevelError {
                input: input.to_owned(),
            }),
        }
    }
}

/// What to plan: one shipment of one product, split at one level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRequest {
    /// The vaccine product in the shipment (e.g. a product code). Only used for labels and errors:
    /// the caller passes figures for this product only.
    pub product: String,
    /// Doses in the shipment. `0` is allowed and shows the need without allocating anything.
    pub shipment_doses: u64,
    /// Allocations are whole multiples of this many doses (a vial or a box); `1` means no rounding.
    pub unit_doses: u32,
    /// The number of days the uptake figures (`SiteFigures::doses_in_window`) cover, e.g. 7.
    pub window_days: u32,
    /// How many days of need the shipment should cover, e.g. 14.
    pub horizon_days: u32,
    /// Whether to split between sites, districts or provinces.
    pub level: Level,
    /// Days overdue after which a person owed a dose counts as lapsed rather than owed (see the
    /// module documentation). Only reported here: the caller counted owed and lapsed with it.
    #[serde(default = "default_lapse_days")]
    pub owed_lapse_days: u32,
}

/// The grace after which an owed dose lapses, when a request does not say.
pub const DEFAULT_OWED_LAPSE_DAYS: u32 = 90;

fn default_lapse_days() -> u32 {
    DEFAULT_OWED_LAPSE_DAYS
}

/// One site that can receive this product, with its recent figures for the product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteFigures {
    /// The site's id; must be unique and not blank. It is the area id at site level.
    pub site_id: String,
    /// The site's name, as health workers know it.
    pub name: String,
    /// Province code; groups sites at province level.
    pub province: String,
    /// District code within the province; groups sites at district level and matches
    /// `DistrictFigures` for remaining registrations.
    pub district: String,
    /// Doses a day the site can give (`0` = unknown, no cap). Caps the rate and the doses planned.
    pub daily_capacity: u32,
    /// Doses of this product given at the site in the last `window_days`.
    pub doses_in_window: u64,
    /// Doses of this product in unexpired lots at the site.
    pub stock_on_hand: u64,
    /// People whose next dose of this product is owed at this site and falls due within the
    /// horizon, or is overdue by at most `owed_lapse_days` (e.g. due for dose 2).
    pub owed_doses: u64,
    /// People whose next dose is owed at this site but was due more than `owed_lapse_days` ago:
    /// reported, not planned for.
    #[serde(default)]
    pub lapsed_doses: u64,
    /// Doses of this product delivered to the site so far (lots received, adjustments); shown,
    /// not planned with.
    #[serde(default)]
    pub received_doses: u64,
}

/// People in one district who registered but have not started their series yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistrictFigures {
    /// Province code, as in `SiteFigures::province`.
    pub province: String,
    /// District code, as in `SiteFigures::district`.
    pub district: String,
    /// Registered people who have not had a first dose yet.
    pub remaining_registrations: u64,
}

/// One area's proposed share of the shipment, with the figures that explain it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanLine {
    /// Site id, `"PROVINCE/DISTRICT"` or province code, according to the level.
    pub area: String,
    /// The site's name at site level; the district or province code otherwise.
    pub name: String,
    /// How many sites the line covers (1 at site level).
    pub site_count: u32,
    /// Doses a day at the recent pace, each site capped by its capacity when known.
    pub daily_rate: f64,
    /// Doses on hand now.
    pub stock_on_hand: u64,
    /// People owed their next dose within the horizon (before any capacity cap).
    pub owed_doses: u64,
    /// People more than `owed_lapse_days` overdue for their next dose here: to call back; no dose
    /// is planned for them.
    pub lapsed_doses: u64,
    /// Doses of the product delivered to the line's sites so far (lots received, adjustments).
    pub received_doses: u64,
    /// People still waiting to start that this line is expected to serve: the site's share of its
    /// district's registrations at site level (by its room for new starts), the area's total
    /// otherwise.
    pub remaining_registrations: u64,
    /// Doses the line is expected to give over the horizon: owed doses first, then new starts
    /// (see the module documentation).
    pub planned_doses: u64,
    /// Doses still missing to cover the horizon: `planned_doses − stock_on_hand`, at least 0.
    pub need_doses: u64,
    /// Doses proposed from this shipment: a whole number of units, at most the need rounded up to
    /// a unit.
    pub allocated_doses: u64,
    /// Days the current stock lasts at `daily_rate`; `None` when the rate is 0.
    pub days_of_supply_before: Option<f64>,
    /// Days stock plus allocation lasts at `daily_rate`; `None` when the rate is 0.
    pub days_of_supply_after: Option<f64>,
}

/// The proposed split of a shipment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The request this plan answers, so a saved plan says what it was for.
    pub request: PlanRequest,
    /// One line per area, sorted by area id.
    pub lines: Vec<PlanLine>,
    /// Σ need over the lines.
    pub need_doses: u64,
    /// Σ allocated over the lines; never more than the shipment.
    pub allocated_doses: u64,
    /// Shipment doses not allocated: beyond every need, or less than a unit left after rounding.
    pub held_back_doses: u64,
    /// Need the shipment does not cover: Σ (need − allocated), at least 0 per line.
    pub unmet_need_doses: u64,
    /// When the shipment is short, the days of planned use every served line was filled to before
    /// rounding (`L` in the module documentation); `None` when every need is met.
    pub fill_level_days: Option<f64>,
    /// Registrations in districts where no listed site offers this product: nobody plans for them.
    pub unplaced_registrations: u64,
    /// Σ lapsed over the lines: people to call back, not planned for.
    pub lapsed_doses: u64,
    /// Plain-language remarks on how the plan was made and what to check.
    pub notes: Vec<String>,
}

/// Why a plan could not be made. Each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanError {
    /// `product` is blank.
    NoProduct,
    /// `unit_doses` is 0.
    ZeroUnit,
    /// `window_days` is 0.
    ZeroWindow,
    /// `horizon_days` is 0.
    ZeroHorizon,
    /// No site figures were given.
    NoSites {
        /// The product asked for.
        product: String,
    },
    /// A site has a blank id, province or district.
    BlankSiteField {
        /// The site's id (may itself be the blank field).
        site_id: String,
        /// Which field is blank.
        field: &'static str,
    },
    /// The same site id appears twice.
    DuplicateSite {
        /// The repeated id.
        site_id: String,
    },
    /// The same district appears twice in the registration figures.
    DuplicateDistrict {
        /// Its province code.
        province: String,
        /// Its district code.
        district: String,
    },
    /// The figures are too large to compute with exactly (far beyond any real campaign).
    FiguresTooLarge,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::NoProduct => {
                f.write_str("product is blank: name the vaccine product in the shipment")
            }
            PlanError::ZeroUnit => f.write_str(
                "unit_doses is 0: give the doses in one vial or box (1 for no rounding)",
            ),
            PlanError::ZeroWindow => f.write_str(
                "window_days is 0: give the number of days the uptake figures cover (e.g. 7)",
            ),
            PlanError::ZeroHorizon => f.write_str(
                "horizon_days is 0: give how many days of need the shipment should cover (e.g. 14)",
            ),
            PlanError::NoSites { product } => write!(
                f,
                "no sites can receive {product:?}: check the product code, or register sites for it first"
            ),
            PlanError::BlankSiteField { site_id, field } => write!(
                f,
                "site {site_id:?} has a blank {field}: every site needs an id, a province and a district"
            ),
            PlanError::DuplicateSite { site_id } => write!(
                f,
                "site {site_id:?} appears twice in the site figures: send one row per site"
            ),
            PlanError::DuplicateDistrict { province, district } => write!(
                f,
                "district {province}/{district} appears twice in the registration figures: send one row per district"
            ),
            PlanError::FiguresTooLarge => f.write_str(
                "the figures are too large to plan with exactly: check for a corrupted count",
            ),
        }
    }
}

impl std::error::Error for PlanError {}

/// Proposes how to split `request.shipment_doses` of one product across sites, districts or
/// provinces. `sites` are the sites that can receive the product, with their figures for it;
/// `districts` give the remaining registrations (a district without a row has none). The order of
/// both slices does not matter.
///
/// # Errors
///
/// A [`PlanError`] for a zero unit, window or horizon, a blank product, no sites, a blank site id,
/// province or district, a repeated site or district, or figures too large to compute with.
pub fn plan(
    request: &PlanRequest,
    sites: &[SiteFigures],
    districts: &[DistrictFigures],
) -> Result<Plan, PlanError> {
    validate_request(request)?;
    let sites = sorted_sites(request, sites)?;
    let registrations = registrations_by_district(districts)?;
    let horizon = u128::from(request.horizon_days);
    let window = u128::from(request.window_days);
    let mut notes = Vec::new();

    let demands = sites
        .iter()
        .map(|site| SiteDemand::new(site, window, horizon))
        .collect::<Result<Vec<_>, _>>()?;

    let unplaced_registrations = note_district_mismatches(&sites, &registrations, &mut notes)?;

    let areas = match request.level {
        Level::Site => site_areas(&sites, &demands, &registrations)?,
        Level::District | Level::Province => {
            grouped_areas(request.level, &sites, &demands, &registrations)?
        }
    };

    let shipment = u128::from(request.shipment_doses);
    let unit = u128::from(request.unit_doses);
    let needs: Vec<u128> = areas.iter().map(Area::need).collect();
    let total_need = needs.iter().try_fold(0u128, |sum, &need| add(sum, need))?;

    // Targets as exact fractions `numerator / denominator` of doses, one per area.
    let (numerators, denominator, fill_level_days) = if total_need <= shipment {
        (needs.clone(), 1, None)
    } else {
        let fill = water_fill(&areas, shipment)?;
        let level_days =
            horizon as f64 * fill.level_numerator as f64 / fill.level_denominator as f64;
        (fill.numerators, fill.level_denominator, Some(level_days))
    };
    let allocations = round_to_units(&numerators, denominator, unit, shipment / unit)?;

    let allocated = allocations
        .iter()
        .try_fold(0u128, |sum, &doses| add(sum, doses))?;
    let held_back = shipment.saturating_sub(allocated);
    let unmet = needs
        .iter()
        .zip(&allocations)
        .try_fold(0u128, |sum, (&need, &doses)| {
            add(sum, need.saturating_sub(doses))
        })?;

    // Σ allocated ≤ floor(S / u) × u ≤ S follows from the method; this is where it would show.
    debug_assert!(allocated <= shipment, "allocated {allocated} of {shipment}");
    notes.push(outcome_note(request, fill_level_days, held_back, unmet));
    let lapsed = areas
        .iter()
        .try_fold(0u128, |sum, area| add(sum, area.lapsed))?;
    if lapsed > 0 {
        notes.push(format!(
            "{lapsed} people are more than {} days overdue for their next dose (lapsed): no doses \
             are planned for them; lapsed_doses on each line says where to call them back",
            request.owed_lapse_days
        ));
    }

    let lines = areas
        .into_iter()
        .zip(allocations)
        .map(|(area, doses)| area.into_line(doses))
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Plan {
        request: request.clone(),
        lines,
        need_doses: to_u64(total_need)?,
        allocated_doses: to_u64(allocated)?,
        held_back_doses: to_u64(held_back)?,
        unmet_need_doses: to_u64(unmet)?,
        fill_level_days,
        unplaced_registrations: to_u64(unplaced_registrations)?,
        lapsed_doses: to_u64(lapsed)?,
        notes,
    })
}

/// Registrations in districts with no site for this product cannot be planned for, and sites in a
/// district without registration figures plan only their owed doses: both are easy to miss in the
/// numbers, so both get a note. Returns the registrations nobody plans for.
fn note_district_mismatches(
    sites: &[&SiteFigures],
    registrations: &Registrations<'_>,
    notes: &mut Vec<String>,
) -> Result<u128, PlanError> {
    let served: BTreeSet<(&str, &str)> = sites
        .iter()
        .map(|site| (site.province.as_str(), site.district.as_str()))
        .collect();
    let mut unplaced: u128 = 0;
    for (&(province, district), &people) in registrations {
        if !served.contains(&(province, district)) && people > 0 {
            unplaced = add(unplaced, u128::from(people))?;
            notes.push(format!(
                "{people} registrations in {province}/{district} have no site for this product"
            ));
        }
    }
    let without_figures: Vec<String> = served
        .iter()
        .filter(|key| !registrations.contains_key(*key))
        .map(|(province, district)| format!("{province}/{district}"))
        .collect();
    if !without_figures.is_empty() {
        notes.push(format!(
            "no registration figures for {}: only owed doses are planned there",
            without_figures.join(", ")
        ));
    }
    Ok(unplaced)
}

/// One sentence on how the shipment compares with the need, for the person reading the plan.
fn outcome_note(
    request: &PlanRequest,
    fill_level_days: Option<f64>,
    held_back: u128,
    unmet: u128,
) -> String {
    let horizon = request.horizon_days;
    let unit = request.unit_doses;
    if request.shipment_doses == 0 {
        return format!("no shipment: the plan shows the need for the next {horizon} days only");
    }
    if u64::from(unit) > request.shipment_doses {
        return format!(
            "the shipment ({} doses) is smaller than one unit of {unit} doses: nothing allocated",
            request.shipment_doses
        );
    }
    match fill_level_days {
        Some(days) => format!(
            "the shipment is {unmet} doses short of the need: every line with a need was filled to \
             about {days:.1} of {horizon} days of planned use, lowest cover first"
        ),
        None if unmet > 0 => format!(
            "the shipment would cover every need for {horizon} days, but rounding to units of \
             {unit} doses leaves {unmet} doses of need uncovered; {held_back} doses held back"
        ),
        None => format!(
            "the shipment covers every need for {horizon} days; {held_back} doses held back"
        ),
    }
}

fn validate_request(request: &PlanRequest) -> Result<(), PlanError> {
    if request.product.trim().is_empty() {
        return Err(PlanError::NoProduct);
    }
    if request.unit_doses == 0 {
        return Err(PlanError::ZeroUnit);
    }
    if request.window_days == 0 {
        return Err(PlanError::ZeroWindow);
    }
    if request.horizon_days == 0 {
        return Err(PlanError::ZeroHorizon);
    }
    Ok(())
}

/// Checks the sites and sorts them by id, so that everything after this point, including the order
/// in which floating-point rates are summed, is independent of the caller's order.
fn sorted_sites<'a>(
    request: &PlanRequest,
    sites: &'a [SiteFigures],
) -> Result<Vec<&'a SiteFigures>, PlanError> {
    if sites.is_empty() {
        return Err(PlanError::NoSites {
            product: request.product.clone(),
        });
    }
    for site in sites {
        let blank = [
            ("site_id", &site.site_id),
            ("province", &site.province),
            ("district", &site.district),
        ]
        .into_iter()
        .find(|(_, value)| value.trim().is_empty());
        if let Some((field, _)) = blank {
            return Err(PlanError::BlankSiteField {
                site_id: site.site_id.clone(),
                field,
            });
        }
    }
    let mut sorted: Vec<&SiteFigures> = sites.iter().collect();
    sorted.sort_by(|a, b| a.site_id.cmp(&b.site_id));
    if let Some(pair) = sorted
        .windows(2)
        .find(|pair| pair[0].site_id == pair[1].site_id)
    {
        return Err(PlanError::DuplicateSite {
            site_id: pair[0].site_id.clone(),
        });
    }
    Ok(sorted)
}

/// Remaining registrations keyed by (province, district).
type Registrations<'a> = BTreeMap<(&'a str, &'a str), u64>;

fn registrations_by_district(
    districts: &[DistrictFigures],
) -> Result<Registrations<'_>, PlanError> {
    let mut by_district = BTreeMap::new();
    for row in districts {
        let key = (row.province.as_str(), row.district.as_str());
        if by_district
            .insert(key, row.remaining_registrations)
            .is_some()
        {
            return Err(PlanError::DuplicateDistrict {
                province: row.province.clone(),
                district: row.district.clone(),
            });
        }
    }
    Ok(by_district)
}

/// One site's figures turned into doses over the horizon (steps 1 and 2 of the method).
struct SiteDemand {
    /// Doses a day at the recent pace, capped by capacity.
    daily_rate: f64,
    /// Owed doses that fit in the horizon's capacity.
    owed_planned: u128,
    /// Pace left over after the owed doses: room for new starts. Also the weight a district's
    /// registrations are spread over its sites by.
    room_for_new: u128,
}

impl SiteDemand {
    fn new(site: &SiteFigures, window: u128, horizon: u128) -> Result<Self, PlanError> {
        let capacity = u128::from(site.daily_capacity);
        let given = u128::from(site.doses_in_window);
        // `None` when the capacity is unknown: nothing caps the site.
        let ceiling = (capacity > 0).then(|| capacity * horizon);
        let at_pace = mul(given, horizon)?.div_ceil(window);
        let pace = ceiling.map_or(at_pace, |ceiling| at_pace.min(ceiling));
        let owed = u128::from(site.owed_doses);
        let owed_planned = ceiling.map_or(owed, |ceiling| owed.min(ceiling));

        let mut daily_rate = site.doses_in_window as f64 / window as f64;
        if site.daily_capacity > 0 {
            daily_rate = daily_rate.min(f64::from(site.daily_capacity));
        }
        Ok(SiteDemand {
            daily_rate,
            owed_planned,
            room_for_new: pace.saturating_sub(owed_planned),
        })
    }
}

/// The summed figures of one plan line, before allocation.
/// Kept in `u128` so sums over many sites cannot overflow before the final check.
struct Area {
    /// Site id, "PROVINCE/DISTRICT" or province code: the line's key and sort order.
    area: String,
    /// What a person reading the plan calls the area.
    name: String,
    /// Sites summed into the line.
    site_count: u32,
    /// Σ doses a day at the recent pace, each site capped by its capacity.
    daily_rate: f64,
    /// Σ doses on hand.
    stock: u128,
    /// Σ people owed a dose, as reported (shown on the line).
    owed: u128,
    /// Σ owed doses that fit in each site's capacity over the horizon (what is planned).
    owed_planned: u128,
    /// Σ people lapsed (reported only).
    lapsed: u128,
    /// Σ doses delivered (reported only).
    received: u128,
    /// People waiting to start that this line serves.
    registrations: u128,
    /// New starts planned: room for new starts capped by registrations, district by district.
    new_starts: u128,
}

impl Area {
    fn empty(area: String, name: String) -> Self {
        Area {
            area,
            name,
            site_count: 0,
            daily_rate: 0.0,
            stock: 0,
            owed: 0,
            owed_planned: 0,
            lapsed: 0,
            received: 0,
            registrations: 0,
            new_starts: 0,
        }
    }

    fn add_site(&mut self, site: &SiteFigures, demand: &SiteDemand) -> Result<(), PlanError> {
        self.site_count = self.site_count.saturating_add(1);
        self.daily_rate += demand.daily_rate;
        self.stock = add(self.stock, u128::from(site.stock_on_hand))?;
        self.owed = add(self.owed, u128::from(site.owed_doses))?;
        self.owed_planned = add(self.owed_planned, demand.owed_planned)?;
        self.lapsed = add(self.lapsed, u128::from(site.lapsed_doses))?;
        self.received = add(self.received, u128::from(site.received_doses))?;
        Ok(())
    }

    /// Step 3 and 4: owed doses, then the new starts worked out per district.
    fn planned(&self) -> u128 {
        self.owed_planned.saturating_add(self.new_starts)
    }

    fn need(&self) -> u128 {
        self.planned().saturating_sub(self.stock)
    }

    fn into_line(self, allocated: u128) -> Result<PlanLine, PlanError> {
        let days = |doses: u128| (self.daily_rate > 0.0).then(|| doses as f64 / self.daily_rate);
        Ok(PlanLine {
            days_of_supply_before: days(self.stock),
            days_of_supply_after: days(add(self.stock, allocated)?),
            planned_doses: to_u64(self.planned())?,
            need_doses: to_u64(self.need())?,
            allocated_doses: to_u64(allocated)?,
            stock_on_hand: to_u64(self.stock)?,
            owed_doses: to_u64(self.owed)?,
            lapsed_doses: to_u64(self.lapsed)?,
            received_doses: to_u64(self.received)?,
            remaining_registrations: to_u64(self.registrations)?,
            daily_rate: self.daily_rate,
            site_count: self.site_count,
            name: self.name,
            area: self.area,
        })
    }
}

/// One line per site; each district's registrations are spread over its sites (step 3).
fn site_areas(
    sites: &[&SiteFigures],
    demands: &[SiteDemand],
    registrations: &Registrations<'_>,
) -> Result<Vec<Area>, PlanError> {
    let mut areas: Vec<Area> = sites
        .iter()
        .zip(demands)
        .map(|(site, demand)| {
            let mut area = Area::empty(site.site_id.clone(), site.name.clone());
            area.add_site(site, demand).map(|()| area)
        })
        .collect::<Result<_, _>>()?;

    // Indices of the sites of each district, in site-id order.
    let mut by_district: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (index, site) in sites.iter().enumerate() {
        by_district
            .entry((site.province.as_str(), site.district.as_str()))
            .or_default()
            .push(index);
    }
    for (key, members) in by_district {
        let people = registrations.get(&key).copied().unwrap_or(0);
        // By room for new starts: a site with none (no uptake, or all of it owed) gets no share,
        // and no site gets more than its room while the district has room for everyone.
        let mut weights: Vec<u128> = members
            .iter()
            .map(|&index| demands[index].room_for_new)
            .collect();
        if weights.iter().all(|&weight| weight == 0) {
            // No site has room: nobody is planned; the people are shown shared equally.
            weights.fill(1);
        }
        let total_weight = weights.iter().try_fold(0u128, |sum, &w| add(sum, w))?;
        let numerators = weights
            .iter()
            .map(|&weight| mul(u128::from(people), weight))
            .collect::<Result<Vec<_>, _>>()?;
        let shares = round_to_units(&numerators, total_weight, 1, u128::from(people))?;
        for (&index, share) in members.iter().zip(shares) {
            areas[index].registrations = share;
            areas[index].new_starts = share.min(demands[index].room_for_new);
        }
    }
    Ok(areas)
}

/// One line per district or province: the sites' figures summed; each district's new starts are
/// its sites' room capped by its registrations, and an area's the sum of its districts'.
fn grouped_areas(
    level: Level,
    sites: &[&SiteFigures],
    demands: &[SiteDemand],
    registrations: &Registrations<'_>,
) -> Result<Vec<Area>, PlanError> {
    let mut areas: BTreeMap<String, Area> = BTreeMap::new();
    // Per district: the area holding its sites, and Σ room for new starts.
    let mut districts: BTreeMap<(&str, &str), (String, u128)> = BTreeMap::new();
    for (site, demand) in sites.iter().zip(demands) {
        let (key, name) = match level {
            Level::District => (
                format!("{}/{}", site.province, site.district),
                site.district.clone(),
            ),
            // Site level never comes here (see `site_areas`); group it like a province if it did.
            Level::Province | Level::Site => (site.province.clone(), site.province.clone()),
        };
        let area = areas
            .entry(key.clone())
            .or_insert_with(|| Area::empty(key.clone(), name));
        area.add_site(site, demand)?;
        let district = districts
            .entry((site.province.as_str(), site.district.as_str()))
            .or_insert((key, 0));
        district.1 = add(district.1, demand.room_for_new)?;
    }
    for (district, (key, room)) in districts {
        let people = u128::from(registrations.get(&district).copied().unwrap_or(0));
        if let Some(area) = areas.get_mut(&key) {
            area.registrations = add(area.registrations, people)?;
            area.new_starts = add(area.new_starts, room.min(people))?;
        }
    }
    Ok(areas.into_values().collect())
}

/// The exact result of water-filling (step 5, short shipment).
struct WaterFill {
    /// Per area, its target in doses times `level_denominator`.
    numerators: Vec<u128>,
    /// `S + Σ_A stock`: with `level_denominator`, the fill level as a fraction of planned use.
    level_numerator: u128,
    /// `Σ_A planned`.
    level_denominator: u128,
}

/// Raises the areas with the lowest cover first until the shipment is used up. Only called when the
/// total need exceeds the shipment, which keeps the level below full cover.
fn water_fill(areas: &[Area], shipment: u128) -> Result<WaterFill, PlanError> {
    let planned: Vec<u128> = areas.iter().map(Area::planned).collect();
    // Areas with a need, lowest cover (stock / planned) first; ties in area order.
    let mut order: Vec<usize> = (0..areas.len())
        .filter(|&i| planned[i] > areas[i].stock)
        .collect();
    order.sort_by(|&i, &j| {
        compare_fractions(areas[i].stock, planned[i], areas[j].stock, planned[j]).then(i.cmp(&j))
    });

    let mut level_numerator = shipment;
    let mut level_denominator = 0u128;
    let mut active = 0;
    for (k, &i) in order.iter().enumerate() {
        level_numerator = add(level_numerator, areas[i].stock)?;
        level_denominator = add(level_denominator, planned[i])?;
        active = k + 1;
        // Stop when the next area's cover is already at or above the level reached so far.
        if let Some(&next) = order.get(k + 1) {
            let next_cover = (areas[next].stock, planned[next]);
            if compare_fractions(
                level_numerator,
                level_denominator,
                next_cover.0,
                next_cover.1,
            ) != Ordering::Greater
            {
                break;
            }
        }
    }

    let mut numerators = vec![0u128; areas.len()];
    for &i in &order[..active] {
        let filled = mul(level_numerator, planned[i])?;
        let stock = mul(level_denominator, areas[i].stock)?;
        numerators[i] = filled.saturating_sub(stock);
    }
    Ok(WaterFill {
        numerators,
        level_numerator,
        level_denominator: level_denominator.max(1),
    })
}

/// Step 6. Targets are `numerators[i] / denominator` doses. Returns whole multiples of `unit`:
/// each target floored, then up to `units_available` in total, the free units going one each to the
/// largest remainders (ties to the lower index, i.e. the lower area id). A target that is already a
/// whole number of units never gets an extra one, so no line exceeds its target rounded up.
fn round_to_units(
    numerators: &[u128],
    denominator: u128,
    unit: u128,
    units_available: u128,
) -> Result<Vec<u128>, PlanError> {
    let per_unit = mul(denominator.max(1), unit)?;
    let mut units: Vec<u128> = numerators.iter().map(|&n| n / per_unit).collect();
    let given = units.iter().try_fold(0u128, |sum, &u| add(sum, u))?;
    let mut free = units_available.saturating_sub(given);

    let mut by_remainder: Vec<(u128, usize)> = numerators
        .iter()
        .enumerate()
        .map(|(index, &n)| (n % per_unit, index))
        .filter(|&(remainder, _)| remainder > 0)
        .collect();
    by_remainder.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, index) in by_remainder {
        if free == 0 {
            break;
        }
        units[index] += 1;
        free -= 1;
    }
    units.into_iter().map(|u| mul(u, unit)).collect()
}

/// Compares `a / b` with `c / d` exactly, without the overflow a cross-multiplication could hit.
/// Both denominators must be positive. Works like Euclid's algorithm: compare the whole parts, then
/// the flipped remainders.
fn compare_fractions(mut a: u128, mut b: u128, mut c: u128, mut d: u128) -> Ordering {
    loop {
        if b == 0 || d == 0 {
            // Not reached from this module (denominators are planned doses > 0); keep it total.
            return b.cmp(&d).reverse();
        }
        let (whole_ab, rest_ab) = (a / b, a % b);
        let (whole_cd, rest_cd) = (c / d, c % d);
        if whole_ab != whole_cd {
            return whole_ab.cmp(&whole_cd);
        }
        match (rest_ab, rest_cd) {
            (0, 0) => return Ordering::Equal,
            (0, _) => return Ordering::Less,
            (_, 0) => return Ordering::Greater,
            // rest_ab / b < rest_cd / d exactly when d / rest_cd < b / rest_ab.
            _ => (a, b, c, d) = (d, rest_cd, b, rest_ab),
        }
    }
}

fn add(a: u128, b: u128) -> Result<u128, PlanError> {
    a.checked_add(b).ok_or(PlanError::FiguresTooLarge)
}

fn mul(a: u128, b: u128) -> Result<u128, PlanError> {
    a.checked_mul(b).ok_or(PlanError::FiguresTooLarge)
}

fn to_u64(value: u128) -> Result<u64, PlanError> {
    u64::try_from(value).map_err(|_| PlanError::FiguresTooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The worked example used by most tests: three sites in Hà Nội, two districts, 7-day window,
    // 14-day horizon, plenty of people still registered (10,000 per district).
    //
    //            site      capacity  doses/7d  rate/day  stock  owed   pace(14d)  planned  need
    //   HN-BD-01 Ba Đình 1   unknown     700      100      400    200    1400       1400     1000
    //   HN-BD-02 Ba Đình 2   60/day      350       50      100      0     700        700      600
    //   HN-CG-01 Cầu Giấy    unknown     140       20        0     50     280        280      280
    //                                                      ---                     ----     ----
    //                                                      500                     2380     1880
    //
    // planned = owed + min(pace − owed, registrations share): 200 + 1200, 0 + 700, 50 + 230.
    // Registration shares: Ba Đình's 10,000 spread by room for new starts, 1400 − 200 = 1200 and
    // 700 − 0 = 700: 6,315.8 and 3,684.2 → 6,316 and 3,684, both above the room.

    fn site(
        site_id: &str,
        district: &str,
        daily_capacity: u32,
        doses_in_window: u64,
        stock_on_hand: u64,
        owed_doses: u64,
    ) -> SiteFigures {
        SiteFigures {
            site_id: site_id.to_owned(),
            name: format!("{site_id} health station"),
            province: "HN".to_owned(),
            district: district.to_owned(),
            daily_capacity,
            doses_in_window,
            stock_on_hand,
            owed_doses,
            lapsed_doses: 0,
            received_doses: 0,
        }
    }

    fn three_sites() -> Vec<SiteFigures> {
        vec![
            site("HN-BD-01", "BADINH", 0, 700, 400, 200),
            site("HN-BD-02", "BADINH", 60, 350, 100, 0),
            site("HN-CG-01", "CAUGIAY", 0, 140, 0, 50),
        ]
    }

    fn district(district: &str, remaining_registrations: u64) -> DistrictFigures {
        DistrictFigures {
            province: "HN".to_owned(),
            district: district.to_owned(),
            remaining_registrations,
        }
    }

    fn two_districts() -> Vec<DistrictFigures> {
        vec![district("BADINH", 10_000), district("CAUGIAY", 10_000)]
    }

    fn request(shipment_doses: u64, unit_doses: u32, level: Level) -> PlanRequest {
        PlanRequest {
            product: "COMIRNATY".to_owned(),
            shipment_doses,
            unit_doses,
            window_days: 7,
            horizon_days: 14,
            level,
            owed_lapse_days: 90,
        }
    }

    fn make_plan(
        request: &PlanRequest,
        sites: &[SiteFigures],
        districts: &[DistrictFigures],
    ) -> Plan {
        plan(request, sites, districts).expect("the test figures are valid")
    }

    fn allocations(plan: &Plan) -> Vec<(&str, u64)> {
        plan.lines
            .iter()
            .map(|line| (line.area.as_str(), line.allocated_doses))
            .collect()
    }

    fn assert_days(actual: Option<f64>, expected: f64) {
        let days = actual.expect("the line has a rate");
        assert!(
            (days - expected).abs() < 1e-9,
            "{days} days, expected {expected}"
        );
    }

    #[test]
    fn figures_of_the_worked_example() {
        let plan = make_plan(
            &request(0, 1, Level::Site),
            &three_sites(),
            &two_districts(),
        );
        let figures: Vec<_> = plan
            .lines
            .iter()
            .map(|l| {
                (
                    l.daily_rate,
                    l.planned_doses,
                    l.need_doses,
                    l.remaining_registrations,
                )
            })
            .collect();
        assert_eq!(
            figures,
            vec![
                (100.0, 1400, 1000, 6316),
                (50.0, 700, 600, 3684),
                (20.0, 280, 280, 10_000),
            ]
        );
        assert_eq!(plan.need_doses, 1880);
        assert_eq!(plan.allocated_doses, 0);
    }

    #[test]
    fn ample_shipment_meets_every_need_and_holds_back_the_rest() {
        // 2,000 ≥ Σ need 1,880: each site gets its need, 2,000 − 1,880 = 120 held back.
        // Days of supply before: 400/100 = 4, 100/50 = 2, 0/20 = 0; after: 1400/100 = 14,
        // 700/50 = 14, 280/20 = 14.
        let plan = make_plan(
            &request(2000, 1, Level::Site),
            &three_sites(),
            &two_districts(),
        );
        assert_eq!(
            allocations(&plan),
            vec![("HN-BD-01", 1000), ("HN-BD-02", 600), ("HN-CG-01", 280)]
        );
        assert_eq!(plan.allocated_doses, 1880);
        assert_eq!(plan.held_back_doses, 120);
        assert_eq!(plan.unmet_need_doses, 0);
        assert_eq!(plan.fill_level_days, None);
        for (line, before) in plan.lines.iter().zip([4.0, 2.0, 0.0]) {
            assert_days(line.days_of_supply_before, before);
            assert_days(line.days_of_supply_after, 14.0);
        }
    }

    #[test]
    fn scarce_shipment_is_water_filled_to_equal_days_of_supply() {
        // 690 < 1,880. All three sites are below the level, so
        // L = 14 × (690 + 400 + 100 + 0) / (1400 + 700 + 280) = 14 × 1190 / 2380 = 7 days.
        // Targets: 7 × 100 − 400 = 300, 7 × 50 − 100 = 250, 7 × 20 − 0 = 140 (Σ 690).
        let plan = make_plan(
            &request(690, 1, Level::Site),
            &three_sites(),
            &two_districts(),
        );
        assert_eq!(
            allocations(&plan),
            vec![("HN-BD-01", 300), ("HN-BD-02", 250), ("HN-CG-01", 140)]
        );
        assert_eq!(plan.held_back_doses, 0);
        assert_eq!(plan.unmet_need_doses, 1880 - 690);
        assert_days(plan.fill_level_days, 7.0);
        for line in &plan.lines {
            assert_days(line.days_of_supply_after, 7.0);
        }
    }

    #[test]
    fn site_already_above_the_water_line_gets_nothing() {
        // 110 doses. Cover before, in days: Cầu Giấy 0, Ba Đình 2 has 2, Ba Đình 1 has 4.
        // With the first two: L = 14 × (110 + 0 + 100) / (280 + 700) = 3 days, below Ba Đình 1's 4,
        // so it is left out. Targets: 3 × 20 = 60 and 3 × 50 − 100 = 50.
        let plan = make_plan(
            &request(110, 1, Level::Site),
            &three_sites(),
            &two_districts(),
        );
        assert_eq!(
            allocations(&plan),
            vec![("HN-BD-01", 0), ("HN-BD-02", 50), ("HN-CG-01", 60)]
        );
        assert_days(plan.fill_level_days, 3.0);
        assert_days(plan.lines[0].days_of_supply_after, 4.0);
        assert_days(plan.lines[1].days_of_supply_after, 3.0);
        assert_days(plan.lines[2].days_of_supply_after, 3.0);
    }

    #[test]
    fn scarce_shipment_is_rounded_to_ten_dose_vials() {
        // 720 doses in vials of 10: 72 vials. L/H = (720 + 500) / 2380 = 61/119.
        // Targets: 1400 × 61/119 − 400 = 317.65, 700 × 61/119 − 100 = 258.82, 280 × 61/119 = 143.53.
        // Floored: 31 + 25 + 14 = 70 vials; the 2 left go to the largest remainders,
        // Ba Đình 2 (8.82) then Ba Đình 1 (7.65): 320, 260, 140 doses, nothing held back.
        let plan = make_plan(
            &request(720, 10, Level::Site),
            &three_sites(),
            &two_districts(),
        );
        assert_eq!(
            allocations(&plan),
            vec![("HN-BD-01", 320), ("HN-BD-02", 260), ("HN-CG-01", 140)]
        );
        assert_eq!(plan.held_back_doses, 0);

        // 725 doses is still 72 vials: the 5 loose doses are held back.
        let plan = make_plan(
            &request(725, 10, Level::Site),
            &three_sites(),
            &two_districts(),
        );
        assert_eq!(plan.allocated_doses, 720);
        assert_eq!(plan.held_back_doses, 5);
    }

    #[test]
    fn ample_shipment_rounds_needs_up_to_whole_vials_while_vials_last() {
        // Needs 95 and 33 (owed doses only). In vials of 10: floors 9 and 3 vials, remainders 5 and 3.
        let sites = [
            site("A", "BADINH", 0, 0, 0, 95),
            site("B", "BADINH", 0, 0, 0, 33),
        ];
        // 200 doses = 20 vials: both round up (10 + 4 vials), 60 doses held back.
        let plan = make_plan(&request(200, 10, Level::Site), &sites, &[]);
        assert_eq!(allocations(&plan), vec![("A", 100), ("B", 40)]);
        assert_eq!(plan.held_back_doses, 60);
        // 130 doses = 13 vials: 12 by flooring, the last to the larger remainder (A).
        let plan = make_plan(&request(130, 10, Level::Site), &sites, &[]);
        assert_eq!(allocations(&plan), vec![("A", 100), ("B", 30)]);
        assert_eq!(plan.held_back_doses, 0);
    }

    #[test]
    fn shipment_smaller_than_one_unit_allocates_nothing() {
        let plan = make_plan(
            &request(5, 10, Level::Site),
            &three_sites(),
            &two_districts(),
        );
        assert_eq!(plan.allocated_doses, 0);
        assert_eq!(plan.held_back_doses, 5);
        assert!(
            plan.notes
                .iter()
                .any(|note| note.contains("smaller than one unit"))
        );
    }

    #[test]
    fn district_level_sums_the_sites_then_applies_the_same_rule() {
        // Ba Đình: rate 150, stock 500, owed 200, room 1200 + 700 = 1900, registrations 10,000:
        // planned 200 + 1900 = 2100, need 1600. Cầu Giấy: planned 280, need 280.
        // 690 doses: L = 14 × (690 + 500) / 2380 = 7 days → 7 × 150 − 500 = 550 and 7 × 20 = 140.
        let plan = make_plan(
            &request(690, 1, Level::District),
            &three_sites(),
            &two_districts(),
        );
        assert_eq!(
            allocations(&plan),
            vec![("HN/BADINH", 550), ("HN/CAUGIAY", 140)]
        );
        let ba_dinh = &plan.lines[0];
        assert_eq!(ba_dinh.site_count, 2);
        assert_eq!(ba_dinh.daily_rate, 150.0);
        assert_eq!(ba_dinh.stock_on_hand, 500);
        assert_eq!(ba_dinh.owed_doses, 200);
        assert_eq!(ba_dinh.remaining_registrations, 10_000);
        assert_eq!(ba_dinh.planned_doses, 2100);
        assert_eq!(ba_dinh.need_doses, 1600);
        assert_days(ba_dinh.days_of_supply_before, 500.0 / 150.0);
        assert_days(ba_dinh.days_of_supply_after, 7.0);
    }

    #[test]
    fn district_stock_surplus_at_one_site_offsets_another_site() {
        // Site A holds 1,000 doses but needs 140 over the horizon; site B holds none and needs 140.
        // At site level B needs 140; at district level the district already holds enough.
        let sites = [
            site("A", "BADINH", 0, 70, 1000, 0),
            site("B", "BADINH", 0, 70, 0, 0),
        ];
        let districts = [district("BADINH", 10_000)];
        let by_site = make_plan(&request(500, 1, Level::Site), &sites, &districts);
        assert_eq!(allocations(&by_site), vec![("A", 0), ("B", 140)]);
        let by_district = make_plan(&request(500, 1, Level::District), &sites, &districts);
        assert_eq!(allocations(&by_district), vec![("HN/BADINH", 0)]);
        assert_eq!(by_district.held_back_doses, 500);
    }

    #[test]
    fn province_level_makes_one_line_per_province() {
        let mut sites = three_sites();
        sites.push(SiteFigures {
            province: "HCM".to_owned(),
            district: "Q1".to_owned(),
            ..site("HCM-Q1-01", "Q1", 0, 70, 0, 0)
        });
        let mut districts = two_districts();
        districts.push(DistrictFigures {
            province: "HCM".to_owned(),
            district: "Q1".to_owned(),
            remaining_registrations: 50,
        });
        // HCM: pace 140 but only 50 people left: planned 50. HN: need 1880 as before.
        let plan = make_plan(&request(10_000, 1, Level::Province), &sites, &districts);
        assert_eq!(allocations(&plan), vec![("HCM", 50), ("HN", 1880)]);
        assert_eq!(plan.lines[1].site_count, 3);
        assert_eq!(plan.lines[1].remaining_registrations, 20_000);
        assert_eq!(plan.held_back_doses, 10_000 - 1930);
    }

    #[test]
    fn owed_doses_at_a_site_with_no_recent_uptake_are_served() {
        // Cầu Giấy 2 gave no doses this week but owes 30 second doses: planned 30, need 30.
        let mut sites = three_sites();
        sites.push(site("HN-CG-02", "CAUGIAY", 0, 0, 0, 30));
        // Ample: it gets its 30; no rate, so no days of supply.
        let plan = make_plan(&request(5000, 1, Level::Site), &sites, &two_districts());
        let quiet = &plan.lines[3];
        assert_eq!(
            (quiet.area.as_str(), quiet.allocated_doses),
            ("HN-CG-02", 30)
        );
        assert_eq!(quiet.daily_rate, 0.0);
        assert_eq!(quiet.days_of_supply_before, None);
        assert_eq!(quiet.days_of_supply_after, None);
        // Scarce: 705 doses. L = 14 × (705 + 500) / (2380 + 30) = 7 days, i.e. half the horizon:
        // 300, 250, 140 as before and half of the 30 owed doses.
        let plan = make_plan(&request(705, 1, Level::Site), &sites, &two_districts());
        assert_eq!(
            allocations(&plan),
            vec![
                ("HN-BD-01", 300),
                ("HN-BD-02", 250),
                ("HN-CG-01", 140),
                ("HN-CG-02", 15)
            ]
        );
    }

    #[test]
    fn remaining_registrations_bound_new_starts() {
        // Ba Đình has 1,500 people left, spread by room for new starts 1200 : 700 → 947.4 and
        // 552.6; the loose person goes to the larger remainder: 947 and 553.
        // Ba Đình 1: 200 owed + min(1200, 947) = 1147 planned, need 1147 − 400 = 747.
        // Ba Đình 2: 0 owed + min(700, 553) = 553 planned, need 553 − 100 = 453.
        let districts = [district("BADINH", 1500), district("CAUGIAY", 10_000)];
        let plan = make_plan(&request(0, 1, Level::Site), &three_sites(), &districts);
        let figures: Vec<_> = plan
            .lines
            .iter()
            .map(|l| (l.remaining_registrations, l.planned_doses, l.need_doses))
            .collect();
        assert_eq!(
            figures,
            vec![(947, 1147, 747), (553, 553, 453), (10_000, 280, 280)]
        );
        // District level: 200 owed + min(1900, 1500) = 1700 planned = 1147 + 553.
        let plan = make_plan(&request(0, 1, Level::District), &three_sites(), &districts);
        assert_eq!(plan.lines[0].planned_doses, 1700);
    }

    #[test]
    fn people_go_to_the_sites_that_have_room_for_them() {
        // The audit's case: 1,000 people left in Ba Đình. Site A (capacity unknown) gave 700 doses
        // this week: room 700 × 14 / 7 = 1,400. Site B can give 3,000 a day but gave none of this
        // product: room 0. Weighting by capacity gave A 700 / (700 + 3000 × 7) of the people, 32;
        // by room A gets all 1,000 and B none, as the district plan says.
        let sites = [
            site("A", "BADINH", 0, 700, 0, 0),
            site("B", "BADINH", 3000, 0, 0, 0),
        ];
        let districts = [district("BADINH", 1000)];
        let by_site = make_plan(&request(0, 1, Level::Site), &sites, &districts);
        let figures: Vec<_> = by_site
            .lines
            .iter()
            .map(|l| (l.area.as_str(), l.remaining_registrations, l.planned_doses))
            .collect();
        assert_eq!(figures, vec![("A", 1000, 1000), ("B", 0, 0)]);
        let by_district = make_plan(&request(0, 1, Level::District), &sites, &districts);
        assert_eq!(by_district.lines[0].planned_doses, 1000);
        assert_eq!(by_district.need_doses, by_site.need_doses);

        // More people than room: each site is planned to its room (1,400 and, with B now giving
        // 70 a week, 140), the district to the same 1,540 out of 5,000.
        let sites = [
            site("A", "BADINH", 0, 700, 0, 0),
            site("B", "BADINH", 3000, 70, 0, 0),
        ];
        let districts = [district("BADINH", 5000)];
        let by_site = make_plan(&request(0, 1, Level::Site), &sites, &districts);
        let planned: Vec<u64> = by_site.lines.iter().map(|l| l.planned_doses).collect();
        assert_eq!(planned, vec![1400, 140]);
        let by_district = make_plan(&request(0, 1, Level::District), &sites, &districts);
        assert_eq!(by_district.lines[0].planned_doses, 1540);
    }

    #[test]
    fn province_level_caps_new_starts_district_by_district() {
        // Ba Đình's site has room for 1,400 new starts but nobody left to start; Cầu Giấy has 500
        // people left and a site with no uptake (room 0). Summing room and people over the
        // province first would plan min(1400, 500) = 500 new starts; per district it is
        // min(1400, 0) + min(0, 500) = 0, as the district plans say.
        let sites = [
            site("A", "BADINH", 0, 700, 0, 0),
            site("B", "CAUGIAY", 0, 0, 0, 0),
        ];
        let districts = [district("BADINH", 0), district("CAUGIAY", 500)];
        let by_province = make_plan(&request(0, 1, Level::Province), &sites, &districts);
        assert_eq!(by_province.lines[0].planned_doses, 0);
        assert_eq!(by_province.lines[0].remaining_registrations, 500);
        let by_district = make_plan(&request(0, 1, Level::District), &sites, &districts);
        let planned: u64 = by_district.lines.iter().map(|l| l.planned_doses).sum();
        assert_eq!(planned, 0);
    }

    #[test]
    fn lapsed_people_are_reported_and_not_planned_for() {
        // Ba Đình 1 owes 200 doses due in the horizon and has 40 people long overdue: the 40 are
        // shown, on the line and in a note, and planned for by no one.
        let mut sites = three_sites();
        sites[0].lapsed_doses = 40;
        let plan = make_plan(&request(0, 1, Level::Site), &sites, &two_districts());
        assert_eq!(plan.lines[0].lapsed_doses, 40);
        assert_eq!(plan.lines[0].planned_doses, 1400, "as without them");
        assert_eq!(plan.lapsed_doses, 40);
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("40 people are more than 90 days overdue")),
            "{:?}",
            plan.notes
        );
        let by_district = make_plan(&request(0, 1, Level::District), &sites, &two_districts());
        assert_eq!(by_district.lines[0].lapsed_doses, 40);
    }

    #[test]
    fn capacity_caps_the_rate_and_the_doses_planned() {
        // 700 doses a week is 100 a day, but the site can give 80: rate 80, at most 80 × 14 = 1120
        // doses in the horizon, even with 2,000 people owed.
        let sites = [site("A", "BADINH", 80, 700, 0, 2000)];
        let plan = make_plan(
            &request(5000, 1, Level::Site),
            &sites,
            &[district("BADINH", 500)],
        );
        let line = &plan.lines[0];
        assert_eq!(line.daily_rate, 80.0);
        assert_eq!(line.owed_doses, 2000);
        assert_eq!(line.planned_doses, 1120);
        assert_eq!(line.allocated_doses, 1120);
        assert_days(line.days_of_supply_after, 14.0);
    }

    #[test]
    fn notes_name_districts_missing_from_either_side() {
        let districts = [district("BADINH", 10_000), district("HOANKIEM", 700)];
        let plan = make_plan(&request(100, 1, Level::Site), &three_sites(), &districts);
        assert_eq!(plan.unplaced_registrations, 700);
        assert!(plan.notes.iter().any(|n| n.contains("HN/HOANKIEM")));
        // Cầu Giấy has no row: only its 50 owed doses are planned.
        assert!(plan.notes.iter().any(|n| n.contains("HN/CAUGIAY")));
        assert_eq!(plan.lines[2].planned_doses, 50);
    }

    /// Plans with bad input and checks both the error and that its message names what to fix.
    fn assert_refused(
        request: &PlanRequest,
        sites: &[SiteFigures],
        districts: &[DistrictFigures],
        expected: PlanError,
        words: &str,
    ) {
        let error = plan(request, sites, districts).expect_err("the input is bad");
        assert_eq!(error, expected);
        assert!(error.to_string().contains(words), "{error}");
    }

    #[test]
    fn bad_input_is_refused_with_a_message_saying_what_to_fix() {
        let sites = three_sites();
        let districts = two_districts();
        let ok = request(100, 1, Level::Site);
        let bad_request = |request: PlanRequest, expected: PlanError, words: &str| {
            assert_refused(&request, &sites, &districts, expected, words);
        };
        bad_request(
            PlanRequest {
                unit_doses: 0,
                ..ok.clone()
            },
            PlanError::ZeroUnit,
            "unit_doses",
        );
        bad_request(
            PlanRequest {
                window_days: 0,
                ..ok.clone()
            },
            PlanError::ZeroWindow,
            "window_days",
        );
        bad_request(
            PlanRequest {
                horizon_days: 0,
                ..ok.clone()
            },
            PlanError::ZeroHorizon,
            "horizon_days",
        );
        bad_request(
            PlanRequest {
                product: " ".to_owned(),
                ..ok.clone()
            },
            PlanError::NoProduct,
            "product",
        );

        let no_sites = PlanError::NoSites {
            product: "COMIRNATY".to_owned(),
        };
        assert_refused(&ok, &[], &districts, no_sites, "no sites");
        let repeated = [sites[0].clone(), sites[1].clone(), sites[0].clone()];
        let duplicate = PlanError::DuplicateSite {
            site_id: "HN-BD-01".to_owned(),
        };
        assert_refused(&ok, &repeated, &districts, duplicate, "twice");
        let twice = [district("BADINH", 1), district("BADINH", 2)];
        let duplicate = PlanError::DuplicateDistrict {
            province: "HN".to_owned(),
            district: "BADINH".to_owned(),
        };
        assert_refused(&ok, &sites, &twice, duplicate, "HN/BADINH");
        let blank = PlanError::BlankSiteField {
            site_id: String::new(),
            field: "site_id",
        };
        assert_refused(
            &ok,
            &[site("", "BADINH", 0, 0, 0, 0)],
            &districts,
            blank,
            "blank site_id",
        );
        let blank = PlanError::BlankSiteField {
            site_id: "A".to_owned(),
            field: "district",
        };
        assert_refused(
            &ok,
            &[site("A", "", 0, 0, 0, 0)],
            &districts,
            blank,
            "blank district",
        );
    }

    #[test]
    fn huge_figures_are_refused_rather_than_wrapped() {
        let sites = [
            site("A", "BADINH", 0, u64::MAX, 0, u64::MAX),
            site("B", "BADINH", 0, u64::MAX, 0, u64::MAX),
        ];
        let plan = plan(
            &request(u64::MAX, 1, Level::District),
            &sites,
            &[district("BADINH", u64::MAX)],
        );
        assert_eq!(plan, Err(PlanError::FiguresTooLarge));
    }

    #[test]
    fn level_parses_from_what_people_type() {
        assert_eq!("site".parse(), Ok(Level::Site));
        assert_eq!(" District ".parse(), Ok(Level::District));
        assert_eq!("PROVINCE".parse(), Ok(Level::Province));
        let error = "ward".parse::<Level>().expect_err("not a level");
        assert_eq!(
            error.to_string(),
            "unknown allocation level \"ward\": use site, district or province"
        );
        for level in [Level::Site, Level::District, Level::Province] {
            assert_eq!(level.to_string().parse(), Ok(level));
        }
    }

    #[test]
    fn plan_round_trips_through_json_with_lowercase_levels() {
        let plan = make_plan(
            &request(690, 10, Level::District),
            &three_sites(),
            &two_districts(),
        );
        let json = serde_json::to_string(&plan).expect("a plan serializes");
        assert!(json.contains(r#""level":"district""#), "{json}");
        let back: Plan = serde_json::from_str(&json).expect("a plan deserializes");
        assert_eq!(back, plan);
    }

    #[test]
    fn compare_fractions_is_exact_where_cross_multiplication_would_overflow() {
        let big = u128::MAX / 3;
        assert_eq!(
            compare_fractions(big, big + 1, big - 1, big),
            Ordering::Greater
        );
        assert_eq!(compare_fractions(2, 4, 1, 2), Ordering::Equal);
        assert_eq!(compare_fractions(1, 3, 1, 2), Ordering::Less);
        assert_eq!(compare_fractions(7, 2, 10, 3), Ordering::Greater);
    }

    // Properties over random campaigns: up to 8 sites across 2 provinces × 3 districts.

    fn arb_site() -> impl Strategy<Value = (u8, u8, u32, u64, u64, u64)> {
        (
            0u8..2,
            0u8..3,
            prop_oneof![Just(0u32), 1u32..150],
            0u64..1500,
            0u64..3000,
            0u64..400,
        )
    }

    fn arb_campaign() -> impl Strategy<Value = (PlanRequest, Vec<SiteFigures>, Vec<DistrictFigures>)>
    {
        let request = (
            0u64..15_000,
            prop_oneof![Just(1u32), 1u32..=20],
            1u32..=14,
            1u32..=28,
            prop_oneof![
                Just(Level::Site),
                Just(Level::District),
                Just(Level::Province)
            ],
        )
            .prop_map(
                |(shipment_doses, unit_doses, window_days, horizon_days, level)| PlanRequest {
                    product: "VAXZEVRIA".to_owned(),
                    shipment_doses,
                    unit_doses,
                    window_days,
                    horizon_days,
                    level,
                    owed_lapse_days: 90,
                },
            );
        let sites = prop::collection::vec(arb_site(), 1..8).prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(
                    |(index, (province, district, cap, given, stock, owed))| SiteFigures {
                        site_id: format!("S{index:02}"),
                        name: format!("site {index}"),
                        province: format!("P{province}"),
                        district: format!("D{district}"),
                        daily_capacity: cap,
                        doses_in_window: given,
                        stock_on_hand: stock,
                        owed_doses: owed,
                        lapsed_doses: owed / 3,
                        received_doses: stock,
                    },
                )
                .collect::<Vec<_>>()
        });
        let districts = prop::collection::vec(prop::option::of(0u64..5000), 6).prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .filter_map(|(index, people)| {
                    people.map(|remaining_registrations| DistrictFigures {
                        province: format!("P{}", index / 3),
                        district: format!("D{}", index % 3),
                        remaining_registrations,
                    })
                })
                .collect::<Vec<_>>()
        });
        (request, sites, districts)
    }

    proptest! {
        #[test]
        fn allocation_never_exceeds_the_shipment_and_respects_units_and_needs(
            (request, sites, districts) in arb_campaign()
        ) {
            let plan = plan(&request, &sites, &districts).expect("valid campaign");
            let unit = u64::from(request.unit_doses);
            let sum: u64 = plan.lines.iter().map(|l| l.allocated_doses).sum();
            prop_assert_eq!(sum, plan.allocated_doses);
            prop_assert!(plan.allocated_doses <= request.shipment_doses);
            prop_assert_eq!(plan.allocated_doses + plan.held_back_doses, request.shipment_doses);
            for line in &plan.lines {
                prop_assert_eq!(line.allocated_doses % unit, 0);
                prop_assert!(line.allocated_doses <= line.need_doses.div_ceil(unit) * unit);
                prop_assert_eq!(line.need_doses, line.planned_doses.saturating_sub(line.stock_on_hand));
            }
            let areas: Vec<&str> = plan.lines.iter().map(|l| l.area.as_str()).collect();
            prop_assert!(areas.windows(2).all(|pair| pair[0] < pair[1]), "{:?}", areas);
        }

        #[test]
        fn sites_districts_and_provinces_agree_on_what_each_area_needs(
            (request, sites, districts) in arb_campaign()
        ) {
            let at = |level| PlanRequest { level, ..request.clone() };
            let by_site = plan(&at(Level::Site), &sites, &districts).expect("valid campaign");
            let by_district = plan(&at(Level::District), &sites, &districts).expect("valid");
            let by_province = plan(&at(Level::Province), &sites, &districts).expect("valid");
            // Σ over the sites of each district, then over the districts of each province.
            let mut district_sums: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
            for line in &by_site.lines {
                let site = sites.iter().find(|s| s.site_id == line.area).expect("a site");
                let sum = district_sums
                    .entry(format!("{}/{}", site.province, site.district))
                    .or_default();
                sum.0 += line.planned_doses;
                sum.1 += line.stock_on_hand;
                sum.2 += line.remaining_registrations;
            }
            let mut province_sums: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for line in &by_district.lines {
                let (planned, stock, people) = district_sums[&line.area];
                prop_assert_eq!(line.planned_doses, planned, "{}", &line.area);
                prop_assert_eq!(line.need_doses, planned.saturating_sub(stock), "{}", &line.area);
                prop_assert_eq!(line.remaining_registrations, people, "{}", &line.area);
                let province = line.area.split('/').next().expect("P/D").to_owned();
                let sum = province_sums.entry(province).or_default();
                sum.0 += line.planned_doses;
                sum.1 += line.stock_on_hand;
            }
            for line in &by_province.lines {
                let (planned, stock) = province_sums[&line.area];
                prop_assert_eq!(line.planned_doses, planned, "{}", &line.area);
                prop_assert_eq!(line.need_doses, planned.saturating_sub(stock), "{}", &line.area);
            }
            // Where no site holds more than its own planned use, the needs add up exactly.
            if by_site.lines.iter().all(|l| l.stock_on_hand <= l.planned_doses) {
                prop_assert_eq!(by_site.need_doses, by_district.need_doses);
            }
        }

        #[test]
        fn same_figures_in_any_order_give_the_same_plan(
            (request, sites, districts, shuffled_sites, shuffled_districts) in arb_campaign()
                .prop_flat_map(|(request, sites, districts)| {
                    let shuffled_sites = Just(sites.clone()).prop_shuffle();
                    let shuffled_districts = Just(districts.clone()).prop_shuffle();
                    (Just(request), Just(sites), Just(districts), shuffled_sites, shuffled_districts)
                })
        ) {
            let first = plan(&request, &sites, &districts).expect("valid campaign");
            let again = plan(&request, &sites, &districts).expect("valid campaign");
            prop_assert_eq!(&first, &again);
            let reordered =
                plan(&request, &shuffled_sites, &shuffled_districts).expect("valid campaign");
            prop_assert_eq!(&first, &reordered);
        }

        #[test]
        fn a_short_shipment_in_single_doses_is_used_in_full_and_fairly(
            (request, sites, districts) in arb_campaign()
        ) {
            let request = PlanRequest { unit_doses: 1, ..request };
            let plan = plan(&request, &sites, &districts).expect("valid campaign");
            if plan.need_doses >= request.shipment_doses {
                prop_assert_eq!(plan.held_back_doses, 0);
                // Water-filling: no line that received doses ends up with a higher share of its
                // planned use covered than a line left short, beyond one dose of rounding each.
                for given in plan.lines.iter().filter(|l| l.allocated_doses > 0) {
                    for short in plan.lines.iter().filter(|l| l.allocated_doses < l.need_doses) {
                        let given_cover = u128::from(given.stock_on_hand + given.allocated_doses - 1)
                            * u128::from(short.planned_doses);
                        let short_cover = u128::from(short.stock_on_hand + short.allocated_doses + 1)
                            * u128::from(given.planned_doses);
                        prop_assert!(given_cover <= short_cover, "{:?} vs {:?}", given, short);
                    }
                }
            } else {
                for line in &plan.lines {
                    prop_assert_eq!(line.allocated_doses, line.need_doses);
                }
                prop_assert_eq!(plan.held_back_doses, request.shipment_doses - plan.need_doses);
            }
        }
    }
}
