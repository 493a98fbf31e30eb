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
