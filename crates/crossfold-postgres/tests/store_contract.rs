//! `PgEventStore` keeps every behaviour of the `EventStore` contract, against a real server
//! (`DATABASE_URL`), each behaviour in a fresh schema.

mod common;

async fn fresh_store() -> common::TestStore {
    common::fresh_store().await
}

crossfold_testkit::store_contract_tests!(fresh_store);
