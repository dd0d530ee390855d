//! End-to-end: the site flow through real HTTP on 127.0.0.1:0, on the ScyllaDB backend.
//!
//! The store is `ScyllaStore` over the real `scylla` driver, talking to the in-process CQL test
//! node (`cqlnode`), or to a real cluster when `VAXCAMP_SCYLLA_NODES` is set (see
//! tests/common/mod.rs). The same flow as tests/site_flow.rs on the embedded store: register →
//! check-in → dose → certificate, dose 2, retries, conflicts, and a restart that reads it all
//! back from the keyspace.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, assert_error, dose, new_id, now, trust, verify};
use reqwest::StatusCode;
use serde_json::json;
use time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_flow_on_scylladb() {
    let server = TestServer::start_scylla().await;
    let (_, health) = server.get("/healthz", None).await;
    assert_eq!(health["backend"], "scylla", "{health}");
    let trust = trust(&server).await;

    // Register; registering again answers the same person.
    let (person, pass) = server.register("001090054321", "Phạm Thị Dung").await;
    assert!(pass.starts_with("RG1:"));
    let (again, _) = server.register("001090054321", "Phạm Thị Dung").await;
    assert_eq!(again, person);

    // Check-in by scanning the pass: nothing given yet, dose 1 due today.
    let (status, checkin) = server
        .post("/v1/checkins", Some(&server.site), &json!({"qr": pass}))
        .await;
    assert_eq!(status, StatusCode::OK, "{checkin}");
    assert_eq!(checkin["person"]["name"], "Phạm Thị Dung");
    assert_eq!(checkin["doses"], json!([]));
    assert_eq!(checkin["next_dose"]["dose_number"], 1);

    // Dose 1, thirty days ago; its certificate is yellow (partial).
    let first_id = new_id();
    let first_body = dose(&first_id, &person, 1, now() - Duration::days(30));
    let (status, first) = server
        .post("/v1/doses", Some(&server.site), &first_body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["dose"]["site_id"], "hn-01");
    assert_eq!(first["series_status"], "partial");
    let certificate = verify(first["certificate"].as_str().unwrap(), &trust);
    assert_eq!(certificate.status, certify::SeriesStatus::Partial);
    assert_eq!(certificate.holder.name, "Phạm Thị Dung");

    // The retry (the site never saw the answer) is the same dose: 200, the same answer.
    let (status, retried) = server
        .post("/v1/doses", Some(&server.site), &first_body)
        .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried, first, "the same answer, certificate included");

    // The same id with other content is a conflict, and changes nothing.
    let mut changed = first_body.clone();
    changed["vaccinator"] = json!("someone-else");
    let (status, conflict) = server.post("/v1/doses", Some(&server.site), &changed).await;
    assert_error(status, &conflict, StatusCode::CONFLICT, "dose_conflict");
    assert_eq!(conflict["existing"]["vaccinator"], "nurse-12");

    // At the next check-in, dose 2 is due; it completes the series (blue).
    let (_, checkin) = server
        .post("/v1/checkins", Some(&server.site), &json!({"qr": pass}))
        .await;
    assert_eq!(checkin["next_dose"]["dose_number"], 2, "{checkin}");
    assert_eq!(checkin["eligible_today"], true);
    let second_id = new_id();
    let (status, second) = server
        .post(
            "/v1/doses",
            Some(&server.site),
            &dose(&second_id, &person, 2, now()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    assert_eq!(second["series_status"], "complete");
    let certificate = verify(second["certificate"].as_str().unwrap(), &trust);
    assert_eq!(certificate.status, certify::SeriesStatus::Complete);
    assert_eq!(
        certificate
            .doses
            .iter()
            .map(|d| d.dose_number)
            .collect::<Vec<_>>(),
        [1, 2]
    );

    // A rule refusal is a 422 and writes nothing.
    let (status, body) = server
        .post(
            "/v1/doses",
            Some(&server.site),
            &dose(&new_id(), &person, 3, now()),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "series_complete",
    );

    // The record and the certificate, as a verifier sees them.
    let (status, record) = server
        .get(&format!("/v1/people/{person}"), Some(&server.site))
        .await;
    assert_eq!(status, StatusCode::OK, "{record}");
    assert_eq!(record["doses"].as_array().unwrap().len(), 2);
    let text = server
        .client
        .get(server.url(&format!("/v1/people/{person}/certificate?format=text")))
        .bearer_auth(&server.site)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        verify(&text, &trust).status,
        certify::SeriesStatus::Complete
    );
    let (status, verdict) = server.post("/v1/verify", None, &json!({"qr": text})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(verdict["colour"], "blue", "{verdict}");

    // Exactly two dose rows in each dose table, and two counted.
    let (_, stats) = server.get("/v1/stats", Some(&server.observer)).await;
    assert_eq!(stats["backend"], "scylla");
    assert_eq!(stats["doses"], 2, "{stats}");
    assert_eq!(stats["registrations"], 1, "{stats}");
    if let (Some(node), Some(config)) = (&server.node, &server.scylla) {
        for table in ["dose_ids", "doses_by_person", "doses_by_site_day"] {
            assert_eq!(node.row_count(&config.keyspace, table), Some(2), "{table}");
        }
    }

    // A restarted process (a new session on the same keyspace) knows all of it.
    let server = server.restart().await;
    let (status, record) = server
        .get(&format!("/v1/people/{person}"), Some(&server.site))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(record["doses"].as_array().unwrap().len(), 2);
    let (status, lookup) = server
        .post(
            "/v1/doses:lookup",
            Some(&server.admin),
            &json!({"dose_ids": [first_id, second_id]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{lookup}");
    assert_eq!(lookup["missing"], json!([]));
    assert!(
        lookup["found"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["copies"] == 1)
    );
    let (status, again) = server
        .post("/v1/doses", Some(&server.site), &first_body)
        .await;
    assert_eq!(status, StatusCode::OK, "a retry after the restart: {again}");
    let (_, stats) = server.get("/v1/stats", Some(&server.observer)).await;
    assert_eq!(stats["doses"], 2, "{stats}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_a_second_site_on_scylladb() {
    let server = TestServer::start_scylla().await;
    let mut people = Vec::new();
    for n in 0..20 {
        let (code, _) = server
            .register(&format!("B-{n:04}"), &format!("Người {n}"))
            .await;
        people.push(code);
    }
    let doses: Vec<_> = people
        .iter()
        .map(|p| dose(&new_id(), p, 1, now() - Duration::hours(2)))
        .collect();
    let body = json!({"doses": doses});
    let (status, batch) = server
        .post("/v1/doses:batch", Some(&server.site), &body)
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(batch["created"], 20, "{batch}");
    // The whole batch again: every dose already there.
    let (_, batch) = server
        .post("/v1/doses:batch", Some(&server.site), &body)
        .await;
    assert_eq!(
        (batch["created"].clone(), batch["duplicates"].clone()),
        (json!(0), json!(20))
    );

    // The second site records with its own lot; a lot of another site is refused.
    let (person, _) = server.register("B-HCM", "Võ Văn Em").await;
    let mut at_hcm = dose(&new_id(), &person, 1, now());
    let (status, body) = server.post("/v1/doses", Some(&server.site2), &at_hcm).await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "lot_not_at_site",
    );
    at_hcm["lot"] = json!("MD200");
    let (status, body) = server.post("/v1/doses", Some(&server.site2), &at_hcm).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["dose"]["product"], "SPIKEVAX");

    let (_, stats) = server.get("/v1/stats", Some(&server.observer)).await;
    assert_eq!(stats["doses"], 21, "{stats}");
    assert_eq!(stats["registrations"], 21, "{stats}");
    let (status, listed) = server
        .get("/v1/people?limit=100", Some(&server.admin))
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["people"].as_array().unwrap().len(), 21, "{listed}");
    server.stop().await;
}
