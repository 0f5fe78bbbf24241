//! `crossfold streams`, `stream`, `event` and `tail`: reading a store, changing nothing.

use std::io::Write;
use std::time::Duration;

use crossfold_core::{
    ErrorChain, EventId, EventStore, EventType, LogFilter, Position, RecordedEvent, StreamId,
    StreamVersion,
};
use crossfold_postgres::PgEventStore;
use serde_json::json;

use crate::args::{EventArgs, StreamArgs, StreamsArgs, TailArgs};
use crate::error::{CliError, code};
use crate::output::{event_block, event_json, event_line, table};

/// Events read from the log per round trip by `tail`.
const TAIL_BATCH: usize = 500;

/// How long `tail --follow` waits for new events before looking again (it is woken at once
/// when events arrive).
const FOLLOW_WAIT: Duration = Duration::from_secs(5);

pub(crate) fn stream_id(text: &str) -> Result<StreamId, CliError> {
    StreamId::from_stored(text)
        .map_err(|e| CliError::Config(format!("{text:?} is not a stream id: {}", ErrorChain(&e))))
}

pub(crate) async fn streams(
    store: &PgEventStore,
    args: StreamsArgs,
    json: bool,
) -> Result<u8, CliError> {
    let after = args.after.as_deref().map(stream_id).transpose()?;
    let list = store
        .list_streams(&args.prefix, after.as_ref(), args.limit, args.system)
        .await?;
    let (total_streams, total_events) = store.count_streams(&args.prefix, args.system).await?;
    let next = (list.len() == args.limit && args.limit > 0)
        .then(|| list.last().map(|s| s.stream.as_str().to_owned()))
        .flatten();
    let mut out = std::io::stdout().lock();
    if json {
        let streams: Vec<_> = list
            .iter()
            .map(|s| {
                json!({
                    "stream": s.stream.as_str(),
                    "events": s.version.get(),
                    "created_at": s.created_at.to_string(),
                    "updated_at": s.updated_at.to_string(),
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            json!({
                "prefix": args.prefix,
                "streams": streams,
                "total_streams": total_streams,
                "total_events": total_events,
                "next_after": next,
            })
        )?;
        return Ok(code::OK);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.stream.as_str().to_owned(),
                s.version.to_string(),
                s.created_at.to_string(),
                s.updated_at.to_string(),
            ]
        })
        .collect();
    table(&mut out, &["STREAM", "EVENTS", "CREATED", "UPDATED"], &rows)?;
    let scope = if args.prefix.is_empty() {
        String::new()
    } else {
        format!(" starting with {:?}", args.prefix)
    };
    writeln!(
        out,
        "{total_streams} stream(s){scope}, {total_events} event(s) in all; {} shown",
        list.len()
    )?;
    if let Some(last) = next {
        writeln!(
            out,
            "more: crossfold streams {:?} --after {last:?}",
            args.prefix
        )?;
    }
    Ok(code::OK)
}

pub(crate) async fn stream(
    store: &PgEventStore,
    args: StreamArgs,
    json: bool,
) -> Result<u8, CliError> {
    let id = stream_id(&args.id)?;
    let after = StreamVersion::new(args.from.saturating_sub(1));
    let read = store.read_stream(&id, after, args.limit).await?;
    if read.version == StreamVersion::EMPTY {
        return Err(CliError::NotFound(format!(
            "stream {:?} has no events (`crossfold streams PREFIX` lists the streams there are)",
            id.as_str()
        )));
    }
    let mut out = std::io::stdout().lock();
    if json {
        let events: Vec<_> = read.events.iter().map(event_json).collect();
        writeln!(
            out,
            "{}",
            json!({ "stream": id.as_str(), "version": read.version.get(), "events": events })
        )?;
        return Ok(code::OK);
    }
    for event in &read.events {
        event_block(&mut out, event)?;
    }
    match (read.events.first(), read.events.last()) {
        (Some(first), Some(last)) => {
            writeln!(
                out,
                "stream {}: events {}-{} of {}",
                id.as_str(),
                first.stream_version,
                last.stream_version,
                read.version
            )?;
            if last.stream_version < read.version {
                writeln!(
                    out,
                    "more: crossfold stream {:?} --from {}",
                    id.as_str(),
                    last.stream_version.get() + 1
                )?;
            }
        }
        _ => writeln!(
            out,
            "stream {}: {} event(s), none from version {}",
            id.as_str(),
            read.version,
            args.from
        )?,
    }
    Ok(code::OK)
}

pub(crate) async fn event(
    store: &PgEventStore,
    args: EventArgs,
    json: bool,
) -> Result<u8, CliError> {
    let id = EventId::parse(args.id.trim()).map_err(|e| {
        CliError::Config(format!(
            "{:?} is not an event id (a UUID): {}",
            args.id,
            ErrorChain(&e)
        ))
    })?;
    let Some(event) = store.read_event(id).await? else {
        return Err(CliError::NotFound(format!("no event has the id {id}")));
    };
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", event_json(&event))?;
    } else {
        event_block(&mut out, &event)?;
    }
    Ok(code::OK)
}

/// The log filter of `tail`'s options, and the stream-id prefix left to check on each event
/// (the store filters by category; a prefix that ends inside a category name cannot be).
fn tail_filter(args: &TailArgs) -> (LogFilter, Option<String>) {
    let mut categories = args.category.clone();
    if let Some(prefix) = &args.prefix
        && let Some((category, _)) = prefix.split_once('-')
        && categories.is_empty()
    {
        // `account-1` can only be in category `account`: let the store's category index
        // narrow the read.
        categories.push(category.to_owned());
    }
    let filter = LogFilter {
        streams: None,
        categories: (!categories.is_empty()).then_some(categories),
        event_types: (!args.event_type.is_empty()).then(|| {
            args.event_type
                .iter()
                .map(|t| EventType::from(t.as_str()))
                .collect()
        }),
        system_streams: args.system,
    };
    (filter, args.prefix.clone())
}

fn parse_position(text: &str) -> Result<Option<Position>, CliError> {
    match text {
        "start" => Ok(Some(Position::START)),
        "head" => Ok(None),
        _ => text.parse().map(Some).map_err(|e| {
            CliError::Config(format!(
                "{text:?} is not a position (COMMIT/SEQUENCE as tail prints them, start or \
                 head): {}",
                ErrorChain(&e)
            ))
        }),
    }
}

pub(crate) async fn tail(store: &PgEventStore, args: TailArgs, json: bool) -> Result<u8, CliError> {
    let mut stop = Stop::install();
    let (filter, prefix) = tail_filter(&args);
    let start = match args.from.as_deref().map(parse_position).transpose()? {
        Some(Some(position)) => position,
        Some(None) => store.head_position().await?,
        None => store.position_before_last(args.lines, &filter).await?,
    };
    let shown = |event: &RecordedEvent| {
        prefix
            .as_deref()
            .is_none_or(|p| event.stream_id.as_str().starts_with(p))
    };
    let mut position = start;
    loop {
        let batch = store.read_all(position, TAIL_BATCH, &filter).await?;
        {
            let mut out = std::io::stdout().lock();
            for event in batch.iter().filter(|e| shown(e)) {
                if json {
                    writeln!(out, "{}", event_json(event))?;
                } else {
                    event_line(&mut out, event)?;
                }
            }
            out.flush()?;
        }
        if let Some(last) = batch.last() {
            position = last.position;
        }
        if batch.len() == TAIL_BATCH {
            continue;
        }
        if !args.follow {
            return Ok(code::OK);
        }
        tokio::select! {
            waited = store.wait_for_events(position, FOLLOW_WAIT) => waited?,
            () = stop.wait() => return Ok(code::OK),
        }
    }
}

/// Ctrl-C or SIGTERM: how `tail --follow` is meant to end. The handlers are installed when
/// this is made, so a signal that arrives while events are being printed is not lost (nor
/// does it kill the process without a clean end).
struct Stop {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Stop {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signals = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                .ok();
            Self { signals }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn wait(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.signals {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
