//! Logs to stderr, and OpenTelemetry traces exported over OTLP/HTTP when the usual `OTEL_*`
//! variables ask for it (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`;
//! `OTEL_TRACES_EXPORTER=none` turns it off; `OTEL_SERVICE_NAME` names the service).

use std::io::IsTerminal as _;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::filter::{FilterExt as _, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::progress;

/// Flushes pending spans when dropped.
pub struct Telemetry(Option<SdkTracerProvider>);

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: flushing traces failed: {e}");
        }
    }
}

fn otlp_wanted() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
    let exporter = std::env::var("OTEL_TRACES_EXPORTER").unwrap_or_default();
    exporter != "none"
        && (set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            || exporter == "otlp")
}

fn provider() -> Option<SdkTracerProvider> {
    if !otlp_wanted() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("warning: OTLP trace export is off: {e}");
            return None;
        }
    };
    Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .build(),
    )
}

/// Installs the subscriber: `DBMANAGER_LOG` filters the stderr log (default `warn`); spans go to
/// OTLP when configured; the library's retry events also feed `check`'s progress display.
pub fn init() -> Telemetry {
    let filter =
        EnvFilter::try_from_env("DBMANAGER_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    // While `check` draws its progress on the terminal, the library's connection events are
    // shown there instead of running through it.
    let not_shown = filter_fn(|meta| {
        !(progress::ACTIVE.load(std::sync::atomic::Ordering::Relaxed)
            && meta.target().starts_with("dbmanager"))
    });
    // A per-layer filter: the log stays quiet while the OTLP layer still sees every span.
    // Field values are escaped: an error can quote a server's message, which can quote the
    // config, control characters included; the log must not rewrite the terminal it is on.
    let fields = tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let value = crate::text::escaped(&format!("{value:?}"));
        if field.name() == "message" {
            write!(writer, "{value}")
        } else {
            write!(writer, "{}={value}", field.name())
        }
    })
    .delimited(" ");
    let fmt = tracing_subscriber::fmt::layer()
        .fmt_fields(fields)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter.and(not_shown));
    let retries = progress::RetryCapture
        .with_filter(Targets::new().with_target("dbmanager", tracing::Level::WARN));
    let provider = provider();
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("dbmanager")));
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(retries)
        .with(otel)
        .try_init();
    Telemetry(provider)
}
