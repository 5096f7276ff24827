//! The OpenAPI document (`shared/openapi.json`, served at `GET /openapi.json`) and the code agree:
//! the same operations, the same error codes, and every reference resolves. Schemathesis then
//! checks real answers against it (scripts/contract-fuzz, part of the test command).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

use std::collections::BTreeSet;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;
use strum::VariantArray;
use tidemark::adapters::Adapters;
use tidemark::api::{Api, ApiRequest, ErrorCode, QueryApi, RouteKind, OPENAPI_DOCUMENT};
use tidemark::domain::Rule;

fn document() -> Value {
    serde_json::from_str(OPENAPI_DOCUMENT).expect("openapi.json is JSON")
}

#[test]
fn every_route_is_documented_and_every_documented_operation_is_routed() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|key| !matches!(key.as_str(), "parameters" | "summary" | "description"))
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let routed: BTreeSet<(String, String)> = RouteKind::VARIANTS
        .iter()
        .filter_map(|kind| kind.operation())
        .map(|(method, path)| (method.to_owned(), path.to_owned()))
        .collect();
    assert_eq!(documented, routed);
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
