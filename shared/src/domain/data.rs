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
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::limits::MAX_DATA_DEPTH;
use super::rules::{FieldError, Rule};

/// Checks `text` (valid JSON) against the readability rules; `field` names it in errors.
pub(crate) fn check_data_readable(text: &str, field: &str) -> Result<(), FieldError> {
    let state = RefCell::new(Walk::default());
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
    // Segments were collected innermost first, while the error unwound.
    let path: String = std::iter::once(field.to_owned())
        .chain(walk.unwound.into_iter().rev())
        .collect();
    Err(match walk.broken {
        Some(rule) => failure(rule, path),
        None => native_failure(&error, path),
    })
}

/// The error for a rule this walk found broken at `path`.
fn failure(rule: Rule, path: String) -> FieldError {
    let message = match rule {
        Rule::InvalidString => {
            format!("{path} holds a \\u escape that is not a Unicode character (a lone surrogate)")
        }
        Rule::InvalidNumber => {
            format!("{path} is a number outside the range of a 64-bit float (about ±1.8e308)")
        }
        Rule::TooDeep => {
            format!("{path} nests objects and arrays more than {MAX_DATA_DEPTH} levels deep")
        }
        Rule::DuplicateKey => format!("{path} appears twice in the same object"),
        _ => format!("{path} is not valid JSON"),
    };
    FieldError::new(&path, rule, message)
}

/// A failure serde_json found itself: name the rule from its message. The texts matched are
/// serde_json's `ErrorCode` messages, stable across its 1.x releases; an unrecognised one falls
/// back to `malformed_json`, never to acceptance.
fn native_failure(error: &serde_json::Error, path: String) -> FieldError {
    let text = error.to_string();
    let rule = if text.contains("surrogate") || text.contains("hex escape") {
        Rule::InvalidString
    } else if text.contains("number out of range") {
        Rule::InvalidNumber
    } else if text.contains("recursion limit") {
        Rule::TooDeep
    } else {
        return FieldError::new(
            &path,
            Rule::MalformedJson,
            format!("{path} is not valid JSON: {error}"),
        );
    };
    failure(rule, path)
}

/// What the walk learnt on its way out of a failure. Nothing is recorded while all is well:
/// the path is built only when there is an error to name.
#[derive(Default)]
struct Walk {
    /// A rule the walk itself found broken (depth, duplicate key, a non-finite number).
    broken: Option<Rule>,
    /// Path segments of the failing value, innermost first, pushed as the error unwound.
    unwound: Vec<String>,
}

#[derive(Clone, Copy)]
struct Node<'s> {
    state: &'s RefCell<Walk>,
    depth: usize,
}

impl<'s> Node<'s> {
    /// Records a broken rule; the returned error only carries it out of serde.
    fn fail<E: de::Error>(self, rule: Rule) -> E {
        self.state.borrow_mut().broken = Some(rule);
        E::custom(rule.code())
    }

    fn enter<E: de::Error>(self) -> Result<Self, E> {
        if self.depth > MAX_DATA_DEPTH {
            return Err(self.fail(Rule::TooDeep));
        }
        Ok(Node {
            state: self.state,
            depth: self.depth + 1,
        })
    }

    /// Reads one child; if it fails, adds the child's segment to the path on the way out.
    fn child<T, E>(
        self,
        segment: impl FnOnce() -> String,
        read: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let result = read();
        if result.is_err() {
            self.state.borrow_mut().unwound.push(segment());
        }
        result
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// Objects with at most this many keys are checked for duplicates by scanning, without hashing.
const SCANNED_KEYS: usize = 16;

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
            Ok(())
        } else {
            Err(self.fail(Rule::InvalidNumber))
        }
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
            .child(|| format!("[{index}]"), || items.next_element_seed(inner))?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        let mut scanned: Vec<Key<'de>> = Vec::new();
        let mut hashed: HashSet<Key<'de>> = HashSet::new();
        while let Some(key) = entries.next_key_seed(KeySeed)? {
            let repeated = if scanned.len() < SCANNED_KEYS {
                scanned.contains(&key)
            } else {
                if hashed.is_empty() {
                    hashed.extend(scanned.iter().cloned());
                }
                hashed.contains(&key)
            };
            if repeated {
                self.state
                    .borrow_mut()
                    .unwound
                    .push(PathKey(&key.0).to_string());
                return Err(self.fail(Rule::DuplicateKey));
            }
            inner.child(
                || PathKey(&key.0).to_string(),
                || entries.next_value_seed(inner),
            )?;
            if scanned.len() < SCANNED_KEYS {
                scanned.push(key);
            } else {
                hashed.insert(key);
            }
        }
        Ok(())
    }
}

/// An object key, borrowed from the text unless it had escapes.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key<'de>(Cow<'de, str>);

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key<'de>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(key)))
    }

    fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(key.to_owned())))
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
