//! The schedule guard (`schedule-guard`): after `GOLDEN_MAX_FAILED_SCHEDULED_BAKES` scheduled bakes of a
//! type failed in a row, it disables that type's schedule and tells the notifications topic why; a person
//! turns it back on with `goldenctl schedule enable TYPE` (or the console).
//!
//! It keeps no counter. On each bake that ended badly it reads the type's schedule and the executions
//! started since the schedule last changed (a deploy, a disable, an enable), newest first, and counts the
//! scheduled bakes of the type that failed before the newest one that succeeded. So an event delivered twice
//! counts once, events arriving out of order count right, and enabling a schedule starts the count afresh.
//! A bake started by hand (`goldenctl bake`, the console) is never counted: only an input with
//! `"trigger": "schedule"` (the template's schedule input) is a scheduled bake.

use std::sync::Arc;

use serde::Serialize;

use crate::bake::launch::BakeTrigger;
use crate::bake::Services;
use crate::config::GUARD_SETTINGS;
use crate::error::{Error, Result};
use crate::ports::{BakeSchedule, ExecutionSummary, Notifier, Schedules};

use super::trigger::SFN_STATUS_CHANGE;

/// At most this many executions are read back (each with DescribeExecution) per evaluation: a month of
/// three types baked daily with room for retries and manual bakes.
pub const SCAN_LIMIT: usize = 200;

/// Statuses of a bake that ended badly.
const FAILED: [&str; 3] = ["FAILED", "TIMED_OUT", "ABORTED"];

/// What the guard talks to besides [`Services`].
#[derive(Clone)]
pub struct GuardPorts {
    pub schedules: Arc<dyn Schedules>,
    pub notifier: Arc<dyn Notifier>,
}

/// What woke the guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardRequest {
    /// EventBridge: a bake ended (the rule passes FAILED, TIMED_OUT and ABORTED).
    Ended {
        execution_arn: String,
        status: String,
        /// The event's `detail.error`: the stage error the bake failed with.
        error: Option<String>,
    },
    /// By hand: `{"type": T}` (or with `"dryRun": true`) reports the count; `"dryRun": false` also
    /// disables the schedule if the count is at the limit.
    Manual { image_type: String, dry_run: bool },
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndedDetail {
    execution_arn: String,
    status: String,
    #[serde(default)]
    error: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ManualRequest {
    #[serde(rename = "type")]
    image_type: String,
    #[serde(default = "super::trigger::dry_by_default")]
    dry_run: bool,
}

impl TryFrom<serde_json::Value> for GuardRequest {
    type Error = Error;

    fn try_from(payload: serde_json::Value) -> Result<Self> {
        let Some(detail_type) = payload.get("detail-type") else {
            let manual: ManualRequest = serde_json::from_value(payload).map_err(|e| {
                Error::InvalidInput(format!(
                    "neither a \"{SFN_STATUS_CHANGE}\" event nor a manual request {{\"type\": \"TYPE\"}} \
                     (a report; add \"dryRun\": false to also disable the schedule at the limit): {e}"
                ))
            })?;
            if !crate::recipe::is_valid_type_name(&manual.image_type) {
                return Err(Error::InvalidInput(format!(
                    "type {:?} is not an image type name (lowercase letters, digits and '-')",
                    manual.image_type
                )));
            }
            return Ok(GuardRequest::Manual {
                image_type: manual.image_type,
                dry_run: manual.dry_run,
            });
        };
        if detail_type != SFN_STATUS_CHANGE {
            return Err(Error::InvalidInput(format!(
                "unexpected event {detail_type}; the schedule guard handles \"{SFN_STATUS_CHANGE}\" only"
            )));
        }
        let detail = payload
            .get("detail")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        let d: EndedDetail = serde_json::from_value(detail).map_err(|e| {
            Error::InvalidInput(format!(
                "Step Functions status-change event without executionArn/status: {e}"
            ))
        })?;
        crate::ids::execution_arn("detail.executionArn", &d.execution_arn)?;
        Ok(GuardRequest::Ended {
            execution_arn: d.execution_arn,
            status: d.status,
            error: d.error,
        })
    }
}

/// What the guard found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardReport {
    /// The image type, when the request concerned one.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub image_type: Option<String>,
    /// `ignored` (not a scheduled bake that failed), `no-schedule`, `already-disabled`, `counting`
    /// (below the limit), `would-disable` (at the limit, a dry run) or `disabled`.
    pub outcome: String,
    /// Why, in words.
    pub reason: String,
    /// `group/name` of the type's schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Scheduled bakes of the type that failed in a row, newest first (execution names).
    pub failed_in_a_row: Vec<String>,
    /// `GOLDEN_MAX_FAILED_SCHEDULED_BAKES` (0: never disable).
    pub limit: u32,
}

impl GuardReport {
    fn new(image_type: Option<&str>, outcome: &str, reason: String, limit: u32) -> Self {
        Self {
            image_type: image_type.map(str::to_owned),
            outcome: outcome.to_owned(),
            reason,
            schedule: None,
            failed_in_a_row: Vec::new(),
            limit,
        }
    }
}

/// The type of a bake its schedule started, from its input; None for a bake started by hand (or an input
/// that is not a bake request at all).
pub fn scheduled_type(input: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(input).ok()?;
    let trigger: BakeTrigger = value
        .get("trigger")
        .map(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or(Some(BakeTrigger::Manual))?;
    if trigger != BakeTrigger::Schedule {
        return None;
    }
    value.get("type")?.as_str().map(str::to_owned)
}

/// An execution of the bake state machine with the type its schedule baked (None: started by hand) and
/// the error it failed with.
#[derive(Debug, Clone)]
pub struct Run {
    pub execution: ExecutionSummary,
    pub scheduled_type: Option<String>,
    pub error: Option<String>,
}

/// What one run says of a type's streak of failed scheduled bakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A scheduled bake of the type that FAILED or TIMED_OUT.
    Counts,
    /// A scheduled bake of the type that SUCCEEDED: the streak ends.
    Ends,
    /// Anything else: another type's or a manual bake, one still running, one a person aborted, one that
    /// only found another bake of the type running (`BakeAlreadyRunning`: not a failing recipe).
    PassedOver,
}

pub fn verdict(run: &Run, image_type: &str) -> Verdict {
    if run.scheduled_type.as_deref() != Some(image_type) {
        return Verdict::PassedOver;
    }
    match run.execution.status.as_str() {
        "SUCCEEDED" => Verdict::Ends,
        "FAILED" | "TIMED_OUT" if run.error.as_deref() != Some(LOCKED_OUT) => Verdict::Counts,
        _ => Verdict::PassedOver,
    }
}

/// The error of a bake that found another bake of its type running: it says nothing of the recipe.
const LOCKED_OUT: &str = "BakeAlreadyRunning";

/// A type's streak of failed scheduled bakes, fed the runs newest first (see [`verdict`]).
pub struct Streak<'a> {
    image_type: &'a str,
    /// At most this many (0: no limit).
    limit: usize,
    pub failed: Vec<Run>,
}

impl<'a> Streak<'a> {
    pub fn new(image_type: &'a str, limit: usize) -> Self {
        Self {
            image_type,
            limit,
            failed: Vec::new(),
        }
    }

    /// Takes the next older run; false once the streak is decided (a success, or `limit` failures).
    pub fn take(&mut self, run: Run) -> bool {
        match verdict(&run, self.image_type) {
            Verdict::Ends => false,
            Verdict::Counts => {
                self.failed.push(run);
                self.limit == 0 || self.failed.len() < self.limit
            }
            Verdict::PassedOver => true,
        }
    }
}

struct Deployment<'a> {
    state_machine_arn: &'a str,
    group: &'a str,
    /// Needed only to act (a report needs no topic: goldenctl's `schedule list`).
    topic_arn: Option<&'a str>,
    limit: u32,
}

fn deployment(services: &Services) -> Result<Deployment<'_>> {
    let c = &services.config;
    c.check(GUARD_SETTINGS)?;
    let missing = |name: &str, output: &str| {
        Error::Config(format!(
            "{name} is not set; set it to the stack's output {output} (the template does)"
        ))
    };
    Ok(Deployment {
        state_machine_arn: c
            .state_machine_arn
            .as_deref()
            .ok_or_else(|| missing("GOLDEN_STATE_MACHINE_ARN", "StateMachineArn"))?,
        group: c
            .schedule_group
            .as_deref()
            .ok_or_else(|| missing("GOLDEN_SCHEDULE_GROUP", "BakeScheduleGroup"))?,
        topic_arn: c.notifications_topic_arn.as_deref(),
        limit: c.lifecycle.max_failed_scheduled_bakes,
    })
}

pub async fn handle(
    services: &Services,
    ports: &GuardPorts,
    request: GuardRequest,
) -> Result<GuardReport> {
    let d = deployment(services)?;
    match request {
        GuardRequest::Manual {
            image_type,
            dry_run,
        } => evaluate(services, ports, &d, &image_type, !dry_run, None).await,
        GuardRequest::Ended {
            execution_arn,
            status,
            error,
        } => {
            let ignored = |why: String| Ok(GuardReport::new(None, "ignored", why, d.limit));
            if machine_of(&execution_arn) != machine_of(d.state_machine_arn) {
                return ignored(format!(
                    "{execution_arn} is not an execution of the bake state machine {}",
                    d.state_machine_arn
                ));
            }
            if status == "ABORTED" {
                return ignored(format!(
                    "{execution_arn} was aborted (by a person, or goldenctl abort): it does not count"
                ));
            }
            if !FAILED.contains(&status.as_str()) {
                return ignored(format!(
                    "{execution_arn} ended {status}: only a failed bake counts"
                ));
            }
            let Some(details) = services.executions.details(&execution_arn).await? else {
                return ignored(format!(
                    "{execution_arn} does not exist (not an execution of this account and region)"
                ));
            };
            let Some(ty) = scheduled_type(&details.input) else {
                return ignored(format!(
                    "{execution_arn} was started by hand, not by a schedule: it does not count"
                ));
            };
            // The event's own bake, as the event says it ended: ListExecutions is eventually consistent
            // and may not list it, or list it RUNNING, right after it ended.
            let known = Run {
                execution: ExecutionSummary {
                    name: execution_arn
                        .rsplit(':')
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    arn: execution_arn,
                    status,
                    start: details.start,
                },
                scheduled_type: Some(ty.clone()),
                // The event's own error first: DescribeExecution is eventually consistent too.
                error: error.or(details.error),
            };
            if verdict(&known, &ty) != Verdict::Counts {
                return ignored(format!(
                    "{} found another bake of {ty} running ({LOCKED_OUT}): it does not count",
                    known.execution.arn
                ));
            }
            evaluate(services, ports, &d, &ty, true, Some(known)).await
        }
    }
}

/// The state machine's name: the seventh field of both `arn:aws:states:REGION:ACCOUNT:stateMachine:MACHINE`
/// and `arn:aws:states:REGION:ACCOUNT:execution:MACHINE:NAME`.
fn machine_of(arn: &str) -> Option<&str> {
    arn.split(':').nth(6)
}

/// The type's bake schedules in `group`: those whose target input bakes `image_type` (see
/// [`scheduled_type`]), newest change first. One, normally; two while a changed schedule expression is
/// being replaced (or when a type is listed twice in the stack's Types). The template leaves the names to
/// CloudFormation, so that a changed schedule can be replaced.
pub async fn find_schedules(
    schedules: &dyn Schedules,
    group: &str,
    image_type: &str,
) -> Result<Vec<BakeSchedule>> {
    let mut found = Vec::new();
    for name in schedules.names(group).await? {
        if let Some(schedule) = schedules.get(group, &name).await? {
            if schedule.image_type.as_deref() == Some(image_type) {
                found.push(schedule);
            }
        }
    }
    found.sort_by_key(|s| std::cmp::Reverse(s.last_modified));
    Ok(found)
}

/// Counts the type's scheduled bakes that failed in a row since its schedule last changed and, at the
/// limit and if `act`, notifies and disables the schedule. `known` is the bake whose end woke the guard.
async fn evaluate(
    services: &Services,
    ports: &GuardPorts,
    d: &Deployment<'_>,
    image_type: &str,
    act: bool,
    known: Option<Run>,
) -> Result<GuardReport> {
    let ty = Some(image_type);
    let found = find_schedules(ports.schedules.as_ref(), d.group, image_type).await?;
    // The newest change starts the count; every one of them is disabled.
    let Some(schedule) = found.first().cloned() else {
        return Ok(GuardReport::new(
            ty,
            "no-schedule",
            format!(
                "schedule group {} has no schedule that bakes {image_type}: the type is not in the stack's Types",
                d.group
            ),
            d.limit,
        ));
    };
    let limit = usize::try_from(d.limit).unwrap_or(usize::MAX);
    let failed = streak(services, d, &schedule, image_type, limit, known).await?;
    let mut report = GuardReport::new(ty, "counting", String::new(), d.limit);
    report.schedule = Some(
        found
            .iter()
            .map(|s| format!("{}/{}", s.group, s.name))
            .collect::<Vec<_>>()
            .join(", "),
    );
    report.failed_in_a_row = failed.iter().map(|r| r.execution.name.clone()).collect();
    let count = failed.len();
    if !found.iter().any(|s| s.enabled) {
        report.outcome = "already-disabled".into();
        report.reason = format!(
            "the schedule is disabled; {count} scheduled bake(s) failed in a row since it last changed"
        );
        return Ok(report);
    }
    if d.limit == 0 || count < limit {
        report.reason = if d.limit == 0 {
            format!("{count} scheduled bake(s) failed in a row; GOLDEN_MAX_FAILED_SCHEDULED_BAKES is 0, so the schedule is never disabled")
        } else {
            format!(
                "{count} of {} scheduled bakes failed in a row since the schedule last changed ({})",
                d.limit,
                schedule.last_modified.to_rfc3339()
            )
        };
        return Ok(report);
    }
    if !act {
        report.outcome = "would-disable".into();
        report.reason = format!(
            "{count} scheduled bakes failed in a row (the limit): a run with \"dryRun\": false disables the schedule"
        );
        return Ok(report);
    }
    let topic_arn = d.topic_arn.ok_or_else(|| {
        Error::Config(
            "GOLDEN_NOTIFICATIONS_TOPIC_ARN is not set; set it to the stack's output NotificationsTopicArn \
             (the template does)"
                .into(),
        )
    })?;
    // The notice first: a notice that fails leaves the schedule on and fails the run, and the retry
    // (counting the same bakes) tries both again. Disabling first would let the retry find it disabled
    // (counted afresh since) and tell nobody why the bakes stopped.
    let (subject, message) = notice(services, &schedule, &failed);
    ports
        .notifier
        .notify(topic_arn, &subject, &message)
        .await
        .map_err(|e| Error::ItemsFailed {
            what: format!(
                "{count} scheduled bakes of {image_type} failed in a row, but schedule {}/{} was left \
                 enabled: the notice could not be sent",
                schedule.group, schedule.name
            ),
            failed: vec![format!("notify {topic_arn}: {e}")],
        })?;
    for s in found.iter().filter(|s| s.enabled) {
        ports
            .schedules
            .set_enabled(&s.group, &s.name, false)
            .await
            .map_err(|e| Error::ItemsFailed {
                what: format!(
                    "{count} scheduled bakes of {image_type} failed in a row and {topic_arn} was told, but \
                     the schedule is still enabled (a retry, or the next failure, tells and tries again)"
                ),
                failed: vec![format!("disable {}/{}: {e}", s.group, s.name)],
            })?;
    }
    tracing::warn!(
        r#type = image_type,
        failed = count,
        "disabled the type's bake schedule"
    );
    report.outcome = "disabled".into();
    report.reason = format!(
        "{count} scheduled bakes failed in a row: {topic_arn} told, and the schedule is disabled"
    );
    Ok(report)
}

/// The type's scheduled bakes that failed in a row since its schedule last changed, newest first. Walks
/// the executions newest first and reads each one's input (DescribeExecution) only until the streak is
/// decided: the type's newest success, or `limit` failures.
async fn streak(
    services: &Services,
    d: &Deployment<'_>,
    schedule: &BakeSchedule,
    image_type: &str,
    limit: usize,
    known: Option<Run>,
) -> Result<Vec<Run>> {
    let since = schedule.last_modified;
    let mut executions = services
        .executions
        .started_since(d.state_machine_arn, since, SCAN_LIMIT)
        .await?;
    if let Some(k) = known.as_ref().filter(|k| k.execution.start >= since) {
        match executions.iter_mut().find(|e| e.arn == k.execution.arn) {
            Some(listed) => listed.status = k.execution.status.clone(),
            None => {
                executions.push(k.execution.clone());
                executions.sort_by_key(|e| std::cmp::Reverse(e.start));
            }
        }
    }
    let mut counted = Streak::new(image_type, limit);
    for execution in executions {
        if !matches!(
            execution.status.as_str(),
            "SUCCEEDED" | "FAILED" | "TIMED_OUT"
        ) {
            continue; // running, aborted: passed over whatever they are, so their input is not read
        }
        let run = match known.as_ref().filter(|k| k.execution.arn == execution.arn) {
            Some(k) => k.clone(),
            None => {
                let details = services.executions.details(&execution.arn).await?;
                Run {
                    scheduled_type: details.as_ref().and_then(|x| scheduled_type(&x.input)),
                    error: details.and_then(|x| x.error),
                    execution,
                }
            }
        };
        if !counted.take(run) {
            break;
        }
    }
    Ok(counted.failed)
}

/// The notification of a disabled schedule: subject and message.
fn notice(services: &Services, schedule: &BakeSchedule, failed: &[Run]) -> (String, String) {
    let ty = schedule.image_type.as_deref().unwrap_or(&schedule.name);
    let stack = services
        .config
        .stack_name
        .as_deref()
        .unwrap_or("golden-ami");
    let subject = format!(
        "golden-ami ({stack}): bake schedule of {ty} disabled after {} failures",
        failed.len()
    );
    let mut message = format!(
        "The last {} scheduled bakes of {ty} failed, so its schedule {}/{} ({}) is being DISABLED: nothing is \
         baked for {ty} on a schedule until it is enabled again. The type's current AMI stays published.\n\n\
         Failed bakes, newest first (each one's error and cause were sent to this topic when it ended; \
         `goldenctl executions {ty}` lists them):\n",
        failed.len(),
        schedule.group,
        schedule.name,
        schedule.expression,
    );
    for run in failed {
        message.push_str(&format!(
            "  - {} {} (started {}): {}\n",
            run.execution.name,
            run.execution.status,
            run.execution.start.to_rfc3339(),
            run.execution.arn
        ));
    }
    message.push_str(&format!(
        "\nFix the cause (a bake by hand shows it: `goldenctl bake {ty} --wait`), then turn the schedule \
         back on:\n  goldenctl schedule enable {ty} --stack {stack}\n"
    ));
    (subject, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(name: &str, status: &str, ty: Option<&str>) -> Run {
        Run {
            execution: ExecutionSummary {
                arn: format!("arn:aws:states:us-east-1:123456789012:execution:bake:{name}"),
                name: name.into(),
                status: status.into(),
                start: chrono::DateTime::<chrono::Utc>::default(),
            },
            scheduled_type: ty.map(str::to_owned),
            error: None,
        }
    }

    /// The streak of `runs` (newest first), as execution names.
    fn streak_of(runs: &[Run], ty: &str, limit: usize) -> Vec<String> {
        let mut streak = Streak::new(ty, limit);
        for run in runs {
            if !streak.take(run.clone()) {
                break;
            }
        }
        streak
            .failed
            .into_iter()
            .map(|r| r.execution.name)
            .collect()
    }

    #[test]
    fn failures_count_back_to_the_newest_success_of_the_types_scheduled_bakes() {
        let t = Some("bld");
        let runs = vec![
            run("r1", "RUNNING", t),
            run("f1", "FAILED", t),
            run("manual", "FAILED", None),
            run("other", "FAILED", Some("tst")),
            run("f2", "TIMED_OUT", t),
            run("other-ok", "SUCCEEDED", Some("tst")),
            run("aborted", "ABORTED", t),
            Run {
                error: Some(LOCKED_OUT.into()),
                ..run("locked-out", "FAILED", t)
            },
            run("f3", "FAILED", t),
            run("ok", "SUCCEEDED", t),
            run("f4", "FAILED", t),
        ];
        // Aborted by a person, or locked out by another bake of the type: neither says the recipe fails.
        assert_eq!(streak_of(&runs, "bld", 0), ["f1", "f2", "f3"]);
        assert_eq!(streak_of(&runs, "bld", 2), ["f1", "f2"]);
        assert_eq!(
            streak_of(&runs, "tst", 0),
            ["other"],
            "back to tst's success"
        );
        assert!(streak_of(&runs, "b-2008", 0).is_empty());
    }

    #[test]
    fn only_a_schedules_input_is_a_scheduled_bake() {
        assert_eq!(
            scheduled_type(r#"{"type": "bld", "trigger": "schedule"}"#).as_deref(),
            Some("bld")
        );
        for manual in [
            r#"{"type": "bld"}"#,
            r#"{"type": "bld", "trigger": "manual"}"#,
            r#"{"type": "bld", "trigger": "cron"}"#,
            r#"{"trigger": "schedule"}"#,
            "not json",
        ] {
            assert_eq!(scheduled_type(manual), None, "{manual}");
        }
    }

    #[test]
    fn requests_are_events_or_a_manual_report_and_anything_else_is_refused() {
        let event = |status: &str| {
            json!({"version": "0", "id": "e", "detail-type": SFN_STATUS_CHANGE, "source": "aws.states",
                "account": "123456789012", "time": "2026-11-25T01:00:00Z", "region": "us-east-1",
                "resources": [], "detail": {
                    "executionArn": "arn:aws:states:us-east-1:123456789012:execution:bake:x",
                    "status": status}})
        };
        assert_eq!(
            GuardRequest::try_from(event("FAILED")).expect("event"),
            GuardRequest::Ended {
                execution_arn: "arn:aws:states:us-east-1:123456789012:execution:bake:x".into(),
                status: "FAILED".into(),
                error: None,
            }
        );
        assert_eq!(
            GuardRequest::try_from(json!({"type": "bld"})).expect("manual"),
            GuardRequest::Manual {
                image_type: "bld".into(),
                dry_run: true
            }
        );
        assert_eq!(
            GuardRequest::try_from(json!({"type": "bld", "dryRun": false})).expect("manual"),
            GuardRequest::Manual {
                image_type: "bld".into(),
                dry_run: false
            }
        );
        for (bad, says) in [
            (json!({"dryRun": true}), "missing field `type`"),
            (json!({"type": "Bad_Type"}), "not an image type name"),
            (json!({"type": "bld", "typo": 1}), "unknown field"),
            (
                json!({"detail-type": "Scheduled Event", "detail": {}}),
                "unexpected event",
            ),
            (
                json!({"detail-type": SFN_STATUS_CHANGE, "detail": {}}),
                "without executionArn",
            ),
        ] {
            let err = GuardRequest::try_from(bad)
                .expect_err("refused")
                .to_string();
            assert!(err.contains(says), "{err}");
        }
    }
}
