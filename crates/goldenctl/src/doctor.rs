//! `doctor`: checks a deployment from the outside, the way a first bake would find it broken. Every check
//! runs (one problem does not hide the next), and every problem comes with its fix.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::BucketVersioningStatus;
use golden_core::aws::S3Store;
use golden_core::bake::launch::recipe_key;
use golden_core::ports::ObjectStore;
use golden_core::recipe::Recipe;
use serde::Serialize;

use crate::deploy::Deployment;
use crate::output::{print, table, Format};
use crate::{EXIT_ERROR, EXIT_OK};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Problem,
    Skipped,
}

/// One check's outcome.
#[derive(Debug, Serialize)]
pub struct Check {
    /// What was checked, e.g. `bucket versioning` or `recipe bld-linux64: subnet`.
    pub check: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do, for a problem.
    pub fix: Option<String>,
}

/// The JSON document of `doctor` (README.md "goldenctl").
#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub bucket: Option<String>,
    pub stack: Option<String>,
    pub problems: usize,
    pub checks: Vec<Check>,
}

impl DoctorReport {
    fn ok(&mut self, check: impl Into<String>, detail: impl Into<String>) {
        self.push(check, Status::Ok, detail, None);
    }
    fn problem(
        &mut self,
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.push(check, Status::Problem, detail, Some(fix.into()));
    }
    fn skipped(&mut self, check: impl Into<String>, detail: impl Into<String>) {
        self.push(check, Status::Skipped, detail, None);
    }
    fn push(
        &mut self,
        check: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        fix: Option<String>,
    ) {
        if status == Status::Problem {
            self.problems += 1;
        }
        self.checks.push(Check {
            check: check.into(),
            status,
            detail: detail.into(),
            fix,
        });
    }
}

/// The AWS error's code and message, e.g. `NoSuchEntity: Instance Profile x cannot be found.`; the whole
/// chain of causes for an error without a code (a connection refused, an answer that does not parse).
fn why<E: std::error::Error + ProvideErrorMetadata>(e: &E) -> String {
    match e.code() {
        Some(code) => format!("{code}: {}", e.message().unwrap_or_default()),
        None => crate::errors::chain(e),
    }
}

fn regional(sdk: &aws_config::SdkConfig, region: &str) -> aws_config::SdkConfig {
    sdk.to_builder()
        .region(aws_config::Region::new(region.to_owned()))
        .build()
}

pub async fn doctor(
    deployment: &Deployment,
    stack: Option<&str>,
    format: Format,
) -> anyhow::Result<u8> {
    let mut report = DoctorReport {
        bucket: deployment.bucket.clone(),
        stack: stack.map(str::to_owned),
        problems: 0,
        checks: Vec::new(),
    };
    let bucket_ok = check_bucket(deployment, &mut report).await;
    if bucket_ok {
        check_recipes(deployment, &mut report).await;
    } else {
        report.skipped("recipes", "not checked: the bucket cannot be read");
    }
    check_state_machine(deployment, &mut report).await;
    match stack {
        Some(stack) => check_schedules(deployment, stack, &mut report).await,
        None => report.skipped("schedules", "not checked (pass --stack)"),
    }
    print(format, &report, render);
    Ok(if report.problems == 0 {
        EXIT_OK
    } else {
        EXIT_ERROR
    })
}

/// Reachable and versioned; true when the bucket can be read.
async fn check_bucket(deployment: &Deployment, report: &mut DoctorReport) -> bool {
    let Some(bucket) = deployment.bucket.clone() else {
        report.problem(
            "bucket",
            "no bucket given",
            "pass --bucket or --stack NAME, or set GOLDEN_BUCKET (the stack's output BucketName)",
        );
        return false;
    };
    let s3 = aws_sdk_s3::Client::new(&deployment.sdk);
    match s3.get_bucket_versioning().bucket(&bucket).send().await {
        Ok(out) => {
            report.ok("bucket", format!("s3://{bucket} is reachable"));
            match out.status() {
                Some(BucketVersioningStatus::Enabled) => {
                    report.ok("bucket versioning", "enabled");
                }
                other => report.problem(
                    "bucket versioning",
                    format!(
                        "versioning is {} on s3://{bucket}: a bad manifest.json or recipe write cannot be undone",
                        other.map_or("off (never enabled)".to_owned(), |s| s
                            .as_str()
                            .to_lowercase())
                    ),
                    format!(
                        "aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration \
                         Status=Enabled"
                    ),
                ),
            }
            true
        }
        Err(e) => {
            report.problem(
                "bucket",
                format!("s3://{bucket} cannot be read: {}", why(&e)),
                "check the bucket's name (the stack's output BucketName), the credentials, AWS_REGION and \
                 AWS_ENDPOINT_URL",
            );
            false
        }
    }
}

async fn check_recipes(deployment: &Deployment, report: &mut DoctorReport) {
    let Some(bucket) = deployment.bucket.clone() else {
        return;
    };
    let store = S3Store::new(aws_sdk_s3::Client::new(&deployment.sdk), &bucket);
    let keys = match store.list("recipes/").await {
        Ok(keys) => keys,
        Err(e) => {
            report.problem(
                "recipes",
                format!("cannot list s3://{bucket}/recipes/: {e}"),
                "check the credentials (s3:ListBucket on the bucket)",
            );
            return;
        }
    };
    let keys: Vec<String> = keys.into_iter().filter(|k| k.ends_with(".json")).collect();
    if keys.is_empty() {
        report.problem(
            "recipes",
            format!("no recipes in s3://{bucket}/recipes/: bakes have nothing to read"),
            "goldenctl recipes push infra/recipes/*.toml",
        );
        return;
    }
    report.ok(
        "recipes",
        format!("{} in s3://{bucket}/recipes/", keys.len()),
    );
    for key in keys {
        let name = key
            .trim_start_matches("recipes/")
            .trim_end_matches(".json")
            .to_owned();
        let check = format!("recipe {name}");
        let object = match store.get(&key).await {
            Ok(Some(o)) => o,
            Ok(None) => continue, // deleted while we looked
            Err(e) => {
                report.problem(
                    check,
                    format!("cannot read s3://{bucket}/{key}: {e}"),
                    "check the credentials (s3:GetObject on the bucket)",
                );
                continue;
            }
        };
        let recipe = match Recipe::from_json_slice(&object.body, &key) {
            Ok(r) => r,
            Err(e) => {
                let problems: Vec<String> = e
                    .problems
                    .iter()
                    .map(|p| {
                        if p.path.is_empty() {
                            p.message.clone()
                        } else {
                            format!("{}: {}", p.path, p.message)
                        }
                    })
                    .collect();
                report.problem(
                    check,
                    format!("invalid: {}", problems.join("; ")),
                    format!("fix {name}.toml (goldenctl recipes validate) and push it again"),
                );
                continue;
            }
        };
        if recipe_key(&recipe.image_type) != key {
            report.problem(
                check.clone(),
                format!("{key} holds type {:?}", recipe.image_type),
                format!(
                    "push the recipe with goldenctl recipes push (it writes {}), and delete {key}",
                    recipe_key(&recipe.image_type)
                ),
            );
            continue;
        }
        report.ok(
            check.clone(),
            format!("valid; builds in {}", recipe.build_region),
        );
        check_recipe_resources(deployment, &recipe, report).await;
    }
}

/// What a bake of `recipe` launches with: the subnet, security groups, instance profile and base image.
async fn check_recipe_resources(
    deployment: &Deployment,
    recipe: &Recipe,
    report: &mut DoctorReport,
) {
    let ty = &recipe.image_type;
    let region = &recipe.build_region;
    let sdk = regional(&deployment.sdk, region);
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let push_again = format!("set it in {ty}.toml and run goldenctl recipes push");

    let check = format!("recipe {ty}: subnet");
    match ec2
        .describe_subnets()
        .subnet_ids(&recipe.subnet_id)
        .send()
        .await
    {
        Ok(out) if !out.subnets().is_empty() => {
            report.ok(check, format!("{} in {region}", recipe.subnet_id));
        }
        Ok(_) => report.problem(
            check,
            format!("subnet {} not found in {region}", recipe.subnet_id),
            format!("choose a subnet of {region} (aws ec2 describe-subnets --region {region}); {push_again}"),
        ),
        Err(e) => report.problem(
            check,
            format!("subnet {} in {region}: {}", recipe.subnet_id, why(&e)),
            format!("choose a subnet of {region} (aws ec2 describe-subnets --region {region}); {push_again}"),
        ),
    }

    for group in &recipe.security_group_ids {
        let check = format!("recipe {ty}: security group {group}");
        match ec2.describe_security_groups().group_ids(group).send().await {
            Ok(out) if !out.security_groups().is_empty() => report.ok(check, format!("in {region}")),
            Ok(_) => report.problem(
                check,
                format!("security group {group} not found in {region}"),
                format!(
                    "choose a security group of the subnet's VPC (aws ec2 describe-security-groups --region \
                     {region}); {push_again}"
                ),
            ),
            Err(e) => report.problem(
                check,
                format!("security group {group} in {region}: {}", why(&e)),
                format!(
                    "choose a security group of the subnet's VPC (aws ec2 describe-security-groups --region \
                     {region}); {push_again}"
                ),
            ),
        }
    }

    let check = format!("recipe {ty}: instance profile");
    match &recipe.instance_profile {
        None => report.skipped(check, "none: the builder runs without an instance profile"),
        Some(profile) => {
            let iam = aws_sdk_iam::Client::new(&deployment.sdk);
            match iam
                .get_instance_profile()
                .instance_profile_name(profile)
                .send()
                .await
            {
                Ok(_) => report.ok(check, profile.clone()),
                Err(e) => report.problem(
                    check,
                    format!("instance profile {profile}: {}", why(&e)),
                    format!(
                        "create it (aws iam create-instance-profile --instance-profile-name {profile}, with a \
                         role that has AmazonSSMManagedInstanceCore), or name an existing one; {push_again}"
                    ),
                ),
            }
        }
    }

    let check = format!("recipe {ty}: base AMI");
    match (&recipe.base_ami_parameter, &recipe.base_ami) {
        (Some(parameter), _) => {
            let ssm = aws_sdk_ssm::Client::new(&sdk);
            match ssm.get_parameter().name(parameter).send().await {
                Ok(out) => report.ok(
                    check,
                    format!(
                        "parameter {parameter} in {region} = {}",
                        out.parameter().and_then(|p| p.value()).unwrap_or("?")
                    ),
                ),
                Err(e) => report.problem(
                    check,
                    format!("parameter {parameter} in {region}: {}", why(&e)),
                    format!(
                        "name a parameter that exists in {region} (aws ssm get-parameter --region {region} \
                         --name {parameter}), e.g. /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64; \
                         {push_again}"
                    ),
                ),
            }
        }
        (None, Some(image)) => match ec2.describe_images().image_ids(image).send().await {
            Ok(out) if !out.images().is_empty() => {
                report.ok(check, format!("image {image} in {region}"));
            }
            Ok(_) => report.problem(
                check,
                format!("image {image} not found in {region}"),
                format!("name an image of {region}, or a base_ami_parameter; {push_again}"),
            ),
            Err(e) => report.problem(
                check,
                format!("image {image} in {region}: {}", why(&e)),
                format!("name an image of {region}, or a base_ami_parameter; {push_again}"),
            ),
        },
        (None, None) => report.skipped(check, "the recipe names no base image"),
    }
}

async fn check_state_machine(deployment: &Deployment, report: &mut DoctorReport) {
    let arn = match deployment.state_machine_arn() {
        Ok(arn) => arn.to_owned(),
        Err(e) => {
            report.problem(
                "state machine",
                "no state machine given: bakes cannot be started",
                e.to_string(),
            );
            return;
        }
    };
    // The state machine's own region, from its ARN (arn:aws:states:REGION:ACCOUNT:stateMachine:NAME).
    let sdk = match arn.split(':').nth(3).filter(|r| !r.is_empty()) {
        Some(region) => regional(&deployment.sdk, region),
        None => deployment.sdk.clone(),
    };
    let sfn = aws_sdk_sfn::Client::new(&sdk);
    match sfn.describe_state_machine().state_machine_arn(&arn).send().await {
        Ok(out) => report.ok(
            "state machine",
            format!(
                "{} ({})",
                out.name(),
                out.status().map(|s| s.as_str()).unwrap_or("ACTIVE")
            ),
        ),
        Err(e) => report.problem(
            "state machine",
            format!("{arn}: {}", why(&e)),
            "check the ARN (the stack's output StateMachineArn) and its region; deploy the stack if it is gone",
        ),
    }
}

async fn check_schedules(deployment: &Deployment, stack: &str, report: &mut DoctorReport) {
    let cfn = aws_sdk_cloudformation::Client::new(&deployment.sdk);
    let mut pages = cfn
        .list_stack_resources()
        .stack_name(stack)
        .into_paginator()
        .send();
    let mut resources = Vec::new();
    while let Some(page) = pages.next().await {
        match page {
            Ok(page) => resources.extend(page.stack_resource_summaries().iter().cloned()),
            Err(e) => {
                report.problem(
                    "schedules",
                    format!("cannot list the resources of stack {stack:?}: {}", why(&e)),
                    "check the stack's name (aws cloudformation list-stacks) and AWS_REGION",
                );
                return;
            }
        }
    }
    let events = aws_sdk_eventbridge::Client::new(&deployment.sdk);
    let scheduler = aws_sdk_scheduler::Client::new(&deployment.sdk);
    let enable = format!(
        "deploy the stack with EnableSchedules=true (sam deploy --parameter-overrides EnableSchedules=true), \
         or enable it by hand; a stack named {stack} that should act by itself does nothing while it is off"
    );
    let mut seen = 0;
    for r in &resources {
        let (Some(kind), Some(physical)) = (r.resource_type(), r.physical_resource_id()) else {
            continue;
        };
        let logical = r.logical_resource_id().unwrap_or(physical);
        match kind {
            "AWS::Events::Rule" => {
                seen += 1;
                let check = format!("rule {logical}");
                // A rule on another bus than the default has the physical id "bus|name".
                let (bus, name) = physical.split_once('|').unwrap_or(("default", physical));
                match events
                    .describe_rule()
                    .name(name)
                    .event_bus_name(bus)
                    .send()
                    .await
                {
                    Ok(out) => match out.state().map(|s| s.as_str()) {
                        Some("ENABLED") => report.ok(check, format!("{name}: ENABLED")),
                        other => report.problem(
                            check,
                            format!("{name}: {}", other.unwrap_or("no state")),
                            enable.clone(),
                        ),
                    },
                    Err(e) => report.problem(
                        check,
                        format!("{name}: {}", why(&e)),
                        "the stack lists a rule EventBridge does not have: update or redeploy the stack",
                    ),
                }
            }
            "AWS::Scheduler::Schedule" => {
                seen += 1;
                let check = format!("schedule {logical}");
                // The physical id is group/name or the name; the bake schedules are in the stack's group.
                let stack_group = deployment.schedule_group.as_deref().unwrap_or("default");
                let (group, name) = physical.split_once('/').unwrap_or((stack_group, physical));
                match scheduler
                    .get_schedule()
                    .name(name)
                    .group_name(group)
                    .send()
                    .await
                {
                    Ok(out) => match out.state().map(|s| s.as_str()) {
                        Some("ENABLED") => report.ok(check, format!("{name}: ENABLED")),
                        // A bake schedule the guard turned off after failed bakes, or someone by hand.
                        other if group != "default" => report.problem(
                            check,
                            format!("{name}: {}", other.unwrap_or("no state")),
                            format!(
                                "the schedule guard disables a type's schedule after MaxFailedScheduledBakes \
                                 failed scheduled bakes in a row: fix the cause, then `goldenctl schedule enable \
                                 {name} --stack {stack}`; or {enable}"
                            ),
                        ),
                        other => report.problem(
                            check,
                            format!("{name}: {}", other.unwrap_or("no state")),
                            enable.clone(),
                        ),
                    },
                    Err(e) => report.problem(
                        check,
                        format!("{name}: {}", why(&e)),
                        "the stack lists a schedule EventBridge Scheduler does not have: update or redeploy \
                         the stack",
                    ),
                }
            }
            _ => {}
        }
    }
    if seen == 0 {
        report.problem(
            "schedules",
            format!("stack {stack} has no AWS::Events::Rule or AWS::Scheduler::Schedule resources"),
            "is it the golden-ami stack? check the name (aws cloudformation list-stacks)",
        );
    }
}

fn render(r: &DoctorReport) -> String {
    let rows = r
        .checks
        .iter()
        .map(|c| {
            vec![
                c.check.clone(),
                match c.status {
                    Status::Ok => "ok",
                    Status::Problem => "PROBLEM",
                    Status::Skipped => "skipped",
                }
                .to_owned(),
                match &c.fix {
                    Some(fix) => format!("{}\nfix: {fix}", c.detail),
                    None => c.detail.clone(),
                },
            ]
        })
        .collect();
    let verdict = match r.problems {
        0 => "no problems found".to_owned(),
        1 => "1 problem".to_owned(),
        n => format!("{n} problems"),
    };
    format!(
        "{}\n{verdict}",
        table(&["CHECK", "STATUS", "DETAIL / FIX"], rows)
    )
}
