//! The opaque texts this API hands out and takes back (consistency tokens, row versions): a
//! format prefix and the URL-safe base64 of the content, so a client passes them back unchanged
//! in a URL and never reads meaning into them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// `prefix` and the URL-safe base64 of `content`.
pub(crate) fn encode(prefix: &str, content: &str) -> String {
    let mut text = String::with_capacity(prefix.len() + content.len().div_ceil(3) * 4);
    text.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(content, &mut text);
    text
}

/// The content of a text [`encode`] made with `prefix`, or why it cannot be one: too long, another
/// format, not base64, not UTF-8.
pub(crate) fn decode(text: &str, prefix: &str, max_chars: usize) -> Result<String, &'static str> {
    if text.len() > max_chars {
        return Err("longer than any this API issues");
    }
    let encoded = text.strip_prefix(prefix).ok_or("unknown format")?;
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| "not URL-safe base64")?;
    String::from_utf8(bytes).map_err(|_| "not text")
}
