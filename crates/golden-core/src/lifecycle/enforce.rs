//! enforce-freshness: instances must run their type's current golden AMI.
//!
//! An instance booted from a revoked AMI is acted on at once; one on a stale AMI is recycled staggered
//! over the rollout window, deterministically per instance id, and a sweep acts on at most a set fraction
//! of a type's running fleet. Builders and `golden-ami:exempt=true` instances are never touched. When the
//! manifest cannot be read or parsed, nothing is done (fail safe) and the error is reported.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{finish, sweep_regions, ItemFailure, Trigger};
use crate::bake::Services;
use crate::error::{Error, Result};
use crate::freshness::{self, EnforceAction, Enforcement, FleetInstance, Rollout, Verdict};
use crate::ports::{Instance, InstanceQuery, PutCondition, PutOutcome};
use crate::publishing::read_manifest;
use crate::tags;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnforceReport {
    pub action: EnforceAction,
    pub dry_run: bool,
    pub decisions: Vec<Enforcement>,
    /// Instances acted on (terminated or stopped); empty for `report` or a dry run.
    pub acted: Vec<String>,
    /// Instances that could not be acted on (termination protection, a spot instance under `stop`, ...).
    pub failures: Vec<ItemFailure>,
}

pub async fn handle(services: &Services, trigger: Trigger) -> Result<EnforceReport> {
    services.config.check(crate::config::ENFORCE_SETTINGS)?;
    let settings = &services.config.lifecycle;
    let action: EnforceAction = settings
        .enforce_action
        .parse()
        .map_err(|e| Error::Config(format!("GOLDEN_ENFORCE_ACTION: {e}")))?;
    let rollout = Rollout {
        window: Duration::minutes(settings.rollout_window_minutes),
        max_fraction: settings.rollout_max_fraction,
        action,
    };
    let dry_run = matches!(trigger, Trigger::Manual { dry_run: true });
    let manifest = match read_manifest(services.store.as_ref(), services.now()).await {
        Ok((manifest, _)) => manifest,
        Err(e) => {
            tracing::error!(error = %e, "manifest unreadable: enforcing nothing");
            return Err(e);
        }
    };
    let now = services.now();
    let decisions = match trigger {
        Trigger::InstanceState {
            region,
            instance_id,
            state,
        } => {
            if state != "running" {
                Vec::new()
            } else {
                let query = InstanceQuery {
                    instance_ids: vec![instance_id],
                    states: vec!["running".into()],
                    ..InstanceQuery::default()
                };
                let instances = services.ec2.query_instances(&region, &query).await?;
                let mut out = Vec::new();
                for fi in instances
                    .iter()
                    .map(|i| fleet_instance(services, &region, i))
                {
                    let verdict = freshness::verdict(&fi, &manifest, now);
                    let mut act = freshness::due(&fi.instance_id, &verdict, rollout.window);
                    let mut note = freshness::note(&fi, &verdict, act, rollout.window);
                    // `report` acts on nothing, so it takes no slot of the cap.
                    let acting = rollout.action != EnforceAction::Report;
                    if let (true, true, Some(ty)) = (act, acting, &fi.image_type) {
                        // However many instances a launcher starts, the event path acts on at most the
                        // sweep's share of the type's fleet per hour; the sweep picks up the rest.
                        if let Err(why) = take_event_slot(
                            services,
                            &region,
                            ty,
                            &fi.instance_id,
                            &rollout,
                            dry_run,
                        )
                        .await?
                        {
                            act = false;
                            note = why;
                        }
                    }
                    out.push(Enforcement {
                        region: fi.region.clone(),
                        instance_id: fi.instance_id.clone(),
                        image_type: fi.image_type.clone(),
                        note,
                        verdict,
                        act,
                    });
                }
                out
            }
        }
        Trigger::Schedule | Trigger::Manual { .. } => {
            let fleet = running_fleet(services).await?;
            freshness::plan_sweep(&fleet, &manifest, &rollout, now)
        }
        Trigger::ExecutionStatus { .. } | Trigger::Batch(_) => return Err(Error::InvalidInput(
            "enforce-freshness handles schedules and EC2 state changes, not Step Functions events or \
             SQS batches"
                .into(),
        )),
    };
    count_pinned(services, &decisions);
    act(services, rollout.action, dry_run, decisions).await
}

/// Every running instance with a type tag in every sweep region.
async fn running_fleet(services: &Services) -> Result<Vec<FleetInstance>> {
    let mut fleet = Vec::new();
    for region in sweep_regions(services).await? {
        let query = InstanceQuery {
            tag_keys: vec![services.config.type_tag.clone()],
            states: vec!["running".into()],
            ..InstanceQuery::default()
        };
        for i in services.ec2.query_instances(&region, &query).await? {
            fleet.push(fleet_instance(services, &region, &i));
        }
    }
    Ok(fleet)
}

/// `goldenctl recycle TYPE`: the emergency path, by an operator. Every running instance of `image_type` on
/// a revoked image (with `revoked_only`), or on any image but the current one, is terminated now: no
/// rollout window and no cap. Builders, exempt instances and instances of a type with no current
/// image in their region are left alone, as in sweeps; an instance whose launcher pins an outdated image
/// is included (the operator is expected to have fixed the launcher: the note says so).
///
/// `approved` (the instance ids of a plan a person confirmed) limits acting to those: an instance that
/// became outdated between the plan and the confirmation is reported, not terminated.
pub async fn recycle(
    services: &Services,
    image_type: &str,
    revoked_only: bool,
    dry_run: bool,
    approved: Option<&std::collections::BTreeSet<String>>,
) -> Result<EnforceReport> {
    let (manifest, _) = read_manifest(services.store.as_ref(), services.now()).await?;
    if !manifest.types.contains_key(image_type) {
        return Err(Error::InvalidInput(format!(
            "{image_type} is not in the manifest: nothing of it can be outdated; check the name with `goldenctl manifest`"
        )));
    }
    let now = services.now();
    let decisions = running_fleet(services)
        .await?
        .into_iter()
        .filter(|fi| fi.image_type.as_deref() == Some(image_type))
        .map(|fi| {
            let verdict = freshness::verdict(&fi, &manifest, now);
            let (act, note) = match &verdict {
                Verdict::Revoked { .. } => (true, "revoked image: recycled now".to_owned()),
                Verdict::PinnedLauncher { revoked: true, .. } => (
                    true,
                    "revoked image, launched after the switch: recycled now (check its launcher no longer pins it)"
                        .to_owned(),
                ),
                Verdict::Stale { .. } | Verdict::PinnedLauncher { .. } if revoked_only => {
                    (false, "stale, not revoked: left (--revoked-only)".to_owned())
                }
                Verdict::Stale { .. } => (true, "stale image: recycled now".to_owned()),
                Verdict::PinnedLauncher { .. } => (
                    true,
                    "stale image, launched after the switch: recycled now (check its launcher no longer pins it)"
                        .to_owned(),
                ),
                other => (false, format!("left: {}", freshness_word(other))),
            };
            let (act, note) = match approved {
                Some(ids) if act && !ids.contains(&fi.instance_id) => (
                    false,
                    format!("{note}; not in the confirmed plan, so left (run recycle again)"),
                ),
                _ => (act, note),
            };
            Enforcement {
                region: fi.region.clone(),
                instance_id: fi.instance_id.clone(),
                image_type: fi.image_type.clone(),
                verdict,
                act,
                note,
            }
        })
        .collect();
    act(services, EnforceAction::Terminate, dry_run, decisions).await
}

fn freshness_word(v: &Verdict) -> &'static str {
    match v {
        Verdict::Fresh => "current",
        Verdict::Builder => "a builder",
        Verdict::Exempt => "exempt",
        Verdict::NoImageForRegion { .. } => "no current image in its region",
        _ => "not golden",
    }
}

/// Applies `action` to every decision that says act (none on a dry run), carrying on past failures.
async fn act(
    services: &Services,
    action: EnforceAction,
    dry_run: bool,
    decisions: Vec<Enforcement>,
) -> Result<EnforceReport> {
    let mut report = EnforceReport {
        action,
        dry_run,
        decisions,
        acted: Vec::new(),
        failures: Vec::new(),
    };
    for d in report.decisions.iter().filter(|d| d.act) {
        tracing::info!(region = %d.region, instance_id = %d.instance_id, verdict = ?d.verdict, ?action, dry_run, "recycling");
        if dry_run {
            continue;
        }
        let ids = std::slice::from_ref(&d.instance_id);
        let done = match action {
            EnforceAction::Terminate => services.ec2.terminate_instances(&d.region, ids).await,
            EnforceAction::Stop => services.ec2.stop_instances(&d.region, ids).await,
            EnforceAction::Report => continue,
        };
        match done {
            Ok(()) => report.acted.push(d.instance_id.clone()),
            Err(e) => report.failures.push(ItemFailure::new(
                format!("{} ({})", d.instance_id, d.region),
                &action.to_string(),
                &e,
            )),
        }
    }
    let failures = report.failures.clone();
    finish("enforce-freshness", report, &failures)
}

/// How long the event path's per-type cap counts its actions over.
pub const EVENT_CAP_MINUTES: i64 = 60;

/// The event path's record of its recent actions on a type in a region (the fleet its cap is a share of):
/// `s3://$GOLDEN_BUCKET/enforce/<type>/<region>.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventActions {
    actions: Vec<EventAction>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventAction {
    at: DateTime<Utc>,
    instance_id: String,
    region: String,
}

fn event_actions_key(image_type: &str, region: &str) -> String {
    format!("enforce/{image_type}/{region}.json")
}

/// Claims one of the type's event-path actions in `region` for this hour: Ok(Ok) to act, Ok(Err(why)) when the cap is
/// reached (the note for the report). The claim is a conditional write, so concurrent events cannot
/// exceed the cap; a record that does not parse counts as a full one (fail safe: the sweep still acts).
async fn take_event_slot(
    services: &Services,
    region: &str,
    image_type: &str,
    instance_id: &str,
    rollout: &Rollout,
    dry_run: bool,
) -> Result<std::result::Result<(), String>> {
    let query = InstanceQuery {
        tag_keys: vec![services.config.type_tag.clone()],
        states: vec!["running".into()],
        ..InstanceQuery::default()
    };
    let fleet = services
        .ec2
        .query_instances(region, &query)
        .await?
        .iter()
        .filter(|i| i.tags.get(&services.config.type_tag).map(String::as_str) == Some(image_type))
        .filter(|i| !tags::is_bake_instance(&i.tags))
        .count();
    let budget = freshness::sweep_budget(fleet, rollout.max_fraction);
    let key = event_actions_key(image_type, region);
    let now = services.now();
    for _ in 0..4 {
        let existing = services.store.get(&key).await?;
        let mut record = match &existing {
            None => EventActions::default(),
            Some(o) => match serde_json::from_slice::<EventActions>(&o.body) {
                Ok(r) => r,
                Err(e) => {
                    return Ok(Err(format!(
                        "event-path cap: s3://{}/{key} is unreadable ({e}); left to the sweep (delete the \
                         object to reset it)",
                        services.store.bucket()
                    )))
                }
            },
        };
        record
            .actions
            .retain(|a| now - a.at < Duration::minutes(EVENT_CAP_MINUTES));
        if record.actions.len() >= budget {
            return Ok(Err(format!(
                "due, but the event path already acted on {} {image_type} instance(s) in the last \
                 {EVENT_CAP_MINUTES}m, its cap for a fleet of {fleet} (GOLDEN_ROLLOUT_MAX_FRACTION {}); \
                 left to the sweep",
                record.actions.len(),
                rollout.max_fraction
            )));
        }
        if dry_run {
            return Ok(Ok(()));
        }
        record.actions.push(EventAction {
            at: now,
            instance_id: instance_id.to_owned(),
            region: region.to_owned(),
        });
        let body = serde_json::to_vec_pretty(&record).unwrap_or_default();
        let condition = existing.map_or(PutCondition::IfAbsent, |o| PutCondition::IfMatch(o.etag));
        if let PutOutcome::Written { .. } = services.store.put(&key, body, condition).await? {
            return Ok(Ok(()));
        }
    }
    Ok(Err(format!(
        "due, but other events kept claiming {image_type}'s event-path actions at once; left to the sweep"
    )))
}

/// Counts the instances whose launcher pins an outdated image, per type, in the `PinnedLaunches` metric.
fn count_pinned(services: &Services, decisions: &[Enforcement]) {
    let mut by_type: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for d in decisions {
        if let (Verdict::PinnedLauncher { .. }, Some(ty)) = (&d.verdict, &d.image_type) {
            *by_type.entry(ty.as_str()).or_default() += 1;
        }
    }
    for (ty, count) in by_type {
        tracing::warn!(
            r#type = ty,
            count,
            "instances launched from an image their launcher pins"
        );
        if let Some(stack) = &services.config.stack_name {
            println!(
                "{}",
                crate::metrics::pinned_launches(stack, ty, count, services.now())
            );
        }
    }
}

fn fleet_instance(services: &Services, region: &str, i: &Instance) -> FleetInstance {
    FleetInstance {
        region: region.to_owned(),
        instance_id: i.instance_id.clone(),
        image_id: i.image_id.clone(),
        state: i.state.clone(),
        image_type: i.tags.get(&services.config.type_tag).cloned(),
        // A builder, or a tester running the new image before it is published: never the fleet's.
        builder: tags::is_bake_instance(&i.tags),
        exempt: i
            .tags
            .get(tags::EXEMPT)
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        // Not LaunchTime: a stop and start resets it, and would make an old instance look freshly launched.
        launched_at: i.first_launched,
    }
}
