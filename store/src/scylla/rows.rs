//! Model records to and from CQL rows. Columns are typed (dates as `date`, times as `timestamp`,
//! counts as `int`/`bigint`) so that the tables can be read with `cqlsh` and by analytics jobs.
//!
//! CQL timestamps hold milliseconds; the write path truncates times to whole seconds before they
//! get here (`now_seconds`, the dose handler), so a stored record compares equal on retry.

use time::{Date, OffsetDateTime};

use crate::error::{Result, StoreError};
use crate::model::{
    Area, AreaCode, AuditRecord, Credential, District, Dose, DoseId, Lot, LotKey, LotNumber,
    PersonCode, Product, ProductCode, Registration, Revocation, Role, Site, SiteId,
};

pub(crate) fn corrupt(table: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: table.to_owned(),
        reason: reason.to_string(),
    }
}

pub(crate) fn to_i32(value: impl TryInto<i32>, what: &str) -> Result<i32> {
    value
        .try_into()
        .map_err(|_| StoreError::Engine(format!("{what} does not fit a CQL int")))
}

pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| StoreError::Engine(format!("{what} does not fit a CQL bigint")))
}

fn from_i32<T: TryFrom<i32>>(value: i32, table: &str, column: &str) -> Result<T> {
    T::try_from(value).map_err(|_| corrupt(table, format!("{column} = {value} is out of range")))
}

fn code<T>(
    parse: impl FnOnce(String) -> Result<T, crate::model::InvalidField>,
    value: String,
    table: &str,
) -> Result<T> {
    parse(value).map_err(|e| corrupt(table, e))
}

pub(crate) fn area(
    province: String,
    district: String,
    commune: Option<String>,
    table: &str,
) -> Result<Area> {
    Ok(Area {
        province: code(AreaCode::new, province, table)?,
        district: code(AreaCode::new, district, table)?,
        commune: commune.map(|c| code(AreaCode::new, c, table)).transpose()?,
    })
}

pub(crate) fn district(province: String, district: String, table: &str) -> Result<District> {
    Ok(District {
        province: code(AreaCode::new, province, table)?,
        district: code(AreaCode::new, district, table)?,
    })
}

pub(crate) fn lot_key(site: String, lot: String, table: &str) -> Result<LotKey> {
    Ok(LotKey {
        site_id: code(SiteId::new, site, table)?,
        lot_number: code(LotNumber::new, lot, table)?,
    })
}

/// `sites`: site_id, name, province, district, commune, daily_capacity.
pub(crate) type SiteRow = (String, String, String, String, Option<String>, i32);

pub(crate) fn site_values(site: &Site) -> Result<SiteRow> {
    Ok((
        site.site_id.to_string(),
        site.name.clone(),
        site.area.province.to_string(),
        site.area.district.to_string(),
        site.area.commune.as_ref().map(ToString::to_string),
        to_i32(site.daily_capacity, "daily capacity")?,
    ))
}

pub(crate) fn site_from(row: SiteRow) -> Result<Site> {
    let (site_id, name, province, district, commune, capacity) = row;
    Ok(Site {
        site_id: code(SiteId::new, site_id, "sites")?,
        name,
        area: area(province, district, commune, "sites")?,
        daily_capacity: from_i32(capacity, "sites", "daily_capacity")?,
    })
}

/// `products`: code, name, doses_in_series, min_interval_days, allows_mixing.
pub(crate) type ProductRow = (String, String, i32, i32, bool);

pub(crate) fn product_values(p: &Product) -> ProductRow {
    (
        p.code.to_string(),
        p.name.clone(),
        i32::from(p.doses_in_series),
        i32::from(p.min_interval_days),
        p.allows_mixing,
    )
}

pub(crate) fn product_from(row: ProductRow) -> Result<Product> {
    let (code_text, name, doses, interval, mixing) = row;
    Ok(Product {
        code: code(ProductCode::new, code_text, "products")?,
        name,
        doses_in_series: from_i32(doses, "products", "doses_in_series")?,
        min_interval_days: from_i32(interval, "products", "min_interval_days")?,
        allows_mixing: mixing,
    })
}

/// `lots`: site_id, lot_number, product, expires, quantity.
pub(crate) type LotRow = (String, String, String, Date, i64);

pub(crate) fn lot_values(lot: &Lot) -> Result<LotRow> {
    Ok((
        lot.site_id.to_string(),
        lot.lot_number.to_string(),
        lot.product.to_string(),
        lot.expires,
        to_i64(lot.quantity, "lot quantity")?,
    ))
}

pub(crate) fn lot_from(row: LotRow) -> Result<Lot> {
    let (site_id, lot_number, product, expires, quantity) = row;
    Ok(Lot {
        lot_number: code(LotNumber::new, lot_number, "lots")?,
        site_id: code(SiteId::new, site_id, "lots")?,
        product: code(ProductCode::new, product, "lots")?,
        expires,
        quantity: u64::try_from(quantity).map_err(|_| corrupt("lots", "negative quantity"))?,
    })
}

/// `credentials`: token_sha256, role, site_id, label, created_at, revoked.
pub(crate) type CredentialRow = (
    Vec<u8>,
    String,
    Option<String>,
    String,
    OffsetDateTime,
    bool,
);

pub(crate) fn credential_values(c: &Credential) -> CredentialRow {
    (
        c.token_sha256.to_vec(),
        c.role.as_str().to_owned(),
        c.site_id.as_ref().map(ToString::to_string),
        c.label.clone(),
        c.created_at,
        c.revoked,
    )
}

pub(crate) fn credential_from(row: CredentialRow) -> Result<Credential> {
    let (token, role, site_id, label, created_at, revoked) = row;
    Ok(Credential {
        token_sha256: token
            .try_into()
            .map_err(|_| corrupt("credentials", "token hash is not 32 bytes"))?,
        role: role
            .parse::<Role>()
            .map_err(|e| corrupt("credentials", e))?,
        site_id: site_id
            .map(|s| code(SiteId::new, s, "credentials"))
            .transpose()?,
        label,
        created_at,
        revoked,
    })
}

/// `revocations`: certificate_id, revoked_at, reason.
pub(crate) type RevocationRow = (String, OffsetDateTime, String);

pub(crate) fn revocation_from(row: RevocationRow) -> Revocation {
    let (certificate_id, revoked_at, reason) = row;
    Revocation {
        certificate_id,
        revoked_at,
        reason,
    }
}

/// `audit_log` (read): actor, action, subject, reason, details (JSON), at.
pub(crate) type AuditRow = (String, String, String, String, String, OffsetDateTime);

pub(crate) fn audit_from(row: AuditRow) -> Result<AuditRecord> {
    let (actor, action, subject, reason, details, at) = row;
    Ok(AuditRecord {
        at,
        actor,
        action,
        subject,
        reason,
        details: serde_json::from_str(&details).map_err(|e| corrupt("audit_log", e))?,
    })
}

/// The month partition of an audit record: `2026-11`.
pub(crate) fn audit_month(at: OffsetDateTime) -> String {
    let utc = at.to_offset(time::UtcOffset::UTC);
    format!("{:04}-{:02}", utc.year(), u8::from(utc.month()))
}

/// `people` and `people_by_bucket` (the shared columns): person_code, name, birth_date, phone,
/// province, district, commune, priority_group, registered_at.
pub(crate) type PersonRow = (
    String,
    String,
    Date,
    Option<String>,
    String,
    String,
    Option<String>,
    i32,
    OffsetDateTime,
);

pub(crate) fn person_values(r: &Registration) -> PersonRow {
    (
        r.person_code.to_string(),
        r.name.clone(),
        r.birth_date,
        r.phone.clone(),
        r.area.province.to_string(),
        r.area.district.to_string(),
        r.area.commune.as_ref().map(ToString::to_string),
        i32::from(r.priority_group),
        r.registered_at,
    )
}

pub(crate) fn person_from(row: PersonRow) -> Result<Registration> {
    let (person_code, name, birth_date, phone, province, district, commune, group, at) = row;
    Ok(Registration {
        person_code: code(PersonCode::new, person_code, "people")?,
        name,
        birth_date,
        phone,
        area: area(province, district, commune, "people")?,
        priority_group: from_i32(group, "people", "priority_group")?,
        registered_at: at,
    })
}

/// `doses_by_person`: person_code, dose_id, product, lot_number, dose_number, site_id,
/// vaccinator, administered_at, recorded_at.
pub(crate) type DoseRow = (
    String,
    uuid::Uuid,
    String,
    String,
    i32,
    String,
    String,
    OffsetDateTime,
    OffsetDateTime,
);

pub(crate) fn dose_values(d: &Dose) -> DoseRow {
    (
        d.person_code.to_string(),
        d.dose_id.0,
        d.product.to_string(),
        d.lot_number.to_string(),
        i32::from(d.dose_number),
        d.site_id.to_string(),
        d.vaccinator.clone(),
        d.administered_at,
        d.recorded_at,
    )
}

pub(crate) fn dose_from(row: DoseRow) -> Result<Dose> {
    let (person, id, product, lot, number, site, vaccinator, administered_at, recorded_at) = row;
    Ok(Dose {
        dose_id: DoseId(id),
        person_code: code(PersonCode::new, person, "doses_by_person")?,
        product: code(ProductCode::new, product, "doses_by_person")?,
        lot_number: code(LotNumber::new, lot, "doses_by_person")?,
        dose_number: from_i32(number, "doses_by_person", "dose_number")?,
        site_id: code(SiteId::new, site, "doses_by_person")?,
        vaccinator,
        administered_at,
        recorded_at,
    })
}

/// `doses_by_site_day`: site_id, day, administered_at, dose_id, person_code, product,
/// lot_number, dose_number, vaccinator, recorded_at.
pub(crate) type SiteDayRow = (
    String,
    Date,
    OffsetDateTime,
    uuid::Uuid,
    String,
    String,
    String,
    i32,
    String,
    OffsetDateTime,
);

/// The (UTC) day a dose counts for in `doses_by_site_day`.
pub(crate) fn dose_day(d: &Dose) -> Date {
    d.administered_at.to_offset(time::UtcOffset::UTC).date()
}

pub(crate) fn site_day_values(d: &Dose) -> SiteDayRow {
    (
        d.site_id.to_string(),
        dose_day(d),
        d.administered_at,
        d.dose_id.0,
        d.person_code.to_string(),
        d.product.to_string(),
        d.lot_number.to_string(),
        i32::from(d.dose_number),
        d.vaccinator.clone(),
        d.recorded_at,
    )
}

#[cfg(all(test, feature = "conformance"))]
mod tests {
    use super::*;
    use crate::conformance::{sample_dose, sample_registration};

    #[test]
    fn records_round_trip_through_rows() {
        let person = sample_registration(4);
        assert_eq!(person_from(person_values(&person)).expect("person"), person);
        let dose = sample_dose(&person.person_code, 1);
        assert_eq!(dose_from(dose_values(&dose)).expect("dose"), dose);
    }

    #[test]
    fn audit_months_are_utc() {
        let at = time::macros::datetime!(2026-12-01 01:00 +07:00);
        assert_eq!(audit_month(at), "2026-11");
    }
}
