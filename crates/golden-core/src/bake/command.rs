//! run-command and command-status: provision and sanitize the builder through SSM Run Command.

use serde::Deserialize;

use super::{BakeState, CommandRef, CommandStage, Poll, Services};
use crate::error::{CommandFailure, Error, Result};
use crate::ports::CommandSpec;
use crate::scripts;

/// run-command's payload: which stage, and the bake state.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunCommandInput {
    pub stage: CommandStage,
    pub bake: BakeState,
}

/// How long the sanitize script may run.
const SANITIZE_MINUTES: u32 = 15;
/// How much of a failed command's output goes into the error (Step Functions causes are capped at 32 KiB).
const TAIL_CHARS: usize = 2000;

pub async fn run(services: &Services, input: RunCommandInput) -> Result<CommandRef> {
    let bake = &input.bake;
    bake.check(&services.config)?;
    let recipe = &bake.recipe;
    // Provision and sanitize run on the builder, the test on the tester.
    let (commands, minutes, target) = match input.stage {
        CommandStage::Provision => (
            scripts::provision_commands(recipe),
            recipe.provision.timeout_minutes,
            &bake.builder,
        ),
        CommandStage::Sanitize => (
            scripts::sanitize_commands(recipe.platform, &recipe.sanitize.extra_paths),
            SANITIZE_MINUTES,
            &bake.builder,
        ),
        CommandStage::Test => {
            let (test, tester) = recipe.test.as_ref().zip(bake.tester.as_ref()).ok_or_else(|| {
                Error::InvalidInput(
                    "the test stage needs the recipe's [test] and a tester in $.tester (LaunchTester)"
                        .into(),
                )
            })?;
            (scripts::test_commands(recipe), test.timeout_minutes, tester)
        }
    };
    let region = &target.region;
    let instance_id = &target.instance_id;
    let bucket = services.store.bucket().to_owned();
    let prefix = format!(
        "{}/{}",
        super::logs_prefix(&bake.image_type, &bake.version),
        input.stage.as_str()
    );
    // SendCommand has no client token; the comment names this execution's stage so a retry finds it.
    let comment = format!(
        "golden-ami {} {}",
        input.stage.as_str(),
        &super::client_token(&bake.execution_id, "command")[7..39]
    );
    let command_id = match services
        .ssm
        .find_command(region, instance_id, &comment)
        .await?
    {
        Some(id) => {
            tracing::info!(command_id = %id, stage = input.stage.as_str(), "command already sent by this execution");
            id
        }
        None => {
            let spec = CommandSpec {
                instance_id: instance_id.clone(),
                document: scripts::document_name(recipe.platform).to_owned(),
                commands,
                timeout_seconds: minutes.saturating_mul(60),
                comment,
                output: Some((bucket.clone(), prefix.clone())),
            };
            let id = services.ssm.send_command(region, &spec).await?;
            tracing::info!(command_id = %id, stage = input.stage.as_str(), %instance_id, "command sent");
            id
        }
    };
    Ok(CommandRef {
        logs: Some(format!(
            "s3://{bucket}/{prefix}/{command_id}/{instance_id}/"
        )),
        execution_id: Some(bake.execution_id.clone()),
        command_id,
        instance_id: instance_id.clone(),
        region: region.clone(),
        stage: input.stage,
        status: "Pending".into(),
        done: false,
        await_stop: input.stage == CommandStage::Sanitize
            && recipe.platform == crate::recipe::Platform::Windows,
        // Delivery and start-up on top of the command's own timeout (and sysprep's shutdown after it).
        poll: Poll::new(minutes.saturating_add(5), bake.poll_seconds, bake.deadline),
    })
}

pub async fn status(services: &Services, mut command: CommandRef) -> Result<CommandRef> {
    command.check(&services.config)?;
    let what = format!(
        "{} command {} on {}",
        command.stage.as_str(),
        command.command_id,
        command.instance_id
    );
    let invocation = services
        .ssm
        .command_invocation(&command.region, &command.command_id, &command.instance_id)
        .await?;
    let Some(invocation) = invocation else {
        command.poll.tick(&what, services.now())?;
        return Ok(command);
    };
    command.status = invocation.status.clone();
    match invocation.status.as_str() {
        "Success" if command.await_stop => return stopped(services, command).await,
        "Success" if command.stage == CommandStage::Test => {
            // The test passed: its instance has done its job (a failed test's goes with the bake's cleanup).
            terminate_tester(services, &command).await?;
            command.done = true;
        }
        "Success" => command.done = true,
        "Pending" | "InProgress" | "Delayed" => command.poll.tick(&what, services.now())?,
        _ => {
            let output = if invocation.stderr.trim().is_empty() {
                &invocation.stdout
            } else {
                &invocation.stderr
            };
            return Err(Error::CommandFailed(Box::new(CommandFailure {
                stage: command.stage.as_str().to_owned(),
                command_id: command.command_id,
                instance_id: command.instance_id,
                region: command.region,
                status: invocation.status,
                exit_code: invocation.exit_code,
                stderr_tail: tail(output, TAIL_CHARS),
                logs_note: command
                    .logs
                    .map(|l| format!("\nwhole output: {l}"))
                    .unwrap_or_default(),
            })));
        }
    }
    Ok(command)
}

/// Terminates the instance a passed test ran on, once it is sure it is this execution's tester: the command
/// ref is input, and IAM alone would let any tester go.
async fn terminate_tester(services: &Services, command: &CommandRef) -> Result<()> {
    let instance = services
        .ec2
        .describe_instance(&command.region, &command.instance_id)
        .await?;
    let Some(instance) = instance else {
        return Ok(()); // gone already
    };
    let tag = |k: &str| instance.tags.get(k).map(String::as_str);
    if tag(crate::tags::ROLE) != Some(crate::tags::ROLE_TESTER)
        || command.execution_id.is_none()
        || tag(crate::tags::EXECUTION) != command.execution_id.as_deref()
    {
        return Err(Error::InvalidInput(format!(
            "{} in {} is not the tester of execution {}; refusing to terminate it",
            command.instance_id,
            command.region,
            command.execution_id.as_deref().unwrap_or("(none given)")
        )));
    }
    if !matches!(instance.state.as_str(), "terminated" | "shutting-down") {
        services
            .ec2
            .terminate_instances(&command.region, std::slice::from_ref(&command.instance_id))
            .await?;
    }
    tracing::info!(tester = %command.instance_id, "test passed; tester terminated");
    Ok(())
}

/// After a Windows Sanitize: done once sysprep has shut the builder down.
async fn stopped(services: &Services, mut command: CommandRef) -> Result<CommandRef> {
    let what = format!(
        "builder {} in {} to stop after sysprep",
        command.instance_id, command.region
    );
    let instance = services
        .ec2
        .describe_instance(&command.region, &command.instance_id)
        .await?;
    let state = instance.map(|i| i.state);
    match state.as_deref() {
        Some("stopped") => command.done = true,
        Some("running" | "stopping" | "pending") => {
            command.status = "Success (sysprep running)".into();
            command.poll.tick(&what, services.now())?;
        }
        other => {
            return Err(Error::BuilderFailed {
                instance_id: command.instance_id,
                region: command.region,
                reason: format!(
                    "is {} while sysprep should have stopped it; see its console output",
                    other.unwrap_or("gone")
                ),
            })
        }
    }
    Ok(command)
}

/// The last `max` characters of `text`, cut at a line start where possible, marked when cut.
pub fn tail(text: &str, max: usize) -> String {
    let text = text.trim_end();
    if text.is_empty() {
        return "(no output)".into();
    }
    let chars = text.chars().count();
    if chars <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().skip(chars - max).collect();
    let cut = match cut.find('\n') {
        Some(i) if i + 1 < cut.len() => &cut[i + 1..],
        _ => &cut[..],
    };
    format!("...{cut}")
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_short_output_whole() {
        assert_eq!(tail("error: boom\n", 100), "error: boom");
        assert_eq!(tail("  \n", 100), "(no output)");
    }

    #[test]
    fn tail_keeps_the_last_lines_of_long_output() {
        let text: String = (0..500).map(|i| format!("line {i}\n")).collect();
        let t = tail(&text, 40);
        assert!(t.starts_with("..."));
        assert!(t.ends_with("line 499"));
        assert!(t.len() <= 43);
        assert!(!t.contains("line 1\n"));
    }
}
