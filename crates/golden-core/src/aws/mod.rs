//! Adapters: the [`crate::ports`] traits on the AWS SDK clients.
//!
//! Clients come from one `aws_config` load, so the standard AWS environment (`AWS_REGION`,
//! `AWS_ENDPOINT_URL`, profiles) configures them and the product needs no endpoint flags. Regional clients
//! are made on first use from that config and cached.

mod ec2;
mod s3;
mod scheduler;
mod sfn;
mod sns;
mod ssm;

use std::collections::HashMap;
use std::sync::Mutex;

use aws_config::{AppName, BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::SharedHttpClient;

pub use ec2::AwsEc2;
pub use s3::S3Store;
pub use scheduler::AwsScheduler;
pub use sfn::AwsSfn;
pub use sns::AwsSns;
pub use ssm::AwsSsm;

/// Loads the shared AWS configuration (credentials, default region, endpoint, retry policy), with the one
/// HTTPS client every SDK client made from it uses.
pub async fn load_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client(TrustRoots::Native))
        .load()
        .await
}

/// [`load_config`] for one Lambda: every request's user agent carries `app/golden-ami-<stage>`, so CloudTrail
/// tells the functions apart, and so does the emulator's call recorder, which `make test`'s IAM check
/// evaluates against each function's own policy (scripts/iam_check.py). Its HTTPS client trusts `roots`.
pub async fn load_function_config(stage: &str, roots: TrustRoots) -> SdkConfig {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).http_client(https_client(roots));
    match AppName::new(format!("{APP_NAME_PREFIX}{stage}")) {
        Ok(name) => loader = loader.app_name(name),
        Err(e) => tracing::warn!(%stage, error = %e, "stage name is not a valid SDK app name"),
    }
    loader.load().await
}

/// What [`load_function_config`] puts before the stage name in the user agent's `app/` field.
pub const APP_NAME_PREFIX: &str = "golden-ami-";

/// The certificate authorities a client trusts for AWS's endpoints (`GOLDEN_TLS_ROOTS`, resolved by
/// [`crate::Config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrustRoots {
    /// The five roots of Amazon Trust Services, compiled in ([`AMAZON_TRUST_ROOTS`]): they issue the
    /// certificates of AWS's endpoints. The functions' default: reading the system's store at every cold
    /// start costs time and memory (BENCHMARKS.md, section 1).
    #[default]
    Amazon,
    /// The system's store (`SSL_CERT_FILE`, `SSL_CERT_DIR`, else the platform's bundle), for a network
    /// whose proxy re-signs TLS with its own CA, or an endpoint not issued under Amazon's roots. The CLI
    /// always uses it.
    Native,
}

/// PEM of Amazon Root CA 1-4 and Starfield Services Root CA G2, with their fingerprints.
pub const AMAZON_TRUST_ROOTS: &str = include_str!("amazon-trust-roots.pem");

/// Hyper with rustls on the `ring` provider. The SDK's default client (rustls on aws-lc) is switched off in
/// the workspace Cargo.toml: its C build costs a minute of every fresh build and its code a megabyte or
/// two of every function, for nothing these calls need.
fn https_client(roots: TrustRoots) -> SharedHttpClient {
    let builder = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(
        tls::rustls_provider::CryptoMode::Ring,
    ));
    match roots {
        TrustRoots::Native => builder.build_https(),
        TrustRoots::Amazon => builder
            .tls_context(
                tls::TlsContext::builder()
                    .with_trust_store(
                        tls::TrustStore::empty()
                            .with_pem_certificate(AMAZON_TRUST_ROOTS.as_bytes()),
                    )
                    .build()
                    .expect("a TLS context of a trust store is always valid"),
            )
            .build_https(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_compiled_in_roots_are_amazon_trust_services_five_and_rustls_takes_them() {
        let certs: Vec<CertificateDer> =
            CertificateDer::pem_slice_iter(AMAZON_TRUST_ROOTS.as_bytes())
                .collect::<Result<_, _>>()
                .expect("the bundled PEM parses");
        // SHA-256 of each root as amazontrust.com/repository publishes it: an edit of the file fails here.
        let published = [
            "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e", // Amazon Root CA 1
            "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4", // Amazon Root CA 2
            "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4", // Amazon Root CA 3
            "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092", // Amazon Root CA 4
            "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5", // Starfield Services Root G2
        ];
        let fingerprints: Vec<String> = certs
            .iter()
            .map(|c| {
                Sha256::digest(c.as_ref())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .collect();
        assert_eq!(fingerprints, published);
        let mut store = rustls::RootCertStore::empty();
        assert_eq!(store.add_parsable_certificates(certs), (5, 0));
    }
}
