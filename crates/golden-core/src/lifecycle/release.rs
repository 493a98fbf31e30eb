//! revoke and promote: move a type's current version, as conditional writes of the manifest, then point
//! the SSM parameters at the new current image. The same code serves the CLI and the tests.

use super::recipes;
use crate::bake::Services;
use crate::error::Result;
use crate::publishing::{sync_parameters, update_manifest, Updated};
use crate::version::Version;

/// The regions a version must have an image in to become current: the recipe's, when it is pushed.
pub async fn required_regions(services: &Services, image_type: &str) -> Vec<String> {
    let recipes = recipes(services, [image_type.to_owned()]).await;
    recipes
        .get(image_type)
        .map(|r| r.all_regions())
        .unwrap_or_default()
}

/// What a revoke did besides the manifest.
#[derive(Debug)]
pub struct Revoked {
    pub updated: Updated,
    /// What happened to the SSM parameters ("region:name=image" or "region:name deleted ...").
    pub parameters: Vec<String>,
    /// "region:image" marked deprecated in EC2.
    pub deprecated: Vec<String>,
}

/// Marks `version` revoked; if it was current, rolls current back to the newest older published version
/// with images in every required region (refusing to leave none unless `force`, which then deletes the
/// type's parameters). The version's images are marked deprecated in EC2 too, so someone launching by
/// hand sees it; the manifest is the record, so a failure there is an error to retry, after the manifest
/// and the parameters are already right.
pub async fn revoke(
    services: &Services,
    image_type: &str,
    version: &Version,
    reason: &str,
    force: bool,
) -> Result<Revoked> {
    let regions = required_regions(services, image_type).await;
    let now = services.now();
    let updated = update_manifest(services.store.as_ref(), now, |m| {
        m.revoke(image_type, version, reason, now, &regions, force)
    })
    .await?;
    let parameters = sync_parameters(
        services.ssm.as_ref(),
        services.store.as_ref(),
        now,
        &updated.manifest,
        image_type,
    )
    .await?;
    // EC2 refuses a deprecation time in the past; a minute from now is the earliest it takes.
    let at = now + chrono::TimeDelta::minutes(1);
    let mut deprecated = Vec::new();
    if let Some(entry) = updated.manifest.find(image_type, version) {
        for (region, image_id) in &entry.images {
            services.ec2.deprecate_image(region, image_id, at).await?;
            deprecated.push(format!("{region}:{image_id}"));
        }
    }
    tracing::info!(r#type = %image_type, version = %version, changed = updated.changed, ?parameters, ?deprecated, "revoked");
    Ok(Revoked {
        updated,
        parameters,
        deprecated,
    })
}

/// Makes a published `version` (with images in every required region) the current one; with `pin`, newer
/// bakes then leave it current until [`unpin`].
pub async fn promote(
    services: &Services,
    image_type: &str,
    version: &Version,
    pin: bool,
) -> Result<Updated> {
    let regions = required_regions(services, image_type).await;
    let now = services.now();
    let updated = update_manifest(services.store.as_ref(), now, |m| {
        m.promote(image_type, version, &regions, pin.then_some(now))
    })
    .await?;
    let parameters = sync_parameters(
        services.ssm.as_ref(),
        services.store.as_ref(),
        services.now(),
        &updated.manifest,
        image_type,
    )
    .await?;
    tracing::info!(r#type = %image_type, version = %version, pin, changed = updated.changed, ?parameters, "promoted");
    Ok(updated)
}

/// Lets newer bakes become current again. Current itself does not move, so the parameters stay as they are.
pub async fn unpin(services: &Services, image_type: &str) -> Result<Updated> {
    let updated = update_manifest(services.store.as_ref(), services.now(), |m| {
        m.unpin(image_type)
    })
    .await?;
    tracing::info!(r#type = %image_type, changed = updated.changed, "unpinned");
    Ok(updated)
}
