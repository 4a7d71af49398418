//! `dbmanager config schema` and `dbmanager config show`, run as a user runs them: the schema is
//! valid draft-07 and accepts the README's example; `show` gives each value's origin (default,
//! file line, `DBMANAGER__` variable, inherited, `${VAR}`), never prints a secret (a password, a
//! dsn's password, a `${VAR}`-expanded password, an override's password), and fails like
//! `check` on a bad config.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Secrets planted below; none may appear in any output.
const FILE_PASSWORD: &str = "File-Pw-S3cret-1";
const DSN_PASSWORD: &str = "Dsn-Pw-S3cret-2";
const EXPANDED_PASSWORD: &str = "Expanded-Pw-S3cret-3";
const OVERRIDE_PASSWORD: &str = "Override-Pw-S3cret-4";
const INIT_SQL_SECRET: &str = "Init-Sql-S3cret-5";

/// Runs the CLI with a clean environment plus `env`.
fn dbmanager(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dbmanager"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The README's example config (the YAML block under "## Configuration").
fn readme_example() -> String {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let section = readme.split("## Configuration").nth(1).unwrap();
    let block = section.split("```yaml\n").nth(1).unwrap();
    block.split("```").next().unwrap().to_owned()
}

fn yaml_as_json(yaml: &str) -> Value {
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options(yaml, options).unwrap()
}

fn schema() -> Value {
    let out = dbmanager(&["config", "schema"], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn the_schema_is_valid_and_checks_the_readme_example() {
    let schema = schema();
    assert!(
        jsonschema::draft7::meta::is_valid(&schema),
        "{:?}",
        jsonschema::draft7::meta::validate(&schema).err()
    );
    let validator = jsonschema::draft7::new(&schema).unwrap();
    let example = yaml_as_json(&readme_example());
    let errors: Vec<String> = validator
        .iter_errors(&example)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");

    // An unknown key, a wrong enum value, a bare number as a duration: refused.
    for bad in [
        "dbmanager:\n  max_open_connz: 3\n",
        "dbmanager:\n  connections:\n    a: {type: postgress, host: h, database: d}\n",
        "dbmanager:\n  connections:\n    a: {type: postgres, host: h, database: d, sslmode: strict}\n",
        "dbmanager:\n  retry_delay: 5\n",
        "other: 1\n",
    ] {
        assert!(!validator.is_valid(&yaml_as_json(bad)), "{bad}");
    }
    // The modeline the README shows is a comment: the file stays a valid config.
    let with_modeline = format!(
        "# yaml-language-server: $schema=dbmanager.schema.json\n{}",
        readme_example()
    );
    assert!(validator.is_valid(&yaml_as_json(&with_modeline)));
}

/// A config with every kind of origin and a secret in every place.
fn planted(dir: &Path) -> PathBuf {
    let config = dir.join("dbmanager.yaml");
    std::fs::write(
        &config,
        format!(
            "# a comment line\n\
             dbmanager:\n\
             \x20 default_connection: primary\n\
             \x20 retry_attempts: 5\n\
             \x20 connections:\n\
             \x20   primary:\n\
             \x20     type: postgres\n\
             \x20     host: ${{PG_HOST}}\n\
             \x20     database: app\n\
             \x20     user: app\n\
             \x20     password: {FILE_PASSWORD}\n\
             \x20     max_open_conns: 7\n\
             \x20     init_sql: [\"SET app.key = '{INIT_SQL_SECRET}'\"]\n\
             \x20     tags: {{team: data}}\n\
             \x20   analytics:\n\
             \x20     type: postgres\n\
             \x20     dsn: postgres://reader:{DSN_PASSWORD}@analytics:5432/analytics?sslmode=require\n\
             \x20   reporting:\n\
             \x20     type: postgres\n\
             \x20     host: reports\n\
             \x20     database: reports\n\
             \x20     user: reporter\n\
             \x20     password: ${{REPORTING_PASSWORD}}\n"
        ),
    )
    .unwrap();
    config
}

fn planted_env<'a>() -> Vec<(&'a str, &'a str)> {
    vec![
        ("PG_HOST", "db.internal"),
        ("REPORTING_PASSWORD", EXPANDED_PASSWORD),
        (
            "DBMANAGER__CONNECTIONS__PRIMARY__PASSWORD",
            OVERRIDE_PASSWORD,
        ),
        ("DBMANAGER__MAX_IDLE_CONNS", "3"),
        ("DBMANAGER__CONNECTIONS__REPORTING__CONNECT_TIMEOUT", "4s"),
    ]
}

fn assert_no_secret(stdout: &str, stderr: &str) {
    for secret in [
        FILE_PASSWORD,
        DSN_PASSWORD,
        EXPANDED_PASSWORD,
        OVERRIDE_PASSWORD,
        INIT_SQL_SECRET,
        "S3cret",
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "`{secret}` leaked:\n{stdout}\n{stderr}"
        );
    }
}

/// The line of the text output that sets `key` under the connection `connection` (or at the
/// manager level).
fn line<'a>(output: &'a str, connection: Option<&str>, key: &str) -> &'a str {
    let mut current: Option<&str> = None;
    for line in output.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if indent == 4 && trimmed.ends_with(':') {
            current = Some(trimmed.trim_end_matches(':'));
            continue;
        }
        let wanted_indent = if connection.is_some() { 6 } else { 2 };
        if indent == wanted_indent
            && trimmed.starts_with(&format!("{key}:"))
            && (connection.is_none() || current == connection)
        {
            return line;
        }
    }
    panic!("no line for {connection:?}.{key} in\n{output}")
}

#[test]
fn show_gives_each_values_origin_and_redacts_every_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = planted(dir.path());
    let out = dbmanager(
        &["config", "show", "--config", config.to_str().unwrap()],
        &planted_env(),
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_no_secret(&stdout, &stderr);

    let expect = |connection: Option<&str>, key: &str, parts: &[&str]| {
        let line = line(&stdout, connection, key);
        for part in parts {
            assert!(
                line.contains(part),
                "{connection:?}.{key}: {part:?} not in {line:?}"
            );
        }
    };
    // Defaults, the file (with lines), overrides, inheritance, `${VAR}`.
    expect(None, "max_open_conns", &["25", "# default"]);
    expect(None, "retry_attempts", &["5", "# file line 4"]);
    expect(
        None,
        "max_idle_conns",
        &["3", "# env DBMANAGER__MAX_IDLE_CONNS"],
    );
    expect(None, "default_connection", &["primary", "# file line 3"]);
    expect(
        Some("primary"),
        "host",
        &["db.internal", "# file line 8, ${PG_HOST}"],
    );
    expect(Some("primary"), "max_open_conns", &["7", "# file line 12"]);
    expect(
        Some("primary"),
        "max_idle_conns",
        &["3", "# from max_idle_conns"],
    );
    expect(Some("primary"), "connect_timeout", &["10s", "# default"]);
    expect(
        Some("primary"),
        "tags",
        &["{\"team\":\"data\"}", "# file line 14"],
    );
    expect(
        Some("primary"),
        "password",
        &[
            "\"[REDACTED]\"",
            "# env DBMANAGER__CONNECTIONS__PRIMARY__PASSWORD",
        ],
    );
    expect(
        Some("primary"),
        "init_sql",
        &["[\"[REDACTED]\"]", "# file line 13"],
    );
    expect(
        Some("analytics"),
        "dsn",
        &[
            "postgres://reader:[REDACTED]@analytics:5432/analytics?sslmode=require",
            "# file line 17",
        ],
    );
    expect(
        Some("analytics"),
        "max_open_conns",
        &["25", "# from max_open_conns"],
    );
    expect(
        Some("reporting"),
        "password",
        &["\"[REDACTED]\"", "# file line 23, ${REPORTING_PASSWORD}"],
    );
    expect(
        Some("reporting"),
        "connect_timeout",
        &[
            "4s",
            "# env DBMANAGER__CONNECTIONS__REPORTING__CONNECT_TIMEOUT",
        ],
    );
    assert!(stdout.contains(&config.display().to_string()), "{stdout}");
    // The output is YAML (origins are comments) with the effective values.
    let reread = yaml_as_json(&stdout);
    assert_eq!(reread["dbmanager"]["max_idle_conns"], 3);
    assert_eq!(
        reread["dbmanager"]["connections"]["primary"]["host"],
        "db.internal"
    );
    assert_eq!(
        reread["dbmanager"]["connections"]["reporting"]["connect_timeout"],
        "4s"
    );
}

#[test]
fn show_json_lists_settings_with_origins_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = planted(dir.path());
    let out = dbmanager(
        &[
            "config",
            "show",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ],
        &planted_env(),
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_no_secret(&stdout, &stderr);
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let effective = &doc["effective"]["dbmanager"];
    assert_eq!(effective["retry_attempts"], 5);
    assert_eq!(
        effective["connections"]["primary"]["password"],
        "[REDACTED]"
    );
    assert_eq!(
        effective["connections"]["reporting"]["password"],
        "[REDACTED]"
    );
    let settings = doc["settings"].as_array().unwrap();
    let find = |path: &str| {
        settings
            .iter()
            .find(|s| s["path"] == path)
            .unwrap_or_else(|| panic!("no {path} in {stdout}"))
    };
    assert_eq!(find("max_open_conns")["origins"][0]["kind"], "default");
    let retry = find("retry_attempts");
    assert_eq!(retry["origins"][0]["kind"], "file");
    assert_eq!(retry["origins"][0]["line"], 4);
    let password = find("connections.primary.password");
    assert_eq!(password["secret"], true);
    assert_eq!(password["origins"][0]["kind"], "env");
    assert_eq!(
        password["origins"][0]["var"],
        "DBMANAGER__CONNECTIONS__PRIMARY__PASSWORD"
    );
    let expanded = find("connections.reporting.password");
    assert_eq!(
        expanded["expanded_from"],
        serde_json::json!(["REPORTING_PASSWORD"])
    );
    let inherited = find("connections.analytics.max_idle_conns");
    assert_eq!(inherited["origins"][0]["kind"], "inherited");
    assert_eq!(inherited["origins"][0]["key"], "max_idle_conns");
    assert_eq!(inherited["value"], 3);
}

#[test]
fn show_without_config_explains_the_embedded_quickstart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let out = dbmanager(&["config", "show"], &[("DBMANAGER_DATA_DIR", &data)]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("the embedded quick-start config"),
        "{stdout}"
    );
    let filepath = line(&stdout, Some("main"), "filepath");
    assert!(
        filepath.contains(&format!("{data}/quickstart.sqlite"))
            && filepath.contains("${DBMANAGER_DATA_DIR}"),
        "{filepath}"
    );
    // A connection only in the environment shows up, with its variables as origins.
    let out = dbmanager(
        &["config", "show"],
        &[
            ("DBMANAGER_DATA_DIR", &data),
            ("DBMANAGER__CONNECTIONS__EXTRA__TYPE", "sqlite"),
            ("DBMANAGER__CONNECTIONS__EXTRA__FILEPATH", ":memory:"),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let kind = line(&stdout, Some("extra"), "type");
    assert!(
        kind.contains("# env DBMANAGER__CONNECTIONS__EXTRA__TYPE"),
        "{kind}"
    );
}

#[test]
fn an_invalid_config_lists_every_problem_exits_2_and_echoes_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(
        &config,
        format!(
            "dbmanager:\n  connections:\n    a: {{type: postgres, port: 0, user: u, password: {FILE_PASSWORD}, hots: h}}\n    b: {{type: sqlit, dsn: 'x://u:{DSN_PASSWORD}@h'}}\n    c: {{type: postgres, host: '${{HOST_SECRET}}', database: d, port: '${{HOST_SECRET}}'}}\n"
        ),
    )
    .unwrap();
    let env = [("HOST_SECRET", EXPANDED_PASSWORD)];
    for json in [false, true] {
        let mut args = vec!["config", "show", "--config", config.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let out = dbmanager(&args, &env);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        for expected in [
            "connections.a.database: required for postgres",
            "connections.a.port: 0 is not a valid port",
            "connections.a.hots: unknown key",
            "connections.b.type: `sqlit` is not valid",
            "connections.c.port: the value (from `${...}`) is not a whole number",
        ] {
            assert!(
                stderr.contains(expected),
                "missing {expected:?} in {stderr}"
            );
        }
        assert_no_secret(&stdout, &stderr);
    }
    // A missing file: exit 2, named.
    let missing = dir.path().join("missing.yaml");
    let out = dbmanager(
        &["config", "show", "--config", missing.to_str().unwrap()],
        &[],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("missing.yaml"), "{stderr}");
}

#[test]
fn show_rejects_the_hostile_corpus_like_check_and_leaks_nothing() {
    let corpus = workspace().join("crates/dbmanager/tests/hostile");
    let fixtures = tempfile::tempdir().unwrap();
    let made = Command::new("mkfifo")
        .arg(fixtures.path().join("fifo"))
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(fixtures.path().join("big"), vec![b'x'; 64 * 1024 + 1]).unwrap();
    let fixture_dir = fixtures.path().display().to_string();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "the corpus is there: {cases:?}");
    for case in &cases {
        let expected = std::fs::read_to_string(case.with_extension("expected")).unwrap();
        let out = dbmanager(
            &["config", "show", "--config", case.to_str().unwrap()],
            &[
                ("HOSTILE_DIR", &fixture_dir),
                ("HOSTILE_SECRET", "Hostile-S3cret-env"),
            ],
        );
        let (stdout, stderr) = text(&out);
        let name = case.display();
        assert_eq!(out.status.code(), Some(2), "{name}\n{stdout}\n{stderr}");
        assert!(
            stderr.contains(expected.trim_end()),
            "{name}: expected\n{expected}\ngot\n{stderr}"
        );
        assert!(
            !stdout.contains("S3cret") && !stderr.contains("S3cret"),
            "{name} leaks:\n{stdout}\n{stderr}"
        );
    }
}
