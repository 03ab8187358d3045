//! Writing a value to a tag (FC 5/6/15/16) with the same timeout and typed encoding as reads, and
//! [`DeviceWriter`], through which the agent's own stages (stack lights, relay modules) write to a
//! device on the connection its line already polls it over.

use std::sync::Arc;
use std::time::Duration;

use firmware_config::{Table, Tag};
use tokio::sync::{mpsc, oneshot};
use tokio_modbus::client::{Context, Writer};

use super::codec::{self, CodecError};
use super::link::{self, Fault};
use crate::sample::Value;
use crate::sources::DeviceStats;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WriteError {
    #[error("tag {tag:?}: {source}")]
    Encode { tag: String, source: CodecError },
    #[error("tag {tag:?} is a {table}, which is read-only")]
    ReadOnly { tag: String, table: &'static str },
    #[error("tag {tag:?}: {source}")]
    Fault { tag: String, source: Fault },
}

/// The function a write uses, with its wire payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRequest {
    /// FC 5
    SingleCoil { address: u16, on: bool },
    /// FC 15
    MultipleCoils { address: u16, bits: Vec<bool> },
    /// FC 6
    SingleRegister { address: u16, word: u16 },
    /// FC 16
    MultipleRegisters { address: u16, words: Vec<u16> },
}

/// For errors and logs; addresses are as on the wire (zero-based).
impl std::fmt::Display for WriteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = |on: bool| if on { "on" } else { "off" };
        match self {
            WriteRequest::SingleCoil { address, on } => {
                write!(f, "coil {address} {}", level(*on))
            }
            WriteRequest::MultipleCoils { address, bits } => {
                write!(f, "{} coils from {address}", bits.len())
            }
            WriteRequest::SingleRegister { address, word } => {
                write!(f, "holding register {address} = {word}")
            }
            WriteRequest::MultipleRegisters { address, words } => {
                write!(f, "{} holding registers from {address}", words.len())
            }
        }
    }
}

/// Chooses the function and encodes the value (pure).
pub fn encode(tag: &Tag, value: &Value) -> Result<WriteRequest, WriteError> {
    let encode_error = |source| WriteError::Encode {
        tag: tag.name.clone(),
        source,
    };
    match tag.table {
        Table::DiscreteInput | Table::InputRegister => Err(WriteError::ReadOnly {
            tag: tag.name.clone(),
            table: tag.table.name(),
        }),
        Table::Coil => match value {
            Value::Bool(on) => Ok(WriteRequest::SingleCoil {
                address: tag.address,
                on: *on,
            }),
            other => Err(encode_error(CodecError::WrongKind {
                tag_type: "bool",
                value: other.to_string(),
            })),
        },
        Table::HoldingRegister => {
            let mut words = codec::encode_registers(tag, value).map_err(encode_error)?;
            Ok(if words.len() == 1 {
                WriteRequest::SingleRegister {
                    address: tag.address,
                    word: words.remove(0),
                }
            } else {
                WriteRequest::MultipleRegisters {
                    address: tag.address,
                    words,
                }
            })
        }
    }
}

/// Sends a write with a timeout.
pub async fn send(
    ctx: &mut Context,
    request: &WriteRequest,
    timeout: Duration,
) -> Result<(), Fault> {
    match request {
        WriteRequest::SingleCoil { address, on } => {
            link::run(ctx.write_single_coil(*address, *on), timeout).await
        }
        WriteRequest::MultipleCoils { address, bits } => {
            link::run(ctx.write_multiple_coils(*address, bits), timeout).await
        }
        WriteRequest::SingleRegister { address, word } => {
            link::run(ctx.write_single_register(*address, *word), timeout).await
        }
        WriteRequest::MultipleRegisters { address, words } => {
            link::run(ctx.write_multiple_registers(*address, words), timeout).await
        }
    }
}

/// Encodes and writes `value` to `tag`.
pub async fn write_tag(
    ctx: &mut Context,
    tag: &Tag,
    value: &Value,
    timeout: Duration,
) -> Result<(), WriteError> {
    let request = encode(tag, value)?;
    send(ctx, &request, timeout)
        .await
        .map_err(|source| WriteError::Fault {
            tag: tag.name.clone(),
            source,
        })
}

/// Writes consecutive coils in one FC 15 request (e.g. all lamps of a stack light at once).
pub async fn write_coils(
    ctx: &mut Context,
    address: u16,
    bits: &[bool],
    timeout: Duration,
) -> Result<(), Fault> {
    send(
        ctx,
        &WriteRequest::MultipleCoils {
            address,
            bits: bits.to_vec(),
        },
        timeout,
    )
    .await
}

/// A write for a line to perform between its polls; `unit` is the device's index on the line.
#[derive(Debug)]
pub struct WriteJob {
    pub unit: usize,
    pub request: WriteRequest,
    pub done: oneshot::Sender<Result<(), Fault>>,
}

/// Writes to one device through the line that polls it, so the device sees one connection and
/// an RS-485 bus one master: the write waits for the request in progress, then goes before the
/// next poll. Cloned freely; the line serves writes until the last clone is dropped.
#[derive(Debug, Clone)]
pub struct DeviceWriter {
    /// The device's name and unit id, for errors.
    device: Arc<str>,
    unit: usize,
    jobs: mpsc::Sender<WriteJob>,
    stats: Arc<DeviceStats>,
}

impl DeviceWriter {
    pub fn new(
        device: &str,
        unit: usize,
        jobs: mpsc::Sender<WriteJob>,
        stats: Arc<DeviceStats>,
    ) -> DeviceWriter {
        DeviceWriter {
            device: device.into(),
            unit,
            jobs,
            stats,
        }
    }

    /// How many times the device came back after failing: a device that went away (a power
    /// cycle, a cable) may have lost what was written to it.
    pub fn recoveries(&self) -> u64 {
        self.stats
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The device's name and unit id, as "plc (unit 1)".
    pub fn device(&self) -> &str {
        &self.device
    }

    pub async fn write(&self, request: WriteRequest) -> Result<(), Fault> {
        let (done, answer) = oneshot::channel();
        let job = WriteJob {
            unit: self.unit,
            request,
            done,
        };
        let stopped = || Fault::Transport("the device's polling line has stopped".into());
        self.jobs.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}
