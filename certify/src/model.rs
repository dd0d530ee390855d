//! What a certificate or pass says, its validation rules, and its CBOR (CWT claims) mapping.
//!
//! # Certificate claims (`VC1:`)
//!
//! | CWT key | name | value |
//! | --- | --- | --- |
//! | 1 | iss | issuer, text |
//! | 4 | exp | expiry, integer unix seconds |
//! | 6 | iat | issued at, integer unix seconds |
//! | 7 | cti | certificate id, the UTF-8 bytes of [`VaccinationCertificate::certificate_id`] |
//! | -65537 | vaccination claim ([`CLAIM_VACCINATION`]) | map below |
//!
//! -65537 is the first value of the CWT registry's private-use range (below -65536, RFC 8392
//! §9.1), so it cannot collide with a registered claim or with HCERT's -260 (whose payload
//! schema differs from ours).
//!
//! Vaccination claim map (text keys, short like HCERT's):
//!
//! | key | field | value |
//! | --- | --- | --- |
//! | `v` | doses | array of dose maps, in the order given |
//! | `st` | status | `"partial"` (yellow) or `"complete"` (blue) |
//! | `dob` | holder birth date | `"YYYY-MM-DD"` |
//! | `nam` | holder name | text |
//!
//! Dose map:
//!
//! | key | field | value |
//! | --- | --- | --- |
//! | `co` | country | ISO 3166 code, 2–3 uppercase letters |
//! | `dn` | dose number | unsigned 1..=255 |
//! | `dt` | date of the dose | `"YYYY-MM-DD"` |
//! | `lo` | lot | text |
//! | `mp` | product code | text |
//! | `sd` | total doses in the series | unsigned 1..=255 |
//! | `si` | site id | text |
//!
//! # Pass claims (`RG1:`)
//!
//! `iss` (1), `sub` (2) = person code, `exp` (4, optional), `iat` (6). Nothing else.
//!
//! Encoding is deterministic (RFC 8949 §4.2.1 key order: shorter keys first, then bytewise),
//! so a signed text is reproducible. Decoding is strict: unknown, duplicate or missing keys,
//! wrong types, fractional times and malformed dates are refused, because a new layout gets a
//! new prefix (`VC2:`), not silent extensions.

use std::fmt;

use ciborium::value::Value;
use coset::CborSerializable;
use coset::cwt::{ClaimsSetBuilder, Timestamp};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// CWT claim key of the vaccination claim (first private-use CWT claim value).
pub const CLAIM_VACCINATION: i64 = -65537;

/// Longest certificate id or person code, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest free-text field (name, issuer, product, lot, site), in bytes.
pub const MAX_FIELD_LEN: usize = 200;
/// Most doses in one certificate.
pub const MAX_DOSES: usize = 20;

/// Where the series stands. Yellow certificate after a first dose, blue once complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeriesStatus {
    /// Started, not complete (yellow).
    Partial,
    /// Complete (blue).
    Complete,
}

impl SeriesStatus {
    /// The status the doses imply: complete once any dose has `dose_number >= total_doses`.
    pub fn for_doses(doses: &[CertifiedDose]) -> SeriesStatus {
        if doses.iter().any(|d| d.dose_number >= d.total_doses) {
            SeriesStatus::Complete
        } else {
            SeriesStatus::Partial
        }
    }

    /// The serde / CBOR spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SeriesStatus::Partial => "partial",
            SeriesStatus::Complete => "complete",
        }
    }

    /// The colour the certificate is shown in: `yellow` or `blue`.
    pub fn colour(self) -> &'static str {
        match self {
            SeriesStatus::Partial => "yellow",
            SeriesStatus::Complete => "blue",
        }
    }
}

impl fmt::Display for SeriesStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The person a certificate is for. Kept minimal: name and birth date only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Holder {
    /// Full name as printed.
    pub name: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
}

/// One administered dose.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CertifiedDose {
    /// Vaccine product code.
    pub product: String,
    /// Lot number.
    pub lot: String,
    /// Which dose this is (1-based).
    pub dose_number: u8,
    /// Doses in the series.
    pub total_doses: u8,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Vaccination site id.
    pub site: String,
    /// ISO 3166 country code (2–3 uppercase letters).
    pub country: String,
}

/// A dose certificate: the whole series so far, in one document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VaccinationCertificate {
    /// Unique id (CWT `cti`); the unit of revocation.
    pub certificate_id: String,
    /// Issuer (CWT `iss`).
    pub issuer: String,
    /// Unix seconds (CWT `iat`).
    pub issued_at: i64,
    /// Unix seconds (CWT `exp`); refused from this instant on.
    pub expires_at: i64,
    /// Who.
    pub holder: Holder,
    /// Every dose of the series so far.
    pub doses: Vec<CertifiedDose>,
    /// Must equal [`SeriesStatus::for_doses`] of `doses`.
    pub status: SeriesStatus,
}

/// A pre-registration pass: scanned at check-in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RegistrationPass {
    /// The registry's person code (CWT `sub`).
    pub person_code: String,
    /// Issuer (CWT `iss`).
    pub issuer: String,
    /// Unix seconds (CWT `iat`).
    pub issued_at: i64,
    /// Unix seconds (CWT `exp`), if the pass expires.
    pub expires_at: Option<i64>,
}

/// Content that breaks a rule (empty field, bad date, inconsistent status, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ContentError(pub String);

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ContentError> {
    if value.is_empty() {
        return Err(ContentError(format!("{field} is empty")));
    }
    if value.len() > max {
        return Err(ContentError(format!(
            "{field} is {} bytes, at most {max} allowed",
            value.len()
        )));
    }
    // Control characters have no place in a name or code and could rewrite a terminal that
    // prints a decoded (even unverified) certificate.
    if value.chars().any(char::is_control) {
        return Err(ContentError(format!(
            "{field} contains a control character"
        )));
    }
    Ok(())
}

/// Check a `YYYY-MM-DD` calendar date (years 0001–9999, real month lengths, leap years).
pub fn check_date(field: &str, value: &str) -> Result<(), ContentError> {
    let bad = || ContentError(format!("{field} {value:?} is not a YYYY-MM-DD date"));
    let b = value.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<u32, ContentError> {
        b[range]
            .iter()
            .try_fold(0u32, |acc, &c| {
                c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
            })
            .ok_or_else(bad)
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if year == 0 || day == 0 || day > days {
        return Err(bad());
    }
    Ok(())
}

fn check_country(value: &str) -> Result<(), ContentError> {
    if (2..=3).contains(&value.len()) && value.bytes().all(|c| c.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(ContentError(format!(
            "dose country {value:?} is not a 2–3 letter uppercase ISO 3166 code"
        )))
    }
}

impl CertifiedDose {
    /// Check field shapes and `1 <= dose_number`, `1 <= total_doses`. A dose number above the
    /// total is allowed (booster recorded against a completed series).
    pub fn validate(&self) -> Result<(), ContentError> {
        check_text("dose product", &self.product, MAX_FIELD_LEN)?;
        check_text("dose lot", &self.lot, MAX_FIELD_LEN)?;
        check_text("dose site", &self.site, MAX_FIELD_LEN)?;
        check_date("dose date", &self.date)?;
        check_country(&self.country)?;
        if self.dose_number == 0 {
            return Err(ContentError("dose number is 0 (doses count from 1)".into()));
        }
        if self.total_doses == 0 {
            return Err(ContentError("total doses is 0".into()));
        }
        Ok(())
    }
}

impl VaccinationCertificate {
    /// Check every field, that there is at least one dose, that `expires_at > issued_at` and
    /// that `status` matches the doses (a blue certificate needs a completing dose).
    pub fn validate(&self) -> Result<(), ContentError> {
        check_text("certificate id", &self.certificate_id, MAX_ID_LEN)?;
        check_text("issuer", &self.issuer, MAX_FIELD_LEN)?;
        check_text("holder name", &self.holder.name, MAX_FIELD_LEN)?;
        check_date("holder birth date", &self.holder.birth_date)?;
        if self.doses.is_empty() {
            return Err(ContentError("a certificate needs at least one dose".into()));
        }
        if self.doses.len() > MAX_DOSES {
            return Err(ContentError(format!(
                "{} doses, at most {MAX_DOSES} allowed",
                self.doses.len()
            )));
        }
        for dose in &self.doses {
            dose.validate()?;
        }
        if self.expires_at <= self.issued_at {
            return Err(ContentError(format!(
                "expires_at {} is not after issued_at {}",
                self.expires_at, self.issued_at
            )));
        }
        let implied = SeriesStatus::for_doses(&self.doses);
        if self.status != implied {
            return Err(ContentError(format!(
                "status is {} but the doses make it {implied}",
                self.status
            )));
        }
        Ok(())
    }
}

impl RegistrationPass {
    /// Check the person code and issuer, and `expires_at > issued_at` when present.
    pub fn validate(&self) -> Result<(), ContentError> {
        check_text("person code", &self.person_code, MAX_ID_LEN)?;
        check_text("issuer", &self.issuer, MAX_FIELD_LEN)?;
        if let Some(exp) = self.expires_at
            && exp <= self.issued_at
        {
            return Err(ContentError(format!(
                "expires_at {exp} is not after issued_at {}",
                self.issued_at
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn key(s: &'static str) -> Value {
    Value::Text(s.to_owned())
}

fn dose_value(d: &CertifiedDose) -> Value {
    // Keys in deterministic order (all two bytes long, so bytewise).
    Value::Map(vec![
        (key("co"), text(&d.country)),
        (key("dn"), Value::Integer(d.dose_number.into())),
        (key("dt"), text(&d.date)),
        (key("lo"), text(&d.lot)),
        (key("mp"), text(&d.product)),
        (key("sd"), Value::Integer(d.total_doses.into())),
        (key("si"), text(&d.site)),
    ])
}

/// CWT claims of a certificate, serialized. The caller has validated `cert`.
pub(crate) fn certificate_payload(
    cert: &VaccinationCertificate,
) -> Result<Vec<u8>, coset::CoseError> {
    let vaccination = Value::Map(vec![
        (
            key("v"),
            Value::Array(cert.doses.iter().map(dose_value).collect()),
        ),
        (key("st"), key(cert.status.as_str())),
        (key("dob"), text(&cert.holder.birth_date)),
        (key("nam"), text(&cert.holder.name)),
    ]);
    ClaimsSetBuilder::new()
        .issuer(cert.issuer.clone())
        .expiration_time(Timestamp::WholeSeconds(cert.expires_at))
        .issued_at(Timestamp::WholeSeconds(cert.issued_at))
        .cwt_id(cert.certificate_id.as_bytes().to_vec())
        .private_claim(CLAIM_VACCINATION, vaccination)
        .build()
        .to_vec()
}

/// CWT claims of a pass, serialized. The caller has validated `pass`.
pub(crate) fn registration_payload(pass: &RegistrationPass) -> Result<Vec<u8>, coset::CoseError> {
    let mut builder = ClaimsSetBuilder::new()
        .issuer(pass.issuer.clone())
        .subject(pass.person_code.clone());
    if let Some(exp) = pass.expires_at {
        builder = builder.expiration_time(Timestamp::WholeSeconds(exp));
    }
    builder
        .issued_at(Timestamp::WholeSeconds(pass.issued_at))
        .build()
        .to_vec()
}

// ---------------------------------------------------------------------------------------------
// Decoding. Straight from CBOR into our types with serde visitors (no intermediate `Value`
// tree: half the cost), accepting maps only and refusing unknown, duplicate or missing keys.
// Errors are plain messages; the verifier wraps them as `bad_claims`.

/// The CWT claims map, keys as integers.
#[derive(Default)]
struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    exp: Option<i64>,
    iat: Option<i64>,
    cti: Option<Vec<u8>>,
    vaccination: Option<RawVaccination>,
}

struct RawVaccination {
    doses: Vec<CertifiedDose>,
    status: SeriesStatus,
    birth_date: String,
    name: String,
}

fn set<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(E::custom(format_args!("{name} appears twice")));
    }
    Ok(())
}

fn need<T, E: de::Error>(slot: Option<T>, name: &str) -> Result<T, E> {
    slot.ok_or_else(|| E::custom(format_args!("{name} is missing")))
}

/// A CBOR byte string.
struct Bytes(Vec<u8>);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Map key lookup against a fixed list, without allocating the key.
struct KeyIn(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeyIn {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIn {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a text key, one of {:?}", self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
        self.0
            .iter()
            .position(|k| *k == v)
            .ok_or_else(|| E::custom(format_args!("unknown key {v:?}")))
    }
}

impl<'de> Deserialize<'de> for RawClaims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawClaims;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CWT claims map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawClaims, A::Error> {
                let mut c = RawClaims::default();
                while let Some(key) = map.next_key::<i64>()? {
                    match key {
                        1 => set(&mut c.iss, map.next_value()?, "claim iss (1)")?,
                        2 => set(&mut c.sub, map.next_value()?, "claim sub (2)")?,
                        4 => set(&mut c.exp, map.next_value()?, "claim exp (4)")?,
                        6 => set(&mut c.iat, map.next_value()?, "claim iat (6)")?,
                        7 => set(&mut c.cti, map.next_value::<Bytes>()?.0, "claim cti (7)")?,
                        CLAIM_VACCINATION => {
                            set(&mut c.vaccination, map.next_value()?, "vaccination claim")?
                        }
                        other => {
                            return Err(de::Error::custom(format_args!(
                                "unexpected claim {other}"
                            )));
                        }
                    }
                }
                Ok(c)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for RawVaccination {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawVaccination;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the vaccination claim map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawVaccination, A::Error> {
                let (mut v, mut st, mut dob, mut nam) = (None, None, None, None);
                while let Some(i) = map.next_key_seed(KeyIn(&["v", "st", "dob", "nam"]))? {
                    match i {
                        0 => set(&mut v, map.next_value::<Doses>()?.0, "\"v\"")?,
                        1 => set(&mut st, map.next_value::<String>()?, "\"st\"")?,
                        2 => set(&mut dob, map.next_value::<String>()?, "\"dob\"")?,
                        _ => set(&mut nam, map.next_value::<String>()?, "\"nam\"")?,
                    }
                }
                let status = match need::<String, A::Error>(st, "\"st\"")?.as_str() {
                    "partial" => SeriesStatus::Partial,
                    "complete" => SeriesStatus::Complete,
                    other => {
                        return Err(de::Error::custom(format_args!(
                            "status {other:?} is neither partial nor complete"
                        )));
                    }
                };
                Ok(RawVaccination {
                    doses: need(v, "\"v\"")?,
                    status,
                    birth_date: need(dob, "\"dob\"")?,
                    name: need(nam, "\"nam\"")?,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// The dose array, refusing more than [`MAX_DOSES`] entries before decoding them.
struct Doses(Vec<CertifiedDose>);

impl<'de> Deserialize<'de> for Doses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Doses;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of dose maps")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Doses, A::Error> {
                let mut doses = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_DOSES));
                while let Some(dose) = seq.next_element::<DoseMap>()? {
                    if doses.len() == MAX_DOSES {
                        return Err(de::Error::custom(format_args!(
                            "more than {MAX_DOSES} doses"
                        )));
                    }
                    doses.push(dose.0);
                }
                Ok(Doses(doses))
            }
        }
        d.deserialize_seq(V)
    }
}

struct DoseMap(CertifiedDose);

impl<'de> Deserialize<'de> for DoseMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DoseMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a dose map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DoseMap, A::Error> {
                const KEYS: &[&str] = &["co", "dn", "dt", "lo", "mp", "sd", "si"];
                let (mut co, mut dn, mut dt, mut lo) = (None, None, None, None);
                let (mut mp, mut sd, mut si) = (None, None, None);
                while let Some(i) = map.next_key_seed(KeyIn(KEYS))? {
                    match i {
                        0 => set(&mut co, map.next_value::<String>()?, "dose \"co\"")?,
                        1 => set(&mut dn, map.next_value::<u8>()?, "dose \"dn\"")?,
                        2 => set(&mut dt, map.next_value::<String>()?, "dose \"dt\"")?,
                        3 => set(&mut lo, map.next_value::<String>()?, "dose \"lo\"")?,
                        4 => set(&mut mp, map.next_value::<String>()?, "dose \"mp\"")?,
                        5 => set(&mut sd, map.next_value::<u8>()?, "dose \"sd\"")?,
                        _ => set(&mut si, map.next_value::<String>()?, "dose \"si\"")?,
                    }
                }
                Ok(DoseMap(CertifiedDose {
                    country: need(co, "dose \"co\"")?,
                    dose_number: need(dn, "dose \"dn\"")?,
                    date: need(dt, "dose \"dt\"")?,
                    lot: need(lo, "dose \"lo\"")?,
                    product: need(mp, "dose \"mp\"")?,
                    total_doses: need(sd, "dose \"sd\"")?,
                    site: need(si, "dose \"si\"")?,
                }))
            }
        }
        d.deserialize_map(V)
    }
}

/// Decode the claims map, refusing bytes after it.
fn parse_claims(payload: &[u8]) -> Result<RawClaims, String> {
    let mut rest = payload;
    let claims = ciborium::de::from_reader::<RawClaims, _>(&mut rest).map_err(|e| match e {
        ciborium::de::Error::Semantic(_, msg) => msg,
        ciborium::de::Error::Syntax(at) => format!("malformed CBOR at byte {at}"),
        ciborium::de::Error::Io(_) => "CBOR ends early".to_owned(),
        ciborium::de::Error::RecursionLimitExceeded => "CBOR nested too deeply".to_owned(),
    })?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the claims map", rest.len()));
    }
    Ok(claims)
}

fn required<T>(name: &str, v: Option<T>) -> Result<T, String> {
    v.ok_or_else(|| format!("claim {name} is missing"))
}

/// Parse and validate a certificate's CWT claims.
pub(crate) fn decode_certificate(payload: &[u8]) -> Result<VaccinationCertificate, String> {
    let claims = parse_claims(payload)?;
    if claims.sub.is_some() {
        return Err("certificate carries a sub claim".into());
    }
    let vaccination = required("vaccination (-65537)", claims.vaccination)?;
    let cti = required("cti (7)", claims.cti)?;
    let cert = VaccinationCertificate {
        certificate_id: String::from_utf8(cti).map_err(|_| "cti is not UTF-8 text".to_owned())?,
        issuer: required("iss (1)", claims.iss)?,
        issued_at: required("iat (6)", claims.iat)?,
        expires_at: required("exp (4)", claims.exp)?,
        holder: Holder {
            name: vaccination.name,
            birth_date: vaccination.birth_date,
        },
        doses: vaccination.doses,
        status: vaccination.status,
    };
    cert.validate().map_err(|e| e.0)?;
    Ok(cert)
}

/// Parse and validate a pass's CWT claims.
pub(crate) fn decode_registration(payload: &[u8]) -> Result<RegistrationPass, String> {
    let claims = parse_claims(payload)?;
    if claims.cti.is_some() || claims.vaccination.is_some() {
        return Err("pass carries a claim it must not (cti or vaccination)".into());
    }
    let pass = RegistrationPass {
        person_code: required("sub (2)", claims.sub)?,
        issuer: required("iss (1)", claims.iss)?,
        issued_at: required("iat (6)", claims.iat)?,
        expires_at: claims.exp,
    };
    pass.validate().map_err(|e| e.0)?;
    Ok(pass)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn int(i: i64) -> Value {
        Value::Integer(i.into())
    }

    fn sample() -> VaccinationCertificate {
        VaccinationCertificate {
            certificate_id: "c-1".into(),
            issuer: "VN-MOH".into(),
            issued_at: 1_700_000_000,
            expires_at: 1_800_000_000,
            holder: Holder {
                name: "Nguyễn Văn An".into(),
                birth_date: "1990-02-28".into(),
            },
            doses: vec![CertifiedDose {
                product: "EU/1/20/1528".into(),
                lot: "FK1234".into(),
                dose_number: 1,
                total_doses: 2,
                date: "2021-08-01".into(),
                site: "HN-001".into(),
                country: "VN".into(),
            }],
            status: SeriesStatus::Partial,
        }
    }

    #[test]
    fn dates() {
        for ok in [
            "2021-08-01",
            "2000-02-29",
            "2024-02-29",
            "0001-01-01",
            "9999-12-31",
        ] {
            assert!(check_date("d", ok).is_ok(), "{ok}");
        }
        for bad in [
            "1900-02-29",
            "2021-02-29",
            "2021-13-01",
            "2021-00-10",
            "2021-04-31",
            "2021-1-01",
            "2021/01/01",
            "20210101",
            "",
            "0000-01-01",
            "２０２１-01-01",
            "2021-01-0a",
            "+021-01-01",
        ] {
            assert!(check_date("d", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_follows_doses() {
        let mut cert = sample();
        cert.validate().unwrap();
        cert.status = SeriesStatus::Complete;
        assert!(cert.validate().is_err());
        cert.doses.push(CertifiedDose {
            dose_number: 2,
            ..cert.doses[0].clone()
        });
        cert.validate().unwrap();
        assert_eq!(SeriesStatus::Complete.colour(), "blue");
        assert_eq!(SeriesStatus::Partial.colour(), "yellow");
    }

    #[test]
    fn field_rules() {
        let base = sample();
        let mut c = base.clone();
        c.holder.name = "a\u{1b}[2J".into();
        assert!(c.validate().is_err());
        let mut c = base.clone();
        c.certificate_id = "x".repeat(MAX_ID_LEN + 1);
        assert!(c.validate().is_err());
        let mut c = base.clone();
        c.doses[0].country = "vn".into();
        assert!(c.validate().is_err());
        let mut c = base.clone();
        c.doses[0].dose_number = 0;
        assert!(c.validate().is_err());
        let mut c = base.clone();
        c.doses.clear();
        assert!(c.validate().is_err());
        let mut c = base.clone();
        c.expires_at = c.issued_at;
        assert!(c.validate().is_err());
    }

    #[test]
    fn payload_round_trip() {
        let cert = sample();
        let bytes = certificate_payload(&cert).unwrap();
        assert_eq!(decode_certificate(&bytes).unwrap(), cert);
        assert!(decode_registration(&bytes).is_err());

        let pass = RegistrationPass {
            person_code: "P-42".into(),
            issuer: "VN-MOH".into(),
            issued_at: 5,
            expires_at: None,
        };
        let bytes = registration_payload(&pass).unwrap();
        assert_eq!(decode_registration(&bytes).unwrap(), pass);
        assert!(decode_certificate(&bytes).is_err());
    }

    fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(v, &mut out).unwrap();
        out
    }

    #[test]
    fn strict_decoding() {
        let cert = sample();
        let good: Value =
            ciborium::de::from_reader(&certificate_payload(&cert).unwrap()[..]).unwrap();
        let Value::Map(claims) = good.clone() else {
            panic!()
        };

        // An extra private claim.
        let mut extra = claims.clone();
        extra.push((int(-65538), int(1)));
        assert!(decode_certificate(&encode(&Value::Map(extra))).is_err());

        // Fractional iat.
        let mut frac = claims.clone();
        for (k, v) in &mut frac {
            if *k == int(6) {
                *v = Value::Float(1.5);
            }
        }
        assert!(decode_certificate(&encode(&Value::Map(frac))).is_err());

        // Unknown and duplicate keys in the vaccination map.
        for mutate in [
            |m: &mut Vec<(Value, Value)>| m.push((Value::Text("zz".into()), int(1))),
            |m: &mut Vec<(Value, Value)>| {
                let first = m[1].clone();
                m.push(first);
            },
            |m: &mut Vec<(Value, Value)>| m.push((int(1), int(1))),
            |m: &mut Vec<(Value, Value)>| {
                m.remove(0);
            },
        ] {
            let mut c = claims.clone();
            for (k, v) in &mut c {
                if *k == int(CLAIM_VACCINATION)
                    && let Value::Map(m) = v
                {
                    mutate(m);
                }
            }
            assert!(decode_certificate(&encode(&Value::Map(c))).is_err());
        }
        // Trailing bytes, arrays for maps, text claim keys, nbf, too many doses.
        let mut trailing = encode(&good);
        trailing.push(0x00);
        assert!(
            decode_certificate(&trailing)
                .unwrap_err()
                .contains("after the claims")
        );
        let mut text_key = claims.clone();
        text_key.push((Value::Text("iss".into()), Value::Text("x".into())));
        assert!(decode_certificate(&encode(&Value::Map(text_key))).is_err());
        let mut nbf = claims.clone();
        nbf.push((int(5), int(1)));
        assert!(
            decode_certificate(&encode(&Value::Map(nbf)))
                .unwrap_err()
                .contains("claim 5")
        );
        let mut arrays = claims.clone();
        let mut many = claims.clone();
        for (k, v) in arrays.iter_mut().chain(many.iter_mut()) {
            if *k == int(CLAIM_VACCINATION)
                && let Value::Map(m) = v
            {
                m[0].1 = Value::Array(vec![Value::Array(vec![int(1); 7])]);
            }
        }
        assert!(decode_certificate(&encode(&Value::Map(arrays))).is_err());
        for (k, v) in &mut many {
            if *k == int(CLAIM_VACCINATION)
                && let Value::Map(m) = v
            {
                let dose = dose_value(&cert.doses[0]);
                m[0].1 = Value::Array(vec![dose; MAX_DOSES + 1]);
            }
        }
        assert!(
            decode_certificate(&encode(&Value::Map(many)))
                .unwrap_err()
                .contains("more than")
        );
        assert!(decode_certificate(&[]).is_err());
        assert!(decode_certificate(&[0xa0]).is_err());
        assert!(decode_certificate(&encode(&good)[..10]).is_err());
    }
}
