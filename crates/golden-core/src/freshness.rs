//! Is a fleet instance on a fresh AMI, and should enforce-freshness act on it now (DESIGN.md "Lifecycle
//! functions", enforce-freshness).
//!
//! An instance is fresh when it runs the manifest's current image for its type and region. One on a revoked
//! version is acted on at once; one on any other image is stale and is recycled spread over a rollout
//! window: like the original `random + age/TTL > 1`, but the "random" part is a hash of the instance id,
//! so every sweep agrees about an instance and a retried sweep never acts on a different set.
//! A sweep also caps how much of a type's running fleet it touches, so a new version (or a bad manifest
//! edit) never takes a whole fleet down at once.
//!
//! There is no "manifest unreadable" verdict on purpose: when the manifest cannot be read or parsed, the
//! caller does nothing at all (and says so), because with no manifest every instance would look stale.
//! Anything else we cannot decide (no type, no current version, no image in the region) leaves the
//! instance alone too.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::{Manifest, VersionStatus};

/// Rollout window unless configured (the same default as `GOLDEN_ROLLOUT_WINDOW_MINUTES`).
pub const DEFAULT_WINDOW_MINUTES: i64 = 180;
/// Share of a type's running fleet a sweep may act on (the same default as `GOLDEN_ROLLOUT_MAX_FRACTION`).
pub const DEFAULT_MAX_FRACTION: f64 = 0.25;

/// A fleet instance as the sweep sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetInstance {
    pub region: String,
    pub instance_id: String,
    pub image_id: String,
    /// EC2 state name: `pending`, `running`, `stopping`, ...
    pub state: String,
    /// Value of the type tag (`GOLDEN_TYPE_TAG`).
    pub image_type: Option<String>,
    /// Tag `golden-ami:role` == `builder`.
    pub builder: bool,
    /// Tag `golden-ami:exempt` == `true`.
    pub exempt: bool,
    /// When EC2 first launched it, kept across stops and starts (unknown: treated as launched before
    /// anything).
    pub launched_at: Option<DateTime<Utc>>,
}

/// What the manifest says about an instance's image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "verdict",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Verdict {
    /// Runs the current image of its type in its region.
    Fresh,
    /// Runs another image; `age_minutes` is how long the current version has existed (never negative).
    Stale {
        current_version: String,
        current_image: String,
        age_minutes: i64,
    },
    /// Runs an image of a revoked version of its type.
    Revoked {
        version: String,
        reason: Option<String>,
    },
    /// No type tag, or the manifest has no current version for its type: left alone.
    UnknownType,
    /// The current version has no image in the instance's region: nothing to move it to.
    NoImageForRegion { version: String },
    /// A builder: the reaper's business, never enforcement's.
    Builder,
    /// Tagged `golden-ami:exempt=true`.
    Exempt,
    /// Not running: a stopped or stopping instance is checked when it runs again.
    NotRunning,
    /// Runs a stale or revoked image, launched after its type's current version became current: whatever
    /// launched it (a pinned launch template, an AMI id in a script) still names that image, so acting
    /// would only make it launch another, forever. Reported (and counted in the `PinnedLaunches` metric),
    /// never acted on: the launcher is what needs fixing.
    PinnedLauncher {
        image_id: String,
        revoked: bool,
        launched_at: DateTime<Utc>,
        current_version: String,
        current_since: DateTime<Utc>,
    },
}

/// What enforcement does to an instance it acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnforceAction {
    Terminate,
    Stop,
    /// Only log what would be done.
    Report,
}

/// `GOLDEN_ENFORCE_ACTION` is not one of the actions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown enforce action {0:?}: expected terminate, stop or report")]
pub struct UnknownEnforceAction(pub String);

impl FromStr for EnforceAction {
    type Err = UnknownEnforceAction;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "terminate" => Ok(EnforceAction::Terminate),
            "stop" => Ok(EnforceAction::Stop),
            "report" => Ok(EnforceAction::Report),
            _ => Err(UnknownEnforceAction(s.to_owned())),
        }
    }
}

impl fmt::Display for EnforceAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EnforceAction::Terminate => "terminate",
            EnforceAction::Stop => "stop",
            EnforceAction::Report => "report",
        })
    }
}

/// How fast stale instances are recycled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// Stale instances become due spread over this long after the current version appears.
    pub window: Duration,
    /// Share of a type's running fleet one sweep may act on; at least one instance always may.
    pub max_fraction: f64,
    pub action: EnforceAction,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            window: Duration::minutes(DEFAULT_WINDOW_MINUTES),
            max_fraction: DEFAULT_MAX_FRACTION,
            action: EnforceAction::Terminate,
        }
    }
}

/// How long after a version becomes current an instance launched from an outdated image is still taken
/// for one started before the switch: the SSM parameters follow the manifest a moment later, and a
/// launch in flight may have resolved the old image.
pub const PINNED_GRACE: Duration = Duration::minutes(15);

/// The verdict on one instance. Checks run in this order, so the first that applies wins: not running,
/// builder, exempt, unknown type (no tag, or type not in the manifest); with no current version, revoked
/// (an image of a revoked version of its type in any region) or else unknown type; no image of the
/// current version for the region; fresh; pinned launcher (launched from a stale or revoked image after
/// the switch, see [`PINNED_GRACE`]); revoked; else stale.
pub fn verdict(instance: &FleetInstance, manifest: &Manifest, now: DateTime<Utc>) -> Verdict {
    if instance.state != "running" {
        return Verdict::NotRunning;
    }
    if instance.builder {
        return Verdict::Builder;
    }
    if instance.exempt {
        return Verdict::Exempt;
    }
    let Some(ty) = instance.image_type.as_deref() else {
        return Verdict::UnknownType;
    };
    let Some(entry) = manifest.types.get(ty) else {
        return Verdict::UnknownType;
    };
    let revoked = entry.versions.iter().find(|v| {
        v.status == VersionStatus::Revoked && v.images.values().any(|i| i == &instance.image_id)
    });
    let Some(current) = manifest.current(ty) else {
        // No current version (a forced revoke of the last good one): a revoked image is still revoked.
        return match revoked {
            Some(r) => Verdict::Revoked {
                version: r.version.to_string(),
                reason: r.revoked_reason.clone(),
            },
            None => Verdict::UnknownType,
        };
    };
    let Some(current_image) = current.images.get(&instance.region) else {
        // Nothing to move it to in this region, even off a revoked image.
        return Verdict::NoImageForRegion {
            version: current.version.to_string(),
        };
    };
    if current_image == &instance.image_id {
        return Verdict::Fresh;
    }
    // Launched from an outdated image after the current version became current (plus the moments the SSM
    // parameters take to follow the manifest): its launcher is pinned. Without the moment (a manifest
    // written before it was recorded), nothing can be told: act as usual.
    if let (Some(since), Some(launched)) = (entry.became_current_at, instance.launched_at) {
        if launched > since + PINNED_GRACE {
            return Verdict::PinnedLauncher {
                image_id: instance.image_id.clone(),
                revoked: revoked.is_some(),
                launched_at: launched,
                current_version: current.version.to_string(),
                current_since: since,
            };
        }
    }
    if let Some(revoked) = revoked {
        return Verdict::Revoked {
            version: revoked.version.to_string(),
            reason: revoked.revoked_reason.clone(),
        };
    }
    // The rollout counts from when the version became current (a promoted older version is as new to
    // the fleet as a fresh one), else from its creation.
    let since = entry.became_current_at.unwrap_or(current.created_at);
    Verdict::Stale {
        current_version: current.version.to_string(),
        current_image: current_image.clone(),
        age_minutes: (now - since).num_minutes().max(0),
    }
}

/// A number in [0, 1) fixed by the instance id: the first 8 bytes of its SHA-256 as a big-endian integer
/// over 2^64. Only the top 53 bits are used, as an f64 holds no more; rounding the full 64 could give 1.0.
pub fn stagger(instance_id: &str) -> f64 {
    let digest = Sha256::digest(instance_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let bits = u64::from_be_bytes(first) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// Whether to act now. Revoked: always. Stale: once the current version is `window` old, or earlier when
/// the instance's [`stagger`] is below the share of the window gone by, so a fleet moves gradually and
/// each instance's turn only ever comes closer. Anything else: never.
pub fn due(instance_id: &str, verdict: &Verdict, window: Duration) -> bool {
    match verdict {
        Verdict::Revoked { .. } => true,
        Verdict::Stale { age_minutes, .. } => {
            let age = (*age_minutes).max(0) as f64;
            let window = window.num_seconds() as f64 / 60.0;
            // A zero or negative window means "no stagger": age >= window always holds then.
            age >= window || stagger(instance_id) < age / window
        }
        _ => false,
    }
}

/// What a sweep does about one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enforcement {
    pub region: String,
    pub instance_id: String,
    pub image_type: Option<String>,
    pub verdict: Verdict,
    /// Apply the rollout's action now (for [`EnforceAction::Report`], only report it).
    pub act: bool,
    /// Why, for people reading the log.
    pub note: String,
}

/// How many instances of a type with `running` running instances one sweep may act on: the fraction of
/// the fleet rounded down, but at least one, so a small fleet still moves.
pub fn sweep_budget(running: usize, max_fraction: f64) -> usize {
    let fraction = if max_fraction.is_nan() {
        0.0
    } else {
        max_fraction.clamp(0.0, 1.0)
    };
    ((running as f64 * fraction).floor() as usize).max(1)
}

/// A sweep: the verdict and [`due`] for each instance, then per type at most [`sweep_budget`] of that
/// type's running fleet (running instances carrying the type tag, builders excluded, exempt ones counted
/// as the capacity they are) act: revoked first, then the longest stale, then the earliest turn in the
/// window ([`stagger`]). The rest of the due ones get
/// `act = false` and a note that the cap deferred them; a later sweep picks them up.
///
/// The result is sorted by (region, instance id) and does not depend on the order of `instances`.
pub fn plan_sweep(
    instances: &[FleetInstance],
    manifest: &Manifest,
    rollout: &Rollout,
    now: DateTime<Utc>,
) -> Vec<Enforcement> {
    let mut running: BTreeMap<&str, usize> = BTreeMap::new();
    for i in instances {
        if let (Some(ty), "running", false) = (i.image_type.as_deref(), i.state.as_str(), i.builder)
        {
            *running.entry(ty).or_default() += 1;
        }
    }

    let mut out: Vec<Enforcement> = instances
        .iter()
        .map(|i| {
            let verdict = verdict(i, manifest, now);
            let act = due(&i.instance_id, &verdict, rollout.window);
            let note = note(i, &verdict, act, rollout.window);
            Enforcement {
                region: i.region.clone(),
                instance_id: i.instance_id.clone(),
                image_type: i.image_type.clone(),
                verdict,
                act,
                note,
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.region, &a.instance_id).cmp(&(&b.region, &b.instance_id)));

    // Per type, the due instances in the order they get the budget.
    let mut due_by_type: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (n, e) in out.iter().enumerate() {
        if let (true, Some(ty)) = (e.act, &e.image_type) {
            due_by_type.entry(ty.clone()).or_default().push(n);
        }
    }
    for (ty, mut due) in due_by_type {
        // Revoked before stale, then the longest stale. Stale ages come from the type's current version, so
        // within a type they tie; then the instance whose turn in the window came first goes first, and the
        // (region, id) order above settles the rest.
        let priority = |e: &Enforcement| match e.verdict {
            Verdict::Revoked { .. } => (0, 0),
            Verdict::Stale { age_minutes, .. } => (1, -age_minutes),
            _ => (2, 0),
        };
        due.sort_by(|&a, &b| {
            priority(&out[a])
                .cmp(&priority(&out[b]))
                .then_with(|| stagger(&out[a].instance_id).total_cmp(&stagger(&out[b].instance_id)))
        });
        let fleet = running.get(ty.as_str()).copied().unwrap_or(0);
        let budget = sweep_budget(fleet, rollout.max_fraction);
        for &n in due.iter().skip(budget) {
            let e = &mut out[n];
            e.act = false;
            e.note = format!(
                "{}; deferred by the cap: at most {budget} of {fleet} running {ty} instances act per sweep",
                e.note
            );
        }
    }
    out
}

/// The log line for one instance's verdict before any cap.
pub fn note(i: &FleetInstance, verdict: &Verdict, due: bool, window: Duration) -> String {
    let window_minutes = window.num_minutes();
    match verdict {
        Verdict::Fresh => "on the current image".to_owned(),
        Verdict::Stale {
            current_version,
            current_image,
            age_minutes,
        } if due => format!(
            "stale: runs {}, current is {current_version} ({current_image}) since {age_minutes}m; due in the \
             {window_minutes}m rollout window",
            i.image_id
        ),
        Verdict::Stale {
            current_version,
            age_minutes,
            ..
        } => {
            let turn = (stagger(&i.instance_id) * window.num_seconds() as f64 / 60.0).ceil() as i64;
            format!(
                "stale: runs {}, current is {current_version} since {age_minutes}m; its turn comes at about \
                 {turn}m of the {window_minutes}m rollout window",
                i.image_id
            )
        }
        Verdict::Revoked { version, reason } => format!(
            "runs {} of revoked version {version}{}: act at once",
            i.image_id,
            reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        Verdict::UnknownType => match &i.image_type {
            None => "no type tag: left alone".to_owned(),
            Some(ty) => format!("type {ty} has no current version in the manifest: left alone"),
        },
        Verdict::NoImageForRegion { version } => format!(
            "current version {version} has no image in {}: left alone",
            i.region
        ),
        Verdict::Builder => "a builder: left to the reaper".to_owned(),
        Verdict::Exempt => "tagged golden-ami:exempt=true: left alone".to_owned(),
        Verdict::NotRunning => format!("{}: only running instances are enforced", i.state),
        Verdict::PinnedLauncher {
            image_id,
            revoked,
            launched_at,
            current_version,
            current_since,
        } => format!(
            "runs {} image {image_id}, launched {} after {current_version} became current ({}): its launcher \
             (launch template, script) still names that image, so replacing it would only launch another; \
             not acted on, fix the launcher",
            if *revoked { "revoked" } else { "stale" },
            launched_at.to_rfc3339(),
            current_since.to_rfc3339()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{TypeEntry, VersionEntry};
    use crate::version::Version;
    use chrono::TimeZone;
    use proptest::prelude::*;

    const TY: &str = "bld-linux64";
    const EAST: &str = "us-east-1";
    const WEST: &str = "us-west-2";
    const CURRENT: &str = "ami-0current";
    const OLD: &str = "ami-0old";
    const BAD: &str = "ami-0bad";
    const BAD_WEST: &str = "ami-0badwest";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    fn entry(
        created: DateTime<Utc>,
        images: &[(&str, &str)],
        revoked: Option<&str>,
    ) -> VersionEntry {
        VersionEntry {
            recipe_hash: None,
            shared_with: None,
            extra: Default::default(),
            version: Version::from_datetime(created),
            created_at: created,
            source_ami: "ami-0base".into(),
            execution: "arn:aws:states:us-east-1:111122223333:execution:bake:x".into(),
            images: images
                .iter()
                .map(|(r, i)| ((*r).to_owned(), (*i).to_owned()))
                .collect(),
            status: if revoked.is_some() {
                VersionStatus::Revoked
            } else {
                VersionStatus::Published
            },
            revoked_reason: revoked.map(str::to_owned),
            revoked_at: revoked.map(|_| now()),
        }
    }

    /// `TY`: a revoked version 1 h old (east and west), current 90 min old (east only), an old one 2 days
    /// old. "b-2008" has versions but no current.
    fn manifest() -> Manifest {
        let mut m = Manifest::empty(now());
        let current_at = now() - Duration::minutes(90);
        m.types.insert(
            TY.into(),
            TypeEntry {
                extra: Default::default(),
                current: Some(Version::from_datetime(current_at)),
                versions: vec![
                    entry(
                        now() - Duration::minutes(60),
                        &[(EAST, BAD), (WEST, BAD_WEST)],
                        Some("kernel panic"),
                    ),
                    entry(current_at, &[(EAST, CURRENT)], None),
                    entry(
                        now() - Duration::days(2),
                        &[(EAST, OLD), (WEST, "ami-0oldwest")],
                        None,
                    ),
                ],
                became_current_at: None,
                pinned_at: None,
            },
        );
        m.types.insert(
            "b-2008".into(),
            TypeEntry {
                extra: Default::default(),
                current: None,
                versions: vec![entry(
                    now() - Duration::days(3),
                    &[(EAST, "ami-0win")],
                    None,
                )],
                became_current_at: None,
                pinned_at: None,
            },
        );
        m
    }

    fn instance(id: &str, image: &str) -> FleetInstance {
        FleetInstance {
            region: EAST.into(),
            instance_id: id.into(),
            image_id: image.into(),
            state: "running".into(),
            image_type: Some(TY.into()),
            builder: false,
            exempt: false,
            launched_at: None,
        }
    }

    fn current_version() -> String {
        Version::from_datetime(now() - Duration::minutes(90)).to_string()
    }

    #[test]
    fn verdict_table() {
        type Given = fn(&mut FleetInstance);
        let stale = Verdict::Stale {
            current_version: current_version(),
            current_image: CURRENT.into(),
            age_minutes: 90,
        };
        let revoked = Verdict::Revoked {
            version: Version::from_datetime(now() - Duration::minutes(60)).to_string(),
            reason: Some("kernel panic".into()),
        };
        let cases: Vec<(&str, Given, Verdict)> = vec![
            ("on the current image", |_| {}, Verdict::Fresh),
            (
                "on an older published image",
                |i| i.image_id = OLD.into(),
                stale.clone(),
            ),
            (
                "on an image the manifest does not know",
                |i| i.image_id = "ami-0stranger".into(),
                stale.clone(),
            ),
            (
                "on a revoked image",
                |i| i.image_id = BAD.into(),
                revoked.clone(),
            ),
            (
                "on a revoked version's image from another region",
                |i| i.image_id = BAD_WEST.into(),
                Verdict::Revoked {
                    version: Version::from_datetime(now() - Duration::minutes(60)).to_string(),
                    reason: Some("kernel panic".into()),
                },
            ),
            (
                "stopped",
                |i| i.state = "stopped".into(),
                Verdict::NotRunning,
            ),
            (
                "pending",
                |i| i.state = "pending".into(),
                Verdict::NotRunning,
            ),
            (
                "a stopped builder is first not running",
                |i| {
                    i.state = "stopping".into();
                    i.builder = true;
                },
                Verdict::NotRunning,
            ),
            (
                "a builder",
                |i| {
                    i.builder = true;
                    i.image_id = BAD.into();
                },
                Verdict::Builder,
            ),
            (
                "a builder that is also exempt",
                |i| {
                    i.builder = true;
                    i.exempt = true;
                },
                Verdict::Builder,
            ),
            (
                "exempt, even on a revoked image",
                |i| {
                    i.exempt = true;
                    i.image_id = BAD.into();
                },
                Verdict::Exempt,
            ),
            ("no type tag", |i| i.image_type = None, Verdict::UnknownType),
            (
                "a type not in the manifest",
                |i| i.image_type = Some("nope".into()),
                Verdict::UnknownType,
            ),
            (
                "a type with no current version",
                |i| i.image_type = Some("b-2008".into()),
                Verdict::UnknownType,
            ),
            (
                "a region the current version lacks, even on a revoked image",
                |i| {
                    i.region = WEST.into();
                    i.image_id = BAD_WEST.into();
                },
                Verdict::NoImageForRegion {
                    version: current_version(),
                },
            ),
        ];
        let m = manifest();
        for (name, given, expected) in cases {
            let mut i = instance("i-0abc", CURRENT);
            given(&mut i);
            assert_eq!(verdict(&i, &m, now()), expected, "{name}");
        }
    }

    #[test]
    fn stale_age_is_never_negative() {
        // GIVEN a current version created after `now` (clock skew)
        let i = instance("i-0abc", OLD);
        let verdict = verdict(&i, &manifest(), now() - Duration::hours(5));
        assert!(
            matches!(verdict, Verdict::Stale { age_minutes: 0, .. }),
            "{verdict:?}"
        );
    }

    #[test]
    fn stagger_is_deterministic_and_in_range() {
        assert_eq!(
            stagger("i-0123456789abcdef0"),
            stagger("i-0123456789abcdef0")
        );
        assert_ne!(
            stagger("i-0123456789abcdef0"),
            stagger("i-0123456789abcdef1")
        );
        // sha256("") starts e3b0c442 98fc1c14: pins the hash and byte order, so a change shows.
        let expected = (0xe3b0_c442_98fc_1c14u64 >> 11) as f64 / (1u64 << 53) as f64;
        assert_eq!(stagger(""), expected);
        // Real-looking ids, the values computed outside this code (Python: int.from_bytes(
        // hashlib.sha256(id.encode()).digest()[:8], "big") >> 11, over 2**53).
        for (id, expected) in [
            ("i-0123456789abcdef0", 0.343_253_324_069_779_04),
            ("i-0fedcba9876543210", 0.527_489_524_812_639_3),
            ("i-00000000000000001", 0.179_525_662_395_644_5),
            ("i-0a1b2c3d4e5f60718", 0.205_923_649_678_827_26),
        ] {
            assert_eq!(stagger(id), expected, "{id}");
        }
    }

    #[test]
    fn stagger_spreads_instance_ids_evenly() {
        let values: Vec<f64> = (0..4000).map(|n| stagger(&format!("i-{n:017x}"))).collect();
        assert!(values.iter().all(|s| (0.0..1.0).contains(s)));
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        // Every tenth of [0, 1) gets roughly its share.
        for decile in 0..10 {
            let lo = f64::from(decile) / 10.0;
            let n = values
                .iter()
                .filter(|s| (lo..lo + 0.1).contains(*s))
                .count();
            assert!((300..500).contains(&n), "decile {decile}: {n}");
        }
    }

    fn stale(age_minutes: i64) -> Verdict {
        Verdict::Stale {
            current_version: current_version(),
            current_image: CURRENT.into(),
            age_minutes,
        }
    }

    #[test]
    fn due_table() {
        let window = Duration::minutes(180);
        let id = "i-0abc";
        let turn = stagger(id) * 180.0;
        let cases: Vec<(&str, Verdict, Duration, bool)> = vec![
            (
                "revoked acts at once",
                Verdict::Revoked {
                    version: "v".into(),
                    reason: None,
                },
                window,
                true,
            ),
            ("stale at age 0 waits", stale(0), window, false),
            ("stale past the window is due", stale(180), window, true),
            (
                "stale just after its turn is due",
                stale(turn.floor() as i64 + 1),
                window,
                true,
            ),
            (
                "stale just before its turn waits",
                stale(turn.ceil() as i64 - 1),
                window,
                false,
            ),
            (
                "a zero window means no stagger",
                stale(0),
                Duration::zero(),
                true,
            ),
            ("fresh never", Verdict::Fresh, window, false),
            ("builder never", Verdict::Builder, window, false),
            ("exempt never", Verdict::Exempt, window, false),
            ("unknown type never", Verdict::UnknownType, window, false),
            (
                "no image for region never",
                Verdict::NoImageForRegion {
                    version: "v".into(),
                },
                window,
                false,
            ),
            ("not running never", Verdict::NotRunning, window, false),
        ];
        assert!(turn > 1.0 && turn < 179.0, "pick another id: turn {turn}");
        for (name, verdict, window, expected) in cases {
            assert_eq!(due(id, &verdict, window), expected, "{name}");
        }
    }

    #[test]
    fn enforce_action_parses_the_config_values() {
        assert_eq!("terminate".parse(), Ok(EnforceAction::Terminate));
        assert_eq!(" Stop".parse(), Ok(EnforceAction::Stop));
        assert_eq!("report".parse(), Ok(EnforceAction::Report));
        let err = "reboot".parse::<EnforceAction>().unwrap_err();
        assert!(
            err.to_string().contains("terminate, stop or report"),
            "{err}"
        );
        assert_eq!(EnforceAction::Stop.to_string(), "stop");
        assert_eq!(
            serde_json::to_value(EnforceAction::Report).unwrap(),
            "report"
        );
    }

    #[test]
    fn sweep_budget_is_the_fraction_rounded_down_but_at_least_one() {
        for (running, fraction, expected) in [
            (0, 0.25, 1),
            (1, 0.25, 1),
            (7, 0.25, 1),
            (8, 0.25, 2),
            (100, 0.25, 25),
            (10, 1.0, 10),
            (10, 2.0, 10),
            (10, 0.0, 1),
            (10, f64::NAN, 1),
        ] {
            assert_eq!(
                sweep_budget(running, fraction),
                expected,
                "{running} x {fraction}"
            );
        }
    }

    #[test]
    fn sweep_acts_on_revoked_first_then_longest_stale_and_defers_the_rest() {
        // GIVEN 8 running instances of TY (budget 2): one fresh, two revoked, five stale; and one other
        // type's instance on an old image of a type with no current
        let mut instances = vec![instance("i-fresh", CURRENT)];
        instances.push(instance("i-rev1", BAD));
        instances.push(instance("i-rev2", BAD));
        for n in 0..5 {
            instances.push(instance(&format!("i-stale{n}"), OLD));
        }
        let mut win = instance("i-win", "ami-0win");
        win.image_type = Some("b-2008".into());
        instances.push(win);
        // Stale versions whose current is older than the window are all due.
        let rollout = Rollout {
            window: Duration::minutes(60),
            ..Rollout::default()
        };
        // WHEN swept
        let plan = plan_sweep(&instances, &manifest(), &rollout, now());
        // THEN the two revoked act, every stale one is deferred by the cap
        let acting: Vec<&str> = plan
            .iter()
            .filter(|e| e.act)
            .map(|e| e.instance_id.as_str())
            .collect();
        assert_eq!(acting, ["i-rev1", "i-rev2"]);
        let deferred: Vec<&Enforcement> = plan
            .iter()
            .filter(|e| e.note.contains("deferred by the cap"))
            .collect();
        assert_eq!(deferred.len(), 5);
        assert!(
            deferred[0]
                .note
                .contains("at most 2 of 8 running bld-linux64"),
            "{}",
            deferred[0].note
        );
        // The plan is sorted and covers every instance.
        let ids: Vec<&str> = plan.iter().map(|e| e.instance_id.as_str()).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted);
        assert_eq!(plan.len(), instances.len());
    }

    #[test]
    fn sweep_budget_is_per_type() {
        // GIVEN a second type with its own current version, and one stale instance of each type
        let mut m = manifest();
        m.types.insert(
            "b-2016".into(),
            TypeEntry {
                extra: Default::default(),
                current: Some(Version::from_datetime(now() - Duration::days(1))),
                versions: vec![entry(
                    now() - Duration::days(1),
                    &[(EAST, "ami-0new16")],
                    None,
                )],
                became_current_at: None,
                pinned_at: None,
            },
        );
        let mut other = instance("i-a", "ami-0old16");
        other.image_type = Some("b-2016".into());
        let rollout = Rollout {
            window: Duration::minutes(10),
            max_fraction: 0.0,
            ..Rollout::default()
        };
        // WHEN swept with a budget of one per type
        let plan = plan_sweep(&[instance("i-b", OLD), other], &m, &rollout, now());
        // THEN both act: one type's budget does not spend another's
        assert!(plan.iter().all(|e| e.act), "{plan:?}");
    }

    #[test]
    fn sweep_acts_first_on_the_stale_instances_whose_turn_came_first() {
        // GIVEN ten stale instances of one type, all due, and a budget of 2
        let instances: Vec<FleetInstance> = (0..10)
            .map(|n| instance(&format!("i-{n:02}"), OLD))
            .collect();
        let rollout = Rollout {
            window: Duration::minutes(1),
            max_fraction: 0.2,
            action: EnforceAction::Report,
        };
        let plan = plan_sweep(&instances, &manifest(), &rollout, now());
        // THEN the two with the lowest stagger act
        let mut by_turn: Vec<&str> = instances.iter().map(|i| i.instance_id.as_str()).collect();
        by_turn.sort_by(|a, b| stagger(a).total_cmp(&stagger(b)));
        let mut acting: Vec<&str> = plan
            .iter()
            .filter(|e| e.act)
            .map(|e| e.instance_id.as_str())
            .collect();
        acting.sort_by(|a, b| stagger(a).total_cmp(&stagger(b)));
        assert_eq!(acting, by_turn[..2]);
    }

    #[test]
    fn sweep_notes_when_a_stale_instance_turn_comes() {
        let rollout = Rollout::default();
        let id = (0..)
            .map(|n| format!("i-{n:02}"))
            .find(|id| stagger(id) > 0.9)
            .unwrap();
        let plan = plan_sweep(&[instance(&id, OLD)], &manifest(), &rollout, now());
        assert!(!plan[0].act);
        let turn = (stagger(&id) * 180.0).ceil() as i64;
        assert!(
            plan[0].note.contains(&format!(
                "its turn comes at about {turn}m of the 180m rollout window"
            )),
            "{}",
            plan[0].note
        );
    }

    #[test]
    fn enforcement_serializes_verdict_with_a_tag() {
        let e = plan_sweep(
            &[instance("i-1", BAD)],
            &manifest(),
            &Rollout::default(),
            now(),
        );
        let json = serde_json::to_value(&e[0]).unwrap();
        assert_eq!(json["verdict"]["verdict"], "revoked");
        assert_eq!(json["verdict"]["reason"], "kernel panic");
        assert_eq!(json["act"], true);
        assert_eq!(json["instanceId"], "i-1");
    }

    proptest! {
        #[test]
        fn due_is_monotone_in_age(n in 0u32..100_000, a in 0i64..400, extra in 1i64..400, window in 1i64..400) {
            let id = format!("i-{n:017x}");
            let window = Duration::minutes(window);
            if due(&id, &stale(a), window) {
                prop_assert!(due(&id, &stale(a + extra), window));
            }
        }

        #[test]
        fn sweep_never_acts_on_the_untouchable_and_respects_the_cap(
            raw in prop::collection::vec(
                (0..2usize, 0..4usize, 0..6usize, 0..4usize, any::<bool>(), any::<bool>()), 0..60),
            window in 0i64..300,
            max_fraction in 0.0f64..1.0,
        ) {
            const IMAGES: &[&str] = &[CURRENT, OLD, BAD, BAD_WEST, "ami-0win", "ami-0stranger"];
            const STATES: &[&str] = &["running", "running", "stopped", "pending"];
            const TYPES: &[Option<&str>] = &[Some(TY), Some(TY), Some("b-2008"), None];
            let instances: Vec<FleetInstance> = raw
                .iter()
                .enumerate()
                .map(|(n, &(region, ty, image, state, builder, exempt))| FleetInstance {
                    region: [EAST, WEST][region].into(),
                    instance_id: format!("i-{n:04}"),
                    image_id: IMAGES[image].into(),
                    state: STATES[state].into(),
                    image_type: TYPES[ty].map(str::to_owned),
                    builder: builder && n % 3 == 0,
                    exempt: exempt && n % 4 == 0,
                    launched_at: None,
                })
                .collect();
            let rollout = Rollout { window: Duration::minutes(window), max_fraction, action: EnforceAction::Terminate };
            let m = manifest();
            let plan = plan_sweep(&instances, &m, &rollout, now());
            prop_assert_eq!(plan.len(), instances.len());
            for e in plan.iter().filter(|e| e.act) {
                let i = instances.iter().find(|i| i.instance_id == e.instance_id).unwrap();
                prop_assert!(i.state == "running" && !i.builder && !i.exempt, "{:?}", i);
                prop_assert!(matches!(e.verdict, Verdict::Stale { .. } | Verdict::Revoked { .. }), "{:?}", e);
            }
            for ty in [TY, "b-2008"] {
                let running = instances.iter().filter(|i| i.state == "running" && i.image_type.as_deref() == Some(ty)).count();
                let acted = plan.iter().filter(|e| e.act && e.image_type.as_deref() == Some(ty)).count();
                prop_assert!(acted <= ((max_fraction * running as f64).floor() as usize).max(1), "{}: {} of {}", ty, acted, running);
            }
            let mut reversed = instances.clone();
            reversed.reverse();
            prop_assert_eq!(plan_sweep(&reversed, &m, &rollout, now()), plan);
        }
    }

    #[test]
    fn the_rollout_counts_from_when_a_version_became_current_not_from_its_creation() {
        // GIVEN the current version, created 90 minutes ago, promoted (made current again) 30 minutes ago
        let mut m = manifest();
        m.types.get_mut(TY).expect("type").became_current_at = Some(now() - Duration::minutes(30));
        // WHEN an instance on an older image is judged
        let v = verdict(&instance("i-1", OLD), &m, now());
        // THEN it is stale for 30 minutes, not 90: the fleet is not all due at once after a promote
        assert_eq!(
            v,
            Verdict::Stale {
                current_version: Version::from_datetime(now() - Duration::minutes(90)).to_string(),
                current_image: CURRENT.into(),
                age_minutes: 30,
            }
        );
        // and without the field (a manifest written before it), the creation time still counts
        let v = verdict(&instance("i-1", OLD), &manifest(), now());
        assert!(
            matches!(
                v,
                Verdict::Stale {
                    age_minutes: 90,
                    ..
                }
            ),
            "{v:?}"
        );
    }

    #[test]
    fn an_instance_launched_from_an_outdated_image_after_the_switch_is_its_launchers_fault() {
        let since = now() - Duration::minutes(30);
        let mut m = manifest();
        m.types.get_mut(TY).expect("type").became_current_at = Some(since);
        let launched = |image: &str, at: DateTime<Utc>| FleetInstance {
            launched_at: Some(at),
            ..instance("i-1", image)
        };
        // GIVEN instances on a revoked and on a stale image, launched after the current version became
        // current THEN their launcher pins the image: reported, never due
        for (image, revoked) in [(BAD, true), (OLD, false)] {
            let v = verdict(
                &launched(image, since + PINNED_GRACE + Duration::minutes(1)),
                &m,
                now(),
            );
            assert_eq!(
                v,
                Verdict::PinnedLauncher {
                    image_id: image.into(),
                    revoked,
                    launched_at: since + PINNED_GRACE + Duration::minutes(1),
                    current_version: Version::from_datetime(now() - Duration::minutes(90))
                        .to_string(),
                    current_since: since,
                }
            );
            assert!(!due("i-1", &v, Duration::minutes(180)));
        }
        // GIVEN the same launched before it, or within the grace after it (the parameters follow the
        // manifest a moment later) THEN they are acted on as ever
        let v = verdict(&launched(BAD, since - Duration::minutes(1)), &m, now());
        assert!(matches!(v, Verdict::Revoked { .. }), "{v:?}");
        let v = verdict(&launched(BAD, since + PINNED_GRACE), &m, now());
        assert!(matches!(v, Verdict::Revoked { .. }), "{v:?}");
        assert!(due("i-1", &v, Duration::minutes(180)));
        // GIVEN a manifest that does not record the moment THEN nothing can be told: revoked, due
        let v = verdict(&launched(BAD, now()), &manifest(), now());
        assert!(matches!(v, Verdict::Revoked { .. }), "{v:?}");
        // and a sweep never acts on a pinned launch either
        let plan = plan_sweep(
            &[launched(BAD, since + PINNED_GRACE + Duration::minutes(1))],
            &m,
            &Rollout::default(),
            now(),
        );
        assert!(!plan[0].act);
        assert!(plan[0].note.contains("its launcher"), "{}", plan[0].note);
    }

    #[test]
    fn with_no_current_version_an_instance_on_a_revoked_image_is_still_revoked() {
        // GIVEN a forced revoke that left the type no current version
        let mut m = manifest();
        m.types.get_mut(TY).expect("type").current = None;
        // THEN an instance on the revoked image is revoked (due at once), one on another image unknown
        let v = verdict(&instance("i-1", BAD), &m, now());
        assert!(matches!(v, Verdict::Revoked { .. }), "{v:?}");
        assert!(due("i-1", &v, Duration::minutes(180)));
        assert_eq!(
            verdict(&instance("i-2", OLD), &m, now()),
            Verdict::UnknownType
        );
    }
}
