//! The `launch-builder` Lambda: the LaunchBuilder stage of the bake (docs/stages.md). Logic: golden_core::bake::launch.

use golden_core::bake::launch;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    golden_core::runtime::serve("LaunchBuilder", |services, input| async move {
        launch::handle(&services, input).await
    })
    .await
}
