//! An LED of the Linux LED class (`/sys/class/leds/<name>`): steady through `brightness`, blinking
//! in the kernel through the `timer` trigger with `delay_on`/`delay_off`, so a blink keeps going
//! even if the agent is busy or stopped.
//!
//! The kernel creates `delay_on`/`delay_off` (owned by root) only when the timer trigger is set,
//! so a udev rule cannot open them to the service's group beforehand. When they cannot be written,
//! the LED blinks in software instead (the output task toggles `brightness`), said once in the log.

use std::path::{Path, PathBuf};

use firmware_config::Pattern;
use tracing::warn;

use super::OutputError;

#[derive(Debug)]
pub struct Led {
    dir: PathBuf,
    /// The timer trigger's delays are not writable: blink by toggling `brightness`.
    software_blink: bool,
    /// `trigger` is known to be `none`.
    untriggered: bool,
    /// What "on" writes to `brightness`, read once.
    on_level: Option<String>,
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), OutputError> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|source| OutputError::Write {
        value: value.to_string(),
        path: path.display().to_string(),
        source,
    })
}

impl Led {
    pub fn new(dir: PathBuf) -> Led {
        Led {
            dir,
            software_blink: false,
            untriggered: false,
            on_level: None,
        }
    }

    pub fn blinks_in_software(&self) -> bool {
        self.software_blink
    }

    /// The brightness for "on": the LED's `max_brightness` (1 when it cannot be read).
    fn on_level(&mut self) -> String {
        let dir = &self.dir;
        self.on_level
            .get_or_insert_with(|| {
                std::fs::read_to_string(dir.join("max_brightness"))
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| s.parse::<u32>().is_ok_and(|v| v > 0))
                    .unwrap_or_else(|| "1".into())
            })
            .clone()
    }

    /// Shows `pattern`; `on` is the phase when blinking in software.
    pub fn show(&mut self, pattern: Pattern, on: bool) -> Result<(), OutputError> {
        if !self.dir.is_dir() {
            return Err(OutputError::NoLed {
                dir: self.dir.display().to_string(),
                parent: self
                    .dir
                    .parent()
                    .map_or(String::new(), |p| p.display().to_string()),
            });
        }
        if let Some(half) = pattern.half_period().filter(|_| !self.software_blink) {
            let ms = half.as_millis().to_string();
            // Setting the trigger creates delay_on/delay_off; both are then set.
            write(&self.dir, "trigger", "timer")?;
            self.untriggered = false;
            let delays =
                write(&self.dir, "delay_on", &ms).and_then(|()| write(&self.dir, "delay_off", &ms));
            match delays {
                Ok(()) => {
                    let level = self.on_level();
                    return write(&self.dir, "brightness", &level);
                }
                Err(error) => {
                    warn!(led = %self.dir.display(), %error, "the timer trigger's delays are not writable; blinking in software");
                    self.software_blink = true;
                }
            }
        }
        if !self.untriggered {
            write(&self.dir, "trigger", "none")?;
            self.untriggered = true;
        }
        let lit = match pattern {
            Pattern::Off => false,
            Pattern::Steady => true,
            Pattern::SlowBlink | Pattern::FastBlink => on,
        };
        let level = if lit { self.on_level() } else { "0".into() };
        write(&self.dir, "brightness", &level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file)).unwrap_or_default()
    }

    #[test]
    fn patterns_become_brightness_and_timer_trigger_writes() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("red:status");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("max_brightness"), "255\n").expect("max");
        let mut led = Led::new(dir.clone());
        led.show(Pattern::Steady, true).expect("steady");
        assert_eq!(
            (read(&dir, "trigger"), read(&dir, "brightness")),
            ("none".into(), "255".into())
        );
        led.show(Pattern::FastBlink, true).expect("fast");
        assert_eq!(read(&dir, "trigger"), "timer");
        assert_eq!(
            (read(&dir, "delay_on"), read(&dir, "delay_off")),
            ("125".into(), "125".into())
        );
        led.show(Pattern::SlowBlink, true).expect("slow");
        assert_eq!(read(&dir, "delay_on"), "500");
        led.show(Pattern::Off, true).expect("off");
        assert_eq!(
            (read(&dir, "trigger"), read(&dir, "brightness")),
            ("none".into(), "0".into())
        );
    }

    #[test]
    fn unwritable_timer_delays_fall_back_to_blinking_in_software() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("green:user");
        std::fs::create_dir(&dir).expect("mkdir");
        // Unwritable for anyone, root included (file permissions would not stop a root test run).
        std::fs::create_dir(dir.join("delay_on")).expect("delay_on");
        let mut led = Led::new(dir.clone());
        led.show(Pattern::FastBlink, true).expect("falls back");
        assert!(led.blinks_in_software());
        assert_eq!(
            (read(&dir, "trigger"), read(&dir, "brightness")),
            ("none".into(), "1".into())
        );
        led.show(Pattern::FastBlink, false).expect("phase off");
        assert_eq!(read(&dir, "brightness"), "0");
    }

    #[test]
    fn a_missing_led_is_an_error_naming_it() {
        let root = tempfile::tempdir().expect("tempdir");
        let error = Led::new(root.path().join("nope"))
            .show(Pattern::Steady, true)
            .expect_err("missing");
        assert!(error.to_string().contains("nope"), "{error}");
    }
}
