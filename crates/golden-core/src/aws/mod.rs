//! Adapters: the [`crate::ports`] traits on the AWS SDK clients.
//!
//! Clients come from one `aws_config` load, so the standard AWS environment (`AWS_REGION`,
//! `AWS_ENDPOINT_URL`, profiles) configures them and the product needs no endpoint flags. Regional clients
//! are made on first use from that config and cached.

mod ec2;
mod s3;
mod sfn;
mod ssm;

use std::collections::HashMap;
use std::sync::Mutex;

use aws_config::{AppName, BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::SharedHttpClient;

pub use ec2::AwsEc2;
pub use s3::S3Store;
pub use sfn::AwsSfn;
pub use ssm::AwsSsm;

/// Loads the shared AWS configuration (credentials, default region, endpoint, retry policy), with the one
/// HTTPS client every SDK client made from it uses.
pub async fn load_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .load()
        .await
}

/// [`load_config`] for one Lambda: every request's user agent carries `app/golden-ami-<stage>`, so CloudTrail
/// tells the functions apart, and so does the emulator's call recorder, which `make test`'s IAM check
/// evaluates against each function's own policy (scripts/iam_check.py).
pub async fn load_function_config(stage: &str) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https_client());
    match AppName::new(format!("{APP_NAME_PREFIX}{stage}")) {
        Ok(name) => loader = loader.app_name(name),
        Err(e) => tracing::warn!(%stage, error = %e, "stage name is not a valid SDK app name"),
    }
    loader.load().await
}

/// What [`load_function_config`] puts before the stage name in the user agent's `app/` field.
pub const APP_NAME_PREFIX: &str = "golden-ami-";

/// Hyper with rustls on the `ring` provider. The SDK's default client (rustls on aws-lc) is switched off in
/// the workspace Cargo.toml: its C build costs a minute of every fresh build and its code a megabyte or
/// two of every function, for nothing these calls need.
fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// One client per region, built lazily from a shared config; or one fixed client for every region (tests).
pub(crate) struct RegionalClients<C> {
    config: Option<SdkConfig>,
    fixed: Option<C>,
    cache: Mutex<HashMap<String, C>>,
    make: fn(&SdkConfig) -> C,
}

impl<C: Clone> RegionalClients<C> {
    pub(crate) fn new(config: SdkConfig, make: fn(&SdkConfig) -> C) -> Self {
        Self {
            config: Some(config),
            fixed: None,
            cache: Mutex::new(HashMap::new()),
            make,
        }
    }

    pub(crate) fn fixed(client: C, make: fn(&SdkConfig) -> C) -> Self {
        Self {
            config: None,
            fixed: Some(client),
            cache: Mutex::new(HashMap::new()),
            make,
        }
    }

    pub(crate) fn get(&self, region: &str) -> C {
        if let Some(client) = &self.fixed {
            return client.clone();
        }
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = cache.get(region) {
            return client.clone();
        }
        let base = self.config.as_ref().map(|c| {
            c.to_builder()
                .region(Region::new(region.to_owned()))
                .build()
        });
        let client = (self.make)(&base.unwrap_or_else(|| SdkConfig::builder().build()));
        cache.insert(region.to_owned(), client.clone());
        client
    }
}

/// Converts an SDK timestamp to chrono.
pub(crate) fn to_chrono(t: &aws_smithy_types::DateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}
