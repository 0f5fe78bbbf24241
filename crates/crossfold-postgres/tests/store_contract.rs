//! `PgEventStore` keeps every behaviour of the `EventStore` contract, against a real server
//! (`DATABASE_URL`), each behaviour in a fresh schema: once with each append alone, once with
//! every append sent through the group commit function, and once on a partitioned log.
#![allow(clippy::unwrap_used)]

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

/// The same behaviours on a log partitioned by position, in partitions of 200 transaction ids
/// (so that the store creates partitions ahead as the behaviours append).
mod partitioned {
    async fn fresh_store() -> super::common::TestStore {
        let store = super::common::fresh_store_in(super::common::Commit::Alone).await;
        store
            .store
            .partition_log(
                crossfold_postgres::PgLogPartitioning::new(200)
                    .ahead(3)
                    .margin(50),
            )
            .await
            .unwrap();
        store
    }

    crossfold_testkit::store_contract_tests!(fresh_store);
}
