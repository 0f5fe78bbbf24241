//! Stream versions, append conditions and global log positions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::validation::ValidationError;

/// The number of events in a stream. `0` means the stream is empty or does not exist.
///
/// An event's own version is its 1-based place in its stream.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct StreamVersion(u64);

impl StreamVersion {
    /// The version of an empty or absent stream.
    pub const EMPTY: StreamVersion = StreamVersion(0);

    /// Wraps a raw version number.
    pub const fn new(version: u64) -> Self {
        Self(version)
    }

    /// Accepts a signed number (as databases store it) if it is not negative.
    pub fn try_from_i64(version: i64) -> Result<Self, ValidationError> {
        u64::try_from(version)
            .map(Self)
            .map_err(|_| ValidationError::new("stream_version", "must not be negative"))
    }

    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The version after `n` more events.
    pub const fn advance(self, n: u64) -> Self {
        Self(self.0.saturating_add(n))
    }

    /// The version after one more event.
    pub const fn next(self) -> Self {
        self.advance(1)
    }

    /// Whether the stream holds no events.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for StreamVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u64> for StreamVersion {
    fn from(value: u64) -> Self {
        Self(value)
    }
}

/// The condition a stream must meet for an append to go ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check of the version. (On PostgreSQL the append still gives way to another
    /// writer's turn on the stream: see [`EventStore::take_turn`](crate::EventStore::take_turn).)
    Any,
    /// The stream must be empty (never written).
    NoStream,
    /// The stream must hold at least one event.
    StreamExists,
    /// The stream must be at exactly this version (`Exact(EMPTY)` is the same as `NoStream`).
    Exact(StreamVersion),
}

impl ExpectedVersion {
    /// Whether a stream currently at `actual` satisfies this condition.
    pub fn is_met_by(self, actual: StreamVersion) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_empty(),
            ExpectedVersion::StreamExists => !actual.is_empty(),
            ExpectedVersion::Exact(v) => v == actual,
        }
    }

    /// `Exact(version)`.
    pub fn exact(version: StreamVersion) -> Self {
        ExpectedVersion::Exact(version)
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// A place in the store's global log. Positions are totally ordered and **commit-safe**: once a
/// reader has seen the event at position `p`, no event can later become visible at a position
/// `<= p`. Checkpoints are positions.
///
/// A position is opaque: two numbers whose meaning belongs to the store that issued it (the
/// PostgreSQL store uses the writing transaction's id and a sequence number). It prints and parses
/// as `commit/sequence`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Position {
    commit: u64,
    sequence: u64,
}

impl Position {
    /// Before the first event: reading "after `START`" reads the whole log.
    pub const START: Position = Position {
        commit: 0,
        sequence: 0,
    };

    /// Builds a position from a store's two ordering keys.
    pub const fn new(commit: u64, sequence: u64) -> Self {
        Self { commit, sequence }
    }

    /// The commit-order key (a transaction id in PostgreSQL).
    pub const fn commit(self) -> u64 {
        self.commit
    }

    /// The order within a commit (a global sequence in PostgreSQL).
    pub const fn sequence(self) -> u64 {
        self.sequence
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.commit, self.sequence)
    }
}

impl FromStr for Position {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ValidationError::new("position", format!("{s:?} is not `commit/sequence`"));
        let (commit, sequence) = s.split_once('/').ok_or_else(bad)?;
        Ok(Position {
            commit: commit.parse().map_err(|_| bad())?,
            sequence: sequence.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_version_cases() {
        let empty = StreamVersion::EMPTY;
        let three = StreamVersion::new(3);
        assert!(ExpectedVersion::Any.is_met_by(empty));
        assert!(ExpectedVersion::Any.is_met_by(three));
        assert!(ExpectedVersion::NoStream.is_met_by(empty));
        assert!(!ExpectedVersion::NoStream.is_met_by(three));
        assert!(!ExpectedVersion::StreamExists.is_met_by(empty));
        assert!(ExpectedVersion::StreamExists.is_met_by(three));
        assert!(ExpectedVersion::Exact(three).is_met_by(three));
        assert!(!ExpectedVersion::Exact(three).is_met_by(three.next()));
        assert!(ExpectedVersion::Exact(empty).is_met_by(empty));
    }

    #[test]
    fn positions_order_by_commit_then_sequence() {
        assert!(Position::new(1, 9) < Position::new(2, 1));
        assert!(Position::new(2, 1) < Position::new(2, 2));
        assert!(Position::START < Position::new(0, 1));
    }

    #[test]
    fn position_text_round_trip() {
        let p = Position::new(812, 33);
        assert_eq!(p.to_string().parse::<Position>().unwrap(), p);
        for bad in ["12", "a/b"] {
            let e = bad.parse::<Position>().unwrap_err();
            assert_eq!(e.reason, format!("{bad:?} is not `commit/sequence`"));
        }
    }

    #[test]
    fn negative_versions_are_rejected() {
        let e = StreamVersion::try_from_i64(-1).unwrap_err();
        assert_eq!(
            (e.field.as_ref(), e.reason.as_str()),
            ("stream_version", "must not be negative")
        );
        assert_eq!(StreamVersion::try_from_i64(4).unwrap().get(), 4);
    }
}
