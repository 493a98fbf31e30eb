use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_sfn::Client;

use chrono::{DateTime, Utc};

use super::{to_chrono, RegionalClients};
use crate::error::{unless_not_found, AwsError, Error, Result};
use crate::ports::{ExecutionDetails, ExecutionSummary, Executions};

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

impl AwsSfn {
    /// DescribeExecution; None if there is no such execution (or `execution_arn` is not an execution ARN).
    async fn describe(
        &self,
        execution_arn: &str,
    ) -> Result<Option<aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput>> {
        let Some(region) = arn_region(execution_arn) else {
            return Ok(None);
        };
        let out = self
            .clients
            .get(region)
            .describe_execution()
            .execution_arn(execution_arn)
            .send()
            .await;
        unless_not_found(
            out.map_err(|e| AwsError::from_sdk("DescribeExecution", execution_arn, region, e)),
        )
    }
}

/// `arn:aws:states:<region>:<account>:(execution|stateMachine):...` -> region.
fn arn_region(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

#[async_trait]
impl Executions for AwsSfn {
    async fn status(&self, execution_arn: &str) -> Result<Option<String>> {
        let out = self.describe(execution_arn).await?;
        Ok(out.map(|o| o.status().as_str().to_owned()))
    }

    async fn started_since(
        &self,
        state_machine_arn: &str,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ExecutionSummary>> {
        let region = arn_region(state_machine_arn).ok_or_else(|| {
            Error::Config(format!(
                "{state_machine_arn:?} is not a state machine ARN (arn:aws:states:REGION:ACCOUNT:stateMachine:NAME)"
            ))
        })?;
        // Newest first (ListExecutions' order), so the walk stops at the first one older than `since`.
        let mut pages = self
            .clients
            .get(region)
            .list_executions()
            .state_machine_arn(state_machine_arn)
            .max_results(100)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page
                .map_err(|e| AwsError::from_sdk("ListExecutions", state_machine_arn, region, e))?;
            for item in page.executions() {
                let Some(start) = to_chrono(item.start_date()) else {
                    continue;
                };
                if start < since || out.len() >= limit {
                    return Ok(out);
                }
                out.push(ExecutionSummary {
                    arn: item.execution_arn().to_owned(),
                    name: item.name().to_owned(),
                    status: item.status().as_str().to_owned(),
                    start,
                });
            }
        }
        Ok(out)
    }

    async fn details(&self, execution_arn: &str) -> Result<Option<ExecutionDetails>> {
        let out = self.describe(execution_arn).await?;
        Ok(out.map(|o| ExecutionDetails {
            input: o.input().unwrap_or("{}").to_owned(),
            start: to_chrono(o.start_date()).unwrap_or_default(),
            error: o.error().map(str::to_owned),
        }))
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
