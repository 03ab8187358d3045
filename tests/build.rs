//! Decides which end-to-end tests this machine can run, so that a test whose tools are missing
//! shows as `ignored` with what is missing, never as `ok`.
//!
//! It writes `requirements.rs` into OUT_DIR: the `needs!` macro (exported by the crate), which
//! passes a test through unchanged when its requirement is met and adds `#[ignore = "<what is
//! missing and how to install it>"]` otherwise. In CI (`CI` set) tools are never missing, so a
//! tool CI failed to install fails its test; only facts of the machine (root, the kernel's
//! gpio-sim) can make a test ignored there.
//!
//! Cargo runs this again when PATH, CI or a watched directory changes (the directories on PATH,
//! the Rust sysroot's targets, the kernel's configfs), so installing a tool is noticed.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A requirement: its name in `needs!(name ...)`, and what is missing here (with how to get it).
struct Requirement {
    name: &'static str,
    missing: Vec<String>,
    /// Missing even in CI does not fail the test (a fact of the machine, not an install step).
    environmental: bool,
}

fn on_path(program: &str) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

fn tool(program: &str, install: &str) -> Option<String> {
    match on_path(program) {
        Some(path) => {
            println!("cargo:rerun-if-changed={}", path.display());
            None
        }
        None => Some(format!("{program} ({install})")),
    }
}

fn sysroot() -> Option<PathBuf> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(rustc)
        .args(["--print", "sysroot"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    Some(PathBuf::from(String::from_utf8(output.stdout).ok()?.trim()))
}

fn rust_target(triple: &str, setup: &str) -> Option<String> {
    let rustlib = sysroot()?.join("lib/rustlib");
    println!("cargo:rerun-if-changed={}", rustlib.display());
    (!rustlib.join(triple).join("lib").is_dir())
        .then(|| format!("the Rust target {triple} (cross/build.sh --setup {setup})"))
}

fn python_module(module: &str, install: &str) -> Option<String> {
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!found).then(|| format!("the Python module {module} ({install})"))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

fn requirements() -> Vec<Requirement> {
    let aarch64 = [
        tool("qemu-aarch64-static", "apt-get install qemu-user-static"),
        tool(
            "aarch64-linux-gnu-gcc",
            "cross/build.sh --setup aarch64-musl",
        ),
        rust_target("aarch64-unknown-linux-musl", "aarch64-musl"),
    ];
    let armv7 = [
        tool("qemu-arm-static", "apt-get install qemu-user-static"),
        tool("cargo-zigbuild", "cross/build.sh --setup armv7-gnueabihf"),
        python_module("ziglang", "cross/build.sh --setup armv7-gnueabihf"),
        (!Path::new("/usr/arm-linux-gnueabihf/lib").is_dir()).then(|| {
            "the armhf C library in /usr/arm-linux-gnueabihf (cross/build.sh --setup armv7-gnueabihf)"
                .to_string()
        }),
        rust_target("armv7-unknown-linux-gnueabihf", "armv7-gnueabihf"),
    ];
    let packaging = [
        tool("cargo-deb", "cargo install --locked cargo-deb"),
        tool("dpkg-deb", "apt-get install dpkg"),
    ];
    let found = |list: &[Option<String>]| list.iter().flatten().cloned().collect::<Vec<_>>();
    let configfs = Path::new("/sys/kernel/config");
    if configfs.is_dir() {
        println!("cargo:rerun-if-changed={}", configfs.display());
    }
    vec![
        Requirement {
            name: "socat",
            missing: found(&[tool("socat", "apt-get install socat")]),
            environmental: false,
        },
        Requirement {
            name: "mosquitto",
            missing: found(&[
                tool("mosquitto", "apt-get install mosquitto"),
                tool("mosquitto_passwd", "apt-get install mosquitto"),
            ]),
            environmental: false,
        },
        Requirement {
            name: "protoc",
            missing: found(&[tool("protoc", "apt-get install protobuf-compiler")]),
            environmental: false,
        },
        Requirement {
            name: "fleet",
            missing: found(&[
                tool("mosquitto", "apt-get install mosquitto"),
                python_module("ray.data", "pip install -r fleet/requirements.txt"),
                python_module("pyarrow", "pip install -r fleet/requirements.txt"),
                python_module("paho.mqtt", "pip install -r fleet/requirements.txt"),
                python_module("matplotlib", "pip install -r fleet/requirements.txt"),
                python_module("google.protobuf", "pip install -r fleet/requirements.txt"),
                python_module("pytest", "pip install -r fleet/requirements.txt"),
            ]),
            environmental: false,
        },
        Requirement {
            name: "chromium",
            missing: found(&[tool("chromium", "apt-get install chromium")]),
            environmental: false,
        },
        Requirement {
            name: "aarch64_gateway",
            missing: found(&aarch64),
            environmental: false,
        },
        Requirement {
            name: "armv7_gateway",
            missing: found(&armv7),
            environmental: false,
        },
        Requirement {
            name: "arm64_package",
            missing: found(&[&aarch64[..], &packaging[..]].concat()),
            environmental: false,
        },
        Requirement {
            name: "armhf_package",
            missing: found(&[&armv7[..], &packaging[..]].concat()),
            environmental: false,
        },
        Requirement {
            name: "root",
            missing: if is_root() {
                Vec::new()
            } else {
                vec!["root (the test runs commands as other users or mounts a file system)".into()]
            },
            environmental: false,
        },
        Requirement {
            name: "gpio_sim",
            missing: if is_root() && configfs.join("gpio-sim").is_dir() {
                Vec::new()
            } else {
                vec!["the kernel's gpio-sim (as root: `modprobe gpio-sim`, configfs mounted on /sys/kernel/config)".into()]
            },
            environmental: true,
        },
    ]
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=CI");
    if let Some(paths) = env::var_os("PATH") {
        for dir in env::split_paths(&paths).filter(|d| d.is_dir()) {
            println!("cargo:rerun-if-changed={}", dir.display());
        }
    }
    let ci = env::var_os("CI").is_some();
    let mut rules = String::new();
    for requirement in requirements() {
        let skip = !requirement.missing.is_empty() && (!ci || requirement.environmental);
        let name = requirement.name;
        if skip {
            let reason = format!("not here: {}", requirement.missing.join("; "));
            let _ = writeln!(
                rules,
                "    ({name} $($item:tt)*) => {{ $crate::__ignored! {{ {reason:?} $($item)* }} }};"
            );
        } else {
            let _ = writeln!(rules, "    ({name} $($item:tt)*) => {{ $($item)* }};");
        }
    }
    let source = format!(
        "/// `needs!(requirement item)`: the test item as it is when this machine meets the\n\
         /// requirement, or marked ignored with what is missing (decided by `build.rs`).\n\
         #[macro_export]\n\
         macro_rules! needs {{\n{rules}}}\n"
    );
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("requirements.rs");
    std::fs::write(out, source).expect("write requirements.rs");
}
