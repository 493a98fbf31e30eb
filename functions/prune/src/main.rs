//! The `prune` Lambda (DESIGN.md "Lifecycle functions"): EventBridge events or a manual
//! `{"dryRun": true}`, and SQS batches of EC2 `terminated` events (PruneEventsQueue). Logic: golden_core::lifecycle::prune.

use golden_core::lifecycle::{prune, Trigger};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    golden_core::runtime::serve("Prune", |services, event: serde_json::Value| async move {
        // An SQS batch of terminated-instance events is coalesced; anything else is one run.
        let report = match Trigger::try_from(event)? {
            Trigger::Batch(events) => {
                serde_json::to_value(prune::handle_batch(&services, events).await?)
            }
            trigger => serde_json::to_value(prune::handle(&services, trigger).await?),
        };
        report.map_err(|e| golden_core::Error::InvalidInput(format!("report: {e}")))
    })
    .await
}
