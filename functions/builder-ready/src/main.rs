//! The `builder-ready` Lambda: the CheckBuilder stage of the bake (docs/stages.md). Logic: golden_core::bake::ready.

use golden_core::bake::ready;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    golden_core::runtime::serve("CheckBuilder", |services, input| async move {
        ready::handle(&services, input).await
    })
    .await
}
