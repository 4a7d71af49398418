//! Where the CLI's config comes from: a file, or the embedded quick-start config.

use std::path::{Path, PathBuf};

use dbmanager::{Error, Manager, ManagerConfig};

use crate::tags::TagFilter;

/// The embedded quick-start config.
pub const QUICKSTART: &str = include_str!("quickstart.yaml");

/// Loads the config from `path`, or the embedded quick-start config (creating its data
/// directory, since SQLite refuses a missing parent directory).
pub fn config(path: Option<&Path>) -> Result<ManagerConfig, Error> {
    Ok(match path {
        Some(path) => ManagerConfig::from_file(path)?,
        None => {
            let config = ManagerConfig::from_yaml_str(QUICKSTART)?;
            for connection in config.connections.values() {
                if let Some(dir) = connection.filepath.as_deref().and_then(Path::parent) {
                    let dir: PathBuf = dir.to_path_buf();
                    if !dir.as_os_str().is_empty() {
                        let _ = std::fs::create_dir_all(&dir);
                    }
                }
            }
            config
        }
    })
}

/// The manager of the connections of `path` (or the quick-start config) that `filter`
/// selects; on failure, prints the problems and returns the CLI's exit code.
pub fn manager_or_exit(path: Option<&Path>, filter: &TagFilter) -> Result<Manager, u8> {
    let print = |e: Error| {
        match &e {
            Error::Config(_) => eprintln!("{e}"),
            _ => eprintln!("error: {e}"),
        }
        crate::EXIT_CONFIG
    };
    let config = config(path).map_err(print)?;
    let config = filter.select(config).map_err(|e| {
        eprintln!("error: {e}");
        crate::EXIT_CONFIG
    })?;
    Manager::new(config).map_err(print)
}
