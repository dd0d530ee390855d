//! Command-line flags of `vaxcamp loadtest` and `vaxcamp loadtest check-ledger`, and the duration
//! parser they use.

use std::path::PathBuf;
use std::time::Duration;

use crate::workload::{Mix, Scenario};

/// Flags of `vaxcamp loadtest`. See loadtest/README.md for the workload they drive.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadtestArgs {
    /// Campaign file (server, admin token, site tokens and lots, population), as written by
    /// `vaxcamp demo`. Not needed for --scenario healthz with --server.
    #[arg(long, env = "VAXCAMP_CAMPAIGN", value_name = "FILE")]
    pub campaign: Option<PathBuf>,
    /// Server base URL, e.g. http://127.0.0.1:8080; overrides the campaign file's.
    #[arg(long, env = "VAXCAMP_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Target rate in requests per second (open loop: request i is due at start + i/rate and its
    /// latency counts from then). 0 = closed loop, as fast as answers come, to find the ceiling.
    #[arg(long, default_value_t = 1000.0, value_name = "N")]
    pub rate: f64,
    /// How long to run: 500ms, 30s, 5m, 1h.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Workers: the most requests in flight at once (and keep-alive connections).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub concurrency: usize,
    /// What to send.
    #[arg(long, value_enum, default_value_t = Scenario::Mix)]
    pub scenario: Scenario,
    #[command(flatten)]
    pub mix: Mix,
    /// Write the full report (histograms included) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Append every acknowledged dose (`<dose_id>,<person_code>`) to this file, for check-ledger.
    #[arg(long, value_name = "FILE")]
    pub ledger: Option<PathBuf>,
    /// First run the same generator against GET /healthz with the same settings, and report the
    /// workload as a share of that ceiling.
    #[arg(long)]
    pub baseline: bool,
    /// Seed for every random choice (default: random, printed in the report).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Time allowed for each request's complete answer.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// Flags of `vaxcamp loadtest check-ledger`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckLedgerArgs {
    /// The ledger written by `vaxcamp loadtest --ledger FILE`.
    #[arg(long, value_name = "FILE")]
    pub ledger: PathBuf,
    /// Campaign file to take the server and admin token from.
    #[arg(long, env = "VAXCAMP_CAMPAIGN", value_name = "FILE")]
    pub campaign: Option<PathBuf>,
    /// Server base URL; overrides the campaign file's.
    #[arg(long, env = "VAXCAMP_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Admin (or observer) token; overrides the campaign file's.
    #[arg(
        long,
        env = "VAXCAMP_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,
    /// Dose ids per lookup request (the server accepts at most 10000).
    #[arg(long, default_value_t = crate::ledger::MAX_LOOKUP_CHUNK, value_name = "N")]
    pub chunk: usize,
    /// Also write the result (every missing and duplicated id) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// A duration that is not `<number><unit>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration: write a number and a unit, e.g. 500ms, 30s, 5m, 1h")]
pub struct DurationParseError(String);

/// Parses `500ms`, `30s`, `1.5s`, `5m`, `1h` (one number, one unit; no sign).
///
/// # Errors
/// Anything else.
pub fn parse_duration(text: &str) -> Result<Duration, DurationParseError> {
    let bad = || DurationParseError(text.to_owned());
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn parses_the_documented_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_everything_else() {
        for text in [
            "", "30", "s", "-1s", "1.s", ".5s", "1d", "1 s", "1e3s", "1s2", "ms", "1.2.3s", "30S",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadtestArgs,
    }

    #[test]
    fn flags_have_the_documented_defaults() {
        let cli = Cli::try_parse_from(["loadtest"]).expect("defaults parse");
        let a = cli.args;
        assert_eq!(
            (a.rate, a.duration, a.concurrency, a.scenario),
            (1000.0, Duration::from_secs(30), 64, Scenario::Mix)
        );
        assert_eq!(a.mix, Mix::default());
        assert!(!a.baseline && a.seed.is_none() && a.json.is_none());

        let cli = Cli::try_parse_from([
            "loadtest",
            "--rate",
            "0",
            "--duration",
            "500ms",
            "--scenario",
            "doses",
            "--mix-return",
            "30",
            "--batch-size",
            "1000",
        ])
        .expect("parse");
        assert_eq!(cli.args.rate, 0.0);
        assert_eq!(cli.args.duration, Duration::from_millis(500));
        assert_eq!(cli.args.scenario, Scenario::Doses);
        assert_eq!(
            (cli.args.mix.return_pct, cli.args.mix.batch_size),
            (30, 1000)
        );
        assert!(Cli::try_parse_from(["loadtest", "--mix-verify", "101"]).is_err());
        assert!(Cli::try_parse_from(["loadtest", "--batch-size", "1001"]).is_err());
    }
}
