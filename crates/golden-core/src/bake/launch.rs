//! launch-builder: load and check the recipe, take the type's bake lock, start the builder.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::lock::{self, LockRecord};
use super::{client_token, BakeState, BuilderRef, Poll, Services};
use crate::error::{Error, Result};
use crate::manifest::{Manifest, VersionEntry, VersionStatus};
use crate::ports::{BlockDeviceSpec, Instance, LaunchSpec};
use crate::publishing::read_manifest;
use crate::recipe::{is_valid_type_name, Rebuild, Recipe};
use crate::tags;
use crate::version::Version;

/// The execution input (docs/stages.md): `{"type": ..., "recipe"?: {...}, "pollSeconds"?: n, "force"?: bool,
/// "trigger"?: "schedule" | "manual"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BakeRequest {
    #[serde(rename = "type")]
    pub image_type: String,
    /// An inline recipe. Kept as JSON here so that recipe loading can report every problem at once.
    #[serde(default)]
    pub recipe: Option<serde_json::Value>,
    #[serde(default)]
    pub poll_seconds: Option<u32>,
    /// Bake even when the recipe and base AMI are the current version's.
    #[serde(default)]
    pub force: bool,
    /// Who started the bake: the type's schedule says `"schedule"` (its input in the template); absent, a
    /// person. Only scheduled bakes count towards disabling a failing schedule (lifecycle::guard).
    #[serde(default)]
    pub trigger: BakeTrigger,
}

/// What started a bake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BakeTrigger {
    Schedule,
    #[default]
    Manual,
}

/// launch-builder's payload: the bake's start, or (LaunchTester) the tester of its new image.
#[derive(Debug, Clone)]
pub enum LaunchRequest {
    Bake(LaunchInput),
    /// `{"tester": <bake state>}`.
    Tester(Box<BakeState>),
}

impl<'de> Deserialize<'de> for LaunchRequest {
    /// By its keys, so that a malformed payload's error is that of the shape it meant.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut value = serde_json::Value::deserialize(d)?;
        if let Some(object) = value.as_object_mut().filter(|o| o.contains_key("tester")) {
            if object.len() > 1 {
                return Err(D::Error::custom(
                    "a tester launch is {\"tester\": <bake state>} and nothing else",
                ));
            }
            let state = object.remove("tester").unwrap_or_default();
            return serde_json::from_value(state)
                .map(|s| LaunchRequest::Tester(Box::new(s)))
                .map_err(|e| D::Error::custom(format!("tester: {e}")));
        }
        serde_json::from_value(value)
            .map(LaunchRequest::Bake)
            .map_err(D::Error::custom)
    }
}

/// launch-builder's payload: the execution input and `$$.Execution.Id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LaunchInput {
    pub input: BakeRequest,
    pub execution_id: String,
}

/// What launch-builder returns: the bake state for the next stages, or the bake's end because nothing it
/// builds from changed. The Choice after LaunchBuilder tells them apart by `outcome`, which only
/// [`Unchanged`] has.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Launched {
    Bake(Box<BakeState>),
    Unchanged(Unchanged),
    /// LaunchTester's result, for `$.tester`.
    Tester(BuilderRef),
}

/// The value of [`Unchanged::outcome`].
pub const OUTCOME_UNCHANGED: &str = "unchanged";

/// A bake that ended before launching anything: the recipe and the resolved base AMI are those of the
/// type's current version. This is the execution's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unchanged {
    /// Always [`OUTCOME_UNCHANGED`].
    pub outcome: String,
    #[serde(rename = "type")]
    pub image_type: String,
    /// The version already baked from this recipe and base AMI: the current one, or the newest published
    /// one of a pinned type.
    pub version: Version,
    /// Its images, region -> AMI id.
    pub images: BTreeMap<String, String>,
    pub recipe_hash: String,
    pub source_ami: String,
    /// A sentence for the operator, with how to bake anyway.
    pub reason: String,
}

/// The version a bake now would make again: the type's current version, or its newest published one (a
/// pinned type's current is older), if it was baked from exactly `recipe_hash` and `source_ami`.
pub fn unchanged_current<'m>(
    manifest: &'m Manifest,
    image_type: &str,
    recipe_hash: &str,
    source_ami: &str,
) -> Option<&'m VersionEntry> {
    let same = |v: &&VersionEntry| {
        v.status == VersionStatus::Published
            && v.recipe_hash.as_deref() == Some(recipe_hash)
            && v.source_ami == source_ami
    };
    let newest = manifest.types.get(image_type).and_then(|t| {
        t.versions
            .iter()
            .find(|v| v.status == VersionStatus::Published)
    });
    manifest
        .current(image_type)
        .filter(same)
        .or_else(|| newest.filter(same))
}

pub const DEFAULT_POLL_SECONDS: u32 = 30;
/// How long a builder may take to boot and register with SSM.
const READY_MINUTES: u32 = 20;

pub fn recipe_key(image_type: &str) -> String {
    format!("recipes/{image_type}.json")
}

/// Loads the recipe for a bake: the inline one, or the one pushed to the bucket.
pub async fn load_recipe(services: &Services, request: &BakeRequest) -> Result<Recipe> {
    let recipe = match &request.recipe {
        Some(inline) => Recipe::from_json_value(inline.clone(), "inline recipe")?,
        None => {
            let key = recipe_key(&request.image_type);
            let object = services
                .store
                .get(&key)
                .await?
                .ok_or_else(|| Error::RecipeNotFound {
                    image_type: request.image_type.clone(),
                    bucket: services.store.bucket().to_owned(),
                    key: key.clone(),
                })?;
            Recipe::from_json_slice(
                &object.body,
                &format!("s3://{}/{key}", services.store.bucket()),
            )?
        }
    };
    if recipe.image_type != request.image_type {
        return Err(Error::InvalidInput(format!(
            "the recipe is for type {:?} but the bake is for {:?}; they must match",
            recipe.image_type, request.image_type
        )));
    }
    Ok(recipe)
}

/// Resolves the recipe's base image to an AMI id and checks that it can be launched.
async fn resolve_base_ami(services: &Services, recipe: &Recipe) -> Result<String> {
    let region = &recipe.build_region;
    let ami = match (&recipe.base_ami, &recipe.base_ami_parameter) {
        (Some(ami), _) => ami.clone(),
        (None, Some(parameter)) => services.ssm.get_parameter(region, parameter).await?.ok_or_else(|| {
            Error::BaseImageNotFound(format!(
                "SSM parameter {parameter} does not exist in {region}; fix base_ami_parameter in the {} recipe",
                recipe.image_type
            ))
        })?,
        (None, None) => return Err(Error::InvalidInput("the recipe names no base image".into())),
    };
    match services.ec2.describe_image(region, &ami).await? {
        Some(image) if image.state == "available" => Ok(ami),
        Some(image) => Err(Error::BaseImageNotFound(format!(
            "base image {ami} in {region} is {}, not available",
            image.state
        ))),
        None => Err(Error::BaseImageNotFound(format!(
            "base image {ami} does not exist in {region} (or is not shared with this account)"
        ))),
    }
}

pub async fn handle(services: &Services, request: LaunchRequest) -> Result<Launched> {
    match request {
        LaunchRequest::Bake(input) => launch(services, input).await,
        LaunchRequest::Tester(bake) => launch_tester(services, &bake).await.map(Launched::Tester),
    }
}

/// LaunchTester: an instance of the new image (in the build region, in the builder subnet), tagged
/// `golden-ami:role=tester` with the execution, to run the recipe's test. A retry finds the first one.
pub async fn launch_tester(services: &Services, bake: &BakeState) -> Result<BuilderRef> {
    bake.check(&services.config)?;
    let test = bake.recipe.test.as_ref().ok_or_else(|| {
        Error::InvalidInput(
            "the recipe has no [test]; LaunchTester runs only for one that has".into(),
        )
    })?;
    let image = bake.image.as_ref().filter(|i| i.available).ok_or_else(|| {
        Error::InvalidInput(
            "LaunchTester needs an available image in $.image; the image stage has not finished"
                .into(),
        )
    })?;
    let region = &image.region;
    let spec = tester_spec(bake, test, &image.image_id);
    let tester = find_or_launch(services, region, &spec).await?;
    Ok(BuilderRef {
        instance_id: tester.instance_id,
        region: region.clone(),
        ready: false,
        state: tester.state,
        poll: Poll::new(READY_MINUTES, bake.poll_seconds, bake.deadline),
    })
}

/// The instance `spec` describes: the one this execution already launched with its role (a retried stage),
/// else a new one. Found by the spec's role and execution tags, which it is launched with.
async fn find_or_launch(services: &Services, region: &str, spec: &LaunchSpec) -> Result<Instance> {
    let tag = |k: &str| spec.tags.get(k).map_or("", String::as_str);
    let (role, execution) = (tag(tags::ROLE), tag(tags::EXECUTION));
    let existing = services
        .ec2
        .find_instances(region, &[(tags::ROLE, role), (tags::EXECUTION, execution)])
        .await?;
    if let Some(instance) = existing.into_iter().next() {
        tracing::info!(instance_id = %instance.instance_id, "{role} already launched by this execution");
        return Ok(instance);
    }
    let instance = services.ec2.run_instance(region, spec).await?;
    tracing::info!(r#type = tag(tags::TYPE), version = tag(tags::VERSION), instance_id = %instance.instance_id, image_id = %spec.image_id, %region, "{role} launched");
    Ok(instance)
}

/// The tester's RunInstances request: the builder's network and profile, the new image's own volumes, the
/// recipe's ones deleted with the tester whatever the recipe says (the tester leaves nothing behind).
fn tester_spec(bake: &BakeState, test: &crate::recipe::Test, image_id: &str) -> LaunchSpec {
    let recipe = &bake.recipe;
    let tags = instance_tags(
        recipe,
        tags::ROLE_TESTER,
        &bake.version,
        &bake.execution_id,
        image_id,
    );
    LaunchSpec {
        image_id: image_id.into(),
        instance_type: test
            .instance_type
            .clone()
            .unwrap_or_else(|| recipe.instance_type.clone()),
        subnet_id: recipe.subnet_id.clone(),
        security_group_ids: recipe.security_group_ids.clone(),
        instance_profile: recipe.instance_profile.clone(),
        associate_public_ip: recipe.associate_public_ip,
        block_devices: builder_volumes(recipe)
            .into_iter()
            .map(|v| BlockDeviceSpec {
                delete_on_termination: true,
                ..v
            })
            .collect(),
        tags,
        client_token: client_token(&bake.execution_id, "tester"),
    }
}

async fn launch(services: &Services, input: LaunchInput) -> Result<Launched> {
    let request = &input.input;
    if !is_valid_type_name(&request.image_type) {
        return Err(Error::InvalidInput(format!(
            "type {:?} is not a valid image type name (lowercase letters, digits and '-', like bld-linux64)",
            request.image_type
        )));
    }
    crate::ids::execution_arn("executionId", &input.execution_id)?;
    let poll_seconds = request.poll_seconds.unwrap_or(DEFAULT_POLL_SECONDS);
    let floor = services.config.min_poll_seconds;
    if !(floor..=3600).contains(&poll_seconds) {
        return Err(Error::InvalidInput(format!(
            "pollSeconds {poll_seconds} is out of range {floor}..=3600 (the floor is GOLDEN_MIN_POLL_SECONDS: \
             polling a 2-hour bake more often would overrun Step Functions' 25,000-event execution history)"
        )));
    }
    let recipe = load_recipe(services, request).await?;
    super::check_recipe_regions(&services.config, &recipe)?;
    let source_ami = resolve_base_ami(services, &recipe).await?;
    if let Some(unchanged) = skip_unchanged(services, request, &recipe, &source_ami).await? {
        return Ok(Launched::Unchanged(unchanged));
    }

    let now = services.now();
    let wanted = LockRecord {
        image_type: recipe.image_type.clone(),
        execution_id: input.execution_id.clone(),
        version: Version::from_datetime(now),
        acquired_at: now,
        deadline: now + chrono::Duration::minutes(i64::from(recipe.max_build_minutes)),
    };
    // A retried launch gets back its own lock, hence the same version and deadline.
    let held = lock::acquire(services.store.as_ref(), wanted, now).await?;
    let region = recipe.build_region.clone();

    let builder =
        find_or_launch(services, &region, &launch_spec(&recipe, &held, &source_ami)).await?;

    let logs = format!(
        "s3://{}/{}/",
        services.store.bucket(),
        super::logs_prefix(&recipe.image_type, &held.version)
    );
    Ok(Launched::Bake(Box::new(BakeState {
        image_type: recipe.image_type.clone(),
        execution_id: input.execution_id.clone(),
        version: held.version.clone(),
        poll_seconds,
        deadline: held.deadline,
        source_ami,
        tester: None,
        builder: BuilderRef {
            instance_id: builder.instance_id,
            region,
            ready: false,
            state: builder.state,
            poll: Poll::new(READY_MINUTES, poll_seconds, held.deadline),
        },
        recipe,
        command: None,
        image: None,
        copies: None,
        published: None,
        logs: Some(logs),
    })))
}

/// The bake's end if it would only make the current version again (and may skip: not forced, the recipe
/// not `rebuild = "always"`). Reads the manifest; writes nothing.
async fn skip_unchanged(
    services: &Services,
    request: &BakeRequest,
    recipe: &Recipe,
    source_ami: &str,
) -> Result<Option<Unchanged>> {
    if request.force || recipe.rebuild == Rebuild::Always {
        return Ok(None);
    }
    let (manifest, _) = read_manifest(services.store.as_ref(), services.now()).await?;
    let recipe_hash = recipe.content_hash();
    let Some(current) = unchanged_current(&manifest, &recipe.image_type, &recipe_hash, source_ami)
    else {
        return Ok(None);
    };
    let reason = format!(
        "{} {} is already baked from this recipe ({recipe_hash}) and base AMI {source_ami}; nothing was \
         launched. To bake anyway: start the bake with {{\"force\": true}} (goldenctl bake {} --force), or \
         set rebuild = \"always\" in the recipe if it depends on what the recipe does not hold (a puppet \
         server's manifests)",
        recipe.image_type, current.version, recipe.image_type
    );
    tracing::info!(r#type = %recipe.image_type, current = %current.version, %recipe_hash, %source_ami, "unchanged: not baking");
    if let Some(stack) = &services.config.stack_name {
        // The stack's "no bake for N days" alarm counts an unchanged bake as one that kept the type current.
        println!(
            "{}",
            crate::metrics::unchanged(
                stack,
                &recipe.image_type,
                current.version.as_ref(),
                services.now()
            )
        );
    }
    Ok(Some(Unchanged {
        outcome: OUTCOME_UNCHANGED.to_owned(),
        image_type: recipe.image_type.clone(),
        version: current.version.clone(),
        images: current.images.clone(),
        recipe_hash,
        source_ami: source_ami.to_owned(),
        reason,
    }))
}

/// The builder's RunInstances request: the recipe's network and profile, IMDSv2 only, tagged as ours.
pub fn launch_spec(recipe: &Recipe, lock: &LockRecord, source_ami: &str) -> LaunchSpec {
    let tags = instance_tags(
        recipe,
        tags::ROLE_BUILDER,
        &lock.version,
        &lock.execution_id,
        source_ami,
    );
    LaunchSpec {
        image_id: source_ami.into(),
        instance_type: recipe.instance_type.clone(),
        subnet_id: recipe.subnet_id.clone(),
        security_group_ids: recipe.security_group_ids.clone(),
        instance_profile: recipe.instance_profile.clone(),
        associate_public_ip: recipe.associate_public_ip,
        block_devices: builder_volumes(recipe),
        tags,
        client_token: client_token(&lock.execution_id, "launch"),
    }
}

/// A bake instance's tags (builder or tester, `role`), over the recipe's own: what the later stages, cleanup
/// and the reaper find it by.
fn instance_tags(
    recipe: &Recipe,
    role: &str,
    version: &Version,
    execution_id: &str,
    image_id: &str,
) -> BTreeMap<String, String> {
    let mut tags = recipe.tags.clone();
    tags.insert(
        tags::NAME.into(),
        format!("golden-ami {role} {} {version}", recipe.image_type),
    );
    tags.insert(tags::ROLE.into(), role.into());
    tags.insert(tags::TYPE.into(), recipe.image_type.clone());
    tags.insert(tags::VERSION.into(), version.to_string());
    tags.insert(tags::EXECUTION.into(), execution_id.into());
    tags.insert(tags::SOURCE_AMI.into(), image_id.into());
    tags
}

/// The recipe's block devices as the builder gets them.
fn builder_volumes(recipe: &Recipe) -> Vec<BlockDeviceSpec> {
    recipe
        .block_devices
        .iter()
        .map(|d| BlockDeviceSpec {
            device_name: d.device_name.clone(),
            volume_size_gb: d.volume_size_gb,
            volume_type: d.volume_type.clone(),
            delete_on_termination: d.delete_on_termination,
            encrypted: d.encrypted,
            kms_key_id: recipe.kms_key_for(&recipe.build_region).map(str::to_owned),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;
    use chrono::{TimeZone, Utc};

    fn manifest_with(recipe_hash: Option<&str>, source_ami: &str) -> (Manifest, Version) {
        let at = Utc
            .with_ymd_and_hms(2026, 11, 25, 1, 15, 0)
            .single()
            .expect("valid time");
        let version = Version::from_datetime(at);
        let mut m = Manifest::empty(at);
        let entry = VersionEntry {
            recipe_hash: recipe_hash.map(str::to_owned),
            shared_with: None,
            extra: Default::default(),
            version: version.clone(),
            created_at: at,
            source_ami: source_ami.to_owned(),
            execution: "arn:aws:states:us-east-1:123456789012:execution:bake:x".into(),
            images: BTreeMap::from([("us-east-1".to_owned(), "ami-0aaaaaaaaaaaaaaaa".to_owned())]),
            status: VersionStatus::Published,
            revoked_reason: None,
            revoked_at: None,
        };
        m.add_version("bld-linux64", entry, true).expect("add");
        (m, version)
    }

    #[test]
    fn only_the_same_recipe_hash_and_base_ami_as_the_current_version_is_unchanged() {
        let (m, v) = manifest_with(Some("sha256:aa"), "ami-0123456789abcdef0");
        let same = unchanged_current(&m, "bld-linux64", "sha256:aa", "ami-0123456789abcdef0");
        assert_eq!(same.map(|e| &e.version), Some(&v));
        for (hash, base, ty) in [
            ("sha256:bb", "ami-0123456789abcdef0", "bld-linux64"),
            ("sha256:aa", "ami-0fedcba9876543210", "bld-linux64"),
            ("sha256:aa", "ami-0123456789abcdef0", "tst-linux64"),
        ] {
            assert!(
                unchanged_current(&m, ty, hash, base).is_none(),
                "{hash} {base} {ty}"
            );
        }
        // A pinned type: current is an older version, the newest published one is what a bake would remake.
        let (mut pinned, v) = manifest_with(Some("sha256:aa"), "ami-0123456789abcdef0");
        let older = VersionEntry {
            version: Version::from_datetime(v.created_at() - chrono::Duration::days(1)),
            recipe_hash: Some("sha256:old".into()),
            ..pinned.current("bld-linux64").expect("current").clone()
        };
        pinned
            .add_version("bld-linux64", older.clone(), false)
            .expect("add");
        pinned.types.get_mut("bld-linux64").expect("type").current = Some(older.version.clone());
        let newest =
            unchanged_current(&pinned, "bld-linux64", "sha256:aa", "ami-0123456789abcdef0");
        assert_eq!(newest.map(|e| &e.version), Some(&v));
        // A version published before recipe hashes were recorded is never taken as unchanged.
        let (old, _) = manifest_with(None, "ami-0123456789abcdef0");
        assert!(
            unchanged_current(&old, "bld-linux64", "sha256:aa", "ami-0123456789abcdef0").is_none()
        );
    }

    #[test]
    fn a_launch_is_a_bake_start_or_a_tester_and_each_reports_its_own_errors() {
        let start: LaunchRequest = serde_json::from_value(serde_json::json!({
            "input": {"type": "bld-linux64"},
            "executionId": "arn:aws:states:us-east-1:123456789012:execution:bake:x",
        }))
        .expect("a bake start");
        assert!(matches!(start, LaunchRequest::Bake(_)));
        let err =
            serde_json::from_value::<LaunchRequest>(serde_json::json!({"tester": {"type": 1}}))
                .expect_err("not a bake state");
        assert!(err.to_string().starts_with("tester: "), "{err}");
        let err = serde_json::from_value::<LaunchRequest>(
            serde_json::json!({"tester": {}, "executionId": "x"}),
        )
        .expect_err("two shapes at once");
        assert!(err.to_string().contains("nothing else"), "{err}");
        let err = serde_json::from_value::<LaunchRequest>(serde_json::json!({"input": {}}))
            .expect_err("a start without its execution");
        assert!(
            err.to_string().contains("executionId") || err.to_string().contains("type"),
            "{err}"
        );
    }

    #[test]
    fn a_tester_runs_the_new_image_tagged_as_the_bakes_and_leaves_no_volume_behind() {
        let mut sample: serde_json::Value = serde_json::from_str(include_str!(
            "../../../../events/run-command-provision.json"
        ))
        .expect("sample");
        let recipe = &mut sample["bake"]["recipe"];
        recipe["block_devices"][0]["delete_on_termination"] = serde_json::json!(false);
        recipe["test"] = serde_json::json!({ "commands": ["true"], "instance_type": "t3.small" });
        let bake: BakeState = serde_json::from_value(sample["bake"].clone()).expect("a bake state");
        let test = bake.recipe.test.clone().expect("a test");
        let spec = tester_spec(&bake, &test, "ami-0fedcba9876543210");
        assert_eq!(spec.image_id, "ami-0fedcba9876543210");
        assert_eq!(spec.instance_type, "t3.small");
        assert_eq!(spec.subnet_id, bake.recipe.subnet_id);
        assert_eq!(spec.tags[tags::ROLE], tags::ROLE_TESTER);
        assert_eq!(spec.tags[tags::EXECUTION], bake.execution_id);
        // The recipe keeps its builder's volume, but the tester's goes with it.
        assert!(!bake.recipe.block_devices[0].delete_on_termination);
        assert_eq!(spec.block_devices.len(), 1);
        assert!(spec.block_devices.iter().all(|d| d.delete_on_termination));
        assert_ne!(
            spec.client_token,
            client_token(&bake.execution_id, "launch")
        );
    }

    #[test]
    fn force_is_optional_in_the_execution_input_and_unknown_fields_are_refused() {
        let plain: BakeRequest = serde_json::from_str(r#"{"type": "bld-linux64"}"#).expect("parse");
        assert!(!plain.force);
        let forced: BakeRequest =
            serde_json::from_str(r#"{"type": "bld-linux64", "force": true}"#).expect("parse");
        assert!(forced.force);
        assert!(serde_json::from_str::<BakeRequest>(r#"{"type": "x", "forced": true}"#).is_err());
    }
}
