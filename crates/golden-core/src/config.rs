//! Configuration read once from the environment at cold start (DESIGN.md "Configuration").

use crate::error::Error;
use crate::tags;

/// Settings shared by the functions and the CLI. AWS itself (region, endpoint, credentials) comes from the
/// standard AWS environment through `aws-config`, so there are no endpoint flags here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `GOLDEN_BUCKET`: holds recipes, locks and the published manifest.
    pub bucket: String,
    /// `GOLDEN_TYPE_TAG`: the tag key whose value is a fleet instance's image type.
    pub type_tag: String,
    /// `GOLDEN_REGIONS`: regions the CLI and sweeps scan; empty means "the recipe's regions".
    pub regions: Vec<String>,
    /// `GOLDEN_STATE_MACHINE_ARN`: the bake state machine, for the CLI and the reaper.
    pub state_machine_arn: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `get`, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let bucket = get("GOLDEN_BUCKET")
            .map(|b| b.trim().to_owned())
            .unwrap_or_default();
        if bucket.is_empty() {
            return Err(Error::Config(
                "GOLDEN_BUCKET is not set; set it to the bucket that holds recipes and the manifest (the SAM stack's output GoldenBucket)".into(),
            ));
        }
        if !is_bucket_name(&bucket) {
            return Err(Error::Config(format!(
                "GOLDEN_BUCKET={bucket:?} is not a valid S3 bucket name"
            )));
        }
        let type_tag = get("GOLDEN_TYPE_TAG")
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        let regions = get("GOLDEN_REGIONS")
            .map(|r| {
                r.split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let state_machine_arn = get("GOLDEN_STATE_MACHINE_ARN").filter(|a| !a.trim().is_empty());
        Ok(Self {
            bucket,
            type_tag: type_tag.unwrap_or_else(|| tags::DEFAULT_TYPE_TAG.to_owned()),
            regions,
            state_machine_arn,
        })
    }
}

fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn missing_bucket_is_a_clear_error() {
        let err = Config::from_lookup(env(&[])).unwrap_err().to_string();
        assert!(err.contains("GOLDEN_BUCKET is not set"), "{err}");
    }

    #[test]
    fn invalid_bucket_name_is_rejected() {
        let err = Config::from_lookup(env(&[("GOLDEN_BUCKET", "Bad_Bucket")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid S3 bucket name"), "{err}");
    }

    #[test]
    fn defaults_and_lists_are_parsed() {
        let c = Config::from_lookup(env(&[
            ("GOLDEN_BUCKET", "golden-ami-local"),
            ("GOLDEN_REGIONS", " us-east-1, us-west-2 ,"),
        ]))
        .unwrap();
        assert_eq!(c.bucket, "golden-ami-local");
        assert_eq!(c.type_tag, "golden-ami:type");
        assert_eq!(c.regions, vec!["us-east-1", "us-west-2"]);
        assert_eq!(c.state_machine_arn, None);
        let c = Config::from_lookup(env(&[
            ("GOLDEN_BUCKET", "b-1"),
            ("GOLDEN_TYPE_TAG", "moz-type"),
        ]))
        .unwrap();
        assert_eq!(c.type_tag, "moz-type");
    }
}
