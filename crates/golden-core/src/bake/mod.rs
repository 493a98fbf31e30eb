//! The bake stages: one handler per Lambda, chained by the `bake` state machine.
//!
//! Payload shapes are the contract in docs/stages.md. Each handler is idempotent: invoked twice with the
//! same input (a Step Functions retry, or an operator re-running a stage), it finds what the first call
//! made instead of making a second one.

pub mod cleanup;
pub mod command;
pub mod copy;
pub mod image;
pub mod launch;
pub mod lock;
pub mod publish;
pub mod ready;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ports::{Ec2, Executions, ObjectStore, Ssm};
use crate::recipe::Recipe;
use crate::tags;
use crate::version::Version;

/// Now, injectable so tests can move time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What the handlers talk to, and the configuration read at cold start.
#[derive(Clone)]
pub struct Services {
    pub config: Arc<Config>,
    pub ec2: Arc<dyn Ec2>,
    pub ssm: Arc<dyn Ssm>,
    pub store: Arc<dyn ObjectStore>,
    pub executions: Arc<dyn Executions>,
    pub clock: Clock,
}

impl Services {
    pub fn new(
        config: Config,
        ec2: Arc<dyn Ec2>,
        ssm: Arc<dyn Ssm>,
        store: Arc<dyn ObjectStore>,
        executions: Arc<dyn Executions>,
    ) -> Self {
        Self {
            config: Arc::new(config),
            ec2,
            ssm,
            store,
            executions,
            clock: Arc::new(Utc::now),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }
}

/// How many checks a resource we just created may stay invisible (EC2 is eventually consistent) before
/// its absence means it is gone.
pub(crate) const UNSEEN_CHECKS: u32 = 3;

/// The bake's state, made by launch-builder and grown by each stage (docs/stages.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BakeState {
    #[serde(rename = "type")]
    pub image_type: String,
    pub execution_id: String,
    pub version: Version,
    pub poll_seconds: u32,
    /// Launch time plus the recipe's `max_build_minutes`: every wait gives up past it.
    pub deadline: DateTime<Utc>,
    pub source_ami: String,
    pub recipe: Recipe,
    pub builder: BuilderRef,
    /// The instance of the new image that runs the recipe's test (LaunchTester), when the recipe has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tester: Option<BuilderRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies: Option<Vec<ImageRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<Published>,
    /// `s3://$GOLDEN_BUCKET/logs/<type>/<version>/`: the whole output of every command of the bake.
    /// Absent from the state of a bake launched before logs were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
}

/// A wait loop's bound: how many checks so far, how many allowed, and the bake's deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Poll {
    pub attempts: u32,
    pub max_attempts: u32,
    pub deadline: DateTime<Utc>,
}

impl Poll {
    /// Room for `minutes` of checks every `poll_seconds`, but never past `deadline`.
    pub fn new(minutes: u32, poll_seconds: u32, deadline: DateTime<Utc>) -> Self {
        let max_attempts = (minutes.saturating_mul(60))
            .div_ceil(poll_seconds.max(1))
            .saturating_add(2);
        Self {
            attempts: 0,
            max_attempts,
            deadline,
        }
    }

    /// Counts one more check of `what`; fails once the loop has used up its checks or the deadline.
    pub fn tick(&mut self, what: &str, now: DateTime<Utc>) -> Result<()> {
        self.attempts = self.attempts.saturating_add(1);
        if now > self.deadline {
            return Err(Error::WaitTimedOut {
                what: what.to_owned(),
                attempts: self.attempts,
                deadline_note: format!(
                    " (the bake's deadline {} has passed)",
                    self.deadline.to_rfc3339()
                ),
            });
        }
        if self.attempts > self.max_attempts {
            return Err(Error::WaitTimedOut {
                what: what.to_owned(),
                attempts: self.attempts,
                deadline_note: String::new(),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuilderRef {
    pub instance_id: String,
    pub region: String,
    pub ready: bool,
    pub state: String,
    #[serde(flatten)]
    pub poll: Poll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandStage {
    Provision,
    Sanitize,
    /// The recipe's test, on the tester.
    Test,
}

impl CommandStage {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStage::Provision => "provision",
            CommandStage::Sanitize => "sanitize",
            CommandStage::Test => "test",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandRef {
    pub command_id: String,
    pub instance_id: String,
    pub region: String,
    pub stage: CommandStage,
    pub status: String,
    pub done: bool,
    /// The command ends by starting sysprep (Windows Sanitize): it is done only once the builder has
    /// stopped, so the image is taken of the generalized disk.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub await_stop: bool,
    /// `s3://.../<stage>/<command id>/<instance id>/`: where SSM writes this command's stdout and stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
    /// The execution that sent it: a passed test's tester is terminated only if it is this execution's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    #[serde(flatten)]
    pub poll: Poll,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRef {
    pub image_id: String,
    pub name: String,
    pub region: String,
    pub state: String,
    pub available: bool,
    pub poll_seconds: u32,
    #[serde(flatten)]
    pub poll: Poll,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    pub version: Version,
    pub generation: u64,
    pub images: BTreeMap<String, String>,
}

/// The golden image's name: unique per type and version, so a retried stage finds its image by name.
pub fn image_name(image_type: &str, version: &Version) -> String {
    format!("golden-{image_type}-{version}")
}

/// The key prefix of a bake's command output, `logs/<type>/<version>`. Under it each command's output is
/// `<stage>/<command id>/<instance id>/<plugin>/0.<plugin>/stdout` (and `stderr`), SSM's own layout.
pub fn logs_prefix(image_type: &str, version: &Version) -> String {
    format!("logs/{image_type}/{version}")
}

/// A client token for an idempotent EC2 call: the same execution and purpose always give the same token.
pub fn client_token(execution_id: &str, purpose: &str) -> String {
    let digest = Sha256::digest(format!("{execution_id}\n{purpose}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("golden-{}", &hex[..48])
}

/// The tags every golden image and its snapshots carry (DESIGN.md "Tags"), over the recipe's own tags:
/// with the source AMI and the recipe hash, what it was built from.
pub fn image_tags(
    recipe: &Recipe,
    version: &Version,
    execution_id: &str,
    source_ami: &str,
) -> BTreeMap<String, String> {
    let mut t = recipe.tags.clone();
    t.insert(tags::ROLE.into(), tags::ROLE_IMAGE.into());
    t.insert(tags::TYPE.into(), recipe.image_type.clone());
    t.insert(tags::VERSION.into(), version.to_string());
    t.insert(tags::EXECUTION.into(), execution_id.into());
    t.insert(tags::SOURCE_AMI.into(), source_ami.into());
    t.insert(tags::RECIPE_HASH.into(), recipe.content_hash());
    t.insert(tags::NAME.into(), image_name(&recipe.image_type, version));
    t
}

impl BuilderRef {
    /// Its identifiers, before any AWS call (InvalidInput naming the field).
    pub(crate) fn check(&self, config: &crate::Config, at: &str) -> Result<()> {
        crate::ids::instance(&format!("{at}instanceId"), &self.instance_id)?;
        crate::ids::region(config, &format!("{at}region"), &self.region)
    }
}

impl CommandRef {
    pub(crate) fn check(&self, config: &crate::Config) -> Result<()> {
        crate::ids::command("commandId", &self.command_id)?;
        crate::ids::instance("instanceId", &self.instance_id)?;
        crate::ids::region(config, "region", &self.region)
    }
}

impl ImageRef {
    pub(crate) fn check(&self, config: &crate::Config, at: &str) -> Result<()> {
        crate::ids::image(&format!("{at}imageId"), &self.image_id)?;
        crate::ids::region(config, &format!("{at}region"), &self.region)
    }
}

/// Every region of a recipe is one AWS knows (a typo would otherwise fail later as Transient, retried).
pub(crate) fn check_recipe_regions(config: &crate::Config, recipe: &Recipe) -> Result<()> {
    crate::ids::region(config, "recipe.build_region", &recipe.build_region)?;
    for (i, region) in recipe.copy_to_regions.iter().enumerate() {
        crate::ids::region(config, &format!("recipe.copy_to_regions[{i}]"), region)?;
    }
    Ok(())
}

impl BakeState {
    /// The identifiers of the bake state a stage receives, before any AWS call.
    pub(crate) fn check(&self, config: &crate::Config) -> Result<()> {
        crate::ids::execution_arn("executionId", &self.execution_id)?;
        crate::ids::image("sourceAmi", &self.source_ami)?;
        check_recipe_regions(config, &self.recipe)?;
        self.builder.check(config, "builder.")?;
        if let Some(tester) = &self.tester {
            tester.check(config, "tester.")?;
        }
        if let Some(image) = &self.image {
            image.check(config, "image.")?;
        }
        for (i, copy) in self.copies.iter().flatten().enumerate() {
            copy.check(config, &format!("copies[{i}]."))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 1, min, 0)
            .single()
            .expect("valid time")
    }

    #[test]
    fn poll_allows_the_budget_then_times_out() {
        let mut poll = Poll::new(1, 30, at(59));
        assert_eq!(poll.max_attempts, 4);
        for _ in 0..4 {
            poll.tick("image ami-1", at(0)).expect("within budget");
        }
        let err = poll.tick("image ami-1", at(0)).unwrap_err();
        assert_eq!(err.error_type(), "WaitTimedOut");
        assert!(
            err.to_string().contains("image ami-1 after 5 checks"),
            "{err}"
        );
    }

    #[test]
    fn poll_times_out_past_the_deadline_whatever_the_count() {
        let mut poll = Poll::new(600, 1, at(10));
        let err = poll.tick("builder i-1", at(11)).unwrap_err();
        assert!(err.to_string().contains("deadline"), "{err}");
    }

    #[test]
    fn client_tokens_are_stable_distinct_and_short_enough() {
        let a = client_token("arn:exec:1", "launch");
        assert_eq!(a, client_token("arn:exec:1", "launch"));
        assert_ne!(a, client_token("arn:exec:1", "copy us-west-2"));
        assert_ne!(a, client_token("arn:exec:2", "launch"));
        assert!(a.len() <= 64);
    }
}
