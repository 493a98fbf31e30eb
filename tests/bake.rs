//! The real `bake` state machine (infra/statemachine/bake.asl.json) executed by the emulator's Step
//! Functions against the real functions. Run under `scripts/emulator run -- cargo test` (`make test`).

use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use golden_core::tags;
use golden_it::{ok, tag, unique_type, Emulator, SERIAL};
use serde_json::{json, Value};

const BUILD: &str = "us-east-1";
const COPIES: [&str; 2] = ["us-west-2", "eu-west-1"];

fn input(emu: &Emulator, image_type: &str, poll_seconds: u32) -> Value {
    json!({ "type": image_type, "recipe": emu.recipe(image_type, &COPIES), "pollSeconds": poll_seconds })
}

/// The keys of the bucket under `prefix`.
async fn keys_under(emu: &Emulator, prefix: &str) -> Vec<String> {
    let out = emu
        .s3()
        .list_objects_v2()
        .bucket(&emu.bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("ListObjectsV2");
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

/// Commands sent to an instance, as (document, joined commands).
async fn commands_sent(emu: &Emulator, instance_id: &str) -> Vec<(String, String)> {
    let out = emu
        .ssm(BUILD)
        .list_commands()
        .instance_id(instance_id)
        .send()
        .await
        .expect("ListCommands");
    out.commands()
        .iter()
        .map(|c| {
            let cmds = c
                .parameters()
                .and_then(|p| p.get("commands"))
                .map(|v| v.join("\n"))
                .unwrap_or_default();
            (c.document_name().unwrap_or_default().to_owned(), cmds)
        })
        .collect()
}

#[tokio::test]
async fn bake_with_two_copy_regions_publishes_tagged_images_and_leaves_nothing_running() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-bake");
    // WHEN a bake of a type with two copy regions runs
    let (arn, done) = emu.bake(&format!("{ty}-1"), &input(&emu, &ty, 1)).await;
    // THEN it succeeds
    assert_eq!(
        done.status,
        ExecutionStatus::Succeeded,
        "error {:?}: {:?}",
        done.error,
        done.cause
    );

    // and the manifest holds the version with its three images as current
    let manifest = emu.manifest().await.expect("a manifest");
    let entry = &manifest["types"][&ty];
    let version = entry["current"]
        .as_str()
        .expect("a current version")
        .to_owned();
    let published = &entry["versions"][0];
    assert_eq!(published["version"], version.as_str());
    assert_eq!(published["status"], "published");
    assert_eq!(published["execution"], arn.as_str());
    assert_eq!(published["sourceAmi"], emu.base_ami.as_str());
    let images = published["images"].as_object().expect("images");
    assert_eq!(images.len(), 3, "{images:?}");
    // and says what the version was built from: the base AMI and the recipe's hash
    let recipe = golden_core::recipe::Recipe::from_json_value(emu.recipe(&ty, &COPIES), "test")
        .expect("the test recipe is valid");
    let recipe_hash = published["recipeHash"].as_str().expect("recipeHash");
    assert_eq!(recipe_hash, recipe.content_hash());
    assert!(
        published.get("sharedWith").is_none(),
        "shared with no one: {published}"
    );

    for region in [BUILD, COPIES[0], COPIES[1]] {
        // each region has exactly one image of this type, the published one, tagged per DESIGN.md
        let found = emu.images(region, &[(tags::TYPE, &ty)]).await;
        assert_eq!(found.len(), 1, "images of {ty} in {region}: {found:?}");
        let image = &found[0];
        assert_eq!(
            Some(image.image_id().unwrap_or_default()),
            images[region].as_str(),
            "{region}"
        );
        assert_eq!(
            image.name(),
            Some(format!("golden-{ty}-{version}").as_str())
        );
        let t = image.tags();
        assert_eq!(tag(t, tags::ROLE), Some("image"), "{region}");
        assert_eq!(tag(t, tags::VERSION), Some(version.as_str()));
        assert_eq!(tag(t, tags::EXECUTION), Some(arn.as_str()));
        assert_eq!(tag(t, tags::SOURCE_AMI), Some(emu.base_ami.as_str()));
        assert_eq!(
            tag(t, tags::RECIPE_HASH),
            Some(recipe_hash),
            "provenance: the recipe hash in {region}"
        );
        assert_eq!(
            tag(t, "team"),
            Some("releng-test"),
            "recipe tags reach the image in {region}"
        );
        // and every snapshot of it carries the same tags
        let snapshot_ids: Vec<&str> = image
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs()?.snapshot_id())
            .collect();
        assert!(!snapshot_ids.is_empty(), "{region} image has snapshots");
        let tagged = emu
            .snapshots(region, &[(tags::TYPE, &ty), (tags::ROLE, "image")])
            .await;
        for id in snapshot_ids {
            let s = tagged
                .iter()
                .find(|s| s.snapshot_id() == Some(id))
                .unwrap_or_else(|| panic!("snapshot {id} in {region} is not tagged"));
            assert_eq!(tag(s.tags(), tags::VERSION), Some(version.as_str()));
            assert_eq!(tag(s.tags(), tags::SOURCE_AMI), Some(emu.base_ami.as_str()));
            assert_eq!(tag(s.tags(), tags::RECIPE_HASH), Some(recipe_hash));
            assert_eq!(tag(s.tags(), "team"), Some("releng-test"));
        }
        // and the SSM parameter of the region points at it
        let param = emu
            .parameter(region, &format!("/golden-ami/{ty}/current"))
            .await;
        assert_eq!(
            param.as_deref(),
            images[region].as_str(),
            "parameter in {region}"
        );
    }

    // the execution's output links the bake's logs, where every command's whole output is, in SSM's layout
    let output = done.output.as_ref().expect("an output");
    let logs = format!("s3://{}/logs/{ty}/{version}/", emu.bucket);
    assert_eq!(output["logs"], logs.as_str(), "{output}");
    let written = keys_under(&emu, &format!("logs/{ty}/{version}/")).await;
    for stage in ["provision", "sanitize"] {
        let stdout: Vec<&String> = written
            .iter()
            .filter(|k| {
                k.starts_with(&format!("logs/{ty}/{version}/{stage}/"))
                    && k.ends_with("/awsrunShellScript/0.awsrunShellScript/stdout")
            })
            .collect();
        assert_eq!(stdout.len(), 1, "{stage} stdout in {written:?}");
    }

    // the builder is terminated and the lock is free
    let builders = emu
        .instances(BUILD, &[(tags::ROLE, "builder"), (tags::TYPE, &ty)])
        .await;
    assert_eq!(builders.len(), 1, "one builder was launched");
    let builder = &builders[0];
    assert_eq!(
        builder.state().and_then(|s| s.name()).map(|n| n.as_str()),
        Some("terminated")
    );
    assert_eq!(tag(builder.tags(), tags::EXECUTION), Some(arn.as_str()));
    assert!(
        emu.object(&format!("locks/{ty}.json")).await.is_none(),
        "the bake lock was released"
    );

    // the builder got the provisioning commands, then the sanitize script
    let sent = commands_sent(&emu, builder.instance_id().unwrap_or_default()).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|(doc, _)| doc == "AWS-RunShellScript"));
    let provision = sent
        .iter()
        .find(|(_, c)| c.contains("puppet agent --test"))
        .expect("provision command sent");
    assert!(
        provision
            .1
            .contains("export PUPPET_SERVER='puppet.test.example.com'"),
        "{}",
        provision.1
    );
    let sanitize = sent
        .iter()
        .find(|(_, c)| c.contains("ssh_host_"))
        .expect("sanitize script sent");
    for needle in [
        "mask puppet",
        "/etc/machine-id",
        "/var/lib/cloud",
        "'/etc/golden-test-secret'",
        "sanitize verification failed",
    ] {
        assert!(
            sanitize.1.contains(needle),
            "sanitize script lacks {needle}"
        );
    }
}

#[tokio::test]
async fn second_bake_becomes_current_and_keeps_the_first_in_history() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-twice");
    let (_, first) = emu.bake(&format!("{ty}-1"), &input(&emu, &ty, 1)).await;
    assert_eq!(
        first.status,
        ExecutionStatus::Succeeded,
        "{:?}",
        first.cause
    );
    let v1 = emu.manifest().await.expect("manifest")["types"][&ty]["current"]
        .as_str()
        .expect("current")
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1100)).await; // versions are UTC seconds
    let mut forced = input(&emu, &ty, 1);
    forced["force"] = json!(true); // the same recipe and base AMI: only a forced bake bakes
    let (_, second) = emu.bake(&format!("{ty}-2"), &forced).await;
    assert_eq!(
        second.status,
        ExecutionStatus::Succeeded,
        "{:?}",
        second.cause
    );

    let manifest = emu.manifest().await.expect("manifest");
    let entry = &manifest["types"][&ty];
    let versions: Vec<&str> = entry["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["version"].as_str())
        .collect();
    assert_eq!(versions.len(), 2);
    assert_eq!(
        versions[1], v1,
        "the first version stays in history, newest first"
    );
    assert_eq!(entry["current"].as_str(), Some(versions[0]));
    assert!(versions[0] > versions[1]);
    let current_image = entry["versions"][0]["images"][BUILD]
        .as_str()
        .expect("image");
    assert_eq!(
        emu.parameter(BUILD, &format!("/golden-ami/{ty}/current"))
            .await
            .as_deref(),
        Some(current_image)
    );
}

#[tokio::test]
async fn a_shared_recipes_images_and_snapshots_are_shared_in_every_region_and_the_manifest_says_with_whom(
) {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-share");
    let (account, org, ou) = (
        "111122223333",
        "arn:aws:organizations::111122223333:organization/o-exampleorg",
        "arn:aws:organizations::111122223333:ou/o-exampleorg/ou-ab12-cdef3456",
    );
    let mut recipe = emu.recipe(&ty, &COPIES[..1]);
    recipe["share"] =
        json!({ "accounts": [account], "organizations": [org], "organizational_units": [ou] });
    let (_, done) = emu
        .bake(
            &format!("{ty}-1"),
            &json!({ "type": ty, "recipe": recipe, "pollSeconds": 1 }),
        )
        .await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{:?}", done.cause);

    let manifest = emu.manifest().await.expect("manifest");
    let published = &manifest["types"][&ty]["versions"][0];
    assert_eq!(
        published["sharedWith"],
        json!({ "accounts": [account], "organizations": [org], "organizationalUnits": [ou] })
    );
    let images = published["images"].as_object().expect("images");
    assert_eq!(images.len(), 2);
    for (region, image_id) in images {
        let image_id = image_id.as_str().expect("id");
        let ec2 = emu.ec2(region);
        let attribute = ec2
            .describe_image_attribute()
            .image_id(image_id)
            .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
            .send()
            .await
            .expect("DescribeImageAttribute");
        let mut granted: Vec<String> = attribute
            .launch_permissions()
            .iter()
            .filter_map(|p| {
                p.user_id()
                    .or(p.organization_arn())
                    .or(p.organizational_unit_arn())
                    .map(str::to_owned)
            })
            .collect();
        granted.sort();
        assert_eq!(
            granted,
            [account, org, ou].map(str::to_owned),
            "{region} {image_id}"
        );
        let snapshots = emu.images(region, &[(tags::TYPE, &ty)]).await[0]
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_owned))
            .collect::<Vec<_>>();
        assert!(!snapshots.is_empty(), "{region}");
        for snapshot_id in snapshots {
            let attribute = ec2
                .describe_snapshot_attribute()
                .snapshot_id(&snapshot_id)
                .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
                .send()
                .await
                .expect("DescribeSnapshotAttribute");
            let users: Vec<&str> = attribute
                .create_volume_permissions()
                .iter()
                .filter_map(|p| p.user_id())
                .collect();
            assert_eq!(users, [account], "{region} {snapshot_id}");
        }
    }
}

/// The names of the states an execution entered, in order (its history).
async fn states_entered(emu: &Emulator, arn: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut pages = emu
        .sfn()
        .get_execution_history()
        .execution_arn(arn)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for event in page.expect("GetExecutionHistory").events() {
            if let Some(name) = event.state_entered_event_details().map(|d| d.name()) {
                names.push(name.to_owned());
            }
        }
    }
    names
}

/// Bakes `recipe` once, which must end FAILED with `CommandFailed`: its execution ARN and cause.
async fn bake_failing_with_a_command(emu: &Emulator, ty: &str, recipe: &Value) -> (String, String) {
    let (arn, done) = emu
        .bake(
            &format!("{ty}-1"),
            &json!({ "type": ty, "recipe": recipe, "pollSeconds": 1 }),
        )
        .await;
    assert_eq!(done.status, ExecutionStatus::Failed, "{:?}", done.output);
    assert_eq!(
        done.error.as_deref(),
        Some("CommandFailed"),
        "{:?}",
        done.cause
    );
    (arn, done.cause.unwrap_or_default())
}

/// The bake's tester instances (any state).
async fn testers(emu: &Emulator, arn: &str) -> Vec<aws_sdk_ec2::types::Instance> {
    emu.instances(BUILD, &[(tags::ROLE, "tester"), (tags::EXECUTION, arn)])
        .await
}

#[tokio::test]
async fn a_recipes_test_runs_on_an_instance_of_the_new_image_before_it_is_copied_and_published() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-test");
    let mut recipe = emu.recipe(&ty, &COPIES[..1]);
    recipe["test"] = json!({ "commands": ["systemctl is-active puppet || true", "test -x /opt/puppetlabs/bin/puppet"], "timeout_minutes": 10, "instance_type": "t3.small" });
    let (arn, done) = emu
        .bake(
            &format!("{ty}-1"),
            &json!({ "type": ty, "recipe": recipe, "pollSeconds": 1 }),
        )
        .await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{:?}", done.cause);
    let manifest = emu.manifest().await.expect("manifest");
    let published = &manifest["types"][&ty]["versions"][0];
    let image = published["images"][BUILD]
        .as_str()
        .expect("image")
        .to_owned();
    assert_eq!(published["images"].as_object().map(|i| i.len()), Some(2));

    // THEN the test ran before anything was copied
    let entered = states_entered(&emu, &arn).await;
    let at = |state: &str| entered.iter().position(|s| s == state);
    assert!(
        at("CheckTest").is_some() && at("CheckTest") < at("Distribute"),
        "{entered:?}"
    );
    // and one tester was launched from the new image, in the builder subnet, tagged as the bake's, and
    // terminated once the test passed (by command-status: the bake's end terminated only the builder)
    let found = testers(&emu, &arn).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let tester = &found[0];
    assert_eq!(
        tester.image_id(),
        Some(image.as_str()),
        "launched from the new image"
    );
    assert_eq!(tester.subnet_id(), Some(emu.subnet_id.as_str()));
    assert_eq!(tester.instance_type().map(|t| t.as_str()), Some("t3.small"));
    assert_eq!(tag(tester.tags(), tags::TYPE), Some(ty.as_str()));
    assert_eq!(
        tester.state().and_then(|s| s.name()).map(|n| n.as_str()),
        Some("terminated")
    );
    let ended = done.output.as_ref().expect("output")["cleanup"]["terminated"].clone();
    assert_eq!(
        ended.as_array().map(Vec::len),
        Some(1),
        "only the builder: {ended}"
    );
    assert!(
        !ended
            .to_string()
            .contains(tester.instance_id().unwrap_or("?")),
        "{ended}"
    );
    // and it got the test commands (with provision's env), and only it
    let tester_id = tester.instance_id().unwrap_or_default();
    let sent = commands_sent(&emu, tester_id).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].1.contains("test -x /opt/puppetlabs/bin/puppet"),
        "{}",
        sent[0].1
    );
    assert!(sent[0].1.contains("export PUPPET_SERVER="), "{}", sent[0].1);
    // and its whole output is kept with the bake's logs
    let version = published["version"].as_str().expect("version");
    let logs = keys_under(&emu, &format!("logs/{ty}/{version}/test/")).await;
    assert!(
        logs.iter()
            .any(|k| k.contains(tester_id) && k.ends_with("/stdout")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn a_failing_test_fails_the_bake_discards_the_image_and_publishes_nothing() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-testfail");
    let mut recipe = emu.recipe(&ty, &COPIES[..1]);
    recipe["test"] = json!({ "commands": ["curl -fsS http://localhost:8080/health  # emulator: fail curl: (7) Failed to connect to localhost port 8080"] });
    let (arn, cause) = bake_failing_with_a_command(&emu, &ty, &recipe).await;
    // THEN the bake fails with the test's stderr and the link to its whole output
    assert!(cause.contains("test command"), "{cause}");
    assert!(
        cause.contains("Failed to connect to localhost port 8080"),
        "{cause}"
    );
    assert!(
        cause.contains(&format!("whole output: s3://{}/logs/{ty}/", emu.bucket)),
        "{cause}"
    );
    // and nothing was copied: the bake never reached Distribute
    let entered = states_entered(&emu, &arn).await;
    assert!(entered.iter().any(|s| s == "CheckTest"), "{entered:?}");
    assert!(
        !entered
            .iter()
            .any(|s| s == "Distribute" || s == "CopyImage"),
        "{entered:?}"
    );
    // and the image is discarded, nothing was copied, nothing is published
    for region in [BUILD, COPIES[0]] {
        let left = emu.images(region, &[(tags::EXECUTION, arn.as_str())]).await;
        assert!(left.is_empty(), "{region}: {left:?}");
    }
    let manifest = emu.manifest().await.unwrap_or_default();
    assert!(
        manifest["types"].get(&ty).is_none(),
        "{}",
        manifest["types"][&ty]
    );
    assert!(emu
        .parameter(BUILD, &format!("/golden-ami/{ty}/current"))
        .await
        .is_none());
    // and the tester and the builder are terminated, the lock free
    let found = testers(&emu, &arn).await;
    assert_eq!(found.len(), 1, "{found:?}");
    for instance in found.iter().chain(
        &emu.instances(
            BUILD,
            &[(tags::ROLE, "builder"), (tags::EXECUTION, arn.as_str())],
        )
        .await,
    ) {
        assert_eq!(
            instance.state().and_then(|s| s.name()).map(|n| n.as_str()),
            Some("terminated"),
            "{:?}",
            instance.instance_id()
        );
    }
    assert!(emu.object(&format!("locks/{ty}.json")).await.is_none());
}

/// Points `parameter` (in the build region) at `ami`: a recipe's `base_ami_parameter`, moved by a test.
async fn set_base(emu: &Emulator, parameter: &str, ami: &str) {
    emu.ssm(BUILD)
        .put_parameter()
        .name(parameter)
        .value(ami)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .expect("PutParameter");
}

#[tokio::test]
async fn unchanged_recipe_and_base_launch_nothing_until_the_base_moves_or_the_bake_is_forced() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-same");
    let parameter = format!("/golden-ami/base/{ty}");
    set_base(&emu, &parameter, &emu.base_ami).await;
    let mut recipe = emu.recipe(&ty, &COPIES[..1]);
    recipe["base_ami_parameter"] = json!(parameter);
    let request = json!({ "type": ty, "recipe": recipe, "pollSeconds": 1 });
    let builders = || async {
        emu.instances(BUILD, &[(tags::ROLE, "builder"), (tags::TYPE, &ty)])
            .await
            .len()
    };
    let (_, first) = emu.bake(&format!("{ty}-1"), &request).await;
    assert_eq!(
        first.status,
        ExecutionStatus::Succeeded,
        "{:?}",
        first.cause
    );
    let manifest = emu.manifest().await.expect("manifest");
    let v1 = manifest["types"][&ty]["versions"][0].clone();
    let hash = v1["recipeHash"].as_str().expect("recipeHash").to_owned();

    // WHEN the same recipe is baked again on the same base AMI
    let (_, again) = emu.bake(&format!("{ty}-2"), &request).await;
    // THEN the bake succeeds with the outcome unchanged, naming the current version and what it was built from
    assert_eq!(
        again.status,
        ExecutionStatus::Succeeded,
        "{:?}",
        again.cause
    );
    let out = again.output.expect("an output");
    assert_eq!(out["outcome"], "unchanged", "{out}");
    assert_eq!(out["version"], v1["version"], "{out}");
    assert_eq!(out["images"], v1["images"], "{out}");
    assert_eq!(out["recipeHash"], hash.as_str());
    assert_eq!(out["sourceAmi"], emu.base_ami.as_str());
    assert!(
        out["reason"].as_str().is_some_and(|r| r.contains("force")),
        "the reason says how to bake anyway: {out}"
    );
    assert!(out.get("builder").is_none(), "{out}");
    // and launched, locked and published nothing
    assert_eq!(builders().await, 1, "no second builder");
    assert_eq!(
        emu.manifest().await.expect("manifest")["generation"],
        manifest["generation"],
        "the manifest is not written"
    );
    assert!(emu.object(&format!("locks/{ty}.json")).await.is_none());

    // WHEN the base AMI the recipe resolves moves, the same recipe bakes
    let (new_base, _) = emu
        .register_image(
            BUILD,
            &format!("base-{ty}-2"),
            &[("purpose", "a newer base")],
        )
        .await;
    set_base(&emu, &parameter, &new_base).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // versions are UTC seconds
    let (_, moved) = emu.bake(&format!("{ty}-3"), &request).await;
    assert_eq!(
        moved.status,
        ExecutionStatus::Succeeded,
        "{:?}",
        moved.cause
    );
    let moved = moved.output.expect("an output");
    assert!(moved.get("outcome").is_none(), "{moved}");
    assert_eq!(builders().await, 2);
    let entry = &emu.manifest().await.expect("manifest")["types"][&ty];
    assert_eq!(entry["current"], moved["published"]["version"]);
    assert_eq!(entry["versions"][0]["sourceAmi"], new_base.as_str());
    assert_eq!(
        entry["versions"][0]["recipeHash"],
        hash.as_str(),
        "same recipe"
    );

    // WHEN it is forced, an unchanged bake bakes
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut forced = request.clone();
    forced["force"] = json!(true);
    let (_, forced) = emu.bake(&format!("{ty}-4"), &forced).await;
    assert_eq!(
        forced.status,
        ExecutionStatus::Succeeded,
        "{:?}",
        forced.cause
    );
    assert_eq!(builders().await, 3);
    let versions = emu.manifest().await.expect("manifest")["types"][&ty]["versions"]
        .as_array()
        .map(Vec::len);
    assert_eq!(versions, Some(3));
}

#[tokio::test]
async fn a_recipe_with_rebuild_always_is_launched_even_when_unchanged() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let services = emu.services(&[]).await;
    let ty = unique_type("it-always");
    let mut recipe = emu.recipe(&ty, &[]);
    recipe["rebuild"] = json!("always");
    let hash = golden_core::recipe::Recipe::from_json_value(recipe.clone(), "test")
        .expect("valid recipe")
        .content_hash();
    // GIVEN the current version was baked from this very recipe and base AMI
    let v = golden_it::version(1);
    let mut current = golden_it::entry(
        &v,
        &std::collections::BTreeMap::from([(BUILD.to_owned(), emu.base_ami.clone())]),
        golden_core::manifest::VersionStatus::Published,
    );
    current.recipe_hash = Some(hash);
    current.source_ami = emu.base_ami.clone();
    golden_core::publishing::update_manifest(services.store.as_ref(), services.now(), |m| {
        m.add_version(&ty, current.clone(), true)
    })
    .await
    .expect("manifest");
    // WHEN launch-builder runs it
    let exec = format!("arn:aws:states:us-east-1:123456789012:execution:bake:{ty}");
    let launch =
        json!({ "input": { "type": ty, "recipe": recipe, "pollSeconds": 1 }, "executionId": exec });
    let state = ok(emu.invoke("launch-builder", &launch), "launch");
    // THEN it launches a builder, since the recipe says its result depends on more than the recipe
    assert!(state.get("outcome").is_none(), "{state}");
    assert!(state["builder"]["instanceId"].is_string(), "{state}");
    let end = json!({ "outcome": "failed", "executionId": exec, "state": state });
    ok(emu.invoke("terminate-builder", &end), "terminate-builder");
    let builder = state["builder"]["instanceId"].as_str().unwrap_or_default();
    assert_eq!(emu.instance_state(BUILD, builder).await, "terminated");
}

#[tokio::test]
async fn windows_bake_runs_powershell_then_images_the_builder_sysprep_stopped() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-win");
    let mut recipe = emu.recipe(&ty, &COPIES[..1]);
    recipe["platform"] = json!("windows");
    recipe["provision"]["commands"] = json!([
        "& 'C:\\Program Files\\Puppet Labs\\Puppet\\bin\\puppet.bat' agent --test --server $env:PUPPET_SERVER"
    ]);
    recipe["sanitize"]["extra_paths"] = json!(["C:\\builds\\slave"]);
    // WHEN a Windows type bakes (the emulator stops the builder when the sysprep command is sent, as
    // sysprep does once it has generalized it)
    let (arn, done) = emu
        .bake(
            &format!("{ty}-1"),
            &json!({ "type": ty, "recipe": recipe, "pollSeconds": 1 }),
        )
        .await;
    // THEN it succeeds and publishes the build and copy regions' images
    assert_eq!(
        done.status,
        ExecutionStatus::Succeeded,
        "error {:?}: {:?}",
        done.error,
        done.cause
    );
    let manifest = emu.manifest().await.expect("a manifest");
    let images = manifest["types"][&ty]["versions"][0]["images"]
        .as_object()
        .expect("images")
        .clone();
    assert_eq!(images.len(), 2, "{images:?}");
    // through PowerShell: provisioning, then the sanitize script that ends with sysprep
    let builders = emu
        .instances(BUILD, &[(tags::EXECUTION, arn.as_str())])
        .await;
    assert_eq!(builders.len(), 1);
    let sent = commands_sent(&emu, builders[0].instance_id().unwrap_or_default()).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|(doc, _)| doc == "AWS-RunPowerShellScript"));
    let sanitize = sent
        .iter()
        .find(|(_, c)| c.contains("sanitize verified"))
        .expect("sanitize script sent");
    for needle in [
        "'C:\\builds\\slave'",
        "PSReadLine",
        "drivers\\etc\\hosts",
        "document\\orchestration",
        "-ArgumentList 'sysprep', '--shutdown=true'",
    ] {
        assert!(sanitize.1.contains(needle), "sanitize lacks {needle}");
    }
    // and the builder, stopped by sysprep, is terminated at the end
    assert_eq!(
        builders[0]
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str()),
        Some("terminated")
    );
}

/// Waits until `check` finds something, polling fast so a test can act inside a bake's Wait state.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn bake_whose_builder_is_interrupted_fails_with_a_readable_cause_and_changes_nothing() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-spot");
    let before = emu.object("manifest.json").await;
    // GIVEN a bake whose builder is terminated (a spot interruption) while it boots
    let arn = emu.start(&format!("{ty}-1"), &input(&emu, &ty, 3)).await;
    let builder = wait_for("the builder", || async {
        emu.instances(BUILD, &[(tags::EXECUTION, arn.as_str())])
            .await
            .into_iter()
            .find_map(|i| i.instance_id().map(str::to_owned))
    })
    .await;
    emu.ec2(BUILD)
        .terminate_instances()
        .instance_ids(&builder)
        .send()
        .await
        .expect("terminate");
    // WHEN the bake notices
    let done = emu.finish(&arn).await;
    // THEN it fails, naming the stage and the instance, and says what it cleaned up
    assert_eq!(done.status, ExecutionStatus::Failed);
    assert_eq!(done.error.as_deref(), Some("BuilderFailed"));
    let cause = done.cause.unwrap_or_default();
    assert!(
        cause.starts_with(&format!("CheckBuilder: builder {builder} in us-east-1 is ")),
        "{cause}"
    );
    assert!(cause.contains("released the bake lock"), "{cause}");
    // and leaves no running builder, no image, the lock free and the manifest byte-for-byte unchanged
    let live: Vec<_> = emu
        .instances(BUILD, &[(tags::EXECUTION, arn.as_str())])
        .await
        .into_iter()
        .filter(|i| {
            !matches!(
                i.state().and_then(|s| s.name()).map(|n| n.as_str()),
                Some("terminated" | "shutting-down")
            )
        })
        .collect();
    assert!(live.is_empty(), "{live:?}");
    for region in [BUILD, COPIES[0], COPIES[1]] {
        assert!(emu.images(region, &[(tags::TYPE, &ty)]).await.is_empty());
    }
    assert!(emu.object(&format!("locks/{ty}.json")).await.is_none());
    assert_eq!(emu.object("manifest.json").await, before);
}

#[tokio::test]
async fn bake_failing_after_images_exist_discards_them_with_their_snapshots() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-late");
    // GIVEN a bake that will fail at Publish: while it bakes, someone publishes the same version
    // differently (the manifest refuses to publish a version twice with other images)
    let arn = emu.start(&format!("{ty}-1"), &input(&emu, &ty, 2)).await;
    let version = wait_for("the builder's version", || async {
        emu.instances(BUILD, &[(tags::EXECUTION, arn.as_str())])
            .await
            .iter()
            .find_map(|i| tag(i.tags(), tags::VERSION).map(str::to_owned))
    })
    .await;
    let mut manifest = emu.manifest().await.unwrap_or_else(
        || json!({"schema": 1, "generation": 0, "updatedAt": "2026-01-01T00:00:00Z", "types": {}}),
    );
    manifest["types"][&ty] = json!({ "current": version, "versions": [ {
        "version": version, "createdAt": "2026-11-25T00:00:00Z", "sourceAmi": "ami-0123456789abcdef0",
        "execution": "arn:aws:states:us-east-1:123456789012:execution:bake:someone-else",
        "images": { "us-east-1": "ami-0deadbeefdeadbeef" }, "status": "published" } ] });
    let conflicting = serde_json::to_vec_pretty(&manifest).expect("json");
    emu.s3()
        .put_object()
        .bucket(&emu.bucket)
        .key("manifest.json")
        .body(conflicting.clone().into())
        .send()
        .await
        .expect("put");
    // WHEN the bake reaches Publish
    let done = emu.finish(&arn).await;
    // THEN it fails there with a cause naming the manifest
    assert_eq!(done.status, ExecutionStatus::Failed);
    let cause = done.cause.unwrap_or_default();
    assert!(cause.starts_with("Publish: "), "{cause}");
    assert!(cause.contains(&ty) && cause.contains(&version), "{cause}");
    // and links the bake's command output, as any failure does
    assert!(
        cause.contains(&format!(
            "[command output: s3://{}/logs/{ty}/{version}/]",
            emu.bucket
        )),
        "{cause}"
    );
    // and the images it made in all three regions are deregistered and their snapshots deleted
    for region in [BUILD, COPIES[0], COPIES[1]] {
        let left = emu.images(region, &[(tags::EXECUTION, arn.as_str())]).await;
        assert!(left.is_empty(), "{region}: {left:?}");
        let by_name: Vec<_> = emu
            .ec2(region)
            .describe_images()
            .owners("self")
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("name")
                    .values(format!("golden-{ty}-{version}"))
                    .build(),
            )
            .send()
            .await
            .expect("DescribeImages")
            .images()
            .to_vec();
        assert!(by_name.is_empty(), "{region}: {by_name:?}");
        let snapshots = emu.snapshots(region, &[(tags::TYPE, &ty)]).await;
        assert!(
            snapshots.is_empty(),
            "{region} snapshots left: {snapshots:?}"
        );
    }
    assert!(cause.contains("deregistered"), "{cause}");
    // the builder is gone, the lock free, and the manifest is exactly what it was before Publish ran
    let builders = emu
        .instances(BUILD, &[(tags::EXECUTION, arn.as_str())])
        .await;
    assert!(builders
        .iter()
        .all(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) == Some("terminated")));
    assert!(emu.object(&format!("locks/{ty}.json")).await.is_none());
    assert_eq!(emu.object("manifest.json").await, Some(conflicting));
}

#[tokio::test]
async fn bake_whose_provision_command_fails_ends_failed_with_its_stderr_and_a_link_to_its_whole_output(
) {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-cmdfail");
    let mut recipe = emu.recipe(&ty, &COPIES[..1]);
    // The emulator's SSM stand-in reports a command with this comment Failed, exit 1, this stderr.
    recipe["provision"]["commands"] =
        json!(["puppet agent --test  # emulator: fail Error: Could not retrieve catalog from remote server"]);
    let (arn, cause) = bake_failing_with_a_command(&emu, &ty, &recipe).await;
    // THEN the bake fails with the command's error, its stderr, and where its whole output is
    assert!(cause.contains("Could not retrieve catalog"), "{cause}");
    let link = cause
        .split("whole output: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no link to the whole output in: {cause}"));
    let prefix = format!("s3://{}/logs/{ty}/", emu.bucket);
    assert!(
        link.starts_with(&prefix) && link.contains("/provision/"),
        "{link}"
    );
    let key = link.trim_start_matches(&format!("s3://{}/", emu.bucket));
    let stderr = emu
        .object(&format!(
            "{key}awsrunShellScript/0.awsrunShellScript/stderr"
        ))
        .await
        .unwrap_or_else(|| panic!("no stderr under {link}"));
    assert!(String::from_utf8_lossy(&stderr).contains("Could not retrieve catalog"));
    // and publishes nothing, leaves no image and no running builder
    let manifest = emu.manifest().await.unwrap_or_default();
    assert!(
        manifest["types"].get(&ty).is_none(),
        "{}",
        manifest["types"][&ty]
    );
    assert!(emu
        .images(BUILD, &[(tags::EXECUTION, arn.as_str())])
        .await
        .is_empty());
    let builders = emu
        .instances(BUILD, &[(tags::ROLE, "builder"), (tags::TYPE, &ty)])
        .await;
    assert_eq!(builders.len(), 1);
    assert_eq!(
        builders[0]
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str()),
        Some("terminated")
    );
}

#[tokio::test]
async fn bake_with_a_missing_instance_profile_fails_at_launch_naming_it() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-profile");
    let mut input = input(&emu, &ty, 1);
    input["recipe"]["instance_profile"] = json!("no-such-profile");
    let (_, done) = emu.bake(&format!("{ty}-1"), &input).await;
    assert_eq!(done.status, ExecutionStatus::Failed);
    let cause = done.cause.unwrap_or_default();
    assert!(cause.starts_with("LaunchBuilder: RunInstances"), "{cause}");
    assert!(cause.contains("no-such-profile"), "{cause}");
    assert!(emu.instances(BUILD, &[(tags::TYPE, &ty)]).await.is_empty());
    assert!(
        emu.object(&format!("locks/{ty}.json")).await.is_none(),
        "the lock is released after a failed launch"
    );
}

#[tokio::test]
async fn a_bake_whose_cleanup_function_fails_still_ends_with_its_own_error_and_says_so() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-nocleanup");
    // GIVEN the real state machine, but with a cleanup function that cannot be invoked
    let described = emu
        .sfn()
        .describe_state_machine()
        .state_machine_arn(&emu.state_machine_arn)
        .send()
        .await
        .expect("DescribeStateMachine");
    let definition = described
        .definition()
        .replace("function:terminate-builder", "function:no-such-cleanup");
    assert_ne!(
        definition,
        described.definition(),
        "the cleanup function is named"
    );
    let broken = emu
        .sfn()
        .create_state_machine()
        .name(format!("bake-{ty}"))
        .definition(definition)
        .role_arn(described.role_arn())
        .send()
        .await
        .expect("CreateStateMachine")
        .state_machine_arn()
        .to_owned();
    // WHEN a bake fails at launch (no such instance profile) and its cleanup fails too
    let mut input = input(&emu, &ty, 1);
    input["recipe"]["instance_profile"] = json!("no-such-profile");
    let arn = emu
        .sfn()
        .start_execution()
        .state_machine_arn(&broken)
        .name(format!("{ty}-1"))
        .input(input.to_string())
        .send()
        .await
        .expect("StartExecution")
        .execution_arn()
        .to_owned();
    let done = emu.finish(&arn).await;
    // the reaper's part, so the next tests find no lock of this type
    let _ = emu
        .s3()
        .delete_object()
        .bucket(&emu.bucket)
        .key(format!("locks/{ty}.json"))
        .send()
        .await;
    // THEN the bake fails with the launch's own error, its cause first, then the cleanup's failure
    assert_eq!(done.status, ExecutionStatus::Failed);
    assert_eq!(done.error.as_deref(), Some("AwsError"), "{:?}", done.cause);
    let cause = done.cause.unwrap_or_default();
    assert!(cause.contains("no-such-profile"), "{cause}");
    assert!(
        cause.contains("[cleanup failed too (") && cause.contains("reap-builders will"),
        "{cause}"
    );
}

#[tokio::test]
async fn bake_with_a_broken_recipe_fails_listing_every_problem() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-broken");
    let mut input = input(&emu, &ty, 1);
    input["recipe"]["instance_type"] = json!("huge");
    input["recipe"]["copy_to_regions"] = json!(["us-east-1"]);
    input["recipe"]["kepe"] = json!(3);
    let (_, done) = emu.bake(&format!("{ty}-1"), &input).await;
    assert_eq!(done.status, ExecutionStatus::Failed);
    assert_eq!(done.error.as_deref(), Some("RecipeInvalid"));
    let cause = done.cause.unwrap_or_default();
    for path in ["instance_type", "copy_to_regions[0]", "kepe"] {
        assert!(cause.contains(path), "cause lacks {path}: {cause}");
    }
    assert!(emu.instances(BUILD, &[(tags::TYPE, &ty)]).await.is_empty());
    assert!(emu.object(&format!("locks/{ty}.json")).await.is_none());
}

#[tokio::test]
async fn two_bakes_of_one_type_started_together_run_one_at_a_time() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-race");
    let input = input(&emu, &ty, 1);
    // WHEN two bakes of one type start together
    let (name_a, name_b) = (format!("{ty}-a"), format!("{ty}-b"));
    let (a, b) = tokio::join!(emu.start(&name_a, &input), emu.start(&name_b, &input));
    let (da, db) = tokio::join!(emu.finish(&a), emu.finish(&b));
    // THEN exactly one succeeds and the other fails fast, naming the holder
    let (winner, loser, loser_arn) = match (&da.status, &db.status) {
        (ExecutionStatus::Succeeded, ExecutionStatus::Failed) => (&da, &db, &b),
        (ExecutionStatus::Failed, ExecutionStatus::Succeeded) => (&db, &da, &a),
        other => panic!(
            "expected one success and one failure, got {other:?}: {:?} / {:?}",
            da.cause, db.cause
        ),
    };
    assert!(winner.error.is_none());
    assert_eq!(loser.error.as_deref(), Some("BakeAlreadyRunning"));
    let cause = loser.cause.clone().unwrap_or_default();
    assert!(
        cause.contains(&format!("a bake of {ty} is already running")),
        "{cause}"
    );
    // the loser launched nothing, and did not release the winner's lock (the winner released it at its end)
    assert!(emu
        .instances(BUILD, &[(tags::EXECUTION, loser_arn.as_str())])
        .await
        .is_empty());
    assert!(emu.object(&format!("locks/{ty}.json")).await.is_none());
    let manifest = emu.manifest().await.expect("manifest");
    assert_eq!(
        manifest["types"][&ty]["versions"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn every_stage_invoked_twice_creates_nothing_twice() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let ty = unique_type("it-twice-each");
    let exec = format!("arn:aws:states:us-east-1:123456789012:execution:bake:{ty}");
    let mut recipe = emu.recipe(&ty, &["us-west-2"]);
    recipe["test"] = json!({ "commands": ["test -x /opt/puppetlabs/bin/puppet"] });
    let launch =
        json!({ "input": { "type": ty, "recipe": recipe, "pollSeconds": 1 }, "executionId": exec });

    let state = ok(emu.invoke("launch-builder", &launch), "launch");
    let again = ok(emu.invoke("launch-builder", &launch), "launch again");
    assert_eq!(
        state["builder"]["instanceId"],
        again["builder"]["instanceId"]
    );
    assert_eq!(
        state["version"], again["version"],
        "a retried launch keeps its version"
    );
    assert_eq!(
        emu.instances(BUILD, &[(tags::EXECUTION, exec.as_str())])
            .await
            .len(),
        1
    );
    let mut state = state;
    let instance_id = state["builder"]["instanceId"]
        .as_str()
        .expect("instance")
        .to_owned();

    for _ in 0..2 {
        let b = ok(
            emu.invoke("builder-ready", &state["builder"]),
            "builder-ready",
        );
        assert_eq!(b["ready"], true);
        state["builder"] = b;
    }
    for stage in ["provision", "sanitize"] {
        let payload = json!({ "stage": stage, "bake": state });
        let c1 = ok(emu.invoke("run-command", &payload), stage);
        let c2 = ok(emu.invoke("run-command", &payload), stage);
        assert_eq!(c1["commandId"], c2["commandId"], "{stage}");
        let s1 = ok(emu.invoke("command-status", &c1), "command-status");
        let s2 = ok(emu.invoke("command-status", &s1), "command-status");
        assert_eq!(s2["done"], true);
        state["command"] = s2;
    }
    assert_eq!(
        commands_sent(&emu, &instance_id).await.len(),
        2,
        "one provision and one sanitize command"
    );

    let i1 = ok(emu.invoke("create-image", &state), "create-image");
    let i2 = ok(emu.invoke("create-image", &state), "create-image again");
    assert_eq!(i1["imageId"], i2["imageId"]);
    assert_eq!(
        emu.images(BUILD, &[(tags::EXECUTION, exec.as_str())])
            .await
            .len(),
        1
    );
    let image = ok(emu.invoke("image-status", &i1), "image-status");
    let image = ok(emu.invoke("image-status", &image), "image-status again");
    assert_eq!(image["available"], true);
    state["image"] = image.clone();

    // The tester: launched once, commanded once, and a passed test's status checked twice is still done.
    let tester_launch = json!({ "tester": state });
    let t1 = ok(
        emu.invoke("launch-builder", &tester_launch),
        "launch tester",
    );
    let t2 = ok(
        emu.invoke("launch-builder", &tester_launch),
        "launch tester again",
    );
    assert_eq!(t1["instanceId"], t2["instanceId"]);
    let testers = emu
        .instances(
            BUILD,
            &[(tags::ROLE, "tester"), (tags::EXECUTION, exec.as_str())],
        )
        .await;
    assert_eq!(testers.len(), 1, "{testers:?}");
    state["tester"] = ok(emu.invoke("builder-ready", &t1), "tester ready");
    assert_eq!(state["tester"]["ready"], true);
    let payload = json!({ "stage": "test", "bake": state });
    let c1 = ok(emu.invoke("run-command", &payload), "test");
    let c2 = ok(emu.invoke("run-command", &payload), "test again");
    assert_eq!(c1["commandId"], c2["commandId"]);
    let s1 = ok(emu.invoke("command-status", &c1), "test status");
    let s2 = ok(emu.invoke("command-status", &c1), "test status again");
    assert_eq!(
        (s1["done"].clone(), s2["done"].clone()),
        (json!(true), json!(true))
    );
    let tester_id = t1["instanceId"].as_str().unwrap_or_default();
    assert_eq!(commands_sent(&emu, tester_id).await.len(), 1);
    assert!(matches!(
        emu.instance_state(BUILD, tester_id).await.as_str(),
        "terminated" | "shutting-down"
    ));
    state["command"] = s2;

    let item = json!({ "region": "us-west-2", "source": image, "type": ty, "version": state["version"], "executionId": exec,
                       "pollSeconds": 1, "deadline": state["deadline"], "recipe": state["recipe"] });
    let c1 = ok(emu.invoke("copy-image", &item), "copy-image");
    let c2 = ok(emu.invoke("copy-image", &item), "copy-image again");
    assert_eq!(c1["imageId"], c2["imageId"]);
    assert_eq!(
        emu.images("us-west-2", &[(tags::EXECUTION, exec.as_str())])
            .await
            .len(),
        1
    );
    let copy = ok(emu.invoke("image-status", &c1), "copy status");
    state["copies"] = json!([copy]);

    let generation = |m: Option<Value>| m.and_then(|m| m["generation"].as_u64()).unwrap_or(0);
    let g0 = generation(emu.manifest().await);
    ok(emu.invoke("publish", &state), "publish");
    let g1 = generation(emu.manifest().await);
    ok(emu.invoke("publish", &state), "publish again");
    let manifest = emu.manifest().await;
    assert_eq!(g1, g0 + 1);
    assert_eq!(
        generation(manifest.clone()),
        g1,
        "publishing the same version again changes nothing"
    );
    assert_eq!(
        manifest.expect("manifest")["types"][&ty]["versions"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let end = json!({ "outcome": "succeeded", "executionId": exec, "state": state });
    let r1 = ok(emu.invoke("terminate-builder", &end), "terminate-builder");
    let r2 = ok(
        emu.invoke("terminate-builder", &end),
        "terminate-builder again",
    );
    assert_eq!(r1["lockReleased"], true);
    assert_eq!(r2["lockReleased"], false);
    assert!(
        emu.images(BUILD, &[(tags::EXECUTION, exec.as_str())])
            .await
            .len()
            == 1,
        "a succeeded bake keeps its image"
    );
}

#[tokio::test]
async fn malformed_stage_input_is_rejected_and_changes_nothing() {
    let _serial = SERIAL.lock().await;
    let emu = Emulator::from_env().await;
    let before = emu.object("manifest.json").await;
    let (t, m) = emu
        .invoke(
            "launch-builder",
            &json!({ "input": { "type": "Not A Type" }, "executionId": "x" }),
        )
        .expect_err("bad type");
    assert_eq!(t, "InvalidInput");
    assert!(m.contains("not a valid image type name"), "{m}");
    let (t, m) = emu
        .invoke("publish", &json!({ "nonsense": true }))
        .expect_err("malformed");
    assert_eq!(t, "InvalidInput");
    assert!(
        m.starts_with("Publish: invalid input: the Publish payload does not match"),
        "{m}"
    );
    let (t, m) = emu
        .invoke(
            "launch-builder",
            &json!({ "input": { "type": "no-such-type" }, "executionId": "arn:x" }),
        )
        .expect_err("malformed execution ARN");
    assert_eq!(t, "InvalidInput");
    assert!(
        m.contains("executionId \"arn:x\" is not a Step Functions execution ARN"),
        "{m}"
    );
    let (t, m) = emu
        .invoke(
            "launch-builder",
            &json!({ "input": { "type": "no-such-type" }, "executionId": "arn:aws:states:us-east-1:123456789012:execution:bake:no-such-type-1" }),
        )
        .expect_err("unknown type");
    assert_eq!(t, "RecipeNotFound");
    assert!(m.contains("recipes/no-such-type.json"), "{m}");
    assert_eq!(emu.object("manifest.json").await, before);
    assert!(emu.object("locks/no-such-type.json").await.is_none());
}
