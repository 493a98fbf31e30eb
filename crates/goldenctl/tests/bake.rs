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
