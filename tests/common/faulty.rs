//! A store wrapper for tests that need the real store to misbehave on cue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use store::*;
use tokio::sync::Notify;

/// The real store with faults a test switches on: a gate that holds dose commits (the shard
/// writer waits, so a queue fills deterministically) and failing corrections.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    open: AtomicBool,
    opened: Notify,
    /// Notified each time a dose commit reaches the store.
    pub entered: Notify,
    /// What the next corrections do, in order; empty: they work.
    correction_faults: Mutex<VecDeque<CorrectionFault>>,
    /// Reads of a person or their doses that fail before they work again.
    failing_reads: AtomicU32,
}

/// How a correction fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorrectionFault {
    /// Not written; the store says it is unavailable.
    NotWritten,
    /// Written, but the answer is lost: the store says it is unavailable (a timeout after the
    /// replicas took the write).
    AnswerLost,
    /// As `AnswerLost`, and the next read of a person or their doses fails too.
    AnswerLostAndNextReadFails,
}

impl FaultyStore {
    /// `inner` with the gate open and no faults.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            open: AtomicBool::new(true),
            opened: Notify::new(),
            entered: Notify::new(),
            correction_faults: Mutex::new(VecDeque::new()),
            failing_reads: AtomicU32::new(0),
        }
    }

    /// Dose commits wait from now on, until [`open`](Self::open).
    pub fn close_gate(&self) {
        self.open.store(false, Ordering::SeqCst);
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    fn read_fault(&self) -> Result<()> {
        let failing = self
            .failing_reads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match failing {
            Ok(_) => Err(StoreError::Unavailable("injected: read failed".into())),
            Err(_) => Ok(()),
        }
    }

    /// The next correction fails so.
    pub fn fail_next_correction(&self, fault: CorrectionFault) {
        self.correction_faults.lock().unwrap().push_back(fault);
    }
}

#[async_trait]
impl Store for FaultyStore {
    fn shard_count(&self) -> usize {
        self.inner.shard_count()
    }
    fn backend_name(&self) -> &'static str {
        "faulty-embedded"
    }
    async fn put_site(&self, site: &Site) -> Result<()> {
        self.inner.put_site(site).await
    }
    async fn sites(&self) -> Result<Vec<Site>> {
        self.inner.sites().await
    }
    async fn put_product(&self, product: &Product) -> Result<()> {
        self.inner.put_product(product).await
    }
    async fn products(&self) -> Result<Vec<Product>> {
        self.inner.products().await
    }
    async fn put_lot(&self, lot: &Lot) -> Result<()> {
        self.inner.put_lot(lot).await
    }
    async fn lots(&self) -> Result<Vec<Lot>> {
        self.inner.lots().await
    }
    async fn put_credential(&self, credential: &Credential) -> Result<()> {
        self.inner.put_credential(credential).await
    }
    async fn credentials(&self) -> Result<Vec<Credential>> {
        self.inner.credentials().await
    }
    async fn setting(&self, name: &str) -> Result<Option<String>> {
        self.inner.setting(name).await
    }
    async fn put_setting(&self, name: &str, value: &str) -> Result<()> {
        self.inner.put_setting(name, value).await
    }
    async fn register(&self, registration: &Registration) -> Result<Registered> {
        self.inner.register(registration).await
    }
    async fn import_registrations(&self, registrations: &[Registration]) -> Result<ImportCounts> {
        self.inner.import_registrations(registrations).await
    }
    async fn person(&self, code: &PersonCode) -> Result<Option<Registration>> {
        self.read_fault()?;
        self.inner.person(code).await
    }
    async fn people(&self, after: Option<&PersonCode>, limit: usize) -> Result<Vec<Registration>> {
        self.inner.people(after, limit).await
    }
    async fn doses_of(&self, person: &PersonCode) -> Result<Vec<Dose>> {
        self.read_fault()?;
        self.inner.doses_of(person).await
    }
    async fn find_doses(&self, ids: &[DoseId]) -> Result<Vec<Dose>> {
        self.inner.find_doses(ids).await
    }
    async fn commit_doses(&self, shard: usize, doses: &[Dose]) -> Result<()> {
        self.entered.notify_one();
        while !self.open.load(Ordering::SeqCst) {
            let opened = self.opened.notified();
            if self.open.load(Ordering::SeqCst) {
                break;
            }
            opened.await;
        }
        self.inner.commit_doses(shard, doses).await
    }
    async fn correct_registration(&self, registration: &Registration) -> Result<()> {
        self.inner.correct_registration(registration).await
    }
    async fn correct_dose(&self, shard: usize, corrected: &Dose) -> Result<()> {
        let fault = self.correction_faults.lock().unwrap().pop_front();
        match fault {
            None => self.inner.correct_dose(shard, corrected).await,
            Some(CorrectionFault::NotWritten) => {
                Err(StoreError::Unavailable("injected: not written".into()))
            }
            Some(lost) => {
                self.inner.correct_dose(shard, corrected).await?;
                if lost == CorrectionFault::AnswerLostAndNextReadFails {
                    self.failing_reads.fetch_add(1, Ordering::SeqCst);
                }
                Err(StoreError::Unavailable("injected: answer lost".into()))
            }
        }
    }
    async fn revoke_certificates(&self, revocations: &[Revocation]) -> Result<()> {
        self.inner.revoke_certificates(revocations).await
    }
    async fn revocations(&self) -> Result<Vec<Revocation>> {
        self.inner.revocations().await
    }
    async fn totals(&self) -> Result<Totals> {
        self.inner.totals().await
    }
    async fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        self.inner.append_audit(record).await
    }
    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        self.inner.audit_log(limit).await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
