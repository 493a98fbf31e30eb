//! The deployment a command works on: its bucket, state machine and regions, from the flags, else the
//! environment (`GOLDEN_BUCKET`, `GOLDEN_STATE_MACHINE_ARN`, `GOLDEN_REGIONS`), else the outputs of the
//! stack named by `--stack`; and the AWS clients, from the standard AWS configuration.

use anyhow::{anyhow, Context};
use golden_core::aws::S3Store;
use golden_core::bake::Services;
use golden_core::config::Config;

/// The global flags that name the deployment (clap reads the environment variables for them).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeploymentArgs {
    /// The deployed stack whose outputs (BucketName, StateMachineArn, Regions) and parameters (TypeTag and
    /// the lifecycle settings: PruneDryRun, EnforceAction, ...) fill in what the other flags and variables
    /// leave unset.
    #[arg(long, env = "GOLDEN_STACK", global = true, value_name = "NAME")]
    pub stack: Option<String>,
    /// The deployment's bucket (recipes, locks, manifest.json): the stack's output BucketName.
    #[arg(long, env = "GOLDEN_BUCKET", global = true)]
    pub bucket: Option<String>,
    /// The bake state machine: the stack's output StateMachineArn.
    #[arg(
        long,
        env = "GOLDEN_STATE_MACHINE_ARN",
        global = true,
        value_name = "ARN"
    )]
    pub state_machine_arn: Option<String>,
    /// Comma-separated regions the golden AMIs live in (searched by status, swept by prune, reap, enforce
    /// besides every pushed recipe's regions): the stack's output Regions.
    #[arg(long, env = "GOLDEN_REGIONS", global = true, value_name = "REGION,...")]
    pub regions: Option<String>,
}

/// A resolved deployment.
pub struct Deployment {
    pub sdk: aws_config::SdkConfig,
    pub bucket: Option<String>,
    pub state_machine_arn: Option<String>,
    pub regions: Vec<String>,
    /// `GOLDEN_TYPE_TAG` (default `golden-ami:type`): the tag whose value is a fleet instance's image type.
    pub type_tag: String,
    /// `GOLDEN_SCHEDULE_GROUP`, else the stack's output BakeScheduleGroup: the bake schedules' group.
    pub schedule_group: Option<String>,
    /// The stack's `EnableSchedules` (with `--stack`): `schedule enable` refuses on a stack meant to stay off.
    pub schedules_enabled: Option<bool>,
    /// The functions' settings from the stack's parameters (`GOLDEN_PRUNE_DRY_RUN`, ...): used where the
    /// environment does not set them, so goldenctl acting for a function acts as the deployed one would.
    stack_settings: std::collections::BTreeMap<String, String>,
    /// Where the values came from, for errors: "--stack NAME" or "flags and environment".
    source: String,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn split_regions(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Deployment {
    pub async fn resolve(args: DeploymentArgs) -> anyhow::Result<Self> {
        let sdk = golden_core::aws::load_config().await;
        let mut bucket = non_empty(args.bucket);
        let mut state_machine_arn = non_empty(args.state_machine_arn);
        let mut regions = args
            .regions
            .as_deref()
            .map(split_regions)
            .unwrap_or_default();
        let mut schedule_group = non_empty(std::env::var("GOLDEN_SCHEDULE_GROUP").ok());
        let mut schedules_enabled = None;
        let mut source = "flags and environment".to_owned();
        let mut stack_settings = std::collections::BTreeMap::new();
        if let Some(name) = non_empty(args.stack) {
            let stack = crate::stack::read(&sdk, &name).await?;
            let output = |key: &str| non_empty(stack.outputs.get(key).cloned());
            bucket = bucket.or_else(|| output("BucketName"));
            state_machine_arn = state_machine_arn.or_else(|| output("StateMachineArn"));
            schedule_group = schedule_group.or_else(|| output("BakeScheduleGroup"));
            if regions.is_empty() {
                // The output, else the parameter (a stack deployed before the output existed).
                let list =
                    output("Regions").or_else(|| stack.settings.get("GOLDEN_REGIONS").cloned());
                regions = list.as_deref().map(split_regions).unwrap_or_default();
            }
            schedules_enabled = stack.schedules_enabled;
            stack_settings = stack.settings;
            source = format!("--stack {name}");
        }
        let type_tag = non_empty(std::env::var("GOLDEN_TYPE_TAG").ok())
            .or_else(|| non_empty(stack_settings.get("GOLDEN_TYPE_TAG").cloned()))
            .unwrap_or_else(|| golden_core::tags::DEFAULT_TYPE_TAG.to_owned());
        Ok(Self {
            sdk,
            bucket,
            state_machine_arn,
            regions,
            type_tag,
            schedule_group,
            schedules_enabled,
            stack_settings,
            source,
        })
    }

    pub fn bucket(&self) -> anyhow::Result<&str> {
        self.bucket.as_deref().ok_or_else(|| {
            anyhow!(
                "no bucket (from {}): pass --bucket or --stack NAME, or set GOLDEN_BUCKET (the stack's output \
                 BucketName)",
                self.source
            )
        })
    }

    pub fn store(&self) -> anyhow::Result<S3Store> {
        Ok(S3Store::new(
            aws_sdk_s3::Client::new(&self.sdk),
            self.bucket()?,
        ))
    }

    pub fn schedule_group(&self) -> anyhow::Result<&str> {
        self.schedule_group.as_deref().ok_or_else(|| {
            anyhow!(
                "no schedule group (from {}): pass --stack NAME, or set GOLDEN_SCHEDULE_GROUP (the stack's \
                 output BakeScheduleGroup)",
                self.source
            )
        })
    }

    pub fn state_machine_arn(&self) -> anyhow::Result<&str> {
        self.state_machine_arn.as_deref().ok_or_else(|| {
            anyhow!(
                "no state machine (from {}): pass --state-machine-arn or --stack NAME, or set \
                 GOLDEN_STATE_MACHINE_ARN (the stack's output StateMachineArn)",
                self.source
            )
        })
    }

    /// The regions to search: `flags` if any, else the deployment's, else the AWS default region.
    pub fn search_regions(&self, flags: Vec<String>) -> anyhow::Result<Vec<String>> {
        if !flags.is_empty() {
            return Ok(flags);
        }
        if !self.regions.is_empty() {
            return Ok(self.regions.clone());
        }
        self.sdk
            .region()
            .map(|r| vec![r.to_string()])
            .ok_or_else(|| {
                anyhow!("no region to search: pass --region or --regions, or set GOLDEN_REGIONS or AWS_REGION")
            })
    }

    /// Every region to search for an instance: `flags` if any, else every region enabled in the account
    /// (EC2 DescribeRegions), else (that failing) [`Self::search_regions`].
    pub async fn every_region(&self, flags: Vec<String>) -> anyhow::Result<Vec<String>> {
        if !flags.is_empty() {
            return Ok(flags);
        }
        match aws_sdk_ec2::Client::new(&self.sdk)
            .describe_regions()
            .send()
            .await
        {
            Ok(out) => {
                let mut regions: Vec<String> = out
                    .regions()
                    .iter()
                    .filter_map(|r| r.region_name().map(str::to_owned))
                    .collect();
                regions.sort();
                if !regions.is_empty() {
                    return Ok(regions);
                }
            }
            Err(e) => eprintln!(
                "goldenctl: cannot list the account's regions ({}); searching the deployment's",
                crate::errors::chain(&e)
            ),
        }
        self.search_regions(Vec::new())
    }

    /// The lifecycle code's services, configured as the functions are: the deployment's values, and the
    /// lifecycle knobs (`GOLDEN_PRUNE_*`, `GOLDEN_ROLLOUT_*`, ...) from the environment, else the stack's
    /// parameters. No metrics are written: those are the functions'.
    pub fn services(&self) -> anyhow::Result<Services> {
        let bucket = self.bucket()?.to_owned();
        let regions = self.regions.join(",");
        let state_machine_arn = self.state_machine_arn.clone();
        let type_tag = self.type_tag.clone();
        let schedule_group = self.schedule_group.clone();
        let config = Config::from_lookup(|key| match key {
            "GOLDEN_SCHEDULE_GROUP" => schedule_group.clone(),
            "GOLDEN_BUCKET" => Some(bucket.clone()),
            "GOLDEN_REGIONS" => Some(regions.clone()),
            "GOLDEN_STATE_MACHINE_ARN" => state_machine_arn.clone(),
            "GOLDEN_TYPE_TAG" => Some(type_tag.clone()),
            "GOLDEN_STACK_NAME" => None,
            other => non_empty(std::env::var(other).ok())
                .or_else(|| self.stack_settings.get(other).cloned()),
        })
        .context("the deployment's settings")?;
        Ok(golden_core::runtime::services_from(
            self.sdk.clone(),
            config,
        ))
    }
}
