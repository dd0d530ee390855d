//! The campaign's records, in the words a health worker uses.
//!
//! Every type here is plain data: validation of *shape* (lengths, characters) happens in the
//! constructors and `validate` functions below; validation of *rules* (dose sequence, intervals,
//! stock) happens in `ingest::rules`, where the person's history is known.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

/// Why a value was refused. `field` names what to fix; `message` says how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    pub field: &'static str,
    pub message: String,
}

impl InvalidField {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

fn check_code(
    field: &'static str,
    value: &str,
    max: usize,
    extra: &[char],
) -> Result<(), InvalidField> {
    if value.is_empty() || value.len() > max {
        return Err(InvalidField::new(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
    {
        let allowed: String = extra.iter().collect();
        return Err(InvalidField::new(
            field,
            format!("may contain only ASCII letters, digits and {allowed:?}"),
        ));
    }
    Ok(())
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), InvalidField> {
    let trimmed = value.trim();
    if trimmed.is_empty() || value.chars().count() > max {
        return Err(InvalidField::new(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidField::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

macro_rules! code_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $extra:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            /// # Errors
            /// When the value is empty, too long, or has characters outside the allowed set.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidField> {
                let value = value.into();
                check_code($field, &value, $max, $extra)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidField;
            fn try_from(value: String) -> Result<Self, InvalidField> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

code_type!(
    /// A person's unique code: the national ID or health-insurance number when the citizen has one,
    /// otherwise one the system generates at registration.
    PersonCode, "person_code", 32, &['-']
);
code_type!(
    /// A vaccination site's id, chosen by the operator (`hn-bachmai-01`).
    SiteId, "site_id", 40, &['-', '_', '.']
);
code_type!(
    /// A vaccine product's code in the catalogue (`COMIRNATY`).
    ProductCode, "product", 32, &['-', '_']
);
code_type!(
    /// The manufacturer's lot number printed on the vial (`FK5618`).
    LotNumber, "lot", 40, &['-', '_', '.', '/']
);
code_type!(
    /// An administrative area code (province, district or commune), as in the national registry.
    AreaCode, "area", 12, &[]
);

impl PersonCode {
    /// A fresh code for a citizen who registers without a national ID: `VX` and 12 Crockford
    /// base32 characters (60 random bits), easy to read aloud and to type.
    pub fn generate(random: u64) -> Self {
        const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let mut code = String::with_capacity(14);
        code.push_str("VX");
        for i in (0..12).rev() {
            let index = ((random >> (i * 5)) & 31) as usize;
            code.push(char::from(ALPHABET[index]));
        }
        Self(code)
    }
}

/// Where a person lives or a site stands: province → district → commune.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Area {
    pub province: AreaCode,
    pub district: AreaCode,
    // No `skip_serializing_if`: stored records are postcard, which is not self-describing.
    #[serde(default)]
    pub commune: Option<AreaCode>,
}

impl Area {
    /// The district this area lies in (the level allocation and registration counts work at).
    pub fn district_key(&self) -> District {
        District {
            province: self.province.clone(),
            district: self.district.clone(),
        }
    }
}

/// A district, named with its province (district codes are only unique within a province).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct District {
    pub province: AreaCode,
    pub district: AreaCode,
}

impl std::fmt::Display for District {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.province, self.district)
    }
}

/// A citizen's pre-registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub person_code: PersonCode,
    pub name: String,
    pub birth_date: Date,
    pub phone: Option<String>,
    pub area: Area,
    /// National priority group, 1 (highest: health workers) to 10.
    pub priority_group: u8,
    #[serde(with = "time::serde::rfc3339")]
    pub registered_at: OffsetDateTime,
}

impl Registration {
    pub const MAX_NAME: usize = 120;

    /// Checks the fields a registration form can get wrong.
    ///
    /// # Errors
    /// The first field that is wrong.
    pub fn validate(&self, today: Date) -> Result<(), InvalidField> {
        check_text("name", &self.name, Self::MAX_NAME)?;
        if self.birth_date > today {
            return Err(InvalidField::new("birth_date", "is in the future"));
        }
        if self.birth_date.year() < 1900 {
            return Err(InvalidField::new("birth_date", "is before 1900"));
        }
        if let Some(phone) = &self.phone {
            let digits = phone.strip_prefix('+').unwrap_or(phone);
            if digits.len() < 6 || digits.len() > 15 || !digits.chars().all(|c| c.is_ascii_digit())
            {
                return Err(InvalidField::new(
                    "phone",
                    "must be 6 to 15 digits, optionally after '+'",
                ));
            }
        }
        if !(1..=10).contains(&self.priority_group) {
            return Err(InvalidField::new("priority_group", "must be from 1 to 10"));
        }
        Ok(())
    }

    /// True when two registrations say the same thing (the time of registration aside), so that
    /// a repeated registration is recognised as a retry rather than a conflict.
    pub fn same_person_as(&self, other: &Registration) -> bool {
        self.person_code == other.person_code
            && self.name == other.name
            && self.birth_date == other.birth_date
            && self.phone == other.phone
            && self.area == other.area
            && self.priority_group == other.priority_group
    }
}

/// A place where doses are given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub site_id: SiteId,
    pub name: String,
    pub area: Area,
    /// How many doses the site can give in a day (staff, cold chain, queue space).
    pub daily_capacity: u32,
}

impl Site {
    /// # Errors
    /// The first field that is wrong.
    pub fn validate(&self) -> Result<(), InvalidField> {
        check_text("name", &self.name, 120)?;
        if self.daily_capacity == 0 {
            return Err(InvalidField::new("daily_capacity", "must be at least 1"));
        }
        Ok(())
    }
}

/// A vaccine product in the catalogue and the rules of its series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub code: ProductCode,
    pub name: String,
    /// Doses in the primary series (1 for single-dose products).
    pub doses_in_series: u8,
    /// Minimum days between consecutive doses of the series.
    pub min_interval_days: u16,
    /// Whether a series started with another mixable product may continue with this one
    /// (heterologous schedules), and vice versa.
    pub allows_mixing: bool,
}

impl Product {
    /// # Errors
    /// The first field that is wrong.
    pub fn validate(&self) -> Result<(), InvalidField> {
        check_text("name", &self.name, 120)?;
        if !(1..=10).contains(&self.doses_in_series) {
            return Err(InvalidField::new("doses_in_series", "must be from 1 to 10"));
        }
        Ok(())
    }
}

/// The built-in product catalogue: the COVID-19 vaccines used in Viet Nam's campaign, with the
/// minimum intervals of the Ministry of Health's guidance, and two routine childhood vaccines.
/// Operators extend it with `vaxcamp product add`.
pub fn builtin_products() -> Vec<Product> {
    let p = |code: &str, name: &str, doses: u8, days: u16, mixing: bool| Product {
        code: ProductCode(code.to_owned()),
        name: name.to_owned(),
        doses_in_series: doses,
        min_interval_days: days,
        allows_mixing: mixing,
    };
    vec![
        p("COMIRNATY", "Pfizer-BioNTech Comirnaty (mRNA)", 2, 21, true),
        p("SPIKEVAX", "Moderna Spikevax (mRNA)", 2, 28, true),
        p("VAXZEVRIA", "AstraZeneca Vaxzevria (ChAdOx1)", 2, 28, true),
        p(
            "BBIBP-CORV",
            "Sinopharm BBIBP-CorV (inactivated)",
            2,
            21,
            false,
        ),
        p("SPUTNIK-V", "Gamaleya Sputnik V", 2, 21, false),
        p("ABDALA", "CIGB Abdala (protein subunit)", 3, 14, false),
        p("JCOVDEN", "Janssen Jcovden (Ad26)", 1, 0, false),
        p(
            "DTP-HEPB-HIB",
            "Pentavalent DTP-HepB-Hib (routine, infants)",
            3,
            28,
            false,
        ),
        p("MR", "Measles-rubella (routine)", 2, 28, false),
    ]
}

/// Stock of one manufacturer's lot allocated to one site. The pair (lot number, site) is the
/// key: the same lot is often split across many sites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lot {
    pub lot_number: LotNumber,
    pub site_id: SiteId,
    pub product: ProductCode,
    pub expires: Date,
    /// Doses allocated to the site from this lot (not vials).
    pub quantity: u64,
}

impl Lot {
    pub fn key(&self) -> LotKey {
        LotKey {
            lot_number: self.lot_number.clone(),
            site_id: self.site_id.clone(),
        }
    }
}

/// Identifies a lot at a site.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LotKey {
    pub lot_number: LotNumber,
    pub site_id: SiteId,
}

impl fmt::Display for LotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.lot_number, self.site_id)
    }
}

/// The client-supplied id of a dose. The site app makes it (a UUID) before the first attempt,
/// so that a retry of the same dose is recognised and never counted twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DoseId(pub uuid::Uuid);

impl fmt::Display for DoseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One administered dose, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dose {
    pub dose_id: DoseId,
    pub person_code: PersonCode,
    pub product: ProductCode,
    #[serde(rename = "lot")]
    pub lot_number: LotNumber,
    /// 1-based position in the series.
    pub dose_number: u8,
    pub site_id: SiteId,
    /// Who gave the dose (staff id or name), for follow-up of adverse events.
    pub vaccinator: String,
    #[serde(with = "time::serde::rfc3339")]
    pub administered_at: OffsetDateTime,
    /// When the server committed the record.
    #[serde(with = "time::serde::rfc3339")]
    pub recorded_at: OffsetDateTime,
}

impl Dose {
    pub const MAX_VACCINATOR: usize = 80;

    /// True when `other` describes the same dose event; `recorded_at` is the server's, not the
    /// client's, so it is left out. A retry with the same id must match on everything else.
    pub fn same_event_as(&self, other: &Dose) -> bool {
        self.dose_id == other.dose_id
            && self.person_code == other.person_code
            && self.product == other.product
            && self.lot_number == other.lot_number
            && self.dose_number == other.dose_number
            && self.site_id == other.site_id
            && self.vaccinator == other.vaccinator
            && self.administered_at == other.administered_at
    }

    pub fn lot_key(&self) -> LotKey {
        LotKey {
            lot_number: self.lot_number.clone(),
            site_id: self.site_id.clone(),
        }
    }

    /// # Errors
    /// When the vaccinator field is empty or too long.
    pub fn validate_shape(&self) -> Result<(), InvalidField> {
        check_text("vaccinator", &self.vaccinator, Self::MAX_VACCINATOR)?;
        if !(1..=10).contains(&self.dose_number) {
            return Err(InvalidField::new("dose_number", "must be from 1 to 10"));
        }
        Ok(())
    }
}

/// What a bearer token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A vaccination site: check in, record doses, print certificates, for its own site only.
    Site,
    /// A registration portal or call centre: create and read registrations.
    Registrar,
    /// The campaign's operators: everything, including set-up and corrections.
    Admin,
    /// Steering committee and dashboards: read-only statistics.
    Observer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Site => "site",
            Role::Registrar => "registrar",
            Role::Admin => "admin",
            Role::Observer => "observer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = InvalidField;
    fn from_str(s: &str) -> Result<Self, InvalidField> {
        match s {
            "site" => Ok(Role::Site),
            "registrar" => Ok(Role::Registrar),
            "admin" => Ok(Role::Admin),
            "observer" => Ok(Role::Observer),
            _ => Err(InvalidField::new(
                "role",
                "must be one of site, registrar, admin, observer",
            )),
        }
    }
}

/// A bearer token's record. Only the SHA-256 of the token is stored; the token itself is shown
/// once, when it is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub token_sha256: [u8; 32],
    pub role: Role,
    /// Set for site tokens: the site the holder records doses for.
    pub site_id: Option<SiteId>,
    pub label: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub revoked: bool,
}

/// A certificate that must no longer be accepted (corrected, issued in error, fraud).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub certificate_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    pub reason: String,
}

/// Who changed what, when and why: corrections and revocations leave one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The credential's label.
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub reason: String,
    /// Free-form details (old and new values, certificate ids).
    pub details: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_refuse_bad_characters_and_lengths() {
        assert!(PersonCode::new("001090012345").is_ok());
        assert!(PersonCode::new("").is_err());
        assert!(PersonCode::new("a b").is_err());
        assert!(PersonCode::new("x".repeat(33)).is_err());
        assert!(SiteId::new("hn-bachmai.01").is_ok());
        assert!(LotNumber::new("FK/5618").is_ok());
        assert!(AreaCode::new("01-").is_err());
    }

    #[test]
    fn generated_person_codes_are_valid_and_distinct() {
        let a = PersonCode::generate(1);
        let b = PersonCode::generate(2);
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 14);
        assert!(PersonCode::new(a.as_str()).is_ok());
    }

    #[test]
    fn builtin_catalogue_is_valid() {
        for product in builtin_products() {
            product.validate().expect("catalogue entry is valid");
            ProductCode::new(product.code.as_str()).expect("code is valid");
        }
    }

    #[test]
    fn deserializing_checks_codes() {
        let bad: Result<PersonCode, _> = serde_json::from_str("\"has space\"");
        assert!(bad.is_err());
    }
}
