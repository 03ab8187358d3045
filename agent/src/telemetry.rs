//! Logging: readable on a terminal, compact or JSON when captured (journald, files).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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
/// `RUST_LOG` overrides the level when set.
pub fn init(format: LogFormat, verbosity: i8) {
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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives));
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let format = match format {
        LogFormat::Auto if terminal => LogFormat::Pretty,
        LogFormat::Auto => LogFormat::Compact,
        other => other,
    };
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Compact => builder.compact().with_ansi(false).try_init(),
        LogFormat::Pretty | LogFormat::Auto => builder.with_ansi(terminal).try_init(),
    };
}
