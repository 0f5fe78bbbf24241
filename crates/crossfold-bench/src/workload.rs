//! The standard workloads, how to run one, and why a run can fail to produce a report.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One of the standard workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// W1: single-stream command — read `account-N`, append a deposit.
    Deposit,
    /// W2: three-stream transfer between random accounts (both accounts and `transfer-<uuid>`),
    /// refusing insufficient funds.
    Transfer,
    /// W3: five-stream command — debit one account, credit four others.
    Split,
    /// W4: W2 on only 10 accounts: contention.
    Contended,
    /// W5: append 100 events to a fresh stream in one call.
    BatchAppend,
    /// W6: read one account stream (about 10 events).
    ReadOne,
    /// W6: read three account streams in one call.
    ReadThree,
    /// W7: catch-up — read the whole log from the start through a subscription.
    CatchUp,
    /// W7: live — append-to-delivery latency of a subscription while W1 runs.
    Live,
    /// W8: W1 on 10 accounts whose streams already hold 10,000 events each.
    LongStreams,
    /// W12: every command reads one counter stream and writes its next number there and on a
    /// fresh `invoice-<id>` stream (gapless numbering); the counter's history grows all run.
    HotCounter,
}

impl Workload {
    /// Every workload, in order.
    pub const ALL: [Workload; 11] = [
        Workload::Deposit,
        Workload::Transfer,
        Workload::Split,
        Workload::Contended,
        Workload::BatchAppend,
        Workload::ReadOne,
        Workload::ReadThree,
        Workload::CatchUp,
        Workload::Live,
        Workload::LongStreams,
        Workload::HotCounter,
    ];

    /// The short id used on the command line and in reports (`w1`, `w6x3`, `w7-live`, ...).
    pub fn id(self) -> &'static str {
        match self {
            Workload::Deposit => "w1",
            Workload::Transfer => "w2",
            Workload::Split => "w3",
            Workload::Contended => "w4",
            Workload::BatchAppend => "w5",
            Workload::ReadOne => "w6",
            Workload::ReadThree => "w6x3",
            Workload::CatchUp => "w7-catchup",
            Workload::Live => "w7-live",
            Workload::LongStreams => "w8",
            Workload::HotCounter => "w12",
        }
    }

    /// A short description.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Deposit => "deposit (1 stream)",
            Workload::Transfer => "transfer (3 streams)",
            Workload::Split => "split (5 streams)",
            Workload::Contended => "contended transfer (10 accounts)",
            Workload::BatchAppend => "batch append (100 events)",
            Workload::ReadOne => "read 1 stream",
            Workload::ReadThree => "read 3 streams in one call",
            Workload::CatchUp => "subscription catch-up",
            Workload::Live => "subscription live delivery",
            Workload::LongStreams => "deposit on long streams",
            Workload::HotCounter => "hot counter (gapless invoice numbers)",
        }
    }

    /// How many accounts the workload uses when the options leave it to the workload.
    pub(crate) fn accounts(self, requested: usize) -> usize {
        match self {
            Workload::Contended | Workload::LongStreams => 10,
            Workload::HotCounter => 0,
            _ => requested.max(10),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.to_ascii_lowercase();
        Workload::ALL
            .into_iter()
            .find(|w| w.id() == s)
            .or(match s.as_str() {
                "w6x1" => Some(Workload::ReadOne),
                "w7" => Some(Workload::CatchUp),
                _ => None,
            })
            .ok_or_else(|| {
                let ids: Vec<_> = Workload::ALL.iter().map(|w| w.id()).collect();
                format!("unknown workload {s:?}; known: {}", ids.join(", "))
            })
    }
}

/// How to run a workload.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The workload.
    pub workload: Workload,
    /// How long to measure, after the warm-up.
    pub duration: Duration,
    /// How long to run before measuring.
    pub warmup: Duration,
    /// Operations in flight.
    pub concurrency: usize,
    /// Accounts to open first (W4 and W8 always use 10, W12 none).
    pub accounts: usize,
    /// Print a progress line to standard error every second.
    pub progress: bool,
    /// The store's name for the report (`memory`, `postgres`).
    pub store_name: String,
    /// Seed for the random choices.
    pub seed: u64,
    /// Whether the executor queues commands on the same streams in-process (its default) or
    /// lets them race to the store.
    pub serialize_in_process: bool,
    /// Whether commands that lose races to other writers take turns on the contended streams
    /// (the executor's default) or back off and race again.
    pub take_turns: bool,
    /// How many processes run the workload at once, each with `concurrency` operations in
    /// flight (for the report: the processes are started by whoever runs the shares).
    pub processes: usize,
    /// How many commands the executor runs at once; the others wait for admission.
    pub concurrency_limit: ConcurrencyLimit,
}

/// How many commands the executor runs at once (its admission control).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConcurrencyLimit {
    /// As many as the store serves at once (the executor's default).
    #[default]
    Store,
    /// This many.
    Fixed(usize),
    /// No admission control: every command goes to the store at once.
    Off,
}

impl FromStr for ConcurrencyLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "store" => Ok(ConcurrencyLimit::Store),
            "off" => Ok(ConcurrencyLimit::Off),
            n => n
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .map(ConcurrencyLimit::Fixed)
                .ok_or_else(|| format!("expected store, off or a positive number, not {n:?}")),
        }
    }
}

impl std::fmt::Display for ConcurrencyLimit {
    /// As [`FromStr`] reads it back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConcurrencyLimit::Store => f.write_str("store"),
            ConcurrencyLimit::Fixed(n) => write!(f, "{n}"),
            ConcurrencyLimit::Off => f.write_str("off"),
        }
    }
}

impl LoadOptions {
    /// Defaults: 30 s after 5 s of warm-up, 16 in flight, 10,000 accounts.
    pub fn new(workload: Workload) -> Self {
        Self {
            workload,
            duration: Duration::from_secs(30),
            warmup: Duration::from_secs(5),
            concurrency: 16,
            accounts: 10_000,
            progress: false,
            store_name: "store".into(),
            seed: 42,
            serialize_in_process: true,
            take_turns: true,
            processes: 1,
            concurrency_limit: ConcurrencyLimit::Store,
        }
    }
}

/// Why a load run could not produce a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Preparing the data failed.
    #[error("setting up the workload failed")]
    Setup(#[source] crossfold_core::BoxError),
    /// Reading the data back for verification failed.
    #[error("reading the data back failed")]
    Verify(#[source] crossfold_core::StoreError),
}
