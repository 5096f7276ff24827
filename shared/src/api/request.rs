//! Reading a request's headers and body: content type, idempotency key, JSON body.

#[allow(unused_imports)]
use super::*;

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
