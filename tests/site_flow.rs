//! End-to-end: the site flow through real HTTP on 127.0.0.1:0, against the embedded store.

#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, assert_error, dose, new_id, now, trust, verify};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_for_two_doses() {
    let server = TestServer::start().await;
    let trust = trust(&server).await;
    let (person, pass) = server.register("001090012345", "Nguyễn Văn An").await;
    assert!(pass.starts_with("RG1:"));

    // Check-in by scanning the pass: nothing given yet, dose 1 due today.
    let (status, checkin) = server
        .post("/v1/checkins", Some(&server.site), &json!({"qr": pass}))
        .await;
    assert_eq!(status, StatusCode::OK, "{checkin}");
    assert_eq!(checkin["person"]["name"], "Nguyễn Văn An");
    assert_eq!(checkin["doses"], json!([]));
    assert_eq!(checkin["next_dose"]["dose_number"], 1);
    assert_eq!(checkin["eligible_today"], true);

    // Dose 1, given 30 days ago (from the paper register), so dose 2 is due today.
    let first_id = new_id();
    let given = now() - Duration::days(30);
    let (status, first) = server
        .post(
            "/v1/doses",
            Some(&server.site),
            &dose(&first_id, &person, 1, given),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(
        first["dose"]["site_id"], "hn-01",
        "the site comes from the token"
    );
    assert_eq!(
        first["dose"]["product"], "COMIRNATY",
        "the product comes from the lot"
    );
    assert_eq!(first["series_status"], "partial");
    let certificate = verify(first["certificate"].as_str().unwrap(), &trust);
    assert_eq!(certificate.status, certify::SeriesStatus::Partial);
    assert_eq!(certificate.holder.name, "Nguyễn Văn An");
    assert_eq!(
        (certificate.doses.len(), certificate.doses[0].total_doses),
        (1, 2)
    );

    // At the next check-in, dose 2 is due.
    let (_, checkin) = server
        .post("/v1/checkins", Some(&server.site), &json!({"qr": pass}))
        .await;
    assert_eq!(checkin["next_dose"]["dose_number"], 2);
    assert_eq!(checkin["eligible_today"], true);

    let (status, second) = server
        .post(
            "/v1/doses",
            Some(&server.site),
            &dose(&new_id(), &person, 2, now()),
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
        [1, 2],
        "the whole series in one certificate"
    );

    // The person's record and the certificate in every format.
    let (status, record) = server
        .get(&format!("/v1/people/{person}"), Some(&server.site))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(record["doses"].as_array().unwrap().len(), 2);
    assert_eq!(record["next_dose"]["series_complete"], true);
    let text = server
        .client
        .get(server.url(&format!("/v1/people/{person}/certificate?format=text")))
        .bearer_auth(&server.site)
        .send()
        .await
        .unwrap();
    assert_eq!(text.headers()["x-certificate-status"], "complete");
    let text = text.text().await.unwrap();
    assert_eq!(
        verify(&text, &trust).status,
        certify::SeriesStatus::Complete
    );
    let png = server
        .client
        .get(server.url(&format!("/v1/people/{person}/certificate?format=png")))
        .bearer_auth(&server.site)
        .send()
        .await
        .unwrap();
    assert_eq!(png.headers()["content-type"], "image/png");
    let png = png.bytes().await.unwrap();
    assert_eq!(
        certify::qr::decode_png(&png).unwrap(),
        text,
        "the PNG scans back to the certificate text"
    );
    let svg = server
        .client
        .get(server.url(&format!("/v1/people/{person}/certificate?format=svg")))
        .bearer_auth(&server.site)
        .send()
        .await
        .unwrap();
    assert!(svg.text().await.unwrap().contains("<svg"));

    // A third dose is refused: the series is complete.
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

    // Public verification agrees.
    let (status, verdict) = server.post("/v1/verify", None, &json!({"qr": text})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (verdict["valid"].clone(), verdict["colour"].clone()),
        (json!(true), json!("blue"))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_the_same_dose_and_a_different_reuse_is_a_conflict() {
    let server = TestServer::start().await;
    let (person, _) = server.register("P-RETRY", "Trần Thị Bình").await;
    let id = new_id();
    let body = dose(&id, &person, 1, now() - Duration::hours(1));
    let (status, first) = server.post("/v1/doses", Some(&server.site), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = server.post("/v1/doses", Some(&server.site), &body).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, first, "the same answer, certificate included");
    let stored = server
        .store
        .doses_of(&store::PersonCode::new(person.clone()).unwrap())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1, "never a second dose");

    let mut changed = body.clone();
    changed["vaccinator"] = json!("someone-else");
    let (status, conflict) = server.post("/v1/doses", Some(&server.site), &changed).await;
    assert_error(status, &conflict, StatusCode::CONFLICT, "dose_conflict");
    assert_eq!(conflict["existing"]["vaccinator"], "nurse-12");

    // The same id for a different person is a conflict too, though it lands on another shard.
    let (other, _) = server.register("P-OTHER", "Lê Văn Cường").await;
    let (status, conflict) = server
        .post(
            "/v1/doses",
            Some(&server.site),
            &dose(&id, &other, 1, now()),
        )
        .await;
    assert_error(status, &conflict, StatusCode::CONFLICT, "dose_conflict");
    assert_eq!(server.store.totals().await.unwrap().doses, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_error_has_a_json_body() {
    let server = TestServer::start().await;
    let (person, pass) = server.register("P-ERR", "Phạm Thị Dung").await;
    let body = dose(&new_id(), &person, 1, now());

    // 400: malformed JSON, wrong shape, bad field.
    let response = server
        .client
        .post(server.url("/v1/doses"))
        .bearer_auth(&server.site)
        .header("content-type", "application/json")
        .body("{\"dose_id\": ")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let json: Value = response.json().await.unwrap();
    assert_error(status, &json, StatusCode::BAD_REQUEST, "malformed_json");
    let (status, json) = server
        .post(
            "/v1/doses",
            Some(&server.site),
            &json!({"dose_id": "not-a-uuid"}),
        )
        .await;
    assert_error(status, &json, StatusCode::BAD_REQUEST, "invalid_body");
    let mut bad = body.clone();
    bad["vaccinator"] = json!("   ");
    let (status, json) = server.post("/v1/doses", Some(&server.site), &bad).await;
    assert_error(status, &json, StatusCode::BAD_REQUEST, "invalid_field");
    assert_eq!(json["field"], "vaccinator");
    let (status, json) = server
        .post("/v1/registrations", Some(&server.registrar), &json!({"name": "X", "birth_date": "2999-01-01", "area": {"province": "01", "district": "001"}}))
        .await;
    assert_error(status, &json, StatusCode::BAD_REQUEST, "invalid_field");
    assert_eq!(json["field"], "birth_date");

    // 401: no token, unknown token.
    let (status, json) = server.post("/v1/doses", None, &body).await;
    assert_error(status, &json, StatusCode::UNAUTHORIZED, "missing_token");
    let (status, json) = server.post("/v1/doses", Some("vxc_site_0000"), &body).await;
    assert_error(status, &json, StatusCode::UNAUTHORIZED, "invalid_token");

    // 403: an observer cannot record doses; a site cannot record for another site.
    let (status, json) = server
        .post("/v1/doses", Some(&server.observer), &body)
        .await;
    assert_error(status, &json, StatusCode::FORBIDDEN, "forbidden");
    let mut elsewhere = body.clone();
    elsewhere["site_id"] = json!("hcm-01");
    let (status, json) = server
        .post("/v1/doses", Some(&server.site), &elsewhere)
        .await;
    assert_error(status, &json, StatusCode::FORBIDDEN, "forbidden");

    // 422: each rule names itself.
    let cases = [
        (json!({"lot": "MD200"}), "lot_not_at_site"),
        (json!({"lot": "NOSUCHLOT"}), "unknown_lot"),
        (json!({"lot": "EXPIRED1"}), "lot_expired"),
        (json!({"dose_number": 2}), "dose_out_of_sequence"),
        (json!({"person_code": "NOBODY"}), "unknown_person"),
        (json!({"product": "SPIKEVAX"}), "lot_product_mismatch"),
        (
            json!({"administered_at": "2099-01-01T00:00:00Z"}),
            "administered_in_future",
        ),
        // The person was born in 1985: a ledger's mistyped year is refused, not stored.
        (
            json!({"administered_at": "1958-06-01T08:00:00Z"}),
            "administered_before_birth",
        ),
    ];
    for (change, rule) in cases {
        let mut request = body.clone();
        for (k, v) in change.as_object().unwrap() {
            request[k] = v.clone();
        }
        let (status, json) = server.post("/v1/doses", Some(&server.site), &request).await;
        assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY, rule);
        assert_eq!(json["rule"], rule);
    }
    // Stock: the one-dose lot is used, then exhausted.
    let (second_person, _) = server.register("P-ERR2", "Hoàng Văn Em").await;
    let mut tiny = dose(&new_id(), &person, 1, now());
    tiny["lot"] = json!("TINY1");
    let (status, json) = server.post("/v1/doses", Some(&server.site), &tiny).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    let mut tiny = dose(&new_id(), &second_person, 1, now());
    tiny["lot"] = json!("TINY1");
    let (status, json) = server.post("/v1/doses", Some(&server.site), &tiny).await;
    assert_error(
        status,
        &json,
        StatusCode::UNPROCESSABLE_ENTITY,
        "lot_exhausted",
    );
    // Too early for dose 2.
    let (status, json) = server
        .post(
            "/v1/doses",
            Some(&server.site),
            &dose(&new_id(), &person, 2, now()),
        )
        .await;
    assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY, "too_early");

    // A forged or tampered pass is refused at check-in.
    let mut tampered = pass.clone().into_bytes();
    let i = tampered.len() - 10;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let (status, json) = server
        .post(
            "/v1/checkins",
            Some(&server.site),
            &json!({"qr": String::from_utf8(tampered).unwrap()}),
        )
        .await;
    assert_error(
        status,
        &json,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_pass",
    );
    let forger = certify::IssuerKey::generate(certify::KeyPurpose::Registration, 0).unwrap();
    let mut forged_trust = certify::TrustList::new("VN-MOH");
    forged_trust.add(forger.trusted_key()).unwrap();
    let forged = certify::Signer::new(forger, &forged_trust)
        .unwrap()
        .sign_registration(&certify::RegistrationPass {
            person_code: person.clone(),
            issuer: "VN-MOH".into(),
            issued_at: 1,
            expires_at: None,
        })
        .unwrap();
    let (status, json) = server
        .post("/v1/checkins", Some(&server.site), &json!({"qr": forged}))
        .await;
    assert_error(
        status,
        &json,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_pass",
    );
    assert_eq!(json["reason"], "unknown_kid");

    // 404, 405 and 413 in the same shape.
    let (status, json) = server.get("/v1/nothing-here", Some(&server.site)).await;
    assert_error(status, &json, StatusCode::NOT_FOUND, "no_such_route");
    let (status, json) = server.get("/v1/doses", Some(&server.site)).await;
    assert_error(
        status,
        &json,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let (status, json) = server.get("/v1/people/NOBODY", Some(&server.site)).await;
    assert_error(status, &json, StatusCode::NOT_FOUND, "unknown_person");
    let huge = json!({"doses": vec![body.clone(); 20_000]});
    let (status, json) = server
        .post("/v1/doses:batch", Some(&server.site), &huge)
        .await;
    assert_error(
        status,
        &json,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );

    // Nothing refused above was written.
    assert_eq!(server.store.totals().await.unwrap().doses, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_answer_per_dose() {
    let server = TestServer::start().await;
    let mut doses = Vec::new();
    for i in 0..300 {
        let (person, _) = server.register(&format!("P-B{i:04}"), "Đỗ Thị Giang").await;
        doses.push(dose(&new_id(), &person, 1, now() - Duration::days(2)));
    }
    // A retry inside the batch, a refusal and an unknown person.
    doses.push(doses[0].clone());
    let mut refused = doses[1].clone();
    refused["dose_id"] = json!(new_id());
    refused["dose_number"] = json!(3);
    doses.push(refused);
    doses.push(dose(&new_id(), "NOBODY", 1, now()));
    let (status, answer) = server
        .post(
            "/v1/doses:batch",
            Some(&server.site),
            &json!({"doses": doses}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 303);
    assert!(
        results[..300].iter().all(|r| r["status"] == 201),
        "{answer}"
    );
    assert_eq!(
        results[300]["status"], 200,
        "the in-batch retry is the same dose"
    );
    assert_eq!(results[301]["error"], "dose_out_of_sequence");
    assert_eq!(results[302]["error"], "unknown_person");
    assert_eq!(
        (
            answer["created"].clone(),
            answer["duplicates"].clone(),
            answer["refused"].clone()
        ),
        (json!(300), json!(1), json!(2))
    );
    assert_eq!(server.store.totals().await.unwrap().doses, 300);

    // Sending the whole batch again changes nothing.
    let (_, again) = server
        .post(
            "/v1/doses:batch",
            Some(&server.site),
            &json!({"doses": doses}),
        )
        .await;
    assert_eq!(again["created"], 0);
    assert_eq!(again["duplicates"], 301);
    assert_eq!(server.store.totals().await.unwrap().doses, 300);

    // Limits.
    let (status, json) = server
        .post("/v1/doses:batch", Some(&server.site), &json!({"doses": []}))
        .await;
    assert_error(status, &json, StatusCode::BAD_REQUEST, "batch_size");
    let (status, json) = server
        .post(
            "/v1/doses:batch",
            Some(&server.site),
            &json!({"doses": vec![doses[0].clone(); 1001]}),
        )
        .await;
    assert_error(status, &json, StatusCode::BAD_REQUEST, "batch_size");

    // The lookup used by the ledger check.
    let ids: Vec<Value> = doses[..3]
        .iter()
        .map(|d| d["dose_id"].clone())
        .chain([json!(new_id())])
        .collect();
    let (status, lookup) = server
        .post(
            "/v1/doses:lookup",
            Some(&server.site),
            &json!({"dose_ids": ids}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{lookup}");
    assert_eq!(lookup["found"].as_array().unwrap().len(), 3);
    assert!(
        lookup["found"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["copies"] == 1 && f["person_code"].is_string())
    );
    assert_eq!(lookup["missing"].as_array().unwrap().len(), 1);
    // The answer names people: the steering committee's observer token may not ask, and
    // another site does not even learn that these doses exist.
    let (status, json) = server
        .post(
            "/v1/doses:lookup",
            Some(&server.observer),
            &json!({"dose_ids": ids}),
        )
        .await;
    assert_error(status, &json, StatusCode::FORBIDDEN, "forbidden");
    let (status, elsewhere) = server
        .post(
            "/v1/doses:lookup",
            Some(&server.site2),
            &json!({"dose_ids": ids}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{elsewhere}");
    assert_eq!(elsewhere["found"], json!([]));
    assert_eq!(elsewhere["missing"].as_array().unwrap().len(), 4);
    let (status, all) = server
        .post(
            "/v1/doses:lookup",
            Some(&server.admin),
            &json!({"dose_ids": ids}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["found"].as_array().unwrap().len(), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_and_monitoring_endpoints() {
    let server = TestServer::start().await;
    let (status, health) = server.get("/healthz", None).await;
    assert_eq!(
        (status, health["status"].clone()),
        (StatusCode::OK, json!("ok"))
    );
    let (status, _) = server.get("/v1/revocations", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, json) = server.get("/metrics", Some(&server.site)).await;
    assert_error(status, &json, StatusCode::FORBIDDEN, "forbidden");
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth(&server.observer)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("vaxcamp_http_requests_total")
    );
    let (status, stats) = server.get("/v1/stats", Some(&server.observer)).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["shards"], 2);
    let (status, json) = server.get("/openapi.json", None).await;
    assert_error(status, &json, StatusCode::UNAUTHORIZED, "missing_token");
    let (status, doc) = server.get("/openapi.json", Some(&server.observer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");

    // Every documented operation is routed (neither 404 nor 405 from the fallbacks).
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = server.url(
                &path
                    .replace("{person_code}", "NOBODY")
                    .replace("{dose_id}", &new_id()),
            );
            let request = match method.as_str() {
                "get" => server.client.get(url),
                "post" => server.client.post(url).json(&json!({})),
                "put" => server.client.put(url).json(&json!({})),
                other => panic!("unexpected method {other}"),
            };
            let response = request.bearer_auth(&server.admin).send().await.unwrap();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(
                body["error"], "no_such_route",
                "{method} {path} is documented but not routed"
            );
            assert_ne!(
                body["error"], "method_not_allowed",
                "{method} {path} is documented but not routed"
            );
        }
    }
    // And the routes in the router are the documented ones.
    let documented: std::collections::BTreeSet<String> =
        doc["paths"].as_object().unwrap().keys().cloned().collect();
    let routed: std::collections::BTreeSet<String> = [
        "/healthz",
        "/metrics",
        "/openapi.json",
        "/v1/trust",
        "/v1/revocations",
        "/v1/verify",
        "/v1/registrations",
        "/v1/checkins",
        "/v1/people",
        "/v1/people/{person_code}",
        "/v1/people/{person_code}/pass",
        "/v1/people/{person_code}/certificate",
        "/v1/doses",
        "/v1/doses:batch",
        "/v1/doses:lookup",
        "/v1/sites",
        "/v1/lots",
        "/v1/areas",
        "/v1/stats",
        "/v1/live",
        "/v1/live/stream",
        "/v1/allocation",
        "/v1/analytics/uptake",
        "/v1/audit",
        "/v1/people/{person_code}/corrections",
        "/v1/doses/{dose_id}/corrections",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(documented, routed);
    server.stop().await;
}

/// Province and district names can be replaced on a running server, by an admin only; a list
/// with a bad entry changes nothing; the console's snapshot shows the names of the areas with
/// sites from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_names_areas_on_a_running_server() {
    let server = TestServer::start().await;
    let (status, listed) = server.get("/v1/areas", Some(&server.observer)).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed, json!({"areas": {}}));
    let names = json!({"areas": {"01": "Hà Nội", "01/001": "Ba Đình", "48": "Đà Nẵng"}});
    for token in [&server.observer, &server.site] {
        let (status, json) = server.put("/v1/areas", Some(token), &names).await;
        assert_error(status, &json, StatusCode::FORBIDDEN, "forbidden");
    }
    let (status, json) = server.put("/v1/areas", None, &names).await;
    assert_error(status, &json, StatusCode::UNAUTHORIZED, "missing_token");
    let (status, json) = server.put("/v1/areas", Some(&server.admin), &names).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json, json!({"areas": 3}));

    let bad = json!({"areas": {"01": "Thủ đô", "01/x y": "Ba Đình", "79": ""}});
    let (status, json) = server.put("/v1/areas", Some(&server.admin), &bad).await;
    assert_error(status, &json, StatusCode::BAD_REQUEST, "invalid_areas");
    let message = json["message"].as_str().unwrap();
    assert!(
        message.starts_with("2 bad entries, nothing was changed"),
        "{message}"
    );
    let (status, json) = server
        .put("/v1/areas", Some(&server.admin), &json!({"names": {}}))
        .await;
    assert_error(status, &json, StatusCode::BAD_REQUEST, "invalid_body");

    let (_, listed) = server.get("/v1/areas", Some(&server.admin)).await;
    assert_eq!(listed, names, "the good list stands");
    let (status, live) = server.get("/v1/live", Some(&server.observer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(live["area_names"]["01"], "Hà Nội");
    assert_eq!(live["area_names"]["01/001"], "Ba Đình");
    assert_eq!(live["area_names"].get("48"), None, "no site stands in 48");

    // The names are in the store, which the next start reads them from.
    let stored = server.store.setting("area_names").await.unwrap().unwrap();
    let stored = ingest::areas::AreaNames::from_setting(&stored).unwrap();
    assert_eq!(json!({"areas": stored.as_map()}), names);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_sets_up_a_site_on_a_running_server() {
    let server = TestServer::start().await;
    let site = json!({"site_id": "dn-01", "name": "Da Nang C Hospital", "area": {"province": "48", "district": "490"}, "daily_capacity": 800});
    let (status, json) = server.post("/v1/sites", Some(&server.site), &site).await;
    assert_error(status, &json, StatusCode::FORBIDDEN, "forbidden");
    let (status, added) = server.post("/v1/sites", Some(&server.admin), &site).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let token = added["token"].as_str().unwrap().to_owned();
    let lot = json!({"lot_number": "DN1", "site_id": "dn-01", "product": "VAXZEVRIA", "expires": "2099-01-01", "quantity": 10});
    let (status, json) = server.post("/v1/lots", Some(&server.admin), &lot).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    let (person, _) = server.register("P-DN", "Võ Văn Hải").await;
    let mut body = dose(&new_id(), &person, 1, now());
    body["lot"] = json!("DN1");
    let (status, json) = server.post("/v1/doses", Some(&token), &body).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the new site's token works at once: {json}"
    );
    let (_, sites) = server.get("/v1/sites", Some(&server.observer)).await;
    let dn = sites["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site_id"] == "dn-01")
        .unwrap()
        .clone();
    assert_eq!(dn["lots"][0]["remaining"], 9);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrections_revoke_the_wrong_certificates_and_are_audited() {
    let server = TestServer::start().await;
    let trust = trust(&server).await;
    let (person, _) = server.register("P-FIX", "Nguyen Van Sai").await;
    let first_id = new_id();
    let (_, first) = server
        .post(
            "/v1/doses",
            Some(&server.site),
            &dose(&first_id, &person, 1, now() - Duration::days(40)),
        )
        .await;
    let (_, second) = server
        .post(
            "/v1/doses",
            Some(&server.site),
            &dose(&new_id(), &person, 2, now() - Duration::days(10)),
        )
        .await;
    let old_certificates = [
        first["certificate"].as_str().unwrap().to_owned(),
        second["certificate"].as_str().unwrap().to_owned(),
    ];

    // Only admins correct, and they must say why.
    let (status, json) = server
        .post(
            &format!("/v1/people/{person}/corrections"),
            Some(&server.site),
            &json!({"reason": "typo", "name": "X"}),
        )
        .await;
    assert_error(status, &json, StatusCode::FORBIDDEN, "forbidden");
    let (status, json) = server
        .post(
            &format!("/v1/people/{person}/corrections"),
            Some(&server.admin),
            &json!({"reason": " ", "name": "X"}),
        )
        .await;
    assert_error(status, &json, StatusCode::BAD_REQUEST, "invalid_field");

    // Correcting the name revokes both certificates issued so far and issues the corrected one.
    let (status, fixed) = server
        .post(
            &format!("/v1/people/{person}/corrections"),
            Some(&server.admin),
            &json!({"reason": "name misspelt at registration", "name": "Nguyễn Văn Sáu"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fixed}");
    assert_eq!(fixed["revoked_certificates"].as_array().unwrap().len(), 2);
    let corrected = verify(fixed["certificate"].as_str().unwrap(), &trust);
    assert_eq!(
        (corrected.holder.name.as_str(), corrected.status),
        ("Nguyễn Văn Sáu", certify::SeriesStatus::Complete)
    );
    let (_, revoked) = server.get("/v1/revocations", None).await;
    let revoked: certify::RevocationList = serde_json::from_value(revoked).unwrap();
    for old in &old_certificates {
        let (_, verdict) = server.post("/v1/verify", None, &json!({"qr": old})).await;
        assert_eq!(
            (verdict["valid"].clone(), verdict["error"].clone()),
            (json!(false), json!("revoked")),
            "{verdict}"
        );
        let id = certify::decode_certificate_unverified(old, &certify::Limits::default())
            .unwrap()
            .content
            .certificate_id;
        assert!(revoked.contains(&id));
    }

    // A dose correction that would break the interval is refused and changes nothing.
    let (status, json) = server
        .post(&format!("/v1/doses/{first_id}/corrections"), Some(&server.admin), &json!({"reason": "wrong date", "administered_at": (now() - Duration::days(15)).format(&time::format_description::well_known::Rfc3339).unwrap()}))
        .await;
    assert_error(status, &json, StatusCode::UNPROCESSABLE_ENTITY, "too_early");
    // Moving dose 1 to the lot actually used works and moves the stock.
    let (status, fixed) = server
        .post(
            &format!("/v1/doses/{first_id}/corrections"),
            Some(&server.admin),
            &json!({"reason": "wrong lot typed", "lot": "TINY1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fixed}");
    assert_eq!(fixed["doses"][0]["lot"], "TINY1");
    assert_eq!(
        fixed["revoked_certificates"].as_array().unwrap().len(),
        2,
        "both certificates carried dose 1"
    );
    let (_, sites) = server.get("/v1/sites", Some(&server.observer)).await;
    let tiny = sites["sites"][1]["lots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["lot"] == "TINY1")
        .unwrap()
        .clone();
    assert_eq!(tiny["remaining"], 0);
    assert_eq!(
        server.store.totals().await.unwrap().doses,
        2,
        "a correction is not a new dose"
    );

    let (status, audit) = server.get("/v1/audit", Some(&server.admin)).await;
    assert_eq!(status, StatusCode::OK);
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["correct_dose", "correct_person"]);
    assert_eq!(audit["audit"][1]["actor"], "admin (created by init)");
    assert_eq!(audit["audit"][1]["reason"], "name misspelt at registration");
    server.stop().await;
}
