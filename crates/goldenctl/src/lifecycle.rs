//! `amis TYPE`, `prune`, `reap`, `enforce`, `recycle TYPE`: the lifecycle functions' own plans, run
//! in-process with the operator's credentials. Each shows its plan first; acting needs confirmation.

use std::collections::{BTreeMap, BTreeSet};

use golden_core::freshness::{Enforcement, Verdict};
use golden_core::lifecycle::{enforce, prune, reap, Trigger};
use golden_core::ports::InstanceQuery;
use golden_core::publishing::read_manifest;
use golden_core::retention::{Action, Reason};
use serde::Serialize;

use crate::deploy::Deployment;
use crate::output::{print, table, Format};
use crate::ui::{self, confirm, ActArgs, Go};
use crate::EXIT_OK;

/// One reason in words.
pub fn reason_text(r: &Reason) -> String {
    match r {
        Reason::Newest { rank, keep } => format!("newest {} of {keep} kept", rank + 1),
        Reason::Current { version } => format!("current version {version}"),
        Reason::ManifestVersion { version } => format!("in the manifest ({version})"),
        Reason::InUse { instances } => format!("in use by {}", instances.join(", ")),
        Reason::LaunchTemplate { references } => {
            format!("launch template {}", references.join(", "))
        }
        Reason::SsmParameter { names } => format!("parameter {}", names.join(", ")),
        Reason::TooYoung {
            age_hours,
            min_age_hours,
        } => format!("younger than {min_age_hours}h ({age_hours}h)"),
        Reason::UnknownAge { .. } => "no creation date".into(),
        Reason::KeepTag => "tagged golden-ami:keep=true".into(),
        Reason::NoTypeTag => "no type tag".into(),
        Reason::NoVersionTag => "no version tag".into(),
        Reason::NotOurs { why } => format!("not ours: {why}"),
        Reason::Revoked { version } => format!("revoked ({version})"),
        Reason::OlderThanKept { rank, keep } => {
            format!("{rank} newer versions, keep {keep}")
        }
        Reason::NotInManifest => "in no manifest version".into(),
        Reason::OverCap { max_deletes } => format!("over the cap of {max_deletes} deletes a run"),
    }
}

fn action_word(a: Action) -> String {
    match a {
        Action::Keep => "keep".into(),
        Action::Delete => ui::bad("delete"),
    }
}

/// A fleet verdict in a word or two.
pub fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Fresh => ui::good("current"),
        Verdict::Stale { age_minutes, .. } => ui::warn(&format!("stale ({age_minutes} min)")),
        Verdict::Revoked { version, .. } => ui::bad(&format!("revoked ({version})")),
        Verdict::PinnedLauncher { revoked, .. } => {
            let word = if *revoked { "revoked" } else { "stale" };
            ui::warn(&format!("{word}, launcher pins it"))
        }
        Verdict::Builder => "builder".into(),
        Verdict::Exempt => "exempt".into(),
        Verdict::NoImageForRegion { .. } => "no current image here".into(),
        Verdict::UnknownType => "unknown type".into(),
        Verdict::NotRunning => "not running".into(),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AmiRow {
    pub region: String,
    pub version: Option<String>,
    pub image_id: String,
    pub name: String,
    /// From the image's version tag (its creation time).
    pub created: Option<String>,
    /// `current`, `published`, `revoked`, or `not in manifest`.
    pub status: String,
    /// Instances launched from it (any state but terminated): id -> Name tag.
    pub instances: BTreeMap<String, Option<String>>,
    pub launch_templates: Vec<String>,
    pub parameters: Vec<String>,
    /// What prune would do with it now (`keep` or `delete`), and why.
    pub prune: String,
    pub why: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct AmisReport {
    #[serde(rename = "type")]
    pub image_type: String,
    pub amis: Vec<AmiRow>,
}

/// Every image of `image_type` in each region, with what uses it and prune's verdict on it.
pub async fn amis(d: &Deployment, image_type: &str, format: Format) -> anyhow::Result<u8> {
    let services = d.services()?;
    let (manifest, _) = read_manifest(services.store.as_ref(), services.now()).await?;
    let mut regions: std::collections::BTreeSet<String> = d.regions.iter().cloned().collect();
    regions.extend(golden_core::lifecycle::release::required_regions(&services, image_type).await);
    if let Some(entry) = manifest.types.get(image_type) {
        regions.extend(entry.versions.iter().flat_map(|v| v.images.keys().cloned()));
    }
    if regions.is_empty() {
        anyhow::bail!(
            "no region to look in for {image_type}: push its recipe, or pass --regions (GOLDEN_REGIONS)"
        );
    }
    let current = manifest.current(image_type).map(|e| e.version.to_string());
    let mut rows = Vec::new();
    for region in regions {
        let report = prune::plan(
            &services,
            prune::Scope::One {
                region: region.clone(),
                image_type: image_type.to_owned(),
            },
        )
        .await?;
        let decisions = report.plan.map(|p| p.decisions).unwrap_or_default();
        let ids: Vec<String> = decisions.iter().map(|d| d.image_id.clone()).collect();
        let mut names: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
        for chunk in ids.chunks(200) {
            let query = InstanceQuery {
                image_ids: chunk.to_vec(),
                ..InstanceQuery::default()
            };
            for i in services.ec2.query_instances(&region, &query).await? {
                names
                    .entry(i.image_id.clone())
                    .or_default()
                    .insert(i.instance_id.clone(), i.tags.get("Name").cloned());
            }
        }
        for dec in decisions {
            let listed = dec.version.as_deref().and_then(|v| {
                manifest.types.get(image_type)?.versions.iter().find(|e| {
                    e.version.as_ref() == v && e.images.get(&region) == Some(&dec.image_id)
                })
            });
            let status = match listed {
                Some(e) if current.as_deref() == Some(e.version.as_ref()) => "current".to_owned(),
                Some(e) => serde_json::to_value(e.status)
                    .ok()
                    .and_then(|s| s.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                None => "not in manifest".to_owned(),
            };
            let mut launch_templates = Vec::new();
            let mut parameters = Vec::new();
            for r in &dec.reasons {
                match r {
                    Reason::LaunchTemplate { references } => {
                        launch_templates.extend(references.iter().cloned())
                    }
                    Reason::SsmParameter { names } => parameters.extend(names.iter().cloned()),
                    _ => {}
                }
            }
            rows.push(AmiRow {
                region: region.clone(),
                created: dec
                    .version
                    .as_deref()
                    .and_then(|v| golden_core::version::Version::parse(v).ok())
                    .map(|v| v.created_at().to_rfc3339()),
                version: dec.version.clone(),
                image_id: dec.image_id.clone(),
                name: dec.name.clone(),
                status,
                instances: names.remove(&dec.image_id).unwrap_or_default(),
                launch_templates,
                parameters,
                prune: match dec.action {
                    Action::Keep => "keep".into(),
                    Action::Delete => "delete".into(),
                },
                why: dec.reasons.iter().map(reason_text).collect(),
            });
        }
    }
    let report = AmisReport {
        image_type: image_type.to_owned(),
        amis: rows,
    };
    print(format, &report, render_amis);
    Ok(EXIT_OK)
}

/// One row per AMI (ids never wrapped in 100 columns), then per AMI who names it and why prune keeps or
/// deletes it.
fn render_amis(r: &AmisReport) -> String {
    if r.amis.is_empty() {
        return format!("no images of {} in these regions", r.image_type);
    }
    let rows = r
        .amis
        .iter()
        .map(|a| {
            let status = match a.status.as_str() {
                "current" => ui::good(&a.status),
                "revoked" => ui::bad(&a.status),
                _ => a.status.clone(),
            };
            let used = if a.instances.is_empty() {
                "-".to_owned()
            } else {
                let names: Vec<String> = a
                    .instances
                    .iter()
                    .map(|(id, name)| name.clone().unwrap_or_else(|| id.clone()))
                    .collect();
                format!("{}: {}", a.instances.len(), names.join(", "))
            };
            let prune = if a.prune == "delete" {
                ui::bad("delete")
            } else {
                "keep".into()
            };
            vec![
                a.region.clone(),
                a.version.clone().unwrap_or_else(|| "-".into()),
                a.image_id.clone(),
                status,
                used,
                prune,
            ]
        })
        .collect();
    let why = r
        .amis
        .iter()
        .map(|a| {
            vec![
                a.image_id.clone(),
                format!("{}: {}", a.prune, a.why.join("; ")),
            ]
        })
        .collect();
    // The reasons name the instances, launch templates and parameters that keep each image.
    format!(
        "{}\n{}",
        table(
            &["Region", "Version", "AMI", "Status", "Instances", "Prune"],
            rows
        ),
        table(&["AMI", "Why"], why)
    )
}

/// Plan, confirm, act: the shape of prune, reap, enforce and recycle here. `run(None)` plans; `run(Some(plan))`
/// acts, given the plan that was shown and confirmed. `items` names what a report acts on. Just before
/// acting, the plan is made again: if it now holds anything the confirmed one did not, nothing is done
/// (the person confirmed what they saw, not what changed since). prune, reap and enforce then act as their
/// functions do, checking every protection anew; recycle acts only on the instances the plan listed.
async fn plan_then_act<R, Fut>(
    act: ActArgs,
    format: Format,
    question: &str,
    run: impl Fn(Option<&R>) -> Fut,
    items: impl Fn(&R) -> BTreeSet<String>,
    render: fn(&R) -> String,
) -> anyhow::Result<u8>
where
    R: Serialize,
    Fut: std::future::Future<Output = golden_core::error::Result<R>>,
{
    let plan = run(None).await?;
    let planned = items(&plan);
    let nothing = planned.is_empty();
    match format {
        Format::Json if act.dry_run || nothing => print(format, &plan, render),
        _ => ui::show_plan(format, act, nothing, &plan, render),
    }
    let question = format!("{question} ({})", planned.len());
    if confirm(act, &question, nothing)? == Go::Plan {
        if format == Format::Table && nothing {
            eprintln!("nothing to do");
        }
        return Ok(EXIT_OK);
    }
    let again = run(None).await?;
    let added: Vec<String> = items(&again).difference(&planned).cloned().collect();
    if !added.is_empty() {
        anyhow::bail!(
            "the plan changed since it was shown: it would now also act on {}; nothing was done, run the \
             command again to see the new plan",
            added.join(", ")
        );
    }
    let done = run(Some(&plan)).await?;
    if format == Format::Table {
        println!("done:");
    }
    print(format, &done, render);
    Ok(EXIT_OK)
}

pub async fn prune(d: &Deployment, act: ActArgs, format: Format) -> anyhow::Result<u8> {
    let services = d.services()?;
    plan_then_act(
        act,
        format,
        "delete these images and snapshots",
        |plan| {
            prune::handle(
                &services,
                Trigger::Manual {
                    dry_run: plan.is_none(),
                },
            )
        },
        |r: &prune::PruneReport| {
            r.plan
                .iter()
                .flat_map(|p| &p.decisions)
                .filter(|d| d.action == Action::Delete)
                .map(|d| format!("{} ({})", d.image_id, d.region))
                .chain(r.orphan_snapshots.iter().cloned())
                .collect()
        },
        render_prune,
    )
    .await
}

fn render_prune(r: &prune::PruneReport) -> String {
    let mut rows: Vec<Vec<String>> = r
        .plan
        .iter()
        .flat_map(|p| &p.decisions)
        .map(|d| {
            vec![
                d.region.clone(),
                d.image_id.clone(),
                format!(
                    "{} {}",
                    d.image_type.as_deref().unwrap_or("-"),
                    d.version.as_deref().unwrap_or("-")
                ),
                action_word(d.action),
                d.reasons
                    .iter()
                    .map(reason_text)
                    .collect::<Vec<_>>()
                    .join("; "),
            ]
        })
        .collect();
    for s in &r.orphan_snapshots {
        rows.push(vec![
            String::new(),
            s.clone(),
            "snapshot".into(),
            action_word(Action::Delete),
            "no image uses it".into(),
        ]);
    }
    let head = if r.dry_run { "plan (dry run)" } else { "prune" };
    format!(
        "{head}: {} deregistered, {} snapshots deleted\n{}",
        r.deregistered.len(),
        r.deleted_snapshots.len(),
        table(&["Region", "Image", "Type version", "Action", "Why"], rows)
    )
}

pub async fn reap(d: &Deployment, act: ActArgs, format: Format) -> anyhow::Result<u8> {
    let services = d.services()?;
    plan_then_act(
        act,
        format,
        "terminate these builders and free these locks",
        |plan| {
            reap::handle(
                &services,
                Trigger::Manual {
                    dry_run: plan.is_none(),
                },
            )
        },
        |r: &reap::ReapReport| {
            r.builders
                .iter()
                .filter(|b| matches!(b.verdict, golden_core::reaping::ReapVerdict::Reap { .. }))
                .map(|b| format!("{} ({})", b.instance_id, b.region))
                .chain(r.locks_released.iter().map(|t| format!("locks/{t}.json")))
                .chain(
                    r.orphan_images
                        .iter()
                        .flat_map(|o| o.images.iter().cloned()),
                )
                .collect()
        },
        render_reap,
    )
    .await
}

fn render_reap(r: &reap::ReapReport) -> String {
    let mut rows: Vec<Vec<String>> = r
        .builders
        .iter()
        .map(|b| {
            let (word, why) = match &b.verdict {
                golden_core::reaping::ReapVerdict::Keep { why } => ("keep".to_owned(), why),
                golden_core::reaping::ReapVerdict::Reap { why } => (ui::bad("terminate"), why),
            };
            vec![b.region.clone(), b.instance_id.clone(), word, why.clone()]
        })
        .collect();
    for ty in &r.locks_released {
        rows.push(vec![
            String::new(),
            format!("locks/{ty}.json"),
            ui::bad("free"),
            "its holder ended".into(),
        ]);
    }
    for o in &r.orphan_images {
        rows.push(vec![
            String::new(),
            o.images.join(", "),
            ui::bad("discard"),
            format!("unpublished images of {} ({})", o.execution, o.status),
        ]);
    }
    let head = if r.dry_run { "plan (dry run)" } else { "reap" };
    format!(
        "{head}:\n{}",
        table(
            &["Region", "Builder / lock / images", "Action", "Why"],
            rows
        )
    )
}

fn render_enforce(r: &enforce::EnforceReport) -> String {
    let rows: Vec<Vec<String>> = r
        .decisions
        .iter()
        .map(|e: &Enforcement| {
            let word = if !e.act {
                "leave".to_owned()
            } else if r.acted.contains(&e.instance_id) {
                ui::bad(match r.action {
                    golden_core::freshness::EnforceAction::Terminate => "terminated",
                    golden_core::freshness::EnforceAction::Stop => "stopped",
                    golden_core::freshness::EnforceAction::Report => "reported",
                })
            } else {
                ui::warn(&r.action.to_string())
            };
            vec![
                e.region.clone(),
                e.instance_id.clone(),
                e.image_type.clone().unwrap_or_else(|| "-".into()),
                verdict_text(&e.verdict),
                word,
                e.note.clone(),
            ]
        })
        .collect();
    let head = if r.dry_run { "plan (dry run)" } else { "done" };
    format!(
        "{head}: action {}, {} acted on\n{}",
        r.action,
        r.acted.len(),
        table(
            &["Region", "Instance", "Type", "Verdict", "Action", "Why"],
            rows
        )
    )
}

fn acting(r: &enforce::EnforceReport) -> BTreeSet<String> {
    if r.action == golden_core::freshness::EnforceAction::Report {
        return BTreeSet::new();
    }
    r.decisions
        .iter()
        .filter(|d| d.act)
        .map(|d| format!("{} ({})", d.instance_id, d.region))
        .collect()
}

pub async fn enforce(d: &Deployment, act: ActArgs, format: Format) -> anyhow::Result<u8> {
    let services = d.services()?;
    plan_then_act(
        act,
        format,
        "recycle these instances at the rollout pace",
        |plan| {
            enforce::handle(
                &services,
                Trigger::Manual {
                    dry_run: plan.is_none(),
                },
            )
        },
        acting,
        render_enforce,
    )
    .await
}

pub async fn recycle(
    d: &Deployment,
    image_type: &str,
    revoked_only: bool,
    act: ActArgs,
    format: Format,
) -> anyhow::Result<u8> {
    let services = d.services()?;
    plan_then_act(
        act,
        format,
        &format!("terminate these {image_type} instances now"),
        |plan: Option<&enforce::EnforceReport>| {
            // Acting terminates only what the confirmed plan listed.
            let approved: Option<BTreeSet<String>> = plan.map(|p| {
                p.decisions
                    .iter()
                    .filter(|d| d.act)
                    .map(|d| d.instance_id.clone())
                    .collect()
            });
            let services = &services;
            async move {
                enforce::recycle(
                    services,
                    image_type,
                    revoked_only,
                    approved.is_none(),
                    approved.as_ref(),
                )
                .await
            }
        },
        acting,
        render_enforce,
    )
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    #[derive(Serialize)]
    struct Fake(Vec<&'static str>);

    fn items(f: &Fake) -> BTreeSet<String> {
        f.0.iter().map(|s| (*s).to_owned()).collect()
    }

    fn render(f: &Fake) -> String {
        f.0.join(",")
    }

    /// Runs plan_then_act with --yes over plans that are `first`, then `later` on every call after.
    async fn run_with(first: Fake, later: Vec<&'static str>) -> (anyhow::Result<u8>, bool) {
        let calls = AtomicUsize::new(0);
        let acted = AtomicBool::new(false);
        let first = std::sync::Mutex::new(Some(first));
        let run = |plan: Option<&Fake>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if plan.is_some() {
                acted.store(true, Ordering::SeqCst);
            }
            let this = match first.lock().expect("lock").take() {
                Some(f) if n == 0 => f,
                _ => Fake(later.clone()),
            };
            async move { Ok(this) }
        };
        let yes = ActArgs {
            yes: true,
            dry_run: false,
        };
        let result = plan_then_act(yes, Format::Json, "act", run, items, render).await;
        (result, acted.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_plan_that_grew_since_it_was_shown_is_not_acted_on() {
        let (result, acted) = run_with(Fake(vec!["i-1"]), vec!["i-1", "i-2"]).await;
        let err = result.expect_err("refused");
        assert!(
            err.to_string().contains("would now also act on i-2"),
            "{err}"
        );
        assert!(!acted, "nothing was done");
    }

    #[tokio::test]
    async fn the_same_or_a_smaller_plan_is_acted_on() {
        let (result, acted) = run_with(Fake(vec!["i-1", "i-2"]), vec!["i-1"]).await;
        assert_eq!(result.expect("acted"), EXIT_OK);
        assert!(acted);
    }
}
