//! `recipes validate|push|list` and `manifest`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use golden_core::bake::launch::recipe_key;
use golden_core::ports::{ObjectStore, PutCondition};
use golden_core::publishing::{read_manifest, MANIFEST_KEY};
use golden_core::recipe::{Problem, Recipe};
use serde::Serialize;

use crate::output::{print, table, Format};
use crate::{EXIT_ERROR, EXIT_OK};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checked {
    pub file: String,
    /// The recipe's type, when the file parsed far enough to have one.
    #[serde(rename = "type")]
    pub image_type: Option<String>,
    pub valid: bool,
    pub problems: Vec<ProblemOut>,
}

#[derive(Debug, Serialize)]
pub struct ProblemOut {
    /// The field, e.g. `copy_to_regions[1]`; empty for the whole file.
    pub field: String,
    pub message: String,
}

impl From<&Problem> for ProblemOut {
    fn from(p: &Problem) -> Self {
        ProblemOut {
            field: p.path.clone(),
            message: p.message.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ValidateReport {
    pub files: Vec<Checked>,
}

/// Reads and checks one file: the recipe rules, and that the file is named for its type.
fn check(file: &Path) -> (Checked, Option<Recipe>) {
    let name = file.display().to_string();
    let mut checked = Checked {
        file: name.clone(),
        image_type: None,
        valid: false,
        problems: Vec::new(),
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            checked.problems.push(ProblemOut {
                field: String::new(),
                message: format!("cannot read {name}: {e}"),
            });
            return (checked, None);
        }
    };
    match Recipe::from_toml_str(&text, &name) {
        Ok(recipe) => {
            checked.image_type = Some(recipe.image_type.clone());
            let stem = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if stem != recipe.image_type {
                checked.problems.push(ProblemOut {
                    field: "type".into(),
                    message: format!(
                        "type {:?} is not the file's name; rename the file to {}.toml (a type's recipe is \
                         found by its name)",
                        recipe.image_type, recipe.image_type
                    ),
                });
                return (checked, None);
            }
            checked.valid = true;
            (checked, Some(recipe))
        }
        Err(e) => {
            checked.problems = e.problems.iter().map(ProblemOut::from).collect();
            (checked, None)
        }
    }
}

fn render_checked(files: &[Checked]) -> String {
    let mut out = Vec::new();
    for c in files {
        if c.valid {
            out.push(format!(
                "ok       {} ({})",
                c.file,
                c.image_type.as_deref().unwrap_or("?")
            ));
        } else {
            out.push(format!("INVALID  {}", c.file));
            for p in &c.problems {
                if p.field.is_empty() {
                    out.push(format!("  - {}", p.message));
                } else {
                    out.push(format!("  - {}: {}", p.field, p.message));
                }
            }
        }
    }
    out.join("\n")
}

pub fn validate(files: &[PathBuf], format: Format) -> u8 {
    let report = ValidateReport {
        files: files.iter().map(|f| check(f).0).collect(),
    };
    let ok = report.files.iter().all(|c| c.valid);
    print(format, &report, |r| render_checked(&r.files));
    if ok {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pushed {
    pub file: String,
    #[serde(rename = "type")]
    pub image_type: String,
    pub key: String,
    /// `new`, `changed` or `unchanged`.
    pub change: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    pub bucket: String,
    pub dry_run: bool,
    pub recipes: Vec<Pushed>,
}

pub async fn push(
    store: &dyn ObjectStore,
    files: &[PathBuf],
    dry_run: bool,
    format: Format,
) -> anyhow::Result<u8> {
    let checked: Vec<(Checked, Option<Recipe>)> = files.iter().map(|f| check(f)).collect();
    if checked.iter().any(|(c, _)| !c.valid) {
        let report = ValidateReport {
            files: checked.into_iter().map(|(c, _)| c).collect(),
        };
        print(format, &report, |r| render_checked(&r.files));
        eprintln!("goldenctl: nothing pushed: fix the invalid recipes above first");
        return Ok(EXIT_ERROR);
    }
    let mut report = PushReport {
        bucket: store.bucket().to_owned(),
        dry_run,
        recipes: Vec::new(),
    };
    for (c, recipe) in checked {
        let Some(recipe) = recipe else { continue };
        let key = recipe_key(&recipe.image_type);
        let body = recipe.to_json_vec();
        let existing = store
            .get(&key)
            .await
            .with_context(|| format!("reading s3://{}/{key}", store.bucket()))?;
        let change = match existing {
            None => "new",
            Some(o) if o.body == body => "unchanged",
            Some(_) => "changed",
        };
        if !dry_run && change != "unchanged" {
            store
                .put(&key, body, PutCondition::Always)
                .await
                .with_context(|| format!("uploading s3://{}/{key}", store.bucket()))?;
        }
        report.recipes.push(Pushed {
            file: c.file,
            image_type: recipe.image_type,
            key,
            change,
        });
    }
    print(format, &report, |r| {
        let verb = if r.dry_run { "would push" } else { "pushed" };
        let rows = r
            .recipes
            .iter()
            .map(|p| {
                vec![
                    p.image_type.clone(),
                    p.change.to_owned(),
                    format!("s3://{}/{}", r.bucket, p.key),
                    p.file.clone(),
                ]
            })
            .collect();
        format!(
            "{}\n{verb}: {} new, {} changed, {} unchanged",
            table(&["TYPE", "CHANGE", "OBJECT", "FILE"], rows),
            r.recipes.iter().filter(|p| p.change == "new").count(),
            r.recipes.iter().filter(|p| p.change == "changed").count(),
            r.recipes.iter().filter(|p| p.change == "unchanged").count(),
        )
    });
    Ok(EXIT_OK)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    #[serde(rename = "type")]
    pub image_type: String,
    pub key: String,
    pub platform: Option<String>,
    pub build_region: Option<String>,
    pub copy_to_regions: Vec<String>,
    pub valid: bool,
    pub problems: Vec<ProblemOut>,
}

#[derive(Debug, Serialize)]
pub struct ListReport {
    pub bucket: String,
    pub recipes: Vec<Listed>,
}

pub async fn list(store: &dyn ObjectStore, format: Format) -> anyhow::Result<u8> {
    let mut report = ListReport {
        bucket: store.bucket().to_owned(),
        recipes: Vec::new(),
    };
    let keys = store
        .list("recipes/")
        .await
        .with_context(|| format!("listing s3://{}/recipes/", store.bucket()))?;
    for key in keys.into_iter().filter(|k| k.ends_with(".json")) {
        let image_type = key
            .trim_start_matches("recipes/")
            .trim_end_matches(".json")
            .to_owned();
        let Some(object) = store.get(&key).await? else {
            continue;
        };
        let entry = match Recipe::from_json_slice(&object.body, &key) {
            Ok(r) => Listed {
                image_type,
                key,
                platform: Some(format!("{:?}", r.platform).to_lowercase()),
                build_region: Some(r.build_region.clone()),
                copy_to_regions: r.copy_to_regions.clone(),
                valid: true,
                problems: Vec::new(),
            },
            Err(e) => Listed {
                image_type,
                key,
                platform: None,
                build_region: None,
                copy_to_regions: Vec::new(),
                valid: false,
                problems: e.problems.iter().map(ProblemOut::from).collect(),
            },
        };
        report.recipes.push(entry);
    }
    print(format, &report, |r| {
        if r.recipes.is_empty() {
            return format!(
                "no recipes in s3://{}/recipes/: push them with `goldenctl recipes push infra/recipes/*.toml`",
                r.bucket
            );
        }
        let rows = r
            .recipes
            .iter()
            .map(|l| {
                vec![
                    l.image_type.clone(),
                    l.platform.clone().unwrap_or_default(),
                    l.build_region.clone().unwrap_or_default(),
                    l.copy_to_regions.join(", "),
                    if l.valid {
                        "valid".to_owned()
                    } else {
                        format!("INVALID: {}", l.problems.len())
                    },
                ]
            })
            .collect();
        table(&["TYPE", "PLATFORM", "BUILD", "COPIES", "RECIPE"], rows)
    });
    Ok(EXIT_OK)
}

pub async fn manifest(
    store: &dyn ObjectStore,
    image_type: Option<&str>,
    format: Format,
) -> anyhow::Result<u8> {
    let (manifest, _) = read_manifest(store, chrono::Utc::now()).await?;
    if let Some(ty) = image_type {
        if !manifest.types.contains_key(ty) {
            let known: Vec<&String> = manifest.types.keys().collect();
            anyhow::bail!(
                "s3://{}/{MANIFEST_KEY} has no type {ty:?} (it has: {known:?}); has a bake of it published?",
                store.bucket()
            );
        }
    }
    let mut shown = manifest.clone();
    if let Some(ty) = image_type {
        shown.types.retain(|t, _| t == ty);
    }
    print(format, &shown, |m| {
        let mut rows = Vec::new();
        for (ty, entry) in &m.types {
            for v in &entry.versions {
                let current = entry.current.as_ref() == Some(&v.version);
                rows.push(vec![
                    ty.clone(),
                    v.version.to_string(),
                    format!(
                        "{:?}{}",
                        v.status,
                        match (current, entry.pinned_at.is_some()) {
                            (true, true) => " (current, pinned)",
                            (true, false) => " (current)",
                            _ => "",
                        }
                    )
                    .to_lowercase(),
                    v.images
                        .iter()
                        .map(|(r, i)| format!("{r} {i}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                ]);
            }
        }
        format!(
            "s3://{}/{MANIFEST_KEY}, generation {}, updated {}\n{}",
            store.bucket(),
            m.generation,
            m.updated_at.to_rfc3339(),
            table(&["TYPE", "VERSION", "STATUS", "IMAGES"], rows)
        )
    });
    Ok(EXIT_OK)
}
