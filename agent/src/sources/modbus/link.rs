//! Opening a line (TCP socket or serial port) and running one request on it with a timeout.
//!
//! tokio-modbus has no timeouts of its own: every call here is wrapped in one. Failures are
//! classified once, here, into device answers (exceptions) and transport faults, so that the two
//! never get confused downstream.
//!
//! A TCP line's bytes pass a [`MbapGuard`] on their way in. tokio-modbus waits for as many bytes as
//! an MBAP header announces, so garbage, a header cut short or a length field of 65535 used to end
//! as a timeout; the guard refuses a header no Modbus TCP device sends at once (malformed), and
//! remembers a frame left half-received so that the timeout that follows says so.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Duration;

use firmware_config::{Parity, SerialBus, Table};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
        self.open_watched(timeout).await.map(|(ctx, _)| ctx)
    }

    /// Opens the line, and for TCP a watch on the frames arriving (see [`WireWatch`]).
    pub async fn open_watched(
        &self,
        timeout: Duration,
    ) -> Result<(Context, Option<Arc<WireWatch>>), Fault> {
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
                let watch = Arc::new(WireWatch::default());
                let guarded = MbapGuard {
                    inner: stream,
                    framing: MbapFraming::default(),
                    watch: Arc::clone(&watch),
                };
                Ok((tokio_modbus::client::tcp::attach(guarded), Some(watch)))
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
                // No watch: some RS-485 adapters echo what they send, so bytes on a silent
                // line do not mean the device answered.
                Ok((tokio_modbus::client::rtu::attach(port), None))
            }
        }
    }
}

/// The MBAP header: transaction id, protocol id, length, unit id.
const MBAP_HEADER: usize = 7;
/// The largest MBAP length a response can carry: unit id plus a 253-byte PDU.
const MAX_MBAP_LENGTH: usize = 254;

/// Where the incoming byte stream of a Modbus TCP line is: frame boundaries follow from the
/// headers, so a header that no device sends is seen as soon as its seventh byte arrives.
#[derive(Debug, Default)]
struct MbapFraming {
    header: [u8; MBAP_HEADER],
    header_len: usize,
    /// Bytes of the current frame's body still to come (after a complete header).
    body_left: usize,
    /// The current frame's body length, for messages.
    body_len: usize,
}

/// A header no Modbus TCP device sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("not a Modbus TCP answer: protocol id {protocol:#06x} (must be 0); header bytes {header:02x?}")]
    Protocol {
        protocol: u16,
        header: [u8; MBAP_HEADER],
    },
    #[error(
        "MBAP length field {length} is outside 2–{MAX_MBAP_LENGTH}; header bytes {header:02x?}"
    )]
    Length {
        length: usize,
        header: [u8; MBAP_HEADER],
    },
}

impl MbapFraming {
    /// Follows `bytes` through the frames; `Err` names the first header that is not Modbus TCP.
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), FramingError> {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let taken = self.body_left.min(bytes.len());
                self.body_left -= taken;
                bytes = &bytes[taken..];
                continue;
            }
            let taken = (MBAP_HEADER - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + taken].copy_from_slice(&bytes[..taken]);
            self.header_len += taken;
            bytes = &bytes[taken..];
            if self.header_len < MBAP_HEADER {
                break;
            }
            let protocol = u16::from_be_bytes([self.header[2], self.header[3]]);
            let length = usize::from(u16::from_be_bytes([self.header[4], self.header[5]]));
            if protocol != 0 {
                return Err(FramingError::Protocol {
                    protocol,
                    header: self.header,
                });
            }
            if !(2..=MAX_MBAP_LENGTH).contains(&length) {
                return Err(FramingError::Length {
                    length,
                    header: self.header,
                });
            }
            self.header_len = 0;
            self.body_len = length - 1;
            self.body_left = self.body_len;
        }
        Ok(())
    }

    /// How much of a frame has arrived, if one is incomplete.
    fn partial(&self) -> Option<(usize, usize)> {
        if self.body_left > 0 {
            Some((
                MBAP_HEADER + self.body_len - self.body_left,
                MBAP_HEADER + self.body_len,
            ))
        } else if self.header_len > 0 {
            Some((self.header_len, MBAP_HEADER))
        } else {
            None
        }
    }
}

/// What a TCP line's guard saw, for the poller: a frame left incomplete when an answer times out
/// means the device sent something that is not Modbus, not nothing.
#[derive(Debug, Default)]
pub struct WireWatch {
    /// Bytes of the incomplete frame (high half) and the bytes it needs (low half); 0 when none.
    partial: AtomicU64,
}

impl WireWatch {
    fn set(&self, partial: Option<(usize, usize)>) {
        let packed = partial.map_or(0, |(have, need)| (have as u64) << 32 | need as u64);
        self.partial.store(packed, Ordering::Relaxed);
    }

    /// "the answer stopped after 5 of 7 bytes", when a frame is incomplete.
    pub fn incomplete(&self) -> Option<String> {
        let packed = self.partial.load(Ordering::Relaxed);
        let (have, need) = (packed >> 32, packed & 0xffff_ffff);
        match need {
            0 => None,
            n if n == MBAP_HEADER as u64 => Some(format!(
                "the answer stopped after {have} bytes, short of a {MBAP_HEADER}-byte MBAP header"
            )),
            _ => Some(format!(
                "the answer stopped after {have} of the {need} bytes its header announces"
            )),
        }
    }

    /// A late timeout converted: an incomplete frame makes it a malformed answer.
    pub fn classify(&self, fault: Fault) -> Fault {
        match (fault, self.incomplete()) {
            (Fault::Timeout(_), Some(why)) => Fault::Malformed(why),
            (other, _) => other,
        }
    }
}

/// A Modbus TCP stream that checks the frames coming in (see the module docs).
#[derive(Debug)]
struct MbapGuard<S> {
    inner: S,
    framing: MbapFraming,
    watch: Arc<WireWatch>,
}

impl<S: AsyncRead + Unpin> AsyncRead for MbapGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let fed = this.framing.feed(&buf.filled()[before..]);
        this.watch.set(this.framing.partial());
        Poll::Ready(fed.map_err(|why| io::Error::new(io::ErrorKind::InvalidData, why)))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MbapGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(transaction: u16, protocol: u16, length: u16) -> Vec<u8> {
        let mut bytes = transaction.to_be_bytes().to_vec();
        bytes.extend_from_slice(&protocol.to_be_bytes());
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.push(1);
        bytes
    }

    #[test]
    fn frames_are_followed_across_reads_of_any_size() {
        let mut framing = MbapFraming::default();
        // Two answers of a 2-register read, split at odd places.
        let mut stream = header(1, 0, 7);
        stream.extend_from_slice(&[3, 4, 0, 1, 0, 2]);
        stream.extend(header(2, 0, 7));
        stream.extend_from_slice(&[3, 4, 0, 3, 0, 4]);
        for chunk in stream.chunks(5) {
            framing.feed(chunk).expect("valid");
        }
        assert_eq!(framing.partial(), None);
        framing.feed(&header(3, 0, 7)[..5]).expect("half a header");
        assert_eq!(framing.partial(), Some((5, 7)));
        framing.feed(&header(3, 0, 7)[5..]).expect("the rest");
        framing.feed(&[3, 4]).expect("part of the body");
        assert_eq!(framing.partial(), Some((9, 13)));
    }

    #[test]
    fn headers_no_device_sends_are_refused_at_once() {
        let garbage = MbapFraming::default()
            .feed(b"HELLO\r\n")
            .expect_err("garbage")
            .to_string();
        assert!(garbage.contains("protocol id 0x4c4c"), "{garbage}");
        let huge = MbapFraming::default()
            .feed(&header(1, 0, 65535))
            .expect_err("length")
            .to_string();
        assert!(
            huge.contains("length field 65535 is outside 2–254"),
            "{huge}"
        );
        assert!(MbapFraming::default().feed(&header(1, 0, 0)).is_err());
    }

    #[test]
    fn a_timeout_after_an_incomplete_frame_is_a_malformed_answer() {
        let watch = WireWatch::default();
        let timeout = Fault::Timeout(Duration::from_secs(1));
        assert_eq!(watch.classify(timeout.clone()), timeout);
        watch.set(Some((5, 7)));
        assert_eq!(
            watch.classify(timeout.clone()),
            Fault::Malformed(
                "the answer stopped after 5 bytes, short of a 7-byte MBAP header".into()
            )
        );
        watch.set(Some((9, 13)));
        assert_eq!(watch.classify(timeout).quality(), Quality::Malformed);
        assert_eq!(
            watch.incomplete().as_deref(),
            Some("the answer stopped after 9 of the 13 bytes its header announces")
        );
    }
}
