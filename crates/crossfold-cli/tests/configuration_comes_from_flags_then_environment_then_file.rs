//! Where `crossfold` finds its database and schema: a flag beats the environment, which beats
//! `crossfold.toml`; a missing database or a misspelt file key is a usage error (64) that says
//! what to do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[test]
fn configuration_comes_from_flags_then_environment_then_file() {
    let scratch = Scratch::new();
    assert_status(&scratch.crossfold(&["migrate"]), 0);
    let schema_of = |output: std::process::Output| -> String {
        assert_status(&output, 0);
        json(&output)["schema"].as_str().unwrap().to_owned()
    };

    // The file alone, found in the working directory.
    scratch.file(
        "crossfold.toml",
        &format!(
            "database_url = {:?}\nschema = {:?}\n",
            database_url(),
            scratch.schema
        ),
    );
    let status = scratch
        .command(&["--json", "migrate", "status"])
        .output()
        .unwrap();
    assert_eq!(schema_of(status), scratch.schema);

    // The environment beats the file; a flag beats the environment.
    let status = scratch
        .command(&["--json", "migrate", "status"])
        .env("CROSSFOLD_SCHEMA", "from_env")
        .output()
        .unwrap();
    assert_eq!(schema_of(status), "from_env");
    let status = scratch
        .command(&["--json", "--schema", "from_flag", "migrate", "status"])
        .env("CROSSFOLD_SCHEMA", "from_env")
        .output()
        .unwrap();
    assert_eq!(schema_of(status), "from_flag");

    // A file named with --config must exist; unknown keys are refused.
    let missing = scratch
        .command(&["--config", "nowhere.toml", "health"])
        .output()
        .unwrap();
    assert_status(&missing, 64);
    assert!(
        stderr(&missing).contains("nowhere.toml"),
        "{}",
        stderr(&missing)
    );
    let typo = scratch.file("typo.toml", "databse_url = \"postgres://x\"\n");
    let refused = scratch
        .command(&["--config", path_str(&typo), "health"])
        .output()
        .unwrap();
    assert_status(&refused, 64);
    assert!(
        stderr(&refused).contains("databse_url"),
        "{}",
        stderr(&refused)
    );

    // Nothing anywhere.
    std::fs::remove_file(scratch.dir.join("crossfold.toml")).unwrap();
    let nothing = scratch.command(&["streams"]).output().unwrap();
    assert_status(&nothing, 64);
    assert!(
        stderr(&nothing).contains("pass --database-url, set DATABASE_URL"),
        "{}",
        stderr(&nothing)
    );
    let usage = scratch.command(&["streams", "--bogus"]).output().unwrap();
    assert_status(&usage, 64);
    let help = scratch.command(&["--help"]).output().unwrap();
    assert_status(&help, 0);
    assert!(stdout(&help).contains("Exit status"), "{}", stdout(&help));
}
