//! The `publish` Lambda: the Publish stage of the bake (docs/stages.md). Logic: golden_core::bake::publish.

use golden_core::bake::publish;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    golden_core::runtime::serve("Publish", |services, input| async move {
        publish::handle(&services, input).await
    })
    .await
}
