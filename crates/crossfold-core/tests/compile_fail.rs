//! What must not compile: writing to a stream the command did not declare, and keeping a stream
//! token beyond the execution that handed it out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn type_rules_are_enforced_by_the_compiler() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
