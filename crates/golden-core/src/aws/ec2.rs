use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceNetworkInterfaceSpecification, InstanceType, LaunchPermission,
    LaunchPermissionModifications, OperationType, ResourceType, ShutdownBehavior,
    SnapshotAttributeName, Tag, TagSpecification, VolumeType,
};
use aws_sdk_ec2::Client;

use super::{to_chrono, RegionalClients};
use crate::error::{unless_not_found, AwsError, Result};
use crate::ports::{CopySpec, Ec2, Image, Instance, InstanceQuery, LaunchSpec, Snapshot};
use crate::recipe::Share;

/// [`Ec2`] on `aws-sdk-ec2`.
pub struct AwsEc2 {
    clients: RegionalClients<Client>,
}

impl AwsEc2 {
    pub fn new(config: SdkConfig) -> Self {
        Self {
            clients: RegionalClients::new(config, Client::new),
        }
    }

    /// One client for every region (unit tests with `aws-smithy-mocks`).
    pub fn from_client(client: Client) -> Self {
        Self {
            clients: RegionalClients::fixed(client, Client::new),
        }
    }
}

const LIVE_STATES: [&str; 5] = ["pending", "running", "stopping", "stopped", "shutting-down"];
/// The page size of the account-wide listings (DescribeImages, DescribeSnapshots, DescribeInstances by
/// filter): EC2's largest. Unpaged, these answer an account's whole estate in one response, which EC2 may
/// time out on; paged, calls grow by one per thousand (BENCHMARKS.md, retention at scale).
const PAGE: i32 = 1000;

fn tag_filters(tags: &[(&str, &str)]) -> Vec<Filter> {
    tags.iter()
        .map(|(k, v)| {
            Filter::builder()
                .name(format!("tag:{k}"))
                .values(*v)
                .build()
        })
        .collect()
}

fn to_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn from_tags(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

fn instance(i: &aws_sdk_ec2::types::Instance) -> Instance {
    Instance {
        instance_id: i.instance_id().unwrap_or_default().to_owned(),
        image_id: i.image_id().unwrap_or_default().to_owned(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default(),
        launch_time: i.launch_time().and_then(to_chrono),
        first_launched: i
            .network_interfaces()
            .iter()
            .filter_map(|n| n.attachment())
            .find(|a| a.device_index() == Some(0))
            .and_then(|a| a.attach_time())
            .and_then(to_chrono),
        private_ip: i.private_ip_address().map(str::to_owned),
        public_ip: i.public_ip_address().map(str::to_owned),
        tags: from_tags(i.tags()),
    }
}

fn image(i: &aws_sdk_ec2::types::Image) -> Image {
    Image {
        image_id: i.image_id().unwrap_or_default().to_owned(),
        name: i.name().unwrap_or_default().to_owned(),
        state: i.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        state_reason: i
            .state_reason()
            .and_then(|r| r.message())
            .map(str::to_owned),
        creation_date: i.creation_date().map(str::to_owned),
        snapshot_ids: i
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_owned))
            .collect(),
        tags: from_tags(i.tags()),
    }
}

#[async_trait]
impl Ec2 for AwsEc2 {
    async fn run_instance(&self, region: &str, spec: &LaunchSpec) -> Result<Instance> {
        let nic = InstanceNetworkInterfaceSpecification::builder()
            .device_index(0)
            .subnet_id(&spec.subnet_id)
            .set_groups(Some(spec.security_group_ids.clone()).filter(|g| !g.is_empty()))
            .associate_public_ip_address(spec.associate_public_ip)
            .delete_on_termination(true)
            .build();
        let profile = spec.instance_profile.as_ref().map(|p| {
            if p.starts_with("arn:") {
                IamInstanceProfileSpecification::builder().arn(p).build()
            } else {
                IamInstanceProfileSpecification::builder().name(p).build()
            }
        });
        let devices = spec
            .block_devices
            .iter()
            .map(|d| {
                BlockDeviceMapping::builder()
                    .device_name(&d.device_name)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(i32::try_from(d.volume_size_gb).unwrap_or(i32::MAX))
                            .volume_type(VolumeType::from(d.volume_type.as_str()))
                            .delete_on_termination(d.delete_on_termination)
                            .encrypted(d.encrypted)
                            .set_kms_key_id(d.kms_key_id.clone().filter(|_| d.encrypted))
                            .build(),
                    )
                    .build()
            })
            .collect::<Vec<_>>();
        let out = self
            .clients
            .get(region)
            .run_instances()
            .image_id(&spec.image_id)
            .instance_type(InstanceType::from(spec.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(&spec.client_token)
            .network_interfaces(nic)
            .set_iam_instance_profile(profile)
            .set_block_device_mappings(Some(devices).filter(|d| !d.is_empty()))
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .build(),
            )
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
            .tag_specifications(tag_specification(ResourceType::Instance, &spec.tags))
            .tag_specifications(tag_specification(ResourceType::Volume, &spec.tags))
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk(
                    "RunInstances",
                    format!("builder from {}", spec.image_id),
                    region,
                    e,
                )
            })?;
        out.instances().first().map(instance).ok_or_else(|| {
            AwsError {
                operation: "RunInstances",
                resource: format!("builder from {}", spec.image_id),
                region: region.to_owned(),
                kind: crate::error::AwsErrorKind::Transient,
                code: None,
                status: None,
                message: "EC2 returned no instance".into(),
            }
            .into()
        })
    }

    async fn describe_instance(&self, region: &str, instance_id: &str) -> Result<Option<Instance>> {
        let out = self
            .clients
            .get(region)
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await;
        let out = unless_not_found(
            out.map_err(|e| AwsError::from_sdk("DescribeInstances", instance_id, region, e)),
        )?;
        Ok(out.and_then(|o| {
            o.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .map(instance)
                .next()
        }))
    }

    async fn find_instances(&self, region: &str, tags: &[(&str, &str)]) -> Result<Vec<Instance>> {
        let query = InstanceQuery {
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..InstanceQuery::default()
        };
        self.query_instances(region, &query).await
    }

    async fn query_instances(&self, region: &str, query: &InstanceQuery) -> Result<Vec<Instance>> {
        let mut filters: Vec<Filter> = query
            .tags
            .iter()
            .map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build())
            .collect();
        if !query.tag_keys.is_empty() {
            filters.push(
                Filter::builder()
                    .name("tag-key")
                    .set_values(Some(query.tag_keys.clone()))
                    .build(),
            );
        }
        if !query.image_ids.is_empty() {
            filters.push(
                Filter::builder()
                    .name("image-id")
                    .set_values(Some(query.image_ids.clone()))
                    .build(),
            );
        }
        let states = if query.states.is_empty() {
            LIVE_STATES.map(String::from).to_vec()
        } else {
            query.states.clone()
        };
        filters.push(
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(states))
                .build(),
        );
        let mut pages = self
            .clients
            .get(region)
            .describe_instances()
            .set_instance_ids(Some(query.instance_ids.clone()).filter(|ids| !ids.is_empty()))
            .set_filters(Some(filters))
            // EC2 refuses MaxResults beside InstanceIds.
            .set_max_results(query.instance_ids.is_empty().then_some(PAGE))
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                AwsError::from_sdk("DescribeInstances", format!("{query:?}"), region, e)
            });
            let Some(page) = unless_not_found(page)? else {
                break;
            };
            found.extend(
                page.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .map(instance),
            );
        }
        Ok(found)
    }

    async fn stop_instances(&self, region: &str, instance_ids: &[String]) -> Result<()> {
        if instance_ids.is_empty() {
            return Ok(());
        }
        let out = self
            .clients
            .get(region)
            .stop_instances()
            .set_instance_ids(Some(instance_ids.to_vec()))
            .send()
            .await;
        unless_not_found(
            out.map_err(|e| AwsError::from_sdk("StopInstances", instance_ids.join(","), region, e)),
        )?;
        Ok(())
    }

    async fn launch_template_images(&self, region: &str) -> Result<Vec<(String, String)>> {
        let client = self.clients.get(region);
        let mut templates = client
            .describe_launch_templates()
            .into_paginator()
            .items()
            .send();
        let mut ids = Vec::new();
        while let Some(t) = templates.next().await {
            let t = t.map_err(|e| {
                AwsError::from_sdk("DescribeLaunchTemplates", "launch templates", region, e)
            })?;
            if let Some(id) = t.launch_template_id() {
                ids.push(id.to_owned());
            }
        }
        let mut found = Vec::new();
        for id in ids {
            for (which, selector) in [("default", "$Default"), ("latest", "$Latest")] {
                let mut versions = client
                    .describe_launch_template_versions()
                    .launch_template_id(&id)
                    .versions(selector)
                    .into_paginator()
                    .items()
                    .send();
                while let Some(v) = versions.next().await {
                    let v = v.map_err(|e| {
                        AwsError::from_sdk("DescribeLaunchTemplateVersions", &id, region, e)
                    })?;
                    if let Some(image) = v.launch_template_data().and_then(|d| d.image_id()) {
                        let number = v.version_number().unwrap_or_default();
                        found.push((image.to_owned(), format!("{id} v{number} ({which})")));
                    }
                }
            }
        }
        Ok(found)
    }

    async fn find_snapshots(&self, region: &str, tags: &[(&str, &str)]) -> Result<Vec<Snapshot>> {
        let mut items = self
            .clients
            .get(region)
            .describe_snapshots()
            .owner_ids("self")
            .set_filters(Some(tag_filters(tags)))
            .max_results(PAGE)
            .into_paginator()
            .items()
            .send();
        let mut found = Vec::new();
        while let Some(s) = items.next().await {
            let s = s.map_err(|e| {
                AwsError::from_sdk("DescribeSnapshots", describe_tags(tags), region, e)
            })?;
            found.push(Snapshot {
                snapshot_id: s.snapshot_id().unwrap_or_default().to_owned(),
                start_time: s.start_time().and_then(to_chrono),
                tags: from_tags(s.tags()),
            });
        }
        Ok(found)
    }

    async fn terminate_instances(&self, region: &str, instance_ids: &[String]) -> Result<()> {
        if instance_ids.is_empty() {
            return Ok(());
        }
        let client = self.clients.get(region);
        let out = client
            .terminate_instances()
            .set_instance_ids(Some(instance_ids.to_vec()))
            .send()
            .await;
        match out.map_err(|e| {
            AwsError::from_sdk("TerminateInstances", instance_ids.join(","), region, e)
        }) {
            Ok(_) => Ok(()),
            // One unknown id fails the whole call: terminate the others one by one.
            Err(e) if e.is_not_found() && instance_ids.len() > 1 => {
                for id in instance_ids {
                    let out = client.terminate_instances().instance_ids(id).send().await;
                    unless_not_found(
                        out.map_err(|e| AwsError::from_sdk("TerminateInstances", id, region, e)),
                    )?;
                }
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn create_image(
        &self,
        region: &str,
        instance_id: &str,
        name: &str,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String> {
        let out = self
            .clients
            .get(region)
            .create_image()
            .instance_id(instance_id)
            .name(name)
            .description(description)
            .no_reboot(false)
            .tag_specifications(tag_specification(ResourceType::Image, tags))
            .tag_specifications(tag_specification(ResourceType::Snapshot, tags))
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk(
                    "CreateImage",
                    format!("{name} from {instance_id}"),
                    region,
                    e,
                )
            })?;
        Ok(out.image_id().unwrap_or_default().to_owned())
    }

    async fn copy_image(&self, region: &str, spec: &CopySpec) -> Result<String> {
        let out = self
            .clients
            .get(region)
            .copy_image()
            .source_region(&spec.source_region)
            .source_image_id(&spec.source_image_id)
            .name(&spec.name)
            .description(&spec.description)
            .client_token(&spec.client_token)
            .set_encrypted(spec.kms_key_id.as_ref().map(|_| true))
            .set_kms_key_id(spec.kms_key_id.clone())
            .tag_specifications(tag_specification(ResourceType::Image, &spec.tags))
            .tag_specifications(tag_specification(ResourceType::Snapshot, &spec.tags))
            .send()
            .await
            .map_err(|e| {
                AwsError::from_sdk(
                    "CopyImage",
                    format!("{} from {}", spec.source_image_id, spec.source_region),
                    region,
                    e,
                )
            })?;
        Ok(out.image_id().unwrap_or_default().to_owned())
    }

    async fn describe_image(&self, region: &str, image_id: &str) -> Result<Option<Image>> {
        let out = self
            .clients
            .get(region)
            .describe_images()
            .image_ids(image_id)
            .send()
            .await;
        let out = unless_not_found(
            out.map_err(|e| AwsError::from_sdk("DescribeImages", image_id, region, e)),
        )?;
        Ok(out.and_then(|o| o.images().first().map(image)))
    }

    async fn find_images(
        &self,
        region: &str,
        name: Option<&str>,
        tags: &[(&str, &str)],
    ) -> Result<Vec<Image>> {
        let mut filters = tag_filters(tags);
        if let Some(name) = name {
            filters.push(Filter::builder().name("name").values(name).build());
        }
        let mut items = self
            .clients
            .get(region)
            .describe_images()
            .owners("self")
            .set_filters(Some(filters))
            .max_results(PAGE)
            .into_paginator()
            .items()
            .send();
        let mut found = Vec::new();
        while let Some(item) = items.next().await {
            let item = item.map_err(|e| {
                AwsError::from_sdk(
                    "DescribeImages",
                    name.unwrap_or(&describe_tags(tags)).to_owned(),
                    region,
                    e,
                )
            })?;
            found.push(image(&item));
        }
        Ok(found)
    }

    async fn share_image(&self, region: &str, image_id: &str, share: &Share) -> Result<()> {
        let permissions = share
            .accounts
            .iter()
            .map(|a| LaunchPermission::builder().user_id(a).build())
            .chain(
                share
                    .organizations
                    .iter()
                    .map(|o| LaunchPermission::builder().organization_arn(o).build()),
            )
            .chain(share.organizational_units.iter().map(|u| {
                LaunchPermission::builder()
                    .organizational_unit_arn(u)
                    .build()
            }))
            .collect();
        self.clients
            .get(region)
            .modify_image_attribute()
            .image_id(image_id)
            .launch_permission(
                LaunchPermissionModifications::builder()
                    .set_add(Some(permissions))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ModifyImageAttribute", image_id, region, e))?;
        Ok(())
    }

    async fn share_snapshot(
        &self,
        region: &str,
        snapshot_id: &str,
        accounts: &[String],
    ) -> Result<()> {
        // The flat form (OperationType + UserIds), which EC2 takes as it takes CreateVolumePermission.Add.
        self.clients
            .get(region)
            .modify_snapshot_attribute()
            .snapshot_id(snapshot_id)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .operation_type(OperationType::Add)
            .set_user_ids(Some(accounts.to_vec()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ModifySnapshotAttribute", snapshot_id, region, e))?;
        Ok(())
    }

    async fn deregister_image(&self, region: &str, image_id: &str) -> Result<()> {
        let out = self
            .clients
            .get(region)
            .deregister_image()
            .image_id(image_id)
            .send()
            .await;
        unless_not_found(
            out.map_err(|e| AwsError::from_sdk("DeregisterImage", image_id, region, e)),
        )?;
        Ok(())
    }

    async fn deprecate_image(
        &self,
        region: &str,
        image_id: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        let out = self
            .clients
            .get(region)
            .enable_image_deprecation()
            .image_id(image_id)
            .deprecate_at(aws_smithy_types::DateTime::from_secs(at.timestamp()))
            .send()
            .await;
        // An image already deregistered (pruned) has nothing left to deprecate.
        unless_not_found(
            out.map_err(|e| AwsError::from_sdk("EnableImageDeprecation", image_id, region, e)),
        )?;
        Ok(())
    }

    async fn delete_snapshot(&self, region: &str, snapshot_id: &str) -> Result<()> {
        let out = self
            .clients
            .get(region)
            .delete_snapshot()
            .snapshot_id(snapshot_id)
            .send()
            .await;
        unless_not_found(
            out.map_err(|e| AwsError::from_sdk("DeleteSnapshot", snapshot_id, region, e)),
        )?;
        Ok(())
    }
}

/// Tags given to a resource of `kind` as the call creates it: the resource never exists untagged, and IAM
/// can hold the call's `ec2:CreateTags` to `ec2:CreateAction` (infra/template.yaml).
fn tag_specification(kind: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(to_tags(tags)))
        .build()
}

fn describe_tags(tags: &[(&str, &str)]) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::types::{InstanceNetworkInterface, InstanceNetworkInterfaceAttachment};

    #[test]
    fn first_launched_is_the_primary_interfaces_attach_time_which_a_restart_keeps() {
        let t = |secs: i64| aws_smithy_types::DateTime::from_secs(secs);
        let eni = |index: i32, at: i64| {
            InstanceNetworkInterface::builder()
                .attachment(
                    InstanceNetworkInterfaceAttachment::builder()
                        .device_index(index)
                        .attach_time(t(at))
                        .build(),
                )
                .build()
        };
        // GIVEN an instance launched at 1000, stopped and started at 9000, with a second ENI from 5000
        let i = aws_sdk_ec2::types::Instance::builder()
            .instance_id("i-0123456789abcdef0")
            .launch_time(t(9000))
            .network_interfaces(eni(1, 5000))
            .network_interfaces(eni(0, 1000))
            .build();
        let mapped = instance(&i);
        assert_eq!(mapped.launch_time.map(|d| d.timestamp()), Some(9000));
        assert_eq!(mapped.first_launched.map(|d| d.timestamp()), Some(1000));
    }
}
