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
    /// `s3://$GOLDEN_BUCKET/logs/<type>/<version>/`, where the bake's commands wrote their output.
    #[serde(default, deserialize_with = "lenient")]
    pub logs: Option<String>,
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
    /// What a failed bake's cleanup could not do (it carries on past each failure); the reaper retries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

pub async fn handle(services: &Services, input: TerminateInput) -> Result<CleanupReport> {
    // The state's own ids are input too, but they are acted on only once EC2 shows them tagged with this
    // execution, so a malformed one is never trusted; the execution id is what everything is scoped by.
    crate::ids::execution_arn("executionId", &input.execution_id)?;
    let state = &input.state;
    let mut report = CleanupReport::default();
    let Some(image_type) = state.image_type.clone() else {
        // Without a type nothing was launched or locked (launch-builder checks it first).
        return Ok(finish(report, input.outcome, state));
    };
    let exec = input.execution_id.as_str();
    // A failed bake's cleanup does what it can and reports the rest: an error here would end the bake with
    // a raw Lambda error instead of its own cause. A finished bake's errors go to the Catch (and Cleanup).
    let failed = input.outcome == Outcome::Failed;
    if failed {
        // The lock first: whatever fails below, the next bake of the type must not wait for the reaper.
        report.lock_released = best_effort(
            &mut report.failures,
            "release the bake lock",
            lock::release(services.store.as_ref(), &image_type, exec).await,
        )
        .unwrap_or(false);
    }
    let recipe = match &state.recipe {
        Some(r) => Some(r.clone()),
        None => match stored_recipe(services, &image_type).await {
            Ok(r) => r,
            Err(e) if failed => {
                report.failures.push(format!(
                    "read the recipe (sweeping only the regions the state names): {e}"
                ));
                None
            }
            Err(e) => return Err(e),
        },
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

    // Builders and testers: by tag, plus the builder in the state in case its tags never landed (a tester
    // is launched tagged or not at all).
    let mut builders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (region, role) in regions
        .iter()
        .flat_map(|r| tags::BAKE_INSTANCE_ROLES.map(|role| (r, role)))
    {
        let found = services
            .ec2
            .find_instances(region, &[(tags::ROLE, role), (tags::EXECUTION, exec)])
            .await;
        let found = if failed {
            best_effort(
                &mut report.failures,
                &format!("find the {role}s in {region}"),
                found,
            )
            .unwrap_or_default()
        } else {
            found?
        };
        for i in found {
            builders
                .entry(region.clone())
                .or_default()
                .insert(i.instance_id);
        }
    }
    if let Some(b) = &state.builder {
        let described = services
            .ec2
            .describe_instance(&b.region, &b.instance_id)
            .await;
        let described = if failed {
            best_effort(
                &mut report.failures,
                &format!("describe builder {} ({})", b.instance_id, b.region),
                described,
            )
            .flatten()
        } else {
            described?
        };
        if let Some(i) = described {
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
        let terminated = services.ec2.terminate_instances(region, &ids).await;
        if failed {
            let what = format!("terminate builder {} ({region})", ids.join(", "));
            if best_effort(&mut report.failures, &what, terminated).is_none() {
                continue;
            }
        } else {
            terminated?;
        }
        tracing::info!(%region, instance_ids = ?ids, "builder terminated");
        report.terminated.extend(ids);
    }

    if failed {
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
        .await;
    } else {
        report.lock_released = lock::release(services.store.as_ref(), &image_type, exec).await?;
    }
    Ok(finish(report, input.outcome, state))
}

/// The value of `result`, or None with the failure noted as "`what`: error".
fn best_effort<T>(failures: &mut Vec<String>, what: &str, result: Result<T>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(what, error = %e, "cleanup step failed; carrying on");
            failures.push(format!("{what}: {e}"));
            None
        }
    }
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
/// Best effort: what it cannot do goes to `report.failures`, and it carries on with the rest.
pub async fn discard_execution_images(
    services: &Services,
    image_type: &str,
    exec: &str,
    version: Option<&Version>,
    regions: &BTreeSet<String>,
    mut known: BTreeSet<(String, String)>,
    report: &mut CleanupReport,
) {
    let published: BTreeSet<String> = match read_manifest(services.store.as_ref(), services.now())
        .await
    {
        Ok((manifest, _)) => manifest.image_ids(),
        // An unreadable manifest cannot say what is published: keep every image rather than guess.
        Err(e) => {
            tracing::error!(error = %e, "cannot read the manifest; keeping this execution's images");
            report.failures.push(format!(
                "discard this execution's images (kept: the manifest cannot say which are published): {e}"
            ));
            return;
        }
    };
    let name = version.map(|v| image_name(image_type, v));
    let failures = &mut report.failures;
    for region in regions {
        let by_tag = services
            .ec2
            .find_images(region, None, &[(tags::EXECUTION, exec)])
            .await;
        let what = format!("find this execution's images in {region}");
        for image in best_effort(failures, &what, by_tag).unwrap_or_default() {
            known.insert((region.clone(), image.image_id));
        }
        if let Some(name) = &name {
            // A copy whose tags were never applied is found by its name; never one of another execution.
            let by_name = services.ec2.find_images(region, Some(name), &[]).await;
            let what = format!("find image {name} in {region}");
            for image in best_effort(failures, &what, by_name).unwrap_or_default() {
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
        let what = format!("discard image {image_id} ({region})");
        let described = services.ec2.describe_image(&region, &image_id).await;
        let Some(Some(image)) = best_effort(&mut report.failures, &what, described) else {
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
        let deregistered = services.ec2.deregister_image(&region, &image_id).await;
        if best_effort(&mut report.failures, &what, deregistered).is_none() {
            // Its snapshots stay with it: deleting them would break an image that still exists.
            continue;
        }
        for snapshot in &image.snapshot_ids {
            let deleted = services.ec2.delete_snapshot(&region, snapshot).await;
            let what = format!("delete snapshot {snapshot} of image {image_id} ({region})");
            if best_effort(&mut report.failures, &what, deleted).is_some() {
                report.deleted_snapshots.push(snapshot.clone());
            }
        }
        tracing::info!(%region, image_id = %image_id, snapshots = ?image.snapshot_ids, "discarded an unpublished image of a failed or abandoned bake");
        report.deregistered.push(format!("{image_id} ({region})"));
    }
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
        let mut done = if done.is_empty() {
            "nothing to clean up".to_owned()
        } else {
            done.join("; ")
        };
        if !report.failures.is_empty() {
            done.push_str(&format!(
                "; could not: {} (reap-builders retries these)",
                report.failures.join("; ")
            ));
        }
        // A failed command's message links its own output already; any other failure links the bake's.
        let logs = match &state.logs {
            Some(l) if !message.contains("whole output: ") => format!(" [command output: {l}]"),
            _ => String::new(),
        };
        report.error = Some(error);
        report.cause = Some(format!("{message}{logs} [cleanup: {done}]"));
    }
    report
}
