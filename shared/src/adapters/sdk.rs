//! AWS SDK set-up shared by the Kinesis and DynamoDB adapters: configuration loaded once at
//! start-up, and the broad classification of SDK errors that the adapters map onto their ports'
//! errors. It knows no adapter (they import it, never the other way round).

use std::error::Error as StdError;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_kinesis::config::{Credentials, Region};
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Error codes AWS uses when a caller is over its throughput; the caller should back off.
const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "KMSThrottlingException",
    "TooManyRequestsException",
];

/// The broad kind of an SDK failure, for the adapters to map onto their port's error type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    Throttled(String),
    /// The service answered with this error code (not a throttle).
    Service {
        code: String,
        message: String,
    },
    /// No answer: connection refused, timeout, DNS, a 5xx without a code.
    Unreachable(String),
}

pub fn classify<E, R>(error: &SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: std::fmt::Debug,
{
    let message = DisplayErrorContext(error).to_string();
    match error.code() {
        Some(code) if THROTTLING_CODES.contains(&code) => Failure::Throttled(message),
        Some(code) => Failure::Service {
            code: code.to_owned(),
            message,
        },
        None => Failure::Unreachable(message),
    }
}

/// Loads the SDK configuration once: region, credentials and endpoint from the standard
/// environment (`AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_KINESIS`, …).
///
/// With an explicit `endpoint_url` (LocalStack, emulators) two local conveniences apply: with
/// no region variable the region is `us-east-1`, and when the environment names no credentials at all,
/// the static pair `test`/`test` is used, which LocalStack and DynamoDB Local accept.
pub async fn load_sdk_config(endpoint_url: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
        // Without a region variable, go straight to us-east-1: the default chain would probe
        // the EC2 metadata service first, which a laptop or CI machine does not have.
        let region_set = ["AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"]
            .iter()
            .any(|var| std::env::var_os(var).is_some());
        if !region_set {
            loader = loader.region(Region::new("us-east-1"));
        }
        let has_credentials = [
            "AWS_ACCESS_KEY_ID",
            "AWS_PROFILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
        ]
        .iter()
        .any(|var| std::env::var_os(var).is_some());
        if !has_credentials {
            loader = loader.credentials_provider(Credentials::new(
                "test",
                "test",
                None,
                None,
                "tidemark-local",
            ));
        }
    }
    loader.load().await
}

/// The endpoint named by the standard environment, if any (`AWS_ENDPOINT_URL`).
pub fn endpoint_from_env() -> Option<String> {
    std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
}
