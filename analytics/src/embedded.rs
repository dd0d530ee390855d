//! Analytics on one machine, with no ClickHouse: rollups kept in a fjall database next to the
//! embedded store (`data/analytics/`), answering the same questions as ClickHouse.
//!
//! Keyspaces:
//! - `doses`: dose id → latest [`DoseRow`] (postcard), so a replay is recognised by its version
//!   and a correction can take the earlier version's contribution back out.
//! - `rollups`: counters, each an `i64`:
//!   - `h` product 0x00 hour(8 bytes, big-endian) province 0x00 district 0x00 site → doses given
//!     in that hour (product and time first: windows and uptake series are range scans);
//!   - `w` product 0x00 site 0x00 day (4 bytes, big-endian days since 1970) → people owed their
//!     next dose at the site by a dose given that UTC day: +1 for a dose that leaves one owed
//!     (under its own day), −1 for the dose that settles it (under the previous dose's day,
//!     which its row carries). The product's minimum interval is added when reading
//!     ([`crate::OwedWindow`]), so the counters hold only facts that never change;
//!   - `s` province 0x00 district → people who started their series, by home district;
//!   - `p` product → 1 (the products seen, for uptake over all products);
//!   - `n` → doses in total.
//! - `lots`: `l` site 0x00 product 0x00 lot → [`LotLedger`]: what the lot's movements (receipt,
//!   adjustments) add up to, and its last announcement. The doses received per site are their
//!   totals summed.
//! - `meta`: `schema` → the layout version (see [`SCHEMA`]).
//!
//! `apply` runs under one lock (there is one shipper) and commits the counters and the rows in
//! one fsync'd batch before the shipper removes the entries from the outbox.
//!
//! ## Upgrading
//! Layout 1 (the previous release) kept owed doses as `o` site 0x00 product, with no day, and
//! stock as content-hashed rows in `stock`. On open, [`EmbeddedAnalytics::open`] moves a layout-1
//! database to layout 2 from the dose rows it keeps: each legacy second dose gets its previous
//! dose's day from the same person's stored previous dose (none found: it settles nothing,
//! as nothing was counted owed for it), the `w` counters are rebuilt, the `o` counters and the
//! old stock rows are removed (the server announces every lot at start-up, which refills
//! `lots`). The rebuild is recomputed from the rows, so an interrupted one is simply done again
//! on the next open. Legacy second doses still in the outbox are dated the same way when
//! applied, from the stored rows (one scan of them for a batch that has any).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use store::{AreaCode, District};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::row::{self, DoseRow, Event, LegacyDoseRow, LotAllocation, LotLedger, SeriesDays};
use crate::{
    Analytics, AnalyticsError, AreaLevel, Due, Granularity, OwedWindow, Result, SiteActivity,
    UNIX_EPOCH_JULIAN_DAY, UptakePoint, UptakeQuery, hour_floor,
};

/// Format tag of values written by this release (postcard after the tag).
const TAG: u8 = 2;
/// Format tag of dose rows written by the previous release ([`LegacyDoseRow`]).
const LEGACY_TAG: u8 = 1;
/// The layout version this release reads and writes (see the module docs).
pub const SCHEMA: u8 = 2;

/// The embedded analytics backend.
pub struct EmbeddedAnalytics {
    /// Shared with the blocking tasks that do the engine's work.
    engine: Arc<Engine>,
}

/// The rollups themselves. Every method reads or writes fjall, and `apply` waits for an fsync:
/// blocking work, which [`EmbeddedAnalytics`] runs on tokio's blocking pool so that a large
/// replay after an outage never holds up the runtime's workers (and the HTTP requests on them).
struct Engine {
    db: Database,
    doses: Keyspace,
    rollups: Keyspace,
    lots: Keyspace,
    apply_lock: Mutex<()>,
}

impl std::fmt::Debug for EmbeddedAnalytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedAnalytics").finish_non_exhaustive()
    }
}

impl EmbeddedAnalytics {
    /// Opens (or creates) the rollups in `dir`, moving an older layout to the current one (see
    /// the module docs).
    ///
    /// # Errors
    /// When the directory cannot be opened (for instance, in use by another process), or a
    /// stored row is unreadable.
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
        let engine = Engine {
            doses: db.keyspace("doses", options)?,
            rollups: db.keyspace("rollups", options)?,
            lots: db.keyspace("lots", options)?,
            db,
            apply_lock: Mutex::new(()),
        };
        engine.upgrade()?;
        Ok(Self {
            engine: Arc::new(engine),
        })
    }

    /// Runs `work` on the engine in tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Engine) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || work(&engine))
            .await
            .map_err(|e| AnalyticsError::Invalid(format!("embedded analytics task failed: {e}")))?
    }
}

impl Engine {
    /// Moves a layout-1 database to layout 2 (see the module docs); nothing to do on a new or
    /// current one.
    fn upgrade(&self) -> Result<()> {
        let meta = self.db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let version = meta.get(b"schema")?.and_then(|v| v.first().copied());
        if version == Some(SCHEMA) {
            return Ok(());
        }
        if version.is_some_and(|v| v > SCHEMA) {
            return Err(AnalyticsError::Invalid(format!(
                "the embedded analytics were written by a newer release (layout {version:?}); \
                 upgrade vaxcamp or remove the analytics directory to rebuild it from the outbox"
            )));
        }
        // Pass 1: every person's doses (number, day), where a legacy row's previous day is.
        let mut series = SeriesDays::default();
        let mut legacy = 0u64;
        for guard in self.doses.iter() {
            let (k, v) = guard.into_inner()?;
            if v.first() == Some(&LEGACY_TAG) {
                legacy += 1;
            }
            series.add(&decode_dose(&k, &v)?);
        }
        // Pass 2: legacy rows rewritten with their previous dose's day (in chunks: a rerun
        // recomputes the same values), and every row's contribution to the owed counters.
        let mut owed: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        let mut in_batch = 0;
        for guard in self.doses.iter() {
            let (k, v) = guard.into_inner()?;
            let mut row = decode_dose(&k, &v)?;
            if v.first() == Some(&LEGACY_TAG) {
                if row.lacks_previous_day() {
                    row.previous_day = series.previous_day(&row);
                }
                batch.insert(&self.doses, k.clone(), encode(&row));
                in_batch += 1;
                if in_batch == 10_000 {
                    batch.commit()?;
                    batch = self.db.batch().durability(Some(PersistMode::SyncData));
                    in_batch = 0;
                }
            }
            contribute_owed(&row, 1, &mut owed);
        }
        batch.commit()?;
        // The counters and the version in one batch.
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        for tag in [b'o', b'w'] {
            for guard in self.rollups.prefix([tag]) {
                batch.remove(&self.rollups, guard.key()?);
            }
        }
        for (key, n) in owed {
            if n != 0 {
                batch.insert(&self.rollups, key, n.to_le_bytes());
            }
        }
        // Layout 1's stock rows hashed the quantity (one "received" row per change of a lot):
        // not worth keeping; the announcements at start-up rebuild the lots.
        let stock = self.db.keyspace("stock", KeyspaceCreateOptions::default)?;
        for guard in stock.iter() {
            batch.remove(&stock, guard.key()?);
        }
        batch.insert(&meta, b"schema", [SCHEMA]);
        batch.commit()?;
        if version.is_some() || legacy > 0 {
            tracing::info!(
                legacy_rows = legacy,
                "embedded analytics moved to layout {SCHEMA} (owed doses by day)"
            );
        }
        Ok(())
    }

    /// The ledger after a lot announcement (a receipt, or an adjustment by the difference:
    /// [`LotLedger::apply`]); the site's received doses are the ledgers' totals.
    fn announce(
        &self,
        lot: &LotAllocation,
        ledgers: &mut HashMap<Vec<u8>, LotLedger>,
    ) -> Result<()> {
        let ledger_key = lot_key(lot);
        let ledger = match ledgers.get(&ledger_key) {
            Some(ledger) => Some(*ledger),
            None => self
                .lots
                .get(&ledger_key)?
                .map(|v| decode::<LotLedger>(&ledger_key, &v))
                .transpose()?,
        };
        if let (_, Some(after)) = LotLedger::apply(ledger, lot) {
            ledgers.insert(ledger_key, after);
        }
        Ok(())
    }

    /// `events` with the previous day of legacy second doses filled in from the batch and the
    /// stored rows of those people (one scan of `doses`, only for a batch that has any).
    fn with_previous_days<'a>(&self, events: &'a [Event]) -> Result<std::borrow::Cow<'a, [Event]>> {
        let people = row::lacking_previous_day(events);
        if people.is_empty() {
            return Ok(std::borrow::Cow::Borrowed(events));
        }
        let mut known = SeriesDays::default();
        for guard in self.doses.iter() {
            let (k, v) = guard.into_inner()?;
            let stored = decode_dose(&k, &v)?;
            if people.contains(stored.person_code.as_str()) {
                known.add(&stored);
            }
        }
        Ok(std::borrow::Cow::Owned(row::fill_previous_days(
            events, known,
        )))
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
    contribute_owed(row, sign, deltas);
    if row.dose_number == 1 {
        *deltas
            .entry(key(b's', &[&row.home_province, &row.home_district]))
            .or_default() += sign;
    }
    *deltas.entry(vec![b'n']).or_default() += sign;
}

/// The row's part of the owed counters: the dose it leaves owed, under its own day, and the one
/// it settles, under the previous dose's day, where that one was put.
fn contribute_owed(row: &DoseRow, sign: i64, deltas: &mut BTreeMap<Vec<u8>, i64>) {
    if let Some(day) = row.owes_on() {
        *deltas
            .entry(owed_key(&row.product, &row.site_id, day))
            .or_default() += sign;
    }
    if let Some((product, site, day)) = row.settles() {
        *deltas.entry(owed_key(product, site, day)).or_default() -= sign;
    }
}

/// Days since 1970-01-01 (0 before it).
fn epoch_day(day: Date) -> u32 {
    u32::try_from(day.to_julian_day() - UNIX_EPOCH_JULIAN_DAY).unwrap_or(0)
}

fn owed_key(product: &str, site: &str, day: Date) -> Vec<u8> {
    let mut key = key(b'w', &[product, site]);
    key.push(0);
    key.extend_from_slice(&epoch_day(day).to_be_bytes());
    key
}

/// `(site, day)` from a `w` key whose product prefix (with its 0x00) is `prefix_len` long.
fn split_owed_key(key: &[u8], prefix_len: usize) -> Option<(String, Date)> {
    let rest = key.get(prefix_len..)?;
    let (site, day) = rest.split_at(rest.len().checked_sub(5)?);
    let (&0, day) = day.split_first()? else {
        return None;
    };
    let day = u32::from_be_bytes(day.try_into().ok()?);
    let julian = UNIX_EPOCH_JULIAN_DAY.checked_add(i32::try_from(day).ok()?)?;
    Some((
        std::str::from_utf8(site).ok()?.to_owned(),
        Date::from_julian_day(julian).ok()?,
    ))
}

fn lot_key(lot: &LotAllocation) -> Vec<u8> {
    let (site, product, number) = lot.lot_key();
    key(b'l', &[site, product, number])
}

fn decode_dose(key: &[u8], value: &[u8]) -> Result<DoseRow> {
    match value.split_first() {
        Some((&LEGACY_TAG, rest)) => postcard::from_bytes::<LegacyDoseRow>(rest)
            .map(DoseRow::from)
            .map_err(|e| AnalyticsError::Corrupt {
                key: format!("{key:?}"),
                reason: e.to_string(),
            }),
        _ => decode(key, value),
    }
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

impl Engine {
    fn apply(&self, events: &[Event]) -> Result<()> {
        let _serial = self
            .apply_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut latest: HashMap<Uuid, DoseRow> = HashMap::new();
        let mut ledgers: HashMap<Vec<u8>, LotLedger> = HashMap::new();
        let mut deltas: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        // A correction's `previous` is not needed: the stored row is what is taken back out.
        for event in self.with_previous_days(events)?.iter() {
            let row = match event {
                Event::Dose(row) => row,
                Event::DoseCorrected { corrected, .. } => corrected.as_ref(),
                Event::Lot(lot) => {
                    self.announce(lot, &mut ledgers)?;
                    continue;
                }
            };
            let current = match latest.get(&row.dose_id) {
                Some(row) => Some(row.clone()),
                None => self
                    .doses
                    .get(row.dose_id.as_bytes())?
                    .map(|v| decode_dose(row.dose_id.as_bytes(), &v))
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
            let value = self.counter(&key)?.saturating_add(delta);
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
        for (key, ledger) in &ledgers {
            batch.insert(&self.lots, key, encode(ledger));
        }
        Ok(batch.commit()?)
    }

    fn dose_count(&self) -> Result<u64> {
        Ok(u64::try_from(self.counter(b"n")?).unwrap_or(0))
    }

    fn site_activity(
        &self,
        product: &str,
        since: OffsetDateTime,
        owed: OwedWindow,
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
            entry.doses_in_window = entry.doses_in_window.saturating_add(n);
        }
        // Owed and lapsed per site, netted over the owing doses' days, each sorted into the
        // window with the product's interval (a day's own count may be negative where a dose
        // settles one that was never shipped).
        let mut owed_prefix = key(b'w', &[product]);
        owed_prefix.push(0);
        let mut counts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for guard in self.rollups.prefix(&owed_prefix) {
            let (k, v) = guard.into_inner()?;
            let Some((site, day)) = split_owed_key(&k, owed_prefix.len()) else {
                continue;
            };
            let n = decode_i64(&k, &v)?;
            let (owed_here, lapsed_here) = counts.entry(site).or_default();
            match owed.classify(day) {
                Due::Owed => *owed_here += n,
                Due::Lapsed => *lapsed_here += n,
                Due::Later => {}
            }
        }
        for (site, (owed_here, lapsed_here)) in counts {
            let (owed_here, lapsed_here) = (
                u64::try_from(owed_here).unwrap_or(0),
                u64::try_from(lapsed_here).unwrap_or(0),
            );
            if owed_here == 0 && lapsed_here == 0 {
                continue;
            }
            let entry = sites.entry(site.clone()).or_insert_with(|| SiteActivity {
                site_id: site,
                ..SiteActivity::default()
            });
            entry.owed_doses = owed_here;
            entry.lapsed_doses = lapsed_here;
        }
        Ok(sites.into_values().collect())
    }

    /// The lots' ledgers of `product`, summed per site (a scan of the lots: a campaign has
    /// hundreds or thousands, not millions).
    fn received_by_site(&self, product: &str) -> Result<HashMap<String, i64>> {
        let mut out: HashMap<String, i64> = HashMap::new();
        for guard in self.lots.prefix([b'l']) {
            let (k, v) = guard.into_inner()?;
            let Ok(text) = std::str::from_utf8(&k[1..]) else {
                continue;
            };
            let mut parts = text.split('\0');
            let (Some(site), Some(lot_product)) = (parts.next(), parts.next()) else {
                continue;
            };
            if lot_product != product {
                continue;
            }
            let ledger: LotLedger = decode(&k, &v)?;
            let received = out.entry(site.to_owned()).or_default();
            *received = received.saturating_add(ledger.total);
        }
        Ok(out)
    }

    fn started_by_district(&self) -> Result<HashMap<District, u64>> {
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

    fn uptake(&self, query: &UptakeQuery) -> Result<Vec<UptakePoint>> {
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

    fn close(&self) -> Result<()> {
        Ok(self.db.persist(PersistMode::SyncAll)?)
    }
}

#[async_trait]
impl Analytics for EmbeddedAnalytics {
    fn backend_name(&self) -> &'static str {
        "embedded"
    }

    async fn apply(&self, events: &[Event]) -> Result<()> {
        let events = events.to_vec();
        self.blocking(move |engine| engine.apply(&events)).await
    }

    async fn dose_count(&self) -> Result<u64> {
        self.blocking(Engine::dose_count).await
    }

    async fn site_activity(
        &self,
        product: &str,
        since: OffsetDateTime,
        owed: OwedWindow,
    ) -> Result<Vec<SiteActivity>> {
        let product = product.to_owned();
        self.blocking(move |engine| engine.site_activity(&product, since, owed))
            .await
    }

    async fn received_by_site(&self, product: &str) -> Result<HashMap<String, i64>> {
        let product = product.to_owned();
        self.blocking(move |engine| engine.received_by_site(&product))
            .await
    }

    async fn started_by_district(&self) -> Result<HashMap<District, u64>> {
        self.blocking(Engine::started_by_district).await
    }

    async fn uptake(&self, query: &UptakeQuery) -> Result<Vec<UptakePoint>> {
        let query = query.clone();
        self.blocking(move |engine| engine.uptake(&query)).await
    }

    async fn close(&self) -> Result<()> {
        self.blocking(Engine::close).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    const NOW: OffsetDateTime = datetime!(2026-11-20 15:30 UTC);

    fn legacy(
        id: u128,
        person: &str,
        number: u8,
        site: &str,
        previous: &str,
        at: OffsetDateTime,
    ) -> LegacyDoseRow {
        LegacyDoseRow {
            dose_id: Uuid::from_u128(id),
            person_code: person.into(),
            product: "COMIRNATY".into(),
            lot_number: "FK1".into(),
            dose_number: number,
            series_doses: 2,
            site_id: site.into(),
            site_province: "01".into(),
            site_district: "001".into(),
            home_province: "01".into(),
            home_district: "001".into(),
            previous_site: previous.into(),
            previous_product: if previous.is_empty() {
                String::new()
            } else {
                "COMIRNATY".into()
            },
            administered_at: at,
            recorded_at: at,
            version: 1,
        }
    }

    /// A database as layout 1 left it: legacy rows and per-site owed counters, no `meta`.
    fn layout_one(dir: &Path, rows: &[LegacyDoseRow]) {
        let db = Database::builder(dir).open().expect("open");
        let doses = db
            .keyspace("doses", KeyspaceCreateOptions::default)
            .expect("doses");
        let rollups = db
            .keyspace("rollups", KeyspaceCreateOptions::default)
            .expect("rollups");
        let stock = db
            .keyspace("stock", KeyspaceCreateOptions::default)
            .expect("stock");
        for row in rows {
            let value = postcard::to_extend(row, vec![LEGACY_TAG]).expect("encode");
            doses.insert(row.dose_id.as_bytes(), value).expect("insert");
        }
        rollups
            .insert(key(b'o', &["hn-01", "COMIRNATY"]), 3i64.to_le_bytes())
            .expect("o");
        stock.insert([7u8; 16], [TAG]).expect("stock");
        db.persist(PersistMode::SyncAll).expect("persist");
    }

    /// (site, owed, lapsed) of COMIRNATY (interval 21 days) for a horizon of `horizon_days`.
    async fn owed_within(
        backend: &EmbeddedAnalytics,
        horizon_days: u32,
    ) -> Vec<(String, u64, u64)> {
        let window = OwedWindow::new(NOW.date(), horizon_days, 90, 21);
        backend
            .site_activity("COMIRNATY", NOW - time::Duration::days(7), window)
            .await
            .expect("site_activity")
            .into_iter()
            .filter(|s| s.owed_doses > 0 || s.lapsed_doses > 0)
            .map(|s| (s.site_id, s.owed_doses, s.lapsed_doses))
            .collect()
    }

    async fn owed(backend: &EmbeddedAnalytics) -> Vec<(String, u64, u64)> {
        owed_within(backend, 14).await
    }

    #[tokio::test]
    async fn layout_one_is_moved_to_owed_doses_by_day() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Asked on 2026-11-20 with a 14-day horizon and 90 days' grace: owed when the dose that
        // owes it was given 2026-11-12 or before (+ 21 days ≤ 2026-12-03), lapsed when before
        // 2026-07-31 (+ 21 days < 2026-08-22).
        layout_one(
            dir.path(),
            &[
                // 2026-11-10: due 2026-12-01, owed.
                legacy(1, "P1", 1, "hn-01", "", datetime!(2026-11-10 09:00 UTC)),
                // 2026-11-19: due 2026-12-10, after the horizon.
                legacy(2, "P2", 1, "hn-01", "", datetime!(2026-11-19 09:00 UTC)),
                // 2026-05-01: due 2026-05-22, lapsed.
                legacy(3, "P3", 1, "hn-01", "", datetime!(2026-05-01 09:00 UTC)),
                // Dose 1 at hn-02 on 2026-10-01 (due 2026-10-22), settled by dose 2 at hn-01
                // three days after its due day: under 2026-10-01, where dose 1 was put.
                legacy(4, "P4", 1, "hn-02", "", datetime!(2026-10-01 09:00 UTC)),
                legacy(
                    5,
                    "P4",
                    2,
                    "hn-01",
                    "hn-02",
                    datetime!(2026-10-25 09:00 UTC),
                ),
            ],
        );
        let backend = EmbeddedAnalytics::open(dir.path()).expect("upgrade");
        // hn-01: P1 owed, P3 lapsed; hn-02: P4 settled, nothing.
        assert_eq!(owed(&backend).await, vec![("hn-01".to_owned(), 1, 1)]);
        assert!(
            backend.engine.rollups.prefix([b'o']).next().is_none(),
            "layout 1's owed counters are gone"
        );
        // P1's dose 2, as the new write path reports it, settles exactly what the upgrade put
        // under 2026-11-10.
        let mut second = DoseRow::from(legacy(
            6,
            "P1",
            2,
            "hn-02",
            "hn-01",
            datetime!(2026-12-01 10:00 UTC),
        ));
        second.previous_day = Some(date!(2026 - 11 - 10));
        backend.apply(&[Event::Dose(second)]).await.expect("apply");
        assert_eq!(owed(&backend).await, vec![("hn-01".to_owned(), 0, 1)]);
        // P2's dose 2 from the previous release's outbox, applied after the upgrade, finds
        // dose 1's day (2026-11-19) among the stored rows; nothing was owed for P2 yet, so
        // only a 28-day window tells: P2 owed at hn-01 before, nothing after.
        assert_eq!(
            owed_within(&backend, 28).await,
            vec![("hn-01".to_owned(), 1, 1)]
        );
        let legacy_second = DoseRow::from(legacy(
            7,
            "P2",
            2,
            "hn-03",
            "hn-01",
            datetime!(2026-12-12 08:00 UTC),
        ));
        backend
            .apply(&[Event::Dose(legacy_second)])
            .await
            .expect("apply");
        assert_eq!(
            owed_within(&backend, 28).await,
            vec![("hn-01".to_owned(), 0, 1)]
        );
        backend.close().await.expect("close");
        drop(backend);
        // Opening again finds the current layout and changes nothing.
        let backend = EmbeddedAnalytics::open(dir.path()).expect("reopen");
        assert_eq!(owed(&backend).await, vec![("hn-01".to_owned(), 0, 1)]);
    }

    #[tokio::test]
    async fn lot_announcements_become_receipts_and_adjustments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = EmbeddedAnalytics::open(dir.path()).expect("open");
        let lot = |quantity, day: i64| {
            Event::Lot(LotAllocation {
                site_id: "hn-01".into(),
                product: "COMIRNATY".into(),
                lot_number: "FK1".into(),
                quantity,
                at: NOW + time::Duration::days(day),
            })
        };
        // Received 1,000; announced again at a restart; raised to 1,200; the whole lot replayed.
        let events = [lot(1000, 0), lot(1000, 1), lot(1200, 2)];
        backend.apply(&events).await.expect("apply");
        backend.apply(&events).await.expect("replay");
        let received = backend
            .received_by_site("COMIRNATY")
            .await
            .expect("received");
        // 1,000 received and +200 adjusted (the movements themselves: `LotLedger::apply`).
        assert_eq!(received, HashMap::from([("hn-01".to_owned(), 1200)]));
        // Another product's lot at the same site is not counted with it.
        backend
            .apply(&[Event::Lot(LotAllocation {
                site_id: "hn-01".into(),
                product: "SPIKEVAX".into(),
                lot_number: "SP1".into(),
                quantity: 300,
                at: NOW,
            })])
            .await
            .expect("apply");
        let received = backend
            .received_by_site("COMIRNATY")
            .await
            .expect("received");
        assert_eq!(received, HashMap::from([("hn-01".to_owned(), 1200)]));
    }
}
