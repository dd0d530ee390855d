//! Analytics through the running server: every committed dose reaches ClickHouse exactly once,
//! an outage of ClickHouse never fails a dose, and the counts converge exactly once it is back.
//!
//! Needs `clickhouse-server` (Debian's package; `tests/run.sh` installs it and exports
//! `VAXCAMP_TEST_CLICKHOUSE`). The outage test starts a ClickHouse of its own with
//! `tests/support/clickhouse.sh`, so stopping it disturbs no other test. Without ClickHouse
//! those tests are skipped with a message, unless `VAXCAMP_REQUIRE_CLICKHOUSE=1` (CI). The
//! `vaxcamp allocate` test, the checks of the analytics reads' parameters and roles, and the
//! failed-correction test run on the embedded analytics and need nothing; the timeout test puts a listener that accepts
//! connections and never answers where ClickHouse should be.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use analytics::{Analytics, ClickHouseAnalytics, ClickHouseConfig};
use common::faulty::{CorrectionFault, FaultyStore};
use common::{TestServer, assert_error, dose, new_id, now};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn require() -> bool {
    let required = std::env::var("VAXCAMP_REQUIRE_CLICKHOUSE").as_deref() == Ok("1");
    let installed = Command::new("sh")
        .args([
            "-c",
            "command -v clickhouse-server || command -v clickhouse",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        installed || !required,
        "VAXCAMP_REQUIRE_CLICKHOUSE=1 but clickhouse-server is not installed"
    );
    if !installed {
        eprintln!("skipped: clickhouse-server is not installed (bash tests/run.sh installs it)");
    }
    installed
}

/// A ClickHouse server of this test's own, stopped (and its data removed) on drop.
struct OwnClickHouse {
    url: String,
    dir: PathBuf,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/clickhouse.sh")
}

impl OwnClickHouse {
    fn start() -> Self {
        let output = Command::new("bash")
            .arg(script())
            .arg("start")
            .output()
            .expect("run clickhouse.sh");
        assert!(
            output.status.success(),
            "ClickHouse did not start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("{name} in {text}"))
                .to_owned()
        };
        Self {
            url: value("VAXCAMP_TEST_CLICKHOUSE"),
            dir: PathBuf::from(value("VAXCAMP_TEST_CLICKHOUSE_DIR")),
        }
    }

    fn run(&self, command: &str) {
        let status = Command::new("bash")
            .arg(script())
            .arg(command)
            .arg(&self.dir)
            .status()
            .expect("run clickhouse.sh");
        assert!(status.success(), "clickhouse.sh {command} failed");
    }
}

impl Drop for OwnClickHouse {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// A server whose analytics go to `clickhouse`, in a database of its own; returns the database.
async fn serve_on(clickhouse: &OwnClickHouse, lag_alert_seconds: u64) -> (TestServer, String) {
    let database = format!("vaxcamp_it_{}", uuid::Uuid::new_v4().simple());
    let (url, db) = (clickhouse.url.clone(), database.clone());
    let server = TestServer::start_with(move |c| {
        c.analytics.clickhouse = Some(url);
        c.analytics.database = db;
        c.analytics.lag_alert_seconds = lag_alert_seconds;
    })
    .await;
    (server, database)
}

async fn reader(clickhouse: &OwnClickHouse, database: String) -> ClickHouseAnalytics {
    ClickHouseAnalytics::connect(&ClickHouseConfig {
        database,
        ..ClickHouseConfig::new(clickhouse.url.clone())
    })
    .await
    .expect("connect")
}

/// Registers `n` people and records dose 1 for each (with a retry of every third), all 2xx.
async fn record_doses(server: &TestServer, prefix: &str, n: usize) -> usize {
    let mut recorded = 0;
    for i in 0..n {
        let (person, _) = server
            .register(&format!("{prefix}{i:05}"), "Trần Thị Mai")
            .await;
        let body = dose(&new_id(), &person, 1, now());
        let (status, answer) = server.post("/v1/doses", Some(&server.site), &body).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        if i % 3 == 0 {
            let (status, answer) = server.post("/v1/doses", Some(&server.site), &body).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "a retry is answered as such: {answer}"
            );
        }
        recorded += 1;
    }
    recorded
}

/// Registers `code` and records their dose 1 now; returns the person code and the dose id.
async fn first_dose_now(server: &TestServer, code: &str) -> (String, String) {
    let (person, _) = server.register(code, "Lê Văn Sửa").await;
    let dose_id = new_id();
    let (status, answer) = server
        .post(
            "/v1/doses",
            Some(&server.site),
            &dose(&dose_id, &person, 1, now()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    (person, dose_id)
}

/// A dose correction: it was given at `given`.
fn given_on(given: time::OffsetDateTime) -> Value {
    let format = time::format_description::well_known::Rfc3339;
    json!({
        "reason": "ledger typed in late",
        "administered_at": given.format(&format).expect("format"),
    })
}

/// The server's Prometheus metrics, as an observer scrapes them.
async fn metrics_of(server: &TestServer) -> String {
    server
        .client
        .get(server.url("/metrics"))
        .bearer_auth(&server.observer)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text")
}

/// The value of an unlabelled metric in a Prometheus scrape.
fn metric<T: std::str::FromStr>(scrape: &str, name: &str) -> T {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the scrape:\n{scrape}"))
}

async fn stats(server: &TestServer) -> Value {
    let (status, body) = server.get("/v1/stats", Some(&server.observer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Waits until the outbox is empty, reporting what it saw if it never empties.
async fn wait_for_empty_outbox(server: &TestServer, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let s = stats(server).await;
        if s["analytics"]["outbox"]["rows"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox did not drain within {within:?}: {}",
            s["analytics"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_dose_reaches_clickhouse_once() {
    if !require() {
        return;
    }
    let clickhouse = OwnClickHouse::start();
    let (server, database) = serve_on(&clickhouse, 60).await;
    let recorded = record_doses(&server, "CH", 40).await;
    wait_for_empty_outbox(&server, Duration::from_secs(30)).await;

    let reader = reader(&clickhouse, database).await;
    assert_eq!(stats(&server).await["doses"], recorded);
    assert_eq!(
        reader.dose_count().await.expect("count"),
        recorded as u64,
        "ClickHouse counts each committed dose once, retries included"
    );

    // The uptake series and the planner read the same rows.
    let (status, uptake) = server
        .get(
            "/v1/analytics/uptake?level=site&granularity=hour&days=1",
            Some(&server.observer),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{uptake}");
    assert_eq!(uptake["analytics_backend"], "clickhouse");
    let total: u64 = uptake["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["doses"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, recorded as u64, "{uptake}");
    // Second doses of COMIRNATY fall due 21 days after the first: none within the default
    // 14-day horizon, every one within 28 days.
    let hn01 = |answer: &Value| -> Value {
        answer["plan"]["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .find(|l| l["area"] == "hn-01")
            .cloned()
            .expect("hn-01 is planned for")
    };
    let (status, answer) = server
        .get(
            "/v1/allocation?product=COMIRNATY&quantity=600&level=site&unit=6",
            Some(&server.observer),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(hn01(&answer)["owed_doses"], 0, "not due within 14 days");
    assert_eq!(
        answer["analytics"]["stale"], false,
        "{}",
        answer["analytics"]
    );
    assert_eq!(answer["analytics"]["outbox_rows"], 0);
    let (status, answer) = server
        .get(
            "/v1/allocation?product=COMIRNATY&quantity=600&level=site&unit=6&horizon_days=28",
            Some(&server.observer),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let plan = &answer["plan"];
    let hn = hn01(&answer);
    assert_eq!(
        hn["owed_doses"], recorded,
        "every first dose at hn-01 leaves a second owed there, due within 28 days"
    );
    assert_eq!(
        hn["received_doses"],
        100_000 + 100 + 1,
        "the COMIRNATY lots allocated to hn-01"
    );
    assert!(plan["allocated_doses"].as_u64().expect("n") <= 600);
    assert_eq!(plan["allocated_doses"].as_u64().expect("n") % 6, 0);

    // A correction reaches ClickHouse too (written down before the store commit, queued once
    // the store has it): a dose typed in today but given two days ago moves to its day, once;
    // a retry changes nothing and is told so.
    let (_, dose_id) = first_dose_now(&server, "CHFIX").await;
    let given = now() - time::Duration::days(2);
    let correction = given_on(given);
    let path = format!("/v1/doses/{dose_id}/corrections");
    let (status, answer) = server.post(&path, Some(&server.admin), &correction).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (status, answer) = server.post(&path, Some(&server.admin), &correction).await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "no_change");
    wait_for_empty_outbox(&server, Duration::from_secs(30)).await;
    assert_eq!(
        reader.dose_count().await.expect("count"),
        recorded as u64 + 1
    );
    let (status, uptake) = server
        .get(
            "/v1/analytics/uptake?level=site&granularity=day&days=3",
            Some(&server.observer),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{uptake}");
    let on = |day: time::Date| -> u64 {
        uptake["points"]
            .as_array()
            .expect("points")
            .iter()
            .filter(|p| {
                p["bucket"]
                    .as_str()
                    .is_some_and(|b| b.starts_with(&day.to_string()))
            })
            .map(|p| p["doses"].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(
        on(given.date()),
        1,
        "the corrected dose, on its day: {uptake}"
    );
    assert_eq!(on(now().date()), recorded as u64, "{uptake}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_outage_fails_no_dose_and_the_counts_converge_exactly() {
    if !require() {
        return;
    }
    let clickhouse = OwnClickHouse::start();
    let (server, database) = serve_on(&clickhouse, 1).await;
    let before = record_doses(&server, "BEFORE", 10).await;
    wait_for_empty_outbox(&server, Duration::from_secs(30)).await;

    clickhouse.run("halt");
    // Every dose still succeeds; the rows wait in the outbox.
    let during = record_doses(&server, "DURING", 30).await;
    let s = stats(&server).await;
    // Retries are fed again (see ingest/src/feed.rs), so at least one row per dose.
    let waiting = s["analytics"]["outbox"]["rows"].as_u64().expect("rows");
    assert!(
        waiting >= during as u64,
        "the outbox holds what ClickHouse has not taken: {}",
        s["analytics"]
    );
    // The shipper has tried and failed; the console is told.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, live) = server.get("/v1/live", Some(&server.observer)).await;
        let lagging = live["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["kind"] == "analytics_lagging"));
        if lagging && live["analytics"]["last_error"].is_string() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no analytics_lagging alert: {}",
            live["analytics"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // So are the operator's status and the Prometheus scrape.
    let s = stats(&server).await;
    assert!(
        s["analytics"]["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["kind"] == "analytics_lagging")),
        "/v1/stats carries the alert: {}",
        s["analytics"]
    );
    let scrape = metrics_of(&server).await;
    let waiting_in_scrape: u64 = metric(&scrape, "vaxcamp_analytics_outbox_rows");
    assert!(waiting_in_scrape >= during as u64, "{scrape}");
    // The lag in seconds (not milliseconds), past the alert's threshold; the shipper failing.
    let lag: f64 = metric(&scrape, "vaxcamp_analytics_lag_seconds");
    assert!(lag > 0.0 && lag < 600.0, "{scrape}");
    let failures: u64 = metric(&scrape, "vaxcamp_analytics_shipper_consecutive_failures");
    assert!(failures >= 1, "{scrape}");

    clickhouse.run("resume");
    wait_for_empty_outbox(&server, Duration::from_secs(60)).await;
    let reader = reader(&clickhouse, database).await;
    assert_eq!(
        reader.dose_count().await.expect("count"),
        (before + during) as u64,
        "after the outage ClickHouse has every dose exactly once"
    );
    // Rows shipped is a counter: what the shipper shipped, each row once however many scrapes
    // there were (this is the second).
    let scrape = metrics_of(&server).await;
    let shipped: u64 = metric(&scrape, "vaxcamp_analytics_shipped_rows_total");
    let status = stats(&server).await;
    assert_eq!(
        Some(shipped),
        status["analytics"]["shipper"]["shipped_rows"].as_u64(),
        "{scrape}"
    );
    assert!(shipped >= (before + during) as u64, "{scrape}");
    assert_eq!(metric::<u64>(&scrape, "vaxcamp_analytics_outbox_rows"), 0);
    // The live snapshot is shared for up to a second: wait for one built after the outbox
    // emptied.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, live) = server.get("/v1/live", Some(&server.observer)).await;
        if live["analytics"]["outbox_rows"] == 0 {
            assert_eq!(live["analytics"]["dropped_rows"], 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the console still sees rows waiting: {}",
            live["analytics"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}

/// `vaxcamp allocate` against a running server on the embedded analytics: the proposal as a
/// table, the JSON with `--json`, and an unknown product refused with the server's message.
/// The days (UTC) with doses in the uptake of the last week, and how many.
async fn dose_days(server: &TestServer) -> Vec<(time::Date, u64)> {
    let (status, uptake) = server
        .get(
            "/v1/analytics/uptake?level=province&granularity=day&days=7",
            Some(&server.observer),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{uptake}");
    let format = time::format_description::well_known::Rfc3339;
    let mut days: Vec<(time::Date, u64)> = uptake["points"]
        .as_array()
        .expect("points")
        .iter()
        .filter(|p| p["doses"].as_u64() > Some(0))
        .map(|p| {
            let bucket = p["bucket"].as_str().expect("bucket");
            let day = time::OffsetDateTime::parse(bucket, &format).expect("rfc3339");
            (day.date(), p["doses"].as_u64().expect("doses"))
        })
        .collect();
    days.sort();
    days
}

/// A correction whose store write fails reaches analytics exactly when the store holds it: the
/// rows are written down before the write and settled by reading the store back, at once (the
/// correction is then done after all) or, when that read fails too, by the shard writer a
/// second later (the client was answered 503).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_correction_reaches_analytics_exactly_when_the_store_holds_it() {
    let mut campaign = common::campaign().await;
    let faulty = Arc::new(FaultyStore::new(campaign.store.clone()));
    campaign.store = faulty.clone();
    let server = TestServer::start_on(campaign, |_| {}).await;
    let (person, dose_id) = first_dose_now(&server, "FIX00001").await;
    let today = now().date();
    let days_ago = |n: i64| now() - time::Duration::days(n);
    let correct = |given: time::OffsetDateTime| {
        let body = given_on(given);
        let server = &server;
        let path = format!("/v1/doses/{dose_id}/corrections");
        async move { server.post(&path, Some(&server.admin), &body).await }
    };
    let stored_day = || async {
        let doses = server
            .store
            .doses_of(&store::PersonCode::new(person.as_str()).expect("code"))
            .await
            .expect("read");
        doses[0].administered_at.date()
    };
    wait_for_empty_outbox(&server, Duration::from_secs(30)).await;
    assert_eq!(dose_days(&server).await, vec![(today, 1)]);

    // Not written: 503, and analytics stay as the store is.
    faulty.fail_next_correction(CorrectionFault::NotWritten);
    let (status, answer) = correct(days_ago(2)).await;
    assert_error(
        status,
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
    );
    wait_for_empty_outbox(&server, Duration::from_secs(30)).await;
    assert_eq!(stored_day().await, today);
    assert_eq!(dose_days(&server).await, vec![(today, 1)]);

    // Written, answer lost: the writer reads the store back, finds the correction there and
    // finishes it as if the store had said so (200, certificates revoked, audited, queued).
    faulty.fail_next_correction(CorrectionFault::AnswerLost);
    let (status, answer) = correct(days_ago(2)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    wait_for_empty_outbox(&server, Duration::from_secs(30)).await;
    assert_eq!(stored_day().await, days_ago(2).date());
    assert_eq!(dose_days(&server).await, vec![(days_ago(2).date(), 1)]);

    // Written, answer lost, and the read-back fails too: the rows wait (nothing ships)...
    faulty.fail_next_correction(CorrectionFault::AnswerLostAndNextReadFails);
    let (status, _) = correct(days_ago(3)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(stored_day().await, days_ago(3).date());
    wait_for_empty_outbox(&server, Duration::from_secs(30)).await;
    assert_eq!(dose_days(&server).await, vec![(days_ago(2).date(), 1)]);
    // ...until the shard writer settles them by the store (a second later, when idle) — the
    // client's retry finds the store already corrected and is told so. Counted once.
    let (status, answer) = correct(days_ago(3)).await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "no_change");
    let deadline = Instant::now() + Duration::from_secs(30);
    while dose_days(&server).await != vec![(days_ago(3).date(), 1)] {
        assert!(
            Instant::now() < deadline,
            "the waiting rows were never settled: {:?}",
            dose_days(&server).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The shard takes corrections again.
    let (status, answer) = correct(days_ago(4)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    wait_for_empty_outbox(&server, Duration::from_secs(30)).await;
    assert_eq!(dose_days(&server).await, vec![(days_ago(4).date(), 1)]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_prints_the_planners_proposal() {
    let server = TestServer::start().await;
    let recorded = record_doses(&server, "CLI", 12).await;
    wait_for_empty_outbox(&server, Duration::from_secs(30)).await;
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_vaxcamp"))
                .env_remove("VAXCAMP_SCYLLA_NODES")
                .args(args)
                .output()
                .expect("run vaxcamp")
        })
    };
    let common = |product: &str| -> Vec<String> {
        [
            "allocate",
            "--server",
            &server.base,
            "--token",
            &server.observer,
            "--product",
            product,
            "--quantity",
            "600",
            "--unit",
            "6",
            "--horizon-days",
            "28",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    };
    let table = run(common("COMIRNATY")).await.expect("join");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    assert!(
        text.contains("Shipment of 600 doses of COMIRNATY by site"),
        "{text}"
    );
    let hn = text
        .lines()
        .find(|l| l.starts_with("hn-01"))
        .unwrap_or_else(|| panic!("a line for hn-01: {text}"));
    // From the right: after, days now, per day, lapsed, owed.
    let owed: u64 = hn
        .split_whitespace()
        .rev()
        .nth(4)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the owed column of {hn}"));
    assert_eq!(
        owed, recorded as u64,
        "every first dose leaves one owed, due within 28 days: {hn}"
    );
    assert!(text.contains("analytics as of "), "{text}");

    let mut json_args = common("COMIRNATY");
    json_args.push("--json".into());
    let json = run(json_args).await.expect("join");
    let answer: Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(answer["analytics_backend"], "embedded");
    assert!(answer["plan"]["allocated_doses"].as_u64().expect("n") <= 600);

    let refused = run(common("NOPE")).await.expect("join");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("unknown_product") && stderr.contains("no product NOPE"),
        "{stderr}"
    );
    server.stop().await;
}

/// Every bad parameter of the two analytics reads is a 400 naming the parameter and saying what
/// it must be; without a token 401, with a site's token 403, with an observer's or an admin's 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_and_uptake_check_parameters_and_roles() {
    let server = TestServer::start().await;
    let allocation = "/v1/allocation?product=COMIRNATY&quantity=600";
    let uptake = "/v1/analytics/uptake?level=site&granularity=hour&days=2";
    for path in [allocation, uptake] {
        let (status, body) = server.get(path, None).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "missing_token");
        let (status, body) = server.get(path, Some("vxc_observer_nonsense")).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "invalid_token");
        let (status, body) = server.get(path, Some(&server.site)).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
        for token in [&server.observer, &server.admin] {
            let (status, body) = server.get(path, Some(token)).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            assert_eq!(body["analytics_backend"], "embedded");
            assert!(body["analytics"]["as_of"].is_i64(), "{body}");
        }
    }

    // (query, field, words the message must hold)
    let bad_allocations = [
        ("quantity=600", "product", "required"),
        ("product=COMIRNATY", "quantity", "required"),
        (
            "product=COMIRNATY&quantity=abc",
            "quantity",
            "from 0 to 1000000000",
        ),
        (
            "product=COMIRNATY&quantity=-5",
            "quantity",
            "from 0 to 1000000000",
        ),
        (
            "product=COMIRNATY&quantity=1000000001",
            "quantity",
            "from 0 to 1000000000",
        ),
        (
            "product=COMIRNATY&quantity=18446744073709551616",
            "quantity",
            "from 0 to 1000000000",
        ),
        (
            "product=COMIRNATY&quantity=600&unit=0",
            "unit",
            "from 1 to 100000",
        ),
        (
            "product=COMIRNATY&quantity=600&unit=4294967296",
            "unit",
            "from 1 to 100000",
        ),
        (
            "product=COMIRNATY&quantity=600&window_days=0",
            "window_days",
            "from 1 to 366",
        ),
        (
            "product=COMIRNATY&quantity=600&horizon_days=367",
            "horizon_days",
            "from 1 to 366",
        ),
        (
            "product=COMIRNATY&quantity=600&horizon_days=two",
            "horizon_days",
            "\"two\"",
        ),
        (
            "product=COMIRNATY&quantity=600&owed_lapse_days=99999",
            "owed_lapse_days",
            "from 0 to 3650",
        ),
        (
            "product=COMIRNATY&quantity=600&level=ward",
            "level",
            "site, district or province",
        ),
        ("product=COMIR%20NATY&quantity=600", "product", "product"),
    ];
    for (query, field, words) in bad_allocations {
        let (status, body) = server
            .get(&format!("/v1/allocation?{query}"), Some(&server.observer))
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(body["field"], field, "{query}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(&format!("{field}: ")) && message.contains(words),
            "{query}: {body}"
        );
    }
    let bad_uptakes = [
        ("days=0", "days", "from 1 to 366"),
        ("days=367", "days", "from 1 to 366"),
        ("days=4294967297", "days", "from 1 to 366"),
        ("level=ward", "level", "province, district or site"),
        ("granularity=week", "granularity", "day or hour"),
    ];
    for (query, field, words) in bad_uptakes {
        let (status, body) = server
            .get(
                &format!("/v1/analytics/uptake?{query}"),
                Some(&server.observer),
            )
            .await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_field");
        assert_eq!(body["field"], field, "{query}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| m.contains(words)),
            "{query}: {body}"
        );
    }
    for path in [
        "/v1/allocation?product=COMIRNATY&quantity=600&shipment=600",
        "/v1/analytics/uptake?window=3",
    ] {
        let (status, body) = server.get(path, Some(&server.observer)).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("unknown field")),
            "{path}: {body}"
        );
    }
    let (status, body) = server
        .get(
            "/v1/allocation?product=NOPE&quantity=600",
            Some(&server.observer),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "unknown_product");
    // In the catalogue, but no site gives or stocks it.
    let (status, body) = server
        .get(
            "/v1/allocation?product=VAXZEVRIA&quantity=600",
            Some(&server.observer),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "no_sites");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("POST /v1/lots")),
        "{body}"
    );
    server.stop().await;
}

/// Only the sites that give or stock a product are planned for; a lot's allocation raised
/// through the API is an adjustment of what the site received, not a second receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_cover_the_sites_of_the_product_and_count_lots_received_once() {
    let server = TestServer::start().await;
    let lines = |answer: &Value| -> Vec<(String, u64)> {
        answer["plan"]["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .map(|l| {
                (
                    l["area"].as_str().unwrap_or("?").to_owned(),
                    l["received_doses"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    let plan = |product: &str| {
        let path = format!("/v1/allocation?product={product}&quantity=100");
        let server = &server;
        async move {
            wait_for_empty_outbox(server, Duration::from_secs(30)).await;
            let (status, answer) = server.get(&path, Some(&server.observer)).await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            answer
        }
    };
    // hcm-01 has no COMIRNATY and hn-01 no SPIKEVAX: neither is handed the other's people.
    assert_eq!(
        lines(&plan("COMIRNATY").await),
        vec![("hn-01".to_owned(), 100_101)]
    );
    assert_eq!(
        lines(&plan("SPIKEVAX").await),
        vec![("hcm-01".to_owned(), 100_000)]
    );
    // FK100 raised from 100,000 to 120,000 doses, then announced again unchanged.
    let raised = json!({"lot_number": "FK100", "site_id": "hn-01", "product": "COMIRNATY",
                        "expires": "2099-12-31", "quantity": 120_000});
    for _ in 0..2 {
        let (status, body) = server.post("/v1/lots", Some(&server.admin), &raised).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    assert_eq!(
        lines(&plan("COMIRNATY").await),
        vec![("hn-01".to_owned(), 120_101)],
        "received 100,101, adjusted by +20,000 once"
    );
    server.stop().await;
}

/// A listener that accepts connections and never answers: a black-holed ClickHouse, or server.
struct BlackHole {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket); // never read, never answered, never closed
            }
        });
        Self { url, task }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        // Closes the held connections and the listener: clients fail at once.
        self.task.abort();
    }
}

/// With ClickHouse black-holed, the allocation and uptake reads answer 503
/// `analytics_unavailable` with `Retry-After` after the read timeout instead of hanging, and
/// `vaxcamp allocate` against a server that never answers gives up after `--timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_clickhouse_is_answered_with_503_not_a_hang() {
    let clickhouse = BlackHole::start().await;
    let url = clickhouse.url.clone();
    let server = TestServer::start_with(move |c| {
        c.analytics.clickhouse = Some(url);
        c.analytics.read_timeout_seconds = 1;
    })
    .await;
    for path in [
        "/v1/allocation?product=COMIRNATY&quantity=600",
        "/v1/analytics/uptake?days=1",
    ] {
        // The client's own deadline is far beyond the server's: the server must answer first.
        let response = tokio::time::timeout(
            Duration::from_secs(30),
            server
                .client
                .get(server.url(path))
                .bearer_auth(&server.observer)
                .send(),
        )
        .await
        .unwrap_or_else(|_| panic!("{path} hung"))
        .expect("an answer");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("5"),
            "{path}"
        );
        let body: Value = response.json().await.expect("JSON");
        assert_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "analytics_unavailable",
        );
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("did not answer within 1 s")),
            "{body}"
        );
    }
    // Doses are still recorded meanwhile.
    let (person, _) = server.register("BH00001", "Lê Văn Nam").await;
    let (status, body) = server
        .post(
            "/v1/doses",
            Some(&server.site),
            &dose(&new_id(), &person, 1, now()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The CLI against a server that never answers.
    let silent = BlackHole::start().await;
    let args = vec![
        "allocate".to_owned(),
        "--server".into(),
        silent.url.clone(),
        "--token".into(),
        "vxc_observer_x".into(),
        "--product".into(),
        "COMIRNATY".into(),
        "--quantity".into(),
        "600".into(),
        "--timeout".into(),
        "1".into(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_vaxcamp"))
            .env_remove("VAXCAMP_SCYLLA_NODES")
            .args(args)
            .output()
            .expect("run vaxcamp")
    })
    .await
    .expect("join");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("did not answer within 1 s") && stderr.contains("--timeout"),
        "{stderr}"
    );
    drop(silent);
    drop(clickhouse);
    server.stop().await;
}
