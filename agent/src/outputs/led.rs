//! An LED of the Linux LED class (`/sys/class/leds/<name>`): steady through `brightness`, blinking
//! in the kernel through the `timer` trigger with `delay_on`/`delay_off`, so a blink keeps going
//! even if the agent is busy or stopped.

use std::path::{Path, PathBuf};

use firmware_config::Pattern;

#[derive(Debug)]
pub struct Led {
    dir: PathBuf,
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|e| format!("write {value:?} to {}: {e}", path.display()))
}

impl Led {
    pub fn new(dir: PathBuf) -> Led {
        Led { dir }
    }

    /// The brightness for "on": the LED's `max_brightness` (1 when it cannot be read).
    fn on_level(&self) -> String {
        std::fs::read_to_string(self.dir.join("max_brightness"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| s.parse::<u32>().is_ok_and(|v| v > 0))
            .unwrap_or_else(|| "1".into())
    }

    pub fn show(&self, pattern: Pattern) -> Result<(), String> {
        if !self.dir.is_dir() {
            return Err(format!(
                "no LED at {} (is the name right? see `ls {}`)",
                self.dir.display(),
                self.dir
                    .parent()
                    .map_or(String::new(), |p| p.display().to_string())
            ));
        }
        match pattern.half_period() {
            Some(half) => {
                let ms = half.as_millis().to_string();
                // Setting the trigger creates delay_on/delay_off; both are then set.
                write(&self.dir, "trigger", "timer")?;
                write(&self.dir, "delay_on", &ms)?;
                write(&self.dir, "delay_off", &ms)?;
                write(&self.dir, "brightness", &self.on_level())
            }
            None => {
                write(&self.dir, "trigger", "none")?;
                let level = if pattern == Pattern::Steady {
                    self.on_level()
                } else {
                    "0".into()
                };
                write(&self.dir, "brightness", &level)
            }
        }
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
        let led = Led::new(dir.clone());
        led.show(Pattern::Steady).expect("steady");
        assert_eq!(
            (read(&dir, "trigger"), read(&dir, "brightness")),
            ("none".into(), "255".into())
        );
        led.show(Pattern::FastBlink).expect("fast");
        assert_eq!(read(&dir, "trigger"), "timer");
        assert_eq!(
            (read(&dir, "delay_on"), read(&dir, "delay_off")),
            ("125".into(), "125".into())
        );
        led.show(Pattern::SlowBlink).expect("slow");
        assert_eq!(read(&dir, "delay_on"), "500");
        led.show(Pattern::Off).expect("off");
        assert_eq!(
            (read(&dir, "trigger"), read(&dir, "brightness")),
            ("none".into(), "0".into())
        );
    }

    #[test]
    fn a_missing_led_is_an_error_naming_it() {
        let root = tempfile::tempdir().expect("tempdir");
        let error = Led::new(root.path().join("nope"))
            .show(Pattern::Steady)
            .expect_err("missing");
        assert!(error.contains("nope"), "{error}");
    }
}
