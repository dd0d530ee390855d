//! Analytics on one machine, with no ClickHouse: rollups kept in a fjall database next to the
//! embedded store (`data/analytics/`), answering the same questions as ClickHouse.
//!
//! Keyspaces:
//! - `doses`: dose id → latest [`DoseRow`] (postcard), so a replay is recognised by its version
//!   and a correction can take the earlier version's contribution back out.
//! - `rollups`: counters, each an `i64`:
//!   - `h` product 0x00 hour(8 bytes, big-endian) province 0x00 district 0x00 site → doses given
//!     in that hour (product and time first: windows and uptake series are range scans);
//!   - `o` site 0x00 product → doses owed at the site;
//!   - `s` province 0x00 district → people who started their series, by home district;
//!   - `p` product → 1 (the products seen, for uptake over all products);
//!   - `n` → doses in total.
//! - `stock`: movement id → [`StockMovement`].
//!
//! `apply` runs under one lock (there is one shipper) and commits the counters and the rows in
//! one fsync'd batch before the shipper removes the entries from the outbox.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use store::{AreaCode, District};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::row::{DoseRow, Event};
use crate::{
    Analytics, AnalyticsError, AreaLevel, Granularity, Result, SiteActivity, UptakePoint,
    UptakeQuery, hour_floor,
};

const TAG: u8 = 1;

/// The embedded analytics backend.
pub struct EmbeddedAnalytics {
    db: Database,
    doses: Keyspace,
    rollups: Keyspace,
    stock: Keyspace,
    apply_lock: Mutex<()>,
}

impl std::fmt::Debug for EmbeddedAnalytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedAnalytics").finish_non_exhaustive()
    }
}

impl EmbeddedAnalytics {
    /// Opens (or creates) the rollups in `dir`.
    ///
    /// # Errors
    /// When the directory cannot be opened (for instance, in use by another process).
    pub fn open(dir: &Path) -> Result<Self> {
        let db = Database::builder(dir)
            .cache_size(32 * 1024 * 1024)
            .open()
            .map_err(|e| match e {
                fjall::Error::Locked => AnalyticsError::Invalid(format!(
                    "the analytics data in {} is in use by another process",
                    dir.display()
                )),
                other => other.into(),
            })?;
        let options = || KeyspaceCreateOptions::default().max_memtable_size(8 * 1024 * 1024);
        Ok(Self {
            doses: db.keyspace("doses", options)?,
            rollups: db.keyspace("rollups", options)?,
            stock: db.keyspace("stock", options)?,
            db,
            apply_lock: Mutex::new(()),
        })
    }

    fn counter(&self, key: &[u8]) -> Result<i64> {
        Ok(self
            .rollups
            .get(key)?
            .map(|v| decode_i64(key, &v))
            .transpose()?
            .unwrap_or(0))
    }
}

/// Adds `sign` × the row's contributions to `deltas`.
fn contribute(row: &DoseRow, sign: i64, deltas: &mut BTreeMap<Vec<u8>, i64>) {
    *deltas.entry(hour_key(row)).or_default() += sign;
    if row.leaves_dose_owed() {
        *deltas
            .entry(key(b'o', &[&row.site_id, &row.product]))
            .or_default() += sign;
    }
    if !row.previous_site.is_empty() {
        *deltas
            .entry(key(b'o', &[&row.previous_site, &row.previous_product]))
            .or_default() -= sign;
    }
    if row.dose_number == 1 {
        *deltas
            .entry(key(b's', &[&row.home_province, &row.home_district]))
            .or_default() += sign;
    }
    *deltas.entry(vec![b'n']).or_default() += sign;
}

fn key(tag: u8, parts: &[&str]) -> Vec<u8> {
    let mut key = vec![tag];
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part.as_bytes());
    }
    key
}

fn hour_prefix(product: &str, hour: i64) -> Vec<u8> {
    let mut key = key(b'h', &[product]);
    key.push(0);
    key.extend_from_slice(&hour.max(0).to_be_bytes());
    key
}

fn hour_key(row: &DoseRow) -> Vec<u8> {
    let mut key = hour_prefix(
        &row.product,
        hour_floor(row.administered_at).unix_timestamp(),
    );
    key.extend_from_slice(
        [
            row.site_province.as_str(),
            row.site_district.as_str(),
            row.site_id.as_str(),
        ]
        .join("\0")
        .as_bytes(),
    );
    key
}

/// `(hour, province, district, site)` from an `h` key whose product prefix is `prefix_len` long.
fn split_hour_key(key: &[u8], prefix_len: usize) -> Option<(i64, String, String, String)> {
    let rest = key.get(prefix_len..)?;
    let hour = i64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let text = std::str::from_utf8(rest.get(8..)?).ok()?;
    let mut parts = text.split('\0');
    Some((
        hour,
        parts.next()?.to_owned(),
        parts.next()?.to_owned(),
        parts.next()?.to_owned(),
    ))
}

fn decode_i64(key: &[u8], value: &[u8]) -> Result<i64> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| AnalyticsError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: "counter is not 8 bytes".into(),
    })?;
    Ok(i64::from_le_bytes(bytes))
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_extend(value, vec![TAG]).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T> {
    match value.split_first() {
        Some((&TAG, rest)) => postcard::from_bytes(rest).map_err(|e| AnalyticsError::Corrupt {
            key: format!("{key:?}"),
            reason: e.to_string(),
        }),
        _ => Err(AnalyticsError::Corrupt {
            key: format!("{key:?}"),
            reason: "unknown format tag".into(),
        }),
    }
}

#[async_trait]
impl Analytics for EmbeddedAnalytics {
    fn backend_name(&self) -> &'static str {
        "embedded"
    }

    async fn apply(&self, events: &[Event]) -> Result<()> {
        let _serial = self
            .apply_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut latest: HashMap<Uuid, DoseRow> = HashMap::new();
        let mut deltas: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        for event in events {
            let row = match event {
                Event::Dose(row) => row,
                Event::DoseCorrected { corrected, .. } => corrected.as_ref(),
                Event::Stock(movement) => {
                    batch.insert(
                        &self.stock,
                        movement.movement_id.as_bytes(),
                        encode(movement),
                    );
                    continue;
                }
            };
            let current = match latest.get(&row.dose_id) {
                Some(row) => Some(row.clone()),
                None => self
                    .doses
                    .get(row.dose_id.as_bytes())?
                    .map(|v| decode::<DoseRow>(row.dose_id.as_bytes(), &v))
                    .transpose()?,
            };
            if let Some(current) = &current {
                if current.version >= row.version {
                    continue; // a replay, or older than what we have
                }
                contribute(current, -1, &mut deltas);
            }
            contribute(row, 1, &mut deltas);
            deltas.entry(key(b'p', &[&row.product])).or_insert(0);
            latest.insert(row.dose_id, row.clone());
        }
        for (key, delta) in deltas {
            let value = self.counter(&key)? + delta;
            if key.first() == Some(&b'p') {
                batch.insert(&self.rollups, key, 1i64.to_le_bytes());
            } else if value == 0 {
                batch.remove(&self.rollups, key);
            } else {
                batch.insert(&self.rollups, key, value.to_le_bytes());
            }
        }
        for (id, row) in &latest {
            batch.insert(&self.doses, id.as_bytes(), encode(row));
        }
        Ok(batch.commit()?)
    }

    async fn dose_count(&self) -> Result<u64> {
        Ok(u64::try_from(self.counter(b"n")?).unwrap_or(0))
    }

    async fn site_activity(
        &self,
        product: &str,
        since: OffsetDateTime,
    ) -> Result<Vec<SiteActivity>> {
        let mut sites: BTreeMap<String, SiteActivity> = BTreeMap::new();
        let start = hour_prefix(product, hour_floor(since).unix_timestamp());
        let prefix = key(b'h', &[product]);
        let prefix_len = prefix.len() + 1;
        let mut end = prefix.clone();
        end.push(1); // just past `product 0x00 ...`
        for guard in self.rollups.range(start..end) {
            let (k, v) = guard.into_inner()?;
            let Some((_, _, _, site)) = split_hour_key(&k, prefix_len) else {
                continue;
            };
            let n = u64::try_from(decode_i64(&k, &v)?).unwrap_or(0);
            let entry = sites.entry(site.clone()).or_insert_with(|| SiteActivity {
                site_id: site,
                ..SiteActivity::default()
            });
            entry.doses_in_window += n;
        }
        for guard in self.rollups.prefix([b'o']) {
            let (k, v) = guard.into_inner()?;
            let Ok(text) = std::str::from_utf8(&k[1..]) else {
                continue;
            };
            let Some((site, owed_product)) = text.split_once('\0') else {
                continue;
            };
            if owed_product != product {
                continue;
            }
            let owed = u64::try_from(decode_i64(&k, &v)?).unwrap_or(0);
            if owed == 0 {
                continue;
            }
            sites
                .entry(site.to_owned())
                .or_insert_with(|| SiteActivity {
                    site_id: site.to_owned(),
                    ..SiteActivity::default()
                })
                .owed_doses = owed;
        }
        Ok(sites.into_values().collect())
    }

    async fn started_by_district(&self) -> Result<HashMap<District, u64>> {
        let mut out = HashMap::new();
        for guard in self.rollups.prefix([b's']) {
            let (k, v) = guard.into_inner()?;
            let Ok(text) = std::str::from_utf8(&k[1..]) else {
                continue;
            };
            let Some((province, district)) = text.split_once('\0') else {
                continue;
            };
            let (Ok(province), Ok(district)) = (AreaCode::new(province), AreaCode::new(district))
            else {
                continue;
            };
            out.insert(
                District { province, district },
                u64::try_from(decode_i64(&k, &v)?).unwrap_or(0),
            );
        }
        Ok(out)
    }

    async fn uptake(&self, query: &UptakeQuery) -> Result<Vec<UptakePoint>> {
        let products: Vec<String> = match &query.product {
            Some(p) => vec![p.clone()],
            None => self
                .rollups
                .prefix([b'p'])
                .filter_map(|g| g.into_inner().ok())
                .filter_map(|(k, _)| std::str::from_utf8(&k[1..]).ok().map(str::to_owned))
                .collect(),
        };
        let since = hour_floor(query.since).unix_timestamp();
        let until = query.until.unix_timestamp();
        let mut points: BTreeMap<(String, i64), u64> = BTreeMap::new();
        for product in products {
            let prefix_len = key(b'h', &[&product]).len() + 1;
            for guard in self
                .rollups
                .range(hour_prefix(&product, since)..hour_prefix(&product, until))
            {
                let (k, v) = guard.into_inner()?;
                let Some((hour, province, district, site)) = split_hour_key(&k, prefix_len) else {
                    continue;
                };
                if query.province.as_ref().is_some_and(|p| *p != province) {
                    continue;
                }
                let area = match query.level {
                    AreaLevel::Province => province,
                    AreaLevel::District => format!("{province}/{district}"),
                    AreaLevel::Site => site,
                };
                let bucket = match query.granularity {
                    Granularity::Hour => hour,
                    Granularity::Day => hour - hour.rem_euclid(86_400),
                };
                *points.entry((area, bucket)).or_default() +=
                    u64::try_from(decode_i64(&k, &v)?).unwrap_or(0);
            }
        }
        Ok(points
            .into_iter()
            .filter(|(_, doses)| *doses > 0)
            .map(|((area, bucket), doses)| UptakePoint {
                area,
                bucket: OffsetDateTime::from_unix_timestamp(bucket)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                doses,
            })
            .collect())
    }

    async fn close(&self) -> Result<()> {
        Ok(self.db.persist(PersistMode::SyncAll)?)
    }
}
