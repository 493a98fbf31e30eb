//! The `terminate-builder` Lambda: the TerminateBuilder stage of the bake (docs/stages.md). Logic: golden_core::bake::cleanup.

use golden_core::bake::cleanup;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    golden_core::runtime::serve("TerminateBuilder", |services, input| async move {
        cleanup::handle(&services, input).await
    })
    .await
}
