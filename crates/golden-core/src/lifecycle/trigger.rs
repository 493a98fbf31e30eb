//! What woke a lifecycle function: an EventBridge event (schedule, EC2 state change, Step Functions status
//! change) or a person invoking it by hand (`{}` or `{"dryRun": true}` plans; `{"dryRun": false}` acts).

use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use serde::Deserialize;

use crate::error::{Error, Result};

pub const SCHEDULED: &str = "Scheduled Event";
pub const EC2_STATE_CHANGE: &str = "EC2 Instance State-change Notification";
pub const SFN_STATUS_CHANGE: &str = "Step Functions Execution Status Change";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// An EventBridge schedule: sweep everything.
    Schedule,
    /// An instance changed state.
    InstanceState {
        region: String,
        instance_id: String,
        state: String,
    },
    /// A Step Functions execution ended (or started).
    ExecutionStatus {
        execution_arn: String,
        status: String,
    },
    /// Invoked by hand: sweep everything, deleting or stopping nothing if `dry_run` (the default: only an
    /// explicit `{"dryRun": false}` acts).
    Manual { dry_run: bool },
    /// An SQS batch of EventBridge events (prune's PruneEventsQueue), each record's body one event.
    Batch(Vec<Trigger>),
}

/// An SQS record as Lambda delivers it; only what a batch needs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SqsRecord {
    #[serde(default)]
    event_source: String,
    body: String,
}

#[derive(Debug, Deserialize)]
struct SqsBatch {
    #[serde(rename = "Records")]
    records: Vec<SqsRecord>,
}

#[derive(Debug, Deserialize)]
struct InstanceStateDetail {
    #[serde(rename = "instance-id")]
    instance_id: String,
    state: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecutionDetail {
    execution_arn: String,
    status: String,
}

/// A payload without `detail-type`: a person's request. Only an explicit `"dryRun": false` acts; `{}` (a
/// console test event) plans and reports.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ManualRequest {
    #[serde(default = "dry_by_default")]
    dry_run: bool,
}

pub(crate) fn dry_by_default() -> bool {
    true
}

impl TryFrom<serde_json::Value> for Trigger {
    type Error = Error;

    fn try_from(payload: serde_json::Value) -> Result<Self> {
        if !payload.is_object() {
            return Err(Error::InvalidInput(format!(
                "expected a JSON object (an EventBridge event, or a manual request {{\"dryRun\": bool}}), not {payload}"
            )));
        }
        if payload.get("Records").is_some() {
            let batch: SqsBatch = serde_json::from_value(payload)
                .map_err(|e| Error::InvalidInput(format!("malformed SQS batch: {e}")))?;
            let mut events = Vec::with_capacity(batch.records.len());
            for (i, record) in batch.records.into_iter().enumerate() {
                if record.event_source != "aws:sqs" {
                    return Err(Error::InvalidInput(format!(
                        "Records[{i}] is from {:?}, not aws:sqs",
                        record.event_source
                    )));
                }
                let body: serde_json::Value = serde_json::from_str(&record.body).map_err(|e| {
                    Error::InvalidInput(format!("Records[{i}].body is not JSON: {e}"))
                })?;
                if body.get("detail-type").is_none() {
                    return Err(Error::InvalidInput(format!(
                        "Records[{i}].body is not an EventBridge event (no detail-type)"
                    )));
                }
                events.push(Trigger::try_from(body)?);
            }
            return Ok(Trigger::Batch(events));
        }
        if payload.get("detail-type").is_none() {
            let manual: ManualRequest = serde_json::from_value(payload).map_err(|e| {
                Error::InvalidInput(format!(
                    "neither an EventBridge event (no detail-type) nor a manual request {{\"dryRun\": bool}} (a dry run unless \"dryRun\": false): {e}"
                ))
            })?;
            return Ok(Trigger::Manual {
                dry_run: manual.dry_run,
            });
        }
        let event: CloudWatchEvent = serde_json::from_value(payload)
            .map_err(|e| Error::InvalidInput(format!("malformed EventBridge event: {e}")))?;
        let detail_type = event.detail_type.clone().unwrap_or_default();
        let detail = event.detail.clone().unwrap_or(serde_json::Value::Null);
        match detail_type.as_str() {
            SCHEDULED => Ok(Trigger::Schedule),
            EC2_STATE_CHANGE => {
                let d: InstanceStateDetail = serde_json::from_value(detail).map_err(|e| {
                    Error::InvalidInput(format!("EC2 state-change event without instance-id/state: {e}"))
                })?;
                let region = event.region.clone().filter(|r| !r.is_empty()).ok_or_else(|| {
                    Error::InvalidInput("EC2 state-change event without a region".into())
                })?;
                if !crate::recipe::is_region_name(&region) {
                    return Err(Error::InvalidInput(format!(
                        "EC2 state-change event: region {region:?} is not a region name like us-east-1"
                    )));
                }
                crate::ids::instance("detail.instance-id", &d.instance_id)?;
                Ok(Trigger::InstanceState { region, instance_id: d.instance_id, state: d.state })
            }
            SFN_STATUS_CHANGE => {
                let d: ExecutionDetail = serde_json::from_value(detail).map_err(|e| {
                    Error::InvalidInput(format!(
                        "Step Functions status-change event without executionArn/status: {e}"
                    ))
                })?;
                crate::ids::execution_arn("detail.executionArn", &d.execution_arn)?;
                Ok(Trigger::ExecutionStatus { execution_arn: d.execution_arn, status: d.status })
            }
            other => Err(Error::InvalidInput(format!(
                "unexpected event {other:?} from {:?}; this function handles \"{SCHEDULED}\", \"{EC2_STATE_CHANGE}\" and \"{SFN_STATUS_CHANGE}\"",
                event.source.unwrap_or_default()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_sqs_batch_is_its_events_and_a_bad_record_fails_the_batch() {
        let event = json!({ "version": "0", "id": "e-1", "detail-type": EC2_STATE_CHANGE, "source": "aws.ec2",
            "account": "123456789012", "time": "2026-11-25T01:00:00Z", "region": "us-west-2",
            "resources": [], "detail": { "instance-id": "i-0123456789abcdef0", "state": "terminated" } });
        let record =
            |body: String| json!({ "messageId": "m-1", "eventSource": "aws:sqs", "body": body });
        let batch = json!({ "Records": [record(event.to_string()), record(event.to_string())] });
        let expected = Trigger::InstanceState {
            region: "us-west-2".into(),
            instance_id: "i-0123456789abcdef0".into(),
            state: "terminated".into(),
        };
        assert_eq!(
            Trigger::try_from(batch).unwrap(),
            Trigger::Batch(vec![expected.clone(), expected])
        );
        for (bad, says) in [
            (
                json!({ "Records": [record("{".into())] }),
                "Records[0].body is not JSON",
            ),
            (
                json!({ "Records": [record("{}".into())] }),
                "Records[0].body is not an EventBridge event",
            ),
            (
                json!({ "Records": [{ "eventSource": "aws:sns", "body": event.to_string() }] }),
                "Records[0] is from \"aws:sns\"",
            ),
            (json!({ "Records": 3 }), "malformed SQS batch"),
        ] {
            let err = Trigger::try_from(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    fn envelope(detail_type: &str, detail: serde_json::Value) -> serde_json::Value {
        json!({ "version": "0", "id": "e-1", "detail-type": detail_type, "source": "aws.ec2",
                "account": "123456789012", "time": "2026-11-25T01:00:00Z", "region": "us-west-2",
                "resources": [], "detail": detail })
    }

    #[test]
    fn each_event_kind_is_recognised() {
        assert_eq!(
            Trigger::try_from(envelope(SCHEDULED, json!({}))).unwrap(),
            Trigger::Schedule
        );
        assert_eq!(
            Trigger::try_from(envelope(
                EC2_STATE_CHANGE,
                json!({"instance-id": "i-0123456789abcdef0", "state": "running"})
            ))
            .unwrap(),
            Trigger::InstanceState {
                region: "us-west-2".into(),
                instance_id: "i-0123456789abcdef0".into(),
                state: "running".into()
            }
        );
        assert_eq!(
            Trigger::try_from(envelope(
                SFN_STATUS_CHANGE,
                json!({"executionArn": "arn:aws:states:us-west-2:123456789012:execution:bake:b-1", "status": "ABORTED"})
            ))
            .unwrap(),
            Trigger::ExecutionStatus {
                execution_arn: "arn:aws:states:us-west-2:123456789012:execution:bake:b-1".into(),
                status: "ABORTED".into()
            }
        );
        assert_eq!(
            Trigger::try_from(json!({"dryRun": true})).unwrap(),
            Trigger::Manual { dry_run: true }
        );
    }

    #[test]
    fn a_manual_run_acts_only_on_an_explicit_dry_run_false() {
        // A console test event ({}) plans and reports; acting must be asked for.
        assert_eq!(
            Trigger::try_from(json!({})).unwrap(),
            Trigger::Manual { dry_run: true }
        );
        assert_eq!(
            Trigger::try_from(json!({"dryRun": false})).unwrap(),
            Trigger::Manual { dry_run: false }
        );
        for payload in [
            json!(null),
            json!("run"),
            json!([]),
            json!({"dryRun": "false"}),
            json!({"dry_run": false}),
        ] {
            let err = Trigger::try_from(payload.clone())
                .expect_err("neither an event nor a manual request");
            assert_eq!(err.error_type(), "InvalidInput", "{payload}: {err}");
        }
    }

    #[test]
    fn malformed_or_unexpected_events_are_clear_errors() {
        let cases = [
            (
                envelope("AWS API Call via CloudTrail", json!({})),
                "unexpected event",
            ),
            (
                envelope(EC2_STATE_CHANGE, json!({"state": "running"})),
                "without instance-id",
            ),
            (
                envelope(SFN_STATUS_CHANGE, json!({"status": "FAILED"})),
                "without executionArn",
            ),
            (json!({"dryrun": true}), "manual request"),
            (json!([1, 2]), "manual request"),
            (
                envelope(
                    EC2_STATE_CHANGE,
                    json!({"instance-id": "i-1; rm", "state": "running"}),
                ),
                "detail.instance-id \"i-1; rm\" is not an instance id",
            ),
            (
                envelope(
                    SFN_STATUS_CHANGE,
                    json!({"executionArn": "arn:x", "status": "FAILED"}),
                ),
                "detail.executionArn \"arn:x\" is not a Step Functions execution ARN",
            ),
            (
                {
                    let mut e = envelope(
                        EC2_STATE_CHANGE,
                        json!({"instance-id": "i-0123456789abcdef0", "state": "running"}),
                    );
                    e["region"] = json!("Moon");
                    e
                },
                "region \"Moon\" is not a region name",
            ),
        ];
        for (payload, expected) in cases {
            let err = Trigger::try_from(payload).unwrap_err();
            assert_eq!(err.error_type(), "InvalidInput");
            assert!(err.to_string().contains(expected), "{err}");
        }
    }
}
