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
//!
//! **What no resend cures** — the statement, the schema, the credentials or the values are
//! wrong (`Invalid`, `SyntaxError`, `Unauthorized`, `ConfigError`, ...; values the driver
//! cannot serialize; rows that do not decode) — is reported as [`StoreError::Engine`] by
//! [`request_failed`], which the shard write does not retry either: retrying would only hold
//! the shard's writer for longer before the same answer. Everything else (timeouts, overload,
//! unreachable nodes, the client's own timeout) is [`StoreError::Unavailable`]: retry later.

use scylla::errors::{
    DbError, ExecutionError, NextPageError, NextRowError, PagerExecutionError, PrepareError,
    RequestAttemptError, RequestError,
};
use scylla::policies::retry::{RequestInfo, RetryDecision, RetryPolicy, RetrySession};

use crate::error::StoreError;

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

/// How a failed request is reported (see "What no resend cures" in the module docs).
pub(crate) fn request_failed(
    what: &str,
    error: &(impl Permanence + std::fmt::Display),
) -> StoreError {
    if error.is_permanent() {
        StoreError::Engine(format!(
            "{what}: {error}; resending it cannot help (check the schema, the statements and the credentials of the ScyllaDB user)"
        ))
    } else {
        StoreError::Unavailable(format!("{what}: {error}"))
    }
}

/// Whether the server (or the driver) refused a request in a way no resend can change.
fn cannot_be_cured(error: &DbError) -> bool {
    matches!(
        error,
        DbError::SyntaxError
            | DbError::Invalid
            | DbError::AlreadyExists { .. }
            | DbError::FunctionFailure { .. }
            | DbError::AuthenticationError
            | DbError::Unauthorized
            | DbError::ConfigError
            | DbError::ProtocolError
    )
}

/// A driver error that may be permanent (see [`request_failed`]). The driver's error enums are
/// `#[non_exhaustive]`: a variant added later counts as transient.
pub(crate) trait Permanence {
    fn is_permanent(&self) -> bool;
}

impl Permanence for RequestAttemptError {
    fn is_permanent(&self) -> bool {
        match self {
            RequestAttemptError::DbError(error, _) => cannot_be_cured(error),
            RequestAttemptError::SerializationError(_)
            | RequestAttemptError::CqlRequestSerialization(_) => true,
            _ => false,
        }
    }
}

impl Permanence for RequestError {
    fn is_permanent(&self) -> bool {
        matches!(self, RequestError::LastAttemptError(attempt) if attempt.is_permanent())
    }
}

impl Permanence for PrepareError {
    fn is_permanent(&self) -> bool {
        matches!(self, PrepareError::AllAttemptsFailed { first_attempt } if first_attempt.is_permanent())
    }
}

impl Permanence for ExecutionError {
    fn is_permanent(&self) -> bool {
        match self {
            ExecutionError::BadQuery(_) => true,
            ExecutionError::LastAttemptError(attempt) => attempt.is_permanent(),
            ExecutionError::PrepareError(prepare) => prepare.is_permanent(),
            _ => false,
        }
    }
}

impl Permanence for NextPageError {
    fn is_permanent(&self) -> bool {
        match self {
            NextPageError::RequestFailure(request) => request.is_permanent(),
            NextPageError::PartitionKeyError(_) | NextPageError::TypeCheckError(_) => true,
            _ => false,
        }
    }
}

impl Permanence for PagerExecutionError {
    fn is_permanent(&self) -> bool {
        match self {
            PagerExecutionError::PrepareError(prepare) => prepare.is_permanent(),
            PagerExecutionError::SerializationError(_) => true,
            PagerExecutionError::NextPageError(page) => page.is_permanent(),
            _ => false,
        }
    }
}

impl Permanence for NextRowError {
    fn is_permanent(&self) -> bool {
        match self {
            NextRowError::NextPageError(page) => page.is_permanent(),
            NextRowError::RowDeserializationError(_) => true,
            _ => false,
        }
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

    fn failed(error: DbError) -> ExecutionError {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(error, "refused".into()))
    }

    #[test]
    fn what_no_resend_cures_is_an_engine_error_and_the_rest_unavailable() {
        for error in [
            DbError::Invalid,
            DbError::SyntaxError,
            DbError::Unauthorized,
            DbError::ConfigError,
        ] {
            assert!(
                matches!(
                    request_failed("writing", &failed(error.clone())),
                    StoreError::Engine(_)
                ),
                "{error:?}"
            );
        }
        for error in [
            ExecutionError::RequestTimeout(std::time::Duration::from_secs(2)),
            failed(DbError::Overloaded),
            ExecutionError::LastAttemptError(write_timeout()),
        ] {
            assert!(
                matches!(
                    request_failed("writing", &error),
                    StoreError::Unavailable(_)
                ),
                "{error:?}"
            );
        }
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
