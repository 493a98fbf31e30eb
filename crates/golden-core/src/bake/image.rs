//! create-image and image-status: the golden image of the builder, and waiting for an image.

use super::{image_name, image_tags, BakeState, ImageRef, Poll, Services};
use crate::error::{Error, Result};
use crate::ports::Image;

/// How long an image (or a copy) may take to become available.
pub(crate) const IMAGE_MINUTES: u32 = 120;

pub async fn create(services: &Services, bake: BakeState) -> Result<ImageRef> {
    bake.check(&services.config)?;
    let region = &bake.recipe.build_region;
    let name = image_name(&bake.image_type, &bake.version);
    let tags = image_tags(
        &bake.recipe,
        &bake.version,
        &bake.execution_id,
        &bake.source_ami,
    );
    let image_id = match usable(services.ec2.find_images(region, Some(&name), &[]).await?) {
        Some(image) => {
            tracing::info!(image_id = %image.image_id, %name, "image already created by this execution");
            image.image_id
        }
        None => {
            let description = format!(
                "golden-ami {} {} from {}",
                bake.image_type, bake.version, bake.source_ami
            );
            // Tagged as it is created, so a failure from here on can find and discard the image and its
            // snapshots by their execution tag.
            match services
                .ec2
                .create_image(
                    region,
                    &bake.builder.instance_id,
                    &name,
                    &description,
                    &tags,
                )
                .await
            {
                Ok(id) => id,
                // A concurrent retry won the race for the name: use its image.
                Err(Error::Aws(e)) if e.code_is("InvalidAMIName.Duplicate") => {
                    usable(services.ec2.find_images(region, Some(&name), &[]).await?)
                        .map(|i| i.image_id)
                        .ok_or(Error::Aws(e))?
                }
                Err(e) => return Err(e),
            }
        }
    };
    tracing::info!(r#type = %bake.image_type, version = %bake.version, image_id = %image_id, %region, "image requested");
    Ok(ImageRef {
        image_id,
        name,
        region: region.clone(),
        state: "pending".into(),
        available: false,
        poll_seconds: bake.poll_seconds,
        poll: Poll::new(IMAGE_MINUTES, bake.poll_seconds, bake.deadline),
    })
}

/// An image worth reusing: one that is not failed or gone.
pub(crate) fn usable(images: Vec<Image>) -> Option<Image> {
    images
        .into_iter()
        .find(|i| matches!(i.state.as_str(), "pending" | "available"))
}

pub async fn status(services: &Services, mut image: ImageRef) -> Result<ImageRef> {
    image.check(&services.config, "")?;
    let what = format!(
        "image {} in {} to become available",
        image.image_id, image.region
    );
    let Some(found) = services
        .ec2
        .describe_image(&image.region, &image.image_id)
        .await?
    else {
        // EC2 is eventually consistent: a just-created image or copy may not be visible yet.
        if image.poll.attempts < super::UNSEEN_CHECKS {
            image.poll.tick(&what, services.now())?;
            return Ok(image);
        }
        return Err(Error::ImageFailed {
            image_id: image.image_id,
            region: image.region,
            state: "missing".into(),
            reason: "it no longer exists; was it deregistered by hand?".into(),
        });
    };
    image.state = found.state.clone();
    match found.state.as_str() {
        "available" => image.available = true,
        "pending" => image.poll.tick(&what, services.now())?,
        other => {
            return Err(Error::ImageFailed {
                image_id: image.image_id,
                region: image.region,
                state: other.to_owned(),
                reason: found
                    .state_reason
                    .unwrap_or_else(|| "no reason given".into()),
            })
        }
    }
    Ok(image)
}
