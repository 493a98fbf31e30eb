//! The `create-image` Lambda: the CreateImage stage of the bake (docs/stages.md). Logic: golden_core::bake::image.

use golden_core::bake::image;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    golden_core::runtime::serve("CreateImage", |services, input| async move {
        image::create(&services, input).await
    })
    .await
}
