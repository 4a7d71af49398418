//! The layering ARCHITECTURE.md describes, checked on the source: no import cycle between the
//! crate's concerns, and backend cargo features named only where a backend is plugged in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Backend cargo features; a backend's folder is its feature with `_` for `-`.
const BACKENDS: [&str; 6] = [
    "postgres",
    "tokio-postgres",
    "sqlite",
    "mysql",
    "mssql",
    "mongodb",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `concern` → the concerns its non-test code names as `crate::<concern>`.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&root).unwrap();
        let first = relative.iter().next().unwrap().to_string_lossy();
        let concern = first.trim_end_matches(".rs").to_owned();
        if concern == "lib" || concern.ends_with("_tests") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        let entry = deps.entry(concern.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != concern {
                entry.insert(name);
            }
        }
    }
    deps
}

fn reaches(deps: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(next) = stack.pop() {
        for dep in deps.get(&next).into_iter().flatten() {
            if dep == to {
                return true;
            }
            if seen.insert(dep.clone()) {
                stack.push(dep.clone());
            }
        }
    }
    false
}

#[test]
fn no_import_cycle_between_concerns() {
    let deps = dependencies();
    assert!(deps.contains_key("backends") && deps.contains_key("manager"));
    let cycles: Vec<String> = deps
        .keys()
        .filter(|c| reaches(&deps, c, c))
        .cloned()
        .collect();
    assert!(
        cycles.is_empty(),
        "concerns on a cycle: {cycles:?}\n{deps:#?}"
    );
}

#[test]
fn the_core_names_no_backend_and_backends_are_plugged_in_only_at_the_seam() {
    let deps = dependencies();
    // Only the registry reaches into the backends folder.
    let into_backends: Vec<&String> = deps
        .iter()
        .filter(|(c, d)| d.contains("backends") && c.as_str() != "registry")
        .map(|(c, _)| c)
        .collect();
    assert!(into_backends.is_empty(), "{into_backends:?}");

    // A backend feature is named at module declarations, in the registry, and on the public
    // per-backend shortcuts and re-exports; nowhere else outside the backend's folder.
    let root = src();
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut misplaced = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let in_own_folder = BACKENDS
            .iter()
            .any(|b| relative.starts_with(&format!("backends/{}/", b.replace('-', "_"))));
        if in_own_folder || relative == "registry.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let names_backend = BACKENDS
                .iter()
                .any(|b| line.contains(&format!("feature = \"{b}\"")));
            // The crate-level lint switch for one-backend builds names features too.
            if !names_backend || line.trim_start().starts_with("//") || line.contains("not(all(") {
                continue;
            }
            // The item the attribute applies to (multi-line `any(...)` attributes included).
            let item = lines[i + 1..]
                .iter()
                .map(|l| l.trim_start())
                .find(|l| !l.starts_with('#') && !l.starts_with("feature") && !l.starts_with(')'))
                .unwrap_or_default();
            let allowed = item.starts_with("pub(crate) mod ")
                || item.starts_with("mod ")
                || item.starts_with("pub use ")
                || item.starts_with("pub fn ")
                || item.starts_with("fn ")
                || item.starts_with("compile_error!")
                || item.starts_with("\"dbmanager needs")
                || item.starts_with("pub mod ");
            if !allowed {
                misplaced.push(format!("{relative}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        misplaced.is_empty(),
        "backend cfgs outside the seam:\n{}",
        misplaced.join("\n")
    );
}
