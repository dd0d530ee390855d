//! Analytics through the running server: every committed dose reaches ClickHouse exactly once,
//! an outage of ClickHouse never fails a dose, and the counts converge exactly once it is back.
//!
//! Needs `clickhouse-server` (Debian's package; `tests/run.sh` installs it and exports
//! `VAXCAMP_TEST_CLICKHOUSE`). The outage test starts a ClickHouse of its own with
//! `tests/support/clickhouse.sh`, so stopping it disturbs no other test. Without ClickHouse
//! those tests are skipped with a message, unless `VAXCAMP_REQUIRE_CLICKHOUSE=1` (CI). The
//! `vaxcamp allocate` test runs on the embedded analytics and needs nothing.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use analytics::{Analytics, ClickHouseAnalytics, ClickHouseConfig};
use common::{TestServer, dose, new_id, now};
use reqwest::StatusCode;
use serde_json::Value;

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
    let (status, answer) = server
        .get(
            "/v1/allocation?product=COMIRNATY&quantity=600&level=site&unit=6",
            Some(&server.observer),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let plan = &answer["plan"];
    let hn = plan["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .find(|l| l["area"] == "hn-01")
        .expect("hn-01 is planned for");
    assert_eq!(
        hn["owed_doses"], recorded,
        "every first dose at hn-01 leaves a second owed there"
    );
    assert!(plan["allocated_doses"].as_u64().expect("n") <= 600);
    assert_eq!(plan["allocated_doses"].as_u64().expect("n") % 6, 0);
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

    clickhouse.run("resume");
    wait_for_empty_outbox(&server, Duration::from_secs(60)).await;
    let reader = reader(&clickhouse, database).await;
    assert_eq!(
        reader.dose_count().await.expect("count"),
        (before + during) as u64,
        "after the outage ClickHouse has every dose exactly once"
    );
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
    let owed: u64 = hn
        .split_whitespace()
        .rev()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the owed column of {hn}"));
    assert_eq!(
        owed, recorded as u64,
        "every first dose leaves one owed: {hn}"
    );

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
