//! Validators for the published JSON Schema (`schema/json/*.json`), built
//! from the same generator that writes those files (`deputy_protocol::schema`),
//! so the checker needs no checkout and cannot drift from the protocol crate.
//!
//! Why a JSON Schema validator and not a round trip through the typed
//! `deputy-protocol` structs: the schema is the contract other languages
//! implement, and serde is deliberately lenient where the schema is not — an
//! unknown event type decodes as `EventMsg::Unknown`, missing fields with a
//! default decode, numbers of the wrong sign or size may fit — and a failed
//! decode names no path. `jsonschema` reports every violation with the JSON
//! path of the offending value.

use std::collections::HashMap;

use serde_json::Value;

/// One validator per root type of the schema (`Event`, `InitializeResult`, …),
/// and one per event type, so that a bad event is reported by its field
/// (`"16 ms" is not of type "integer" at /msg/duration_ms`) rather than as
/// "not valid under any of the schemas listed in the 'oneOf' keyword".
pub struct Schemas {
    validators: HashMap<String, jsonschema::Validator>,
    events: HashMap<String, jsonschema::Validator>,
}

impl Schemas {
    /// Builds the validators from the generated schema files.
    pub fn new() -> Self {
        let mut validators = HashMap::new();
        let mut events = HashMap::new();
        for file in deputy_protocol::schema::generate() {
            let Some(name) = file.path.strip_prefix("json/").and_then(|p| p.strip_suffix(".json")) else {
                continue;
            };
            let schema: Value = serde_json::from_str(&file.contents).expect("the generated schema is JSON");
            let validator =
                jsonschema::validator_for(&schema).expect("the generated schema is a valid schema");
            validators.insert(name.to_owned(), validator);
            if name == "Event" {
                events = event_validators(&schema);
            }
        }
        Schemas { validators, events }
    }

    /// The violations of `value` against the schema of `type_name` (empty:
    /// valid), each as "message at /json/path".
    pub fn violations(&self, type_name: &str, value: &Value) -> Vec<String> {
        let Some(validator) = self.validators.get(type_name) else {
            return vec![format!("no schema named {type_name}")];
        };
        let found = errors(validator, value, "");
        if found.is_empty() || type_name != "Event" {
            return found;
        }
        // Say which field of a known event type is wrong.
        let kind = value["msg"]["type"].as_str().unwrap_or_default();
        match self.events.get(kind) {
            Some(v) if value["id"].is_string() => {
                let precise = errors(v, &value["msg"], "/msg");
                if precise.is_empty() { found } else { precise }
            }
            Some(_) => found,
            None => vec![format!("`{kind}` is no event type of protocol v1 at /msg/type")],
        }
    }
}

fn errors(validator: &jsonschema::Validator, value: &Value, prefix: &str) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| {
            let path = format!("{prefix}{}", e.instance_path());
            let message = deputy_testkit::wire::excerpt(e.to_string().as_bytes(), 160);
            format!("{message} at {}", if path.is_empty() { "/" } else { &path })
        })
        .collect()
}

/// A validator per event type: each variant of `EventMsg`'s `oneOf`, with
/// the Event schema's definitions beside it.
fn event_validators(event_schema: &Value) -> HashMap<String, jsonschema::Validator> {
    let defs = &event_schema["$defs"];
    let mut out = HashMap::new();
    for variant in defs["EventMsg"]["oneOf"].as_array().into_iter().flatten() {
        let Some(kind) = variant["properties"]["type"]["const"].as_str() else { continue };
        let mut schema = variant.clone();
        schema["$defs"] = defs.clone();
        if let Some(dialect) = event_schema.get("$schema") {
            schema["$schema"] = dialect.clone();
        }
        if let Ok(v) = jsonschema::validator_for(&schema) {
            out.insert(kind.to_owned(), v);
        }
    }
    out
}

impl Default for Schemas {
    fn default() -> Self {
        Schemas::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_generated_schema_accepts_good_events_and_names_bad_fields() {
        let s = Schemas::new();
        let good = json!({"id": "t", "msg": {"type": "task_started", "turn_id": "t"}});
        assert!(s.violations("Event", &good).is_empty());
        let bad = json!({"id": "t", "msg": {"type": "exec_command_end", "call_id": "c", "turn_id": "t",
            "exit_code": 0, "duration_ms": "12 ms", "output": "", "truncated": false, "timed_out": false,
            "interrupted": false}});
        let v = s.violations("Event", &bad);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("\"12 ms\" is not of type \"integer\"") && v[0].ends_with("at /msg/duration_ms"),
            "{v:?}"
        );
        let unknown = json!({"id": "t", "msg": {"type": "deputy_check_unknown"}});
        assert_eq!(
            s.violations("Event", &unknown),
            ["`deputy_check_unknown` is no event type of protocol v1 at /msg/type"]
        );
        assert!(!s.violations("Event", &json!({"msg": {"type": "task_started", "turn_id": "t"}})).is_empty());
        assert!(
            s.violations("InitializeResult", &json!({"protocol_version": 1}))
                .iter()
                .any(|e| e.contains("agent_info"))
        );
    }
}
