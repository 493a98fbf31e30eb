//! The lifecycle functions (prune, reap-builders, enforce-freshness) and revoke/promote against the
//! emulator: a realistic estate of images, instances, launch templates and parameters in moto, the real
//! handlers acting on it, and a check of what is left. Run under `make test`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use golden_core::bake::Services;
use golden_core::lifecycle::{enforce, prune, reap, release, Trigger};
use golden_core::manifest::VersionStatus;
use golden_core::publishing::{update_manifest, MANIFEST_KEY};
use golden_core::retention::{Action, Reason};
use golden_core::tags;
use golden_it::{entry, ok, publish, unique_type, version, Emulator, SERIAL};
use serde_json::{json, Value};

const R1: &str = "us-east-1";
const R2: &str = "us-west-2";

struct Estate {
    /// (type, region, version number) -> (image id, snapshot ids)
    images: BTreeMap<(String, String, u32), (String, Vec<String>)>,
}

impl Estate {
    fn id(&self, ty: &str, region: &str, n: u32) -> &str {
        &self.images[&(ty.to_owned(), region.to_owned(), n)].0
    }
}

async fn build_estate(emu: &Emulator, types: &[String], versions: u32) -> Estate {
    let mut images = BTreeMap::new();
    for ty in types {
        for region in [R1, R2] {
            for n in 1..=versions {
                let v = version(n);
                let name = format!("golden-{ty}-{v}");
                let tags = [
                    (tags::ROLE, "image"),
                    (tags::TYPE, ty.as_str()),
                    (tags::VERSION, v.as_str()),
                ];
                let made = emu.register_image(region, &name, &tags).await;
                images.insert((ty.clone(), region.to_owned(), n), made);
            }
        }
    }
    Estate { images }
}

fn images_of(estate: &Estate, ty: &str, n: u32) -> BTreeMap<String, String> {
    [R1, R2]
        .iter()
        .map(|r| ((*r).to_owned(), estate.id(ty, r, n).to_owned()))
        .collect()
}

#[tokio::test]
async fn prune_deletes_exactly_the_unprotected_images_with_their_snapshots() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let settings = [
        ("GOLDEN_PRUNE_MIN_AGE_HOURS", "0"),
        ("GOLDEN_PRUNE_MAX_DELETES", "100"),
    ];
    let services = emu.services(&settings).await;
    let prune_fn = emu.function_services("Prune", &settings).await;
    // GIVEN 3 types x 2 regions x 15 versions
    let (a, b, c) = (
        unique_type("it-prune-a"),
        unique_type("it-prune-b"),
        unique_type("it-prune-c"),
    );
    let types = [a.clone(), b.clone(), c.clone()];
    let estate = build_estate(&emu, &types, 15).await;
    // the manifest publishes v13..v15 of each type (v15 current) and A's v14 is revoked
    for ty in &types {
        let status14 = if ty == &a {
            VersionStatus::Revoked
        } else {
            VersionStatus::Published
        };
        publish(
            &services,
            ty,
            &[
                (
                    version(15),
                    images_of(&estate, ty, 15),
                    VersionStatus::Published,
                ),
                (version(14), images_of(&estate, ty, 14), status14),
                (
                    version(13),
                    images_of(&estate, ty, 13),
                    VersionStatus::Published,
                ),
            ],
        )
        .await;
    }
    // a running instance on A v2 (us-east-1), a stopped one on B v3 (us-west-2)
    let running = emu
        .run_instance(R1, estate.id(&a, R1, 2), &[("Name", "fleet-a")])
        .await;
    let stopped = emu
        .run_instance(R2, estate.id(&b, R2, 3), &[("Name", "fleet-b")])
        .await;
    emu.ec2(R2)
        .stop_instances()
        .instance_ids(&stopped)
        .send()
        .await
        .expect("stop");
    // a launch template on C v1 (us-east-1), one of our parameters on C v2 (us-west-2), a keep tag on A v4 (us-west-2)
    emu.ec2(R1)
        .create_launch_template()
        .launch_template_name(format!("{c}-lt"))
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(estate.id(&c, R1, 1))
                .build(),
        )
        .send()
        .await
        .expect("CreateLaunchTemplate");
    emu.ssm(R2)
        .put_parameter()
        .name(format!("/golden-ami/{c}/pinned"))
        .value(estate.id(&c, R2, 2))
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .data_type("aws:ec2:image")
        .overwrite(true)
        .send()
        .await
        .expect("PutParameter");
    emu.ec2(R2)
        .create_tags()
        .resources(estate.id(&a, R2, 4))
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key(tags::KEEP)
                .value("true")
                .build(),
        )
        .send()
        .await
        .expect("CreateTags");

    // and an orphan: a snapshot of ours whose image was deregistered by hand
    let (gone_image, orphan) = emu
        .register_image(
            R1,
            &format!("golden-{a}-orphan"),
            &[(tags::ROLE, "image"), (tags::TYPE, a.as_str())],
        )
        .await;
    emu.ec2(R1)
        .deregister_image()
        .image_id(&gone_image)
        .send()
        .await
        .expect("DeregisterImage");
    let orphan = orphan.first().expect("a snapshot").clone();

    // the expected deletions, by (type, region, version): everything older than the newest 10 non-revoked
    // versions, and A's revoked v14, except what an instance, template, parameter or keep tag protects
    let mut expected: BTreeSet<(String, &str, u32)> = BTreeSet::new();
    for (ty, region, ns) in [
        (&a, R1, vec![14, 4, 3, 1]),
        (&a, R2, vec![14, 3, 2, 1]),
        (&b, R1, vec![5, 4, 3, 2, 1]),
        (&b, R2, vec![5, 4, 2, 1]),
        (&c, R1, vec![5, 4, 3, 2]),
        (&c, R2, vec![5, 4, 3, 1]),
    ] {
        for n in ns {
            expected.insert((ty.clone(), region, n));
        }
    }
    let ours = |d: &golden_core::retention::Decision| {
        d.image_type.as_ref().is_some_and(|t| types.contains(t))
    };
    let planned = |report: &prune::PruneReport| -> BTreeSet<(String, String, String)> {
        report
            .plan
            .as_ref()
            .expect("a plan")
            .decisions
            .iter()
            .filter(|d| ours(d) && d.action == Action::Delete)
            .map(|d| {
                (
                    d.image_type.clone().unwrap_or_default(),
                    d.region.clone(),
                    d.image_id.clone(),
                )
            })
            .collect()
    };
    let expected_ids: BTreeSet<(String, String, String)> = expected
        .iter()
        .map(|(ty, region, n)| {
            (
                ty.clone(),
                (*region).to_owned(),
                estate.id(ty, region, *n).to_owned(),
            )
        })
        .collect();

    // WHEN prune runs dry
    let dry = prune::handle(&prune_fn, Trigger::Manual { dry_run: true })
        .await
        .expect("dry run");
    // THEN it plans exactly the expected set, with reasons, and changes nothing
    assert!(dry.dry_run);
    assert_eq!(planned(&dry), expected_ids);
    assert!(dry.deregistered.is_empty() && dry.deleted_snapshots.is_empty());
    assert!(
        dry.orphan_snapshots.contains(&format!("{orphan} ({R1})")),
        "{:?}",
        dry.orphan_snapshots
    );
    assert!(
        emu.snapshot_exists(R1, &orphan).await,
        "dry run deleted the orphan"
    );
    for (ty, region, n) in &expected {
        assert!(
            emu.image_exists(region, estate.id(ty, region, *n)).await,
            "dry run deleted {ty} {region} v{n}"
        );
    }
    let reasons_of = |report: &prune::PruneReport, id: &str| -> Vec<Reason> {
        let plan = report.plan.as_ref().expect("plan");
        plan.decisions
            .iter()
            .find(|d| d.image_id == id)
            .map(|d| d.reasons.clone())
            .unwrap_or_default()
    };
    assert!(reasons_of(&dry, estate.id(&a, R1, 2))
        .iter()
        .any(|r| matches!(r, Reason::InUse { instances } if instances.contains(&running))));
    assert!(reasons_of(&dry, estate.id(&b, R2, 3))
        .iter()
        .any(|r| matches!(r, Reason::InUse { instances } if instances.contains(&stopped))));
    assert!(reasons_of(&dry, estate.id(&c, R1, 1))
        .iter()
        .any(|r| matches!(r, Reason::LaunchTemplate { .. })));
    assert!(reasons_of(&dry, estate.id(&c, R2, 2))
        .iter()
        .any(|r| matches!(r, Reason::SsmParameter { .. })));
    assert!(reasons_of(&dry, estate.id(&a, R2, 4)).contains(&Reason::KeepTag));
    assert!(reasons_of(&dry, estate.id(&a, R1, 14))
        .iter()
        .any(|r| matches!(r, Reason::Revoked { .. })));
    assert!(reasons_of(&dry, estate.id(&b, R1, 15))
        .iter()
        .any(|r| matches!(r, Reason::Current { .. })));
    assert!(reasons_of(&dry, estate.id(&b, R1, 6))
        .iter()
        .any(|r| matches!(r, Reason::Newest { rank: 9, keep: 10 })));

    // WHEN it runs for real
    let real = prune::handle(&prune_fn, Trigger::Schedule)
        .await
        .expect("prune");
    // THEN exactly those images are gone, with all their snapshots, and everything else is intact
    assert_eq!(planned(&real), expected_ids);
    for ((ty, region, n), (id, snapshots)) in &estate.images {
        let gone = expected.contains(&(ty.clone(), region.as_str(), *n));
        assert_eq!(
            !emu.image_exists(region, id).await,
            gone,
            "{ty} {region} v{n} ({id})"
        );
        for s in snapshots {
            assert_eq!(
                !emu.snapshot_exists(region, s).await,
                gone,
                "snapshot {s} of {ty} {region} v{n}"
            );
        }
    }
    assert!(
        !emu.snapshot_exists(R1, &orphan).await,
        "the orphan snapshot is deleted"
    );
    // AND a second run deletes nothing of ours
    let again = prune::handle(&prune_fn, Trigger::Schedule)
        .await
        .expect("prune again");
    assert!(planned(&again).is_empty(), "{:?}", planned(&again));
}

#[tokio::test]
async fn prune_respects_its_cap_oldest_first() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-prune-cap");
    let estate = build_estate(&emu, std::slice::from_ref(&ty), 13).await;
    let settings = [
        ("GOLDEN_PRUNE_MIN_AGE_HOURS", "0"),
        ("GOLDEN_PRUNE_MAX_DELETES", "2"),
    ];
    let services = emu.services(&settings).await;
    let prune_fn = emu.function_services("Prune", &settings).await;
    publish(
        &services,
        &ty,
        &[(
            version(13),
            images_of(&estate, &ty, 13),
            VersionStatus::Published,
        )],
    )
    .await;
    // 3 versions x 2 regions are deletable, but the cap allows 2 a run: the oldest go first
    let report = prune::handle(&prune_fn, Trigger::Schedule)
        .await
        .expect("prune");
    let plan = report.plan.expect("plan");
    assert!(plan.capped);
    assert_eq!(report.deregistered.len(), 2, "{:?}", report.deregistered);
    assert!(!emu.image_exists(R1, estate.id(&ty, R1, 1)).await);
    assert!(!emu.image_exists(R2, estate.id(&ty, R2, 1)).await);
    assert!(
        emu.image_exists(R1, estate.id(&ty, R1, 2)).await,
        "deferred by the cap"
    );
}

#[tokio::test]
async fn a_storm_of_terminations_is_pruned_once_per_type_and_region() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let settings = [("GOLDEN_PRUNE_MIN_AGE_HOURS", "0")];
    let services = emu.services(&settings).await;
    let prune_fn = emu.function_services("Prune", &settings).await;
    let ty = unique_type("it-storm");
    let estate = build_estate(&emu, std::slice::from_ref(&ty), 11).await;
    publish(
        &services,
        &ty,
        &[(
            version(11),
            images_of(&estate, &ty, 11),
            VersionStatus::Published,
        )],
    )
    .await;
    // GIVEN a spot fleet of ten on a retired image, and an instance on no golden image
    let old = estate.id(&ty, R2, 1).to_owned();
    let fleet = emu.run_instances(R2, &old, &[("Name", "spot")], 10).await;
    let stranger = emu
        .run_instance(R2, &emu.base_ami, &[("Name", "other")])
        .await;
    // WHEN all of them terminate, and their events reach prune as one SQS batch (each delivered twice,
    // as SQS may)
    let mut ids = fleet.clone();
    ids.push(stranger.clone());
    emu.ec2(R2)
        .terminate_instances()
        .set_instance_ids(Some(ids.clone()))
        .send()
        .await
        .expect("terminate");
    let record = |id: &str| {
        let mut event: Value =
            serde_json::from_str(include_str!("../events/ec2-terminated.json")).expect("sample");
        event["region"] = json!(R2);
        event["detail"]["instance-id"] = json!(id);
        json!({ "messageId": id, "eventSource": "aws:sqs", "body": event.to_string() })
    };
    let records: Vec<Value> = ids.iter().chain(ids.iter()).map(|id| record(id)).collect();
    let report = prune::handle_batch(
        &prune_fn,
        match Trigger::try_from(json!({ "Records": records })).expect("a batch") {
            Trigger::Batch(events) => events,
            other => panic!("{other:?}"),
        },
    )
    .await
    .expect("prune batch");
    // THEN the type and region are planned once for the 22 events, the stranger's are ignored, and the
    // retired image is gone
    assert_eq!(report.events, 22);
    assert_eq!(report.runs.len(), 1, "{report:?}");
    assert_eq!(
        report.runs[0].scope,
        prune::Scope::One {
            region: R2.into(),
            image_type: ty.clone()
        }
    );
    assert_eq!(report.ignored.len(), 2, "{:?}", report.ignored);
    assert!(!emu.image_exists(R2, &old).await);
    // and the real function takes the batch as Lambda delivers it
    let out = ok(
        emu.invoke("prune", &json!({ "Records": [record(&stranger)] })),
        "prune batch through the Lambda",
    );
    assert_eq!(out["events"], 1);
    assert_eq!(out["runs"], json!([]));
}

#[tokio::test]
async fn a_launch_templates_latest_version_protects_its_image_as_its_default_does() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let settings = [("GOLDEN_PRUNE_MIN_AGE_HOURS", "0"), ("GOLDEN_REGIONS", R1)];
    let prune_fn = emu.function_services("Prune", &settings).await;
    let ty = unique_type("it-lt-latest");
    // GIVEN twelve versions (the default keep is 10, so v1 and v2 are out of it), and a launch template
    // whose default version (1) names v1's image and whose latest (2, not the default) names v2's
    let estate = build_estate(&emu, std::slice::from_ref(&ty), 12).await;
    let lt = format!("{ty}-lt");
    let data = |image: &str| {
        aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
            .image_id(image)
            .build()
    };
    emu.ec2(R1)
        .create_launch_template()
        .launch_template_name(&lt)
        .launch_template_data(data(estate.id(&ty, R1, 1)))
        .send()
        .await
        .expect("CreateLaunchTemplate");
    emu.ec2(R1)
        .create_launch_template_version()
        .launch_template_name(&lt)
        .launch_template_data(data(estate.id(&ty, R1, 2)))
        .send()
        .await
        .expect("CreateLaunchTemplateVersion");
    // WHEN prune plans
    let report = prune::handle(&prune_fn, Trigger::Manual { dry_run: true })
        .await
        .expect("prune plan");
    let plan = report.plan.expect("a plan");
    let decision = |n: u32| {
        plan.decisions
            .iter()
            .find(|d| d.image_id == estate.id(&ty, R1, n))
            .unwrap_or_else(|| panic!("v{n} decided"))
            .clone()
    };
    // THEN both images are kept for the template, each naming its version of it
    for (n, which) in [(1, "v1 (default)"), (2, "v2 (latest)")] {
        let d = decision(n);
        assert_eq!(d.action, Action::Keep, "{d:?}");
        let refs = d
            .reasons
            .iter()
            .find_map(|r| match r {
                Reason::LaunchTemplate { references } => Some(references.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("v{n} not kept for the template: {d:?}"));
        assert!(refs.iter().any(|r| r.contains(which)), "{refs:?}");
    }
    let _ = emu
        .ec2(R1)
        .delete_launch_template()
        .launch_template_name(&lt)
        .send()
        .await;
}

#[tokio::test]
async fn a_running_event_of_an_instance_on_a_revoked_image_recycles_it_at_once() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let settings = [("GOLDEN_REGIONS", R1)];
    let base = emu.services(&settings).await;
    let enforce_fn = emu.function_services("EnforceFreshness", &settings).await;
    let f = fleet(&emu, &base, "it-revoked-event").await;
    // GIVEN an instance of the type on v1's image, which is revoked
    let id = emu
        .run_instance(R1, &f.revoked_image, &[(tags::TYPE, f.ty.as_str())])
        .await;
    // WHEN its `running` event arrives, at the very start of the rollout window
    let mut event: Value =
        serde_json::from_str(include_str!("../events/ec2-running.json")).expect("sample");
    event["region"] = json!(R1);
    event["detail"]["instance-id"] = json!(id);
    let services = at(&enforce_fn, f.current_created);
    let report = enforce::handle(&services, Trigger::try_from(event).expect("event"))
        .await
        .expect("enforce");
    // THEN it is terminated now, not staggered, and the report says it runs a revoked version
    assert_eq!(report.acted, vec![id.clone()], "{report:?}");
    assert!(matches!(
        report.decisions[0].verdict,
        golden_core::freshness::Verdict::Revoked { .. }
    ));
    assert!(
        report.decisions[0].note.contains("of revoked version"),
        "{}",
        report.decisions[0].note
    );
    assert!(matches!(
        emu.instance_state(R1, &id).await.as_str(),
        "terminated" | "shutting-down"
    ));
}

#[tokio::test]
async fn terminating_the_last_user_of_a_retired_ami_deletes_it_now() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let services = emu.services(&[("GOLDEN_PRUNE_MIN_AGE_HOURS", "0")]).await;
    let prune_fn = emu
        .function_services("Prune", &[("GOLDEN_PRUNE_MIN_AGE_HOURS", "0")])
        .await;
    let ty = unique_type("it-last-user");
    let estate = build_estate(&emu, std::slice::from_ref(&ty), 11).await;
    publish(
        &services,
        &ty,
        &[(
            version(11),
            images_of(&estate, &ty, 11),
            VersionStatus::Published,
        )],
    )
    .await;
    let old = estate.id(&ty, R2, 1).to_owned();
    let user = emu.run_instance(R2, &old, &[("Name", "last-user")]).await;
    prune::handle(&prune_fn, Trigger::Schedule)
        .await
        .expect("prune");
    assert!(
        emu.image_exists(R2, &old).await,
        "kept while an instance uses it"
    );

    // WHEN its last user terminates and EC2 says so
    emu.ec2(R2)
        .terminate_instances()
        .instance_ids(&user)
        .send()
        .await
        .expect("terminate");
    let mut event: Value =
        serde_json::from_str(include_str!("../events/ec2-terminated.json")).expect("sample event");
    event["region"] = json!(R2);
    event["detail"]["instance-id"] = json!(user);
    let report = prune::handle(&prune_fn, Trigger::try_from(event).expect("a valid event"))
        .await
        .expect("prune");
    // THEN only that type and region are re-planned, and the image is deleted at once
    assert_eq!(
        report.scope,
        prune::Scope::One {
            region: R2.into(),
            image_type: ty.clone()
        }
    );
    assert!(!emu.image_exists(R2, &old).await);
    assert!(emu.image_exists(R1, estate.id(&ty, R1, 11)).await);
}

#[tokio::test]
async fn reaper_spares_a_running_bake_and_reaps_the_builder_and_tester_of_an_aborted_one() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let reap_fn = emu.function_services("ReapBuilders", &[]).await;
    let ty = unique_type("it-reap");
    // GIVEN a bake sitting in its first wait (pollSeconds 60)
    let input = json!({ "type": ty, "recipe": emu.recipe(&ty, &[]), "pollSeconds": 60 });
    let arn = emu.start(&format!("{ty}-1"), &input).await;
    let builder = loop {
        if let Some(i) = emu
            .instances(R1, &[(tags::EXECUTION, arn.as_str())])
            .await
            .first()
        {
            break i.instance_id().expect("id").to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // and a tester of the same execution, tagged as LaunchTester tags one
    let tester = emu
        .run_instance(
            R1,
            &emu.base_ami,
            &[
                (tags::ROLE, tags::ROLE_TESTER),
                (tags::TYPE, &ty),
                (tags::EXECUTION, arn.as_str()),
            ],
        )
        .await;
    let lock_key = format!("locks/{ty}.json");
    assert!(emu.object(&lock_key).await.is_some());
    // WHEN the reaper sweeps while the execution runs THEN it leaves the builder, the tester and the lock alone
    let report = reap::handle(&reap_fn, Trigger::Schedule)
        .await
        .expect("reap");
    let mine = report
        .builders
        .iter()
        .find(|b| b.instance_id == builder)
        .expect("the builder was considered");
    assert!(
        matches!(mine.verdict, golden_core::reaping::ReapVerdict::Keep { .. }),
        "{:?}",
        mine.verdict
    );
    assert_eq!(emu.instance_state(R1, &builder).await, "running");
    assert_eq!(emu.instance_state(R1, &tester).await, "running");
    assert!(emu.object(&lock_key).await.is_some());

    // WHEN the execution is aborted (no Catch runs for ABORTED) and EventBridge reports it
    emu.sfn()
        .stop_execution()
        .execution_arn(&arn)
        .send()
        .await
        .expect("StopExecution");
    let mut event: Value =
        serde_json::from_str(include_str!("../events/sfn-execution-aborted.json")).expect("sample");
    event["detail"]["executionArn"] = json!(arn);
    let report = reap::handle(&reap_fn, Trigger::try_from(event).expect("valid event"))
        .await
        .expect("reap");
    // THEN its builder is terminated and the type's lock is free
    let mine = report
        .builders
        .iter()
        .find(|b| b.instance_id == builder)
        .expect("the builder was considered");
    assert!(
        matches!(mine.verdict, golden_core::reaping::ReapVerdict::Reap { .. }),
        "{:?}",
        mine.verdict
    );
    assert!(matches!(
        emu.instance_state(R1, &builder).await.as_str(),
        "terminated" | "shutting-down"
    ));
    // and so is its tester: the reaper knows testers like builders
    assert!(
        report.builders.iter().any(|b| b.instance_id == tester),
        "the tester was considered: {:?}",
        report.builders
    );
    assert!(matches!(
        emu.instance_state(R1, &tester).await.as_str(),
        "terminated" | "shutting-down"
    ));
    assert!(emu.object(&lock_key).await.is_none(), "lock released");
}

struct Fleet {
    ty: String,
    current_created: DateTime<Utc>,
    revoked_image: String,
    stale_image: String,
    fresh_image: String,
}

/// Turns termination protection of an instance in R1 on or off.
async fn set_termination_protection(emu: &Emulator, instance_id: &str, on: bool) {
    emu.ec2(R1)
        .modify_instance_attribute()
        .instance_id(instance_id)
        .disable_api_termination(
            aws_sdk_ec2::types::AttributeBooleanValue::builder()
                .value(on)
                .build(),
        )
        .send()
        .await
        .expect("ModifyInstanceAttribute");
}

/// The cleanup after a termination-protection test: lets the instance go, then terminates it, so later
/// sweeps of the shared emulator do not meet it.
async fn unprotect_and_terminate(emu: &Emulator, instance_id: &str) {
    set_termination_protection(emu, instance_id, false).await;
    emu.ec2(R1)
        .terminate_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .expect("clean up");
}

/// Sets (or, with None, removes) a type's `becameCurrentAt` in the stored manifest.
async fn set_became_current_at(emu: &Emulator, ty: &str, at: Option<DateTime<Utc>>) {
    let mut manifest: Value =
        serde_json::from_slice(&emu.object(MANIFEST_KEY).await.expect("manifest")).expect("json");
    let entry = manifest["types"][ty].as_object_mut().expect("type");
    match at {
        Some(at) => entry.insert("becameCurrentAt".into(), json!(at.to_rfc3339())),
        None => entry.remove("becameCurrentAt"),
    };
    emu.s3()
        .put_object()
        .bucket(&emu.bucket)
        .key(MANIFEST_KEY)
        .body(manifest.to_string().into_bytes().into())
        .send()
        .await
        .expect("put manifest");
}

/// A type with v3 current, v2 published and v1 revoked, each with an image in us-east-1. Its versions
/// are dated October 2026 while moto launches instances now, so the manifest is left without
/// `becameCurrentAt` (as one written before it was recorded): the rollout counts from v3's creation, and
/// no instance looks launched after the switch.
async fn fleet(emu: &Emulator, services: &Services, prefix: &str) -> Fleet {
    let ty = unique_type(prefix);
    let mut ids = Vec::new();
    for n in 1..=3 {
        let v = version(n);
        let tags = [
            (tags::ROLE, "image"),
            (tags::TYPE, ty.as_str()),
            (tags::VERSION, v.as_str()),
        ];
        ids.push(
            emu.register_image(R1, &format!("golden-{ty}-{v}"), &tags)
                .await
                .0,
        );
    }
    let one = |id: &String| BTreeMap::from([(R1.to_owned(), id.clone())]);
    publish(
        services,
        &ty,
        &[
            (version(3), one(&ids[2]), VersionStatus::Published),
            (version(2), one(&ids[1]), VersionStatus::Published),
            (version(1), one(&ids[0]), VersionStatus::Revoked),
        ],
    )
    .await;
    set_became_current_at(emu, &ty, None).await;
    Fleet {
        ty,
        current_created: version(3).created_at(),
        revoked_image: ids[0].clone(),
        stale_image: ids[1].clone(),
        fresh_image: ids[2].clone(),
    }
}

fn at(services: &Services, when: DateTime<Utc>) -> Services {
    let mut s = services.clone();
    s.clock = Arc::new(move || when);
    s
}

#[tokio::test]
async fn freshness_recycles_revoked_and_stale_instances_but_never_builders_or_exempt_ones() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let settings = [
        ("GOLDEN_REGIONS", R1),
        ("GOLDEN_ROLLOUT_MAX_FRACTION", "1.0"),
    ];
    let base = emu.services(&settings).await;
    let enforce_fn = emu.function_services("EnforceFreshness", &settings).await;
    let f = fleet(&emu, &base, "it-fresh").await;
    let typed = |extra: &[(&'static str, &'static str)]| {
        let mut t = vec![(tags::TYPE, f.ty.clone())];
        t.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        t
    };
    let run = |image: String, t: Vec<(&'static str, String)>| {
        let emu = &emu;
        async move {
            let t: Vec<(&str, &str)> = t.iter().map(|(k, v)| (*k, v.as_str())).collect();
            emu.run_instance(R1, &image, &t).await
        }
    };
    let on_revoked = run(f.revoked_image.clone(), typed(&[])).await;
    let on_stale = run(f.stale_image.clone(), typed(&[])).await;
    let on_current = run(f.fresh_image.clone(), typed(&[])).await;
    let builder = run(f.stale_image.clone(), typed(&[(tags::ROLE, "builder")])).await;
    // (any case of "true" exempts)
    let exempt = run(f.revoked_image.clone(), typed(&[(tags::EXEMPT, "TRUE")])).await;

    // WHEN a sweep runs past the rollout window of the current version
    let services = at(&enforce_fn, f.current_created + Duration::hours(4));
    let report = enforce::handle(&services, Trigger::Schedule)
        .await
        .expect("sweep");
    // THEN the revoked and the stale instances are terminated; the rest are untouched
    for id in [&on_revoked, &on_stale] {
        assert!(
            report.acted.contains(id),
            "{id} not acted on: {:?}",
            report.decisions
        );
        assert!(matches!(
            emu.instance_state(R1, id).await.as_str(),
            "terminated" | "shutting-down"
        ));
    }
    for id in [&on_current, &builder, &exempt] {
        assert!(!report.acted.contains(id));
        assert_eq!(emu.instance_state(R1, id).await, "running", "{id}");
    }
}

#[tokio::test]
async fn a_launcher_pinned_to_a_revoked_image_cannot_make_enforcement_loop() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let settings = [
        ("GOLDEN_REGIONS", R1),
        ("GOLDEN_ROLLOUT_MAX_FRACTION", "0.1"),
    ];
    let base = emu.services(&settings).await;
    let enforce_fn = emu.function_services("EnforceFreshness", &settings).await;
    // GIVEN a type whose v1 is revoked (the manifest records when v3 became current), and a launch
    // template, as an Auto Scaling group would use, that still names v1's image
    let f = fleet(&emu, &base, "it-pinned").await;
    // (as a revoke or promote would have stamped it, longer ago than the grace the parameters get)
    let switched = Utc::now() - golden_core::freshness::PINNED_GRACE - Duration::minutes(5);
    set_became_current_at(
        &emu,
        &f.ty,
        Some(
            switched
                .duration_trunc(Duration::seconds(1))
                .expect("trunc"),
        ),
    )
    .await;
    let lt = format!("{}-lt", f.ty);
    emu.ec2(R1)
        .create_launch_template()
        .launch_template_name(&lt)
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(&f.revoked_image)
                .build(),
        )
        .send()
        .await
        .expect("CreateLaunchTemplate");
    let launch = || async {
        let tags = aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
            .tags(
                aws_sdk_ec2::types::Tag::builder()
                    .key(tags::TYPE)
                    .value(&f.ty)
                    .build(),
            )
            .build();
        emu.ec2(R1)
            .run_instances()
            .launch_template(
                aws_sdk_ec2::types::LaunchTemplateSpecification::builder()
                    .launch_template_name(&lt)
                    .build(),
            )
            .min_count(1)
            .max_count(1)
            .tag_specifications(tags)
            .send()
            .await
            .expect("RunInstances")
            .instances()[0]
            .instance_id()
            .expect("id")
            .to_owned()
    };
    let event = |id: &str| {
        let mut event: Value =
            serde_json::from_str(include_str!("../events/ec2-running.json")).expect("sample");
        event["region"] = json!(R1);
        event["detail"]["instance-id"] = json!(id);
        Trigger::try_from(event).expect("event")
    };
    let mut launched = Vec::new();
    // WHEN five times in a row the launcher starts an instance and its `running` event arrives
    let mut notes = Vec::new();
    for _ in 0..5 {
        let id = launch().await;
        launched.push(id.clone());
        let report = enforce::handle(&enforce_fn, event(&id))
            .await
            .expect("enforce");
        assert!(report.acted.is_empty(), "{report:?}");
        notes.push(report.decisions[0].clone());
    }
    // THEN none is acted on: each was launched after the switch, so each names its launcher
    for d in &notes {
        assert!(
            matches!(
                d.verdict,
                golden_core::freshness::Verdict::PinnedLauncher { revoked: true, .. }
            ),
            "{d:?}"
        );
        assert!(d.note.contains("its launcher"), "{}", d.note);
        assert_eq!(emu.instance_state(R1, &d.instance_id).await, "running");
    }

    // GIVEN the same with a manifest written before the moment was recorded (guard (a) alone)
    set_became_current_at(&emu, &f.ty, None).await;
    // WHEN five more launches and events follow, each acted-on instance relaunched
    let mut acted = Vec::new();
    let mut deferred = Vec::new();
    for _ in 0..5 {
        let id = launch().await;
        launched.push(id.clone());
        let report = enforce::handle(&enforce_fn, event(&id))
            .await
            .expect("enforce");
        acted.extend(report.acted.clone());
        deferred.extend(report.decisions.into_iter().filter(|d| !d.act));
    }
    // THEN at most the cap (a tenth of the type's running fleet, at least one) is acted on in the hour,
    // and each of the rest says why
    let result = (acted.clone(), deferred.clone());
    for id in &launched {
        let _ = emu
            .ec2(R1)
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await;
    }
    let (acted, deferred) = result;
    assert_eq!(acted.len(), 1, "{acted:?}");
    assert_eq!(deferred.len(), 4, "{deferred:?}");
    for d in &deferred {
        assert!(
            d.note.starts_with(&format!(
                "due, but the event path already acted on 1 {} instance(s) in the last 60m",
                f.ty
            )),
            "{}",
            d.note
        );
    }
}

#[tokio::test]
async fn freshness_inside_the_window_follows_the_deterministic_stagger_and_the_sweep_cap() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let settings = [
        ("GOLDEN_REGIONS", R1),
        ("GOLDEN_ROLLOUT_MAX_FRACTION", "1.0"),
    ];
    let base = emu.services(&settings).await;
    let enforce_fn = emu.function_services("EnforceFreshness", &settings).await;
    let f = fleet(&emu, &base, "it-stagger").await;
    let stale = emu
        .run_instances(R1, &f.stale_image, &[(tags::TYPE, f.ty.as_str())], 8)
        .await;
    // and eight on the current image, so the event path's cap (GOLDEN_ROLLOUT_MAX_FRACTION 1.0 of the
    // running fleet) stays above what this test recycles: the stagger alone decides here
    let _ballast = emu
        .run_instances(R1, &f.fresh_image, &[(tags::TYPE, f.ty.as_str())], 8)
        .await;
    // halfway through the window, an instance's `running` event recycles it iff its stagger is below 1/2
    let services = at(&enforce_fn, f.current_created + Duration::minutes(90));
    for id in &stale {
        let mut event: Value =
            serde_json::from_str(include_str!("../events/ec2-running.json")).expect("sample");
        event["region"] = json!(R1);
        event["detail"]["instance-id"] = json!(id);
        let report = enforce::handle(&services, Trigger::try_from(event.clone()).expect("event"))
            .await
            .expect("enforce");
        let expected = golden_core::freshness::stagger(id) < 0.5;
        assert_eq!(
            report.acted.contains(id),
            expected,
            "{id}: stagger {}",
            golden_core::freshness::stagger(id)
        );
        let running = emu.instance_state(R1, id).await == "running";
        assert_eq!(running, !expected);
        // the same event again decides the same: an instance spared once is spared again
        let again = enforce::handle(&services, Trigger::try_from(event).expect("event"))
            .await
            .expect("enforce");
        assert!(again.acted.is_empty(), "{id}: {:?}", again.decisions);
        if !expected {
            let decision = again
                .decisions
                .iter()
                .find(|d| &d.instance_id == id)
                .expect("decided again");
            assert!(!decision.act, "{id} decided differently the second time");
        }
    }

    // a sweep past the window with a 25% cap recycles at most a quarter of the running fleet of the type
    let cap_settings = [
        ("GOLDEN_REGIONS", R1),
        ("GOLDEN_ROLLOUT_MAX_FRACTION", "0.25"),
    ];
    let cap = emu.services(&cap_settings).await;
    let enforce_fn = emu
        .function_services("EnforceFreshness", &cap_settings)
        .await;
    let g = fleet(&emu, &cap, "it-cap").await;
    let fleet_ids = emu
        .run_instances(R1, &g.stale_image, &[(tags::TYPE, g.ty.as_str())], 8)
        .await;
    let services = at(&enforce_fn, g.current_created + Duration::hours(5));
    let report = enforce::handle(&services, Trigger::Schedule)
        .await
        .expect("sweep");
    let acted: Vec<&String> = report
        .acted
        .iter()
        .filter(|id| fleet_ids.contains(id))
        .collect();
    assert_eq!(acted.len(), 2, "25% of 8 running: {acted:?}");
}

#[tokio::test]
async fn freshness_action_stop_stops_and_report_only_reports() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let settings = [
        ("GOLDEN_REGIONS", R1),
        ("GOLDEN_ROLLOUT_MAX_FRACTION", "1.0"),
    ];
    let base = emu.services(&settings).await;
    let f = fleet(&emu, &base, "it-action").await;
    let on_revoked = emu
        .run_instance(R1, &f.revoked_image, &[(tags::TYPE, f.ty.as_str())])
        .await;
    let when = f.current_created + Duration::minutes(10);

    let report_only_fn = emu
        .function_services(
            "EnforceFreshness",
            &[
                settings[0],
                settings[1],
                ("GOLDEN_ENFORCE_ACTION", "report"),
            ],
        )
        .await;
    let report = enforce::handle(&at(&report_only_fn, when), Trigger::Schedule)
        .await
        .expect("report");
    assert!(
        report
            .decisions
            .iter()
            .any(|d| d.instance_id == on_revoked && d.act),
        "{:?}",
        report.decisions
    );
    assert!(report.acted.is_empty());
    assert_eq!(emu.instance_state(R1, &on_revoked).await, "running");

    let stop_fn = emu
        .function_services(
            "EnforceFreshness",
            &[settings[0], settings[1], ("GOLDEN_ENFORCE_ACTION", "stop")],
        )
        .await;
    let report = enforce::handle(&at(&stop_fn, when), Trigger::Schedule)
        .await
        .expect("stop");
    assert!(report.acted.contains(&on_revoked));
    assert!(matches!(
        emu.instance_state(R1, &on_revoked).await.as_str(),
        "stopped" | "stopping"
    ));
}

#[tokio::test]
async fn freshness_does_nothing_when_the_manifest_is_unreadable() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let settings = [
        ("GOLDEN_REGIONS", R1),
        ("GOLDEN_ROLLOUT_MAX_FRACTION", "1.0"),
    ];
    let base = emu.services(&settings).await;
    let enforce_fn = emu.function_services("EnforceFreshness", &settings).await;
    let f = fleet(&emu, &base, "it-failsafe").await;
    let on_revoked = emu
        .run_instance(R1, &f.revoked_image, &[(tags::TYPE, f.ty.as_str())])
        .await;
    let good = emu.object(MANIFEST_KEY).await.expect("manifest");
    emu.s3()
        .put_object()
        .bucket(&emu.bucket)
        .key(MANIFEST_KEY)
        .body(b"{ not json".to_vec().into())
        .send()
        .await
        .expect("put");
    let result = enforce::handle(&enforce_fn, Trigger::Schedule).await;
    emu.s3()
        .put_object()
        .bucket(&emu.bucket)
        .key(MANIFEST_KEY)
        .body(good.into())
        .send()
        .await
        .expect("restore");
    let err = result.expect_err("an unreadable manifest is reported");
    assert_eq!(err.error_type(), "ManifestCorrupt");
    assert_eq!(
        emu.instance_state(R1, &on_revoked).await,
        "running",
        "fail safe: nothing was recycled"
    );
}

#[tokio::test]
async fn revoke_rolls_current_back_and_promote_moves_it_forward_with_the_parameters() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let services = emu.services(&[]).await;
    let ty = unique_type("it-release");
    let estate = build_estate(&emu, std::slice::from_ref(&ty), 3).await;
    publish(
        &services,
        &ty,
        &[
            (
                version(2),
                images_of(&estate, &ty, 2),
                VersionStatus::Published,
            ),
            (
                version(1),
                images_of(&estate, &ty, 1),
                VersionStatus::Published,
            ),
        ],
    )
    .await;
    let parameter = format!("/golden-ami/{ty}/current");
    let param = |region: &'static str| emu.parameter(region, &parameter);
    // WHEN the current version is revoked
    let revoked = release::revoke(&services, &ty, &version(2), "kernel panic on c6i", false)
        .await
        .expect("revoke");
    // THEN current rolls back to v1 and both regions' parameters follow
    assert_eq!(
        revoked
            .updated
            .manifest
            .current(&ty)
            .map(|v| v.version.clone()),
        Some(version(1))
    );
    assert_eq!(param(R1).await.as_deref(), Some(estate.id(&ty, R1, 1)));
    assert_eq!(param(R2).await.as_deref(), Some(estate.id(&ty, R2, 1)));
    // a revoked version cannot be promoted
    let err = release::promote(&services, &ty, &version(2), false)
        .await
        .expect_err("revoked");
    assert!(err.to_string().contains(version(2).as_str()), "{err}");
    // WHEN a newer version is published but not current, and promoted
    update_manifest(services.store.as_ref(), services.now(), |m| {
        m.add_version(
            &ty,
            entry(
                &version(3),
                &images_of(&estate, &ty, 3),
                VersionStatus::Published,
            ),
            false,
        )
    })
    .await
    .expect("add v3");
    let updated = release::promote(&services, &ty, &version(3), false)
        .await
        .expect("promote");
    // THEN it is current and the parameters point at it
    assert_eq!(
        updated.manifest.current(&ty).map(|v| v.version.clone()),
        Some(version(3))
    );
    assert_eq!(param(R1).await.as_deref(), Some(estate.id(&ty, R1, 3)));
    assert_eq!(param(R2).await.as_deref(), Some(estate.id(&ty, R2, 3)));
}

#[tokio::test]
async fn enforce_carries_on_past_an_instance_it_cannot_terminate_and_fails_naming_it() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let settings = [
        ("GOLDEN_REGIONS", R1),
        ("GOLDEN_ROLLOUT_MAX_FRACTION", "1.0"),
    ];
    let base = emu.services(&settings).await;
    let enforce_fn = emu.function_services("EnforceFreshness", &settings).await;
    let f = fleet(&emu, &base, "it-protected").await;
    let typed = [(tags::TYPE, f.ty.as_str())];
    // GIVEN two instances on a revoked image, the first with termination protection
    let protected = emu.run_instance(R1, &f.revoked_image, &typed).await;
    let plain = emu.run_instance(R1, &f.revoked_image, &typed).await;
    set_termination_protection(&emu, &protected, true).await;
    // WHEN a sweep runs
    let services = at(&enforce_fn, f.current_created + Duration::hours(4));
    let err = enforce::handle(&services, Trigger::Schedule)
        .await
        .expect_err("one instance cannot be terminated");
    // THEN the other one is terminated all the same, and the run fails naming the protected one
    let state = emu.instance_state(R1, &plain).await;
    unprotect_and_terminate(&emu, &protected).await;
    assert!(
        matches!(state.as_str(), "terminated" | "shutting-down"),
        "{plain} is {state}"
    );
    assert_eq!(err.error_type(), "ItemsFailed");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "enforce-freshness: 1 of the run's items failed, the rest were done: terminate "
        ) && text.contains(&format!("{protected} ({R1})"))
            && !text.contains(&plain),
        "{text}"
    );
}

#[tokio::test]
async fn reaper_carries_on_past_a_builder_it_cannot_terminate() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let reap_fn = emu.function_services("ReapBuilders", &[]).await;
    let ty = unique_type("it-reap-partial");
    // GIVEN two builders of an execution that no longer exists, the first termination-protected
    let gone = format!("arn:aws:states:{R1}:123456789012:execution:bake:{ty}-gone");
    let builder_tags = [
        (tags::ROLE, "builder"),
        (tags::TYPE, ty.as_str()),
        (tags::EXECUTION, gone.as_str()),
    ];
    let protected = emu.run_instance(R1, &emu.base_ami, &builder_tags).await;
    let plain = emu.run_instance(R1, &emu.base_ami, &builder_tags).await;
    set_termination_protection(&emu, &protected, true).await;
    // WHEN the reaper sweeps
    let err = reap::handle(&reap_fn, Trigger::Schedule)
        .await
        .expect_err("one builder cannot be terminated");
    let plain_state = emu.instance_state(R1, &plain).await;
    unprotect_and_terminate(&emu, &protected).await;
    // THEN the other builder is reaped all the same, and the run fails naming the protected one
    assert!(
        matches!(plain_state.as_str(), "terminated" | "shutting-down"),
        "{plain} is {plain_state}"
    );
    assert_eq!(err.error_type(), "ItemsFailed");
    let text = err.to_string();
    assert!(
        text.starts_with("reap-builders: 1 of the run's items failed")
            && text.contains(&format!("reap builder {protected} ({R1})"))
            && !text.contains(&plain),
        "{text}"
    );
}

#[tokio::test]
async fn reaper_discards_a_failed_bakes_leftover_images_in_every_region_without_a_builder() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let reap_fn = emu
        .function_services("ReapBuilders", &[("GOLDEN_REGIONS", "us-east-1,us-west-2")])
        .await;
    let ty = unique_type("it-leftover");
    // GIVEN a bake that failed (at launch: no such instance profile), so it never had a builder
    let mut input = json!({ "type": ty, "recipe": emu.recipe(&ty, &[R2]), "pollSeconds": 1 });
    input["recipe"]["instance_profile"] = json!("no-such-profile");
    let failed = emu.start(&format!("{ty}-1"), &input).await;
    let done = emu.finish(&failed).await;
    assert_eq!(done.status, aws_sdk_sfn::types::ExecutionStatus::Failed);
    // and images tagged with it in both regions that its cleanup did not remove, beside an image of
    // an execution that never existed (prune's to judge, not the reaper's)
    let mut leftovers = Vec::new();
    for region in [R1, R2] {
        let tags = [
            (tags::ROLE, "image"),
            (tags::TYPE, ty.as_str()),
            (tags::EXECUTION, failed.as_str()),
        ];
        leftovers.push((
            region,
            emu.register_image(region, &format!("golden-{ty}-left-{region}"), &tags)
                .await,
        ));
    }
    let unknown = format!("arn:aws:states:{R1}:123456789012:execution:bake:{ty}-unknown");
    let (kept, _) = emu
        .register_image(
            R1,
            &format!("golden-{ty}-unknown"),
            &[
                (tags::ROLE, "image"),
                (tags::TYPE, ty.as_str()),
                (tags::EXECUTION, unknown.as_str()),
            ],
        )
        .await;
    // WHEN the reaper hears that the execution failed
    let mut event: Value =
        serde_json::from_str(include_str!("../events/sfn-execution-failed.json")).expect("sample");
    event["detail"]["executionArn"] = json!(failed);
    let report = reap::handle(&reap_fn, Trigger::try_from(event).expect("valid event"))
        .await
        .expect("reap");
    // THEN both images and their snapshots are gone, and the other image is untouched
    assert_eq!(report.orphan_images.len(), 1, "{report:?}");
    assert_eq!(report.orphan_images[0].execution, failed);
    for (region, (image, snapshots)) in &leftovers {
        assert!(
            !emu.image_exists(region, image).await,
            "{image} in {region}"
        );
        for s in snapshots {
            assert!(!emu.snapshot_exists(region, s).await, "{s} in {region}");
        }
    }
    assert!(emu.image_exists(R1, &kept).await);
    // and a later sweep finds nothing more of it
    let again = reap::handle(&reap_fn, Trigger::Schedule)
        .await
        .expect("sweep");
    assert!(
        again.orphan_images.iter().all(|o| o.execution != failed),
        "{again:?}"
    );
    let _ = emu.ec2(R1).deregister_image().image_id(&kept).send().await;
}

#[tokio::test]
async fn reaper_frees_an_unreadable_lock_only_once_it_is_older_than_any_bake() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let reap_fn = emu.function_services("ReapBuilders", &[]).await;
    let ty = unique_type("it-lock-garbage");
    let key = format!("locks/{ty}.json");
    // GIVEN a lock object that is not a lock record (a truncated write, a hand edit)
    emu.s3()
        .put_object()
        .bucket(&emu.bucket)
        .key(&key)
        .body(b"{\"type\": \"trunc".to_vec().into())
        .send()
        .await
        .expect("put");
    // WHEN the reaper sweeps now THEN the lock stays: a bake may have written it a moment ago
    let report = reap::handle(&reap_fn, Trigger::Schedule)
        .await
        .expect("reap now");
    assert!(!report.locks_released.contains(&ty), "{report:?}");
    assert!(emu.object(&key).await.is_some());
    // WHEN it sweeps after the longest bake (no recipe: the default bound) plus the margin
    let later = Utc::now()
        + Duration::minutes(golden_core::reaping::DEFAULT_MAX_BUILD_MINUTES)
        + Duration::minutes(reap_fn.config.lifecycle.reap_margin_minutes)
        + Duration::minutes(1);
    let report = reap::handle(&at(&reap_fn, later), Trigger::Schedule)
        .await
        .expect("reap later");
    // THEN it is released, as dead
    assert!(report.locks_released.contains(&ty), "{report:?}");
    assert!(emu.object(&key).await.is_none(), "the lock is still there");
}

#[tokio::test]
async fn sweeps_cover_every_pushed_recipes_regions_besides_golden_regions() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-regions");
    // GIVEN GOLDEN_REGIONS with one region, and a recipe that copies to a region it does not list
    let key = format!("recipes/{ty}.json");
    emu.s3()
        .put_object()
        .bucket(&emu.bucket)
        .key(&key)
        .body(
            emu.recipe(&ty, &["ap-southeast-2"])
                .to_string()
                .into_bytes()
                .into(),
        )
        .send()
        .await
        .expect("push recipe");
    let settings = [("GOLDEN_REGIONS", R1)];
    let prune_fn = emu.function_services("Prune", &settings).await;
    let enforce_fn = emu.function_services("EnforceFreshness", &settings).await;
    // WHEN prune plans and enforce sweeps
    let report = prune::handle(&prune_fn, Trigger::Manual { dry_run: true }).await;
    let enforced = enforce::handle(&enforce_fn, Trigger::Manual { dry_run: true }).await;
    let _ = emu
        .s3()
        .delete_object()
        .bucket(&emu.bucket)
        .key(&key)
        .send()
        .await;
    // THEN the recipe's copy region is swept too
    let report = report.expect("prune dry run");
    let prune::Scope::All { regions } = &report.scope else {
        panic!("{:?}", report.scope)
    };
    assert!(
        regions.contains(&"ap-southeast-2".to_owned()) && regions.contains(&R1.to_owned()),
        "{regions:?}"
    );
    enforced.expect("enforce dry run");
    // and with no region from either source, the error names the setting
    let mut bare = emu
        .function_services("Prune", &[("GOLDEN_REGIONS", "")])
        .await;
    let empty = emu
        .services(&[("GOLDEN_BUCKET", "golden-ami-empty-regions")])
        .await;
    bare.store = empty.store.clone();
    let _ = emu
        .s3()
        .create_bucket()
        .bucket("golden-ami-empty-regions")
        .send()
        .await;
    let err = prune::handle(&bare, Trigger::Manual { dry_run: true })
        .await
        .expect_err("nothing to sweep");
    assert!(
        err.to_string()
            .contains("GOLDEN_REGIONS is empty and no recipe is pushed"),
        "{err}"
    );
}

/// The deprecation time EC2 reports for an image, if any.
async fn deprecation_of(emu: &Emulator, region: &str, image_id: &str) -> Option<String> {
    emu.ec2(region)
        .describe_images()
        .image_ids(image_id)
        .send()
        .await
        .expect("DescribeImages")
        .images()
        .first()
        .and_then(|i| i.deprecation_time().map(str::to_owned))
}

#[tokio::test]
async fn forced_revoke_of_the_only_version_deletes_the_parameters_and_deprecates_its_images() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let services = emu.services(&[]).await;
    let ty = unique_type("it-revoke-all");
    let estate = build_estate(&emu, std::slice::from_ref(&ty), 1).await;
    publish(
        &services,
        &ty,
        &[(
            version(1),
            images_of(&estate, &ty, 1),
            VersionStatus::Published,
        )],
    )
    .await;
    // (promoting the current version again writes its parameters)
    release::promote(&services, &ty, &version(1), false)
        .await
        .expect("promote");
    let parameter = format!("/golden-ami/{ty}/current");
    assert_eq!(
        emu.parameter(R1, &parameter).await.as_deref(),
        Some(estate.id(&ty, R1, 1))
    );
    // WHEN the only version is revoked without --force THEN it is refused and nothing changes
    let err = release::revoke(&services, &ty, &version(1), "bad kernel", false)
        .await
        .expect_err("no fallback");
    assert!(err.to_string().contains(version(1).as_str()), "{err}");
    assert!(deprecation_of(&emu, R1, estate.id(&ty, R1, 1))
        .await
        .is_none());
    // WHEN it is forced
    let revoked = release::revoke(&services, &ty, &version(1), "bad kernel", true)
        .await
        .expect("forced revoke");
    // THEN the type has no current version, no region keeps a parameter on the revoked image, and EC2
    // shows both images deprecated
    assert_eq!(revoked.updated.manifest.current(&ty), None);
    for region in [R1, R2] {
        assert_eq!(
            emu.parameter(region, &parameter).await,
            None,
            "{region} still resolves {parameter}"
        );
        assert!(
            deprecation_of(&emu, region, estate.id(&ty, region, 1))
                .await
                .is_some(),
            "{region} image not deprecated"
        );
    }
    assert_eq!(revoked.deprecated.len(), 2, "{:?}", revoked.deprecated);
    assert_eq!(revoked.parameters.len(), 2, "{:?}", revoked.parameters);
}

#[tokio::test]
async fn lifecycle_lambdas_take_their_sample_events_and_reject_malformed_ones() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let before = emu.object(MANIFEST_KEY).await;
    // a manual dry run of prune through the Lambda returns its plan and deletes nothing
    let report = ok(
        emu.invoke("prune", &json!({ "dryRun": true })),
        "prune dry run",
    );
    assert_eq!(report["dryRun"], true);
    assert!(report["plan"]["decisions"].is_array());
    assert_eq!(report["deregistered"], json!([]));
    // and so is an empty object (a console test event), for each of the three
    for function in ["prune", "reap-builders", "enforce-freshness"] {
        let report = ok(emu.invoke(function, &json!({})), "an empty manual request");
        assert_eq!(report["dryRun"], true, "{function}: {report}");
    }
    let scheduled: Value =
        serde_json::from_str(include_str!("../events/scheduled-event.json")).expect("sample");
    let report = ok(
        emu.invoke("reap-builders", &json!({ "dryRun": true })),
        "reap dry run",
    );
    assert_eq!(report["dryRun"], true);
    ok(
        emu.invoke("enforce-freshness", &json!({ "dryRun": true })),
        "enforce dry run",
    );
    // the scheduled sample is accepted by the reaper (it only ever terminates dead builders)
    ok(emu.invoke("reap-builders", &scheduled), "reap on schedule");
    // malformed and unexpected events are clear errors
    for function in ["prune", "reap-builders", "enforce-freshness"] {
        let (t, m) = emu
            .invoke(
                function,
                &json!({ "detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2",
            "time": "2026-11-25T01:00:00Z", "region": "us-east-1", "resources": [], "detail": {} }),
            )
            .expect_err("unexpected event");
        assert_eq!(t, "InvalidInput", "{function}: {m}");
        assert!(m.contains("unexpected event"), "{function}: {m}");
        let (t, _) = emu
            .invoke(function, &json!({ "dryrun": "yes" }))
            .expect_err("malformed manual request");
        assert_eq!(t, "InvalidInput");
    }
    assert_eq!(
        emu.object(MANIFEST_KEY).await,
        before,
        "nothing changed the manifest"
    );
}

#[tokio::test]
async fn the_harness_tells_a_missing_image_from_an_error() {
    let emu = Emulator::from_env().await;
    // Well-formed ids that do not exist: gone.
    assert!(!emu.image_exists(R1, "ami-0123456789abcdef0").await);
    assert!(!emu.snapshot_exists(R1, "snap-0123456789abcdef0").await);
    // A request EC2 refuses (a malformed id) is an error: it must never read as "deleted".
    let refused = tokio::spawn(async move { emu.image_exists(R1, "not-an-image-id").await });
    assert!(
        refused.await.is_err(),
        "image_exists answered instead of failing on an error that is not NotFound"
    );
}
