//! goldenctl: the golden-ami operator's command line, on the same golden-core code the Lambdas run.
//!
//! AWS comes from the standard configuration (profiles, `AWS_REGION`, `AWS_ENDPOINT_URL`); the deployment
//! from flags, the environment (`GOLDEN_BUCKET`, ...) or a stack's outputs (`--stack`): see deploy.rs. Every command prints a table, or with `--output json` a stable JSON
//! document (README.md "goldenctl").

mod bake;
mod check;
mod completions;
mod deploy;
mod doctor;
mod errors;
mod lifecycle;
mod output;
mod recipes;
mod release;
mod schedule;
mod stack;
mod status;
mod ui;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use output::Format;

/// Exit codes, documented in `--help` and the README.
pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
/// `check`: the instance runs an image of its type that is no longer current.
pub const EXIT_STALE: u8 = 3;
/// `check`: the instance runs an image of a revoked version.
pub const EXIT_REVOKED: u8 = 4;

const EXIT_CODES: &str =
    "Exit codes: 0 ok; 1 error (including an invalid recipe: every problem is listed; a problem `doctor` \
found; a bake that `bake --wait` saw fail; a change not confirmed: off a terminal, pass --yes; for `check`, \
a manifest or metadata service it cannot reach, a timeout, or an instance that is not golden); 2 usage (a \
bad flag or argument); 3 `check`: the AMI is stale; 4 `check`: the AMI is revoked.\n\
Commands that change something show their plan first, then ask (on a terminal), or act with --yes; \
--dry-run only plans.";

#[derive(Debug, Parser)]
#[command(
    name = "goldenctl",
    version,
    about = "Operate a golden-ami deployment: recipes, the published manifest, instances",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(flatten)]
    deployment: deploy::DeploymentArgs,
    /// `table` for people, `json` for scripts (stable: documented in the README).
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Recipes: check them, upload them, list what the bucket holds.
    #[command(subcommand)]
    Recipes(RecipesCommand),
    /// The published manifest (all types, or one): current version and every version's images.
    Manifest {
        /// Only this image type.
        #[arg(value_name = "TYPE")]
        image_type: Option<String>,
    },
    /// An instance by its Name tag (exact) or id, searched in every enabled region: IPs, state and why, the spot
    /// request's status, its image type, AMI and the AMI's verdict (current, stale, revoked, not golden),
    /// launch time and tags. Several matches are all shown; none exits 1.
    Status {
        #[arg(value_name = "NAME|INSTANCE_ID")]
        target: String,
        /// Search only these regions (repeat the flag); default: every region enabled in the account.
        #[arg(long = "region", id = "region", value_name = "REGION")]
        region: Vec<String>,
    },
    /// Start a bake of TYPE now (execution named TYPE-<UTC time>) from its pushed recipe. With --wait,
    /// follow it: each state as it starts and ends, then the version and image per region, or the error
    /// and its cause (a failed command's stderr tail). Exit 0 on success, 1 on failure.
    ///
    /// A bake whose recipe and base AMI are those of the type's current version launches nothing and
    /// ends SUCCEEDED with outcome "unchanged" (unless the recipe says rebuild = "always"); --force bakes
    /// anyway, e.g. after the puppet manifests changed.
    Bake {
        #[arg(value_name = "TYPE")]
        image_type: String,
        /// Follow the execution to its end.
        #[arg(long)]
        wait: bool,
        /// How often the bake polls the builder, the commands and the image (default: the recipe's
        /// state machine default; the deployment's minimum applies).
        #[arg(long, value_name = "SECONDS")]
        poll_seconds: Option<u32>,
        /// Bake even if the recipe and base AMI are the current version's.
        #[arg(long)]
        force: bool,
    },
    /// The most recent bake executions, newest first, with their type (from the input) and status.
    Executions {
        /// Only this image type.
        #[arg(value_name = "TYPE")]
        image_type: Option<String>,
        /// Show at most this many (the most recent, of TYPE if given).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Stop a stuck bake (by execution name or ARN), then terminate its builder, discard its unpublished
    /// images and free its lock, with reap-builders' code. With --wait, also wait until the builder is
    /// terminated and the lock is free.
    Abort {
        #[arg(value_name = "EXECUTION")]
        execution: String,
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        act: ui::ActArgs,
    },
    /// Revoke VERSION of TYPE: marked revoked in the manifest, current rolled back to the newest older good
    /// version (parameters follow), its AMIs deprecated in EC2. Instances on it are then recycled by
    /// enforce-freshness at the rollout pace, or now with `goldenctl recycle TYPE --revoked-only`.
    Revoke {
        #[arg(value_name = "TYPE")]
        image_type: String,
        #[arg(value_name = "VERSION", value_parser = release::parse_version)]
        version: golden_core::version::Version,
        /// Why, recorded in the manifest (shown to whoever looks at the version).
        #[arg(long)]
        reason: String,
        /// Revoke even when it leaves the type with no current version (parameters are deleted).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        act: ui::ActArgs,
    },
    /// Make VERSION of TYPE current (a rollback or roll-forward); with --pin, nightly bakes then do not
    /// move current until `goldenctl unpin TYPE`. A promote without --pin clears a pin.
    Promote {
        #[arg(value_name = "TYPE")]
        image_type: String,
        #[arg(value_name = "VERSION", value_parser = release::parse_version)]
        version: golden_core::version::Version,
        /// Hold TYPE at VERSION: newer bakes are kept in the history but do not become current.
        #[arg(long)]
        pin: bool,
        #[command(flatten)]
        act: ui::ActArgs,
    },
    /// Let newer bakes of TYPE become current again (current stays until the next publish).
    Unpin {
        #[arg(value_name = "TYPE")]
        image_type: String,
        #[command(flatten)]
        act: ui::ActArgs,
    },
    /// Every AMI of TYPE per region: version, id, status (current, published, revoked, not in manifest),
    /// the instances launched from it, the launch templates and parameters naming it, and what prune
    /// would do with it and why.
    Amis {
        #[arg(value_name = "TYPE")]
        image_type: String,
    },
    /// Terminate the running instances of TYPE still on a revoked image (with --revoked-only) or on any
    /// image but the current one, now: the emergency path, past the rollout window and cap. Builders and
    /// instances tagged golden-ami:exempt=true are never touched.
    Recycle {
        #[arg(value_name = "TYPE")]
        image_type: String,
        /// Only instances on a revoked image; stale ones are left to enforce-freshness's rollout.
        #[arg(long)]
        revoked_only: bool,
        #[command(flatten)]
        act: ui::ActArgs,
    },
    /// Run prune's sweep here (every type, every region): the plan of images and snapshots to delete and
    /// why, then, confirmed, the deletes (GOLDEN_PRUNE_* settings apply, as in the function).
    Prune {
        #[command(flatten)]
        act: ui::ActArgs,
    },
    /// Run reap-builders' sweep here: builders of ended or overdue bakes, dead locks, unpublished images
    /// of failed bakes; then, confirmed, terminate, free and discard them.
    Reap {
        #[command(flatten)]
        act: ui::ActArgs,
    },
    /// Run enforce-freshness's sweep here: every fleet instance's verdict and what the rollout (window,
    /// cap, GOLDEN_ENFORCE_ACTION) does to it now; then, confirmed, do it.
    Enforce {
        #[command(flatten)]
        act: ui::ActArgs,
    },
    /// The bake schedules, one per type: see them, and enable one the schedule guard disabled after
    /// MaxFailedScheduledBakes scheduled bakes of its type failed in a row.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Is this instance on its type's current AMI? At boot: its AMI, region and id from the instance
    /// metadata service (IMDSv2), its type from its type tag; or from outside with --instance-id and
    /// --region. Exits 0 current, 3 stale, 4 revoked, 1 on any error; never runs longer than --timeout.
    Check(check::CheckArgs),
    /// Check a deployment: the bucket (reachable, versioned), every pushed recipe (valid; its subnet,
    /// security groups, instance profile and base AMI parameter exist in its build region), the state
    /// machine, and with --stack the stack's schedules and rules (enabled). Each problem is listed with its
    /// fix; any problem exits 1.
    Doctor,
    /// Print a shell completion script: `goldenctl completions bash > /etc/bash_completion.d/goldenctl`.
    Completions {
        #[arg(value_enum)]
        shell: completions::CompletionShell,
    },
    /// Print goldenctl's man page (roff) to stdout, or write one page per command into a directory.
    Man {
        /// Write goldenctl.1, goldenctl-check.1, ... here instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ScheduleCommand {
    /// Every type's schedule: enabled or disabled, its expression, and how many scheduled bakes of the
    /// type failed in a row since it last changed (the guard disables it at the limit).
    List,
    /// Turn TYPE's schedule back on, e.g. once the cause of the failures the guard stopped it for is fixed:
    /// scheduled bakes resume at its next time, and failures are counted afresh.
    Enable {
        #[arg(value_name = "TYPE")]
        image_type: String,
        #[command(flatten)]
        act: ui::ActArgs,
    },
    /// Turn TYPE's schedule off: no scheduled bakes until `goldenctl schedule enable TYPE` (bakes by hand
    /// still run). A redeploy of the stack leaves it as it is unless the schedule itself changed.
    Disable {
        #[arg(value_name = "TYPE")]
        image_type: String,
        #[command(flatten)]
        act: ui::ActArgs,
    },
}

#[derive(Debug, Subcommand)]
enum RecipesCommand {
    /// Check recipe files (TOML) without AWS: every problem of every file at once, with the field and the
    /// fix. The file name must be the type: `bld-linux64.toml` holds `type = "bld-linux64"`.
    Validate {
        #[arg(value_name = "FILE", required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Validate, then upload each recipe as s3://$GOLDEN_BUCKET/recipes/<type>.json (what bakes read).
    /// Nothing is uploaded if any file is invalid. Shows which recipes are new, changed or unchanged.
    Push {
        #[arg(value_name = "FILE", required = true)]
        files: Vec<std::path::PathBuf>,
        /// Show what would change; upload nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The recipes in the bucket, each with its regions (and its problem, if one no longer validates).
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ui::init_colour();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("goldenctl: cannot start: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("goldenctl: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let out = cli.output;
    match cli.command {
        Command::Recipes(RecipesCommand::Validate { files }) => {
            return Ok(recipes::validate(&files, out));
        }
        Command::Completions { shell } => {
            completions::completions(Cli::command(), shell);
            return Ok(EXIT_OK);
        }
        Command::Man { dir } => {
            completions::man(Cli::command(), dir.as_deref())?;
            return Ok(EXIT_OK);
        }
        // Resolves the deployment itself, within its --timeout.
        Command::Check(args) => return check::check(cli.deployment, args, out).await,
        _ => {}
    }
    let stack = cli
        .deployment
        .stack
        .clone()
        .filter(|s| !s.trim().is_empty());
    let deployment = deploy::Deployment::resolve(cli.deployment).await?;
    match cli.command {
        Command::Recipes(RecipesCommand::Validate { .. })
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Check(_) => unreachable!("handled above"),
        Command::Doctor => doctor::doctor(&deployment, stack.as_deref(), out).await,
        Command::Recipes(RecipesCommand::Push { files, dry_run }) => {
            recipes::push(&deployment.store()?, &files, dry_run, out).await
        }
        Command::Recipes(RecipesCommand::List) => recipes::list(&deployment.store()?, out).await,
        Command::Status { target, region } => {
            let regions = deployment.every_region(region).await?;
            let store = deployment.store().ok();
            let store_ref = store
                .as_ref()
                .map(|s| s as &dyn golden_core::ports::ObjectStore);
            status::status(
                &deployment.sdk,
                store_ref,
                &deployment.type_tag,
                &target,
                regions,
                out,
            )
            .await
        }
        Command::Manifest { image_type } => {
            recipes::manifest(&deployment.store()?, image_type.as_deref(), out).await
        }
        Command::Bake {
            image_type,
            wait,
            poll_seconds,
            force,
        } => bake::bake(&deployment, &image_type, wait, poll_seconds, force, out).await,
        Command::Executions { image_type, limit } => {
            bake::executions(&deployment, image_type.as_deref(), limit, out).await
        }
        Command::Abort {
            execution,
            wait,
            act,
        } => bake::abort(&deployment, &execution, wait, act, out).await,
        Command::Revoke {
            image_type,
            version,
            reason,
            force,
            act,
        } => {
            let action = release::Action::Revoke { reason, force };
            release::run(&deployment, &image_type, Some(version), action, act, out).await
        }
        Command::Promote {
            image_type,
            version,
            pin,
            act,
        } => {
            let action = release::Action::Promote { pin };
            release::run(&deployment, &image_type, Some(version), action, act, out).await
        }
        Command::Unpin { image_type, act } => {
            release::run(
                &deployment,
                &image_type,
                None,
                release::Action::Unpin,
                act,
                out,
            )
            .await
        }
        Command::Amis { image_type } => lifecycle::amis(&deployment, &image_type, out).await,
        Command::Recycle {
            image_type,
            revoked_only,
            act,
        } => lifecycle::recycle(&deployment, &image_type, revoked_only, act, out).await,
        Command::Schedule(ScheduleCommand::List) => schedule::list(&deployment, out).await,
        Command::Schedule(ScheduleCommand::Enable { image_type, act }) => {
            schedule::set(&deployment, &image_type, true, act, out).await
        }
        Command::Schedule(ScheduleCommand::Disable { image_type, act }) => {
            schedule::set(&deployment, &image_type, false, act, out).await
        }
        Command::Prune { act } => lifecycle::prune(&deployment, act, out).await,
        Command::Reap { act } => lifecycle::reap(&deployment, act, out).await,
        Command::Enforce { act } => lifecycle::enforce(&deployment, act, out).await,
    }
}
