//! `dbmanager config schema` (the JSON Schema of the YAML) and `dbmanager config show` (the
//! effective configuration with each value's origin, secrets redacted).

use std::path::Path;

use dbmanager::config::{EffectiveConfig, Origin, Setting};
use dbmanager::{EnvSource, ManagerConfig};
use serde_json::{Value, json};

use crate::text::escaped;
use crate::{EXIT_CONFIG, EXIT_OK, load};

/// Prints the JSON Schema of the configuration document.
pub fn schema() -> u8 {
    match serde_json::to_string_pretty(&dbmanager::config::json_schema()) {
        Ok(text) => {
            println!("{text}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: cannot render the schema: {e}");
            EXIT_CONFIG
        }
    }
}

/// Prints the effective configuration of `path` (or of the embedded quick-start config) under
/// the process environment; an invalid one prints every problem and returns [`EXIT_CONFIG`].
pub fn show(path: Option<&Path>, json: bool) -> u8 {
    let env = EnvSource::process();
    let (source, explained) = match path {
        Some(path) => (
            escaped(&path.display().to_string()),
            ManagerConfig::explain_file(path, &env),
        ),
        None => (
            "the embedded quick-start config".to_owned(),
            ManagerConfig::explain_yaml_str(load::QUICKSTART, &env),
        ),
    };
    let effective = match explained {
        Ok(effective) => effective,
        Err(problems) => {
            // Problems never quote a secret, nor a value that came from `${VAR}`.
            eprintln!("{problems}");
            return EXIT_CONFIG;
        }
    };
    if json {
        println!("{}", as_json(&source, &effective));
    } else {
        print!("{}", as_text(&source, &effective));
    }
    EXIT_OK
}

fn as_json(source: &str, effective: &EffectiveConfig) -> String {
    let settings: Vec<Value> = effective
        .settings
        .iter()
        .map(|s| {
            let mut value = serde_json::to_value(s).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut value {
                map.insert("path".to_owned(), json!(s.path()));
            }
            value
        })
        .collect();
    let document = json!({
        "source": source,
        "effective": effective.to_json(),
        "settings": settings,
    });
    serde_json::to_string_pretty(&document).unwrap_or_default()
}

/// YAML with an origin comment on every line.
fn as_text(source: &str, effective: &EffectiveConfig) -> String {
    // (indent, text, origin comment); aligned once all are known.
    let mut lines: Vec<(usize, String, Option<String>)> = vec![(0, "dbmanager:".to_owned(), None)];
    let mut connection: Option<&str> = None;
    let mut connections_opened = false;
    for setting in &effective.settings {
        let depth = match setting.connection.as_deref() {
            None => 1,
            Some(name) => {
                if !connections_opened {
                    lines.push((1, "connections:".to_owned(), None));
                    connections_opened = true;
                }
                if connection != Some(name) {
                    lines.push((2, format!("{}:", key(name)), None));
                    connection = Some(name);
                }
                3
            }
        };
        let text = format!("{}: {}", setting.key, value(&setting.value));
        lines.push((depth, text, Some(origin(setting))));
    }
    if !connections_opened {
        lines.push((1, "connections: {}".to_owned(), None));
    }
    let width = lines
        .iter()
        .filter(|(_, _, origin)| origin.is_some())
        .map(|(depth, text, _)| depth * 2 + text.chars().count())
        .max()
        .unwrap_or(0)
        .min(56);
    let mut out = format!(
        "# The effective configuration of {source}: defaults, DBMANAGER__* overrides and ${{VAR}}\n\
         # applied; secrets redacted. Each comment says where the value came from.\n"
    );
    for (depth, text, origin) in lines {
        let line = format!("{}{text}", "  ".repeat(depth));
        match origin {
            Some(origin) => {
                let pad = width.saturating_sub(line.chars().count());
                out.push_str(&format!("{line}{}  # {origin}\n", " ".repeat(pad)));
            }
            None => {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out
}

/// Where a setting came from, for a comment.
fn origin(setting: &Setting) -> String {
    let mut parts: Vec<String> = setting
        .origins
        .iter()
        .map(|origin| match origin {
            Origin::Default => "default".to_owned(),
            Origin::Inherited { key } => format!("from {key}"),
            Origin::File { line: Some(line) } => format!("file line {line}"),
            Origin::File { line: None } => "file".to_owned(),
            Origin::Env { var } => format!("env {}", escaped(var)),
            _ => "unknown".to_owned(),
        })
        .collect();
    parts.extend(
        setting
            .expanded_from
            .iter()
            .map(|var| format!("${{{}}}", escaped(var))),
    );
    parts.join(", ")
}

/// A mapping key: plain when it is a plain word, else quoted.
fn key(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if plain {
        name.to_owned()
    } else {
        Value::String(name.to_owned()).to_string()
    }
}

/// A value as YAML reads it back: a plain scalar when that is unambiguous, else JSON (which is
/// YAML flow syntax, with every control character escaped).
fn value(value: &Value) -> String {
    match value {
        Value::String(text) => {
            let plain = !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
                && text.parse::<f64>().is_err()
                && !matches!(
                    text.to_ascii_lowercase().as_str(),
                    "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
                );
            if plain {
                text.clone()
            } else {
                value.to_string()
            }
        }
        other => other.to_string(),
    }
}
