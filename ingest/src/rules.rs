//! The vaccination rules: which dose is due, and whether a recorded dose may stand.
//!
//! Pure functions over a person's history and the catalogue; no I/O, no clock (callers pass
//! `now`), so the same rules run in the shard writer, at check-in and in tests.

use std::collections::HashMap;

use store::{Dose, Lot, Product, ProductCode};
use time::{Date, Duration, OffsetDateTime};

/// How far in the future a dose's `administered_at` may be: site tablets' clocks drift.
pub const CLOCK_SKEW: Duration = Duration::minutes(5);

/// Why a dose was refused. Each variant is a rule with a stable code (the 422 body's `error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no registration with person code {0}; register the person first")]
    UnknownPerson(String),
    #[error("no lot {lot} is known; check the lot number on the vial")]
    UnknownLot { lot: String },
    #[error("lot {lot} is not allocated to site {site}; record doses only from this site's stock")]
    LotNotAtSite { lot: String, site: String },
    #[error("lot {lot} expired on {expires}; do not use it")]
    LotExpired { lot: String, expires: Date },
    #[error(
        "lot {lot} has no doses left at this site; record the dose against the lot actually used"
    )]
    LotExhausted { lot: String },
    #[error("the product {0} is not in the catalogue")]
    UnknownProduct(String),
    #[error("dose {got} cannot be recorded yet: the next dose due is dose {expected}")]
    OutOfSequence { expected: u8, got: u8 },
    #[error("dose {0} is already recorded for this person (under another dose id)")]
    AlreadyRecorded(u8),
    #[error("the series is complete ({0} doses); no further dose is due")]
    SeriesComplete(u8),
    #[error("too early for dose {dose_number}: the minimum interval allows it from {earliest}")]
    TooEarly { dose_number: u8, earliest: Date },
    #[error("the series was started with {series}, which cannot be mixed with {got}")]
    ProductMismatch { series: String, got: String },
    #[error("administered_at is in the future; check the device clock")]
    AdministeredInFuture,
    #[error(
        "administered_at {day} is before the person's birth date {birth_date}; check the date on the record"
    )]
    AdministeredBeforeBirth { day: Date, birth_date: Date },
}

impl Refusal {
    /// The stable code sent as `error` (and `rule`) in the 422 body.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownPerson(_) => "unknown_person",
            Refusal::UnknownLot { .. } => "unknown_lot",
            Refusal::LotNotAtSite { .. } => "lot_not_at_site",
            Refusal::LotExpired { .. } => "lot_expired",
            Refusal::LotExhausted { .. } => "lot_exhausted",
            Refusal::UnknownProduct(_) => "unknown_product",
            Refusal::OutOfSequence { .. } => "dose_out_of_sequence",
            Refusal::AlreadyRecorded(_) => "dose_already_recorded",
            Refusal::SeriesComplete(_) => "series_complete",
            Refusal::TooEarly { .. } => "too_early",
            Refusal::ProductMismatch { .. } => "product_mismatch",
            Refusal::AdministeredInFuture => "administered_in_future",
            Refusal::AdministeredBeforeBirth { .. } => "administered_before_birth",
        }
    }
}

/// Checks that a lot may be used for a dose given on `day` (the lot is at the dose's site:
/// the caller looked it up by lot number and site).
///
/// # Errors
/// [`Refusal::LotExpired`] when the dose is given after the lot's expiry date.
pub fn check_lot(lot: &Lot, day: Date) -> Result<(), Refusal> {
    if day > lot.expires {
        return Err(Refusal::LotExpired {
            lot: lot.lot_number.to_string(),
            expires: lot.expires,
        });
    }
    Ok(())
}

/// Checks that a dose is not dated before the person was born: a typo in a paper ledger's year
/// (1921 for 2021) would otherwise stand in the record and in every analytics figure.
///
/// # Errors
/// [`Refusal::AdministeredBeforeBirth`].
pub fn check_birth(dose: &Dose, birth_date: Date) -> Result<(), Refusal> {
    let day = dose.administered_at.date();
    if day < birth_date {
        return Err(Refusal::AdministeredBeforeBirth { day, birth_date });
    }
    Ok(())
}

/// Checks a new dose against the person's earlier doses (ordered by dose number).
///
/// # Errors
/// The first rule the dose breaks: sequence, completed series, product mixing, minimum interval,
/// a future time.
pub fn check_sequence(
    dose: &Dose,
    history: &[Dose],
    products: &HashMap<ProductCode, Product>,
    now: OffsetDateTime,
) -> Result<(), Refusal> {
    if dose.administered_at > now + CLOCK_SKEW {
        return Err(Refusal::AdministeredInFuture);
    }
    let product = products
        .get(&dose.product)
        .ok_or_else(|| Refusal::UnknownProduct(dose.product.to_string()))?;
    let given = history.len() as u8;
    let Some(first) = history.first() else {
        return match dose.dose_number {
            1 => Ok(()),
            n => Err(Refusal::OutOfSequence {
                expected: 1,
                got: n,
            }),
        };
    };
    let series = products
        .get(&first.product)
        .ok_or_else(|| Refusal::UnknownProduct(first.product.to_string()))?;
    if given >= series.doses_in_series {
        return Err(Refusal::SeriesComplete(series.doses_in_series));
    }
    let expected = given + 1;
    if dose.dose_number < expected {
        return Err(Refusal::AlreadyRecorded(dose.dose_number));
    }
    if dose.dose_number > expected {
        return Err(Refusal::OutOfSequence {
            expected,
            got: dose.dose_number,
        });
    }
    if product.code != series.code && !(product.allows_mixing && series.allows_mixing) {
        return Err(Refusal::ProductMismatch {
            series: series.code.to_string(),
            got: product.code.to_string(),
        });
    }
    // `history` is not empty here, so `last` exists.
    if let Some(previous) = history.last() {
        let earliest = earliest_after(previous, products);
        if dose.administered_at.date() < earliest {
            return Err(Refusal::TooEarly {
                dose_number: expected,
                earliest,
            });
        }
    }
    Ok(())
}

/// The first day the dose after `previous` may be given: its day plus the minimum interval of
/// *its* product (the earlier dose's, when a series mixes products), as the catalogue says now;
/// 0 days for a product not in it. The day is the one in the time's own offset, as the site
/// recorded it (analytics count the same interval from UTC days: `analytics::OwedWindow`).
pub fn earliest_after(previous: &Dose, products: &HashMap<ProductCode, Product>) -> Date {
    let interval = products
        .get(&previous.product)
        .map_or(0, |p| p.min_interval_days);
    previous.administered_at.date() + Duration::days(i64::from(interval))
}

/// What a check-in shows the health worker.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NextDose {
    /// The dose number due next, or `None` when the series is complete.
    pub dose_number: Option<u8>,
    /// The product to use (the series product), or `None` for a first dose: any product.
    pub product: Option<ProductCode>,
    /// Products that may be used instead, when the series product allows mixing.
    pub mixable_with: Vec<ProductCode>,
    /// The first day the next dose may be given.
    pub earliest: Option<Date>,
    pub eligible_today: bool,
    /// Why the person is not eligible today.
    pub reason: Option<String>,
    pub series_complete: bool,
}

/// Works out the next dose from the history (ordered by dose number).
pub fn next_dose(
    history: &[Dose],
    products: &HashMap<ProductCode, Product>,
    today: Date,
) -> NextDose {
    let Some(first) = history.first() else {
        return NextDose {
            dose_number: Some(1),
            product: None,
            mixable_with: Vec::new(),
            earliest: Some(today),
            eligible_today: true,
            reason: None,
            series_complete: false,
        };
    };
    let Some(series) = products.get(&first.product) else {
        return NextDose {
            dose_number: None,
            product: Some(first.product.clone()),
            mixable_with: Vec::new(),
            earliest: None,
            eligible_today: false,
            reason: Some(format!(
                "the series product {} is not in the catalogue",
                first.product
            )),
            series_complete: false,
        };
    };
    let given = history.len() as u8;
    if given >= series.doses_in_series {
        return NextDose {
            dose_number: None,
            product: Some(series.code.clone()),
            mixable_with: Vec::new(),
            earliest: None,
            eligible_today: false,
            reason: Some(format!(
                "series complete: {given} of {} doses given",
                series.doses_in_series
            )),
            series_complete: true,
        };
    }
    let mut mixable_with: Vec<ProductCode> = if series.allows_mixing {
        products
            .values()
            .filter(|p| p.allows_mixing && p.code != series.code)
            .map(|p| p.code.clone())
            .collect()
    } else {
        Vec::new()
    };
    mixable_with.sort();
    let earliest = history
        .last()
        .map_or(today, |previous| earliest_after(previous, products));
    let eligible_today = today >= earliest;
    NextDose {
        dose_number: Some(given + 1),
        product: Some(series.code.clone()),
        mixable_with,
        earliest: Some(earliest),
        eligible_today,
        reason: (!eligible_today)
            .then(|| format!("too early: dose {} is due from {earliest}", given + 1)),
        series_complete: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::conformance::sample_dose;
    use store::{PersonCode, builtin_products};
    use time::macros::{date, datetime};

    fn catalogue() -> HashMap<ProductCode, Product> {
        builtin_products()
            .into_iter()
            .map(|p| (p.code.clone(), p))
            .collect()
    }

    fn person() -> PersonCode {
        PersonCode::new("P1").expect("valid")
    }

    fn dose(n: u8, product: &str, at: OffsetDateTime) -> Dose {
        let mut d = sample_dose(&person(), n);
        d.product = ProductCode::new(product).expect("valid");
        d.administered_at = at;
        d
    }

    const NOW: OffsetDateTime = datetime!(2026-11-21 10:00 UTC);

    #[test]
    fn first_dose_must_be_dose_one() {
        let p = catalogue();
        assert_eq!(
            check_sequence(&dose(1, "COMIRNATY", NOW), &[], &p, NOW),
            Ok(())
        );
        assert_eq!(
            check_sequence(&dose(2, "COMIRNATY", NOW), &[], &p, NOW),
            Err(Refusal::OutOfSequence {
                expected: 1,
                got: 2
            })
        );
    }

    #[test]
    fn minimum_interval_is_enforced_from_the_previous_dose() {
        let p = catalogue();
        let history = [dose(1, "COMIRNATY", datetime!(2026-11-01 09:00 UTC))];
        // Comirnaty: 21 days, so from 2026-11-22.
        assert_eq!(
            check_sequence(&dose(2, "COMIRNATY", NOW), &history, &p, NOW),
            Err(Refusal::TooEarly {
                dose_number: 2,
                earliest: date!(2026 - 11 - 22)
            })
        );
        let later = datetime!(2026-11-22 08:00 UTC);
        assert_eq!(
            check_sequence(&dose(2, "COMIRNATY", later), &history, &p, later),
            Ok(())
        );
    }

    #[test]
    fn mixing_only_between_products_that_allow_it() {
        let p = catalogue();
        let at = datetime!(2026-12-30 08:00 UTC);
        let az = [dose(1, "VAXZEVRIA", datetime!(2026-11-01 09:00 UTC))];
        assert_eq!(
            check_sequence(&dose(2, "COMIRNATY", at), &az, &p, at),
            Ok(())
        );
        let sinopharm = [dose(1, "BBIBP-CORV", datetime!(2026-11-01 09:00 UTC))];
        assert_eq!(
            check_sequence(&dose(2, "COMIRNATY", at), &sinopharm, &p, at),
            Err(Refusal::ProductMismatch {
                series: "BBIBP-CORV".into(),
                got: "COMIRNATY".into()
            })
        );
    }

    #[test]
    fn completed_series_and_repeated_dose_numbers_are_refused() {
        let p = catalogue();
        let at = datetime!(2027-01-30 08:00 UTC);
        let one = [dose(1, "COMIRNATY", datetime!(2026-11-01 09:00 UTC))];
        assert_eq!(
            check_sequence(&dose(1, "COMIRNATY", at), &one, &p, at),
            Err(Refusal::AlreadyRecorded(1))
        );
        let jcovden = [dose(1, "JCOVDEN", datetime!(2026-11-01 09:00 UTC))];
        assert_eq!(
            check_sequence(&dose(2, "JCOVDEN", at), &jcovden, &p, at),
            Err(Refusal::SeriesComplete(1))
        );
    }

    #[test]
    fn future_doses_are_refused_beyond_clock_skew() {
        let p = catalogue();
        let soon = NOW + Duration::minutes(4);
        assert_eq!(
            check_sequence(&dose(1, "COMIRNATY", soon), &[], &p, NOW),
            Ok(())
        );
        let later = NOW + Duration::minutes(6);
        assert_eq!(
            check_sequence(&dose(1, "COMIRNATY", later), &[], &p, NOW),
            Err(Refusal::AdministeredInFuture)
        );
    }

    #[test]
    fn expired_lots_are_refused() {
        let lot = Lot {
            lot_number: store::LotNumber::new("FK1").expect("valid"),
            site_id: store::SiteId::new("s1").expect("valid"),
            product: ProductCode::new("COMIRNATY").expect("valid"),
            expires: date!(2026 - 11 - 20),
            quantity: 10,
        };
        assert_eq!(check_lot(&lot, date!(2026 - 11 - 20)), Ok(()));
        assert!(matches!(
            check_lot(&lot, date!(2026 - 11 - 21)),
            Err(Refusal::LotExpired { .. })
        ));
    }

    #[test]
    fn next_dose_explains_eligibility() {
        let p = catalogue();
        let today = date!(2026 - 11 - 21);
        let fresh = next_dose(&[], &p, today);
        assert_eq!((fresh.dose_number, fresh.eligible_today), (Some(1), true));

        let history = [dose(1, "COMIRNATY", datetime!(2026-11-10 09:00 UTC))];
        let due = next_dose(&history, &p, today);
        assert_eq!(due.dose_number, Some(2));
        assert_eq!(due.earliest, Some(date!(2026 - 12 - 01)));
        assert!(!due.eligible_today);
        assert_eq!(
            due.reason.as_deref(),
            Some("too early: dose 2 is due from 2026-12-01")
        );
        assert!(
            due.mixable_with
                .contains(&ProductCode::new("SPIKEVAX").expect("valid"))
        );

        let done = [
            history[0].clone(),
            dose(2, "COMIRNATY", datetime!(2026-12-01 09:00 UTC)),
        ];
        let complete = next_dose(&done, &p, today);
        assert!(complete.series_complete && !complete.eligible_today);
    }

    #[test]
    fn a_dose_before_the_birth_date_is_refused() {
        let born = date!(1985 - 03 - 02);
        assert_eq!(
            check_birth(&dose(1, "COMIRNATY", datetime!(1958-06-01 08:00 UTC)), born),
            Err(Refusal::AdministeredBeforeBirth {
                day: date!(1958 - 06 - 01),
                birth_date: born,
            })
        );
        // The day of birth itself is allowed (hepatitis B at birth).
        assert_eq!(
            check_birth(&dose(1, "COMIRNATY", datetime!(1985-03-02 09:00 UTC)), born),
            Ok(())
        );
    }
}
