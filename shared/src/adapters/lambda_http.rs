//! lambda_http glue for the ingest and query functions. lambda_http (with its default features)
//! accepts every HTTP payload shape: API Gateway REST (v1) and HTTP (v2) APIs, Function URLs
//! (the v2 shape) and ALB; it also answers in the shape the request came in.

use std::sync::Arc;

use bytes::Bytes;
use lambda_http::request::RequestContext;
use lambda_http::{service_fn, Body, Request, RequestExt, Response};

use crate::api::{content_type, idempotency_key, path_without_stage, Api, ApiRequest, ApiResponse};

/// The request as the API sees it. Routing uses the raw path without the API Gateway stage, so
/// the same function works under any stage name or custom-domain mapping.
pub fn to_api_request(request: Request) -> ApiRequest {
    let raw = match request.raw_http_path() {
        "" => request.uri().path(),
        raw => raw,
    };
    // REST APIs give the path without the stage; HTTP APIs usually keep a named stage in it.
    let stage = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.stage.as_deref(),
        _ => None,
    };
    let path = match stage {
        Some(stage) if stage != "$default" => path_without_stage(raw, stage, request.method()),
        _ => raw,
    }
    .to_owned();
    let content_type = content_type(request.headers());
    let idempotency_key = idempotency_key(request.headers());
    // lambda_http puts each integration's query string (raw or re-encoded) into the URI.
    let query = request.uri().query().map(str::to_owned);
    let method = request.method().clone();
    let body = match request.into_body() {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    ApiRequest {
        method,
        path,
        query,
        content_type,
        idempotency_key,
        body,
    }
}

pub fn to_lambda_response(response: ApiResponse) -> Response<Body> {
    let mut builder = Response::builder().status(response.status);
    for (name, value) in response.headers {
        builder = builder.header(name, value);
    }
    let body = match String::from_utf8(response.body) {
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    };
    // Status and headers come from typed values, so building cannot fail; an empty 500 would
    // be the answer if it ever did.
    builder.body(body).unwrap_or_else(|_| {
        let mut fallback = Response::new(Body::Empty);
        *fallback.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    })
}

/// Serves the API until the Lambda runtime stops.
pub async fn run(api: Api) -> Result<(), lambda_http::Error> {
    let api = Arc::new(api);
    lambda_http::run(service_fn(move |request: Request| {
        let api = api.clone();
        async move {
            let response = api.handle(to_api_request(request)).await;
            Ok::<_, std::convert::Infallible>(to_lambda_response(response))
        }
    }))
    .await
}
