//! End-to-end tests of the whole pipeline over HTTP. `tests/randomized.rs` runs `tidemark serve`
//! in-process on the in-memory backend; its size is set by `TIDEMARK_E2E_EVENTS` and
//! `TIDEMARK_E2E_IDS` so it can be run bigger by hand.

/// Reads a positive number from the environment, or the default.
pub fn env_usize(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}
