//! The data feed: the server's live snapshot as the console reads it, and the task that follows
//! `GET /v1/live/stream` (server-sent events), reconnecting with backoff when the server goes
//! away.
//!
//! The console shares no code with the server: these types mirror the JSON of `GET /v1/live`
//! (see `ingest/src/live.rs`), and every field has a default so that a newer server with more
//! fields, or an older one with fewer, still shows what both know.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::app::Event;

/// `GET /v1/live`: the whole campaign at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    /// Unix seconds when the server made this snapshot.
    pub generated_at: i64,
    /// Unix seconds when the server started; "since start" figures count from there.
    pub started_at: i64,
    /// Unix seconds from which "today" counts: midnight in the campaign's time zone, or the
    /// server's start when it could not learn the day's earlier doses.
    pub today_since: i64,
    /// The campaign's time zone as seconds east of UTC (Viet Nam: 25200); 0 from an older
    /// server, whose days were UTC days. Times on screen are shown in it.
    pub utc_offset_s: i64,
    pub backend: String,
    pub thresholds: Thresholds,
    pub doses: Doses,
    pub certificates: SeriesCounts,
    pub registrations: Registrations,
    pub checkins_since_start: u64,
    pub certificates_signed: u64,
    pub latency_ms: Latency,
    pub queues: Queues,
    pub errors: Errors,
    pub stock: Stock,
    pub sites: Vec<SiteLive>,
    /// Names of the provinces and districts that have sites, for people to read ("Hà Nội",
    /// "Ba Đình"): by province code (`"01"`), and by [`district_key`] (`"01/001"`) for a
    /// district, whose code is unique only within its province. The server has them from
    /// `vaxcamp import areas`; an older server, or one without names, sends none, and an area
    /// missing here is shown by its code.
    pub area_names: BTreeMap<String, String>,
    /// How far the analytics side is behind the dose path; `None` from a server older than it.
    pub analytics: Option<Analytics>,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    pub low_stock_days: f64,
    pub silent_after_s: i64,
    pub queue_alert_fraction: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            low_stock_days: 3.0,
            silent_after_s: 600,
            queue_alert_fraction: 0.8,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Doses {
    pub total: u64,
    pub today: u64,
    pub since_start: u64,
    pub per_s_now: f64,
    pub per_s_1m: f64,
    /// Doses per second, oldest first, ending just before `history_end`.
    pub history_per_s: Vec<u64>,
    pub history_end: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SeriesCounts {
    pub partial: u64,
    pub complete: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Registrations {
    pub total: u64,
    pub since_start: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latency {
    /// The seconds the figures cover (the last minute); 0 from an older server, whose figures
    /// covered everything since it started.
    pub window_s: u64,
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Queues {
    pub capacity: usize,
    pub depths: Vec<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Errors {
    pub total: u64,
    pub last_minute: u64,
    pub by_kind: Vec<ErrorCount>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorCount {
    pub kind: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stock {
    pub remaining: u64,
    pub uptake_per_day: Option<f64>,
    pub days_of_supply: Option<f64>,
    pub by_product: Vec<ProductStock>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProductStock {
    pub product: String,
    pub remaining: u64,
    pub uptake_per_day: Option<f64>,
    pub days_of_supply: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SiteLive {
    pub site_id: String,
    pub name: String,
    pub province: String,
    pub district: String,
    pub commune: Option<String>,
    pub daily_capacity: u32,
    pub doses_today: u64,
    pub doses_since_start: u64,
    pub doses_total: u64,
    pub rate_per_s: f64,
    pub last_dose_at: Option<i64>,
    pub remaining: u64,
    pub uptake_per_day: Option<f64>,
    pub days_of_supply: Option<f64>,
    pub low_stock: bool,
    pub silent: bool,
    /// Dose requests from this site that failed (refused, conflicting, busy...) over the last
    /// minute, and since the server started.
    pub errors_last_minute: u64,
    pub errors_since_start: u64,
    pub stock: Vec<ProductStock>,
}

/// The key of a district in [`Snapshot::area_names`]: `"<province>/<district>"`, because the
/// same district code is used in many provinces. The allocation planner names its district
/// lines the same way.
pub fn district_key(province: &str, district: &str) -> String {
    format!("{province}/{district}")
}

/// The analytics side: rows committed with the doses wait in an outbox until the analytics
/// backend has them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Analytics {
    /// `clickhouse` or `embedded`.
    pub backend: String,
    /// Rows committed but not yet in the analytics backend.
    pub outbox_rows: u64,
    pub outbox_bytes: u64,
    pub outbox_max_bytes: u64,
    /// Age of the oldest row waiting, in milliseconds: the analytics lag.
    pub lag_ms: u64,
    /// Rows dropped because the outbox was full (since the server started).
    pub dropped_rows: u64,
    /// The backend's last refusal, cleared by the next success.
    pub last_error: Option<String>,
    /// The server raises `analytics_lagging` above this many seconds of lag.
    pub lag_alert_s: u64,
}

impl Analytics {
    /// Behind by more than the server's alert threshold.
    pub fn is_lagging(&self) -> bool {
        self.lag_alert_s > 0 && self.lag_ms > self.lag_alert_s.saturating_mul(1_000)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Alert {
    /// `critical` or `warning`.
    pub severity: String,
    /// `site_silent`, `error_spike`, `queue_near_full`, `low_stock`, `out_of_stock`,
    /// `analytics_lagging`, `analytics_rows_dropped`, `analytics_rows_set_aside`.
    pub kind: String,
    pub site_id: Option<String>,
    /// The shard of a `queue_near_full` alert (older servers name it in the message only).
    pub shard: Option<usize>,
    /// Figures that change from one snapshot to the next: never what identifies the alert.
    pub message: String,
}

impl Alert {
    pub fn is_critical(&self) -> bool {
        self.severity == "critical"
    }
}

/// What the feed tells the console.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedEvent {
    /// Trying to connect: attempt number `attempt` since the last snapshot.
    Connecting { attempt: u32 },
    /// A snapshot arrived.
    Snapshot(Box<Snapshot>),
    /// The server sent `event: error` instead of a snapshot: it is up, but could not build one.
    ServerError(String),
    /// The connection failed or dropped, for the `failures`-th time in a row; the next try is
    /// at `retry_at` (unix seconds).
    Lost {
        error: String,
        failures: u32,
        retry_at: i64,
    },
}

/// Where the feed connects.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// The server's base URL, e.g. `http://127.0.0.1:8080`.
    pub server: String,
    /// An observer (or admin) token.
    pub token: String,
    /// No event for this long means the connection is dead (the server sends one a second).
    pub stale_after: Duration,
    /// The first retry waits this long; each failure doubles it up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl FeedConfig {
    pub fn new(server: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            token: token.into(),
            stale_after: Duration::from_secs(5),
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
        }
    }

    fn stream_url(&self) -> String {
        format!("{}/v1/live/stream", self.server.trim_end_matches('/'))
    }
}

/// The wait after `failures` failures in a row (1-based): doubling from `first`, capped at
/// `max`.
pub fn backoff(failures: u32, first: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    first.saturating_mul(factor).min(max)
}

/// Splits a server-sent event stream into `(event, data)` pairs as bytes arrive.
#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
    event: String,
    data: String,
}

impl SseParser {
    /// Feeds bytes; returns every event they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.pending.extend_from_slice(bytes);
        let mut complete = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    let event = std::mem::take(&mut self.event);
                    let data = std::mem::take(&mut self.data);
                    complete.push((
                        if event.is_empty() {
                            "message".to_owned()
                        } else {
                            event
                        },
                        data,
                    ));
                }
                continue;
            }
            if line.starts_with(':') {
                continue; // a comment: the keep-alive
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => value.clone_into(&mut self.event),
                "data" => {
                    if !self.data.is_empty() {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
                _ => {}
            }
        }
        complete
    }
}

/// Follows the live stream until `events` is closed, reporting snapshots and connection changes.
pub async fn follow(config: FeedConfig, events: mpsc::Sender<Event>) {
    let client = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            let _ = events
                .send(Event::Feed(FeedEvent::Lost {
                    error: format!("cannot make an HTTP client: {e}"),
                    failures: 1,
                    retry_at: i64::MAX,
                }))
                .await;
            return;
        }
    };
    // Failures since the last snapshot: a connection that delivered data and then dropped
    // counts as the first, so the backoff starts short again.
    let mut failures = 0u32;
    loop {
        if events
            .send(Event::Feed(FeedEvent::Connecting {
                attempt: failures + 1,
            }))
            .await
            .is_err()
        {
            return;
        }
        let (error, got_snapshots) = follow_once(&client, &config, &events).await;
        if events.is_closed() {
            return;
        }
        if got_snapshots {
            failures = 0;
        }
        failures += 1;
        let wait = backoff(failures, config.first_backoff, config.max_backoff);
        let retry_at = unix_now() + i64::try_from(wait.as_millis().div_ceil(1000)).unwrap_or(1);
        if events
            .send(Event::Feed(FeedEvent::Lost {
                error,
                failures,
                retry_at,
            }))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

/// One connection: returns why it ended and whether any snapshot came through it.
async fn follow_once(
    client: &reqwest::Client,
    config: &FeedConfig,
    events: &mpsc::Sender<Event>,
) -> (String, bool) {
    let request = client
        .get(config.stream_url())
        .bearer_auth(&config.token)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send();
    let mut response = match tokio::time::timeout(config.stale_after, request).await {
        Err(_) => return ("the server did not answer".to_owned(), false),
        Ok(Err(e)) => return (describe(&e), false),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or(body);
        return (format!("the server answered {status}: {message}"), false);
    }
    let mut parser = SseParser::default();
    let mut got = false;
    loop {
        let chunk = match tokio::time::timeout(config.stale_after, response.chunk()).await {
            Err(_) => {
                return (
                    format!(
                        "no data for {} s; the connection seems dead",
                        seconds(config.stale_after)
                    ),
                    got,
                );
            }
            Ok(Err(e)) => return (describe(&e), got),
            Ok(Ok(None)) => return ("the server closed the stream".to_owned(), got),
            Ok(Ok(Some(chunk))) => chunk,
        };
        for (event, data) in parser.push(&chunk) {
            if event == "error" {
                // The connection is fine but the figures are not coming: say why on screen.
                let message = if data.trim().is_empty() {
                    "the server reported an error without a message".to_owned()
                } else {
                    data
                };
                if events
                    .send(Event::Feed(FeedEvent::ServerError(message)))
                    .await
                    .is_err()
                {
                    return ("the console closed".to_owned(), got);
                }
                continue;
            }
            if event != "snapshot" {
                continue;
            }
            match serde_json::from_str::<Snapshot>(&data) {
                Ok(snapshot) => {
                    got = true;
                    if events
                        .send(Event::Feed(FeedEvent::Snapshot(Box::new(snapshot))))
                        .await
                        .is_err()
                    {
                        return ("the console closed".to_owned(), got);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a snapshot the console cannot read");
                }
            }
        }
    }
}

/// A transport error in a few words: what failed and its root cause (reqwest's own message
/// names the URL and hides the cause).
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let what = if error.is_connect() {
        "cannot connect"
    } else if error.is_timeout() {
        "timed out"
    } else if error.is_body() || error.is_decode() {
        "the stream broke"
    } else {
        "the request failed"
    };
    let mut root: &dyn std::error::Error = error;
    while let Some(cause) = root.source() {
        root = cause;
    }
    if std::ptr::addr_eq(root, error as &dyn std::error::Error) {
        what.to_owned()
    } else {
        format!("{what}: {root}")
    }
}

/// `5` for whole seconds, `0.3` otherwise.
pub(crate) fn seconds(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        duration.as_secs().to_string()
    } else {
        format!("{:.1}", duration.as_secs_f64())
    }
}

pub(crate) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_splits_events_across_chunks() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"event: snap").is_empty());
        assert!(parser.push(b"shot\ndata: {\"a\":").is_empty());
        let events = parser.push(b"1}\n\n: keep-alive\n\nevent: snapshot\r\ndata: 2\r\n\r\n");
        assert_eq!(
            events,
            [
                ("snapshot".to_owned(), "{\"a\":1}".to_owned()),
                ("snapshot".to_owned(), "2".to_owned())
            ]
        );
        let events = parser.push(b"data: x\ndata: y\n\n");
        assert_eq!(events, [("message".to_owned(), "x\ny".to_owned())]);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let first = Duration::from_millis(500);
        let max = Duration::from_secs(10);
        let waits: Vec<u128> = (1..=7)
            .map(|a| backoff(a, first, max).as_millis())
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(backoff(u32::MAX, first, max), max);
    }

    #[test]
    fn snapshots_tolerate_missing_and_unknown_fields() {
        let snapshot: Snapshot = serde_json::from_str(
            r#"{"generated_at": 5, "doses": {"today": 3, "new_field": 1}, "sites": [{"site_id": "a"}], "future": true}"#,
        )
        .unwrap_or_default();
        assert_eq!(snapshot.generated_at, 5);
        assert_eq!(snapshot.doses.today, 3);
        assert_eq!(snapshot.sites[0].site_id, "a");
        assert_eq!(snapshot.thresholds.low_stock_days, 3.0);
        assert_eq!(
            snapshot.analytics, None,
            "an older server sends no analytics"
        );
        let snapshot: Snapshot = serde_json::from_str(
            r#"{"analytics": {"backend": "clickhouse", "lag_ms": 61000, "last_error": null, "lag_alert_s": 60}}"#,
        )
        .unwrap_or_default();
        let analytics = snapshot.analytics.unwrap_or_default();
        assert_eq!(analytics.backend, "clickhouse");
        assert!(analytics.is_lagging());
    }

    /// Area names come keyed by province code and by `province/district`; a snapshot without
    /// them (an older server, no names imported) has none rather than failing to parse.
    #[test]
    fn area_names_are_optional() {
        let snapshot: Snapshot = serde_json::from_str(
            r#"{"generated_at": 5, "area_names": {"01": "Hà Nội", "01/001": "Ba Đình"}}"#,
        )
        .unwrap_or_default();
        assert_eq!(snapshot.generated_at, 5);
        assert_eq!(
            snapshot.area_names.get("01").map(String::as_str),
            Some("Hà Nội")
        );
        assert_eq!(
            snapshot
                .area_names
                .get(&district_key("01", "001"))
                .map(String::as_str),
            Some("Ba Đình")
        );
        let older: Snapshot =
            serde_json::from_str(r#"{"generated_at": 6, "sites": []}"#).unwrap_or_default();
        assert_eq!(older.generated_at, 6);
        assert!(older.area_names.is_empty());
    }
}
