//! The read path, whole: one or several streams ([`stream`]), the global log with its filters
//! and its head ([`log`]), the bounded wait for committed events to pass the visibility horizon
//! and the wait for new ones ([`wait`]), the open transactions the horizon passes and what
//! holds it back ([`horizon`]), events set aside because they cannot be decoded
//! ([`quarantine`](mod@quarantine)), and rows turned into events ([`decode`]). Each read is one
//! prepared statement, one round trip (again only while it waits for the horizon).

mod decode;
mod horizon;
mod log;
mod quarantine;
mod stream;
mod wait;

pub(crate) use decode::Decoder;
pub(crate) use horizon::{Blocker, Horizon, held_back};
pub(crate) use log::{explain_read_all, head_position, read_all};
pub(crate) use quarantine::quarantine;
pub(crate) use stream::{archived_stream, read_streams};
pub(crate) use wait::wait_for_events;
