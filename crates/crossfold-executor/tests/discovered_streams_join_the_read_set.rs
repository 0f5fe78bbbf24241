//! An order names its products only in its own events; a command that reserves stock reads the
//! order, discovers the product streams from it, and writes to them under the same atomic,
//! version-checked append.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use crossfold_core::{
    Command, CommandError, DomainEvent, Emit, EventStore, Fold, Recorded, StoreError, StreamId,
    StreamRef,
};
use crossfold_executor::{Error, Executor, RetryPolicy};
use crossfold_memory::MemoryStore;
use serde::{Deserialize, Serialize};

fn sid(s: &str) -> StreamId {
    StreamId::new(s).unwrap()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Shop {
    OrderPlaced { products: Vec<String> },
    Stocked { quantity: u32 },
    Reserved { quantity: u32 },
}

impl DomainEvent for Shop {
    fn event_type(&self) -> &'static str {
        match self {
            Shop::OrderPlaced { .. } => "OrderPlaced",
            Shop::Stocked { .. } => "Stocked",
            Shop::Reserved { .. } => "Reserved",
        }
    }
}

#[derive(Clone, Default)]
struct OrderStock {
    products: Vec<StreamId>,
    available: Vec<(StreamId, u32)>,
}

impl Fold<Shop> for OrderStock {
    fn apply(&mut self, event: &Recorded<Shop>) {
        match &event.event {
            Shop::OrderPlaced { products } => {
                self.products = products
                    .iter()
                    .map(|p| sid(&format!("product-{p}")))
                    .collect();
            }
            Shop::Stocked { quantity } | Shop::Reserved { quantity } => {
                let delta = if matches!(event.event, Shop::Stocked { .. }) {
                    *quantity as i64
                } else {
                    -(*quantity as i64)
                };
                match self
                    .available
                    .iter_mut()
                    .find(|(s, _)| *s == event.stream_id)
                {
                    Some((_, q)) => *q = (*q as i64 + delta) as u32,
                    None => self.available.push((event.stream_id.clone(), delta as u32)),
                }
            }
        }
    }
}

struct Place {
    order: StreamId,
    products: Vec<String>,
}

impl Command for Place {
    type Event = Shop;
    type State = ();
    type Streams = StreamId;
    fn streams(&self) -> StreamId {
        self.order.clone()
    }
    fn handle<'x>(
        &self,
        _: &(),
        order: StreamRef<'x>,
        out: &mut Emit<'x, Shop>,
    ) -> Result<(), CommandError> {
        out.append(
            order,
            Shop::OrderPlaced {
                products: self.products.clone(),
            },
        );
        Ok(())
    }
}

struct Stock {
    product: StreamId,
    quantity: u32,
}

impl Command for Stock {
    type Event = Shop;
    type State = ();
    type Streams = StreamId;
    fn streams(&self) -> StreamId {
        self.product.clone()
    }
    fn handle<'x>(
        &self,
        _: &(),
        p: StreamRef<'x>,
        out: &mut Emit<'x, Shop>,
    ) -> Result<(), CommandError> {
        out.append(
            p,
            Shop::Stocked {
                quantity: self.quantity,
            },
        );
        Ok(())
    }
}

struct Reserve {
    order: StreamId,
}

impl Command for Reserve {
    type Event = Shop;
    type State = OrderStock;
    type Streams = StreamId;
    fn streams(&self) -> StreamId {
        self.order.clone()
    }
    fn discover(&self, state: &OrderStock) -> Vec<StreamId> {
        state.products.clone()
    }
    fn handle<'x>(
        &self,
        state: &OrderStock,
        _order: StreamRef<'x>,
        out: &mut Emit<'x, Shop>,
    ) -> Result<(), CommandError> {
        for product in &state.products {
            let left = state
                .available
                .iter()
                .find(|(s, _)| s == product)
                .map_or(0, |(_, q)| *q);
            if left == 0 {
                return Err(CommandError::rejected(
                    "out_of_stock",
                    format!("{product} is sold out"),
                ));
            }
            let token = out.stream(product).ok_or_else(|| {
                CommandError::InvalidState(format!("{product} was not discovered"))
            })?;
            out.append(token, Shop::Reserved { quantity: 1 });
        }
        Ok(())
    }
}

#[tokio::test]
async fn discovered_product_streams_are_read_and_written() {
    let store = MemoryStore::new();
    let executor = Executor::new(store.clone());
    executor
        .execute(Stock {
            product: sid("product-apple"),
            quantity: 1,
        })
        .await
        .unwrap();
    executor
        .execute(Stock {
            product: sid("product-pear"),
            quantity: 2,
        })
        .await
        .unwrap();
    executor
        .execute(Place {
            order: sid("order-1"),
            products: vec!["apple".into(), "pear".into()],
        })
        .await
        .unwrap();
    executor
        .execute(Place {
            order: sid("order-2"),
            products: vec!["apple".into()],
        })
        .await
        .unwrap();

    let done = executor
        .execute(Reserve {
            order: sid("order-1"),
        })
        .await
        .unwrap();
    let streams: Vec<_> = done.events.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(streams, vec!["product-apple", "product-pear"]);

    let err = executor
        .execute(Reserve {
            order: sid("order-2"),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.rule(),
        Some("out_of_stock"),
        "the apple reserved by order-1 is gone"
    );
    assert_eq!(
        store
            .stream_version(&sid("product-apple"))
            .await
            .unwrap()
            .get(),
        2
    );
}

#[tokio::test]
async fn a_discovered_stream_that_changes_conflicts() {
    let store = MemoryStore::new();
    // Two executors share only the store, like two processes.
    let first = Executor::builder(store.clone())
        .retry(RetryPolicy::none())
        .build();
    let second = Executor::new(store.clone());
    first
        .execute(Stock {
            product: sid("product-fig"),
            quantity: 2,
        })
        .await
        .unwrap();
    first
        .execute(Place {
            order: sid("order-9"),
            products: vec!["fig".into()],
        })
        .await
        .unwrap();
    first
        .execute(Place {
            order: sid("order-8"),
            products: vec!["fig".into()],
        })
        .await
        .unwrap();
    // The first executor reserves one fig for order-9 and remembers one is left...
    first
        .execute(Reserve {
            order: sid("order-9"),
        })
        .await
        .unwrap();
    // ...but another process takes it for order-8.
    second
        .execute(Reserve {
            order: sid("order-8"),
        })
        .await
        .unwrap();
    // Reserving again for order-9 on the remembered view must conflict on the discovered
    // product stream rather than oversell.
    match first
        .execute(Reserve {
            order: sid("order-9"),
        })
        .await
    {
        Err(Error::Store {
            source: StoreError::Conflict(conflicts),
            ..
        }) => {
            assert_eq!(conflicts.len(), 1, "{conflicts:?}");
            assert_eq!(conflicts[0].stream, sid("product-fig"));
        }
        Ok(done) => panic!("oversold on a stale view: {done:?}"),
        Err(other) => panic!("unexpected error {other:?}"),
    }
    // With retries, the executor catches up and refuses for the right reason.
    let err = Executor::new(store.clone())
        .execute(Reserve {
            order: sid("order-9"),
        })
        .await
        .unwrap_err();
    assert_eq!(err.rule(), Some("out_of_stock"));
    assert_eq!(
        store
            .stream_version(&sid("product-fig"))
            .await
            .unwrap()
            .get(),
        3
    );
}
