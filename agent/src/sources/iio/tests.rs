//! The capture against a device tree laid out like the kernel's (sysfs attributes as files, the
//! character device as a FIFO): the kernel is the seam not under test here.

use std::io::Write;
use std::time::Instant;

use super::*;

#[test]
fn scan_types_parse_as_the_kernel_writes_them() {
    let kind = ScanType::parse("le:s20/32>>12\n").expect("parses");
    assert_eq!(
        kind,
        ScanType {
            big_endian: false,
            signed: true,
            bits: 20,
            storage_bits: 32,
            repeat: 1,
            shift: 12
        }
    );
    let repeated = ScanType::parse("be:u12/16X3>>4").expect("parses");
    assert_eq!((repeated.repeat, repeated.bytes()), (3, 6));
    for bad in [
        "",
        "le:s16",
        "xe:s16/16>>0",
        "le:q16/16>>0",
        "le:s20/16>>0",
        "le:s12/24>>0",
    ] {
        assert!(ScanType::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn raw_values_are_shifted_masked_and_sign_extended() {
    let kind = ScanType::parse("le:s20/32>>12").expect("parses");
    // -3 in 20 bits, shifted left by 12, with junk in the low bits.
    let stored = ((((-3i32) as u32) & 0xF_FFFF) << 12 | 0xABC).to_le_bytes();
    assert_eq!(kind.raw(&stored), -3);
    let unsigned = ScanType::parse("be:u12/16>>4").expect("parses");
    assert_eq!(unsigned.raw(&[0xFF, 0xF0]), 0xFFF);
    let signed16 = ScanType::parse("be:s16/16>>0").expect("parses");
    assert_eq!(signed16.raw(&(-1234i16).to_be_bytes()), -1234);
}

#[test]
fn channels_are_laid_out_in_index_order_each_aligned_to_its_size() {
    let s16 = ScanType::parse("le:s16/16>>0").expect("parses");
    let ts = ScanType::parse("le:s64/64>>0").expect("parses");
    // z (index 2) after x and y, then the timestamp aligned to 8: 2+2+2, pad to 8, +8 = 16.
    let mut enabled = [
        (3, ts, false),
        (0, s16, false),
        (2, s16, true),
        (1, s16, false),
    ];
    let found = layout(&mut enabled).expect("ours is enabled");
    assert_eq!((found.offset, found.scan_bytes), (4, 16));
    let mut alone = [(2, s16, true)];
    assert_eq!(layout(&mut alone).map(|l| l.scan_bytes), Some(2));
    let mut without = [(0, s16, false)];
    assert_eq!(layout(&mut without), None);
}

/// An accelerometer as sysfs shows it: x, z and a timestamp, 0.01 m/s² per count, at 4 kHz.
fn device_tree(root: &Path) -> (PathBuf, PathBuf) {
    let dir = root.join("sys/iio:device0");
    for sub in ["scan_elements", "buffer", "trigger"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    // The driver's own data-ready trigger, and a timer trigger.
    for (trigger, name) in [("trigger0", "testaccel-dev0"), ("trigger1", "timer-1")] {
        std::fs::create_dir_all(root.join("sys").join(trigger)).expect("mkdir");
        std::fs::write(
            root.join("sys").join(trigger).join("name"),
            format!("{name}\n"),
        )
        .expect("write");
    }
    let files = [
        ("name", "testaccel"),
        ("sampling_frequency", "4000"),
        ("in_accel_scale", "0.01"),
        ("buffer/enable", "0"),
        ("trigger/current_trigger", ""),
        ("buffer/length", "128"),
        ("scan_elements/in_accel_x_en", "1"),
        ("scan_elements/in_accel_x_index", "0"),
        ("scan_elements/in_accel_x_type", "le:s16/16>>0"),
        ("scan_elements/in_accel_z_en", "0"),
        ("scan_elements/in_accel_z_index", "2"),
        ("scan_elements/in_accel_z_type", "le:s16/16>>0"),
        ("scan_elements/in_timestamp_en", "1"),
        ("scan_elements/in_timestamp_index", "3"),
        ("scan_elements/in_timestamp_type", "le:s64/64>>0"),
    ];
    for (file, text) in files {
        std::fs::write(dir.join(file), format!("{text}\n")).expect("write");
    }
    std::fs::create_dir_all(root.join("dev")).expect("mkdir");
    let node = root.join("dev/iio:device0");
    let made = std::process::Command::new("mkfifo")
        .arg(&node)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo");
    (dir, node)
}

fn capture_of(root: &Path, node: &Path, samples: usize, grace: Duration) -> IioCapture {
    IioCapture {
        asset: 0,
        source: IioSource {
            device: "testaccel".into(),
            channel: "in_accel_z".into(),
            device_node: Some(node.to_path_buf()),
            trigger: None,
            every: Duration::from_secs(60),
        },
        samples,
        sample_rate: 3200.0,
        sysfs: root.join("sys"),
        grace,
    }
}

/// Plays the kernel: once the buffer is enabled, writes `counts` as z-only scans (it checks that
/// the capture disabled the other channels first). The FIFO is held open for writing from the
/// start, as a device node never reports end of file.
fn kernel(dir: PathBuf, node: PathBuf, counts: Vec<i16>) -> std::thread::JoinHandle<()> {
    let mut fifo = std::fs::File::options()
        .read(true)
        .write(true)
        .open(node)
        .expect("fifo");
    std::thread::spawn(move || {
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while read("buffer/enable").trim() != "1" {
            assert!(Instant::now() < deadline, "the buffer was never enabled");
            std::thread::yield_now();
        }
        assert_eq!(read("scan_elements/in_accel_x_en").trim(), "0");
        assert_eq!(read("scan_elements/in_timestamp_en").trim(), "0");
        if counts.is_empty() {
            // Silent: keep the FIFO open until the capture gives up.
            while read("buffer/enable").trim() == "1" && Instant::now() < deadline {
                std::thread::yield_now();
            }
            return;
        }
        let bytes: Vec<u8> = counts.iter().flat_map(|c| c.to_le_bytes()).collect();
        fifo.write_all(&bytes).expect("write scans");
    })
}

#[tokio::test]
async fn a_capture_enables_the_channel_alone_reads_its_scans_and_disables_the_buffer() {
    let root = tempfile::tempdir().expect("temp dir");
    let (dir, node) = device_tree(root.path());
    let counts: Vec<i16> = (0..1024).map(|i| ((i % 64) - 32) * 100).collect();
    let playing = kernel(dir.clone(), node.clone(), counts.clone());
    let c = capture_of(root.path(), &node, 1024, Duration::from_secs(10));
    let recording = capture(&c).await.expect("captured");
    playing.join().expect("kernel thread");
    assert_eq!(
        recording.sample_rate,
        Some(3200.0),
        "the configured rate asked for"
    );
    assert_eq!(recording.samples.len(), 1024);
    for (got, count) in recording.samples.iter().zip(&counts) {
        assert!((f64::from(*got) - f64::from(*count) * 0.01).abs() < 1e-4);
    }
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).expect("read");
    assert_eq!(read("buffer/enable").trim(), "0", "the buffer is off again");
    assert_eq!(read("scan_elements/in_accel_z_en").trim(), "1");
    assert_eq!(read("buffer/length").trim(), "1024");
    assert_eq!(read("sampling_frequency").trim(), "3200");
    assert_eq!(
        read("trigger/current_trigger").trim(),
        "testaccel-dev0",
        "the device's own trigger"
    );
}

#[tokio::test]
async fn a_configured_trigger_is_set_and_an_unknown_one_named_with_those_there_are() {
    let root = tempfile::tempdir().expect("temp dir");
    let (dir, node) = device_tree(root.path());
    let mut c = capture_of(root.path(), &node, 256, Duration::from_millis(100));
    c.source.trigger = Some("timer-9".into());
    let error = capture(&c).await.expect_err("no such trigger");
    assert!(
        error.contains("no IIO trigger named \"timer-9\" (triggers: testaccel-dev0, timer-1)"),
        "{error}"
    );
    c.source.trigger = Some("timer-1".into());
    let playing = kernel(dir.clone(), node.clone(), vec![7; 256]);
    capture(&c).await.expect("captured");
    playing.join().expect("kernel thread");
    let current = std::fs::read_to_string(dir.join("trigger/current_trigger")).expect("read");
    assert_eq!(current.trim(), "timer-1");
}

#[tokio::test]
async fn a_silent_device_times_out_with_the_buffer_disabled() {
    let root = tempfile::tempdir().expect("temp dir");
    let (dir, node) = device_tree(root.path());
    let playing = kernel(dir.clone(), node.clone(), Vec::new());
    let c = capture_of(root.path(), &node, 256, Duration::from_millis(200));
    let error = capture(&c).await.expect_err("nothing arrives");
    playing.join().expect("kernel thread");
    assert!(
        error.contains("only 0 of 512 bytes arrived within"),
        "{error}"
    );
    let enable = std::fs::read_to_string(dir.join("buffer/enable")).expect("read");
    assert_eq!(enable.trim(), "0");
}

#[test]
fn devices_are_found_by_name_directory_or_path_and_a_wrong_one_is_named() {
    let root = tempfile::tempdir().expect("temp dir");
    let (dir, _) = device_tree(root.path());
    let sysfs = root.path().join("sys");
    assert_eq!(find_device(&sysfs, "testaccel"), Ok(dir.clone()));
    assert_eq!(find_device(&sysfs, "iio:device0"), Ok(dir.clone()));
    let by_path = dir.to_string_lossy().into_owned();
    assert_eq!(find_device(&sysfs, &by_path), Ok(dir));
    let missing = find_device(&sysfs, "adxl355").expect_err("no such device");
    assert!(
        missing.contains("no IIO device named \"adxl355\"") && missing.contains("testaccel"),
        "{missing}"
    );
    let elsewhere = find_device(&root.path().join("nowhere"), "adxl355").expect_err("no sysfs");
    assert!(elsewhere.contains("cannot list IIO devices"), "{elsewhere}");
}

#[tokio::test]
async fn a_channel_the_device_lacks_is_named_with_the_ones_it_has() {
    let root = tempfile::tempdir().expect("temp dir");
    let (_, node) = device_tree(root.path());
    let mut c = capture_of(root.path(), &node, 256, Duration::from_millis(100));
    c.source.channel = "in_anglvel_z".into();
    let error = capture(&c).await.expect_err("no such channel");
    assert!(
        error.contains("no channel in_anglvel_z") && error.contains("in_accel_x, in_accel_z"),
        "{error}"
    );
}
