//! A saturated shard queue answers 503 with Retry-After, instead of queueing without bound.
//!
//! The store is the real embedded store behind a gate: commits wait until the test opens it,
//! which holds the shard writer still so the queue fills deterministically (no timing guesses).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{TestServer, assert_error, dose, new_id, now};
use reqwest::StatusCode;
use store::*;
use tokio::sync::Notify;

struct GatedStore {
    inner: Arc<dyn Store>,
    open: AtomicBool,
    opened: Notify,
    entered: Notify,
}

impl GatedStore {
    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.opened.notify_waiters();
    }
}

#[async_trait]
impl Store for GatedStore {
    fn shard_count(&self) -> usize {
        self.inner.shard_count()
    }
    fn backend_name(&self) -> &'static str {
        "gated-embedded"
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
        self.inner.person(code).await
    }
    async fn people(&self, after: Option<&PersonCode>, limit: usize) -> Result<Vec<Registration>> {
        self.inner.people(after, limit).await
    }
    async fn doses_of(&self, person: &PersonCode) -> Result<Vec<Dose>> {
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
        self.inner.correct_dose(shard, corrected).await
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

/// Three person codes that land in the same shard (of 2).
fn same_shard_people() -> Vec<String> {
    let mut found = Vec::new();
    let mut i = 0;
    while found.len() < 3 {
        let code = format!("P-Q{i:03}");
        if shard_of(&PersonCode::new(code.clone()).unwrap(), 2) == 0 {
            found.push(code);
        }
        i += 1;
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after() {
    let mut campaign = common::campaign().await;
    let gated = Arc::new(GatedStore {
        inner: campaign.store.clone(),
        open: AtomicBool::new(true),
        opened: Notify::new(),
        entered: Notify::new(),
    });
    campaign.store = gated.clone();
    let server = Arc::new(TestServer::start_on(campaign, |c| c.queue_capacity = 1).await);
    let people = same_shard_people();
    for code in &people {
        server.register(code, "Bùi Thị Lan").await;
    }
    gated.open.store(false, Ordering::SeqCst);

    // Dose A reaches the writer, which then waits at the gate.
    let entered = gated.entered.notified();
    let a = {
        let server = server.clone();
        let body = dose(&new_id(), &people[0], 1, now());
        tokio::spawn(async move { server.post("/v1/doses", Some(&server.site), &body).await })
    };
    tokio::time::timeout(Duration::from_secs(10), entered)
        .await
        .expect("the writer reached the commit");

    // Dose B fills the one queue slot.
    let b = {
        let server = server.clone();
        let body = dose(&new_id(), &people[1], 1, now());
        tokio::spawn(async move { server.post("/v1/doses", Some(&server.site), &body).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, stats) = server.get("/v1/stats", Some(&server.observer)).await;
        if stats["queue_depths"][0] == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dose B never queued: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Dose C finds the queue full.
    let c_body = dose(&new_id(), &people[2], 1, now());
    let response = server
        .client
        .post(server.url("/v1/doses"))
        .bearer_auth(&server.site)
        .json(&c_body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    let status = response.status();
    let json: serde_json::Value = response.json().await.unwrap();
    assert_error(status, &json, StatusCode::SERVICE_UNAVAILABLE, "overloaded");

    // Open the gate: A and B are recorded; C, retried, is too.
    gated.open();
    assert_eq!(a.await.unwrap().0, StatusCode::CREATED);
    assert_eq!(b.await.unwrap().0, StatusCode::CREATED);
    let (status, json) = server.post("/v1/doses", Some(&server.site), &c_body).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    assert_eq!(server.store.totals().await.unwrap().doses, 3);
    Arc::into_inner(server).unwrap().stop().await;
}
