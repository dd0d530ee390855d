//! What the write path tells analytics: rows for the outbox, built where the facts are at hand.
//!
//! The shard writer calls [`AnalyticsFeed::committed`] after a group commit is durable and before
//! it answers, with the person's whole history (so each row can say where the previous dose of
//! the series was given). Retries of doses already stored are fed again: if the server died
//! between the store commit and the outbox append, the client was never answered, retries, and
//! the retry puts the row in the outbox — the backends ignore rows they already have.

use std::collections::HashMap;
use std::sync::Arc;

use analytics::{DoseRow, Event, Outbox, StockMovement, outbox::Appended};
use store::{Dose, Lot, ProductCode, Registration};
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
                let series = series_length(&products, &c.dose.product);
                let previous = previous_in_series(c.history, c.dose);
                // Version: the first commit time, so a replay is the very same row; a correction
                // (made later) carries its own, higher time.
                Some(Event::Dose(DoseRow::new(
                    c.dose,
                    c.person,
                    site,
                    series,
                    previous,
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
                series_length(&products, &old.product),
                previous_in_series(before, old),
                old.recorded_at,
            );
            let corrected = DoseRow::new(
                new,
                person_after,
                &new_site,
                series_length(&products, &new.product),
                previous_in_series(after, new),
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

    /// Announces a lot received at a site.
    pub fn lot_received(&self, lot: &Lot) {
        self.lots_received(std::slice::from_ref(lot));
    }

    /// Announces lots received, in one durable append (start-up announces the whole catalogue:
    /// one fsync, not one per lot).
    pub fn lots_received(&self, lots: &[Lot]) {
        let at = OffsetDateTime::now_utc();
        self.append(
            lots.iter()
                .map(|lot| Event::Stock(StockMovement::received(lot, at)))
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

fn series_length(products: &HashMap<ProductCode, store::Product>, product: &ProductCode) -> u8 {
    products.get(product).map_or(1, |p| p.doses_in_series)
}

/// The dose given just before `dose` in its person's series.
pub fn previous_in_series<'a>(history: &'a [Dose], dose: &Dose) -> Option<&'a Dose> {
    history
        .iter()
        .filter(|d| d.dose_id != dose.dose_id && d.dose_number < dose.dose_number)
        .max_by_key(|d| (d.dose_number, d.administered_at))
}
