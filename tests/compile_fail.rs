//! What must not compile in the examples: shipping an order of the banking example that is
//! still a draft.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[test]
fn type_rules_are_enforced_by_the_compiler() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
