//! Stage behaviour the local emulator cannot show (moto runs no SSM command, never throttles, never fails an
//! image, and has no SSM agent registry), on the real adapters over `aws-smithy-mocks` clients.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::types::{
    Image as Ec2Image, ImageState, Instance as Ec2Instance, InstanceState, InstanceStateName,
    Reservation, StateReason,
};
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::put_object::PutObjectOutput;
use aws_sdk_ssm::operation::describe_instance_information::DescribeInstanceInformationOutput;
use aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput;
use aws_sdk_ssm::operation::list_commands::ListCommandsOutput;
use aws_sdk_ssm::operation::put_parameter::PutParameterOutput;
use aws_sdk_ssm::types::{CommandInvocationStatus, InstanceInformation, PingStatus};
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_types::byte_stream::ByteStream;
use aws_smithy_types::retry::RetryConfig;
use chrono::{TimeZone, Utc};
use golden_core::aws::{AwsEc2, AwsSfn, AwsSsm, S3Store};
use golden_core::bake::command::{self, RunCommandInput};
use golden_core::bake::{
    image, publish, ready, BakeState, BuilderRef, CommandRef, CommandStage, ImageRef, Poll,
    Services,
};
use golden_core::manifest::Manifest;
use golden_core::Config;
use serde_json::{json, Value};

const EXEC: &str = "arn:aws:states:us-east-1:123456789012:execution:bake:unit-1";

fn ec2(rules: &[&Rule]) -> aws_sdk_ec2::Client {
    mock_client!(aws_sdk_ec2, RuleMode::MatchAny, rules, |c| c
        .retry_config(fast_retries()))
}
fn ssm(rules: &[&Rule]) -> aws_sdk_ssm::Client {
    mock_client!(aws_sdk_ssm, RuleMode::MatchAny, rules, |c| c
        .retry_config(fast_retries()))
}
fn s3(rules: &[&Rule]) -> aws_sdk_s3::Client {
    mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules, |c| c
        .retry_config(fast_retries()))
}

/// The SDK's standard retry policy (what the Lambdas run with), with a short backoff for tests.
fn fast_retries() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(1))
}

fn services(
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    s3: aws_sdk_s3::Client,
) -> Services {
    let config = Config::from_lookup(|k| (k == "GOLDEN_BUCKET").then(|| "golden-unit".to_owned()))
        .expect("config");
    let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, &[] as &[&Rule]);
    let mut s = Services::new(
        config,
        Arc::new(AwsEc2::from_client(ec2)),
        Arc::new(AwsSsm::from_client(ssm)),
        Arc::new(S3Store::new(s3, "golden-unit")),
        Arc::new(AwsSfn::from_client(sfn)),
    );
    s.clock = Arc::new(|| {
        Utc.with_ymd_and_hms(2026, 11, 25, 1, 30, 0)
            .single()
            .expect("valid time")
    });
    s
}

fn poll() -> Poll {
    Poll {
        attempts: 0,
        max_attempts: 10,
        deadline: Utc
            .with_ymd_and_hms(2026, 11, 25, 3, 0, 0)
            .single()
            .expect("valid time"),
    }
}

fn command_ref() -> CommandRef {
    CommandRef {
        command_id: "0b5e2a1c-1234-4cde-9f00-0123456789ab".into(),
        instance_id: "i-0b1d2e3f".into(),
        region: "us-east-1".into(),
        stage: CommandStage::Provision,
        status: "Pending".into(),
        done: false,
        await_stop: false,
        // A command sent before logs were kept: it has no link.
        logs: None,
        execution_id: None,
        poll: poll(),
    }
}

fn image_ref() -> ImageRef {
    ImageRef {
        image_id: "ami-0aaa1111".into(),
        name: "golden-bld-linux64-20261125T011500Z".into(),
        region: "us-east-1".into(),
        state: "pending".into(),
        available: false,
        poll_seconds: 1,
        poll: poll(),
    }
}

fn ssm_error(status: u16, code: &str, message: &str) -> aws_smithy_runtime_api::http::Response {
    let body = json!({ "__type": code, "message": message }).to_string();
    aws_smithy_runtime_api::http::Response::new(status.try_into().expect("status"), body.into())
}

fn ec2_error(status: u16, code: &str, message: &str) -> aws_smithy_runtime_api::http::Response {
    let body = format!("<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>r-1</RequestID></Response>");
    aws_smithy_runtime_api::http::Response::new(status.try_into().expect("status"), body.into())
}

fn s3_error(status: u16, code: &str) -> aws_smithy_runtime_api::http::Response {
    let body = format!("<Error><Code>{code}</Code><Message>{code}</Message></Error>");
    aws_smithy_runtime_api::http::Response::new(status.try_into().expect("status"), body.into())
}

fn invocation(status: CommandInvocationStatus, code: i32, stdout: &str, stderr: &str) -> Rule {
    let (stdout, stderr) = (stdout.to_owned(), stderr.to_owned());
    mock!(aws_sdk_ssm::Client::get_command_invocation).then_output(move || {
        GetCommandInvocationOutput::builder()
            .status(status.clone())
            .response_code(code)
            .standard_output_content(stdout.clone())
            .standard_error_content(stderr.clone())
            .build()
    })
}

#[tokio::test]
async fn command_failure_carries_the_tail_of_stderr() {
    // GIVEN puppet failed on the builder after a lot of output
    let noise: String = (0..300)
        .map(|i| format!("Notice: applied resource {i}\n"))
        .collect();
    let stderr = format!("{noise}Error: Could not request certificate: Connection refused - connect(2) for puppet.build.example.com port 8140\n");
    let rule = invocation(CommandInvocationStatus::Failed, 1, "", &stderr);
    let services = services(ec2(&[]), ssm(&[&rule]), s3(&[]));
    // WHEN its status is checked
    let logs = "s3://golden-test/logs/bld-linux64/20261125T011500Z/provision/0b5e2a1c-1234-4cde-9f00-0123456789ab/i-0b1d2e3f/";
    let sent = CommandRef {
        logs: Some(logs.into()),
        ..command_ref()
    };
    let err = command::status(&services, sent)
        .await
        .expect_err("a failed command is an error");
    // THEN the error is CommandFailed, names the command, instance and region, and ends with the real cause
    assert_eq!(err.error_type(), "CommandFailed");
    let msg = err.to_string();
    assert!(
        msg.contains(
            "provision command 0b5e2a1c-1234-4cde-9f00-0123456789ab on i-0b1d2e3f in us-east-1 ended Failed (exit code 1)"
        ),
        "{msg}"
    );
    // and links the whole output
    assert!(
        msg.ends_with(&format!("port 8140\nwhole output: {logs}")),
        "{msg}"
    );
    assert!(
        msg.len() < 2500,
        "only the tail is kept, got {} chars",
        msg.len()
    );
}

#[tokio::test]
async fn command_timeout_without_stderr_reports_stdout_tail() {
    let rule = invocation(
        CommandInvocationStatus::TimedOut,
        -1,
        "Running puppet...\nstill waiting for the puppet server",
        "",
    );
    let services = services(ec2(&[]), ssm(&[&rule]), s3(&[]));
    let err = command::status(&services, command_ref())
        .await
        .expect_err("a timed out command is an error");
    assert_eq!(err.error_type(), "CommandFailed");
    assert!(err.to_string().contains("ended TimedOut"), "{err}");
    assert!(
        err.to_string()
            .ends_with("still waiting for the puppet server"),
        "{err}"
    );
}

#[tokio::test]
async fn command_in_progress_or_not_yet_registered_keeps_waiting() {
    let in_progress = invocation(CommandInvocationStatus::InProgress, -1, "", "");
    let services_a = services(ec2(&[]), ssm(&[&in_progress]), s3(&[]));
    let c = command::status(&services_a, command_ref())
        .await
        .expect("in progress is not an error");
    assert!(!c.done);
    assert_eq!(c.poll.attempts, 1);
    assert_eq!(c.status, "InProgress");

    // Just after SendCommand, GetCommandInvocation answers InvocationDoesNotExist.
    let missing = mock!(aws_sdk_ssm::Client::get_command_invocation)
        .then_http_response(|| ssm_error(400, "InvocationDoesNotExist", "no invocation yet"));
    let services_b = services(ec2(&[]), ssm(&[&missing]), s3(&[]));
    let c = command::status(&services_b, command_ref())
        .await
        .expect("not registered yet is not an error");
    assert!(!c.done);
    assert_eq!(c.poll.attempts, 1);
}

#[tokio::test]
async fn command_success_is_done() {
    let rule = invocation(CommandInvocationStatus::Success, 0, "ok", "");
    let services = services(ec2(&[]), ssm(&[&rule]), s3(&[]));
    let c = command::status(&services, command_ref())
        .await
        .expect("success");
    assert!(c.done);
}

#[tokio::test]
async fn a_passed_test_terminates_only_an_instance_tagged_as_this_executions_tester() {
    // GIVEN a passed test whose command ref names an instance that is no tester (input is not trusted)
    let test = CommandRef {
        stage: CommandStage::Test,
        execution_id: Some(EXEC.into()),
        ..command_ref()
    };
    let success = invocation(CommandInvocationStatus::Success, 0, "ok", "");
    let described = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| instance_output(InstanceStateName::Running));
    // No TerminateInstances rule: a termination would fail as an AWS error, not InvalidInput.
    let svc = services(ec2(&[&described]), ssm(&[&success]), s3(&[]));
    // WHEN its status is checked THEN it refuses, naming the instance, and terminates nothing
    let err = command::status(&svc, test).await.expect_err("not a tester");
    assert_eq!(err.error_type(), "InvalidInput", "{err}");
    assert!(
        err.to_string().contains("i-0b1d2e3f") && err.to_string().contains("refusing"),
        "{err}"
    );
}

#[tokio::test]
async fn windows_sanitize_is_done_only_once_sysprep_has_stopped_the_builder() {
    let sanitize = CommandRef {
        stage: CommandStage::Sanitize,
        await_stop: true,
        ..command_ref()
    };
    let success = invocation(CommandInvocationStatus::Success, 0, "sysprep started", "");
    // GIVEN the command succeeded but sysprep is still running (the builder is up, then stopping)
    for state in [InstanceStateName::Running, InstanceStateName::Stopping] {
        let described = mock!(aws_sdk_ec2::Client::describe_instances)
            .then_output(move || instance_output(state.clone()));
        let svc = services(ec2(&[&described]), ssm(&[&success]), s3(&[]));
        // WHEN its status is checked THEN it keeps waiting
        let c = command::status(&svc, sanitize.clone())
            .await
            .expect("waiting");
        assert!(!c.done);
        assert_eq!(c.status, "Success (sysprep running)");
        assert_eq!(c.poll.attempts, 1);
    }
    // GIVEN the builder has stopped THEN it is done
    let stopped = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| instance_output(InstanceStateName::Stopped));
    let svc = services(ec2(&[&stopped]), ssm(&[&success]), s3(&[]));
    let c = command::status(&svc, sanitize.clone())
        .await
        .expect("stopped");
    assert!(c.done);
    // GIVEN the builder terminated instead THEN the bake fails naming it
    let terminated = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| instance_output(InstanceStateName::Terminated));
    let svc = services(ec2(&[&terminated]), ssm(&[&success]), s3(&[]));
    let err = command::status(&svc, sanitize)
        .await
        .expect_err("terminated");
    assert_eq!(err.error_type(), "BuilderFailed");
    assert!(
        err.to_string().contains("i-0b1d2e3f") && err.to_string().contains("terminated"),
        "{err}"
    );
}

#[tokio::test]
async fn sanitize_waits_for_the_stop_on_windows_only() {
    // run-command sets awaitStop for a Windows Sanitize, and for nothing else
    for (platform, stage, expected) in [
        ("windows", CommandStage::Sanitize, true),
        ("windows", CommandStage::Provision, false),
        ("linux", CommandStage::Sanitize, false),
    ] {
        let listed = mock!(aws_sdk_ssm::Client::list_commands)
            .then_output(|| ListCommandsOutput::builder().build());
        let sent = mock!(aws_sdk_ssm::Client::send_command).then_output(|| {
            aws_sdk_ssm::operation::send_command::SendCommandOutput::builder()
                .command(
                    aws_sdk_ssm::types::Command::builder()
                        .command_id("cmd-9")
                        .build(),
                )
                .build()
        });
        let services = services(ec2(&[]), ssm(&[&listed, &sent]), s3(&[]));
        let mut bake = bake_state();
        bake.recipe.platform = serde_json::from_value(json!(platform)).expect("platform");
        let c = command::run(&services, RunCommandInput { stage, bake })
            .await
            .expect("sent");
        assert_eq!(c.await_stop, expected, "{platform} {stage:?}");
    }
}

fn image_output(state: ImageState, reason: Option<&str>) -> DescribeImagesOutput {
    let mut image = Ec2Image::builder()
        .image_id("ami-0aaa1111")
        .name("golden-bld-linux64-20261125T011500Z")
        .state(state);
    if let Some(reason) = reason {
        image = image.state_reason(
            StateReason::builder()
                .code("Client.InternalError")
                .message(reason)
                .build(),
        );
    }
    DescribeImagesOutput::builder()
        .images(image.build())
        .build()
}

#[tokio::test]
async fn throttled_describe_is_retried_by_the_sdk_then_succeeds() {
    // GIVEN EC2 throttles the first DescribeImages
    let rule = mock!(aws_sdk_ec2::Client::describe_images)
        .sequence()
        .http_response(|| ec2_error(503, "RequestLimitExceeded", "Request limit exceeded."))
        .output(|| image_output(ImageState::Available, None))
        .build();
    let services = services(ec2(&[&rule]), ssm(&[]), s3(&[]));
    // WHEN the image status is checked
    let image = image::status(&services, image_ref())
        .await
        .expect("the retry succeeds");
    // THEN the SDK retried once and the stage saw the answer
    assert!(image.available);
    assert_eq!(rule.num_calls(), 2);
}

#[tokio::test]
async fn throttling_that_outlasts_sdk_retries_is_reported_as_throttled_for_the_asl_to_retry() {
    let rule = mock!(aws_sdk_ec2::Client::describe_images)
        .sequence()
        .http_response(|| ec2_error(503, "RequestLimitExceeded", "Request limit exceeded."))
        .times(5)
        .build();
    let services = services(ec2(&[&rule]), ssm(&[]), s3(&[]));
    let err = image::status(&services, image_ref())
        .await
        .expect_err("still throttled");
    assert_eq!(err.error_type(), "Throttled");
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .contains("DescribeImages on ami-0aaa1111 in us-east-1"),
        "{err}"
    );
}

#[tokio::test]
async fn image_that_goes_failed_is_image_failed_with_its_reason() {
    let rule = mock!(aws_sdk_ec2::Client::describe_images)
        .then_output(|| image_output(ImageState::Failed, Some("snapshot creation failed")));
    let services = services(ec2(&[&rule]), ssm(&[]), s3(&[]));
    let err = image::status(&services, image_ref())
        .await
        .expect_err("a failed image is an error");
    assert_eq!(err.error_type(), "ImageFailed");
    assert_eq!(
        err.to_string(),
        "image ami-0aaa1111 in us-east-1 went failed: snapshot creation failed"
    );
}

fn instance_output(state: InstanceStateName) -> DescribeInstancesOutput {
    let instance = Ec2Instance::builder()
        .instance_id("i-0b1d2e3f")
        .image_id("ami-0base")
        .state(InstanceState::builder().name(state).build())
        .build();
    DescribeInstancesOutput::builder()
        .reservations(Reservation::builder().instances(instance).build())
        .build()
}

fn builder_ref() -> BuilderRef {
    BuilderRef {
        instance_id: "i-0b1d2e3f".into(),
        region: "us-east-1".into(),
        ready: false,
        state: "pending".into(),
        poll: poll(),
    }
}

fn agent(ping: PingStatus) -> Rule {
    mock!(aws_sdk_ssm::Client::describe_instance_information).then_output(move || {
        DescribeInstanceInformationOutput::builder()
            .instance_information_list(
                InstanceInformation::builder()
                    .instance_id("i-0b1d2e3f")
                    .ping_status(ping.clone())
                    .build(),
            )
            .build()
    })
}

#[tokio::test]
async fn builder_is_ready_only_when_running_with_its_agent_online() {
    let running = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| instance_output(InstanceStateName::Running));
    let online = agent(PingStatus::Online);
    let b = ready::handle(
        &services(ec2(&[&running]), ssm(&[&online]), s3(&[])),
        builder_ref(),
    )
    .await
    .expect("ready");
    assert!(b.ready);
    assert_eq!(b.state, "running");

    let lost = agent(PingStatus::ConnectionLost);
    let b = ready::handle(
        &services(ec2(&[&running]), ssm(&[&lost]), s3(&[])),
        builder_ref(),
    )
    .await
    .expect("not ready yet");
    assert!(!b.ready);
    assert_eq!(b.poll.attempts, 1);

    let unregistered = mock!(aws_sdk_ssm::Client::describe_instance_information)
        .then_output(|| DescribeInstanceInformationOutput::builder().build());
    let b = ready::handle(
        &services(ec2(&[&running]), ssm(&[&unregistered]), s3(&[])),
        builder_ref(),
    )
    .await
    .expect("not ready yet");
    assert!(!b.ready);
}

#[tokio::test]
async fn builder_that_terminates_while_booting_fails_the_bake() {
    let gone = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| instance_output(InstanceStateName::Terminated));
    let err = ready::handle(&services(ec2(&[&gone]), ssm(&[]), s3(&[])), builder_ref())
        .await
        .expect_err("terminated builder");
    assert_eq!(err.error_type(), "BuilderFailed");
    assert!(
        err.to_string()
            .starts_with("builder i-0b1d2e3f in us-east-1 is terminated"),
        "{err}"
    );
}

fn bake_state() -> BakeState {
    serde_json::from_value(json!({
        "type": "bld-linux64",
        "executionId": EXEC,
        "version": "20261125T011500Z",
        "pollSeconds": 1,
        "deadline": "2026-11-25T03:15:00Z",
        "sourceAmi": "ami-0123456789abcdef0",
        "recipe": {
            "type": "bld-linux64", "platform": "linux", "base_ami": "ami-0123456789abcdef0",
            "instance_type": "c5.2xlarge", "build_region": "us-east-1", "subnet_id": "subnet-0abc",
            "copy_to_regions": ["us-west-2"],
            "provision": { "commands": ["puppet agent --test"], "env": { "PUPPET_SERVER": "puppet.example.com" } }
        },
        "builder": { "instanceId": "i-0b1d2e3f", "region": "us-east-1", "ready": true, "state": "running",
                     "attempts": 1, "maxAttempts": 10, "deadline": "2026-11-25T03:15:00Z" },
        "image": { "imageId": "ami-0aaa1111", "name": "golden-bld-linux64-20261125T011500Z", "region": "us-east-1",
                   "state": "available", "available": true, "pollSeconds": 1,
                   "attempts": 1, "maxAttempts": 10, "deadline": "2026-11-25T03:15:00Z" },
        "copies": [ { "imageId": "ami-0bbb2222", "name": "golden-bld-linux64-20261125T011500Z", "region": "us-west-2",
                      "state": "available", "available": true, "pollSeconds": 1,
                      "attempts": 1, "maxAttempts": 10, "deadline": "2026-11-25T03:15:00Z" } ]
    }))
    .expect("a valid bake state")
}

#[tokio::test]
async fn run_command_retried_finds_the_command_already_sent() {
    // GIVEN this execution's provision command was already sent (a Step Functions retry after a timeout)
    let comment = "golden-ami provision ".to_owned();
    let listed = mock!(aws_sdk_ssm::Client::list_commands).then_compute_output(move |_| {
        ListCommandsOutput::builder()
            .commands(
                aws_sdk_ssm::types::Command::builder()
                    .command_id("cmd-first")
                    .comment(format!("{comment}{}", hash_of_exec()))
                    .build(),
            )
            .build()
    });
    let send = mock!(aws_sdk_ssm::Client::send_command)
        .then_output(|| aws_sdk_ssm::operation::send_command::SendCommandOutput::builder().build());
    let services = services(ec2(&[]), ssm(&[&listed, &send]), s3(&[]));
    // WHEN run-command runs again
    let c = command::run(
        &services,
        RunCommandInput {
            stage: CommandStage::Provision,
            bake: bake_state(),
        },
    )
    .await
    .expect("reuses");
    // THEN it reuses the command and sends nothing
    assert_eq!(c.command_id, "cmd-first");
    assert_eq!(send.num_calls(), 0);
}

#[tokio::test]
async fn each_copy_is_encrypted_with_its_own_regions_key() {
    const WEST: &str =
        "arn:aws:kms:us-west-2:111122223333:key/5678abcd-12ab-34cd-56ef-1234567890ab";
    // GIVEN a recipe with a regional key for the build region and another for the copy region
    let mut bake = serde_json::to_value(bake_state()).expect("json");
    bake["recipe"]["kms_key_id"] =
        json!("arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab");
    bake["recipe"]["kms_key_ids"] = json!({ "us-west-2": WEST });
    let item: golden_core::bake::copy::CopyItem = serde_json::from_value(json!({
        "region": "us-west-2", "source": bake["image"], "type": "bld-linux64",
        "version": "20261125T011500Z", "executionId": EXEC, "pollSeconds": 1,
        "deadline": "2026-11-25T03:15:00Z", "recipe": bake["recipe"],
    }))
    .expect("copy item");
    let none = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| r.filters().iter().any(|f| f.name() == Some("name")))
        .then_output(|| DescribeImagesOutput::builder().build());
    let source = mock!(aws_sdk_ec2::Client::describe_images)
        .then_output(|| image_output(ImageState::Available, None));
    // WHEN the copy to us-west-2 starts THEN CopyImage asks for us-west-2's key, encrypted
    let copied = mock!(aws_sdk_ec2::Client::copy_image)
        .match_requests(|r| r.kms_key_id() == Some(WEST) && r.encrypted() == Some(true))
        .then_output(|| {
            aws_sdk_ec2::operation::copy_image::CopyImageOutput::builder()
                .image_id("ami-0west")
                .build()
        });
    let services = services(ec2(&[&none, &source, &copied]), ssm(&[]), s3(&[]));
    let image = golden_core::bake::copy::handle(&services, item)
        .await
        .expect("copy requested");
    assert_eq!(image.image_id, "ami-0west");
    assert_eq!(copied.num_calls(), 1);
}

fn hash_of_exec() -> String {
    golden_core::bake::client_token(EXEC, "command")[7..39].to_owned()
}

fn manifest_with(version: &str, image: &str) -> Vec<u8> {
    json!({
        "schema": 1, "generation": 3, "updatedAt": "2026-11-24T01:40:00Z",
        "types": { "tst-linux64": { "current": version, "versions": [ {
            "version": version, "createdAt": "2026-11-24T01:15:00Z", "sourceAmi": "ami-0123456789abcdef0",
            "execution": "arn:aws:states:us-east-1:123456789012:execution:bake:other",
            "images": { "us-east-1": image }, "status": "published" } ] } }
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn publish_that_loses_a_race_rereads_and_keeps_both_updates() {
    // GIVEN the manifest changes between our read and our write (another type was published meanwhile)
    let first = manifest_with("20261124T011500Z", "ami-01111111");
    let second = manifest_with("20261125T001500Z", "ami-02222222");
    let get = mock!(aws_sdk_s3::Client::get_object)
        .sequence()
        .output(move || {
            GetObjectOutput::builder()
                .e_tag("\"e1\"")
                .body(ByteStream::from(first.clone()))
                .build()
        })
        .output(move || {
            GetObjectOutput::builder()
                .e_tag("\"e2\"")
                .body(ByteStream::from(second.clone()))
                .build()
        })
        .build();
    // the parameters' re-read finds what we wrote
    let written = Arc::new(std::sync::Mutex::new(Vec::new()));
    let reread_body = written.clone();
    let reread = mock!(aws_sdk_s3::Client::get_object).then_compute_output(move |_| {
        GetObjectOutput::builder()
            .e_tag("\"e3\"")
            .body(ByteStream::from(reread_body.lock().expect("lock").clone()))
            .build()
    });
    let stale_put = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|r| r.if_match() == Some("\"e1\""))
        .then_http_response(|| s3_error(412, "PreconditionFailed"));
    let sink = written.clone();
    let good_put = mock!(aws_sdk_s3::Client::put_object)
        .match_requests(|r| r.if_match() == Some("\"e2\""))
        .then_compute_output(move |r| {
            let bytes = r.body().bytes().map(<[u8]>::to_vec).unwrap_or_default();
            *sink.lock().expect("lock") = bytes;
            PutObjectOutput::builder().e_tag("\"e3\"").build()
        });
    let put_parameter = mock!(aws_sdk_ssm::Client::put_parameter)
        .then_output(|| PutParameterOutput::builder().version(1).build());
    let services = services(
        ec2(&[]),
        ssm(&[&put_parameter]),
        s3(&[&get, &reread, &stale_put, &good_put]),
    );
    // WHEN publish runs
    let published = publish::handle(&services, bake_state())
        .await
        .expect("publish succeeds after one lost race");
    // THEN the second write was conditional on the re-read ETag and kept the other writer's update
    assert_eq!(stale_put.num_calls(), 1);
    assert_eq!(good_put.num_calls(), 1);
    let manifest =
        Manifest::parse(&written.lock().expect("lock")).expect("a valid manifest was written");
    assert_eq!(manifest.generation, 4);
    assert_eq!(
        manifest.current("tst-linux64").map(|v| v.version.as_str()),
        Some("20261125T001500Z")
    );
    let ours = manifest
        .current("bld-linux64")
        .expect("our type is published");
    assert_eq!(
        ours.images.get("us-west-2").map(String::as_str),
        Some("ami-0bbb2222")
    );
    assert_eq!(published.generation, 4);
    // and both regions' SSM parameters point at the new image
    assert_eq!(put_parameter.num_calls(), 2);
}

#[tokio::test]
async fn parameters_written_from_a_superseded_manifest_are_rewritten_from_the_latest() {
    // GIVEN our copy of the manifest (generation 3, current on ami-01111111), superseded by a revoke that
    // rolled current back to ami-02222222 (generation 4) while we were about to write the parameters
    let ours = Manifest::parse(&manifest_with("20261125T011500Z", "ami-01111111")).expect("ours");
    let mut latest: Value =
        serde_json::from_slice(&manifest_with("20261124T011500Z", "ami-02222222")).expect("json");
    latest["generation"] = json!(4);
    let latest = latest.to_string().into_bytes();
    let get = mock!(aws_sdk_s3::Client::get_object).then_output(move || {
        GetObjectOutput::builder()
            .e_tag("\"e4\"")
            .body(ByteStream::from(latest.clone()))
            .build()
    });
    let values = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = values.clone();
    let put = mock!(aws_sdk_ssm::Client::put_parameter).then_compute_output(move |r| {
        sink.lock()
            .expect("lock")
            .push(r.value().unwrap_or_default().to_owned());
        PutParameterOutput::builder().version(1).build()
    });
    let services = services(ec2(&[]), ssm(&[&put]), s3(&[&get]));
    // WHEN the parameters are synced from our copy
    let written = golden_core::publishing::sync_parameters(
        services.ssm.as_ref(),
        services.store.as_ref(),
        services.now(),
        &ours,
        "tst-linux64",
    )
    .await
    .expect("synced");
    // THEN the stale image was written, noticed, and overwritten by the latest manifest's
    assert_eq!(
        *values.lock().expect("lock"),
        vec!["ami-01111111".to_owned(), "ami-02222222".to_owned()]
    );
    assert_eq!(
        written,
        vec!["us-east-1:/golden-ami/tst-linux64/current=ami-02222222"]
    );
    assert_eq!(get.num_calls(), 2, "re-read until the generation held");
}

#[tokio::test]
async fn publish_over_a_corrupt_manifest_fails_and_writes_nothing() {
    let get = mock!(aws_sdk_s3::Client::get_object).then_output(|| {
        GetObjectOutput::builder()
            .e_tag("\"e1\"")
            .body(ByteStream::from_static(b"{\"schema\": 1, \"types\": ["))
            .build()
    });
    let put =
        mock!(aws_sdk_s3::Client::put_object).then_output(|| PutObjectOutput::builder().build());
    let put_parameter = mock!(aws_sdk_ssm::Client::put_parameter)
        .then_output(|| PutParameterOutput::builder().build());
    let services = services(ec2(&[]), ssm(&[&put_parameter]), s3(&[&get, &put]));
    let err = publish::handle(&services, bake_state())
        .await
        .expect_err("corrupt manifest");
    assert_eq!(err.error_type(), "ManifestCorrupt");
    assert!(
        err.to_string().contains("s3://golden-unit/manifest.json"),
        "{err}"
    );
    assert_eq!(put.num_calls(), 0);
    assert_eq!(put_parameter.num_calls(), 0);
}

#[tokio::test]
async fn cleanup_never_touches_a_builder_or_image_of_another_execution_named_in_its_state() {
    use aws_sdk_ec2::operation::deregister_image::DeregisterImageOutput;
    use aws_sdk_ec2::operation::terminate_instances::TerminateInstancesOutput;
    use aws_sdk_ec2::types::Tag;
    use golden_core::bake::cleanup::{self, TerminateInput};
    // GIVEN a failed bake whose state (input, so untrusted) names another execution's builder and image
    let other = "arn:aws:states:us-east-1:123456789012:execution:bake:someone-else";
    let by_tag = mock!(aws_sdk_ec2::Client::describe_instances)
        .match_requests(|r| r.instance_ids().is_empty())
        .then_output(|| DescribeInstancesOutput::builder().build());
    let by_id = mock!(aws_sdk_ec2::Client::describe_instances)
        .match_requests(|r| !r.instance_ids().is_empty())
        .then_output(move || {
            let instance = Ec2Instance::builder()
                .instance_id("i-0other")
                .state(
                    InstanceState::builder()
                        .name(InstanceStateName::Running)
                        .build(),
                )
                .tags(
                    Tag::builder()
                        .key("golden-ami:execution")
                        .value(other)
                        .build(),
                )
                .build();
            DescribeInstancesOutput::builder()
                .reservations(Reservation::builder().instances(instance).build())
                .build()
        });
    let images_by_tag = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| r.image_ids().is_empty())
        .then_output(|| DescribeImagesOutput::builder().build());
    let image_by_id = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| !r.image_ids().is_empty())
        .then_output(move || {
            let image = Ec2Image::builder()
                .image_id("ami-0other1111")
                .name("golden-bld-linux64-20261124T000000Z")
                .state(ImageState::Pending)
                .tags(
                    Tag::builder()
                        .key("golden-ami:execution")
                        .value(other)
                        .build(),
                )
                .build();
            DescribeImagesOutput::builder().images(image).build()
        });
    let terminate = mock!(aws_sdk_ec2::Client::terminate_instances)
        .then_output(|| TerminateInstancesOutput::builder().build());
    let deregister = mock!(aws_sdk_ec2::Client::deregister_image)
        .then_output(|| DeregisterImageOutput::builder().build());
    let missing =
        mock!(aws_sdk_s3::Client::get_object).then_http_response(|| s3_error(404, "NoSuchKey"));
    let services = services(
        ec2(&[
            &by_tag,
            &by_id,
            &images_by_tag,
            &image_by_id,
            &terminate,
            &deregister,
        ]),
        ssm(&[]),
        s3(&[&missing]),
    );
    let mut state = serde_json::to_value(bake_state()).expect("state");
    state["builder"]["instanceId"] = json!("i-0other");
    state["image"]["imageId"] = json!("ami-0other1111");
    state["copies"] = json!([]);
    state["error"] = json!({ "Error": "CommandFailed", "Cause": "{\"errorType\":\"CommandFailed\",\"errorMessage\":\"boom\"}" });
    let input: TerminateInput =
        serde_json::from_value(json!({ "outcome": "failed", "executionId": EXEC, "state": state }))
            .expect("input");
    // WHEN the cleanup runs
    let report = cleanup::handle(&services, input).await.expect("cleanup");
    // THEN it terminates and deregisters nothing, and still reports the bake's own failure
    assert_eq!(terminate.num_calls(), 0);
    assert_eq!(deregister.num_calls(), 0);
    assert!(
        report.terminated.is_empty() && report.deregistered.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.error.as_deref(), Some("CommandFailed"));
    assert!(
        report
            .cause
            .as_deref()
            .is_some_and(|c| c.starts_with("boom")),
        "{:?}",
        report.cause
    );
}

#[tokio::test]
async fn a_just_created_image_briefly_invisible_is_waited_for_then_reported_gone() {
    // GIVEN DescribeImages does not know the image (EC2 is eventually consistent just after CreateImage)
    let unseen = mock!(aws_sdk_ec2::Client::describe_images).then_http_response(|| {
        ec2_error(
            400,
            "InvalidAMIID.NotFound",
            "The image id '[ami-0aaa1111]' does not exist",
        )
    });
    let services = services(ec2(&[&unseen]), ssm(&[]), s3(&[]));
    // WHEN checked a few times THEN it keeps waiting at first
    let mut image = image_ref();
    for attempt in 1..=3 {
        image = image::status(&services, image)
            .await
            .expect("still waiting");
        assert_eq!(image.poll.attempts, attempt);
        assert!(!image.available);
    }
    // AND then calls it gone
    let err = image::status(&services, image).await.expect_err("gone");
    assert_eq!(err.error_type(), "ImageFailed");
    assert!(err.to_string().contains("no longer exists"), "{err}");
}

#[tokio::test]
async fn a_missing_bucket_is_an_error_not_an_empty_manifest() {
    let no_bucket =
        mock!(aws_sdk_s3::Client::get_object).then_http_response(|| s3_error(404, "NoSuchBucket"));
    let put =
        mock!(aws_sdk_s3::Client::put_object).then_output(|| PutObjectOutput::builder().build());
    let services = services(ec2(&[]), ssm(&[]), s3(&[&no_bucket, &put]));
    let err = publish::handle(&services, bake_state())
        .await
        .expect_err("no bucket");
    assert_eq!(err.error_type(), "AwsError");
    assert!(err.to_string().contains("NoSuchBucket"), "{err}");
    assert_eq!(
        put.num_calls(),
        0,
        "nothing is written to a bucket that is not there"
    );
}

#[tokio::test]
async fn a_deployed_stack_refuses_to_poll_faster_than_every_15_seconds_and_calls_nothing() {
    // No mock rules: any AWS call would fail the launch with another error than the floor's.
    let services = services(ec2(&[]), ssm(&[]), s3(&[]));
    let launch = |poll: u32| -> golden_core::bake::launch::LaunchRequest {
        serde_json::from_value(json!({
            "input": { "type": "bld-linux64", "pollSeconds": poll },
            "executionId": EXEC,
        }))
        .expect("input")
    };
    for poll in [1, 14] {
        let err = golden_core::bake::launch::handle(&services, launch(poll))
            .await
            .expect_err("below the floor");
        assert_eq!(err.error_type(), "InvalidInput", "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pollSeconds {poll} is out of range 15..=3600")),
            "{msg}"
        );
        assert!(msg.contains("GOLDEN_MIN_POLL_SECONDS"), "{msg}");
    }
}

fn lock_of(execution: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": "bld-linux64", "executionId": execution, "version": "20261125T011500Z",
        "acquiredAt": "2026-11-25T01:15:00Z", "deadline": "2026-11-25T03:15:00Z"
    }))
    .expect("json")
}

#[tokio::test]
async fn releasing_the_lock_deletes_only_the_copy_it_read() {
    // GIVEN our lock, read with ETag "ours"
    let ours = lock_of(EXEC);
    let get = mock!(aws_sdk_s3::Client::get_object).then_output(move || {
        GetObjectOutput::builder()
            .e_tag("\"ours\"")
            .body(ByteStream::from(ours.clone()))
            .build()
    });
    // WHEN a new holder replaced it between our read and our delete: S3 refuses a delete that is
    // conditional on what we read (412); an unconditional one matches no rule and fails the test.
    let conditional = mock!(aws_sdk_s3::Client::delete_object)
        .match_requests(|r| r.if_match() == Some("\"ours\""))
        .then_http_response(|| s3_error(412, "PreconditionFailed"));
    let services = services(ec2(&[]), ssm(&[]), s3(&[&get, &conditional]));
    let released = golden_core::bake::lock::release(services.store.as_ref(), "bld-linux64", EXEC)
        .await
        .expect("a lost race is not an error");
    // THEN nothing of the new holder's was deleted, and we say we did not release
    assert!(!released);
    assert_eq!(conditional.num_calls(), 1);
}

#[tokio::test]
async fn prune_carries_on_past_an_image_it_cannot_deregister_and_keeps_that_images_snapshot() {
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, Tag};
    // GIVEN twelve old images of a type (the default keep is 10, so the two oldest go), the oldest of
    // which EC2 refuses to deregister
    let image = |n: u32| {
        let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
        Ec2Image::builder()
            .image_id(format!("ami-{n:016x}"))
            .name(format!("golden-t1-202501{n:02}T000000Z"))
            .state(ImageState::Available)
            .creation_date(format!("2025-01-{n:02}T00:00:00.000Z"))
            .tags(tag("golden-ami:role", "image"))
            .tags(tag("golden-ami:type", "t1"))
            .tags(tag("golden-ami:version", &format!("202501{n:02}T000000Z")))
            // Two volumes, so two snapshots (moto snapshots only the root volume: this is why this test
            // uses mocks)
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(
                        EbsBlockDevice::builder()
                            .snapshot_id(format!("snap-{n:016x}"))
                            .build(),
                    )
                    .build(),
            )
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvdb")
                    .ebs(
                        EbsBlockDevice::builder()
                            .snapshot_id(format!("snap-b{n:015x}"))
                            .build(),
                    )
                    .build(),
            )
            .build()
    };
    let images = mock!(aws_sdk_ec2::Client::describe_images).then_output(move || {
        DescribeImagesOutput::builder()
            .set_images(Some((1..=12).map(image).collect()))
            .build()
    });
    let no_instances = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| DescribeInstancesOutput::builder().build());
    let no_templates = mock!(aws_sdk_ec2::Client::describe_launch_templates).then_output(|| {
        aws_sdk_ec2::operation::describe_launch_templates::DescribeLaunchTemplatesOutput::builder()
            .build()
    });
    let no_snapshots = mock!(aws_sdk_ec2::Client::describe_snapshots).then_output(|| {
        aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput::builder().build()
    });
    let refused = mock!(aws_sdk_ec2::Client::deregister_image)
        .match_requests(|r| r.image_id() == Some("ami-0000000000000001"))
        .then_http_response(|| {
            ec2_error(403, "UnauthorizedOperation", "not authorized to deregister")
        });
    let deregistered = mock!(aws_sdk_ec2::Client::deregister_image).then_output(|| {
        aws_sdk_ec2::operation::deregister_image::DeregisterImageOutput::builder().build()
    });
    let deleted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = deleted.clone();
    let delete_snapshot =
        mock!(aws_sdk_ec2::Client::delete_snapshot).then_compute_output(move |r| {
            sink.lock()
                .expect("lock")
                .push(r.snapshot_id().unwrap_or_default().to_owned());
            aws_sdk_ec2::operation::delete_snapshot::DeleteSnapshotOutput::builder().build()
        });
    let no_parameters = mock!(aws_sdk_ssm::Client::get_parameters_by_path).then_output(|| {
        aws_sdk_ssm::operation::get_parameters_by_path::GetParametersByPathOutput::builder().build()
    });
    let nothing_in_s3 =
        mock!(aws_sdk_s3::Client::get_object).then_http_response(|| s3_error(404, "NoSuchKey"));
    let no_recipes = mock!(aws_sdk_s3::Client::list_objects_v2).then_output(|| {
        aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output::builder().build()
    });
    let mut services = services(
        ec2(&[
            &images,
            &no_instances,
            &no_templates,
            &no_snapshots,
            &refused,
            &deregistered,
            &delete_snapshot,
        ]),
        ssm(&[&no_parameters]),
        s3(&[&nothing_in_s3, &no_recipes]),
    );
    services.config = Arc::new(
        Config::from_lookup(|k| match k {
            "GOLDEN_BUCKET" => Some("golden-unit".to_owned()),
            "GOLDEN_REGIONS" => Some("us-east-1".to_owned()),
            _ => None,
        })
        .expect("config"),
    );
    // WHEN a scheduled prune runs
    let err =
        golden_core::lifecycle::prune::handle(&services, golden_core::lifecycle::Trigger::Schedule)
            .await
            .expect_err("one image could not be deregistered");
    // THEN the second oldest image and both its snapshots are deleted all the same, the refused image
    // keeps both of its snapshots, and the run fails naming it
    assert_eq!(refused.num_calls(), 1);
    assert_eq!(deregistered.num_calls(), 1);
    let mut deleted = deleted.lock().expect("lock").clone();
    deleted.sort();
    assert_eq!(
        deleted,
        vec![
            "snap-0000000000000002".to_owned(),
            "snap-b000000000000002".to_owned()
        ]
    );
    assert_eq!(err.error_type(), "ItemsFailed");
    let text = err.to_string();
    assert!(
        text.starts_with("prune: 1 of the run's items failed, the rest were done: deregister ami-0000000000000001 (us-east-1): ")
            && text.contains("UnauthorizedOperation"),
        "{text}"
    );
}

#[tokio::test]
async fn failed_bake_cleanup_frees_the_lock_first_and_carries_on_past_what_it_cannot_do() {
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, Tag};
    use aws_sdk_s3::operation::delete_object::DeleteObjectOutput;
    use golden_core::bake::cleanup::{self, TerminateInput};
    let calls = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let ours = || {
        Tag::builder()
            .key("golden-ami:execution")
            .value(EXEC)
            .build()
    };
    // GIVEN a failed bake holding the lock, whose builder EC2 refuses to terminate and whose image it
    // refuses to deregister
    let lock = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|r| r.key() == Some("locks/bld-linux64.json"))
        .then_output(|| {
            GetObjectOutput::builder()
                .e_tag("\"l1\"")
                .body(ByteStream::from(lock_of(EXEC)))
                .build()
        });
    let no_manifest =
        mock!(aws_sdk_s3::Client::get_object).then_http_response(|| s3_error(404, "NoSuchKey"));
    let log = calls.clone();
    let release = mock!(aws_sdk_s3::Client::delete_object)
        .match_requests(|r| r.if_match() == Some("\"l1\""))
        .then_compute_output(move |_| {
            log.lock().expect("lock").push("release lock".into());
            DeleteObjectOutput::builder().build()
        });
    let builder = mock!(aws_sdk_ec2::Client::describe_instances).then_output(move || {
        let instance = Ec2Instance::builder()
            .instance_id("i-0b1d2e3f")
            .state(
                InstanceState::builder()
                    .name(InstanceStateName::Running)
                    .build(),
            )
            .tags(ours())
            .tags(
                Tag::builder()
                    .key("golden-ami:role")
                    .value("builder")
                    .build(),
            )
            .build();
        DescribeInstancesOutput::builder()
            .reservations(Reservation::builder().instances(instance).build())
            .build()
    });
    let log = calls.clone();
    let terminate =
        mock!(aws_sdk_ec2::Client::terminate_instances).then_compute_response(move |_| {
            log.lock().expect("lock").push("terminate".into());
            aws_smithy_mocks::MockResponse::Http(ec2_error(
                403,
                "UnauthorizedOperation",
                "not authorized to terminate",
            ))
        });
    let image = mock!(aws_sdk_ec2::Client::describe_images).then_output(move || {
        let image = Ec2Image::builder()
            .image_id("ami-0aaa1111")
            .name("golden-bld-linux64-20261125T011500Z")
            .state(ImageState::Available)
            .tags(ours())
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(EbsBlockDevice::builder().snapshot_id("snap-0aaa").build())
                    .build(),
            )
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvdb")
                    .ebs(EbsBlockDevice::builder().snapshot_id("snap-0bbb").build())
                    .build(),
            )
            .build();
        DescribeImagesOutput::builder().images(image).build()
    });
    let deregister = mock!(aws_sdk_ec2::Client::deregister_image).then_http_response(|| {
        ec2_error(403, "UnauthorizedOperation", "not authorized to deregister")
    });
    let delete_snapshot = mock!(aws_sdk_ec2::Client::delete_snapshot).then_output(|| {
        aws_sdk_ec2::operation::delete_snapshot::DeleteSnapshotOutput::builder().build()
    });
    let services = services(
        ec2(&[&builder, &terminate, &image, &deregister, &delete_snapshot]),
        ssm(&[]),
        s3(&[&lock, &no_manifest, &release]),
    );
    let mut state = serde_json::to_value(bake_state()).expect("state");
    state["recipe"]["copy_to_regions"] = json!([]);
    state["copies"] = json!([]);
    state["error"] = json!({ "Error": "CommandFailed", "Cause": "{\"errorType\":\"CommandFailed\",\"errorMessage\":\"boom\"}" });
    let input: TerminateInput =
        serde_json::from_value(json!({ "outcome": "failed", "executionId": EXEC, "state": state }))
            .expect("input");
    // WHEN the cleanup runs
    let report = cleanup::handle(&services, input)
        .await
        .expect("a failed bake's cleanup reports, it does not fail");
    // THEN the lock was released first, the rest was tried, and the image keeps its snapshot
    assert_eq!(
        *calls.lock().expect("lock"),
        vec!["release lock".to_owned(), "terminate".to_owned()]
    );
    assert!(report.lock_released);
    assert_eq!(deregister.num_calls(), 1);
    assert_eq!(delete_snapshot.num_calls(), 0);
    assert!(report.terminated.is_empty() && report.deregistered.is_empty());
    assert_eq!(report.failures.len(), 2, "{:?}", report.failures);
    assert!(report.failures[0].starts_with("terminate builder i-0b1d2e3f (us-east-1): "));
    assert!(report.failures[1].starts_with("discard image ami-0aaa1111 (us-east-1): "));
    // and the bake's own error leads the cause, followed by what cleanup could not do
    assert_eq!(report.error.as_deref(), Some("CommandFailed"));
    let cause = report.cause.unwrap_or_default();
    assert!(
        cause.starts_with("boom [cleanup: released the bake lock; could not: terminate builder i-0b1d2e3f (us-east-1): ")
            && cause.contains("discard image ami-0aaa1111 (us-east-1): ")
            && cause.ends_with("(reap-builders retries these)]"),
        "{cause}"
    );
}

#[tokio::test]
async fn malformed_identifiers_and_unknown_regions_are_refused_before_any_aws_call() {
    // No mock rule at all: any AWS call would fail the test with "no rules matched".
    let services = services(ec2(&[]), ssm(&[]), s3(&[]));
    let err = |e: golden_core::Error| (e.error_type(), e.to_string());
    let unknown_region = BuilderRef {
        region: "us-east-9".into(),
        ..builder_ref()
    };
    assert_eq!(
        err(ready::handle(&services, unknown_region).await.unwrap_err()),
        (
            "InvalidInput",
            "invalid input: region \"us-east-9\" is not an AWS region this build knows; if AWS opened it since, add it to GOLDEN_REGIONS".to_owned()
        )
    );
    let bad_command = CommandRef {
        command_id: "'; drop".into(),
        ..command_ref()
    };
    assert_eq!(
        err(command::status(&services, bad_command).await.unwrap_err()).0,
        "InvalidInput"
    );
    let bad_image = ImageRef {
        image_id: "ami-XYZ".into(),
        ..image_ref()
    };
    let e = image::status(&services, bad_image).await.unwrap_err();
    assert!(e.to_string().contains("imageId \"ami-XYZ\""), "{e}");
    let mut bake = bake_state();
    bake.builder.region = "mars-north-1".into();
    let e = image::create(&services, bake).await.unwrap_err();
    assert!(
        e.to_string().contains("builder.region \"mars-north-1\""),
        "{e}"
    );
    let mut bake = bake_state();
    bake.execution_id = "not-an-arn".into();
    let e = publish::handle(&services, bake).await.unwrap_err();
    assert!(e.to_string().contains("executionId \"not-an-arn\""), "{e}");
    let mut bake = bake_state();
    bake.recipe.copy_to_regions = vec!["us-westt-2".into()];
    let e = command::run(
        &services,
        RunCommandInput {
            stage: CommandStage::Provision,
            bake,
        },
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("recipe.copy_to_regions[0] \"us-westt-2\""),
        "{e}"
    );
}

#[tokio::test]
async fn a_failed_bakes_image_is_discarded_with_every_one_of_its_snapshots() {
    use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, Tag};
    use golden_core::bake::cleanup::{self, TerminateInput};
    // GIVEN a failed bake whose image has three volumes (moto snapshots only the root one: mocks here)
    let image = mock!(aws_sdk_ec2::Client::describe_images).then_output(move || {
        let mapping = |device: &str, snapshot: &str| {
            BlockDeviceMapping::builder()
                .device_name(device)
                .ebs(EbsBlockDevice::builder().snapshot_id(snapshot).build())
                .build()
        };
        let image = Ec2Image::builder()
            .image_id("ami-0aaa1111")
            .name("golden-bld-linux64-20261125T011500Z")
            .state(ImageState::Available)
            .tags(
                Tag::builder()
                    .key("golden-ami:execution")
                    .value(EXEC)
                    .build(),
            )
            .block_device_mappings(mapping("/dev/xvda", "snap-0aaa"))
            .block_device_mappings(mapping("/dev/xvdb", "snap-0bbb"))
            .block_device_mappings(mapping("/dev/xvdc", "snap-0ccc"))
            // an instance-store volume has no snapshot
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvdd")
                    .virtual_name("ephemeral0")
                    .build(),
            )
            .build();
        DescribeImagesOutput::builder().images(image).build()
    });
    let no_builders = mock!(aws_sdk_ec2::Client::describe_instances)
        .then_output(|| DescribeInstancesOutput::builder().build());
    let deregister = mock!(aws_sdk_ec2::Client::deregister_image).then_output(|| {
        aws_sdk_ec2::operation::deregister_image::DeregisterImageOutput::builder().build()
    });
    let deleted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = deleted.clone();
    let delete_snapshot =
        mock!(aws_sdk_ec2::Client::delete_snapshot).then_compute_output(move |r| {
            sink.lock()
                .expect("lock")
                .push(r.snapshot_id().unwrap_or_default().to_owned());
            aws_sdk_ec2::operation::delete_snapshot::DeleteSnapshotOutput::builder().build()
        });
    let nothing =
        mock!(aws_sdk_s3::Client::get_object).then_http_response(|| s3_error(404, "NoSuchKey"));
    let services = services(
        ec2(&[&image, &no_builders, &deregister, &delete_snapshot]),
        ssm(&[]),
        s3(&[&nothing]),
    );
    let mut state = serde_json::to_value(bake_state()).expect("state");
    state["recipe"]["copy_to_regions"] = json!([]);
    state["copies"] = json!([]);
    state["builder"] = json!(null);
    state["error"] = json!({ "Error": "ImageFailed", "Cause": "copy failed" });
    let input: TerminateInput =
        serde_json::from_value(json!({ "outcome": "failed", "executionId": EXEC, "state": state }))
            .expect("input");
    // WHEN the cleanup runs
    let report = cleanup::handle(&services, input).await.expect("cleanup");
    // THEN the image and all three of its snapshots are gone
    assert_eq!(deregister.num_calls(), 1);
    assert_eq!(
        *deleted.lock().expect("lock"),
        vec![
            "snap-0aaa".to_owned(),
            "snap-0bbb".to_owned(),
            "snap-0ccc".to_owned()
        ]
    );
    assert_eq!(report.deleted_snapshots.len(), 3, "{report:?}");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
}

#[tokio::test]
async fn account_wide_image_listing_is_paged_by_a_thousand_and_follows_every_page() {
    // GIVEN an account whose images fill two pages of DescribeImages
    let image = |id: &str| Ec2Image::builder().image_id(id).build();
    let first = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| r.max_results() == Some(1000) && r.next_token().is_none())
        .then_output(move || {
            DescribeImagesOutput::builder()
                .images(image("ami-0aaa0001"))
                .next_token("page-2")
                .build()
        });
    let image = |id: &str| Ec2Image::builder().image_id(id).build();
    let second = mock!(aws_sdk_ec2::Client::describe_images)
        .match_requests(|r| r.max_results() == Some(1000) && r.next_token() == Some("page-2"))
        .then_output(move || {
            DescribeImagesOutput::builder()
                .images(image("ami-0aaa0002"))
                .build()
        });
    let services = services(ec2(&[&first, &second]), ssm(&[]), s3(&[]));
    // WHEN prune's listing of every owned image runs
    let images = services
        .ec2
        .find_images("us-east-1", None, &[])
        .await
        .expect("both pages");
    // THEN it asked for pages of 1000 (an unpaged listing of a large account can time out) and read both
    let ids: Vec<_> = images.iter().map(|i| i.image_id.as_str()).collect();
    assert_eq!(ids, ["ami-0aaa0001", "ami-0aaa0002"]);
    assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
}

/// The schedule guard over mocked Step Functions, Scheduler and SNS: three scheduled bakes of bld-linux64
/// failed since its schedule last changed, `listed` of them (1 to 3) listed by ListExecutions; `limit` is
/// GOLDEN_MAX_FAILED_SCHEDULED_BAKES (None: the default).
fn guard_fixture(
    limit: Option<&'static str>,
    listed: &'static [i64],
    sns_rules: &[&Rule],
    scheduler_rules: &[&Rule],
) -> (Services, golden_core::lifecycle::guard::GuardPorts) {
    use aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput;
    use aws_sdk_sfn::operation::list_executions::ListExecutionsOutput;
    use aws_sdk_sfn::types::{ExecutionListItem, ExecutionStatus};
    let at = |minute: i64| aws_smithy_types::DateTime::from_secs(1_795_569_300 + minute * 60);
    let item = move |n: i64| {
        ExecutionListItem::builder()
            .execution_arn(format!("{EXEC}-{n}"))
            .state_machine_arn("arn:aws:states:us-east-1:123456789012:stateMachine:bake")
            .name(format!("unit-1-{n}"))
            .status(ExecutionStatus::Failed)
            .start_date(at(n))
            .build()
            .expect("item")
    };
    let list = mock!(aws_sdk_sfn::Client::list_executions).then_output(move || {
        ListExecutionsOutput::builder()
            .set_executions(Some(listed.iter().map(|n| item(*n)).collect()))
            .build()
            .expect("list")
    });
    let describe = mock!(aws_sdk_sfn::Client::describe_execution).then_output(move || {
        DescribeExecutionOutput::builder()
            .execution_arn(format!("{EXEC}-1"))
            .state_machine_arn("arn:aws:states:us-east-1:123456789012:stateMachine:bake")
            .status(ExecutionStatus::Failed)
            .start_date(at(1))
            .error("CommandFailed")
            .input(r#"{"type": "bld-linux64", "trigger": "schedule"}"#)
            .build()
            .expect("describe")
    });
    let sfn = mock_client!(aws_sdk_sfn, RuleMode::MatchAny, &[&list, &describe]);
    let config = Config::from_lookup(|k| {
        match k {
            "GOLDEN_BUCKET" => Some("golden-unit"),
            "GOLDEN_STATE_MACHINE_ARN" => {
                Some("arn:aws:states:us-east-1:123456789012:stateMachine:bake")
            }
            "GOLDEN_SCHEDULE_GROUP" => Some("golden-bakes"),
            "GOLDEN_NOTIFICATIONS_TOPIC_ARN" => Some("arn:aws:sns:us-east-1:123456789012:golden"),
            "GOLDEN_MAX_FAILED_SCHEDULED_BAKES" => limit,
            _ => None,
        }
        .map(str::to_owned)
    })
    .expect("config");
    let services = Services::new(
        config,
        Arc::new(AwsEc2::from_client(ec2(&[]))),
        Arc::new(AwsSsm::from_client(ssm(&[]))),
        Arc::new(S3Store::new(s3(&[]), "golden-unit")),
        Arc::new(AwsSfn::from_client(sfn)),
    );
    let scheduler = mock_client!(
        aws_sdk_scheduler,
        RuleMode::MatchAny,
        scheduler_rules,
        |c| c.retry_config(fast_retries())
    );
    let sns = mock_client!(aws_sdk_sns, RuleMode::MatchAny, sns_rules, |c| c
        .retry_config(fast_retries()));
    let ports = golden_core::lifecycle::guard::GuardPorts {
        schedules: Arc::new(golden_core::aws::AwsScheduler::from_client(scheduler)),
        notifier: Arc::new(golden_core::aws::AwsSns::from_client(sns)),
    };
    (services, ports)
}

/// The group's one schedule (named as CloudFormation names it), which bakes bld-linux64.
fn bake_schedule(state: aws_sdk_scheduler::types::ScheduleState) -> (Rule, Rule) {
    bake_schedule_changed_at(state, 1_795_569_000)
}

/// [`bake_schedule`], last changed at `changed` (epoch seconds; the bakes start at 1_795_569_360 on).
fn bake_schedule_changed_at(
    state: aws_sdk_scheduler::types::ScheduleState,
    changed: i64,
) -> (Rule, Rule) {
    use aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput;
    use aws_sdk_scheduler::operation::list_schedules::ListSchedulesOutput;
    use aws_sdk_scheduler::types::{
        DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode, RetryPolicy, ScheduleSummary,
        Target,
    };
    let list = mock!(aws_sdk_scheduler::Client::list_schedules)
        .match_requests(|r| r.group_name() == Some("golden-bakes"))
        .then_output(|| {
            ListSchedulesOutput::builder()
                .schedules(
                    ScheduleSummary::builder()
                        .name("golden-Bakebldlinux64-X1")
                        .build(),
                )
                .build()
                .expect("list")
        });
    let get = mock!(aws_sdk_scheduler::Client::get_schedule)
        .match_requests(|r| r.name() == Some("golden-Bakebldlinux64-X1"))
        .then_output(move || {
            GetScheduleOutput::builder()
                .name("golden-Bakebldlinux64-X1")
                .group_name("golden-bakes")
                .description("golden-ami (golden-ami): bake bld-linux64")
                .schedule_expression("cron(10 1 * * ? *)")
                .schedule_expression_timezone("UTC")
                .flexible_time_window(
                    FlexibleTimeWindow::builder()
                        .mode(FlexibleTimeWindowMode::Off)
                        .build()
                        .expect("window"),
                )
                .target(
                    Target::builder()
                        .arn("arn:aws:states:us-east-1:123456789012:stateMachine:bake")
                        .role_arn("arn:aws:iam::123456789012:role/scheduler")
                        .input(r#"{"type": "bld-linux64", "trigger": "schedule"}"#)
                        .retry_policy(
                            RetryPolicy::builder()
                                .maximum_retry_attempts(2)
                                .maximum_event_age_in_seconds(3600)
                                .build(),
                        )
                        .dead_letter_config(
                            DeadLetterConfig::builder()
                                .arn("arn:aws:sqs:us-east-1:123456789012:dlq")
                                .build(),
                        )
                        .build()
                        .expect("target"),
                )
                .state(state.clone())
                .last_modification_date(aws_smithy_types::DateTime::from_secs(changed))
                .build()
        });
    (list, get)
}

/// UpdateSchedule replaces a schedule: anything not given back would be lost (its role, input, DLQ...).
fn disable_keeping_everything() -> Rule {
    use aws_sdk_scheduler::operation::update_schedule::UpdateScheduleOutput;
    use aws_sdk_scheduler::types::{FlexibleTimeWindowMode, ScheduleState};
    mock!(aws_sdk_scheduler::Client::update_schedule)
        .match_requests(|r| {
            let t = r.target();
            r.state() == Some(&ScheduleState::Disabled)
                && r.group_name() == Some("golden-bakes")
                && r.name() == Some("golden-Bakebldlinux64-X1")
                && r.schedule_expression() == Some("cron(10 1 * * ? *)")
                && r.schedule_expression_timezone() == Some("UTC")
                && r.description() == Some("golden-ami (golden-ami): bake bld-linux64")
                && r.flexible_time_window().map(|w| w.mode()) == Some(&FlexibleTimeWindowMode::Off)
                && t.map(|t| t.role_arn()) == Some("arn:aws:iam::123456789012:role/scheduler")
                && t.and_then(|t| t.input())
                    == Some(r#"{"type": "bld-linux64", "trigger": "schedule"}"#)
                && t.and_then(|t| t.dead_letter_config()).and_then(|d| d.arn())
                    == Some("arn:aws:sqs:us-east-1:123456789012:dlq")
                && t.and_then(|t| t.retry_policy())
                    .and_then(|p| p.maximum_retry_attempts())
                    == Some(2)
        })
        .then_output(|| {
            UpdateScheduleOutput::builder()
                .schedule_arn(
                    "arn:aws:scheduler:us-east-1:123456789012:schedule/golden-bakes/golden-Bakebldlinux64-X1",
                )
                .build()
                .expect("output")
        })
}

fn third_failure() -> golden_core::lifecycle::guard::GuardRequest {
    golden_core::lifecycle::guard::GuardRequest::Ended {
        execution_arn: format!("{EXEC}-3"),
        status: "FAILED".into(),
        error: Some("CommandFailed".into()),
    }
}

#[tokio::test]
async fn at_the_limit_the_topic_is_told_then_the_schedule_disabled_keeping_its_whole_definition() {
    use aws_sdk_scheduler::types::ScheduleState;
    use aws_sdk_sns::operation::publish::PublishOutput;
    let (list, get) = bake_schedule(ScheduleState::Enabled);
    let update = disable_keeping_everything();
    let publish = mock!(aws_sdk_sns::Client::publish)
        .match_requests(|r| {
            r.topic_arn() == Some("arn:aws:sns:us-east-1:123456789012:golden")
                && r.message().is_some_and(|m| {
                    m.contains("unit-1-3 FAILED")
                        && m.contains("unit-1-1 FAILED")
                        && m.contains("goldenctl schedule enable bld-linux64")
                })
        })
        .then_output(|| PublishOutput::builder().message_id("m-1").build());
    let (services, ports) = guard_fixture(None, &[3, 2, 1], &[&publish], &[&list, &get, &update]);
    let report = golden_core::lifecycle::guard::handle(&services, &ports, third_failure())
        .await
        .expect("disabled");
    assert_eq!(report.outcome, "disabled", "{report:?}");
    assert_eq!((publish.num_calls(), update.num_calls()), (1, 1));
    assert_eq!(
        report.schedule.as_deref(),
        Some("golden-bakes/golden-Bakebldlinux64-X1")
    );
}

#[tokio::test]
async fn a_notice_that_cannot_be_sent_leaves_the_schedule_enabled_and_fails_the_run_for_its_retry()
{
    use aws_sdk_scheduler::types::ScheduleState;
    use golden_core::lifecycle::guard::handle;
    // GIVEN three failed scheduled bakes, an enabled schedule, and SNS failing every attempt
    let (list, get) = bake_schedule(ScheduleState::Enabled);
    let update = disable_keeping_everything();
    let publish = mock!(aws_sdk_sns::Client::publish).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            500.try_into().expect("status"),
            "<ErrorResponse><Error><Code>InternalError</Code><Message>down</Message></Error></ErrorResponse>"
                .into(),
        )
    });
    let (services, ports) = guard_fixture(None, &[3, 2, 1], &[&publish], &[&list, &get, &update]);
    // WHEN the third failure's event arrives
    let err = handle(&services, &ports, third_failure())
        .await
        .expect_err("the notice failed");
    // THEN nothing is disabled: the schedule is not stopped without anybody being told why, and the
    // run fails (ItemsFailed) so that Lambda's retry, which counts the same three bakes, tries again
    assert_eq!(update.num_calls(), 0, "disabled without a notice");
    assert_eq!(err.error_type(), "ItemsFailed", "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("3 scheduled bakes of bld-linux64 failed in a row"),
        "{msg}"
    );
    assert!(msg.contains("left enabled"), "{msg}");
    assert!(
        msg.contains("notify arn:aws:sns:us-east-1:123456789012:golden"),
        "{msg}"
    );
    assert!(publish.num_calls() >= 1);
}

#[tokio::test]
async fn the_limit_is_the_deployments_and_zero_never_disables() {
    use aws_sdk_scheduler::types::ScheduleState;
    use golden_core::lifecycle::guard::{handle, GuardRequest};
    let report = |limit: Option<&'static str>| async move {
        let (list, get) = bake_schedule(ScheduleState::Enabled);
        // No UpdateSchedule or Publish rule: a manual report changes nothing, whatever the count.
        let (services, ports) = guard_fixture(limit, &[3, 2, 1], &[], &[&list, &get]);
        let request = GuardRequest::Manual {
            image_type: "bld-linux64".into(),
            dry_run: true,
        };
        handle(&services, &ports, request).await.expect("report")
    };
    let default = report(None).await;
    assert_eq!(
        (
            default.outcome.as_str(),
            default.failed_in_a_row.len(),
            default.limit
        ),
        ("would-disable", 3, 3)
    );
    let two = report(Some("2")).await;
    assert_eq!(
        (two.outcome.as_str(), two.failed_in_a_row.len(), two.limit),
        ("would-disable", 2, 2),
        "the walk stops at the limit"
    );
    let four = report(Some("4")).await;
    assert_eq!(
        (four.outcome.as_str(), four.failed_in_a_row.len()),
        ("counting", 3)
    );
    let never = report(Some("0")).await;
    assert_eq!(
        (never.outcome.as_str(), never.limit),
        ("counting", 0),
        "{never:?}"
    );
    assert!(never.reason.contains("never disabled"), "{never:?}");
}

#[tokio::test]
async fn the_failure_that_woke_the_guard_counts_even_before_list_executions_shows_it() {
    use aws_sdk_scheduler::types::ScheduleState;
    use aws_sdk_sns::operation::publish::PublishOutput;
    // ListExecutions is eventually consistent: right after the third bake ended it lists only two.
    let (list, get) = bake_schedule(ScheduleState::Enabled);
    let update = disable_keeping_everything();
    let publish = mock!(aws_sdk_sns::Client::publish)
        .then_output(|| PublishOutput::builder().message_id("m-1").build());
    let (services, ports) = guard_fixture(None, &[2, 1], &[&publish], &[&list, &get, &update]);
    let report = golden_core::lifecycle::guard::handle(&services, &ports, third_failure())
        .await
        .expect("disabled");
    assert_eq!(report.outcome, "disabled", "{report:?}");
    assert_eq!(report.failed_in_a_row.len(), 3, "{report:?}");
    assert_eq!(update.num_calls(), 1);
}

#[tokio::test]
async fn bakes_started_before_the_schedule_last_changed_do_not_count() {
    use aws_sdk_scheduler::types::ScheduleState;
    // The schedule was enabled again after all three failed bakes started (they start at +1..+3 min).
    let (list, get) = bake_schedule_changed_at(ScheduleState::Enabled, 1_795_569_300 + 10 * 60);
    // No UpdateSchedule or Publish rule: acting would fail the test.
    let (services, ports) = guard_fixture(None, &[3, 2, 1], &[], &[&list, &get]);
    let report = golden_core::lifecycle::guard::handle(&services, &ports, third_failure())
        .await
        .expect("report");
    assert_eq!(report.outcome, "counting", "{report:?}");
    assert!(report.failed_in_a_row.is_empty(), "{report:?}");
}

#[tokio::test]
async fn an_execution_of_another_state_machine_is_ignored() {
    use aws_sdk_scheduler::types::ScheduleState;
    let (list, get) = bake_schedule(ScheduleState::Enabled);
    let (services, ports) = guard_fixture(None, &[3, 2, 1], &[], &[&list, &get]);
    let other = golden_core::lifecycle::guard::GuardRequest::Ended {
        execution_arn: "arn:aws:states:us-east-1:123456789012:execution:other-machine:x".into(),
        status: "FAILED".into(),
        error: None,
    };
    let report = golden_core::lifecycle::guard::handle(&services, &ports, other)
        .await
        .expect("report");
    assert_eq!(report.outcome, "ignored", "{report:?}");
    assert!(
        report
            .reason
            .contains("not an execution of the bake state machine"),
        "{report:?}"
    );
    assert_eq!(get.num_calls(), 0, "nothing looked up for it");
}
