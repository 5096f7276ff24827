//! The rules for an event's `data` beyond size: whatever is accepted must be readable back, as
//! sent, by the query route and by ordinary JSON clients. The text itself is stored and returned
//! verbatim (digits, exponents and key order included); this check only refuses what a reader
//! could not take: nesting deeper than [`MAX_DATA_DEPTH`], a number outside the range of an
//! IEEE 754 double (`1e400`), a string with a lone UTF-16 surrogate (`"\ud800"`), and an object
//! with the same key twice (readers disagree on which one wins).
//!
//! It walks the text once with serde_json's own parser, so the grammar is the same one every
//! other part of Tidemark uses.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::limits::MAX_DATA_DEPTH;
use super::rules::{FieldError, Rule};

/// Checks `text` (valid JSON) against the readability rules; `field` names it in errors.
pub(crate) fn check_data_readable(text: &str, field: &str) -> Result<(), FieldError> {
    let state = RefCell::new(Walk {
        path: field.to_owned(),
        failure: None,
        error_path: None,
    });
    let mut parser = serde_json::Deserializer::from_str(text);
    let walked = Node {
        state: &state,
        depth: 1,
    }
    .deserialize(&mut parser)
    .and_then(|()| parser.end());
    let Err(error) = walked else {
        return Ok(());
    };
    let walk = state.into_inner();
    if let Some(failure) = walk.failure {
        return Err(failure);
    }
    Err(native_failure(
        &error,
        walk.error_path.unwrap_or_else(|| field.to_owned()),
    ))
}

/// A failure serde_json found itself: name the rule from its error category and message. The
/// messages matched here are serde_json's `ErrorCode` texts, stable across its 1.x releases; an
/// unrecognised one falls back to `malformed_json`, never to acceptance.
fn native_failure(error: &serde_json::Error, path: String) -> FieldError {
    let text = error.to_string();
    if text.contains("surrogate") || text.contains("hex escape") {
        FieldError::new(
            &path,
            Rule::InvalidString,
            format!("{path} holds a \\u escape that is not a Unicode character (a lone surrogate)"),
        )
    } else if text.contains("number out of range") {
        FieldError::new(
            &path,
            Rule::InvalidNumber,
            format!("{path} is a number outside the range of a 64-bit float (about ±1.8e308)"),
        )
    } else if text.contains("recursion limit") {
        too_deep(&path)
    } else {
        FieldError::new(
            &path,
            Rule::MalformedJson,
            format!("{path} is not valid JSON: {error}"),
        )
    }
}

fn too_deep(path: &str) -> FieldError {
    FieldError::new(
        path,
        Rule::TooDeep,
        format!("{path} nests objects and arrays more than {MAX_DATA_DEPTH} levels deep"),
    )
}

struct Walk {
    /// The JSON path of the value being read, e.g. `data.items[3].name`.
    path: String,
    /// A rule this walk found broken, with its path.
    failure: Option<FieldError>,
    /// The innermost path at which serde_json itself failed.
    error_path: Option<String>,
}

#[derive(Clone, Copy)]
struct Node<'s> {
    state: &'s RefCell<Walk>,
    depth: usize,
}

/// A marker error: the real one is in [`Walk::failure`].
fn fail<E: de::Error>(state: &RefCell<Walk>, failure: FieldError) -> E {
    state.borrow_mut().failure = Some(failure);
    E::custom("rule broken")
}

impl Node<'_> {
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        if self.depth > MAX_DATA_DEPTH {
            let path = self.state.borrow().path.clone();
            return Err(fail(self.state, too_deep(&path)));
        }
        Ok(Node {
            state: self.state,
            depth: self.depth + 1,
        })
    }

    /// Reads one child under `segment` of the path, remembering where serde_json failed.
    fn child<T, E>(
        self,
        segment: fmt::Arguments<'_>,
        read: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let mark = {
            let mut walk = self.state.borrow_mut();
            let mark = walk.path.len();
            let _ = walk.path.write_fmt(segment);
            mark
        };
        let result = read();
        let mut walk = self.state.borrow_mut();
        if result.is_err() && walk.error_path.is_none() {
            walk.error_path = Some(walk.path.clone());
        }
        walk.path.truncate(mark);
        result
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        // serde_json refuses overflow itself; this keeps the rule true if that ever changes.
        if value.is_finite() {
            return Ok(());
        }
        let path = self.state.borrow().path.clone();
        Err(fail(
            self.state,
            FieldError::new(
                &path,
                Rule::InvalidNumber,
                format!("{path} is a number outside the range of a 64-bit float"),
            ),
        ))
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        let mut index = 0usize;
        while inner
            .child(format_args!("[{index}]"), || items.next_element_seed(inner))?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
        loop {
            let key = inner.child(format_args!(""), || entries.next_key::<Cow<'de, str>>())?;
            let Some(key) = key else {
                return Ok(());
            };
            let segment = PathKey(&key);
            if seen.contains(&key) {
                let path = format!("{}{segment}", self.state.borrow().path);
                return Err(fail(
                    self.state,
                    FieldError::new(
                        &path,
                        Rule::DuplicateKey,
                        format!("{path} appears twice in the same object"),
                    ),
                ));
            }
            inner.child(format_args!("{segment}"), || entries.next_value_seed(inner))?;
            seen.insert(key);
        }
    }
}

/// A key as a path segment: `.name` for plain names, `["any key"]` otherwise.
struct PathKey<'k>(&'k str);

impl fmt::Display for PathKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && self
                .0
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if plain {
            write!(f, ".{}", self.0)
        } else {
            // Debug quoting escapes quotes and control characters, so the path stays one line.
            write!(f, "[{:?}]", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> Result<(), (String, Rule)> {
        check_data_readable(text, "data").map_err(|e| (e.field.unwrap_or_default(), e.rule))
    }

    #[test]
    fn readable_data_passes_untouched() {
        for ok in [
            r#"{}"#,
            r#"{"n":12345678901234567890123,"f":1.10,"e":-2.5E-300,"s":"\u00e9\ud83d\ude00"}"#,
            r#"{"a":[1,[2,[3]],{"b":null,"c":true}],"A":"distinct from a"}"#,
            r#"{"x":1.7976931348623157e308}"#,
        ] {
            assert_eq!(rule(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn unreadable_data_names_path_and_rule() {
        assert_eq!(
            rule(r#"{"a":{"n":1e400}}"#),
            Err(("data.a.n".into(), Rule::InvalidNumber))
        );
        assert_eq!(
            rule(r#"{"list":[1,"\ud800"]}"#),
            Err(("data.list[1]".into(), Rule::InvalidString))
        );
        assert_eq!(
            rule(r#"{"a":1,"b":{"k":1,"k":2}}"#),
            Err(("data.b.k".into(), Rule::DuplicateKey))
        );
        assert_eq!(
            rule(r#"{"odd key":{"x":1,"x":1}}"#),
            Err((r#"data["odd key"].x"#.into(), Rule::DuplicateKey))
        );
        let at_limit = format!(
            "{}{}",
            "[".repeat(MAX_DATA_DEPTH - 1),
            "]".repeat(MAX_DATA_DEPTH - 1)
        );
        assert_eq!(rule(&format!(r#"{{"d":{at_limit}}}"#)), Ok(()));
        let over = format!(
            "{}{}",
            "[".repeat(MAX_DATA_DEPTH),
            "]".repeat(MAX_DATA_DEPTH)
        );
        assert_eq!(
            rule(&format!(r#"{{"d":{over}}}"#)).map_err(|e| e.1),
            Err(Rule::TooDeep)
        );
        let far_over = format!("{}{}", "[".repeat(500), "]".repeat(500));
        assert_eq!(
            rule(&format!(r#"{{"d":{far_over}}}"#)).map_err(|e| e.1),
            Err(Rule::TooDeep)
        );
    }
}
