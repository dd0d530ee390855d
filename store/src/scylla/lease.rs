//! The writer lease: one process writes a keyspace at a time.
//!
//! Totals are absolute values rewritten by the shard's writer (see `shard.rs`), so two processes
//! writing one keyspace would overwrite each other's totals. The lease is one row,
//! `writer_lease ('writer')`: `owner` (a uuid per connected store), `holder` (host and pid, for
//! messages), `epoch` (bigint, +1 on every change of owner) and `expires_at` (timestamp).
//!
//! - **Taking it** (`connect`, and the background task after a loss): read the row; no row:
//!   `INSERT ... IF NOT EXISTS` with epoch 1; expired by this process's clock (or released): `UPDATE
//!   ... SET owner, holder, epoch = epoch + 1, expires_at IF owner = <read> AND epoch = <read>`.
//!   Compare-and-set on the values read, never TTL, so two contenders cannot both win.
//! - **Renewing** every `lease_duration / 3` (and, after a renewal that failed, every
//!   `lease_duration / 12` until one succeeds or the lease lapses): `UPDATE ... SET expires_at IF
//!   owner = me AND epoch = mine`. Not applied means another process took it: the lease is lost.
//! - **Checking**: the holder writes only until `sent + lease_duration - margin`, where `sent`
//!   is when its last applied take or renewal was sent (a monotonic clock) and `margin` is
//!   `2 × request_timeout + max_clock_skew` (`crate::lease_timing`). Others may take the lease
//!   at `sent + lease_duration` by the wall clock written in the row, read on *their* clock. A
//!   write request checked at the last moment is not over when the client gives up on it: the
//!   driver may resend it until `request_timeout` has passed, and the coordinator that got the
//!   last resend works on it for up to its own write timeout (at most `request_timeout`, as the
//!   configuration asks), so it lands, if ever, within `2 × request_timeout`; a successor whose
//!   clock runs up to `max_clock_skew` ahead still takes over after that. Every write request
//!   checks this deadline before it is sent (`ScyllaStore::execute`). `connect` refuses
//!   settings where the margin exceeds a third of `lease_duration`: the write window (at least
//!   two thirds) must outlast a renewal period plus the renewal request's own timeout.
//! - **Lost for good**: once the write window lapses without a renewal, or a renewal finds
//!   another owner, this store never holds the lease again: it stops renewing, and every write is
//!   refused from then on. Taking the lease back (a new epoch) would be safe for the totals (see
//!   fencing) but not for what the *process* keeps in memory: the catalogue, stock counters and
//!   credentials it loaded may have been changed by the process that wrote meanwhile. So a
//!   server that loses the lease stops and exits non-zero (`ingest::serve`), and its supervisor
//!   starts it again as a standby that loads everything afresh when it takes the lease.
//! - **Fencing**: taking the lease (a new epoch) makes every shard recover before its first write
//!   under the epoch: it reloads its totals and replays its journal, writing the next version
//!   (`shard.rs`), so totals are never computed from a snapshot read under an older epoch and a
//!   late journal write of the previous holder is never replayed.
//! - **Releasing** (`close`, and best effort on drop): `expires_at` set to the epoch start, so a
//!   waiting standby takes over at once; a crashed process's lease simply expires.
//!
//! Reads never need the lease: a standby can serve lookups.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use time::OffsetDateTime;
use uuid::Uuid;

use super::retry::request_failed;
use super::shard::unavailable;
use crate::error::{Result, StoreError};

/// The lease row's key: one writer lease per keyspace.
const LEASE_NAME: &str = "writer";

/// The lease statements, cloned into the renewal task.
#[derive(Clone)]
pub(crate) struct LeaseStatements {
    pub get: PreparedStatement,
    pub create: PreparedStatement,
    pub take: PreparedStatement,
    pub renew: PreparedStatement,
}

/// What this process knows of its lease. Shared by the store and the renewal task.
#[derive(Debug)]
pub(crate) struct Lease {
    owner: Uuid,
    holder: String,
    keyspace: String,
    duration: Duration,
    /// Cut from the end of each grant: twice a request's timeout plus the clock skew allowed
    /// between hosts (see the module docs).
    margin: Duration,
    state: Mutex<LeaseState>,
}

#[derive(Debug, Default)]
struct LeaseState {
    /// The epoch held (or last held).
    epoch: i64,
    /// Writes are allowed until then; `None` when the lease is not held.
    valid_until: Option<Instant>,
    /// Why writes are refused, for the error message.
    why_not: String,
    /// Released by `close`: never taken again by this store.
    released: bool,
    /// Held once and then lost (lapsed or taken over): never taken again by this store.
    lost: bool,
}

/// The lease row as read.
type LeaseRow = (
    Option<Uuid>,
    Option<String>,
    Option<i64>,
    Option<OffsetDateTime>,
);

/// One attempt to take the lease.
pub(crate) enum Taken {
    Held,
    Busy {
        holder: String,
        owner: Uuid,
        expires_at: OffsetDateTime,
    },
}

impl Lease {
    /// `margin`: `crate::lease_timing::margin`, at most a third of `duration` (checked by
    /// `connect`).
    pub(crate) fn new(keyspace: &str, duration: Duration, margin: Duration) -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown host".into());
        Self {
            owner: Uuid::new_v4(),
            holder: format!("{host} pid {}", std::process::id()),
            keyspace: keyspace.to_owned(),
            duration,
            margin,
            state: Mutex::new(LeaseState {
                why_not: "the lease has not been taken yet".into(),
                ..LeaseState::default()
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn owner(&self) -> Uuid {
        self.owner
    }

    pub(crate) fn holder(&self) -> &str {
        &self.holder
    }

    pub(crate) fn duration(&self) -> Duration {
        self.duration
    }

    /// The epoch under which this process may write now.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the lease is not held or its renewal is overdue.
    pub(crate) fn check(&self) -> Result<i64> {
        let mut state = self.state();
        match state.valid_until {
            Some(until) if Instant::now() < until => return Ok(state.epoch),
            Some(_) => {
                // The window lapsed without a renewal: another process may take over from now
                // on, so this one never writes again (see "Lost for good").
                state.valid_until = None;
                state.lost = true;
                state.why_not =
                    "its renewal is overdue, so another process may have taken it over".into();
                tracing::error!(keyspace = %self.keyspace, epoch = state.epoch, "the writer lease lapsed without a renewal; this process writes no more");
            }
            None => {}
        }
        Err(StoreError::Unavailable(format!(
            "this process no longer holds the writer lease of keyspace {} ({}); only the lease holder writes, so send writes to it",
            self.keyspace, state.why_not
        )))
    }

    /// Whether this store lost the lease for good (see "Lost for good").
    fn lost_for_good(&self) -> bool {
        // A lapse is noticed by a check.
        let _ = self.check();
        self.state().lost
    }

    /// Whether writes are allowed now.
    pub(crate) fn held(&self) -> bool {
        self.check().is_ok()
    }

    pub(crate) fn epoch(&self) -> i64 {
        self.state().epoch
    }

    pub(crate) fn released(&self) -> bool {
        self.state().released
    }

    fn granted(&self, epoch: i64, sent: Instant) {
        let mut state = self.state();
        if state.released || state.lost {
            return;
        }
        state.epoch = epoch;
        state.valid_until = Some(sent + self.duration.saturating_sub(self.margin));
    }

    fn lost(&self, why: String) {
        let mut state = self.state();
        state.valid_until = None;
        state.lost = true;
        state.why_not = why;
    }

    /// Stops writes at once and for good; returns the epoch to release.
    pub(crate) fn mark_released(&self) -> Option<i64> {
        let mut state = self.state();
        let was_held = state.valid_until.is_some() || state.epoch > 0;
        state.released = true;
        state.valid_until = None;
        state.why_not = "it was released when the store was closed".into();
        was_held.then_some(state.epoch)
    }

    /// One attempt to take the lease (or to confirm it, when the row already names this store).
    pub(crate) async fn try_take(
        &self,
        session: &Session,
        statements: &LeaseStatements,
    ) -> Result<Taken> {
        let found: Option<LeaseRow> = session
            .execute_unpaged(&statements.get, (LEASE_NAME,))
            .await
            .map_err(|e| request_failed("reading the writer lease", &e))?
            .into_rows_result()
            .map_err(|e| unavailable("reading the writer lease", e))?
            .maybe_first_row::<LeaseRow>()
            .map_err(|e| unavailable("reading the writer lease", e))?;
        let sent = Instant::now();
        let now = OffsetDateTime::now_utc();
        let expires = now + self.duration;
        let Some((Some(owner), holder, Some(epoch), expires_at)) = found else {
            let applied = lwt_applied(
                session
                    .execute_unpaged(
                        &statements.create,
                        (LEASE_NAME, self.owner, self.holder.as_str(), 1_i64, expires),
                    )
                    .await
                    .map_err(|e| request_failed("taking the writer lease", &e))?,
            )?;
            if applied {
                self.granted(1, sent);
                return Ok(Taken::Held);
            }
            // Someone created it between the read and the insert: read again.
            return Box::pin(self.try_take(session, statements)).await;
        };
        let expires_at = expires_at.unwrap_or(OffsetDateTime::UNIX_EPOCH);
        if owner == self.owner {
            // Ours already (an earlier take whose answer was lost): renew it.
            let applied = self.renew_once(session, statements, epoch, expires).await?;
            if applied {
                self.granted(epoch, sent);
                return Ok(Taken::Held);
            }
            return Box::pin(self.try_take(session, statements)).await;
        }
        if expires_at > now {
            return Ok(Taken::Busy {
                holder: holder.unwrap_or_default(),
                owner,
                expires_at,
            });
        }
        let applied = lwt_applied(
            session
                .execute_unpaged(
                    &statements.take,
                    (
                        self.owner,
                        self.holder.as_str(),
                        epoch + 1,
                        expires,
                        LEASE_NAME,
                        owner,
                        epoch,
                    ),
                )
                .await
                .map_err(|e| request_failed("taking the writer lease", &e))?,
        )?;
        if applied {
            self.granted(epoch + 1, sent);
            tracing::info!(keyspace = %self.keyspace, epoch = epoch + 1, previous = %holder.unwrap_or_default(), "took the writer lease");
            return Ok(Taken::Held);
        }
        Box::pin(self.try_take(session, statements)).await
    }

    async fn renew_once(
        &self,
        session: &Session,
        statements: &LeaseStatements,
        epoch: i64,
        expires: OffsetDateTime,
    ) -> Result<bool> {
        lwt_applied(
            session
                .execute_unpaged(&statements.renew, (expires, LEASE_NAME, self.owner, epoch))
                .await
                .map_err(|e| request_failed("renewing the writer lease", &e))?,
        )
    }

    /// Extends the lease held at `epoch`; marks it lost when another process has taken it.
    /// `true` when it was renewed.
    async fn renew(&self, session: &Session, statements: &LeaseStatements, epoch: i64) -> bool {
        let sent = Instant::now();
        let expires = OffsetDateTime::now_utc() + self.duration;
        match self.renew_once(session, statements, epoch, expires).await {
            Ok(true) => {
                self.granted(epoch, sent);
                true
            }
            Ok(false) => {
                tracing::error!(keyspace = %self.keyspace, epoch, "another process took the writer lease; this process writes no more");
                self.lost(format!("another process took it over from epoch {epoch}"));
                false
            }
            Err(e) => {
                tracing::warn!(keyspace = %self.keyspace, epoch, error = %e, "could not renew the writer lease; trying again shortly");
                if !self.held() {
                    self.lost(format!("it could not be renewed in time: {e}"));
                }
                false
            }
        }
    }

    /// Gives the lease up so that a standby can take it at once.
    pub(crate) async fn release(&self, session: &Session, statements: &LeaseStatements) {
        let Some(epoch) = self.mark_released() else {
            return;
        };
        if let Err(e) = self
            .renew_once(session, statements, epoch, OffsetDateTime::UNIX_EPOCH)
            .await
        {
            tracing::warn!(keyspace = %self.keyspace, error = %e, "could not release the writer lease; it will expire");
        }
    }

    /// Renews the lease every third of its duration while it is held, sooner after a renewal
    /// that failed. Ends when the lease is released or lost: a lost lease is never taken again
    /// by this store (see "Lost for good").
    pub(crate) async fn keep(self: Arc<Self>, session: Arc<Session>, statements: LeaseStatements) {
        let period = self.duration / 3;
        let retry = (self.duration / 12).max(Duration::from_millis(10));
        let mut wait = period;
        loop {
            tokio::time::sleep(wait).await;
            if self.released() || self.lost_for_good() {
                return;
            }
            wait = if self.renew(&session, &statements, self.epoch()).await {
                period
            } else {
                retry
            };
        }
    }
}

/// How a waiting `connect` polls a busy lease: often enough to take over soon after it expires,
/// cheap (one read).
pub(crate) fn poll_interval(duration: Duration) -> Duration {
    (duration / 3).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

fn lwt_applied(result: scylla::response::query_result::QueryResult) -> Result<bool> {
    use scylla::value::{CqlValue, Row};
    let rows = result
        .into_rows_result()
        .map_err(|e| unavailable("the writer lease LWT answered without rows", e))?;
    let at = rows
        .column_specs()
        .get_by_name("[applied]")
        .map(|(i, _)| i)
        .ok_or_else(|| StoreError::Unavailable("a writer lease LWT without [applied]".into()))?;
    let row: Row = rows
        .first_row()
        .map_err(|e| unavailable("the writer lease LWT answer", e))?;
    Ok(matches!(
        row.columns.get(at),
        Some(Some(CqlValue::Boolean(true)))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease::new(
            "ks",
            Duration::from_millis(1500),
            Duration::from_millis(500),
        )
    }

    #[test]
    fn writes_stop_a_margin_before_the_lease_expires() {
        let lease = lease();
        assert!(!lease.lost_for_good(), "not taken yet is not lost");
        let sent = Instant::now();
        lease.granted(3, sent);
        assert_eq!(lease.check().ok(), Some(3));
        let until = lease.state().valid_until.expect("held");
        assert_eq!(until - sent, Duration::from_millis(1000));
    }

    #[test]
    fn a_lease_taken_over_is_never_held_again() {
        let lease = lease();
        lease.granted(3, Instant::now());
        lease.lost("another process took it over from epoch 3".into());
        assert!(lease.check().is_err());
        // A late answer to an earlier renewal, or a take, changes nothing.
        lease.granted(3, Instant::now());
        lease.granted(4, Instant::now());
        assert!(lease.lost_for_good());
        match lease.check() {
            Err(StoreError::Unavailable(message)) => {
                assert!(message.contains("took it over"), "{message}")
            }
            other => panic!("expected writes refused, got {other:?}"),
        }
    }

    #[test]
    fn a_lapsed_lease_is_lost_for_good() {
        let lease = lease();
        // Granted long enough ago that its window is over.
        lease.granted(
            2,
            Instant::now()
                .checked_sub(Duration::from_secs(5))
                .expect("a monotonic clock five seconds back"),
        );
        match lease.check() {
            Err(StoreError::Unavailable(message)) => {
                assert!(message.contains("renewal is overdue"), "{message}")
            }
            other => panic!("expected the lapse to refuse writes, got {other:?}"),
        }
        lease.granted(2, Instant::now());
        assert!(
            !lease.held(),
            "a renewal answered after the lapse does not count"
        );
        assert!(lease.lost_for_good());
    }
}
