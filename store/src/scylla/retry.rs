//! The driver's retry policy: idempotent requests are sent again, a bounded number of times,
//! after the errors a resend can cure.
//!
//! The driver's default policy retries almost nothing on the write path: a `WriteTimeout` only
//! for a logged batch's batchlog write, `Overloaded`, server errors and broken connections only
//! on the *next* node (and a one-node plan, or a plan whose other nodes are as busy, then ends
//! at once), and never anything at a serial consistency. Every statement of this store is
//! idempotent by construction (absolute values, and LWT claims that recognise their own earlier
//! write by the journal version they carry, see `shard.rs`), so sending one again can only
//! finish what the first send started. This policy therefore retries, for idempotent requests
//! only, at most [`RETRIES`] times per request:
//!
//! - `WriteTimeout`, `ReadTimeout`, `Unavailable`: on the **same** node. The coordinator is
//!   fine; its replicas were slow or seemed down, which is usually over a moment later, and
//!   another coordinator would ask the same replicas.
//! - `Overloaded`, server errors, `IsBootstrapping`, a broken connection, no free stream: on the
//!   **next** node of the plan (another replica of the partition). The problem is this node;
//!   sending it more work at once would not help. With no next node the error is returned, and
//!   the shard's write is retried as a whole after a back-off (`shard.rs`, `run_attempt`).
//!
//! The request timeout bounds a request with all its retries; a retry is sent at once (the
//! driver's policies cannot wait), which is why only a few are allowed here and the longer,
//! backed-off retries happen one level up, per shard write.

use scylla::errors::{DbError, RequestAttemptError};
use scylla::policies::retry::{RequestInfo, RetryDecision, RetryPolicy, RetrySession};

/// Resends per request after the first send.
pub(crate) const RETRIES: u32 = 2;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct IdempotentRetryPolicy;

impl RetryPolicy for IdempotentRetryPolicy {
    fn new_session(&self) -> Box<dyn RetrySession> {
        Box::new(IdempotentRetrySession { left: RETRIES })
    }
}

struct IdempotentRetrySession {
    left: u32,
}

impl RetrySession for IdempotentRetrySession {
    fn decide_should_retry(&mut self, request: RequestInfo) -> RetryDecision {
        if !request.is_idempotent || self.left == 0 {
            return RetryDecision::DontRetry;
        }
        let decision = decide(request.error);
        if decision != RetryDecision::DontRetry {
            self.left -= 1;
        }
        decision
    }

    fn reset(&mut self) {
        self.left = RETRIES;
    }
}

/// Where an idempotent request goes after this error, if anywhere.
fn decide(error: &RequestAttemptError) -> RetryDecision {
    match error {
        RequestAttemptError::BrokenConnectionError(_)
        | RequestAttemptError::UnableToAllocStreamId => RetryDecision::RetryNextTarget(None),
        RequestAttemptError::DbError(error, _) => match error {
            DbError::WriteTimeout { .. }
            | DbError::ReadTimeout { .. }
            | DbError::Unavailable { .. } => RetryDecision::RetrySameTarget(None),
            DbError::Overloaded | DbError::ServerError | DbError::IsBootstrapping => {
                RetryDecision::RetryNextTarget(None)
            }
            // Errors a resend cannot cure: the statement, the schema, the credentials.
            _ => RetryDecision::DontRetry,
        },
        _ => RetryDecision::DontRetry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scylla::errors::WriteType;
    use scylla::statement::Consistency;

    fn write_timeout() -> RequestAttemptError {
        RequestAttemptError::DbError(
            DbError::WriteTimeout {
                consistency: Consistency::LocalQuorum,
                received: 1,
                required: 2,
                write_type: WriteType::Simple,
            },
            "timed out".into(),
        )
    }

    fn overloaded() -> RequestAttemptError {
        RequestAttemptError::DbError(DbError::Overloaded, "busy".into())
    }

    #[test]
    fn the_errors_a_resend_can_cure_are_retried_a_bounded_number_of_times() {
        assert_eq!(
            decide(&write_timeout()),
            RetryDecision::RetrySameTarget(None)
        );
        assert_eq!(decide(&overloaded()), RetryDecision::RetryNextTarget(None));
        assert_eq!(
            decide(&RequestAttemptError::DbError(
                DbError::SyntaxError,
                "bad".into()
            )),
            RetryDecision::DontRetry
        );
    }
}
