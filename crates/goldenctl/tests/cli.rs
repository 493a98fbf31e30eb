//! goldenctl as a user runs it: the real binary (assert_cmd), its exit codes, its table and JSON (insta
//! snapshots). `recipes validate` needs no AWS; the other commands run on the emulator (`make test` runs
//! this file inside `scripts/emulator run`, which exports GOLDEN_BUCKET and AWS_ENDPOINT_URL).

mod common;

use common::{emulator_bucket, goldenctl, json_of};
use predicates::prelude::*;
use serde_json::Value;

const SHIPPED: [&str; 3] = [
    "../../infra/recipes/b-2008.toml",
    "../../infra/recipes/bld-linux64.toml",
    "../../infra/recipes/tst-linux64.toml",
];

#[test]
fn the_shipped_recipes_validate() {
    goldenctl()
        .args(["recipes", "validate"])
        .args(SHIPPED)
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "ok       ../../infra/recipes/bld-linux64.toml (bld-linux64)",
        ));
}

#[test]
fn a_broken_recipe_lists_every_problem_and_exits_1() {
    let out = goldenctl()
        .args(["recipes", "validate", "tests/fixtures/broken.toml"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    insta::assert_snapshot!("validate_broken_table", String::from_utf8_lossy(&out));
    let out = goldenctl()
        .args([
            "--output",
            "json",
            "recipes",
            "validate",
            "tests/fixtures/broken.toml",
        ])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let json: Value = serde_json::from_slice(&out).expect("JSON");
    insta::assert_json_snapshot!("validate_broken_json", json);
}

#[test]
fn a_recipe_must_be_named_for_its_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-its-name.toml");
    std::fs::copy("../../infra/recipes/bld-linux64.toml", &file).expect("copy");
    goldenctl()
        .args(["recipes", "validate"])
        .arg(&file)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "type: type \"bld-linux64\" is not the file's name; rename the file to bld-linux64.toml",
        ));
}

#[test]
fn usage_errors_exit_2_and_help_documents_the_exit_codes() {
    goldenctl().args(["recipes", "validate"]).assert().code(2);
    goldenctl().args(["no-such-command"]).assert().code(2);
    // A malformed version is a usage error too, caught before any AWS call.
    goldenctl()
        .args(["revoke", "bld-linux64", "2026-11-26", "--reason", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("goldenctl manifest TYPE"));
    goldenctl()
        .arg("--help")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("Exit codes: 0 ok; 1 error"));
}

#[test]
fn without_a_bucket_the_error_says_how_to_set_one() {
    goldenctl()
        .env_remove("GOLDEN_BUCKET")
        .env_remove("GOLDEN_STACK")
        .args(["recipes", "list"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "pass --bucket or --stack NAME, or set GOLDEN_BUCKET (the stack's output BucketName)",
        ));
}

#[test]
fn push_uploads_new_and_changed_recipes_and_list_shows_them() {
    let bucket = emulator_bucket();
    let ty = format!("ctl-{}", std::process::id());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(format!("{ty}.toml"));
    let text = std::fs::read_to_string("../../infra/recipes/tst-linux64.toml")
        .expect("recipe")
        .replace("type = \"tst-linux64\"", &format!("type = \"{ty}\""));
    std::fs::write(&file, &text).expect("write");
    let push = |extra: &[&str]| -> Value {
        let out = goldenctl()
            .args(["--output", "json", "recipes", "push"])
            .args(extra)
            .arg(&file)
            .assert()
            .code(0)
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice(&out).expect("JSON")
    };
    // a dry run says new, and uploads nothing
    let report = push(&["--dry-run"]);
    assert_eq!(report["dryRun"], true);
    assert_eq!(report["recipes"][0]["change"], "new");
    assert_eq!(push(&["--dry-run"])["recipes"][0]["change"], "new");
    // then it is pushed, then unchanged, then changed once edited
    assert_eq!(push(&[])["recipes"][0]["change"], "new");
    let report = push(&[]);
    assert_eq!(report["recipes"][0]["change"], "unchanged");
    assert_eq!(report["recipes"][0]["key"], format!("recipes/{ty}.json"));
    assert_eq!(report["bucket"], bucket.as_str());
    std::fs::write(&file, text.replace("keep = ", "keep = 1")).expect("edit");
    assert_eq!(push(&[])["recipes"][0]["change"], "changed");
    // list shows it, valid, with its regions
    let list = json_of(&["--output", "json", "recipes", "list"], 0);
    let mine = list["recipes"]
        .as_array()
        .expect("recipes")
        .iter()
        .find(|r| r["type"] == ty.as_str())
        .expect("the pushed recipe is listed")
        .clone();
    assert_eq!(mine["valid"], true);
    assert_eq!(mine["buildRegion"], "us-east-1");
    goldenctl()
        .args(["recipes", "list"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains(ty.as_str()));
}

#[test]
fn an_invalid_file_pushes_nothing() {
    emulator_bucket();
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir
        .path()
        .join(format!("ctl-good-{}.toml", std::process::id()));
    let text = std::fs::read_to_string("../../infra/recipes/tst-linux64.toml")
        .expect("recipe")
        .replace(
            "type = \"tst-linux64\"",
            &format!("type = \"ctl-good-{}\"", std::process::id()),
        );
    std::fs::write(&good, text).expect("write");
    goldenctl()
        .args(["recipes", "push"])
        .arg(&good)
        .arg("tests/fixtures/broken.toml")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nothing pushed"));
    let list = json_of(&["--output", "json", "recipes", "list"], 0);
    assert!(
        !list
            .to_string()
            .contains(&format!("ctl-good-{}", std::process::id())),
        "the valid file was pushed although another was invalid"
    );
}

#[test]
fn manifest_shows_the_published_manifest_and_names_an_unknown_type() {
    emulator_bucket();
    let manifest = json_of(&["--output", "json", "manifest"], 0);
    assert_eq!(manifest["schema"], 1);
    assert!(manifest["types"].is_object());
    goldenctl()
        .args(["manifest", "no-such-type"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("has no type \"no-such-type\""));
}

/// Launches an instance in `region` with a Name tag; returns its id.
fn run_named(region: &str, name: &str) -> String {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let sdk = golden_core::aws::load_config().await;
        let conf = aws_sdk_ec2::config::Builder::from(&sdk)
            .region(aws_sdk_ec2::config::Region::new(region.to_owned()))
            .build();
        let ec2 = aws_sdk_ec2::Client::from_conf(conf);
        // Any image will do: register one in the region.
        let image = ec2
            .register_image()
            .name(format!("{name}-image"))
            .root_device_name("/dev/xvda")
            .send()
            .await
            .expect("RegisterImage")
            .image_id()
            .expect("id")
            .to_owned();
        let out = ec2
            .run_instances()
            .image_id(image)
            .min_count(1)
            .max_count(1)
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                    .tags(
                        aws_sdk_ec2::types::Tag::builder()
                            .key("Name")
                            .value(name)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("RunInstances");
        out.instances()[0].instance_id().expect("id").to_owned()
    })
}

#[test]
fn status_finds_an_instance_by_name_or_id_in_any_region() {
    emulator_bucket();
    let name = format!("ctl-status-{}", std::process::id());
    // A region none of the deployment's settings names.
    let id = run_named("ap-southeast-2", &name);
    // WHEN it is looked up by name, searching every region of the account
    let report = json_of(&["--output", "json", "status", &name], 0);
    // THEN it is found in its region with its state, IP, image and verdict
    let found = &report["instances"][0];
    assert_eq!(
        report["instances"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert_eq!(found["region"], "ap-southeast-2");
    assert!(
        report["regions"].as_array().is_some_and(|r| r.len() > 3),
        "every region: {report}"
    );
    assert_eq!(found["instanceId"], id.as_str());
    assert_eq!(found["name"], name.as_str());
    assert_eq!(found["state"], "running");
    assert!(found["privateIp"].is_string(), "{found}");
    assert_eq!(found["verdict"], "not golden");
    assert_eq!(found["tags"]["Name"], name.as_str());
    // and by id, the same instance
    let by_id = json_of(&["--output", "json", "status", &id], 0);
    assert_eq!(by_id["instances"][0]["name"], name.as_str());
    goldenctl().args(["status", &id]).assert().code(0).stdout(
        predicate::str::contains(name.as_str()).and(predicate::str::contains("ap-southeast-2")),
    );
}

#[test]
fn status_of_nothing_exits_1_with_a_hint() {
    emulator_bucket();
    goldenctl()
        .args(["status", "no-such-instance-name"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "no instance named \"no-such-instance-name\" (tag Name, exact) or with that id in",
        ));
}
