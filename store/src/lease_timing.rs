//! The timing rule of the ScyllaDB writer lease (`scylla/lease.rs`), kept apart from the
//! driver so that the server's configuration (`ingest::config`) checks the very rule the store
//! enforces, in a build without the `scylla` feature too.
//!
//! A lease holder stops sending writes [`margin`] before its lease expires:
//!
//! - a write request checked against the lease at the last moment may be resent by the driver
//!   (`scylla/retry.rs`) at any time until `request_timeout` has passed;
//! - the coordinator that received that last resend works on it for up to its own write
//!   timeout (ScyllaDB's `write_request_timeout_in_ms`, 2 s by default), which
//!   `request_timeout` must be at least, so the write can reach the replicas up to
//!   `2 × request_timeout` after the check;
//! - a successor whose clock runs up to `max_clock_skew` ahead takes the lease that much early.
//!
//! The write window left (`lease_duration - margin`) must outlast a renewal period (a third of
//! the lease) plus the renewal's own request, hence [`check`]: three margins fit in the lease.

use std::time::Duration;

/// How long before its lease expires a holder stops sending writes: twice the request timeout
/// plus the clock skew allowed between hosts (see the module docs).
pub fn margin(request_timeout: Duration, max_clock_skew: Duration) -> Duration {
    request_timeout
        .saturating_mul(2)
        .saturating_add(max_clock_skew)
}

/// The [`margin`] of these settings, if three of it fit in `lease_duration`.
///
/// # Errors
/// A message giving the figures and what to change, when they do not; callers prefix it with
/// the names their settings go by.
pub fn check(
    request_timeout: Duration,
    max_clock_skew: Duration,
    lease_duration: Duration,
) -> Result<Duration, String> {
    let margin = margin(request_timeout, max_clock_skew);
    if margin.saturating_mul(3) <= lease_duration {
        return Ok(margin);
    }
    Err(format!(
        "2 × the request timeout ({} ms) + the allowed clock skew ({} ms) = {} ms must not exceed a third of the lease duration ({} ms): a lease holder stops writing that long before its lease expires (a write checked at the last moment may be resent by the driver until the request timeout, and the coordinator keeps the last resend for its own write timeout), and must still have room to renew it; shorten the timeout or the skew, or lengthen the lease",
        request_timeout.as_millis(),
        max_clock_skew.as_millis(),
        margin.as_millis(),
        lease_duration.as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_margin_covers_a_resend_kept_by_the_coordinator_and_the_skew() {
        assert_eq!(margin(ms(2000), ms(1000)), ms(5000));
        // The defaults fit exactly: writes stop 10 s after a renewal that comes every 5 s.
        assert_eq!(check(ms(2000), ms(1000), ms(15_000)), Ok(ms(5000)));
    }

    #[test]
    fn a_lease_without_room_for_three_margins_is_refused() {
        // Fits as timeout + skew (3 × 4 s), not with the resend counted (3 × 7 s).
        let refused = check(ms(3000), ms(1000), ms(15_000)).expect_err("too short");
        assert!(
            refused.contains("7000 ms must not exceed a third of the lease duration (15000 ms)"),
            "{refused}"
        );
        assert!(check(ms(2000), ms(1001), ms(15_000)).is_err());
        assert!(
            check(Duration::MAX, ms(0), ms(600_000)).is_err(),
            "no overflow"
        );
    }
}
