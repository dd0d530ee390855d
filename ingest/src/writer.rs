//! The sharded write path: one writer thread per shard, fed by a bounded queue, committing doses
//! in groups and answering each request only once its group is durable.
//!
//! ```text
//! handler ──try_send──> [bounded crossbeam queue, one per shard] ──> shard writer thread
//!    ▲                         full? → 503 + Retry-After               │ take all waiting jobs (≤ max batch)
//!    │                                                                  │ check ids, rules, stock
//!    └──────────── oneshot: outcome per dose ◄── after the commit ◄─────┘ one durable commit
//! ```
//!
//! Because every dose of a person goes to the same shard and each shard has exactly one writer,
//! the writer sees a person's history without locks and two doses for the same person can never
//! race. Group commit comes for free: while one commit waits for fsync, new jobs queue up, and
//! the next loop takes them all in one batch.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use store::{Dose, DoseId, PersonCode, Registration, Store};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::campaign::{Campaign, LotStock};
use crate::feed::{AnalyticsFeed, Committed, CorrectionRows};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::rules::{self, Refusal};

/// Write path settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Jobs (single doses or a shard's share of a batch) waiting per shard before the API
    /// answers 503. Bounds memory and latency under overload.
    pub queue_capacity: usize,
    /// Most doses in one group commit.
    pub max_commit_batch: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            max_commit_batch: 2000,
        }
    }
}

/// What happened to one submitted dose.
#[derive(Debug, Clone)]
pub enum DoseOutcome {
    /// Recorded now. `series` is the person's whole series, this dose included.
    Created {
        dose: Dose,
        person: Arc<Registration>,
        series: Arc<Vec<Dose>>,
    },
    /// The same dose was recorded before (a retry); nothing was written.
    Duplicate {
        dose: Dose,
        person: Arc<Registration>,
        series: Arc<Vec<Dose>>,
    },
    /// Another dose was recorded under this id.
    Conflict { existing: Dose },
    /// A rule refused the dose.
    Refused(Refusal),
    /// A dose with this id is being written by another shard right now; retry shortly.
    InProgress,
    /// The write failed; nothing was recorded. Safe to retry with the same id.
    Failed(String),
}

/// What happened to a correction.
#[derive(Debug, Clone)]
pub enum CorrectionOutcome {
    /// Stored. `before` and `after` are the person's series before and after the change.
    Corrected {
        person_before: Arc<Registration>,
        person_after: Arc<Registration>,
        before: Vec<Dose>,
        after: Vec<Dose>,
    },
    /// The corrected series breaks a rule (e.g. a new date too close to the next dose).
    Refused(Refusal),
    /// No such person or dose.
    NotFound,
    /// The store did not confirm the change and, read back, did not show it, or could not be
    /// read (then it may still have made it). Safe to retry: a correction replaces a record.
    Failed(String),
}

/// A change to a person's record, made by their shard's writer so it cannot interleave with
/// doses being recorded for them.
#[derive(Debug, Clone)]
pub enum Correction {
    /// Replace the registration (same person code).
    Person(Registration),
    /// Replace a dose (same id and person): lot, time or vaccinator.
    Dose(Dose),
}

/// A unit of work for a shard writer.
enum Job {
    Doses {
        doses: Vec<Dose>,
        reply: oneshot::Sender<Vec<DoseOutcome>>,
    },
    Correct {
        correction: Correction,
        reply: oneshot::Sender<CorrectionOutcome>,
    },
}

impl Job {
    fn dose_count(&self) -> usize {
        match self {
            Job::Doses { doses, .. } => doses.len(),
            Job::Correct { .. } => 1,
        }
    }
}

/// The queue was full; the caller should answer 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// Dose ids being written right now, across shards. A retried dose normally lands in the same
/// shard as the original (same person), but the same id sent for two different people lands in
/// two shards; claiming the id here closes the window between "not stored yet" and "committed".
struct InFlight {
    stripes: [Mutex<HashSet<DoseId>>; 64],
}

impl Default for InFlight {
    fn default() -> Self {
        Self {
            stripes: std::array::from_fn(|_| Mutex::new(HashSet::new())),
        }
    }
}

impl InFlight {
    fn stripe(&self, id: &DoseId) -> &Mutex<HashSet<DoseId>> {
        let index = (id.0.as_u128() % 64) as usize;
        &self.stripes[index]
    }

    fn claim(&self, id: DoseId) -> bool {
        self.stripe(&id)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id)
    }

    fn release(&self, id: DoseId) {
        self.stripe(&id)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }
}

/// Cumulative counters the stats endpoint reads.
#[derive(Debug, Default)]
pub struct WriterCounters {
    pub commits: AtomicU64,
    pub doses_committed: AtomicU64,
}

/// The running write path.
pub struct WritePath {
    /// One sender per shard. Emptied by [`WritePath::close`]: the writers then finish what is
    /// queued and stop.
    queues: RwLock<Vec<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    pub counters: Arc<WriterCounters>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for WritePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WritePath")
            .field("shards", &self.shard_count())
            .finish_non_exhaustive()
    }
}

impl WritePath {
    /// Starts one writer thread per shard of `store`. `runtime` runs the store's async calls.
    ///
    /// # Errors
    /// When a thread cannot be spawned.
    pub fn start(
        store: Arc<dyn Store>,
        campaign: Arc<Campaign>,
        metrics: Arc<Metrics>,
        live: Arc<Live>,
        feed: Option<Arc<AnalyticsFeed>>,
        config: &WriterConfig,
        runtime: Handle,
    ) -> std::io::Result<Self> {
        let in_flight = Arc::new(InFlight::default());
        let counters = Arc::new(WriterCounters::default());
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for shard in 0..store.shard_count() {
            // Filled by handlers (try_send, never blocking), drained by this shard's writer.
            let (sender, receiver) = crossbeam_channel::bounded(config.queue_capacity.max(1));
            let writer = ShardWriter {
                shard,
                store: store.clone(),
                campaign: campaign.clone(),
                metrics: metrics.clone(),
                live: live.clone(),
                feed: feed.clone(),
                counters: counters.clone(),
                in_flight: in_flight.clone(),
                max_batch: config.max_commit_batch.max(1),
                runtime: runtime.clone(),
                unsettled: Mutex::new(Vec::new()),
                unsettled_corrections: Mutex::new(Vec::new()),
            };
            let thread = std::thread::Builder::new()
                .name(format!("shard-writer-{shard:02}"))
                .spawn(move || writer.run(receiver))?;
            queues.push(sender);
            threads.push(thread);
        }
        Ok(Self {
            queues: RwLock::new(queues),
            threads: Mutex::new(threads),
            counters,
            metrics,
        })
    }

    pub fn shard_count(&self) -> usize {
        self.queues
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Queues doses that all belong to `shard`. The receiver yields one outcome per dose, in order.
    ///
    /// # Errors
    /// [`QueueFull`] when the shard's queue is full or the write path is closed.
    pub fn submit(
        &self,
        shard: usize,
        doses: Vec<Dose>,
    ) -> Result<oneshot::Receiver<Vec<DoseOutcome>>, QueueFull> {
        let (reply, receiver) = oneshot::channel();
        self.enqueue(shard, Job::Doses { doses, reply })?;
        Ok(receiver)
    }

    /// Queues a correction on the shard of the person it concerns.
    ///
    /// # Errors
    /// [`QueueFull`] when the shard's queue is full or the write path is closed.
    pub fn correct(
        &self,
        shard: usize,
        correction: Correction,
    ) -> Result<oneshot::Receiver<CorrectionOutcome>, QueueFull> {
        let (reply, receiver) = oneshot::channel();
        self.enqueue(shard, Job::Correct { correction, reply })?;
        Ok(receiver)
    }

    fn enqueue(&self, shard: usize, job: Job) -> Result<(), QueueFull> {
        let queues = self
            .queues
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let queue = queues.get(shard).ok_or(QueueFull)?;
        match queue.try_send(job) {
            Ok(()) => {
                self.metrics
                    .shard_queue_depth
                    .get_or_create(&vec![("shard", shard.to_string())])
                    .set(queue.len() as i64);
                Ok(())
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(QueueFull),
        }
    }

    /// Jobs waiting in each shard's queue.
    pub fn queue_depths(&self) -> Vec<usize> {
        self.queues
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(Sender::len)
            .collect()
    }

    /// Stops accepting work, lets the writers finish everything queued, and waits for them.
    pub fn close(&self) {
        self.queues
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("a shard writer panicked");
            }
        }
    }
}

struct ShardWriter {
    shard: usize,
    store: Arc<dyn Store>,
    campaign: Arc<Campaign>,
    metrics: Arc<Metrics>,
    live: Arc<Live>,
    /// The analytics outbox; `None` only in benchmarks that measure the store path alone.
    feed: Option<Arc<AnalyticsFeed>>,
    counters: Arc<WriterCounters>,
    in_flight: Arc<InFlight>,
    max_batch: usize,
    runtime: Handle,
    /// Stock reserved for doses of a failed commit that the store may hold after all (see
    /// `settle_stock`): kept reserved until the store says, and released only for those it
    /// does not hold. One entry per dose id. Only this shard's writer thread touches it.
    unsettled: Mutex<Vec<(Dose, Arc<LotStock>)>>,
    /// Analytics rows of corrections whose store write failed and whose outcome could not be
    /// read back at once: settled before the next correction, and every second while the
    /// queue is idle (see `settle_corrections`).
    unsettled_corrections: Mutex<Vec<CorrectionRows>>,
}

/// Per-person state while a batch is checked.
struct PersonState {
    registration: Option<Arc<Registration>>,
    history: Vec<Dose>,
}

impl ShardWriter {
    fn run(self, queue: Receiver<Job>) {
        // `recv` fails only when every sender is gone and the queue is empty: the drain is done.
        while let Some(first) = self.next_job(&queue) {
            let mut jobs = vec![first];
            let mut doses = jobs[0].dose_count();
            while doses < self.max_batch {
                match queue.try_recv() {
                    Ok(job) => {
                        doses += job.dose_count();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.metrics
                .shard_queue_depth
                .get_or_create(&vec![("shard", self.shard.to_string())])
                .set(queue.len() as i64);
            self.process(jobs);
        }
        tracing::debug!(shard = self.shard, "shard writer stopped");
    }

    /// Waits for the next job; while corrections wait to be settled, tries again every second
    /// between jobs, so their rows do not wait for the shard's next correction.
    fn next_job(&self, queue: &Receiver<Job>) -> Option<Job> {
        loop {
            if self.lock_unsettled_corrections().is_empty() {
                return queue.recv().ok();
            }
            match queue.recv_timeout(Duration::from_secs(1)) {
                Ok(job) => return Some(job),
                Err(RecvTimeoutError::Timeout) => {
                    // Failure is logged there; the next second tries again.
                    let _ = self.runtime.block_on(self.settle_corrections());
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Runs jobs in arrival order: consecutive dose jobs as one group commit, a correction alone.
    fn process(&self, jobs: Vec<Job>) {
        let mut group: Vec<(Vec<Dose>, oneshot::Sender<Vec<DoseOutcome>>)> = Vec::new();
        for job in jobs {
            match job {
                Job::Doses { doses, reply } => group.push((doses, reply)),
                Job::Correct { correction, reply } => {
                    self.commit_group(std::mem::take(&mut group));
                    let outcome = self.runtime.block_on(self.correct(correction));
                    let _ = reply.send(outcome);
                }
            }
        }
        self.commit_group(group);
    }

    fn commit_group(&self, group: Vec<(Vec<Dose>, oneshot::Sender<Vec<DoseOutcome>>)>) {
        if group.is_empty() {
            return;
        }
        let doses: Vec<&Dose> = group.iter().flat_map(|(doses, _)| doses.iter()).collect();
        let outcomes = self.decide_and_commit(&doses);
        let mut outcomes = outcomes.into_iter();
        for (doses, reply) in group {
            let answer: Vec<DoseOutcome> = outcomes.by_ref().take(doses.len()).collect();
            // The requester may have gone (client disconnected); the dose is recorded either way.
            let _ = reply.send(answer);
        }
    }

    /// A correction, with its analytics rows: written down before the store write and settled
    /// by its outcome, so that neither a crash nor a failed write leaves analytics out of step
    /// with the store.
    async fn correct(&self, correction: Correction) -> CorrectionOutcome {
        if let Err(e) = self.settle_corrections().await {
            return CorrectionOutcome::Failed(e);
        }
        let person_code = match &correction {
            Correction::Person(r) => r.person_code.clone(),
            Correction::Dose(d) => d.person_code.clone(),
        };
        let before_person = match self.store.person(&person_code).await {
            Ok(Some(p)) => Arc::new(p),
            Ok(None) => return CorrectionOutcome::NotFound,
            Err(e) => return CorrectionOutcome::Failed(e.to_string()),
        };
        let before = match self.store.doses_of(&person_code).await {
            Ok(h) => h,
            Err(e) => return CorrectionOutcome::Failed(e.to_string()),
        };
        match correction {
            Correction::Person(registration) => {
                // A corrected birth date must still come before every dose on record.
                if let Some(refusal) = before
                    .iter()
                    .find_map(|d| rules::check_birth(d, registration.birth_date).err())
                {
                    return CorrectionOutcome::Refused(refusal);
                }
                let rows = self.intend(&before_person, &registration, &before, &before);
                if let Err(e) = self.store.correct_registration(&registration).await {
                    let held = self
                        .store
                        .person(&person_code)
                        .await
                        .map(|p| p.as_ref() == Some(&registration));
                    if !self.settle_failed(rows, held) {
                        return CorrectionOutcome::Failed(e.to_string());
                    }
                } else {
                    self.stored(rows);
                }
                CorrectionOutcome::Corrected {
                    person_before: before_person,
                    person_after: Arc::new(registration),
                    after: before.clone(),
                    before,
                }
            }
            Correction::Dose(corrected) => {
                let Some(old) = before
                    .iter()
                    .find(|d| d.dose_id == corrected.dose_id)
                    .cloned()
                else {
                    return CorrectionOutcome::NotFound;
                };
                let mut after: Vec<Dose> = before
                    .iter()
                    .map(|d| {
                        if d.dose_id == corrected.dose_id {
                            corrected.clone()
                        } else {
                            d.clone()
                        }
                    })
                    .collect();
                after.sort_by_key(|d| d.dose_number);
                // The whole corrected series must still follow the rules.
                let products = self.campaign.products();
                let now = time::OffsetDateTime::now_utc();
                for k in 0..after.len() {
                    if let Err(refusal) =
                        rules::check_sequence(&after[k], &after[..k], &products, now)
                            .and_then(|()| rules::check_birth(&after[k], before_person.birth_date))
                    {
                        return CorrectionOutcome::Refused(refusal);
                    }
                }
                let moved = old.lot_key() != corrected.lot_key();
                let (new_stock, old_stock) = (
                    self.campaign.stock(&corrected.lot_key()),
                    self.campaign.stock(&old.lot_key()),
                );
                if moved {
                    match &new_stock {
                        Some(stock) if stock.reserve() => {}
                        Some(_) => {
                            return CorrectionOutcome::Refused(Refusal::LotExhausted {
                                lot: corrected.lot_number.to_string(),
                            });
                        }
                        None => {
                            return CorrectionOutcome::Refused(Refusal::UnknownLot {
                                lot: corrected.lot_number.to_string(),
                            });
                        }
                    }
                }
                let rows = self.intend(&before_person, &before_person, &before, &after);
                if let Err(e) = self.store.correct_dose(self.shard, &corrected).await {
                    let held = self
                        .store
                        .doses_of(&person_code)
                        .await
                        .map(|doses| doses.contains(&corrected));
                    if !self.settle_failed(rows, held) {
                        if let (true, Some(stock)) = (moved, &new_stock) {
                            stock.release();
                        }
                        return CorrectionOutcome::Failed(e.to_string());
                    }
                } else {
                    self.stored(rows);
                }
                if let (true, Some(stock)) = (moved, &old_stock) {
                    stock.release();
                }
                CorrectionOutcome::Corrected {
                    person_after: before_person.clone(),
                    person_before: before_person,
                    before,
                    after,
                }
            }
        }
    }

    /// Writes a correction's analytics rows down before the store write.
    fn intend(
        &self,
        person_before: &Registration,
        person_after: &Registration,
        before: &[Dose],
        after: &[Dose],
    ) -> Option<CorrectionRows> {
        let feed = self.feed.as_ref()?;
        Some(feed.correction_intended(person_before, person_after, before, after))
    }

    fn stored(&self, rows: Option<CorrectionRows>) {
        if let (Some(feed), Some(rows)) = (&self.feed, rows) {
            feed.correction_stored(rows);
        }
    }

    /// The store write failed, which does not say it wrote nothing (a timeout after the
    /// replicas took it); `held` is whether the store, read back, holds the correction. Returns
    /// whether it does: then the correction is done after all (its certificates are revoked and
    /// it is audited as usual) and its rows are queued. When the read failed too, the rows wait
    /// for the store to say (see `settle_corrections`) and the client is told to retry.
    fn settle_failed(&self, rows: Option<CorrectionRows>, held: store::Result<bool>) -> bool {
        match held {
            Ok(true) => {
                tracing::warn!("the store reported a failed correction but holds it: done");
                self.stored(rows);
                true
            }
            Ok(false) => {
                if let (Some(feed), Some(rows)) = (&self.feed, rows) {
                    feed.correction_not_stored(rows);
                }
                false
            }
            Err(_) => {
                if let Some(rows) = rows.filter(|r| !r.is_empty()) {
                    self.lock_unsettled_corrections().push(rows);
                }
                false
            }
        }
    }

    /// Settles the rows of corrections whose outcome is not known yet. Until it can, the shard
    /// takes no new correction: a later one for the same person would leave analytics unable
    /// to tell which version the store holds.
    async fn settle_corrections(&self) -> Result<(), String> {
        let waiting = std::mem::take(&mut *self.lock_unsettled_corrections());
        let mut left = Vec::new();
        for rows in waiting {
            if let Err(rows) = self.settle_by_store(rows).await {
                left.push(rows);
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        self.lock_unsettled_corrections().extend(left);
        Err("the store cannot yet say whether an earlier correction on this shard was written; retry later".into())
    }

    /// Reads the person's records and settles `rows` by them; gives the rows back when the
    /// store cannot be read.
    async fn settle_by_store(&self, rows: CorrectionRows) -> Result<(), CorrectionRows> {
        let Some(feed) = &self.feed else {
            return Ok(());
        };
        let Some(code) = rows.person_code().and_then(|c| PersonCode::new(c).ok()) else {
            feed.correction_not_stored(rows);
            return Ok(());
        };
        let (Ok(person), Ok(history)) = (
            self.store.person(&code).await,
            self.store.doses_of(&code).await,
        ) else {
            tracing::warn!(
                "the store cannot say whether a failed correction was written; its analytics rows wait"
            );
            return Err(rows);
        };
        feed.settle_correction(rows, person.as_ref(), &history);
        Ok(())
    }

    fn lock_unsettled_corrections(&self) -> std::sync::MutexGuard<'_, Vec<CorrectionRows>> {
        self.unsettled_corrections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn decide_and_commit(&self, doses: &[&Dose]) -> Vec<DoseOutcome> {
        let started = Instant::now();
        // Claim every id not already being written by another shard. An id repeated within this
        // batch is ours already (a retry that arrived while the original was queued).
        let mut mine: HashSet<DoseId> = HashSet::with_capacity(doses.len());
        let claimed: Vec<bool> = doses
            .iter()
            .map(|d| {
                mine.contains(&d.dose_id)
                    || (self.in_flight.claim(d.dose_id) && mine.insert(d.dose_id))
            })
            .collect();
        let result = self
            .runtime
            .block_on(self.decide_and_commit_claimed(doses, &claimed));
        for id in mine {
            self.in_flight.release(id);
        }
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn decide_and_commit_claimed(
        &self,
        doses: &[&Dose],
        claimed: &[bool],
    ) -> Vec<DoseOutcome> {
        let mut outcomes: Vec<Option<DoseOutcome>> = vec![None; doses.len()];
        for (i, claimed) in claimed.iter().enumerate() {
            if !claimed {
                outcomes[i] = Some(DoseOutcome::InProgress);
            }
        }

        // Stock of an earlier failed commit first, so that a retry found stored below is
        // counted exactly once. Nothing is accepted until the store has said which of those
        // doses it holds: a retry of one it does not hold would be reserved and counted here,
        // and then again when a later settlement finds it stored.
        if let Err(e) = self.settle_stock().await {
            return fail_all(doses.len(), &e);
        }
        // What is stored already, under these ids (any shard) and for these people.
        let ids: Vec<DoseId> = doses.iter().map(|d| d.dose_id).collect();
        let stored: HashMap<DoseId, Dose> = match self.store.find_doses(&ids).await {
            Ok(found) => found.into_iter().map(|d| (d.dose_id, d)).collect(),
            Err(e) => return fail_all(doses.len(), &e),
        };
        let mut people: HashMap<PersonCode, PersonState> = HashMap::new();
        for dose in doses {
            if people.contains_key(&dose.person_code) {
                continue;
            }
            let registration = match self.store.person(&dose.person_code).await {
                Ok(r) => r.map(Arc::new),
                Err(e) => return fail_all(doses.len(), &e),
            };
            let history = match registration {
                Some(_) => match self.store.doses_of(&dose.person_code).await {
                    Ok(h) => h,
                    Err(e) => return fail_all(doses.len(), &e),
                },
                None => Vec::new(),
            };
            people.insert(
                dose.person_code.clone(),
                PersonState {
                    registration,
                    history,
                },
            );
        }

        // Decide each dose in arrival order; accepted doses join the history of the doses after them.
        let products = self.campaign.products();
        let now = time::OffsetDateTime::now_utc();
        let recorded_at = now.replace_nanosecond(0).unwrap_or(now);
        let mut accepted: Vec<Dose> = Vec::new();
        let mut accepted_index: HashMap<DoseId, usize> = HashMap::new();
        let mut reservations: Vec<Arc<LotStock>> = Vec::new();
        let mut retries_in_batch: HashSet<usize> = HashSet::new();
        for (i, dose) in doses.iter().enumerate() {
            if outcomes[i].is_some() {
                continue;
            }
            if let Some(existing) = stored.get(&dose.dose_id) {
                outcomes[i] = Some(if existing.same_event_as(dose) {
                    match people
                        .get(&dose.person_code)
                        .and_then(|p| p.registration.clone())
                    {
                        Some(person) => {
                            let series = Arc::new(people[&dose.person_code].history.clone());
                            DoseOutcome::Duplicate {
                                dose: existing.clone(),
                                person,
                                series,
                            }
                        }
                        None => DoseOutcome::Conflict {
                            existing: existing.clone(),
                        },
                    }
                } else {
                    DoseOutcome::Conflict {
                        existing: existing.clone(),
                    }
                });
                continue;
            }
            if let Some(&j) = accepted_index.get(&dose.dose_id) {
                if accepted[j].same_event_as(dose) {
                    retries_in_batch.insert(i);
                } else {
                    outcomes[i] = Some(DoseOutcome::Conflict {
                        existing: accepted[j].clone(),
                    });
                }
                continue;
            }
            let Some(state) = people.get_mut(&dose.person_code) else {
                continue;
            };
            let Some(registration) = &state.registration else {
                outcomes[i] = Some(DoseOutcome::Refused(Refusal::UnknownPerson(
                    dose.person_code.to_string(),
                )));
                continue;
            };
            if let Err(refusal) = rules::check_birth(dose, registration.birth_date) {
                outcomes[i] = Some(DoseOutcome::Refused(refusal));
                continue;
            }
            if let Err(refusal) = rules::check_sequence(dose, &state.history, &products, now) {
                outcomes[i] = Some(DoseOutcome::Refused(refusal));
                continue;
            }
            let Some(stock) = self.campaign.stock(&dose.lot_key()) else {
                outcomes[i] = Some(DoseOutcome::Refused(Refusal::UnknownLot {
                    lot: dose.lot_number.to_string(),
                }));
                continue;
            };
            if !stock.reserve() {
                outcomes[i] = Some(DoseOutcome::Refused(Refusal::LotExhausted {
                    lot: dose.lot_number.to_string(),
                }));
                continue;
            }
            reservations.push(stock);
            let mut record = (*dose).clone();
            record.recorded_at = recorded_at;
            state.history.push(record.clone());
            accepted_index.insert(record.dose_id, accepted.len());
            accepted.push(record);
        }

        if !accepted.is_empty() {
            if let Err(e) = self.store.commit_doses(self.shard, &accepted).await {
                // Not confirmed is not "not written": a timeout may hide a write that landed, and
                // the store finishes a half-done write later from its journal. Keep the stock of
                // the doses the store turns out to hold; release the rest. The next batch of this
                // shard settles them first (asking now would only delay these 503s).
                self.hold_unsettled(accepted.iter().cloned().zip(reservations));
                tracing::error!(shard = self.shard, doses = accepted.len(), error = %e, "group commit failed; nothing from it was acknowledged");
                let failed = DoseOutcome::Failed(e.to_string());
                for (i, dose) in doses.iter().enumerate() {
                    if accepted_index.contains_key(&dose.dose_id)
                        && !matches!(outcomes[i], Some(DoseOutcome::Conflict { .. }))
                    {
                        outcomes[i] = Some(failed.clone());
                    }
                }
                return outcomes
                    .into_iter()
                    .map(|o| o.unwrap_or_else(|| failed.clone()))
                    .collect();
            }
            self.counters.commits.fetch_add(1, Ordering::Relaxed);
            self.counters
                .doses_committed
                .fetch_add(accepted.len() as u64, Ordering::Relaxed);
            self.metrics.doses_committed.inc_by(accepted.len() as u64);
            self.metrics
                .commit_batch_doses
                .observe(accepted.len() as f64);
            self.live.record_committed(&accepted);
        }

        // Answer the accepted doses (and in-batch retries of them) with the final series.
        let mut series_of: HashMap<&PersonCode, Arc<Vec<Dose>>> = HashMap::new();
        for (i, dose) in doses.iter().enumerate() {
            let Some(&j) = accepted_index.get(&dose.dose_id) else {
                continue;
            };
            if outcomes[i].is_some() {
                continue;
            }
            let Some(state) = people.get_mut(&dose.person_code) else {
                continue;
            };
            let Some(person) = state.registration.clone() else {
                continue;
            };
            // The history is not needed after this: move it into the shared series.
            let series = series_of
                .entry(&dose.person_code)
                .or_insert_with(|| Arc::new(std::mem::take(&mut state.history)))
                .clone();
            let record = accepted[j].clone();
            outcomes[i] = Some(if retries_in_batch.contains(&i) {
                DoseOutcome::Duplicate {
                    dose: record,
                    person,
                    series,
                }
            } else {
                DoseOutcome::Created {
                    dose: record,
                    person,
                    series,
                }
            });
        }
        let outcomes: Vec<DoseOutcome> = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    DoseOutcome::Failed("no decision was made for this dose".into())
                })
            })
            .collect();
        if let Some(feed) = &self.feed {
            feed_committed(feed, &outcomes);
        }
        outcomes
    }
}

impl ShardWriter {
    /// Resolves the stock held for doses of failed commits: asks the store which of them it
    /// holds (reading finishes the shard's interrupted write first, and the store never
    /// finishes it later, so the answer is final), keeps their stock and releases the others'.
    /// When the store cannot answer, everything stays reserved (never under-counted, so
    /// `lot_exhausted` cannot be bypassed) until the next batch of this shard asks again.
    ///
    /// # Errors
    /// The store's, when it could not answer: the caller accepts nothing until it can.
    async fn settle_stock(&self) -> Result<(), store::StoreError> {
        let pending = std::mem::take(
            &mut *self
                .unsettled
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if pending.is_empty() {
            return Ok(());
        }
        let ids: Vec<DoseId> = pending.iter().map(|(d, _)| d.dose_id).collect();
        match self.store.find_doses(&ids).await {
            Ok(found) => {
                let mut held_doses = Vec::new();
                for (dose, stock) in pending {
                    let held = found
                        .iter()
                        .find(|f| f.dose_id == dose.dose_id && f.person_code == dose.person_code);
                    match held {
                        Some(stored) => held_doses.push(stored.clone()),
                        None => stock.release(),
                    }
                }
                // Stored although the commit reported a failure: count them like any commit, so
                // the console's totals match the store. (Analytics get them from the client's
                // retry, which is answered as a duplicate and fed again.)
                if !held_doses.is_empty() {
                    self.counters
                        .doses_committed
                        .fetch_add(held_doses.len() as u64, Ordering::Relaxed);
                    self.metrics.doses_committed.inc_by(held_doses.len() as u64);
                    self.live.record_committed(&held_doses);
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(shard = self.shard, doses = pending.len(), error = %e, "could not tell which doses of a failed commit are stored; their stock stays reserved");
                self.hold_unsettled(pending);
                Err(e)
            }
        }
    }

    /// Keeps reservations for `settle_stock`, one per dose id: the store holds at most one dose
    /// under an id, so a second reservation for it is released at once rather than kept (and
    /// counted) twice. (Batches wait for the settlement, so an id should never come twice.)
    fn hold_unsettled(&self, doses: impl IntoIterator<Item = (Dose, Arc<LotStock>)>) {
        let mut unsettled = self
            .unsettled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (dose, stock) in doses {
            if unsettled
                .iter()
                .any(|(held, _)| held.dose_id == dose.dose_id)
            {
                stock.release();
            } else {
                unsettled.push((dose, stock));
            }
        }
    }
}

/// Hands the doses now durable — new ones and retries of stored ones — to the analytics outbox,
/// each once, before anyone is answered.
fn feed_committed(feed: &AnalyticsFeed, outcomes: &[DoseOutcome]) {
    let mut seen = HashSet::new();
    feed.committed(outcomes.iter().filter_map(|outcome| match outcome {
        DoseOutcome::Created {
            dose,
            person,
            series,
        }
        | DoseOutcome::Duplicate {
            dose,
            person,
            series,
        } if seen.insert(dose.dose_id) => Some(Committed {
            dose,
            person,
            history: series,
        }),
        _ => None,
    }));
}

fn fail_all(n: usize, error: &store::StoreError) -> Vec<DoseOutcome> {
    tracing::error!(error = %error, "reading before a commit failed; the batch was not written");
    vec![DoseOutcome::Failed(error.to_string()); n]
}
