//! prune: delete old golden AMIs and their snapshots, keeping what DESIGN.md's rules protect.
//!
//! Daily it re-plans every type in every region of `GOLDEN_REGIONS`; on an EC2 `terminated` event it
//! re-plans only the type and region of the terminated instance's image, so an image whose last user went
//! away is deleted now rather than tomorrow. The plan (every candidate, keep or delete, with every reason)
//! is logged by real runs and returned by dry runs.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Duration;
use serde::Serialize;

use super::{finish, recipes, sweep_regions, ItemFailure, Trigger};
use crate::bake::Services;
use crate::error::{Error, Result};
use crate::ports::{Image, InstanceQuery};
use crate::publishing::read_manifest;
use crate::retention::{self, Action, Candidate, Plan, Policy, Protections, SnapshotInfo};
use crate::tags;
use crate::version::Version;

/// Where to look: everything, or one type in one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "scope")]
pub enum Scope {
    All {
        regions: Vec<String>,
    },
    One {
        region: String,
        image_type: String,
    },
    /// The event concerned nothing prune manages.
    Nothing {
        why: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    pub dry_run: bool,
    pub scope: Scope,
    pub plan: Option<Plan>,
    /// `ami-... (region)` deregistered by this run.
    pub deregistered: Vec<String>,
    pub deleted_snapshots: Vec<String>,
    /// Snapshots of ours that no image uses any more (deleted unless dry-run).
    pub orphan_snapshots: Vec<String>,
    /// Images and snapshots that could not be deleted; the run carried on with the others.
    pub failures: Vec<ItemFailure>,
}

pub async fn handle(services: &Services, trigger: Trigger) -> Result<PruneReport> {
    services.config.check(crate::config::PRUNE_SETTINGS)?;
    let settings = &services.config.lifecycle;
    let (dry_run, scope) = match trigger {
        Trigger::Schedule => (
            settings.prune_dry_run,
            Scope::All {
                regions: sweep_regions(services).await?,
            },
        ),
        Trigger::Manual { dry_run } => (
            dry_run || settings.prune_dry_run,
            Scope::All {
                regions: sweep_regions(services).await?,
            },
        ),
        Trigger::InstanceState {
            region,
            instance_id,
            state,
        } => (
            settings.prune_dry_run,
            scope_of_terminated(services, &region, &instance_id, &state).await?,
        ),
        Trigger::ExecutionStatus { .. } => {
            return Err(Error::InvalidInput(
                "prune handles schedules and EC2 state changes, not Step Functions events".into(),
            ))
        }
        Trigger::Batch(_) => {
            return Err(Error::InvalidInput(
                "a batch of events goes to prune::handle_batch".into(),
            ))
        }
    };
    let report = run(services, dry_run, scope).await?;
    let failures = report.failures.clone();
    finish("prune", report, &failures)
}

/// The plan for `scope` as a dry run makes it, deleting nothing (`goldenctl amis`).
pub async fn plan(services: &Services, scope: Scope) -> Result<PruneReport> {
    run(services, true, scope).await
}

/// What one batch of EC2 `terminated` events (from PruneEventsQueue) did: each (type, region) they touch
/// re-planned once, however many events named it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchReport {
    pub events: usize,
    /// One run per distinct (type, region).
    pub runs: Vec<PruneReport>,
    /// Events that concern no golden image, with why.
    pub ignored: Vec<String>,
    pub failures: Vec<ItemFailure>,
}

/// Coalesces a batch of terminated-instance events: the scopes they touch, deduplicated, each pruned once.
pub async fn handle_batch(services: &Services, events: Vec<Trigger>) -> Result<BatchReport> {
    services.config.check(crate::config::PRUNE_SETTINGS)?;
    let dry_run = services.config.lifecycle.prune_dry_run;
    let mut report = BatchReport {
        events: events.len(),
        runs: Vec::new(),
        ignored: Vec::new(),
        failures: Vec::new(),
    };
    let mut scopes: BTreeSet<(String, String)> = BTreeSet::new();
    for event in events {
        let Trigger::InstanceState {
            region,
            instance_id,
            state,
        } = event
        else {
            report
                .ignored
                .push(format!("{event:?}: not an EC2 state change"));
            continue;
        };
        match scope_of_terminated(services, &region, &instance_id, &state).await {
            Ok(Scope::One { region, image_type }) => {
                scopes.insert((region, image_type));
            }
            Ok(Scope::Nothing { why }) => report.ignored.push(why),
            Ok(Scope::All { .. }) => {}
            Err(e) => report.failures.push(ItemFailure::new(
                format!("{instance_id} ({region})"),
                "find the image of",
                &e,
            )),
        }
    }
    tracing::info!(
        events = report.events,
        scopes = scopes.len(),
        "prune batch coalesced"
    );
    for (region, image_type) in scopes {
        let item = format!("{image_type} in {region}");
        match run(services, dry_run, Scope::One { region, image_type }).await {
            Ok(run) => {
                report.failures.extend(run.failures.iter().cloned());
                report.runs.push(run);
            }
            Err(e) => report.failures.push(ItemFailure::new(item, "prune", &e)),
        }
    }
    let failures = report.failures.clone();
    finish("prune", report, &failures)
}

/// One prune run over `scope`; the items it could not act on are in the report's `failures`.
async fn run(services: &Services, dry_run: bool, scope: Scope) -> Result<PruneReport> {
    let settings = &services.config.lifecycle;
    let mut report = PruneReport {
        dry_run,
        scope: scope.clone(),
        plan: None,
        deregistered: Vec::new(),
        deleted_snapshots: Vec::new(),
        orphan_snapshots: Vec::new(),
        failures: Vec::new(),
    };
    let (regions, only_type) = match &scope {
        Scope::All { regions } => (regions.clone(), None),
        Scope::One { region, image_type } => (vec![region.clone()], Some(image_type.clone())),
        Scope::Nothing { why } => {
            tracing::info!(%why, "nothing to prune");
            return Ok(report);
        }
    };

    // A manifest that cannot be read cannot say what is published: delete nothing.
    let (manifest, _) = read_manifest(services.store.as_ref(), services.now()).await?;
    let mut candidates = Vec::new();
    // Every image the account owns in the scanned regions: a snapshot is deleted only if none of them uses it.
    let mut all_owned = Vec::new();
    let mut protections = Protections::default();
    let mut owned: BTreeMap<String, Vec<Image>> = BTreeMap::new();
    for region in &regions {
        let images = services.ec2.find_images(region, None, &[]).await?;
        for image in &images {
            all_owned.push(candidate(region, image));
            let ty = image.tags.get(tags::TYPE);
            if image.tags.get(tags::ROLE).map(String::as_str) == Some(tags::ROLE_IMAGE)
                && (only_type.is_none() || ty == only_type.as_ref())
            {
                candidates.push(candidate(region, image));
            }
        }
        gather_protections(services, region, &candidates, &mut protections).await?;
        owned.insert(region.clone(), images);
    }

    let types: BTreeSet<String> = candidates
        .iter()
        .filter_map(|c| c.image_type.clone())
        .collect();
    let recipes = recipes(services, types).await;
    let policy = Policy {
        keep_by_type: recipes
            .iter()
            .map(|(t, r)| (t.clone(), usize::try_from(r.keep).unwrap_or(usize::MAX)))
            .collect(),
        default_keep: retention::DEFAULT_KEEP,
        min_age: Duration::hours(settings.prune_min_age_hours),
        max_deletes: settings.prune_max_deletes,
    };
    let plan = retention::plan(
        &candidates,
        Some(&manifest),
        &protections,
        &policy,
        services.now(),
    );
    tracing::info!(
        dry_run,
        deletes = plan.deletes,
        capped = plan.capped,
        plan = %serde_json::to_string(&plan).unwrap_or_default(),
        "prune plan"
    );

    let deleting: BTreeSet<(String, String)> = plan
        .decisions
        .iter()
        .filter(|d| d.action == Action::Delete)
        .map(|d| (d.region.clone(), d.image_id.clone()))
        .collect();
    let snapshots = retention::snapshots_to_delete(&plan, &all_owned);
    // Images that are still there after this run (kept, or their deregistration failed): their
    // snapshots stay, whatever the plan said.
    let mut still_there: BTreeSet<(String, String)> = BTreeSet::new();
    if dry_run {
        still_there.clone_from(&deleting);
    } else {
        for (region, image_id) in &deleting {
            match services.ec2.deregister_image(region, image_id).await {
                Ok(()) => {
                    tracing::info!(%region, image_id = %image_id, "deregistered");
                    report.deregistered.push(format!("{image_id} ({region})"));
                }
                Err(e) => {
                    report.failures.push(ItemFailure::new(
                        format!("{image_id} ({region})"),
                        "deregister",
                        &e,
                    ));
                    still_there.insert((region.clone(), image_id.clone()));
                }
            }
        }
        let held: BTreeSet<(String, String)> = all_owned
            .iter()
            .filter(|c| still_there.contains(&(c.region.clone(), c.image_id.clone())))
            .flat_map(|c| c.snapshot_ids.iter().map(|s| (c.region.clone(), s.clone())))
            .collect();
        for (region, snapshot) in snapshots.iter().filter(|pair| !held.contains(*pair)) {
            match services.ec2.delete_snapshot(region, snapshot).await {
                Ok(()) => report
                    .deleted_snapshots
                    .push(format!("{snapshot} ({region})")),
                Err(e) => report.failures.push(ItemFailure::new(
                    format!("{snapshot} ({region})"),
                    "delete snapshot",
                    &e,
                )),
            }
        }
    }

    let mut referenced = BTreeSet::new();
    let mut ours = Vec::new();
    for (region, images) in &owned {
        for image in images.iter().filter(|i| {
            let key = (region.clone(), i.image_id.clone());
            !deleting.contains(&key) || still_there.contains(&key)
        }) {
            referenced.extend(
                image
                    .snapshot_ids
                    .iter()
                    .map(|s| (region.clone(), s.clone())),
            );
        }
        let mut filter = vec![(tags::ROLE, tags::ROLE_IMAGE)];
        if let Some(ty) = &only_type {
            filter.push((tags::TYPE, ty.as_str()));
        }
        for s in services.ec2.find_snapshots(region, &filter).await? {
            ours.push(SnapshotInfo {
                region: region.clone(),
                role_image: s.tags.get(tags::ROLE).map(String::as_str) == Some(tags::ROLE_IMAGE),
                snapshot_id: s.snapshot_id,
                start_time: s.start_time,
            });
        }
    }
    let already: BTreeSet<&(String, String)> = snapshots.iter().collect();
    let budget = settings.prune_max_deletes;
    for (region, snapshot) in
        retention::orphan_snapshots(&ours, &referenced, policy.min_age, services.now())
            .into_iter()
            .filter(|pair| !already.contains(pair))
            .take(budget)
    {
        if !dry_run {
            if let Err(e) = services.ec2.delete_snapshot(&region, &snapshot).await {
                report.failures.push(ItemFailure::new(
                    format!("{snapshot} ({region})"),
                    "delete orphan snapshot",
                    &e,
                ));
                continue;
            }
        }
        report
            .orphan_snapshots
            .push(format!("{snapshot} ({region})"));
    }
    report.plan = Some(plan);
    Ok(report)
}

fn candidate(region: &str, image: &Image) -> Candidate {
    Candidate {
        region: region.to_owned(),
        image_id: image.image_id.clone(),
        name: image.name.clone(),
        image_type: image.tags.get(tags::TYPE).cloned(),
        version: image
            .tags
            .get(tags::VERSION)
            .and_then(|v| Version::parse(v).ok()),
        created_at: image
            .creation_date
            .as_deref()
            .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
            .map(|d| d.with_timezone(&chrono::Utc)),
        owned_by_account: true, // listed with Owners=self
        role_image: image.tags.get(tags::ROLE).map(String::as_str) == Some(tags::ROLE_IMAGE),
        keep_tag: image
            .tags
            .get(tags::KEEP)
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        snapshot_ids: image.snapshot_ids.clone(),
    }
}

/// Instances (any state but terminated), launch templates and our SSM parameters that use a candidate.
async fn gather_protections(
    services: &Services,
    region: &str,
    candidates: &[Candidate],
    protections: &mut Protections,
) -> Result<()> {
    let ids: Vec<String> = candidates
        .iter()
        .filter(|c| c.region == region)
        .map(|c| c.image_id.clone())
        .collect();
    // DescribeInstances takes at most 200 filter values.
    for chunk in ids.chunks(200) {
        let query = InstanceQuery {
            image_ids: chunk.to_vec(),
            ..InstanceQuery::default()
        };
        for instance in services.ec2.query_instances(region, &query).await? {
            protections
                .in_use
                .entry(instance.image_id.clone())
                .or_default()
                .push(instance.instance_id);
        }
    }
    for (image, reference) in services.ec2.launch_template_images(region).await? {
        protections
            .launch_templates
            .entry(image)
            .or_default()
            .push(format!("{reference} in {region}"));
    }
    for (name, value) in services
        .ssm
        .parameters_by_path(region, "/golden-ami/")
        .await?
    {
        protections
            .parameters
            .entry(value)
            .or_default()
            .push(format!("{name} in {region}"));
    }
    Ok(())
}

/// The type and region to re-plan after an instance terminated: those of its image, if it is ours.
async fn scope_of_terminated(
    services: &Services,
    region: &str,
    instance_id: &str,
    state: &str,
) -> Result<Scope> {
    if state != "terminated" {
        return Ok(Scope::Nothing {
            why: format!("instance {instance_id} is {state}, not terminated"),
        });
    }
    // Terminated instances stay visible for about an hour, long enough for the event.
    let query = InstanceQuery {
        instance_ids: vec![instance_id.to_owned()],
        states: vec!["terminated".into(), "shutting-down".into()],
        ..InstanceQuery::default()
    };
    let Some(instance) = services
        .ec2
        .query_instances(region, &query)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(Scope::Nothing {
            why: format!("instance {instance_id} is no longer visible in {region}"),
        });
    };
    let image = services
        .ec2
        .describe_image(region, &instance.image_id)
        .await?;
    match image {
        Some(image) if image.tags.get(tags::ROLE).map(String::as_str) == Some(tags::ROLE_IMAGE) => {
            match image.tags.get(tags::TYPE) {
                Some(ty) => Ok(Scope::One {
                    region: region.to_owned(),
                    image_type: ty.clone(),
                }),
                None => Ok(Scope::Nothing {
                    why: format!("image {} has no type tag", image.image_id),
                }),
            }
        }
        _ => Ok(Scope::Nothing {
            why: format!(
                "instance {instance_id} ran {}, not a golden image",
                instance.image_id
            ),
        }),
    }
}
