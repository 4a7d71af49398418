//! `--tag KEY=VALUE` for `check` and `serve`: only the connections whose tags match every
//! filter (repeated flags are ANDed) are managed. The whole file is still validated; the
//! selection is applied to the loaded config, before anything connects, and again to each
//! config `serve` reloads.

use std::collections::BTreeSet;

use dbmanager::ManagerConfig;

/// One `KEY=VALUE` filter, parsed by clap (a malformed one is a usage error).
pub fn parse(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!(
            "`{text}` is not a tag filter: expected KEY=VALUE with a non-empty KEY (e.g. --tag tier=analytics)"
        )),
    }
}

/// The `--tag` filters of one command: a connection is selected when every one matches.
#[derive(Debug, Clone, Default)]
pub struct TagFilter(Vec<(String, String)>);

impl TagFilter {
    pub fn new(filters: Vec<(String, String)>) -> Self {
        Self(filters)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The filters as given (`key=value`), for messages and `/stats`.
    pub fn describe(&self) -> Vec<String> {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// Keeps only the selected connections of `config` (and its default connection only when
    /// it is one of them). Selecting nothing is an error that lists the tags the config has.
    pub fn select(&self, mut config: ManagerConfig) -> Result<ManagerConfig, String> {
        if self.is_empty() {
            return Ok(config);
        }
        let known: BTreeSet<String> = config
            .connections
            .values()
            .flat_map(|c| c.tags.iter().map(|(k, v)| format!("{k}={v}")))
            .collect();
        config.connections.retain(|_, c| {
            self.0
                .iter()
                .all(|(key, value)| c.tags.get(key).is_some_and(|v| v == value))
        });
        if config.connections.is_empty() {
            let known = if known.is_empty() {
                "no connection has tags".to_owned()
            } else {
                format!(
                    "tags in the config: {}",
                    known.into_iter().collect::<Vec<_>>().join(", ")
                )
            };
            return Err(format!(
                "no connection matches --tag {} ({known})",
                self.describe().join(" --tag ")
            ));
        }
        if config
            .default_connection
            .as_ref()
            .is_some_and(|d| !config.connections.contains_key(d))
        {
            config.default_connection = None;
        }
        Ok(config)
    }
}
