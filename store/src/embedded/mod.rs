//! The embedded engine: the default on one machine, no server to install.
//!
//! Built on [fjall], an LSM-tree engine in safe Rust with atomic cross-keyspace write batches and
//! a journal that can be fsync'd per batch (see ARCHITECTURE.md for why fjall over redb).
//!
//! On disk, a data directory holds one fjall database per shard and one for the catalogue:
//!
//! ```text
//! data/
//!   catalog/     sites, products, lots, credentials, settings, audit
//!   shard-00/    people, doses, dose_ids, counters      ← person codes with shard_of(..) == 0
//!   shard-01/    ...
//! ```
//!
//! Each shard has its own journal, so shard writers group-commit and fsync independently, in
//! parallel, as ScyllaDB's shards do. A write batch within a shard is atomic: a dose, its id
//! index entry and the counters it moves are committed together or not at all.

mod codec;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use time::OffsetDateTime;

use crate::error::{Result, StoreError};
use crate::model::{
    AuditRecord, Credential, District, Dose, DoseId, Lot, LotKey, PersonCode, Product,
    Registration, Revocation, Site,
};
use crate::{ImportCounts, Registered, Store, Totals, shard_of};
use codec::{decode, encode, encode_json};

/// The on-disk layout version, stored in the catalogue's settings. Bumped when keys or values
/// change shape; `open` refuses a directory with a version it does not know.
const FORMAT_VERSION: &str = "1";

/// Options for creating or opening an embedded store. Defaults suit one machine.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Shards to create a new campaign with. Ignored when opening: the count is fixed at creation.
    /// Default: the number of CPU cores, at least 2.
    pub shards: usize,
    /// Block cache per database, in bytes. Default: 64 MiB.
    pub cache_bytes: u64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self {
            shards: cores.clamp(2, 64),
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

struct Catalog {
    db: Database,
    sites: Keyspace,
    products: Keyspace,
    lots: Keyspace,
    credentials: Keyspace,
    settings: Keyspace,
    audit: Keyspace,
    revocations: Keyspace,
}

/// Running counters of one shard, mirrored in its `counters` keyspace.
#[derive(Default)]
struct ShardCounters {
    registrations: u64,
    doses: u64,
    lots: HashMap<LotKey, u64>,
    districts: HashMap<District, u64>,
}

struct Shard {
    db: Database,
    people: Keyspace,
    /// Key: person code, 0x00, dose id (16 bytes). A person's doses are one prefix scan.
    doses: Keyspace,
    /// Key: dose id (16 bytes). Value: person code. Finds a dose from its id alone.
    dose_ids: Keyspace,
    counters: Keyspace,
    /// Serialises writes that read-modify-write the counters (commits and registrations). The
    /// write path already has one writer per shard; this makes the store safe on its own too.
    write: Mutex<ShardCounters>,
}

/// The embedded, sharded store. See the module docs for the layout.
pub struct EmbeddedStore {
    root: PathBuf,
    catalog: Catalog,
    shards: Vec<Shard>,
    /// Tie-breaker for audit keys written in the same nanosecond.
    audit_sequence: AtomicU32,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("root", &self.root)
            .field("shards", &self.shards.len())
            .finish()
    }
}

fn keyspace(db: &Database, name: &str) -> Result<Keyspace> {
    // 8 MiB memtables instead of fjall's 64 MiB: the write path does several point lookups per
    // dose, and a lookup in a large in-memory skiplist is a chain of cache misses; flushed
    // tables answer misses from their bloom filters instead. ~14 % more doses/s through the
    // shard writer (see BENCHMARKS.md).
    Ok(db.keyspace(name, || {
        KeyspaceCreateOptions::default().max_memtable_size(8 * 1024 * 1024)
    })?)
}

fn open_database(path: &Path, cache_bytes: u64) -> Result<Database> {
    Database::builder(path)
        .cache_size(cache_bytes)
        .open()
        .map_err(|e| match e {
            fjall::Error::Locked => StoreError::Locked {
                path: path.to_owned(),
            },
            other => other.into(),
        })
}

fn durable(db: &Database) -> fjall::OwnedWriteBatch {
    db.batch().durability(Some(PersistMode::SyncData))
}

impl EmbeddedStore {
    /// Creates a new campaign store in `root`, or opens the one that is there if it has the same
    /// shard count.
    ///
    /// # Errors
    /// [`StoreError::ShardCountMismatch`] when `root` holds a store with another shard count,
    /// [`StoreError::Locked`] when another process has it open, and I/O errors.
    pub fn create(root: impl AsRef<Path>, options: &EmbeddedOptions) -> Result<Self> {
        let root = root.as_ref().to_owned();
        if options.shards == 0 || options.shards > 256 {
            return Err(StoreError::Engine(format!(
                "shard count must be 1 to 256, not {}",
                options.shards
            )));
        }
        std::fs::create_dir_all(&root).map_err(|source| StoreError::Io {
            path: root.clone(),
            source,
        })?;
        let catalog = Self::open_catalog(&root, options.cache_bytes)?;
        match catalog.settings.get("shards")? {
            Some(found) => {
                let found = parse_shards(&root, &found)?;
                if found != options.shards {
                    return Err(StoreError::ShardCountMismatch {
                        path: root,
                        found,
                        expected: options.shards,
                    });
                }
            }
            None => {
                let mut batch = durable(&catalog.db);
                batch.insert(&catalog.settings, "shards", options.shards.to_string());
                batch.insert(&catalog.settings, "format", FORMAT_VERSION);
                batch.commit()?;
            }
        }
        Self::finish_open(root, catalog, options.shards, options.cache_bytes)
    }

    /// Opens an existing campaign store.
    ///
    /// # Errors
    /// [`StoreError::NotInitialized`] when `root` holds no campaign, [`StoreError::Locked`] when
    /// another process has it open, and I/O errors.
    pub fn open(root: impl AsRef<Path>, options: &EmbeddedOptions) -> Result<Self> {
        let root = root.as_ref().to_owned();
        if !root.join("catalog").is_dir() {
            return Err(StoreError::NotInitialized { path: root });
        }
        let catalog = Self::open_catalog(&root, options.cache_bytes)?;
        let Some(found) = catalog.settings.get("shards")? else {
            return Err(StoreError::NotInitialized { path: root });
        };
        let shards = parse_shards(&root, &found)?;
        match catalog.settings.get("format")? {
            Some(v) if v.as_ref() == FORMAT_VERSION.as_bytes() => {}
            other => {
                let found = other
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default();
                return Err(StoreError::Corrupt {
                    key: "settings/format".into(),
                    reason: format!("format version {found:?}, this build reads {FORMAT_VERSION}"),
                });
            }
        }
        Self::finish_open(root, catalog, shards, options.cache_bytes)
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn open_catalog(root: &Path, cache_bytes: u64) -> Result<Catalog> {
        let db = open_database(&root.join("catalog"), cache_bytes / 4)?;
        Ok(Catalog {
            sites: keyspace(&db, "sites")?,
            products: keyspace(&db, "products")?,
            lots: keyspace(&db, "lots")?,
            credentials: keyspace(&db, "credentials")?,
            settings: keyspace(&db, "settings")?,
            audit: keyspace(&db, "audit")?,
            revocations: keyspace(&db, "revocations")?,
            db,
        })
    }

    fn finish_open(
        root: PathBuf,
        catalog: Catalog,
        shard_count: usize,
        cache_bytes: u64,
    ) -> Result<Self> {
        let per_shard_cache = cache_bytes / shard_count as u64;
        let mut shards = Vec::with_capacity(shard_count);
        for index in 0..shard_count {
            let db = open_database(&root.join(format!("shard-{index:02}")), per_shard_cache)?;
            let counters = keyspace(&db, "counters")?;
            let loaded = load_counters(&counters)?;
            shards.push(Shard {
                people: keyspace(&db, "people")?,
                doses: keyspace(&db, "doses")?,
                dose_ids: keyspace(&db, "dose_ids")?,
                counters,
                db,
                write: Mutex::new(loaded),
            });
        }
        tracing::debug!(root = %root.display(), shards = shard_count, "embedded store open");
        Ok(Self {
            root,
            catalog,
            shards,
            audit_sequence: AtomicU32::new(0),
        })
    }

    fn shard_for(&self, person: &PersonCode) -> &Shard {
        // `shards` is never empty: creation refuses 0.
        &self.shards[shard_of(person, self.shards.len())]
    }

    /// The person (code bytes) a dose id is stored for, in whichever shard holds it. The id
    /// index is per shard (it commits atomically with the dose), so an id sent for two people
    /// in two shards is found only by looking in every shard: one point read each, answered by
    /// bloom filters when absent.
    fn dose_id_owner(&self, id: DoseId) -> Result<Option<Vec<u8>>> {
        for shard in &self.shards {
            if let Some(person) = shard.dose_ids.get(id.0.as_bytes())? {
                return Ok(Some(person.to_vec()));
            }
        }
        Ok(None)
    }

    fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, ShardCounters> {
        // A panic while holding the lock cannot leave the counters half-written (they are only
        // replaced after a successful commit), so a poisoned lock is safe to take over.
        shard
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn scan<T: serde::de::DeserializeOwned>(ks: &Keyspace) -> Result<Vec<T>> {
        ks.iter()
            .map(|guard| {
                let (key, value) = guard.into_inner()?;
                decode(&key, &value)
            })
            .collect()
    }

    fn put<T: serde::Serialize>(&self, ks: &Keyspace, key: &[u8], value: &T) -> Result<()> {
        let mut batch = durable(&self.catalog.db);
        batch.insert(ks, key, encode(value));
        Ok(batch.commit()?)
    }

    /// Registers under the shard lock; the caller holds `counters`.
    fn insert_people(
        shard: &Shard,
        counters: &mut ShardCounters,
        registrations: &[&Registration],
    ) -> Result<(Vec<Registered>, u64)> {
        let mut batch = durable(&shard.db);
        let mut outcomes = Vec::with_capacity(registrations.len());
        let mut created = 0u64;
        let mut pending: HashMap<&PersonCode, &Registration> = HashMap::new();
        for registration in registrations {
            let key = registration.person_code.as_str().as_bytes();
            if let Some(existing) = pending.get(&registration.person_code) {
                outcomes.push(Registered::Existing((*existing).clone()));
            } else if let Some(bytes) = shard.people.get(key)? {
                outcomes.push(Registered::Existing(decode(key, &bytes)?));
            } else {
                batch.insert(&shard.people, key, encode(*registration));
                pending.insert(&registration.person_code, registration);
                outcomes.push(Registered::Created((*registration).clone()));
                created += 1;
            }
        }
        if created > 0 {
            let total = counters.registrations + created;
            batch.insert(&shard.counters, codec::REGISTRATIONS, total.to_le_bytes());
            let mut districts: HashMap<District, u64> = HashMap::new();
            for registration in pending.values() {
                *districts
                    .entry(registration.area.district_key())
                    .or_default() += 1;
            }
            for (district, n) in &mut districts {
                *n += counters.districts.get(district).copied().unwrap_or(0);
                batch.insert(
                    &shard.counters,
                    codec::district_counter_key(district),
                    n.to_le_bytes(),
                );
            }
            batch.commit()?;
            counters.registrations = total;
            counters.districts.extend(districts);
        }
        Ok((outcomes, created))
    }
}

fn parse_shards(root: &Path, value: &[u8]) -> Result<usize> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::Corrupt {
            key: format!("{}/catalog/settings/shards", root.display()),
            reason: "not a number".into(),
        })
}

fn load_counters(counters: &Keyspace) -> Result<ShardCounters> {
    let mut loaded = ShardCounters::default();
    for guard in counters.iter() {
        let (key, value) = guard.into_inner()?;
        let count = codec::decode_u64(&key, &value)?;
        if key.as_ref() == codec::REGISTRATIONS {
            loaded.registrations = count;
        } else if key.as_ref() == codec::DOSES {
            loaded.doses = count;
        } else if let Some(lot) = codec::lot_counter_key_decode(&key) {
            loaded.lots.insert(lot, count);
        } else if let Some(district) = codec::district_counter_key_decode(&key) {
            loaded.districts.insert(district, count);
        }
    }
    Ok(loaded)
}

#[async_trait]
impl Store for EmbeddedStore {
    fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn backend_name(&self) -> &'static str {
        "embedded"
    }

    async fn put_site(&self, site: &Site) -> Result<()> {
        self.put(&self.catalog.sites, site.site_id.as_str().as_bytes(), site)
    }

    async fn sites(&self) -> Result<Vec<Site>> {
        Self::scan(&self.catalog.sites)
    }

    async fn put_product(&self, product: &Product) -> Result<()> {
        self.put(
            &self.catalog.products,
            product.code.as_str().as_bytes(),
            product,
        )
    }

    async fn products(&self) -> Result<Vec<Product>> {
        Self::scan(&self.catalog.products)
    }

    async fn put_lot(&self, lot: &Lot) -> Result<()> {
        self.put(&self.catalog.lots, &codec::lot_key(&lot.key()), lot)
    }

    async fn lots(&self) -> Result<Vec<Lot>> {
        Self::scan(&self.catalog.lots)
    }

    async fn put_credential(&self, credential: &Credential) -> Result<()> {
        self.put(
            &self.catalog.credentials,
            &credential.token_sha256,
            credential,
        )
    }

    async fn credentials(&self) -> Result<Vec<Credential>> {
        Self::scan(&self.catalog.credentials)
    }

    async fn setting(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .catalog
            .settings
            .get(name)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    async fn put_setting(&self, name: &str, value: &str) -> Result<()> {
        let mut batch = durable(&self.catalog.db);
        batch.insert(&self.catalog.settings, name, value);
        Ok(batch.commit()?)
    }

    async fn register(&self, registration: &Registration) -> Result<Registered> {
        let shard = self.shard_for(&registration.person_code);
        let mut counters = Self::lock(shard);
        let (mut outcomes, _) = Self::insert_people(shard, &mut counters, &[registration])?;
        outcomes
            .pop()
            .ok_or_else(|| StoreError::Engine("registration produced no outcome".into()))
    }

    async fn import_registrations(&self, registrations: &[Registration]) -> Result<ImportCounts> {
        let mut by_shard: Vec<Vec<&Registration>> = vec![Vec::new(); self.shards.len()];
        for registration in registrations {
            by_shard[shard_of(&registration.person_code, self.shards.len())].push(registration);
        }
        let mut counts = ImportCounts::default();
        for (shard, batch) in self.shards.iter().zip(&by_shard) {
            if batch.is_empty() {
                continue;
            }
            let mut counters = Self::lock(shard);
            let (_, created) = Self::insert_people(shard, &mut counters, batch)?;
            counts.created += created;
            counts.already_present += batch.len() as u64 - created;
        }
        Ok(counts)
    }

    async fn person(&self, code: &PersonCode) -> Result<Option<Registration>> {
        let key = code.as_str().as_bytes();
        self.shard_for(code)
            .people
            .get(key)?
            .map(|bytes| decode(key, &bytes))
            .transpose()
    }

    async fn people(&self, after: Option<&PersonCode>, limit: usize) -> Result<Vec<Registration>> {
        let lower: Bound<&[u8]> = match after {
            Some(code) => Bound::Excluded(code.as_str().as_bytes()),
            None => Bound::Unbounded,
        };
        let mut page = Vec::new();
        for shard in &self.shards {
            for guard in shard
                .people
                .range::<&[u8], _>((lower, Bound::Unbounded))
                .take(limit)
            {
                let (key, value) = guard.into_inner()?;
                page.push(decode::<Registration>(&key, &value)?);
            }
        }
        page.sort_by(|a, b| a.person_code.cmp(&b.person_code));
        page.truncate(limit);
        Ok(page)
    }

    async fn doses_of(&self, person: &PersonCode) -> Result<Vec<Dose>> {
        let shard = self.shard_for(person);
        let mut doses = shard
            .doses
            .prefix(codec::person_prefix(person))
            .map(|guard| {
                let (key, value) = guard.into_inner()?;
                decode::<Dose>(&key, &value)
            })
            .collect::<Result<Vec<_>>>()?;
        doses.sort_by_key(|d| (d.dose_number, d.administered_at));
        Ok(doses)
    }

    async fn find_doses(&self, ids: &[DoseId]) -> Result<Vec<Dose>> {
        let mut found = Vec::new();
        for id in ids {
            for shard in &self.shards {
                let Some(person) = shard.dose_ids.get(id.0.as_bytes())? else {
                    continue;
                };
                let key = codec::dose_key_raw(&person, *id);
                if let Some(bytes) = shard.doses.get(&key)? {
                    found.push(decode(&key, &bytes)?);
                }
            }
        }
        Ok(found)
    }

    async fn commit_doses(&self, shard_index: usize, doses: &[Dose]) -> Result<()> {
        let Some(shard) = self.shards.get(shard_index) else {
            return Err(StoreError::Engine(format!("no shard {shard_index}")));
        };
        let mut counters = Self::lock(shard);
        let mut batch = durable(&shard.db);
        let mut added = 0u64;
        let mut lots: HashMap<LotKey, u64> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        let mut conflict = None;
        for dose in doses {
            if shard_of(&dose.person_code, self.shards.len()) != shard_index {
                return Err(StoreError::Engine(format!(
                    "dose {} belongs to another shard",
                    dose.dose_id
                )));
            }
            if !seen.insert(dose.dose_id) {
                continue;
            }
            // The id stored for someone else, in this shard or another (the same id sent for two
            // people): not written, reported once the rest is committed. Stored for this person
            // (a retry after an ambiguous failure): not written or counted again.
            if let Some(owner) = self.dose_id_owner(dose.dose_id)? {
                if owner != dose.person_code.as_str().as_bytes() {
                    conflict.get_or_insert_with(|| StoreError::DoseConflict {
                        dose_id: dose.dose_id.to_string(),
                        recorded_for: String::from_utf8_lossy(&owner).into_owned(),
                        sent_for: dose.person_code.to_string(),
                    });
                }
                continue;
            }
            let key = codec::dose_key(&dose.person_code, dose.dose_id);
            batch.insert(&shard.doses, key, encode(dose));
            batch.insert(
                &shard.dose_ids,
                dose.dose_id.0.as_bytes().to_vec(),
                dose.person_code.as_str().as_bytes().to_vec(),
            );
            *lots.entry(dose.lot_key()).or_default() += 1;
            added += 1;
        }
        if added == 0 {
            return conflict.map_or(Ok(()), Err);
        }
        let doses_total = counters.doses + added;
        batch.insert(&shard.counters, codec::DOSES, doses_total.to_le_bytes());
        for (lot, n) in &lots {
            let total = counters.lots.get(lot).copied().unwrap_or(0) + n;
            batch.insert(
                &shard.counters,
                codec::lot_counter_key(lot),
                total.to_le_bytes(),
            );
        }
        batch.commit()?;
        counters.doses = doses_total;
        for (lot, n) in lots {
            *counters.lots.entry(lot).or_default() += n;
        }
        conflict.map_or(Ok(()), Err)
    }

    async fn totals(&self) -> Result<Totals> {
        let mut totals = Totals::default();
        for shard in &self.shards {
            let counters = Self::lock(shard);
            totals.registrations += counters.registrations;
            totals.doses += counters.doses;
            for (lot, n) in &counters.lots {
                *totals.lot_usage.entry(lot.clone()).or_default() += n;
            }
            for (district, n) in &counters.districts {
                *totals
                    .registrations_by_district
                    .entry(district.clone())
                    .or_default() += n;
            }
        }
        Ok(totals)
    }

    async fn correct_registration(&self, registration: &Registration) -> Result<()> {
        let shard = self.shard_for(&registration.person_code);
        let mut counters = Self::lock(shard);
        let key = registration.person_code.as_str().as_bytes();
        let Some(bytes) = shard.people.get(key)? else {
            return Err(StoreError::Engine(format!(
                "no registration {} to correct",
                registration.person_code
            )));
        };
        let previous: Registration = decode(key, &bytes)?;
        let mut batch = durable(&shard.db);
        batch.insert(&shard.people, key, encode(registration));
        // A corrected address moves the person between districts' counts.
        let (from, to) = (
            previous.area.district_key(),
            registration.area.district_key(),
        );
        let mut moved = Vec::new();
        if from != to {
            let left = counters
                .districts
                .get(&from)
                .copied()
                .unwrap_or(0)
                .saturating_sub(1);
            let arrived = counters.districts.get(&to).copied().unwrap_or(0) + 1;
            batch.insert(
                &shard.counters,
                codec::district_counter_key(&from),
                left.to_le_bytes(),
            );
            batch.insert(
                &shard.counters,
                codec::district_counter_key(&to),
                arrived.to_le_bytes(),
            );
            moved = vec![(from, left), (to, arrived)];
        }
        batch.commit()?;
        counters.districts.extend(moved);
        Ok(())
    }

    async fn correct_dose(&self, shard_index: usize, corrected: &Dose) -> Result<()> {
        let Some(shard) = self.shards.get(shard_index) else {
            return Err(StoreError::Engine(format!("no shard {shard_index}")));
        };
        let mut counters = Self::lock(shard);
        let key = codec::dose_key(&corrected.person_code, corrected.dose_id);
        let Some(bytes) = shard.doses.get(&key)? else {
            return Err(StoreError::Engine(format!(
                "no dose {} to correct",
                corrected.dose_id
            )));
        };
        let old: Dose = decode(&key, &bytes)?;
        let mut batch = durable(&shard.db);
        batch.insert(&shard.doses, key, encode(corrected));
        let (old_lot, new_lot) = (old.lot_key(), corrected.lot_key());
        let moved = old_lot != new_lot;
        let old_total = counters
            .lots
            .get(&old_lot)
            .copied()
            .unwrap_or(0)
            .saturating_sub(1);
        let new_total = counters.lots.get(&new_lot).copied().unwrap_or(0) + 1;
        if moved {
            batch.insert(
                &shard.counters,
                codec::lot_counter_key(&old_lot),
                old_total.to_le_bytes(),
            );
            batch.insert(
                &shard.counters,
                codec::lot_counter_key(&new_lot),
                new_total.to_le_bytes(),
            );
        }
        batch.commit()?;
        if moved {
            counters.lots.insert(old_lot, old_total);
            counters.lots.insert(new_lot, new_total);
        }
        Ok(())
    }

    async fn revoke_certificates(&self, revocations: &[Revocation]) -> Result<()> {
        let mut batch = durable(&self.catalog.db);
        for revocation in revocations {
            batch.insert(
                &self.catalog.revocations,
                revocation.certificate_id.as_bytes().to_vec(),
                encode(revocation),
            );
        }
        Ok(batch.commit()?)
    }

    async fn revocations(&self) -> Result<Vec<Revocation>> {
        Self::scan(&self.catalog.revocations)
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        let sequence = self.audit_sequence.fetch_add(1, Ordering::Relaxed);
        let key = codec::audit_key(record.at, sequence);
        let mut batch = durable(&self.catalog.db);
        batch.insert(&self.catalog.audit, key, encode_json(record));
        Ok(batch.commit()?)
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        self.catalog
            .audit
            .iter()
            .rev()
            .take(limit)
            .map(|guard| {
                let (key, value) = guard.into_inner()?;
                decode(&key, &value)
            })
            .collect()
    }

    async fn close(&self) -> Result<()> {
        self.catalog.db.persist(PersistMode::SyncAll)?;
        for shard in &self.shards {
            shard.db.persist(PersistMode::SyncAll)?;
        }
        Ok(())
    }
}

/// The current time, truncated to whole seconds: stored times round-trip through RFC 3339 and
/// compare equal on retry.
pub fn now_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopening_with_another_shard_count_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = EmbeddedOptions {
            shards: 2,
            ..EmbeddedOptions::default()
        };
        drop(EmbeddedStore::create(dir.path(), &options).expect("create"));
        let other = EmbeddedOptions {
            shards: 3,
            ..EmbeddedOptions::default()
        };
        match EmbeddedStore::create(dir.path(), &other) {
            Err(StoreError::ShardCountMismatch {
                found: 2,
                expected: 3,
                ..
            }) => {}
            other => panic!("expected a shard count mismatch, got {other:?}"),
        }
        let reopened =
            EmbeddedStore::open(dir.path(), &other).expect("open reads the stored count");
        assert_eq!(reopened.shard_count(), 2);
    }

    #[test]
    fn opening_an_empty_directory_says_to_init() {
        let dir = tempfile::tempdir().expect("tempdir");
        match EmbeddedStore::open(dir.path(), &EmbeddedOptions::default()) {
            Err(e @ StoreError::NotInitialized { .. }) => {
                assert!(e.to_string().contains("vaxcamp init"))
            }
            other => panic!("expected NotInitialized, got {other:?}"),
        }
    }

    #[test]
    fn a_second_process_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = EmbeddedOptions {
            shards: 2,
            ..EmbeddedOptions::default()
        };
        let _first = EmbeddedStore::create(dir.path(), &options).expect("create");
        match EmbeddedStore::open(dir.path(), &options) {
            Err(e @ StoreError::Locked { .. }) => assert!(e.to_string().contains("in use")),
            other => panic!("expected Locked, got {other:?}"),
        }
    }
}
