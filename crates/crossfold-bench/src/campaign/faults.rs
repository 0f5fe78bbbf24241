//! The faults the campaign injects, drawn from generators seeded from its options.

use crossfold_core::EventStore;
use crossfold_testkit::{Fault, FaultKind, FaultyStore, Operation};

use super::CampaignOptions;

pub(super) fn fault_names() -> [&'static str; 8] {
    [
        "append: version conflict (nothing written)",
        "append: unavailable before the store (nothing written)",
        "append: contention, rolled back (nothing written)",
        "append: timeout before the store (nothing written)",
        "append: written, then reported unavailable (ambiguous)",
        "append: written, then reported timed out (ambiguous)",
        "read: unavailable",
        "read: timeout",
    ]
}

pub(super) fn faulty<S: EventStore>(inner: S, options: &CampaignOptions) -> FaultyStore<S> {
    let r = options.rates;
    let seed = |n: u64| options.seed.wrapping_mul(31).wrapping_add(n);
    let append = |p: f64, n: u64| Fault::on(Operation::Append).with_probability(p, seed(n));
    let read = |p: f64, n: u64| Fault::on(Operation::ReadStreams).with_probability(p, seed(n));
    let store = FaultyStore::new(inner)
        .with(append(r.conflict, 1).conflict())
        .with(append(r.unavailable, 2).fail(FaultKind::Unavailable))
        .with(append(r.contention, 3).fail(FaultKind::Contention))
        .with(append(r.timeout, 4).fail(FaultKind::Timeout))
        .with(
            append(r.lost_acknowledgement, 5)
                .after_call()
                .fail(FaultKind::Unavailable),
        )
        .with(
            append(r.late_timeout, 6)
                .after_call()
                .fail(FaultKind::Timeout),
        )
        .with(read(r.read_unavailable, 7).fail(FaultKind::Unavailable))
        .with(read(r.read_timeout, 8).fail(FaultKind::Timeout));
    if options.log_faults {
        store.logged()
    } else {
        store
    }
}
