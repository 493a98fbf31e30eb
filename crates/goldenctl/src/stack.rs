//! `--stack NAME`: the deployed stack's outputs and parameters, read with CloudFormation DescribeStacks.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context};

/// The template's parameters that set a function's `GOLDEN_*` setting, so goldenctl acting for a function
/// (prune, reap, enforce, recycle, status's verdicts, check) uses the stack's values, not the defaults.
pub const SETTINGS: [(&str, &str); 10] = [
    ("TypeTag", "GOLDEN_TYPE_TAG"),
    ("Regions", "GOLDEN_REGIONS"),
    ("PruneMinAgeHours", "GOLDEN_PRUNE_MIN_AGE_HOURS"),
    ("PruneMaxDeletes", "GOLDEN_PRUNE_MAX_DELETES"),
    ("PruneDryRun", "GOLDEN_PRUNE_DRY_RUN"),
    ("ReapMarginMinutes", "GOLDEN_REAP_MARGIN_MINUTES"),
    ("RolloutWindowMinutes", "GOLDEN_ROLLOUT_WINDOW_MINUTES"),
    ("RolloutMaxFraction", "GOLDEN_ROLLOUT_MAX_FRACTION"),
    ("EnforceAction", "GOLDEN_ENFORCE_ACTION"),
    (
        "MaxFailedScheduledBakes",
        "GOLDEN_MAX_FAILED_SCHEDULED_BAKES",
    ),
];

/// What goldenctl reads of a stack.
#[derive(Debug, Default)]
pub struct Stack {
    /// Outputs by key (BucketName, StateMachineArn, Regions, ...).
    pub outputs: BTreeMap<String, String>,
    /// The functions' settings the stack's parameters give, by variable (`GOLDEN_TYPE_TAG`, ...).
    pub settings: BTreeMap<String, String>,
    /// The `EnableSchedules` parameter: false for a stack that runs only what is started by hand.
    pub schedules_enabled: Option<bool>,
}

pub async fn read(sdk: &aws_config::SdkConfig, stack: &str) -> anyhow::Result<Stack> {
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
    let outputs = found
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_owned(), o.output_value()?.to_owned())))
        .collect();
    let parameters: BTreeMap<&str, &str> = found
        .parameters()
        .iter()
        .filter_map(|p| Some((p.parameter_key()?, p.parameter_value()?)))
        .collect();
    let settings = SETTINGS
        .iter()
        .filter_map(|(param, var)| Some(((*var).to_owned(), (*parameters.get(param)?).to_owned())))
        .collect();
    let schedules_enabled = parameters.get("EnableSchedules").map(|v| *v == "true");
    Ok(Stack {
        outputs,
        settings,
        schedules_enabled,
    })
}
