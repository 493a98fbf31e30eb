//! `--stack NAME`: the deployment read from a stack's outputs (CloudFormation DescribeStacks), on a stack
//! created in the emulator's moto.

mod common;

use common::{bucket, create_stack, goldenctl, json, publish, runtime, unique};
use golden_core::manifest::VersionStatus;
use golden_it::Emulator;
use predicates::prelude::*;

#[test]
fn the_bucket_comes_from_the_stack_outputs() {
    // GIVEN a bucket of the test's own whose manifest has a type no other bucket has
    let (stack, ty) = runtime().block_on(async {
        let emu = Emulator::from_env().await;
        let name = unique("stack-bucket");
        bucket(&emu, &name, true).await;
        let ty = unique("stk");
        publish(
            &emu,
            &name,
            &ty,
            vec![common::entry(
                "20260101T000000Z",
                &[("us-east-1", "ami-0123456789abcdef0")],
                VersionStatus::Published,
            )],
        )
        .await;
        // AND a stack (one trivial resource) whose outputs name that bucket
        let template = serde_json::json!({
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {
                "BucketName": {"Value": name},
                "StateMachineArn": {"Value": emu.state_machine_arn},
                "Regions": {"Value": "us-east-1,us-west-2"}
            }
        });
        (create_stack(&emu, "golden-stack", &template).await, ty)
    });
    // WHEN the manifest is read with only --stack (no GOLDEN_BUCKET)
    let out = goldenctl()
        .env_remove("GOLDEN_BUCKET")
        .args(["--stack", &stack, "--output", "json", "manifest"])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    // THEN it is that bucket's manifest
    let manifest = json(&out);
    assert_eq!(
        manifest["types"][&ty]["current"], "20260101T000000Z",
        "{manifest}"
    );
    assert_eq!(
        manifest["types"].as_object().map(|t| t.len()),
        Some(1),
        "only the stack's bucket's type: {manifest}"
    );
    // and without --stack or GOLDEN_BUCKET there is no bucket at all
    goldenctl()
        .env_remove("GOLDEN_BUCKET")
        .env_remove("GOLDEN_STACK")
        .args(["manifest"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no bucket"));
}

#[test]
fn an_unknown_stack_exits_1_naming_it() {
    let stack = unique("no-such-stack");
    goldenctl()
        .env_remove("GOLDEN_BUCKET")
        .args(["--stack", &stack, "manifest"])
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains(format!("cannot read stack {stack:?} in us-east-1")).and(
                predicate::str::contains("check the name (aws cloudformation list-stacks)"),
            ),
        );
}

#[test]
fn the_type_tag_and_lifecycle_settings_come_from_the_stack_parameters() {
    // GIVEN a stack deployed with its own type tag and EnforceAction=report, and an instance tagged with
    // that tag on a revoked image of its type
    let (stack, instance) = runtime().block_on(async {
        let emu = Emulator::from_env().await;
        let services = emu.services(&[]).await;
        let tag_key = unique("stk-tag");
        let ty = unique("stk-type");
        let v = golden_it::version(1);
        let (image, _) = emu
            .register_image(
                "us-east-1",
                &format!("golden-{ty}-{v}"),
                &[
                    ("golden-ami:role", "image"),
                    ("golden-ami:type", &ty),
                    ("golden-ami:version", v.as_str()),
                ],
            )
            .await;
        let images = std::collections::BTreeMap::from([("us-east-1".to_owned(), image.clone())]);
        golden_it::publish(&services, &ty, &[(v, images, VersionStatus::Revoked)]).await;
        let instance = emu
            .run_instance("us-east-1", &image, &[(tag_key.as_str(), ty.as_str())])
            .await;
        let template = serde_json::json!({
            "Parameters": {
                "TypeTag": {"Type": "String", "Default": tag_key},
                "EnforceAction": {"Type": "String", "Default": "report"}
            },
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {
                "BucketName": {"Value": emu.bucket},
                "StateMachineArn": {"Value": emu.state_machine_arn},
                "Regions": {"Value": "us-east-1"}
            }
        });
        (
            create_stack(&emu, "golden-settings", &template).await,
            instance,
        )
    });
    // WHEN enforce runs with --yes and only --stack to go on
    let out = goldenctl()
        .env_remove("GOLDEN_BUCKET")
        .env_remove("GOLDEN_TYPE_TAG")
        .env_remove("GOLDEN_ENFORCE_ACTION")
        .env_remove("GOLDEN_REGIONS")
        .env_remove("GOLDEN_STATE_MACHINE_ARN")
        .args(["--stack", &stack, "--output", "json", "enforce", "--yes"])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    // THEN the instance is judged by the stack's type tag, and the stack's action (report) touches nothing
    let report = json(&out);
    assert_eq!(report["action"], "report", "{report}");
    let mine = report["decisions"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["instanceId"] == instance.as_str()))
        .unwrap_or_else(|| panic!("the instance is judged by the stack's TypeTag: {report}"));
    assert_eq!(mine["verdict"]["verdict"], "revoked", "{mine}");
    assert_eq!(report["acted"], serde_json::json!([]), "{report}");
    // AND the state machine comes from the stack too
    goldenctl()
        .env_remove("GOLDEN_BUCKET")
        .env_remove("GOLDEN_STATE_MACHINE_ARN")
        .args(["--stack", &stack, "executions", "--limit", "1"])
        .assert()
        .code(0);
}
