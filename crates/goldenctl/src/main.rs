//! goldenctl: the golden-ami operator's command line, on the same golden-core code the Lambdas run.
//!
//! AWS comes from the standard configuration (profiles, `AWS_REGION`, `AWS_ENDPOINT_URL`); the deployment
//! from `GOLDEN_BUCKET` (or `--bucket`). Every command prints a table, or with `--output json` a stable JSON
//! document (README.md "goldenctl").

mod check;
mod completions;
mod deploy;
mod doctor;
mod errors;
mod output;
mod recipes;
mod stack;
mod status;

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
found; for `check`, a manifest or metadata service it cannot reach, a timeout, or an instance that is not \
golden); 2 usage (a bad flag or argument); 3 `check`: the AMI is stale; 4 `check`: the AMI is revoked.";

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
    /// An instance by its Name tag (exact) or id, searched in every region: IPs, state and why, the spot
    /// request's status, its image type, AMI and the AMI's verdict (current, stale, revoked, not golden),
    /// launch time and tags. Several matches are all shown; none exits 1.
    Status {
        #[arg(value_name = "NAME|INSTANCE_ID")]
        target: String,
        /// Search these regions (repeat the flag); default GOLDEN_REGIONS, else the AWS default region.
        #[arg(long = "region", value_name = "REGION")]
        regions: Vec<String>,
    },
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
        Command::Status { target, regions } => {
            let regions = deployment.search_regions(regions)?;
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
    }
}
