//! `--stack NAME`: the deployed stack's outputs, read with CloudFormation DescribeStacks.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context};

/// The stack's outputs, by key.
pub async fn outputs(
    sdk: &aws_config::SdkConfig,
    stack: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let cfn = aws_sdk_cloudformation::Client::new(sdk);
    let out = cfn
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| {
            let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
            anyhow!(
                "cannot read stack {stack:?} in {region}: {}; check the name (aws cloudformation \
                 list-stacks) and the region (AWS_REGION)",
                crate::errors::chain(&e)
            )
        })?;
    let found = out
        .stacks()
        .first()
        .with_context(|| format!("stack {stack:?} not found"))?;
    Ok(found
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
        .collect())
}
