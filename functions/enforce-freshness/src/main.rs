//! The `enforce-freshness` Lambda (DESIGN.md "Lifecycle functions"): EventBridge events or a manual
//! `{"dryRun": true}`. Logic: golden_core::lifecycle::enforce.

use golden_core::lifecycle::{enforce, Trigger};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    golden_core::runtime::serve(
        "EnforceFreshness",
        |services, event: serde_json::Value| async move {
            enforce::handle(&services, Trigger::try_from(event)?).await
        },
    )
    .await
}
