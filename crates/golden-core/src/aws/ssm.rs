use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_ssm::types::{InstanceInformationStringFilter, ParameterType};
use aws_sdk_ssm::Client;

use super::RegionalClients;
use crate::error::{unless_not_found, AwsError, Result};
use crate::ports::{CommandInvocation, CommandSpec, Ssm};

/// [`Ssm`] on `aws-sdk-ssm`.
pub struct AwsSsm {
    clients: RegionalClients<Client>,
}

impl AwsSsm {
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

#[async_trait]
impl Ssm for AwsSsm {
    async fn get_parameter(&self, region: &str, name: &str) -> Result<Option<String>> {
        let out = self
            .clients
            .get(region)
            .get_parameter()
            .name(name)
            .send()
            .await;
        let out =
            unless_not_found(out.map_err(|e| AwsError::from_sdk("GetParameter", name, region, e)))?;
        Ok(out.and_then(|o| o.parameter().and_then(|p| p.value()).map(str::to_owned)))
    }

    async fn parameters_by_path(&self, region: &str, path: &str) -> Result<Vec<(String, String)>> {
        let mut pages = self
            .clients
            .get(region)
            .get_parameters_by_path()
            .path(path)
            .recursive(true)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| AwsError::from_sdk("GetParametersByPath", path, region, e))?;
            for p in page.parameters() {
                if let (Some(name), Some(value)) = (p.name(), p.value()) {
                    found.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        Ok(found)
    }

    async fn put_image_parameter(&self, region: &str, name: &str, image_id: &str) -> Result<()> {
        self.clients
            .get(region)
            .put_parameter()
            .name(name)
            .value(image_id)
            .r#type(ParameterType::String)
            // Lets launch templates use `resolve:ssm:` and makes SSM check that the value is an AMI.
            .data_type("aws:ec2:image")
            .overwrite(true)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("PutParameter", name, region, e))?;
        Ok(())
    }

    async fn delete_parameter(&self, region: &str, name: &str) -> Result<bool> {
        let out = self
            .clients
            .get(region)
            .delete_parameter()
            .name(name)
            .send()
            .await;
        let out = unless_not_found(
            out.map_err(|e| AwsError::from_sdk("DeleteParameter", name, region, e)),
        )?;
        Ok(out.is_some())
    }

    async fn agent_status(&self, region: &str, instance_id: &str) -> Result<Option<String>> {
        let filter = InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .values(instance_id)
            .build()
            .map_err(|e| crate::error::Error::InvalidInput(e.to_string()))?;
        let mut items = self
            .clients
            .get(region)
            .describe_instance_information()
            .filters(filter)
            .into_paginator()
            .items()
            .send();
        while let Some(item) = items.next().await {
            let item = item.map_err(|e| {
                AwsError::from_sdk("DescribeInstanceInformation", instance_id, region, e)
            })?;
            if item.instance_id() == Some(instance_id) {
                return Ok(item.ping_status().map(|s| s.as_str().to_owned()));
            }
        }
        Ok(None)
    }

    async fn send_command(&self, region: &str, spec: &CommandSpec) -> Result<String> {
        let mut request = self
            .clients
            .get(region)
            .send_command()
            .instance_ids(&spec.instance_id)
            .document_name(&spec.document)
            .parameters("commands", spec.commands.clone())
            .parameters("executionTimeout", vec![spec.timeout_seconds.to_string()])
            .comment(&spec.comment);
        if let Some((bucket, prefix)) = &spec.output {
            // The agent on the instance writes them, with the instance's role.
            request = request
                .output_s3_bucket_name(bucket)
                .output_s3_key_prefix(prefix);
        }
        let out = request
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("SendCommand", &spec.instance_id, region, e))?;
        Ok(out
            .command()
            .and_then(|c| c.command_id())
            .unwrap_or_default()
            .to_owned())
    }

    async fn find_command(
        &self,
        region: &str,
        instance_id: &str,
        comment: &str,
    ) -> Result<Option<String>> {
        let mut items = self
            .clients
            .get(region)
            .list_commands()
            .instance_id(instance_id)
            .into_paginator()
            .items()
            .send();
        while let Some(item) = items.next().await {
            let item =
                item.map_err(|e| AwsError::from_sdk("ListCommands", instance_id, region, e))?;
            if item.comment() == Some(comment) {
                return Ok(item.command_id().map(str::to_owned));
            }
        }
        Ok(None)
    }

    async fn command_invocation(
        &self,
        region: &str,
        command_id: &str,
        instance_id: &str,
    ) -> Result<Option<CommandInvocation>> {
        let out = self
            .clients
            .get(region)
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance_id)
            .send()
            .await;
        let resource = format!("command {command_id} on {instance_id}");
        // Just after SendCommand the invocation may not exist yet (InvocationDoesNotExist): not an error.
        let out = unless_not_found(
            out.map_err(|e| AwsError::from_sdk("GetCommandInvocation", resource, region, e)),
        )?;
        Ok(out.map(|o| CommandInvocation {
            status: o
                .status()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            exit_code: o.response_code(),
            stdout: o.standard_output_content().unwrap_or_default().to_owned(),
            stderr: o.standard_error_content().unwrap_or_default().to_owned(),
        }))
    }
}
