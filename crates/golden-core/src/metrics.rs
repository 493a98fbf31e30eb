//! CloudWatch metrics as Embedded Metric Format log lines: CloudWatch Logs turns a JSON line of this shape
//! into a metric, with no API call and no IAM grant. The stack's "no successful bake in N days" alarms
//! (infra/template.yaml, one per type) watch `Published`.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// The namespace of every golden-ami metric.
pub const NAMESPACE: &str = "golden-ami";

/// One `Published` = 1 for `image_type` in the stack `stack`, at `at`: the EMF document to print as one line.
pub fn published(stack: &str, image_type: &str, version: &str, at: DateTime<Utc>) -> Value {
    one_bake("Published", stack, image_type, version, at)
}

/// `Unchanged` = 1 for `image_type`: a bake ended early because its recipe and base AMI are those of a
/// version it would only make again (launch-builder). With `Published`, what the stack's per-type "no
/// bake" alarm sums.
pub fn unchanged(stack: &str, image_type: &str, version: &str, at: DateTime<Utc>) -> Value {
    one_bake("Unchanged", stack, image_type, version, at)
}

/// `metric` = 1 under the Stack and Type dimensions, with the version in the log event.
fn one_bake(
    metric: &str,
    stack: &str,
    image_type: &str,
    version: &str,
    at: DateTime<Utc>,
) -> Value {
    json!({
        "_aws": {
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Stack", "Type"]],
                "Metrics": [{"Name": metric, "Unit": "Count"}],
            }],
        },
        "Stack": stack,
        "Type": image_type,
        metric: 1,
        // Not a dimension: kept in the log event for who reads it.
        "Version": version,
    })
}

/// `PinnedLaunches` = `count` for `image_type`: instances found running an outdated image their launcher
/// still names (freshness's `PinnedLauncher`). Also under the Stack dimension alone, which the stack's alarm
/// watches for every type at once.
pub fn pinned_launches(stack: &str, image_type: &str, count: usize, at: DateTime<Utc>) -> Value {
    json!({
        "_aws": {
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Stack", "Type"], ["Stack"]],
                "Metrics": [{"Name": "PinnedLaunches", "Unit": "Count"}],
            }],
        },
        "Stack": stack,
        "Type": image_type,
        "PinnedLaunches": count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn published_is_an_emf_document_with_the_stack_and_type_dimensions() {
        let at = Utc
            .with_ymd_and_hms(2026, 11, 26, 1, 10, 0)
            .single()
            .expect("time");
        let doc = published("golden-ami", "bld-linux64", "20261126T011000Z", at);
        // Written out independently of the code: the shape CloudWatch documents for EMF.
        let expected = serde_json::json!({
            "_aws": {
                "Timestamp": 1_795_655_400_000_i64,
                "CloudWatchMetrics": [{
                    "Namespace": "golden-ami",
                    "Dimensions": [["Stack", "Type"]],
                    "Metrics": [{"Name": "Published", "Unit": "Count"}]
                }]
            },
            "Stack": "golden-ami",
            "Type": "bld-linux64",
            "Published": 1,
            "Version": "20261126T011000Z"
        });
        assert_eq!(doc, expected);
    }

    #[test]
    fn pinned_launches_is_counted_per_type_and_per_stack() {
        let at = Utc
            .with_ymd_and_hms(2026, 11, 26, 1, 10, 0)
            .single()
            .expect("time");
        let expected = serde_json::json!({
            "_aws": {
                "Timestamp": 1_795_655_400_000_i64,
                "CloudWatchMetrics": [{
                    "Namespace": "golden-ami",
                    "Dimensions": [["Stack", "Type"], ["Stack"]],
                    "Metrics": [{"Name": "PinnedLaunches", "Unit": "Count"}]
                }]
            },
            "Stack": "golden-ami",
            "Type": "tst-linux64",
            "PinnedLaunches": 3
        });
        assert_eq!(
            pinned_launches("golden-ami", "tst-linux64", 3, at),
            expected
        );
    }
}
