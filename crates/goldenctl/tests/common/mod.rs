//! What every goldenctl test file shares: the binary as a user runs it, and its JSON.
#![allow(dead_code)] // each test file uses its own part of this

use assert_cmd::Command;
use serde_json::Value;

/// Runs goldenctl with `args`, expects `code`, and parses what it printed as JSON.
pub fn json_of(args: &[&str], code: i32) -> Value {
    let out = goldenctl()
        .args(args)
        .assert()
        .code(code)
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).expect("goldenctl printed JSON")
}

pub fn goldenctl() -> Command {
    let mut cmd = Command::cargo_bin("goldenctl").expect("the goldenctl binary");
    cmd.env_remove("NO_COLOR");
    cmd
}

/// The emulator's bucket; these tests need `scripts/emulator run` (as `make test` does).
pub fn emulator_bucket() -> String {
    std::env::var("GOLDEN_BUCKET")
        .ok()
        .filter(|_| std::env::var("GOLDEN_EMULATOR").is_ok())
        .expect("run under the emulator: scripts/emulator run -- cargo test -p goldenctl")
}
