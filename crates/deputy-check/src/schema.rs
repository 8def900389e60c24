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

/// One validator per root type of the schema (`Event`, `InitializeResult`, …).
pub struct Schemas {
    validators: HashMap<String, jsonschema::Validator>,
}

impl Schemas {
    /// Builds the validators from the generated schema files.
    pub fn new() -> Self {
        let mut validators = HashMap::new();
        for file in deputy_protocol::schema::generate() {
            let Some(name) = file.path.strip_prefix("json/").and_then(|p| p.strip_suffix(".json")) else {
                continue;
            };
            let schema: Value = serde_json::from_str(&file.contents).expect("the generated schema is JSON");
            let validator =
                jsonschema::validator_for(&schema).expect("the generated schema is a valid schema");
            validators.insert(name.to_owned(), validator);
        }
        Schemas { validators }
    }

    /// The violations of `value` against the schema of `type_name` (empty:
    /// valid), each as "message at /json/path".
    pub fn violations(&self, type_name: &str, value: &Value) -> Vec<String> {
        match self.validators.get(type_name) {
            Some(v) => v
                .iter_errors(value)
                .map(|e| {
                    let path = e.instance_path().to_string();
                    format!("{e} at {}", if path.is_empty() { "/" } else { &path })
                })
                .collect(),
            None => vec![format!("no schema named {type_name}")],
        }
    }
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
        assert!(!v.is_empty());
        let unknown = json!({"id": "t", "msg": {"type": "deputy_check_unknown"}});
        assert!(!s.violations("Event", &unknown).is_empty());
        assert!(
            s.violations("InitializeResult", &json!({"protocol_version": 1}))
                .iter()
                .any(|e| e.contains("agent_info"))
        );
    }
}
