//! What the analytics side is told: one row per committed dose, one announcement per lot.
//!
//! Rows are self-contained (they carry the site's and the person's area, the series length, and
//! where and on which day the previous dose was given) so that neither ClickHouse nor the
//! embedded rollups ever have to join back to the store. They carry only facts that never change
//! once a dose is recorded: an owed dose is kept under the *owing* dose's own UTC day and settled
//! under the *previous* dose's UTC day, and the backends add the product's minimum interval when
//! they are asked, from the catalogue as it is then (see [`crate::OwedWindow`]), so a product
//! whose interval is revised mid-campaign moves every owed dose's due day at once and a dose is
//! always settled where it was counted. Every dose row has a `version`: a replay of the same
//! version is a no-op everywhere, a higher version (a correction) replaces the earlier one.
//!
//! ## The outbox format
//! Events are stored in the outbox with postcard, which has no field names: a field added to a
//! row would make every entry written by the previous release unreadable. So [`Event`] is written
//! through a private wire enum whose first three variants are the previous release's format
//! ([`LegacyDoseRow`], and [`StockMovement`] announcements, read as [`LotAllocation`]s) and decode
//! forever; new events are written as the variants after them. A legacy second dose decodes
//! without its previous dose's day; the backends look it up among the doses they hold and the
//! batch being applied ([`lacking_previous_day`], [`fill_previous_days`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};
use store::{Dose, Lot, Registration, Site};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

/// One dose as the analytics side sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoseRow {
    pub dose_id: Uuid,
    pub person_code: String,
    pub product: String,
    pub lot_number: String,
    pub dose_number: u8,
    /// Doses in the person's primary series, as the vaccination rules count it: the series length
    /// of the product the series was *started* with (`ingest/src/rules.rs`), so a mixed series
    /// counts by its first product. Dose 1 of 2 leaves a dose owed, dose 2 of 2 does not.
    pub series_doses: u8,
    pub site_id: String,
    pub site_province: String,
    pub site_district: String,
    /// Where the person lives (registrations are counted there).
    pub home_province: String,
    pub home_district: String,
    /// Site and product of the dose before this one in the series; empty for a first dose. A
    /// dose given here settles what was owed there.
    pub previous_site: String,
    pub previous_product: String,
    /// The UTC day the dose before this one in the series was given: the day its owed dose is
    /// kept under, so this one takes it out of the same place. `None` for a first dose, and for
    /// a second dose from the previous release's outbox until a backend looks it up
    /// ([`fill_previous_days`]).
    pub previous_day: Option<Date>,
    pub administered_at: OffsetDateTime,
    /// When the dose was first committed; stable across corrections.
    pub recorded_at: OffsetDateTime,
    /// Nanoseconds since the epoch of the commit or correction that produced this version.
    pub version: u64,
}

/// Where a dose stands in its person's series, worked out by the write path from the history
/// and the catalogue (see `ingest/src/feed.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesPosition<'a> {
    /// Doses in the series, by the product it was started with.
    pub series_doses: u8,
    /// The dose given just before this one in the series.
    pub previous: Option<&'a Dose>,
}

impl DoseRow {
    /// The row for a dose just committed (or corrected: pass the correction time as `at`).
    pub fn new(
        dose: &Dose,
        person: &Registration,
        site: &Site,
        series: SeriesPosition<'_>,
        at: OffsetDateTime,
    ) -> Self {
        let previous = series.previous;
        Self {
            dose_id: dose.dose_id.0,
            person_code: dose.person_code.to_string(),
            product: dose.product.to_string(),
            lot_number: dose.lot_number.to_string(),
            dose_number: dose.dose_number,
            series_doses: series.series_doses,
            site_id: dose.site_id.to_string(),
            site_province: site.area.province.to_string(),
            site_district: site.area.district.to_string(),
            home_province: person.area.province.to_string(),
            home_district: person.area.district.to_string(),
            previous_site: previous.map(|d| d.site_id.to_string()).unwrap_or_default(),
            previous_product: previous.map(|d| d.product.to_string()).unwrap_or_default(),
            previous_day: previous.map(|d| utc_day(d.administered_at)),
            administered_at: dose.administered_at,
            recorded_at: dose.recorded_at,
            version: nanos(at),
        }
    }

    /// Whether the dose leaves the next one of its series owed.
    pub fn leaves_dose_owed(&self) -> bool {
        self.dose_number < self.series_doses
    }

    /// The day the owed dose this row leaves is kept under: the row's own UTC day (the next dose
    /// falls due the product's minimum interval later). `None` when it completes the series.
    pub fn owes_on(&self) -> Option<Date> {
        self.leaves_dose_owed()
            .then(|| utc_day(self.administered_at))
    }

    /// The owed dose this row settles: the product, site and day it is kept under (the previous
    /// dose's). `None` for a first dose, and for a legacy second dose whose previous dose the
    /// backend does not hold (nothing was counted as owed for it).
    pub fn settles(&self) -> Option<(&str, &str, Date)> {
        if self.previous_site.is_empty() {
            return None;
        }
        let day = self.previous_day?;
        Some((&self.previous_product, &self.previous_site, day))
    }

    /// A second dose from the previous release's outbox that still lacks its previous dose's day.
    pub fn lacks_previous_day(&self) -> bool {
        !self.previous_site.is_empty() && self.previous_day.is_none()
    }

    /// The key ClickHouse sorts (and de-duplicates) the doses table by.
    pub fn sort_key(&self) -> (&str, &str, &str, Uuid) {
        (
            &self.site_province,
            &self.site_district,
            &self.site_id,
            self.dose_id,
        )
    }
}

/// The UTC days of some people's doses, by dose number: where a legacy second dose's
/// `previous_day` is looked up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesDays(HashMap<String, BTreeMap<u8, Date>>);

impl SeriesDays {
    /// Records that `person`'s dose `dose_number` was given on `day` (replacing what was known).
    pub fn insert(&mut self, person: &str, dose_number: u8, day: Date) {
        self.0
            .entry(person.to_owned())
            .or_default()
            .insert(dose_number, day);
    }

    /// Records `row`'s dose.
    pub fn add(&mut self, row: &DoseRow) {
        self.insert(
            &row.person_code,
            row.dose_number,
            utc_day(row.administered_at),
        );
    }

    /// The day of the dose before `row` in its series: the person's highest dose number below
    /// the row's, as `ingest/src/feed.rs` finds the previous dose.
    pub fn previous_day(&self, row: &DoseRow) -> Option<Date> {
        self.0
            .get(&row.person_code)?
            .range(..row.dose_number)
            .next_back()
            .map(|(_, day)| *day)
    }
}

/// The people whose dose rows in `events` lack the previous dose's day: whose doses a backend
/// looks up before [`fill_previous_days`]. Empty unless the batch holds second doses from the
/// previous release's outbox.
pub fn lacking_previous_day(events: &[Event]) -> BTreeSet<&str> {
    dose_rows(events)
        .filter(|row| row.lacks_previous_day())
        .map(|row| row.person_code.as_str())
        .collect()
}

/// `events` with every legacy row's `previous_day` filled in from `known` (the doses the backend
/// holds for those people) and the batch's own doses, which are newer. A row whose previous
/// dose is in neither keeps `None` and settles nothing: no backend counted that dose as owed.
pub fn fill_previous_days(events: &[Event], mut known: SeriesDays) -> Vec<Event> {
    for row in dose_rows(events) {
        known.add(row);
    }
    let fill = |row: &DoseRow| {
        let mut row = row.clone();
        if row.lacks_previous_day() {
            row.previous_day = known.previous_day(&row);
        }
        row
    };
    events
        .iter()
        .map(|event| match event {
            Event::Dose(row) => Event::Dose(fill(row)),
            Event::DoseCorrected {
                previous,
                corrected,
            } => Event::DoseCorrected {
                previous: Box::new(fill(previous)),
                corrected: Box::new(fill(corrected)),
            },
            Event::Lot(lot) => Event::Lot(lot.clone()),
        })
        .collect()
}

/// The dose rows of `events`, in order (a correction's earlier row, then its corrected one).
fn dose_rows(events: &[Event]) -> impl Iterator<Item = &DoseRow> {
    events.iter().flat_map(|event| match event {
        Event::Dose(row) => vec![row],
        Event::DoseCorrected {
            previous,
            corrected,
        } => vec![previous.as_ref(), corrected.as_ref()],
        Event::Lot(_) => Vec::new(),
    })
}

/// A dose row as the previous release wrote it into the outbox (postcard, field by field): read,
/// never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyDoseRow {
    pub dose_id: Uuid,
    pub person_code: String,
    pub product: String,
    pub lot_number: String,
    pub dose_number: u8,
    pub series_doses: u8,
    pub site_id: String,
    pub site_province: String,
    pub site_district: String,
    pub home_province: String,
    pub home_district: String,
    pub previous_site: String,
    pub previous_product: String,
    pub administered_at: OffsetDateTime,
    pub recorded_at: OffsetDateTime,
    pub version: u64,
}

impl From<LegacyDoseRow> for DoseRow {
    fn from(row: LegacyDoseRow) -> Self {
        Self {
            dose_id: row.dose_id,
            person_code: row.person_code,
            product: row.product,
            lot_number: row.lot_number,
            dose_number: row.dose_number,
            series_doses: row.series_doses,
            site_id: row.site_id,
            site_province: row.site_province,
            site_district: row.site_district,
            home_province: row.home_province,
            home_district: row.home_district,
            previous_site: row.previous_site,
            previous_product: row.previous_product,
            previous_day: None,
            administered_at: row.administered_at,
            recorded_at: row.recorded_at,
            version: row.version,
        }
    }
}

/// A lot's allocation as the server knows it: announced when a lot is added or its quantity
/// changed through the API, and for every lot at start-up (a lot may have been added or changed
/// on a stopped server with `vaxcamp lot add`).
///
/// The backends turn announcements into [`StockMovement`]s: the first announcement of a lot is
/// the lot *received*; a later one with another quantity is an *adjustment* by the difference;
/// one with the quantity already recorded, or no later than the last one applied for the lot
/// (a replay), changes nothing. So the movements of a lot always add up to its allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotAllocation {
    pub site_id: String,
    pub product: String,
    pub lot_number: String,
    /// Doses allocated to the site from this lot, in total.
    pub quantity: u64,
    /// When the server announced it; orders the announcements of one lot.
    pub at: OffsetDateTime,
}

impl LotAllocation {
    /// The allocation of `lot` as of `at`.
    pub fn of(lot: &Lot, at: OffsetDateTime) -> Self {
        Self {
            site_id: lot.site_id.to_string(),
            product: lot.product.to_string(),
            lot_number: lot.lot_number.to_string(),
            quantity: lot.quantity,
            at,
        }
    }

    /// The lot's key: site, product, lot number.
    pub fn lot_key(&self) -> (&str, &str, &str) {
        (&self.site_id, &self.product, &self.lot_number)
    }
}

/// Vaccine arriving at a site outside of doses given: a lot received, or its allocation adjusted
/// (positive or negative). Doses given are counted from the dose rows. Kept by the backends,
/// derived from [`LotAllocation`] announcements; also the format of the previous release's stock
/// announcements in the outbox, which are read as announcements ([`StockMovement::as_allocation`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockMovement {
    /// Stable per real movement: a lot's receipt is one id however often the lot is announced;
    /// an adjustment's id names the lot and the announcement that made it.
    pub movement_id: Uuid,
    pub site_id: String,
    pub product: String,
    pub lot_number: String,
    /// Doses: the lot's quantity when received, the difference for an adjustment.
    pub quantity: i64,
    /// `received` or `adjusted`.
    pub reason: String,
    pub at: OffsetDateTime,
}

impl StockMovement {
    /// The first announcement of a lot: the lot received.
    pub fn received(lot: &LotAllocation) -> Self {
        Self {
            movement_id: movement_id(lot, "received", &[]),
            site_id: lot.site_id.clone(),
            product: lot.product.clone(),
            lot_number: lot.lot_number.clone(),
            quantity: i64::try_from(lot.quantity).unwrap_or(i64::MAX),
            reason: "received".into(),
            at: lot.at,
        }
    }

    /// A later announcement with another quantity: the allocation adjusted by `delta`.
    pub fn adjusted(lot: &LotAllocation, delta: i64) -> Self {
        Self {
            movement_id: movement_id(lot, "adjusted", &nanos(lot.at).to_be_bytes()),
            site_id: lot.site_id.clone(),
            product: lot.product.clone(),
            lot_number: lot.lot_number.clone(),
            quantity: delta,
            reason: "adjusted".into(),
            at: lot.at,
        }
    }

    /// The announcement an old-format stock row stood for: the lot's quantity at `at`.
    pub fn as_allocation(&self) -> LotAllocation {
        LotAllocation {
            site_id: self.site_id.clone(),
            product: self.product.clone(),
            lot_number: self.lot_number.clone(),
            quantity: u64::try_from(self.quantity).unwrap_or(0),
            at: self.at,
        }
    }
}

/// What the movements of one lot add up to, and the last announcement applied: what the next
/// announcement is compared with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotLedger {
    /// Σ quantity of the lot's movements.
    pub total: i64,
    /// `nanos(at)` of the last announcement applied.
    pub last_at: u64,
}

impl LotLedger {
    /// The movement `announcement` makes, if any, and the ledger after it.
    pub fn apply(
        ledger: Option<LotLedger>,
        announcement: &LotAllocation,
    ) -> (Option<StockMovement>, Option<LotLedger>) {
        let at = nanos(announcement.at);
        let quantity = i64::try_from(announcement.quantity).unwrap_or(i64::MAX);
        match ledger {
            None => (
                Some(StockMovement::received(announcement)),
                Some(LotLedger {
                    total: quantity,
                    last_at: at,
                }),
            ),
            Some(ledger) if at <= ledger.last_at => (None, None),
            Some(ledger) => {
                let delta = quantity.saturating_sub(ledger.total);
                let after = LotLedger {
                    total: quantity,
                    last_at: at,
                };
                (
                    (delta != 0).then(|| StockMovement::adjusted(announcement, delta)),
                    Some(after),
                )
            }
        }
    }
}

fn movement_id(lot: &LotAllocation, reason: &str, extra: &[u8]) -> Uuid {
    let mut hash = Sha256::new();
    for part in [
        lot.lot_number.as_str(),
        lot.site_id.as_str(),
        lot.product.as_str(),
        reason,
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.update(extra);
    let digest = hash.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(id).into_uuid()
}

/// One entry of the outbox.
// Dose rows are nearly every event: boxing them to shrink the rare lot announcements would
// cost an allocation per dose.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "WireEvent")]
pub enum Event {
    /// A dose committed for the first time (or replayed).
    Dose(DoseRow),
    /// A dose corrected: `corrected` replaces `previous` (same dose id, higher version).
    DoseCorrected {
        previous: Box<DoseRow>,
        corrected: Box<DoseRow>,
    },
    /// A lot's allocation announced (the previous release's stock rows decode as these).
    Lot(LotAllocation),
}

/// The outbox's encoding of [`Event`]: variants are numbered in declaration order, so the
/// first three are the previous release's and new ones only ever go at the end.
#[derive(Deserialize)]
enum WireEvent {
    Dose(LegacyDoseRow),
    DoseCorrected {
        previous: Box<LegacyDoseRow>,
        corrected: Box<LegacyDoseRow>,
    },
    Stock(StockMovement),
    DoseWithPreviousDay(DoseRow),
    DoseCorrectedWithPreviousDay {
        previous: Box<DoseRow>,
        corrected: Box<DoseRow>,
    },
    Lot(LotAllocation),
}

/// [`WireEvent`] borrowed, for writing without copying rows. Same variants in the same order;
/// the previous release's variants are never written.
#[derive(Serialize)]
#[allow(dead_code)]
enum WireEventRef<'a> {
    Dose(()),
    DoseCorrected(()),
    Stock(()),
    DoseWithPreviousDay(&'a DoseRow),
    DoseCorrectedWithPreviousDay {
        previous: &'a DoseRow,
        corrected: &'a DoseRow,
    },
    Lot(&'a LotAllocation),
}

impl From<WireEvent> for Event {
    fn from(wire: WireEvent) -> Self {
        match wire {
            WireEvent::Dose(row) => Event::Dose(row.into()),
            WireEvent::DoseCorrected {
                previous,
                corrected,
            } => Event::DoseCorrected {
                previous: Box::new((*previous).into()),
                corrected: Box::new((*corrected).into()),
            },
            WireEvent::Stock(movement) => Event::Lot(movement.as_allocation()),
            WireEvent::DoseWithPreviousDay(row) => Event::Dose(row),
            WireEvent::DoseCorrectedWithPreviousDay {
                previous,
                corrected,
            } => Event::DoseCorrected {
                previous,
                corrected,
            },
            WireEvent::Lot(lot) => Event::Lot(lot),
        }
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Event::Dose(row) => WireEventRef::DoseWithPreviousDay(row),
            Event::DoseCorrected {
                previous,
                corrected,
            } => WireEventRef::DoseCorrectedWithPreviousDay {
                previous,
                corrected,
            },
            Event::Lot(lot) => WireEventRef::Lot(lot),
        }
        .serialize(serializer)
    }
}

/// The UTC day of a time: analytics count in UTC days everywhere (ClickHouse stores UTC).
pub fn utc_day(at: OffsetDateTime) -> Date {
    at.to_offset(time::UtcOffset::UTC).date()
}

/// The instants a ClickHouse `DateTime` column can hold: seconds since 1970 as a `UInt32`.
/// Both backends refuse times outside it, so they keep giving the same answers.
const DATETIME_RANGE: std::ops::RangeInclusive<i64> = 0..=(u32::MAX as i64);

impl Event {
    /// Why the analytics schema cannot hold this event, if it cannot: a time before 1970 or
    /// after 2106. Such an event would fail every insert of its batch forever, so the shipper
    /// sets it aside instead (the dose itself is safe in the store; correcting it ships a new
    /// version). The API refuses a dose dated before the person's birth (and in the future), so
    /// what reaches here is a dose given before 1970 to someone born earlier: stored, but not
    /// counted in analytics, and alerted as set aside.
    pub fn unrepresentable(&self) -> Option<String> {
        let out_of_range = |what: &str, id: &dyn std::fmt::Display, at: OffsetDateTime| {
            (!DATETIME_RANGE.contains(&at.unix_timestamp()))
                .then(|| format!("{what} {id}: time {at} is outside 1970..2106"))
        };
        let dose = |row: &DoseRow| {
            out_of_range("dose", &row.dose_id, row.administered_at)
                .or_else(|| out_of_range("dose", &row.dose_id, row.recorded_at))
        };
        match self {
            Event::Dose(row) => dose(row),
            Event::DoseCorrected {
                previous,
                corrected,
            } => dose(previous).or_else(|| dose(corrected)),
            Event::Lot(lot) => out_of_range("lot", &lot.lot_number, lot.at),
        }
    }

    /// This event as the backends can take it, or why it cannot be shipped at all.
    ///
    /// A correction whose earlier version could not be represented (and so was never shipped)
    /// ships as the corrected row alone: there is nothing to retract.
    ///
    /// # Errors
    /// The event and the reason when it must be set aside.
    pub fn shippable(self) -> Result<Event, Box<(Event, String)>> {
        match self.unrepresentable() {
            None => Ok(self),
            Some(reason) => match self {
                Event::DoseCorrected {
                    previous,
                    corrected,
                } if Event::Dose((*corrected).clone())
                    .unrepresentable()
                    .is_none() =>
                {
                    tracing::warn!(dose_id = %previous.dose_id, "the corrected dose replaces a version analytics never held");
                    Ok(Event::Dose(*corrected))
                }
                event => Err(Box::new((event, reason))),
            },
        }
    }
}

pub(crate) fn nanos(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    fn legacy_row() -> LegacyDoseRow {
        LegacyDoseRow {
            dose_id: Uuid::from_u128(7),
            person_code: "P1".into(),
            product: "COMIRNATY".into(),
            lot_number: "FK1".into(),
            dose_number: 2,
            series_doses: 2,
            site_id: "hn-01".into(),
            site_province: "01".into(),
            site_district: "001".into(),
            home_province: "01".into(),
            home_district: "001".into(),
            previous_site: "hn-02".into(),
            previous_product: "COMIRNATY".into(),
            administered_at: datetime!(2026-11-20 09:30 UTC),
            recorded_at: datetime!(2026-11-20 09:30 UTC),
            version: 42,
        }
    }

    /// The previous release's `Event`, as it derived its encoding.
    #[derive(Serialize)]
    enum OldEvent {
        Dose(LegacyDoseRow),
        DoseCorrected {
            previous: Box<LegacyDoseRow>,
            corrected: Box<LegacyDoseRow>,
        },
        Stock(StockMovement),
    }

    #[test]
    fn outbox_entries_of_the_previous_release_still_decode() {
        let stock = StockMovement {
            movement_id: Uuid::from_u128(9),
            site_id: "hn-01".into(),
            product: "COMIRNATY".into(),
            lot_number: "FK1".into(),
            quantity: 1200,
            reason: "received".into(),
            at: datetime!(2026-11-01 00:00 UTC),
        };
        let old = vec![
            OldEvent::Dose(legacy_row()),
            OldEvent::DoseCorrected {
                previous: Box::new(legacy_row()),
                corrected: Box::new(legacy_row()),
            },
            OldEvent::Stock(stock.clone()),
        ];
        let bytes = postcard::to_allocvec(&old).expect("encode");
        let events: Vec<Event> = postcard::from_bytes(&bytes).expect("decode");
        let row = DoseRow::from(legacy_row());
        assert_eq!(row.previous_day, None);
        assert!(row.lacks_previous_day());
        assert_eq!(
            events,
            vec![
                Event::Dose(row.clone()),
                Event::DoseCorrected {
                    previous: Box::new(row.clone()),
                    corrected: Box::new(row),
                },
                Event::Lot(stock.as_allocation()),
            ]
        );
    }

    #[test]
    fn new_events_round_trip_with_the_previous_dose_day() {
        let mut row = DoseRow::from(legacy_row());
        row.previous_day = Some(date!(2026 - 10 - 30));
        let events = vec![
            Event::Dose(row.clone()),
            Event::DoseCorrected {
                previous: Box::new(row.clone()),
                corrected: Box::new(row),
            },
            Event::Lot(LotAllocation {
                site_id: "hn-01".into(),
                product: "COMIRNATY".into(),
                lot_number: "FK1".into(),
                quantity: 12_000,
                at: datetime!(2026-11-01 00:00 UTC),
            }),
        ];
        let bytes = postcard::to_allocvec(&events).expect("encode");
        let back: Vec<Event> = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, events);
    }

    #[test]
    fn legacy_second_doses_settle_under_the_previous_dose_day_found() {
        // P1's dose 2 (2026-11-20, legacy) follows dose 1 of 2026-10-29 23:30 UTC, which the
        // backend holds; a later dose 1 in the batch (a correction moving it to 2026-10-30)
        // wins over the stored one.
        let second = DoseRow::from(legacy_row());
        let mut stored = SeriesDays::default();
        stored.insert("P1", 1, date!(2026 - 10 - 29));
        let events = [Event::Dose(second.clone())];
        assert_eq!(
            lacking_previous_day(&events),
            BTreeSet::from(["P1"]),
            "who to look up"
        );
        let filled = fill_previous_days(&events, stored.clone());
        let Event::Dose(row) = &filled[0] else {
            panic!("{filled:?}")
        };
        assert_eq!(
            row.settles(),
            Some(("COMIRNATY", "hn-02", date!(2026 - 10 - 29)))
        );
        let mut first = second.clone();
        first.dose_id = Uuid::from_u128(6);
        first.dose_number = 1;
        first.previous_site.clear();
        first.previous_product.clear();
        first.administered_at = datetime!(2026-10-30 00:10 UTC);
        let batch = [Event::Dose(first), Event::Dose(second.clone())];
        let filled = fill_previous_days(&batch, stored);
        let Event::Dose(row) = &filled[1] else {
            panic!("{filled:?}")
        };
        assert_eq!(row.previous_day, Some(date!(2026 - 10 - 30)));
        // Nobody holds the previous dose: nothing settled (nothing was counted as owed).
        let alone = fill_previous_days(&events, SeriesDays::default());
        let Event::Dose(row) = &alone[0] else {
            panic!("{alone:?}")
        };
        assert_eq!(row.settles(), None);
    }

    fn announced(quantity: u64, day: u8) -> LotAllocation {
        LotAllocation {
            site_id: "hn-01".into(),
            product: "COMIRNATY".into(),
            lot_number: "FK1".into(),
            quantity,
            at: datetime!(2026-11-01 00:00 UTC) + time::Duration::days(i64::from(day)),
        }
    }

    #[test]
    fn a_lot_is_received_once_and_later_changes_are_adjustments() {
        let (received, ledger) = LotLedger::apply(None, &announced(1000, 0));
        let received = received.expect("received");
        assert_eq!(
            (received.reason.as_str(), received.quantity),
            ("received", 1000)
        );
        // The same lot announced again (a restart), unchanged: nothing.
        let (none, same) = LotLedger::apply(ledger, &announced(1000, 1));
        assert_eq!(none, None);
        // Raised to 1,500: an adjustment of +500, with an id of its own.
        let (adjusted, after) = LotLedger::apply(same, &announced(1500, 2));
        let adjusted = adjusted.expect("adjusted");
        assert_eq!(
            (adjusted.reason.as_str(), adjusted.quantity),
            ("adjusted", 500)
        );
        assert_ne!(adjusted.movement_id, received.movement_id);
        // A replay of an older announcement changes nothing.
        assert_eq!(LotLedger::apply(after, &announced(1000, 1)), (None, None));
        // Receipt ids do not depend on the quantity: the same lot is one receipt.
        let (again, _) = LotLedger::apply(None, &announced(1500, 3));
        assert_eq!(again.expect("received").movement_id, received.movement_id);
    }
}
