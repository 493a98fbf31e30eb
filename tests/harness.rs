//! The integration tests' view of the local emulator that `scripts/emulator run -- cargo test` starts:
//! moto (EC2, SSM, S3, Step Functions executing the real `bake.asl.json`) and the functions served by
//! `cargo lambda watch` behind the router. Everything is found through the environment the script exports.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use aws_config::{Region, SdkConfig};
use aws_sdk_sfn::types::ExecutionStatus;
use chrono::{Duration as TimeDelta, TimeZone, Utc};
use golden_core::manifest::{Edit, VersionEntry, VersionStatus};
use golden_core::publishing::update_manifest;
use golden_core::version::Version;
use serde_json::{json, Value};

/// Bakes share the manifest, so tests that bake run one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Emulator {
    pub sdk: SdkConfig,
    pub bucket: String,
    pub state_machine_arn: String,
    pub lambda_endpoint: String,
    pub subnet_id: String,
    pub security_group_id: String,
    pub base_ami: String,
    /// The SSM parameter (of our /golden-ami/ namespace) whose value is `base_ami`.
    pub base_ami_parameter: String,
    pub instance_profile: String,
}

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: the integration tests need the local emulator; run them with `make test` \
             or `scripts/emulator run -- cargo test -p golden-it`"
        ),
    }
}

/// The outcome of a finished execution.
#[derive(Debug, Clone)]
pub struct Finished {
    pub status: ExecutionStatus,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub cause: Option<String>,
}

impl Emulator {
    pub async fn from_env() -> Self {
        let sdk = golden_core::aws::load_config().await;
        Self {
            sdk,
            bucket: env("GOLDEN_BUCKET"),
            state_machine_arn: env("GOLDEN_STATE_MACHINE_ARN"),
            lambda_endpoint: env("GOLDEN_LAMBDA_ENDPOINT"),
            subnet_id: env("GOLDEN_SEED_SUBNET_ID"),
            security_group_id: env("GOLDEN_SEED_SECURITY_GROUP_ID"),
            base_ami: env("GOLDEN_SEED_BASE_AMI"),
            base_ami_parameter: env("GOLDEN_SEED_BASE_AMI_PARAMETER"),
            instance_profile: env("GOLDEN_SEED_INSTANCE_PROFILE"),
        }
    }

    fn regional(&self, region: &str) -> SdkConfig {
        self.sdk
            .to_builder()
            .region(Region::new(region.to_owned()))
            .build()
    }

    pub fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.regional(region))
    }

    pub fn ssm(&self, region: &str) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.regional(region))
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::new(&self.sdk)
    }

    pub fn sfn(&self) -> aws_sdk_sfn::Client {
        aws_sdk_sfn::Client::new(&self.sdk)
    }

    /// An inline linux recipe for `image_type` on the emulator's seeded network and base image.
    pub fn recipe(&self, image_type: &str, copy_to_regions: &[&str]) -> Value {
        json!({
            "type": image_type,
            "platform": "linux",
            "base_ami_parameter": self.base_ami_parameter,
            "instance_type": "c5.large",
            "build_region": "us-east-1",
            "subnet_id": self.subnet_id,
            "security_group_ids": [self.security_group_id],
            "instance_profile": self.instance_profile,
            "copy_to_regions": copy_to_regions,
            "keep": 10,
            "max_build_minutes": 30,
            "provision": {
                "commands": ["puppet agent --test --server \"$PUPPET_SERVER\" --detailed-exitcodes || [ $? -eq 2 ]"],
                "env": { "PUPPET_SERVER": "puppet.test.example.com" },
                "timeout_minutes": 20
            },
            "sanitize": { "extra_paths": ["/etc/golden-test-secret"] },
            "tags": { "team": "releng-test" }
        })
    }

    pub async fn start(&self, name: &str, input: &Value) -> String {
        let out = self
            .sfn()
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(name)
            .input(input.to_string())
            .send()
            .await
            .expect("StartExecution");
        out.execution_arn().to_owned()
    }

    /// Waits for an execution to end (moto runs it in a background thread; Wait states really sleep).
    pub async fn finish(&self, execution_arn: &str) -> Finished {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let d = self
                .sfn()
                .describe_execution()
                .execution_arn(execution_arn)
                .send()
                .await
                .expect("DescribeExecution");
            if d.status() != &ExecutionStatus::Running {
                return Finished {
                    status: d.status().clone(),
                    output: d.output().and_then(|o| serde_json::from_str(o).ok()),
                    error: d.error().map(str::to_owned),
                    cause: d.cause().map(str::to_owned),
                };
            }
            assert!(
                Instant::now() < deadline,
                "execution {execution_arn} still running after 240 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn bake(&self, name: &str, input: &Value) -> (String, Finished) {
        let arn = self.start(name, input).await;
        let finished = self.finish(&arn).await;
        (arn, finished)
    }

    pub async fn object(&self, key: &str) -> Option<Vec<u8>> {
        let out = self
            .s3()
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .ok()?;
        Some(
            out.body
                .collect()
                .await
                .expect("read object")
                .into_bytes()
                .to_vec(),
        )
    }

    pub async fn manifest(&self) -> Option<Value> {
        self.object("manifest.json")
            .await
            .map(|b| serde_json::from_slice(&b).expect("manifest is JSON"))
    }

    /// Invokes a function the way Step Functions does: the Lambda Invoke API on the router.
    /// Ok(result) or Err((errorType, errorMessage)).
    pub fn invoke(&self, function: &str, payload: &Value) -> Result<Value, (String, String)> {
        let address = self
            .lambda_endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let body = payload.to_string();
        let mut stream = TcpStream::connect(address).expect("connect to the router");
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        write!(
            stream,
            "POST /2015-03-31/functions/{function}/invocations HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send invoke");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read invoke response");
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        let body = decode_chunked(head, body);
        let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
        if head.to_ascii_lowercase().contains("x-amz-function-error") {
            let t = value["errorType"].as_str().unwrap_or_default().to_owned();
            let m = value["errorMessage"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            return Err((t, m));
        }
        assert!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "invoke {function}: {head}\n{body}"
        );
        Ok(value)
    }

    pub async fn images(
        &self,
        region: &str,
        tags: &[(&str, &str)],
    ) -> Vec<aws_sdk_ec2::types::Image> {
        let filters = tags.iter().map(|(k, v)| {
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{k}"))
                .values(*v)
                .build()
        });
        let out = self
            .ec2(region)
            .describe_images()
            .owners("self")
            .set_filters(Some(filters.collect()))
            .send()
            .await
            .expect("DescribeImages");
        out.images().to_vec()
    }

    pub async fn instances(
        &self,
        region: &str,
        tags: &[(&str, &str)],
    ) -> Vec<aws_sdk_ec2::types::Instance> {
        let filters = tags.iter().map(|(k, v)| {
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{k}"))
                .values(*v)
                .build()
        });
        let out = self
            .ec2(region)
            .describe_instances()
            .set_filters(Some(filters.collect()))
            .send()
            .await
            .expect("DescribeInstances");
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .cloned()
            .collect()
    }

    pub async fn snapshots(
        &self,
        region: &str,
        tags: &[(&str, &str)],
    ) -> Vec<aws_sdk_ec2::types::Snapshot> {
        let filters = tags.iter().map(|(k, v)| {
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{k}"))
                .values(*v)
                .build()
        });
        let out = self
            .ec2(region)
            .describe_snapshots()
            .owner_ids("self")
            .set_filters(Some(filters.collect()))
            .send()
            .await
            .expect("DescribeSnapshots");
        out.snapshots().to_vec()
    }
}

impl Emulator {
    /// The product's services in this process, on the emulator, with some settings overridden
    /// (e.g. `GOLDEN_PRUNE_MIN_AGE_HOURS=0`, since everything on the emulator was made seconds ago).
    pub async fn services(&self, overrides: &[(&str, &str)]) -> golden_core::bake::Services {
        let config = config_with(overrides);
        // Test scaffolding, not a function: its calls go straight to moto, past the IAM check's recorder.
        golden_core::runtime::services("Tests", config).await
    }

    /// The product's services as the function of `stage` (its `runtime::serve` name) has them: their
    /// calls go through the emulator's router, which records them as that function's for `make test`'s
    /// IAM check (scripts/iam_check.py), so a handler run in this process is held to the function's policy.
    pub async fn function_services(
        &self,
        stage: &str,
        overrides: &[(&str, &str)],
    ) -> golden_core::bake::Services {
        let config = config_with(overrides);
        // Without the environment's service config: its AWS_ENDPOINT_URL (moto) would win over this one.
        let sdk = golden_core::aws::load_function_config(stage, Default::default())
            .await
            .into_builder()
            .service_config(NoServiceConfig)
            .endpoint_url(&self.lambda_endpoint)
            .build();
        golden_core::runtime::services_from(sdk, config)
    }

    /// Registers an AMI the way a bake leaves one (tags on the image and its snapshots); returns its id and
    /// its snapshot ids.
    pub async fn register_image(
        &self,
        region: &str,
        name: &str,
        tags: &[(&str, &str)],
    ) -> (String, Vec<String>) {
        let ec2 = self.ec2(region);
        let out = ec2
            .register_image()
            .name(name)
            .root_device_name("/dev/xvda")
            .block_device_mappings(
                aws_sdk_ec2::types::BlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(
                        aws_sdk_ec2::types::EbsBlockDevice::builder()
                            .volume_size(8)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("RegisterImage");
        let image_id = out.image_id().expect("image id").to_owned();
        let described = ec2
            .describe_images()
            .image_ids(&image_id)
            .send()
            .await
            .expect("DescribeImages");
        let snapshots: Vec<String> = described.images()[0]
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_owned))
            .collect();
        let mut resources = vec![image_id.clone()];
        resources.extend(snapshots.iter().cloned());
        let tags = tags
            .iter()
            .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build());
        ec2.create_tags()
            .set_resources(Some(resources))
            .set_tags(Some(tags.collect()))
            .send()
            .await
            .expect("CreateTags");
        (image_id, snapshots)
    }

    /// Starts an instance from `image_id` with `tags`; returns its id.
    pub async fn run_instance(
        &self,
        region: &str,
        image_id: &str,
        tags: &[(&str, &str)],
    ) -> String {
        let tags = tags
            .iter()
            .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build());
        let spec = aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
            .set_tags(Some(tags.collect()))
            .build();
        let out = self
            .ec2(region)
            .run_instances()
            .image_id(image_id)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .tag_specifications(spec)
            .send()
            .await
            .expect("RunInstances");
        out.instances()[0]
            .instance_id()
            .expect("instance id")
            .to_owned()
    }

    /// The value of an SSM parameter in `region`, if it exists.
    pub async fn parameter(&self, region: &str, name: &str) -> Option<String> {
        let out = self
            .ssm(region)
            .get_parameter()
            .name(name)
            .send()
            .await
            .ok()?;
        out.parameter().and_then(|p| p.value()).map(str::to_owned)
    }

    /// Starts `count` instances from `image_id` with `tags`; returns their ids.
    pub async fn run_instances(
        &self,
        region: &str,
        image_id: &str,
        tags: &[(&str, &str)],
        count: usize,
    ) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            ids.push(self.run_instance(region, image_id, tags).await);
        }
        ids
    }

    pub async fn instance_state(&self, region: &str, instance_id: &str) -> String {
        let out = self
            .ec2(region)
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .expect("DescribeInstances");
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(|i| {
                i.state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_owned())
            })
            .unwrap_or_default()
    }

    /// Whether the image exists (and is not deregistered); panics on any error but "not found".
    pub async fn image_exists(&self, region: &str, image_id: &str) -> bool {
        match self
            .ec2(region)
            .describe_images()
            .image_ids(image_id)
            .send()
            .await
        {
            Ok(out) => out
                .images()
                .iter()
                .any(|i| i.state().map(|s| s.as_str()) != Some("deregistered")),
            // Only "not found" means gone; any other error is the test's to see, not a pass.
            Err(e) => match aws_sdk_ec2::error::ProvideErrorMetadata::code(&e) {
                Some("InvalidAMIID.NotFound" | "InvalidAMIID.Unavailable") => false,
                _ => panic!("DescribeImages {image_id} in {region}: {e:?}"),
            },
        }
    }

    /// Whether the snapshot exists; panics on any error but "not found".
    pub async fn snapshot_exists(&self, region: &str, snapshot_id: &str) -> bool {
        match self
            .ec2(region)
            .describe_snapshots()
            .snapshot_ids(snapshot_id)
            .send()
            .await
        {
            Ok(out) => !out.snapshots().is_empty(),
            Err(e) => match aws_sdk_ec2::error::ProvideErrorMetadata::code(&e) {
                Some("InvalidSnapshot.NotFound") => false,
                _ => panic!("DescribeSnapshots {snapshot_id} in {region}: {e:?}"),
            },
        }
    }
}

fn decode_chunked(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n.min(after.len())]);
        rest = after.get(n + 2..).unwrap_or("");
    }
    out
}

/// The result of [`Emulator::invoke`], or a panic naming what failed and its error.
pub fn ok(result: Result<Value, (String, String)>, what: &str) -> Value {
    result.unwrap_or_else(|(t, m)| panic!("{what} failed: {t}: {m}"))
}

/// A type name no other test (or earlier run) uses, so each test has its own lock and history.
pub fn unique_type(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

pub fn tag<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// A service config that has nothing: clients then take the SdkConfig's own endpoint URL.
#[derive(Debug)]
struct NoServiceConfig;

impl aws_types::service_config::LoadServiceConfig for NoServiceConfig {
    fn load_config(&self, _key: aws_types::service_config::ServiceConfigKey<'_>) -> Option<String> {
        None
    }
}

/// The product's config from this process's environment, with `overrides` on top.
fn config_with(overrides: &[(&str, &str)]) -> golden_core::Config {
    let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    golden_core::Config::from_lookup(|k| vars.get(k).cloned()).expect("config")
}

/// Version `n` of a synthetic history: day n of October 2026 (tests that publish by hand).
pub fn version(n: u32) -> Version {
    let at = Utc
        .with_ymd_and_hms(2026, 10, n, 1, 15, 0)
        .single()
        .expect("valid date");
    Version::from_datetime(at)
}

pub fn entry(
    v: &Version,
    images: &BTreeMap<String, String>,
    status: VersionStatus,
) -> VersionEntry {
    VersionEntry {
        recipe_hash: None,
        shared_with: None,
        extra: Default::default(),
        version: v.clone(),
        created_at: v.created_at(),
        source_ami: "ami-0123456789abcdef0".into(),
        execution: "arn:aws:states:us-east-1:123456789012:execution:bake:estate".into(),
        images: images.clone(),
        revoked_reason: (status == VersionStatus::Revoked).then(|| "bad kernel".to_owned()),
        revoked_at: (status == VersionStatus::Revoked)
            .then(|| v.created_at() + TimeDelta::hours(1)),
        status,
    }
}

/// Publishes versions of a type in the shared manifest: (version, images, status), the first is current.
pub async fn publish(
    services: &golden_core::bake::Services,
    ty: &str,
    versions: &[(Version, BTreeMap<String, String>, VersionStatus)],
) {
    update_manifest(services.store.as_ref(), services.now(), |m| {
        let mut edit = Edit::Unchanged;
        for (v, images, status) in versions.iter().rev() {
            if m.add_version(
                ty,
                entry(v, images, *status),
                *status == VersionStatus::Published,
            )? == Edit::Changed
            {
                edit = Edit::Changed;
            }
        }
        Ok(edit)
    })
    .await
    .expect("publish to the manifest");
}
