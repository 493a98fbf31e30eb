//! The `image-status` Lambda: the ImageStatus stage of the bake (docs/stages.md). Logic: golden_core::bake::image.

use golden_core::bake::image;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    golden_core::runtime::serve("ImageStatus", |services, input| async move {
        image::status(&services, input).await
    })
    .await
}
