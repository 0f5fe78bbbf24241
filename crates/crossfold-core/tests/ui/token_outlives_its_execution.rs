// A stream token is branded with the lifetime of one execution: it cannot be kept for later.
use crossfold_core::{Command, CommandError, DomainEvent, Emit, StreamId, StreamRef};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

#[derive(Serialize, Deserialize)]
struct Touched;

impl DomainEvent for Touched {
    fn event_type(&self) -> &'static str {
        "Touched"
    }
}

static KEPT: Mutex<Option<StreamRef<'static>>> = Mutex::new(None);

struct Hoarder {
    declared: StreamId,
}

impl Command for Hoarder {
    type Event = Touched;
    type State = ();
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.declared.clone()
    }

    fn handle<'x>(
        &self,
        _: &(),
        declared: StreamRef<'x>,
        _out: &mut Emit<'x, Touched>,
    ) -> Result<(), CommandError> {
        *KEPT.lock().unwrap() = Some(declared);
        Ok(())
    }
}

fn main() {
    let _ = Hoarder {
        declared: StreamId::new("mine").unwrap(),
    };
}
