//! `MemoryStore` keeps every behaviour of the `EventStore` contract.

async fn fresh_store() -> crossfold_memory::MemoryStore {
    crossfold_memory::MemoryStore::new()
}

crossfold_testkit::store_contract_tests!(fresh_store);
