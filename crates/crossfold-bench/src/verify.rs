//! Checking the data after a run: every event once in the log and as many as the store reported
//! writing, versions gap-free, money conserved, no balance ever negative, the stores' stream
//! versions agreeing with the log, and (W12) invoice numbers gapless and each used once.

use std::collections::{HashMap, HashSet};

use crossfold_core::{
    ErrorChain, EventId, EventStore, LogFilter, Position, StoreError, StreamId, StreamRead,
};

use crate::bank::BankEvent;
use crate::counter::InvoiceEvent;
use crate::report::Verification;

/// What the data should look like.
pub(crate) struct Expectation<'a> {
    pub(crate) accounts: &'a [StreamId],
    /// Sum of all account balances (`None`: not known, only counted).
    pub(crate) total_money: Option<i64>,
    /// Events that successful appends reported writing, setup included (`None`: not known,
    /// only counted).
    pub(crate) events_written: Option<u64>,
    /// Whether W5's batch streams (100 events each) are in the log.
    pub(crate) batch_streams: bool,
    /// Whether W12's counter and invoice streams are in the log.
    pub(crate) numbered: bool,
}

const PAGE: usize = 10_000;
/// Findings about single events or streams kept in a report; one fault can cause thousands.
const MAX_DETAILS: usize = 10;

/// What did not hold. Findings about the whole run (events lost, money not conserved) are few
/// and always kept, ahead of the first few findings about single events, so that a flood of
/// the latter cannot hide what went wrong overall.
#[derive(Default)]
struct Problems {
    overall: Vec<String>,
    details: Vec<String>,
}

impl Problems {
    fn overall(&mut self, problem: String) {
        self.overall.push(problem);
    }

    fn detail(&mut self, problem: String) {
        if self.details.len() < MAX_DETAILS {
            self.details.push(problem);
        }
    }

    fn into_vec(mut self) -> Vec<String> {
        self.overall.append(&mut self.details);
        self.overall
    }
}

pub(crate) async fn verify<S: EventStore>(
    store: &S,
    expect: &Expectation<'_>,
) -> Result<Verification, StoreError> {
    let mut problems = Problems::default();
    let mut ids: HashSet<EventId> = HashSet::new();
    let mut versions: HashMap<StreamId, u64> = HashMap::new();
    let mut balances: HashMap<StreamId, i64> = HashMap::new();
    let mut numbers = Numbers::default();
    let mut after = Position::START;
    let mut events = 0u64;
    loop {
        // System streams included, so that the head (which counts them) is the last event
        // read; their events (idempotency markers of keyed commands) are not the workload's.
        let page = store
            .read_all(after, PAGE, &LogFilter::all().with_system_streams())
            .await?;
        let Some(last) = page.last() else {
            break;
        };
        if last.position <= after {
            problems.overall(format!("the log went backwards after {after}"));
            break;
        }
        after = last.position;
        for event in page.iter().filter(|e| !e.stream_id.is_system()) {
            events += 1;
            if !ids.insert(event.event_id) {
                problems.detail(format!("event {} appears twice in the log", event.event_id));
            }
            let version = versions.entry(event.stream_id.clone()).or_insert(0);
            if event.stream_version.get() != *version + 1 {
                problems.detail(format!(
                    "{} jumps from version {} to {}",
                    event.stream_id, version, event.stream_version
                ));
            }
            *version = event.stream_version.get();
            let stream = event.stream_id.as_str();
            if stream.starts_with("account-") {
                match serde_json::from_slice::<BankEvent>(&event.payload.bytes) {
                    Ok(e) => {
                        let balance = balances.entry(event.stream_id.clone()).or_insert(0);
                        *balance += e.balance_change();
                        if *balance < 0 {
                            problems.detail(format!(
                                "{} went negative ({balance}) at {}",
                                event.stream_id, event.position
                            ));
                        }
                    }
                    Err(e) => {
                        problems.detail(format!(
                            "undecodable event {}: {}",
                            event.event_id,
                            ErrorChain(&e)
                        ));
                    }
                }
            } else if expect.numbered
                && (stream.starts_with("counter-") || stream.starts_with("invoice-"))
            {
                match serde_json::from_slice::<InvoiceEvent>(&event.payload.bytes) {
                    Ok(e) => {
                        if let Some(p) = numbers.fold(&event.stream_id, *version, &e) {
                            problems.detail(p);
                        }
                    }
                    Err(e) => {
                        problems.detail(format!(
                            "undecodable event {}: {}",
                            event.event_id,
                            ErrorChain(&e)
                        ));
                    }
                }
            }
        }
    }
    let written = expect.events_written.unwrap_or(events);
    if events < written {
        problems.overall(format!(
            "events lost: successful appends reported writing {written} events but the log \
             holds {events} ({} missing)",
            written - events
        ));
    } else if events > written {
        problems.overall(format!(
            "events written twice: successful appends reported writing {written} events but \
             the log holds {events} ({} more)",
            events - written
        ));
    }
    if expect.numbered {
        numbers.check(&mut problems);
    }
    let head = store.head_position().await?;
    if head != after {
        problems.overall(format!(
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
                problems.detail(format!(
                    "{} is at version {} but the log holds {in_log} of its events",
                    stream.stream, stream.version
                ));
            }
        }
    }
    if expect.batch_streams {
        for (stream, version) in &versions {
            if stream.as_str().starts_with("batch-") && *version != 100 {
                problems.detail(format!(
                    "batch stream {stream} holds {version} events, not 100"
                ));
            }
        }
    }
    let total: i64 = balances.values().sum();
    if let Some(expected) = expect.total_money
        && total != expected
    {
        problems.overall(format!(
            "money not conserved: accounts hold {total}, expected {expected}"
        ));
    }
    let problems = problems.into_vec();
    Ok(Verification {
        passed: problems.is_empty(),
        events,
        streams: versions.len() as u64,
        total_money: total,
        problems,
    })
}

/// W12's numbering as the log shows it (one counter).
#[derive(Default)]
struct Numbers {
    /// The counter's events (its last version).
    taken: u64,
    /// Counter events whose number is not their place in the counter's stream.
    misnumbered: u64,
    /// The number each invoice holds.
    on_invoices: Vec<u64>,
}

impl Numbers {
    /// Takes one event of a counter or invoice stream at its place `version` in that stream;
    /// returns what is wrong with it.
    fn fold(&mut self, stream: &StreamId, version: u64, event: &InvoiceEvent) -> Option<String> {
        match (stream.as_str().starts_with("counter-"), event) {
            (true, InvoiceEvent::NumberTaken { number }) => {
                self.taken = version;
                (*number != version).then(|| {
                    self.misnumbered += 1;
                    format!("{stream} handed out number {number} as its event {version}")
                })
            }
            (false, InvoiceEvent::InvoiceNumbered { number }) => {
                self.on_invoices.push(*number);
                (version != 1).then(|| {
                    format!("{stream} holds {version} events, not one: number {number} again")
                })
            }
            (_, e) => Some(format!("{stream} holds an event it should not: {e:?}")),
        }
    }

    /// The counter handed out 1..=n, and every number is on exactly one invoice.
    fn check(mut self, problems: &mut Problems) {
        if self.misnumbered > 0 {
            problems.overall(format!(
                "numbers not gapless: {} of the counter's {} events do not hold their place's \
                 number",
                self.misnumbered, self.taken
            ));
        }
        self.on_invoices.sort_unstable();
        let mut held = self.on_invoices.iter().copied().peekable();
        let (mut unheld, mut shared) = (0u64, 0u64);
        for number in 1..=self.taken {
            while held.next_if(|&n| n < number).is_some() {}
            let mut copies = 0;
            while held.next_if_eq(&number).is_some() {
                copies += 1;
            }
            match copies {
                1 => {}
                0 => {
                    unheld += 1;
                    problems.detail(format!(
                        "number {number} was taken on the counter but no invoice holds it"
                    ));
                }
                n => {
                    shared += 1;
                    problems.detail(format!("number {number} is held by {n} invoices"));
                }
            }
        }
        if unheld > 0 {
            problems.overall(format!(
                "{unheld} of the counter's numbers are on no invoice"
            ));
        }
        if shared > 0 {
            problems.overall(format!(
                "{shared} of the counter's numbers are on more than one invoice"
            ));
        }
        let beyond = self
            .on_invoices
            .iter()
            .filter(|&&n| n == 0 || n > self.taken)
            .count();
        if beyond > 0 {
            problems.overall(format!(
                "{beyond} invoices hold numbers the counter never handed out (it handed out \
                 1..={})",
                self.taken
            ));
        }
    }
}
