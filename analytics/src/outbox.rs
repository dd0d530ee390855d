//! The durable outbox between the dose commit and the analytics backend.
//!
//! The shard writer appends the rows of a group commit after the store has made the doses
//! durable and before it answers, so every acknowledged dose is either in the outbox on disk or
//! already shipped. (A crash between the store commit and the append leaves a dose the client was
//! never told about; its retry is answered as a duplicate and appends the row again — replays are
//! free, see [`crate::Analytics`].) The dose path never waits for the backend: the outbox only
//! grows while ClickHouse is slow or away, up to `max_bytes` on disk; beyond that rows are
//! dropped and counted (vaccination does not stop for analytics), which the status reports so an
//! operator can re-ship from the store.
//!
//! Layout: one fjall database, keyspace `entries`, key = sequence number (big-endian u64),
//! value = postcard [`Entry`]. Sequence numbers are taken before the write; the shipper reads
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

/// What one append wrote: the rows of one group commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Nanoseconds since the epoch when the entry was appended (for the lag).
    pub appended_at: u64,
    pub events: Vec<Event>,
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
    /// Rows dropped because the outbox was full, since the server started.
    pub dropped_rows: u64,
    /// Age in milliseconds of the oldest entry still waiting (0 when empty).
    pub oldest_age_ms: u64,
}

/// The on-disk queue of rows not yet shipped.
pub struct Outbox {
    db: Database,
    entries: Keyspace,
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
    /// # Errors
    /// When the directory cannot be opened or an entry is unreadable.
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
        let (mut first, mut last, mut bytes, mut rows, mut count) = (None, None, 0u64, 0u64, 0u64);
        for guard in entries.iter() {
            let (key, value) = guard.into_inner()?;
            let sequence = decode_key(&key)?;
            first.get_or_insert(sequence);
            last = Some(sequence);
            bytes += value.len() as u64;
            rows += decode_entry(&key, &value)?.events.len() as u64;
            count += 1;
        }
        Ok(Self {
            db,
            entries,
            max_bytes,
            next_sequence: AtomicU64::new(last.map_or(0, |s| s + 1)),
            writing: Mutex::new(BTreeSet::new()),
            cursor: AtomicU64::new(first.unwrap_or(0)),
            bytes: AtomicU64::new(bytes),
            rows: AtomicU64::new(rows),
            count: AtomicU64::new(count),
            dropped_rows: AtomicU64::new(0),
            appended: Notify::new(),
        })
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
        let size = value.len() as u64;
        if self.bytes.load(Ordering::Relaxed) + size > self.max_bytes {
            self.dropped_rows.fetch_add(rows, Ordering::Relaxed);
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
        let committed = batch.commit();
        self.lock_writing().remove(&sequence);
        committed?;
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.appended.notify_one();
        Ok(Appended::Stored)
    }

    /// Up to `max_rows` rows (whole entries, at least one entry) from the head, in order.
    ///
    /// # Errors
    /// When an entry cannot be read.
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
        for guard in self.entries.range(range) {
            let (key, value) = guard.into_inner()?;
            let entry = decode_entry(&key, &value)?;
            rows += entry.events.len();
            out.push(Pending {
                sequence: decode_key(&key)?,
                entry,
                bytes: value.len() as u64,
            });
            if rows >= max_rows {
                break;
            }
        }
        Ok(out)
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
        self.bytes.fetch_sub(
            bytes.min(self.bytes.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        self.rows.fetch_sub(
            rows.min(self.rows.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        let count = shipped.len() as u64;
        self.count.fetch_sub(
            count.min(self.count.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
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
    // Our own types into a Vec: postcard cannot fail here; an empty value would fail loudly on
    // decode rather than be misread.
    postcard::to_extend(entry, vec![FORMAT_TAG]).unwrap_or_default()
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
        Event::Stock(StockMovement {
            movement_id: Uuid::from_u128(n as u128),
            site_id: "hn-01".into(),
            product: "COMIRNATY".into(),
            lot_number: "FK1".into(),
            quantity: n,
            reason: "received".into(),
            at: OffsetDateTime::UNIX_EPOCH,
        })
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
                Event::Stock(m) => m.quantity,
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
}
