//! Why an execution failed: each layer's error wrapped once, plus the executor's own.

use std::time::Duration;

use crossfold_core::{CodecError, CommandError, StoreError, StreamConflict};

/// Why executing a command failed.
///
/// The command's refusal and the store's failure are wrapped as they are
/// ([`Command`](Self::Command), [`Store`](Self::Store)); the other variants are the executor's
/// own.
///
/// **Nothing was written** unless a variant says otherwise. Two can mean "maybe written"
/// ([`may_have_written`](Self::may_have_written)): [`OutcomeUnknown`](Self::OutcomeUnknown)
/// and [`Timeout`](Self::Timeout). When an append fails without telling whether it committed
/// (a lost connection, a store time limit), the executor does not decide again until it has
/// found out, from the store, whether the append's events are there: if they are, the command
/// succeeded and that is what `execute` returns; if the store cannot tell it before the retry
/// policy gives up, the error is `OutcomeUnknown`. So a command is never applied twice by the
/// executor's own retries, idempotency key or not. Re-executing a command after a "maybe
/// written" error is safe only under an idempotency key
/// ([`ExecutionContext::idempotency_key`](crate::ExecutionContext::idempotency_key)).
///
/// ```
/// use crossfold_core::CommandError;
/// use crossfold_executor::Error;
///
/// let refused = Error::from(CommandError::rejected("insufficient_funds", "balance 5 < 10"));
/// assert_eq!(refused.rule(), Some("insufficient_funds"));
/// assert!(!refused.is_transient());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command refused: `handle` returned this error (a business rule, a missing stream, a
    /// state it cannot act on, invalid input). Nothing was written; never retried.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The store failed and the executor gave up: at once for a failure retrying cannot fix,
    /// or after `attempts` attempts for conflicts and transient failures that outlasted the
    /// retry policy. [`StoreError::Conflict`] here means the streams kept changing. Nothing was
    /// written — every append that failed in a way that may have committed was checked first
    /// (otherwise the error is [`OutcomeUnknown`](Self::OutcomeUnknown)). One exception, a store
    /// that breaks its contract: a [`StoreError::Backend`] saying that the store's answer does
    /// not list the events appended follows an append the store reported as successful.
    #[error("store error after {attempts} attempt{}", if *.attempts == 1 { "" } else { "s" })]
    Store {
        /// The store's error (the last one, after retries).
        #[source]
        source: StoreError,
        /// How many times the command ran.
        attempts: u32,
    },
    /// An event the command emitted could not be encoded, or a stored event of its streams
    /// could not be decoded or upcast into the command's event type (the error names the
    /// event and where it is stored). Nothing was written.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The caller lacks the permission the command requires. Nothing was written.
    #[error("not authorized: permission {permission:?} required")]
    Unauthorized {
        /// The missing permission.
        permission: String,
        /// Who asked, if known.
        actor: Option<String>,
    },
    /// The command's streams kept changing while a refusal (or a decision to write nothing)
    /// was being confirmed — one made on a cached state, or on streams read at different
    /// moments (discovery) — until the retry policy gave up. Nothing was written; retrying
    /// later may succeed.
    #[error("streams kept changing while the decision was confirmed ({attempts} attempts)")]
    Contended {
        /// How many times the command ran.
        attempts: u32,
    },
    /// Discovery kept naming new streams for more rounds than allowed
    /// ([`ExecutorBuilder::max_discovery_rounds`](crate::ExecutorBuilder::max_discovery_rounds)).
    #[error("command {command} kept discovering new streams after {rounds} rounds")]
    DiscoveryLimit {
        /// The command's name.
        command: &'static str,
        /// The rounds allowed.
        rounds: u32,
    },
    /// An append was sent and failed in a way that does not tell whether it committed
    /// ([`StoreError::Unavailable`]: the connection was lost; [`StoreError::Timeout`]: a time
    /// limit struck while it ran), and the executor could not find out before the retry policy
    /// gave up — the store stayed unreachable, or the append's place was still free while a
    /// request left running on the server might yet commit. **The command may have been
    /// applied** (at most once: the executor never decided again while the outcome was open).
    /// `source` is the store error that left it open: the failed append's, or that of the last
    /// read that could not settle it.
    ///
    /// To find out later, read the streams the command writes; re-executing is safe only under
    /// the same idempotency key. Counts as transient (the store may be back later). On
    /// PostgreSQL, `statement_timeout` (or `client_connection_check_interval`) bounds how long
    /// a request whose client is gone can keep running, and so how long such an append can
    /// still commit.
    #[error(
        "the outcome is unknown, the command may have been applied (after {attempts} attempt{})",
        if *.attempts == 1 { "" } else { "s" }
    )]
    OutcomeUnknown {
        /// The store error that left the outcome open.
        #[source]
        source: StoreError,
        /// How many times the command ran (checks of the outcome included).
        attempts: u32,
    },
    /// The execution did not finish within its time limit. **The append may have been
    /// committed** if the limit struck while it was in flight (the executor stops where it is,
    /// so it cannot find out); re-executing it under the same idempotency key is always safe.
    #[error("execution timed out after {0:?}")]
    Timeout(Duration),
    /// The executor was running as many executions as it admits at once
    /// ([`ExecutorBuilder::concurrency_limit`](crate::ExecutorBuilder::concurrency_limit)) and
    /// could not queue this one: its admission queue was full (`waited` is zero), or no
    /// execution finished to make room before the admission timeout or the execution's own
    /// time limit. **Nothing was read or written**, and the executor did not retry: retrying
    /// later may succeed, and is safe ([`is_retryable`](Self::is_retryable) and
    /// [`is_transient`](Self::is_transient) are true). Counted as the `overloaded` outcome and
    /// in `crossfold_executor_admission_refusals_total`.
    #[error(
        "overloaded: not admitted after waiting {waited:?}, with {queued} other execution{} queued",
        if *.queued == 1 { "" } else { "s" }
    )]
    Overloaded {
        /// How many other executions were waiting for admission when this one was refused.
        queued: usize,
        /// How long this one waited.
        waited: Duration,
    },
}

impl Error {
    /// A store error, after `attempts` attempts.
    pub(crate) fn store(source: StoreError, attempts: u32) -> Self {
        Error::Store { source, attempts }
    }

    /// Whether the appends kept meeting version conflicts until the retry policy gave up
    /// ([`Store`](Self::Store) with [`StoreError::Conflict`]): other writers changed the streams
    /// every time. Nothing was written.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Store { source, .. } if source.is_conflict())
    }

    /// Whether the executor gave up confirming a refusal or a no-op because the streams kept
    /// changing ([`Contended`](Self::Contended)). Nothing was written.
    pub fn is_contended(&self) -> bool {
        matches!(self, Error::Contended { .. })
    }

    /// Whether the store, the executor's capacity or the time limit failed the execution for a
    /// moment: the store was unreachable, aborted for concurrent work or timed out
    /// ([`StoreError::is_transient`]), the outcome of an append stayed unknown
    /// ([`OutcomeUnknown`](Self::OutcomeUnknown)), the execution's own limit struck
    /// ([`Timeout`](Self::Timeout)), or it was not admitted ([`Overloaded`](Self::Overloaded)).
    /// `OutcomeUnknown` and `Timeout` [may have written](Self::may_have_written).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Store { source, .. } => source.is_transient(),
            Error::OutcomeUnknown { .. } | Error::Timeout(_) | Error::Overloaded { .. } => true,
            _ => false,
        }
    }

    /// Whether the execution was refused at admission ([`Overloaded`](Self::Overloaded)):
    /// too many executions were in flight. Nothing was read or written.
    pub fn is_overloaded(&self) -> bool {
        matches!(self, Error::Overloaded { .. })
    }

    /// Whether executing the command again later may succeed: a conflict, contention or a
    /// transient failure (an [overload](Self::is_overloaded) included) — everything but a refusal, an authorization failure, a codec error
    /// or a store failure that retrying cannot fix. For an error that
    /// [may have written](Self::may_have_written), executing again may apply the command
    /// twice unless it runs under an idempotency key.
    pub fn is_retryable(&self) -> bool {
        self.is_conflict() || self.is_contended() || self.is_transient()
    }

    /// Whether the command may have been applied despite the error:
    /// [`OutcomeUnknown`](Self::OutcomeUnknown) and [`Timeout`](Self::Timeout). On every other
    /// error nothing was written.
    pub fn may_have_written(&self) -> bool {
        matches!(self, Error::OutcomeUnknown { .. } | Error::Timeout(_))
    }

    /// The business rule that refused the command, if that is what happened.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Error::Command(CommandError::Rejected { rule, .. }) => Some(rule),
            _ => None,
        }
    }

    /// The streams of the last conflict, if the command failed on one.
    pub fn conflicts(&self) -> &[StreamConflict] {
        match self {
            Error::Store { source, .. } => source.conflicts(),
            _ => &[],
        }
    }

    /// The command's refusal, if it refused.
    pub fn command_error(&self) -> Option<&CommandError> {
        match self {
            Error::Command(error) => Some(error),
            _ => None,
        }
    }

    /// The store's error, if the store failed.
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            Error::Store { source, .. } | Error::OutcomeUnknown { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossfold_core::{ErrorChain, ExpectedVersion, StreamId, StreamVersion};

    #[test]
    fn store_errors_keep_their_class_and_their_cause() {
        let conflict = Error::store(
            StoreError::Conflict(vec![StreamConflict::new(
                StreamId::new("account-1").unwrap(),
                ExpectedVersion::Exact(StreamVersion::new(2)),
                StreamVersion::new(3),
            )]),
            5,
        );
        assert!(conflict.is_conflict() && conflict.is_retryable());
        assert!(!conflict.is_transient() && !conflict.is_contended());
        assert_eq!(conflict.conflicts().len(), 1);
        assert_eq!(conflict.to_string(), "store error after 5 attempts");
        assert_eq!(
            ErrorChain(&conflict).to_string(),
            "store error after 5 attempts: version conflict on account-1 (expected version 2, \
             actual version 3)"
        );

        let unavailable = Error::store(StoreError::Unavailable("connection refused".into()), 1);
        assert!(unavailable.is_transient() && unavailable.is_retryable());
        assert!(!unavailable.is_conflict());
        assert_eq!(
            ErrorChain(&unavailable).to_string(),
            "store error after 1 attempt: store unavailable: connection refused"
        );
        let source = std::error::Error::source(&unavailable).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("store unavailable"));

        let invalid = Error::store(StoreError::InvalidRequest("x".into()), 1);
        assert!(!invalid.is_transient() && !invalid.is_retryable());
    }

    #[test]
    fn refusals_are_neither_conflicts_nor_transient() {
        let refused = Error::from(CommandError::rejected("insufficient_funds", "5 < 10"));
        assert_eq!(refused.rule(), Some("insufficient_funds"));
        assert!(!refused.is_conflict() && !refused.is_transient() && !refused.is_retryable());
        assert_eq!(refused.to_string(), "insufficient_funds: 5 < 10");
        assert!(!refused.may_have_written());
    }

    #[test]
    fn giving_up_on_a_confirmation_is_contention_not_a_conflict() {
        let contended = Error::Contended { attempts: 3 };
        assert!(contended.is_contended() && contended.is_retryable());
        assert!(!contended.is_conflict() && !contended.is_transient());
        assert!(!contended.may_have_written());
    }

    #[test]
    fn an_overload_is_retryable_and_wrote_nothing() {
        let overloaded = Error::Overloaded {
            queued: 3,
            waited: Duration::from_millis(250),
        };
        assert!(overloaded.is_overloaded() && overloaded.is_transient());
        assert!(overloaded.is_retryable() && !overloaded.may_have_written());
        assert!(!overloaded.is_conflict() && !overloaded.is_contended());
        assert_eq!(
            overloaded.to_string(),
            "overloaded: not admitted after waiting 250ms, with 3 other executions queued"
        );
        let full = Error::Overloaded {
            queued: 1,
            waited: Duration::ZERO,
        };
        assert_eq!(
            full.to_string(),
            "overloaded: not admitted after waiting 0ns, with 1 other execution queued"
        );
        assert!(!Error::Timeout(Duration::from_secs(1)).is_overloaded());
    }

    #[test]
    fn an_unknown_outcome_says_it_may_have_written_and_keeps_its_cause() {
        let unknown = Error::OutcomeUnknown {
            source: StoreError::Unavailable("connection reset".into()),
            attempts: 10,
        };
        assert!(unknown.may_have_written() && unknown.is_transient() && !unknown.is_conflict());
        assert_eq!(
            ErrorChain(&unknown).to_string(),
            "the outcome is unknown, the command may have been applied (after 10 attempts): \
             store unavailable: connection reset"
        );
        assert!(matches!(
            unknown.store_error(),
            Some(StoreError::Unavailable(_))
        ));
        assert!(Error::Timeout(Duration::from_secs(1)).may_have_written());
        let unavailable = Error::store(StoreError::Unavailable("refused".into()), 3);
        assert!(!unavailable.may_have_written());
    }
}
