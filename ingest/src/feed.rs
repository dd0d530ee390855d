//! What the write path tells analytics: rows for the outbox, built where the facts are at hand.
//!
//! The shard writer calls [`AnalyticsFeed::committed`] after a group commit is durable and before
//! it answers, with the person's whole history (so each row can say where the previous dose of
//! the series was given). Retries of doses already stored are fed again: if the server died
//! between the store commit and the outbox append, the client was never answered, retries, and
//! the retry puts the row in the outbox — the backends ignore rows they already have.

use std::collections::HashMap;
use std::sync::Arc;

use analytics::row::{LotAllocation, SeriesPosition};
use analytics::{DoseRow, Event, Outbox, outbox::Appended};
use store::{Dose, Lot, PersonCode, Product, ProductCode, Registration, Store};
use time::OffsetDateTime;

use crate::campaign::Campaign;

/// The write path's side of the analytics outbox.
pub struct AnalyticsFeed {
    outbox: Arc<Outbox>,
    campaign: Arc<Campaign>,
}

impl std::fmt::Debug for AnalyticsFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalyticsFeed")
            .field("outbox", &self.outbox)
            .finish_non_exhaustive()
    }
}

/// A correction's analytics rows between "written down" and "settled" (see
/// [`AnalyticsFeed::correction_intended`]).
#[derive(Debug)]
pub struct CorrectionRows {
    /// The intent in the outbox; `None` when it could not be written.
    intent: Option<u64>,
    events: Vec<Event>,
}

impl CorrectionRows {
    /// Whether the correction changes no analytics row (a name or a phone number).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The person whose records the rows are about (`None` when there are no rows).
    pub fn person_code(&self) -> Option<&str> {
        self.events.iter().find_map(|e| match e {
            Event::DoseCorrected { corrected, .. } => Some(corrected.person_code.as_str()),
            _ => None,
        })
    }
}

/// What [`AnalyticsFeed::settle_correction`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Stored,
    NotStored,
}

/// A dose and what its row needs to know.
pub struct Committed<'a> {
    pub dose: &'a Dose,
    pub person: &'a Registration,
    /// The person's doses (may include this one and later ones).
    pub history: &'a [Dose],
}

impl AnalyticsFeed {
    pub fn new(outbox: Arc<Outbox>, campaign: Arc<Campaign>) -> Self {
        Self { outbox, campaign }
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Appends rows for committed (or re-confirmed) doses. Failures are logged, not returned:
    /// the doses are durable in the store already and analytics must not turn them into errors.
    pub fn committed<'a>(&self, doses: impl IntoIterator<Item = Committed<'a>>) {
        let products = self.campaign.products();
        let mut sites = HashMap::new();
        let events: Vec<Event> = doses
            .into_iter()
            .filter_map(|c| {
                let site = sites
                    .entry(c.dose.site_id.clone())
                    .or_insert_with(|| self.campaign.site(&c.dose.site_id))
                    .as_ref()?;
                // Version: the first commit time, so a replay is the very same row; a correction
                // (made later) carries its own, higher time.
                Some(Event::Dose(DoseRow::new(
                    c.dose,
                    c.person,
                    site,
                    series_position(&products, c.history, c.dose),
                    c.dose.recorded_at,
                )))
            })
            .collect();
        self.append(events);
    }

    /// Before the store commits a correction: writes its rows down as an intent (see
    /// `analytics::outbox`), so that a crash between the store commit and the queue cannot lose
    /// them. Settle the answer with [`correction_stored`](Self::correction_stored),
    /// [`correction_not_stored`](Self::correction_not_stored) or
    /// [`settle_correction`](Self::settle_correction).
    pub fn correction_intended(
        &self,
        person_before: &Registration,
        person_after: &Registration,
        before: &[Dose],
        after: &[Dose],
    ) -> CorrectionRows {
        let events = self.correction_events(person_before, person_after, before, after);
        let intent = self.outbox.intend(events.clone()).unwrap_or_else(|e| {
            // Not fatal: the rows are appended after the commit, as before intents existed.
            tracing::error!(rows = events.len(), error = %e, "could not write a correction's analytics rows down before the commit");
            None
        });
        CorrectionRows { intent, events }
    }

    /// The store holds the correction: its rows join the queue.
    pub fn correction_stored(&self, rows: CorrectionRows) {
        let Some(intent) = rows.intent else {
            self.append(rows.events);
            return;
        };
        match self.outbox.confirm(intent) {
            Ok(Appended::Dropped) => tracing::warn!(
                rows = rows.events.len(),
                "analytics outbox is full: a correction's rows were dropped (the store has it)"
            ),
            Ok(Appended::Stored | Appended::Empty) => {}
            Err(e) => tracing::error!(
                intent,
                error = %e,
                "could not queue a correction's analytics rows; they are settled at the next start"
            ),
        }
    }

    /// The store does not hold the correction: its rows are forgotten.
    pub fn correction_not_stored(&self, rows: CorrectionRows) {
        if let Some(intent) = rows.intent
            && let Err(e) = self.outbox.abandon(intent)
        {
            tracing::warn!(intent, error = %e, "could not forget a correction's analytics rows; they are settled at the next start");
        }
    }

    /// Settles rows by what the store now holds for their person: queued if the store's
    /// records are the corrected ones, forgotten if not. For a commit whose outcome is unknown
    /// (it failed, but may have been written) and for intents a crash left behind.
    pub fn settle_correction(
        &self,
        rows: CorrectionRows,
        person: Option<&Registration>,
        history: &[Dose],
    ) -> Settled {
        if person.is_some_and(|p| self.describe(&rows.events, p, history)) {
            self.correction_stored(rows);
            Settled::Stored
        } else {
            self.correction_not_stored(rows);
            Settled::NotStored
        }
    }

    /// Settles the corrections a crash left between "written down" and "settled", against the
    /// store. Call at start-up, before the write path starts. Returns how many were found
    /// stored and not stored.
    ///
    /// # Errors
    /// When the outbox or the store cannot be read; what was not settled stays for the next start.
    pub async fn settle_left_corrections(
        &self,
        store: &dyn Store,
    ) -> Result<(usize, usize), String> {
        let (mut stored, mut not_stored) = (0, 0);
        for (intent, events) in self.outbox.intents().map_err(|e| e.to_string())? {
            let rows = CorrectionRows {
                intent: Some(intent),
                events,
            };
            let Some(code) = rows.person_code().and_then(|c| PersonCode::new(c).ok()) else {
                self.correction_not_stored(rows);
                not_stored += 1;
                continue;
            };
            let person = store.person(&code).await.map_err(|e| e.to_string())?;
            let history = store.doses_of(&code).await.map_err(|e| e.to_string())?;
            match self.settle_correction(rows, person.as_ref(), &history) {
                Settled::Stored => stored += 1,
                Settled::NotStored => not_stored += 1,
            }
        }
        Ok((stored, not_stored))
    }

    /// Whether `person` and `history` (the store's records) are what the corrected rows say.
    fn describe(&self, events: &[Event], person: &Registration, history: &[Dose]) -> bool {
        let products = self.campaign.products();
        events.iter().all(|event| {
            let Event::DoseCorrected { corrected, .. } = event else {
                return true;
            };
            history
                .iter()
                .find(|d| d.dose_id.0 == corrected.dose_id)
                .and_then(|dose| self.row(&products, dose, person, history, dose.recorded_at))
                .is_some_and(|stored| same_row(&stored, corrected))
        })
    }

    /// The rows of a correction: every dose whose row changes, as earlier → corrected.
    fn correction_events(
        &self,
        person_before: &Registration,
        person_after: &Registration,
        before: &[Dose],
        after: &[Dose],
    ) -> Vec<Event> {
        let products = self.campaign.products();
        let at = OffsetDateTime::now_utc();
        let mut events = Vec::new();
        for new in after {
            let Some(old) = before.iter().find(|d| d.dose_id == new.dose_id) else {
                continue;
            };
            let (Some(previous), Some(corrected)) = (
                self.row(&products, old, person_before, before, old.recorded_at),
                self.row(&products, new, person_after, after, at),
            ) else {
                continue;
            };
            if !same_row(&previous, &corrected) {
                events.push(Event::DoseCorrected {
                    previous: Box::new(previous),
                    corrected: Box::new(corrected),
                });
            }
        }
        events
    }

    /// The row of `dose` of `person`, placed in the series `history`, at `version`; `None`
    /// when its site is not in the campaign.
    fn row(
        &self,
        products: &HashMap<ProductCode, Product>,
        dose: &Dose,
        person: &Registration,
        history: &[Dose],
        version: OffsetDateTime,
    ) -> Option<DoseRow> {
        let site = self.campaign.site(&dose.site_id)?;
        Some(DoseRow::new(
            dose,
            person,
            &site,
            series_position(products, history, dose),
            version,
        ))
    }

    /// Announces a lot's allocation at its site: a lot added or changed, or every lot at start-up.
    /// The backends record the first announcement of a lot as received and later changes as
    /// adjustments (see [`LotAllocation`]), so announcing a lot again is harmless.
    pub fn lot_allocated(&self, lot: &Lot) {
        self.lots_allocated(std::slice::from_ref(lot));
    }

    /// Announces several lots in one durable append (start-up announces the whole catalogue:
    /// one fsync, not one per lot).
    pub fn lots_allocated(&self, lots: &[Lot]) {
        let at = OffsetDateTime::now_utc();
        self.append(
            lots.iter()
                .map(|lot| Event::Lot(LotAllocation::of(lot, at)))
                .collect(),
        );
    }

    fn append(&self, events: Vec<Event>) {
        let rows = events.len();
        match self.outbox.append(events) {
            Ok(Appended::Stored | Appended::Empty) => {}
            Ok(Appended::Dropped) => {
                tracing::warn!(
                    rows,
                    "analytics outbox is full: rows dropped (doses are safe in the store)"
                );
            }
            Err(e) => {
                tracing::error!(rows, error = %e, "could not append to the analytics outbox (doses are safe in the store)");
            }
        }
    }
}

/// Whether two rows say the same of their dose, whatever their versions.
fn same_row(a: &DoseRow, b: &DoseRow) -> bool {
    DoseRow {
        version: b.version,
        ..a.clone()
    } == *b
}

/// Where `dose` stands in its person's series, by the rules of `crate::rules`: the series is
/// the product of its first dose (a mixed series counts by that product's length), and the
/// previous dose is the one it settles. When the next dose falls due is not decided here: the
/// analytics add the product's minimum interval when asked, from the catalogue as it is then
/// (`analytics::OwedWindow`), as `crate::rules::earliest_after` does for a check-in.
pub fn series_position<'a>(
    products: &HashMap<ProductCode, Product>,
    history: &'a [Dose],
    dose: &Dose,
) -> SeriesPosition<'a> {
    let first = history
        .iter()
        .filter(|d| d.dose_id != dose.dose_id)
        .chain(std::iter::once(dose))
        .min_by_key(|d| (d.dose_number, d.administered_at))
        .unwrap_or(dose);
    let series_doses = products
        .get(&first.product)
        .or_else(|| products.get(&dose.product))
        .map_or(1, |p| p.doses_in_series);
    SeriesPosition {
        series_doses,
        previous: previous_in_series(history, dose),
    }
}

/// The dose given just before `dose` in its person's series.
pub fn previous_in_series<'a>(history: &'a [Dose], dose: &Dose) -> Option<&'a Dose> {
    history
        .iter()
        .filter(|d| d.dose_id != dose.dose_id && d.dose_number < dose.dose_number)
        .max_by_key(|d| (d.dose_number, d.administered_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules;
    use store::conformance::sample_dose;
    use store::{PersonCode, builtin_products};
    use time::macros::{date, datetime};

    fn catalogue() -> HashMap<ProductCode, Product> {
        builtin_products()
            .into_iter()
            .map(|p| (p.code.clone(), p))
            .collect()
    }

    fn dose(n: u8, product: &str, at: OffsetDateTime) -> Dose {
        let mut d = sample_dose(&PersonCode::new("P1").expect("valid"), n);
        d.product = ProductCode::new(product).expect("valid");
        d.administered_at = at;
        d
    }

    /// A campaign with the sample site, an embedded store holding one person's dose 1, and a
    /// feed over an outbox in `dir`.
    async fn corrected_campaign(
        dir: &std::path::Path,
    ) -> (Arc<dyn Store>, AnalyticsFeed, Registration, Dose) {
        let site = store::Site {
            site_id: store::SiteId::new("hn-01").expect("valid"),
            name: "Bach Mai".into(),
            area: store::conformance::sample_registration(0).area,
            daily_capacity: 2000,
        };
        let campaign = Campaign::default();
        for product in builtin_products() {
            campaign.upsert_product(product);
        }
        campaign.upsert_site(site.clone());
        let store: Arc<dyn Store> = Arc::new(
            store::EmbeddedStore::create(dir.join("store"), &store::EmbeddedOptions::default())
                .expect("store"),
        );
        store.put_site(&site).await.expect("site");
        let person = store::conformance::sample_registration(1);
        store.register(&person).await.expect("register");
        let dose = sample_dose(&person.person_code, 1);
        let shard = store::shard_of(&person.person_code, store.shard_count());
        store
            .commit_doses(shard, std::slice::from_ref(&dose))
            .await
            .expect("dose");
        let outbox = Arc::new(Outbox::open(&dir.join("outbox"), 1 << 20).expect("outbox"));
        let feed = AnalyticsFeed::new(outbox, Arc::new(campaign));
        (store, feed, person, dose)
    }

    fn queued(feed: &AnalyticsFeed) -> Vec<Event> {
        let pending = feed.outbox.peek(100).expect("peek");
        pending.into_iter().flat_map(|p| p.entry.events).collect()
    }

    /// A crash between the store commit and the queue: at the next start the rows are queued
    /// if the store has the correction, forgotten if it does not.
    #[tokio::test]
    async fn corrections_a_crash_left_unsettled_are_settled_by_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, feed, person, dose) = corrected_campaign(dir.path()).await;
        let shard = store::shard_of(&person.person_code, store.shard_count());
        let mut earlier = dose.clone();
        earlier.administered_at -= time::Duration::days(2);

        // The process dies after the store commit, before the rows are queued.
        let rows = feed.correction_intended(
            &person,
            &person,
            std::slice::from_ref(&dose),
            std::slice::from_ref(&earlier),
        );
        assert_eq!(rows.person_code(), Some(person.person_code.as_str()));
        store.correct_dose(shard, &earlier).await.expect("correct");
        drop(rows);
        assert_eq!(
            queued(&feed),
            Vec::new(),
            "nothing ships before it is settled"
        );
        assert_eq!(
            feed.settle_left_corrections(store.as_ref()).await,
            Ok((1, 0))
        );
        let events = queued(&feed);
        let [
            Event::DoseCorrected {
                previous,
                corrected,
            },
        ] = events.as_slice()
        else {
            panic!("one correction queued: {events:?}");
        };
        assert_eq!(previous.administered_at, dose.administered_at);
        assert_eq!(corrected.administered_at, earlier.administered_at);

        // The process dies after writing the rows down, before the store commit.
        let mut later = earlier.clone();
        later.vaccinator = "nurse-8".into();
        later.administered_at += time::Duration::hours(1);
        let rows =
            feed.correction_intended(&person, &person, std::slice::from_ref(&earlier), &[later]);
        drop(rows);
        assert_eq!(
            feed.settle_left_corrections(store.as_ref()).await,
            Ok((0, 1))
        );
        assert_eq!(
            queued(&feed).len(),
            1,
            "the unwritten correction is not shipped"
        );
        assert_eq!(feed.outbox.intents().expect("intents"), Vec::new());
    }

    /// The analytics' due day — the owing dose's UTC day plus its product's interval, as
    /// `OwedWindow` adds it — is the rules' `earliest` for doses recorded in UTC.
    #[test]
    fn the_next_dose_falls_due_when_the_rules_allow_it() {
        let p = catalogue();
        let today = date!(2026 - 11 - 21);
        for history in [
            vec![dose(1, "COMIRNATY", datetime!(2026-11-10 23:30 UTC))],
            vec![dose(1, "VAXZEVRIA", datetime!(2026-11-01 09:00 UTC))],
            vec![
                dose(1, "ABDALA", datetime!(2026-10-01 09:00 UTC)),
                dose(2, "ABDALA", datetime!(2026-10-20 09:00 UTC)),
            ],
        ] {
            let last = history.last().expect("a dose");
            let interval = p[&last.product].min_interval_days;
            let window = analytics::OwedWindow::new(today, 1, 0, interval);
            let due = window.due_after(analytics::row::utc_day(last.administered_at));
            let rules = rules::next_dose(&history, &p, today);
            assert_eq!(Some(due), rules.earliest, "{history:?}");
        }
    }

    #[test]
    fn a_mixed_series_counts_by_its_first_product() {
        // A custom three-dose product that mixes, started first; then a two-dose product.
        let mut p = catalogue();
        let mut long = p[&ProductCode::new("COMIRNATY").expect("valid")].clone();
        long.code = ProductCode::new("LONGMIX").expect("valid");
        long.doses_in_series = 3;
        p.insert(long.code.clone(), long);
        let first = dose(1, "LONGMIX", datetime!(2026-10-01 09:00 UTC));
        let second = dose(2, "SPIKEVAX", datetime!(2026-10-25 09:00 UTC));
        let history = [first.clone(), second.clone()];
        let position = series_position(&p, &history, &second);
        assert_eq!(position.series_doses, 3, "the series is LONGMIX's");
        assert_eq!(position.previous.map(|d| d.dose_id), Some(first.dose_id));
        let position = series_position(&p, &history, &first);
        assert_eq!(position.previous, None);
    }

    #[test]
    fn the_last_dose_of_a_series_is_the_last() {
        let p = catalogue();
        let history = [
            dose(1, "COMIRNATY", datetime!(2026-10-01 09:00 UTC)),
            dose(2, "COMIRNATY", datetime!(2026-10-25 09:00 UTC)),
        ];
        let position = series_position(&p, &history, &history[1]);
        assert_eq!(position.series_doses, 2);
        assert_eq!(
            position.previous.map(|d| d.dose_id),
            Some(history[0].dose_id)
        );
        let single = dose(1, "JCOVDEN", datetime!(2026-10-01 09:00 UTC));
        assert_eq!(series_position(&p, &[], &single).series_doses, 1);
    }
}
