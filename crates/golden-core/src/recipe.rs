//! Recipes: how to bake one image type (see DESIGN.md "Recipes (contract)").
//!
//! A recipe is written by a person in TOML (`infra/recipes/<type>.toml`) and travels as JSON (pushed to S3,
//! or inlined in a bake's input). A bake that fails an hour in because of a typo is expensive, so loading
//! reports *every* problem at once, each with the path of the field and what was expected:
//!
//! 1. the document is parsed into a generic value and walked against [`SCHEMA`] by hand, collecting unknown
//!    fields (with a did-you-mean), missing required fields and wrong types; offending values are removed
//!    or replaced by placeholders so the walk can go on;
//! 2. the repaired value is deserialized into [`Recipe`];
//! 3. [`Recipe::validate`]'s semantic checks run, except on fields already reported in step 1 (their
//!    placeholder values would only produce noise).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::tags;

/// The operating system of the builder; it decides the SSM document and the shell the scripts are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Linux,
    Windows,
}

/// When a bake may end early because nothing it builds from changed (docs/stages.md "Unchanged").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rebuild {
    /// Bake only when the recipe or the resolved base AMI differs from the current version's; a bake
    /// request with `"force": true` bakes anyway.
    #[default]
    Changed,
    /// Bake every time: for recipes whose result depends on what the recipe does not hold, such as a
    /// puppet server's manifests.
    Always,
}

impl Rebuild {
    fn is_default(&self) -> bool {
        *self == Rebuild::default()
    }
}

/// A test of the new image before it is copied or published (docs/stages.md "Test"): an instance is
/// launched from it in the builder subnet and these commands run there through SSM Run Command, with the
/// provision env. Any failure ends the bake FAILED, discarding the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Test {
    /// Shell (linux) or PowerShell (windows) commands, run in order; a non-zero exit fails the test.
    pub commands: Vec<String>,
    #[serde(default = "default_test_timeout")]
    pub timeout_minutes: u32,
    /// The tester's instance type; the recipe's `instance_type` if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
}

fn default_test_timeout() -> u32 {
    30
}

/// Who else may use the images: launch them (every image and copy's launch permission) and, for accounts,
/// create volumes from their snapshots (create-volume permission; EC2 cannot share a snapshot with an
/// organization or OU, whose members launch the image without it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    /// 12-digit account ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    /// `arn:aws:organizations::<management account>:organization/o-...`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizations: Vec<String>,
    /// `arn:aws:organizations::<management account>:ou/o-.../ou-...`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizational_units: Vec<String>,
}

impl Share {
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
            && self.organizations.is_empty()
            && self.organizational_units.is_empty()
    }
}

/// One image type's bake. Field names are the TOML/JSON keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The image type, e.g. `bld-linux64`; also the name of the recipe file.
    #[serde(rename = "type")]
    pub image_type: String,
    pub platform: Platform,
    /// A fixed base image. Exactly one of `base_ami` / `base_ami_parameter` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ami: Option<String>,
    /// An SSM parameter resolving to the base image, so each bake starts from the latest patched base,
    /// e.g. `/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ami_parameter: Option<String>,
    pub instance_type: String,
    /// Where the builder runs and the image is created; the first region of [`Recipe::all_regions`].
    pub build_region: String,
    /// The dedicated builder subnet (in `build_region`).
    pub subnet_id: String,
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    /// Instance profile name or ARN; the builder needs at least SSM managed-instance permissions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    /// No public IP unless asked: builders normally reach SSM and the puppet server privately.
    #[serde(default)]
    pub associate_public_ip: bool,
    /// Regions the finished image is copied to, besides `build_region`.
    #[serde(default)]
    pub copy_to_regions: Vec<String>,
    /// How many published versions prune keeps per region, at least.
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// Upper bound of a whole bake; the reaper terminates builders older than this.
    #[serde(default = "default_max_build_minutes")]
    pub max_build_minutes: u32,
    pub provision: Provision,
    #[serde(default)]
    pub sanitize: Sanitize,
    /// Added to images and snapshots.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub block_devices: Vec<BlockDevice>,
    /// KMS key (id, alias or ARN) for encrypted volumes and image copies, in every region that
    /// `kms_key_ids` does not name. A key ARN belongs to one region, so it serves only that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// KMS key per region (build or copy region), e.g. `{ "us-west-2" = "arn:aws:kms:us-west-2:...:key/..." }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kms_key_ids: BTreeMap<String, String>,
    /// `changed` (the default): a bake whose recipe and base AMI equal the current version's ends early;
    /// `always`: never. Left out of the JSON form when default, so recipes that do not set it keep their
    /// [`Recipe::content_hash`].
    #[serde(default, skip_serializing_if = "Rebuild::is_default")]
    pub rebuild: Rebuild,
    /// Accounts, organizations and OUs the images are shared with (launch permission), and the accounts
    /// their snapshots are shared with (create-volume permission). Applied at publish, to every region's
    /// image; the manifest's version says with whom.
    #[serde(default, skip_serializing_if = "Share::is_empty")]
    pub share: Share,
    /// Commands that must pass on an instance of the new image before it is copied and published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Test>,
}

/// What runs on the builder to turn the base image into the golden one (usually a puppet run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provision {
    /// Shell (linux) or PowerShell (windows) commands, run in order; the recipe author's code by design.
    #[serde(default)]
    pub commands: Vec<String>,
    /// A script run after the commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Environment for the commands and script, e.g. `PUPPET_SERVER`; values are quoted, never evaluated.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_provision_timeout")]
    pub timeout_minutes: u32,
}

/// Paths removed from the builder before imaging, besides the built-in list (see `scripts`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sanitize {
    /// Absolute, literal paths (no globs); directories are removed recursively.
    #[serde(default)]
    pub extra_paths: Vec<String>,
}

/// An EBS volume of the builder, and so of the image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockDevice {
    pub device_name: String,
    pub volume_size_gb: u32,
    #[serde(default = "default_volume_type")]
    pub volume_type: String,
    #[serde(default = "default_true")]
    pub delete_on_termination: bool,
    #[serde(default)]
    pub encrypted: bool,
}

fn default_keep() -> u32 {
    10
}
fn default_max_build_minutes() -> u32 {
    180
}
fn default_provision_timeout() -> u32 {
    60
}
fn default_volume_type() -> String {
    "gp3".to_owned()
}
fn default_true() -> bool {
    true
}

/// EBS volume types a block device may use.
pub const VOLUME_TYPES: &[&str] = &["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"];

/// One thing wrong with a recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `provision.env.PUPPET_SERVER`, `copy_to_regions[1]`; empty for the whole document.
    pub path: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Everything wrong with one recipe.
///
/// `std::error::Error` is implemented by hand: thiserror would take the `source` field for the error's
/// cause, and here it is the recipe's origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeError {
    /// Where the recipe came from (a file path, an S3 URL, "bake input").
    pub source: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for RecipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "recipe {} is invalid:", self.source)?;
        for p in &self.problems {
            if p.path.is_empty() {
                write!(f, "\n  - {}", p.message)?;
            } else {
                write!(f, "\n  - {}: {}", p.path, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for RecipeError {}

impl Recipe {
    /// Parses and validates a recipe file. `source` names it in the error.
    pub fn from_toml_str(text: &str, source: &str) -> Result<Recipe, RecipeError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| RecipeError {
            source: source.to_owned(),
            problems: vec![Problem::new("", toml_syntax_message(text, &e))],
        })?;
        Recipe::from_json_value(toml_to_json(toml::Value::Table(table)), source)
    }

    /// Parses and validates a recipe in its JSON form (as pushed to S3).
    pub fn from_json_slice(bytes: &[u8], source: &str) -> Result<Recipe, RecipeError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| RecipeError {
            source: source.to_owned(),
            problems: vec![Problem::new(
                "",
                format!(
                    "invalid JSON at line {}, column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )],
        })?;
        Recipe::from_json_value(value, source)
    }

    /// Validates a recipe given as a JSON value (e.g. a bake input's inline `recipe`).
    pub fn from_json_value(mut value: Value, source: &str) -> Result<Recipe, RecipeError> {
        let fail = |problems| RecipeError {
            source: source.to_owned(),
            problems,
        };
        let mut walk = Walk::default();
        match &mut value {
            Value::Object(obj) => walk_table(obj, SCHEMA, "", &mut walk),
            other => {
                let found = describe(other);
                return Err(fail(vec![Problem::new(
                    "",
                    format!("expected a table of recipe fields, found {found}"),
                )]));
            }
        }
        let Walk {
            mut problems,
            tainted,
        } = walk;
        let recipe: Recipe = match serde_json::from_value(value) {
            Ok(r) => r,
            Err(e) => {
                // The walk mirrors the struct, so this only happens if the two drift apart.
                problems.push(Problem::new(
                    "",
                    format!("does not match the recipe schema: {e}"),
                ));
                return Err(fail(problems));
            }
        };
        let mut checker = Checker {
            tainted: &tainted,
            problems,
        };
        recipe.check(&mut checker);
        if checker.problems.is_empty() {
            Ok(recipe)
        } else {
            Err(fail(checker.problems))
        }
    }

    /// The semantic checks (ids, regions, ranges, cross-field rules), every problem at once. The
    /// `from_*` constructors already call it; call it again after editing a recipe in code.
    pub fn validate(&self) -> Result<(), RecipeError> {
        let mut checker = Checker {
            tainted: &[],
            problems: Vec::new(),
        };
        self.check(&mut checker);
        if checker.problems.is_empty() {
            Ok(())
        } else {
            Err(RecipeError {
                source: format!("for type {:?}", self.image_type),
                problems: checker.problems,
            })
        }
    }

    /// The JSON form pushed to S3 (pretty, stable key order).
    pub fn to_json_vec(&self) -> Vec<u8> {
        // Serializing plain structs with string-keyed maps cannot fail.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// `sha256:` and the hex SHA-256 of [`Recipe::to_json_vec`]: the same for the same recipe however it
    /// was written (TOML layout, comments, key order, defaults spelt out or not), different when anything a
    /// bake uses changes. Images, snapshots and manifest versions carry it (`golden-ami:recipe-hash`).
    pub fn content_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.to_json_vec());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// The KMS key that encrypts the image's volumes in `region`: that region's entry of `kms_key_ids`,
    /// else `kms_key_id`; none means EBS's default.
    pub fn kms_key_for(&self, region: &str) -> Option<&str> {
        self.kms_key_ids
            .get(region)
            .or(self.kms_key_id.as_ref())
            .map(String::as_str)
    }

    /// Every region the image lives in: the build region first, then the copy regions, without repeats.
    pub fn all_regions(&self) -> Vec<String> {
        let mut out = vec![self.build_region.clone()];
        for r in &self.copy_to_regions {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
    }

    fn check(&self, c: &mut Checker<'_>) {
        if !is_valid_type_name(&self.image_type) {
            c.report(
                "type",
                format!(
                    "invalid type name {:?}: expected 1-63 lowercase letters, digits and '-', starting \
                     with a letter or digit (e.g. bld-linux64)",
                    self.image_type
                ),
            );
        }

        match (&self.base_ami, &self.base_ami_parameter) {
            (Some(_), Some(_)) if !c.is_tainted("base_ami") && !c.is_tainted("base_ami_parameter") => c
                .report(
                    "base_ami",
                    "set exactly one of base_ami or base_ami_parameter, not both",
                ),
            (None, None) if !c.is_tainted("base_ami") && !c.is_tainted("base_ami_parameter") => c.report(
                "base_ami",
                "missing base image: set exactly one of base_ami (ami-...) or base_ami_parameter (an SSM \
                 parameter name)",
            ),
            _ => {}
        }
        if let Some(ami) = &self.base_ami {
            if !is_ami_id(ami) {
                c.report(
                    "base_ami",
                    format!(
                        "invalid AMI id {ami:?}: expected ami- and 8 to 17 lowercase hex digits"
                    ),
                );
            }
        }
        if let Some(name) = &self.base_ami_parameter {
            if !is_ssm_parameter_name(name) {
                c.report(
                    "base_ami_parameter",
                    format!(
                        "invalid SSM parameter name {name:?}: expected a name like \
                         /aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64 (letters, \
                         digits, '_', '.', '-', '/'-separated, starting with '/' when hierarchical)"
                    ),
                );
            }
        }

        if !is_instance_type(&self.instance_type) {
            c.report(
                "instance_type",
                format!(
                    "invalid instance type {:?}: expected family.size, e.g. c5.2xlarge",
                    self.instance_type
                ),
            );
        }
        if !is_region_name(&self.build_region) {
            c.report("build_region", region_message(&self.build_region));
        }
        if !is_prefixed_hex(&self.subnet_id, "subnet-") {
            c.report(
                "subnet_id",
                format!(
                    "invalid subnet id {:?}: expected subnet- and lowercase hex digits",
                    self.subnet_id
                ),
            );
        }
        for (i, sg) in self.security_group_ids.iter().enumerate() {
            if !is_prefixed_hex(sg, "sg-") {
                c.report(
                    format!("security_group_ids[{i}]"),
                    format!(
                        "invalid security group id {sg:?}: expected sg- and lowercase hex digits"
                    ),
                );
            }
        }
        if let Some(profile) = &self.instance_profile {
            if !is_instance_profile(profile) {
                c.report(
                    "instance_profile",
                    format!(
                        "invalid instance profile {profile:?}: expected a name (letters, digits, +=,.@_-, at \
                         most 128) or an arn:aws:iam::ACCOUNT:instance-profile/NAME"
                    ),
                );
            }
        }

        let mut seen = BTreeSet::new();
        for (i, region) in self.copy_to_regions.iter().enumerate() {
            let path = format!("copy_to_regions[{i}]");
            if !is_region_name(region) {
                c.report(path, region_message(region));
            } else if region == &self.build_region {
                c.report(
                    path,
                    format!("{region} is the build_region; the image is already there, remove it from copy_to_regions"),
                );
            } else if !seen.insert(region) {
                c.report(
                    path,
                    format!("{region} is listed more than once; list each copy region once"),
                );
            }
        }

        if !(1..=1000).contains(&self.keep) {
            c.report(
                "keep",
                format!("keep is {}; expected 1 to 1000 versions to keep", self.keep),
            );
        }
        if !(10..=1440).contains(&self.max_build_minutes) {
            c.report(
                "max_build_minutes",
                format!(
                    "max_build_minutes is {}; expected 10 to 1440 (24 h)",
                    self.max_build_minutes
                ),
            );
        }

        self.check_provision(c);
        self.check_sanitize(c);

        for (key, value) in &self.tags {
            let path = format!("tags.{}", path_key(key));
            if tags::is_reserved(key) {
                c.report(
                    path,
                    format!("tag key {key:?} is reserved (golden-ami: and aws: keys are set by the pipeline or AWS); choose another key"),
                );
            } else if key.is_empty() || key.chars().count() > 128 {
                c.report(path, "tag key must be 1 to 128 characters");
            } else if value.chars().count() > 256 {
                c.report(path, "tag value must be at most 256 characters");
            }
        }

        let mut devices = BTreeSet::new();
        for (i, dev) in self.block_devices.iter().enumerate() {
            let base = format!("block_devices[{i}]");
            if dev.device_name.is_empty()
                || dev
                    .device_name
                    .chars()
                    .any(|ch| ch.is_whitespace() || ch.is_control())
            {
                c.report(
                    format!("{base}.device_name"),
                    format!(
                        "invalid device name {:?}: expected e.g. /dev/xvda or /dev/sda1",
                        dev.device_name
                    ),
                );
            } else if !devices.insert(&dev.device_name) {
                c.report(
                    format!("{base}.device_name"),
                    format!(
                        "device {} is listed more than once; list each device once",
                        dev.device_name
                    ),
                );
            }
            if !(1..=16384).contains(&dev.volume_size_gb) {
                c.report(
                    format!("{base}.volume_size_gb"),
                    format!(
                        "volume size is {} GB; expected 1 to 16384",
                        dev.volume_size_gb
                    ),
                );
            }
            if !VOLUME_TYPES.contains(&dev.volume_type.as_str()) {
                c.report(
                    format!("{base}.volume_type"),
                    format!(
                        "unknown volume type {:?}; expected one of {}",
                        dev.volume_type,
                        VOLUME_TYPES.join(", ")
                    ),
                );
            }
        }

        self.check_kms(c);
        self.check_share(c);
        self.check_test(c);
    }

    /// Provision's and test's commands: none may hold a NUL.
    fn check_commands(c: &mut Checker<'_>, section: &str, commands: &[String]) {
        for (i, cmd) in commands.iter().enumerate() {
            if cmd.contains('\0') {
                c.report(
                    format!("{section}.commands[{i}]"),
                    "contains a NUL character; remove it",
                );
            }
        }
    }

    /// Provision's and test's timeouts: within the bake's.
    fn check_timeout(&self, c: &mut Checker<'_>, section: &str, timeout_minutes: u32) {
        if !c.is_tainted("max_build_minutes")
            && !(1..=self.max_build_minutes).contains(&timeout_minutes)
        {
            c.report(
                format!("{section}.timeout_minutes"),
                format!(
                    "timeout_minutes is {timeout_minutes}; expected 1 to max_build_minutes ({})",
                    self.max_build_minutes
                ),
            );
        }
    }

    fn check_test(&self, c: &mut Checker<'_>) {
        let Some(test) = &self.test else {
            return;
        };
        if test.commands.is_empty() && !c.is_tainted("test.commands") {
            c.report("test.commands", "nothing to run: list at least one command");
        }
        Self::check_commands(c, "test", &test.commands);
        self.check_timeout(c, "test", test.timeout_minutes);
        if let Some(t) = test
            .instance_type
            .as_deref()
            .filter(|t| !is_instance_type(t))
        {
            c.report(
                "test.instance_type",
                format!("invalid instance type {t:?}: expected family.size, e.g. c5.large"),
            );
        }
    }

    fn check_share(&self, c: &mut Checker<'_>) {
        /// A share list: its field, its entries, the check of one entry, and what an entry must be.
        type ShareList<'a> = (&'static str, &'a [String], fn(&str) -> bool, &'static str);
        let lists: [ShareList<'_>; 3] = [
            ("accounts", &self.share.accounts, is_account_id, "a 12-digit account id"),
            (
                "organizations",
                &self.share.organizations,
                is_organization_arn,
                "an organization ARN, arn:aws:organizations::<account>:organization/o-<10 to 32 of a-z0-9>",
            ),
            (
                "organizational_units",
                &self.share.organizational_units,
                is_organizational_unit_arn,
                "an OU ARN, arn:aws:organizations::<account>:ou/o-<id>/ou-<4 to 32 of a-z0-9>-<8 to 32 of a-z0-9>",
            ),
        ];
        for (field, list, valid, expected) in lists {
            let mut seen = BTreeSet::new();
            for (i, value) in list.iter().enumerate() {
                let path = format!("share.{field}[{i}]");
                if !valid(value) {
                    c.report(path, format!("{value:?} is not {expected}"));
                } else if !seen.insert(value) {
                    c.report(path, format!("{value} is listed more than once"));
                }
            }
        }
        // A volume encrypted with EBS's default key (aws/ebs) cannot be shared: no other account may use it.
        // Every region counts: a copy without a key of its own is encrypted with that region's default key.
        let unkeyed = self
            .all_regions()
            .into_iter()
            .find(|r| self.kms_key_for(r).is_none());
        if let (false, Some(region)) = (self.share.is_empty(), unkeyed) {
            if let Some(i) = self.block_devices.iter().position(|d| d.encrypted) {
                c.report(
                    format!("block_devices[{i}].encrypted"),
                    format!(
                        "an image encrypted with EBS's default key (aws/ebs), as it would be in {region}, cannot \
                         be shared: set kms_key_id (or kms_key_ids.{region}) to a customer managed key whose \
                         policy lets the share's accounts use it, or do not encrypt"
                    ),
                );
            }
        }
    }

    fn check_kms(&self, c: &mut Checker<'_>) {
        let regions = self.all_regions();
        if let Some(key) = &self.kms_key_id {
            if !is_kms_key_id(key) {
                c.report("kms_key_id", kms_message(key));
            } else if let Some(key_region) = kms_key_region(key) {
                // An ARN names its region; every other region that falls back to it could not use it.
                let elsewhere: Vec<&str> = regions
                    .iter()
                    .filter(|r| *r != key_region && !self.kms_key_ids.contains_key(*r))
                    .map(String::as_str)
                    .collect();
                if !elsewhere.is_empty() {
                    c.report(
                        "kms_key_id",
                        format!(
                            "{key} is a key of {key_region} and cannot encrypt the image in {}; give those \
                             regions their own key in kms_key_ids (e.g. kms_key_ids.{} = \"arn:aws:kms:{}:...\"), \
                             or use an alias that exists in every region",
                            elsewhere.join(", "),
                            elsewhere[0],
                            elsewhere[0]
                        ),
                    );
                }
            }
        }
        for (region, key) in &self.kms_key_ids {
            let path = format!("kms_key_ids.{region}");
            if !regions.contains(region) {
                c.report(
                    path,
                    format!(
                        "{region} is neither the build_region nor a copy region ({}); remove it or add it to \
                         copy_to_regions",
                        regions.join(", ")
                    ),
                );
            } else if !is_kms_key_id(key) {
                c.report(path, kms_message(key));
            } else if let Some(key_region) = kms_key_region(key).filter(|r| r != region) {
                c.report(
                    path,
                    format!(
                        "{key} is a key of {key_region}, not of {region}; use a key of {region}"
                    ),
                );
            }
        }
    }

    fn check_provision(&self, c: &mut Checker<'_>) {
        let p = &self.provision;
        let has_script = p.script.as_deref().is_some_and(|s| !s.trim().is_empty());
        if p.commands.is_empty() && !has_script {
            c.report(
                "provision",
                "nothing to run: set provision.commands, provision.script, or both",
            );
        }
        Self::check_commands(c, "provision", &p.commands);
        if p.script.as_deref().is_some_and(|s| s.contains('\0')) {
            c.report("provision.script", "contains a NUL character; remove it");
        }
        self.check_timeout(c, "provision", p.timeout_minutes);
        for (key, value) in &p.env {
            let path = format!("provision.env.{}", path_key(key));
            if !is_env_name(key) {
                c.report(
                    path,
                    format!("invalid variable name {key:?}: expected uppercase letters, digits and '_', not starting with a digit"),
                );
            } else if value.contains(['\0', '\n', '\r']) {
                c.report(
                    path,
                    "value contains a NUL or line break; expected a single line of text",
                );
            }
        }
    }

    fn check_sanitize(&self, c: &mut Checker<'_>) {
        if c.is_tainted("platform") {
            return; // which path syntax applies is unknown
        }
        for (i, path) in self.sanitize.extra_paths.iter().enumerate() {
            if let Err(why) = check_extra_path(self.platform, path) {
                c.report(format!("sanitize.extra_paths[{i}]"), why);
            }
        }
    }
}

/// Collects semantic problems, skipping fields whose structural problem was already reported.
struct Checker<'a> {
    tainted: &'a [String],
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn is_tainted(&self, path: &str) -> bool {
        self.tainted.iter().any(|t| {
            t.is_empty()
                || path == t
                || path
                    .strip_prefix(t.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        })
    }

    fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if !self.is_tainted(&path) {
            self.problems.push(Problem::new(path, message));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Structural walk

/// What a field holds, as far as the walk is concerned.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    Bool,
    U32,
    OneOf(&'static [&'static str]),
    StrList,
    StrMap,
    Table(&'static [Field]),
    TableList(&'static [Field]),
}

#[derive(Debug, Clone, Copy)]
struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
    /// Appended to "missing"/"wrong type" messages, so they say what a good value looks like.
    hint: &'static str,
}

const fn req(name: &'static str, kind: Kind, hint: &'static str) -> Field {
    Field {
        name,
        kind,
        required: true,
        hint,
    }
}
const fn opt(name: &'static str, kind: Kind, hint: &'static str) -> Field {
    Field {
        name,
        kind,
        required: false,
        hint,
    }
}

const PROVISION: &[Field] = &[
    opt("commands", Kind::StrList, ""),
    opt("script", Kind::Str, ""),
    opt(
        "env",
        Kind::StrMap,
        "e.g. { PUPPET_SERVER = \"puppet.example.com\" }",
    ),
    opt("timeout_minutes", Kind::U32, "minutes"),
];

const SANITIZE: &[Field] = &[opt("extra_paths", Kind::StrList, "absolute paths")];

const TEST: &[Field] = &[
    req(
        "commands",
        Kind::StrList,
        "e.g. [\"systemctl is-active my-service\"]",
    ),
    opt("timeout_minutes", Kind::U32, "minutes"),
    opt("instance_type", Kind::Str, "e.g. c5.large"),
];

const SHARE: &[Field] = &[
    opt("accounts", Kind::StrList, "12-digit account ids"),
    opt(
        "organizations",
        Kind::StrList,
        "arn:aws:organizations::111122223333:organization/o-exampleorgid",
    ),
    opt(
        "organizational_units",
        Kind::StrList,
        "arn:aws:organizations::111122223333:ou/o-exampleorgid/ou-ab12-cdef3456",
    ),
];

const BLOCK_DEVICE: &[Field] = &[
    req("device_name", Kind::Str, "e.g. /dev/xvda"),
    req("volume_size_gb", Kind::U32, "GB"),
    opt("volume_type", Kind::Str, "e.g. gp3"),
    opt("delete_on_termination", Kind::Bool, ""),
    opt("encrypted", Kind::Bool, ""),
];

/// The recipe schema the walk checks against; mirrors [`Recipe`].
const SCHEMA: &[Field] = &[
    req("type", Kind::Str, "the image type, e.g. bld-linux64"),
    req("platform", Kind::OneOf(&["linux", "windows"]), ""),
    opt("base_ami", Kind::Str, "e.g. ami-0123456789abcdef0"),
    opt("base_ami_parameter", Kind::Str, "an SSM parameter name"),
    req("instance_type", Kind::Str, "e.g. c5.2xlarge"),
    req("build_region", Kind::Str, "e.g. us-east-1"),
    req(
        "subnet_id",
        Kind::Str,
        "the dedicated builder subnet, e.g. subnet-0123456789abcdef0",
    ),
    opt("security_group_ids", Kind::StrList, ""),
    opt("instance_profile", Kind::Str, "a name or ARN"),
    opt("associate_public_ip", Kind::Bool, ""),
    opt("copy_to_regions", Kind::StrList, ""),
    opt("keep", Kind::U32, ""),
    opt("max_build_minutes", Kind::U32, ""),
    req(
        "provision",
        Kind::Table(PROVISION),
        "with commands and/or script",
    ),
    opt("sanitize", Kind::Table(SANITIZE), ""),
    opt("tags", Kind::StrMap, "e.g. { team = \"releng\" }"),
    opt("block_devices", Kind::TableList(BLOCK_DEVICE), ""),
    opt("kms_key_id", Kind::Str, ""),
    opt(
        "kms_key_ids",
        Kind::StrMap,
        "region = key, e.g. { us-west-2 = \"arn:aws:kms:...\" }",
    ),
    opt(
        "rebuild",
        Kind::OneOf(&["changed", "always"]),
        "changed (default): skip a bake when the recipe and base AMI are the current version's",
    ),
    opt(
        "share",
        Kind::Table(SHARE),
        "accounts, organizations and/or organizational_units",
    ),
    opt(
        "test",
        Kind::Table(TEST),
        "commands, and optionally timeout_minutes and instance_type",
    ),
];

/// A TOML date-time has no JSON equivalent; it becomes an object with this single key so the walk can
/// name it ("found a TOML date-time") instead of silently accepting it as a string.
const TOML_DATETIME_KEY: &str = "$__toml_datetime";

fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => {
            let mut m = Map::new();
            m.insert(TOML_DATETIME_KEY.to_owned(), Value::String(d.to_string()));
            Value::Object(m)
        }
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

fn toml_syntax_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("invalid TOML at line {line}, column {column}: {message}")
        }
        None => format!("invalid TOML: {message}"),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(m) if m.len() == 1 && m.contains_key(TOML_DATETIME_KEY) => {
            "a TOML date-time (quote it to make it a string)".to_owned()
        }
        Value::Object(_) => "a table".to_owned(),
    }
}

fn expected(kind: Kind) -> String {
    match kind {
        Kind::Str => "a string".to_owned(),
        Kind::Bool => "true or false".to_owned(),
        Kind::U32 => "a whole number".to_owned(),
        Kind::OneOf(options) => format!("one of {}", quoted_list(options)),
        Kind::StrList => "an array of strings".to_owned(),
        Kind::StrMap => "a table of string values".to_owned(),
        Kind::Table(_) => "a table".to_owned(),
        Kind::TableList(_) => "an array of tables".to_owned(),
    }
}

fn expected_with_hint(f: &Field) -> String {
    if f.hint.is_empty() {
        expected(f.kind)
    } else {
        format!("{} ({})", expected(f.kind), f.hint)
    }
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A map key as it appears in a path: bare when it is a plain word, quoted otherwise.
fn path_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// A stand-in for a missing or mistyped required value, so the walk and the deserialization can go on.
/// Semantic problems on it are suppressed (the path is already reported).
fn placeholder(kind: Kind) -> Value {
    match kind {
        Kind::Str => Value::String(String::new()),
        Kind::Bool => Value::Bool(false),
        Kind::U32 => Value::from(0u32),
        Kind::OneOf(options) => {
            Value::String(options.first().copied().unwrap_or_default().to_owned())
        }
        Kind::StrList | Kind::TableList(_) => Value::Array(Vec::new()),
        Kind::StrMap => Value::Object(Map::new()),
        Kind::Table(fields) => Value::Object(
            fields
                .iter()
                .filter(|f| f.required)
                .map(|f| (f.name.to_owned(), placeholder(f.kind)))
                .collect(),
        ),
    }
}

/// What the structural walk found: problems to report, and paths whose values were replaced (so
/// semantic checks skip them).
#[derive(Default)]
struct Walk {
    problems: Vec<Problem>,
    tainted: Vec<String>,
}

impl Walk {
    fn report(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        self.tainted.push(path.clone());
        self.problems.push(Problem::new(path, message));
    }
}

fn walk_table(obj: &mut Map<String, Value>, fields: &[Field], path: &str, w: &mut Walk) {
    let unknown: Vec<String> = obj
        .keys()
        .filter(|k| !fields.iter().any(|f| f.name == *k))
        .cloned()
        .collect();
    // A misspelt required field is one mistake, not two: its "missing" problem is left out.
    let mut suggested = Vec::new();
    for key in unknown {
        let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
        let message = match did_you_mean(&key, &names) {
            Some(near) => {
                suggested.push(near);
                format!("unknown field; did you mean `{near}`?")
            }
            None => format!("unknown field; expected one of: {}", names.join(", ")),
        };
        w.report(join(path, &path_key(&key)), message);
        obj.remove(&key);
    }
    for f in fields {
        let p = join(path, f.name);
        let usable = match obj.get_mut(f.name) {
            None | Some(Value::Null) => {
                if f.required && suggested.contains(&f.name) {
                    w.tainted.push(p.clone());
                } else if f.required {
                    w.report(
                        &p,
                        format!("missing required field; expected {}", expected_with_hint(f)),
                    );
                }
                false
            }
            Some(v) => walk_value(v, f, &p, w),
        };
        if !usable {
            if f.required {
                obj.insert(f.name.to_owned(), placeholder(f.kind));
            } else {
                // Absent optional fields take their serde default.
                obj.remove(f.name);
            }
        }
    }
}

/// Checks (and repairs inside) one value; false when it must be replaced or dropped by the caller.
fn walk_value(v: &mut Value, f: &Field, path: &str, w: &mut Walk) -> bool {
    match (f.kind, &mut *v) {
        (Kind::Str, Value::String(_)) | (Kind::Bool, Value::Bool(_)) => true,
        (Kind::U32, Value::Number(n)) => match n.as_u64() {
            Some(x) if x <= u64::from(u32::MAX) => true,
            Some(_) => {
                w.report(
                    path,
                    format!("expected a whole number up to {}, found {n}", u32::MAX),
                );
                false
            }
            None if n.as_i64().is_some() => {
                w.report(path, format!("expected a whole number >= 0, found {n}"));
                false
            }
            None => {
                w.report(path, format!("expected a whole number, found {n}"));
                false
            }
        },
        (Kind::OneOf(options), Value::String(s)) => {
            if options.contains(&s.as_str()) {
                true
            } else {
                w.report(
                    path,
                    format!("expected one of {}, found {s:?}", quoted_list(options)),
                );
                false
            }
        }
        (Kind::StrList, Value::Array(items)) => {
            for (i, item) in items.iter_mut().enumerate() {
                if !item.is_string() {
                    w.report(
                        format!("{path}[{i}]"),
                        format!("expected a string, found {}", describe(item)),
                    );
                    *item = Value::String(String::new());
                }
            }
            true
        }
        (Kind::StrMap, Value::Object(map)) => {
            for (key, item) in map.iter_mut() {
                if !item.is_string() {
                    w.report(
                        format!("{path}.{}", path_key(key)),
                        format!("expected a string, found {}", describe(item)),
                    );
                    *item = Value::String(String::new());
                }
            }
            true
        }
        (Kind::Table(fields), Value::Object(map)) if !map.contains_key(TOML_DATETIME_KEY) => {
            walk_table(map, fields, path, w);
            true
        }
        (Kind::TableList(fields), Value::Array(items)) => {
            for (i, item) in items.iter_mut().enumerate() {
                let item_path = format!("{path}[{i}]");
                match item {
                    Value::Object(map) if !map.contains_key(TOML_DATETIME_KEY) => {
                        walk_table(map, fields, &item_path, w);
                    }
                    other => {
                        w.report(
                            &item_path,
                            format!("expected a table, found {}", describe(other)),
                        );
                        *other = placeholder(Kind::Table(fields));
                    }
                }
            }
            true
        }
        (_, other) => {
            let found = describe(other);
            w.report(
                path,
                format!("expected {}, found {found}", expected_with_hint(f)),
            );
            false
        }
    }
}

/// The known name closest to a misspelt one: within edit distance 2 (1 for short names), or one being a
/// prefix of the other (`base_ami_param`).
fn did_you_mean<'a>(key: &str, names: &[&'a str]) -> Option<&'a str> {
    let key_l = key.to_ascii_lowercase().replace('-', "_");
    let limit = if key_l.len() <= 4 { 1 } else { 2 };
    names
        .iter()
        .map(|n| (edit_distance(&key_l, n), *n))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
        .or_else(|| {
            // An abbreviation (`base_ami_param`) or an over-long name (`subnet_ids`).
            let by = |pick: fn(&str, &str) -> bool| {
                names
                    .iter()
                    .copied()
                    .find(|n| key_l.len() >= 4 && pick(n, &key_l))
            };
            by(|n, k| n.starts_with(k)).or_else(|| by(|n, k| k.starts_with(n)))
        })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------------------------
// Value forms (no regex crate: small character checks)

/// `[a-z0-9][a-z0-9-]{0,62}`, e.g. `bld-linux64`, `b-2008`. Short and DNS-like because it ends up in image
/// names, tags, S3 keys and SSM parameter paths.
pub fn is_valid_type_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn is_lower_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_prefixed_hex(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(is_lower_hex)
}

/// 12 ASCII digits.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_lower_alnum(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// `o-` and 10 to 32 of `[a-z0-9]`.
fn is_organization_id(s: &str) -> bool {
    s.strip_prefix("o-")
        .is_some_and(|id| is_lower_alnum(id, 10..=32))
}

/// The `arn:<partition>:organizations::<account>:` prefix of an Organizations ARN, and what follows it.
fn organizations_arn_rest(s: &str) -> Option<&str> {
    let rest = s.strip_prefix("arn:")?;
    let (partition, rest) = rest.split_once(':')?;
    if !partition.starts_with("aws") {
        return None;
    }
    let rest = rest.strip_prefix("organizations::")?;
    let (account, rest) = rest.split_once(':')?;
    is_account_id(account).then_some(rest)
}

/// `arn:aws:organizations::<account>:organization/o-<id>`.
pub fn is_organization_arn(s: &str) -> bool {
    organizations_arn_rest(s)
        .and_then(|r| r.strip_prefix("organization/"))
        .is_some_and(is_organization_id)
}

/// `arn:aws:organizations::<account>:ou/o-<id>/ou-<root part>-<ou part>`.
pub fn is_organizational_unit_arn(s: &str) -> bool {
    let Some((org, ou)) = organizations_arn_rest(s)
        .and_then(|r| r.strip_prefix("ou/"))
        .and_then(|r| r.split_once('/'))
    else {
        return false;
    };
    is_organization_id(org)
        && ou
            .strip_prefix("ou-")
            .and_then(|r| r.split_once('-'))
            .is_some_and(|(root, id)| is_lower_alnum(root, 4..=32) && is_lower_alnum(id, 8..=32))
}

/// `ami-` and 8 to 17 lowercase hex digits.
pub fn is_ami_id(s: &str) -> bool {
    s.strip_prefix("ami-")
        .is_some_and(|h| (8..=17).contains(&h.len()) && is_lower_hex(h))
}

/// `[a-z]{2}(-gov)?-[a-z]+-\d+`, e.g. `us-east-1`, `us-gov-west-1`.
pub fn is_region_name(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let (cc, word, num) = match parts.as_slice() {
        [cc, word, num] => (cc, word, num),
        [cc, gov, word, num] if *gov == "gov" => (cc, word, num),
        _ => return false,
    };
    cc.len() == 2
        && cc.bytes().all(|b| b.is_ascii_lowercase())
        && !word.is_empty()
        && word.bytes().all(|b| b.is_ascii_lowercase())
        && !num.is_empty()
        && num.bytes().all(|b| b.is_ascii_digit())
}

fn region_message(region: &str) -> String {
    format!("invalid region {region:?}: expected a region name like us-east-1")
}

/// An SSM parameter name: letters, digits, `_ . -` and `/`-separated segments; a hierarchical name
/// starts with `/` and has no empty segment.
fn is_ssm_parameter_name(s: &str) -> bool {
    let chars_ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'));
    if s.is_empty() || s.len() > 1011 || !chars_ok {
        return false;
    }
    match s.strip_prefix('/') {
        Some(rest) => rest.split('/').all(|seg| !seg.is_empty()),
        None => !s.contains('/'),
    }
}

/// `family.size`, e.g. `c5.2xlarge`, `m7i-flex.large`, `c7i.metal-48xl`.
fn is_instance_type(s: &str) -> bool {
    let Some((family, size)) = s.split_once('.') else {
        return false;
    };
    let word = |w: &str| {
        w.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    family
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase())
        && word(family)
        && word(size)
}

fn is_instance_profile(s: &str) -> bool {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.len() <= 128
            && n.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'+' | b'=' | b',' | b'.' | b'@' | b'_' | b'-')
            })
    };
    if let Some(rest) = s.strip_prefix("arn:") {
        // arn:PARTITION:iam::ACCOUNT:instance-profile/PATH/NAME
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        return matches!(parts.as_slice(), [partition, "iam", "", account, resource]
            if partition.starts_with("aws")
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.strip_prefix("instance-profile/").is_some_and(|p| p.split('/').all(|seg| seg.is_empty() || name_ok(seg)) && !p.ends_with('/')));
    }
    name_ok(s)
}

fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_uppercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && is_lower_hex(g))
}

fn is_kms_alias(s: &str) -> bool {
    s.strip_prefix("alias/").is_some_and(|name| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
    })
}

fn kms_message(key: &str) -> String {
    format!(
        "invalid KMS key {key:?}: expected a key id (uuid or mrk-...), alias/NAME, or an \
         arn:aws:kms:REGION:ACCOUNT:key/... or :alias/... ARN"
    )
}

/// The region of a KMS key ARN (a bare id or alias resolves in whichever region uses it).
fn kms_key_region(key: &str) -> Option<&str> {
    key.strip_prefix("arn:")?.split(':').nth(2)
}

fn is_kms_key_id(s: &str) -> bool {
    let bare = |k: &str| {
        is_uuid(k)
            || k.strip_prefix("mrk-")
                .is_some_and(|h| h.len() == 32 && is_lower_hex(h))
    };
    if let Some(rest) = s.strip_prefix("arn:") {
        // arn:PARTITION:kms:REGION:ACCOUNT:key/ID | alias/NAME
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        return matches!(parts.as_slice(), [partition, "kms", region, account, resource]
            if partition.starts_with("aws")
                && is_region_name(region)
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && (resource.strip_prefix("key/").is_some_and(bare) || is_kms_alias(resource)));
    }
    bare(s) || is_kms_alias(s)
}

/// Extra sanitize paths are removed recursively as literal paths, so they must be unambiguous and never
/// reach above themselves or the root.
fn check_extra_path(platform: Platform, path: &str) -> Result<(), String> {
    if path.contains(['\0', '\n', '\r']) {
        return Err("contains a NUL or line break; expected a single absolute path".to_owned());
    }
    if path.contains(['*', '?', '[']) {
        return Err(format!("{path:?} has a glob character; globs are not expanded, name the file or directory itself"));
    }
    let rest = match platform {
        Platform::Linux => path
            .strip_prefix('/')
            .ok_or_else(|| format!("{path:?} is not absolute; expected a path starting with /"))?,
        Platform::Windows => {
            let b = path.as_bytes();
            if b.len() < 3 || !b[0].is_ascii_alphabetic() || b[1] != b':' || b[2] != b'\\' {
                return Err(format!(
                    "{path:?} is not absolute; expected a path like C:\\ProgramData\\..."
                ));
            }
            &path[3..]
        }
    };
    let components: Vec<&str> = rest
        .split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if components.contains(&"..") {
        return Err(format!(
            "{path:?} has a '..' component; expected a path without '..'"
        ));
    }
    if components.is_empty() {
        return Err(format!(
            "{path:?} is the root of the filesystem; refusing to remove it"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VALID: &str = r#"
type = "bld-linux64"
platform = "linux"
base_ami_parameter = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
instance_type = "c5.2xlarge"
build_region = "us-east-1"
subnet_id = "subnet-0b1d2e3f4a5b6c7d8"
security_group_ids = ["sg-0123456789abcdef0"]
instance_profile = "golden-ami-builder"
copy_to_regions = ["us-west-2", "eu-central-1"]
keep = 10
max_build_minutes = 120

[provision]
env = { PUPPET_SERVER = "puppet.build.example.com" }
commands = ["puppet agent --test"]
timeout_minutes = 60

[sanitize]
extra_paths = ["/opt/secret"]

[tags]
team = "releng"

[[block_devices]]
device_name = "/dev/xvda"
volume_size_gb = 150
"#;

    fn valid_json() -> Value {
        let recipe = Recipe::from_toml_str(VALID, "valid.toml").unwrap();
        serde_json::from_slice(&recipe.to_json_vec()).unwrap()
    }

    #[test]
    fn content_hash_ignores_how_the_recipe_is_written_but_not_what_it_says() {
        let recipe = Recipe::from_toml_str(VALID, "valid.toml").unwrap();
        let hash = recipe.content_hash();
        assert!(
            hash.starts_with("sha256:") && hash.len() == 7 + 64,
            "{hash}"
        );
        // The same recipe with its defaults spelt out, comments and keys moved, and as pushed JSON.
        let rewritten =
            format!("# a comment\nrebuild = \"changed\"\nassociate_public_ip = false\n{VALID}");
        assert_eq!(
            Recipe::from_toml_str(&rewritten, "x.toml")
                .unwrap()
                .content_hash(),
            hash
        );
        let pushed = Recipe::from_json_slice(&recipe.to_json_vec(), "pushed").unwrap();
        assert_eq!(pushed.content_hash(), hash);
        // Pinned: a change to the JSON form (a renamed field, a new field without skip_serializing_if) would
        // re-bake every type once; this assertion makes such a change deliberate.
        assert_eq!(
            hash,
            "sha256:717f4976b9f0d2b7b5338d8551bdf442ec0a51d8465639c3829f22a5bc7c4a58",
        );
        // Anything a bake uses changes it.
        for (field, value) in [
            ("instance_type", json!("c6i.2xlarge")),
            ("copy_to_regions", json!(["us-west-2"])),
            ("tags", json!({"team": "other"})),
            ("rebuild", json!("always")),
        ] {
            let mut v = valid_json();
            v[field] = value;
            let changed = Recipe::from_json_value(v, "test").unwrap();
            assert_ne!(changed.content_hash(), hash, "{field}");
        }
        let mut v = valid_json();
        v["provision"]["commands"] = json!(["puppet agent --test --noop"]);
        assert_ne!(
            Recipe::from_json_value(v, "test").unwrap().content_hash(),
            hash
        );
    }

    #[test]
    fn rebuild_is_changed_or_always() {
        assert_eq!(
            Recipe::from_toml_str(VALID, "v").unwrap().rebuild,
            Rebuild::Changed
        );
        let mut v = valid_json();
        v["rebuild"] = json!("always");
        assert_eq!(
            Recipe::from_json_value(v, "t").unwrap().rebuild,
            Rebuild::Always
        );
        let mut v = valid_json();
        v["rebuild"] = json!("sometimes");
        let problems = problems_of(v);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "rebuild");
        assert!(
            problems[0].message.contains("always"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn share_takes_accounts_organizations_and_ous_and_names_each_bad_entry() {
        let mut v = valid_json();
        v["share"] = json!({
            "accounts": ["111122223333"],
            "organizations": ["arn:aws:organizations::111122223333:organization/o-exampleorg"],
            "organizational_units": ["arn:aws:organizations::111122223333:ou/o-exampleorg/ou-ab12-cdef3456"],
        });
        let r = Recipe::from_json_value(v.clone(), "t").unwrap();
        assert_eq!(r.share.accounts, ["111122223333"]);
        assert_eq!(r.share.organizational_units.len(), 1);
        assert_ne!(
            r.content_hash(),
            Recipe::from_toml_str(VALID, "v").unwrap().content_hash()
        );

        v["share"] = json!({
            "accounts": ["11112222333", "111122223333", "111122223333"],
            "organizations": ["o-exampleorg", "arn:aws:organizations::111122223333:organization/o-short"],
            "organizational_units": ["arn:aws:organizations::111122223333:ou/o-exampleorg/ou-ab12"],
            "users": ["x"],
        });
        let paths: Vec<String> = problems_of(v).into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "share.users",
                "share.accounts[0]",
                "share.accounts[2]",
                "share.organizations[0]",
                "share.organizations[1]",
                "share.organizational_units[0]",
            ],
        );
    }

    #[test]
    fn a_shared_image_may_not_be_encrypted_with_the_default_ebs_key() {
        let mut v = valid_json();
        v["share"] = json!({ "accounts": ["111122223333"] });
        v["block_devices"][0]["encrypted"] = json!(true);
        let problems = problems_of(v.clone());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "block_devices[0].encrypted");
        assert!(
            problems[0].message.contains("kms_key_id"),
            "{}",
            problems[0].message
        );
        // A key for the build region only leaves the copies on their regions' default keys.
        v["kms_key_ids"] = json!({ "us-east-1": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab" });
        let problems = problems_of(v.clone());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].message.contains("us-west-2"),
            "{}",
            problems[0].message
        );
        v.as_object_mut().expect("object").remove("kms_key_ids");
        v["kms_key_id"] = json!("alias/golden-shared");
        Recipe::from_json_value(v, "t").expect("a customer managed key can be shared");
    }

    #[test]
    fn a_test_needs_commands_a_timeout_within_the_bake_and_a_valid_instance_type() {
        let mut v = valid_json();
        v["test"] = json!({ "commands": ["systemctl is-active sshd"] });
        let r = Recipe::from_json_value(v.clone(), "t").unwrap();
        let test = r.test.expect("a test");
        assert_eq!((test.timeout_minutes, test.instance_type), (30, None));

        v["test"] = json!({ "commands": [], "timeout_minutes": 500, "instance_type": "huge", "retries": 2 });
        let paths: Vec<String> = problems_of(v.clone()).into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "test.retries",
                "test.commands",
                "test.timeout_minutes",
                "test.instance_type"
            ]
        );
        v["test"] = json!({ "timeout_minutes": 5 });
        let problems = problems_of(v);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "test.commands");
    }

    fn problems_of(v: Value) -> Vec<Problem> {
        Recipe::from_json_value(v, "test")
            .expect_err("recipe should be invalid")
            .problems
    }

    fn assert_single_problem(name: &str, v: Value, path: &str, message_part: &str) {
        let problems = problems_of(v);
        assert_eq!(
            problems.len(),
            1,
            "{name}: expected one problem, got {problems:#?}"
        );
        assert_eq!(problems[0].path, path, "{name}");
        assert!(
            problems[0].message.contains(message_part),
            "{name}: {:?} should contain {message_part:?}",
            problems[0].message
        );
    }

    #[test]
    fn each_region_gets_its_own_key_else_the_shared_one() {
        let mut v = valid_json();
        v["kms_key_id"] = json!("alias/golden");
        v["kms_key_ids"] = json!({
            "us-east-1": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "us-west-2": "arn:aws:kms:us-west-2:111122223333:key/5678abcd-12ab-34cd-56ef-1234567890ab",
        });
        let r = Recipe::from_json_value(v, "test").expect("valid");
        assert_eq!(
            r.kms_key_for("us-east-1"),
            Some("arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")
        );
        assert_eq!(
            r.kms_key_for("us-west-2"),
            Some("arn:aws:kms:us-west-2:111122223333:key/5678abcd-12ab-34cd-56ef-1234567890ab")
        );
        assert_eq!(r.kms_key_for("eu-central-1"), Some("alias/golden"));
        // A regional ARN is fine as the shared key when every other region has its own
        let mut v = valid_json();
        v["kms_key_id"] =
            json!("arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab");
        v["kms_key_ids"] = json!({ "us-west-2": "alias/a", "eu-central-1": "alias/b" });
        Recipe::from_json_value(v, "test").expect("valid");
        assert_eq!(valid_json().get("kms_key_ids"), None, "absent when empty");
    }

    #[test]
    fn valid_recipe_parses_with_defaults() {
        let r = Recipe::from_toml_str(VALID, "valid.toml").unwrap();
        assert_eq!(r.image_type, "bld-linux64");
        assert_eq!(r.platform, Platform::Linux);
        assert!(!r.associate_public_ip);
        assert_eq!(r.block_devices[0].volume_type, "gp3");
        assert!(r.block_devices[0].delete_on_termination);
        assert!(!r.block_devices[0].encrypted);
        assert_eq!(r.all_regions(), ["us-east-1", "us-west-2", "eu-central-1"]);
        r.validate().unwrap();
    }

    #[test]
    fn defaults_apply_when_fields_are_absent() {
        let mut v = valid_json();
        for key in [
            "keep",
            "max_build_minutes",
            "security_group_ids",
            "copy_to_regions",
            "tags",
            "sanitize",
            "block_devices",
        ] {
            v.as_object_mut().unwrap().remove(key);
        }
        v["provision"]
            .as_object_mut()
            .unwrap()
            .remove("timeout_minutes");
        let r = Recipe::from_json_value(v, "t").unwrap();
        assert_eq!(
            (r.keep, r.max_build_minutes, r.provision.timeout_minutes),
            (10, 180, 60)
        );
        assert_eq!(r.sanitize, Sanitize::default());
        assert_eq!(r.all_regions(), ["us-east-1"]);
    }

    #[test]
    fn round_trip_toml_to_json_and_back_is_equal() {
        let from_toml = Recipe::from_toml_str(VALID, "valid.toml").unwrap();
        let json = from_toml.to_json_vec();
        assert!(json.ends_with(b"\n"));
        let from_json = Recipe::from_json_slice(&json, "valid.json").unwrap();
        assert_eq!(from_toml, from_json);
        let text = String::from_utf8(json).unwrap();
        assert!(
            !text.contains("base_ami\""),
            "absent options are not serialized: {text}"
        );
        assert!(text.contains("\"type\": \"bld-linux64\""));
    }

    #[test]
    fn each_semantic_rule_reports_its_path_and_expectation() {
        type Edit = fn(&mut Value);
        let cases: &[(&str, Edit, &str, &str)] = &[
            (
                "bad type name",
                |v| v["type"] = json!("Bld_Linux"),
                "type",
                "lowercase letters",
            ),
            (
                "type too long",
                |v| v["type"] = json!("a".repeat(64)),
                "type",
                "1-63",
            ),
            (
                "no base",
                |v| {
                    v.as_object_mut().unwrap().remove("base_ami_parameter");
                },
                "base_ami",
                "exactly one",
            ),
            (
                "both bases",
                |v| v["base_ami"] = json!("ami-0123456789abcdef0"),
                "base_ami",
                "not both",
            ),
            (
                "bad ami id",
                |v| {
                    v.as_object_mut().unwrap().remove("base_ami_parameter");
                    v["base_ami"] = json!("ami-XYZ");
                },
                "base_ami",
                "8 to 17 lowercase hex",
            ),
            (
                "short ami id",
                |v| {
                    v.as_object_mut().unwrap().remove("base_ami_parameter");
                    v["base_ami"] = json!("ami-0aaa");
                },
                "base_ami",
                "8 to 17",
            ),
            (
                "bad ssm name",
                |v| v["base_ami_parameter"] = json!("/aws//x"),
                "base_ami_parameter",
                "SSM parameter name",
            ),
            (
                "ssm name with space",
                |v| v["base_ami_parameter"] = json!("/a b"),
                "base_ami_parameter",
                "SSM parameter name",
            ),
            (
                "bad instance type",
                |v| v["instance_type"] = json!("c5-2xlarge"),
                "instance_type",
                "family.size",
            ),
            (
                "bad build region",
                |v| v["build_region"] = json!("US-EAST-1"),
                "build_region",
                "like us-east-1",
            ),
            (
                "bad subnet",
                |v| v["subnet_id"] = json!("subnet-XYZ"),
                "subnet_id",
                "subnet- and lowercase hex",
            ),
            (
                "bad sg",
                |v| v["security_group_ids"] = json!(["sg-0abc", "sg-"]),
                "security_group_ids[1]",
                "sg- and lowercase hex",
            ),
            (
                "bad profile",
                |v| v["instance_profile"] = json!("has space"),
                "instance_profile",
                "instance profile",
            ),
            (
                "bad copy region",
                |v| v["copy_to_regions"] = json!(["us-west-2", "mars"]),
                "copy_to_regions[1]",
                "like us-east-1",
            ),
            (
                "copy to build region",
                |v| v["copy_to_regions"] = json!(["us-east-1"]),
                "copy_to_regions[0]",
                "is the build_region",
            ),
            (
                "duplicate copy region",
                |v| v["copy_to_regions"] = json!(["us-west-2", "us-west-2"]),
                "copy_to_regions[1]",
                "more than once",
            ),
            ("keep zero", |v| v["keep"] = json!(0), "keep", "1 to 1000"),
            (
                "keep huge",
                |v| v["keep"] = json!(1001),
                "keep",
                "1 to 1000",
            ),
            (
                "build too short",
                |v| {
                    v["max_build_minutes"] = json!(9);
                    v["provision"]["timeout_minutes"] = json!(5);
                },
                "max_build_minutes",
                "10 to 1440",
            ),
            (
                "build too long",
                |v| v["max_build_minutes"] = json!(1441),
                "max_build_minutes",
                "10 to 1440",
            ),
            (
                "nothing to provision",
                |v| v["provision"]["commands"] = json!([]),
                "provision",
                "commands",
            ),
            (
                "blank script only",
                |v| {
                    v["provision"]["commands"] = json!([]);
                    v["provision"]["script"] = json!("  \n");
                },
                "provision",
                "nothing to run",
            ),
            (
                "timeout zero",
                |v| v["provision"]["timeout_minutes"] = json!(0),
                "provision.timeout_minutes",
                "1 to max_build_minutes (120)",
            ),
            (
                "timeout above build",
                |v| v["provision"]["timeout_minutes"] = json!(121),
                "provision.timeout_minutes",
                "1 to max_build_minutes",
            ),
            (
                "lowercase env key",
                |v| v["provision"]["env"] = json!({"puppet_server": "x"}),
                "provision.env.puppet_server",
                "uppercase",
            ),
            (
                "env key with digit first",
                |v| v["provision"]["env"] = json!({"1X": "x"}),
                "provision.env.1X",
                "not starting with a digit",
            ),
            (
                "env value newline",
                |v| v["provision"]["env"] = json!({"PUPPET_SERVER": "a\nb"}),
                "provision.env.PUPPET_SERVER",
                "line break",
            ),
            (
                "command with NUL",
                |v| v["provision"]["commands"] = json!(["a\u{0}b"]),
                "provision.commands[0]",
                "NUL",
            ),
            (
                "relative extra path",
                |v| v["sanitize"]["extra_paths"] = json!(["tmp/x"]),
                "sanitize.extra_paths[0]",
                "starting with /",
            ),
            (
                "dotdot extra path",
                |v| v["sanitize"]["extra_paths"] = json!(["/opt/../etc"]),
                "sanitize.extra_paths[0]",
                "'..'",
            ),
            (
                "root extra path",
                |v| v["sanitize"]["extra_paths"] = json!(["/opt", "//./"]),
                "sanitize.extra_paths[1]",
                "root",
            ),
            (
                "glob extra path",
                |v| v["sanitize"]["extra_paths"] = json!(["/opt/*"]),
                "sanitize.extra_paths[0]",
                "glob",
            ),
            (
                "newline extra path",
                |v| v["sanitize"]["extra_paths"] = json!(["/opt\n/etc"]),
                "sanitize.extra_paths[0]",
                "line break",
            ),
            (
                "linux path on windows",
                |v| v["platform"] = json!("windows"),
                "sanitize.extra_paths[0]",
                "C:\\",
            ),
            (
                "reserved tag",
                |v| v["tags"] = json!({"golden-ami:keep": "true"}),
                "tags.\"golden-ami:keep\"",
                "reserved",
            ),
            (
                "aws tag",
                |v| v["tags"] = json!({"aws:x": "y"}),
                "tags.\"aws:x\"",
                "reserved",
            ),
            (
                "long tag value",
                |v| v["tags"] = json!({"team": "v".repeat(257)}),
                "tags.team",
                "at most 256",
            ),
            (
                "zero volume",
                |v| v["block_devices"][0]["volume_size_gb"] = json!(0),
                "block_devices[0].volume_size_gb",
                "1 to 16384",
            ),
            (
                "huge volume",
                |v| v["block_devices"][0]["volume_size_gb"] = json!(16385),
                "block_devices[0].volume_size_gb",
                "1 to 16384",
            ),
            (
                "bad volume type",
                |v| v["block_devices"][0]["volume_type"] = json!("gp4"),
                "block_devices[0].volume_type",
                "gp2, gp3",
            ),
            (
                "empty device name",
                |v| v["block_devices"][0]["device_name"] = json!(""),
                "block_devices[0].device_name",
                "/dev/xvda",
            ),
            (
                "duplicate device",
                |v| {
                    let dev = v["block_devices"][0].clone();
                    v["block_devices"].as_array_mut().unwrap().push(dev);
                },
                "block_devices[1].device_name",
                "more than once",
            ),
            (
                "bad kms key",
                |v| v["kms_key_id"] = json!("my-key"),
                "kms_key_id",
                "alias/NAME",
            ),
            (
                "one regional key for every region",
                |v| {
                    v["kms_key_id"] =
                        json!("arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")
                },
                "kms_key_id",
                "is a key of us-east-1 and cannot encrypt the image in us-west-2, eu-central-1; give those regions their own key in kms_key_ids",
            ),
            (
                "a region's key from another region",
                |v| {
                    v["kms_key_ids"] = json!({
                        "us-west-2": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
                    })
                },
                "kms_key_ids.us-west-2",
                "is a key of us-east-1, not of us-west-2",
            ),
            (
                "a key for a region the image is not in",
                |v| v["kms_key_ids"] = json!({ "ap-south-1": "alias/golden" }),
                "kms_key_ids.ap-south-1",
                "neither the build_region nor a copy region (us-east-1, us-west-2, eu-central-1)",
            ),
            (
                "a bad key in the map",
                |v| v["kms_key_ids"] = json!({ "us-west-2": "my-key" }),
                "kms_key_ids.us-west-2",
                "alias/NAME",
            ),
        ];
        for (name, edit, path, part) in cases {
            let mut v = valid_json();
            edit(&mut v);
            assert_single_problem(name, v, path, part);
        }
    }

    #[test]
    fn each_structural_rule_reports_its_path_and_expectation() {
        type Edit = fn(&mut Value);
        let cases: &[(&str, Edit, &str, &str)] = &[
            (
                "typo with suggestion",
                |v| {
                    let x = v["instance_type"].take();
                    v["instance_typ"] = x;
                    v.as_object_mut().unwrap().remove("instance_type");
                },
                "instance_typ",
                "did you mean `instance_type`?",
            ),
            (
                "unknown without suggestion",
                |v| v["colour"] = json!("blue"),
                "colour",
                "expected one of: type, platform",
            ),
            (
                "nested typo",
                |v| v["provision"]["timeout"] = json!(5),
                "provision.timeout",
                "did you mean `timeout_minutes`?",
            ),
            (
                "block device typo",
                |v| v["block_devices"][0]["size_gb"] = json!(5),
                "block_devices[0].size_gb",
                "expected one of: device_name",
            ),
            (
                "missing required",
                |v| {
                    v.as_object_mut().unwrap().remove("subnet_id");
                },
                "subnet_id",
                "missing required field; expected a string (the dedicated builder subnet",
            ),
            (
                "null required",
                |v| v["build_region"] = Value::Null,
                "build_region",
                "missing required field",
            ),
            (
                "missing provision",
                |v| {
                    v.as_object_mut().unwrap().remove("provision");
                },
                "provision",
                "missing required field; expected a table",
            ),
            (
                "wrong platform",
                |v| v["platform"] = json!("Linux"),
                "platform",
                "expected one of \"linux\", \"windows\", found \"Linux\"",
            ),
            (
                "number as string",
                |v| v["keep"] = json!("10"),
                "keep",
                "expected a whole number, found string \"10\"",
            ),
            ("negative number", |v| v["keep"] = json!(-1), "keep", ">= 0"),
            (
                "float",
                |v| v["keep"] = json!(1.5),
                "keep",
                "expected a whole number, found 1.5",
            ),
            (
                "string as list",
                |v| v["copy_to_regions"] = json!("us-west-2"),
                "copy_to_regions",
                "expected an array of strings, found string",
            ),
            (
                "list element",
                |v| v["security_group_ids"] = json!(["sg-0abc", 7]),
                "security_group_ids[1]",
                "expected a string, found number 7",
            ),
            (
                "map value",
                |v| v["tags"] = json!({"team": 1}),
                "tags.team",
                "expected a string",
            ),
            (
                "bool as string",
                |v| v["associate_public_ip"] = json!("yes"),
                "associate_public_ip",
                "expected true or false",
            ),
            (
                "block device not a table",
                |v| v["block_devices"] = json!(["xvda"]),
                "block_devices[0]",
                "expected a table",
            ),
        ];
        for (name, edit, path, part) in cases {
            let mut v = valid_json();
            edit(&mut v);
            assert_single_problem(name, v, path, part);
        }
    }

    #[test]
    fn tag_keys_longer_than_128_characters_are_rejected() {
        let key = "k".repeat(129);
        let mut v = valid_json();
        v["tags"] = json!({ key.clone(): "v" });
        assert_single_problem("long tag key", v, &format!("tags.{key}"), "1 to 128");
        let mut v = valid_json();
        v["tags"] = json!({ "k".repeat(128): "v".repeat(256) });
        Recipe::from_json_value(v, "t").unwrap();
    }

    #[test]
    fn five_different_problems_are_all_reported_at_once() {
        // GIVEN a recipe with a typo, a missing field, a wrong type, a bad region and a reserved tag
        let text = VALID
            .replace("instance_profile = ", "instance_profle = ")
            .replace("subnet_id = \"subnet-0b1d2e3f4a5b6c7d8\"\n", "")
            .replace("keep = 10", "keep = \"ten\"")
            .replace("\"eu-central-1\"", "\"eu-central\"")
            .replace("team = \"releng\"", "\"golden-ami:role\" = \"image\"");
        // WHEN it is loaded
        let err = Recipe::from_toml_str(&text, "infra/recipes/bld-linux64.toml").unwrap_err();
        // THEN every problem is listed, one per line, with its path
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths.len(), 5, "{err}");
        for path in [
            "instance_profle",
            "subnet_id",
            "keep",
            "copy_to_regions[1]",
            "tags.\"golden-ami:role\"",
        ] {
            assert!(paths.contains(&path), "{path} missing from {err}");
        }
        let shown = err.to_string();
        assert!(
            shown.starts_with("recipe infra/recipes/bld-linux64.toml is invalid:\n  - "),
            "{shown}"
        );
        assert_eq!(shown.lines().count(), 6, "{shown}");
        assert!(
            shown.contains("  - instance_profle: unknown field; did you mean `instance_profile`?"),
            "{shown}"
        );
    }

    #[test]
    fn placeholders_for_reported_fields_do_not_add_noise() {
        let mut v = valid_json();
        v["max_build_minutes"] = json!("long");
        v["platform"] = json!(3);
        v["sanitize"]["extra_paths"] = json!(["C:\\Temp\\x"]);
        let problems = problems_of(v);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["platform", "max_build_minutes"], "{problems:#?}");
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let err = Recipe::from_toml_str("type = \"x\"\nplatform = ", "bad.toml").unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(err.problems[0].message.contains("line 2"), "{err}");
        let err = Recipe::from_json_slice(b"{\n\"type\": }", "bad.json").unwrap_err();
        assert!(err.problems[0].message.contains("line 2, column"), "{err}");
        let err = Recipe::from_json_value(json!([1]), "x").unwrap_err();
        assert!(
            err.problems[0].message.contains("expected a table"),
            "{err}"
        );
    }

    #[test]
    fn toml_datetime_is_named_not_accepted() {
        let text = VALID.replace(
            "instance_profile = \"golden-ami-builder\"",
            "instance_profile = 2026-01-01",
        );
        let err = Recipe::from_toml_str(&text, "t").unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(err.problems[0].path, "instance_profile");
        assert!(err.problems[0].message.contains("TOML date-time"), "{err}");
    }

    #[test]
    fn value_forms_accept_real_aws_identifiers() {
        assert!(
            is_valid_type_name("bld-linux64")
                && is_valid_type_name("b-2008")
                && is_valid_type_name("7")
        );
        assert!(!is_valid_type_name("-x") && !is_valid_type_name("") && !is_valid_type_name("a_b"));
        assert!(is_ami_id("ami-12345678") && is_ami_id("ami-0123456789abcdef0"));
        assert!(!is_ami_id("ami-0123456789abcdef01") && !is_ami_id("ami-ABCDEF12"));
        for r in [
            "us-east-1",
            "us-gov-west-1",
            "ap-southeast-4",
            "il-central-1",
        ] {
            assert!(is_region_name(r), "{r}");
        }
        for r in ["us-east", "useast-1", "us-east-1a", "us-foo-west-1", ""] {
            assert!(!is_region_name(r), "{r}");
        }
        for t in ["c5.2xlarge", "m7i-flex.large", "c7i.metal-48xl", "t3.micro"] {
            assert!(is_instance_type(t), "{t}");
        }
        for t in ["c5", ".large", "c5.", "C5.large", "c5.2xlarge.x"] {
            assert!(!is_instance_type(t), "{t}");
        }
        for k in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "mrk-1234abcd12ab34cd56ef1234567890ab",
            "alias/golden-ami",
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws-us-gov:kms:us-gov-west-1:111122223333:alias/ebs",
        ] {
            assert!(is_kms_key_id(k), "{k}");
        }
        for k in ["alias/", "arn:aws:kms:us-east-1:1:key/x", "1234"] {
            assert!(!is_kms_key_id(k), "{k}");
        }
        assert!(is_instance_profile(
            "arn:aws:iam::111122223333:instance-profile/path/golden-ami-builder"
        ));
        assert!(!is_instance_profile("arn:aws:iam::111122223333:role/x"));
        assert!(
            is_ssm_parameter_name("plain-name")
                && !is_ssm_parameter_name("a/b")
                && !is_ssm_parameter_name("/a/")
        );
    }

    #[test]
    fn windows_extra_paths_need_a_drive() {
        assert!(check_extra_path(Platform::Windows, "C:\\ProgramData\\Foo").is_ok());
        assert!(check_extra_path(Platform::Windows, "/etc/foo").is_err());
        assert!(check_extra_path(Platform::Windows, "C:\\").is_err());
        assert!(check_extra_path(Platform::Windows, "C:\\a\\..\\b").is_err());
    }

    #[test]
    fn did_you_mean_finds_near_typos_only() {
        let names: Vec<&str> = SCHEMA.iter().map(|f| f.name).collect();
        assert_eq!(did_you_mean("keeep", &names), Some("keep"));
        assert_eq!(did_you_mean("base-ami", &names), Some("base_ami"));
        assert_eq!(
            did_you_mean("base_ami_param", &names),
            Some("base_ami_parameter")
        );
        assert_eq!(did_you_mean("subnet", &names), Some("subnet_id"));
        assert_eq!(did_you_mean("zzz", &names), None);
    }

    #[test]
    fn shipped_recipes_parse_and_validate() {
        let files = [
            (
                "bld-linux64",
                include_str!("../../../infra/recipes/bld-linux64.toml"),
                Platform::Linux,
            ),
            (
                "tst-linux64",
                include_str!("../../../infra/recipes/tst-linux64.toml"),
                Platform::Linux,
            ),
            (
                "b-2008",
                include_str!("../../../infra/recipes/b-2008.toml"),
                Platform::Windows,
            ),
        ];
        for (name, text, platform) in files {
            let r = Recipe::from_toml_str(text, name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.image_type, name, "the file name is the type");
            assert_eq!(r.platform, platform);
            assert!(r.all_regions().contains(&"us-west-2".to_owned()));
            r.validate().unwrap();
            let again = Recipe::from_json_slice(&r.to_json_vec(), name).unwrap();
            assert_eq!(again, r);
        }
    }
}
