//! enforce-freshness: instances must run their type's current golden AMI.
//!
//! An instance booted from a revoked AMI is acted on at once; one on a stale AMI is recycled staggered
//! over the rollout window, deterministically per instance id, and a sweep acts on at most a set fraction
//! of a type's running fleet. Builders and `golden-ami:exempt=true` instances are never touched. When the
//! manifest cannot be read or parsed, nothing is done (fail safe) and the error is reported.

use chrono::Duration;
use serde::Serialize;

use super::{finish, sweep_regions, ItemFailure, Trigger};
use crate::bake::Services;
use crate::error::{Error, Result};
use crate::freshness::{self, EnforceAction, Enforcement, FleetInstance, Rollout};
use crate::ports::{Instance, InstanceQuery};
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
                instances
                    .iter()
                    .map(|i| fleet_instance(services, &region, i))
                    .map(|fi| {
                        let verdict = freshness::verdict(&fi, &manifest, now);
                        let act = freshness::due(&fi.instance_id, &verdict, rollout.window);
                        Enforcement {
                            region: fi.region.clone(),
                            instance_id: fi.instance_id.clone(),
                            image_type: fi.image_type.clone(),
                            note: if act {
                                "due".into()
                            } else {
                                "not due yet".into()
                            },
                            verdict,
                            act,
                        }
                    })
                    .collect()
            }
        }
        Trigger::Schedule | Trigger::Manual { .. } => {
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
            freshness::plan_sweep(&fleet, &manifest, &rollout, now)
        }
        Trigger::ExecutionStatus { .. } => return Err(Error::InvalidInput(
            "enforce-freshness handles schedules and EC2 state changes, not Step Functions events"
                .into(),
        )),
    };
    let mut report = EnforceReport {
        action: rollout.action,
        dry_run,
        decisions,
        acted: Vec::new(),
        failures: Vec::new(),
    };
    for d in report.decisions.iter().filter(|d| d.act) {
        tracing::info!(region = %d.region, instance_id = %d.instance_id, verdict = ?d.verdict, action = ?rollout.action, dry_run, "recycling");
        if dry_run {
            continue;
        }
        let ids = std::slice::from_ref(&d.instance_id);
        let done = match rollout.action {
            EnforceAction::Terminate => services.ec2.terminate_instances(&d.region, ids).await,
            EnforceAction::Stop => services.ec2.stop_instances(&d.region, ids).await,
            EnforceAction::Report => continue,
        };
        match done {
            Ok(()) => report.acted.push(d.instance_id.clone()),
            Err(e) => report.failures.push(ItemFailure::new(
                format!("{} ({})", d.instance_id, d.region),
                &rollout.action.to_string(),
                &e,
            )),
        }
    }
    let failures = report.failures.clone();
    finish("enforce-freshness", report, &failures)
}

fn fleet_instance(services: &Services, region: &str, i: &Instance) -> FleetInstance {
    FleetInstance {
        region: region.to_owned(),
        instance_id: i.instance_id.clone(),
        image_id: i.image_id.clone(),
        state: i.state.clone(),
        image_type: i.tags.get(&services.config.type_tag).cloned(),
        builder: i.tags.get(tags::ROLE).map(String::as_str) == Some(tags::ROLE_BUILDER),
        exempt: i
            .tags
            .get(tags::EXEMPT)
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
    }
}
