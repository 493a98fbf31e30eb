//! `revoke`, `promote [--pin]`, `unpin`: roll a type back or forward in one command, with the type's state
//! before and after. The plan is the same edit applied to a copy of the manifest, so `--dry-run` shows
//! exactly what acting would write.

use golden_core::lifecycle::release;
use golden_core::manifest::{Manifest, TypeEntry};
use golden_core::publishing::read_manifest;
use golden_core::version::Version;
use serde::Serialize;

use crate::deploy::Deployment;
use crate::output::{print, table, Format};
use crate::ui::{self, confirm, ActArgs, Go};
use crate::EXIT_OK;

/// clap's parser of a VERSION argument: a malformed one is a usage error (exit 2).
pub fn parse_version(text: &str) -> Result<Version, String> {
    Version::parse(text)
        .map_err(|e| format!("{e}; `goldenctl manifest TYPE` lists a type's versions"))
}

/// A type's release state: what fleets launch, whether it is pinned, and the version acted on.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TypeState {
    pub current: Option<String>,
    /// The current version's image per region.
    pub images: std::collections::BTreeMap<String, String>,
    pub pinned_at: Option<String>,
    /// The status of the version acted on (`published` or `revoked`); null for unpin.
    pub version_status: Option<String>,
}

fn state(m: &Manifest, ty: &str, version: Option<&Version>) -> TypeState {
    let entry = m.types.get(ty).cloned().unwrap_or_else(TypeEntry::default);
    TypeState {
        current: entry.current.as_ref().map(|v| v.to_string()),
        images: m.current(ty).map(|e| e.images.clone()).unwrap_or_default(),
        pinned_at: entry.pinned_at.map(|t| t.to_rfc3339()),
        version_status: version.and_then(|v| {
            m.find(ty, v)
                .and_then(|e| serde_json::to_value(e.status).ok())
                .and_then(|s| s.as_str().map(str::to_owned))
        }),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseReport {
    /// `revoke`, `promote`, `promote --pin` or `unpin`.
    pub action: String,
    #[serde(rename = "type")]
    pub image_type: String,
    pub version: Option<String>,
    pub dry_run: bool,
    /// Whether the manifest changes (false: already so).
    pub changed: bool,
    pub before: TypeState,
    pub after: TypeState,
    /// What happened to the SSM parameters `/golden-ami/<type>/current` (not on a dry run).
    pub parameters: Vec<String>,
    /// `region:image` marked deprecated in EC2 (revoke).
    pub deprecated: Vec<String>,
}

pub enum Action {
    Revoke { reason: String, force: bool },
    Promote { pin: bool },
    Unpin,
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Revoke { .. } => "revoke",
            Action::Promote { pin: false } => "promote",
            Action::Promote { pin: true } => "promote --pin",
            Action::Unpin => "unpin",
        }
    }
}

pub async fn run(
    d: &Deployment,
    image_type: &str,
    version: Option<Version>,
    action: Action,
    act: ActArgs,
    format: Format,
) -> anyhow::Result<u8> {
    let services = d.services()?;
    let now = services.now();
    let (manifest, _) = read_manifest(services.store.as_ref(), now).await?;
    let before = state(&manifest, image_type, version.as_ref());
    // The plan: the same edit on a copy, with the same required regions (the recipe's).
    let regions = release::required_regions(&services, image_type).await;
    let mut planned = manifest.clone();
    let edit = match (&action, &version) {
        (Action::Revoke { reason, force }, Some(v)) => {
            planned.revoke(image_type, v, reason, now, &regions, *force)
        }
        (Action::Promote { pin }, Some(v)) => {
            planned.promote(image_type, v, &regions, pin.then_some(now))
        }
        (Action::Unpin, _) => planned.unpin(image_type),
        (_, None) => unreachable!("clap requires a version for revoke and promote"),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let changed = edit == golden_core::manifest::Edit::Changed;
    let mut report = ReleaseReport {
        action: action.name().to_owned(),
        image_type: image_type.to_owned(),
        version: version.as_ref().map(|v| v.to_string()),
        dry_run: act.dry_run,
        changed,
        before,
        after: state(&planned, image_type, version.as_ref()),
        parameters: Vec::new(),
        deprecated: Vec::new(),
    };
    let question = match &version {
        Some(v) => format!("{} {image_type} {v}", action.name()),
        None => format!("{} {image_type}", action.name()),
    };
    // A revoke or promote already in the manifest still re-applies its parameters and deprecations: the
    // way to finish one whose first run failed after writing the manifest.
    let repair = !changed && !act.dry_run && !matches!(action, Action::Unpin);
    ui::show_plan(format, act, !changed, &report, render);
    if repair {
        if format == Format::Table {
            eprintln!(
                "the manifest is already so; re-applying its parameters{} to match",
                if matches!(action, Action::Revoke { .. }) {
                    " and deprecations"
                } else {
                    ""
                }
            );
        }
    } else if confirm(act, &question, !changed)? == Go::Plan {
        if format == Format::Json {
            print(format, &report, render);
        } else if !changed {
            eprintln!("nothing to change: {image_type} is already so");
        }
        return Ok(EXIT_OK);
    }
    let after = match (&action, &version) {
        (Action::Revoke { reason, force }, Some(v)) => {
            let revoked = release::revoke(&services, image_type, v, reason, *force).await?;
            report.parameters = revoked.parameters;
            report.deprecated = revoked.deprecated;
            revoked.updated.manifest
        }
        (Action::Promote { pin }, Some(v)) => {
            release::promote(&services, image_type, v, *pin)
                .await?
                .manifest
        }
        _ => release::unpin(&services, image_type).await?.manifest,
    };
    report.after = state(&after, image_type, version.as_ref());
    report.dry_run = false;
    match format {
        Format::Json => print(format, &report, render),
        Format::Table => {
            println!("done:");
            println!("{}", render_after(&report));
        }
    }
    Ok(EXIT_OK)
}

fn show(s: &TypeState) -> Vec<String> {
    let dash = || "-".to_owned();
    vec![
        s.current.clone().unwrap_or_else(dash),
        s.images
            .iter()
            .map(|(r, i)| format!("{r}: {i}"))
            .collect::<Vec<_>>()
            .join("\n"),
        s.pinned_at
            .clone()
            .map_or_else(dash, |t| ui::warn(&format!("pinned {t}"))),
        s.version_status
            .clone()
            .map_or_else(dash, |st| if st == "revoked" { ui::bad(&st) } else { st }),
    ]
}

fn render(r: &ReleaseReport) -> String {
    let title = match &r.version {
        Some(v) => format!("{} {} {v}", r.action, r.image_type),
        None => format!("{} {}", r.action, r.image_type),
    };
    let before = show(&r.before);
    let after = show(&r.after);
    let labels = ["current", "images", "pin", "version status"];
    let rows = labels
        .iter()
        .zip(before.into_iter().zip(after))
        .map(|(label, (b, a))| vec![(*label).to_owned(), b, a])
        .collect();
    let plan = if r.changed {
        "plan"
    } else {
        "plan (no change)"
    };
    format!("{plan}: {title}\n{}", table(&["", "before", "after"], rows))
}

fn render_after(r: &ReleaseReport) -> String {
    let mut rows = vec![vec![
        "current".to_owned(),
        r.after.current.clone().unwrap_or_else(|| "-".into()),
    ]];
    for p in &r.parameters {
        rows.push(vec!["parameter".into(), p.clone()]);
    }
    for d in &r.deprecated {
        rows.push(vec!["deprecated".into(), d.clone()]);
    }
    table(&["", ""], rows)
}
