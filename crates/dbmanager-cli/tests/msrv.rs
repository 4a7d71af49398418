//! The minimum supported Rust version, checked as far as can be offline: every workspace package
//! declares the workspace's `rust-version`, and no dependency locked in `Cargo.lock` (for this
//! platform, every feature on) declares a newer one. Building with that toolchain itself needs a
//! download (`rustup toolchain install 1.94`), which these machines cannot do.

use std::process::Command;

fn version(text: &str) -> Vec<u64> {
    let mut parts: Vec<u64> = text.split('.').map(|p| p.parse().unwrap()).collect();
    parts.resize(3, 0);
    parts
}

#[test]
fn every_package_declares_the_msrv_and_no_dependency_needs_a_newer_rust() {
    let host = String::from_utf8(
        Command::new("rustc")
            .arg("-vV")
            .output()
            .expect("rustc runs")
            .stdout,
    )
    .unwrap();
    let host = host
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap()
        .to_owned();
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--all-features",
            "--filter-platform",
            &host,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members = metadata["workspace_members"].as_array().unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let own: Vec<_> = packages
        .iter()
        .filter(|p| members.contains(&p["id"]))
        .collect();
    assert_eq!(own.len(), 3, "the library, the CLI and the bench");
    let msrv = own[0]["rust_version"]
        .as_str()
        .expect("rust-version is set");
    for p in &own {
        assert_eq!(
            p["rust_version"], msrv,
            "{} declares another MSRV",
            p["name"]
        );
    }
    assert_eq!(msrv, "1.94", "the MSRV the README states");
    let too_new: Vec<String> = packages
        .iter()
        .filter_map(|p| {
            let theirs = p["rust_version"].as_str()?;
            (version(theirs) > version(msrv)).then(|| format!("{} {theirs}", p["name"]))
        })
        .collect();
    assert!(
        too_new.is_empty(),
        "dependencies that need a newer Rust than {msrv}: {too_new:?}"
    );
    // The check is not vacuous: the locked dependencies do declare their versions.
    let declared = packages
        .iter()
        .filter(|p| p["rust_version"].is_string())
        .count();
    assert!(
        declared > 50,
        "only {declared} packages declare a rust-version"
    );
}
