//! The YAML document as a tree whose scalars keep exactly the text that was written.
//!
//! serde-saphyr is read twice: once into `serde_json::Value`, which gives the structure and the
//! type YAML infers for each scalar (`1.50` a number, `true` a boolean, `~` null), then again
//! guided by that structure, asking for every scalar as a string, which serde-saphyr answers with
//! the scalar's own text (`1.50`, not `1.5`; `0x1F`, not `31`). So a string field gets what was
//! written, and a number field can still tell `10` from `'10'`.
//!
//! Both reads run under the same budget ([`options`]): a document of at most
//! [`MAX_DOCUMENT_BYTES`], bounded events, nodes, nesting, anchors, aliases and alias replay, so an
//! alias bomb ("billion laughs") is rejected in milliseconds. YAML errors are rendered from their
//! kind and location only ([`yaml_error`]): no message quotes the document.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::ExternalMessageSource;
use serde_saphyr::granit_parser::ErrorKind as ScanErrorKind;

/// The largest configuration document accepted (1 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// YAML budget: parser events per document.
pub const MAX_YAML_EVENTS: usize = 100_000;
/// YAML budget: nodes (mappings, sequences and scalars) per document.
pub const MAX_YAML_NODES: usize = 50_000;
/// YAML budget: nesting depth.
pub const MAX_YAML_DEPTH: usize = 64;
/// YAML budget: anchors, and aliases, per document.
pub const MAX_YAML_ANCHORS: usize = 1_000;
/// YAML budget: events replayed through aliases in total (what stops an alias bomb).
pub const MAX_YAML_ALIAS_REPLAY: usize = 50_000;

/// How YAML typed a scalar (YAML 1.2 core schema, strict booleans).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false` in any case.
    Bool,
    /// An integer or float spelling.
    Number,
    /// Anything else, quoted or not.
    Text,
}

/// Where a scalar's text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Written in the document.
    Document,
    /// A `DBMANAGER__...` override for this very key.
    Override,
    /// Produced by `${VAR}` interpolation: it may hold any environment variable, a password
    /// included, so it is never quoted in a message.
    Interpolated,
}

/// One scalar: its text exactly as written, how YAML typed it, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scalar {
    pub text: String,
    pub kind: Kind,
    pub origin: Origin,
    /// Its line in the document, from 1 (0: not from the document, or unknown).
    pub line: usize,
    /// The `DBMANAGER__...` variable that set it (an override).
    pub env: Option<String>,
    /// The variables `${VAR}` interpolation read into it (names only).
    pub expanded: Vec<String>,
}

impl Scalar {
    /// The value of the override `var`.
    pub(crate) fn overridden(text: String, var: &str) -> Self {
        Self {
            text,
            kind: Kind::Text,
            origin: Origin::Override,
            line: 0,
            env: Some(var.to_owned()),
            expanded: Vec::new(),
        }
    }

    /// The value for a message: quoted when it may be shown, else a neutral description.
    pub(crate) fn shown(&self) -> String {
        match self.origin {
            Origin::Interpolated => "the value (from `${...}`)".to_owned(),
            Origin::Document | Origin::Override => {
                format!("`{}`", super::problems::printable(&self.text))
            }
        }
    }

    /// Whether the text may appear in a message.
    pub(crate) fn quotable(&self) -> bool {
        self.origin != Origin::Interpolated
    }
}

/// A node of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Map(BTreeMap<String, Node>),
    Seq(Vec<Node>),
    Scalar(Scalar),
}

impl Node {
    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Node::Scalar(s) if s.kind == Kind::Null)
    }
}

/// The options of both reads: no snippets (an excerpt could quote a password), YAML 1.2
/// booleans only, `0755` kept as text, duplicate keys rejected, and the budget.
pub(crate) fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_reader_input_bytes = Some(MAX_DOCUMENT_BYTES);
    budget.max_total_scalar_bytes = MAX_DOCUMENT_BYTES;
    budget.max_events = MAX_YAML_EVENTS;
    budget.max_nodes = MAX_YAML_NODES;
    budget.max_depth = MAX_YAML_DEPTH;
    budget.max_anchors = MAX_YAML_ANCHORS;
    budget.max_aliases = MAX_YAML_ANCHORS;
    budget.max_merge_keys = MAX_YAML_ANCHORS;
    budget.max_recorded_anchor_events = MAX_YAML_ALIAS_REPLAY;
    budget.max_recorded_anchor_bytes = MAX_DOCUMENT_BYTES;
    budget.max_documents = 1;
    let mut aliases = serde_saphyr::options::AliasLimits::default();
    aliases.max_total_replayed_events = MAX_YAML_ALIAS_REPLAY;
    aliases.max_replay_stack_depth = 16;
    let mut options = serde_saphyr::options! {
        with_snippet: false,
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        null_as_string: true,
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::AsString,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    };
    options.budget = Some(budget);
    options.alias_limits = aliases;
    options
}

/// Parses the document; the error is a message that quotes nothing of the document.
pub(crate) fn parse(yaml: &str) -> Result<Node, String> {
    if yaml.len() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "the document is larger than {} KiB",
            MAX_DOCUMENT_BYTES / 1024
        ));
    }
    if is_empty_document(yaml) {
        return Err(format!(
            "the document is empty: it needs the root key `{}:`",
            super::load::ROOT_KEY
        ));
    }
    let shape: Value =
        serde_saphyr::from_str_with_options(yaml, options()).map_err(|e| yaml_error(&e))?;
    serde_saphyr::with_deserializer_from_str_with_options(yaml, options(), |d| {
        Guided(&shape).deserialize(d)
    })
    .map_err(|e| yaml_error(&e))
}

/// Whether the document holds no node at all: nothing but blank lines, comments and a byte
/// order mark. YAML reads it as an empty stream, which is valid YAML, so it gets its own message
/// rather than "unexpected end of input".
fn is_empty_document(yaml: &str) -> bool {
    yaml.trim_start_matches('\u{feff}').lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#')
    })
}

/// A YAML error from its kind and location; the library's own text is used only for kinds whose
/// message carries no document text.
pub(crate) fn yaml_error(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error as E;
    let at = match e.location() {
        Some(l) if l.line() > 0 => format!(" at line {}, column {}", l.line(), l.column()),
        _ => String::new(),
    };
    let what = match e {
        E::AliasError { error, .. } => return yaml_error(error),
        E::DuplicateMappingKey { key, .. } => match key.as_deref() {
            // Only a configuration key is named: any other key may hold a value.
            Some(key) if super::load::is_config_key(key) => {
                format!("a mapping has the key `{key}` twice{at}")
            }
            _ => format!("a mapping has the same key twice{at}"),
        },
        E::Budget { .. }
        | E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. }
        | E::AliasReplayCounterOverflow { .. } => {
            format!("the document exceeds the configuration YAML budget (see README, Limits): {e}")
        }
        E::ExternalMessage { source, .. } => match source.as_ref() {
            ExternalMessageSource::Parser(scan) => format!("{}{at}", syntax_error(scan.kind())),
            _ => format!("a value of an unexpected type or form{at}"),
        },
        // Scanner and parser messages are fixed texts with a location.
        E::Message { .. }
        | E::Eof { .. }
        | E::Unexpected { .. }
        | E::UnknownAnchor { .. }
        | E::InvalidScalar { .. }
        | E::MultipleDocuments { .. }
        | E::ContainerEndMismatch { .. }
        | E::UnexpectedSequenceEnd { .. }
        | E::UnexpectedMappingEnd { .. }
        | E::MergeValueNotMapOrSeqOfMaps { .. }
        | E::FoldedBlockScalarMustIndentContent { .. }
        | E::InvalidUtf8Input => e.to_string(),
        E::TaggedScalarCannotDeserializeIntoString { .. } | E::InvalidBinaryBase64 { .. } => {
            format!("a tagged scalar cannot be read as text (remove the tag){at}")
        }
        _ => format!("a value of an unexpected type or form{at}"),
    };
    format!("the document is not valid YAML: {what}")
}

/// What a scanner or parser error says, when that is a fixed text. The scanner's own texts are
/// fixed for every kind without data (`unclosed quote`, `tab cannot be used as indentation`);
/// of the kinds with data only those holding brackets or limits are shown as they are. A kind
/// that carries a character of the document, or any other text (a custom message, an I/O or
/// decoding detail), is described without it: it could be part of a password.
fn syntax_error(kind: &ScanErrorKind) -> String {
    use ScanErrorKind as K;
    match kind {
        K::UnexpectedCharacter { .. } => {
            "a character YAML does not allow here (a reserved indicator or a non-printable \
             character)"
                .to_owned()
        }
        K::MismatchedFlowCollectionEnd { .. }
        | K::UnclosedFlowCollection { .. }
        | K::InputByteLimitExceeded { .. }
        | K::DirectiveByteLimitExceeded { .. }
        | K::TooManyReservedDirectiveParams { .. } => kind.to_string(),
        // A kind without data has a fixed text; `Debug` of a unit variant is its bare name.
        _ if format!("{kind:?}")
            .chars()
            .all(|c| c.is_ascii_alphanumeric()) =>
        {
            kind.to_string()
        }
        _ => "a syntax error".to_owned(),
    }
}

/// Reads one node as the shape says: a mapping or sequence recursively, a scalar as its text.
struct Guided<'a>(&'a Value);

impl<'de> DeserializeSeed<'de> for Guided<'_> {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        let kind = match self.0 {
            Value::Object(map) => return d.deserialize_map(MapVisitor(map)),
            Value::Array(items) => return d.deserialize_seq(SeqVisitor(items)),
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::Text,
        };
        // `Spanned` adds the location; the text is read exactly as without it.
        let spanned = <serde_saphyr::Spanned<RawText> as serde::Deserialize>::deserialize(d)?;
        Ok(Node::Scalar(Scalar {
            text: spanned.value.0,
            kind,
            origin: Origin::Document,
            line: usize::try_from(spanned.referenced.line()).unwrap_or(0),
            env: None,
            expanded: Vec::new(),
        }))
    }
}

/// A scalar's own text (see [`TextVisitor`]).
struct RawText(String);

impl<'de> serde::Deserialize<'de> for RawText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_string(TextVisitor).map(RawText)
    }
}

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<String, E> {
        String::from_utf8(v.to_vec()).map_err(|_| E::custom("a binary scalar is not UTF-8 text"))
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_string(TextVisitor)
    }
}

struct MapVisitor<'a>(&'a serde_json::Map<String, Value>);

impl<'de> Visitor<'de> for MapVisitor<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Node, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = access.next_key_seed(KeySeed)? {
            let Some(shape) = self.0.get(&key) else {
                return Err(de::Error::custom(
                    "the two reads of the document disagree on a key",
                ));
            };
            let value = access.next_value_seed(Guided(shape))?;
            out.insert(key, value);
        }
        Ok(Node::Map(out))
    }
}

struct SeqVisitor<'a>(&'a [Value]);

impl<'de> Visitor<'de> for SeqVisitor<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Node, A::Error> {
        let mut out = Vec::with_capacity(self.0.len());
        for shape in self.0 {
            match access.next_element_seed(Guided(shape))? {
                Some(node) => out.push(node),
                None => break,
            }
        }
        if out.len() != self.0.len() || access.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(
                "the two reads of the document disagree on a sequence",
            ));
        }
        Ok(Node::Seq(out))
    }
}
