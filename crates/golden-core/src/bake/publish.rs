//! publish: add the new version to the manifest (current, if newest) and update the SSM parameters.

use std::collections::BTreeMap;

use super::{BakeState, Published, Services};
use crate::error::{Error, Result};
use crate::manifest::{Edit, SharedWith, VersionEntry, VersionStatus};
use crate::publishing::{sync_parameters, update_manifest};

pub async fn handle(services: &Services, bake: BakeState) -> Result<Published> {
    bake.check(&services.config)?;
    let image = bake.image.as_ref().filter(|i| i.available).ok_or_else(|| {
        Error::InvalidInput(
            "publish needs an available image in $.image; the image stage has not finished".into(),
        )
    })?;
    let mut images = BTreeMap::from([(image.region.clone(), image.image_id.clone())]);
    for copy in bake.copies.iter().flatten() {
        if !copy.available {
            return Err(Error::InvalidInput(format!(
                "copy {} in {} is not available yet",
                copy.image_id, copy.region
            )));
        }
        images.insert(copy.region.clone(), copy.image_id.clone());
    }
    if let Some(missing) = bake
        .recipe
        .all_regions()
        .into_iter()
        .find(|r| !images.contains_key(r))
    {
        return Err(Error::InvalidInput(format!(
            "no image for region {missing}; the Distribute stage did not cover it"
        )));
    }
    share(services, &bake, &images).await?;
    let entry = VersionEntry {
        recipe_hash: Some(bake.recipe.content_hash()),
        shared_with: SharedWith::of(&bake.recipe.share),
        extra: Default::default(),
        version: bake.version.clone(),
        created_at: bake.version.created_at(),
        source_ami: bake.source_ami.clone(),
        execution: bake.execution_id.clone(),
        images: images.clone(),
        status: VersionStatus::Published,
        revoked_reason: None,
        revoked_at: None,
    };
    let keep = usize::try_from(bake.recipe.keep).unwrap_or(usize::MAX);
    let updated = update_manifest(services.store.as_ref(), services.now(), |m| {
        let added = m.add_version(&bake.image_type, entry.clone(), true)?;
        let trimmed = m.trim_history(&bake.image_type, keep);
        Ok(if added == Edit::Changed || !trimmed.is_empty() {
            Edit::Changed
        } else {
            Edit::Unchanged
        })
    })
    .await?;
    let parameters = sync_parameters(
        services.ssm.as_ref(),
        services.store.as_ref(),
        services.now(),
        &updated.manifest,
        &bake.image_type,
    )
    .await?;
    tracing::info!(
        r#type = %bake.image_type,
        version = %bake.version,
        generation = updated.manifest.generation,
        changed = updated.changed,
        ?parameters,
        "published"
    );
    if let Some(stack) = &services.config.stack_name {
        // An EMF line on stdout, as is: the `Published` metric the stack's per-type alarms watch.
        let metric = crate::metrics::published(
            stack,
            &bake.image_type,
            bake.version.as_ref(),
            services.now(),
        );
        println!("{metric}");
    }
    Ok(Published {
        version: bake.version,
        generation: updated.manifest.generation,
        images,
    })
}

/// Shares every region's image with the recipe's accounts, organizations and OUs, and its snapshots with
/// the accounts, before the version is published: a version in the manifest is usable by everyone it
/// names. Adding a permission that is there already changes nothing, so a retried publish is safe.
async fn share(
    services: &Services,
    bake: &BakeState,
    images: &BTreeMap<String, String>,
) -> Result<()> {
    let share = &bake.recipe.share;
    if share.is_empty() {
        return Ok(());
    }
    for (region, image_id) in images {
        services.ec2.share_image(region, image_id, share).await?;
        if share.accounts.is_empty() {
            continue;
        }
        let image = services
            .ec2
            .describe_image(region, image_id)
            .await?
            .ok_or_else(|| Error::ImageFailed {
                image_id: image_id.clone(),
                region: region.clone(),
                state: "missing".into(),
                reason: "it disappeared before it could be shared; was it deregistered by hand?"
                    .into(),
            })?;
        for snapshot_id in &image.snapshot_ids {
            services
                .ec2
                .share_snapshot(region, snapshot_id, &share.accounts)
                .await?;
        }
        tracing::info!(%region, %image_id, snapshots = image.snapshot_ids.len(), "shared");
    }
    Ok(())
}
