//! Exactly-once writes per shard: a redo journal and versioned, absolute totals.
//!
//! Every write that moves a total (`commit_doses`, `register`, `import_registrations`, the two
//! corrections) runs as one *attempt* on its shard, under the shard's lock, at version
//! `next = stored version + 1`:
//!
//! 1. each entry (a dose, a registration, a correction) is written to
//!    `shard_journal ((shard, next), entry)` first;
//! 2. then the entry's claim is made with an LWT that carries `next`: `INSERT INTO dose_ids ...
//!    IF NOT EXISTS` for a dose, `INSERT INTO people ... IF NOT EXISTS` for a registration. The
//!    claim is *ours* when it applied, or when it did not apply but the row it found carries
//!    `next` (our own earlier, ambiguously failed attempt at this version, or a resend by the
//!    driver). A row carrying an older version was counted by an earlier snapshot: skip it;
//! 3. the rows the entry owns are written (dose by person, dose by site and day; registration by
//!    bucket); corrections rewrite theirs;
//! 4. when every entry is through, the shard's totals are written as **absolute values** with
//!    version `next`, in one single-partition batch (atomic and isolated within the partition);
//! 5. the journal partition is deleted (best effort: a stale one is never read again).
//!
//! Steps 1–4 are all idempotent, so the driver may resend any of them. After any failure the
//! shard is marked *in doubt*, and before its next write (or a read that answers a retry) it
//! recovers: it reads the stored totals (the failed attempt's step 4 may have landed: then they
//! carry `next` and are adopted) and replays whatever is in `shard_journal (shard, stored + 1)`
//! through steps 2–5, writing the totals at `stored + 1` even when the journal was empty, so
//! that a version is never used by two attempts (see `recover`). A claim carrying
//! version `v` is therefore counted exactly when the totals with version `v` are written: totals
//! are never incremented, only replaced by values computed from the previous snapshot plus the
//! claims of this version, so a resent or replayed snapshot write cannot count anything twice,
//! and a claim whose snapshot never landed is found again in the journal.
//!
//! Why not CQL counters: an increment that times out may or may not have been applied, and
//! neither resending it nor dropping it is right; counters cannot be made exactly-once. The price
//! of absolute totals is that each shard needs one writer at a time (the lock here within a
//! process; across processes, the writer lease of `lease.rs`). Reads of the totals and of
//! the journal must see the last acknowledged write, so the read and write consistency levels
//! must overlap (LOCAL_QUORUM for both, the default).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::ScyllaStore;
use super::retry::request_failed;
use super::rows::{self, corrupt, to_i32};
use crate::error::{Result, StoreError};
use crate::model::{District, Dose, LotKey, Registration};
use crate::{Registered, shard_of};

/// A shard's totals as of one version. Kept in memory by the shard's writer and mirrored in
/// `shard_totals`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// The writer lease epoch this snapshot was loaded or written under: a snapshot from an
    /// older epoch is reloaded before the next write (another process may have written since).
    pub epoch: i64,
    pub version: i64,
    pub doses: i64,
    pub registrations: i64,
    pub lots: HashMap<LotKey, i64>,
    pub districts: HashMap<District, i64>,
}

/// What one shard's writer knows. `None`: in doubt, recover before the next write.
pub(crate) type ShardState = Option<Snapshot>;

/// One write in an attempt, as stored in the journal (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Entry {
    Dose(Dose),
    Register(Registration),
    /// A registration replaced; `from` is the district it was counted in before.
    CorrectPerson {
        registration: Registration,
        from: District,
    },
    /// A dose replaced; `old` is the record it replaces.
    CorrectDose {
        corrected: Dose,
        old: Dose,
    },
}

impl Entry {
    fn key(&self) -> String {
        match self {
            Entry::Dose(d) => format!("dose/{}", d.dose_id),
            Entry::Register(r) => format!("register/{}", r.person_code),
            Entry::CorrectPerson { registration, .. } => {
                format!("correct-person/{}", registration.person_code)
            }
            Entry::CorrectDose { corrected, .. } => format!("correct-dose/{}", corrected.dose_id),
        }
    }
}

/// What an entry changed, to be folded into the next snapshot.
#[derive(Debug, Default)]
struct Delta {
    doses: i64,
    registrations: i64,
    lots: HashMap<LotKey, i64>,
    districts: HashMap<District, i64>,
}

impl Delta {
    fn add(&mut self, other: Delta) {
        self.doses += other.doses;
        self.registrations += other.registrations;
        for (k, v) in other.lots {
            *self.lots.entry(k).or_default() += v;
        }
        for (k, v) in other.districts {
            *self.districts.entry(k).or_default() += v;
        }
    }
}

/// How an entry went: its outcome for a registration, and what it moved.
pub(crate) struct Applied {
    pub registered: Option<Registered>,
    /// A dose whose id is claimed for another person: nothing of it was written.
    pub conflict: Option<StoreError>,
    delta: Delta,
}

impl Applied {
    fn moved(delta: Delta) -> Self {
        Self {
            registered: None,
            conflict: None,
            delta,
        }
    }
}

/// Attempts of one shard write before its error is returned (see `run_attempt`), if the
/// request timeout has not ended the retries sooner.
pub(crate) const WRITE_ATTEMPTS: u32 = 4;

/// The pause before each retry of a shard write, growing: long enough in all (750 ms) for a
/// dropped connection to be replaced (the driver's pool reconnects after about 50 ms, then
/// backs off) and for an overloaded node to catch up. The attempts take time too (up to the
/// request timeout for each request that times out), so no retry starts once the request
/// timeout has passed since the first attempt began: a failing write holds the site's request
/// and the shard's writer thread for about the request timeout plus one attempt, not four
/// attempts' worth of timeouts.
const WRITE_BACKOFF: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(50),
    std::time::Duration::from_millis(200),
    std::time::Duration::from_millis(500),
];

impl ScyllaStore {
    /// Runs `entries` as one attempt on `shard` and returns one outcome per entry, in order.
    /// Recovers the shard first if it is in doubt.
    ///
    /// A write of doses and registrations that fails with [`StoreError::Unavailable`] (a
    /// timeout, an overloaded or unreachable node, once the driver's own retries are spent) is
    /// tried again, up to [`WRITE_ATTEMPTS`] attempts in all, after a back-off, while less than
    /// the request timeout has passed since the first attempt began (the caller's thread waits
    /// meanwhile; see [`WRITE_BACKOFF`]). An error no resend cures ([`StoreError::Engine`], see
    /// `retry.rs`) is returned at once. Each retry
    /// first recovers the shard, which finishes whatever the failed attempt left in the
    /// journal, then runs the same entries at the next version. Claims recognise the versions
    /// of this call's earlier attempts as their own (counted by the recovery, never twice; a
    /// registration still answers `Created`). Corrections are not retried here: they carry the
    /// record they replace, read before the first attempt, and their caller reads it again.
    /// Nothing is retried once the writer lease is gone.
    pub(crate) async fn run_attempt(
        &self,
        shard: usize,
        entries: Vec<Entry>,
    ) -> Result<Vec<Applied>> {
        let Some(lock) = self.shards.get(shard) else {
            return Err(StoreError::Engine(format!("no shard {shard}")));
        };
        let retryable = entries
            .iter()
            .all(|e| matches!(e, Entry::Dose(_) | Entry::Register(_)));
        // Versions this call's failed attempts ran at: a claim found at one of them is ours.
        let mut earlier: Vec<i64> = Vec::new();
        let mut attempts = 0;
        let started = std::time::Instant::now();
        loop {
            attempts += 1;
            let mut state = lock.lock().await;
            let result = match self.make_current(shard, &mut state).await {
                Ok(()) => match state.take() {
                    Some(current) => {
                        if let Some(flag) = self.in_doubt.get(shard) {
                            flag.store(false, Ordering::Release);
                        }
                        let version = current.version + 1;
                        let result = self.attempt(shard, &current, &entries, &earlier).await;
                        if result.is_err() {
                            earlier.push(version);
                        }
                        result
                    }
                    None => Err(StoreError::Engine(format!("shard {shard} has no snapshot"))),
                },
                Err(e) => Err(e),
            };
            let e = match result {
                Ok((next, outcomes)) => {
                    *state = Some(next);
                    return Ok(outcomes);
                }
                Err(e) => e,
            };
            // `state` stays `None`: the next write on this shard, or the next read (see
            // `settle`), recovers first.
            if let Some(flag) = self.in_doubt.get(shard) {
                flag.store(true, Ordering::Release);
            }
            drop(state);
            let pause = WRITE_BACKOFF
                .get(attempts as usize - 1)
                .copied()
                .unwrap_or_default();
            let again = retryable
                && attempts < WRITE_ATTEMPTS
                && started.elapsed() + pause < self.retry_for
                && matches!(e, StoreError::Unavailable(_))
                && self.lease.held();
            if !again {
                tracing::warn!(shard, attempts, error = %e, "shard write failed; it will be recovered before the next write");
                return Err(e);
            }
            tracing::info!(shard, attempts, error = %e, "shard write failed; recovering and trying again");
            tokio::time::sleep(pause).await;
        }
    }

    /// Finishes the interrupted write of every shard in doubt before a read.
    ///
    /// Called before the reads a retry is answered from: after a failed write the journal may
    /// hold a dose that is claimed but not whole, or not yet claimed. Finishing it first means
    /// the retry sees it whole ("already recorded", with every row) rather than half, and that
    /// the answer cannot change between the reads of one decision. Shards not in doubt (the
    /// normal case) cost one atomic load each.
    pub(crate) async fn settle(&self) -> Result<()> {
        for (shard, lock) in self.shards.iter().enumerate() {
            let Some(flag) = self.in_doubt.get(shard) else {
                continue;
            };
            if !flag.load(Ordering::Acquire) {
                continue;
            }
            let mut state = lock.lock().await;
            if state.is_none() {
                if !self.lease.held() {
                    // Recovery writes; without the lease it is the holder's to do (it recovers
                    // every shard when it takes the lease), and reads go on meanwhile.
                    continue;
                }
                self.make_current(shard, &mut state).await?;
            }
            flag.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// Makes `state` a snapshot of the current lease epoch: recovers the shard when it is in
    /// doubt or was loaded under an older epoch.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] without the writer lease.
    pub(crate) async fn make_current(&self, shard: usize, state: &mut ShardState) -> Result<()> {
        let epoch = self.lease.check()?;
        if state.as_ref().is_some_and(|s| s.epoch == epoch) {
            return Ok(());
        }
        *state = None;
        let mut snapshot = self.recover(shard).await?;
        snapshot.epoch = epoch;
        *state = Some(snapshot);
        Ok(())
    }

    /// Reads the stored snapshot, finishes the attempt its journal holds, if any, and writes the
    /// totals at the next version even when there was nothing to finish.
    ///
    /// Always advancing is what fences a write that is still on its way: a journal entry sent by
    /// a failed attempt at `next` whose request timed out on the client may land on the
    /// replicas after the journal was read here. Had the version stayed where it was, the next
    /// attempt would reuse `next`, and a later recovery would replay that stray entry into it: a
    /// dose answered 503 (and perhaps recorded since under another id) written after all. Once
    /// the totals carry `next`, no attempt uses it again and its journal is never read again.
    pub(crate) async fn recover(&self, shard: usize) -> Result<Snapshot> {
        let stored = self.load_snapshot(shard).await?;
        let next = stored.version + 1;
        let records: Vec<(String,)> = self
            .rows(
                &self.statements.journal_get,
                (to_i32(shard, "shard")?, next),
            )
            .await?;
        let entries = records
            .into_iter()
            .map(|(record,)| {
                serde_json::from_str::<Entry>(&record).map_err(|e| corrupt("shard_journal", e))
            })
            .collect::<Result<Vec<_>>>()?;
        if !entries.is_empty() {
            tracing::info!(
                shard,
                version = next,
                entries = entries.len(),
                "replaying an interrupted shard write"
            );
        }
        let (snapshot, applied) = self.replay(shard, &stored, &entries).await?;
        for conflict in applied.into_iter().filter_map(|a| a.conflict) {
            tracing::warn!(shard, version = next, error = %conflict, "a replayed dose was not written");
        }
        Ok(snapshot)
    }

    /// Steps 1–5 of the module docs for new entries. `earlier`: the versions of this write's
    /// failed attempts, whose claims are ours (see `run_attempt`).
    async fn attempt(
        &self,
        shard: usize,
        base: &Snapshot,
        entries: &[Entry],
        earlier: &[i64],
    ) -> Result<(Snapshot, Vec<Applied>)> {
        self.steps(shard, base, entries, Some(earlier)).await
    }

    /// Steps 2–5 for entries read from the journal.
    async fn replay(
        &self,
        shard: usize,
        base: &Snapshot,
        entries: &[Entry],
    ) -> Result<(Snapshot, Vec<Applied>)> {
        self.steps(shard, base, entries, None).await
    }

    /// Steps 1–5 (`earlier`: see `attempt`), or 2–5 when replaying (`None`).
    async fn steps(
        &self,
        shard: usize,
        base: &Snapshot,
        entries: &[Entry],
        earlier: Option<&[i64]>,
    ) -> Result<(Snapshot, Vec<Applied>)> {
        let next = base.version + 1;
        let shard_i32 = to_i32(shard, "shard")?;
        // Every entry's requests are answered (or given up on) before the totals are written.
        // That does not mean nothing is left in flight: a request the client gave up on may
        // still land later (a resend a coordinator kept, a replica's queue), after a recovery
        // has read the journal. The fence is the version advance: that recovery writes the
        // totals at this attempt's version, so this version's journal is never read again and
        // no later attempt reuses it (see `recover`).
        // Owned entries: a closure over borrowed ones trips the higher-ranked `Send` check
        // that `async_trait` needs.
        let earlier: Option<Vec<i64>> = earlier.map(<[i64]>::to_vec);
        let results: Vec<Result<Applied>> = futures_util::stream::iter(entries.iter().cloned())
            .map(|entry| {
                let earlier = earlier.clone();
                async move {
                    self.apply(shard_i32, next, &entry, earlier.as_deref())
                        .await
                }
            })
            .buffered(self.max_in_flight)
            .collect()
            .await;
        let mut outcomes = Vec::with_capacity(results.len());
        let mut delta = Delta::default();
        for result in results {
            let mut applied = result?;
            delta.add(std::mem::take(&mut applied.delta));
            outcomes.push(applied);
        }
        let snapshot = self.write_snapshot(shard_i32, base, next, delta).await?;
        if let Err(e) = self
            .session
            .execute_unpaged(&self.statements.journal_clear, (shard_i32, next))
            .await
        {
            tracing::warn!(shard, version = next, error = %e, "could not delete a finished journal; it is never read again");
        }
        Ok((snapshot, outcomes))
    }

    /// One entry; `earlier` as in `steps` (`None`: replaying, the journal has it already).
    async fn apply(
        &self,
        shard: i32,
        next: i64,
        entry: &Entry,
        earlier: Option<&[i64]>,
    ) -> Result<Applied> {
        if earlier.is_some() {
            let record = serde_json::to_string(entry).map_err(|e| {
                StoreError::Engine(format!("could not encode a journal entry: {e}"))
            })?;
            self.execute(
                &self.statements.journal_put,
                (shard, next, entry.key(), record),
            )
            .await?;
        }
        match entry {
            Entry::Dose(dose) => self.apply_dose(shard, next, dose).await,
            Entry::Register(registration) => {
                self.apply_register(next, earlier.unwrap_or_default(), registration)
                    .await
            }
            Entry::CorrectPerson { registration, from } => {
                self.write_person(registration, true).await?;
                let mut delta = Delta::default();
                let to = registration.area.district_key();
                if *from != to {
                    delta.districts.insert(from.clone(), -1);
                    delta.districts.insert(to, 1);
                }
                Ok(Applied::moved(delta))
            }
            Entry::CorrectDose { corrected, old } => {
                self.execute(&self.statements.dose_put, rows::dose_values(corrected))
                    .await?;
                let old_row = rows::site_day_values(old);
                if (&old_row.0, old_row.1, old_row.2)
                    != (
                        &corrected.site_id.to_string(),
                        rows::dose_day(corrected),
                        corrected.administered_at,
                    )
                {
                    self.execute(
                        &self.statements.site_day_delete,
                        (old_row.0, old_row.1, old_row.2, old_row.3),
                    )
                    .await?;
                }
                self.execute(
                    &self.statements.site_day_put,
                    rows::site_day_values(corrected),
                )
                .await?;
                let mut delta = Delta::default();
                if old.lot_key() != corrected.lot_key() {
                    delta.lots.insert(old.lot_key(), -1);
                    delta.lots.insert(corrected.lot_key(), 1);
                }
                Ok(Applied::moved(delta))
            }
        }
    }

    async fn apply_dose(&self, shard: i32, next: i64, dose: &Dose) -> Result<Applied> {
        let claim = self
            .execute(
                &self.statements.dose_claim,
                (dose.dose_id.0, dose.person_code.as_str(), shard, next),
            )
            .await?;
        let claim = lwt_outcome(claim, "dose_ids")?;
        let person = dose.person_code.as_str();
        // Versions are per shard: the same id claimed for someone else, in another shard at the
        // same version, must not pass for ours. The claim is ours when it applied, or when the
        // row it found is this dose's (same person, this shard) at this attempt's version.
        let same_owner = claim.person_code.as_deref() == Some(person) && claim.shard == Some(shard);
        if !claim.applied && !same_owner {
            let recorded_for = claim
                .person_code
                .ok_or_else(|| corrupt("dose_ids", "a claimed dose id without a person"))?;
            return Ok(Applied {
                registered: None,
                conflict: Some(StoreError::DoseConflict {
                    dose_id: dose.dose_id.to_string(),
                    recorded_for,
                    sent_for: person.to_owned(),
                }),
                delta: Delta::default(),
            });
        }
        let mut delta = Delta::default();
        if claim.applied || claim.version == Some(next) {
            self.execute(&self.statements.dose_put, rows::dose_values(dose))
                .await?;
            self.execute(&self.statements.site_day_put, rows::site_day_values(dose))
                .await?;
            delta.doses = 1;
            delta.lots.insert(dose.lot_key(), 1);
        }
        // Otherwise this dose was claimed and counted by an earlier snapshot: a retry, a no-op.
        Ok(Applied::moved(delta))
    }

    async fn apply_register(
        &self,
        next: i64,
        earlier: &[i64],
        registration: &Registration,
    ) -> Result<Applied> {
        let (code, name, birth, phone, province, district, commune, group, at) =
            rows::person_values(registration);
        let claim = self
            .execute(
                &self.statements.person_claim,
                (
                    code, name, birth, phone, province, district, commune, group, at, next,
                ),
            )
            .await?;
        // The claim's key is the person code, and a person's shard never changes, so the
        // version alone tells ours from an earlier one here.
        let claim = lwt_outcome(claim, "people")?;
        if claim.version.is_some_and(|v| earlier.contains(&v)) {
            // Created by this call's failed attempt, and counted by the recovery since.
            return Ok(Applied {
                registered: Some(Registered::Created(registration.clone())),
                conflict: None,
                delta: Delta::default(),
            });
        }
        if claim.applied || claim.version == Some(next) {
            self.write_person(registration, false).await?;
            let mut delta = Delta {
                registrations: 1,
                ..Delta::default()
            };
            delta.districts.insert(registration.area.district_key(), 1);
            return Ok(Applied {
                registered: Some(Registered::Created(registration.clone())),
                conflict: None,
                delta,
            });
        }
        let existing = self
            .fetch_person(&registration.person_code)
            .await?
            .ok_or_else(|| corrupt("people", "an LWT found a row that a read did not"))?;
        Ok(Applied {
            registered: Some(Registered::Existing(existing)),
            conflict: None,
            delta: Delta::default(),
        })
    }

    /// Writes a registration's listing row and, for a correction, its main row.
    async fn write_person(&self, registration: &Registration, main_row: bool) -> Result<()> {
        let (code, name, birth, phone, province, district, commune, group, at) =
            rows::person_values(registration);
        if main_row {
            self.execute(
                &self.statements.person_update,
                (
                    name.as_str(),
                    birth,
                    phone.as_deref(),
                    province.as_str(),
                    district.as_str(),
                    commune.as_deref(),
                    group,
                    at,
                    code.as_str(),
                ),
            )
            .await?;
        }
        let bucket = to_i32(
            shard_of(&registration.person_code, self.people_buckets),
            "bucket",
        )?;
        self.execute(
            &self.statements.bucket_put,
            (
                bucket, code, name, birth, phone, province, district, commune, group, at,
            ),
        )
        .await?;
        Ok(())
    }

    /// Step 4: the new absolute totals, one single-partition batch.
    async fn write_snapshot(
        &self,
        shard: i32,
        base: &Snapshot,
        next: i64,
        delta: Delta,
    ) -> Result<Snapshot> {
        let mut snapshot = base.clone();
        snapshot.version = next;
        snapshot.doses += delta.doses;
        snapshot.registrations += delta.registrations;
        let mut values: Vec<(i32, &str, String, String, i64)> = vec![
            (shard, "meta", "version".into(), String::new(), next),
            (shard, "meta", "doses".into(), String::new(), snapshot.doses),
            (
                shard,
                "meta",
                "registrations".into(),
                String::new(),
                snapshot.registrations,
            ),
        ];
        for (lot, n) in delta.lots {
            let total = snapshot.lots.entry(lot.clone()).or_default();
            *total += n;
            values.push((
                shard,
                "lot",
                lot.site_id.to_string(),
                lot.lot_number.to_string(),
                *total,
            ));
        }
        for (district, n) in delta.districts {
            let total = snapshot.districts.entry(district.clone()).or_default();
            *total += n;
            values.push((
                shard,
                "district",
                district.province.to_string(),
                district.district.to_string(),
                *total,
            ));
        }
        let mut batch =
            scylla::statement::batch::Batch::new(scylla::statement::batch::BatchType::Unlogged);
        for _ in &values {
            batch.append_statement(self.statements.totals_put.clone());
        }
        batch.set_consistency(self.levels.write);
        // Absolute values: resending the batch writes the same values again.
        batch.set_is_idempotent(true);
        // The last check before totals move: a process whose lease lapsed stops here.
        self.lease.check()?;
        self.session
            .batch(&batch, values)
            .await
            .map_err(|e| request_failed("writing shard totals", &e))?;
        Ok(snapshot)
    }

    /// Reads one shard's stored totals (version 0 and zeros when it has none yet).
    pub(crate) async fn load_snapshot(&self, shard: usize) -> Result<Snapshot> {
        let found: Vec<(String, String, String, i64)> = self
            .rows(&self.statements.totals_get, (to_i32(shard, "shard")?,))
            .await?;
        let mut snapshot = Snapshot::default();
        for (kind, a, b, value) in found {
            match (kind.as_str(), a.as_str()) {
                ("meta", "version") => snapshot.version = value,
                ("meta", "doses") => snapshot.doses = value,
                ("meta", "registrations") => snapshot.registrations = value,
                ("lot", _) => {
                    snapshot
                        .lots
                        .insert(rows::lot_key(a, b, "shard_totals")?, value);
                }
                ("district", _) => {
                    snapshot
                        .districts
                        .insert(rows::district(a, b, "shard_totals")?, value);
                }
                _ => return Err(corrupt("shard_totals", format!("unknown row {kind}/{a}"))),
            }
        }
        Ok(snapshot)
    }
}

pub(crate) fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

/// What a claim (an insert-if-absent LWT) answered: whether it applied and, when it did not,
/// the row that was there.
struct Claim {
    applied: bool,
    version: Option<i64>,
    person_code: Option<String>,
    shard: Option<i32>,
}

/// `[applied]` and, when not applied, the `version`, `person_code` and `shard` (where the table
/// has them) of the row that was there.
fn lwt_outcome(result: scylla::response::query_result::QueryResult, table: &str) -> Result<Claim> {
    use scylla::value::{CqlValue, Row};
    let rows = result
        .into_rows_result()
        .map_err(|e| corrupt(table, format!("LWT answered without rows: {e}")))?;
    let specs = rows.column_specs();
    let applied_at = specs
        .get_by_name("[applied]")
        .map(|(i, _)| i)
        .ok_or_else(|| corrupt(table, "LWT answer without [applied]"))?;
    let version_at = specs.get_by_name("version").map(|(i, _)| i);
    let row: Row = rows
        .first_row()
        .map_err(|e| corrupt(table, format!("LWT answer: {e}")))?;
    let cell = |name: &str| {
        specs
            .get_by_name(name)
            .and_then(|(i, _)| row.columns.get(i).cloned().flatten())
    };
    let applied = matches!(
        row.columns.get(applied_at),
        Some(Some(CqlValue::Boolean(true)))
    );
    if !applied && version_at.is_none() {
        return Err(corrupt(
            table,
            "a refused LWT did not return the existing row; the server is not ScyllaDB-compatible",
        ));
    }
    Ok(Claim {
        applied,
        version: match cell("version") {
            Some(CqlValue::BigInt(v)) => Some(v),
            _ => None,
        },
        person_code: match cell("person_code") {
            Some(CqlValue::Text(code)) => Some(code),
            _ => None,
        },
        shard: match cell("shard") {
            Some(CqlValue::Int(shard)) => Some(shard),
            _ => None,
        },
    })
}
