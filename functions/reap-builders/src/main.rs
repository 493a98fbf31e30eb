//! The `reap-builders` Lambda (DESIGN.md "Lifecycle functions"): EventBridge events or a manual
//! `{"dryRun": true}`. Logic: golden_core::lifecycle::reap.

use golden_core::lifecycle::{reap, Trigger};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    golden_core::runtime::serve(
        "ReapBuilders",
        |services, event: serde_json::Value| async move {
            reap::handle(&services, Trigger::try_from(event)?).await
        },
    )
    .await
}
