//! The query parameters of the read routes: each at most once, none unknown, each with its
//! bound.

use std::time::Duration;

use super::*;

/// The query parameters of `GET /messages/{id}`.
pub(super) struct ReadOptions {
    pub(super) after: Option<ConsistencyToken>,
    /// Watching: answer once the row is newer than this version.
    pub(super) newer_than: Option<VersionKey>,
    pub(super) wait: Duration,
}

impl ReadOptions {
    pub(super) fn parse(query: Option<&str>) -> Result<Self, FieldError> {
        let [after, wait_ms, newer_than] = query_params(query, ["after", "wait_ms", "newer_than"])?;
        if after.is_some() && newer_than.is_some() {
            return Err(FieldError::new(
                "newer_than",
                Rule::InvalidToken,
                "newer_than cannot be combined with after: wait for your own write, or watch for \
                 a change, one at a time",
            ));
        }
        let wait = parse_wait(wait_ms.as_deref(), after.is_some() || newer_than.is_some())?;
        let after = parse_token(after.as_deref())?;
        let newer_than = newer_than
            .map(|text| {
                VersionKey::from_opaque(&text)
                    .map_err(|e| FieldError::new("newer_than", Rule::InvalidToken, e.to_string()))
            })
            .transpose()?;
        Ok(Self {
            after,
            newer_than,
            wait,
        })
    }
}

/// A route's query parameters, in the order of `names`: each at most once (a repeat is refused,
/// since it would otherwise silently win), and no other (a typo is refused, naming it).
pub(crate) fn query_params<const N: usize>(
    query: Option<&str>,
    names: [&str; N],
) -> Result<[Option<String>; N], FieldError> {
    let mut values: [Option<String>; N] = std::array::from_fn(|_| None);
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let Some(slot) = names.iter().position(|n| *n == name) else {
            return Err(FieldError::new(
                name.as_ref(),
                Rule::UnknownField,
                format!(
                    "{name} is not a parameter of this route ({})",
                    names.join(", ")
                ),
            ));
        };
        set_once(&mut values[slot], value.into_owned(), || name.to_string())?;
    }
    Ok(values)
}

/// `wait_ms`: 0 to [`MAX_CONSISTENCY_WAIT`], and only beside what it waits for (`after`, or
/// `newer_than` on `GET /messages/{id}`).
pub(crate) fn parse_wait(wait_ms: Option<&str>, has_after: bool) -> Result<Duration, FieldError> {
    let max_ms = MAX_CONSISTENCY_WAIT.as_millis();
    let Some(text) = wait_ms else {
        return Ok(Duration::ZERO);
    };
    let ms: u64 = text.parse().map_err(|_| {
        FieldError::new(
            "wait_ms",
            Rule::InvalidType,
            format!("wait_ms must be a whole number of milliseconds, 0 to {max_ms}"),
        )
    })?;
    if u128::from(ms) > max_ms {
        return Err(FieldError::new(
            "wait_ms",
            Rule::OutOfRange,
            format!("wait_ms must be 0 to {max_ms}"),
        ));
    }
    if !has_after {
        return Err(FieldError::new(
            "wait_ms",
            Rule::Required,
            "wait_ms waits for the write named by after (or, reading one id, a change newer \
             than newer_than): give it too",
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// `after`: a token from an earlier `POST /events` answer.
pub(crate) fn parse_token(after: Option<&str>) -> Result<Option<ConsistencyToken>, FieldError> {
    after
        .map(|text| {
            ConsistencyToken::decode(text)
                .map_err(|e| FieldError::new("after", Rule::InvalidToken, e.to_string()))
        })
        .transpose()
}

/// `limit`: a whole number from 1 to `max`; `default` when absent.
pub(crate) fn parse_limit(
    limit: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, FieldError> {
    let Some(text) = limit else {
        return Ok(default);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(_) => Err(FieldError::new(
            "limit",
            Rule::OutOfRange,
            format!("limit must be 1 to {max}"),
        )),
        Err(_) => Err(FieldError::new(
            "limit",
            Rule::InvalidType,
            format!("limit must be a whole number, 1 to {max}"),
        )),
    }
}
