//! What requests and answers are, and the error codes a client can see.

#[allow(unused_imports)]
use super::*;

/// A request as the API sees it. `path` has no API Gateway stage prefix and is still
/// percent-encoded.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    /// The raw query string (without `?`), still percent-encoded.
    pub query: Option<String>,
    pub content_type: Option<String>,
    /// The `Idempotency-Key` header ([`idempotency_key`]).
    pub idempotency_key: Option<String>,
    pub body: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    pub body: Vec<u8>,
}

impl ApiResponse {
    pub fn json(status: StatusCode, body: &serde_json::Value) -> Self {
        // A `Value` always serialises (its map keys are strings): no fallible path here.
        Self::json_bytes(status, body.to_string().into_bytes())
    }

    /// `304 Not Modified`: what the client holds is still current. The one answer without a body
    /// (HTTP forbids one).
    pub fn not_modified() -> Self {
        Self {
            status: StatusCode::NOT_MODIFIED,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A body that is already JSON text (a STATUS row with its `data` spliced in verbatim).
    pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        }
    }

    pub(crate) fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn header(&self, name: &header::HeaderName) -> Option<&HeaderValue> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// Seconds a client should wait before retrying when a downstream service throttles or fails.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// The error codes the API answers besides the field rules ([`crate::domain::Rule`]): the two
/// lists together are every `error.code` a client can see, and the OpenAPI document's
/// `ErrorCode` enum (checked by a test).
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::VariantArray)]
pub enum ErrorCode {
    NotFound,
    MethodNotAllowed,
    UnsupportedMediaType,
    BodyTooLarge,
    /// The body could not be read as HTTP (`serve`: a malformed chunk).
    MalformedBody,
    /// The body did not arrive in time (`serve`).
    RequestTimeout,
    InvalidEncoding,
    Throttled,
    Unavailable,
    Internal,
    /// A read with `after` whose write STATUS does not reflect yet.
    NotYetVisible,
    /// An idempotency key sent again with a different request (422).
    IdempotencyKeyReused,
    /// An idempotency key whose first request is still being put (409; retry).
    IdempotencyInProgress,
    /// `GET /messages/{id}/history` on a stack that keeps no history (501).
    HistoryDisabled,
    /// `GET /changes` with a cursor older than any change the feed still keeps (410).
    CursorExpired,
}

impl ErrorCode {
    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::MalformedBody => "malformed_body",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::InvalidEncoding => "invalid_encoding",
            ErrorCode::Throttled => "throttled",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::NotYetVisible => "not_yet_visible",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::IdempotencyInProgress => "idempotency_in_progress",
            ErrorCode::HistoryDisabled => "history_disabled",
            ErrorCode::CursorExpired => "cursor_expired",
        }
    }
}

/// An error response: `{"error":{"code","message","field"?}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// An [`ErrorCode`] or a [`crate::domain::Rule`] code.
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.code(),
            message: message.into(),
            field: None,
        }
    }

    /// The JSON of the error object (without the `{"error": …}` wrapper).
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(field) = &self.field {
            error["field"] = json!(field);
        }
        error
    }

    pub fn into_response(self) -> ApiResponse {
        let retry_after = self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.code == ErrorCode::IdempotencyInProgress.code();
        let response = ApiResponse::json(self.status, &json!({"error": self.body()}));
        if retry_after {
            response.with_header(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS))
        } else {
            response
        }
    }

    pub fn unavailable(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: e.rule.code(),
            message: e.message,
            field: e.field,
        }
    }
}
