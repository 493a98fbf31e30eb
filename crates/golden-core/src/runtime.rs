//! What every Lambda's `main` wires: JSON tracing, the config, the SDK clients and the runtime loop.
//!
//! Each `main` runs it on tokio's current-thread runtime: Lambda hands a process one event at a time, so
//! worker threads would only add memory (the handlers make their AWS calls one after another).

use std::future::Future;
use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::aws::{self, AwsEc2, AwsSfn, AwsSsm, S3Store};
use crate::bake::Services;
use crate::config::Config;
use crate::error::{in_stage, Error, Result};

/// JSON logs for CloudWatch, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false)
        .without_time() // Lambda stamps each line
        .try_init();
}

/// The handlers' services on the real SDK clients, from one `aws-config` load for `stage`.
pub async fn services(stage: &str, config: Config) -> Services {
    services_from(
        aws::load_function_config(stage, config.tls_roots).await,
        config,
    )
}

/// The handlers' services on SDK clients of `sdk`.
pub fn services_from(sdk: aws_config::SdkConfig, config: Config) -> Services {
    let store = S3Store::new(aws_sdk_s3::Client::new(&sdk), &config.bucket);
    Services::new(
        config,
        Arc::new(AwsEc2::new(sdk.clone())),
        Arc::new(AwsSsm::new(sdk.clone())),
        Arc::new(store),
        Arc::new(AwsSfn::new(sdk)),
    )
}

/// Runs a stage handler as a Lambda: errors reach Step Functions as `<Stage>: <message>` with the ASL
/// error name as their type (docs/stages.md).
pub async fn serve<I, O, F, Fut>(
    stage: &'static str,
    handler: F,
) -> std::result::Result<(), lambda_runtime::Error>
where
    I: DeserializeOwned + Send + 'static,
    O: Serialize + 'static,
    F: Fn(Services, I) -> Fut,
    Fut: Future<Output = Result<O>>,
{
    serve_with(
        stage,
        |_| (),
        |services, (), input| handler(services, input),
    )
    .await
}

/// [`serve`] for a function that needs more clients than [`Services`] holds: `extra` makes them from the
/// same SDK configuration, once, at cold start.
pub async fn serve_with<X, I, O, F, Fut>(
    stage: &'static str,
    extra: impl FnOnce(&aws_config::SdkConfig) -> X,
    handler: F,
) -> std::result::Result<(), lambda_runtime::Error>
where
    X: Clone,
    I: DeserializeOwned + Send + 'static,
    O: Serialize + 'static,
    F: Fn(Services, X, I) -> Fut,
    Fut: Future<Output = Result<O>>,
{
    init_tracing();
    let config = Config::from_env()?;
    let sdk = aws::load_function_config(stage, config.tls_roots).await;
    let extra = extra(&sdk);
    let services = services_from(sdk, config);
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        // Parsed here rather than by the runtime, so a payload that breaks the contract is an
        // `InvalidInput` naming the stage and the field, not the runtime's generic deserialize error.
        let result = parse_input::<I>(stage, event.payload)
            .map(|input| handler(services.clone(), extra.clone(), input));
        async move {
            let outcome = match result {
                Ok(future) => future.await,
                Err(e) => Err(e),
            };
            outcome.map_err(|e| {
                let e = in_stage(stage)(e);
                tracing::error!(error_type = e.error.error_type(), error = %e, "stage failed");
                e
            })
        }
    }))
    .await
}

/// A stage's typed input from its JSON payload.
pub fn parse_input<I: DeserializeOwned>(stage: &str, payload: serde_json::Value) -> Result<I> {
    serde_json::from_value(payload).map_err(|e| {
        Error::InvalidInput(format!(
            "the {stage} payload does not match its contract (docs/stages.md): {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bake::launch::LaunchInput;

    #[test]
    fn a_payload_that_breaks_the_contract_is_invalid_input_naming_the_field() {
        let err =
            parse_input::<LaunchInput>("LaunchBuilder", serde_json::json!({"input": {"typo": 1}}))
                .expect_err("malformed");
        assert_eq!(err.error_type(), "InvalidInput");
        let msg = err.to_string();
        assert!(
            msg.contains("LaunchBuilder payload does not match"),
            "{msg}"
        );
        assert!(msg.contains("typo"), "{msg}");
    }
}
