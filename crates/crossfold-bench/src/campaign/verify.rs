//! Checking every command's ending against the log.

use std::collections::HashMap;

use crossfold_core::{ErrorChain, EventId, EventStore, LogFilter, Position, StoreError, StreamId};
use uuid::Uuid;

use crate::bank::BankEvent;

use super::CampaignReport;
use super::command::{Ending, Kind, Record};

/// What the log shows of one command.
#[derive(Default)]
pub(super) struct Found {
    pub(super) events: u64,
    pub(super) change: i64,
    pub(super) first_event: Option<EventId>,
}

/// Findings kept in a report: one broken mechanism can cause a million.
pub(super) const MAX_PROBLEMS: usize = 20;

pub(super) fn problem(report: &mut CampaignReport, text: String) {
    if report.problems.len() < MAX_PROBLEMS {
        report.problems.push(text);
    }
}

pub(super) async fn verify<S: EventStore>(
    store: &S,
    records: &HashMap<Uuid, Record>,
    accounts: &[StreamId],
    report: &mut CampaignReport,
) -> Result<(), StoreError> {
    let mut versions: HashMap<StreamId, u64> = HashMap::new();
    let mut balances: HashMap<StreamId, i64> = HashMap::new();
    let mut found: HashMap<Uuid, Found> = HashMap::with_capacity(records.len());
    let mut after = Position::START;
    loop {
        let page = store.read_all(after, 10_000, &LogFilter::all()).await?;
        let Some(last) = page.last() else {
            break;
        };
        if last.position <= after {
            problem(report, format!("the log went backwards after {after}"));
            break;
        }
        after = last.position;
        for event in &page {
            report.events += 1;
            let version = versions.entry(event.stream_id.clone()).or_insert(0);
            if event.stream_version.get() != *version + 1 {
                problem(
                    report,
                    format!(
                        "{} jumps from version {version} to {}",
                        event.stream_id, event.stream_version
                    ),
                );
            }
            *version = event.stream_version.get();
            let change = match serde_json::from_slice::<BankEvent>(&event.payload.bytes) {
                Ok(e) => e.balance_change(),
                Err(e) => {
                    problem(
                        report,
                        format!("undecodable event {}: {}", event.event_id, ErrorChain(&e)),
                    );
                    0
                }
            };
            if event.stream_id.as_str().starts_with("account-") {
                let balance = balances.entry(event.stream_id.clone()).or_insert(0);
                *balance += change;
                if *balance < 0 {
                    problem(
                        report,
                        format!(
                            "{} went negative ({balance}) at {}",
                            event.stream_id, event.position
                        ),
                    );
                }
            }
            let Some(command) = event.metadata.correlation_id else {
                problem(report, format!("event {} names no command", event.event_id));
                continue;
            };
            let f = found.entry(command).or_default();
            f.events += 1;
            f.change += change;
            f.first_event = Some(match f.first_event {
                Some(first) => first.min(event.event_id),
                None => event.event_id,
            });
        }
    }

    let mut expected_money = 0i64;
    for (id, record) in records {
        let f = found.remove(id).unwrap_or_default();
        let per = record.kind.events();
        if !f.events.is_multiple_of(per) {
            problem(
                report,
                format!(
                    "command {id} ({:?}) left {} events in the log",
                    record.kind, f.events
                ),
            );
            continue;
        }
        let applied = f.events / per;
        let change_each = match record.kind {
            Kind::Open | Kind::Deposit => record.amount,
            Kind::Withdraw => -record.amount,
            Kind::Transfer => 0,
        };
        if f.change != change_each * applied as i64 {
            problem(
                report,
                format!(
                    "command {id} ({:?} of {}) changed balances by {}",
                    record.kind, record.amount, f.change
                ),
            );
        }
        if record.kind != Kind::Transfer {
            expected_money += change_each * applied as i64;
        }
        let fine = match record.ending {
            Ending::Succeeded => applied == 1 && f.first_event == record.first_event,
            Ending::InDoubt => {
                report.in_doubt_applied += applied;
                applied <= 1
            }
            Ending::Refused | Ending::GaveUp | Ending::GaveUpFailing | Ending::Error => {
                applied == 0
            }
        };
        if !fine {
            problem(
                report,
                format!(
                    "command {id} ({:?}) ended {:?} but the log shows it applied {applied} times{}",
                    record.kind,
                    record.ending,
                    if applied == 1 && record.ending == Ending::Succeeded {
                        " (with other events than it returned)"
                    } else {
                        ""
                    }
                ),
            );
        }
    }
    for (id, f) in found {
        problem(
            report,
            format!(
                "{} events of {id} belong to no command that was run",
                f.events
            ),
        );
    }
    report.money = accounts
        .iter()
        .map(|a| balances.get(a).copied().unwrap_or(0))
        .sum();
    report.expected_money = expected_money;
    if report.money != expected_money {
        problem(
            report,
            format!(
                "money not conserved: the accounts hold {}, the applied commands account for {}",
                report.money, expected_money
            ),
        );
    }
    Ok(())
}
