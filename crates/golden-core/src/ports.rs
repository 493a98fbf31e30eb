//! The AWS operations the product uses, as small traits over plain data.
//!
//! Handlers take these traits, so the decisions around each call are testable without AWS; the adapters in
//! [`crate::aws`] implement them on the SDK clients. Every method takes the region because a bake spans
//! several (build region plus copy regions) and EC2/SSM clients are regional.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::recipe::Share;

/// An EC2 instance, reduced to what the pipeline looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub instance_id: String,
    pub image_id: String,
    /// `pending`, `running`, `stopping`, `stopped`, `shutting-down`, `terminated`.
    pub state: String,
    /// EC2's LaunchTime: the last start, reset by every stop and start.
    pub launch_time: Option<DateTime<Utc>>,
    /// When the instance was first launched: its primary network interface's attach time, which a stop
    /// and start keeps (unlike `launch_time`).
    pub first_launched: Option<DateTime<Utc>>,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// Tags that may be copied onto another resource: AWS reserves the `aws:` prefix.
pub fn copyable_tags(tags: BTreeMap<String, String>) -> BTreeMap<String, String> {
    tags.into_iter()
        .filter(|(k, _)| !k.starts_with("aws:"))
        .collect()
}

/// An AMI, reduced to what the pipeline looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub image_id: String,
    pub name: String,
    /// `pending`, `available`, `failed`, `invalid`, `deregistered`, ...
    pub state: String,
    pub state_reason: Option<String>,
    pub creation_date: Option<String>,
    pub snapshot_ids: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// A block device of the builder, from the recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDeviceSpec {
    pub device_name: String,
    pub volume_size_gb: u32,
    pub volume_type: String,
    pub delete_on_termination: bool,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
}

/// Everything RunInstances needs to start a builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    pub image_id: String,
    pub instance_type: String,
    pub subnet_id: String,
    pub security_group_ids: Vec<String>,
    pub instance_profile: Option<String>,
    pub associate_public_ip: bool,
    pub block_devices: Vec<BlockDeviceSpec>,
    /// Tags for the instance and its volumes.
    pub tags: BTreeMap<String, String>,
    /// Makes a retried launch return the first launch's instance (at most 64 ASCII characters).
    pub client_token: String,
}

/// A request to copy an image into another region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    pub source_region: String,
    pub source_image_id: String,
    pub name: String,
    pub description: String,
    pub client_token: String,
    pub kms_key_id: Option<String>,
    /// Given to the copy and its snapshots as they are created (CopyImage copies no tags).
    pub tags: BTreeMap<String, String>,
}

/// Which instances to list. Empty lists do not filter; `states` empty means every state but `terminated`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceQuery {
    pub instance_ids: Vec<String>,
    pub tags: Vec<(String, String)>,
    pub tag_keys: Vec<String>,
    pub image_ids: Vec<String>,
    pub states: Vec<String>,
}

/// An EBS snapshot, reduced to what prune looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub snapshot_id: String,
    pub start_time: Option<DateTime<Utc>>,
    pub tags: BTreeMap<String, String>,
}

#[async_trait]
pub trait Ec2: Send + Sync {
    async fn query_instances(&self, region: &str, query: &InstanceQuery) -> Result<Vec<Instance>>;
    async fn stop_instances(&self, region: &str, instance_ids: &[String]) -> Result<()>;
    /// The image each launch template's default and latest version launches, as
    /// (image id or `resolve:ssm:` reference, "lt-... vN (default|latest)").
    async fn launch_template_images(&self, region: &str) -> Result<Vec<(String, String)>>;
    /// Our own snapshots carrying every one of `tags`.
    async fn find_snapshots(&self, region: &str, tags: &[(&str, &str)]) -> Result<Vec<Snapshot>>;
    async fn run_instance(&self, region: &str, spec: &LaunchSpec) -> Result<Instance>;
    async fn describe_instance(&self, region: &str, instance_id: &str) -> Result<Option<Instance>>;
    /// Instances (any state but `terminated`) carrying every one of `tags`.
    async fn find_instances(&self, region: &str, tags: &[(&str, &str)]) -> Result<Vec<Instance>>;
    async fn terminate_instances(&self, region: &str, instance_ids: &[String]) -> Result<()>;
    /// Creates an image of a (stopped or running) instance, rebooting it for a consistent file system;
    /// the image and its snapshots carry `tags` from the moment they exist.
    async fn create_image(
        &self,
        region: &str,
        instance_id: &str,
        name: &str,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String>;
    async fn copy_image(&self, region: &str, spec: &CopySpec) -> Result<String>;
    async fn describe_image(&self, region: &str, image_id: &str) -> Result<Option<Image>>;
    /// Our own images (any state) carrying every one of `tags`, and named `name` if given.
    async fn find_images(
        &self,
        region: &str,
        name: Option<&str>,
        tags: &[(&str, &str)],
    ) -> Result<Vec<Image>>;
    async fn deregister_image(&self, region: &str, image_id: &str) -> Result<()>;
    /// Marks an image deprecated from `at` on (EC2 shows it as such; describe calls still list it); an image
    /// that no longer exists is left alone.
    async fn deprecate_image(&self, region: &str, image_id: &str, at: DateTime<Utc>) -> Result<()>;
    async fn delete_snapshot(&self, region: &str, snapshot_id: &str) -> Result<()>;
    /// Adds `share`'s accounts, organizations and OUs to the image's launch permission (adding what is
    /// already there changes nothing).
    async fn share_image(&self, region: &str, image_id: &str, share: &Share) -> Result<()>;
    /// Adds `accounts` to the snapshot's create-volume permission.
    async fn share_snapshot(
        &self,
        region: &str,
        snapshot_id: &str,
        accounts: &[String],
    ) -> Result<()>;
}

/// The result of one SSM command on one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandInvocation {
    /// `Pending`, `InProgress`, `Delayed`, `Success`, `Failed`, `TimedOut`, `Cancelled`, `Cancelling`.
    pub status: String,
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A command to run on an instance through SSM Run Command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub instance_id: String,
    pub document: String,
    pub commands: Vec<String>,
    pub timeout_seconds: u32,
    /// Identifies the command for a retried send (SendCommand has no client token).
    pub comment: String,
    /// Where SSM writes the command's whole stdout and stderr: (bucket, key prefix).
    pub output: Option<(String, String)>,
}

#[async_trait]
pub trait Ssm: Send + Sync {
    async fn get_parameter(&self, region: &str, name: &str) -> Result<Option<String>>;
    /// Every parameter under `path` (recursively), as (name, value).
    async fn parameters_by_path(&self, region: &str, path: &str) -> Result<Vec<(String, String)>>;
    async fn put_image_parameter(&self, region: &str, name: &str, image_id: &str) -> Result<()>;
    /// Deletes a parameter; false if there was none.
    async fn delete_parameter(&self, region: &str, name: &str) -> Result<bool>;
    /// The SSM agent's ping status (`Online`, `ConnectionLost`, `Inactive`), or None if not registered yet.
    async fn agent_status(&self, region: &str, instance_id: &str) -> Result<Option<String>>;
    async fn send_command(&self, region: &str, spec: &CommandSpec) -> Result<String>;
    /// The id of a command already sent to `instance_id` with this `comment`, if any.
    async fn find_command(
        &self,
        region: &str,
        instance_id: &str,
        comment: &str,
    ) -> Result<Option<String>>;
    async fn command_invocation(
        &self,
        region: &str,
        command_id: &str,
        instance_id: &str,
    ) -> Result<Option<CommandInvocation>>;
}

/// An object read with its ETag, for conditional writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub body: Vec<u8>,
    pub etag: String,
    pub last_modified: Option<DateTime<Utc>>,
}

/// When a put may happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCondition {
    Always,
    /// Only if the key does not exist (`If-None-Match: *`).
    IfAbsent,
    /// Only if the object still has this ETag (`If-Match`).
    IfMatch(String),
}

/// What a conditional put did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    Written {
        etag: String,
    },
    /// The condition failed (HTTP 412, or 409 for a concurrent conditional write).
    ConditionFailed,
}

/// The product's bucket (`GOLDEN_BUCKET`).
#[async_trait]
pub trait ObjectStore: Send + Sync {
    fn bucket(&self) -> &str;
    async fn get(&self, key: &str) -> Result<Option<StoredObject>>;
    async fn put(&self, key: &str, body: Vec<u8>, condition: PutCondition) -> Result<PutOutcome>;
    /// Deletes `key`, only if its ETag is still `if_match` when given. False if it was not there or had
    /// changed (someone else's now), true if deleted.
    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<bool>;
    /// Every key under `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
}

/// One execution of the bake state machine, as ListExecutions gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionSummary {
    pub arn: String,
    pub name: String,
    /// `RUNNING`, `SUCCEEDED`, `FAILED`, `TIMED_OUT`, `ABORTED`, `PENDING_REDRIVE`.
    pub status: String,
    pub start: DateTime<Utc>,
}

/// Step Functions: is a bake's execution still running (the reaper); which bakes ran lately and with what
/// input (the schedule guard).
#[async_trait]
pub trait Executions: Send + Sync {
    /// `RUNNING`, `SUCCEEDED`, `FAILED`, `TIMED_OUT`, `ABORTED`, ...; None if there is no such execution.
    async fn status(&self, execution_arn: &str) -> Result<Option<String>>;
    /// The executions of `state_machine_arn` started at or after `since`, newest first, at most `limit`.
    async fn started_since(
        &self,
        state_machine_arn: &str,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ExecutionSummary>>;
    /// An execution's input, start and error; None if there is no such execution.
    async fn details(&self, execution_arn: &str) -> Result<Option<ExecutionDetails>>;
}

/// What DescribeExecution says of an execution, reduced to what the schedule guard looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionDetails {
    /// The execution input (JSON text).
    pub input: String,
    pub start: DateTime<Utc>,
    /// The error name it failed with (the stage's, e.g. `CommandFailed`, `BakeAlreadyRunning`).
    pub error: Option<String>,
}

/// A bake schedule of EventBridge Scheduler, reduced to what the schedule guard and goldenctl look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakeSchedule {
    pub group: String,
    pub name: String,
    /// The type its target input bakes as a scheduled bake (`{"type": ..., "trigger": "schedule"}`); None
    /// for a schedule of something else.
    pub image_type: Option<String>,
    pub enabled: bool,
    /// `cron(...)`, `rate(...)` or `at(...)`.
    pub expression: String,
    /// Changed by every update: a deploy that changes it, a disable, an enable.
    pub last_modified: DateTime<Utc>,
}

/// EventBridge Scheduler, in the stack's region.
#[async_trait]
pub trait Schedules: Send + Sync {
    /// None if the group has no schedule of that name.
    async fn get(&self, group: &str, name: &str) -> Result<Option<BakeSchedule>>;
    /// The names of the group's schedules, sorted.
    async fn names(&self, group: &str) -> Result<Vec<String>>;
    /// Enables or disables a schedule, keeping the rest of its definition (UpdateSchedule replaces the
    /// whole schedule, so everything else is read and given back).
    async fn set_enabled(&self, group: &str, name: &str, enabled: bool) -> Result<()>;
}

/// SNS, in the stack's region: tells people (the notifications topic).
#[async_trait]
pub trait Notifier: Send + Sync {
    async fn notify(&self, topic_arn: &str, subject: &str, message: &str) -> Result<()>;
}
