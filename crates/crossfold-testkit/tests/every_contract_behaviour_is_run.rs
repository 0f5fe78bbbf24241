//! Every behaviour written in the contract suite is one the suite runs: the `pub async fn`s of
//! `src/contract/` are exactly the names in `contract::BEHAVIOURS`, the list the
//! `store_contract_tests!` macro turns into tests. A behaviour written but not listed would
//! otherwise never run against any store, and nothing would say so.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests report failures by panicking"
)]

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crossfold_testkit::contract::BEHAVIOURS;

/// The names of the `pub async fn`s in one source file.
fn public_async_fns(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if (words.next(), words.next(), words.next())
                != (Some("pub"), Some("async"), Some("fn"))
            {
                return None;
            }
            let name: String = words
                .next()?
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            Some(name)
        })
        .collect()
}

#[test]
fn every_contract_behaviour_is_run() {
    // Read the whole directory, not a fixed list of files, so that a new theme file is
    // checked too.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/contract");
    let mut written = BTreeSet::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            for name in public_async_fns(&fs::read_to_string(&path).unwrap()) {
                assert!(
                    written.insert(name.clone()),
                    "{name} is written twice in {}",
                    dir.display()
                );
            }
        }
    }

    let listed: BTreeSet<String> = BEHAVIOURS.iter().map(|n| (*n).to_owned()).collect();
    assert_eq!(
        listed.len(),
        BEHAVIOURS.len(),
        "a behaviour is listed twice"
    );

    let unlisted: Vec<&String> = written.difference(&listed).collect();
    let unwritten: Vec<&String> = listed.difference(&written).collect();
    assert!(
        unlisted.is_empty() && unwritten.is_empty(),
        "the contract suite's list (`__with_behaviours!` in src/contract/mod.rs) is out of date:\n\
         written but not listed, so never run: {unlisted:?}\n\
         listed but not written: {unwritten:?}"
    );
}

#[test]
fn behaviour_names_are_read_from_signatures_only() {
    let source = "\
/// pub async fn in_a_doc_comment() {}
pub async fn plain<S: EventStore>(store: S) {}
    pub async fn indented(store: S) {}
pub async fn split_over_lines<
    S: EventStore + 'static,
>(
pub(crate) async fn crate_only() {}
async fn private() {}
pub fn not_async() {}
";
    assert_eq!(
        public_async_fns(source),
        ["plain", "indented", "split_over_lines"]
    );
}

/// The same for the checkpoint store contract suite (one file).
#[test]
fn every_checkpoint_behaviour_is_run() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/checkpoint_contract.rs");
    let written: Vec<String> = public_async_fns(&fs::read_to_string(&path).unwrap());
    let unique: BTreeSet<&String> = written.iter().collect();
    assert_eq!(unique.len(), written.len(), "a behaviour is written twice");
    let listed: BTreeSet<String> = crossfold_testkit::checkpoint_contract::CHECKPOINT_BEHAVIOURS
        .iter()
        .map(|n| (*n).to_owned())
        .collect();
    let written: BTreeSet<String> = written.into_iter().collect();
    assert_eq!(
        written, listed,
        "the checkpoint suite's list (`__with_checkpoint_behaviours!`) is out of date"
    );
}
