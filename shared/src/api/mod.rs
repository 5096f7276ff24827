//! The HTTP contract, independent of how requests arrive: the ingest and query Lambdas (through
//! lambda_http, behind API Gateway v1/v2, Function URLs or ALB) and `tidemark serve` (through a
//! local HTTP server) turn their requests into an [`ApiRequest`] and send back the [`ApiResponse`].

mod idempotent;
pub mod ingest;
pub mod query;
mod request;
mod router;
pub mod statuses;
mod types;

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::json;

use crate::domain::limits::MAX_BODY_BYTES;
use crate::domain::{FieldError, Rule};
pub use ingest::IngestApi;
pub use query::QueryApi;
pub use request::*;
pub use router::*;
pub use types::*;
