//! The status page of `dbmanager serve`, loaded in a real browser (headless Chromium): what it
//! renders after its script ran, on a desktop and a phone-sized window, plus screenshots.
//!
//! Needs Chromium (`chromium` on the PATH, or `DBMANAGER_CHROMIUM`); `scripts/test.sh` installs
//! the Debian package when it is missing.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Served, wait_for, write_file};

const SECRET: &str = "Secret-PW-status-page-731";

fn chromium() -> PathBuf {
    if let Ok(path) = std::env::var("DBMANAGER_CHROMIUM") {
        return PathBuf::from(path);
    }
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            && out.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        }
    }
    panic!(
        "headless Chromium is needed: `apt-get install -y chromium` (scripts/test.sh installs it), \
         or set DBMANAGER_CHROMIUM"
    );
}

/// Runs headless Chromium on `url` with `extra` arguments; returns its stdout. A fresh profile
/// per run; killed after 90 s.
fn run_chromium(url: &str, window: (u32, u32), extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out_path = profile.path().join("stdout");
    let err_path = profile.path().join("stderr");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=3000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("p").display()
        ))
        .arg(format!("--window-size={},{}", window.0, window.1))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status.success(), "chromium failed ({status}): {stderr}");
    std::fs::read_to_string(&out_path).unwrap()
}

/// The DOM after the page's script ran.
fn dump_dom(url: &str, window: (u32, u32)) -> String {
    let dom = run_chromium(url, window, &["--dump-dom"]);
    assert!(dom.contains("</html>"), "no DOM dumped: {dom}");
    dom
}

/// A screenshot of `url`; returns the PNG's width and height.
fn screenshot(url: &str, window: (u32, u32), file: &Path) -> (u32, u32) {
    let _ = std::fs::remove_file(file);
    run_chromium(url, window, &[&format!("--screenshot={}", file.display())]);
    let png = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    (be(16), be(20))
}

/// The `<section>` of one connection's card.
fn card<'a>(dom: &'a str, name: &str) -> &'a str {
    let start = dom
        .find(&format!("data-connection=\"{name}\""))
        .unwrap_or_else(|| panic!("no card for {name} in {dom}"));
    let start = dom[..start].rfind("<section").unwrap();
    let end = start + dom[start..].find("</section>").unwrap();
    &dom[start..end]
}

/// The value of `attr="..."` in the first element of `html` with class `class`.
fn attr(html: &str, class: &str, attr: &str) -> String {
    let at = html
        .find(&format!("class=\"{class}\""))
        .unwrap_or_else(|| panic!("no .{class} in {html}"));
    let tag = &html[at..at + html[at..].find('>').unwrap()];
    let key = format!("{attr}=\"");
    let from = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {attr} on .{class}: {tag}"))
        + key.len();
    tag[from..from + tag[from..].find('"').unwrap()].to_owned()
}

fn number(html: &str, class: &str, name: &str) -> f64 {
    attr(html, class, name).parse().unwrap()
}

/// The width (in %) CSSOM gave a bar segment.
fn width(html: &str, class: &str) -> f64 {
    let style = attr(html, class, "style");
    style
        .trim_start_matches("width:")
        .trim()
        .trim_end_matches(';')
        .trim_end_matches('%')
        .parse()
        .unwrap_or_else(|e| panic!("{style}: {e}"))
}

#[test]
fn the_status_page_renders_every_connection_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = write_file(
        dir.path(),
        "c.yaml",
        &format!(
            "dbmanager:
  health_check_interval: 300ms
  retry_attempts: 1
  connections:
    lite:
      type: sqlite
      filepath: '{}'
      max_open_conns: 4
    pg-down:
      type: postgres
      host: 127.0.0.1
      port: {refused}
      user: app
      password: {SECRET}
      database: app
      sslmode: disable
    archive:
      type: sqlite
      filepath: '{}/missing-dir/<b id=\"xss\">a</b>.db'
",
            dir.path().join("lite.db").display(),
            dir.path().display(),
        ),
    );
    let served = Served::start(
        &["--config", &config, "--sample-interval", "0.2"],
        dir.path(),
    );
    // Wait until the page has something to draw: both failures known, and a few samples of the
    // healthy connection including a health check.
    let settled = wait_for(Duration::from_secs(20), || {
        let page = served.json("/status.json");
        let by = |name: &str| {
            page["connections"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .cloned()
                .unwrap()
        };
        let lite = by("lite");
        by("pg-down")["last_error"].is_string()
            && by("archive")["last_error"].is_string()
            && lite["up"] == true
            && lite["history"]["t"].as_array().unwrap().len() >= 3
            && lite["history"]["health_ms"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v.is_number())
    });
    assert!(settled, "{}", served.get("/status.json").body);
    let json = served.get("/status.json").body;
    assert!(
        !json.contains(SECRET),
        "the password leaked into status.json"
    );

    let url = served.url("/");
    let dom = dump_dom(&url, (1280, 900));
    assert!(!dom.contains(SECRET), "the password leaked into the page");
    assert!(
        dom.contains("3 connections: 1 up, 2 down · NOT READY"),
        "{dom}"
    );
    // The banner saying the server cannot be reached stays hidden.
    assert_eq!(attr(&dom, "stale", "hidden"), "");

    let lite = card(&dom, "lite");
    assert!(lite.contains("data-status=\"healthy\""), "{lite}");
    assert!(
        lite.contains("<span class=\"type\">sqlite</span>"),
        "{lite}"
    );
    assert!(!lite.contains("class=\"error"), "{lite}");
    assert_eq!(number(lite, "bar", "data-max"), 4.0);
    let (in_use, idle) = (
        number(lite, "bar", "data-in-use"),
        number(lite, "bar", "data-idle"),
    );
    // Open, idle or in use: a health check may hold it at the moment of the sample.
    assert!(
        in_use + idle >= 1.0,
        "the pool keeps its connection: {lite}"
    );
    assert_eq!(width(lite, "seg in-use"), in_use * 25.0, "{lite}");
    assert_eq!(width(lite, "seg idle"), idle * 25.0, "{lite}");
    assert!(number(lite, "spark in-use", "data-points") >= 3.0, "{lite}");
    assert!(
        number(lite, "spark latency", "data-points") >= 1.0,
        "{lite}"
    );
    assert!(lite.contains("<polyline points=\""), "{lite}");

    let pg = card(&dom, "pg-down");
    assert!(pg.contains("data-status=\"unavailable\""), "{pg}");
    assert!(pg.contains("<span class=\"type\">postgres</span>"), "{pg}");
    assert!(
        pg.contains("class=\"error\">connection `pg-down`: connect failed")
            && pg.contains("refused"),
        "the down connection's error: {pg}"
    );
    assert_eq!(number(pg, "bar", "data-open"), 0.0);
    assert_eq!(width(pg, "seg in-use"), 0.0);
    assert_eq!(width(pg, "seg idle"), 0.0);

    // An error quoting markup is shown as text, never parsed.
    let archive = card(&dom, "archive");
    assert!(archive.contains("data-status=\"unavailable\""), "{archive}");
    // (The library's message escapes the quotes in the path; the markup stays text either way.)
    assert!(
        archive.contains("&lt;b id=")
            && archive.contains("xss")
            && archive.contains("a&lt;/b&gt;.db"),
        "{archive}"
    );
    assert!(
        !dom.contains("<b id=\"xss\">"),
        "markup from an error was parsed"
    );

    // Layout: several columns on a desktop, one on a phone, never wider than the screen.
    let desktop_columns = attr(&dom, "cards", "data-columns");
    assert!(
        desktop_columns.parse::<u32>().unwrap() >= 2,
        "{desktop_columns}"
    );
    assert!(dom.contains("data-overflow=\"false\""), "{dom}");
    let phone = dump_dom(&url, (390, 844));
    assert_eq!(attr(&phone, "cards", "data-columns"), "1");
    assert!(phone.contains("data-overflow=\"false\""), "{phone}");

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&shots).unwrap();
    let desktop = shots.join("desktop.png");
    let phone = shots.join("phone.png");
    assert_eq!(screenshot(&url, (1280, 900), &desktop), (1280, 900));
    assert_eq!(screenshot(&url, (390, 844), &phone), (390, 844));
    // Written to the stderr handle itself, which the test harness does not capture: the path
    // shows in the output of a passing run too.
    let _ = writeln!(
        std::io::stderr(),
        "status page screenshots: {} {}",
        desktop.display(),
        phone.display()
    );
    assert_eq!(served.stop(), Some(0));
}

#[test]
fn the_page_is_small_self_contained_and_locked_down() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(&[], dir.path());
    let page = served.get("/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap_or_default();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} missing from {csp:?}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert!(page.body.contains("name=\"viewport\""), "{}", page.body);

    let css = served.get("/status.css");
    let js = served.get("/status.js");
    assert_eq!((css.status, js.status), (200, 200));
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    assert!(
        js.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    let total = page.body.len() + css.body.len() + js.body.len();
    assert!(total < 20_000, "the page weighs {total} bytes");
    // Nothing loaded from elsewhere: only relative references (the SVG namespace is a name).
    for (name, body) in [("html", &page.body), ("css", &css.body), ("js", &js.body)] {
        let external = body
            .match_indices("http")
            .map(|(i, _)| &body[i..body.len().min(i + 40)])
            .filter(|s| !s.starts_with("http://www.w3.org/2000/svg"))
            .collect::<Vec<_>>();
        assert!(external.is_empty(), "{name} references {external:?}");
        assert!(
            !body.contains("@import") && !body.contains("url("),
            "{name}"
        );
    }
    assert!(!page.body.contains("<script>"), "no inline script");
    assert!(!page.body.contains("<style"), "no inline style");

    assert!(wait_for(Duration::from_secs(10), || served
        .json("/status.json")["up"]
        == 1));
    let status = served.get("/status.json");
    assert_eq!(status.header("cache-control"), Some("no-store"));
    let json: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(json["window_seconds"], 600);
    assert_eq!(json["sample_interval_seconds"], 5.0);
    assert_eq!(json["connections"][0]["name"], "main");
    assert_eq!(json["connections"][0]["pool"]["max"], 4);
    assert_eq!(served.stop(), Some(0));
}
