//! `millwright replay`: recorded history through the agent's stages (see [`crate::replay`]).

use crate::clock::SystemClock;

/// What `millwright replay` was asked to do.
pub struct ReplayJob {
    pub input: std::path::PathBuf,
    pub speed: crate::replay::run::Speed,
    pub out: Option<std::path::PathBuf>,
    pub failures: Option<std::path::PathBuf>,
    pub horizon: std::time::Duration,
}

/// Runs a replay with progress on stderr; the summary to print.
pub fn replay(loaded: &crate::app::Loaded, job: ReplayJob) -> anyhow::Result<String> {
    use crate::replay::run;
    use anyhow::Context as _;
    use std::io::{IsTerminal, Write};

    let failures = match &job.failures {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            run::read_failures(loaded, path.clone(), &text)?
        }
        None => Vec::new(),
    };
    let input = std::fs::File::open(&job.input)
        .with_context(|| format!("cannot read {}", job.input.display()))?;
    let mut out: Box<dyn Write> = match &job.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::sink()),
    };
    let options = run::Options {
        speed: job.speed,
        failures,
        horizon: job.horizon,
    };
    let terminal = std::io::stderr().is_terminal();
    let mut shown = 0u64;
    let mut progress = |line: &str| {
        // On a terminal one line rewritten every second; in a log one line every ten.
        shown += 1;
        if terminal {
            eprint!("\r{line}\x1b[K");
        } else if shown % 10 == 1 {
            eprintln!("{line}");
        }
    };
    let summary = run::replay(
        loaded,
        std::io::BufReader::with_capacity(1 << 16, input),
        job.input.clone(),
        &options,
        &mut out,
        &SystemClock,
        &mut progress,
    )?;
    if terminal && shown > 0 {
        eprintln!();
    }
    writeln!(out, "{}", run::summary_json(&summary))?;
    out.flush().context("cannot write the findings")?;
    Ok(run::format_summary(&summary, job.failures.is_some()))
}
