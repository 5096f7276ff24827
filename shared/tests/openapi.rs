//! The OpenAPI document (`shared/openapi.json`, served at `GET /openapi.json`) and the code agree:
//! the same operations, the same error codes, and every reference resolves. Schemathesis then
//! checks real answers against it (scripts/contract-fuzz, part of the test command).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;
use strum::VariantArray;
use tidemark::adapters::memory::MemoryBackend;
use tidemark::adapters::Adapters;
use tidemark::api::{
    Api, ApiRequest, ErrorCode, IngestApi, QueryApi, Route, RouteKind, OPENAPI_DOCUMENT,
};
use tidemark::domain::{Limits, Rule, SystemClock};
use tidemark::publish::{Publisher, RetryPolicy};

fn document() -> Value {
    serde_json::from_str(OPENAPI_DOCUMENT).expect("openapi.json is JSON")
}

/// Every (method, path template) the document lists.
fn documented_operations() -> BTreeSet<(String, String)> {
    document()["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|key| !matches!(key.as_str(), "parameters" | "summary" | "description"))
                .map(move |method| (method.clone(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn full_api() -> Api {
    let adapters = Adapters::in_memory(MemoryBackend::new(1).with_change_feed(10));
    Api {
        ingest: Some(IngestApi::new(
            Publisher::new(adapters.stream_writer(), RetryPolicy::default()),
            adapters.idempotency_store(),
            Limits::default(),
            Arc::new(SystemClock),
        )),
        query: Some(adapters.query_api()),
    }
}

fn request(method: &str, path: &str) -> ApiRequest {
    ApiRequest {
        method: Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
        path: path.into(),
        query: None,
        content_type: None,
        idempotency_key: None,
        body: Bytes::from_static(b"{}"),
    }
}

/// The router itself, not a second table, is held against the document: each documented path,
/// filled in, is answered by the router under its documented method (anything but "no route"
/// or 405) and refused with a 405 naming that method under the other; every route the router
/// has is reached by some documented path; and a path the document lacks is a 404.
#[tokio::test]
async fn the_router_serves_exactly_the_documented_operations() {
    let api = full_api();
    let mut reached = BTreeSet::new();
    for (method, template) in documented_operations() {
        let path = template
            .replace("{id}", "an%2Fid")
            .replace("{status}", "in%20transit");
        let kind = RouteKind::from(&Route::parse(&path));
        assert_eq!(
            kind.operation(),
            Some((method.as_str(), template.as_str())),
            "{path} routes to {kind:?}"
        );
        reached.insert(format!("{kind:?}"));

        let answered = api.handle(request(&method, &path)).await;
        let body: Value = serde_json::from_slice(&answered.body).unwrap();
        assert_ne!(
            answered.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert!(
            !body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no route")),
            "{method} {path}: {body}"
        );

        let other = if method == "get" { "post" } else { "get" };
        let refused = api.handle(request(other, &path)).await;
        assert_eq!(
            refused.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{other} {path}"
        );
        assert_eq!(
            refused
                .header(&http::header::ALLOW)
                .and_then(|allow| allow.to_str().ok()),
            Some(method.to_uppercase().as_str()),
            "{other} {path}"
        );
    }
    let routed: BTreeSet<String> = RouteKind::VARIANTS
        .iter()
        .filter(|kind| **kind != RouteKind::Unknown)
        .map(|kind| format!("{kind:?}"))
        .collect();
    assert_eq!(reached, routed, "every route is documented");

    for path in ["/", "/event", "/messages", "/statuses/x", "/shards/x"] {
        let response = api.handle(request("get", path)).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[test]
fn every_error_code_is_documented_and_every_documented_code_exists() {
    let doc = document();
    let documented: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap())
        .collect();
    let in_code: BTreeSet<&str> = Rule::VARIANTS
        .iter()
        .map(|rule| rule.code())
        .chain(ErrorCode::VARIANTS.iter().map(|code| code.code()))
        .collect();
    assert_eq!(documented, in_code);
}

/// Every `$ref` in the document points at something that exists.
#[test]
fn every_reference_resolves() {
    fn walk(doc: &Value, node: &Value, refs: &mut usize) {
        match node {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    let pointer = target.strip_prefix('#').expect("a local reference");
                    assert!(doc.pointer(pointer).is_some(), "{target} does not resolve");
                    *refs += 1;
                }
                map.values().for_each(|v| walk(doc, v, refs));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(doc, v, refs)),
            _ => {}
        }
    }
    let doc = document();
    let mut refs = 0;
    walk(&doc, &doc, &mut refs);
    assert!(
        refs > 20,
        "the document uses its components ({refs} references)"
    );
}

#[tokio::test]
async fn the_query_side_serves_the_document() {
    let adapters = Adapters::memory(1);
    let api = Api {
        ingest: None,
        query: Some(QueryApi::new(
            adapters.status_reader(),
            adapters.checkpoint_reader(),
            adapters.shard_reader(),
        )),
    };
    let response = api
        .handle(ApiRequest {
            method: Method::GET,
            path: "/openapi.json".into(),
            query: None,
            content_type: None,
            idempotency_key: None,
            body: Bytes::new(),
        })
        .await;
    assert_eq!(response.status, StatusCode::OK);
    let served: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(served, document());
}
