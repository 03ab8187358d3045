//! The `millwright` command line: parse arguments, load and validate the configuration, hand the
//! plan to the library, turn the outcome into an exit code. Errors are printed once, with their
//! chain.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use millwright::app::Control;
use millwright::clock::SystemClock;
use millwright::commands::{self, exit};
use millwright::service::ServiceManager;
use millwright::telemetry::{self, LogFormat};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// One allocator for every build (see `millwright::allocator` and the note above `main`).
#[global_allocator]
static ALLOCATOR: millwright::allocator::Heap = millwright::allocator::Heap;

#[derive(Parser)]
#[command(
    name = "millwright",
    version,
    about = "Edge agent for industrial gateways"
)]
struct Cli {
    /// More log output: -v debug; -vv also the OPC UA library's own log (trace level in debug builds).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    quiet: u8,
    #[arg(long, value_enum, default_value = "auto", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum LedsAction {
    /// Each output steady for --hold, then off, one after the other. Stop the agent first: it
    /// owns the outputs while it runs.
    Test {
        #[arg(short, long)]
        config: PathBuf,
        #[arg(long, default_value = "1s")]
        hold: humantime::Duration,
    },
}

#[derive(Subcommand)]
enum QualityAction {
    /// Forget a characteristic's learned control limits and learn them again from its next
    /// baseline (after a tool change, a new fixture, a process fix). Through the running agent,
    /// or in the saved file when no agent runs.
    Relearn {
        #[arg(short, long)]
        config: PathBuf,
        /// `<station>/<characteristic>`, as `millwright check` lists them.
        characteristic: String,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Poll every device on its schedule until stopped (SIGINT/SIGTERM); SIGHUP reloads the
    /// configuration (validated first; an invalid one is reported and the running one kept).
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration; print every mistake with file:line:col, or the request plan.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Read every tag once and print raw registers (Modbus) and decoded values (commissioning).
    Read {
        #[arg(short, long)]
        config: PathBuf,
        /// Only these devices or OPC UA endpoints (repeatable).
        #[arg(long)]
        device: Vec<String>,
        /// Also assess every asset once from the values read (rules and models).
        #[arg(long)]
        assess: bool,
    },
    /// Show the outbox: records queued per class, oldest record, drops, dead letters (from the
    /// running agent through its control socket, or from the store itself when no agent runs).
    Outbox {
        #[arg(short, long)]
        config: PathBuf,
        /// List the dead letters: records the broker would not take, with the reason.
        #[arg(long, group = "dead")]
        dead_letters: bool,
        /// Append every dead letter to its stream again (once the cause is fixed).
        #[arg(long, group = "dead")]
        retry_dead_letters: bool,
        /// Remove every dead letter for good.
        #[arg(long, group = "dead")]
        drop_dead_letters: bool,
    },
    /// List the running agent's alerts (through its control socket).
    Alerts {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Acknowledge an alert of the running agent (or all of them with --all).
    Ack {
        #[arg(short, long)]
        config: PathBuf,
        /// The alert's id, as `millwright alerts` shows it.
        #[arg(required_unless_present = "all")]
        alert_id: Option<String>,
        #[arg(long, conflicts_with = "alert_id")]
        all: bool,
        /// Who acknowledges (recorded with the transition).
        #[arg(long, default_value = "local")]
        by: String,
    },
    /// Shelve an alert: hide it from the local outputs for a while (up to alerts.max_shelve).
    Shelve {
        #[arg(short, long)]
        config: PathBuf,
        alert_id: String,
        /// For how long, e.g. 30m or 2h.
        #[arg(long = "for")]
        duration: String,
        #[arg(long, default_value = "local")]
        by: String,
    },
    /// End an alert's shelving early.
    Unshelve {
        #[arg(short, long)]
        config: PathBuf,
        alert_id: String,
        #[arg(long, default_value = "local")]
        by: String,
    },
    /// An asset's latest vibration spectra and diagnosis, from the running agent; or, with --file,
    /// the same analysis of a recorded waveform (WAV, or CSV with one value per line) using the
    /// asset's [assets.waveform] and bearings.
    Spectrum {
        #[arg(short, long)]
        config: PathBuf,
        /// The asset's id.
        asset: String,
        /// Analyse this recording instead of asking the running agent.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Shaft speed of the recording, rpm (when the configuration takes it from a tag).
        #[arg(long, requires = "file")]
        rpm: Option<f64>,
        /// Print the reply as JSON: the report and both spectra.
        #[arg(long)]
        json: bool,
        /// Show the envelope spectrum up to this frequency (JSON).
        #[arg(long, default_value_t = commands::ENVELOPE_MAX_HZ)]
        envelope_max_hz: f64,
    },
    /// Quality stations: relearn a characteristic's control limits.
    Quality {
        #[command(subcommand)]
        action: QualityAction,
    },
    /// Commissioning of the alert outputs: `leds test` turns each configured output on, then off.
    Leds {
        #[command(subcommand)]
        action: LedsAction,
    },
    /// Fetch an OPC UA server's certificate, show it, and trust it (pki/trusted/) after
    /// confirmation. Needed once per server before a secured endpoint connects.
    Trust {
        #[arg(short, long)]
        config: PathBuf,
        /// The `[[opcua]]` endpoint's name.
        #[arg(long)]
        endpoint: String,
        /// Trust without asking (only when the thumbprint was checked another way).
        #[arg(long)]
        yes: bool,
        /// Instead: make a new application certificate for this agent (after agent.name or
        /// application_uri changed); servers must then trust the new one.
        #[arg(long, conflicts_with = "yes")]
        renew_certificate: bool,
    },
    /// Walk an OPC UA server's address space and print NodeIds, browse names and data types.
    Browse {
        #[arg(short, long)]
        config: PathBuf,
        /// The `[[opcua]]` endpoint's name.
        #[arg(long)]
        endpoint: String,
        /// Start here instead of the Objects folder (e.g. "ns=2;s=Line1").
        #[arg(long)]
        node: Option<String>,
        /// Levels below the start node.
        #[arg(long, default_value_t = 4)]
        depth: usize,
        /// Stop after this many nodes.
        #[arg(long, default_value_t = 5000)]
        limit: usize,
    },
    /// Feed recorded tag values (CSV) through the agent's own stages (windows, features, rules,
    /// model, limits, alert lifecycle) as fast as the CPU allows, and say what it would have said.
    Replay {
        #[arg(short, long)]
        config: PathBuf,
        /// History: long CSV (timestamp,tag,value[,quality]) or wide CSV (timestamp, then one
        /// column per tag).
        #[arg(long)]
        input: PathBuf,
        /// `max`, or a factor of real time such as `10x`.
        #[arg(long, default_value = "max")]
        speed: millwright::replay::run::Speed,
        /// Write every assessment, action change and alert transition as JSON lines (and the
        /// summary as the last line).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Recorded failures (CSV: asset,time): lead time before each, false alarms per
        /// asset-month.
        #[arg(long)]
        failures: Option<PathBuf>,
        /// How long before a failure a warning still counts as a warning of it.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30d")]
        horizon: std::time::Duration,
    },
    /// Print the configuration's JSON Schema (for editor completion; not in gateway builds).
    #[cfg(feature = "schema")]
    Schema,
    /// Serve a simulated plant over Modbus TCP, Modbus RTU with --serial, and OPC UA with --opcua.
    #[cfg(feature = "sim")]
    Simulate {
        #[arg(short, long)]
        config: PathBuf,
        /// TCP listen address, overriding the file's `listen`.
        #[arg(long)]
        listen: Option<String>,
        /// Also serve Modbus RTU on this serial device.
        #[arg(long)]
        serial: Option<String>,
        /// Also serve the same machines over OPC UA on this address (e.g. 127.0.0.1:4840).
        #[arg(long)]
        opcua: Option<String>,
    },
    /// Training data: runs the configuration's assets against a simulated fleet in accelerated
    /// time and writes one CSV row of model features and label per asset and step.
    #[cfg(feature = "sim")]
    Dataset {
        /// Agent configuration (devices, assets).
        #[arg(short, long)]
        config: PathBuf,
        /// Simulator configuration (machines with run-to-failure profiles).
        #[arg(long)]
        sim: PathBuf,
        /// Simulated time per run.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "14d")]
        duration: std::time::Duration,
        /// Time between rows.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
        step: std::time::Duration,
        /// Label rows whose machine fails within this horizon.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "48h")]
        horizon: std::time::Duration,
        /// Output CSV file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Self-contained demo: simulator, agent and status page on loopback.
    #[cfg(feature = "sim")]
    Demo {
        /// Stop after this long (e.g. "30s"); default: until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Where to serve the status page (a port in use falls back to a free one).
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: std::net::SocketAddr,
    },
}

// The allocator is the agent's own mix (`millwright::allocator`): dlmalloc for small blocks, a
// mapping of their own for large ones, the same on musl and glibc. Measured at the reference load
// (footprint bench, static musl build, same run): musl's malloc 10.3 MiB RSS at 0.74 % of a core;
// dlmalloc alone 38.5 MiB (it touches large zeroed blocks that mappings leave untouched); the mix
// 10.7 MiB at 0.58 %. mimalloc 0.1.52 measured 55 MiB (20 MiB tuned) in an earlier release.
fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let verbosity = cli.verbose as i8 - cli.quiet as i8;
    #[cfg(feature = "sim")]
    if let Command::Demo { duration, http } = cli.command {
        return demo(duration, http, cli.log_format, verbosity);
    }
    telemetry::init(cli.log_format, verbosity);
    let runtime = match runtime(worker_threads()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    ExitCode::from(runtime.block_on(dispatch(cli.command)))
}

/// `millwright demo`: on a terminal the screen is redrawn in place and the log goes to a file in
/// the run's private data directory.
#[cfg(feature = "sim")]
fn demo(
    duration: Option<std::time::Duration>,
    http: std::net::SocketAddr,
    log_format: LogFormat,
    verbosity: i8,
) -> ExitCode {
    use std::io::IsTerminal as _;
    let dir = match commands::DemoDir::create() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: cannot create the demo's data directory: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let screen = std::io::stdout().is_terminal();
    let log = screen
        .then(|| std::fs::File::create(dir.log_path()).ok())
        .flatten();
    telemetry::init_into(log_format, verbosity, log);
    let runtime = match runtime(2) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let options = commands::DemoOptions {
        duration,
        http,
        screen,
    };
    let said =
        runtime.block_on(async { commands::demo(options, &dir, shutdown_on_signal()).await });
    // The screen's last frame stays; the summary goes under it.
    ExitCode::from(printed(said).unwrap_or_else(|code| code))
}

/// The async runtime with `workers` threads, or the exit code after saying why not.
fn runtime(workers: usize) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(exit::FAILURE)
        })
}

/// Async worker threads: `MILLWRIGHT_WORKER_THREADS` (1 to 8), else the default.
fn worker_threads() -> usize {
    std::env::var("MILLWRIGHT_WORKER_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| (1..=8).contains(n))
        .unwrap_or(DEFAULT_WORKER_THREADS)
}

/// One: at the reference load a second worker cost 13 % more CPU in four paired footprint runs
/// (1.54 and 1.64 % of a core against 1.36 and 1.38 %), most of it in waking each other. Nothing
/// slow runs on the worker: the outbox flush and model rounds go to the blocking pool, synced
/// state files are written with the worker's queue handed over (`files::off_the_worker`).
/// `MILLWRIGHT_WORKER_THREADS=2` gives polling a second core on a busy multi-core gateway.
const DEFAULT_WORKER_THREADS: usize = 1;

/// An exit code that ends a command early (the reason is printed already).
type Early = u8;

async fn dispatch(command: Command) -> u8 {
    route(command).await.unwrap_or_else(|code| code)
}

/// Routes a command to its function: nothing else.
async fn route(command: Command) -> Result<u8, Early> {
    match command {
        Command::Check { config } => check(&config),
        Command::Outbox {
            config,
            dead_letters,
            retry_dead_letters,
            drop_dead_letters,
        } => {
            let action = match (dead_letters, retry_dead_letters, drop_dead_letters) {
                (true, _, _) => commands::OutboxAction::DeadLetters,
                (_, true, _) => commands::OutboxAction::RetryDeadLetters,
                (_, _, true) => commands::OutboxAction::DropDeadLetters,
                _ => commands::OutboxAction::Show,
            };
            let plan = plan(&config)?;
            printed(commands::outbox_report(&plan, action, &SystemClock).await)
        }
        Command::Alerts { config } => {
            ask_agent(&config, "status", json!({}), |status| {
                commands::format_alerts(&status["alerts"])
            })
            .await
        }
        Command::Ack {
            config,
            alert_id,
            all,
            by,
        } => ack(&config, alert_id, all, by).await,
        Command::Shelve {
            config,
            alert_id,
            duration,
            by,
        } => {
            let args = json!({ "alert_id": alert_id, "duration": duration, "by": by });
            ask_agent(&config, "shelve-alert", args, |result| {
                let until = result["shelved_until"].as_str().unwrap_or("?");
                format!("shelved {alert_id} until {until}\n")
            })
            .await
        }
        Command::Unshelve {
            config,
            alert_id,
            by,
        } => {
            let args = json!({ "alert_id": alert_id, "by": by });
            ask_agent(&config, "unshelve-alert", args, |_| {
                format!("unshelved {alert_id}\n")
            })
            .await
        }
        Command::Spectrum {
            config,
            asset,
            file,
            rpm,
            json,
            envelope_max_hz,
        } => {
            let say = move |reply: &serde_json::Value| {
                if json {
                    format!("{reply}\n")
                } else {
                    commands::format_spectrum(reply)
                }
            };
            match file {
                Some(file) => {
                    let plan = plan(&config)?;
                    printed(
                        commands::waveform_asset(&plan, &asset)
                            .and_then(|a| commands::analyze_file(a, &file, rpm))
                            .map(|latest| say(&latest.to_json(&asset, envelope_max_hz))),
                    )
                }
                None => {
                    let args = json!({ "asset": asset, "envelope_max_hz": envelope_max_hz });
                    ask_agent(&config, "spectrum", args, say).await
                }
            }
        }
        Command::Leds {
            action: LedsAction::Test { config, hold },
        } => leds_test(&config, hold.into()).await,
        Command::Quality {
            action:
                QualityAction::Relearn {
                    config,
                    characteristic,
                },
        } => {
            let plan = plan(&config)?;
            printed(commands::relearn(&plan, &characteristic).await)
        }
        Command::Trust {
            config,
            endpoint,
            yes,
            renew_certificate,
        } => {
            let plan = plan(&config)?;
            if renew_certificate {
                printed(commands::renew_certificate(&plan, &endpoint).map(|said| said + "\n"))
            } else {
                printed(
                    commands::trust(&plan, &endpoint, yes)
                        .await
                        .map(|()| String::new()),
                )
            }
        }
        Command::Browse {
            config,
            endpoint,
            node,
            depth,
            limit,
        } => {
            let plan = plan(&config)?;
            printed(commands::browse(&plan, &endpoint, node.as_deref(), depth, limit).await)
        }
        Command::Replay {
            config,
            input,
            speed,
            out,
            failures,
            horizon,
        } => {
            let loaded = loaded(&config)?;
            let job = commands::ReplayJob {
                input,
                speed,
                out,
                failures,
                horizon,
            };
            let replayed = tokio::task::spawn_blocking(move || commands::replay(&loaded, job))
                .await
                .map_err(anyhow::Error::from)
                .and_then(|result| result);
            printed(replayed)
        }
        #[cfg(feature = "schema")]
        Command::Schema => printed(
            serde_json::to_string_pretty(&firmware_config::json_schema())
                .map(|text| text + "\n")
                .map_err(anyhow::Error::from),
        ),
        Command::Read {
            config,
            device,
            assess,
        } => read(&config, &device, assess).await,
        Command::Run { config } => run(config).await,
        #[cfg(feature = "sim")]
        Command::Simulate {
            config,
            listen,
            serial,
            opcua,
        } => {
            let (sim, plant) = millwright::sim::load(&config).map_err(|e| config_failed(&e))?;
            // The simulator's OPC UA certificate lives beside its configuration.
            let opcua = opcua.map(|listen| {
                let dir = config.parent().unwrap_or_else(|| std::path::Path::new("."));
                (listen, dir.join("sim-pki"))
            });
            let served =
                commands::simulate(sim, plant, listen, serial, opcua, shutdown_on_signal()).await;
            printed(served.map(|()| String::new()))
        }
        #[cfg(feature = "sim")]
        Command::Dataset {
            config,
            sim,
            duration,
            step,
            horizon,
            out,
        } => {
            let plan = plan(&config)?;
            let (_, plant) = millwright::sim::load(&sim).map_err(|e| config_failed(&e))?;
            let options = millwright::sim::dataset::DatasetOptions {
                duration,
                step,
                polls_per_step: 10,
                horizon,
            };
            dataset(&plan, &plant, &options, &out)
        }
        #[cfg(feature = "sim")]
        Command::Demo { .. } => unreachable!("the demo runs before the runtime's dispatch"),
    }
}

/// The validated configuration, or every mistake printed.
fn plan(config: &Path) -> Result<firmware_config::Plan, Early> {
    firmware_config::load(config).map_err(|errors| config_failed(&errors))
}

/// The validated configuration with its models loaded, or every mistake printed.
fn loaded(config: &Path) -> Result<millwright::app::Loaded, Early> {
    millwright::app::load(config).map_err(|errors| config_failed(&errors))
}

/// Prints what a command said, or its error.
fn printed(said: anyhow::Result<String>) -> Result<u8, Early> {
    match said {
        Ok(text) => {
            print!("{text}");
            Ok(exit::OK)
        }
        Err(e) => Err(failed(&e)),
    }
}

fn check(config: &Path) -> Result<u8, Early> {
    let loaded = loaded(config)?;
    print!("{}", commands::check_report(&loaded));
    print!(
        "{}",
        commands::lines_report(&loaded.plan, millwright::clock::Clock::now(&SystemClock))
    );
    print!("{}", commands::quality_report(&loaded.plan));
    for warning in millwright::files::warnings(config, &loaded.plan) {
        println!("warning: {warning}");
    }
    Ok(exit::OK)
}

async fn ack(config: &Path, alert_id: Option<String>, all: bool, by: String) -> Result<u8, Early> {
    let args = json!({ "alert_id": alert_id, "all": all, "by": by });
    ask_agent(config, "ack-alert", args, |result| {
        match result["acknowledged"].as_u64() {
            Some(count) => format!("acknowledged {count} alert(s)\n"),
            None => format!(
                "acknowledged {}\n",
                result["alert_id"].as_str().unwrap_or("")
            ),
        }
    })
    .await
}

async fn leds_test(config: &Path, hold: std::time::Duration) -> Result<u8, Early> {
    let plan = plan(config)?;
    if plan.alerting.outputs.is_empty() {
        eprintln!("no [[outputs]] configured (nor a gateway profile)");
        return Ok(exit::FAILURE);
    }
    let failed_outputs = millwright::outputs::cycle(&plan, hold, |line| println!("{line}")).await;
    if failed_outputs == 0 {
        Ok(exit::OK)
    } else {
        eprintln!("{failed_outputs} output(s) failed");
        Ok(exit::FAILURE)
    }
}

async fn read(config: &Path, device: &[String], assess: bool) -> Result<u8, Early> {
    let loaded = loaded(config)?;
    let plan = &loaded.plan;
    let unknown: Vec<_> = device
        .iter()
        .filter(|d| !plan.sources().iter().any(|p| p.source == d.as_str()))
        .collect();
    if !unknown.is_empty() {
        eprintln!(
            "error: no device or OPC UA endpoint named {unknown:?} in {}",
            config.display()
        );
        return Ok(exit::USAGE);
    }
    let rows = commands::read_once(plan, device).await;
    print!("{}", commands::format_read(&rows));
    if assess {
        print!("{}", commands::assess_once(&loaded, &rows, &SystemClock));
    }
    if rows.iter().all(commands::ReadRow::is_good) {
        Ok(exit::OK)
    } else {
        Ok(exit::READ_INCOMPLETE)
    }
}

async fn run(config: PathBuf) -> Result<u8, Early> {
    let loaded = loaded(&config)?;
    for warning in millwright::files::warnings(&config, &loaded.plan) {
        tracing::warn!("{warning}");
    }
    let control = Control {
        shutdown: shutdown_on_signal(),
        reload_requests: reload_on_sighup(),
        service: ServiceManager::from_environment(),
    };
    let reload = Box::new(move || millwright::app::load(&config));
    let ran = millwright::app::run(loaded, reload, Arc::new(SystemClock), control).await;
    printed(ran.map(|()| String::new()))
}

#[cfg(feature = "sim")]
fn dataset(
    plan: &firmware_config::Plan,
    plant: &millwright::sim::plant::Plant,
    options: &millwright::sim::dataset::DatasetOptions,
    out: &Path,
) -> Result<u8, Early> {
    let written = std::fs::File::create(out)
        .map(std::io::BufWriter::new)
        .map_err(anyhow::Error::from)
        .and_then(|mut file| {
            let rows = millwright::sim::dataset::write(plan, plant, options, &mut file)?;
            std::io::Write::flush(&mut file)?;
            Ok(rows)
        });
    match written {
        Ok(rows) => {
            eprintln!("{rows} rows written to {}", out.display());
            Ok(exit::OK)
        }
        Err(e) => Err(failed(&e.context(format!("writing {}", out.display())))),
    }
}

fn config_failed(errors: &impl ConfigProblems) -> u8 {
    eprintln!("{errors}");
    eprintln!("error: {} mistake(s) in the configuration", errors.count());
    exit::CONFIG
}

/// Configuration mistakes, from the file or from the models it names.
trait ConfigProblems: std::fmt::Display {
    fn count(&self) -> usize;
}

impl ConfigProblems for firmware_config::ConfigErrors {
    fn count(&self) -> usize {
        self.0.len()
    }
}

impl ConfigProblems for millwright::app::LoadError {
    fn count(&self) -> usize {
        millwright::app::LoadError::count(self)
    }
}

/// Sends `command` to the agent running with `config` and prints `say(result)`.
async fn ask_agent(
    config: &Path,
    command: &str,
    args: serde_json::Value,
    say: impl FnOnce(&serde_json::Value) -> String,
) -> Result<u8, Early> {
    let plan = plan(config)?;
    printed(
        commands::ask_running_agent(&plan, command, args)
            .await
            .map(|result| say(&result)),
    )
}

fn failed(error: &anyhow::Error) -> u8 {
    eprintln!("error: {error:#}");
    exit::FAILURE
}

/// One message per SIGHUP (the service unit's `ExecReload`).
fn reload_on_sighup() -> tokio::sync::mpsc::Receiver<()> {
    let (requests, receiver) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangup.recv().await.is_some() {
            // A reload already queued covers this one too.
            let _ = requests.try_send(());
        }
    });
    #[cfg(not(unix))]
    drop(requests);
    receiver
}

/// Cancelled on SIGINT or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        trigger.cancel();
    });
    token
}
