//! Running commands through a real executor from many tasks at once, with proptest strategies
//! for the command sequences — the raw material of "any interleaving keeps the invariant"
//! tests.

use std::fmt::Debug;

use crossfold_core::{Codec, Command, CommandError, EventStore};
use crossfold_executor::{Error, Executed, Executor};
use proptest::collection::{SizeRange, vec};
use proptest::prelude::*;

/// Command sequences for several concurrent tasks: `tasks` sequences of `commands` each.
pub fn command_sequences<C: Debug>(
    command: impl Strategy<Value = C>,
    tasks: impl Into<SizeRange>,
    commands: impl Into<SizeRange>,
) -> impl Strategy<Value = Vec<Vec<C>>> {
    vec(vec(command, commands), tasks)
}

/// Executes each sequence in a task of its own, all tasks at once, on one executor (or, with
/// several executors, task `i` on executor `i % n`, like separate processes sharing a store).
/// Returns every outcome, task by task, in order. A task that panics is reported as an
/// [`CommandError::InvalidState`] for each of its commands that did not run.
pub async fn execute_concurrently<S, K, C>(
    executors: &[Executor<S, K>],
    sequences: Vec<Vec<C>>,
) -> Vec<Vec<Result<Executed, Error>>>
where
    S: EventStore + 'static,
    K: Codec,
    C: Command,
{
    if executors.is_empty() {
        return sequences
            .into_iter()
            .map(|s| {
                s.iter()
                    .map(|_| {
                        Err(Error::Command(CommandError::InvalidState(
                            "no executor to run on".into(),
                        )))
                    })
                    .collect()
            })
            .collect();
    }
    let mut handles = Vec::with_capacity(sequences.len());
    for (i, sequence) in sequences.into_iter().enumerate() {
        let executor = executors[i % executors.len()].clone();
        let planned = sequence.len();
        handles.push((
            planned,
            tokio::spawn(async move {
                let mut outcomes = Vec::with_capacity(sequence.len());
                for command in sequence {
                    outcomes.push(executor.execute(command).await);
                }
                outcomes
            }),
        ));
    }
    let mut all = Vec::with_capacity(handles.len());
    for (planned, handle) in handles {
        all.push(handle.await.unwrap_or_else(|e| {
            (0..planned)
                .map(|_| {
                    Err(Error::Command(CommandError::InvalidState(format!(
                        "task failed: {e}"
                    ))))
                })
                .collect()
        }));
    }
    all
}
