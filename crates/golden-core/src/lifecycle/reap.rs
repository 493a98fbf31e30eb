//! reap-builders: never leave a stuck builder behind.
//!
//! A builder whose execution is no longer running (failed, timed out, aborted: a TIMED_OUT or ABORTED
//! execution runs no Catch, so its own cleanup never ran), or that has outlived its recipe's build time, is
//! terminated; that execution's unpublished images are discarded; and the type's bake lock is released
//! when its holder is dead. A builder of a running execution within its time is never touched.

use std::collections::BTreeSet;

use chrono::Duration;
use serde::Serialize;

use super::{finish, recipes, sweep_regions, ItemFailure, Trigger};
use crate::bake::cleanup::{discard_execution_images, CleanupReport};
use crate::bake::lock::{self, Lock};
use crate::bake::Services;
use crate::error::{Error, Result};
use crate::ports::Instance;
use crate::reaping::{self, Builder, ExecutionState, ReapVerdict};
use crate::recipe::Recipe;
use crate::tags;
use crate::version::Version;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReapedBuilder {
    pub region: String,
    pub instance_id: String,
    pub execution: Option<String>,
    pub verdict: ReapVerdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<CleanupReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReapReport {
    pub dry_run: bool,
    pub builders: Vec<ReapedBuilder>,
    /// Types whose lock was held by a dead execution (or was unreadable and old) and was released.
    pub locks_released: Vec<String>,
    /// Executions that failed, timed out or were aborted with no builder left, whose unpublished images
    /// were discarded (or, dry run, would be): the images their own cleanup could not remove.
    pub orphan_images: Vec<CleanupOfExecution>,
    /// Builders, images and locks that could not be handled; the run carried on with the others.
    pub failures: Vec<ItemFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupOfExecution {
    pub execution: String,
    pub status: String,
    /// `image (region)` found with the execution's tag and not published.
    pub images: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<CleanupReport>,
}

pub async fn handle(services: &Services, trigger: Trigger) -> Result<ReapReport> {
    services.config.check(crate::config::REAP_SETTINGS)?;
    let (dry_run, found) = match &trigger {
        Trigger::Schedule => (false, all_builders(services, &[]).await?),
        Trigger::Manual { dry_run } => (*dry_run, all_builders(services, &[]).await?),
        Trigger::ExecutionStatus { execution_arn, .. } => (
            false,
            all_builders(services, &[(tags::EXECUTION, execution_arn.as_str())]).await?,
        ),
        Trigger::InstanceState {
            region,
            instance_id,
            ..
        } => {
            let found = services.ec2.describe_instance(region, instance_id).await?;
            let builder = found.filter(|i| tags::is_bake_instance(&i.tags));
            (
                false,
                builder.map(|i| (region.clone(), i)).into_iter().collect(),
            )
        }
        Trigger::Batch(_) => {
            return Err(Error::InvalidInput(
                "reap-builders handles schedules, EC2 state changes and Step Functions events, not SQS \
                 batches"
                    .into(),
            ))
        }
    };
    let mut report = ReapReport {
        dry_run,
        builders: Vec::new(),
        locks_released: Vec::new(),
        orphan_images: Vec::new(),
        failures: Vec::new(),
    };
    let types: BTreeSet<String> = found
        .iter()
        .filter_map(|(_, i)| i.tags.get(tags::TYPE).cloned())
        .collect();
    let recipes = recipes(services, types).await;
    let margin = Duration::minutes(services.config.lifecycle.reap_margin_minutes);

    for (region, instance) in found {
        let item = format!("{} ({region})", instance.instance_id);
        match reap_one(services, &recipes, margin, dry_run, region, instance).await {
            Ok(builder) => {
                // Images it could not discard: the builder is reaped, but the run must say so.
                for failure in builder.cleanup.iter().flat_map(|c| &c.failures) {
                    report.failures.push(ItemFailure {
                        item: item.clone(),
                        action: "discard the execution's images".into(),
                        error: failure.clone(),
                    });
                }
                report.builders.push(builder);
            }
            Err(e) => report
                .failures
                .push(ItemFailure::new(item, "reap builder", &e)),
        }
    }

    // Images of ended executions that no builder led to: their cleanup failed to discard them, or the
    // builder was gone before the reaper looked. Found by the execution tag in every region.
    let reaped: BTreeSet<String> = report
        .builders
        .iter()
        .filter(|b| b.cleanup.is_some())
        .filter_map(|b| b.execution.clone())
        .collect();
    let only = match &trigger {
        Trigger::ExecutionStatus { execution_arn, .. } => Some(Some(execution_arn.as_str())),
        Trigger::Schedule | Trigger::Manual { .. } => Some(None),
        // A builder's state change concerns that builder only: the sweep finds the rest.
        Trigger::InstanceState { .. } | Trigger::Batch(_) => None,
    };
    let found = match only {
        Some(only) => images_of_ended_executions(services, only, &reaped).await,
        None => Ok(BTreeMap::new()),
    };
    match found {
        Ok(found) => {
            for (exec, images) in found {
                match discard_orphans(services, &exec, images, dry_run).await {
                    Ok(Some(done)) => {
                        for failure in done.cleanup.iter().flat_map(|c| &c.failures) {
                            report.failures.push(ItemFailure {
                                item: exec.clone(),
                                action: "discard the execution's images".into(),
                                error: failure.clone(),
                            });
                        }
                        report.orphan_images.push(done);
                    }
                    Ok(None) => {}
                    Err(e) => report.failures.push(ItemFailure::new(
                        exec.clone(),
                        "discard the execution's images",
                        &e,
                    )),
                }
            }
        }
        Err(e) => report.failures.push(ItemFailure::new(
            "images of ended executions".into(),
            "find",
            &e,
        )),
    }

    // Locks whose holder died without a builder to reap (e.g. it failed before launching one).
    for key in services.store.list("locks/").await? {
        let Some(ty) = key
            .strip_prefix("locks/")
            .and_then(|k| k.strip_suffix(".json"))
        else {
            continue;
        };
        match release_if_dead(services, ty, margin, dry_run).await {
            Ok(true) => report.locks_released.push(ty.to_owned()),
            Ok(false) => {}
            Err(e) => report
                .failures
                .push(ItemFailure::new(key.clone(), "release lock", &e)),
        }
    }
    let failures = report.failures.clone();
    finish("reap-builders", report, &failures)
}

/// Our unpublished golden images by execution, in every sweep region (of one execution, if `only`),
/// leaving out executions already handled with their builder.
async fn images_of_ended_executions(
    services: &Services,
    only: Option<&str>,
    handled: &BTreeSet<String>,
) -> Result<BTreeMap<String, Vec<(String, crate::ports::Image)>>> {
    let (manifest, _) =
        crate::publishing::read_manifest(services.store.as_ref(), services.now()).await?;
    let published = manifest.image_ids();
    let mut filter = vec![(tags::ROLE, tags::ROLE_IMAGE)];
    if let Some(exec) = only {
        filter.push((tags::EXECUTION, exec));
    }
    let mut out: BTreeMap<String, Vec<(String, crate::ports::Image)>> = BTreeMap::new();
    for region in sweep_regions(services).await? {
        for image in services.ec2.find_images(&region, None, &filter).await? {
            let Some(exec) = image.tags.get(tags::EXECUTION).cloned() else {
                continue;
            };
            // Another stack's (or region's) bake: not ours to judge, and its role may not describe it.
            if !of_this_state_machine(services, &exec) {
                continue;
            }
            if published.contains(&image.image_id)
                || handled.contains(&exec)
                || image.state == "deregistered"
            {
                continue;
            }
            out.entry(exec).or_default().push((region.clone(), image));
        }
    }
    Ok(out)
}

/// Whether `execution` is one of the deployment's bake state machine (`GOLDEN_STATE_MACHINE_ARN`); with
/// none configured (the CLI against any stack), every execution is.
fn of_this_state_machine(services: &Services, execution: &str) -> bool {
    let Some(machine) = &services.config.state_machine_arn else {
        return true;
    };
    // arn:aws:states:R:A:stateMachine:NAME -> arn:aws:states:R:A:execution:NAME:
    let prefix = machine.replacen(":stateMachine:", ":execution:", 1) + ":";
    execution.starts_with(&prefix)
}

/// Discards the images of `exec` if it ended without success (FAILED, TIMED_OUT, ABORTED). A running or
/// succeeded execution keeps them (a published image that left the manifest's history is prune's to
/// judge), and so does one Step Functions no longer knows: its images are prune's too.
async fn discard_orphans(
    services: &Services,
    exec: &str,
    images: Vec<(String, crate::ports::Image)>,
    dry_run: bool,
) -> Result<Option<CleanupOfExecution>> {
    let ExecutionState::Ended { status } = execution_state(services, Some(exec)).await? else {
        return Ok(None);
    };
    if !matches!(status.as_str(), "FAILED" | "TIMED_OUT" | "ABORTED") {
        return Ok(None);
    }
    let listed = images
        .iter()
        .map(|(region, i)| format!("{} ({region})", i.image_id))
        .collect();
    let Some(image_type) = images
        .iter()
        .find_map(|(_, i)| i.tags.get(tags::TYPE).cloned())
    else {
        return Ok(None);
    };
    let mut cleanup = None;
    if !dry_run {
        let regions: BTreeSet<String> = images.iter().map(|(r, _)| r.clone()).collect();
        let known = images
            .iter()
            .map(|(r, i)| (r.clone(), i.image_id.clone()))
            .collect();
        let mut done = CleanupReport::default();
        discard_execution_images(
            services,
            &image_type,
            exec,
            None,
            &regions,
            known,
            &mut done,
        )
        .await;
        cleanup = Some(done);
    }
    tracing::info!(execution = %exec, %status, images = ?listed, dry_run, "images of an ended execution without its builder");
    Ok(Some(CleanupOfExecution {
        execution: exec.to_owned(),
        status,
        images: listed,
        cleanup,
    }))
}

/// The recipe's bound on a bake of `ty`, or the default one.
fn max_build(recipe: Option<&Recipe>) -> Duration {
    Duration::minutes(recipe.map_or(reaping::DEFAULT_MAX_BUILD_MINUTES, |r| {
        i64::from(r.max_build_minutes)
    }))
}

async fn reap_one(
    services: &Services,
    recipes: &BTreeMap<String, Recipe>,
    margin: Duration,
    dry_run: bool,
    region: String,
    instance: Instance,
) -> Result<ReapedBuilder> {
    let execution = instance.tags.get(tags::EXECUTION).cloned();
    let state = execution_state(services, execution.as_deref()).await?;
    let image_type = instance.tags.get(tags::TYPE).cloned();
    let recipe = image_type.as_ref().and_then(|t| recipes.get(t));
    let builder = Builder {
        region: region.clone(),
        instance_id: instance.instance_id.clone(),
        state: instance.state.clone(),
        launch_time: instance.launch_time,
        execution: execution.clone(),
        image_type: image_type.clone(),
    };
    let verdict =
        reaping::reap_verdict(&builder, &state, max_build(recipe), margin, services.now());
    tracing::info!(%region, instance_id = %instance.instance_id, ?execution, ?verdict, dry_run, "builder");
    let mut cleanup = None;
    if matches!(verdict, ReapVerdict::Reap { .. }) && !dry_run {
        let mut done = CleanupReport::default();
        services
            .ec2
            .terminate_instances(&region, std::slice::from_ref(&instance.instance_id))
            .await?;
        done.terminated.push(instance.instance_id.clone());
        // A running (stuck) execution still owns its images: it fails at its next check once its
        // builder is gone, and its own cleanup discards them. Only a dead one's are discarded here.
        if let (Some(ty), Some(exec)) = (&image_type, &execution) {
            if reaping::lock_is_dead(exec, &state) {
                let regions: BTreeSet<String> = recipe
                    .map(|r| r.all_regions())
                    .unwrap_or_else(|| vec![region.clone()])
                    .into_iter()
                    .collect();
                let version = instance
                    .tags
                    .get(tags::VERSION)
                    .and_then(|v| Version::parse(v).ok());
                let known = BTreeSet::new();
                discard_execution_images(
                    services,
                    ty,
                    exec,
                    version.as_ref(),
                    &regions,
                    known,
                    &mut done,
                )
                .await;
                done.lock_released = lock::release(services.store.as_ref(), ty, exec).await?;
            }
        }
        cleanup = Some(done);
    }
    Ok(ReapedBuilder {
        region,
        instance_id: instance.instance_id,
        execution,
        verdict,
        cleanup,
    })
}

/// Releases the lock of `ty` if its holder is dead, or if it is unreadable (so it names no holder to ask)
/// and older than the type's longest bake plus the margin: no live bake can still hold it then. True if
/// released (or, dry run, if it would be).
async fn release_if_dead(
    services: &Services,
    ty: &str,
    margin: Duration,
    dry_run: bool,
) -> Result<bool> {
    match lock::inspect(services.store.as_ref(), ty).await? {
        None => Ok(false),
        Some(Lock::Held(holder)) => {
            let state = execution_state(services, Some(&holder.execution_id)).await?;
            if !reaping::lock_is_dead(&holder.execution_id, &state) {
                return Ok(false);
            }
            if !dry_run {
                lock::release(services.store.as_ref(), ty, &holder.execution_id).await?;
            }
            tracing::info!(r#type = %ty, holder = %holder.execution_id, dry_run, "released the lock of a dead execution");
            Ok(true)
        }
        Some(Lock::Unreadable {
            etag,
            last_modified,
            error,
        }) => {
            let recipes = recipes(services, [ty.to_owned()]).await;
            let dead_after = max_build(recipes.get(ty)) + margin;
            let age = last_modified.map(|at| services.now() - at);
            if age.is_none_or(|age| age < dead_after) {
                tracing::warn!(r#type = %ty, %error, ?age, "unreadable bake lock, too young to be dead: left alone");
                return Ok(false);
            }
            if !dry_run {
                lock::release_unreadable(services.store.as_ref(), ty, &etag).await?;
            }
            tracing::warn!(r#type = %ty, %error, ?age, dry_run, "released an unreadable bake lock older than any bake");
            Ok(true)
        }
    }
}

/// Builders and testers (any state but terminated) in every sweep region, with `tags` too.
async fn all_builders(
    services: &Services,
    tags: &[(&str, &str)],
) -> Result<Vec<(String, Instance)>> {
    let mut out = Vec::new();
    for region in sweep_regions(services).await? {
        for role in tags::BAKE_INSTANCE_ROLES {
            let mut filter = vec![(tags::ROLE, role)];
            filter.extend_from_slice(tags);
            for instance in services.ec2.find_instances(&region, &filter).await? {
                out.push((region.clone(), instance));
            }
        }
    }
    Ok(out)
}

async fn execution_state(services: &Services, execution: Option<&str>) -> Result<ExecutionState> {
    let Some(arn) = execution else {
        return Ok(ExecutionState::NotFound);
    };
    Ok(ExecutionState::from_status(
        services.executions.status(arn).await?.as_deref(),
    ))
}
