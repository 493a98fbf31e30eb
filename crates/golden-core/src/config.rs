//! Configuration read once from the environment at cold start (DESIGN.md "Configuration").

use crate::aws::TrustRoots;
use crate::error::Error;
use crate::tags;

/// Settings shared by the functions and the CLI. AWS itself (region, endpoint, credentials) comes from the
/// standard AWS environment through `aws-config`, so there are no endpoint flags here.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `GOLDEN_BUCKET`: holds recipes, locks and the published manifest.
    pub bucket: String,
    /// `GOLDEN_TYPE_TAG`: the tag key whose value is a fleet instance's image type.
    pub type_tag: String,
    /// `GOLDEN_REGIONS`: regions the CLI and sweeps scan, besides every pushed recipe's regions (which are
    /// always scanned); empty means only the recipes' regions.
    pub regions: Vec<String>,
    /// `GOLDEN_STATE_MACHINE_ARN`: the bake state machine, for the CLI and the reaper.
    pub state_machine_arn: Option<String>,
    /// `GOLDEN_STACK_NAME`: the stack the functions belong to, a dimension of their metrics; unset (the CLI,
    /// tests) means no metrics are written.
    pub stack_name: Option<String>,
    /// `GOLDEN_MIN_POLL_SECONDS` (15): the smallest `pollSeconds` a bake may ask for. A 2-hour bake polled
    /// every second would overrun Step Functions' 25,000-event execution history; the emulator sets 1.
    pub min_poll_seconds: u32,
    /// `GOLDEN_TLS_ROOTS` (`auto`): the CAs the functions trust for AWS's endpoints: `amazon`, `native`, or
    /// `auto`, which picks one from the environment (see `tls_roots` below). The CLI always uses the system's
    /// store.
    pub tls_roots: TrustRoots,
    /// `GOLDEN_SCHEDULE_GROUP`: the EventBridge Scheduler group of the stack's bake schedules, one per type
    /// and named after it (the schedule guard and goldenctl's `schedule` commands).
    pub schedule_group: Option<String>,
    /// `GOLDEN_NOTIFICATIONS_TOPIC_ARN`: the SNS topic the schedule guard tells of a schedule it disabled.
    pub notifications_topic_arn: Option<String>,
    /// The lifecycle functions' knobs (prune, reap-builders, enforce-freshness). An invalid one holds its
    /// default here and is listed in `invalid`: only a function that uses it fails ([`Config::check`]), so a
    /// bad lifecycle setting cannot stop the bake stages from starting.
    pub lifecycle: Lifecycle,
    /// (setting, what is wrong with it) for every lifecycle setting that did not parse.
    pub invalid: Vec<(String, String)>,
}

/// The default of [`Config::min_poll_seconds`].
pub const MIN_POLL_SECONDS: u32 = 15;

/// What the lifecycle functions may do, and how fast. Every knob has a safe default.
#[derive(Debug, Clone, PartialEq)]
pub struct Lifecycle {
    /// `GOLDEN_PRUNE_MIN_AGE_HOURS` (24): never prune an image younger than this.
    pub prune_min_age_hours: i64,
    /// `GOLDEN_PRUNE_MAX_DELETES` (50): at most this many images (and as many orphan snapshots) a run.
    pub prune_max_deletes: usize,
    /// `GOLDEN_PRUNE_DRY_RUN` (false): plan and log, delete nothing.
    pub prune_dry_run: bool,
    /// `GOLDEN_REAP_MARGIN_MINUTES` (30): grace past a recipe's max build time before a builder is stuck.
    pub reap_margin_minutes: i64,
    /// `GOLDEN_ROLLOUT_WINDOW_MINUTES` (180): stale instances are recycled spread over this window.
    pub rollout_window_minutes: i64,
    /// `GOLDEN_ROLLOUT_MAX_FRACTION` (0.25): at most this share of a type's running fleet per sweep.
    pub rollout_max_fraction: f64,
    /// `GOLDEN_ENFORCE_ACTION` (terminate): terminate, stop or report.
    pub enforce_action: String,
    /// `GOLDEN_MAX_FAILED_SCHEDULED_BAKES` (3): the schedule guard disables a type's schedule after this
    /// many scheduled bakes of it failed in a row; 0 never disables.
    pub max_failed_scheduled_bakes: u32,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            prune_min_age_hours: 24,
            prune_max_deletes: 50,
            prune_dry_run: false,
            reap_margin_minutes: 30,
            rollout_window_minutes: 180,
            rollout_max_fraction: 0.25,
            enforce_action: "terminate".into(),
            max_failed_scheduled_bakes: 3,
        }
    }
}

fn parse_setting<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
    valid: impl Fn(&T) -> bool,
    expected: &str,
) -> Result<T, Error> {
    match get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
    {
        None => Ok(default),
        Some(raw) => match raw.parse::<T>() {
            Ok(v) if valid(&v) => Ok(v),
            _ => Err(Error::Config(format!(
                "{name}={raw:?} is invalid: expected {expected}"
            ))),
        },
    }
}

/// `GOLDEN_TLS_ROOTS`: `amazon` (the roots of Amazon Trust Services, compiled in), `native` (the system's
/// store), or `auto`, the default: the system's store where it was configured (`SSL_CERT_FILE` or
/// `SSL_CERT_DIR` set: somebody means it) or in a China region (whose endpoints are not known to chain to
/// Amazon Trust Services), else Amazon's roots.
fn tls_roots(get: &impl Fn(&str) -> Option<String>) -> Result<TrustRoots, Error> {
    let set = |name: &str| get(name).is_some_and(|v| !v.trim().is_empty());
    let raw = get("GOLDEN_TLS_ROOTS").map(|v| v.trim().to_owned());
    match raw.as_deref().filter(|v| !v.is_empty()).unwrap_or("auto") {
        "amazon" => Ok(TrustRoots::Amazon),
        "native" => Ok(TrustRoots::Native),
        "auto" if set("SSL_CERT_FILE") || set("SSL_CERT_DIR") => Ok(TrustRoots::Native),
        "auto" if get("AWS_REGION").is_some_and(|r| r.trim().starts_with("cn-")) => {
            Ok(TrustRoots::Native)
        }
        "auto" => Ok(TrustRoots::Amazon),
        other => Err(Error::Config(format!(
            "GOLDEN_TLS_ROOTS={other:?} is invalid: expected auto, amazon (the roots of Amazon Trust \
             Services, compiled in) or native (the system's store)"
        ))),
    }
}

/// A lifecycle setting: its value, or (noted in `invalid`) its default when it does not parse.
fn lenient_setting<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    invalid: &mut Vec<(String, String)>,
    name: &str,
    default: T,
    valid: impl Fn(&T) -> bool,
    expected: &str,
) -> T {
    match get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
    {
        None => default,
        Some(raw) => match raw.parse::<T>() {
            Ok(v) if valid(&v) => v,
            _ => {
                invalid.push((
                    name.to_owned(),
                    format!("{name}={raw:?} is invalid: expected {expected}"),
                ));
                default
            }
        },
    }
}

impl Lifecycle {
    fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> (Self, Vec<(String, String)>) {
        let d = Lifecycle::default();
        let mut invalid = Vec::new();
        let bad = &mut invalid;
        let lifecycle = Self {
            prune_min_age_hours: lenient_setting(
                get,
                bad,
                "GOLDEN_PRUNE_MIN_AGE_HOURS",
                d.prune_min_age_hours,
                |v| *v >= 0,
                "hours, 0 or more",
            ),
            prune_max_deletes: lenient_setting(
                get,
                bad,
                "GOLDEN_PRUNE_MAX_DELETES",
                d.prune_max_deletes,
                |v| *v <= 10_000,
                "a count up to 10000",
            ),
            prune_dry_run: lenient_setting(
                get,
                bad,
                "GOLDEN_PRUNE_DRY_RUN",
                d.prune_dry_run,
                |_| true,
                "true or false",
            ),
            reap_margin_minutes: lenient_setting(
                get,
                bad,
                "GOLDEN_REAP_MARGIN_MINUTES",
                d.reap_margin_minutes,
                |v| *v >= 0,
                "minutes, 0 or more",
            ),
            rollout_window_minutes: lenient_setting(
                get,
                bad,
                "GOLDEN_ROLLOUT_WINDOW_MINUTES",
                d.rollout_window_minutes,
                |v| *v >= 1,
                "minutes, 1 or more",
            ),
            rollout_max_fraction: lenient_setting(
                get,
                bad,
                "GOLDEN_ROLLOUT_MAX_FRACTION",
                d.rollout_max_fraction,
                |v| *v > 0.0 && *v <= 1.0,
                "a fraction in (0, 1]",
            ),
            enforce_action: lenient_setting(
                get,
                bad,
                "GOLDEN_ENFORCE_ACTION",
                d.enforce_action,
                |v| matches!(v.as_str(), "terminate" | "stop" | "report"),
                "terminate, stop or report",
            ),
            max_failed_scheduled_bakes: lenient_setting(
                get,
                bad,
                "GOLDEN_MAX_FAILED_SCHEDULED_BAKES",
                d.max_failed_scheduled_bakes,
                |v| *v <= 100,
                "a count up to 100 (0 never disables a schedule)",
            ),
        };
        (lifecycle, invalid)
    }
}

/// The settings each lifecycle function uses, for [`Config::check`].
pub const PRUNE_SETTINGS: &[&str] = &[
    "GOLDEN_PRUNE_MIN_AGE_HOURS",
    "GOLDEN_PRUNE_MAX_DELETES",
    "GOLDEN_PRUNE_DRY_RUN",
];
pub const REAP_SETTINGS: &[&str] = &["GOLDEN_REAP_MARGIN_MINUTES"];
pub const ENFORCE_SETTINGS: &[&str] = &[
    "GOLDEN_ROLLOUT_WINDOW_MINUTES",
    "GOLDEN_ROLLOUT_MAX_FRACTION",
    "GOLDEN_ENFORCE_ACTION",
];
pub const GUARD_SETTINGS: &[&str] = &["GOLDEN_MAX_FAILED_SCHEDULED_BAKES"];

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
                "GOLDEN_BUCKET is not set; set it to the bucket that holds recipes and the manifest (the SAM stack's output BucketName)".into(),
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
        let (lifecycle, invalid) = Lifecycle::from_lookup(&get);
        let optional = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        Ok(Self {
            bucket,
            type_tag: type_tag.unwrap_or_else(|| tags::DEFAULT_TYPE_TAG.to_owned()),
            regions,
            state_machine_arn,
            stack_name: get("GOLDEN_STACK_NAME")
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            min_poll_seconds: parse_setting(
                &get,
                "GOLDEN_MIN_POLL_SECONDS",
                MIN_POLL_SECONDS,
                |v| (1..=3600).contains(v),
                "seconds, 1 to 3600",
            )?,
            tls_roots: tls_roots(&get)?,
            schedule_group: optional("GOLDEN_SCHEDULE_GROUP"),
            notifications_topic_arn: optional("GOLDEN_NOTIFICATIONS_TOPIC_ARN"),
            lifecycle,
            invalid,
        })
    }

    /// Fails naming every invalid setting among `names`: the ones the caller uses.
    pub fn check(&self, names: &[&str]) -> Result<(), Error> {
        let bad: Vec<&str> = self
            .invalid
            .iter()
            .filter(|(name, _)| names.contains(&name.as_str()))
            .map(|(_, message)| message.as_str())
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(bad.join("; ")))
        }
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
    fn tls_roots_are_amazons_unless_a_store_was_configured_or_the_region_is_chinas() {
        let roots = |pairs: &[(&str, &str)]| {
            let mut all = vec![("GOLDEN_BUCKET", "b-1"), ("AWS_REGION", "us-east-1")];
            all.extend_from_slice(pairs);
            Config::from_lookup(env(&all)).map(|c| c.tls_roots)
        };
        assert_eq!(roots(&[]).unwrap(), TrustRoots::Amazon);
        assert_eq!(
            roots(&[("GOLDEN_TLS_ROOTS", "auto")]).unwrap(),
            TrustRoots::Amazon
        );
        assert_eq!(
            roots(&[("SSL_CERT_FILE", "/etc/proxy-ca.pem")]).unwrap(),
            TrustRoots::Native
        );
        assert_eq!(
            roots(&[("SSL_CERT_DIR", "/etc/certs")]).unwrap(),
            TrustRoots::Native
        );
        assert_eq!(
            roots(&[("AWS_REGION", "cn-north-1")]).unwrap(),
            TrustRoots::Native
        );
        assert_eq!(
            roots(&[("GOLDEN_TLS_ROOTS", "native")]).unwrap(),
            TrustRoots::Native
        );
        // An explicit choice wins over what auto would infer.
        let amazon = [
            ("GOLDEN_TLS_ROOTS", "amazon"),
            ("SSL_CERT_FILE", "/etc/proxy-ca.pem"),
        ];
        assert_eq!(roots(&amazon).unwrap(), TrustRoots::Amazon);
        let err = roots(&[("GOLDEN_TLS_ROOTS", "system")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("GOLDEN_TLS_ROOTS=\"system\" is invalid: expected auto, amazon"),
            "{err}"
        );
    }

    #[test]
    fn invalid_bucket_name_is_rejected() {
        let err = Config::from_lookup(env(&[("GOLDEN_BUCKET", "Bad_Bucket")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid S3 bucket name"), "{err}");
    }

    #[test]
    fn lifecycle_knobs_default_safely_and_bad_values_fail_fast() {
        let c = Config::from_lookup(env(&[("GOLDEN_BUCKET", "b-1")])).unwrap();
        assert_eq!(c.lifecycle, Lifecycle::default());
        let c = Config::from_lookup(env(&[
            ("GOLDEN_BUCKET", "b-1"),
            ("GOLDEN_PRUNE_DRY_RUN", "true"),
            ("GOLDEN_ENFORCE_ACTION", "report"),
        ]))
        .unwrap();
        assert!(c.lifecycle.prune_dry_run);
        assert_eq!(c.lifecycle.enforce_action, "report");
        // A bad value fails the functions that use it, and only those: the bake stages still start.
        for (k, v, used_by, not_by) in [
            (
                "GOLDEN_ENFORCE_ACTION",
                "nuke",
                ENFORCE_SETTINGS,
                PRUNE_SETTINGS,
            ),
            (
                "GOLDEN_ROLLOUT_MAX_FRACTION",
                "1.5",
                ENFORCE_SETTINGS,
                REAP_SETTINGS,
            ),
            (
                "GOLDEN_PRUNE_MAX_DELETES",
                "-1",
                PRUNE_SETTINGS,
                ENFORCE_SETTINGS,
            ),
            (
                "GOLDEN_REAP_MARGIN_MINUTES",
                "soon",
                REAP_SETTINGS,
                PRUNE_SETTINGS,
            ),
        ] {
            let c = Config::from_lookup(env(&[("GOLDEN_BUCKET", "b-1"), (k, v)]))
                .expect("a bad lifecycle setting does not stop the config loading");
            let err = c.check(used_by).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "configuration: {k}={v:?} is invalid: expected {}",
                    match k {
                        "GOLDEN_ENFORCE_ACTION" => "terminate, stop or report",
                        "GOLDEN_ROLLOUT_MAX_FRACTION" => "a fraction in (0, 1]",
                        "GOLDEN_PRUNE_MAX_DELETES" => "a count up to 10000",
                        _ => "minutes, 0 or more",
                    }
                )
            );
            c.check(not_by).expect("other functions are unaffected");
            c.check(&[])
                .expect("a bake stage checks no lifecycle setting");
        }
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
