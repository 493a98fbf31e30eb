//! `bake TYPE [--wait]`, `executions [TYPE]`, `abort EXECUTION [--wait]`: the bake state machine from the
//! operator's side.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Context};
use aws_sdk_sfn::types::{ExecutionStatus, HistoryEvent};
use golden_core::bake::launch::{recipe_key, OUTCOME_UNCHANGED};
use golden_core::lifecycle::{reap, Trigger};
use golden_core::ports::ObjectStore;
use golden_core::publishing::read_manifest;
use golden_core::recipe::Recipe;
use golden_core::tags;
use serde::Serialize;
use serde_json::Value;

use crate::deploy::Deployment;
use crate::output::{print, table, Format};
use crate::ui::{self, confirm, ActArgs, Go, Progress};
use crate::{EXIT_ERROR, EXIT_OK};

/// How often `--wait` looks at the execution.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// Step Functions execution names: at most 80 of `[A-Za-z0-9_-]`.
fn execution_name(image_type: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let stamp = now.format("%Y%m%dT%H%M%SZ").to_string();
    let room = 80 - stamp.len() - 1;
    let ty: String = image_type
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(room)
        .collect();
    format!("{ty}-{stamp}")
}

/// arn:aws:states:R:A:stateMachine:M + name -> arn:aws:states:R:A:execution:M:name.
fn execution_arn(state_machine_arn: &str, name_or_arn: &str) -> String {
    if name_or_arn.starts_with("arn:") {
        return name_or_arn.to_owned();
    }
    format!(
        "{}:{name_or_arn}",
        state_machine_arn.replacen(":stateMachine:", ":execution:", 1)
    )
}

fn sfn(d: &Deployment) -> aws_sdk_sfn::Client {
    aws_sdk_sfn::Client::new(&d.sdk)
}

/// The pushed recipe of `image_type`, or an error that says how to push it: a bake without one fails at
/// its first step.
async fn pushed_recipe(store: &dyn ObjectStore, image_type: &str) -> anyhow::Result<Recipe> {
    let key = recipe_key(image_type);
    let object = store
        .get(&key)
        .await
        .with_context(|| format!("reading {key}"))?
        .ok_or_else(|| {
            anyhow!(
                "no recipe for {image_type:?} in the bucket ({key}): push it first with `goldenctl recipes push \
                 infra/recipes/{image_type}.toml` (`goldenctl recipes list` shows what is pushed)"
            )
        })?;
    Recipe::from_json_slice(&object.body, &key).map_err(|e| {
        anyhow!("the pushed recipe of {image_type} is invalid: {e}; fix the TOML and push it again")
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BakeReport {
    pub execution: String,
    pub name: String,
    #[serde(rename = "type")]
    pub image_type: String,
    /// RUNNING (without --wait), SUCCEEDED, FAILED, TIMED_OUT or ABORTED.
    pub status: String,
    /// With --wait, on success: `published` (a new version), or `unchanged` (nothing was launched: the
    /// recipe and base AMI are the current version's, which `version` names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// For an unchanged bake: why, and how to bake anyway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With --wait: seconds from start to end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_seconds: Option<u64>,
    /// On success: the version and its image per region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// On success: whether the version became current (not when the type is pinned, or a newer one is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<bool>,
    /// On failure: the error and its cause (for a failed command, the tail of its stderr).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

pub async fn bake(
    d: &Deployment,
    image_type: &str,
    wait: bool,
    poll_seconds: Option<u32>,
    force: bool,
    format: Format,
) -> anyhow::Result<u8> {
    let store = d.store()?;
    pushed_recipe(&store, image_type).await?;
    let machine = d.state_machine_arn()?;
    let name = execution_name(image_type, chrono::Utc::now());
    let mut input = serde_json::json!({ "type": image_type });
    if let Some(p) = poll_seconds {
        input["pollSeconds"] = p.into();
    }
    if force {
        input["force"] = true.into();
    }
    let started = sfn(d)
        .start_execution()
        .state_machine_arn(machine)
        .name(&name)
        .input(input.to_string())
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "cannot start a bake on {machine}: {}",
                crate::errors::chain(&e)
            )
        })?;
    let arn = started.execution_arn().to_owned();
    let mut report = BakeReport {
        execution: arn.clone(),
        name,
        image_type: image_type.to_owned(),
        status: "RUNNING".into(),
        outcome: None,
        reason: None,
        elapsed_seconds: None,
        version: None,
        images: BTreeMap::new(),
        current: None,
        error: None,
        cause: None,
    };
    if !wait {
        print(format, &report, render_bake);
        if format == Format::Table {
            eprintln!(
                "follow it with: goldenctl executions {image_type}   (or bake --wait next time)"
            );
        }
        return Ok(EXIT_OK);
    }
    eprintln!("started {arn}\nfollowing it (Ctrl-C stops following, not the bake)");
    let progress = Progress::new(&format!("baking {image_type}"));
    let ended = follow(d, &arn, &progress).await?;
    progress.finish();
    report.status = ended.status().as_str().to_owned();
    report.elapsed_seconds = Some(progress.elapsed().as_secs());
    if ended.status() == &ExecutionStatus::Succeeded {
        let output: Value = ended
            .output()
            .and_then(|o| serde_json::from_str(o).ok())
            .unwrap_or_default();
        let unchanged = output["outcome"] == OUTCOME_UNCHANGED;
        let published = if unchanged {
            report.reason = output["reason"].as_str().map(str::to_owned);
            report.version = output["version"].as_str().map(str::to_owned);
            &output
        } else {
            report.version = output["published"]["version"].as_str().map(str::to_owned);
            &output["published"]
        };
        report.outcome = Some(
            if unchanged {
                OUTCOME_UNCHANGED
            } else {
                "published"
            }
            .to_owned(),
        );
        if let Some(images) = published["images"].as_object() {
            report.images = images
                .iter()
                .filter_map(|(r, i)| Some((r.clone(), i.as_str()?.to_owned())))
                .collect();
        }
        if let (Some(version), Ok((manifest, _))) = (
            &report.version,
            read_manifest(&store, chrono::Utc::now()).await,
        ) {
            report.current =
                Some(manifest.current(image_type).map(|e| e.version.as_ref()) == Some(version));
        }
        print(format, &report, render_bake);
        Ok(EXIT_OK)
    } else {
        report.error = ended.error().map(str::to_owned);
        report.cause = ended.cause().map(str::to_owned);
        print(format, &report, render_bake);
        Ok(EXIT_ERROR)
    }
}

fn render_bake(r: &BakeReport) -> String {
    let status = match r.status.as_str() {
        "SUCCEEDED" => ui::good(&r.status),
        "RUNNING" => r.status.clone(),
        other => ui::bad(other),
    };
    let mut rows = vec![
        vec!["Execution".to_owned(), r.execution.clone()],
        vec!["Type".into(), r.image_type.clone()],
        vec!["Status".into(), status],
    ];
    if let Some(o) = &r.outcome {
        rows.push(vec!["Outcome".into(), o.clone()]);
    }
    if let Some(why) = &r.reason {
        rows.push(vec!["Why".into(), why.clone()]);
    }
    if let Some(s) = r.elapsed_seconds {
        rows.push(vec!["Elapsed".into(), ui::clock(Duration::from_secs(s))]);
    }
    if let Some(v) = &r.version {
        let current = match r.current {
            Some(true) => " (current)".to_owned(),
            Some(false) => {
                " (not current: the type is pinned, or a newer version is current)".to_owned()
            }
            None => String::new(),
        };
        rows.push(vec!["Version".into(), format!("{v}{current}")]);
    }
    for (region, image) in &r.images {
        rows.push(vec![format!("Image {region}"), image.clone()]);
    }
    if let Some(e) = &r.error {
        rows.push(vec!["Error".into(), ui::bad(e)]);
    }
    if let Some(c) = &r.cause {
        rows.push(vec!["Cause".into(), c.clone()]);
    }
    table(&["", ""], rows)
}

/// Polling states of the bake state machine (WaitImage, CheckImage, ImageReady?): shown as one wait, not
/// a line per poll.
fn is_poll_state(name: &str) -> bool {
    name.starts_with("Wait") || name.starts_with("Check") || name.ends_with('?')
}

/// The end markers (Done, CopyDone): the execution's own end says it.
fn is_quiet_state(name: &str) -> bool {
    name.ends_with("Done")
}

/// Follows an execution until it ends: each state as it starts and ends (polling loops folded into one
/// line), then the execution as DescribeExecution has it.
async fn follow(
    d: &Deployment,
    arn: &str,
    progress: &Progress,
) -> anyhow::Result<aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput> {
    let client = sfn(d);
    let mut seen = 0i64;
    // Entry times by state name: a Map state's iterations enter the same states side by side.
    let mut entered: BTreeMap<String, Vec<aws_sdk_sfn::primitives::DateTime>> = BTreeMap::new();
    let mut waiting: Option<(String, aws_sdk_sfn::primitives::DateTime, u32)> = None;
    loop {
        let described = client
            .describe_execution()
            .execution_arn(arn)
            .send()
            .await
            .map_err(|e| anyhow!("cannot read execution {arn}: {}", crate::errors::chain(&e)))?;
        let mut events: Vec<HistoryEvent> = Vec::new();
        let mut pages = client
            .get_execution_history()
            .execution_arn(arn)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                anyhow!(
                    "cannot read the history of {arn}: {}",
                    crate::errors::chain(&e)
                )
            })?;
            events.extend(page.events().iter().cloned());
        }
        let new: Vec<HistoryEvent> = events.into_iter().filter(|e| e.id() > seen).collect();
        for event in new {
            seen = seen.max(event.id());
            let at = *event.timestamp();
            if let Some(name) = event.state_entered_event_details().map(|s| s.name()) {
                if is_quiet_state(name) {
                    continue;
                }
                if is_poll_state(name) {
                    let polls = match &mut waiting {
                        Some((_, _, polls)) => {
                            *polls += u32::from(name.starts_with("Check"));
                            *polls
                        }
                        None => {
                            progress.line(&format!("waiting ({name} ...)"));
                            waiting = Some((name.to_owned(), at, 0));
                            0
                        }
                    };
                    progress.set(&format!("waiting: {name} ({polls} polls)"));
                    continue;
                }
                if let Some((_, since, polls)) = waiting.take() {
                    progress.line(&format!(
                        "waited {} ({polls} polls)",
                        ui::clock(between(since, at))
                    ));
                }
                progress.line(&format!("▸ {name}"));
                progress.set(name);
                entered.entry(name.to_owned()).or_default().push(at);
            } else if let Some(name) = event.state_exited_event_details().map(|s| s.name()) {
                let since = entered
                    .get_mut(name)
                    .and_then(|times| (!times.is_empty()).then(|| times.remove(0)));
                if let Some(since) = since {
                    progress.line(&format!(
                        "{} {name} ({})",
                        ui::good_stderr("✓"),
                        ui::clock(between(since, at))
                    ));
                }
            }
        }
        if described.status() != &ExecutionStatus::Running {
            let status = described.status().as_str().to_owned();
            let word = if described.status() == &ExecutionStatus::Succeeded {
                ui::good_stderr(&status)
            } else {
                ui::bad_stderr(&status)
            };
            progress.line(&word);
            return Ok(described);
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// `2026-11-26T17:29:10Z`: to the second, as the manifest writes times.
fn seconds(t: &aws_sdk_sfn::primitives::DateTime) -> String {
    chrono::DateTime::from_timestamp(t.secs(), 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| t.to_string())
}

fn between(
    from: aws_sdk_sfn::primitives::DateTime,
    to: aws_sdk_sfn::primitives::DateTime,
) -> Duration {
    let ms = to.to_millis().unwrap_or(0) - from.to_millis().unwrap_or(0);
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionRow {
    pub name: String,
    pub execution: String,
    /// From the execution's input; null when the input names none.
    #[serde(rename = "type")]
    pub image_type: Option<String>,
    pub status: String,
    pub started: String,
    pub stopped: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ExecutionsReport {
    pub executions: Vec<ExecutionRow>,
}

/// The most recent executions (newest first), of one type or all.
pub async fn executions(
    d: &Deployment,
    image_type: Option<&str>,
    limit: usize,
    format: Format,
) -> anyhow::Result<u8> {
    let machine = d.state_machine_arn()?;
    let client = sfn(d);
    let mut rows = Vec::new();
    let mut pages = client
        .list_executions()
        .state_machine_arn(machine)
        .into_paginator()
        .items()
        .send();
    while let Some(item) = pages.next().await {
        if rows.len() >= limit {
            break;
        }
        let item = item.map_err(|e| {
            anyhow!(
                "cannot list the executions of {machine}: {}",
                crate::errors::chain(&e)
            )
        })?;
        // The type is in the input, which only DescribeExecution has (scheduled bakes have random names).
        let input: Value = client
            .describe_execution()
            .execution_arn(item.execution_arn())
            .send()
            .await
            .ok()
            .and_then(|o| o.input().and_then(|i| serde_json::from_str(i).ok()))
            .unwrap_or_default();
        let ty = input["type"].as_str().map(str::to_owned);
        if image_type.is_some_and(|want| ty.as_deref() != Some(want)) {
            continue;
        }
        rows.push(ExecutionRow {
            name: item.name().to_owned(),
            execution: item.execution_arn().to_owned(),
            image_type: ty,
            status: item.status().as_str().to_owned(),
            started: seconds(item.start_date()),
            stopped: item.stop_date().map(seconds),
        });
    }
    rows.sort_by(|a, b| b.started.cmp(&a.started));
    let report = ExecutionsReport { executions: rows };
    print(format, &report, |r| {
        table(
            &["Name", "Type", "Status", "Started", "Stopped"],
            r.executions
                .iter()
                .map(|e| {
                    vec![
                        e.name.clone(),
                        e.image_type.clone().unwrap_or_else(|| "-".into()),
                        e.status.clone(),
                        e.started.clone(),
                        e.stopped.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect(),
        )
    });
    Ok(EXIT_OK)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AbortReport {
    pub execution: String,
    #[serde(rename = "type")]
    pub image_type: Option<String>,
    /// The status before the abort.
    pub status: String,
    /// `region:instance` of the execution's builder(s), as found before the abort.
    pub builders: Vec<String>,
    pub dry_run: bool,
    /// Whether StopExecution was sent (not when the execution had already ended).
    pub stopped: bool,
    /// What the reaper's code did for the execution: builders terminated, locks released, images discarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reaped: Option<reap::ReapReport>,
    /// With --wait: the builders were seen terminated and the type's lock free.
    pub settled: bool,
}

/// Stops an execution, then terminates its builder, discards its unpublished images and frees its lock
/// with the reaper's own code (Step Functions runs no Catch for an aborted execution; in AWS the reaper's
/// Step Functions event does the same, and both are idempotent).
pub async fn abort(
    d: &Deployment,
    execution: &str,
    wait: bool,
    act: ActArgs,
    format: Format,
) -> anyhow::Result<u8> {
    let arn = execution_arn(d.state_machine_arn()?, execution);
    let client = sfn(d);
    let described = client
        .describe_execution()
        .execution_arn(&arn)
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "no execution {arn}: {}; list them with `goldenctl executions`",
                crate::errors::chain(&e)
            )
        })?;
    let input: Value = described
        .input()
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or_default();
    let image_type = input["type"].as_str().map(str::to_owned);
    let services = d.services()?;
    // Where the reaper looks: GOLDEN_REGIONS and every pushed recipe's regions.
    let regions = golden_core::lifecycle::sweep_regions(&services).await?;
    let builders = builders_of(&services, &regions, &arn).await?;
    let running = described.status() == &ExecutionStatus::Running;
    let holds_lock = match &image_type {
        Some(ty) => lock_holder(&services, ty).await?.as_deref() == Some(arn.as_str()),
        None => false,
    };
    let mut report = AbortReport {
        execution: arn.clone(),
        image_type: image_type.clone(),
        status: described.status().as_str().to_owned(),
        builders: builders.clone(),
        dry_run: act.dry_run,
        stopped: false,
        reaped: None,
        settled: false,
    };
    let nothing = !running && builders.is_empty() && !holds_lock;
    if format == Format::Table || ui::will_ask(act, nothing) {
        let stop = if running {
            format!("stop {arn}")
        } else {
            format!("{arn} already ended ({}): nothing to stop", report.status)
        };
        eprintln!(
            "plan: {stop}; terminate its builders [{}], discard its unpublished images{}",
            report.builders.join(", "),
            if holds_lock { ", free its lock" } else { "" }
        );
    }
    if confirm(act, "abort this bake", nothing)? == Go::Plan {
        if nothing && format == Format::Table {
            eprintln!("nothing to do: the execution has ended and left no builder or lock");
        }
        print(format, &report, render_abort);
        return Ok(EXIT_OK);
    }
    if running {
        client
            .stop_execution()
            .execution_arn(&arn)
            .cause("aborted with goldenctl abort")
            .send()
            .await
            .map_err(|e| anyhow!("cannot stop {arn}: {}", crate::errors::chain(&e)))?;
        report.stopped = true;
    }
    report.reaped = Some(reap_execution(&services, &client, &arn).await?);
    if wait {
        let progress =
            Progress::new("waiting for the builder to terminate and the lock to be free");
        report.settled = settle(
            &services,
            &client,
            &regions,
            image_type.as_deref(),
            &arn,
            &progress,
        )
        .await?;
        progress.finish();
    }
    print(format, &report, render_abort);
    Ok(if !wait || report.settled {
        EXIT_OK
    } else {
        EXIT_ERROR
    })
}

/// `region:instance` of the execution's builders not yet terminated.
async fn builders_of(
    services: &golden_core::bake::Services,
    regions: &[String],
    arn: &str,
) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for (region, role) in regions
        .iter()
        .flat_map(|r| tags::BAKE_INSTANCE_ROLES.map(|role| (r, role)))
    {
        let filter = [(tags::ROLE, role), (tags::EXECUTION, arn)];
        for i in services.ec2.find_instances(region, &filter).await? {
            if i.state != "terminated" {
                out.push(format!("{region}:{}", i.instance_id));
            }
        }
    }
    Ok(out)
}

/// The execution holding the type's bake lock, if any.
async fn lock_holder(
    services: &golden_core::bake::Services,
    image_type: &str,
) -> anyhow::Result<Option<String>> {
    Ok(
        match golden_core::bake::lock::inspect(services.store.as_ref(), image_type).await? {
            Some(golden_core::bake::lock::Lock::Held(record)) => Some(record.execution_id),
            _ => None,
        },
    )
}

/// Runs reap-builders' code for the execution, as its Step Functions event does in AWS.
async fn reap_execution(
    services: &golden_core::bake::Services,
    client: &aws_sdk_sfn::Client,
    arn: &str,
) -> anyhow::Result<reap::ReapReport> {
    let status = client
        .describe_execution()
        .execution_arn(arn)
        .send()
        .await
        .map(|o| o.status().as_str().to_owned())
        .unwrap_or_else(|_| "ABORTED".into());
    reap::handle(
        services,
        Trigger::ExecutionStatus {
            execution_arn: arn.to_owned(),
            status,
        },
    )
    .await
    .context("cleaning up after the aborted bake (reap-builders retries it on its schedule)")
}

/// Waits (up to 10 minutes) until the execution has no builder left and does not hold the type's lock.
/// Builders are looked for anew each time, and reaped again if one still runs: a LaunchBuilder call in
/// flight when the execution was stopped can start one after the first reap.
async fn settle(
    services: &golden_core::bake::Services,
    client: &aws_sdk_sfn::Client,
    regions: &[String],
    image_type: Option<&str>,
    arn: &str,
    progress: &Progress,
) -> anyhow::Result<bool> {
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    loop {
        let mut pending = Vec::new();
        let mut reap_again = false;
        for b in builders_of(services, regions, arn).await? {
            let Some((region, id)) = b.split_once(':') else {
                continue;
            };
            let state = services
                .ec2
                .describe_instance(region, id)
                .await?
                .map_or_else(|| "terminated".to_owned(), |i| i.state);
            reap_again |= state != "shutting-down" && state != "terminated";
            if state != "terminated" {
                pending.push(format!("{id} {state}"));
            }
        }
        if let Some(ty) = image_type {
            if lock_holder(services, ty).await?.as_deref() == Some(arn) {
                pending.push(format!("lock locks/{ty}.json"));
                reap_again = true;
            }
        }
        if pending.is_empty() {
            progress.line("builders terminated, lock free");
            return Ok(true);
        }
        if reap_again {
            reap_execution(services, client, arn).await?;
        }
        progress.set(&format!("waiting for {}", pending.join(", ")));
        if std::time::Instant::now() > deadline {
            progress.line(&format!(
                "still waiting after 10 minutes for {}",
                pending.join(", ")
            ));
            return Ok(false);
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

fn render_abort(r: &AbortReport) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let mut rows = vec![
        vec!["Execution".to_owned(), r.execution.clone()],
        vec![
            "Type".into(),
            r.image_type.clone().unwrap_or_else(|| "-".into()),
        ],
        vec!["Status before".into(), r.status.clone()],
        vec!["Builders".into(), r.builders.join("\n")],
        vec!["Dry run".into(), yes_no(r.dry_run)],
        vec!["Stopped".into(), yes_no(r.stopped)],
    ];
    if let Some(reaped) = &r.reaped {
        rows.push(vec![
            "Terminated".into(),
            reaped
                .builders
                .iter()
                .filter(|b| matches!(b.verdict, golden_core::reaping::ReapVerdict::Reap { .. }))
                .map(|b| b.instance_id.clone())
                .collect::<Vec<_>>()
                .join("\n"),
        ]);
        rows.push(vec!["Locks freed".into(), reaped.locks_released.join(", ")]);
    }
    rows.push(vec!["Settled".into(), yes_no(r.settled)]);
    table(&["", ""], rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_names_fit_step_functions() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-26T17:00:05Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            execution_name("bld-linux64", t),
            "bld-linux64-20261126T170005Z"
        );
        let long = "x".repeat(100);
        assert_eq!(execution_name(&long, t).len(), 80);
        assert_eq!(execution_name("a.b", t), "a-b-20261126T170005Z");
    }

    #[test]
    fn an_execution_name_becomes_its_arn() {
        let m = "arn:aws:states:us-east-1:123456789012:stateMachine:bake";
        assert_eq!(
            execution_arn(m, "bld-1"),
            "arn:aws:states:us-east-1:123456789012:execution:bake:bld-1"
        );
        assert_eq!(execution_arn(m, "arn:x"), "arn:x");
        assert!(is_poll_state("WaitImage") && is_poll_state("ImageReady?"));
        assert!(!is_poll_state("Provision"));
    }
}
