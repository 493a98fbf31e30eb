//! The `schedule-guard` Lambda (docs/stages.md "Failing schedules"): Step Functions status-change events of
//! bakes that ended badly, or a manual `{"type": T}` report. Logic: golden_core::lifecycle::guard.

use std::sync::Arc;

use golden_core::aws::{AwsScheduler, AwsSns};
use golden_core::lifecycle::guard::{self, GuardPorts, GuardRequest};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    golden_core::runtime::serve_with(
        "ScheduleGuard",
        |sdk| GuardPorts {
            schedules: Arc::new(AwsScheduler::new(sdk)),
            notifier: Arc::new(AwsSns::new(sdk)),
        },
        |services, ports, event: serde_json::Value| async move {
            guard::handle(&services, &ports, GuardRequest::try_from(event)?).await
        },
    )
    .await
}
