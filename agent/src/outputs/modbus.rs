//! A coil or holding register of a Modbus TCP device (a stack light or relay module behind a PLC),
//! on the output's own connection, opened on first use and again after a failure.

use std::time::Duration;

use firmware_config::{Device, Link, Pattern, PatternValues};
use tokio_modbus::client::Context;
use tokio_modbus::slave::{Slave, SlaveContext};

use crate::sources::modbus::write::{send, WriteRequest};
use crate::sources::modbus::Endpoint;

#[derive(Debug, Clone, Copy)]
pub enum Point {
    Coil(u16),
    Register(u16, PatternValues),
}

pub struct ModbusOutput {
    endpoint: Endpoint,
    unit: u8,
    timeout: Duration,
    point: Point,
    context: Option<Context>,
}

impl std::fmt::Debug for ModbusOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ModbusOutput({} unit {} {:?})",
            self.endpoint, self.unit, self.point
        )
    }
}

impl ModbusOutput {
    pub fn new(device: &Device, point: Point) -> ModbusOutput {
        let endpoint = match &device.link {
            Link::Tcp { host, port } => Endpoint::Tcp {
                host: host.clone(),
                port: *port,
            },
            // Refused by validation: the serial poller owns the port.
            Link::Rtu { .. } => Endpoint::Tcp {
                host: String::new(),
                port: 0,
            },
        };
        ModbusOutput {
            endpoint,
            unit: device.unit_id,
            timeout: device.timeout,
            point,
            context: None,
        }
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
        if self.context.is_none() {
            let mut context = self
                .endpoint
                .open(self.timeout)
                .await
                .map_err(|e| format!("{}: {e}", self.endpoint))?;
            context.set_slave(Slave(self.unit));
            self.context = Some(context);
        }
        let Some(context) = self.context.as_mut() else {
            return Err("no connection".into());
        };
        let result = send(context, &request, self.timeout).await;
        if let Err(fault) = &result {
            if fault.breaks_line() {
                self.context = None;
            }
        }
        result.map_err(|e| format!("{} unit {} {request:?}: {e}", self.endpoint, self.unit))
    }
}
