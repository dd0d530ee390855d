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
//! - **Renewing** every `lease_duration / 3`: `UPDATE ... SET expires_at IF owner = me AND epoch =
//!   mine`. Not applied means another process took it: the lease is lost.
//! - **Checking**: the holder writes only until `sent + 2/3 × lease_duration`, where `sent` is
//!   when its last applied take or renewal was sent (a monotonic clock). Others may take the
//!   lease at `sent + lease_duration` by the wall clock written in the row, so the last third is
//!   the margin for clock skew between hosts and for a write request already in flight. Every
//!   write request checks this deadline before it is sent (`ScyllaStore::execute`).
//! - **Fencing**: a new epoch makes every shard *in doubt* in this process: before its first
//!   write under the epoch a shard reloads its totals and replays its journal (the recovery of
//!   `shard.rs`), so totals are never computed from a snapshot read under an older epoch.
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
    Held(i64),
    Busy {
        holder: String,
        owner: Uuid,
        expires_at: OffsetDateTime,
    },
}

impl Lease {
    pub(crate) fn new(keyspace: &str, duration: Duration) -> Self {
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
        let state = self.state();
        match state.valid_until {
            Some(until) if Instant::now() < until => Ok(state.epoch),
            _ => Err(StoreError::Unavailable(format!(
                "this process no longer holds the writer lease of keyspace {} ({}); only the lease holder writes, so send writes to it",
                self.keyspace, state.why_not
            ))),
        }
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
        if state.released {
            return;
        }
        state.epoch = epoch;
        state.valid_until = Some(sent + self.duration * 2 / 3);
    }

    fn lost(&self, why: String) {
        let mut state = self.state();
        state.valid_until = None;
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
            .map_err(|e| unavailable("reading the writer lease", e))?
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
                    .map_err(|e| unavailable("taking the writer lease", e))?,
            )?;
            if applied {
                self.granted(1, sent);
                return Ok(Taken::Held(1));
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
                return Ok(Taken::Held(epoch));
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
                .map_err(|e| unavailable("taking the writer lease", e))?,
        )?;
        if applied {
            self.granted(epoch + 1, sent);
            tracing::info!(keyspace = %self.keyspace, epoch = epoch + 1, previous = %holder.unwrap_or_default(), "took the writer lease");
            return Ok(Taken::Held(epoch + 1));
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
                .map_err(|e| unavailable("renewing the writer lease", e))?,
        )
    }

    /// Extends the lease held at `epoch`; marks it lost when another process has taken it.
    async fn renew(&self, session: &Session, statements: &LeaseStatements, epoch: i64) {
        let sent = Instant::now();
        let expires = OffsetDateTime::now_utc() + self.duration;
        match self.renew_once(session, statements, epoch, expires).await {
            Ok(true) => self.granted(epoch, sent),
            Ok(false) => {
                tracing::warn!(keyspace = %self.keyspace, epoch, "another process took the writer lease; writes here are refused");
                self.lost(format!("another process took it over from epoch {epoch}"));
            }
            Err(e) => {
                tracing::warn!(keyspace = %self.keyspace, epoch, error = %e, "could not renew the writer lease");
                if !self.held() {
                    self.lost(format!("it could not be renewed in time: {e}"));
                }
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

    /// Renews the lease every third of its duration while it is held; takes it again (a new
    /// epoch) when it was lost and has expired. Ends when the lease is released.
    pub(crate) async fn keep(self: Arc<Self>, session: Arc<Session>, statements: LeaseStatements) {
        let period = self.duration / 3;
        loop {
            tokio::time::sleep(period).await;
            if self.released() {
                return;
            }
            let holding = self.state().valid_until.is_some();
            if holding {
                self.renew(&session, &statements, self.epoch()).await;
            } else {
                match self.try_take(&session, &statements).await {
                    Ok(Taken::Held(epoch)) => {
                        tracing::info!(keyspace = %self.keyspace, epoch, "holding the writer lease again");
                    }
                    Ok(Taken::Busy { .. }) => {}
                    Err(e) => {
                        tracing::debug!(keyspace = %self.keyspace, error = %e, "could not take the writer lease");
                    }
                }
            }
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
