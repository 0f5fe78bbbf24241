// A command may only append through the tokens the executor hands out for its declared
// streams; a raw `StreamId` is not accepted.
use crossfold_core::{Command, CommandError, DomainEvent, Emit, StreamId, StreamRef};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Touched;

impl DomainEvent for Touched {
    fn event_type(&self) -> &'static str {
        "Touched"
    }
}

struct Sneaky {
    declared: StreamId,
}

impl Command for Sneaky {
    type Event = Touched;
    type State = ();
    type Streams = StreamId;

    fn streams(&self) -> StreamId {
        self.declared.clone()
    }

    fn handle<'x>(
        &self,
        _: &(),
        _declared: StreamRef<'x>,
        out: &mut Emit<'x, Touched>,
    ) -> Result<(), CommandError> {
        let elsewhere = StreamId::new("someone-elses-stream")?;
        out.append(elsewhere, Touched);
        Ok(())
    }
}

fn main() {
    let _ = Sneaky {
        declared: StreamId::new("mine").unwrap(),
    };
}
