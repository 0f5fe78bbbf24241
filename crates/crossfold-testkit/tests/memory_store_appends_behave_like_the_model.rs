//! Random sequences of appends to a `MemoryStore` — with random conditions, reused event ids
//! and malformed requests — get exactly the answers of the reference model, and leave exactly
//! its events.

use crossfold_memory::MemoryStore;
use crossfold_testkit::strategies::{append_steps, check_append_steps, stream_pool};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn appends_behave_like_the_model(steps in append_steps(stream_pool(4), 1..40)) {
        let store = MemoryStore::new();
        crossfold_testkit::block_on(check_append_steps(&store, &steps))
            .map_err(TestCaseError::fail)?;
    }
}
