//! What prune deletes (DESIGN.md "Lifecycle functions", prune): a pure plan over the images the I/O side
//! found, the manifest, and the facts that protect an image (instances, launch templates, SSM parameters).
//!
//! Deleting an AMI cannot be undone, so every rule leans towards keeping: an image is deleted only when it is
//! ours, fully tagged, old enough, and no keep rule holds; a fact that is unknown (no creation date, no type
//! or version tag) keeps the image and says so. Every decision carries all the reasons that apply, so a
//! dry run explains itself, and the same plan backs the Lambda and `goldenctl prune`.
//!
//! The caller must pass `None` for the manifest only when there is none (a new bucket). A manifest that
//! exists but cannot be read or parsed must stop the run: without it, current and published images would
//! look unprotected.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::manifest::{Manifest, VersionStatus};
use crate::version::Version;

/// Versions of a type kept per region unless the recipe says otherwise.
pub const DEFAULT_KEEP: usize = 10;
/// Images younger than this are never deleted: a bake may still be copying or publishing them.
pub const DEFAULT_MIN_AGE_HOURS: i64 = 24;
/// Deletes per run unless configured (the same default as `GOLDEN_PRUNE_MAX_DELETES`).
pub const DEFAULT_MAX_DELETES: usize = 50;

/// One AMI seen in one region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub region: String,
    pub image_id: String,
    pub name: String,
    /// Tag `golden-ami:type`.
    pub image_type: Option<String>,
    /// Tag `golden-ami:version`, parsed; `None` when absent or not a version.
    pub version: Option<Version>,
    /// The image's CreationDate.
    pub created_at: Option<DateTime<Utc>>,
    pub owned_by_account: bool,
    /// Tag `golden-ami:role` == `image`.
    pub role_image: bool,
    /// Tag `golden-ami:keep` == `true` (case-insensitive).
    pub keep_tag: bool,
    pub snapshot_ids: Vec<String>,
}

/// Facts the I/O side gathered, keyed by image id. An image id mapped to an empty list is not protected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Protections {
    /// Image id -> ids of non-terminated instances (running, stopped, ...) launched from it.
    pub in_use: BTreeMap<String, Vec<String>>,
    /// Image id -> launch template versions using it, e.g. `lt-0abc v3 (default)`.
    pub launch_templates: BTreeMap<String, Vec<String>>,
    /// Image id -> names of our SSM parameters holding it.
    pub parameters: BTreeMap<String, Vec<String>>,
}

/// How much prune keeps and how much it may delete in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Type -> versions to keep per region (the recipe's `keep`).
    pub keep_by_type: BTreeMap<String, usize>,
    /// For types without an entry in `keep_by_type`.
    pub default_keep: usize,
    pub min_age: Duration,
    /// The run's delete cap, so a wrong fact (or a bug) cannot empty an account in one go.
    pub max_deletes: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            keep_by_type: BTreeMap::new(),
            default_keep: DEFAULT_KEEP,
            min_age: Duration::hours(DEFAULT_MIN_AGE_HOURS),
            max_deletes: DEFAULT_MAX_DELETES,
        }
    }
}

impl Policy {
    /// Versions of `ty` kept per region.
    pub fn keep_for(&self, ty: &str) -> usize {
        self.keep_by_type
            .get(ty)
            .copied()
            .unwrap_or(self.default_keep)
    }
}

/// Why an image is kept or deleted. A kept image lists every keep reason that holds; a deleted one every
/// delete reason; one the cap deferred lists its delete reasons and then [`Reason::OverCap`], so the plan
/// says what a later run will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "rule",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Reason {
    /// Among the `keep` newest non-revoked versions of its type in its region; `rank` 0 is the newest.
    Newest { rank: usize, keep: usize },
    /// The manifest's current version of its type lists this image.
    Current { version: String },
    /// A non-revoked manifest version lists this image.
    ManifestVersion { version: String },
    /// Non-terminated instances were launched from it.
    InUse { instances: Vec<String> },
    /// A launch template's default or latest version uses it.
    LaunchTemplate { references: Vec<String> },
    /// One of our SSM parameters holds it.
    SsmParameter { names: Vec<String> },
    /// Created less than `min_age` ago (negative age: its clock is ahead of ours).
    TooYoung { age_hours: i64, min_age_hours: i64 },
    /// No creation date: its age is unknown, so it is treated as young.
    UnknownAge { min_age_hours: i64 },
    /// Tagged `golden-ami:keep=true`.
    KeepTag,
    /// No type tag: it cannot be ranked against its type, so it is never deleted by rank.
    NoTypeTag,
    /// No (valid) version tag: it cannot be ranked, so it is never deleted by rank.
    NoVersionTag,
    /// Not owned by the account or not `golden-ami:role=image`: never a candidate, listed to explain it.
    NotOurs { why: String },
    /// Delete: its version is revoked in the manifest.
    Revoked { version: String },
    /// Delete: `rank` newer non-revoked versions of its type exist in its region, more than `keep`.
    OlderThanKept { rank: usize, keep: usize },
    /// Delete: the manifest lists it in no version.
    NotInManifest,
    /// Would be deleted, but the run's delete cap is reached; it goes in a later run.
    OverCap { max_deletes: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Keep,
    Delete,
}

/// What happens to one image, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub region: String,
    pub image_id: String,
    pub name: String,
    pub image_type: Option<String>,
    pub version: Option<String>,
    pub action: Action,
    pub reasons: Vec<Reason>,
    pub snapshot_ids: Vec<String>,
}

/// A run's plan: one decision per candidate, sorted by (region, type, version newest first, image id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub decisions: Vec<Decision>,
    /// Number of [`Action::Delete`] decisions, at most the policy's `max_deletes`.
    pub deletes: usize,
    /// Whether the cap deferred some deletes (they carry [`Reason::OverCap`]).
    pub capped: bool,
}

/// What the manifest says about images, looked up by image id across all types: an image listed under
/// another type than its tag says is still protected.
#[derive(Default)]
struct ManifestIndex<'a> {
    /// Image id -> current version listing it.
    current: BTreeMap<&'a str, &'a Version>,
    /// Image id -> newest non-revoked version listing it.
    published: BTreeMap<&'a str, &'a Version>,
    /// Every image id the manifest lists, whatever the status.
    listed: BTreeSet<&'a str>,
    /// (type, version) pairs that are revoked.
    revoked: BTreeSet<(&'a str, &'a Version)>,
}

impl<'a> ManifestIndex<'a> {
    fn new(manifest: Option<&'a Manifest>) -> Self {
        let mut index = ManifestIndex::default();
        let Some(manifest) = manifest else {
            return index;
        };
        for (ty, entry) in &manifest.types {
            // Versions are newest first, so the first version seen for an image is its newest.
            for v in &entry.versions {
                let is_current = entry.current.as_ref() == Some(&v.version);
                let is_published = v.status == VersionStatus::Published;
                if !is_published {
                    index.revoked.insert((ty.as_str(), &v.version));
                }
                for image in v.images.values() {
                    index.listed.insert(image);
                    if is_current {
                        index.current.entry(image).or_insert(&v.version);
                    }
                    if is_published {
                        index.published.entry(image).or_insert(&v.version);
                    }
                }
            }
        }
        index
    }

    fn is_revoked(&self, ty: &str, version: &Version) -> bool {
        self.revoked.contains(&(ty, version))
    }
}

fn is_ours(c: &Candidate) -> bool {
    c.owned_by_account && c.role_image
}

/// Non-empty protection list of an image, if any.
fn protected_by<'a>(
    map: &'a BTreeMap<String, Vec<String>>,
    image_id: &str,
) -> Option<&'a Vec<String>> {
    map.get(image_id).filter(|list| !list.is_empty())
}

/// Plans a prune run: which candidates to delete, which to keep, and why. See the module doc for the
/// rules; pure and deterministic (the order of `candidates` does not matter).
pub fn plan(
    candidates: &[Candidate],
    manifest: Option<&Manifest>,
    protections: &Protections,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Plan {
    let index = ManifestIndex::new(manifest);

    // Per (region, type): the distinct non-revoked versions of our images, newest first. Ranking by distinct
    // version keeps every copy of a kept version (e.g. a duplicate from a retried copy).
    let mut ranked: BTreeMap<(&str, &str), BTreeSet<Reverse<&Version>>> = BTreeMap::new();
    for c in candidates.iter().filter(|c| is_ours(c)) {
        if let (Some(ty), Some(version)) = (&c.image_type, &c.version) {
            if !index.is_revoked(ty, version) {
                ranked
                    .entry((c.region.as_str(), ty.as_str()))
                    .or_default()
                    .insert(Reverse(version));
            }
        }
    }
    let rank_of = |c: &Candidate| -> Option<usize> {
        let (ty, version) = (c.image_type.as_deref()?, c.version.as_ref()?);
        if index.is_revoked(ty, version) {
            return None;
        }
        let versions = ranked.get(&(c.region.as_str(), ty))?;
        Some(versions.range(..Reverse(version)).count())
    };

    let mut decisions: Vec<Decision> = candidates
        .iter()
        .map(|c| {
            let (action, reasons) = decide(c, rank_of(c), &index, protections, policy, now);
            Decision {
                region: c.region.clone(),
                image_id: c.image_id.clone(),
                name: c.name.clone(),
                image_type: c.image_type.clone(),
                version: c.version.as_ref().map(ToString::to_string),
                action,
                reasons,
                snapshot_ids: c.snapshot_ids.clone(),
            }
        })
        .collect();

    // The cap deletes the oldest versions first: they are the least likely to be wanted back.
    let mut deletes: Vec<usize> = (0..decisions.len())
        .filter(|&i| decisions[i].action == Action::Delete)
        .collect();
    deletes.sort_by(|&a, &b| {
        let key = |d: &Decision| {
            (
                d.version.clone(),
                d.region.clone(),
                d.image_type.clone(),
                d.image_id.clone(),
            )
        };
        key(&decisions[a]).cmp(&key(&decisions[b]))
    });
    let capped = deletes.len() > policy.max_deletes;
    for &i in deletes.iter().skip(policy.max_deletes) {
        let d = &mut decisions[i];
        d.action = Action::Keep;
        d.reasons.push(Reason::OverCap {
            max_deletes: policy.max_deletes,
        });
    }

    decisions.sort_by(|a, b| {
        (&a.region, &a.image_type, Reverse(&a.version), &a.image_id).cmp(&(
            &b.region,
            &b.image_type,
            Reverse(&b.version),
            &b.image_id,
        ))
    });
    let deletes = decisions
        .iter()
        .filter(|d| d.action == Action::Delete)
        .count();
    Plan {
        decisions,
        deletes,
        capped,
    }
}

/// One candidate's action and reasons, before the cap.
fn decide(
    c: &Candidate,
    rank: Option<usize>,
    index: &ManifestIndex<'_>,
    protections: &Protections,
    policy: &Policy,
    now: DateTime<Utc>,
) -> (Action, Vec<Reason>) {
    if !is_ours(c) {
        let why = match (c.owned_by_account, c.role_image) {
            (false, false) => "not owned by this account and not tagged golden-ami:role=image",
            (false, true) => "not owned by this account",
            _ => "not tagged golden-ami:role=image",
        };
        return (
            Action::Keep,
            vec![Reason::NotOurs {
                why: why.to_owned(),
            }],
        );
    }
    let keep = c
        .image_type
        .as_deref()
        .map_or(policy.default_keep, |ty| policy.keep_for(ty));
    let min_age_hours = policy.min_age.num_hours();
    let id = c.image_id.as_str();

    let mut reasons = Vec::new();
    if c.image_type.is_none() {
        reasons.push(Reason::NoTypeTag);
    }
    if c.version.is_none() {
        reasons.push(Reason::NoVersionTag);
    }
    if let Some(rank) = rank.filter(|&r| r < keep) {
        reasons.push(Reason::Newest { rank, keep });
    }
    if let Some(version) = index.current.get(id) {
        reasons.push(Reason::Current {
            version: version.to_string(),
        });
    }
    if let Some(version) = index.published.get(id) {
        reasons.push(Reason::ManifestVersion {
            version: version.to_string(),
        });
    }
    if let Some(instances) = protected_by(&protections.in_use, id) {
        reasons.push(Reason::InUse {
            instances: instances.clone(),
        });
    }
    if let Some(references) = protected_by(&protections.launch_templates, id) {
        reasons.push(Reason::LaunchTemplate {
            references: references.clone(),
        });
    }
    if let Some(names) = protected_by(&protections.parameters, id) {
        reasons.push(Reason::SsmParameter {
            names: names.clone(),
        });
    }
    match c.created_at {
        None => reasons.push(Reason::UnknownAge { min_age_hours }),
        Some(created) if now - created < policy.min_age => reasons.push(Reason::TooYoung {
            age_hours: (now - created).num_hours(),
            min_age_hours,
        }),
        Some(_) => {}
    }
    if c.keep_tag {
        reasons.push(Reason::KeepTag);
    }
    if !reasons.is_empty() {
        return (Action::Keep, reasons);
    }

    // Here type and version are known (else NoTypeTag/NoVersionTag kept it), so the image is either revoked
    // or ranked at or past `keep`: at least one delete reason always applies.
    if let (Some(ty), Some(version)) = (&c.image_type, &c.version) {
        if index.is_revoked(ty, version) {
            reasons.push(Reason::Revoked {
                version: version.to_string(),
            });
        }
    }
    if let Some(rank) = rank {
        reasons.push(Reason::OlderThanKept { rank, keep });
    }
    if !index.listed.contains(id) {
        reasons.push(Reason::NotInManifest);
    }
    (Action::Delete, reasons)
}

/// Snapshots of the deleted images that no remaining candidate uses, as (region, snapshot id), sorted.
///
/// `all_candidates` must hold every image the account owns in the planned regions, ours or not (they are
/// what may share a snapshot); an image counts as remaining unless the plan deletes it.
pub fn snapshots_to_delete(plan: &Plan, all_candidates: &[Candidate]) -> Vec<(String, String)> {
    let deleted: BTreeSet<(&str, &str)> = plan
        .decisions
        .iter()
        .filter(|d| d.action == Action::Delete)
        .map(|d| (d.region.as_str(), d.image_id.as_str()))
        .collect();
    let still_used: BTreeSet<(&str, &str)> = all_candidates
        .iter()
        .filter(|c| !deleted.contains(&(c.region.as_str(), c.image_id.as_str())))
        .flat_map(|c| {
            c.snapshot_ids
                .iter()
                .map(|s| (c.region.as_str(), s.as_str()))
        })
        .collect();
    let out: BTreeSet<(String, String)> = plan
        .decisions
        .iter()
        .filter(|d| d.action == Action::Delete)
        .flat_map(|d| {
            d.snapshot_ids
                .iter()
                .map(|s| (d.region.as_str(), s.as_str()))
        })
        .filter(|pair| !still_used.contains(pair))
        .map(|(r, s)| (r.to_owned(), s.to_owned()))
        .collect();
    out.into_iter().collect()
}

/// A snapshot as the orphan sweep sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotInfo {
    pub region: String,
    pub snapshot_id: String,
    /// Tag `golden-ami:role` == `image`.
    pub role_image: bool,
    /// The snapshot's StartTime.
    pub start_time: Option<DateTime<Utc>>,
}

/// Our (`role=image`) snapshots that no image in their region references and that are older than
/// `min_age`, as (region, snapshot id), sorted. A young snapshot may belong to an image still being created
/// or copied, whose block device mapping does not list it yet; one without a start time is never deleted.
///
/// `referenced` must hold every (region, snapshot) used by any image the account owns there, in any state.
pub fn orphan_snapshots(
    snapshots: &[SnapshotInfo],
    referenced: &BTreeSet<(String, String)>,
    min_age: Duration,
    now: DateTime<Utc>,
) -> Vec<(String, String)> {
    let out: BTreeSet<(String, String)> = snapshots
        .iter()
        .filter(|s| s.role_image)
        .filter(|s| s.start_time.is_some_and(|t| now - t >= min_age))
        .map(|s| (s.region.clone(), s.snapshot_id.clone()))
        .filter(|pair| !referenced.contains(pair))
        .collect();
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{TypeEntry, VersionEntry};
    use chrono::TimeZone;
    use proptest::prelude::*;

    const TY: &str = "bld-linux64";
    const EAST: &str = "us-east-1";
    const WEST: &str = "us-west-2";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    /// The version baked `days` days before now.
    fn v(days: i64) -> Version {
        Version::from_datetime(now() - Duration::days(days))
    }

    /// An image of ours, `days` old, with one snapshot of its own.
    fn cand(region: &str, id: &str, ty: &str, days: i64) -> Candidate {
        Candidate {
            region: region.into(),
            image_id: id.into(),
            name: format!("golden-{ty}-{}", v(days)),
            image_type: Some(ty.into()),
            version: Some(v(days)),
            created_at: Some(v(days).created_at()),
            owned_by_account: true,
            role_image: true,
            keep_tag: false,
            snapshot_ids: vec![format!("snap-{id}")],
        }
    }

    /// A manifest version entry of `TY`.
    fn version_entry(days: i64, images: &[(&str, &str)], revoked: bool) -> VersionEntry {
        VersionEntry {
            recipe_hash: None,
            shared_with: None,
            extra: Default::default(),
            version: v(days),
            created_at: v(days).created_at(),
            source_ami: "ami-0base".into(),
            execution: format!("arn:aws:states:us-east-1:111122223333:execution:bake:{days}"),
            images: images
                .iter()
                .map(|(r, i)| ((*r).to_owned(), (*i).to_owned()))
                .collect(),
            status: if revoked {
                VersionStatus::Revoked
            } else {
                VersionStatus::Published
            },
            revoked_reason: revoked.then(|| "bad puppet run".to_owned()),
            revoked_at: revoked.then(now),
        }
    }

    /// A manifest with one type, `TY`, whose versions are given newest first.
    fn manifest(current: Option<i64>, versions: Vec<VersionEntry>) -> Manifest {
        let mut m = Manifest::empty(now());
        m.types.insert(
            TY.into(),
            TypeEntry {
                extra: Default::default(),
                current: current.map(v),
                versions,
                became_current_at: None,
                pinned_at: None,
            },
        );
        m
    }

    /// Everything `plan` reads, so a case can change one fact.
    struct Estate {
        candidates: Vec<Candidate>,
        manifest: Option<Manifest>,
        protections: Protections,
        policy: Policy,
    }

    impl Estate {
        fn plan(&self) -> Plan {
            plan(
                &self.candidates,
                self.manifest.as_ref(),
                &self.protections,
                &self.policy,
                now(),
            )
        }

        fn decision(&self, image_id: &str) -> Decision {
            self.plan()
                .decisions
                .into_iter()
                .find(|d| d.image_id == image_id)
                .unwrap()
        }
    }

    const SUBJECT: &str = "ami-0subject";

    /// GIVEN keep 1, a newer image, and `SUBJECT` (a week old, in no manifest, used by nothing): absent
    /// any protection, prune deletes `SUBJECT`. Each case below adds exactly one fact.
    fn estate() -> Estate {
        Estate {
            candidates: vec![cand(EAST, "ami-0newer", TY, 2), cand(EAST, SUBJECT, TY, 7)],
            manifest: Some(manifest(None, vec![])),
            protections: Protections::default(),
            policy: Policy {
                default_keep: 1,
                ..Policy::default()
            },
        }
    }

    fn subject(e: &mut Estate) -> &mut Candidate {
        e.candidates
            .iter_mut()
            .find(|c| c.image_id == SUBJECT)
            .unwrap()
    }

    #[test]
    fn prune_deletes_image_older_than_kept_that_nothing_protects() {
        let d = estate().decision(SUBJECT);
        assert_eq!(d.action, Action::Delete);
        assert_eq!(
            d.reasons,
            [
                Reason::OlderThanKept { rank: 1, keep: 1 },
                Reason::NotInManifest
            ]
        );
        assert_eq!(d.snapshot_ids, ["snap-ami-0subject"]);
    }

    /// One test per keep rule: GIVEN the base estate plus one fact, THEN `SUBJECT` is kept for exactly
    /// these reasons.
    macro_rules! keeps {
        ($($name:ident: $given:expr => [$($reason:expr),+ $(,)?];)+) => {$(
            #[test]
            fn $name() {
                let mut e = estate();
                let given: fn(&mut Estate) = $given;
                given(&mut e);
                let d = e.decision(SUBJECT);
                assert_eq!(d.action, Action::Keep, "{d:?}");
                assert_eq!(d.reasons, vec![$($reason),+]);
            }
        )+};
    }

    keeps! {
        prune_keeps_the_newest_versions_of_its_type_in_its_region:
            |e| e.policy.keep_by_type.insert(TY.into(), 2).map_or((), drop)
            => [Reason::Newest { rank: 1, keep: 2 }];
        prune_keeps_the_image_of_the_current_version_even_past_keep:
            |e| e.manifest = Some(manifest(Some(7), vec![version_entry(7, &[(EAST, SUBJECT)], false)]))
            => [Reason::Current { version: v(7).to_string() }, Reason::ManifestVersion { version: v(7).to_string() }];
        prune_keeps_image_of_a_non_revoked_manifest_version:
            |e| e.manifest = Some(manifest(None, vec![version_entry(7, &[(EAST, SUBJECT)], false)]))
            => [Reason::ManifestVersion { version: v(7).to_string() }];
        prune_keeps_image_listed_in_the_manifest_under_another_type:
            |e| {
                let mut m = manifest(None, vec![]);
                m.types.insert("b-2008".into(), TypeEntry { current: None, versions: vec![version_entry(7, &[(EAST, SUBJECT)], false)], became_current_at: None, pinned_at: None, extra: Default::default() });
                e.manifest = Some(m);
            }
            => [Reason::ManifestVersion { version: v(7).to_string() }];
        prune_keeps_ami_used_by_stopped_instance:
            |e| { e.protections.in_use.insert(SUBJECT.into(), vec!["i-0stopped".into()]); }
            => [Reason::InUse { instances: vec!["i-0stopped".into()] }];
        prune_keeps_ami_referenced_by_launch_template:
            |e| { e.protections.launch_templates.insert(SUBJECT.into(), vec!["lt-0abc v3 (default)".into()]); }
            => [Reason::LaunchTemplate { references: vec!["lt-0abc v3 (default)".into()] }];
        prune_keeps_ami_held_by_ssm_parameter:
            |e| { e.protections.parameters.insert(SUBJECT.into(), vec!["/golden-ami/bld-linux64/current".into()]); }
            => [Reason::SsmParameter { names: vec!["/golden-ami/bld-linux64/current".into()] }];
        prune_keeps_image_younger_than_min_age:
            |e| subject(e).created_at = Some(now() - Duration::hours(23))
            => [Reason::TooYoung { age_hours: 23, min_age_hours: 24 }];
        prune_keeps_image_created_in_the_future_by_a_skewed_clock:
            |e| subject(e).created_at = Some(now() + Duration::hours(2))
            => [Reason::TooYoung { age_hours: -2, min_age_hours: 24 }];
        prune_keeps_image_with_unknown_creation_date:
            |e| subject(e).created_at = None
            => [Reason::UnknownAge { min_age_hours: 24 }];
        prune_keeps_image_tagged_keep:
            |e| subject(e).keep_tag = true
            => [Reason::KeepTag];
        prune_keeps_image_without_type_tag:
            |e| subject(e).image_type = None
            => [Reason::NoTypeTag];
        prune_keeps_image_without_version_tag:
            |e| subject(e).version = None
            => [Reason::NoVersionTag];
        prune_never_considers_image_of_another_account:
            |e| subject(e).owned_by_account = false
            => [Reason::NotOurs { why: "not owned by this account".into() }];
        prune_never_considers_image_without_role_image:
            |e| subject(e).role_image = false
            => [Reason::NotOurs { why: "not tagged golden-ami:role=image".into() }];
        prune_keeps_image_of_a_protected_instance_even_if_its_version_is_revoked:
            |e| {
                e.manifest = Some(manifest(None, vec![version_entry(7, &[(EAST, SUBJECT)], true)]));
                e.protections.in_use.insert(SUBJECT.into(), vec!["i-0abc".into()]);
            }
            => [Reason::InUse { instances: vec!["i-0abc".into()] }];
        prune_lists_every_keep_reason_that_applies:
            |e| {
                e.policy.default_keep = 5;
                e.manifest = Some(manifest(Some(7), vec![version_entry(7, &[(EAST, SUBJECT)], false)]));
                e.protections.in_use.insert(SUBJECT.into(), vec!["i-0a".into()]);
                e.protections.launch_templates.insert(SUBJECT.into(), vec!["lt-0a v1 (latest)".into()]);
                e.protections.parameters.insert(SUBJECT.into(), vec!["/p".into()]);
                let s = subject(e);
                s.created_at = Some(now() - Duration::hours(1));
                s.keep_tag = true;
            }
            => [
                Reason::Newest { rank: 1, keep: 5 },
                Reason::Current { version: v(7).to_string() },
                Reason::ManifestVersion { version: v(7).to_string() },
                Reason::InUse { instances: vec!["i-0a".into()] },
                Reason::LaunchTemplate { references: vec!["lt-0a v1 (latest)".into()] },
                Reason::SsmParameter { names: vec!["/p".into()] },
                Reason::TooYoung { age_hours: 1, min_age_hours: 24 },
                Reason::KeepTag,
            ];
    }

    #[test]
    fn prune_ignores_empty_protection_lists() {
        let mut e = estate();
        e.protections.in_use.insert(SUBJECT.into(), vec![]);
        e.protections.parameters.insert(SUBJECT.into(), vec![]);
        assert_eq!(e.decision(SUBJECT).action, Action::Delete);
    }

    #[test]
    fn prune_deletes_revoked_version_even_when_it_is_the_newest() {
        // GIVEN the newest version revoked
        let mut e = estate();
        e.manifest = Some(manifest(
            None,
            vec![
                version_entry(2, &[(EAST, "ami-0newer")], true),
                version_entry(7, &[(EAST, SUBJECT)], false),
            ],
        ));
        // WHEN planned THEN the revoked one goes and does not count towards keep
        let p = e.plan();
        let newer = &p
            .decisions
            .iter()
            .find(|d| d.image_id == "ami-0newer")
            .unwrap();
        assert_eq!(newer.action, Action::Delete);
        assert_eq!(
            newer.reasons,
            [Reason::Revoked {
                version: v(2).to_string()
            }]
        );
        assert_eq!(
            e.decision(SUBJECT).reasons,
            [
                Reason::Newest { rank: 0, keep: 1 },
                Reason::ManifestVersion {
                    version: v(7).to_string()
                }
            ]
        );
    }

    #[test]
    fn prune_ranks_per_region_and_type_and_shares_a_rank_among_copies_of_a_version() {
        // GIVEN keep 2; east has versions 1, 2, 3 (3 twice), west only 3; another type has 4 only
        let e = Estate {
            candidates: vec![
                cand(EAST, "ami-e1", TY, 1),
                cand(EAST, "ami-e2", TY, 2),
                cand(EAST, "ami-e3", TY, 3),
                cand(EAST, "ami-e3b", TY, 3),
                cand(WEST, "ami-w3", TY, 3),
                cand(EAST, "ami-o4", "b-2008", 4),
            ],
            manifest: None,
            protections: Protections::default(),
            policy: Policy {
                default_keep: 2,
                ..Policy::default()
            },
        };
        let p = e.plan();
        let actions: Vec<(&str, Action)> = p
            .decisions
            .iter()
            .map(|d| (d.image_id.as_str(), d.action))
            .collect();
        // THEN sorted by region, type, version newest first; only east's third-newest version goes
        assert_eq!(
            actions,
            [
                ("ami-o4", Action::Keep),
                ("ami-e1", Action::Keep),
                ("ami-e2", Action::Keep),
                ("ami-e3", Action::Delete),
                ("ami-e3b", Action::Delete),
                ("ami-w3", Action::Keep),
            ]
        );
        assert_eq!(
            e.decision("ami-e3b").reasons,
            [
                Reason::OlderThanKept { rank: 2, keep: 2 },
                Reason::NotInManifest
            ]
        );
        assert_eq!(p.deletes, 2);
        assert!(!p.capped);
    }

    #[test]
    fn prune_uses_the_type_keep_over_the_default() {
        let mut e = estate();
        e.policy.default_keep = 5;
        e.policy.keep_by_type.insert(TY.into(), 1);
        assert_eq!(e.decision(SUBJECT).action, Action::Delete);
    }

    #[test]
    fn prune_cap_deletes_oldest_versions_first_and_defers_the_rest() {
        // GIVEN keep 1 and five deletable versions across two regions, cap 2
        let e = Estate {
            candidates: vec![
                cand(EAST, "ami-e1", TY, 1),
                cand(EAST, "ami-e5", TY, 5),
                cand(EAST, "ami-e9", TY, 9),
                cand(WEST, "ami-w1", TY, 1),
                cand(WEST, "ami-w3", TY, 3),
                cand(WEST, "ami-w8", TY, 8),
                cand(WEST, "ami-w6", TY, 6),
            ],
            manifest: None,
            protections: Protections::default(),
            policy: Policy {
                default_keep: 1,
                max_deletes: 2,
                ..Policy::default()
            },
        };
        let p = e.plan();
        // THEN the two oldest go, whatever their region; the others wait with OverCap
        let deleted: Vec<&str> = p
            .decisions
            .iter()
            .filter(|d| d.action == Action::Delete)
            .map(|d| d.image_id.as_str())
            .collect();
        assert_eq!(deleted, ["ami-e9", "ami-w8"]);
        assert_eq!(p.deletes, 2);
        assert!(p.capped);
        for id in ["ami-e5", "ami-w3", "ami-w6"] {
            let d = e.decision(id);
            assert_eq!(d.action, Action::Keep, "{id}");
            assert_eq!(
                d.reasons.last(),
                Some(&Reason::OverCap { max_deletes: 2 }),
                "{id}"
            );
            assert!(
                matches!(d.reasons[0], Reason::OlderThanKept { .. }),
                "{id}: the plan says why it would go"
            );
        }
    }

    #[test]
    fn prune_with_cap_zero_deletes_nothing_and_says_so() {
        let mut e = estate();
        e.policy.max_deletes = 0;
        let p = e.plan();
        assert_eq!(p.deletes, 0);
        assert!(p.capped);
        assert_eq!(
            e.decision(SUBJECT).reasons.last(),
            Some(&Reason::OverCap { max_deletes: 0 })
        );
    }

    #[test]
    fn prune_exactly_at_the_cap_is_not_capped() {
        let mut e = estate();
        e.policy.max_deletes = 1;
        let p = e.plan();
        assert_eq!((p.deletes, p.capped), (1, false));
    }

    #[test]
    fn snapshots_shared_with_a_kept_or_foreign_image_are_not_deleted() {
        // GIVEN two deleted images; one shares a snapshot with a kept image, one with an image not ours
        let mut old = cand(EAST, "ami-old", TY, 9);
        old.snapshot_ids = vec!["snap-shared-kept".into(), "snap-own".into()];
        let mut older = cand(EAST, "ami-older", TY, 10);
        older.snapshot_ids = vec!["snap-shared-foreign".into(), "snap-own2".into()];
        let mut kept = cand(EAST, "ami-kept", TY, 1);
        kept.snapshot_ids = vec!["snap-shared-kept".into()];
        let mut foreign = cand(EAST, "ami-foreign", TY, 20);
        foreign.role_image = false;
        foreign.snapshot_ids = vec!["snap-shared-foreign".into()];
        // A same-named snapshot in another region is another snapshot.
        let mut west = cand(WEST, "ami-west", TY, 1);
        west.snapshot_ids = vec!["snap-own".into()];
        let all = vec![old, older, kept, foreign, west];
        let policy = Policy {
            default_keep: 1,
            ..Policy::default()
        };
        let p = plan(&all, None, &Protections::default(), &policy, now());
        assert_eq!(p.deletes, 2);
        // THEN only the snapshots nothing else uses are deleted
        assert_eq!(
            snapshots_to_delete(&p, &all),
            [
                (EAST.to_owned(), "snap-own".to_owned()),
                (EAST.to_owned(), "snap-own2".to_owned())
            ]
        );
    }

    #[test]
    fn snapshots_shared_only_among_deleted_images_are_deleted_once() {
        let mut a = cand(EAST, "ami-a", TY, 9);
        a.snapshot_ids = vec!["snap-x".into()];
        let mut b = cand(EAST, "ami-b", TY, 10);
        b.snapshot_ids = vec!["snap-x".into()];
        let all = vec![cand(EAST, "ami-new", TY, 1), a, b];
        let policy = Policy {
            default_keep: 1,
            ..Policy::default()
        };
        let p = plan(&all, None, &Protections::default(), &policy, now());
        assert_eq!(
            snapshots_to_delete(&p, &all),
            [(EAST.to_owned(), "snap-x".to_owned())]
        );
    }

    #[test]
    fn snapshots_of_an_image_deferred_by_the_cap_are_not_deleted() {
        let mut a = cand(EAST, "ami-a", TY, 9);
        a.snapshot_ids = vec!["snap-x".into()];
        let mut b = cand(EAST, "ami-b", TY, 8);
        b.snapshot_ids = vec!["snap-x".into(), "snap-b".into()];
        let all = vec![cand(EAST, "ami-new", TY, 1), a, b];
        let policy = Policy {
            default_keep: 1,
            max_deletes: 1,
            ..Policy::default()
        };
        let p = plan(&all, None, &Protections::default(), &policy, now());
        assert!(p.capped);
        // ami-a (oldest) goes; ami-b stays and still uses snap-x.
        assert!(snapshots_to_delete(&p, &all).is_empty());
    }

    #[test]
    fn orphan_snapshots_respect_min_age_role_reference_and_unknown_start() {
        let snap = |id: &str, role_image: bool, hours: Option<i64>| SnapshotInfo {
            region: EAST.into(),
            snapshot_id: id.into(),
            role_image,
            start_time: hours.map(|h| now() - Duration::hours(h)),
        };
        let snapshots = [
            snap("snap-orphan", true, Some(48)),
            snap("snap-at-min-age", true, Some(24)),
            snap("snap-young", true, Some(23)),
            snap("snap-not-ours", false, Some(48)),
            snap("snap-referenced", true, Some(48)),
            snap("snap-no-start", true, None),
            SnapshotInfo {
                region: WEST.into(),
                ..snap("snap-referenced", true, Some(48))
            },
        ];
        let referenced: BTreeSet<(String, String)> =
            [(EAST.to_owned(), "snap-referenced".to_owned())].into();
        assert_eq!(
            orphan_snapshots(&snapshots, &referenced, Duration::hours(24), now()),
            [
                (EAST.to_owned(), "snap-at-min-age".to_owned()),
                (EAST.to_owned(), "snap-orphan".to_owned()),
                (WEST.to_owned(), "snap-referenced".to_owned()),
            ]
        );
    }

    #[test]
    fn plan_serializes_with_camel_case_rules_and_lowercase_actions() {
        let mut e = estate();
        subject(&mut e).created_at = Some(now() - Duration::hours(3));
        let json = serde_json::to_value(e.decision(SUBJECT)).unwrap();
        assert_eq!(json["action"], "keep");
        assert_eq!(json["imageId"], SUBJECT);
        assert_eq!(
            json["reasons"][0],
            serde_json::json!({"rule": "tooYoung", "ageHours": 3, "minAgeHours": 24})
        );
        let p = e.plan();
        let back: Plan = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            serde_json::to_value(Reason::NotInManifest).unwrap(),
            serde_json::json!({"rule": "notInManifest"})
        );
    }

    // ---- property: random estates ----

    const TYPES: &[Option<&str>] = &[Some("bld-linux64"), Some("b-2008"), None];
    const REGIONS: &[&str] = &[EAST, WEST];

    #[derive(Debug, Clone)]
    struct RawCandidate {
        region: usize,
        ty: usize,
        version: Option<i64>,
        age_hours: Option<i64>,
        owned: bool,
        role: bool,
        keep_tag: bool,
        snapshots: Vec<u8>,
        in_use: bool,
        launch_template: bool,
        parameter: bool,
    }

    fn raw_candidate() -> impl Strategy<Value = RawCandidate> {
        (
            (0..2usize, prop_oneof![9 => 0..2usize, 1 => Just(2usize)]),
            prop_oneof![9 => (0..8i64).prop_map(Some), 1 => Just(None)],
            prop_oneof![9 => (0..72i64).prop_map(Some), 1 => Just(None)],
            (
                prop::bool::weighted(0.9),
                prop::bool::weighted(0.9),
                prop::bool::weighted(0.1),
            ),
            prop::collection::vec(0..6u8, 0..3),
            (
                prop::bool::weighted(0.1),
                prop::bool::weighted(0.1),
                prop::bool::weighted(0.1),
            ),
        )
            .prop_map(
                |(
                    (region, ty),
                    version,
                    age_hours,
                    (owned, role, keep_tag),
                    snapshots,
                    (in_use, launch_template, parameter),
                )| {
                    RawCandidate {
                        region,
                        ty,
                        version,
                        age_hours,
                        owned,
                        role,
                        keep_tag,
                        snapshots,
                        in_use,
                        launch_template,
                        parameter,
                    }
                },
            )
    }

    /// Per type and version: (listed, revoked, lists which candidates' images).
    #[derive(Debug, Clone)]
    struct RawManifest {
        present: bool,
        /// [type][version] -> (in the manifest, revoked)
        versions: Vec<Vec<(bool, bool)>>,
        /// Whether the manifest lists the image of the candidate with that index (if its version is listed).
        lists: Vec<bool>,
        current_pick: usize,
    }

    fn raw_manifest() -> impl Strategy<Value = RawManifest> {
        (
            prop::bool::weighted(0.9),
            prop::collection::vec(
                prop::collection::vec((any::<bool>(), prop::bool::weighted(0.3)), 8),
                2,
            ),
            prop::collection::vec(prop::bool::weighted(0.4), 40),
            0..9usize,
        )
            .prop_map(|(present, versions, lists, current_pick)| RawManifest {
                present,
                versions,
                lists,
                current_pick,
            })
    }

    fn build(
        raw: &[RawCandidate],
        rm: &RawManifest,
    ) -> (Vec<Candidate>, Option<Manifest>, Protections) {
        let mut protections = Protections::default();
        let candidates: Vec<Candidate> = raw
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let id = format!("ami-{i:08x}");
                if r.in_use {
                    protections
                        .in_use
                        .insert(id.clone(), vec![format!("i-{i}")]);
                }
                if r.launch_template {
                    protections
                        .launch_templates
                        .insert(id.clone(), vec![format!("lt-{i} v1 (default)")]);
                }
                if r.parameter {
                    protections
                        .parameters
                        .insert(id.clone(), vec![format!("/p/{i}")]);
                }
                Candidate {
                    region: REGIONS[r.region].into(),
                    image_id: id,
                    name: format!("image {i}"),
                    image_type: TYPES[r.ty].map(str::to_owned),
                    version: r.version.map(v),
                    created_at: r.age_hours.map(|h| now() - Duration::hours(h)),
                    owned_by_account: r.owned,
                    role_image: r.role,
                    keep_tag: r.keep_tag,
                    snapshot_ids: r.snapshots.iter().map(|s| format!("snap-{s}")).collect(),
                }
            })
            .collect();
        if !rm.present {
            return (candidates, None, protections);
        }
        let mut m = Manifest::empty(now());
        for (t, versions) in rm.versions.iter().enumerate() {
            let ty = TYPES[t].unwrap();
            let mut entry = TypeEntry::default();
            // Days 0..8 ascending is newest first.
            for (days, &(listed, revoked)) in versions.iter().enumerate() {
                if !listed {
                    continue;
                }
                let days = days as i64;
                let mut images = BTreeMap::new();
                for (i, c) in candidates.iter().enumerate() {
                    if c.image_type.as_deref() == Some(ty)
                        && c.version == Some(v(days))
                        && rm.lists[i % rm.lists.len()]
                    {
                        images.insert(c.region.clone(), c.image_id.clone());
                    }
                }
                entry.versions.push(version_entry(days, &[], revoked));
                entry.versions.last_mut().unwrap().images = images;
            }
            let published: Vec<Version> = entry
                .versions
                .iter()
                .filter(|e| e.status == VersionStatus::Published)
                .map(|e| e.version.clone())
                .collect();
            entry.current = published.get(rm.current_pick).cloned();
            m.types.insert(ty.into(), entry);
        }
        (candidates, Some(m), protections)
    }

    /// Whether any keep fact holds for `c`, computed from scratch.
    /// The oracle's own reading of the policy (not `Policy::keep_for`): the type the test configures keeps
    /// `keep_a`, every other type `default_keep`.
    fn keep_of(ty: &str, keep_a: usize, default_keep: usize) -> usize {
        if ty == "bld-linux64" {
            keep_a
        } else {
            default_keep
        }
    }

    /// Whether the rules of DESIGN.md keep `c`, decided here from the facts alone.
    fn has_keep_fact(
        c: &Candidate,
        all: &[Candidate],
        m: Option<&Manifest>,
        p: &Protections,
        min_age: Duration,
        keep: &dyn Fn(&str) -> usize,
    ) -> bool {
        let revoked = |ty: &str, version: &Version| {
            m.and_then(|m| m.find(ty, version))
                .is_some_and(|e| e.status == VersionStatus::Revoked)
        };
        let in_published = m.is_some_and(|m| {
            m.types.values().flat_map(|t| &t.versions).any(|e| {
                e.status == VersionStatus::Published && e.images.values().any(|i| i == &c.image_id)
            })
        });
        let protected = [&p.in_use, &p.launch_templates, &p.parameters]
            .iter()
            .any(|map| map.get(&c.image_id).is_some_and(|l| !l.is_empty()));
        let young = c.created_at.is_none_or(|t| now() - t < min_age);
        let (Some(ty), Some(version)) = (&c.image_type, &c.version) else {
            return true;
        };
        let newer: BTreeSet<&Version> = all
            .iter()
            .filter(|o| {
                o.owned_by_account
                    && o.role_image
                    && o.region == c.region
                    && o.image_type == c.image_type
            })
            .filter_map(|o| o.version.as_ref())
            .filter(|o| *o > version && !revoked(ty, o))
            .collect();
        let newest = !revoked(ty, version) && newer.len() < keep(ty);
        !c.owned_by_account
            || !c.role_image
            || in_published
            || protected
            || young
            || c.keep_tag
            || newest
    }

    proptest! {
        #[test]
        fn prune_plan_is_safe_on_random_estates(
            raw in prop::collection::vec(raw_candidate(), 0..40),
            rm in raw_manifest(),
            keep_a in 0..4usize,
            default_keep in 0..4usize,
            max_deletes in 0..12usize,
            min_age_hours in 0..48i64,
        ) {
            let (candidates, manifest, protections) = build(&raw, &rm);
            let policy = Policy {
                keep_by_type: [("bld-linux64".to_owned(), keep_a)].into(),
                default_keep,
                min_age: Duration::hours(min_age_hours),
                max_deletes,
            };
            let p = plan(&candidates, manifest.as_ref(), &protections, &policy, now());
            prop_assert_eq!(p.decisions.len(), candidates.len());
            let keep = |ty: &str| keep_of(ty, keep_a, default_keep);
            let kept_by_fact = |c: &Candidate| {
                has_keep_fact(c, &candidates, manifest.as_ref(), &protections, Duration::hours(min_age_hours), &keep)
            };

            // No deleted image has a keep fact, and every delete has a delete reason.
            for d in p.decisions.iter().filter(|d| d.action == Action::Delete) {
                let c = candidates.iter().find(|c| c.image_id == d.image_id).unwrap();
                prop_assert!(!kept_by_fact(c), "deleted {:?}", d);
                prop_assert!(!d.reasons.is_empty());
            }
            // And the other way: an image no rule keeps is deleted, unless the cap stopped it (and says so).
            for c in &candidates {
                let d = p.decisions.iter().find(|d| d.image_id == c.image_id).unwrap();
                if !kept_by_fact(c) && d.action == Action::Keep {
                    prop_assert!(d.reasons.contains(&Reason::OverCap { max_deletes }), "kept for no reason: {:?}", d);
                }
            }

            // The cap holds and is reported.
            let deletes = p.decisions.iter().filter(|d| d.action == Action::Delete).count();
            prop_assert_eq!(p.deletes, deletes);
            prop_assert!(deletes <= max_deletes);
            let over = p.decisions.iter().filter(|d| d.reasons.contains(&Reason::OverCap { max_deletes })).count();
            prop_assert_eq!(p.capped, over > 0);
            if p.capped {
                prop_assert_eq!(deletes, max_deletes);
            }

            // Each type keeps at least min(keep, its non-revoked count) newest versions per region.
            for region in REGIONS {
                for ty in TYPES.iter().flatten() {
                    let revoked = |version: &Version| {
                        manifest.as_ref().and_then(|m| m.find(ty, version)).is_some_and(|e| e.status == VersionStatus::Revoked)
                    };
                    let ours = |c: &&Candidate| c.owned_by_account && c.role_image && c.region == *region && c.image_type.as_deref() == Some(*ty);
                    let versions: BTreeSet<Reverse<&Version>> = candidates
                        .iter()
                        .filter(ours)
                        .filter_map(|c| c.version.as_ref())
                        .filter(|v| !revoked(v))
                        .map(Reverse)
                        .collect();
                    for Reverse(top) in versions.iter().take(keep(ty)) {
                        for c in candidates.iter().filter(ours).filter(|c| c.version.as_ref() == Some(*top)) {
                            let d = p.decisions.iter().find(|d| d.image_id == c.image_id).unwrap();
                            prop_assert_eq!(d.action, Action::Keep, "{} {} {} is among the newest", region, ty, top);
                        }
                    }
                }
            }

            // Deterministic, whatever the order of the input.
            let mut reversed = candidates.clone();
            reversed.reverse();
            prop_assert_eq!(&plan(&reversed, manifest.as_ref(), &protections, &policy, now()), &p);

            // No snapshot still used by a remaining image is deleted.
            let doomed = snapshots_to_delete(&p, &candidates);
            for d in p.decisions.iter().filter(|d| d.action == Action::Keep) {
                for s in &d.snapshot_ids {
                    prop_assert!(!doomed.contains(&(d.region.clone(), s.clone())), "{} still uses {}", d.image_id, s);
                }
            }
        }
    }
}
