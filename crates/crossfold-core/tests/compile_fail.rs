//! What must not compile: writing to a stream the command did not declare, and shipping an
//! order that is still a draft.

#[test]
fn type_rules_are_enforced_by_the_compiler() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
