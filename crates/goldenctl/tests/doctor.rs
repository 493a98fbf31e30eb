//! `goldenctl doctor` on the emulator: a healthy deployment (a bucket of the test's own, versioned, with one
//! good recipe on the emulator's seeded network, profile and parameter) passes; a broken one lists every
//! problem with its fix; with --stack, the stack's rules are checked.

mod common;

use common::{bucket, create_stack, goldenctl, json, normalise_table, put, runtime, unique};
use golden_it::Emulator;
use predicates::prelude::*;
use serde_json::Value;

/// A bucket name of the test's own (S3 names: lowercase, digits, hyphens).
fn bucket_name(prefix: &str) -> String {
    unique(prefix)
}

/// The check named `name` in a doctor report.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report}"))
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap_or_default().to_owned(),
                c["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// GIVEN a versioned bucket holding one recipe made of the emulator's seeded resources.
fn healthy(prefix: &str) -> (Emulator, String, String) {
    runtime().block_on(async {
        let emu = Emulator::from_env().await;
        let name = bucket_name(prefix);
        bucket(&emu, &name, true).await;
        let ty = unique("doc");
        let recipe = emu.recipe(&ty, &[]);
        put(
            &emu,
            &name,
            &format!("recipes/{ty}.json"),
            serde_json::to_vec(&recipe).expect("JSON"),
        )
        .await;
        (emu, name, ty)
    })
}

#[test]
fn doctor_passes_a_healthy_deployment() {
    let (emu, bucket, ty) = healthy("doc-ok");
    let out = goldenctl()
        .args(["--output", "json", "--bucket", &bucket, "doctor"])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let report = json(&out);
    assert_eq!(report["problems"], 0, "{report}");
    let recipe = |what: &str| format!("recipe {ty}: {what}");
    assert_eq!(
        statuses(&report),
        vec![
            ("bucket".to_owned(), "ok".to_owned()),
            ("bucket versioning".into(), "ok".into()),
            ("recipes".into(), "ok".into()),
            (format!("recipe {ty}"), "ok".into()),
            (recipe("subnet"), "ok".into()),
            (
                recipe(&format!("security group {}", emu.security_group_id)),
                "ok".into()
            ),
            (recipe("instance profile"), "ok".into()),
            (recipe("base AMI"), "ok".into()),
            ("state machine".into(), "ok".into()),
            ("schedules".into(), "skipped".into()),
        ]
    );
    assert_eq!(
        check(&report, "schedules")["detail"],
        "not checked (pass --stack)"
    );
    assert_eq!(
        check(&report, &recipe("base AMI"))["detail"],
        format!(
            "parameter {} in us-east-1 = {}",
            emu.base_ami_parameter, emu.base_ami
        )
    );
    let table = goldenctl()
        .args(["--bucket", &bucket, "doctor"])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    insta::assert_snapshot!(
        "doctor_healthy_table",
        normalise_table(
            &String::from_utf8_lossy(&table),
            &[
                (&bucket, "BUCKET"),
                (&ty, "TYPE"),
                (&emu.subnet_id, "subnet-SEED"),
                (&emu.security_group_id, "sg-SEED"),
                (&emu.base_ami, "ami-SEED"),
            ]
        )
    );
}

#[test]
fn doctor_lists_every_problem_of_a_broken_deployment_with_its_fix() {
    let (emu, name, ty) = runtime().block_on(async {
        let emu = Emulator::from_env().await;
        let name = bucket_name("doc-bad");
        // GIVEN an unversioned bucket
        bucket(&emu, &name, false).await;
        // AND a recipe whose subnet, one security group, profile and parameter do not exist
        let ty = unique("doc");
        let mut recipe = emu.recipe(&ty, &[]);
        recipe["subnet_id"] = "subnet-0000000000000dead".into();
        recipe["security_group_ids"] =
            serde_json::json!([emu.security_group_id, "sg-0000000000000dead"]);
        recipe["instance_profile"] = "no-such-profile".into();
        recipe["base_ami_parameter"] = "/golden-ami/no-such-parameter".into();
        put(
            &emu,
            &name,
            &format!("recipes/{ty}.json"),
            serde_json::to_vec(&recipe).expect("JSON"),
        )
        .await;
        // AND a recipe that does not validate
        put(
            &emu,
            &name,
            "recipes/broken.json",
            b"{\"type\": \"broken\"}".to_vec(),
        )
        .await;
        (emu, name, ty)
    });
    // AND a state machine that does not exist
    let arn = "arn:aws:states:us-east-1:123456789012:stateMachine:no-such-machine";
    let out = goldenctl()
        .args([
            "--output",
            "json",
            "--bucket",
            &name,
            "--state-machine-arn",
            arn,
            "doctor",
        ])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let report = json(&out);
    let problems: Vec<String> = statuses(&report)
        .into_iter()
        .filter(|(_, s)| s == "problem")
        .map(|(c, _)| c)
        .collect();
    assert_eq!(
        problems,
        vec![
            "bucket versioning".to_owned(),
            "recipe broken".into(),
            format!("recipe {ty}: subnet"),
            format!("recipe {ty}: security group sg-0000000000000dead"),
            format!("recipe {ty}: instance profile"),
            format!("recipe {ty}: base AMI"),
            "state machine".into(),
        ]
    );
    assert_eq!(report["problems"], 7);
    // the good security group is still ok: one problem does not hide the rest
    assert_eq!(
        check(
            &report,
            &format!("recipe {ty}: security group {}", emu.security_group_id)
        )["status"],
        "ok"
    );
    // every problem has its fix
    for c in report["checks"].as_array().expect("checks") {
        if c["status"] == "problem" {
            assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "{c}");
        }
    }
    assert_eq!(
        check(&report, "bucket versioning")["fix"],
        format!("aws s3api put-bucket-versioning --bucket {name} --versioning-configuration Status=Enabled")
    );
    let table = goldenctl()
        .args(["--bucket", &name, "--state-machine-arn", arn, "doctor"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    insta::assert_snapshot!(
        "doctor_broken_table",
        normalise_table(
            &String::from_utf8_lossy(&table),
            &[
                (&name, "BUCKET"),
                (&ty, "TYPE"),
                (&emu.security_group_id, "sg-SEED")
            ]
        )
    );
}

#[test]
fn doctor_without_a_state_machine_says_how_to_give_one() {
    let (_emu, bucket, _ty) = healthy("doc-nosm");
    let out = goldenctl()
        .env_remove("GOLDEN_STATE_MACHINE_ARN")
        .args(["--output", "json", "--bucket", &bucket, "doctor"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let report = json(&out);
    assert_eq!(report["problems"], 1, "{report}");
    let sm = check(&report, "state machine");
    assert_eq!(sm["status"], "problem");
    assert!(
        sm["fix"].as_str().is_some_and(
            |f| f.contains("--state-machine-arn") && f.contains("GOLDEN_STATE_MACHINE_ARN")
        ),
        "{sm}"
    );
}

#[test]
fn doctor_on_a_bucket_that_does_not_exist_skips_the_recipes() {
    let name = bucket_name("doc-none");
    let out = goldenctl()
        .args(["--output", "json", "--bucket", &name, "doctor"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let report = json(&out);
    let b = check(&report, "bucket");
    assert_eq!(b["status"], "problem");
    assert!(
        b["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("s3://{name} cannot be read"))
                && d.contains("NoSuchBucket")),
        "{b}"
    );
    assert_eq!(check(&report, "recipes")["status"], "skipped");
    assert_eq!(check(&report, "state machine")["status"], "ok");
}

#[test]
fn doctor_with_a_stack_checks_its_rules_are_enabled() {
    let (emu, bucket, _ty) = healthy("doc-stack");
    let suffix = unique("r");
    let (on, off) = (format!("on-{suffix}"), format!("off-{suffix}"));
    // GIVEN a stack with one enabled and one disabled rule, whose outputs name the deployment
    let template = serde_json::json!({
        "Resources": {
            "SweepSchedule": {"Type": "AWS::Events::Rule", "Properties": {
                "Name": on, "ScheduleExpression": "rate(1 hour)", "State": "ENABLED"}},
            "BakeSchedule": {"Type": "AWS::Events::Rule", "Properties": {
                "Name": off, "ScheduleExpression": "rate(1 day)", "State": "DISABLED"}}
        },
        "Outputs": {
            "BucketName": {"Value": bucket},
            "StateMachineArn": {"Value": emu.state_machine_arn},
            "Regions": {"Value": "us-east-1"}
        }
    });
    let stack = runtime().block_on(create_stack(&emu, "doc-stack", &template));
    // WHEN doctor runs on the stack alone (no bucket or state machine from the environment)
    let out = goldenctl()
        .env_remove("GOLDEN_BUCKET")
        .env_remove("GOLDEN_STATE_MACHINE_ARN")
        .args(["--output", "json", "--stack", &stack, "doctor"])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let report = json(&out);
    // THEN the disabled rule is the one problem, with the fix
    assert_eq!(report["bucket"], bucket.as_str());
    assert_eq!(report["problems"], 1, "{report}");
    assert_eq!(check(&report, "rule SweepSchedule")["status"], "ok");
    let disabled = check(&report, "rule BakeSchedule");
    assert_eq!(disabled["status"], "problem");
    assert_eq!(disabled["detail"], format!("{off}: DISABLED"));
    assert!(
        disabled["fix"]
            .as_str()
            .is_some_and(|f| f.contains("EnableSchedules=true")),
        "{disabled}"
    );
    assert_eq!(check(&report, "state machine")["status"], "ok");
}

#[test]
fn doctor_with_an_unknown_stack_exits_1_naming_it() {
    let stack = unique("no-such-stack");
    goldenctl()
        .args(["--stack", &stack, "doctor"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains(format!("cannot read stack {stack:?} in us-east-1"))
                .and(predicate::str::contains("aws cloudformation list-stacks")),
        );
}
