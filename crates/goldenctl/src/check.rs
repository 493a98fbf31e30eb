//! `check`: is this instance (or the one named by `--instance-id`) on its type's current golden AMI?
//!
//! Made for an instance's boot (user data, a systemd unit, a health check): it learns its AMI, region and id
//! from the instance metadata service (IMDSv2: a session token first, then every read with it), its type
//! from its type tag (through the metadata service when instance metadata tags are on, else EC2
//! DescribeTags), and answers with the manifest's verdict and an exit code a script can branch on. The
//! whole command is bounded by `--timeout`: a boot script must never hang on it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use aws_config::imds;
use aws_config::provider_config::ProviderConfig;
use aws_config::BehaviorVersion;
use aws_sdk_ec2::types::Filter;
use golden_core::aws::S3Store;
use golden_core::freshness::{self, FleetInstance, Verdict};
use golden_core::manifest::{Manifest, VersionStatus};
use golden_core::publishing::{read_manifest, MANIFEST_KEY};
use serde::Serialize;

use crate::deploy::{Deployment, DeploymentArgs};
use crate::output::{print, table, Format};
use crate::{EXIT_ERROR, EXIT_OK, EXIT_REVOKED, EXIT_STALE};

/// The metadata service's address on every EC2 instance.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";

#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Check this instance from outside (needs --region): its AMI and type tag come from EC2
    /// DescribeInstances instead of the instance metadata service.
    #[arg(long, value_name = "ID", requires = "region")]
    pub instance_id: Option<String>,
    /// The region of --instance-id.
    #[arg(long, value_name = "REGION", requires = "instance_id")]
    pub region: Option<String>,
    /// Judge the image as this type instead of the instance's type tag.
    #[arg(long = "type", value_name = "TYPE")]
    pub image_type: Option<String>,
    /// The instance metadata service (IMDSv2).
    #[arg(
        long,
        env = "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        default_value = DEFAULT_IMDS_ENDPOINT,
        value_name = "URL"
    )]
    pub imds_endpoint: String,
    /// Give up (exit 1) after this long, whatever is pending: metadata, EC2 or S3.
    #[arg(
        long,
        default_value_t = 10,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub timeout: u64,
}

/// The JSON document of `check` (README.md "goldenctl").
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub instance_id: String,
    pub region: String,
    pub image_id: String,
    #[serde(rename = "type")]
    pub image_type: String,
    /// Where the type came from: `flag` (--type), `imds` (instance metadata tags) or `ec2` (the instance's
    /// tags through EC2).
    pub type_source: &'static str,
    /// `current`, `stale`, `revoked`, `not golden` or `no current image in this region`.
    pub verdict: &'static str,
    /// The manifest's current version of the type and its image in the instance's region.
    pub current_version: Option<String>,
    pub current_image: Option<String>,
    /// The version the instance's image belongs to, when the manifest lists it.
    pub image_version: Option<String>,
    pub revoked_reason: Option<String>,
    pub manifest: String,
    pub exit_code: u8,
}

/// What the command is waiting on, for the timeout's message.
#[derive(Clone, Default)]
struct Stage(Arc<Mutex<String>>);

impl Stage {
    fn set(&self, what: impl Into<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = what.into();
    }
    fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs the check within `--timeout`; returns the exit code.
pub async fn check(
    deployment: DeploymentArgs,
    args: CheckArgs,
    format: Format,
) -> anyhow::Result<u8> {
    let stage = Stage::default();
    let limit = Duration::from_secs(args.timeout);
    match tokio::time::timeout(limit, run(deployment, args, format, stage.clone())).await {
        Ok(result) => result,
        Err(_) => bail!(
            "check timed out after {} s while {}; check the network path to it (AWS_ENDPOINT_URL, proxies, \
             security groups), or pass a longer --timeout",
            limit.as_secs(),
            stage.get()
        ),
    }
}

/// The instance as check sees it.
struct Identity {
    instance_id: String,
    region: String,
    image_id: String,
    image_type: Option<(String, &'static str)>,
}

async fn run(
    deployment: DeploymentArgs,
    args: CheckArgs,
    format: Format,
    stage: Stage,
) -> anyhow::Result<u8> {
    stage.set("resolving the deployment (--stack, --bucket, GOLDEN_BUCKET)");
    let deployment = Deployment::resolve(deployment).await?;
    let mut identity = match (&args.instance_id, &args.region) {
        (Some(id), Some(region)) => from_ec2(&deployment, id, region, &stage).await?,
        _ => from_imds(&deployment, &args.imds_endpoint, &stage).await?,
    };
    if let Some(ty) = &args.image_type {
        identity.image_type = Some((ty.clone(), "flag"));
    }
    let Some((image_type, type_source)) = identity.image_type.clone() else {
        bail!(
            "instance {} in {} has no tag {:?}, so it is not a golden instance (GOLDEN_TYPE_TAG names the \
             tag); tag it with its image type, or pass --type TYPE",
            identity.instance_id,
            identity.region,
            deployment.type_tag
        );
    };

    let bucket = deployment.bucket()?.to_owned();
    let location = format!("s3://{bucket}/{MANIFEST_KEY}");
    stage.set(format!("reading {location}"));
    // At boot AWS_REGION is often unset: then the bucket is asked for in the instance's region.
    let s3_region = deployment
        .sdk
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| identity.region.clone());
    let s3 = aws_sdk_s3::config::Builder::from(&deployment.sdk)
        .region(aws_sdk_s3::config::Region::new(s3_region))
        .build();
    let store = S3Store::new(aws_sdk_s3::Client::from_conf(s3), &bucket);
    let (manifest, etag) = read_manifest(&store, chrono::Utc::now())
        .await
        .map_err(|e| {
            anyhow!(
                "cannot read the manifest {location}: {e}; check the bucket (--bucket, GOLDEN_BUCKET or --stack), \
                 the credentials and AWS_ENDPOINT_URL"
            )
        })?;

    let fleet = FleetInstance {
        region: identity.region.clone(),
        instance_id: identity.instance_id.clone(),
        image_id: identity.image_id.clone(),
        // check judges the image only: state, builder, exempt and launch time are enforcement's business.
        state: "running".into(),
        image_type: Some(image_type.clone()),
        builder: false,
        exempt: false,
        launched_at: None,
    };
    let verdict = freshness::verdict(&fleet, &manifest, chrono::Utc::now());
    let (word, code) = match &verdict {
        Verdict::Fresh => ("current", EXIT_OK),
        Verdict::Stale { .. } | Verdict::PinnedLauncher { revoked: false, .. } => {
            ("stale", EXIT_STALE)
        }
        Verdict::Revoked { .. } | Verdict::PinnedLauncher { revoked: true, .. } => {
            ("revoked", EXIT_REVOKED)
        }
        Verdict::NoImageForRegion { .. } => ("no current image in this region", EXIT_ERROR),
        Verdict::UnknownType | Verdict::Builder | Verdict::Exempt | Verdict::NotRunning => {
            ("not golden", EXIT_ERROR)
        }
    };
    let current = manifest.current(&image_type);
    let report = CheckReport {
        instance_id: identity.instance_id,
        region: identity.region.clone(),
        image_id: identity.image_id.clone(),
        image_type: image_type.clone(),
        type_source,
        verdict: word,
        current_version: current.map(|v| v.version.to_string()),
        current_image: current.and_then(|v| v.images.get(&identity.region).cloned()),
        image_version: version_of(&manifest, &image_type, &identity.image_id),
        revoked_reason: match &verdict {
            Verdict::Revoked { reason, .. } => reason.clone(),
            _ => None,
        },
        manifest: location.clone(),
        exit_code: code,
    };
    print(format, &report, render);
    match verdict {
        Verdict::UnknownType if etag.is_none() => eprintln!(
            "goldenctl: {location} does not exist yet: nothing has been published; bake {image_type} first \
             (or check --bucket)"
        ),
        Verdict::UnknownType => eprintln!(
            "goldenctl: {location} has no current version of type {image_type:?}; check the type tag (or \
             --type) against `goldenctl manifest`"
        ),
        Verdict::NoImageForRegion { version } => eprintln!(
            "goldenctl: {image_type} {version} has no image in {}; add the region to the recipe's \
             copy_to_regions and bake again",
            identity.region
        ),
        _ => {}
    }
    Ok(code)
}

/// The version of `ty` whose images include `image_id`.
fn version_of(manifest: &Manifest, ty: &str, image_id: &str) -> Option<String> {
    let entry = manifest.types.get(ty)?;
    entry
        .versions
        .iter()
        .find(|v| v.images.values().any(|i| i == image_id))
        .map(|v| match v.status {
            VersionStatus::Published => v.version.to_string(),
            VersionStatus::Revoked => format!("{} (revoked)", v.version),
        })
}

fn ec2_in(deployment: &Deployment, region: &str) -> aws_sdk_ec2::Client {
    let conf = aws_sdk_ec2::config::Builder::from(&deployment.sdk)
        .region(aws_sdk_ec2::config::Region::new(region.to_owned()))
        .build();
    aws_sdk_ec2::Client::from_conf(conf)
}

/// From outside: DescribeInstances.
async fn from_ec2(
    deployment: &Deployment,
    instance_id: &str,
    region: &str,
    stage: &Stage,
) -> anyhow::Result<Identity> {
    stage.set(format!(
        "describing instance {instance_id} in {region} (EC2)"
    ));
    let out = ec2_in(deployment, region)
        .describe_instances()
        .instance_ids(instance_id)
        .send()
        .await
        .map_err(|e| {
            anyhow!(
                "cannot describe instance {instance_id} in {region}: {}; check the id and --region",
                crate::errors::chain(&e)
            )
        })?;
    let instance = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .next()
        .with_context(|| {
            format!("no instance {instance_id} in {region}; check the id and --region")
        })?;
    let image_type = instance
        .tags()
        .iter()
        .find(|t| t.key() == Some(deployment.type_tag.as_str()))
        .and_then(|t| t.value())
        .map(|v| (v.to_owned(), "ec2"));
    Ok(Identity {
        instance_id: instance_id.to_owned(),
        region: region.to_owned(),
        image_id: instance.image_id().unwrap_or_default().to_owned(),
        image_type,
    })
}

/// At boot: the metadata service, then the type tag through it or through EC2.
async fn from_imds(
    deployment: &Deployment,
    endpoint: &str,
    stage: &Stage,
) -> anyhow::Result<Identity> {
    let http = deployment
        .sdk
        .http_client()
        .context("the AWS configuration has no HTTP client")?;
    let provider = ProviderConfig::without_region()
        .with_http_client(http)
        .with_behavior_version(Some(BehaviorVersion::latest()));
    let client = imds::Client::builder()
        .configure(&provider)
        .endpoint(endpoint)
        .map_err(|e| anyhow!("--imds-endpoint {endpoint:?} is not a URL: {e}"))?
        // Few, short attempts: at boot the service answers at once or not at all, and --timeout bounds it.
        .max_attempts(2)
        .connect_timeout(Duration::from_secs(1))
        .build();
    let get = |path: &'static str| {
        let client = client.clone();
        let stage = stage.clone();
        async move {
            stage.set(format!(
                "reading {path} from the instance metadata service at {endpoint}"
            ));
            client.get(path).await.map(String::from).map_err(|e| {
                anyhow!(
                    "cannot read {path} from the instance metadata service at {endpoint}: {}; run check on an EC2 \
                     instance with IMDS enabled (or pass --imds-endpoint), or check it from outside with \
                     --instance-id ID --region REGION",
                    crate::errors::chain(&e)
                )
            })
        }
    };
    let image_id = get("/latest/meta-data/ami-id").await?;
    let region = get("/latest/meta-data/placement/region").await?;
    let instance_id = get("/latest/meta-data/instance-id").await?;

    let tag_path = format!("/latest/meta-data/tags/instance/{}", deployment.type_tag);
    stage.set(format!(
        "reading {tag_path} from the instance metadata service at {endpoint}"
    ));
    let image_type = match client.get(tag_path.clone()).await {
        Ok(value) => Some((String::from(value).trim().to_owned(), "imds")),
        // 404: metadata tags are off, or the tag is absent. EC2 tells which.
        Err(imds::client::error::ImdsError::ErrorResponse(r))
            if r.response().status().as_u16() == 404 =>
        {
            stage.set(format!(
                "reading the tags of {instance_id} in {region} (EC2 DescribeTags)"
            ));
            let out = ec2_in(deployment, &region)
                .describe_tags()
                .filters(Filter::builder().name("resource-id").values(&instance_id).build())
                .filters(Filter::builder().name("key").values(&deployment.type_tag).build())
                .send()
                .await
                .map_err(|e| {
                    anyhow!(
                        "cannot read the tag {:?} of {instance_id}: the metadata service does not show it \
                         (instance metadata tags off?) and EC2 DescribeTags in {region} failed: {}; turn \
                         metadata tags on (aws ec2 modify-instance-metadata-options --instance-metadata-tags \
                         enabled), allow ec2:DescribeTags to the instance's role, or pass --type TYPE",
                        deployment.type_tag,
                        crate::errors::chain(&e)
                    )
                })?;
            out.tags()
                .first()
                .and_then(|t| t.value())
                .map(|v| (v.to_owned(), "ec2"))
        }
        Err(e) => bail!(
            "cannot read {tag_path} from the instance metadata service at {endpoint}: {}; pass --type TYPE",
            crate::errors::chain(&e)
        ),
    };
    Ok(Identity {
        instance_id,
        region,
        image_id,
        image_type,
    })
}

fn render(r: &CheckReport) -> String {
    let dash = || "-".to_owned();
    let mut rows = vec![
        vec!["Verdict".to_owned(), r.verdict.to_owned()],
        vec!["Instance".into(), r.instance_id.clone()],
        vec!["Region".into(), r.region.clone()],
        vec![
            "Type".into(),
            format!("{} (from {})", r.image_type, r.type_source),
        ],
        vec![
            "AMI".into(),
            match &r.image_version {
                Some(v) => format!("{} ({v})", r.image_id),
                None => r.image_id.clone(),
            },
        ],
        vec![
            "Current".into(),
            match (&r.current_version, &r.current_image) {
                (Some(v), Some(i)) => format!("{i} ({v})"),
                (Some(v), None) => format!("{v} (no image in {})", r.region),
                _ => dash(),
            },
        ],
    ];
    if let Some(reason) = &r.revoked_reason {
        rows.push(vec!["Revoked".into(), reason.clone()]);
    }
    rows.push(vec!["Manifest".into(), r.manifest.clone()]);
    table(&["", ""], rows)
}
