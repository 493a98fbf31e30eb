//! The `prune` Lambda (DESIGN.md "Lifecycle functions"): EventBridge events or a manual
//! `{"dryRun": true}`. Logic: golden_core::lifecycle::prune.

use golden_core::lifecycle::{prune, Trigger};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    golden_core::runtime::serve("Prune", |services, event: serde_json::Value| async move {
        prune::handle(&services, Trigger::try_from(event)?).await
    })
    .await
}
