//! `PgCheckpoints` keeps every behaviour of the checkpoint store contract, against a real
//! server (`DATABASE_URL`), each behaviour in a fresh schema.

mod common;

async fn fresh() -> (crossfold_postgres::PgCheckpoints, common::TestStore) {
    let store = common::fresh_store().await;
    (crossfold_postgres::PgCheckpoints::new(&store), store)
}

crossfold_testkit::checkpoint_contract_tests!(fresh);
