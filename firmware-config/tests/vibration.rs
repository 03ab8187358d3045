//! `[assets.waveform]` and `[[assets.bearings]]`: geometry becomes defect factors, the waveform's
//! source, bands and shaft speed are checked, and each mistake is reported at its line.

mod common;

use std::path::Path;

use common::one_error;
use firmware_config::{load_str, ShaftSpeed, WaveformSource};

const TAGS: &str = r#"
[[opcua]]
name = "sensors"
url = "opc.tcp://127.0.0.1:4840"
security_policy = "None"
security_mode = "None"

[[opcua.tags]]
name = "accel"
node = "ns=2;s=accel"

[[opcua.tags]]
name = "speed"
node = "ns=2;s=speed"
unit = "rpm"
"#;

fn asset(waveform: &str, bearings: &str) -> String {
    format!(
        "{TAGS}\n[[assets]]\nid = \"M-1\"\ntype = \"motor\"\nsignals = {{ speed = \"speed\" }}\nnameplate = {{ iso_group = 2, foundation = \"rigid\" }}\n{waveform}\n{bearings}"
    )
}

const WAVEFORM: &str = "[assets.waveform]\ntag = \"accel\"\nsample_rate = 25600\n";
const BEARING: &str = "[[assets.bearings]]\nname = \"DE\"\nrolling_elements = 9\nball_diameter = 7.94\npitch_diameter = 39.04\n";

#[test]
fn a_waveform_with_a_bearing_resolves_its_tag_speed_and_factors() {
    let plan = load_str(
        Path::new("/etc/millwright/plant.toml"),
        &asset(WAVEFORM, BEARING),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let a = &plan.assets[0];
    let w = a.waveform.as_ref().expect("waveform");
    assert_eq!(w.source, WaveformSource::Tag(0));
    assert_eq!(
        w.shaft,
        Some(ShaftSpeed::Tag {
            tag: 1,
            per_minute: true
        })
    );
    assert!((w.to_m_s2 - 9.80665).abs() < 1e-9, "g by default");
    assert_eq!((w.max_samples, w.velocity_band), (65_536, [10.0, 1000.0]));
    assert!((a.bearings[0].factors.bpfo - 3.585).abs() < 0.001);
}

#[test]
fn a_folder_is_relative_to_the_configuration() {
    let waveform =
        "[assets.waveform]\nfolder = \"recordings/m1\"\nsample_rate = 25600\nshaft_rpm = 1480\n";
    let plan = load_str(
        Path::new("/etc/millwright/plant.toml"),
        &asset(waveform, ""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let w = plan.assets[0].waveform.as_ref().expect("waveform");
    let WaveformSource::Folder { path, .. } = &w.source else {
        panic!("{:?}", w.source);
    };
    assert_eq!(path, Path::new("/etc/millwright/recordings/m1"));
    assert_eq!(
        w.shaft,
        Some(ShaftSpeed::Fixed { hz: 1480.0 / 60.0 }),
        "fixed wins over the tag"
    );
}

#[test]
fn each_mistake_is_named_at_its_line() {
    let both = "[assets.waveform]\ntag = \"accel\"\nfolder = \"x\"\nsample_rate = 25600\n";
    one_error(
        &asset(both, ""),
        "give one of tag, folder and iio",
        "[assets.waveform]",
    );
    let nyquist =
        "[assets.waveform]\ntag = \"accel\"\nsample_rate = 1000\nvelocity_band = [10, 1000]\n";
    one_error(
        &asset(nyquist, ""),
        "above half the sample rate",
        "velocity_band",
    );
    let long = "[assets.waveform]\ntag = \"accel\"\nsample_rate = 25600\nmax_samples = 4000000\n";
    one_error(
        &asset(long, ""),
        "max_samples must be between",
        "max_samples",
    );
    let unknown = "[assets.waveform]\ntag = \"nope\"\nsample_rate = 25600\n";
    one_error(
        &asset(unknown, ""),
        "no tag named \"nope\"",
        "tag = \"nope\"",
    );
    let partial = "[[assets.bearings]]\nname = \"DE\"\nrolling_elements = 9\nbpfo = 3.1\n";
    one_error(
        &asset(WAVEFORM, partial),
        "not parts of both",
        "[[assets.bearings]]",
    );
    let inverted = "[[assets.bearings]]\nname = \"DE\"\nrolling_elements = 9\nball_diameter = 40\npitch_diameter = 39\n";
    one_error(
        &asset(WAVEFORM, inverted),
        "0 < ball_diameter < pitch_diameter",
        "[[assets.bearings]]",
    );
    // (and, with nothing else mapped, "no signal to score" as well)
    let errors = common::errors_at(&asset("", BEARING));
    assert!(
        errors
            .iter()
            .any(|(_, m)| m.contains("bearings need [assets.waveform]")),
        "{errors:?}"
    );
}

#[test]
fn bearings_need_a_shaft_speed_and_a_waveform_needs_the_iso_class() {
    let no_speed = format!(
        "{TAGS}\n[[assets]]\nid = \"M-1\"\ntype = \"motor\"\nnameplate = {{ iso_group = 2, foundation = \"rigid\" }}\n{WAVEFORM}\n{BEARING}"
    );
    let errors = common::errors_at(&no_speed);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].1.contains("need the shaft speed"), "{errors:?}");
    let no_class = format!("{TAGS}\n[[assets]]\nid = \"M-1\"\ntype = \"motor\"\n{WAVEFORM}");
    let errors = common::errors_at(&no_class);
    assert!(
        errors
            .iter()
            .any(|(_, m)| m.contains("a waveform needs nameplate.iso_group")),
        "{errors:?}"
    );
}

const DEVICE: &str = r#"
[[devices]]
name = "vib-tx"
host = "127.0.0.1"
unit_id = 3
addressing = "zero_based"

[[devices.tags]]
name = "rate"
table = "input"
address = 999
unit = "Hz"

[[devices.tags]]
name = "block"
table = "input"
address = 1000
type = "i16"
count = 4096
scale = 0.001
"#;

fn modbus_asset(waveform: &str, extra: &str) -> String {
    format!(
        "{DEVICE}{extra}\n[[assets]]\nid = \"P-1\"\ntype = \"pump\"\nnameplate = {{ iso_group = 2, foundation = \"rigid\" }}\n{waveform}"
    )
}

#[test]
fn a_modbus_block_longer_than_one_request_feeds_a_waveform_at_its_tagged_rate() {
    let waveform = "[assets.waveform]\ntag = \"block\"\nsample_rate = 25600\nsample_rate_tag = \"rate\"\nshaft_rpm = 1480\n";
    let plan = load_str(
        Path::new("/etc/millwright/plant.toml"),
        &modbus_asset(waveform, ""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let block = &plan.devices[0].tags[1];
    assert!(block.is_block());
    assert_eq!(
        (block.count, block.width(), block.last_address()),
        (4096, 4096, 5095)
    );
    let w = plan.assets[0].waveform.as_ref().expect("waveform");
    assert_eq!(w.source, WaveformSource::Tag(1));
    assert_eq!(w.sample_rate_tag, Some(0));
}

#[test]
fn blocks_and_rate_tags_are_checked() {
    let bad_block = |line: &str| {
        let text = DEVICE.replace("type = \"i16\"\ncount = 4096", line);
        common::errors_at(&text)
    };
    for (line, needle) in [
        ("count = 1", "count must be 2 or more"),
        (
            "count = 40000\ntype = \"f32\"",
            "a block takes at most 65535",
        ),
        ("count = 65000", "runs past 65535"),
    ] {
        let errors = bad_block(line);
        assert!(
            errors.iter().any(|(_, m)| m.contains(needle)),
            "{line}: {errors:?}"
        );
    }
    let text = DEVICE.replace("type = \"i16\"", "type = \"string\"\nlength = 4");
    let errors = common::errors_at(&text);
    assert!(
        errors
            .iter()
            .any(|(_, m)| m.contains("holds numbers, not string")),
        "{errors:?}"
    );

    let scalar = "[assets.waveform]\ntag = \"rate\"\nsample_rate = 25600\n";
    one_error(
        &modbus_asset(scalar, ""),
        "not a waveform",
        "tag = \"rate\"",
    );
    let block_as_rate =
        "[assets.waveform]\ntag = \"block\"\nsample_rate = 25600\nsample_rate_tag = \"block\"\n";
    one_error(
        &modbus_asset(block_as_rate, ""),
        "is a block of values; the sample rate is a number",
        "sample_rate_tag",
    );
    let folder_rate =
        "[assets.waveform]\nfolder = \"rec\"\nsample_rate = 25600\nsample_rate_tag = \"rate\"\n";
    one_error(
        &modbus_asset(folder_rate, ""),
        "a recording carries its own rate",
        "sample_rate_tag",
    );
    let as_signal = format!(
        "{DEVICE}\n[[assets]]\nid = \"P-1\"\ntype = \"pump\"\nsignals = {{ vibration = \"block\" }}\nnameplate = {{ iso_group = 2, foundation = \"rigid\" }}\n"
    );
    let errors = common::errors_at(&as_signal);
    assert!(
        errors.iter().any(|(_, m)| m.contains("a block of values")),
        "{errors:?}"
    );
}

#[test]
fn an_iio_capture_takes_its_channel_in_metres_per_second_squared() {
    let iio = "[assets.waveform]\niio = \"adxl355\"\nchannel = \"accel_z\"\nevery = \"30s\"\nsample_rate = 4000\nvelocity_band = [10, 1000]\n";
    let plan = load_str(Path::new("/etc/millwright/plant.toml"), &asset(iio, ""))
        .unwrap_or_else(|e| panic!("{e}"));
    let w = plan.assets[0].waveform.as_ref().expect("waveform");
    let WaveformSource::Iio(source) = &w.source else {
        panic!("{:?}", w.source)
    };
    assert_eq!(
        (source.device.as_str(), source.channel.as_str()),
        ("adxl355", "in_accel_z")
    );
    assert_eq!(
        (source.every.as_secs(), source.device_node.as_ref()),
        (30, None)
    );
    assert_eq!(w.to_m_s2, 1.0, "the kernel's unit for acceleration");

    let no_channel = "[assets.waveform]\niio = \"adxl355\"\nsample_rate = 4000\n";
    one_error(&asset(no_channel, ""), "needs channel", "iio");
    let stray = "[assets.waveform]\ntag = \"accel\"\nchannel = \"accel_z\"\nsample_rate = 4000\n";
    one_error(&asset(stray, ""), "channel is for iio captures", "channel");
    let twice = format!(
        "{}\n[[assets]]\nid = \"M-2\"\ntype = \"motor\"\nnameplate = {{ iso_group = 2, foundation = \"rigid\" }}\nwaveform = {{ iio = \"adxl355\", channel = \"accel_x\", sample_rate = 4000 }}\n",
        asset(iio, "")
    );
    let errors = common::errors_at(&twice);
    assert!(
        errors.len() == 1
            && errors[0]
                .1
                .contains("another asset captures this IIO device"),
        "{errors:?}"
    );
    let two = "[assets.waveform]\ntag = \"accel\"\niio = \"adxl355\"\nchannel = \"accel_z\"\nsample_rate = 4000\n";
    one_error(
        &asset(two, ""),
        "give one of tag, folder and iio",
        "[assets.waveform]",
    );
}
