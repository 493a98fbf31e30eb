//! Reading and updating the published manifest (`s3://$GOLDEN_BUCKET/manifest.json`) and the SSM
//! parameters that mirror it.
//!
//! Every write is conditional (If-Match the ETag read, or If-None-Match when creating it), so concurrent
//! publishers, revokes and promotes never lose each other's updates: the loser re-reads and re-applies its
//! edit. A manifest that does not parse is never overwritten.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::manifest::{Edit, Manifest, ManifestError};
use crate::ports::{ObjectStore, PutCondition, PutOutcome, Ssm};

pub const MANIFEST_KEY: &str = "manifest.json";
/// Conditional writes tried before giving up with `ManifestConflict`.
const MAX_WRITES: u32 = 8;

/// The parameter that holds a type's current image in each region, for `resolve:ssm:` in launch templates.
pub fn parameter_name(image_type: &str) -> String {
    format!("/golden-ami/{image_type}/current")
}

/// The manifest and its ETag; an absent manifest is an empty one (and no ETag).
pub async fn read_manifest(
    store: &dyn ObjectStore,
    now: DateTime<Utc>,
) -> Result<(Manifest, Option<String>)> {
    match store.get(MANIFEST_KEY).await? {
        None => Ok((Manifest::empty(now), None)),
        Some(object) => {
            let manifest =
                Manifest::parse(&object.body).map_err(|source| Error::ManifestCorrupt {
                    bucket: store.bucket().to_owned(),
                    key: MANIFEST_KEY.to_owned(),
                    source,
                })?;
            Ok((manifest, Some(object.etag)))
        }
    }
}

/// What an update did.
#[derive(Debug, Clone, PartialEq)]
pub struct Updated {
    pub manifest: Manifest,
    pub changed: bool,
}

/// Applies `edit` to the manifest with a conditional write, re-reading and re-applying on a lost race.
pub async fn update_manifest(
    store: &dyn ObjectStore,
    now: DateTime<Utc>,
    edit: impl Fn(&mut Manifest) -> std::result::Result<Edit, ManifestError>,
) -> Result<Updated> {
    for attempt in 0..MAX_WRITES {
        let (mut manifest, etag) = read_manifest(store, now).await?;
        let before = manifest.currents();
        if edit(&mut manifest).map_err(Error::Manifest)? == Edit::Unchanged {
            return Ok(Updated {
                manifest,
                changed: false,
            });
        }
        manifest.stamp_current_changes(&before, now);
        manifest.touch(now);
        let condition = etag.map_or(PutCondition::IfAbsent, PutCondition::IfMatch);
        match store
            .put(MANIFEST_KEY, manifest.to_json_vec(), condition)
            .await?
        {
            PutOutcome::Written { .. } => {
                return Ok(Updated {
                    manifest,
                    changed: true,
                })
            }
            PutOutcome::ConditionFailed => {
                tracing::info!(attempt, "manifest changed while we edited it; re-reading");
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt + 1))).await;
            }
        }
    }
    Err(Error::ManifestConflict {
        bucket: store.bucket().to_owned(),
        key: MANIFEST_KEY.to_owned(),
        attempts: MAX_WRITES,
    })
}

/// Points `/golden-ami/<type>/current` in each region at the manifest's current image of the type, or
/// deletes it where the type has no current version (after a forced revoke of the last good one), so a
/// `resolve:ssm:` launch template cannot keep launching a revoked image.
///
/// `manifest` is the caller's copy, which a concurrent publish, promote or revoke may already have
/// superseded: after writing, the manifest is read again and the parameters re-written from it until its
/// generation no longer moves, so the last writer of a parameter always wrote the latest manifest's image.
pub async fn sync_parameters(
    ssm: &dyn Ssm,
    store: &dyn ObjectStore,
    now: DateTime<Utc>,
    manifest: &Manifest,
    image_type: &str,
) -> Result<Vec<String>> {
    let mut manifest = manifest.clone();
    for attempt in 0..MAX_WRITES {
        let written = write_parameters(ssm, &manifest, image_type).await?;
        let (latest, _) = read_manifest(store, now).await?;
        if latest.generation == manifest.generation {
            return Ok(written);
        }
        tracing::info!(
            attempt,
            from = manifest.generation,
            to = latest.generation,
            "manifest changed while the parameters were written; writing them again"
        );
        manifest = latest;
    }
    Err(Error::ManifestConflict {
        bucket: store.bucket().to_owned(),
        key: MANIFEST_KEY.to_owned(),
        attempts: MAX_WRITES,
    })
}

async fn write_parameters(
    ssm: &dyn Ssm,
    manifest: &Manifest,
    image_type: &str,
) -> Result<Vec<String>> {
    let name = parameter_name(image_type);
    let mut written = Vec::new();
    if let Some(current) = manifest.current(image_type) {
        for (region, image_id) in &current.images {
            ssm.put_image_parameter(region, &name, image_id).await?;
            written.push(format!("{region}:{name}={image_id}"));
        }
    } else if let Some(entry) = manifest.types.get(image_type) {
        // Every region the type was ever published to may hold a parameter.
        let regions: std::collections::BTreeSet<&String> = entry
            .versions
            .iter()
            .flat_map(|v| v.images.keys())
            .collect();
        for region in regions {
            if ssm.delete_parameter(region, &name).await? {
                written.push(format!("{region}:{name} deleted (no current version)"));
            }
        }
    }
    Ok(written)
}
