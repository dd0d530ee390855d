//! The shipment allocation proposal: what the console asks (`GET /v1/allocation`), the answer as
//! the console reads it, and the background request that brings it.
//!
//! Like [`crate::feed`], these types mirror the server's JSON (`ingest/src/api/analytics.rs`
//! wraps `analytics::allocation::Plan`) without sharing its code, and every field has a
//! default, so that a server with more or fewer fields still gives a readable proposal.
//!
//! The request never runs on the render loop: [`App`](crate::App) only records that one is
//! wanted, the event loop hands it to [`fetch`] on a task of its own, and the answer comes back
//! as [`Event::Allocation`] carrying the request's id, so that an answer to a request the user
//! has since replaced is dropped.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::app::Event;
use crate::feed::{describe, seconds};

/// The level a shipment is split across.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// One line per vaccination site.
    #[default]
    Site,
    /// One line per district.
    District,
    /// One line per province.
    Province,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Site, Level::District, Level::Province];

    /// The name in the URL and on screen.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Site => "site",
            Level::District => "district",
            Level::Province => "province",
        }
    }

    /// The next level (→), wrapping around.
    pub fn next(self) -> Level {
        match self {
            Level::Site => Level::District,
            Level::District => Level::Province,
            Level::Province => Level::Site,
        }
    }

    /// The previous level (←), wrapping around.
    pub fn previous(self) -> Level {
        match self {
            Level::Site => Level::Province,
            Level::District => Level::Site,
            Level::Province => Level::District,
        }
    }
}

/// What the user asked for: one shipment of one product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationQuery {
    /// A product code, e.g. `COMIRNATY`.
    pub product: String,
    /// Doses in the shipment.
    pub quantity: u64,
    pub level: Level,
}

/// `GET /v1/allocation`: the proposal and where it came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AllocationAnswer {
    /// `clickhouse` or `embedded`: where the uptake figures came from.
    pub analytics_backend: String,
    /// Unix seconds when the server made the proposal.
    pub generated_at: i64,
    pub plan: Plan,
}

/// The proposed split of a shipment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Plan {
    pub request: PlanRequest,
    /// One line per area, sorted by area id.
    pub lines: Vec<PlanLine>,
    pub need_doses: u64,
    /// Never more than the shipment.
    pub allocated_doses: u64,
    /// Shipment doses not allocated: beyond every need, or less than a unit after rounding.
    pub held_back_doses: u64,
    pub unmet_need_doses: u64,
    /// When the shipment is short: the days of planned use every line with a need was filled to.
    pub fill_level_days: Option<f64>,
    /// Registrations in districts where no site offers the product.
    pub unplaced_registrations: u64,
    /// Plain-language remarks on how the plan was made and what to check.
    pub notes: Vec<String>,
}

/// The request as the server understood it, with its defaults filled in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanRequest {
    pub product: String,
    pub shipment_doses: u64,
    /// Allocations are whole multiples of this many doses (a vial or a box).
    pub unit_doses: u32,
    /// Days of uptake the daily rates are taken from.
    pub window_days: u32,
    /// Days of need the shipment should cover.
    pub horizon_days: u32,
    pub level: Level,
}

/// One area's proposed share of the shipment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanLine {
    /// Site id, `PROVINCE/DISTRICT` or province code, according to the level.
    pub area: String,
    /// The site's name at site level; the district or province code otherwise.
    pub name: String,
    pub site_count: u32,
    /// Doses a day at the recent pace.
    pub daily_rate: f64,
    pub stock_on_hand: u64,
    pub owed_doses: u64,
    pub remaining_registrations: u64,
    pub planned_doses: u64,
    /// Doses missing to cover the horizon.
    pub need_doses: u64,
    /// Doses proposed from this shipment.
    pub allocated_doses: u64,
    /// `None` when the area gives no doses at the moment.
    pub days_of_supply_before: Option<f64>,
    pub days_of_supply_after: Option<f64>,
}

/// Where the allocation requests go.
#[derive(Debug, Clone)]
pub struct AllocationClient {
    client: reqwest::Client,
    /// The server's base URL, e.g. `http://127.0.0.1:8080`.
    server: String,
    /// An observer (or admin) token.
    token: String,
    /// A proposal that takes longer than this is given up (the user can ask again).
    timeout: Duration,
}

impl AllocationClient {
    /// # Errors
    /// When the HTTP client cannot be made (no TLS roots and the like); the message says so.
    pub fn new(server: impl Into<String>, token: impl Into<String>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        Ok(Self {
            client,
            server: server.into(),
            token: token.into(),
            timeout: Duration::from_secs(30),
        })
    }

    /// Gives up on a proposal after `timeout` (30 s unless changed).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The request's URL, its parameters encoded.
    ///
    /// # Errors
    /// When the server's URL is not a URL.
    pub fn url(&self, query: &AllocationQuery) -> Result<reqwest::Url, String> {
        let base = format!("{}/v1/allocation", self.server.trim_end_matches('/'));
        let mut url = reqwest::Url::parse(&base)
            .map_err(|e| format!("the server address {:?} is not a URL: {e}", self.server))?;
        url.query_pairs_mut()
            .append_pair("product", &query.product)
            .append_pair("quantity", &query.quantity.to_string())
            .append_pair("level", query.level.as_str());
        Ok(url)
    }

    /// Asks the server for a proposal.
    ///
    /// # Errors
    /// A sentence for the screen: the server's own message when it refused (400, 404, 409, 503
    /// carry `{"error", "message"}`), otherwise what went wrong on the way.
    pub async fn propose(&self, query: &AllocationQuery) -> Result<AllocationAnswer, String> {
        let request = self
            .client
            .get(self.url(query)?)
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send();
        let response = match tokio::time::timeout(self.timeout, request).await {
            Err(_) => return Err(self.no_answer()),
            Ok(Err(e)) => return Err(describe(&e)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let body = match tokio::time::timeout(self.timeout, response.text()).await {
            Err(_) => return Err(self.no_answer()),
            Ok(Err(e)) => return Err(describe(&e)),
            Ok(Ok(body)) => body,
        };
        if !status.is_success() {
            return Err(refusal(status, &body));
        }
        serde_json::from_str(&body).map_err(|e| format!("cannot read the server's proposal: {e}"))
    }

    fn no_answer(&self) -> String {
        format!(
            "the server did not answer within {} s; try again",
            seconds(self.timeout)
        )
    }
}

/// The message of a refusal: the server's `message` when the body has one.
fn refusal(status: reqwest::StatusCode, body: &str) -> String {
    let json = serde_json::from_str::<serde_json::Value>(body).ok();
    let code = json.as_ref().and_then(|v| v["error"].as_str());
    let message = json.as_ref().and_then(|v| v["message"].as_str());
    match (code, message) {
        // An older server answers its fallback 404: it has no planner at all.
        (Some("no_such_route"), _) => {
            "this server has no allocation planner (it is older than the console)".to_owned()
        }
        (_, Some(message)) => message.to_owned(),
        _ if status == reqwest::StatusCode::NOT_FOUND => {
            "this server has no allocation planner (it is older than the console)".to_owned()
        }
        _ => {
            let body = body.trim();
            if body.is_empty() {
                format!("the server answered {status}")
            } else {
                format!("the server answered {status}: {body}")
            }
        }
    }
}

/// Asks for the proposal numbered `id` and sends the answer to the console as
/// [`Event::Allocation`]. Nothing is sent if the console has closed.
pub async fn fetch(
    client: AllocationClient,
    id: u64,
    query: AllocationQuery,
    events: mpsc::Sender<Event>,
) {
    let answer = client.propose(&query).await.map(Box::new);
    let _ = events.send(Event::Allocation { id, answer }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encodes_the_query() {
        let client = AllocationClient::new("http://127.0.0.1:8080/", "t").expect("a client");
        let url = client.url(&AllocationQuery {
            product: "A B&C".into(),
            quantity: 5_000,
            level: Level::District,
        });
        assert_eq!(
            url.map(String::from).as_deref(),
            Ok("http://127.0.0.1:8080/v1/allocation?product=A+B%26C&quantity=5000&level=district")
        );
    }

    #[test]
    fn refusals_show_the_servers_message() {
        use reqwest::StatusCode;
        assert_eq!(
            refusal(
                StatusCode::NOT_FOUND,
                r#"{"error":"unknown_product","message":"no product X in the catalogue"}"#
            ),
            "no product X in the catalogue"
        );
        assert_eq!(
            refusal(
                StatusCode::NOT_FOUND,
                r#"{"error":"no_such_route","message":"no such endpoint"}"#
            ),
            "this server has no allocation planner (it is older than the console)"
        );
        assert_eq!(
            refusal(StatusCode::BAD_GATEWAY, "  "),
            "the server answered 502 Bad Gateway"
        );
    }

    #[test]
    fn answers_tolerate_missing_and_unknown_fields() {
        let answer: AllocationAnswer = serde_json::from_str(
            r#"{"plan": {"request": {"product": "P", "level": "district", "new": 1},
                "lines": [{"area": "01/001", "allocated_doses": 10, "days_of_supply_before": null}],
                "future": []}}"#,
        )
        .unwrap_or_default();
        assert_eq!(answer.plan.request.level, Level::District);
        assert_eq!(answer.plan.lines[0].allocated_doses, 10);
        assert_eq!(answer.plan.lines[0].days_of_supply_before, None);
    }
}
