//! Compile-time errors of the macros: one `ui-tests/<mistake>.rs` per mistake, with the expected
//! `.stderr`. Regenerate snapshots with `TRYBUILD=overwrite cargo test --test ui` and review the diff.

#[test]
fn ui() {
    trybuild::TestCases::new().compile_fail("ui-tests/*.rs");
}
