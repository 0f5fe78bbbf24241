//! Deadlines on PostgreSQL fire once after their time: across a restart and a worker that dies
//! between the command and marking the deadline, and with two workers polling at once.

mod common;

use crossfold_postgres::PgDeadlineStore;
use crossfold_testkit::{block_on, deadlines};

#[test]
fn deadlines_fire_once_across_a_restart() {
    block_on(async {
        let store = common::fresh_store().await;
        let deadlines = PgDeadlineStore::new(&store);
        deadlines::deadlines_fire_once_across_a_restart(store.store.clone(), deadlines).await;
    });
}

#[test]
fn racing_workers_fire_each_deadline_once() {
    block_on(async {
        let store = common::fresh_store().await;
        let deadlines = PgDeadlineStore::new(&store);
        deadlines::racing_workers_fire_each_deadline_once(store.store.clone(), deadlines).await;
    });
}
