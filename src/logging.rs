//! Logging: to the journal with structured fields when running under systemd, plain text on stderr
//! otherwise. `PERCH_LOG` (or `RUST_LOG`) sets the filter, e.g. `PERCH_LOG=perch=debug`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. `default` is the filter when no environment variable sets one.
pub fn init(default: &str) {
    let filter = std::env::var("PERCH_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| default.to_string());
    // ONNX Runtime logs every graph rewrite at info: keep it to warnings unless asked.
    let filter = if filter.contains("ort") { filter } else { format!("{filter},ort=warn") };
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new(default));
    // systemd sets JOURNAL_STREAM when stderr goes to the journal: log natively there, keeping fields.
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        let _ = tracing_subscriber::registry().with(filter).with(journald.with_syslog_identifier("perch".into())).try_init();
        return;
    }
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()).with_target(false))
        .try_init();
}
