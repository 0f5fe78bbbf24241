//! Deadlines on the memory store fire once after their time, across a restart and a worker
//! that dies between the command and marking the deadline, and under two racing workers.
//! (The same behaviours run on PostgreSQL in `crossfold-postgres`.)

use crossfold::memory::{MemoryDeadlineStore, MemoryStore};
use crossfold_testkit::{block_on, deadlines};

#[test]
fn deadlines_fire_once_across_a_restart() {
    block_on(deadlines::deadlines_fire_once_across_a_restart(
        MemoryStore::new(),
        MemoryDeadlineStore::new(),
    ));
}

#[test]
fn racing_workers_fire_each_deadline_once() {
    block_on(deadlines::racing_workers_fire_each_deadline_once(
        MemoryStore::new(),
        MemoryDeadlineStore::new(),
    ));
}
