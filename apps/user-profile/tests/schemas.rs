//! The Avro schemas in `schemas/` document the output topics' contract;
//! the JSON the pipeline writes must have their fields, with their types.

use serde_json::Value;
use user_profile::model::{GodObject, IdMapping, UserProfile};

fn schema(file: &str) -> Value {
    let path = format!("{}/../../schemas/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Whether `value` fits the Avro `avro_type` (primitives and unions with null).
fn fits(avro_type: &Value, value: &Value) -> bool {
    match avro_type {
        Value::Array(branches) => branches.iter().any(|b| fits(b, value)),
        Value::String(name) => match name.as_str() {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "long" | "int" => value.is_i64(),
            "string" => value.is_string(),
            other => panic!("a type the test does not know: {other}"),
        },
        other => panic!("a type the test does not know: {other}"),
    }
}

fn assert_matches(file: &str, written: &[Value]) {
    let schema = schema(file);
    let fields = schema["fields"].as_array().unwrap();
    for value in written {
        let object = value.as_object().unwrap();
        let names: Vec<&str> = fields.iter().map(|f| f["name"].as_str().unwrap()).collect();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted, "{file}: the fields of {value}");
        for field in fields {
            let name = field["name"].as_str().unwrap();
            assert!(fits(&field["type"], &object[name]), "{file}: {name} of {value}");
        }
    }
}

#[test]
fn the_output_values_have_the_fields_and_types_of_their_schemas() {
    let profiles = [
        UserProfile {
            user_id: 7,
            email: "ada@example.com".into(),
            dark_mode: Some(true),
        },
        UserProfile {
            user_id: 8,
            email: "bob@example.com".into(),
            dark_mode: None,
        },
    ];
    let written: Vec<Value> = profiles.iter().map(|p| serde_json::to_value(p).unwrap()).collect();
    assert_matches("user-profile-value.avsc", &written);
    let god_objects: Vec<Value> = profiles
        .iter()
        .map(|p| {
            let mapping = IdMapping {
                user_id: p.user_id,
                new_user_id: format!("u2-{}", p.user_id),
            };
            serde_json::to_value(GodObject::new(p.clone(), mapping)).unwrap()
        })
        .collect();
    assert_matches("user-god-object-value.avsc", &god_objects);
    assert!(fits(&schema("user-profile-key.avsc")["type"], &serde_json::json!(7)));
}
