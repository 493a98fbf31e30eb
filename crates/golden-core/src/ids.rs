//! Identifiers a stage receives, checked before any AWS call: a malformed one is `InvalidInput` naming
//! the field (never a call that fails later, or a region the SDK cannot reach that would look `Transient`
//! and be retried in vain).

use crate::config::Config;
use crate::error::{Error, Result};
use crate::recipe::{is_ami_id, is_region_name};

/// AWS regions (commercial, GovCloud, China) as of this build. A region AWS opens later is accepted once
/// it is listed in `GOLDEN_REGIONS`.
pub const KNOWN_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-west-1",
    "us-west-2",
];

fn invalid(field: &str, value: &str, expected: &str) -> Error {
    Error::InvalidInput(format!("{field} {value:?} is not {expected}"))
}

/// A region this build knows, or one the deployment lists in `GOLDEN_REGIONS`.
pub fn region(config: &Config, field: &str, value: &str) -> Result<()> {
    if !is_region_name(value) {
        return Err(invalid(field, value, "a region name like us-east-1"));
    }
    if !KNOWN_REGIONS.contains(&value) && !config.regions.iter().any(|r| r == value) {
        return Err(Error::InvalidInput(format!(
            "{field} {value:?} is not an AWS region this build knows; if AWS opened it since, add it to \
             GOLDEN_REGIONS"
        )));
    }
    Ok(())
}

/// `i-` and 8 or 17 lowercase hex digits.
pub fn instance(field: &str, value: &str) -> Result<()> {
    let ok = value.strip_prefix("i-").is_some_and(|h| {
        matches!(h.len(), 8 | 17)
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            value,
            "an instance id like i-0123456789abcdef0",
        ))
    }
}

pub fn image(field: &str, value: &str) -> Result<()> {
    if is_ami_id(value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            value,
            "an AMI id like ami-0123456789abcdef0",
        ))
    }
}

/// An SSM command id: a UUID.
pub fn command(field: &str, value: &str) -> Result<()> {
    let groups: Vec<&str> = value.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(invalid(field, value, "an SSM command id (a UUID)"))
    }
}

/// `arn:PARTITION:states:REGION:ACCOUNT:execution:STATE_MACHINE:NAME`.
pub fn execution_arn(field: &str, value: &str) -> Result<()> {
    let parts: Vec<&str> = value.splitn(8, ':').collect();
    let ok = matches!(parts.as_slice(), ["arn", partition, "states", region, account, "execution", machine, name]
        if partition.starts_with("aws")
            && is_region_name(region)
            && account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && !machine.is_empty()
            && !name.is_empty());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            value,
            "a Step Functions execution ARN (arn:aws:states:REGION:ACCOUNT:execution:MACHINE:NAME)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_lookup(|k| match k {
            "GOLDEN_BUCKET" => Some("b-1".into()),
            "GOLDEN_REGIONS" => Some("xx-new-1".into()),
            _ => None,
        })
        .expect("config")
    }

    #[test]
    fn well_formed_identifiers_pass() {
        let c = config();
        region(&c, "region", "us-east-1").unwrap();
        region(&c, "region", "us-gov-west-1").unwrap();
        region(&c, "region", "xx-new-1").expect("listed in GOLDEN_REGIONS");
        instance("instanceId", "i-0123456789abcdef0").unwrap();
        instance("instanceId", "i-01234567").unwrap();
        image("imageId", "ami-0123456789abcdef0").unwrap();
        command("commandId", "0b5e2a1c-1234-4cde-9f00-0123456789ab").unwrap();
        execution_arn(
            "executionId",
            "arn:aws:states:us-east-1:123456789012:execution:bake:bld-1",
        )
        .unwrap();
    }

    #[test]
    fn malformed_identifiers_are_invalid_input_naming_the_field() {
        let c = config();
        let cases: Vec<(Result<()>, &str)> = vec![
            (
                region(&c, "builder.region", "us-east-9"),
                "builder.region \"us-east-9\" is not an AWS region this build knows",
            ),
            (
                region(&c, "region", "mars"),
                "region \"mars\" is not a region name like us-east-1",
            ),
            (
                instance("instanceId", "i-XYZ"),
                "instanceId \"i-XYZ\" is not an instance id",
            ),
            (
                instance("instanceId", "i-0123456789ABCDEF0"),
                "instanceId \"i-0123456789ABCDEF0\" is not an instance id",
            ),
            (
                image("imageId", "ami-;rm"),
                "imageId \"ami-;rm\" is not an AMI id",
            ),
            (
                command("commandId", "cmd-1"),
                "commandId \"cmd-1\" is not an SSM command id",
            ),
            (
                execution_arn("executionId", "bake-1"),
                "executionId \"bake-1\" is not a Step Functions execution ARN",
            ),
        ];
        for (result, message) in cases {
            let err = result.expect_err(message);
            assert_eq!(err.error_type(), "InvalidInput");
            assert!(
                err.to_string()
                    .starts_with(&format!("invalid input: {message}")),
                "{err}"
            );
        }
    }
}
