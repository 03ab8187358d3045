//! A coil or holding register of a Modbus device (a stack light or relay module, directly or behind
//! a PLC), written through the line that polls the device: one connection per TCP device, and one
//! master on an RS-485 bus.

use firmware_config::{Pattern, PatternValues};

use super::OutputError;
use crate::sources::modbus::write::WriteRequest;
use crate::sources::modbus::DeviceWriter;

#[derive(Debug, Clone, Copy)]
pub enum Point {
    Coil(u16),
    Register(u16, PatternValues),
}

#[derive(Debug)]
pub struct ModbusOutput {
    writer: DeviceWriter,
    point: Point,
    /// The device's recoveries when it last took a write.
    recoveries_at_write: u64,
}

impl ModbusOutput {
    pub fn new(writer: DeviceWriter, point: Point) -> ModbusOutput {
        let recoveries_at_write = writer.recoveries();
        ModbusOutput {
            writer,
            point,
            recoveries_at_write,
        }
    }

    /// Whether the device failed and came back since the last write, and so may have lost it (a
    /// relay module that was power-cycled drops its coils).
    pub fn may_have_lost_state(&self) -> bool {
        self.writer.recoveries() != self.recoveries_at_write
    }

    /// Whether the device blinks by itself (a register with a value per pattern).
    pub fn blinks_by_itself(&self) -> bool {
        matches!(self.point, Point::Register(..))
    }

    /// Writes the pattern (register) or the level (coil: `on` is the blink phase).
    pub async fn show(&mut self, pattern: Pattern, on: bool) -> Result<(), OutputError> {
        let request = match self.point {
            Point::Coil(address) => WriteRequest::SingleCoil { address, on },
            Point::Register(address, values) => WriteRequest::SingleRegister {
                address,
                word: values.of(pattern),
            },
        };
        let what = format!("{} {request}", self.writer.device());
        let recoveries = self.writer.recoveries();
        let written = self.writer.write(request).await;
        if written.is_ok() {
            self.recoveries_at_write = recoveries;
        }
        written.map_err(|fault| OutputError::Modbus { what, fault })
    }
}
