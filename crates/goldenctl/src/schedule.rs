//! `schedule list|enable|disable`: the bake schedules, one per type, and the schedule guard's count of each
//! type's scheduled bakes that failed in a row. `enable` is how a schedule the guard disabled comes back.

use std::sync::Arc;

use anyhow::{bail, Context};
use golden_core::aws::{AwsScheduler, AwsSns};
use golden_core::lifecycle::guard::{self, find_schedules, GuardPorts, GuardRequest};
use golden_core::ports::BakeSchedule;
use serde::Serialize;

use crate::deploy::Deployment;
use crate::output::{print, table, Format};
use crate::ui::{confirm, show_plan, ActArgs, Go};
use crate::EXIT_OK;

/// One type's schedule.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleRow {
    #[serde(rename = "type")]
    pub image_type: String,
    /// `group/name`.
    pub schedule: String,
    pub enabled: bool,
    pub expression: String,
    pub last_modified: String,
    /// Scheduled bakes that failed in a row since the schedule last changed, newest first.
    pub failed_in_a_row: Vec<String>,
    /// The guard's limit (MaxFailedScheduledBakes; 0 never disables).
    pub limit: u32,
}

fn ports(d: &Deployment) -> GuardPorts {
    GuardPorts {
        schedules: Arc::new(AwsScheduler::new(&d.sdk)),
        notifier: Arc::new(AwsSns::new(&d.sdk)),
    }
}

async fn row(
    d: &Deployment,
    ports: &GuardPorts,
    schedule: BakeSchedule,
    ty: &str,
) -> anyhow::Result<ScheduleRow> {
    // The guard's own count, as a report (it changes nothing).
    let services = d.services()?;
    let report = guard::handle(
        &services,
        ports,
        GuardRequest::Manual {
            image_type: ty.to_owned(),
            dry_run: true,
        },
    )
    .await?;
    Ok(ScheduleRow {
        image_type: ty.to_owned(),
        schedule: format!("{}/{}", schedule.group, schedule.name),
        enabled: schedule.enabled,
        expression: schedule.expression,
        last_modified: schedule.last_modified.to_rfc3339(),
        failed_in_a_row: report.failed_in_a_row,
        limit: report.limit,
    })
}

fn state_word(enabled: bool) -> String {
    if enabled {
        crate::ui::good("ENABLED")
    } else {
        crate::ui::bad("DISABLED")
    }
}

fn render_rows(rows: &[ScheduleRow]) -> String {
    if rows.is_empty() {
        return "no bake schedules (is the stack deployed with its Types?)".into();
    }
    let body = rows
        .iter()
        .map(|r| {
            vec![
                r.image_type.clone(),
                state_word(r.enabled),
                r.expression.clone(),
                if r.limit == 0 {
                    format!("{} (never disabled)", r.failed_in_a_row.len())
                } else {
                    format!("{} of {}", r.failed_in_a_row.len(), r.limit)
                },
                r.last_modified.clone(),
            ]
        })
        .collect();
    table(
        &[
            "type",
            "state",
            "schedule",
            "failed in a row",
            "last changed",
        ],
        body,
    )
}

pub async fn list(d: &Deployment, format: Format) -> anyhow::Result<u8> {
    let group = d.schedule_group()?;
    let ports = ports(d);
    let mut rows = Vec::new();
    for name in ports.schedules.names(group).await? {
        // A schedule that bakes no type (not the template's) is not the guard's business.
        let Some(schedule) = ports.schedules.get(group, &name).await? else {
            continue;
        };
        if let Some(ty) = schedule.image_type.clone() {
            rows.push(row(d, &ports, schedule, &ty).await?);
        }
    }
    rows.sort_by(|a, b| a.image_type.cmp(&b.image_type));
    print(format, &rows, |r: &Vec<ScheduleRow>| render_rows(r));
    Ok(EXIT_OK)
}

/// What `enable`/`disable` reports.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeReport {
    pub action: String,
    pub dry_run: bool,
    /// False: the schedule was already so.
    pub changed: bool,
    pub before: ScheduleRow,
    pub enabled_after: bool,
}

fn render_change(r: &ChangeReport) -> String {
    let title = if r.changed {
        format!("plan: {} {}", r.action, r.before.schedule)
    } else {
        format!(
            "plan (no change): {} is already {}",
            r.before.schedule,
            state_word(r.enabled_after)
        )
    };
    format!(
        "{title}\n{}",
        table(
            &["", "before", "after"],
            vec![
                vec![
                    "state".into(),
                    state_word(r.before.enabled),
                    state_word(r.enabled_after)
                ],
                vec![
                    "schedule".into(),
                    r.before.expression.clone(),
                    r.before.expression.clone()
                ],
                vec![
                    "failed in a row".into(),
                    r.before.failed_in_a_row.len().to_string(),
                    if r.enabled_after && r.changed {
                        "counted afresh".into()
                    } else {
                        r.before.failed_in_a_row.len().to_string()
                    },
                ],
            ],
        )
    )
}

pub async fn set(
    d: &Deployment,
    image_type: &str,
    enable: bool,
    act: ActArgs,
    format: Format,
) -> anyhow::Result<u8> {
    let group = d.schedule_group()?;
    if enable && d.schedules_enabled == Some(false) {
        bail!(
            "the stack is deployed with EnableSchedules=false (it runs only what is started by hand), so its \
             schedules stay off: nothing was changed; to bake {image_type} now use `goldenctl bake \
             {image_type}`, to turn schedules on deploy with EnableSchedules=true"
        );
    }
    let ports = ports(d);
    // One schedule, normally; two while a changed expression is being replaced: both are set.
    let found = find_schedules(ports.schedules.as_ref(), group, image_type)
        .await
        .with_context(|| {
            format!(
                "could not read the schedules of group {group}; it needs scheduler:ListSchedules and \
                 scheduler:GetSchedule"
            )
        })?;
    let Some(newest) = found.first().cloned() else {
        bail!(
            "schedule group {group} has no schedule that bakes {image_type}: `goldenctl schedule list` shows \
             the stack's; a type gets one when it is in the stack's Types parameter"
        );
    };
    let name = found
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let before = row(d, &ports, newest, image_type).await?;
    let action = if enable { "enable" } else { "disable" };
    let changed = found.iter().any(|s| s.enabled != enable);
    let mut report = ChangeReport {
        action: action.into(),
        dry_run: act.dry_run,
        changed,
        before,
        enabled_after: enable,
    };
    show_plan(format, act, !changed, &report, render_change);
    let question = format!("{action} the bake schedule of {image_type}");
    if confirm(act, &question, !changed)? == Go::Plan {
        if format == Format::Json {
            print(format, &report, render_change);
        }
        return Ok(EXIT_OK);
    }
    for s in found.iter().filter(|s| s.enabled != enable) {
        ports
            .schedules
            .set_enabled(group, &s.name, enable)
            .await
            .with_context(|| {
                format!(
                    "could not {action} {group}/{}; it needs scheduler:GetSchedule and \
                     scheduler:UpdateSchedule on it and iam:PassRole on the role its target names (the \
                     stack's SchedulerRole)",
                    s.name
                )
            })?;
    }
    report.dry_run = false;
    match format {
        Format::Json => print(format, &report, render_change),
        Format::Table if enable => println!(
            "enabled {group}/{name}: scheduled bakes of {image_type} resume at its next time ({}); the \
             guard counts failures afresh from now",
            report.before.expression
        ),
        Format::Table => println!(
            "disabled {group}/{name}: no scheduled bakes of {image_type} until `goldenctl schedule enable \
             {image_type}`"
        ),
    }
    Ok(EXIT_OK)
}
