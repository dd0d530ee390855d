//! What the analytics test binaries share: finding the test ClickHouse server.

/// The test server's URL from `VAXCAMP_TEST_CLICKHOUSE` (set by `tests/run.sh`, which starts
/// one). Without it the caller skips its ClickHouse half with a message, unless
/// `VAXCAMP_REQUIRE_CLICKHOUSE=1` (CI) makes that a failure.
pub fn clickhouse_url() -> Option<String> {
    match std::env::var("VAXCAMP_TEST_CLICKHOUSE") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("VAXCAMP_REQUIRE_CLICKHOUSE").as_deref() != Ok("1"),
                "VAXCAMP_REQUIRE_CLICKHOUSE=1 but VAXCAMP_TEST_CLICKHOUSE is not set"
            );
            eprintln!(
                "skipped the ClickHouse half: set VAXCAMP_TEST_CLICKHOUSE (bash tests/run.sh does)"
            );
            None
        }
    }
}
