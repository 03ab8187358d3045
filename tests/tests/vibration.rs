//! Waveform diagnosis end to end: the simulator serves acceleration waveforms as OPC UA Float
//! arrays and as Modbus register blocks, the agent binary reads them over real sessions,
//! diagnoses the bearing, and `millwright spectrum` returns the latest spectra through the control
//! socket; recordings dropped into a folder are diagnosed too.

use std::time::Duration;

use millwright_tests::{millwright_bin, simulate_opcua, AgentProcess, Sim};

const SIM: &str = include_str!("../fixtures/vibration-sim.toml");
const AGENT: &str = include_str!("../fixtures/vibration-agent.toml");

/// The last `assessment` log line of `asset` seen within `within`.
async fn assessment_of(
    agent: &mut AgentProcess,
    asset: &str,
    within: Duration,
) -> serde_json::Value {
    let line = agent
        .log
        .wait_for(within, |line| {
            line.contains("\"assessment\"") && line.contains(&format!("\"asset\":\"{asset}\""))
        })
        .await
        .unwrap_or_else(|| panic!("no assessment of {asset}:\n{}", agent.log.transcript()));
    serde_json::from_str(&line).expect("JSON log line")
}

/// `millwright spectrum ARGS -c CONFIG`, within 20 s.
async fn run_spectrum(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(millwright_bin())
        .arg("spectrum")
        .args(args)
        .arg("-c")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .output();
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("spectrum answers within 20 s")
        .expect("spectrum runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearing_defect_is_diagnosed_from_opc_ua_waveforms_and_its_spectrum_is_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = dir.path().join("sim.toml");
    std::fs::write(&sim, SIM).expect("sim config");
    let (_simulator, port) = simulate_opcua(&sim).await;
    let config = dir.path().join("agent.toml");
    let text = AGENT
        .replace("127.0.0.1:4840", &format!("127.0.0.1:{port}"))
        .replace("[agent]\n", "[agent]\ndata_dir = \"state\"\n");
    std::fs::write(&config, text).expect("agent config");
    let mut agent = AgentProcess::spawn(&config);

    // G-1's buffer is too small for the fan's waveforms: the first is rejected and said at once
    // (then every hundredth).
    let rejected = agent
        .wait_log(Duration::from_secs(30), "waveform rejected")
        .await
        .unwrap_or_else(|| panic!("{}", agent.log.transcript()));
    assert_eq!(rejected["fields"]["asset"], "G-1", "{rejected}");
    assert!(
        rejected["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("longer than max_samples = 4096")),
        "{rejected}"
    );

    // The motor: an outer-race defect named with its frequency, in the reasons and the report.
    let motor = assessment_of(&mut agent, "M-1", Duration::from_secs(60)).await;
    let reasons = motor["fields"]["reasons"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let motor = loop {
        if reasons.contains("outer race defect suspected on bearing DE: BPFO") {
            break motor;
        }
        let next = assessment_of(&mut agent, "M-1", Duration::from_secs(30)).await;
        let reasons = next["fields"]["reasons"].as_str().unwrap_or_default();
        if reasons.contains("outer race defect suspected on bearing DE: BPFO") {
            break next;
        }
    };
    assert_ne!(motor["fields"]["action"], "routine_monitoring", "{motor}");

    // The healthy fan: assessed from its waveform's velocity (ISO zone A), nothing suspected.
    let fan = assessment_of(&mut agent, "F-1", Duration::from_secs(30)).await;
    let fan_reasons = fan["fields"]["reasons"].as_str().unwrap_or_default();
    assert!(
        fan_reasons.contains("in zone A") && !fan_reasons.contains("suspected"),
        "{fan}"
    );

    // The spectrum through the control socket: the BPFO line where the slipping shaft puts it.
    let reply = run_spectrum(&config, &["M-1", "--json"]).await;
    assert!(
        reply.status.success(),
        "{}",
        String::from_utf8_lossy(&reply.stderr)
    );
    let spectrum: serde_json::Value = serde_json::from_slice(&reply.stdout).expect("JSON");
    let df = spectrum["envelope"]["df_hz"].as_f64().expect("resolution");
    let amplitudes = spectrum["envelope"]["amplitude"]
        .as_array()
        .expect("envelope");
    assert!(
        amplitudes.len() as f64 * df >= 990.0,
        "up to 1 kHz: {}",
        amplitudes.len()
    );
    let bpfo = spectrum["report"]["peaks"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["label"] == "BPFO"))
        .unwrap_or_else(|| panic!("{spectrum}"));
    // 1480 rpm less 1.5 % slip, times the 6205's 3.585.
    let truth = 1480.0 / 60.0 * 0.985 * 3.5847;
    let found = bpfo["hz"].as_f64().expect("hz");
    assert!(
        (found - truth).abs() <= 1.5 * df,
        "BPFO at {found} Hz, true {truth} Hz, df {df}"
    );

    let refused = run_spectrum(&config, &["NOPE"]).await;
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && said.contains("no spectrum for asset \"NOPE\"")
            && said.contains("M-1"),
        "{said}"
    );
    agent.terminate().await;
}

const FOLDER_AGENT: &str = include_str!("../fixtures/vibration-folder-agent.toml");

/// Writes `samples` as a 32-bit float WAV the way an uploader should: under a temporary name,
/// then renamed into place.
fn drop_wav(folder: &std::path::Path, name: &str, samples: &[f32], rate: u32) {
    let temporary = folder.join(format!(".{name}.tmp"));
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut writer = hound::WavWriter::create(&temporary, spec).expect("wav");
    for &s in samples {
        writer.write_sample(s).expect("sample");
    }
    writer.finalize().expect("finalize");
    std::fs::rename(&temporary, folder.join(name)).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_dropped_into_a_folder_are_diagnosed_and_a_bad_one_is_set_aside() {
    use millwright::vibration::synth::{Fault, Machine};
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("agent.toml");
    let text = FOLDER_AGENT.replace("[agent]\n", "[agent]\ndata_dir = \"state\"\n");
    std::fs::write(&config, text).expect("agent config");
    let mut agent = AgentProcess::spawn(&config);
    assert!(
        agent
            .wait_log(Duration::from_secs(30), "watching for waveform recordings")
            .await
            .is_some(),
        "{}",
        agent.log.transcript()
    );
    let folder = dir.path().join("recordings");

    // A corrupt recording: set aside under rejected/, with the reason said.
    std::fs::write(folder.join("bad.wav"), b"RIFF\x10\0\0\0WAVEjunk").expect("write");
    let rejected = agent
        .wait_log(Duration::from_secs(30), "recording rejected")
        .await
        .unwrap_or_else(|| panic!("{}", agent.log.transcript()));
    assert!(
        rejected["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot read the waveform")),
        "{rejected}"
    );
    assert!(folder.join("rejected/bad.wav").exists());

    // An inner-race recording at its own sample rate (12.8 kHz, not the configured 25.6 kHz).
    let mut machine = Machine::motor(Fault::InnerRace, 21);
    machine.sample_rate = 12_800.0;
    machine.resonance_hz = 3_000.0;
    drop_wav(&folder, "rec-1.wav", &machine.waveform(), 12_800);
    let motor = assessment_of(&mut agent, "M-2", Duration::from_secs(30)).await;
    let reasons = motor["fields"]["reasons"].as_str().unwrap_or_default();
    assert!(
        reasons.contains("inner race defect suspected on bearing DE: BPFI"),
        "{motor}"
    );
    assert!(folder.join("done/rec-1.wav").exists(), "moved to done/");
    assert!(!folder.join("rec-1.wav").exists());
    agent.terminate().await;
}

const MODBUS_SIM: &str = include_str!("../fixtures/vibration-modbus-sim.toml");
const MODBUS_AGENT: &str = include_str!("../fixtures/vibration-modbus-agent.toml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waveform_block_read_over_modbus_in_many_requests_is_diagnosed_at_the_reported_rate() {
    // The simulator refuses a read of more than 125 registers: the block arrives only if the
    // agent reads it in parts.
    let sim = Sim::start(MODBUS_SIM, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("agent.toml");
    let text = MODBUS_AGENT
        .replace("port = 5020", &format!("port = {}", sim.addr.port()))
        .replace("[agent]\n", "[agent]\ndata_dir = \"state\"\n");
    std::fs::write(&config, text).expect("agent config");
    let mut agent = AgentProcess::spawn(&config);

    // The defect lines sit where the transmitter's 20 kHz puts them: at the nominal 25.6 kHz
    // every frequency would read 28 % high, far outside the 2 % search.
    let pump = loop {
        let next = assessment_of(&mut agent, "P-1", Duration::from_secs(60)).await;
        if next["fields"]["reasons"]
            .as_str()
            .is_some_and(|r| r.contains("suspected"))
        {
            break next;
        }
    };
    let reasons = pump["fields"]["reasons"].as_str().unwrap_or_default();
    assert!(
        reasons.contains("inner race defect suspected on bearing DE: BPFI"),
        "{pump}"
    );
    let reply = run_spectrum(&config, &["P-1", "--json"]).await;
    let spectrum: serde_json::Value = serde_json::from_slice(&reply.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&reply.stderr)));
    assert_eq!(
        spectrum["report"]["samples"], 16384,
        "{}",
        spectrum["report"]
    );
    assert_eq!(
        spectrum["report"]["sample_rate"], 20000.0,
        "{}",
        spectrum["report"]
    );
    agent.terminate().await;
    sim.stop().await;
}
