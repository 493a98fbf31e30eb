//! The published manifest, schema 1 (see DESIGN.md "Published manifest (contract)").
//!
//! `manifest.json` is what fleets, launch templates and people read to learn which image is current per type
//! and region. Every edit here is a pure function over the parsed document: the caller reads it with its
//! ETag, applies edits, calls [`Manifest::touch`] once if anything [`Edit::Changed`], and writes it back with
//! If-Match, retrying from the read on a conflict. Edits are idempotent so such a retry (or a retried Step
//! Functions state) converges instead of duplicating.
//!
//! Invariants, checked by [`Manifest::parse`] and kept by every edit: per type, versions are strictly
//! newest-first (so unique); `current` is absent or names a published version in the list; every image is
//! a valid region -> AMI id pair.

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::recipe::{is_ami_id, is_region_name, is_valid_type_name};
use crate::version::Version;

/// The schema this build reads and writes.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema: u32,
    /// Incremented on every changed write; lets readers notice updates cheaply.
    pub generation: u64,
    pub updated_at: DateTime<Utc>,
    pub types: BTreeMap<String, TypeEntry>,
    /// Fields this build does not know (a newer schema-1 writer's), kept as they are so a read-modify-write
    /// by this build never drops them (DESIGN: readers ignore fields they do not know).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeEntry {
    /// The version fleets should run; `null` only after a forced revoke of the last good version.
    #[serde(default)]
    pub current: Option<Version>,
    /// Newest first.
    #[serde(default)]
    pub versions: Vec<VersionEntry>,
    /// When `current` last changed (by a publish, promote or revoke): the rollout window counts from here.
    /// Optional in schema 1: manifests written before it have none, and readers fall back to the current
    /// version's `createdAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub became_current_at: Option<DateTime<Utc>>,
    /// Set by `goldenctl promote --pin` (a deliberate rollback or hold): while set, a newer bake is added to
    /// the history but does not become current. Cleared by `goldenctl unpin` and by a promote without
    /// `--pin`; revoking the pinned version moves the pin to the version current rolls back to (cleared
    /// only if a forced revoke leaves none). Optional in schema 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_at: Option<DateTime<Utc>>,
    /// Fields this build does not know (a newer schema-1 writer's), kept as they are so a read-modify-write
    /// by this build never drops them (DESIGN: readers ignore fields they do not know).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionEntry {
    pub version: Version,
    pub created_at: DateTime<Utc>,
    pub source_ami: String,
    /// The recipe it was baked from ([`crate::recipe::Recipe::content_hash`]); with `source_ami`, what a
    /// bake compares to skip an unchanged rebuild. Optional in schema 1: versions published before it
    /// have none, and the next bake of their type bakes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe_hash: Option<String>,
    /// Who else may launch its images (the recipe's `share`, as applied at publish). Optional in schema 1:
    /// absent when the images are the account's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_with: Option<SharedWith>,
    /// The Step Functions execution ARN that baked it.
    pub execution: String,
    /// Region -> AMI id.
    pub images: BTreeMap<String, String>,
    pub status: VersionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    /// Fields this build does not know (a newer schema-1 writer's), kept as they are so a read-modify-write
    /// by this build never drops them (DESIGN: readers ignore fields they do not know).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A version's sharing, as the manifest says it (camelCase like the rest of it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedWith {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizations: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizational_units: Vec<String>,
}

impl SharedWith {
    /// What a recipe's `share` gives, or `None` for a recipe that shares with no one.
    pub fn of(share: &crate::recipe::Share) -> Option<SharedWith> {
        (!share.is_empty()).then(|| SharedWith {
            accounts: share.accounts.clone(),
            organizations: share.organizations.clone(),
            organizational_units: share.organizational_units.clone(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionStatus {
    Published,
    Revoked,
}

/// Whether an edit changed the manifest, i.e. whether it must be written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    Changed,
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("invalid manifest: {reason}")]
    Corrupt { reason: String },
    #[error(
        "unsupported manifest schema {0}; this build reads schema 1 (upgrade golden-ami to a release that reads \
         schema {0})"
    )]
    UnsupportedSchema(u32),
    #[error("unknown image type {0:?}: the manifest has no entry for it; check the name with `goldenctl manifest`")]
    UnknownType(String),
    #[error(
        "{ty} has no version {version} in the manifest; list its versions with `goldenctl manifest {ty}`"
    )]
    UnknownVersion { ty: String, version: Version },
    #[error(
        "{ty}/{version} is already published with different images, source AMI or execution; versions are \
         immutable, so bake a new version instead"
    )]
    Conflict { ty: String, version: Version },
    #[error("{ty}/{version} is revoked and cannot be made current; promote a published version or bake a new one")]
    Revoked { ty: String, version: Version },
    #[error(
        "{ty}/{version} has no image in {region}; copy it there first, or promote a version that has images in \
         every required region"
    )]
    MissingRegion {
        ty: String,
        version: Version,
        region: String,
    },
    #[error(
        "refusing to revoke {ty}/{version}: it is current and no older published version has images in all \
         required regions; promote another published version first (`goldenctl promote {ty} VERSION`), \
         or pass --force to leave the type with no current image"
    )]
    NoFallback { ty: String, version: Version },
}

/// Times are stored to the second: the contract shows whole seconds, and it keeps `parse(to_json_vec(m))`
/// exactly equal to `m`.
fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::seconds(1)).unwrap_or(t)
}

fn corrupt(reason: impl Into<String>) -> ManifestError {
    ManifestError::Corrupt {
        reason: reason.into(),
    }
}

impl VersionEntry {
    /// Whether this version has an image in each of `regions`; the first region lacking one otherwise.
    fn missing_region<'a>(&self, regions: &'a [String]) -> Option<&'a String> {
        regions.iter().find(|r| !self.images.contains_key(*r))
    }

    fn is_published(&self) -> bool {
        self.status == VersionStatus::Published
    }

    /// The fields that identify what was baked; equal ones make a repeated add a no-op.
    fn same_content(&self, other: &VersionEntry) -> bool {
        self.images == other.images
            && self.source_ami == other.source_ami
            && self.execution == other.execution
    }
}

impl TypeEntry {
    fn position(&self, version: &Version) -> Option<usize> {
        self.versions.iter().position(|e| &e.version == version)
    }
}

impl Manifest {
    /// A manifest with no types, as written for a new bucket.
    pub fn empty(now: DateTime<Utc>) -> Manifest {
        Manifest {
            extra: Default::default(),
            schema: SCHEMA,
            generation: 0,
            updated_at: whole_seconds(now),
            types: BTreeMap::new(),
        }
    }

    /// Reads and checks a manifest. The schema is read first, so a newer document is reported as such
    /// rather than as corrupt.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            corrupt(format!(
                "not valid JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ))
        })?;
        let schema = value
            .get("schema")
            .ok_or_else(|| corrupt("no \"schema\" field"))?
            .as_u64()
            .ok_or_else(|| corrupt("\"schema\" is not a whole number"))?;
        if schema != u64::from(SCHEMA) {
            return Err(ManifestError::UnsupportedSchema(
                u32::try_from(schema).unwrap_or(u32::MAX),
            ));
        }
        // Parsed again from the bytes (not the value) so errors carry a line and column.
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("at line {}, column {}: {e}", e.line(), e.column())))?;
        for (ty, entry) in &manifest.types {
            check_type_entry(ty, entry)?;
        }
        Ok(manifest)
    }

    /// The document as written to S3: pretty, keys in a stable order, trailing newline.
    pub fn to_json_vec(&self) -> Vec<u8> {
        // Plain structs with string-keyed maps always serialize.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// The current version of `ty`, if any.
    /// Every image id any version of any type lists (published or revoked): what the manifest still names.
    pub fn image_ids(&self) -> std::collections::BTreeSet<String> {
        self.types
            .values()
            .flat_map(|t| &t.versions)
            .flat_map(|v| v.images.values().cloned())
            .collect()
    }

    pub fn current(&self, ty: &str) -> Option<&VersionEntry> {
        let entry = self.types.get(ty)?;
        let current = entry.current.as_ref()?;
        entry.versions.iter().find(|e| &e.version == current)
    }

    pub fn find(&self, ty: &str, version: &Version) -> Option<&VersionEntry> {
        self.types
            .get(ty)?
            .versions
            .iter()
            .find(|e| &e.version == version)
    }

    /// Records a baked version, in newest-first position. Adding the same version again with the same
    /// content is a no-op (a retried Publish); with different content it is a [`ManifestError::Conflict`].
    /// With `make_current`, current moves to it only if it is published, newer than current, and the type
    /// is not pinned, so a slow bake finishing late never rolls the fleet back and a nightly bake never
    /// undoes a deliberate rollback; the version is still kept in the history.
    pub fn add_version(
        &mut self,
        ty: &str,
        entry: VersionEntry,
        make_current: bool,
    ) -> Result<Edit, ManifestError> {
        check_new_entry(ty, &entry)?;
        let version = entry.version.clone();
        let mut edit = Edit::Unchanged;
        let type_entry = self.types.entry(ty.to_owned()).or_default();
        match type_entry
            .versions
            .binary_search_by(|e| version.cmp(&e.version))
        {
            Ok(i) => {
                if !type_entry.versions[i].same_content(&entry) {
                    return Err(ManifestError::Conflict {
                        ty: ty.to_owned(),
                        version,
                    });
                }
            }
            Err(i) => {
                let mut entry = entry;
                entry.created_at = whole_seconds(entry.created_at);
                entry.revoked_at = entry.revoked_at.map(whole_seconds);
                type_entry.versions.insert(i, entry);
                edit = Edit::Changed;
            }
        }
        if make_current {
            let published = type_entry
                .versions
                .iter()
                .any(|e| e.version == version && e.is_published());
            let newer = type_entry.current.as_ref().is_none_or(|c| &version > c);
            if published && newer && type_entry.pinned_at.is_none() {
                type_entry.current = Some(version);
                edit = Edit::Changed;
            }
        }
        Ok(edit)
    }

    /// Marks a version revoked. If it was current, current rolls back to the newest older published version
    /// with an image in every required region; if there is none, this refuses with
    /// [`ManifestError::NoFallback`] unless `force`, which leaves the type with no current image (fleets then
    /// keep what they run rather than move to a bad image). Revoking the pinned current version keeps the
    /// type pinned, on the fallback. Revoking again with the same reason is a no-op; with another reason the reason and time are
    /// updated.
    pub fn revoke(
        &mut self,
        ty: &str,
        version: &Version,
        reason: &str,
        at: DateTime<Utc>,
        required_regions: &[String],
        force: bool,
    ) -> Result<Edit, ManifestError> {
        let type_entry = self
            .types
            .get_mut(ty)
            .ok_or_else(|| ManifestError::UnknownType(ty.to_owned()))?;
        let i = type_entry
            .position(version)
            .ok_or_else(|| ManifestError::UnknownVersion {
                ty: ty.to_owned(),
                version: version.clone(),
            })?;
        let target = &type_entry.versions[i];
        if target.status == VersionStatus::Revoked
            && target.revoked_reason.as_deref() == Some(reason)
        {
            return Ok(Edit::Unchanged);
        }
        if type_entry.current.as_ref() == Some(version) {
            // Versions are newest first, so everything after i is older.
            let fallback = type_entry.versions[i + 1..]
                .iter()
                .find(|e| e.is_published() && e.missing_region(required_regions).is_none())
                .map(|e| e.version.clone());
            if fallback.is_none() && !force {
                return Err(ManifestError::NoFallback {
                    ty: ty.to_owned(),
                    version: version.clone(),
                });
            }
            // A pinned type stays pinned, on the fallback: the nightly bake must not undo the rollback.
            if type_entry.pinned_at.is_some() {
                type_entry.pinned_at = fallback.as_ref().map(|_| whole_seconds(at));
            }
            type_entry.current = fallback;
        }
        let target = &mut type_entry.versions[i];
        target.status = VersionStatus::Revoked;
        target.revoked_reason = Some(reason.to_owned());
        target.revoked_at = Some(whole_seconds(at));
        Ok(Edit::Changed)
    }

    /// Makes a published version current, newer or older than the current one (an explicit rollback or
    /// roll-forward). It must have an image in every required region, or fleets there would have none.
    /// With `pin_at`, the type is pinned there (newer bakes do not move current); without, any pin is
    /// cleared.
    pub fn promote(
        &mut self,
        ty: &str,
        version: &Version,
        required_regions: &[String],
        pin_at: Option<DateTime<Utc>>,
    ) -> Result<Edit, ManifestError> {
        let type_entry = self
            .types
            .get_mut(ty)
            .ok_or_else(|| ManifestError::UnknownType(ty.to_owned()))?;
        let i = type_entry
            .position(version)
            .ok_or_else(|| ManifestError::UnknownVersion {
                ty: ty.to_owned(),
                version: version.clone(),
            })?;
        let target = &type_entry.versions[i];
        if !target.is_published() {
            return Err(ManifestError::Revoked {
                ty: ty.to_owned(),
                version: version.clone(),
            });
        }
        if let Some(region) = target.missing_region(required_regions) {
            return Err(ManifestError::MissingRegion {
                ty: ty.to_owned(),
                version: version.clone(),
                region: region.clone(),
            });
        }
        let pin_unchanged = type_entry.pinned_at.is_some() == pin_at.is_some();
        if type_entry.current.as_ref() == Some(version) && pin_unchanged {
            return Ok(Edit::Unchanged);
        }
        type_entry.current = Some(version.clone());
        type_entry.pinned_at = pin_at.map(whole_seconds);
        Ok(Edit::Changed)
    }

    /// Lets newer bakes become current again; current itself stays until the next publish (or a promote).
    pub fn unpin(&mut self, ty: &str) -> Result<Edit, ManifestError> {
        let type_entry = self
            .types
            .get_mut(ty)
            .ok_or_else(|| ManifestError::UnknownType(ty.to_owned()))?;
        Ok(match type_entry.pinned_at.take() {
            Some(_) => Edit::Changed,
            None => Edit::Unchanged,
        })
    }

    /// Keeps the newest `keep` versions of `ty` plus the current one, and returns the others (newest
    /// first) so the caller can log them. Images themselves are prune's business, not this.
    pub fn trim_history(&mut self, ty: &str, keep: usize) -> Vec<VersionEntry> {
        let Some(type_entry) = self.types.get_mut(ty) else {
            return Vec::new();
        };
        let current = type_entry.current.clone();
        let mut removed = Vec::new();
        let mut kept = Vec::with_capacity(type_entry.versions.len());
        for (i, e) in std::mem::take(&mut type_entry.versions)
            .into_iter()
            .enumerate()
        {
            if i < keep || current.as_ref() == Some(&e.version) {
                kept.push(e);
            } else {
                removed.push(e);
            }
        }
        type_entry.versions = kept;
        removed
    }

    /// Marks a write: call once per write that has at least one [`Edit::Changed`].
    pub fn touch(&mut self, now: DateTime<Utc>) {
        self.generation += 1;
        self.updated_at = whole_seconds(now);
    }

    /// Each type's current version, to tell after an edit which types' current moved.
    pub fn currents(&self) -> BTreeMap<String, Option<Version>> {
        self.types
            .iter()
            .map(|(t, e)| (t.clone(), e.current.clone()))
            .collect()
    }

    /// Stamps `becameCurrentAt` = `now` on every type whose current version differs from `before`
    /// (cleared where there is no current version any more).
    pub fn stamp_current_changes(
        &mut self,
        before: &BTreeMap<String, Option<Version>>,
        now: DateTime<Utc>,
    ) {
        for (ty, entry) in &mut self.types {
            if before.get(ty).cloned().flatten() != entry.current {
                entry.became_current_at = entry.current.as_ref().map(|_| whole_seconds(now));
            }
        }
    }
}

fn check_images(
    ty: &str,
    version: &Version,
    images: &BTreeMap<String, String>,
) -> Result<(), String> {
    for (region, ami) in images {
        if !is_region_name(region) {
            return Err(format!(
                "{ty}/{version}: {region:?} is not a region name (expected e.g. us-east-1)"
            ));
        }
        if !is_ami_id(ami) {
            return Err(format!("{ty}/{version}: image in {region} is {ami:?}, not an AMI id (ami- and 8-17 hex digits)"));
        }
    }
    Ok(())
}

fn check_new_entry(ty: &str, entry: &VersionEntry) -> Result<(), ManifestError> {
    if !is_valid_type_name(ty) {
        return Err(corrupt(format!(
            "refusing to add a version of {ty:?}: not a valid image type name"
        )));
    }
    check_images(ty, &entry.version, &entry.images).map_err(|reason| {
        corrupt(format!(
            "refusing to add {reason}; the manifest would no longer parse"
        ))
    })
}

fn check_type_entry(ty: &str, entry: &TypeEntry) -> Result<(), ManifestError> {
    if !is_valid_type_name(ty) {
        return Err(corrupt(format!("{ty:?} is not a valid image type name")));
    }
    for pair in entry.versions.windows(2) {
        if pair[0].version <= pair[1].version {
            let what = if pair[0].version == pair[1].version {
                "listed twice"
            } else {
                "not newest first"
            };
            return Err(corrupt(format!(
                "{ty}: versions {what} ({} before {})",
                pair[0].version, pair[1].version
            )));
        }
    }
    for e in &entry.versions {
        check_images(ty, &e.version, &e.images).map_err(corrupt)?;
    }
    if let Some(current) = &entry.current {
        match entry.versions.iter().find(|e| &e.version == current) {
            None => {
                return Err(corrupt(format!(
                    "{ty}: current {current} is not among its versions"
                )))
            }
            Some(e) if !e.is_published() => {
                return Err(corrupt(format!("{ty}: current {current} is revoked")));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    const TY: &str = "bld-linux64";

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 1, 0, 0).unwrap()
    }

    /// Version `n` minutes after t0.
    fn v(n: i64) -> Version {
        Version::from_datetime(t0() + TimeDelta::minutes(n))
    }

    fn regions(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn entry(n: i64, regions: &[&str]) -> VersionEntry {
        VersionEntry {
            recipe_hash: None,
            shared_with: None,
            extra: Default::default(),
            version: v(n),
            created_at: v(n).created_at(),
            source_ami: "ami-0123456789abcdef0".into(),
            execution: format!("arn:aws:states:us-east-1:111122223333:execution:bake:{n}"),
            images: regions
                .iter()
                .enumerate()
                .map(|(i, r)| ((*r).to_owned(), format!("ami-{n:08x}{i:08x}")))
                .collect(),
            status: VersionStatus::Published,
            revoked_reason: None,
            revoked_at: None,
        }
    }

    const BOTH: &[&str] = &["us-east-1", "us-west-2"];

    /// A manifest with versions 1, 2, 3 (all in both regions), current 3.
    fn three() -> Manifest {
        let mut m = Manifest::empty(t0());
        for n in 1..=3 {
            m.add_version(TY, entry(n, BOTH), true).unwrap();
        }
        m
    }

    fn order(m: &Manifest) -> Vec<Version> {
        m.types[TY]
            .versions
            .iter()
            .map(|e| e.version.clone())
            .collect()
    }

    #[test]
    fn contract_example_parses_and_writes_back_in_the_same_shape() {
        let text = r#"{ "schema": 1, "generation": 17, "updatedAt": "2026-11-25T01:42:10Z",
          "types": { "bld-linux64": {
              "current": "20261125T011500Z",
              "versions": [ { "version": "20261125T011500Z", "createdAt": "2026-11-25T01:15:00Z",
                              "sourceAmi": "ami-0base", "execution": "arn:aws:states:...",
                              "images": { "us-east-1": "ami-0123456789abcdef0", "us-west-2": "ami-00000000" },
                              "status": "published" } ] } } }"#;
        let m = Manifest::parse(text.as_bytes()).unwrap();
        assert_eq!(m.generation, 17);
        assert_eq!(m.current(TY).unwrap().images["us-west-2"], "ami-00000000");
        let out = String::from_utf8(m.to_json_vec()).unwrap();
        for key in [
            "\"updatedAt\": \"2026-11-25T01:42:10Z\"",
            "\"createdAt\"",
            "\"sourceAmi\"",
            "\"status\": \"published\"",
        ] {
            assert!(out.contains(key), "{key} in {out}");
        }
        assert!(
            !out.contains("revokedReason"),
            "absent optional fields are omitted"
        );
        assert!(out.ends_with("}\n"));
        assert_eq!(Manifest::parse(out.as_bytes()).unwrap(), m);
    }

    #[test]
    fn fields_of_a_newer_writer_are_read_past_and_written_back_unchanged() {
        let good = String::from_utf8(three().to_json_vec()).unwrap();
        let newer = good
            .replacen(
                "\"generation\"",
                "\"recipeHashes\": {\"x\": 1}, \"generation\"",
                1,
            )
            .replacen("\"current\"", "\"owner\": \"releng\", \"current\"", 1)
            .replacen("\"sourceAmi\"", "\"sbom\": \"s3://x\", \"sourceAmi\"", 1);
        let mut m = Manifest::parse(newer.as_bytes()).expect("unknown fields are not an error");
        assert_eq!(m.extra["recipeHashes"], serde_json::json!({"x": 1}));
        // An edit by this build keeps them, so an older function never drops a newer one's fields.
        m.add_version(TY, entry(9, BOTH), true).unwrap();
        let written = String::from_utf8(m.to_json_vec()).unwrap();
        for field in [
            "recipeHashes",
            "\"owner\": \"releng\"",
            "\"sbom\": \"s3://x\"",
        ] {
            assert!(written.contains(field), "{field} dropped:\n{written}");
        }
        assert_eq!(Manifest::parse(written.as_bytes()).unwrap(), m);
    }

    #[test]
    fn parse_rejects_invalid_documents() {
        let good = String::from_utf8(three().to_json_vec()).unwrap();
        let (a, b) = (v(3).to_string(), v(2).to_string());
        let cases: Vec<(&str, String, &str)> = vec![
            (
                "bad json",
                "{\n  \"schema\": 1,\n  oops".into(),
                "line 3, column",
            ),
            ("no schema", "{}".into(), "no \"schema\""),
            (
                "out of order",
                good.replacen(&a, "TMP", 2)
                    .replacen(&b, &a, 2)
                    .replacen("TMP", &b, 2),
                "not newest first",
            ),
            ("duplicate", good.replace(&b, &a), "listed twice"),
            (
                "missing current",
                good.replacen(
                    &format!("\"current\": \"{a}\""),
                    "\"current\": \"20990101T000000Z\"",
                    1,
                ),
                "not among its versions",
            ),
            (
                "bad region",
                good.replacen("\"us-west-2\"", "\"uswest2\"", 1),
                "not a region name",
            ),
            (
                "bad ami",
                good.replacen("\"us-east-1\": \"ami-", "\"us-east-1\": \"img-", 1),
                "not an AMI id",
            ),
            (
                "bad version",
                good.replacen(&a, "2026-11-25", 1),
                "expected YYYYMMDDTHHMMSSZ",
            ),
            (
                "bad type name",
                good.replace(TY, "Bld Linux"),
                "not a valid image type name",
            ),
        ];
        for (name, text, part) in cases {
            match Manifest::parse(text.as_bytes()) {
                Err(ManifestError::Corrupt { reason }) => {
                    assert!(reason.contains(part), "{name}: {reason}")
                }
                other => panic!("{name}: expected Corrupt, got {other:?}"),
            }
        }
    }

    #[test]
    fn parse_rejects_a_revoked_current() {
        let mut m = three();
        m.types.get_mut(TY).unwrap().versions[0].status = VersionStatus::Revoked;
        let err = Manifest::parse(&m.to_json_vec()).unwrap_err();
        assert!(err.to_string().contains("is revoked"), "{err}");
    }

    #[test]
    fn parse_reports_a_newer_schema_as_unsupported() {
        let err = Manifest::parse(br#"{"schema": 2, "whatever": []}"#).unwrap_err();
        assert_eq!(err, ManifestError::UnsupportedSchema(2));
        assert!(err
            .to_string()
            .starts_with("unsupported manifest schema 2; this build reads schema 1"));
    }

    #[test]
    fn empty_and_touch_keep_whole_seconds() {
        let now = t0() + TimeDelta::milliseconds(1500);
        let mut m = Manifest::empty(now);
        assert_eq!(
            (m.schema, m.generation, m.updated_at),
            (1, 0, t0() + TimeDelta::seconds(1))
        );
        m.touch(now + TimeDelta::seconds(60));
        assert_eq!(
            (m.generation, m.updated_at),
            (1, t0() + TimeDelta::seconds(61))
        );
        assert_eq!(Manifest::parse(&m.to_json_vec()).unwrap(), m);
    }

    #[test]
    fn add_version_inserts_newest_first_and_moves_current_forward_only() {
        // GIVEN versions 1..3, current 3
        let mut m = three();
        // WHEN an older version 0 and a middle one (2 already exists) arrive with make_current
        assert_eq!(
            m.add_version(TY, entry(0, BOTH), true).unwrap(),
            Edit::Changed
        );
        // THEN they are kept in history but current does not move backwards
        assert_eq!(order(&m), [v(3), v(2), v(1), v(0)]);
        assert_eq!(m.current(TY).unwrap().version, v(3));
        // AND a newer one becomes current
        m.add_version(TY, entry(5, BOTH), true).unwrap();
        assert_eq!(order(&m)[0], v(5));
        assert_eq!(m.current(TY).unwrap().version, v(5));
        // AND without make_current, current stays
        m.add_version(TY, entry(4, BOTH), false).unwrap();
        assert_eq!(order(&m), [v(5), v(4), v(3), v(2), v(1), v(0)]);
        assert_eq!(m.current(TY).unwrap().version, v(5));
    }

    #[test]
    fn add_version_is_idempotent_and_detects_conflicts() {
        let mut m = three();
        let before = m.clone();
        assert_eq!(
            m.add_version(TY, entry(3, BOTH), true).unwrap(),
            Edit::Unchanged
        );
        assert_eq!(m, before);

        let mut different = entry(3, BOTH);
        different
            .images
            .insert("us-west-2".into(), "ami-ffffffff".into());
        let err = m.add_version(TY, different, true).unwrap_err();
        assert_eq!(
            err,
            ManifestError::Conflict {
                ty: TY.into(),
                version: v(3)
            }
        );
        assert!(err.to_string().contains("bake a new version"));
        assert_eq!(m, before);
    }

    #[test]
    fn repeated_add_with_make_current_completes_a_half_done_publish() {
        let mut m = three();
        m.add_version(TY, entry(4, BOTH), false).unwrap();
        assert_eq!(
            m.add_version(TY, entry(4, BOTH), true).unwrap(),
            Edit::Changed
        );
        assert_eq!(m.current(TY).unwrap().version, v(4));
    }

    #[test]
    fn add_version_refuses_entries_that_would_corrupt_the_manifest() {
        let mut m = three();
        let mut bad = entry(9, BOTH);
        bad.images.insert("mars-1".into(), "ami-12345678".into());
        assert!(matches!(
            m.add_version(TY, bad, true),
            Err(ManifestError::Corrupt { .. })
        ));
        assert!(matches!(
            m.add_version("Bad Type", entry(9, BOTH), true),
            Err(ManifestError::Corrupt { .. })
        ));
        assert_eq!(m, three());
    }

    #[test]
    fn revoke_current_rolls_back_to_newest_older_version_with_all_regions() {
        // GIVEN 1 and 2 in both regions, 3 only in us-east-1, 4 current
        let mut m = Manifest::empty(t0());
        m.add_version(TY, entry(1, BOTH), true).unwrap();
        m.add_version(TY, entry(2, BOTH), true).unwrap();
        m.add_version(TY, entry(3, &["us-east-1"]), true).unwrap();
        m.add_version(TY, entry(4, BOTH), true).unwrap();
        // WHEN 4 is revoked with both regions required
        let edit = m
            .revoke(TY, &v(4), "broken sshd", t0(), &regions(BOTH), false)
            .unwrap();
        // THEN current skips 3 (missing us-west-2) and lands on 2
        assert_eq!(edit, Edit::Changed);
        assert_eq!(m.current(TY).unwrap().version, v(2));
        let revoked = m.find(TY, &v(4)).unwrap();
        assert_eq!(revoked.status, VersionStatus::Revoked);
        assert_eq!(revoked.revoked_reason.as_deref(), Some("broken sshd"));
        assert_eq!(revoked.revoked_at, Some(t0()));
    }

    #[test]
    fn revoke_never_rolls_forward_or_onto_a_revoked_version() {
        let mut m = three();
        m.revoke(TY, &v(2), "bad", t0(), &[], false).unwrap();
        m.promote(TY, &v(1), &[], None).unwrap();
        // 1 is current; revoking it must not pick 3 (newer) or 2 (revoked).
        let err = m
            .revoke(TY, &v(1), "bad too", t0(), &[], false)
            .unwrap_err();
        assert_eq!(
            err,
            ManifestError::NoFallback {
                ty: TY.into(),
                version: v(1)
            }
        );
        assert!(err.to_string().contains("pass --force"));
        assert_eq!(
            m.current(TY).unwrap().version,
            v(1),
            "a refused revoke changes nothing"
        );
        assert_eq!(
            m.revoke(TY, &v(1), "bad too", t0(), &[], true).unwrap(),
            Edit::Changed
        );
        assert_eq!(m.types[TY].current, None);
    }

    #[test]
    fn revoke_of_a_non_current_version_keeps_current() {
        let mut m = three();
        assert_eq!(
            m.revoke(TY, &v(1), "cve", t0(), &regions(BOTH), false)
                .unwrap(),
            Edit::Changed
        );
        assert_eq!(m.current(TY).unwrap().version, v(3));
    }

    #[test]
    fn revoke_again_with_same_reason_is_unchanged_and_new_reason_updates() {
        let mut m = three();
        m.revoke(TY, &v(3), "cve", t0(), &[], false).unwrap();
        let before = m.clone();
        assert_eq!(
            m.revoke(TY, &v(3), "cve", t0() + TimeDelta::hours(1), &[], false)
                .unwrap(),
            Edit::Unchanged
        );
        assert_eq!(m, before);
        assert_eq!(
            m.revoke(TY, &v(3), "cve-2", t0(), &[], false).unwrap(),
            Edit::Changed
        );
        assert_eq!(
            m.find(TY, &v(3)).unwrap().revoked_reason.as_deref(),
            Some("cve-2")
        );
        assert_eq!(m.current(TY).unwrap().version, v(2));
    }

    #[test]
    fn edits_on_unknown_types_and_versions_fail() {
        let mut m = three();
        let cases: Vec<(Result<Edit, ManifestError>, ManifestError)> = vec![
            (
                m.clone().revoke("nope", &v(1), "r", t0(), &[], false),
                ManifestError::UnknownType("nope".into()),
            ),
            (
                m.clone().promote("nope", &v(1), &[], None),
                ManifestError::UnknownType("nope".into()),
            ),
            (
                m.clone().revoke(TY, &v(9), "r", t0(), &[], false),
                ManifestError::UnknownVersion {
                    ty: TY.into(),
                    version: v(9),
                },
            ),
            (
                m.promote(TY, &v(9), &[], None),
                ManifestError::UnknownVersion {
                    ty: TY.into(),
                    version: v(9),
                },
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, Err(want));
        }
        assert_eq!(m, three());
    }

    #[test]
    fn promote_checks_status_and_regions() {
        let mut m = three();
        m.add_version(TY, entry(0, &["us-east-1"]), false).unwrap();
        m.revoke(TY, &v(1), "bad", t0(), &[], false).unwrap();

        assert_eq!(
            m.promote(TY, &v(1), &[], None),
            Err(ManifestError::Revoked {
                ty: TY.into(),
                version: v(1)
            })
        );
        let err = m.promote(TY, &v(0), &regions(BOTH), None).unwrap_err();
        assert_eq!(
            err,
            ManifestError::MissingRegion {
                ty: TY.into(),
                version: v(0),
                region: "us-west-2".into()
            }
        );
        assert!(err.to_string().contains("no image in us-west-2"));
        assert_eq!(
            m.promote(TY, &v(3), &regions(BOTH), None).unwrap(),
            Edit::Unchanged
        );
        assert_eq!(
            m.promote(TY, &v(2), &regions(BOTH), None).unwrap(),
            Edit::Changed
        );
        assert_eq!(m.current(TY).unwrap().version, v(2));
        assert_eq!(
            m.promote(TY, &v(0), &regions(&["us-east-1"]), None)
                .unwrap(),
            Edit::Changed
        );
    }

    #[test]
    fn trim_history_keeps_newest_and_current() {
        let mut m = three();
        for n in 4..=6 {
            m.add_version(TY, entry(n, BOTH), false).unwrap();
        }
        // current is 3; keep the newest 2 (6, 5) plus 3
        let removed = m.trim_history(TY, 2);
        assert_eq!(order(&m), [v(6), v(5), v(3)]);
        assert_eq!(
            removed
                .iter()
                .map(|e| e.version.clone())
                .collect::<Vec<_>>(),
            [v(4), v(2), v(1)]
        );
        assert!(m.trim_history(TY, 2).is_empty());
        assert!(m.trim_history("nope", 0).is_empty());
        m.trim_history(TY, 0);
        assert_eq!(order(&m), [v(3)]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add {
            ty: usize,
            n: i64,
            regions: usize,
            content: u8,
            make_current: bool,
        },
        Revoke {
            ty: usize,
            n: i64,
            reason: u8,
            required: usize,
            force: bool,
        },
        Promote {
            ty: usize,
            n: i64,
            required: usize,
            pin: bool,
        },
        Unpin {
            ty: usize,
        },
        Trim {
            ty: usize,
            keep: usize,
        },
        Touch,
    }

    const TYPES: &[&str] = &["bld-linux64", "b-2008"];
    const REGION_SETS: &[&[&str]] = &[
        &[],
        &["us-east-1"],
        &["us-east-1", "us-west-2"],
        &["us-west-2"],
    ];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..2usize, 0..8i64, 0..4usize, 0..2u8, any::<bool>())
                .prop_map(|(ty, n, regions, content, make_current)| Op::Add { ty, n, regions, content, make_current }),
            2 => (0..2usize, 0..8i64, 0..2u8, 0..4usize, any::<bool>())
                .prop_map(|(ty, n, reason, required, force)| Op::Revoke { ty, n, reason, required, force }),
            2 => (0..2usize, 0..8i64, 0..4usize, any::<bool>())
                .prop_map(|(ty, n, required, pin)| Op::Promote { ty, n, required, pin }),
            1 => (0..2usize).prop_map(|ty| Op::Unpin { ty }),
            1 => (0..2usize, 0..4usize).prop_map(|(ty, keep)| Op::Trim { ty, keep }),
            1 => Just(Op::Touch),
        ]
    }

    fn apply(m: &mut Manifest, op: &Op) -> Result<Edit, ManifestError> {
        match *op {
            Op::Add {
                ty,
                n,
                regions,
                content,
                make_current,
            } => {
                let mut e = entry(n, REGION_SETS[regions]);
                e.execution.push_str(&content.to_string());
                m.add_version(TYPES[ty], e, make_current)
            }
            Op::Revoke {
                ty,
                n,
                reason,
                required,
                force,
            } => m.revoke(
                TYPES[ty],
                &v(n),
                &format!("reason {reason}"),
                t0(),
                &regions(REGION_SETS[required]),
                force,
            ),
            Op::Promote {
                ty,
                n,
                required,
                pin,
            } => m.promote(
                TYPES[ty],
                &v(n),
                &regions(REGION_SETS[required]),
                pin.then(t0),
            ),
            Op::Unpin { ty } => m.unpin(TYPES[ty]),
            Op::Trim { ty, keep } => {
                let removed = m.trim_history(TYPES[ty], keep);
                Ok(if removed.is_empty() {
                    Edit::Unchanged
                } else {
                    Edit::Changed
                })
            }
            Op::Touch => {
                m.touch(t0() + TimeDelta::seconds(1));
                Ok(Edit::Changed)
            }
        }
    }

    proptest! {
        #[test]
        fn invariants_hold_under_any_sequence_of_edits(ops in proptest::collection::vec(op(), 0..40)) {
            let mut m = Manifest::empty(t0());
            for op in &ops {
                let before = m.clone();
                let result = apply(&mut m, op);
                if result.is_err() || result == Ok(Edit::Unchanged) {
                    prop_assert_eq!(&m, &before, "{:?} -> {:?} must not change the manifest", op, result);
                }
                if let Op::Add { ty, .. } = op {
                    let was = before.types.get(TYPES[*ty]);
                    if was.is_some_and(|e| e.pinned_at.is_some()) {
                        prop_assert_eq!(&m.types[TYPES[*ty]].current, &was.and_then(|e| e.current.clone()), "a publish moved a pinned current");
                    }
                }
                for (ty, entry) in &m.types {
                    for pair in entry.versions.windows(2) {
                        prop_assert!(pair[0].version > pair[1].version, "{} not strictly newest first", ty);
                    }
                    prop_assert!(entry.pinned_at.is_none() || entry.current.is_some(), "{} pinned to no version", ty);
                    if let Some(current) = &entry.current {
                        let e = entry.versions.iter().find(|e| &e.version == current);
                        prop_assert!(e.is_some_and(|e| e.status == VersionStatus::Published), "{} current {} not published", ty, current);
                    }
                }
                prop_assert_eq!(Manifest::parse(&m.to_json_vec()).unwrap(), m.clone());
            }
        }
    }

    #[test]
    fn a_pin_holds_current_against_newer_bakes_until_unpinned_and_follows_a_rollback() {
        let mut m = Manifest::empty(t0());
        m.add_version(TY, entry(2, BOTH), true).unwrap();
        m.add_version(TY, entry(1, BOTH), true).unwrap();
        assert_eq!(
            m.promote(TY, &v(1), &regions(BOTH), Some(t0())).unwrap(),
            Edit::Changed
        );
        assert_eq!(m.types[TY].pinned_at, Some(t0()));
        // Pinning again where it is pinned changes nothing.
        assert_eq!(
            m.promote(TY, &v(1), &regions(BOTH), Some(t0())).unwrap(),
            Edit::Unchanged
        );

        // The nightly bake adds version 3 to the history; current stays on the pinned 1.
        assert_eq!(
            m.add_version(TY, entry(3, BOTH), true).unwrap(),
            Edit::Changed
        );
        assert_eq!(m.current(TY).map(|e| e.version.clone()), Some(v(1)));
        let json = String::from_utf8(m.to_json_vec()).unwrap();
        assert!(json.contains("\"pinnedAt\""), "{json}");

        // Unpinned, the next bake moves current again.
        assert_eq!(m.unpin(TY).unwrap(), Edit::Changed);
        assert_eq!(m.unpin(TY).unwrap(), Edit::Unchanged);
        assert_eq!(m.current(TY).map(|e| e.version.clone()), Some(v(1)));
        m.add_version(TY, entry(4, BOTH), true).unwrap();
        assert_eq!(m.current(TY).map(|e| e.version.clone()), Some(v(4)));

        // A promote without --pin clears a pin.
        m.promote(TY, &v(2), &regions(BOTH), Some(t0())).unwrap();
        assert_eq!(
            m.promote(TY, &v(2), &regions(BOTH), None).unwrap(),
            Edit::Changed
        );
        assert_eq!(m.types[TY].pinned_at, None);
        let later = t0() + TimeDelta::hours(1);
        m.promote(TY, &v(2), &regions(BOTH), Some(t0())).unwrap();
        assert_eq!(
            m.promote(TY, &v(4), &regions(BOTH), Some(later)).unwrap(),
            Edit::Changed
        );
        assert_eq!(
            m.types[TY].pinned_at,
            Some(later),
            "a pin on another version is a new pin"
        );
        m.promote(TY, &v(2), &regions(BOTH), Some(t0())).unwrap();
        // Revoking the pinned version rolls back and keeps the type pinned, on the fallback.
        m.revoke(TY, &v(2), "bad", later, &regions(BOTH), false)
            .unwrap();
        assert_eq!(m.current(TY).map(|e| e.version.clone()), Some(v(1)));
        assert_eq!(m.types[TY].pinned_at, Some(later));
        m.add_version(TY, entry(5, BOTH), true).unwrap();
        assert_eq!(
            m.current(TY).map(|e| e.version.clone()),
            Some(v(1)),
            "still pinned"
        );
        // A forced revoke that leaves no current version leaves no pin either.
        m.revoke(
            TY,
            &v(1),
            "bad too",
            later,
            &["eu-north-1".to_owned()],
            true,
        )
        .unwrap();
        assert_eq!(m.current(TY), None);
        assert_eq!(m.types[TY].pinned_at, None);
        assert!(matches!(
            m.unpin("nope"),
            Err(ManifestError::UnknownType(_))
        ));
    }

    #[test]
    fn became_current_at_is_stamped_where_current_moved_and_optional_when_read() {
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 25, 1, 0, 0)
            .single()
            .expect("time");
        let mut m = Manifest::empty(t0);
        m.add_version(TY, entry(1, BOTH), true).unwrap();
        m.add_version(TY, entry(2, BOTH), false).unwrap();
        m.add_version("other", entry(1, BOTH), true).unwrap();
        let before = m.currents();
        // WHEN one type's current moves (a promote) and the other's does not
        m.promote(TY, &v(2), &[], None).unwrap();
        m.stamp_current_changes(&before, t0);
        // THEN only the moved one is stamped, and it is written as becameCurrentAt
        assert_eq!(m.types[TY].became_current_at, Some(t0));
        assert_eq!(m.types["other"].became_current_at, None);
        let text = String::from_utf8(m.to_json_vec()).unwrap();
        assert!(
            text.contains("\"becameCurrentAt\": \"2026-11-25T01:00:00Z\""),
            "{text}"
        );
        assert_eq!(Manifest::parse(text.as_bytes()).unwrap(), m);
        // and a forced revoke that leaves no current version clears it
        let before = m.currents();
        m.revoke(TY, &v(2), "bad", t0, &[], true).unwrap();
        m.revoke(TY, &v(1), "bad", t0, &[], true).unwrap();
        m.stamp_current_changes(&before, t0);
        assert_eq!(m.types[TY].current, None);
        assert_eq!(m.types[TY].became_current_at, None);
    }
}
