//! The errors of the bake and lifecycle functions, and their Step Functions names.
//!
//! Every variant names the resource and region it concerns and, where there is one, the fix. The ASL's
//! Retry/Catch match [`Error::error_type`], so those names are a contract (docs/stages.md).

use std::fmt;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use lambda_runtime::Diagnostic;

use crate::manifest::ManifestError;
use crate::recipe::RecipeError;

/// How an AWS call failed, which decides whether Step Functions retries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsErrorKind {
    /// Throttling: retried with backoff.
    Throttled,
    /// 5xx, timeouts, connection errors: retried with backoff.
    Transient,
    /// Anything else (access denied, not found, validation): not retried.
    Other,
}

/// A failed AWS call with what it was doing, on what, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub operation: &'static str,
    pub resource: String,
    pub region: String,
    pub kind: AwsErrorKind,
    /// The service's error code, e.g. `InvalidAMIName.Duplicate` or `PreconditionFailed`.
    pub code: Option<String>,
    pub status: Option<u16>,
    pub message: String,
}

impl AwsError {
    /// Classifies an SDK error. Throttling codes and 5xx/transport failures are retryable; the rest is not.
    pub fn from_sdk<E, R>(
        operation: &'static str,
        resource: impl Into<String>,
        region: impl Into<String>,
        err: SdkError<E, R>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: HttpStatus + fmt::Debug,
    {
        let (kind, code, status, message) = match &err {
            SdkError::ServiceError(service) => {
                let code = service.err().code().map(str::to_owned);
                let status = service.raw().http_status();
                let message = service
                    .err()
                    .message()
                    .map(str::to_owned)
                    .unwrap_or_else(|| service.err().to_string());
                (
                    classify(code.as_deref(), status),
                    code,
                    Some(status),
                    message,
                )
            }
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => {
                let chain = error_chain(&err);
                if matches!(err, SdkError::DispatchFailure(_)) && is_certificate_failure(&chain) {
                    let message = format!("{chain}; {CERTIFICATE_HINT}");
                    (AwsErrorKind::Other, None, None, message)
                } else {
                    (AwsErrorKind::Transient, None, None, chain)
                }
            }
            _ => (AwsErrorKind::Other, None, None, error_chain(&err)),
        };
        Self {
            operation,
            resource: resource.into(),
            region: region.into(),
            kind,
            code,
            status,
            message,
        }
    }

    pub fn code_is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// True for "does not exist" answers, whatever the service calls them.
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
            || self.code.as_deref().is_some_and(|c| {
                c.ends_with("NotFound") || c.ends_with("DoesNotExist") || c == "NoSuchKey"
            })
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} on {} in {} failed",
            self.operation, self.resource, self.region
        )?;
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// `Ok(None)` for a "does not exist" answer: for reads that ask whether something exists, and for deletes
/// that are done once the thing is gone (which makes them idempotent).
pub fn unless_not_found<T>(result: std::result::Result<T, AwsError>) -> Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The HTTP status of a raw response; implemented for the SDK's response type so tests can use others.
pub trait HttpStatus {
    fn http_status(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn http_status(&self) -> u16 {
        self.status().as_u16()
    }
}

fn classify(code: Option<&str>, status: u16) -> AwsErrorKind {
    const THROTTLING: &[&str] = &[
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "ProvisionedThroughputExceededException",
    ];
    match code {
        Some(c) if THROTTLING.contains(&c) => AwsErrorKind::Throttled,
        _ if status == 429 => AwsErrorKind::Throttled,
        _ if status >= 500 => AwsErrorKind::Transient,
        Some("InternalError" | "InternalFailure" | "ServiceUnavailable" | "Unavailable") => {
            AwsErrorKind::Transient
        }
        _ => AwsErrorKind::Other,
    }
}

/// What a failed TLS handshake with AWS tells the operator: it is not transient (a retry meets the same
/// certificate), and the usual cause is a proxy re-signing TLS with a CA the functions do not trust.
const CERTIFICATE_HINT: &str = "the endpoint's certificate is not trusted: the functions trust the roots of \
    Amazon Trust Services only (GOLDEN_TLS_ROOTS); if a proxy re-signs TLS on the way to AWS, or the endpoint \
    is not AWS's own, deploy with TlsRoots=native (GOLDEN_TLS_ROOTS=native) to trust the system's store";

/// rustls's words for a certificate it refuses ("invalid peer certificate: UnknownIssuer", ...).
fn is_certificate_failure(chain: &str) -> bool {
    chain.contains("invalid peer certificate")
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Everything a bake or lifecycle stage can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error(transparent)]
    RecipeInvalid(#[from] RecipeError),
    #[error("no recipe for type {image_type}: s3://{bucket}/{key} does not exist; push it with `goldenctl recipes push` or pass an inline \"recipe\" in the execution input")]
    RecipeNotFound {
        image_type: String,
        bucket: String,
        key: String,
    },
    #[error("{0}")]
    BaseImageNotFound(String),
    #[error("a bake of {image_type} is already running ({holder}, started {since}); wait for it to finish, or stop it with `aws stepfunctions stop-execution --execution-arn {holder}`")]
    BakeAlreadyRunning {
        image_type: String,
        holder: String,
        since: String,
    },
    #[error("builder {instance_id} in {region} {reason}")]
    BuilderFailed {
        instance_id: String,
        region: String,
        reason: String,
    },
    #[error("{0}")]
    CommandFailed(Box<CommandFailure>),
    #[error("image {image_id} in {region} went {state}: {reason}")]
    ImageFailed {
        image_id: String,
        region: String,
        state: String,
        reason: String,
    },
    #[error("gave up waiting for {what} after {attempts} checks{deadline_note}; raise the recipe's max_build_minutes if the build is just slow")]
    WaitTimedOut {
        what: String,
        attempts: u32,
        deadline_note: String,
    },
    #[error("the manifest s3://{bucket}/{key} is unusable: {source}; restore a good version from the bucket's version history")]
    ManifestCorrupt {
        bucket: String,
        key: String,
        source: ManifestError,
    },
    #[error("could not update the manifest: {0}")]
    Manifest(ManifestError),
    #[error("the manifest s3://{bucket}/{key} kept changing under us ({attempts} conditional writes lost); try again")]
    ManifestConflict {
        bucket: String,
        key: String,
        attempts: u32,
    },
    #[error("{0}")]
    Aws(Box<AwsError>),
    #[error("configuration: {0}")]
    Config(String),
    /// A lifecycle run that carried on past items it could not act on; everything else was done.
    #[error("{what}: {} of the run's items failed, the rest were done: {}", failed.len(), failed.join("; "))]
    ItemsFailed { what: String, failed: Vec<String> },
}

impl Error {
    /// The name Step Functions sees as the error, matched by the ASL's Retry and Catch (docs/stages.md).
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) | Error::Config(_) => "InvalidInput",
            Error::RecipeInvalid(_) => "RecipeInvalid",
            Error::RecipeNotFound { .. } => "RecipeNotFound",
            Error::BaseImageNotFound(_) => "BaseImageNotFound",
            Error::BakeAlreadyRunning { .. } => "BakeAlreadyRunning",
            Error::BuilderFailed { .. } => "BuilderFailed",
            Error::CommandFailed(_) => "CommandFailed",
            Error::ImageFailed { .. } => "ImageFailed",
            Error::WaitTimedOut { .. } => "WaitTimedOut",
            Error::ManifestCorrupt { .. } => "ManifestCorrupt",
            Error::Manifest(_) => "ManifestRejected",
            Error::ManifestConflict { .. } => "ManifestConflict",
            Error::ItemsFailed { .. } => "ItemsFailed",
            Error::Aws(e) => match e.kind {
                AwsErrorKind::Throttled => "Throttled",
                AwsErrorKind::Transient => "Transient",
                AwsErrorKind::Other => "AwsError",
            },
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self.error_type(), "Throttled" | "Transient")
    }
}

impl From<AwsError> for Error {
    fn from(e: AwsError) -> Self {
        Error::Aws(Box::new(e))
    }
}

/// An SSM command that ended without success, with the end of what it printed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{stage} command {command_id} on {instance_id} in {region} ended {status} (exit code {exit_code}): {stderr_tail}{logs_note}")]
pub struct CommandFailure {
    pub stage: String,
    pub command_id: String,
    pub instance_id: String,
    pub region: String,
    pub status: String,
    pub exit_code: i32,
    pub stderr_tail: String,
    /// Where the whole output is, as "\nwhole output: s3://..."; empty when it was not written to S3.
    pub logs_note: String,
}

/// An error from a named stage: what Step Functions and the logs show.
#[derive(Debug)]
pub struct StageError {
    pub stage: &'static str,
    pub error: Error,
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stage, self.error)
    }
}

impl std::error::Error for StageError {}

impl From<StageError> for Diagnostic {
    fn from(e: StageError) -> Self {
        Diagnostic {
            error_type: e.error.error_type().to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// Attaches the stage name to an error, for `map_err`.
pub fn in_stage(stage: &'static str) -> impl Fn(Error) -> StageError {
    move |error| StageError { stage, error }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_and_429_are_throttled() {
        for code in ["Throttling", "RequestLimitExceeded", "SlowDown"] {
            assert_eq!(classify(Some(code), 400), AwsErrorKind::Throttled, "{code}");
        }
        assert_eq!(classify(None, 429), AwsErrorKind::Throttled);
    }

    #[test]
    fn server_errors_are_transient_and_client_errors_are_not_retried() {
        assert_eq!(
            classify(Some("InternalError"), 500),
            AwsErrorKind::Transient
        );
        assert_eq!(classify(None, 503), AwsErrorKind::Transient);
        assert_eq!(
            classify(Some("UnauthorizedOperation"), 403),
            AwsErrorKind::Other
        );
        assert_eq!(
            classify(Some("InvalidAMIID.NotFound"), 400),
            AwsErrorKind::Other
        );
    }

    #[test]
    fn stage_error_becomes_a_diagnostic_named_for_the_asl() {
        let err = StageError {
            stage: "Provision",
            error: Error::CommandFailed(Box::new(CommandFailure {
                stage: "provision".into(),
                command_id: "c-1".into(),
                instance_id: "i-1".into(),
                region: "us-east-1".into(),
                status: "Failed".into(),
                exit_code: 2,
                stderr_tail: "puppet: could not reach server".into(),
                logs_note: String::new(),
            })),
        };
        let d = Diagnostic::from(err);
        assert_eq!(d.error_type, "CommandFailed");
        assert!(d.error_message.starts_with(
            "Provision: provision command c-1 on i-1 in us-east-1 ended Failed (exit code 2)"
        ));
        assert!(d.error_message.ends_with("puppet: could not reach server"));
    }

    #[test]
    fn an_untrusted_certificate_fails_at_once_naming_the_trust_setting() {
        use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
        use aws_smithy_runtime_api::client::result::ConnectorError;

        type Sdk = SdkError<aws_sdk_s3::operation::get_object::GetObjectError, HttpResponse>;
        let failure = |text: &str| -> Sdk {
            SdkError::dispatch_failure(ConnectorError::other(
                std::io::Error::other(text.to_owned()).into(),
                None,
            ))
        };
        let classify = |text: &str| {
            AwsError::from_sdk(
                "GetObject",
                "s3://b/manifest.json",
                "us-east-1",
                failure(text),
            )
        };
        let untrusted = classify("invalid peer certificate: UnknownIssuer");
        assert_eq!(untrusted.kind, AwsErrorKind::Other);
        assert!(
            untrusted
                .to_string()
                .contains("deploy with TlsRoots=native"),
            "{untrusted}"
        );
        let refused = classify("connection refused");
        assert_eq!(refused.kind, AwsErrorKind::Transient);
        assert!(!refused.to_string().contains("TlsRoots"), "{refused}");
    }

    #[test]
    fn aws_errors_map_to_retry_names() {
        let mk = |kind| {
            Error::from(AwsError {
                operation: "DescribeImages",
                resource: "ami-1".into(),
                region: "us-east-1".into(),
                kind,
                code: None,
                status: None,
                message: "x".into(),
            })
        };
        assert_eq!(mk(AwsErrorKind::Throttled).error_type(), "Throttled");
        assert_eq!(mk(AwsErrorKind::Transient).error_type(), "Transient");
        assert_eq!(mk(AwsErrorKind::Other).error_type(), "AwsError");
        assert!(mk(AwsErrorKind::Throttled).is_retryable());
        assert!(!mk(AwsErrorKind::Other).is_retryable());
    }
}
