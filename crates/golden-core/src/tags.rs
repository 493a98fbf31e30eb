//! Tag keys shared by every stage (see DESIGN.md "Tags (contract)").
//!
//! Resources are found again by these tags (builders to reap, images to prune, fleet instances to
//! check for freshness), so the keys are a contract: renaming one orphans everything tagged before.

/// What a golden-ami resource is: [`ROLE_BUILDER`] or [`ROLE_IMAGE`].
pub const ROLE: &str = "golden-ami:role";
/// Value of [`ROLE`] on a builder instance (reaped when its execution is gone).
pub const ROLE_BUILDER: &str = "builder";
/// Value of [`ROLE`] on a tester: an instance of a new image, running the recipe's test (reaped like a
/// builder).
pub const ROLE_TESTER: &str = "tester";
/// The instance roles of a bake, [`ROLE_BUILDER`] and [`ROLE_TESTER`]: what cleanup and the reaper terminate.
pub const BAKE_INSTANCE_ROLES: [&str; 2] = [ROLE_BUILDER, ROLE_TESTER];
/// Whether an instance with these tags is a bake's own (builder or tester): reaped with its bake, never
/// counted or acted on as the fleet's.
pub fn is_bake_instance(tags: &std::collections::BTreeMap<String, String>) -> bool {
    tags.get(ROLE)
        .is_some_and(|r| BAKE_INSTANCE_ROLES.contains(&r.as_str()))
}
/// Value of [`ROLE`] on an image and its snapshots (the only images prune ever considers).
pub const ROLE_IMAGE: &str = "image";
/// The image type, e.g. `bld-linux64`.
pub const TYPE: &str = "golden-ami:type";
/// The version, a UTC timestamp `YYYYMMDDTHHMMSSZ`.
pub const VERSION: &str = "golden-ami:version";
/// The ARN of the Step Functions execution that made the resource.
pub const EXECUTION: &str = "golden-ami:execution";
/// The base AMI an image was built from.
pub const SOURCE_AMI: &str = "golden-ami:source-ami";
/// The recipe an image was baked from: [`crate::recipe::Recipe::content_hash`], `sha256:<hex>`.
pub const RECIPE_HASH: &str = "golden-ami:recipe-hash";
/// `true` keeps an image from ever being pruned.
pub const KEEP: &str = "golden-ami:keep";
/// `true` keeps an instance out of freshness enforcement.
pub const EXEMPT: &str = "golden-ami:exempt";
/// The EC2 console name.
pub const NAME: &str = "Name";

/// Default key of the tag by which fleet instances say their type; configurable with `GOLDEN_TYPE_TAG`
/// because existing fleets already have their own (Mozilla's use `moz-type`).
pub const DEFAULT_TYPE_TAG: &str = "golden-ami:type";

/// Whether a tag key belongs to the pipeline or to AWS, so a recipe may not set it: a recipe tag named
/// `golden-ami:keep` would exempt every image from pruning, and `aws:` keys are refused by EC2 anyway.
pub fn is_reserved(key: &str) -> bool {
    key.starts_with("golden-ami:") || key.starts_with("aws:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_and_aws_keys_are_reserved_others_are_not() {
        for key in [
            ROLE,
            TYPE,
            VERSION,
            EXECUTION,
            SOURCE_AMI,
            RECIPE_HASH,
            KEEP,
            EXEMPT,
            "aws:cloudformation:stack-name",
        ] {
            assert!(is_reserved(key), "{key} should be reserved");
        }
        for key in [
            NAME,
            "team",
            "moz-type",
            "golden-ami",
            "Golden-AMI:x",
            "aws",
        ] {
            assert!(!is_reserved(key), "{key} should not be reserved");
        }
    }

    #[test]
    fn builders_and_testers_are_the_bakes_never_the_fleets() {
        let with_role = |role: Option<&str>| -> std::collections::BTreeMap<String, String> {
            role.map(|r| (ROLE.to_owned(), r.to_owned()))
                .into_iter()
                .collect()
        };
        // A tester runs the new image before it is current: enforcement would see it as stale.
        assert!(is_bake_instance(&with_role(Some(ROLE_BUILDER))));
        assert!(is_bake_instance(&with_role(Some(ROLE_TESTER))));
        assert!(!is_bake_instance(&with_role(Some("web"))));
        assert!(!is_bake_instance(&with_role(None)));
    }

    #[test]
    fn default_type_tag_is_the_pipeline_type_tag() {
        assert_eq!(DEFAULT_TYPE_TAG, TYPE);
    }
}
