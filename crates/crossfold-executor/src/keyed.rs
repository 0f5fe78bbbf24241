//! A command run under an idempotency key chosen by its caller.

use crossfold_core::{Command, CommandError, Emit, StreamId, StreamSet};

/// `command`, executed with the idempotency key `key` instead of its own: running it again
/// with the same key returns the first outcome and writes nothing. Deadline workers and
/// process managers use it to derive the key from the deadline or the triggering event, so a
/// command fired twice after a crash is applied once.
///
/// Everything else — streams, state, decision, name — is the wrapped command's.
#[derive(Clone, Debug)]
pub struct Idempotent<C> {
    command: C,
    key: String,
}

impl<C: Command> Idempotent<C> {
    /// `command` under `key`.
    pub fn new(command: C, key: impl Into<String>) -> Self {
        Self {
            command,
            key: key.into(),
        }
    }

    /// The wrapped command.
    pub fn command(&self) -> &C {
        &self.command
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl<C: Command> Command for Idempotent<C> {
    type Event = C::Event;
    type State = C::State;
    type Streams = C::Streams;

    fn streams(&self) -> C::Streams {
        self.command.streams()
    }

    fn handle<'x>(
        &self,
        state: &C::State,
        streams: <C::Streams as StreamSet>::Tokens<'x>,
        out: &mut Emit<'x, C::Event>,
    ) -> Result<(), CommandError> {
        self.command.handle(state, streams, out)
    }

    fn discover(&self, state: &C::State) -> Vec<StreamId> {
        self.command.discover(state)
    }

    fn required_permission(&self) -> Option<&str> {
        self.command.required_permission()
    }

    fn idempotency_key(&self) -> Option<String> {
        Some(self.key.clone())
    }

    fn expects_new(&self, stream: &StreamId) -> bool {
        self.command.expects_new(stream)
    }

    fn name(&self) -> &'static str {
        self.command.name()
    }
}
