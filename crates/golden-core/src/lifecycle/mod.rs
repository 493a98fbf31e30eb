//! The lifecycle functions' I/O: gather the facts, ask the pure decision in [`crate::retention`],
//! [`crate::freshness`] or [`crate::reaping`], act (unless dry-run), and report what was decided and why.

pub mod enforce;
pub mod prune;
pub mod reap;
pub mod release;
pub mod trigger;

use std::collections::BTreeMap;

use crate::bake::launch::recipe_key;
use crate::bake::Services;
use crate::error::{Error, Result};
use crate::recipe::Recipe;

pub use trigger::Trigger;

/// The regions a sweep covers: `GOLDEN_REGIONS`, or a clear error naming the setting.
pub(crate) fn sweep_regions(services: &Services) -> Result<Vec<String>> {
    if services.config.regions.is_empty() {
        return Err(Error::Config(
            "GOLDEN_REGIONS is empty; set it to the comma-separated regions your golden AMIs live in".into(),
        ));
    }
    Ok(services.config.regions.clone())
}

/// Recipes pushed to the bucket, by type, for their `keep`, `max_build_minutes` and regions. A type whose
/// recipe is missing or broken is left out (callers fall back to defaults) and logged.
pub(crate) async fn recipes(
    services: &Services,
    types: impl IntoIterator<Item = String>,
) -> BTreeMap<String, Recipe> {
    let mut out = BTreeMap::new();
    for ty in types {
        let key = recipe_key(&ty);
        match services.store.get(&key).await {
            Ok(Some(object)) => match Recipe::from_json_slice(&object.body, &key) {
                Ok(recipe) => {
                    out.insert(ty, recipe);
                }
                Err(e) => {
                    tracing::warn!(r#type = %ty, error = %e, "recipe unusable; using defaults")
                }
            },
            Ok(None) => tracing::info!(r#type = %ty, "no recipe pushed; using defaults"),
            Err(e) => {
                tracing::warn!(r#type = %ty, error = %e, "cannot read recipe; using defaults")
            }
        }
    }
    out
}
