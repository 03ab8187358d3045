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

/// Installs the global subscriber. `verbosity` is -q count subtracted from -v count: 0 = info.
/// `RUST_LOG` overrides the level when set.
pub fn init(format: LogFormat, verbosity: i8) {
    let level = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        2..=i8::MAX => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
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
