//! `status NAME|INSTANCE_ID`: an instance by its Name tag or id, in every region, with what people look at
//! when one vanished (state reason, the spot request's status) and its image's verdict.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;
use golden_core::freshness::{self, FleetInstance, Verdict};
use golden_core::ports::ObjectStore;
use golden_core::publishing::read_manifest;
use golden_core::tags;
use serde::Serialize;

use crate::output::{print, table, Format};
use crate::{EXIT_ERROR, EXIT_OK};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Spot {
    pub request_id: String,
    pub code: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    pub region: String,
    pub name: Option<String>,
    pub instance_id: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub state: String,
    /// EC2's state transition reason and state reason message, where it gives them.
    pub state_reason: Option<String>,
    pub spot: Option<Spot>,
    pub image_type: Option<String>,
    pub image_id: String,
    /// `current`, `stale`, `revoked`, `not golden`, or `unknown (...)` when the manifest cannot say.
    pub verdict: String,
    pub launch_time: Option<String>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub target: String,
    pub regions: Vec<String>,
    pub instances: Vec<Found>,
    /// Regions that could not be searched, with why; the others were.
    pub errors: Vec<String>,
}

fn is_instance_id(s: &str) -> bool {
    golden_core::ids::instance("target", s).is_ok()
}

fn verdict_word(v: &Verdict) -> String {
    match v {
        Verdict::Fresh => "current".into(),
        Verdict::Stale { .. } => "stale".into(),
        Verdict::Revoked { .. } => "revoked".into(),
        Verdict::PinnedLauncher { revoked: true, .. } => {
            "revoked (launched after the switch)".into()
        }
        Verdict::PinnedLauncher { .. } => "stale (launched after the switch)".into(),
        Verdict::Builder => "builder".into(),
        Verdict::NoImageForRegion { .. } => "no current image in this region".into(),
        Verdict::Exempt | Verdict::UnknownType | Verdict::NotRunning => "not golden".into(),
    }
}

pub async fn status(
    sdk: &aws_config::SdkConfig,
    store: Option<&dyn ObjectStore>,
    type_tag: &str,
    target: &str,
    regions: Vec<String>,
    format: Format,
) -> anyhow::Result<u8> {
    let manifest = match store {
        Some(store) => read_manifest(store, chrono::Utc::now())
            .await
            .map(|(m, _)| m)
            .map_err(|e| e.to_string()),
        None => Err("no bucket (GOLDEN_BUCKET or --bucket)".to_owned()),
    };
    let mut report = StatusReport {
        target: target.to_owned(),
        regions: regions.clone(),
        instances: Vec::new(),
        errors: Vec::new(),
    };
    for region in &regions {
        let conf = aws_sdk_ec2::config::Builder::from(sdk)
            .region(aws_sdk_ec2::config::Region::new(region.clone()))
            .build();
        let ec2 = aws_sdk_ec2::Client::from_conf(conf);
        let request = if is_instance_id(target) {
            ec2.describe_instances().instance_ids(target)
        } else {
            ec2.describe_instances()
                .filters(Filter::builder().name("tag:Name").values(target).build())
        };
        let out = match request.send().await {
            Ok(out) => out,
            // An id from another region is "not found" in this one.
            Err(e)
                if e.as_service_error()
                    .and_then(|s| aws_sdk_ec2::error::ProvideErrorMetadata::code(s))
                    == Some("InvalidInstanceID.NotFound") =>
            {
                continue
            }
            // One region failing (not enabled, no permission) does not hide the others' instances.
            Err(e) => {
                report.errors.push(format!(
                    "DescribeInstances in {region}: {}",
                    crate::errors::chain(&e)
                ));
                continue;
            }
        };
        for i in out.reservations().iter().flat_map(|r| r.instances()) {
            let tags: BTreeMap<String, String> = i
                .tags()
                .iter()
                .filter_map(|t| {
                    Some((
                        t.key()?.to_owned(),
                        t.value().unwrap_or_default().to_owned(),
                    ))
                })
                .collect();
            let instance_id = i.instance_id().unwrap_or_default().to_owned();
            let state = i
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default();
            let reason: Vec<String> = [
                i.state_transition_reason().map(str::to_owned),
                i.state_reason()
                    .and_then(|r| r.message())
                    .map(str::to_owned),
            ]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect();
            let spot = match i.spot_instance_request_id() {
                Some(request_id) => {
                    let described = ec2
                        .describe_spot_instance_requests()
                        .spot_instance_request_ids(request_id)
                        .send()
                        .await;
                    // A closed request ages out of EC2 and is "not found": say so, show the rest.
                    match described {
                        Ok(d) => {
                            let status =
                                d.spot_instance_requests().first().and_then(|r| r.status());
                            Some(Spot {
                                request_id: request_id.to_owned(),
                                code: status.and_then(|s| s.code()).map(str::to_owned),
                                message: status.and_then(|s| s.message()).map(str::to_owned),
                            })
                        }
                        Err(e) => Some(Spot {
                            request_id: request_id.to_owned(),
                            code: None,
                            message: Some(format!(
                                "EC2 no longer describes this request ({})",
                                crate::errors::chain(&e)
                            )),
                        }),
                    }
                }
                None => None,
            };
            let image_id = i.image_id().unwrap_or_default().to_owned();
            let image_type = tags.get(type_tag).cloned();
            let verdict = match &manifest {
                Ok(m) => {
                    let fleet = FleetInstance {
                        region: region.clone(),
                        instance_id: instance_id.clone(),
                        image_id: image_id.clone(),
                        // The verdict on the image, whatever the state: a stopped instance's image matters too.
                        state: "running".into(),
                        image_type: image_type.clone(),
                        builder: tags::is_bake_instance(&tags),
                        exempt: false,
                        launched_at: None,
                    };
                    verdict_word(&freshness::verdict(&fleet, m, chrono::Utc::now()))
                }
                Err(e) => format!("unknown (the manifest cannot be read: {e})"),
            };
            report.instances.push(Found {
                region: region.clone(),
                name: tags.get("Name").cloned(),
                instance_id,
                private_ip: i.private_ip_address().map(str::to_owned),
                public_ip: i.public_ip_address().map(str::to_owned),
                state,
                state_reason: (!reason.is_empty()).then(|| reason.join("; ")),
                spot,
                image_type,
                image_id,
                verdict,
                launch_time: i.launch_time().map(|t| t.to_string()),
                tags,
            });
        }
    }
    let found = !report.instances.is_empty();
    // JSON always (an empty list is an answer); a table only when there is something to show.
    if found || format == Format::Json {
        print(format, &report, render);
    }
    for e in &report.errors {
        eprintln!("goldenctl: not searched: {e}");
    }
    if found {
        Ok(EXIT_OK)
    } else {
        let searched = if regions.len() > 4 {
            format!("{} regions", regions.len())
        } else {
            regions.join(", ")
        };
        eprintln!(
            "goldenctl: no instance named {target:?} (tag Name, exact) or with that id in {searched}; check the \
             name (`goldenctl status` matches the whole Name tag), or pass --region for a region not enabled \
             in this account"
        );
        Ok(EXIT_ERROR)
    }
}

fn render(r: &StatusReport) -> String {
    let mut blocks = Vec::new();
    for f in &r.instances {
        let dash = || "-".to_owned();
        let mut rows = vec![
            vec!["Name".to_owned(), f.name.clone().unwrap_or_else(dash)],
            vec!["ID".into(), f.instance_id.clone()],
            vec!["Region".into(), f.region.clone()],
            vec!["State".into(), f.state.clone()],
            vec!["Reason".into(), f.state_reason.clone().unwrap_or_else(dash)],
            vec![
                "Private IP".into(),
                f.private_ip.clone().unwrap_or_else(dash),
            ],
            vec!["Public IP".into(), f.public_ip.clone().unwrap_or_else(dash)],
            vec!["Type".into(), f.image_type.clone().unwrap_or_else(dash)],
            vec!["AMI".into(), format!("{} ({})", f.image_id, f.verdict)],
            vec![
                "Launched".into(),
                f.launch_time.clone().unwrap_or_else(dash),
            ],
        ];
        if let Some(s) = &f.spot {
            rows.push(vec![
                "Spot".into(),
                format!(
                    "{}: {} {}",
                    s.request_id,
                    s.code.as_deref().unwrap_or("?"),
                    s.message.as_deref().unwrap_or("")
                ),
            ]);
        }
        rows.push(vec![
            "Tags".into(),
            f.tags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ]);
        blocks.push(table(&["", ""], rows));
    }
    blocks.join("\n")
}
