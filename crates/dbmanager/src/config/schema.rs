//! The JSON Schema of the configuration (cargo feature `schema`), generated from the key table
//! the parser checks documents against, so it names exactly the keys the parser accepts.
//!
//! It follows the parser, not an idealised YAML: a string key takes any scalar but null (the
//! text written is kept, `password: 1.50` is `1.50`); a number, a boolean or a duration may be
//! quoted, and null there means "not set"; any value may be a `${VAR}` reference, which only
//! the environment can check. Unknown keys are refused under `dbmanager:` and in a connection
//! (`additionalProperties: false`); other root keys belong to the application. The ranges the
//! loader checks (pool sizes, ports) are in the schema for numbers written as numbers.
//!
//! Draft-07: the draft yaml-language-server (and VS Code's YAML extension) validates with.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Value, json};

use super::effective::default_value;
use super::keys::{
    CIRCUIT_BREAKER_FAILURES, CONNECTION, Key, MANAGER, MAX_CIRCUIT_BREAKER_FAILURES,
    REPLICATION_KEYS, Shape,
};
use super::{ConnectionConfig, ManagerConfig};

/// A `${VAR}` or `${VAR:-default}` reference anywhere in a string.
const VARIABLE: &str = r"\$\{[A-Za-z0-9_]+(:-[^}]*)?\}";
/// A whole number written as text.
const DIGITS: &str = r"^\s*[0-9]+\s*$";
/// `true` or `false` written as text, in any case.
const BOOLEAN_TEXT: &str = r"^\s*([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])\s*$";
/// What `humantime` reads as a duration: numbers (fractions allowed) each with a unit.
const DURATION: &str = concat!(
    r"^\s*(0|([0-9][0-9\s]*(\.[0-9\s]*)?\s*",
    r"(nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m",
    r"|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y)\s*)+)$"
);

/// The JSON Schema (draft-07) of a configuration document: the `dbmanager:` key, whose keys are
/// those of [`ManagerConfig`] and [`ConnectionConfig`], with descriptions and defaults. Other
/// root keys are allowed (the application's own configuration). What
/// `dbmanager config schema` prints; point yaml-language-server at it with
/// `# yaml-language-server: $schema=dbmanager.schema.json`.
///
/// An application whose own configuration type derives `schemars::JsonSchema` can embed
/// `ManagerConfig` as a field instead.
pub fn json_schema() -> Value {
    let schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<Document>();
    schema.to_value()
}

/// The whole configuration document.
struct Document;

impl JsonSchema for Document {
    fn schema_name() -> Cow<'static, str> {
        "dbmanager configuration".into()
    }

    fn schema_id() -> Cow<'static, str> {
        "dbmanager::config::Document".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let manager = generator.subschema_for::<ManagerConfig>().to_value();
        object(json!({
            "description": "A dbmanager configuration file: the `dbmanager:` key. Other root keys are ignored, so the file can hold the rest of an application's configuration.",
            "type": "object",
            "required": ["dbmanager"],
            "properties": {
                "dbmanager": { "anyOf": [manager, { "type": "null" }] }
            }
        }))
    }
}

impl JsonSchema for ManagerConfig {
    fn schema_name() -> Cow<'static, str> {
        "ManagerConfig".into()
    }

    fn schema_id() -> Cow<'static, str> {
        "dbmanager::config::ManagerConfig".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        object(json!({
            "description": "The `dbmanager:` section: global defaults and the named connections.",
            "type": "object",
            "properties": properties(MANAGER, false, generator),
            "additionalProperties": false
        }))
    }
}

impl JsonSchema for ConnectionConfig {
    fn schema_name() -> Cow<'static, str> {
        "ConnectionConfig".into()
    }

    fn schema_id() -> Cow<'static, str> {
        "dbmanager::config::ConnectionConfig".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        object(json!({
            "description": "One named connection.",
            "type": "object",
            "properties": properties(CONNECTION, true, generator),
            "required": ["type"],
            "additionalProperties": false
        }))
    }
}

fn object(value: Value) -> Schema {
    match value {
        Value::Object(map) => Schema::from(map),
        _ => Schema::default(),
    }
}

fn properties(keys: &[Key], connection: bool, generator: &mut SchemaGenerator) -> Value {
    let mut out = serde_json::Map::new();
    for key in keys {
        let mut schema = match shape(key.shape, generator) {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        schema.insert("description".to_owned(), json!(key.doc));
        if let Some(default) = default_value(key, connection) {
            schema.insert("default".to_owned(), default);
        }
        if key.shape == Shape::Secret {
            schema.insert("writeOnly".to_owned(), json!(true));
        }
        out.insert(key.name.to_owned(), Value::Object(schema));
    }
    Value::Object(out)
}

/// A string holding a `${VAR}` reference: the environment decides.
fn variable() -> Value {
    json!({ "type": "string", "pattern": VARIABLE })
}

/// Any scalar but null: a string key keeps the text written.
fn scalar() -> Value {
    json!({ "type": ["string", "number", "boolean"] })
}

fn whole_number(min: u64, max: u64, pattern: &str) -> Value {
    json!({ "anyOf": [
        { "type": "integer", "minimum": min, "maximum": max },
        { "type": "string", "pattern": pattern },
        variable(),
        { "type": "null" }
    ]})
}

fn shape(shape: Shape, generator: &mut SchemaGenerator) -> Value {
    match shape {
        Shape::Text | Shape::Secret => scalar(),
        Shape::Port => whole_number(1, u64::from(u16::MAX), DIGITS),
        Shape::Count { min, max } => whole_number(min.into(), max.into(), DIGITS),
        Shape::Duration => json!({ "anyOf": [
            { "type": "string", "pattern": DURATION },
            variable(),
            { "type": "null" }
        ]}),
        Shape::Bool => json!({ "anyOf": [
            { "type": "boolean" },
            { "type": "string", "pattern": BOOLEAN_TEXT },
            variable(),
            { "type": "null" }
        ]}),
        Shape::Enum { names, aliases } => {
            let all: Vec<&str> = names.iter().chain(aliases).copied().collect();
            json!({ "anyOf": [{ "type": "string", "enum": all }, variable()] })
        }
        Shape::Strings => json!({ "type": ["array", "null"], "items": scalar() }),
        Shape::Tags => json!({ "type": ["object", "null"], "additionalProperties": scalar() }),
        Shape::CircuitBreaker => {
            let failures =
                match whole_number(1, MAX_CIRCUIT_BREAKER_FAILURES.into(), r"^\s*\+?[0-9]+\s*$") {
                    // `failures` itself may not be null.
                    Value::Object(mut map) => {
                        if let Some(Value::Array(any)) = map.get_mut("anyOf") {
                            any.retain(|s| s["type"] != "null");
                        }
                        Value::Object(map)
                    }
                    other => other,
                };
            json!({ "anyOf": [
                {
                    "type": "object",
                    "properties": { CIRCUIT_BREAKER_FAILURES: failures },
                    "required": [CIRCUIT_BREAKER_FAILURES],
                    "additionalProperties": false
                },
                { "enum": ["off", false] },
                { "type": "string", "pattern": r"^\s*(off|false)\s*$" },
                variable(),
                { "type": "null" }
            ]})
        }
        Shape::Replicas => {
            // An entry takes the connection's keys but its own (no defaults: it inherits).
            let mut entry = serde_json::Map::new();
            for key in CONNECTION
                .iter()
                .filter(|k| !REPLICATION_KEYS.contains(&k.name))
            {
                let mut schema = match self::shape(key.shape, generator) {
                    Value::Object(map) => map,
                    _ => serde_json::Map::new(),
                };
                schema.insert("description".to_owned(), json!(key.doc));
                if key.shape == Shape::Secret {
                    schema.insert("writeOnly".to_owned(), json!(true));
                }
                entry.insert(key.name.to_owned(), Value::Object(schema));
            }
            json!({ "anyOf": [
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "description": "One read replica: the connection's keys it overrides; every other key is the connection's.",
                        "properties": entry,
                        "additionalProperties": false
                    }
                },
                { "type": "null" }
            ]})
        }
        Shape::Connections => {
            let connection = generator.subschema_for::<ConnectionConfig>().to_value();
            json!({ "anyOf": [
                { "type": "object", "additionalProperties": connection },
                { "type": "null" }
            ]})
        }
    }
}
