//! The HTTP contract, independent of how requests arrive: the ingest and query Lambdas (through
//! lambda_http, behind API Gateway v1/v2, Function URLs or ALB) and `tidemark serve` (through a
//! local HTTP server) turn their requests into an [`ApiRequest`] and send back the [`ApiResponse`].

mod idempotent;
pub mod ingest;
pub mod query;
pub mod statuses;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::json;

use crate::domain::limits::MAX_BODY_BYTES;
use crate::domain::{FieldError, Rule};
pub use ingest::IngestApi;
pub use query::QueryApi;

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

/// The OpenAPI 3.1 document of this contract, served at `GET /openapi.json`.
pub const OPENAPI_DOCUMENT: &str = include_str!("../../openapi.json");

/// The routes of the contract.
#[derive(Clone, Debug, PartialEq, Eq, strum::EnumDiscriminants)]
#[strum_discriminants(name(RouteKind), derive(strum::VariantArray))]
pub enum Route {
    Events,
    EventsBatch,
    /// `/messages/{id}` with the id percent-decoded.
    Message(Result<String, ApiError>),
    /// `/messages/{id}/history`: a path ending in `/history` names this route, so an id that
    /// itself ends in `/history` must encode its slash (`%2F`).
    History(Result<String, ApiError>),
    /// `/statuses`: the status view's counts.
    Statuses,
    /// `/statuses/{status}/messages` with the status percent-decoded (a `/` in it is `%2F`).
    StatusMessages(Result<String, ApiError>),
    Shards,
    OpenApi,
    Unknown,
}

impl RouteKind {
    /// The method and the path template of the route, as the OpenAPI document names them.
    pub fn operation(self) -> Option<(&'static str, &'static str)> {
        match self {
            RouteKind::Events => Some(("post", "/events")),
            RouteKind::EventsBatch => Some(("post", "/events/batch")),
            RouteKind::Message => Some(("get", "/messages/{id}")),
            RouteKind::History => Some(("get", "/messages/{id}/history")),
            RouteKind::Statuses => Some(("get", "/statuses")),
            RouteKind::StatusMessages => Some(("get", "/statuses/{status}/messages")),
            RouteKind::Shards => Some(("get", "/shards")),
            RouteKind::OpenApi => Some(("get", "/openapi.json")),
            RouteKind::Unknown => None,
        }
    }
}

impl Route {
    pub fn parse(path: &str) -> Self {
        let path = match path.strip_suffix('/') {
            Some(trimmed) if !trimmed.is_empty() => trimmed,
            _ => path,
        };
        match path {
            "/events" => Route::Events,
            "/events/batch" => Route::EventsBatch,
            "/shards" => Route::Shards,
            "/statuses" => Route::Statuses,
            "/openapi.json" => Route::OpenApi,
            _ if path.starts_with("/statuses/") => match path
                .strip_prefix("/statuses/")
                .and_then(|rest| rest.strip_suffix("/messages"))
            {
                Some(status) if !status.is_empty() => {
                    Route::StatusMessages(decode_path_part(status, "status"))
                }
                _ => Route::Unknown,
            },
            _ => match path.strip_prefix("/messages/") {
                Some(encoded) if !encoded.is_empty() => match encoded.strip_suffix("/history") {
                    Some(id) if !id.is_empty() => Route::History(decode_id(id)),
                    _ => Route::Message(decode_id(encoded)),
                },
                _ => Route::Unknown,
            },
        }
    }

    fn allowed_method(&self) -> Option<&'static str> {
        match self {
            Route::Events | Route::EventsBatch => Some("POST"),
            Route::Message(_)
            | Route::History(_)
            | Route::Statuses
            | Route::StatusMessages(_)
            | Route::Shards
            | Route::OpenApi => Some("GET"),
            Route::Unknown => None,
        }
    }
}

fn decode_id(encoded: &str) -> Result<String, ApiError> {
    decode_path_part(encoded, "id")
}

fn decode_path_part(encoded: &str, field: &'static str) -> Result<String, ApiError> {
    percent_decode_str(encoded)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| ApiError {
            field: Some(field.into()),
            ..ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidEncoding,
                format!("the {field} in the path must be percent-encoded UTF-8"),
            )
        })
}

/// The path to route for an HTTP API (v2) request under a named stage. API Gateway keeps the
/// stage in `rawPath` (`/live/events` under stage `live`); SAM CLI's local events do not
/// (`/events/batch` under stage `events`). So the stage is stripped only when `raw` starts with
/// it and the path without it is the one that routes this method: `raw` is kept whenever it
/// already routes. What stays ambiguous: under a stage named `messages`, `GET
/// /messages/messages/x` reads the id `messages/x`; a stage named after a route is best avoided.
pub fn path_without_stage<'p>(raw: &'p str, stage: &str, method: &Method) -> &'p str {
    let Some(stripped) = raw
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(stage))
        .filter(|rest| rest.starts_with('/'))
    else {
        return raw;
    };
    let routes = |path: &str| Route::parse(path).allowed_method() == Some(method.as_str());
    if routes(raw) {
        raw
    } else if routes(stripped) || Route::parse(raw) == Route::Unknown {
        stripped
    } else {
        // Neither routes this method: answer for the path as sent (405 names its method).
        raw
    }
}

/// The Content-Type header as text. A value that is not visible ASCII is kept (lossily) so it is
/// refused as an unsupported media type instead of being taken for an absent header.
pub fn content_type(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// The header that makes `POST /events` idempotent.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// `Idempotent-Replayed: true` marks an answer replayed for an idempotency key (the body is
/// the first answer's).
pub const IDEMPOTENT_REPLAYED: header::HeaderName =
    header::HeaderName::from_static("idempotent-replayed");

/// The `Idempotency-Key` header as text. Repeated headers are joined with ", " (HTTP's rule for
/// combining them), which the key's rule then refuses, and bytes that are not UTF-8 are kept
/// lossily so they are refused too, never taken for an absent key.
pub fn idempotency_key(headers: &http::HeaderMap) -> Option<String> {
    let mut values = headers
        .get_all(IDEMPOTENCY_KEY_HEADER)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let first = values.next()?;
    Some(values.fold(first, |joined, next| format!("{joined}, {next}")))
}

/// Which parts of the API a deployment serves: the ingest Lambda, the query Lambda, or both
/// (`tidemark serve`).
pub struct Api {
    pub ingest: Option<IngestApi>,
    pub query: Option<QueryApi>,
}

impl Api {
    pub async fn handle(&self, request: ApiRequest) -> ApiResponse {
        match self.route(request).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    }

    async fn route(&self, request: ApiRequest) -> Result<ApiResponse, ApiError> {
        let route = Route::parse(&request.path);
        let not_found = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                format!("no route {} {}", request.method, request.path),
            )
        };
        let allowed = route.allowed_method().ok_or_else(not_found)?;
        let served = match route {
            Route::Events | Route::EventsBatch => self.ingest.is_some(),
            _ => self.query.is_some(),
        };
        if !served {
            return Err(not_found());
        }
        if request.method.as_str() != allowed {
            return Ok(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                format!("{} accepts only {allowed}", request.path),
            )
            .into_response()
            .with_header(header::ALLOW, HeaderValue::from_static(allowed)));
        }
        match (route, &self.ingest, &self.query) {
            (Route::Events, Some(ingest), _) => ingest.post_event(&request).await,
            (Route::EventsBatch, Some(ingest), _) => ingest.post_batch(&request).await,
            (Route::Message(id), _, Some(query)) => {
                query.get_message(&id?, request.query.as_deref()).await
            }
            (Route::History(id), _, Some(query)) => {
                query.get_history(&id?, request.query.as_deref()).await
            }
            (Route::Shards, _, Some(query)) => query.get_shards().await,
            (Route::Statuses, _, Some(query)) => query.get_statuses(request.query.as_deref()).await,
            (Route::StatusMessages(status), _, Some(query)) => {
                query
                    .get_status_messages(&status?, request.query.as_deref())
                    .await
            }
            (Route::OpenApi, _, Some(_)) => Ok(ApiResponse::json_bytes(
                StatusCode::OK,
                OPENAPI_DOCUMENT.as_bytes().to_vec(),
            )),
            _ => Err(not_found()),
        }
    }
}

/// Checks a POST body is JSON text of an acceptable size and returns it.
pub(crate) fn json_body(request: &ApiRequest) -> Result<&str, ApiError> {
    if let Some(content_type) = &request.content_type {
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if media_type != "application/json" && !media_type.ends_with("+json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                format!("Content-Type must be application/json, got {content_type}"),
            ));
        }
    }
    if request.body.len() > MAX_BODY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            format!(
                "the request body is {} bytes, more than the {MAX_BODY_BYTES} allowed",
                request.body.len()
            ),
        ));
    }
    std::str::from_utf8(&request.body).map_err(|_| {
        FieldError::whole_body(Rule::MalformedJson, "the request body is not UTF-8 text").into()
    })
}
