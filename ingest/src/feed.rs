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
use store::{Dose, Lot, Product, ProductCode, Registration};
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

    /// Appends rows for a correction: every dose whose row changed, as earlier → corrected.
    pub fn corrected(
        &self,
        person_before: &Registration,
        person_after: &Registration,
        before: &[Dose],
        after: &[Dose],
    ) {
        let products = self.campaign.products();
        let at = OffsetDateTime::now_utc();
        let mut events = Vec::new();
        for new in after {
            let Some(old) = before.iter().find(|d| d.dose_id == new.dose_id) else {
                continue;
            };
            let (Some(old_site), Some(new_site)) = (
                self.campaign.site(&old.site_id),
                self.campaign.site(&new.site_id),
            ) else {
                continue;
            };
            let previous = DoseRow::new(
                old,
                person_before,
                &old_site,
                series_position(&products, before, old),
                old.recorded_at,
            );
            let corrected = DoseRow::new(
                new,
                person_after,
                &new_site,
                series_position(&products, after, new),
                at,
            );
            let unchanged = DoseRow {
                version: corrected.version,
                ..previous.clone()
            } == corrected;
            if !unchanged {
                events.push(Event::DoseCorrected {
                    previous: Box::new(previous),
                    corrected: Box::new(corrected),
                });
            }
        }
        self.append(events);
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
