//! `vaxcamp allocate`: asks a running server's planner how to split a shipment and prints the
//! proposal as a table a health department can read (or the JSON, for a spreadsheet or a script).

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// `vaxcamp allocate --product COMIRNATY --quantity 12000 [--level district]`
#[derive(Debug, clap::Args)]
pub struct AllocateArgs {
    /// The server's base URL.
    #[arg(long, env = "VAXCAMP_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// An observer or admin token.
    #[arg(long, env = "VAXCAMP_TOKEN", hide_env_values = true)]
    token: String,
    /// Product code of the shipment (e.g. COMIRNATY).
    #[arg(long)]
    product: String,
    /// Doses in the shipment.
    #[arg(long)]
    quantity: u64,
    /// Split between sites, districts or provinces.
    #[arg(long, default_value = "site", value_parser = ["site", "district", "province"])]
    level: String,
    /// Doses per vial or box; allocations are whole multiples (default: the server's setting).
    #[arg(long)]
    unit: Option<u32>,
    /// Uptake window in days (default: the server's setting).
    #[arg(long)]
    window_days: Option<u32>,
    /// Days of need the shipment should cover (default: the server's setting).
    #[arg(long)]
    horizon_days: Option<u32>,
    /// Days overdue after which a person owed a dose counts as lapsed (default: the server's
    /// setting, `[allocation] owed_lapse_days`).
    #[arg(long)]
    owed_lapse_days: Option<u32>,
    /// Seconds to wait for the server's answer before giving up.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: AllocateArgs) -> anyhow::Result<()> {
    // Product codes are plain letters, digits and dashes: safe in a query string as they are.
    let product = store::ProductCode::new(&args.product)
        .map_err(|e| anyhow::anyhow!("--product: {}", e.message))?;
    let mut query: Vec<(&str, String)> = vec![
        ("product", product.to_string()),
        ("quantity", args.quantity.to_string()),
        ("level", args.level.clone()),
    ];
    for (name, value) in [
        ("unit", args.unit),
        ("window_days", args.window_days),
        ("horizon_days", args.horizon_days),
        ("owed_lapse_days", args.owed_lapse_days),
    ] {
        if let Some(v) = value {
            query.push((name, v.to_string()));
        }
    }
    let url = format!("{}/v1/allocation", args.server.trim_end_matches('/'));
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // Bounded: a server (or a proxy) that accepts the connection and never answers must not
    // hang the command.
    let timeout = Duration::from_secs(args.timeout);
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .context("could not build the HTTP client")?;
    let timed_out = || {
        format!(
            "{url} did not answer within {} s; the server may be overloaded: try again, or raise --timeout",
            args.timeout
        )
    };
    let response = client
        .get(format!("{url}?{}", query.join("&")))
        .bearer_auth(&args.token)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                anyhow::anyhow!(timed_out())
            } else {
                anyhow::Error::new(e).context(format!("could not reach {url}"))
            }
        })?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| {
        if e.is_timeout() {
            anyhow::anyhow!(timed_out())
        } else {
            anyhow::Error::new(e).context(format!("{url} answered {status} without JSON"))
        }
    })?;
    if !status.is_success() {
        anyhow::bail!(
            "{status}: {} ({})",
            body["message"].as_str().unwrap_or("no message"),
            body["error"].as_str().unwrap_or("no error code")
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        print!("{}", render(&body));
    }
    Ok(())
}

/// The proposal as a plain-text table.
fn render(body: &Value) -> String {
    let plan = &body["plan"];
    let request = &plan["request"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let days = |v: &Value| {
        v.as_f64()
            .map_or_else(|| "—".to_owned(), |d| format!("{d:.1}"))
    };
    let mut out = format!(
        "Shipment of {} doses of {} by {} (units of {}, uptake over {} days, covering {} days; {} analytics)\n\n",
        n(&request["shipment_doses"]),
        request["product"].as_str().unwrap_or("?"),
        request["level"].as_str().unwrap_or("?"),
        n(&request["unit_doses"]),
        n(&request["window_days"]),
        n(&request["horizon_days"]),
        body["analytics_backend"].as_str().unwrap_or("?"),
    );
    let analytics = &body["analytics"];
    if let Some(as_of) = analytics["as_of"]
        .as_i64()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
    {
        let stale = analytics["stale"].as_bool().unwrap_or(false);
        out.push_str(&format!(
            "{}analytics as of {} UTC{}\n\n",
            if stale { "STALE: " } else { "" },
            as_of
                .format(&time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute]:[second]"
                ))
                .unwrap_or_default(),
            analytics["note"]
                .as_str()
                .map(|note| format!(" ({note})"))
                .unwrap_or_default(),
        ));
    }
    out.push_str(&format!(
        "{:<16} {:<28} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>8}\n",
        "area",
        "name",
        "allocated",
        "need",
        "stock",
        "received",
        "owed",
        "lapsed",
        "per day",
        "days now",
        "after"
    ));
    for line in plan["lines"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let name: String = line["name"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(28)
            .collect();
        out.push_str(&format!(
            "{:<16} {:<28} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7.1} {:>8} {:>8}\n",
            line["area"].as_str().unwrap_or("?"),
            name,
            n(&line["allocated_doses"]),
            n(&line["need_doses"]),
            n(&line["stock_on_hand"]),
            n(&line["received_doses"]),
            n(&line["owed_doses"]),
            n(&line["lapsed_doses"]),
            line["daily_rate"].as_f64().unwrap_or(0.0),
            days(&line["days_of_supply_before"]),
            days(&line["days_of_supply_after"]),
        ));
    }
    out.push_str(&format!(
        "\nallocated {} · held back {} · need {} · unmet {} · lapsed (to call back) {}\n",
        n(&plan["allocated_doses"]),
        n(&plan["held_back_doses"]),
        n(&plan["need_doses"]),
        n(&plan["unmet_need_doses"]),
        n(&plan["lapsed_doses"]),
    ));
    for note in plan["notes"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        if let Some(note) = note.as_str() {
            out.push_str(&format!("note: {note}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(stale: bool) -> Value {
        json!({
            "analytics_backend": "clickhouse",
            "analytics": {
                "as_of": 1_795_000_000,
                "stale": stale,
                "note": stale.then_some("analytics are 300 s behind: 1200 rows wait in the outbox"),
            },
            "plan": {
                "request": {"product": "COMIRNATY", "shipment_doses": 600, "level": "site",
                            "unit_doses": 6, "window_days": 7, "horizon_days": 14},
                "lines": [{"area": "hn-01", "name": "Bach Mai", "allocated_doses": 600,
                           "need_doses": 640, "stock_on_hand": 40, "received_doses": 1000,
                           "owed_doses": 120, "lapsed_doses": 7, "daily_rate": 45.5,
                           "days_of_supply_before": 0.9, "days_of_supply_after": null}],
                "allocated_doses": 600, "held_back_doses": 0, "need_doses": 640,
                "unmet_need_doses": 40, "lapsed_doses": 7, "notes": ["a note"],
            },
        })
    }

    #[test]
    fn the_table_says_how_fresh_the_figures_are_and_who_lapsed() {
        let fresh = render(&answer(false));
        assert!(fresh.contains("analytics as of 2026-11-18 "), "{fresh}");
        assert!(!fresh.contains("STALE"), "{fresh}");
        let line = fresh
            .lines()
            .find(|l| l.starts_with("hn-01"))
            .expect("a line");
        let columns: Vec<&str> = line.split_whitespace().rev().collect();
        // From the right: after, days now, per day, lapsed, owed, received.
        assert_eq!(
            &columns[..6],
            ["—", "0.9", "45.5", "7", "120", "1000"],
            "{line}"
        );
        assert!(fresh.contains("lapsed (to call back) 7"), "{fresh}");

        let stale = render(&answer(true));
        assert!(
            stale.contains("STALE: analytics as of") && stale.contains("300 s behind"),
            "{stale}"
        );
    }
}
