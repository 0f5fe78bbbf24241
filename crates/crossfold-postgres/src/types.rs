//! Wire types that avoid work on the hot path: `xid8` as a plain number, and JSONB moved as the
//! raw text PostgreSQL's binary format wraps (a version byte, then JSON), so neither side of an
//! append or read builds a `serde_json::Value`. Also the few conversions every path shares:
//! reading a column, a position to and from its two columns, a limit as a parameter, a log
//! filter as array parameters.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use crossfold_core::{EventType, LogFilter, Position, StoreError, StreamId};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::error::corrupt;

type BoxError = Box<dyn Error + Sync + Send>;

/// The only binary JSONB format version PostgreSQL has.
const JSONB_VERSION: u8 = 1;

/// A transaction id (`xid8`): the commit-order half of a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Xid8(pub(crate) u64);

impl<'a> FromSql<'a> for Xid8 {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("xid8 of {} bytes", raw.len()))?;
        Ok(Xid8(u64::from_be_bytes(bytes)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::XID8
    }
}

impl ToSql for Xid8 {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.put_u64(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::XID8
    }

    to_sql_checked!();
}

/// JSON text to be stored as JSONB, sent without parsing it on this side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct JsonbText<'a>(pub(crate) &'a [u8]);

impl ToSql for JsonbText<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.reserve(1 + self.0.len());
        out.put_u8(JSONB_VERSION);
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

/// A JSONB value read as its JSON text, borrowed from the row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawJsonb<'a>(pub(crate) &'a [u8]);

impl<'a> FromSql<'a> for RawJsonb<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        if *ty == Type::JSON {
            return Ok(RawJsonb(raw));
        }
        match raw.split_first() {
            Some((&JSONB_VERSION, text)) => Ok(RawJsonb(text)),
            Some((version, _)) => Err(format!("unsupported JSONB format version {version}").into()),
            None => Err("empty JSONB value".into()),
        }
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }
}

/// A column, with a driver error turned into a store error.
pub(crate) fn get<'a, T: FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, StoreError> {
    row.try_get(index)
        .map_err(|e| StoreError::Backend(Box::new(e)))
}

/// A position from its two columns.
pub(crate) fn position(row: &Row, at: usize) -> Result<Position, StoreError> {
    let transaction: Xid8 = get(row, at)?;
    let sequence: i64 = get(row, at + 1)?;
    let sequence =
        u64::try_from(sequence).map_err(|_| corrupt(format!("negative sequence {sequence}")))?;
    Ok(Position::new(transaction.0, sequence))
}

/// A position as the `(xid8, bigint)` pair it is compared with. Sequences above `i64::MAX` do
/// not exist, so clamping keeps "after" meaning "after everything".
pub(crate) fn position_params(p: Position) -> (Xid8, i64) {
    (
        Xid8(p.commit()),
        i64::try_from(p.sequence()).unwrap_or(i64::MAX),
    )
}

/// A row limit as the `bigint` it is sent as; "no limit" (`usize::MAX`) stays the largest.
pub(crate) fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A [`LogFilter`]'s keys as the `text[]` parameters of a log statement (`None`: no filter on
/// that column), with whether system streams are in: always when streams are named.
pub(crate) struct FilterParams<'a> {
    pub(crate) streams: Option<Vec<&'a str>>,
    pub(crate) categories: Option<Vec<&'a str>>,
    pub(crate) types: Option<Vec<&'a str>>,
    pub(crate) system: bool,
}

impl<'a> FilterParams<'a> {
    /// The parameters of `filter`.
    pub(crate) fn of(filter: &'a LogFilter) -> Self {
        Self {
            streams: filter
                .streams
                .as_ref()
                .map(|s| s.iter().map(StreamId::as_str).collect()),
            categories: filter
                .categories
                .as_ref()
                .map(|c| c.iter().map(String::as_str).collect()),
            types: filter
                .event_types
                .as_ref()
                .map(|t| t.iter().map(EventType::as_str).collect()),
            system: filter.system_streams || filter.streams.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xid8_round_trip() {
        let mut out = BytesMut::new();
        Xid8(0x0102_0304_0506_0708)
            .to_sql(&Type::XID8, &mut out)
            .unwrap();
        assert_eq!(
            Xid8::from_sql(&Type::XID8, &out).unwrap(),
            Xid8(0x0102_0304_0506_0708)
        );
        let short = Xid8::from_sql(&Type::XID8, &[1, 2])
            .unwrap_err()
            .to_string();
        assert_eq!(short, "xid8 of 2 bytes");
    }

    #[test]
    fn jsonb_carries_a_version_byte() {
        let mut out = BytesMut::new();
        JsonbText(br#"{"a": 1}"#)
            .to_sql(&Type::JSONB, &mut out)
            .unwrap();
        assert_eq!(out[0], 1);
        let back = RawJsonb::from_sql(&Type::JSONB, &out).unwrap();
        assert_eq!(back.0, br#"{"a": 1}"#);
        let newer = RawJsonb::from_sql(&Type::JSONB, &[2, b'1']).unwrap_err();
        assert_eq!(newer.to_string(), "unsupported JSONB format version 2");
        let empty = RawJsonb::from_sql(&Type::JSONB, &[]).unwrap_err();
        assert_eq!(empty.to_string(), "empty JSONB value");
    }
}
