//! The durable outbox between the dose commit and the analytics backend.
//!
//! The shard writer appends the rows of a group commit after the store has made the doses
//! durable and before it answers, so every acknowledged dose is either in the outbox on disk or
//! already shipped. (A crash between the store commit and the append leaves a dose the client was
//! never told about; its retry is answered as a duplicate and appends the row again — replays are
//! free, see [`crate::Analytics`].) The dose path never waits for the backend: the outbox only
//! grows while ClickHouse is slow or away, up to `max_bytes` on disk; beyond that rows are
//! dropped and counted (vaccination does not stop for analytics). The count is kept on disk, so
//! the alert it raises survives a restart: the analytics figures undercount by that many rows
//! until they are rebuilt.
//!
//! Nothing in the outbox may stop the server or the shipper for good. An entry that cannot be
//! read (a torn write, a format from another release) and a row the analytics schema cannot
//! hold (see [`Event::unrepresentable`]) are moved to the `set_aside` keyspace with the reason,
//! counted and logged, and shipping goes on with the rest.
//!
//! A correction is the one write whose rows cannot be rebuilt by a retry: once the store holds
//! the corrected record, a retry changes nothing and produces no rows, and the store keeps no
//! earlier version to retract. So its rows are written down *before* the store commit as an
//! *intent* ([`Outbox::intend`]), not shipped, and moved into the queue once the store has said
//! ([`Outbox::confirm`]) or dropped when it did not take the correction ([`Outbox::abandon`]).
//! Intents a crash left behind are settled at start-up against the store ([`Outbox::intents`]).
//!
//! Layout: one fjall database. Keyspace `entries`: key = sequence number (big-endian u64),
//! value = postcard [`Entry`]. Keyspace `intents`: key = intent number, value = postcard
//! [`Entry`]. Keyspace `set_aside`: key = sequence number, value = postcard
//! [`SetAside`]. Keyspace `meta`: running counts that must survive a restart. Sequence numbers are taken before the write; the shipper reads
//! only below the lowest sequence still being written (the *watermark*) so that it never skips
//! an entry that commits late, and reads from its own cursor so that it never walks over the
//! tombstones of entries already shipped.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::row::{Event, nanos};
use crate::{AnalyticsError, Result};

const FORMAT_TAG: u8 = 1;
/// Key in `meta` of the rows dropped because the outbox was full (big-endian u64).
const META_DROPPED_ROWS: &[u8] = b"dropped_rows";

/// What one append wrote: the rows of one group commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Nanoseconds since the epoch when the entry was appended (for the lag).
    pub appended_at: u64,
    pub events: Vec<Event>,
}

/// Something taken out of the shipping queue because it could not be shipped, kept for an
/// operator to look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAside {
    /// Nanoseconds since the epoch when it was set aside.
    pub at: u64,
    pub reason: String,
    /// The event, when it could be read.
    pub event: Option<Event>,
    /// The raw stored bytes, when the entry could not be read.
    pub raw: Vec<u8>,
}

/// A read from the head of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub sequence: u64,
    pub entry: Entry,
    /// Encoded size on disk.
    pub bytes: u64,
}

/// The outbox as the status endpoint and the console see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxStatus {
    /// Entries (group commits) waiting to be shipped.
    pub entries: u64,
    /// Rows waiting to be shipped.
    pub rows: u64,
    /// Encoded bytes waiting (what the bound applies to).
    pub bytes: u64,
    pub max_bytes: u64,
    /// Rows dropped because the outbox was full. Kept on disk: analytics undercount by this
    /// many rows until they are rebuilt.
    pub dropped_rows: u64,
    /// Rows and unreadable entries set aside instead of shipped (see the module docs).
    pub set_aside: u64,
    /// Age in milliseconds of the oldest entry still waiting (0 when empty).
    pub oldest_age_ms: u64,
}

/// The on-disk queue of rows not yet shipped.
pub struct Outbox {
    db: Database,
    entries: Keyspace,
    intents: Keyspace,
    set_aside: Keyspace,
    meta: Keyspace,
    max_bytes: u64,
    next_sequence: AtomicU64,
    /// Sequences taken but not yet committed.
    writing: Mutex<BTreeSet<u64>>,
    /// Everything below this has been shipped (owned by the single shipper).
    cursor: AtomicU64,
    bytes: AtomicU64,
    rows: AtomicU64,
    count: AtomicU64,
    dropped_rows: AtomicU64,
    set_aside_count: AtomicU64,
    next_set_aside: AtomicU64,
    next_intent: AtomicU64,
    /// Woken on every append, so the shipper does not poll an idle outbox.
    pub(crate) appended: Notify,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// What [`Outbox::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Durable on disk.
    Stored,
    /// Over the bound; the rows were dropped and counted.
    Dropped,
    /// Nothing to append.
    Empty,
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, bounded to `max_bytes` of waiting rows.
    ///
    /// Entries that cannot be read are set aside (logged and counted), not fatal: the dose path
    /// must start whatever the outbox holds.
    ///
    /// # Errors
    /// When the directory cannot be opened or read.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        let db = Database::builder(dir)
            .cache_size(8 * 1024 * 1024)
            .open()
            .map_err(|e| match e {
                fjall::Error::Locked => AnalyticsError::Invalid(format!(
                    "the analytics outbox in {} is in use by another process",
                    dir.display()
                )),
                other => other.into(),
            })?;
        let entries = db.keyspace("entries", || {
            KeyspaceCreateOptions::default().max_memtable_size(8 * 1024 * 1024)
        })?;
        let intents = db.keyspace("intents", KeyspaceCreateOptions::default)?;
        let set_aside = db.keyspace("set_aside", KeyspaceCreateOptions::default)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let dropped_rows = meta
            .get(META_DROPPED_ROWS)?
            .and_then(|v| <[u8; 8]>::try_from(&*v).ok())
            .map_or(0, u64::from_be_bytes);
        let next_set_aside = next_key(&set_aside)?;
        let next_intent = next_key(&intents)?;
        let outbox = Self {
            db,
            entries,
            intents,
            set_aside,
            meta,
            max_bytes,
            next_sequence: AtomicU64::new(0),
            writing: Mutex::new(BTreeSet::new()),
            cursor: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            count: AtomicU64::new(0),
            dropped_rows: AtomicU64::new(dropped_rows),
            set_aside_count: AtomicU64::new(0),
            next_set_aside: AtomicU64::new(next_set_aside),
            next_intent: AtomicU64::new(next_intent),
            appended: Notify::new(),
        };
        outbox
            .set_aside_count
            .store(outbox.set_aside.len()? as u64, Ordering::Relaxed);
        let (mut first, mut last, mut bytes, mut rows, mut count) = (None, None, 0u64, 0u64, 0u64);
        let mut unreadable = Vec::new();
        for guard in outbox.entries.iter() {
            let (key, value) = guard.into_inner()?;
            let Ok(sequence) = decode_key(&key) else {
                unreadable.push((key.to_vec(), value.to_vec()));
                continue;
            };
            // Sequence numbers are never reused, even past an unreadable entry.
            last = Some(sequence);
            match decode_entry(&key, &value) {
                Ok(entry) => {
                    first.get_or_insert(sequence);
                    bytes += value.len() as u64;
                    rows += entry.events.len() as u64;
                    count += 1;
                }
                Err(e) => {
                    tracing::error!(sequence, error = %e, "unreadable analytics outbox entry set aside");
                    unreadable.push((key.to_vec(), value.to_vec()));
                }
            }
        }
        for (key, value) in unreadable {
            outbox.set_aside_unreadable(&outbox.entries, &key, value, "unreadable outbox entry")?;
        }
        outbox
            .next_sequence
            .store(last.map_or(0, |s| s + 1), Ordering::Relaxed);
        outbox.cursor.store(first.unwrap_or(0), Ordering::Relaxed);
        outbox.bytes.store(bytes, Ordering::Relaxed);
        outbox.rows.store(rows, Ordering::Relaxed);
        outbox.count.store(count, Ordering::Relaxed);
        Ok(outbox)
    }

    /// Appends the rows of one commit, durably. Called from the shard writers' threads.
    ///
    /// # Errors
    /// When the write or its fsync fails (the caller logs it; the doses are committed already).
    pub fn append(&self, events: Vec<Event>) -> Result<Appended> {
        if events.is_empty() {
            return Ok(Appended::Empty);
        }
        let rows = events.len() as u64;
        let value = encode_entry(&Entry {
            appended_at: nanos(OffsetDateTime::now_utc()),
            events,
        });
        self.insert_entry(value, rows, None)
    }

    /// Stores one encoded entry at the tail, within the bound; with `intent`, removes that
    /// intent in the same durable batch (or, when the entry is dropped, on its own).
    fn insert_entry(&self, value: Vec<u8>, rows: u64, intent: Option<u64>) -> Result<Appended> {
        let size = value.len() as u64;
        // Reserve the room first, so that shard writers appending at once cannot together pass
        // the bound; a failed write gives the room back.
        let reserved = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bytes| {
                bytes
                    .checked_add(size)
                    .filter(|&after| after <= self.max_bytes)
            });
        if reserved.is_err() {
            if let Some(intent) = intent {
                self.abandon(intent)?;
            }
            self.count_dropped(rows);
            return Ok(Appended::Dropped);
        }
        let sequence = {
            let mut writing = self.lock_writing();
            let sequence = self.next_sequence.fetch_add(1, Ordering::Relaxed);
            writing.insert(sequence);
            sequence
        };
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        batch.insert(&self.entries, sequence.to_be_bytes(), value);
        if let Some(intent) = intent {
            batch.remove(&self.intents, intent.to_be_bytes());
        }
        let committed = batch.commit();
        self.lock_writing().remove(&sequence);
        if let Err(e) = committed {
            sub_saturating(&self.bytes, size);
            return Err(e.into());
        }
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.appended.notify_one();
        Ok(Appended::Stored)
    }

    /// Writes down, durably, the rows a correction will produce, before the store commits it.
    /// They are not shipped until [`confirm`](Self::confirm)ed. Returns the intent's number, or
    /// `None` when there are no rows.
    ///
    /// # Errors
    /// When the write or its fsync fails.
    pub fn intend(&self, events: Vec<Event>) -> Result<Option<u64>> {
        if events.is_empty() {
            return Ok(None);
        }
        let intent = self.next_intent.fetch_add(1, Ordering::Relaxed);
        let value = encode_entry(&Entry {
            appended_at: nanos(OffsetDateTime::now_utc()),
            events,
        });
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        batch.insert(&self.intents, intent.to_be_bytes(), value);
        batch.commit()?;
        Ok(Some(intent))
    }

    /// The store holds the correction: moves its rows into the queue, in one durable batch
    /// (within the bound, like any append). Confirming an intent that is gone does nothing.
    ///
    /// # Errors
    /// When the intent cannot be read or the write fails (the intent then stays, and is
    /// settled again at the next start).
    pub fn confirm(&self, intent: u64) -> Result<Appended> {
        let key = intent.to_be_bytes();
        let Some(value) = self.intents.get(key)? else {
            return Ok(Appended::Empty);
        };
        let mut entry = decode_entry(&key, &value)?;
        // The lag counts from the confirmation: the rows could not ship before it.
        entry.appended_at = nanos(OffsetDateTime::now_utc());
        let rows = entry.events.len() as u64;
        self.insert_entry(encode_entry(&entry), rows, Some(intent))
    }

    /// The store does not hold the correction: forgets its rows.
    ///
    /// # Errors
    /// When the deletion cannot be written.
    pub fn abandon(&self, intent: u64) -> Result<()> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        batch.remove(&self.intents, intent.to_be_bytes());
        Ok(batch.commit()?)
    }

    /// The intents not yet confirmed or abandoned, oldest first, for the start-up to settle
    /// against the store. One that cannot be read is set aside (its correction then never
    /// reaches analytics, and the set-aside alert says so).
    ///
    /// # Errors
    /// When the outbox cannot be read.
    pub fn intents(&self) -> Result<Vec<(u64, Vec<Event>)>> {
        let mut out = Vec::new();
        let mut unreadable = Vec::new();
        for guard in self.intents.iter() {
            let (key, value) = guard.into_inner()?;
            match decode_key(&key).and_then(|intent| Ok((intent, decode_entry(&key, &value)?))) {
                Ok((intent, entry)) => out.push((intent, entry.events)),
                Err(e) => {
                    tracing::error!(error = %e, "unreadable correction intent set aside");
                    unreadable.push((key.to_vec(), value.to_vec()));
                }
            }
        }
        for (key, value) in unreadable {
            self.set_aside_unreadable(&self.intents, &key, value, "unreadable correction intent")?;
        }
        Ok(out)
    }

    /// Up to `max_rows` rows (whole entries, at least one entry) from the head, in order.
    /// Entries that cannot be decoded are set aside on the way.
    ///
    /// # Errors
    /// When the outbox cannot be read.
    pub fn peek(&self, max_rows: usize) -> Result<Vec<Pending>> {
        let watermark = {
            let writing = self.lock_writing();
            writing
                .first()
                .copied()
                .unwrap_or_else(|| self.next_sequence.load(Ordering::Relaxed))
        };
        let cursor = self.cursor.load(Ordering::Relaxed);
        let mut out = Vec::new();
        let mut rows = 0;
        if cursor >= watermark {
            return Ok(out);
        }
        let range = (
            Bound::Included(cursor.to_be_bytes()),
            Bound::Excluded(watermark.to_be_bytes()),
        );
        let mut unreadable = Vec::new();
        for guard in self.entries.range(range) {
            let (key, value) = guard.into_inner()?;
            let decoded =
                decode_key(&key).and_then(|sequence| Ok((sequence, decode_entry(&key, &value)?)));
            let (sequence, entry) = match decoded {
                Ok(decoded) => decoded,
                Err(e) => {
                    tracing::error!(error = %e, "unreadable analytics outbox entry set aside");
                    unreadable.push((key.to_vec(), value.to_vec()));
                    continue;
                }
            };
            rows += entry.events.len();
            out.push(Pending {
                sequence,
                entry,
                bytes: value.len() as u64,
            });
            if rows >= max_rows {
                break;
            }
        }
        for (key, value) in unreadable {
            let size = value.len() as u64;
            self.set_aside_unreadable(&self.entries, &key, value, "unreadable outbox entry")?;
            sub_saturating(&self.bytes, size);
            sub_saturating(&self.count, 1);
        }
        Ok(out)
    }

    /// Keeps events that cannot be shipped (see [`Event::unrepresentable`]) out of the way, with
    /// the reason, instead of retrying them forever in front of everything else. The caller
    /// removes their entries from the queue as usual once the rest of the batch is shipped.
    ///
    /// # Errors
    /// When the write fails (the events are then retried with their batch).
    pub fn set_aside_events(&self, events: &[(Event, String)]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let at = nanos(OffsetDateTime::now_utc());
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        for (event, reason) in events {
            let record = SetAside {
                at,
                reason: reason.clone(),
                event: Some(event.clone()),
                raw: Vec::new(),
            };
            let sequence = self.next_set_aside.fetch_add(1, Ordering::Relaxed);
            batch.insert(&self.set_aside, sequence.to_be_bytes(), encode(&record));
        }
        batch.commit()?;
        self.set_aside_count
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Everything set aside so far, oldest first (for an operator; never read by the dose path).
    ///
    /// # Errors
    /// When the outbox cannot be read.
    pub fn set_aside_records(&self) -> Result<Vec<SetAside>> {
        let mut out = Vec::new();
        for guard in self.set_aside.iter() {
            let (key, value) = guard.into_inner()?;
            out.push(match value.split_first() {
                Some((&FORMAT_TAG, rest)) => {
                    postcard::from_bytes(rest).unwrap_or_else(|e| SetAside {
                        at: 0,
                        reason: format!("set-aside record {key:?} is unreadable: {e}"),
                        event: None,
                        raw: value.to_vec(),
                    })
                }
                _ => SetAside {
                    at: 0,
                    reason: format!("set-aside record {key:?} has an unknown format"),
                    event: None,
                    raw: value.to_vec(),
                },
            });
        }
        Ok(out)
    }

    /// Moves one unreadable record from `from` (`entries` or `intents`) to `set_aside`, in one
    /// durable batch.
    fn set_aside_unreadable(
        &self,
        from: &Keyspace,
        key: &[u8],
        raw: Vec<u8>,
        reason: &str,
    ) -> Result<()> {
        let record = SetAside {
            at: nanos(OffsetDateTime::now_utc()),
            reason: reason.to_owned(),
            event: None,
            raw,
        };
        let sequence = self.next_set_aside.fetch_add(1, Ordering::Relaxed);
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        batch.remove(from, key.to_vec());
        batch.insert(&self.set_aside, sequence.to_be_bytes(), encode(&record));
        batch.commit()?;
        self.set_aside_count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Counts dropped rows, in memory and on disk (not fsynced: the count is an alarm, and a
    /// lost increment after a power cut does not hide an outbox that keeps overflowing).
    fn count_dropped(&self, rows: u64) {
        // Under the writers' lock, so two writers cannot store their totals out of order and
        // leave a smaller count on disk than was counted.
        let _in_order = self.lock_writing();
        let total = self.dropped_rows.fetch_add(rows, Ordering::Relaxed) + rows;
        if let Err(e) = self.meta.insert(META_DROPPED_ROWS, total.to_be_bytes()) {
            tracing::warn!(error = %e, "could not record the dropped-row count on disk");
        }
    }

    /// Removes entries the backend has accepted and moves the cursor past them.
    ///
    /// # Errors
    /// When the deletion cannot be written (the entries are then shipped again: harmless).
    pub fn remove(&self, shipped: &[Pending]) -> Result<()> {
        let Some(last) = shipped.last() else {
            return Ok(());
        };
        // Not fsynced: if the deletion is lost in a crash the entries are replayed, which the
        // backends absorb.
        let mut batch = self.db.batch();
        let mut bytes = 0u64;
        let mut rows = 0u64;
        for pending in shipped {
            batch.remove(&self.entries, pending.sequence.to_be_bytes());
            bytes += pending.bytes;
            rows += pending.entry.events.len() as u64;
        }
        batch.commit()?;
        self.cursor.store(last.sequence + 1, Ordering::Relaxed);
        sub_saturating(&self.bytes, bytes);
        sub_saturating(&self.rows, rows);
        sub_saturating(&self.count, shipped.len() as u64);
        Ok(())
    }

    pub fn status(&self) -> OutboxStatus {
        let cursor = self.cursor.load(Ordering::Relaxed);
        let oldest_age_ms = self
            .entries
            .range((Bound::Included(cursor.to_be_bytes()), Bound::Unbounded))
            .next()
            .and_then(|guard| guard.into_inner().ok())
            .and_then(|(key, value)| decode_entry(&key, &value).ok())
            .map_or(0, |entry| {
                nanos(OffsetDateTime::now_utc()).saturating_sub(entry.appended_at) / 1_000_000
            });
        OutboxStatus {
            entries: self.count.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            max_bytes: self.max_bytes,
            dropped_rows: self.dropped_rows.load(Ordering::Relaxed),
            set_aside: self.set_aside_count.load(Ordering::Relaxed),
            oldest_age_ms,
        }
    }

    /// Makes everything appended durable (already so) and flushes the deletions.
    ///
    /// # Errors
    /// When the flush fails.
    pub fn close(&self) -> Result<()> {
        Ok(self.db.persist(PersistMode::SyncAll)?)
    }

    fn lock_writing(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn encode_entry(entry: &Entry) -> Vec<u8> {
    encode(entry)
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our own types into a Vec: postcard cannot fail here; an empty value would fail loudly on
    // decode rather than be misread.
    postcard::to_extend(value, vec![FORMAT_TAG]).unwrap_or_default()
}

/// Subtracts without wrapping below zero (the counters are estimates kept beside the data).
fn sub_saturating(counter: &AtomicU64, amount: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(amount))
    });
}

fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry> {
    match value.split_first() {
        Some((&FORMAT_TAG, rest)) => {
            postcard::from_bytes(rest).map_err(|e| AnalyticsError::Corrupt {
                key: format!("outbox/{key:?}"),
                reason: e.to_string(),
            })
        }
        _ => Err(AnalyticsError::Corrupt {
            key: format!("outbox/{key:?}"),
            reason: "unknown format tag".into(),
        }),
    }
}

/// The number after the last key of a keyspace keyed by big-endian numbers (0 when empty).
fn next_key(keyspace: &Keyspace) -> Result<u64> {
    Ok(keyspace
        .iter()
        .next_back()
        .map(|guard| guard.key())
        .transpose()?
        .and_then(|key| decode_key(&key).ok())
        .map_or(0, |n| n + 1))
}

fn decode_key(key: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| AnalyticsError::Corrupt {
        key: format!("outbox/{key:?}"),
        reason: "key is not a sequence number".into(),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::StockMovement;
    use uuid::Uuid;

    fn event(n: i64) -> Event {
        old_stock(StockMovement {
            movement_id: Uuid::from_u128(n as u128),
            site_id: "hn-01".into(),
            product: "COMIRNATY".into(),
            lot_number: "FK1".into(),
            quantity: n,
            reason: "received".into(),
            at: OffsetDateTime::UNIX_EPOCH,
        })
    }

    /// A previous release's stock row, as it decodes: a lot announcement.
    fn old_stock(movement: StockMovement) -> Event {
        Event::Lot(movement.as_allocation())
    }

    #[test]
    fn entries_survive_a_reopen_in_order_and_leave_once_shipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let outbox = Outbox::open(dir.path(), 1 << 20).expect("open");
            for n in 0..5 {
                assert_eq!(
                    outbox.append(vec![event(n)]).expect("append"),
                    Appended::Stored
                );
            }
            let head = outbox.peek(2).expect("peek");
            assert_eq!(head.len(), 2);
            outbox.remove(&head).expect("remove");
            outbox.close().expect("close");
        }
        let outbox = Outbox::open(dir.path(), 1 << 20).expect("reopen");
        let rest = outbox.peek(100).expect("peek");
        let quantities: Vec<i64> = rest
            .iter()
            .flat_map(|p| &p.entry.events)
            .map(|e| match e {
                Event::Lot(lot) => lot.quantity as i64,
                _ => -1,
            })
            .collect();
        assert_eq!(quantities, vec![2, 3, 4]);
        assert_eq!(outbox.status().rows, 3);
        // New appends continue after the old sequence numbers.
        outbox.append(vec![event(5)]).expect("append");
        assert_eq!(outbox.peek(100).expect("peek").len(), 4);
    }

    #[test]
    fn a_full_outbox_drops_and_counts_rather_than_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(dir.path(), 200).expect("open");
        let mut stored = 0;
        for n in 0..20 {
            if outbox.append(vec![event(n), event(n)]).expect("append") == Appended::Stored {
                stored += 1;
            }
        }
        let status = outbox.status();
        assert!(stored > 0 && stored < 20, "stored {stored}");
        assert_eq!(status.dropped_rows, (20 - stored) * 2);
        assert!(status.bytes <= 200);
        // Shipping makes room again.
        let head = outbox.peek(1000).expect("peek");
        outbox.remove(&head).expect("remove");
        assert_eq!(
            outbox.append(vec![event(99)]).expect("append"),
            Appended::Stored
        );
    }

    #[test]
    fn an_unreadable_entry_is_set_aside_and_the_rest_still_ship() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let outbox = Outbox::open(dir.path(), 1 << 20).expect("open");
            outbox.append(vec![event(1)]).expect("append");
            // A value no release of ours wrote (another format tag), between two good entries.
            outbox
                .entries
                .insert(1u64.to_be_bytes(), [9u8, 1, 2, 3])
                .expect("insert");
            outbox.next_sequence.store(2, Ordering::Relaxed);
            outbox.append(vec![event(3)]).expect("append");
            outbox.close().expect("close");
        }
        let outbox = Outbox::open(dir.path(), 1 << 20).expect("the server still starts");
        let status = outbox.status();
        assert_eq!((status.set_aside, status.rows, status.entries), (1, 2, 2));
        let head = outbox.peek(100).expect("peek");
        let sequences: Vec<u64> = head.iter().map(|p| p.sequence).collect();
        assert_eq!(sequences, vec![0, 2]);
        let kept = outbox.set_aside_records().expect("records");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].raw, vec![9, 1, 2, 3]);
        assert_eq!(kept[0].event, None);
        // A new append does not reuse the unreadable entry's sequence number.
        outbox.append(vec![event(4)]).expect("append");
        let last = outbox.peek(100).expect("peek").last().map(|p| p.sequence);
        assert_eq!(last, Some(3));
    }

    #[test]
    fn the_dropped_row_count_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let outbox = Outbox::open(dir.path(), 1).expect("open");
            assert_eq!(
                outbox.append(vec![event(1), event(2)]).expect("append"),
                Appended::Dropped
            );
            outbox.close().expect("close");
        }
        let outbox = Outbox::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(outbox.status().dropped_rows, 2);
    }

    fn quantities(outbox: &Outbox) -> Vec<i64> {
        outbox
            .peek(1000)
            .expect("peek")
            .iter()
            .flat_map(|p| &p.entry.events)
            .map(|e| match e {
                Event::Lot(lot) => lot.quantity as i64,
                _ => -1,
            })
            .collect()
    }

    #[test]
    fn an_intent_ships_only_once_confirmed_and_survives_a_restart_until_settled() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let outbox = Outbox::open(dir.path(), 1 << 20).expect("open");
            assert_eq!(outbox.intend(Vec::new()).expect("intend"), None);
            let confirmed = outbox
                .intend(vec![event(1)])
                .expect("intend")
                .expect("rows");
            let abandoned = outbox
                .intend(vec![event(2)])
                .expect("intend")
                .expect("rows");
            let _crashed = outbox.intend(vec![event(3), event(4)]).expect("intend");
            assert_eq!(outbox.status().rows, 0, "intents are not in the queue");
            assert_eq!(quantities(&outbox), Vec::<i64>::new());
            assert_eq!(
                outbox.confirm(confirmed).expect("confirm"),
                Appended::Stored
            );
            outbox.abandon(abandoned).expect("abandon");
            assert_eq!(quantities(&outbox), vec![1]);
            assert_eq!(
                outbox.confirm(confirmed).expect("again"),
                Appended::Empty,
                "a confirmed intent is gone: confirming it again adds nothing"
            );
            outbox.close().expect("close");
        }
        // What a crash left: the third intent, for the start-up to settle.
        let outbox = Outbox::open(dir.path(), 1 << 20).expect("reopen");
        let left = outbox.intents().expect("intents");
        assert_eq!(left.len(), 1);
        let (intent, events) = &left[0];
        assert_eq!(events, &vec![event(3), event(4)]);
        assert_eq!(outbox.confirm(*intent).expect("confirm"), Appended::Stored);
        assert_eq!(quantities(&outbox), vec![1, 3, 4]);
        assert_eq!(outbox.status().rows, 3);
        assert_eq!(outbox.intents().expect("intents"), Vec::new());
        // New intents do not reuse old numbers.
        let next = outbox.intend(vec![event(5)]).expect("intend");
        assert_eq!(next, Some(intent + 1));
    }

    #[test]
    fn a_confirmed_intent_over_the_bound_is_dropped_counted_and_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(dir.path(), 1).expect("open");
        let intent = outbox.intend(vec![event(1), event(2)]).expect("intend");
        let intent = intent.expect("rows");
        assert_eq!(outbox.confirm(intent).expect("confirm"), Appended::Dropped);
        assert_eq!(outbox.status().dropped_rows, 2);
        assert_eq!(outbox.intents().expect("intents"), Vec::new());
    }

    #[test]
    fn an_unreadable_intent_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outbox = Outbox::open(dir.path(), 1 << 20).expect("open");
        outbox.intend(vec![event(1)]).expect("intend");
        outbox
            .intents
            .insert(7u64.to_be_bytes(), [9u8, 1, 2])
            .expect("insert");
        let left = outbox.intents().expect("intents");
        assert_eq!(left.len(), 1, "the readable one");
        assert_eq!(outbox.status().set_aside, 1);
        assert_eq!(
            outbox.set_aside_records().expect("records")[0].raw,
            vec![9, 1, 2]
        );
    }

    #[test]
    fn writers_appending_at_once_never_pass_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one_entry = encode_entry(&Entry {
            appended_at: 0,
            events: vec![event(1)],
        })
        .len() as u64;
        // Room for exactly ten entries of this size (the timestamp's varint may be a byte
        // longer than the zero above, so allow for it).
        let max = 10 * (one_entry + 9);
        let outbox = std::sync::Arc::new(Outbox::open(dir.path(), max).expect("open"));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let outbox = outbox.clone();
                std::thread::spawn(move || {
                    (0..20)
                        .filter(|n| {
                            outbox.append(vec![event(w * 100 + n)]).expect("append")
                                == Appended::Stored
                        })
                        .count() as u64
                })
            })
            .collect();
        let stored: u64 = writers.into_iter().map(|w| w.join().expect("writer")).sum();
        let status = outbox.status();
        assert!(status.bytes <= max, "{status:?} over {max}");
        assert_eq!(status.entries, stored);
        assert_eq!(status.dropped_rows, 80 - stored);
        let on_disk: u64 = outbox
            .peek(1000)
            .expect("peek")
            .iter()
            .map(|p| p.bytes)
            .sum();
        assert_eq!(
            on_disk, status.bytes,
            "the byte count matches what is stored"
        );
    }
}
