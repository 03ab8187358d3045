//! A GPIO line driven through the GPIO character device (`/dev/gpiochipN`), held for as long as
//! the agent runs so nothing else can drive it. Blinking is done by the output task.

use firmware_config::GpioLine;
use gpiocdev::line::Value;
use gpiocdev::Request;

use super::OutputError;

pub struct Gpio {
    request: Request,
    offset: u32,
}

impl std::fmt::Debug for Gpio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Gpio({} line {})",
            self.request.chip_path().display(),
            self.offset
        )
    }
}

impl Gpio {
    /// Requests the line as an output, initially off.
    pub fn open(line: &GpioLine, active_low: bool) -> Result<Gpio, OutputError> {
        let (chip, offset) = match line {
            GpioLine::Offset { chip, offset } => (chip.clone(), *offset),
            GpioLine::Named(name) => {
                let found = gpiocdev::find_named_line(name)
                    .ok_or_else(|| OutputError::NoGpioLine(name.clone()))?;
                (found.chip, found.info.offset)
            }
        };
        let mut builder = Request::builder();
        builder
            .on_chip(&chip)
            .with_consumer("millwright")
            .with_line(offset)
            .as_output(Value::Inactive);
        if active_low {
            builder.as_active_low();
        }
        let request = builder.request().map_err(|source| OutputError::Gpio {
            action: "request",
            chip: chip.display().to_string(),
            offset,
            source,
        })?;
        Ok(Gpio { request, offset })
    }

    pub fn set(&self, on: bool) -> Result<(), OutputError> {
        let value = if on { Value::Active } else { Value::Inactive };
        self.request
            .set_value(self.offset, value)
            .map(|_| ())
            .map_err(|source| OutputError::Gpio {
                action: "set",
                chip: self.request.chip_path().display().to_string(),
                offset: self.offset,
                source,
            })
    }
}
