//! Keys and values of the embedded engine.
//!
//! Values are postcard (compact, fast) behind a one-byte format tag, so that a later layout can
//! be recognised and migrated rather than misread. Keys are raw bytes chosen for the scans we do.

use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::error::{Result, StoreError};
use crate::model::{AreaCode, District, DoseId, LotKey, LotNumber, PersonCode, SiteId};

const VALUE_TAG: u8 = 1;
/// Audit records carry free-form JSON details, which postcard cannot represent; they are rare,
/// so they are stored as JSON.
const JSON_TAG: u8 = 2;

pub const REGISTRATIONS: &[u8] = b"registrations";
pub const DOSES: &[u8] = b"doses";
const LOT_COUNTER: &[u8] = b"lot:";
const DISTRICT_COUNTER: &[u8] = b"district:";

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let out = vec![VALUE_TAG];
    // Serialising our own model types into a Vec cannot fail (no maps with non-string keys, no
    // I/O); an error here would be a bug, and an empty record would then fail loudly on decode.
    match postcard::to_extend(value, out) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "could not encode a record");
            vec![]
        }
    }
}

pub fn encode_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = vec![JSON_TAG];
    if let Err(e) = serde_json::to_writer(&mut out, value) {
        tracing::error!(error = %e, "could not encode a record");
        out.clear();
    }
    out
}

pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    match bytes.split_first() {
        Some((&VALUE_TAG, rest)) => postcard::from_bytes(rest).map_err(|e| corrupt(e.to_string())),
        Some((&JSON_TAG, rest)) => serde_json::from_slice(rest).map_err(|e| corrupt(e.to_string())),
        Some((tag, _)) => Err(corrupt(format!("unknown value format {tag}"))),
        None => Err(corrupt("empty value".into())),
    }
}

pub fn decode_u64(key: &[u8], bytes: &[u8]) -> Result<u64> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: format!("counter of {} bytes", bytes.len()),
    })?;
    Ok(u64::from_le_bytes(array))
}

/// `person code, 0x00`: the prefix of all of a person's doses. The separator cannot occur in a
/// person code, so one person's prefix never matches another's.
pub fn person_prefix(person: &PersonCode) -> Vec<u8> {
    let mut key = Vec::with_capacity(person.as_str().len() + 1);
    key.extend_from_slice(person.as_str().as_bytes());
    key.push(0);
    key
}

pub fn dose_key(person: &PersonCode, id: DoseId) -> Vec<u8> {
    dose_key_raw(person.as_str().as_bytes(), id)
}

pub fn dose_key_raw(person: &[u8], id: DoseId) -> Vec<u8> {
    let mut key = Vec::with_capacity(person.len() + 17);
    key.extend_from_slice(person);
    key.push(0);
    key.extend_from_slice(id.0.as_bytes());
    key
}

/// `lot number, 0x00, site id`: neither may contain 0x00.
pub fn lot_key(lot: &LotKey) -> Vec<u8> {
    let mut key = Vec::new();
    key.extend_from_slice(lot.lot_number.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(lot.site_id.as_str().as_bytes());
    key
}

pub fn lot_counter_key(lot: &LotKey) -> Vec<u8> {
    let mut key = LOT_COUNTER.to_vec();
    key.extend_from_slice(&lot_key(lot));
    key
}

pub fn lot_counter_key_decode(key: &[u8]) -> Option<LotKey> {
    let rest = key.strip_prefix(LOT_COUNTER)?;
    let split = rest.iter().position(|&b| b == 0)?;
    let lot_number = std::str::from_utf8(&rest[..split]).ok()?;
    let site_id = std::str::from_utf8(&rest[split + 1..]).ok()?;
    Some(LotKey {
        lot_number: LotNumber::new(lot_number).ok()?,
        site_id: SiteId::new(site_id).ok()?,
    })
}

/// `district:`, province, 0x00, district: registrations living in that district.
pub fn district_counter_key(district: &District) -> Vec<u8> {
    let mut key = DISTRICT_COUNTER.to_vec();
    key.extend_from_slice(district.province.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(district.district.as_str().as_bytes());
    key
}

pub fn district_counter_key_decode(key: &[u8]) -> Option<District> {
    let rest = key.strip_prefix(DISTRICT_COUNTER)?;
    let split = rest.iter().position(|&b| b == 0)?;
    Some(District {
        province: AreaCode::new(std::str::from_utf8(&rest[..split]).ok()?).ok()?,
        district: AreaCode::new(std::str::from_utf8(&rest[split + 1..]).ok()?).ok()?,
    })
}

/// Big-endian time then a sequence number: audit records sort by time.
pub fn audit_key(at: OffsetDateTime, sequence: u32) -> Vec<u8> {
    let nanos = at.unix_timestamp_nanos().clamp(0, i128::from(u64::MAX)) as u64;
    let mut key = nanos.to_be_bytes().to_vec();
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lot_counter_keys_round_trip() {
        let lot = LotKey {
            lot_number: LotNumber::new("FK5618").expect("valid"),
            site_id: SiteId::new("hn-01").expect("valid"),
        };
        assert_eq!(lot_counter_key_decode(&lot_counter_key(&lot)), Some(lot));
        assert_eq!(lot_counter_key_decode(b"doses"), None);
        let district = District {
            province: AreaCode::new("01").expect("valid"),
            district: AreaCode::new("001").expect("valid"),
        };
        assert_eq!(
            district_counter_key_decode(&district_counter_key(&district)),
            Some(district)
        );
        assert_eq!(district_counter_key_decode(b"doses"), None);
    }

    #[test]
    fn values_with_an_unknown_tag_are_refused() {
        let err = decode::<u32>(b"k", &[9, 1]).expect_err("unknown tag");
        assert!(err.to_string().contains("unknown value format 9"));
        assert!(decode::<u32>(b"k", &[]).is_err());
        assert_eq!(decode::<u32>(b"k", &encode(&7u32)).expect("round trip"), 7);
    }
}
