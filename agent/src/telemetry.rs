//! Logging: readable on a terminal, compact or JSON when captured (journald, files).

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Pretty with colours on a terminal, compact otherwise.
    Auto,
    Pretty,
    Compact,
    Json,
}

const OPCUA_CRATES: [&str; 5] = [
    "opcua_client",
    "opcua_core",
    "opcua_crypto",
    "opcua_types",
    "opcua_nodes",
];

/// Installs the global subscriber. `verbosity` is -q count subtracted from -v count: 0 = info.
/// `RUST_LOG` overrides the level when set: `level` and `target=level` directives, comma-separated
/// (the span and field filters of `EnvFilter` are not supported: its regex engine cost the gateway
/// binary more than it gave).
pub fn init(format: LogFormat, verbosity: i8) {
    init_into(format, verbosity, None);
}

/// Like [`init`], with the log written to `file` instead of stderr (the demo's screen owns the
/// terminal).
pub fn init_into(format: LogFormat, verbosity: i8, file: Option<std::fs::File>) {
    let level = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        // Trace events are compiled out of release builds; -vv adds the libraries' debug logs.
        2..=i8::MAX => "trace",
    };
    // The OPC UA library logs every failed reconnect and every publish itself; the agent reports
    // what matters (failures with their reason, refused nodes, lost sessions) once. Its own log
    // shows with -vv or RUST_LOG.
    let directives = if verbosity >= 2 {
        level.to_string()
    } else {
        format!(
            "{level},{}",
            OPCUA_CRATES.map(|c| format!("{c}=off")).join(",")
        )
    };
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .or_else(|| directives.parse().ok())
        .unwrap_or_default();
    let terminal = file.is_none() && std::io::stderr().is_terminal();
    let writer = match file {
        Some(file) => BoxMakeWriter::new(std::sync::Mutex::new(file)),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(false);
    let format = match format {
        LogFormat::Auto if terminal => LogFormat::Pretty,
        LogFormat::Auto => LogFormat::Compact,
        other => other,
    };
    let registry = tracing_subscriber::registry();
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => registry.with(layer.json().with_filter(filter)).try_init(),
        LogFormat::Compact => registry
            .with(layer.compact().with_ansi(false).with_filter(filter))
            .try_init(),
        LogFormat::Pretty | LogFormat::Auto => registry
            .with(layer.with_ansi(terminal).with_filter(filter))
            .try_init(),
    };
}
