//! Which builders are stuck or orphaned (DESIGN.md "Lifecycle functions", reap-builders).
//!
//! A builder lives only as long as the bake execution that launched it. The bake's Catch terminates it on a
//! failure, but a TIMED_OUT or ABORTED execution runs no Catch, and a Lambda can die mid-stage; so the reaper
//! terminates a builder whose execution is no longer running, or that has outlived its recipe's build time
//! plus a margin. Terminating a builder that is still being provisioned ruins a bake, so facts we lack
//! (no launch time) keep it: a wrong keep costs an instance-hour, a wrong reap costs a bake.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Grace past a recipe's max build time before a builder counts as stuck (`GOLDEN_REAP_MARGIN_MINUTES`).
pub const DEFAULT_MARGIN_MINUTES: i64 = 30;
/// The max build time to pass when the builder's recipe cannot be read (the bake's default timeout).
pub const DEFAULT_MAX_BUILD_MINUTES: i64 = 180;

/// A builder instance (tag `golden-ami:role=builder`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Builder {
    pub region: String,
    pub instance_id: String,
    /// EC2 state name.
    pub state: String,
    pub launch_time: Option<DateTime<Utc>>,
    /// Tag `golden-ami:execution`: the ARN of the execution that launched it.
    pub execution: Option<String>,
    /// Tag `golden-ami:type`.
    pub image_type: Option<String>,
}

/// The state of a builder's (or a lock holder's) Step Functions execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum ExecutionState {
    Running,
    /// SUCCEEDED, FAILED, TIMED_OUT or ABORTED.
    Ended {
        status: String,
    },
    /// DescribeExecution said ExecutionDoesNotExist (e.g. its history expired). Only that error means
    /// this: a throttle or access error must skip the builder, not reap it.
    NotFound,
}

impl ExecutionState {
    /// From DescribeExecution's status, `None` when the execution does not exist. PENDING_REDRIVE counts as
    /// running: a redriven execution resumes with its builder.
    pub fn from_status(status: Option<&str>) -> ExecutionState {
        match status {
            None => ExecutionState::NotFound,
            Some("RUNNING" | "PENDING_REDRIVE") => ExecutionState::Running,
            Some(status) => ExecutionState::Ended {
                status: status.to_owned(),
            },
        }
    }
}

/// What to do with a builder, and why (for the log and the report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "camelCase")]
pub enum ReapVerdict {
    Keep { why: String },
    Reap { why: String },
}

fn keep(why: impl Into<String>) -> ReapVerdict {
    ReapVerdict::Keep { why: why.into() }
}

fn reap(why: impl Into<String>) -> ReapVerdict {
    ReapVerdict::Reap { why: why.into() }
}

/// Whether to terminate `builder`. `execution` is the state of `builder.execution` and is ignored when the
/// builder has no execution tag. `max_build` is the recipe's `max_build_minutes` (pass
/// [`DEFAULT_MAX_BUILD_MINUTES`] when unknown); `margin` is the grace past it (default
/// [`DEFAULT_MARGIN_MINUTES`]).
///
/// In order: terminated or shutting down: keep (already gone). Execution ended or not found: reap. No
/// execution tag: reap only when known to be older than `max_build + margin`. Execution running: reap only
/// when older than `max_build + margin` (stuck), else keep.
pub fn reap_verdict(
    builder: &Builder,
    execution: &ExecutionState,
    max_build: Duration,
    margin: Duration,
    now: DateTime<Utc>,
) -> ReapVerdict {
    if matches!(builder.state.as_str(), "terminated" | "shutting-down") {
        return keep(format!("already gone ({})", builder.state));
    }
    let limit = max_build + margin;
    let age = builder.launch_time.map(|t| now - t);
    let over = age.filter(|age| *age > limit);
    let limit_minutes = limit.num_minutes();
    let Some(arn) = &builder.execution else {
        return match (age, over) {
            (_, Some(age)) => reap(format!(
                "no execution tag and running for {}m, limit {limit_minutes}m",
                age.num_minutes()
            )),
            (Some(age), None) => keep(format!(
                "no execution tag, but launched {}m ago, within the limit of {limit_minutes}m",
                age.num_minutes()
            )),
            (None, _) => keep("no execution tag and no launch time: not guessing"),
        };
    };
    match execution {
        ExecutionState::Ended { status } => reap(format!("its execution {arn} ended ({status})")),
        ExecutionState::NotFound => reap(format!("its execution {arn} does not exist")),
        ExecutionState::Running => match over {
            Some(age) => reap(format!(
                "stuck: running for {}m, limit {limit_minutes}m (its execution {arn} is still running)",
                age.num_minutes()
            )),
            None => keep(format!("its execution {arn} is running")),
        },
    }
}

/// Whether a bake lock held by `holder_execution` may be released: its holder ended or does not exist.
/// A lock with an empty holder belongs to no execution, so it is dead too (it could never be released
/// otherwise, and would block the type's bakes for good).
pub fn lock_is_dead(holder_execution: &str, execution: &ExecutionState) -> bool {
    holder_execution.trim().is_empty()
        || matches!(
            execution,
            ExecutionState::Ended { .. } | ExecutionState::NotFound
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    const ARN: &str = "arn:aws:states:us-east-1:111122223333:execution:bake:abc";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    /// A running builder of execution `ARN`, launched `minutes` ago.
    fn builder(minutes: i64) -> Builder {
        Builder {
            region: "us-east-1".into(),
            instance_id: "i-0builder".into(),
            state: "running".into(),
            launch_time: Some(now() - Duration::minutes(minutes)),
            execution: Some(ARN.into()),
            image_type: Some("bld-linux64".into()),
        }
    }

    fn ended(status: &str) -> ExecutionState {
        ExecutionState::Ended {
            status: status.into(),
        }
    }

    #[test]
    fn reap_verdict_table() {
        // Limit: 180 + 30 = 210 minutes.
        type Given = fn(&mut Builder);
        let cases: Vec<(&str, Given, ExecutionState, ReapVerdict)> = vec![
            (
                "a running execution's builder within its time is kept",
                |_| {},
                ExecutionState::Running,
                keep(format!("its execution {ARN} is running")),
            ),
            (
                "exactly at the limit is not yet stuck",
                |b| b.launch_time = Some(now() - Duration::minutes(210)),
                ExecutionState::Running,
                keep(format!("its execution {ARN} is running")),
            ),
            (
                "a running execution's builder past max build + margin is stuck",
                |b| b.launch_time = Some(now() - Duration::minutes(211)),
                ExecutionState::Running,
                reap(format!(
                    "stuck: running for 211m, limit 210m (its execution {ARN} is still running)"
                )),
            ),
            (
                "a running execution's builder with no launch time is kept",
                |b| b.launch_time = None,
                ExecutionState::Running,
                keep(format!("its execution {ARN} is running")),
            ),
            (
                "a failed execution's builder is reaped",
                |_| {},
                ended("FAILED"),
                reap(format!("its execution {ARN} ended (FAILED)")),
            ),
            (
                "a timed-out execution's stopped builder is reaped",
                |b| b.state = "stopped".into(),
                ended("TIMED_OUT"),
                reap(format!("its execution {ARN} ended (TIMED_OUT)")),
            ),
            (
                "an aborted execution's builder with no launch time is reaped",
                |b| b.launch_time = None,
                ended("ABORTED"),
                reap(format!("its execution {ARN} ended (ABORTED)")),
            ),
            (
                "a builder of a missing execution is reaped",
                |_| {},
                ExecutionState::NotFound,
                reap(format!("its execution {ARN} does not exist")),
            ),
            (
                "a terminated builder is already gone",
                |b| b.state = "terminated".into(),
                ended("FAILED"),
                keep("already gone (terminated)"),
            ),
            (
                "a shutting-down builder is already gone",
                |b| b.state = "shutting-down".into(),
                ExecutionState::NotFound,
                keep("already gone (shutting-down)"),
            ),
            (
                "no execution tag and young: kept, whatever the state passed",
                |b| b.execution = None,
                ExecutionState::NotFound,
                keep("no execution tag, but launched 5m ago, within the limit of 210m"),
            ),
            (
                "no execution tag and old: reaped",
                |b| {
                    b.execution = None;
                    b.launch_time = Some(now() - Duration::minutes(300));
                },
                ExecutionState::NotFound,
                reap("no execution tag and running for 300m, limit 210m"),
            ),
            (
                "no execution tag and no launch time: kept",
                |b| {
                    b.execution = None;
                    b.launch_time = None;
                },
                ExecutionState::NotFound,
                keep("no execution tag and no launch time: not guessing"),
            ),
        ];
        for (name, given, execution, expected) in cases {
            let mut b = builder(5);
            given(&mut b);
            let verdict = reap_verdict(
                &b,
                &execution,
                Duration::minutes(DEFAULT_MAX_BUILD_MINUTES),
                Duration::minutes(DEFAULT_MARGIN_MINUTES),
                now(),
            );
            assert_eq!(verdict, expected, "{name}");
        }
    }

    #[test]
    fn lock_is_dead_only_when_its_holder_is_gone() {
        assert!(!lock_is_dead(ARN, &ExecutionState::Running));
        assert!(lock_is_dead(ARN, &ended("SUCCEEDED")));
        assert!(lock_is_dead(ARN, &ended("ABORTED")));
        assert!(lock_is_dead(ARN, &ExecutionState::NotFound));
        assert!(lock_is_dead(" ", &ExecutionState::Running));
    }

    #[test]
    fn execution_state_from_describe_execution_status() {
        assert_eq!(ExecutionState::from_status(None), ExecutionState::NotFound);
        assert_eq!(
            ExecutionState::from_status(Some("RUNNING")),
            ExecutionState::Running
        );
        assert_eq!(
            ExecutionState::from_status(Some("PENDING_REDRIVE")),
            ExecutionState::Running
        );
        assert_eq!(
            ExecutionState::from_status(Some("TIMED_OUT")),
            ended("TIMED_OUT")
        );
    }

    #[test]
    fn verdicts_serialize_with_a_tag() {
        assert_eq!(
            serde_json::to_value(reap("x")).unwrap(),
            serde_json::json!({"verdict": "reap", "why": "x"})
        );
        assert_eq!(
            serde_json::to_value(ended("FAILED")).unwrap(),
            serde_json::json!({"state": "ended", "status": "FAILED"})
        );
    }

    proptest! {
        #[test]
        fn a_builder_of_a_running_execution_within_its_time_is_never_reaped(
            max_build in 0i64..600,
            margin in 0i64..120,
            age_share in 0.0f64..=1.0,
            known_launch in any::<bool>(),
            state in prop::sample::select(vec!["pending", "running", "stopping", "stopped", "terminated", "shutting-down"]),
        ) {
            let limit = max_build + margin;
            let mut b = builder((limit as f64 * age_share).floor() as i64);
            b.state = state.into();
            if !known_launch {
                b.launch_time = None;
            }
            let verdict = reap_verdict(&b, &ExecutionState::Running, Duration::minutes(max_build), Duration::minutes(margin), now());
            prop_assert!(matches!(verdict, ReapVerdict::Keep { .. }), "{:?}", verdict);
        }

        #[test]
        fn a_builder_without_launch_time_or_execution_tag_is_never_reaped(
            state in prop::sample::select(vec!["pending", "running", "stopping", "stopped"]),
            max_build in 0i64..600,
        ) {
            let mut b = builder(0);
            b.state = state.into();
            b.launch_time = None;
            b.execution = None;
            let verdict = reap_verdict(&b, &ExecutionState::NotFound, Duration::minutes(max_build), Duration::zero(), now());
            prop_assert!(matches!(verdict, ReapVerdict::Keep { .. }), "{:?}", verdict);
        }
    }
}
