//! A `FaultyStore` with no faults injected is a transparent wrapper: it passes the whole store
//! contract suite.

async fn fresh_store() -> crossfold_testkit::FaultyStore<crossfold_memory::MemoryStore> {
    crossfold_testkit::FaultyStore::in_memory()
}

crossfold_testkit::store_contract_tests!(fresh_store);
