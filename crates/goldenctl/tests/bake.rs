//! goldenctl's bake, executions, abort, revoke, promote --pin and unpin on the emulator: the real state
//! machine runs each bake (`make test` runs this file inside `scripts/emulator run`).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{goldenctl, json_of};
use golden_core::manifest::VersionStatus;
use golden_core::tags;
use golden_it::{publish, unique_type, version, Emulator, SERIAL};
use predicates::prelude::*;
use serde_json::{json, Value};

const BUILD: &str = "us-east-1";

/// Pushes `recipe` as the type's recipe, as `goldenctl recipes push` leaves it.
async fn push_recipe(emu: &Emulator, recipe: &Value) {
    let ty = recipe["type"].as_str().expect("type");
    emu.s3()
        .put_object()
        .bucket(&emu.bucket)
        .key(format!("recipes/{ty}.json"))
        .body(recipe.to_string().into_bytes().into())
        .send()
        .await
        .expect("PutObject recipe");
}

async fn manifest_type(emu: &Emulator, ty: &str) -> Value {
    emu.manifest().await.expect("manifest")["types"][ty].clone()
}

#[tokio::test]
async fn bake_wait_follows_each_state_to_the_published_version_and_executions_lists_it() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("ctl-bake");
    push_recipe(&emu, &emu.recipe(&ty, &["us-west-2"])).await;

    let out = goldenctl()
        .args([
            "bake",
            &ty,
            "--wait",
            "--poll-seconds",
            "1",
            "--output",
            "json",
        ])
        .assert()
        .code(0)
        .get_output()
        .clone();
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let progress = String::from_utf8_lossy(&out.stderr);
    assert_eq!(report["status"], "SUCCEEDED", "{report}\n{progress}");
    assert_eq!(report["current"], true);
    let version = report["version"].as_str().expect("version");
    let entry = manifest_type(&emu, &ty).await;
    assert_eq!(entry["current"], version);
    for region in [BUILD, "us-west-2"] {
        assert_eq!(
            report["images"][region], entry["versions"][0]["images"][region],
            "{region}"
        );
    }
    // Each state as it starts and ends, polling loops folded into one line each.
    for line in [
        "▸ LaunchBuilder",
        "✓ Publish (",
        "▸ TerminateBuilder",
        "waited ",
        "SUCCEEDED",
    ] {
        assert!(progress.contains(line), "no {line:?} in:\n{progress}");
    }
    assert!(!progress.contains("▸ CheckImage"), "{progress}");

    let listed = json_of(&["executions", &ty, "--output", "json"], 0);
    let rows = listed["executions"].as_array().expect("executions");
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["type"], ty.as_str());
    assert_eq!(rows[0]["status"], "SUCCEEDED");
    assert_eq!(rows[0]["execution"], report["execution"]);
    assert!(
        rows[0]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with(&format!("{ty}-"))),
        "named from type and time: {listed}"
    );
}

#[tokio::test]
async fn bake_wait_of_a_failing_bake_exits_1_with_its_cause() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("ctl-fail");
    let mut recipe = emu.recipe(&ty, &[]);
    recipe["instance_profile"] = json!("no-such-profile");
    push_recipe(&emu, &recipe).await;

    let report = json_of(
        &[
            "bake",
            &ty,
            "--wait",
            "--poll-seconds",
            "1",
            "--output",
            "json",
        ],
        1,
    );
    assert_eq!(report["status"], "FAILED", "{report}");
    let cause = report["cause"].as_str().unwrap_or_default();
    assert!(cause.contains("no-such-profile"), "{report}");
    assert!(report.get("version").is_none(), "{report}");
    // The table says the same to a person.
    goldenctl()
        .args(["executions", &ty])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("FAILED"));
}

#[test]
fn bake_of_a_type_without_a_recipe_says_how_to_push_one() {
    goldenctl()
        .args(["bake", "no-such-type-ctl"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "goldenctl recipes push infra/recipes/no-such-type-ctl.toml",
        ));
}

/// Waits until the type's builder is running; returns its id.
async fn running_builder(emu: &Emulator, ty: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let found = emu
            .instances(BUILD, &[(tags::TYPE, ty), (tags::ROLE, tags::ROLE_BUILDER)])
            .await;
        if let Some(i) = found.first() {
            return i.instance_id().expect("id").to_owned();
        }
        assert!(Instant::now() < deadline, "no builder of {ty} after 120 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn abort_wait_stops_the_bake_terminates_its_builder_and_frees_the_lock() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("ctl-abort");
    push_recipe(&emu, &emu.recipe(&ty, &[])).await;
    // A slow poll keeps the bake waiting on its builder long enough to abort it.
    let started = json_of(
        &["bake", &ty, "--poll-seconds", "120", "--output", "json"],
        0,
    );
    assert_eq!(started["status"], "RUNNING");
    let name = started["name"].as_str().expect("name").to_owned();
    let builder = running_builder(&emu, &ty).await;
    let lock = format!("locks/{ty}.json");
    assert!(emu.object(&lock).await.is_some());

    // Off a terminal, nothing happens without --yes; --dry-run only plans.
    goldenctl()
        .args(["abort", &name])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("pass --yes"));
    let plan = json_of(&["abort", &name, "--dry-run", "--output", "json"], 0);
    assert_eq!(plan["status"], "RUNNING");
    assert_eq!(plan["builders"], json!([format!("{BUILD}:{builder}")]));
    assert_eq!(plan["stopped"], false);
    assert_eq!(emu.instance_state(BUILD, &builder).await, "running");

    let done = json_of(&["abort", &name, "--yes", "--wait", "--output", "json"], 0);
    assert_eq!(done["stopped"], true, "{done}");
    assert_eq!(done["settled"], true, "{done}");
    assert_eq!(emu.instance_state(BUILD, &builder).await, "terminated");
    assert!(emu.object(&lock).await.is_none(), "lock freed");
    let listed = json_of(&["executions", &ty, "--output", "json"], 0);
    assert_ne!(listed["executions"][0]["status"], "RUNNING", "{listed}");
}

#[tokio::test]
async fn revoke_rolls_back_and_a_pin_survives_the_next_bake_until_unpinned() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let services = emu.services(&[]).await;
    let ty = unique_type("ctl-pin");
    push_recipe(&emu, &emu.recipe(&ty, &[])).await;
    let mut images = Vec::new();
    for n in [1, 2] {
        let v = version(n);
        let (image, _) = emu
            .register_image(
                BUILD,
                &format!("golden-{ty}-{v}"),
                &[
                    (tags::ROLE, tags::ROLE_IMAGE),
                    (tags::TYPE, &ty),
                    (tags::VERSION, v.as_str()),
                ],
            )
            .await;
        images.push(BTreeMap::from([(BUILD.to_owned(), image)]));
    }
    publish(
        &services,
        &ty,
        &[
            (version(2), images[1].clone(), VersionStatus::Published),
            (version(1), images[0].clone(), VersionStatus::Published),
        ],
    )
    .await;
    let (v1, v2) = (version(1).to_string(), version(2).to_string());

    // A dry run shows before and after and changes nothing.
    let plan = json_of(
        &[
            "revoke",
            &ty,
            &v2,
            "--reason",
            "kernel panic",
            "--dry-run",
            "--output",
            "json",
        ],
        0,
    );
    let mut text = serde_json::to_string_pretty(&plan)
        .expect("JSON")
        .replace(&ty, "TYPE");
    for (i, image) in images.iter().enumerate() {
        text = text.replace(&image[BUILD], &format!("ami-{:0>17}", i + 1));
    }
    insta::assert_snapshot!("revoke_plan_json", text);
    assert_eq!(plan["before"]["current"], v2.as_str());
    assert_eq!(plan["after"]["current"], v1.as_str());
    assert_eq!(plan["after"]["versionStatus"], "revoked");
    assert_eq!(manifest_type(&emu, &ty).await["current"], v2.as_str());

    // Off a terminal, nothing is revoked without --yes.
    goldenctl()
        .args(["revoke", &ty, &v2, "--reason", "kernel panic"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("plan: revoke"))
        .stderr(predicate::str::contains("pass --yes"));
    assert_eq!(manifest_type(&emu, &ty).await["current"], v2.as_str());
    let revoked = json_of(
        &[
            "revoke",
            &ty,
            &v2,
            "--reason",
            "kernel panic",
            "--yes",
            "--output",
            "json",
        ],
        0,
    );
    assert_eq!(revoked["after"]["current"], v1.as_str(), "{revoked}");
    assert_eq!(
        revoked["deprecated"],
        json!([format!("{BUILD}:{}", images[1][BUILD])])
    );
    let entry = manifest_type(&emu, &ty).await;
    assert_eq!(entry["current"], v1.as_str());
    assert_eq!(entry["versions"][0]["status"], "revoked");
    assert_eq!(entry["versions"][0]["revokedReason"], "kernel panic");
    assert_eq!(
        emu.parameter(BUILD, &format!("/golden-ami/{ty}/current"))
            .await
            .as_deref(),
        Some(images[0][BUILD].as_str())
    );
    // A revoke whose first run failed after writing the manifest is finished by running it again: the
    // manifest is already so, and the parameters are put back in line with it.
    let parameter = format!("/golden-ami/{ty}/current");
    emu.ssm(BUILD)
        .put_parameter()
        .name(&parameter)
        .value(&images[1][BUILD])
        .overwrite(true)
        .send()
        .await
        .expect("PutParameter");
    let again = json_of(
        &[
            "revoke",
            &ty,
            &v2,
            "--reason",
            "kernel panic",
            "--yes",
            "--output",
            "json",
        ],
        0,
    );
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(
        emu.parameter(BUILD, &parameter).await.as_deref(),
        Some(images[0][BUILD].as_str()),
        "{again}"
    );
    // A revoked version cannot be promoted: the error says what to do.
    goldenctl()
        .args(["promote", &ty, &v2, "--yes"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "is revoked and cannot be made current",
        ));

    // Pinned to version 1, the nightly bake publishes a newer version that does not become current.
    let plan = json_of(
        &[
            "promote",
            &ty,
            &v1,
            "--pin",
            "--dry-run",
            "--output",
            "json",
        ],
        0,
    );
    assert!(plan["after"]["pinnedAt"].is_string(), "{plan}");
    assert!(
        manifest_type(&emu, &ty).await["pinnedAt"].is_null(),
        "a dry run pins nothing"
    );
    goldenctl()
        .args(["promote", &ty, &v1, "--pin"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("pass --yes"));
    let pinned = json_of(
        &["promote", &ty, &v1, "--pin", "--yes", "--output", "json"],
        0,
    );
    assert!(pinned["after"]["pinnedAt"].is_string(), "{pinned}");
    assert!(manifest_type(&emu, &ty).await["pinnedAt"].is_string());
    let baked = json_of(
        &[
            "bake",
            &ty,
            "--wait",
            "--poll-seconds",
            "1",
            "--output",
            "json",
        ],
        0,
    );
    assert_eq!(baked["current"], false, "{baked}");
    let v3 = baked["version"].as_str().expect("version").to_owned();
    let entry = manifest_type(&emu, &ty).await;
    assert_eq!(entry["current"], v1.as_str(), "the pin held");
    assert_eq!(
        entry["versions"][0]["version"],
        v3.as_str(),
        "kept in the history"
    );
    assert_eq!(
        emu.parameter(BUILD, &format!("/golden-ami/{ty}/current"))
            .await
            .as_deref(),
        Some(images[0][BUILD].as_str()),
        "the parameter stayed on the pinned image"
    );

    // Unpin leaves current where it is; promoting the new bake rolls forward.
    goldenctl()
        .args(["unpin", &ty])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("pass --yes"));
    assert!(
        manifest_type(&emu, &ty).await["pinnedAt"].is_string(),
        "still pinned"
    );
    let unpinned = json_of(&["unpin", &ty, "--yes", "--output", "json"], 0);
    assert!(unpinned["after"]["pinnedAt"].is_null(), "{unpinned}");
    assert_eq!(manifest_type(&emu, &ty).await["current"], v1.as_str());
    json_of(&["promote", &ty, &v3, "--yes", "--output", "json"], 0);
    assert_eq!(manifest_type(&emu, &ty).await["current"], v3.as_str());
    // Again: nothing to change, exit 0, and nothing asked.
    let again = json_of(&["promote", &ty, &v3, "--output", "json"], 0);
    assert_eq!(again["changed"], false);
}

/// The stack's bake schedule of `ty`, made like the emulator's seeded ones (the template's input, a name
/// that is not the type's, as CloudFormation's), and a queue subscribed to the notifications topic.
/// Returns the schedule's input and name, and the queue.
async fn schedule_and_topic_queue(emu: &Emulator, ty: &str) -> (String, String, String) {
    let group =
        std::env::var("GOLDEN_SCHEDULE_GROUP").expect("GOLDEN_SCHEDULE_GROUP (scripts/emulator)");
    let scheduler = aws_sdk_scheduler::Client::new(&emu.sdk);
    // A seeded type's schedule, as the template makes it; only the type in its input differs.
    let listed = scheduler
        .list_schedules()
        .group_name(&group)
        .send()
        .await
        .expect("ListSchedules");
    let mut seeded = None;
    for summary in listed.schedules() {
        let schedule = scheduler
            .get_schedule()
            .group_name(&group)
            .name(summary.name().expect("name"))
            .send()
            .await
            .expect("GetSchedule");
        let input = schedule.target().and_then(|t| t.input()).unwrap_or("{}");
        if serde_json::from_str::<Value>(input).expect("input")["type"] == "bld-linux64" {
            seeded = Some(schedule);
        }
    }
    let seeded = seeded.expect("the seeded schedule of bld-linux64");
    let mut target = seeded.target().expect("target").clone();
    let mut input: Value =
        serde_json::from_str(target.input().expect("input")).expect("schedule input is JSON");
    assert_eq!(input["trigger"], "schedule", "{input}");
    input["type"] = json!(ty);
    target.input = Some(input.to_string());
    // After the seeded ones in name order: the guard must find it by its input, not take the first.
    let name = format!("golden-ami-local-Bakezz{}", ty.replace('-', ""));
    scheduler
        .create_schedule()
        .group_name(&group)
        .name(&name)
        .schedule_expression(seeded.schedule_expression().expect("expression"))
        .set_flexible_time_window(seeded.flexible_time_window().cloned())
        .target(target)
        .send()
        .await
        .expect("CreateSchedule");
    let sqs = aws_sdk_sqs::Client::new(&emu.sdk);
    let queue = sqs
        .create_queue()
        .queue_name(format!("{ty}-notifications"))
        .send()
        .await
        .expect("CreateQueue")
        .queue_url()
        .expect("url")
        .to_owned();
    let queue_arn = format!("arn:aws:sqs:us-east-1:123456789012:{ty}-notifications");
    aws_sdk_sns::Client::new(&emu.sdk)
        .subscribe()
        .topic_arn(std::env::var("GOLDEN_NOTIFICATIONS_TOPIC_ARN").expect("topic"))
        .protocol("sqs")
        .endpoint(queue_arn)
        .send()
        .await
        .expect("Subscribe");
    (input.to_string(), name, queue)
}

async fn schedule_state(emu: &Emulator, name: &str) -> String {
    let group = std::env::var("GOLDEN_SCHEDULE_GROUP").expect("group");
    aws_sdk_scheduler::Client::new(&emu.sdk)
        .get_schedule()
        .group_name(group)
        .name(name)
        .send()
        .await
        .expect("GetSchedule")
        .state()
        .expect("state")
        .as_str()
        .to_owned()
}

/// Every notification on `queue` (SNS's JSON envelope: Subject, Message).
async fn notifications(emu: &Emulator, queue: &str) -> Vec<Value> {
    let out = aws_sdk_sqs::Client::new(&emu.sdk)
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("ReceiveMessage");
    out.messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap_or("{}")).expect("SNS envelope"))
        .collect()
}

/// Runs a bake with `input` to its end (FAILED expected) and hands the schedule guard the event
/// EventBridge would: the execution's Step Functions status change.
async fn failed_bake_told_to_the_guard(emu: &Emulator, name: &str, input: &str) -> Value {
    let (arn, finished) = emu
        .bake(name, &serde_json::from_str(input).expect("input"))
        .await;
    assert_eq!(
        finished.status.as_str(),
        "FAILED",
        "{name}: {:?} {:?}",
        finished.error,
        finished.cause
    );
    let event = json!({
        "version": "0", "id": format!("event-{name}"),
        "detail-type": "Step Functions Execution Status Change", "source": "aws.states",
        "account": "123456789012", "time": "2026-11-27T01:00:00Z", "region": "us-east-1",
        "resources": [arn],
        "detail": {"executionArn": arn, "stateMachineArn": emu.state_machine_arn, "name": name,
                   "status": "FAILED", "input": input, "error": finished.error, "cause": finished.cause}
    });
    golden_it::ok(emu.invoke("schedule-guard", &event), "schedule-guard")
}

#[tokio::test]
async fn a_schedule_whose_bakes_fail_three_times_in_a_row_is_disabled_and_told_until_enabled_again()
{
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("ctl-guard");
    // A recipe whose every bake fails at launch: its instance profile does not exist.
    let mut recipe = emu.recipe(&ty, &[]);
    recipe["instance_profile"] = json!("no-such-profile");
    push_recipe(&emu, &recipe).await;
    let (scheduled, schedule, queue) = schedule_and_topic_queue(&emu, &ty).await;
    let manual = json!({"type": ty}).to_string();

    let first = failed_bake_told_to_the_guard(&emu, &format!("{ty}-s1"), &scheduled).await;
    assert_eq!(first["outcome"], "counting", "{first}");
    assert_eq!(
        first["failedInARow"],
        json!([format!("{ty}-s1")]),
        "{first}"
    );
    // A bake started by hand fails too, but only scheduled bakes count.
    let by_hand = failed_bake_told_to_the_guard(&emu, &format!("{ty}-m1"), &manual).await;
    assert_eq!(by_hand["outcome"], "ignored", "{by_hand}");
    let second = failed_bake_told_to_the_guard(&emu, &format!("{ty}-s2"), &scheduled).await;
    assert_eq!(second["outcome"], "counting", "{second}");
    assert_eq!(
        second["failedInARow"].as_array().map(Vec::len),
        Some(2),
        "{second}"
    );
    assert_eq!(schedule_state(&emu, &schedule).await, "ENABLED");
    assert!(notifications(&emu, &queue).await.is_empty());

    let third = failed_bake_told_to_the_guard(&emu, &format!("{ty}-s3"), &scheduled).await;
    assert_eq!(third["outcome"], "disabled", "{third}");
    assert_eq!(
        third["schedule"],
        json!(format!(
            "{}/{schedule}",
            std::env::var("GOLDEN_SCHEDULE_GROUP").expect("group")
        )),
        "{third}"
    );
    assert_eq!(
        third["failedInARow"],
        json!([format!("{ty}-s3"), format!("{ty}-s2"), format!("{ty}-s1")]),
        "{third}"
    );
    assert_eq!(schedule_state(&emu, &schedule).await, "DISABLED");
    let told = notifications(&emu, &queue).await;
    assert_eq!(told.len(), 1, "{told:?}");
    let subject = told[0]["Subject"].as_str().unwrap_or_default();
    let message = told[0]["Message"].as_str().unwrap_or_default();
    assert!(
        subject.contains(&ty) && subject.contains("disabled"),
        "{subject}"
    );
    for says in [
        format!("{ty}-s1 FAILED"),
        format!("{ty}-s3 FAILED"),
        format!("goldenctl schedule enable {ty}"),
    ] {
        assert!(message.contains(&says), "no {says:?} in:\n{message}");
    }
    assert!(!message.contains(&format!("{ty}-m1")), "{message}");

    // A failure told after the schedule is off (a bake it had started, an event delivered twice) changes
    // nothing and tells nobody again.
    let again = failed_bake_told_to_the_guard(&emu, &format!("{ty}-s4"), &scheduled).await;
    assert_eq!(again["outcome"], "already-disabled", "{again}");
    assert!(notifications(&emu, &queue).await.is_empty());

    // The documented way back: list shows it, enable turns it on (plan first, --yes acts).
    let listed = json_of(&["schedule", "list", "--output", "json"], 0);
    let row = listed
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["type"] == ty.as_str()))
        .unwrap_or_else(|| panic!("{ty} not in {listed}"))
        .clone();
    assert_eq!(row["enabled"], false, "{row}");
    let planned = json_of(
        &["schedule", "enable", &ty, "--dry-run", "--output", "json"],
        0,
    );
    assert_eq!(planned["changed"], true, "{planned}");
    assert_eq!(
        schedule_state(&emu, &schedule).await,
        "DISABLED",
        "a dry run changes nothing"
    );
    goldenctl()
        .args(["schedule", "enable", &ty])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("pass --yes"));
    let enabled = json_of(&["schedule", "enable", &ty, "--yes", "--output", "json"], 0);
    assert_eq!(enabled["enabledAfter"], true, "{enabled}");
    assert_eq!(schedule_state(&emu, &schedule).await, "ENABLED");
    let row = json_of(&["schedule", "list", "--output", "json"], 0)
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["type"] == ty.as_str()).cloned())
        .expect("listed");
    assert_eq!(
        row["failedInARow"],
        json!([]),
        "counted afresh after the enable: {row}"
    );
    assert_eq!(row["limit"], 3, "{row}");

    // Enabled again, one more failure starts a new count instead of disabling at once.
    let after = failed_bake_told_to_the_guard(&emu, &format!("{ty}-s5"), &scheduled).await;
    assert_eq!(after["outcome"], "counting", "{after}");
    assert_eq!(
        after["failedInARow"],
        json!([format!("{ty}-s5")]),
        "{after}"
    );
    assert_eq!(schedule_state(&emu, &schedule).await, "ENABLED");
}
