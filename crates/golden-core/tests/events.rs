//! Every sample payload in events/ (used by `cargo lambda invoke` and the docs) is a valid input of the
//! function it is named after, so the samples cannot drift from the handlers' types.

use golden_core::bake::cleanup::{Outcome, TerminateInput};
use golden_core::bake::command::RunCommandInput;
use golden_core::bake::copy::CopyItem;
use golden_core::bake::launch::{BakeRequest, LaunchInput};
use golden_core::bake::{BakeState, BuilderRef, CommandRef, CommandStage, ImageRef};
use golden_core::recipe::Recipe;
use serde::de::DeserializeOwned;

fn load<T: DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{path} does not match its function's input: {e}"))
}

#[test]
fn execution_inputs_parse_and_the_inline_recipe_is_valid() {
    let plain: BakeRequest = load("bake-input.json");
    assert!(plain.recipe.is_none());
    let inline: BakeRequest = load("bake-input-inline-recipe.json");
    let recipe = Recipe::from_json_value(
        inline.recipe.expect("an inline recipe"),
        "events/bake-input-inline-recipe.json",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(recipe.image_type, inline.image_type);
}

#[test]
fn each_function_sample_is_its_input_type() {
    let launch: LaunchInput = load("launch-builder.json");
    assert!(launch.execution_id.starts_with("arn:aws:states:"));
    let _: BuilderRef = load("builder-ready.json");
    let provision: RunCommandInput = load("run-command-provision.json");
    assert_eq!(provision.stage, CommandStage::Provision);
    let sanitize: RunCommandInput = load("run-command-sanitize.json");
    assert_eq!(sanitize.stage, CommandStage::Sanitize);
    let _: CommandRef = load("command-status.json");
    let create: BakeState = load("create-image.json");
    create.recipe.validate().unwrap_or_else(|e| panic!("{e}"));
    let _: ImageRef = load("image-status.json");
    let copy: CopyItem = load("copy-image.json");
    assert_ne!(copy.region, copy.source.region);
    let publish: BakeState = load("publish.json");
    assert!(publish.image.as_ref().is_some_and(|i| i.available));
    let ok: TerminateInput = load("terminate-builder-succeeded.json");
    assert_eq!(ok.outcome, Outcome::Succeeded);
    let failed: TerminateInput = load("terminate-builder-failed.json");
    assert_eq!(failed.outcome, Outcome::Failed);
    let error = failed
        .state
        .error
        .expect("the failed sample carries the caught error");
    assert!(!error.message().is_empty());
}

#[test]
fn lifecycle_samples_are_the_triggers_their_names_say() {
    use golden_core::lifecycle::Trigger;
    let trigger = |name: &str| {
        Trigger::try_from(load::<serde_json::Value>(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    assert_eq!(trigger("scheduled-event.json"), Trigger::Schedule);
    for (name, state) in [
        ("ec2-running.json", "running"),
        ("ec2-stopped.json", "stopped"),
        ("ec2-terminated.json", "terminated"),
    ] {
        assert!(
            matches!(trigger(name), Trigger::InstanceState { state: s, .. } if s == state),
            "{name}"
        );
    }
    for (name, status) in [
        ("sfn-execution-failed.json", "FAILED"),
        ("sfn-execution-aborted.json", "ABORTED"),
        ("sfn-execution-timed-out.json", "TIMED_OUT"),
    ] {
        assert!(
            matches!(trigger(name), Trigger::ExecutionStatus { status: s, .. } if s == status),
            "{name}"
        );
    }
    assert_eq!(
        trigger("prune-dry-run.json"),
        Trigger::Manual { dry_run: true }
    );
    assert_eq!(
        trigger("enforce-freshness-report.json"),
        Trigger::Manual { dry_run: true }
    );
}

#[test]
fn the_guard_takes_the_samples_of_bakes_that_ended_badly_and_their_inputs_are_the_schedules() {
    use golden_core::lifecycle::guard::{scheduled_type, GuardRequest};
    for (name, status) in [
        ("sfn-execution-failed.json", "FAILED"),
        ("sfn-execution-aborted.json", "ABORTED"),
        ("sfn-execution-timed-out.json", "TIMED_OUT"),
    ] {
        let event = load::<serde_json::Value>(name);
        let input = event["detail"]["input"].as_str().expect("input").to_owned();
        assert_eq!(
            scheduled_type(&input).as_deref(),
            Some("bld-linux64"),
            "{name}"
        );
        let request = GuardRequest::try_from(event).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            matches!(request, GuardRequest::Ended { status: s, .. } if s == status),
            "{name}"
        );
        // The schedule's input is a valid execution input.
        let _: golden_core::bake::launch::BakeRequest =
            serde_json::from_str(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
