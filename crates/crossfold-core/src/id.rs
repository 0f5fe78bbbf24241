//! Stream and event identity.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::validation::ValidationError;

/// The name of an event stream: 1–255 bytes of UTF-8, no control characters, no leading or
/// trailing whitespace.
///
/// Names that start with `$` belong to Crossfold's *system streams* (idempotency records,
/// process managers' marks): [`StreamId::new`] refuses them, so a user's id can never land in
/// that namespace (where it would be hidden from every log read); [`StreamId::system`] builds
/// one on purpose, and [`StreamId::from_stored`] accepts either kind, for names read back from
/// a store.
///
/// Cloning is cheap (the name is shared), so commands and stores pass stream ids around freely.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(Arc<str>);

impl StreamId {
    /// The longest stream name accepted, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Validates `name` and returns it as a stream id.
    ///
    /// Fails with a [`ValidationError`] naming the rule that was broken, also when `name` starts
    /// with `$` ([`SYSTEM_PREFIX`](Self::SYSTEM_PREFIX)): that namespace is Crossfold's own.
    pub fn new(name: impl AsRef<str>) -> Result<Self, ValidationError> {
        let name = name.as_ref();
        if name.starts_with(Self::SYSTEM_PREFIX) {
            return Err(ValidationError::new(
                "stream_id",
                "starts with '$', which is reserved for system streams (see StreamId::system)",
            ));
        }
        Self::check(name)?;
        Ok(Self(Arc::from(name)))
    }

    /// The system stream `$name` (for example `StreamId::system("idempotency-42")` is
    /// `$idempotency-42`). System streams hold records of Crossfold's own or of a library built
    /// on it; reads of the log and subscriptions leave them out unless a filter asks for them.
    ///
    /// Fails with a [`ValidationError`] if `$name` is not a valid stream name.
    pub fn system(name: impl fmt::Display) -> Result<Self, ValidationError> {
        let name = format!("{}{name}", Self::SYSTEM_PREFIX);
        Self::check(&name)?;
        Ok(Self(Arc::from(name)))
    }

    /// Validates a name read back from a store or typed by an operator: a user stream or a
    /// system stream alike. Application code building ids from its own input uses
    /// [`new`](Self::new).
    pub fn from_stored(name: impl AsRef<str>) -> Result<Self, ValidationError> {
        let name = name.as_ref();
        Self::check(name)?;
        Ok(Self(Arc::from(name)))
    }

    /// Builds `prefix-suffix`, validating the result (for example `account-42`).
    pub fn compose(prefix: &str, suffix: impl fmt::Display) -> Result<Self, ValidationError> {
        Self::new(format!("{prefix}-{suffix}"))
    }

    fn check(name: &str) -> Result<(), ValidationError> {
        if name.is_empty() {
            return Err(ValidationError::new("stream_id", "must not be empty"));
        }
        if name.len() > Self::MAX_LEN {
            return Err(ValidationError::new(
                "stream_id",
                format!(
                    "is {} bytes long; at most {} allowed",
                    name.len(),
                    Self::MAX_LEN
                ),
            ));
        }
        // Names are almost always ASCII, and then a byte scan decides what the Unicode
        // character classes would (ASCII's only whitespace besides ' ' are control characters).
        let (control, padded) = if name.is_ascii() {
            (
                name.bytes().any(|b| b.is_ascii_control()),
                name.starts_with(' ') || name.ends_with(' '),
            )
        } else {
            (name.chars().any(char::is_control), name.trim() != name)
        };
        if control {
            return Err(ValidationError::new(
                "stream_id",
                "must not contain control characters",
            ));
        }
        if padded {
            return Err(ValidationError::new(
                "stream_id",
                "must not start or end with whitespace",
            ));
        }
        Ok(())
    }

    /// The stream name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first character of a system stream's name.
    pub const SYSTEM_PREFIX: char = '$';

    /// Whether this is a system stream: its name starts with `$`. Crossfold keeps its own
    /// records in such streams (the executor's idempotency markers, `$idempotency-<key>`), and
    /// reads of the global log and subscriptions leave them out unless a [`LogFilter`] asks for
    /// them with [`with_system_streams`](crate::LogFilter::with_system_streams) or names them.
    /// Only [`system`](Self::system) and [`from_stored`](Self::from_stored) make such ids.
    ///
    /// [`LogFilter`]: crate::LogFilter
    pub fn is_system(&self) -> bool {
        self.0.starts_with(Self::SYSTEM_PREFIX)
    }

    /// The stream's category: the part of its name before the first `-` (`account` for
    /// `account-42`), or the whole name when it has none. Subscriptions can follow a category
    /// ([`LogFilter::categories`](crate::LogFilter::categories)).
    pub fn category(&self) -> &str {
        self.0.split('-').next().unwrap_or(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for StreamId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for StreamId {
    type Error = ValidationError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<String> for StreamId {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl Serialize for StreamId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StreamId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        StreamId::new(&*name).map_err(serde::de::Error::custom)
    }
}

/// A globally unique event id: a UUIDv7, so ids sort by creation time.
///
/// Ids come from [`EventId::generate`] (monotonic within a process) or
/// [`EventId::generate_after`], which also stays above a *causal floor*: the executor passes the
/// highest id a command read, so an event written because of another event always sorts after it,
/// even when clocks of different machines disagree.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "Uuid", into = "Uuid")]
pub struct EventId(Uuid);

/// Bits of a UUIDv7 below the 48-bit millisecond timestamp that we use as a counter:
/// the 12 bits of `rand_a` and the 62 bits of `rand_b` (version and variant bits excluded).
const COUNTER_BITS: u32 = 74;
const COUNTER_MAX: u128 = (1 << COUNTER_BITS) - 1;

/// Last id handed out in this process, as (unix milliseconds, 74-bit counter).
static LAST_ID: Mutex<(u64, u128)> = Mutex::new((0, 0));

impl EventId {
    /// A new id, greater than every id generated before it in this process.
    pub fn generate() -> Self {
        Self::next_above(None)
    }

    /// A new id, greater than every id generated before it in this process **and** greater than
    /// `floor` (the causal floor: the highest id the caller has seen).
    pub fn generate_after(floor: EventId) -> Self {
        Self::next_above(Some(floor))
    }

    fn next_above(floor: Option<EventId>) -> Self {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            & 0xFFFF_FFFF_FFFF;
        // A poisoned lock only means another thread panicked while holding plain integers;
        // the value is still a valid "last id", so keep going.
        let mut last = LAST_ID.lock().unwrap_or_else(|e| e.into_inner());
        let next = successor(*last, floor.map(EventId::parts), now_ms, random_counter);
        *last = next;
        Self::from_parts(next.0, next.1)
    }

    fn from_parts(ms: u64, counter: u128) -> Self {
        let rand_a = (counter >> 62) & 0xFFF;
        let rand_b = counter & ((1u128 << 62) - 1);
        let value =
            ((ms as u128) << 80) | (0x7u128 << 76) | (rand_a << 64) | (0b10u128 << 62) | rand_b;
        Self(Uuid::from_u128(value))
    }

    fn parts(self) -> (u64, u128) {
        let value = self.0.as_u128();
        let ms = (value >> 80) as u64;
        let rand_a = (value >> 64) & 0xFFF;
        let rand_b = value & ((1u128 << 62) - 1);
        (ms, (rand_a << 62) | rand_b)
    }

    /// Accepts a UUID if it is a version 7 UUID.
    pub fn from_uuid(uuid: Uuid) -> Result<Self, ValidationError> {
        if uuid.get_version_num() == 7 {
            Ok(Self(uuid))
        } else {
            Err(ValidationError::new(
                "event_id",
                format!("{uuid} is not a UUIDv7"),
            ))
        }
    }

    /// Parses the hyphenated text form of a UUIDv7.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let uuid =
            Uuid::parse_str(text).map_err(|e| ValidationError::new("event_id", e.to_string()))?;
        Self::from_uuid(uuid)
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// Milliseconds since the Unix epoch encoded in the id.
    pub fn timestamp_millis(&self) -> u64 {
        self.parts().0
    }
}

/// The parts of the next id after `last` (and after `floor`, if given) at time `now_ms`;
/// `random` draws a random counter (74 bits) when one is needed.
///
/// Above a floor read from the store, the id jumps a random distance (up to 2^48) rather than
/// taking the floor's successor: processes that read the same floor in the same millisecond —
/// commands on streams another process has just written — would otherwise all take
/// `floor + 1`, and the second append would be refused for an event id already stored.
fn successor(
    last: (u64, u128),
    floor: Option<(u64, u128)>,
    now_ms: u64,
    mut random: impl FnMut() -> u128,
) -> (u64, u128) {
    let (base, from_floor) = match floor {
        Some(floor) if floor > last => (floor, true),
        _ => (last, false),
    };
    if now_ms > base.0 {
        // A fresh millisecond: start the counter at a random point in its lower half, so ids
        // from different processes rarely collide and there is room to count upwards.
        return (now_ms, random() >> 1);
    }
    let step = if from_floor {
        1 + (random() & ((1 << FLOOR_JUMP_BITS) - 1))
    } else {
        1
    };
    match base.1.checked_add(step) {
        Some(counter) if counter <= COUNTER_MAX => (base.0, counter),
        // The millisecond is full: on to the next, at a random point when others may be there.
        _ if from_floor => (base.0 + 1, random() >> 1),
        _ => (base.0 + 1, 0),
    }
}

/// The largest jump above a causal floor, in bits (see [`successor`]).
const FLOOR_JUMP_BITS: u32 = 48;

fn random_counter() -> u128 {
    // UUIDv4 generation is the randomness source uuid already gives us.
    Uuid::new_v4().as_u128() & COUNTER_MAX
}

impl TryFrom<Uuid> for EventId {
    type Error = ValidationError;
    fn try_from(value: Uuid) -> Result<Self, Self::Error> {
        Self::from_uuid(value)
    }
}

impl From<EventId> for Uuid {
    fn from(value: EventId) -> Self {
        value.0
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.0)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A UUID tagged with the kind of thing it identifies, so that ids of different kinds cannot be
/// mixed up: a `TypedId<Account>` is not accepted where a `TypedId<Order>` is expected.
///
/// ```
/// use crossfold_core::TypedId;
/// enum Account {}
/// enum Order {}
/// let account: TypedId<Account> = TypedId::new();
/// let order: TypedId<Order> = TypedId::new();
/// assert_ne!(account.as_uuid(), order.as_uuid());
/// // let wrong: TypedId<Order> = account; // does not compile
/// ```
pub struct TypedId<T: ?Sized> {
    uuid: Uuid,
    _kind: PhantomData<fn() -> T>,
}

impl<T: ?Sized> TypedId<T> {
    /// A new time-ordered (v7) id.
    pub fn new() -> Self {
        Self::from_uuid(EventId::generate().as_uuid())
    }

    /// Wraps an existing UUID.
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self {
            uuid,
            _kind: PhantomData,
        }
    }

    /// Parses the text form of a UUID.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        Uuid::parse_str(text)
            .map(Self::from_uuid)
            .map_err(|e| ValidationError::new("id", e.to_string()))
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.uuid
    }
}

impl<T: ?Sized> Default for TypedId<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: ?Sized> Clone for TypedId<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: ?Sized> Copy for TypedId<T> {}
impl<T: ?Sized> PartialEq for TypedId<T> {
    fn eq(&self, other: &Self) -> bool {
        self.uuid == other.uuid
    }
}
impl<T: ?Sized> Eq for TypedId<T> {}
impl<T: ?Sized> PartialOrd for TypedId<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: ?Sized> Ord for TypedId<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.uuid.cmp(&other.uuid)
    }
}
impl<T: ?Sized> std::hash::Hash for TypedId<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.uuid.hash(state)
    }
}
impl<T: ?Sized> fmt::Debug for TypedId<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.uuid, f)
    }
}
impl<T: ?Sized> fmt::Display for TypedId<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.uuid, f)
    }
}
impl<T: ?Sized> Serialize for TypedId<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.uuid.serialize(serializer)
    }
}
impl<'de, T: ?Sized> Deserialize<'de> for TypedId<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Uuid::deserialize(deserializer).map(Self::from_uuid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why `name` is refused as a stream id.
    fn refused(name: &str) -> String {
        let e = StreamId::new(name).expect_err(name);
        assert_eq!(e.field, "stream_id");
        e.reason
    }

    #[test]
    fn stream_id_rules() {
        assert!(StreamId::new("account-1").is_ok());
        assert_eq!(refused(""), "must not be empty");
        assert_eq!(refused(" a"), "must not start or end with whitespace");
        assert_eq!(refused("a "), "must not start or end with whitespace");
        assert_eq!(refused("a\nb"), "must not contain control characters");
        assert!(StreamId::new("x".repeat(255)).is_ok());
        assert_eq!(
            refused(&"x".repeat(256)),
            "is 256 bytes long; at most 255 allowed"
        );
        assert_eq!(
            refused(&"é".repeat(128)),
            "is 256 bytes long; at most 255 allowed",
            "limit is in bytes"
        );
        // ASCII and non-ASCII names take different paths to the same rules.
        for bad in ["a\tb", "\u{7f}", "\tab", "ab\r", "é\u{85}é", "é\u{1}"] {
            assert_eq!(
                refused(bad),
                "must not contain control characters",
                "{bad:?}"
            );
        }
        for bad in [" é", "é\u{3000}"] {
            assert_eq!(
                refused(bad),
                "must not start or end with whitespace",
                "{bad:?}"
            );
        }
        for good in ["a b", "a-é", "订单-1", "x\u{a0}y"] {
            assert!(StreamId::new(good).is_ok(), "{good:?} must be accepted");
        }
    }

    #[test]
    fn stream_id_deserialize_validates() {
        let ok: StreamId = serde_json::from_str("\"a-1\"").unwrap();
        assert_eq!(ok.as_str(), "a-1");
        let empty = serde_json::from_str::<StreamId>("\"\"").unwrap_err();
        assert!(empty.to_string().contains("must not be empty"), "{empty}");
        let system = serde_json::from_str::<StreamId>("\"$idempotency-1\"").unwrap_err();
        assert!(
            system.to_string().contains("reserved for system"),
            "{system}"
        );
    }

    #[test]
    fn the_system_namespace_needs_its_own_constructor() {
        for name in ["$idempotency-1", "$$; SELECT 1; $$", "$"] {
            let refused = StreamId::new(name).unwrap_err();
            assert_eq!(refused.field, "stream_id");
            assert!(
                refused.reason.contains("reserved for system streams"),
                "{refused}"
            );
            assert!(StreamId::from_stored(name).unwrap().is_system());
        }
        let marker = StreamId::system("idempotency-1").unwrap();
        assert_eq!(marker.as_str(), "$idempotency-1");
        assert!(marker.is_system());
        assert!(!StreamId::new("a$b").unwrap().is_system());
        assert!(StreamId::system("x\n").is_err());
        assert!(StreamId::from_stored("").is_err());
    }

    #[test]
    fn event_ids_are_v7_and_strictly_increasing() {
        let mut last = EventId::generate();
        for _ in 0..10_000 {
            let next = EventId::generate();
            assert!(next > last);
            assert_eq!(next.as_uuid().get_version_num(), 7);
            last = next;
        }
    }

    #[test]
    fn causal_floor_from_the_future_is_respected() {
        // An id from a machine whose clock runs an hour ahead.
        let ahead = EventId::from_parts(EventId::generate().timestamp_millis() + 3_600_000, 5);
        let next = EventId::generate_after(ahead);
        assert!(next > ahead);
        assert_eq!(next.timestamp_millis(), ahead.timestamp_millis());
        assert!(EventId::generate() > next);
    }

    #[test]
    fn parts_round_trip() {
        for counter in [0, 1, COUNTER_MAX, 1 << 62, (1 << 62) - 1] {
            let id = EventId::from_parts(1_700_000_000_000, counter);
            assert_eq!(id.parts(), (1_700_000_000_000, counter));
            assert!(EventId::from_uuid(id.as_uuid()).is_ok());
        }
    }

    #[test]
    fn counter_overflow_moves_to_next_millisecond() {
        let never = || -> u128 { panic!("no random counter needed") };
        let next = successor((1000, COUNTER_MAX), None, 1000, never);
        assert_eq!(next, (1001, 0));
        let next = successor((1000, 7), Some((2000, 3)), 1500, || 0);
        assert_eq!(next, (2000, 4), "the floor wins when it is ahead");
        let next = successor((1000, 7), Some((2000, 3)), 1500, || 99);
        assert_eq!(next, (2000, 103), "by a random jump");
        let next = successor((1000, 7), Some((2000, COUNTER_MAX - 1)), 1500, || 8);
        assert_eq!(
            next,
            (2001, 4),
            "past a full millisecond, at a random point"
        );
        let next = successor((1000, 7), None, 1001, || 10);
        assert_eq!(next, (1001, 5));
    }

    #[test]
    fn processes_that_read_one_floor_take_different_ids() {
        // Processes that have written nothing since (each `last` below the floor) read the
        // same floor in its millisecond: with the floor's successor all would write one id.
        let floor = (1_700_000_000_000, 1u128 << 40);
        let mut ids = std::collections::HashSet::new();
        for _ in 0..1_000 {
            let id = successor((0, 0), Some(floor), floor.0, random_counter);
            assert!(id > floor && id.0 == floor.0);
            assert!(ids.insert(id), "two processes took one id");
        }
    }

    #[test]
    fn non_v7_uuid_is_rejected() {
        let v4 = Uuid::new_v4();
        let e = EventId::from_uuid(v4).unwrap_err();
        assert_eq!(
            (e.field.as_ref(), e.reason),
            ("event_id", format!("{v4} is not a UUIDv7"))
        );
        assert_eq!(EventId::parse("not a uuid").unwrap_err().field, "event_id");
    }
}
