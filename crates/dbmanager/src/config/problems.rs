//! Configuration problems, collected so that one run reports all of them.

use std::collections::HashSet;
use std::fmt;

/// One problem, located by its dotted path (`connections.analytics.port`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigProblem {
    /// Dotted path of the offending key (empty for the document itself).
    pub path: String,
    /// What is wrong, and where possible how to fix it. Never contains a secret value.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All problems found, sorted by path then message so the order is stable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigProblems(Vec<ConfigProblem>);

impl ConfigProblems {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Appends `suffix(path)` to the message of every problem for which it gives one.
    pub(crate) fn annotate(&mut self, suffix: impl Fn(&str) -> Option<String>) {
        for problem in &mut self.0 {
            if let Some(suffix) = suffix(&problem.path) {
                problem.message.push_str(&suffix);
            }
        }
    }

    /// The problems, in stable order.
    pub fn iter(&self) -> impl Iterator<Item = &ConfigProblem> {
        self.0.iter()
    }

    /// How many problems there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when empty, else the sorted problems as an error.
    pub(crate) fn into_result(mut self) -> Result<(), ConfigProblems> {
        if self.0.is_empty() {
            return Ok(());
        }
        self.0.sort();
        self.0.dedup();
        Err(self)
    }

    pub(crate) fn extend(&mut self, other: ConfigProblems) {
        self.0.extend(other.0);
    }
}

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for problem in &self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigProblems {}

/// The problems of one connection, each recorded under `connections.<name>.<field>`.
pub(crate) struct ConnectionProblems<'a> {
    key: &'a str,
    problems: &'a mut ConfigProblems,
    interpolated: &'a HashSet<String>,
}

impl<'a> ConnectionProblems<'a> {
    /// `interpolated`: dotted paths whose values came from `${VAR}`; they are never quoted.
    pub(crate) fn new(
        key: &'a str,
        problems: &'a mut ConfigProblems,
        interpolated: &'a HashSet<String>,
    ) -> Self {
        Self {
            key,
            problems,
            interpolated,
        }
    }

    /// `text`, the value of `field`, as a message may show it: quoted, or, when it came from
    /// `${VAR}` (which may hold any environment variable), a neutral description.
    pub(crate) fn shown(&self, field: &str, text: &str) -> String {
        shown(
            self.interpolated,
            &format!("connections.{}.{field}", self.key),
            text,
        )
    }

    /// The connection's key.
    pub(crate) fn key(&self) -> &str {
        self.key
    }

    /// The paths whose values came from `${VAR}`.
    pub(crate) fn interpolated(&self) -> &'a HashSet<String> {
        self.interpolated
    }

    /// Records a problem at a full path (one found under another key, e.g. a replica's).
    pub(crate) fn push_at(&mut self, path: String, message: String) {
        self.problems.push(path, message);
    }

    /// Records a problem with `field` of this connection.
    pub(crate) fn push(&mut self, field: &str, message: impl Into<String>) {
        let path = format!("connections.{}.{field}", self.key);
        self.problems.push(path, message);
    }
}

/// `text` at `path` as a message may show it (see [`ConnectionProblems::shown`]).
pub(crate) fn shown(interpolated: &HashSet<String>, path: &str, text: &str) -> String {
    if interpolated.contains(path) {
        "the value (from `${...}`)".to_owned()
    } else {
        format!("`{}`", printable(text))
    }
}

/// The longest value shown in a message, in characters; longer ones are cut with `…`.
const SHOWN_CHARS: usize = 64;

/// `text` safe for a terminal or a log line: control characters and bidirectional overrides
/// escaped (`\u{1b}`), cut after [`SHOWN_CHARS`] characters.
pub(crate) fn printable(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == SHOWN_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() || is_bidi_control(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A bidirectional-override or -isolate character: it can reorder what a terminal or a log
/// viewer shows around it.
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `text` holds a character [`printable`] would escape.
pub(crate) fn has_unprintable(text: &str) -> bool {
    text.chars()
        .any(|c| printable(&c.to_string()) != c.to_string())
}

/// A "did you mean" suffix when a known word is close to the unknown one.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    let best = candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, c)) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}
