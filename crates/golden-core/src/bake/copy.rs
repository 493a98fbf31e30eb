//! copy-image: the golden image into one more region (one Map iteration).

use serde::Deserialize;

use super::image::{usable, IMAGE_MINUTES};
use super::{client_token, ImageRef, Poll, Services};
use crate::error::{Error, Result};
use crate::ports::copyable_tags;
use crate::recipe::Recipe;
use crate::version::Version;

/// One item of the Distribute Map (docs/stages.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopyItem {
    pub region: String,
    pub source: ImageRef,
    #[serde(rename = "type")]
    pub image_type: String,
    pub version: Version,
    pub execution_id: String,
    pub poll_seconds: u32,
    pub deadline: chrono::DateTime<chrono::Utc>,
    pub recipe: Recipe,
}

pub async fn handle(services: &Services, item: CopyItem) -> Result<ImageRef> {
    crate::ids::region(&services.config, "region", &item.region)?;
    item.source.check(&services.config, "source.")?;
    crate::ids::execution_arn("executionId", &item.execution_id)?;
    super::check_recipe_regions(&services.config, &item.recipe)?;
    let region = &item.region;
    if region == &item.source.region {
        return Err(Error::InvalidInput(format!(
            "cannot copy {} into its own region {region}",
            item.source.image_id
        )));
    }
    let name = item.source.name.clone();
    let image_id = match usable(services.ec2.find_images(region, Some(&name), &[]).await?) {
        Some(image) => image.image_id,
        None => {
            // CopyImage copies no tags: the copy and its snapshots get the source's as they are created.
            let source = services
                .ec2
                .describe_image(&item.source.region, &item.source.image_id)
                .await?
                .ok_or_else(|| Error::ImageFailed {
                    image_id: item.source.image_id.clone(),
                    region: item.source.region.clone(),
                    state: "missing".into(),
                    reason: "the source of the copy no longer exists".into(),
                })?;
            let spec = crate::ports::CopySpec {
                source_region: item.source.region.clone(),
                source_image_id: item.source.image_id.clone(),
                name: name.clone(),
                description: format!(
                    "golden-ami {} {} (copy of {} from {})",
                    item.image_type, item.version, item.source.image_id, item.source.region
                ),
                client_token: client_token(&item.execution_id, &format!("copy {region}")),
                kms_key_id: item.recipe.kms_key_for(region).map(str::to_owned),
                tags: copyable_tags(source.tags),
            };
            services.ec2.copy_image(region, &spec).await?
        }
    };
    tracing::info!(r#type = %item.image_type, version = %item.version, image_id = %image_id, %region, "copy requested");
    Ok(ImageRef {
        image_id,
        name,
        region: region.clone(),
        state: "pending".into(),
        available: false,
        poll_seconds: item.poll_seconds,
        poll: Poll::new(IMAGE_MINUTES, item.poll_seconds, item.deadline),
    })
}
