//! Opening a line (TCP socket or serial port) and running one request on it with a timeout.
//!
//! tokio-modbus has no timeouts of its own: every call here is wrapped in one. Failures are
//! classified once, here, into device answers (exceptions) and transport faults, so that the two
//! never get confused downstream.

use std::io;
use std::time::Duration;

use firmware_config::{Parity, SerialBus, Table};
use tokio::net::TcpStream;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::ExceptionCode;
use tokio_serial::SerialPortBuilderExt;

use super::plan::ReadRequest;
use crate::sample::Quality;

/// Connecting may take longer than answering one request (ARP, a WAN hop, a serial adapter
/// waking up), but never unboundedly.
pub const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("device answered with exception {code:#04x} ({})", crate::sample::exception_name(*code))]
    Exception { code: u8 },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("transport: {0}")]
    Transport(String),
    #[error("malformed answer: {0}")]
    Malformed(String),
}

impl Fault {
    pub fn quality(&self) -> Quality {
        match self {
            Fault::Exception { code } => Quality::Exception(*code),
            Fault::Timeout(_) => Quality::Timeout,
            Fault::Transport(_) => Quality::Transport,
            Fault::Malformed(_) => Quality::Malformed,
        }
    }

    /// After a transport fault the line's state is unknown (a late answer may still arrive), so
    /// the connection is dropped and reopened.
    pub fn breaks_line(&self) -> bool {
        !matches!(self, Fault::Exception { .. })
    }

    fn from_modbus(error: tokio_modbus::Error) -> Self {
        match error {
            tokio_modbus::Error::Protocol(e) => Fault::Malformed(e.to_string()),
            tokio_modbus::Error::Transport(e) if e.kind() == io::ErrorKind::InvalidData => {
                Fault::Malformed(e.to_string())
            }
            tokio_modbus::Error::Transport(e) => Fault::Transport(e.to_string()),
        }
    }
}

/// Where a line goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    Serial(SerialBus),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Endpoint::Serial(bus) => write!(f, "{} ({} baud)", bus.path, bus.baud),
        }
    }
}

impl Endpoint {
    /// Opens the line. `timeout` bounds name resolution plus connection.
    pub async fn open(&self, timeout: Duration) -> Result<Context, Fault> {
        let timeout = timeout.max(MIN_CONNECT_TIMEOUT);
        match self {
            Endpoint::Tcp { host, port } => {
                let connect = async {
                    let stream = TcpStream::connect((host.as_str(), *port)).await?;
                    stream.set_nodelay(true)?;
                    Ok::<_, io::Error>(stream)
                };
                let stream = tokio::time::timeout(timeout, connect)
                    .await
                    .map_err(|_| Fault::Timeout(timeout))?
                    .map_err(|e| Fault::Transport(format!("connect to {self}: {e}")))?;
                Ok(tokio_modbus::client::tcp::attach(stream))
            }
            Endpoint::Serial(bus) => {
                let port = tokio_serial::new(&bus.path, bus.baud)
                    .parity(serial_parity(bus.parity))
                    .data_bits(match bus.data_bits {
                        5 => tokio_serial::DataBits::Five,
                        6 => tokio_serial::DataBits::Six,
                        7 => tokio_serial::DataBits::Seven,
                        _ => tokio_serial::DataBits::Eight,
                    })
                    .stop_bits(if bus.stop_bits == 2 {
                        tokio_serial::StopBits::Two
                    } else {
                        tokio_serial::StopBits::One
                    })
                    .open_native_async()
                    .map_err(|e| Fault::Transport(format!("open {}: {e}", bus.path)))?;
                Ok(tokio_modbus::client::rtu::attach(port))
            }
        }
    }
}

/// The serial library's name for a configured parity (shared with the RTU simulator).
pub fn serial_parity(parity: Parity) -> tokio_serial::Parity {
    match parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    }
}

/// What a read returned: registers or bits, exactly `count` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
}

/// Runs one read with a timeout and checks the answer's length.
pub async fn read(
    ctx: &mut Context,
    request: &ReadRequest,
    timeout: Duration,
) -> Result<Data, Fault> {
    let (start, count) = (request.start, request.count);
    let call = async {
        Ok::<_, tokio_modbus::Error>(match request.table {
            Table::Coil => ctx.read_coils(start, count).await?.map(Data::Bits),
            Table::DiscreteInput => ctx
                .read_discrete_inputs(start, count)
                .await?
                .map(Data::Bits),
            Table::InputRegister => ctx
                .read_input_registers(start, count)
                .await?
                .map(Data::Registers),
            Table::HoldingRegister => ctx
                .read_holding_registers(start, count)
                .await?
                .map(Data::Registers),
        })
    };
    let answer = run(call, timeout).await?;
    let count = usize::from(count);
    match answer {
        Data::Registers(words) if words.len() != count => Err(Fault::Malformed(format!(
            "asked for {count} registers from {start}, got {}",
            words.len()
        ))),
        // Bits come back padded to whole bytes.
        Data::Bits(mut bits) if bits.len() >= count => {
            bits.truncate(count);
            Ok(Data::Bits(bits))
        }
        Data::Bits(bits) => Err(Fault::Malformed(format!(
            "asked for {count} bits from {start}, got {}",
            bits.len()
        ))),
        data => Ok(data),
    }
}

/// Awaits a tokio-modbus call with a timeout, classifying every way it can fail.
pub async fn run<T>(
    call: impl std::future::Future<Output = Result<Result<T, ExceptionCode>, tokio_modbus::Error>>,
    timeout: Duration,
) -> Result<T, Fault> {
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(Fault::Timeout(timeout)),
        Ok(Err(error)) => Err(Fault::from_modbus(error)),
        Ok(Ok(Err(exception))) => Err(Fault::Exception {
            code: u8::from(exception),
        }),
        Ok(Ok(Ok(value))) => Ok(value),
    }
}
