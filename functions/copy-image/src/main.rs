//! The `copy-image` Lambda: the CopyImage stage of the bake (docs/stages.md). Logic: golden_core::bake::copy.

use golden_core::bake::copy;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    golden_core::runtime::serve("CopyImage", |services, input| async move {
        copy::handle(&services, input).await
    })
    .await
}
