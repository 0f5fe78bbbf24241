//! `PgEventStore` keeps every behaviour of the `EventStore` contract, against a real server
//! (`DATABASE_URL`), each behaviour in a fresh schema: once with each append alone, once with
//! every append sent through the group commit function.

mod common;

mod alone {
    async fn fresh_store() -> super::common::TestStore {
        super::common::fresh_store_in(super::common::Commit::Alone).await
    }

    crossfold_testkit::store_contract_tests!(fresh_store);
}

mod each_in_a_group {
    async fn fresh_store() -> super::common::TestStore {
        super::common::fresh_store_in(super::common::Commit::EachInAGroup).await
    }

    crossfold_testkit::store_contract_tests!(fresh_store);
}
