//! terminate-builder: the last stage of every bake, on success (`outcome: succeeded`) and on failure
//! (`outcome: failed`, the Cleanup state).
//!
//! On failure the state may be anything from the raw execution input to a nearly published bake, so it is
//! read leniently, and what this execution made is found by its tags and names as well as by the state:
//! a stage that died between creating a resource and returning its id leaves no trace in the state.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::launch::recipe_key;
use super::{image_name, lock, BuilderRef, ImageRef, Services};
use crate::error::Result;
use crate::publishing::read_manifest;
use crate::recipe::Recipe;
use crate::tags;
use crate::version::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// terminate-builder's payload: `{"outcome", "executionId": $$.Execution.Id, "state": $}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TerminateInput {
    pub outcome: Outcome,
    pub execution_id: String,
    pub state: PartialState,
}

/// Whatever part of the bake state exists when the bake ends; a field that does not parse counts as absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartialState {
    #[serde(rename = "type", default, deserialize_with = "lenient")]
    pub image_type: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub version: Option<Version>,
    #[serde(default, deserialize_with = "lenient")]
    pub recipe: Option<Recipe>,
    #[serde(default, deserialize_with = "lenient")]
    pub builder: Option<BuilderRef>,
    #[serde(default, deserialize_with = "lenient")]
    pub image: Option<ImageRef>,
    #[serde(default, deserialize_with = "lenient")]
    pub copies: Option<Vec<ImageRef>>,
    #[serde(default, deserialize_with = "lenient")]
    pub error: Option<CaughtError>,
}

/// What a Catch with `ResultPath: $.error` puts in the state.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CaughtError {
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "Cause", default)]
    pub cause: String,
}

impl CaughtError {
    /// The person-readable message: a Lambda error's Cause is the JSON `{"errorType", "errorMessage"}`.
    pub fn message(&self) -> String {
        #[derive(Deserialize)]
        struct LambdaCause {
            #[serde(rename = "errorMessage")]
            error_message: String,
        }
        match serde_json::from_str::<LambdaCause>(&self.cause) {
            Ok(c) => c.error_message,
            Err(_) if self.cause.trim().is_empty() => format!("{} (no cause given)", self.error),
            Err(_) => self.cause.clone(),
        }
    }
}

fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> std::result::Result<Option<T>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

/// What the cleanup did; on failure also the error and cause for the `BakeFailed` state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupReport {
    pub terminated: Vec<String>,
    pub deregistered: Vec<String>,
    pub deleted_snapshots: Vec<String>,
    /// Images of this execution left alone because the manifest publishes them.
    pub kept_published: Vec<String>,
    pub lock_released: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

pub async fn handle(services: &Services, input: TerminateInput) -> Result<CleanupReport> {
    super::require(&input.execution_id, "executionId")?;
    let state = &input.state;
    let mut report = CleanupReport::default();
    let Some(image_type) = state.image_type.clone() else {
        // Without a type nothing was launched or locked (launch-builder checks it first).
        return Ok(finish(report, input.outcome, state));
    };
    let exec = input.execution_id.as_str();
    let recipe = match &state.recipe {
        Some(r) => Some(r.clone()),
        None => stored_recipe(services, &image_type).await?,
    };
    let mut regions: BTreeSet<String> = recipe.iter().flat_map(|r| r.all_regions()).collect();
    regions.extend(state.builder.iter().map(|b| b.region.clone()));
    regions.extend(
        state
            .image
            .iter()
            .chain(state.copies.iter().flatten())
            .map(|i| i.region.clone()),
    );

    // Builders: by tag, plus the one in the state in case its tags never landed.
    let mut builders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for region in &regions {
        for i in services
            .ec2
            .find_instances(
                region,
                &[(tags::ROLE, tags::ROLE_BUILDER), (tags::EXECUTION, exec)],
            )
            .await?
        {
            builders
                .entry(region.clone())
                .or_default()
                .insert(i.instance_id);
        }
    }
    if let Some(b) = &state.builder {
        if let Some(i) = services
            .ec2
            .describe_instance(&b.region, &b.instance_id)
            .await?
        {
            // The state is input: act on its instance only if it really is this execution's builder.
            let ours = i.tags.get(tags::EXECUTION).map(String::as_str) == Some(exec);
            if ours && !matches!(i.state.as_str(), "terminated" | "shutting-down") {
                builders
                    .entry(b.region.clone())
                    .or_default()
                    .insert(i.instance_id);
            }
        }
    }
    for (region, ids) in &builders {
        let ids: Vec<String> = ids.iter().cloned().collect();
        services.ec2.terminate_instances(region, &ids).await?;
        tracing::info!(%region, instance_ids = ?ids, "builder terminated");
        report.terminated.extend(ids);
    }

    if input.outcome == Outcome::Failed {
        let known = state
            .image
            .iter()
            .chain(state.copies.iter().flatten())
            .map(|i| (i.region.clone(), i.image_id.clone()))
            .collect();
        let version = state.version.as_ref();
        discard_execution_images(
            services,
            &image_type,
            exec,
            version,
            &regions,
            known,
            &mut report,
        )
        .await?;
    }
    report.lock_released = lock::release(services.store.as_ref(), &image_type, exec).await?;
    Ok(finish(report, input.outcome, state))
}

/// The type's stored recipe, for the regions to sweep when the state has none. A recipe that is gone or
/// broken leaves the regions the state names; a failed read is an error (Step Functions retries it), since
/// sweeping fewer regions than the bake used could leave a builder or a copy behind.
async fn stored_recipe(services: &Services, image_type: &str) -> Result<Option<Recipe>> {
    let key = recipe_key(image_type);
    let Some(object) = services.store.get(&key).await? else {
        tracing::warn!(%key, "no recipe: sweeping only the regions the state names");
        return Ok(None);
    };
    match Recipe::from_json_slice(&object.body, image_type) {
        Ok(recipe) => Ok(Some(recipe)),
        Err(e) => {
            tracing::warn!(%key, error = %e, "broken recipe: sweeping only the regions the state names");
            Ok(None)
        }
    }
}

/// Deregisters the images an execution made (found by its tag, its image name and `known` ids) unless
/// the manifest publishes them, and deletes their snapshots. Used by the failed-bake cleanup and the reaper.
pub async fn discard_execution_images(
    services: &Services,
    image_type: &str,
    exec: &str,
    version: Option<&Version>,
    regions: &BTreeSet<String>,
    mut known: BTreeSet<(String, String)>,
    report: &mut CleanupReport,
) -> Result<()> {
    let published: BTreeSet<String> = match read_manifest(services.store.as_ref(), services.now())
        .await
    {
        Ok((manifest, _)) => manifest
            .types
            .values()
            .flat_map(|t| &t.versions)
            .flat_map(|v| v.images.values().cloned())
            .collect(),
        // An unreadable manifest cannot say what is published: keep every image rather than guess.
        Err(e) => {
            tracing::error!(error = %e, "cannot read the manifest; keeping this execution's images");
            return Ok(());
        }
    };
    let name = version.map(|v| image_name(image_type, v));
    for region in regions {
        for image in services
            .ec2
            .find_images(region, None, &[(tags::EXECUTION, exec)])
            .await?
        {
            known.insert((region.clone(), image.image_id));
        }
        if let Some(name) = &name {
            // A copy whose tags were never applied is found by its name; never one of another execution.
            for image in services.ec2.find_images(region, Some(name), &[]).await? {
                if image.tags.get(tags::EXECUTION).is_none_or(|e| e == exec) {
                    known.insert((region.clone(), image.image_id));
                }
            }
        }
    }
    for (region, image_id) in known {
        if published.contains(&image_id) {
            report.kept_published.push(image_id);
            continue;
        }
        let Some(image) = services.ec2.describe_image(&region, &image_id).await? else {
            continue;
        };
        if image.state == "deregistered" {
            continue;
        }
        // Only this execution's images: tagged with it, or (tags never applied) named for its version.
        let ours = match image.tags.get(tags::EXECUTION) {
            Some(e) => e == exec,
            None => name.as_deref() == Some(image.name.as_str()),
        };
        if !ours {
            tracing::warn!(%region, image_id = %image_id, "not an image of this execution; left alone");
            continue;
        }
        services.ec2.deregister_image(&region, &image_id).await?;
        for snapshot in &image.snapshot_ids {
            services.ec2.delete_snapshot(&region, snapshot).await?;
            report.deleted_snapshots.push(snapshot.clone());
        }
        tracing::info!(%region, image_id = %image_id, snapshots = ?image.snapshot_ids, "discarded an unpublished image of a failed or abandoned bake");
        report.deregistered.push(format!("{image_id} ({region})"));
    }
    Ok(())
}

fn finish(mut report: CleanupReport, outcome: Outcome, state: &PartialState) -> CleanupReport {
    if outcome == Outcome::Failed {
        let (error, message) = match &state.error {
            Some(e) => (e.error.clone(), e.message()),
            None => (
                "BakeFailed".to_owned(),
                "the bake failed without an error in its state".to_owned(),
            ),
        };
        let mut done = Vec::new();
        if !report.terminated.is_empty() {
            done.push(format!(
                "terminated builder {}",
                report.terminated.join(", ")
            ));
        }
        if !report.deregistered.is_empty() {
            done.push(format!(
                "deregistered {} and deleted {} snapshot(s)",
                report.deregistered.join(", "),
                report.deleted_snapshots.len()
            ));
        }
        if report.lock_released {
            done.push("released the bake lock".to_owned());
        }
        let done = if done.is_empty() {
            "nothing to clean up".to_owned()
        } else {
            done.join("; ")
        };
        report.error = Some(error);
        report.cause = Some(format!("{message} [cleanup: {done}]"));
    }
    report
}
