//! A coil or holding register of a Modbus device (a stack light or relay module, directly or behind
//! a PLC), written through the line that polls the device: one connection per TCP device, and one
//! master on an RS-485 bus.

use firmware_config::{Pattern, PatternValues};

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
}

impl ModbusOutput {
    pub fn new(writer: DeviceWriter, point: Point) -> ModbusOutput {
        ModbusOutput { writer, point }
    }

    /// Whether the device blinks by itself (a register with a value per pattern).
    pub fn blinks_by_itself(&self) -> bool {
        matches!(self.point, Point::Register(..))
    }

    /// Writes the pattern (register) or the level (coil: `on` is the blink phase).
    pub async fn show(&mut self, pattern: Pattern, on: bool) -> Result<(), String> {
        let request = match self.point {
            Point::Coil(address) => WriteRequest::SingleCoil { address, on },
            Point::Register(address, values) => WriteRequest::SingleRegister {
                address,
                word: values.of(pattern),
            },
        };
        let what = format!("{} {request}", self.writer.device());
        let written = self.writer.write(request).await;
        written.map_err(|fault| format!("{what}: {fault}"))
    }
}
