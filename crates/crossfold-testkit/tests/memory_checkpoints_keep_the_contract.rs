//! `MemoryCheckpoints` keeps every behaviour of the checkpoint store contract.

async fn fresh() -> (crossfold_memory::MemoryCheckpoints, ()) {
    (crossfold_memory::MemoryCheckpoints::new(), ())
}

crossfold_testkit::checkpoint_contract_tests!(fresh);
