//! The lifecycle functions' I/O: gather the facts, ask the pure decision in [`crate::retention`],
//! [`crate::freshness`] or [`crate::reaping`], act (unless dry-run), and report what was decided and why.

pub mod enforce;
pub mod guard;
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

/// Something a lifecycle run could not do to one item (an instance, image, snapshot, builder or lock);
/// the run carries on with the others.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemFailure {
    /// The item and its region, e.g. `i-0abc (us-east-1)`.
    pub item: String,
    /// What was tried, e.g. `terminate`.
    pub action: String,
    pub error: String,
}

impl ItemFailure {
    pub(crate) fn new(item: String, action: &str, error: &Error) -> Self {
        tracing::error!(%item, action, %error, "item failed; carrying on with the others");
        ItemFailure {
            item,
            action: action.to_owned(),
            error: error.to_string(),
        }
    }
}

/// The end of a run that carried on past failed items: the report when none failed; else the whole
/// report is logged and the invocation fails listing each failure, so alarms and retries see it.
pub(crate) fn finish<R: serde::Serialize>(
    what: &str,
    report: R,
    failures: &[ItemFailure],
) -> Result<R> {
    if failures.is_empty() {
        return Ok(report);
    }
    tracing::error!(
        report = %serde_json::to_string(&report).unwrap_or_default(),
        failed = failures.len(),
        "{what} finished with failed items"
    );
    Err(Error::ItemsFailed {
        what: what.to_owned(),
        failed: failures
            .iter()
            .map(|f| format!("{} {}: {}", f.action, f.item, f.error))
            .collect(),
    })
}

/// The regions a sweep covers: `GOLDEN_REGIONS` and every pushed recipe's build and copy regions, so a
/// recipe region missing from the setting is still pruned, enforced and reaped. A recipe that cannot be
/// parsed adds nothing (it is logged); neither source giving a region is a clear error naming the setting.
pub async fn sweep_regions(services: &Services) -> Result<Vec<String>> {
    let mut regions: std::collections::BTreeSet<String> =
        services.config.regions.iter().cloned().collect();
    for key in services.store.list("recipes/").await? {
        let Some(object) = services.store.get(&key).await? else {
            continue; // deleted since the listing
        };
        match Recipe::from_json_slice(&object.body, &key) {
            Ok(recipe) => regions.extend(recipe.all_regions()),
            Err(e) => {
                tracing::warn!(%key, error = %e, "recipe unusable; its regions are not swept")
            }
        }
    }
    if regions.is_empty() {
        return Err(Error::Config(
            "no regions to sweep: GOLDEN_REGIONS is empty and no recipe is pushed; set GOLDEN_REGIONS to the \
             comma-separated regions your golden AMIs live in, or push the recipes"
                .into(),
        ));
    }
    Ok(regions.into_iter().collect())
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
