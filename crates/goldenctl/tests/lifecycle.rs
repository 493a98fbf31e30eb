//! goldenctl's amis, recycle, prune, reap and enforce on the emulator: the lifecycle functions' plans run
//! in-process, shown first, acted on only when confirmed (`make test` runs this inside `scripts/emulator
//! run`).

mod common;

use std::collections::BTreeMap;

use common::{goldenctl, json_of};
use golden_core::manifest::VersionStatus;
use golden_core::tags;
use golden_it::{publish, unique_type, version, Emulator, SERIAL};
use predicates::prelude::*;
use serde_json::{json, Value};

const R1: &str = "us-east-1";

/// Images of versions 1..=n of `ty` in R1, tagged as bakes tag them.
async fn images(emu: &Emulator, ty: &str, n: u32) -> Vec<String> {
    let mut out = Vec::new();
    for i in 1..=n {
        let v = version(i);
        let (image, _) = emu
            .register_image(
                R1,
                &format!("golden-{ty}-{v}"),
                &[
                    (tags::ROLE, tags::ROLE_IMAGE),
                    (tags::TYPE, ty),
                    (tags::VERSION, v.as_str()),
                ],
            )
            .await;
        out.push(image);
    }
    out
}

fn in_r1(image: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(R1.to_owned(), image.to_owned())])
}

fn rows_by_image(report: &Value) -> BTreeMap<String, Value> {
    report["amis"]
        .as_array()
        .expect("amis")
        .iter()
        .map(|r| {
            (
                r["imageId"].as_str().expect("imageId").to_owned(),
                r.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn amis_shows_status_users_and_what_prune_would_do_and_prune_deletes_only_when_confirmed() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let services = emu.services(&[]).await;
    let ty = unique_type("ctl-amis");
    let ids = images(&emu, &ty, 3).await;
    publish(
        &services,
        &ty,
        &[
            (version(3), in_r1(&ids[2]), VersionStatus::Published),
            (version(2), in_r1(&ids[1]), VersionStatus::Published),
            (version(1), in_r1(&ids[0]), VersionStatus::Revoked),
        ],
    )
    .await;
    // A Name without the run's type, so the table's wrapping cannot split what the snapshot replaces.
    let name = "ctl-amis-worker-1".to_owned();
    let instance = emu
        .run_instance(R1, &ids[1], &[(tags::TYPE, &ty), ("Name", &name)])
        .await;

    // The images are minutes old: let prune judge them by their versions, not their age.
    let young_ok = ("GOLDEN_PRUNE_MIN_AGE_HOURS", "0");
    let report = json_of_env(&["amis", &ty, "--output", "json"], young_ok, 0);
    let rows = rows_by_image(&report);
    assert_eq!(rows.len(), 3, "{report}");
    let current = &rows[&ids[2]];
    assert_eq!(current["status"], "current");
    assert_eq!(current["prune"], "keep");
    assert_eq!(current["version"], version(3).as_str());
    let used = &rows[&ids[1]];
    assert_eq!(used["status"], "published");
    assert_eq!(used["instances"], json!({ instance.clone(): name }));
    assert_eq!(used["prune"], "keep");
    let revoked = &rows[&ids[0]];
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["prune"], "delete", "{report}");
    assert!(
        revoked["why"].as_array().is_some_and(|w| w
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.starts_with("revoked")))),
        "{report}"
    );

    // The JSON and the table, with the run's ids replaced: what scripts and people read.
    let normalise = |text: &str| {
        let mut text = text.to_owned();
        for (i, id) in ids.iter().enumerate() {
            // Same length as the ids, so the columns stay aligned.
            text = text.replace(id, &format!("ami-{:0>17}", i + 1));
        }
        text.replace(&instance, "i-00000000000000001")
            .replace(&ty, "TYPE")
    };
    let json = serde_json::to_string_pretty(&report).expect("JSON");
    insta::assert_snapshot!("amis_json", normalise(&json));

    let table = goldenctl()
        .env(young_ok.0, young_ok.1)
        .args(["amis", &ty])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let table = String::from_utf8(table).expect("utf-8");
    common::assert_fits_100_columns(&table);
    insta::assert_snapshot!("amis_table", normalise(&table));

    // prune: off a terminal, it shows its plan and refuses to act without --yes; --dry-run deletes nothing.
    goldenctl()
        .env(young_ok.0, young_ok.1)
        .arg("prune")
        .assert()
        .code(1)
        .stdout(predicate::str::contains(ids[0].as_str()))
        .stderr(predicate::str::contains("pass --yes"));
    let plan = json_of_env(&["prune", "--dry-run", "--output", "json"], young_ok, 0);
    assert_eq!(plan["dryRun"], true);
    assert!(emu.image_exists(R1, &ids[0]).await);
    let done = json_of_env(&["prune", "--yes", "--output", "json"], young_ok, 0);
    assert_eq!(done["dryRun"], false);
    assert!(
        done["deregistered"].as_array().is_some_and(|d| d
            .iter()
            .any(|i| i.as_str().is_some_and(|i| i.contains(ids[0].as_str())))),
        "{done}"
    );
    assert!(
        !emu.image_exists(R1, &ids[0]).await,
        "the revoked image is gone"
    );
    for kept in &ids[1..] {
        assert!(emu.image_exists(R1, kept).await, "{kept} kept");
    }
}

fn json_of_env(args: &[&str], (key, value): (&str, &str), code: i32) -> Value {
    let out = goldenctl()
        .env(key, value)
        .args(args)
        .assert()
        .code(code)
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).expect("goldenctl printed JSON")
}

#[tokio::test]
async fn revoke_then_recycle_terminates_instances_on_the_revoked_image_now_and_stale_ones_on_request(
) {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let services = emu.services(&[]).await;
    let ty = unique_type("ctl-recycle");
    let ids = images(&emu, &ty, 3).await;
    publish(
        &services,
        &ty,
        &[
            (version(3), in_r1(&ids[2]), VersionStatus::Published),
            (version(2), in_r1(&ids[1]), VersionStatus::Published),
            (version(1), in_r1(&ids[0]), VersionStatus::Published),
        ],
    )
    .await;
    let type_tag = [(tags::TYPE, ty.as_str())];
    let on_v3 = emu.run_instance(R1, &ids[2], &type_tag).await;
    let on_v2 = emu.run_instance(R1, &ids[1], &type_tag).await;
    let on_v1 = emu.run_instance(R1, &ids[0], &type_tag).await;

    json_of(
        &[
            "revoke",
            &ty,
            version(3).as_str(),
            "--reason",
            "bad kernel",
            "--yes",
            "--output",
            "json",
        ],
        0,
    );
    // Now v3 is revoked, v2 current and v1 stale. Acting terminates only what a confirmed plan listed:
    // an instance outdated since the plan was shown is reported, not terminated.
    let approved = std::collections::BTreeSet::new();
    let unconfirmed =
        golden_core::lifecycle::enforce::recycle(&services, &ty, true, false, Some(&approved))
            .await
            .expect("recycle");
    assert!(unconfirmed.acted.is_empty(), "{unconfirmed:?}");
    assert!(
        unconfirmed
            .decisions
            .iter()
            .any(|d| d.instance_id == on_v3 && d.note.contains("not in the confirmed plan")),
        "{unconfirmed:?}"
    );
    assert_eq!(emu.instance_state(R1, &on_v3).await, "running");

    let plan = json_of(
        &[
            "recycle",
            &ty,
            "--revoked-only",
            "--dry-run",
            "--output",
            "json",
        ],
        0,
    );
    let acting: Vec<&str> = plan["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .filter(|d| d["act"] == true)
        .filter_map(|d| d["instanceId"].as_str())
        .collect();
    assert_eq!(acting, vec![on_v3.as_str()], "{plan}");
    assert_eq!(
        emu.instance_state(R1, &on_v3).await,
        "running",
        "a dry run acts on nothing"
    );

    let done = json_of(
        &[
            "recycle",
            &ty,
            "--revoked-only",
            "--yes",
            "--output",
            "json",
        ],
        0,
    );
    assert_eq!(done["acted"], json!([on_v3]), "{done}");
    assert!(matches!(
        emu.instance_state(R1, &on_v3).await.as_str(),
        "terminated" | "shutting-down"
    ));
    assert_eq!(
        emu.instance_state(R1, &on_v1).await,
        "running",
        "stale: left by --revoked-only"
    );

    let done = json_of(&["recycle", &ty, "--yes", "--output", "json"], 0);
    assert_eq!(done["acted"], json!([on_v1]), "{done}");
    assert_eq!(
        emu.instance_state(R1, &on_v2).await,
        "running",
        "current: never recycled"
    );

    // Nothing left to do: no question, exit 0.
    goldenctl()
        .args(["recycle", &ty])
        .assert()
        .code(0)
        .stderr(predicate::str::contains("nothing to do"));
    goldenctl()
        .args(["recycle", "no-such-type-ctl", "--yes"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not in the manifest"));
}

#[tokio::test]
async fn reap_and_enforce_show_their_plans_act_on_nothing_without_yes_and_reap_frees_a_dead_lock() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let services = emu.services(&[]).await;
    let ty = unique_type("ctl-enforce");
    let ids = images(&emu, &ty, 2).await;
    publish(
        &services,
        &ty,
        &[
            (version(2), in_r1(&ids[1]), VersionStatus::Published),
            (version(1), in_r1(&ids[0]), VersionStatus::Revoked),
        ],
    )
    .await;
    let on_revoked = emu
        .run_instance(R1, &ids[0], &[(tags::TYPE, ty.as_str())])
        .await;

    let plan = json_of(&["enforce", "--dry-run", "--output", "json"], 0);
    let mine = plan["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .find(|d| d["instanceId"] == on_revoked.as_str())
        .cloned()
        .expect("the instance on a revoked image is in the plan");
    assert_eq!(mine["act"], true, "{mine}");
    assert_eq!(mine["verdict"]["verdict"], "revoked", "{mine}");
    goldenctl()
        .arg("enforce")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("pass --yes"));
    assert_eq!(emu.instance_state(R1, &on_revoked).await, "running");

    // A lock held by an execution that does not exist (it died and its history expired).
    let lock = format!("locks/{ty}.json");
    let record = json!({
        "type": ty,
        "executionId": format!("{}:{ty}-gone", emu.state_machine_arn.replacen(":stateMachine:", ":execution:", 1)),
        "version": version(1).as_str(),
        "acquiredAt": "2026-10-01T01:15:00Z",
        "deadline": "2026-10-01T03:15:00Z"
    });
    emu.s3()
        .put_object()
        .bucket(&emu.bucket)
        .key(&lock)
        .body(record.to_string().into_bytes().into())
        .send()
        .await
        .expect("PutObject lock");
    let plan = json_of(&["reap", "--dry-run", "--output", "json"], 0);
    assert_eq!(plan["dryRun"], true, "{plan}");
    assert!(
        plan["locksReleased"]
            .as_array()
            .is_some_and(|l| l.iter().any(|t| t == ty.as_str())),
        "{plan}"
    );
    goldenctl()
        .arg("reap")
        .assert()
        .code(1)
        .stdout(predicate::str::contains(lock.as_str()))
        .stderr(predicate::str::contains("pass --yes"));
    assert!(
        emu.object(&lock).await.is_some(),
        "not confirmed: the lock stays"
    );
    let done = json_of(&["reap", "--yes", "--output", "json"], 0);
    assert_eq!(done["dryRun"], false, "{done}");
    assert!(
        emu.object(&lock).await.is_none(),
        "the dead execution's lock is freed"
    );
}
