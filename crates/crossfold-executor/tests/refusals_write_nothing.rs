//! Refusals (business rules, authorization, invalid input) are never retried and write nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

use common::*;
use crossfold_core::{CommandError, EventStore, Position};
use crossfold_executor::{Actor, Denied, Error, ExecutionContext, Executor};
use crossfold_memory::MemoryStore;

struct Guarded(Credit);

impl crossfold_core::Command for Guarded {
    type Event = Ledger;
    type State = Balances;
    type Streams = crossfold_core::StreamId;
    fn streams(&self) -> crossfold_core::StreamId {
        self.0.account.clone()
    }
    fn handle<'x>(
        &self,
        state: &Balances,
        stream: crossfold_core::StreamRef<'x>,
        out: &mut crossfold_core::Emit<'x, Ledger>,
    ) -> Result<(), crossfold_core::CommandError> {
        self.0.handle(state, stream, out)
    }
    fn required_permission(&self) -> Option<&str> {
        Some("ledger:credit")
    }
}

#[tokio::test]
async fn a_business_refusal_is_not_retried_and_writes_nothing() {
    let store = MemoryStore::new();
    let executor = Executor::new(store.clone());
    let err = executor
        .execute(Debit {
            account: sid("a"),
            amount: 5,
        })
        .await
        .unwrap_err();
    assert_eq!(err.rule(), Some("insufficient_funds"));
    assert!(!err.is_transient());
    assert_eq!(store.head_position().await.unwrap(), Position::START);
}

#[tokio::test]
async fn a_caller_without_the_permission_is_refused_before_anything_is_read() {
    let store = MemoryStore::new();
    let executor = Executor::new(store.clone());
    let clerk = ExecutionContext::new().actor(Actor::new("clerk"));
    let err = executor
        .execute_with(
            Guarded(Credit {
                account: sid("a"),
                amount: 1,
            }),
            &clerk,
        )
        .await
        .unwrap_err();
    match err {
        Error::Unauthorized { permission, actor } => {
            assert_eq!(permission, "ledger:credit");
            assert_eq!(actor.as_deref(), Some("clerk"));
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    let anonymous = executor
        .execute(Guarded(Credit {
            account: sid("a"),
            amount: 1,
        }))
        .await;
    assert!(matches!(anonymous, Err(Error::Unauthorized { .. })));
    assert_eq!(store.head_position().await.unwrap(), Position::START);

    let teller =
        ExecutionContext::new().actor(Actor::new("teller").with_permission("ledger:credit"));
    executor
        .execute_with(
            Guarded(Credit {
                account: sid("a"),
                amount: 1,
            }),
            &teller,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_custom_authorizer_decides() {
    let executor = Executor::builder(MemoryStore::new())
        .authorizer(|actor: Option<&Actor>, command: &str, permission: &str| {
            if actor.is_some_and(|a| a.id.starts_with("ops-")) && command == "Guarded" {
                Ok(())
            } else {
                Err(Denied {
                    permission: permission.to_owned(),
                })
            }
        })
        .build();
    let ops = ExecutionContext::new().actor(Actor::new("ops-1"));
    executor
        .execute_with(
            Guarded(Credit {
                account: sid("a"),
                amount: 1,
            }),
            &ops,
        )
        .await
        .unwrap();
    let dev = ExecutionContext::new().actor(Actor::new("dev-1").with_permission("ledger:credit"));
    let refused = executor
        .execute_with(
            Guarded(Credit {
                account: sid("a"),
                amount: 1,
            }),
            &dev,
        )
        .await;
    assert!(
        matches!(&refused, Err(Error::Unauthorized { permission, actor })
            if permission == "ledger:credit" && actor.as_deref() == Some("dev-1")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_invalid_idempotency_key_is_a_validation_error() {
    struct BadKey;
    impl crossfold_core::Command for BadKey {
        type Event = Ledger;
        type State = ();
        type Streams = crossfold_core::StreamId;
        fn streams(&self) -> crossfold_core::StreamId {
            sid("x")
        }
        fn handle<'x>(
            &self,
            _: &(),
            s: crossfold_core::StreamRef<'x>,
            out: &mut crossfold_core::Emit<'x, Ledger>,
        ) -> Result<(), crossfold_core::CommandError> {
            out.append(s, Ledger::Credited { amount: 1 });
            Ok(())
        }
    }
    let store = MemoryStore::new();
    let err = Executor::new(store.clone())
        .execute_with(
            BadKey,
            &ExecutionContext::new().idempotency_key("line\nbreak"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Command(CommandError::Validation(_))),
        "{err:?}"
    );
    assert_eq!(store.head_position().await.unwrap(), Position::START);
}
