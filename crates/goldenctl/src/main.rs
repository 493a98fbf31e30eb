//! goldenctl: the golden-ami operator's command line, on the same golden-core code the Lambdas run.
//!
//! AWS comes from the standard configuration (profiles, `AWS_REGION`, `AWS_ENDPOINT_URL`); the deployment
//! from `GOLDEN_BUCKET` (or `--bucket`). Every command prints a table, or with `--output json` a stable JSON
//! document (README.md "goldenctl").

mod deploy;
mod output;
mod recipes;
mod stack;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use output::Format;

/// Exit codes, documented in `--help` and the README.
pub const EXIT_OK: u8 = 0;
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

const EXIT_CODES: &str =
    "Exit codes: 0 ok; 1 error (including an invalid recipe: every problem is listed); \
2 usage (a bad flag or argument).";

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
    if let Command::Recipes(RecipesCommand::Validate { files }) = &cli.command {
        return Ok(recipes::validate(files, out));
    }
    let deployment = deploy::Deployment::resolve(cli.deployment).await?;
    match cli.command {
        Command::Recipes(RecipesCommand::Validate { .. }) => unreachable!("handled above"),
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
