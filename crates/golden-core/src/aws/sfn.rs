use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_sfn::Client;

use super::RegionalClients;
use crate::error::{unless_not_found, AwsError, Result};
use crate::ports::Executions;

/// [`Executions`] on `aws-sdk-sfn`; the region comes from each execution's ARN.
pub struct AwsSfn {
    clients: RegionalClients<Client>,
}

impl AwsSfn {
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

/// `arn:aws:states:<region>:<account>:execution:<machine>:<name>` -> region.
fn arn_region(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

#[async_trait]
impl Executions for AwsSfn {
    async fn status(&self, execution_arn: &str) -> Result<Option<String>> {
        let Some(region) = arn_region(execution_arn) else {
            // Not an execution ARN at all: there is no such execution.
            return Ok(None);
        };
        let out = self
            .clients
            .get(region)
            .describe_execution()
            .execution_arn(execution_arn)
            .send()
            .await;
        let out = unless_not_found(
            out.map_err(|e| AwsError::from_sdk("DescribeExecution", execution_arn, region, e)),
        )?;
        Ok(out.map(|o| o.status().as_str().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn region_comes_from_the_arn() {
        assert_eq!(
            super::arn_region("arn:aws:states:eu-west-1:123456789012:execution:bake:x"),
            Some("eu-west-1")
        );
        assert_eq!(super::arn_region("not-an-arn"), None);
    }
}
