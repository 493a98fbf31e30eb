//! `goldenctl completions SHELL` and `goldenctl man`: generated from the command definition, so every
//! subcommand (check and doctor included) must be in them. No AWS needed.

mod common;

use common::goldenctl;
use predicates::prelude::*;

const SUBCOMMANDS: [&str; 8] = [
    "recipes",
    "manifest",
    "status",
    "check",
    "doctor",
    "completions",
    "man",
    "validate",
];

fn stdout_of(args: &[&str]) -> String {
    let out = goldenctl()
        .args(args)
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).expect("UTF-8")
}

#[test]
fn completions_for_each_shell_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(&["completions", shell]);
        for sub in SUBCOMMANDS {
            assert!(
                script.contains(sub),
                "{shell} completions lack {sub}:\n{script}"
            );
        }
        assert!(
            script.contains("imds-endpoint"),
            "{shell}: check's flags are completed"
        );
    }
    // shell-specific shapes: each is what that shell loads
    assert!(stdout_of(&["completions", "bash"]).contains("complete -F _goldenctl"));
    assert!(stdout_of(&["completions", "zsh"]).starts_with("#compdef goldenctl"));
    assert!(stdout_of(&["completions", "fish"]).contains("complete -c goldenctl"));
}

#[test]
fn completions_for_an_unknown_shell_is_a_usage_error() {
    goldenctl()
        .args(["completions", "tcsh"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("possible values: bash, zsh, fish"));
}

#[test]
fn man_prints_a_roff_page_with_the_exit_codes() {
    let page = stdout_of(&["man"]);
    assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{page}");
    assert!(page.contains(".TH goldenctl 1"), "{page}");
    for sub in ["check", "doctor", "recipes", "status"] {
        assert!(page.contains(sub), "the page lacks {sub}");
    }
    assert!(page.contains("Exit codes: 0 ok; 1 error"), "{page}");
    assert!(page.contains("3 `check`: the AMI is stale"), "{page}");
}

#[test]
fn man_dir_writes_one_page_per_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    goldenctl()
        .args(["man", "--dir"])
        .arg(dir.path())
        .assert()
        .code(0)
        .stdout("");
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read the dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for page in [
        "goldenctl.1",
        "goldenctl-check.1",
        "goldenctl-doctor.1",
        "goldenctl-recipes.1",
        "goldenctl-recipes-push.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} not in {pages:?}");
    }
    let check = std::fs::read_to_string(dir.path().join("goldenctl-check.1")).expect("page");
    assert!(check.contains(".TH goldenctl-check 1"), "{check}");
    assert!(check.contains("imds\\-endpoint"), "{check}");
}
