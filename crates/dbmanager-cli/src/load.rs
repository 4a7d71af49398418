//! Where the CLI's config comes from: a file, or the embedded quick-start config.

use std::path::{Path, PathBuf};

use dbmanager::{Error, Manager, ManagerConfig};

/// The embedded quick-start config.
pub const QUICKSTART: &str = include_str!("quickstart.yaml");

/// Loads the manager from `path`, or from the embedded quick-start config (creating its data
/// directory, since SQLite refuses a missing parent directory).
pub fn manager(path: Option<&Path>) -> Result<Manager, Error> {
    let config = match path {
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
    };
    Manager::new(config)
}

/// Like [`manager`], printing the problems and returning the CLI's exit code on failure.
pub fn manager_or_exit(path: Option<&Path>) -> Result<Manager, u8> {
    manager(path).map_err(|e| {
        match &e {
            Error::Config(_) => eprintln!("{e}"),
            _ => eprintln!("error: {e}"),
        }
        crate::EXIT_CONFIG
    })
}
