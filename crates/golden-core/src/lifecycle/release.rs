//! revoke and promote: move a type's current version, as conditional writes of the manifest, then point
//! the SSM parameters at the new current image. The same code serves the CLI and the tests.

use super::recipes;
use crate::bake::Services;
use crate::error::Result;
use crate::publishing::{sync_parameters, update_manifest, Updated};
use crate::version::Version;

/// The regions a version must have an image in to become current: the recipe's, when it is pushed.
async fn required_regions(services: &Services, image_type: &str) -> Vec<String> {
    let recipes = recipes(services, [image_type.to_owned()]).await;
    recipes
        .get(image_type)
        .map(|r| r.all_regions())
        .unwrap_or_default()
}

/// Marks `version` revoked; if it was current, rolls current back to the newest older published version
/// with images in every required region (refusing to leave none unless `force`).
pub async fn revoke(
    services: &Services,
    image_type: &str,
    version: &Version,
    reason: &str,
    force: bool,
) -> Result<Updated> {
    let regions = required_regions(services, image_type).await;
    let now = services.now();
    let updated = update_manifest(services.store.as_ref(), now, |m| {
        m.revoke(image_type, version, reason, now, &regions, force)
    })
    .await?;
    let parameters = sync_parameters(services.ssm.as_ref(), &updated.manifest, image_type).await?;
    tracing::info!(r#type = %image_type, version = %version, changed = updated.changed, ?parameters, "revoked");
    Ok(updated)
}

/// Makes a published `version` (with images in every required region) the current one.
pub async fn promote(services: &Services, image_type: &str, version: &Version) -> Result<Updated> {
    let regions = required_regions(services, image_type).await;
    let updated = update_manifest(services.store.as_ref(), services.now(), |m| {
        m.promote(image_type, version, &regions)
    })
    .await?;
    let parameters = sync_parameters(services.ssm.as_ref(), &updated.manifest, image_type).await?;
    tracing::info!(r#type = %image_type, version = %version, changed = updated.changed, ?parameters, "promoted");
    Ok(updated)
}
