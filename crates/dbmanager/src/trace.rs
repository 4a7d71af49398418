//! Spans with the OpenTelemetry database-client attributes, for connections with
//! `enable_tracing: true` in builds with the `otel` feature. Applications export them with `tracing-opentelemetry`; with tracing
//! off a span is `Span::none()`, which costs next to nothing.

use std::sync::Arc;

use tracing::Span;

use crate::config::ConnectionConfig;

/// What every span of one connection carries.
#[derive(Debug)]
pub(crate) struct Tracer {
    enabled: bool,
    statements: bool,
    connection: Arc<str>,
    system: &'static str,
    namespace: String,
    address: String,
    port: u16,
}

impl Tracer {
    /// `system`: OpenTelemetry's `db.system.name`; `default_port`: the backend's.
    pub(crate) fn new(
        name: Arc<str>,
        c: &ConnectionConfig,
        system: &'static str,
        default_port: Option<u16>,
    ) -> Self {
        // The database name, or for an embedded database its file.
        let namespace = c
            .database
            .clone()
            .or_else(|| c.filepath.as_ref().map(|p| p.display().to_string()));
        Self {
            // Without the `otel` feature spans compile away to `Span::none()`.
            enabled: cfg!(feature = "otel") && c.enable_tracing,
            statements: c.trace_statements,
            connection: name,
            system,
            namespace: namespace.unwrap_or_default(),
            // From the fields only: a dsn may carry a password, so it is never parsed for spans.
            address: c.host.clone().unwrap_or_default(),
            port: c.port.or(default_port).unwrap_or(0),
        }
    }

    /// A span for `operation` (`connect`, `connect_attempt`, `health_check`, `reconnect`,
    /// `acquire`, `query`, ...), named `<operation> <connection>`.
    pub(crate) fn span(&self, operation: &'static str) -> Span {
        // With no subscriber that could take an INFO span (none installed, or all filtering it
        // out), `info_span!` still builds its fields for the `log` crate's fallback (about 180
        // instructions per statement); a span that no subscriber sees is not worth that.
        if !self.enabled || tracing::level_filters::LevelFilter::current() < tracing::Level::INFO {
            return Span::none();
        }
        tracing::info_span!(
            "dbmanager",
            // Formatted only by a subscriber that records it: no allocation per statement.
            otel.name = tracing::field::display(SpanName(operation, &self.connection)),
            otel.status_code = tracing::field::Empty,
            "db.system" = self.system,
            "db.namespace" = self.namespace.as_str(),
            "server.address" = self.address.as_str(),
            "server.port" = self.port,
            "db.operation.name" = operation,
            "db.query.text" = tracing::field::Empty,
            "dbmanager.connection" = &*self.connection,
            "dbmanager.attempt" = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
        )
    }

    /// A query span; the statement text only when `trace_statements` is on.
    pub(crate) fn query_span(&self, operation: &'static str, sql: &str) -> Span {
        let span = self.span(operation);
        if self.statements {
            span.record("db.query.text", sql);
        }
        span
    }
}

/// A span's name, `<operation> <connection>`, written when a subscriber records it.
struct SpanName<'a>(&'static str, &'a str);

impl std::fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

/// Marks a span as failed with the error's kind (never its message, which is already redacted
/// but may be long).
pub(crate) fn record_outcome<T>(span: &Span, outcome: &crate::Result<T>) {
    if let Err(e) = outcome {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", e.kind().as_str());
    }
}
