//! A saturated shard queue answers 503 with Retry-After, instead of queueing without bound.
//!
//! The store is the real embedded store behind a gate: commits wait until the test opens it,
//! which holds the shard writer still so the queue fills deterministically (no timing guesses).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::faulty::FaultyStore;
use common::{TestServer, assert_error, dose, new_id, now};
use reqwest::StatusCode;
use store::*;

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
    let gated = Arc::new(FaultyStore::new(campaign.store.clone()));
    campaign.store = gated.clone();
    let server = Arc::new(TestServer::start_on(campaign, |c| c.queue_capacity = 1).await);
    let people = same_shard_people();
    for code in &people {
        server.register(code, "Bùi Thị Lan").await;
    }
    gated.close_gate();

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
