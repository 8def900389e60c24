//! Request ids.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A JSON-RPC request id: an integer (any `i64`, negative included) or a string.
///
/// Responses echo the id exactly as it was received. A fractional number, a number
/// outside the `i64` range, `null`, or any other JSON type is not a valid id: a
/// request carrying one is answered with `-32600` (id `null`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Id {
    /// A numeric id.
    Integer(i64),
    /// A string id.
    String(String),
}

impl fmt::Display for Id {
    /// Integers print bare, strings print as a JSON string (`"abc"`), so the two
    /// kinds never look alike in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Integer(n) => write!(f, "{n}"),
            Id::String(s) => write!(f, "{s:?}"),
        }
    }
}

impl From<i64> for Id {
    fn from(n: i64) -> Self {
        Id::Integer(n)
    }
}

impl From<String> for Id {
    fn from(s: String) -> Self {
        Id::String(s)
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id::String(s.to_owned())
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Id::Integer(n) => serializer.serialize_i64(*n),
            Id::String(s) => serializer.serialize_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;

        impl Visitor<'_> for IdVisitor {
            type Value = Id;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer (i64) or a string id")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                Ok(Id::Integer(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                i64::try_from(v)
                    .map(Id::Integer)
                    .map_err(|_| E::custom(format_args!("id {v} is out of the i64 range")))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Id, E> {
                Err(E::custom(format_args!(
                    "id {v} is not an integer (fractional or exponent ids are not accepted)"
                )))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                Ok(Id::String(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Id, E> {
                Ok(Id::String(v))
            }
        }

        deserializer.deserialize_any(IdVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_exactly() {
        for text in ["0", "-1", "9223372036854775807", "-9223372036854775808", "\"a\"", "\"\""] {
            let id: Id = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&id).unwrap(), text);
        }
    }

    #[test]
    fn invalid_ids_are_rejected() {
        for text in ["1.5", "1e3", "1.0", "9223372036854775808", "null", "true", "[]", "{}"] {
            assert!(serde_json::from_str::<Id>(text).is_err(), "{text} accepted");
        }
    }

    #[test]
    fn display_distinguishes_kinds() {
        assert_eq!(Id::Integer(5).to_string(), "5");
        assert_eq!(Id::from("5").to_string(), "\"5\"");
    }
}
