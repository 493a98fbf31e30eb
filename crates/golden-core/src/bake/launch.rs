//! launch-builder: load and check the recipe, take the type's bake lock, start the builder.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::lock::{self, LockRecord};
use super::{client_token, BakeState, BuilderRef, Poll, Services};
use crate::error::{Error, Result};
use crate::ports::{BlockDeviceSpec, LaunchSpec};
use crate::recipe::{is_valid_type_name, Recipe};
use crate::tags;
use crate::version::Version;

/// The execution input (docs/stages.md): `{"type": ..., "recipe"?: {...}, "pollSeconds"?: n}`.
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
}

/// launch-builder's payload: the execution input and `$$.Execution.Id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LaunchInput {
    pub input: BakeRequest,
    pub execution_id: String,
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

pub async fn handle(services: &Services, input: LaunchInput) -> Result<BakeState> {
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

    let existing = services
        .ec2
        .find_instances(
            &region,
            &[
                (tags::ROLE, tags::ROLE_BUILDER),
                (tags::EXECUTION, &input.execution_id),
            ],
        )
        .await?;
    let builder = match existing.into_iter().next() {
        Some(instance) => {
            tracing::info!(instance_id = %instance.instance_id, "builder already launched by this execution");
            instance
        }
        None => {
            let spec = launch_spec(&recipe, &held, &source_ami);
            let instance = services.ec2.run_instance(&region, &spec).await?;
            tracing::info!(r#type = %recipe.image_type, version = %held.version, instance_id = %instance.instance_id, %region, "builder launched");
            instance
        }
    };

    Ok(BakeState {
        image_type: recipe.image_type.clone(),
        execution_id: input.execution_id.clone(),
        version: held.version.clone(),
        poll_seconds,
        deadline: held.deadline,
        source_ami,
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
    })
}

/// The builder's RunInstances request: the recipe's network and profile, IMDSv2 only, tagged as ours.
pub fn launch_spec(recipe: &Recipe, lock: &LockRecord, source_ami: &str) -> LaunchSpec {
    let mut tags: BTreeMap<String, String> = recipe.tags.clone();
    tags.insert(
        tags::NAME.into(),
        format!("golden-ami builder {} {}", recipe.image_type, lock.version),
    );
    tags.insert(tags::ROLE.into(), tags::ROLE_BUILDER.into());
    tags.insert(tags::TYPE.into(), recipe.image_type.clone());
    tags.insert(tags::VERSION.into(), lock.version.to_string());
    tags.insert(tags::EXECUTION.into(), lock.execution_id.clone());
    tags.insert(tags::SOURCE_AMI.into(), source_ami.into());
    LaunchSpec {
        image_id: source_ami.into(),
        instance_type: recipe.instance_type.clone(),
        subnet_id: recipe.subnet_id.clone(),
        security_group_ids: recipe.security_group_ids.clone(),
        instance_profile: recipe.instance_profile.clone(),
        associate_public_ip: recipe.associate_public_ip,
        block_devices: recipe
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
            .collect(),
        tags,
        client_token: client_token(&lock.execution_id, "launch"),
    }
}
