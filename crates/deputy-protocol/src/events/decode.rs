//! A faster decoder for [`EventMsg`] inside an [`Event`](super::Event).
//!
//! serde decodes an internally tagged enum (`{"type": "...", ...}`) by first
//! buffering the whole object into its private `Content` tree (allocating for
//! keys and strings), then decoding the variant from that copy. For the
//! events that come by the million — `agent_message_delta` and
//! `agent_reasoning_delta` — that buffering costs about as much as the rest
//! of the decode. When `type` is the first member (as every serde serializer
//! writes it, Deputy's agent included), those two are decoded straight from
//! the input here; every other event, and any object whose `type` comes
//! later, goes through a `serde_json::Value` and the derived decoder, so the
//! accepted inputs and the results are the same as the derived decoder's.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::EventMsg;

/// `deserialize_with` for `Event::msg`.
pub(super) fn event_msg<'de, D: Deserializer<'de>>(deserializer: D) -> Result<EventMsg, D::Error> {
    deserializer.deserialize_map(MsgVisitor)
}

/// A map key or string, borrowed from the input when it can be.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

struct MsgVisitor;

impl<'de> Visitor<'de> for MsgVisitor {
    type Value = EventMsg;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object with a \"type\"")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EventMsg, A::Error> {
        let mut rest = Map::new();
        match map.next_key::<Text>()? {
            None => {}
            Some(Text(key)) if key == "type" => {
                // A tag that is not a string is an error, as for the derived decoder.
                let Text(tag) = map.next_value::<Text>()?;
                let delta: Option<fn(String) -> EventMsg> = match &*tag {
                    "agent_message_delta" => Some(|delta| EventMsg::AgentMessageDelta { delta }),
                    "agent_reasoning_delta" => Some(|delta| EventMsg::AgentReasoningDelta { delta }),
                    _ => None,
                };
                if let Some(variant) = delta {
                    return decode_delta(map).map(variant);
                }
                rest.insert("type".to_owned(), Value::String(tag.into_owned()));
            }
            Some(Text(key)) => {
                let value = map.next_value()?;
                rest.insert(key.into_owned(), value);
            }
        }
        finish(map, rest)
    }
}

/// Reads the remaining members into `rest` and decodes it with the derived
/// decoder.
fn finish<'de, A: MapAccess<'de>>(mut map: A, mut rest: Map<String, Value>) -> Result<EventMsg, A::Error> {
    while let Some(Text(key)) = map.next_key::<Text>()? {
        let value = map.next_value()?;
        if rest.contains_key(&*key) {
            return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
        }
        rest.insert(key.into_owned(), value);
    }
    EventMsg::deserialize(Value::Object(rest)).map_err(de::Error::custom)
}

/// The members after `"type"` of a delta event: `delta` (required, once);
/// others are ignored, as the derived decoder does.
fn decode_delta<'de, A: MapAccess<'de>>(mut map: A) -> Result<String, A::Error> {
    let mut delta = None;
    while let Some(Text(key)) = map.next_key::<Text>()? {
        match &*key {
            "delta" if delta.is_some() => return Err(de::Error::duplicate_field("delta")),
            "delta" => delta = Some(map.next_value::<String>()?),
            "type" => return Err(de::Error::duplicate_field("type")),
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    delta.ok_or_else(|| de::Error::missing_field("delta"))
}

#[cfg(test)]
mod tests {
    use super::super::{Event, ExecOutputStream, TurnAbortReason};
    use super::*;

    fn decode(json: &str) -> Result<EventMsg, String> {
        serde_json::from_str::<Event>(&format!(r#"{{"id":"s","msg":{json}}}"#))
            .map(|e| e.msg)
            .map_err(|e| e.to_string())
    }

    /// What the derived decoder alone says.
    fn derived(json: &str) -> Result<EventMsg, String> {
        serde_json::from_str::<EventMsg>(json).map_err(|e| e.to_string())
    }

    #[test]
    fn deltas_decode_in_any_member_order_with_escapes_and_extra_members() {
        for json in [
            r#"{"type":"agent_message_delta","delta":"a\"b\n\u00e9"}"#,
            r#"{"delta":"a\"b\n\u00e9","type":"agent_message_delta"}"#,
            r#"{"type":"agent_message_delta","later":{"x":[1,2]},"delta":"a\"b\n\u00e9"}"#,
        ] {
            assert_eq!(
                decode(json).unwrap(),
                EventMsg::AgentMessageDelta { delta: "a\"b\né".into() },
                "{json}"
            );
            assert_eq!(decode(json), derived(json), "{json}");
        }
        let json = r#"{"type":"agent_reasoning_delta","delta":"hm"}"#;
        assert_eq!(decode(json).unwrap(), EventMsg::AgentReasoningDelta { delta: "hm".into() });
    }

    #[test]
    fn other_events_and_unknown_types_decode_as_the_derived_decoder_does() {
        let events = [
            EventMsg::TurnAborted { turn_id: "t".into(), reason: TurnAbortReason::Interrupted },
            EventMsg::ExecCommandOutputDelta {
                call_id: "c".into(),
                stream: ExecOutputStream::Stderr,
                chunk: "x".into(),
            },
            EventMsg::AgentMessage { message: "done".into() },
            EventMsg::ShutdownComplete,
        ];
        for msg in events {
            let json = serde_json::to_string(&msg).unwrap();
            assert_eq!(decode(&json).unwrap(), msg, "{json}");
        }
        assert_eq!(decode(r#"{"type":"from_the_future","x":1}"#).unwrap(), EventMsg::Unknown);
        let late_tag = r#"{"message":"m","type":"agent_message"}"#;
        assert_eq!(decode(late_tag).unwrap(), EventMsg::AgentMessage { message: "m".into() });
    }

    #[test]
    fn malformed_events_are_refused() {
        for json in [
            r#"{"type":"agent_message_delta"}"#,
            r#"{"type":"agent_message_delta","delta":"a","delta":"b"}"#,
            r#"{"type":"agent_message_delta","delta":"a","type":"agent_message_delta"}"#,
            r#"{"type":"agent_message_delta","delta":7}"#,
            r#"{"type":"agent_message","message":"a","message":"b"}"#,
            r#"{"type":"turn_aborted","turn_id":"t"}"#,
            r#"{"delta":"a"}"#,
            r#"{}"#,
            r#""agent_message_delta""#,
            r#"[]"#,
            r#"{"type":7,"delta":"a"}"#,
        ] {
            assert!(decode(json).is_err(), "{json} decoded as {:?}", decode(json));
            assert!(derived(json).is_err(), "the derived decoder takes {json}");
        }
        let e = decode(r#"{"type":"agent_message_delta"}"#).unwrap_err();
        assert!(e.contains("missing field `delta`"), "{e}");
        let e = decode(r#"{"type":"agent_message_delta","delta":"a","delta":"b"}"#).unwrap_err();
        assert!(e.contains("duplicate field `delta`"), "{e}");
    }
}
