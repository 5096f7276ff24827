//! Which route a request names, and the one entry point that answers it.

#[allow(unused_imports)]
use super::*;

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
    /// `/changes`: STATUS's change feed (`serve` only).
    Changes,
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
            RouteKind::Changes => Some(("get", "/changes")),
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
            "/changes" => Route::Changes,
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
            | Route::Changes
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
            (Route::Changes, _, Some(query)) => query.get_changes(request.query.as_deref()).await,
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
