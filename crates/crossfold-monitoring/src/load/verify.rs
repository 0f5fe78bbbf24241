//! Checking the data after a run: every event once in the log, versions gap-free, money
//! conserved, no balance ever negative, and the stores' stream versions agreeing with the log.

use std::collections::{HashMap, HashSet};

use crossfold_core::{EventId, EventStore, LogFilter, Position, StoreError, StreamId, StreamRead};

use super::bank::BankEvent;
use super::report::Verification;

/// What the data should look like.
pub(crate) struct Expectation<'a> {
    pub(crate) accounts: &'a [StreamId],
    /// Sum of all account balances.
    pub(crate) total_money: i64,
    /// Whether W5's batch streams (100 events each) are in the log.
    pub(crate) batch_streams: bool,
}

const PAGE: usize = 10_000;
const MAX_PROBLEMS: usize = 10;

pub(crate) async fn verify<S: EventStore>(
    store: &S,
    expect: &Expectation<'_>,
) -> Result<Verification, StoreError> {
    let mut problems = Vec::new();
    let mut note = |p: String| {
        if problems.len() < MAX_PROBLEMS {
            problems.push(p);
        }
    };
    let mut ids: HashSet<EventId> = HashSet::new();
    let mut versions: HashMap<StreamId, u64> = HashMap::new();
    let mut balances: HashMap<StreamId, i64> = HashMap::new();
    let mut after = Position::START;
    let mut events = 0u64;
    loop {
        let page = store.read_all(after, PAGE, &LogFilter::all()).await?;
        let Some(last) = page.last() else {
            break;
        };
        if last.position <= after {
            note(format!("the log went backwards after {after}"));
            break;
        }
        after = last.position;
        for event in &page {
            events += 1;
            if !ids.insert(event.event_id) {
                note(format!("event {} appears twice in the log", event.event_id));
            }
            let version = versions.entry(event.stream_id.clone()).or_insert(0);
            if event.stream_version.get() != *version + 1 {
                note(format!(
                    "{} jumps from version {} to {}",
                    event.stream_id, version, event.stream_version
                ));
            }
            *version = event.stream_version.get();
            if event.stream_id.as_str().starts_with("account-") {
                match serde_json::from_slice::<BankEvent>(&event.payload.bytes) {
                    Ok(e) => {
                        let balance = balances.entry(event.stream_id.clone()).or_insert(0);
                        *balance += e.balance_change();
                        if *balance < 0 {
                            note(format!(
                                "{} went negative ({balance}) at {}",
                                event.stream_id, event.position
                            ));
                        }
                    }
                    Err(e) => note(format!("undecodable event {}: {e}", event.event_id)),
                }
            }
        }
    }
    let head = store.head_position().await?;
    if head != after {
        note(format!(
            "head position {head} is not the last event read ({after})"
        ));
    }

    for chunk in expect.accounts.chunks(500) {
        let reads: Vec<StreamRead> = chunk
            .iter()
            .map(|s| StreamRead::version_only(s.clone()))
            .collect();
        for stream in store.read_streams(&reads).await? {
            let in_log = versions.get(&stream.stream).copied().unwrap_or(0);
            if stream.version.get() != in_log {
                note(format!(
                    "{} is at version {} but the log holds {in_log} of its events",
                    stream.stream, stream.version
                ));
            }
        }
    }
    if expect.batch_streams {
        for (stream, version) in &versions {
            if stream.as_str().starts_with("batch-") && *version != 100 {
                note(format!(
                    "batch stream {stream} holds {version} events, not 100"
                ));
            }
        }
    }
    let total: i64 = balances.values().sum();
    if total != expect.total_money {
        note(format!(
            "money not conserved: accounts hold {total}, expected {}",
            expect.total_money
        ));
    }
    Ok(Verification {
        passed: problems.is_empty(),
        events,
        streams: versions.len() as u64,
        total_money: total,
        problems,
    })
}
