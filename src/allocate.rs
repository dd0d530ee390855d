//! `vaxcamp allocate`: asks a running server's planner how to split a shipment and prints the
//! proposal as a table a health department can read (or the JSON, for a spreadsheet or a script).

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
    ] {
        if let Some(v) = value {
            query.push((name, v.to_string()));
        }
    }
    let url = format!("{}/v1/allocation", args.server.trim_end_matches('/'));
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let response = reqwest::Client::new()
        .get(format!("{url}?{}", query.join("&")))
        .bearer_auth(&args.token)
        .send()
        .await
        .with_context(|| format!("could not reach {url}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .with_context(|| format!("{url} answered {status} without JSON"))?;
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
    out.push_str(&format!(
        "{:<16} {:<28} {:>9} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8}\n",
        "area", "name", "allocated", "need", "stock", "owed", "per day", "days now", "after"
    ));
    for line in plan["lines"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let name: String = line["name"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(28)
            .collect();
        out.push_str(&format!(
            "{:<16} {:<28} {:>9} {:>8} {:>8} {:>8} {:>7.1} {:>8} {:>8}\n",
            line["area"].as_str().unwrap_or("?"),
            name,
            n(&line["allocated_doses"]),
            n(&line["need_doses"]),
            n(&line["stock_on_hand"]),
            n(&line["owed_doses"]),
            line["daily_rate"].as_f64().unwrap_or(0.0),
            days(&line["days_of_supply_before"]),
            days(&line["days_of_supply_after"]),
        ));
    }
    out.push_str(&format!(
        "\nallocated {} · held back {} · need {} · unmet {}\n",
        n(&plan["allocated_doses"]),
        n(&plan["held_back_doses"]),
        n(&plan["need_doses"]),
        n(&plan["unmet_need_doses"]),
    ));
    for note in plan["notes"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        if let Some(note) = note.as_str() {
            out.push_str(&format!("note: {note}\n"));
        }
    }
    out
}
