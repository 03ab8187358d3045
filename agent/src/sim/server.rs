//! Serves the plant over Modbus TCP and RTU with tokio-modbus's server.
//!
//! Unknown unit ids, and machines switched off ([`Plant::set_powered`]), behave as on real
//! networks: a TCP gateway answers exception 0x0B (target device failed to respond); on a serial
//! bus nobody answers.

use std::future::{ready, Ready};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use firmware_config::{Parity, Table};
use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server as TcpServer};
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_serial::SerialPortBuilderExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::plant::Plant;

/// Which transport a service answers on (it decides what an unknown unit id gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Rtu,
}

#[derive(Clone)]
pub struct PlantService {
    plant: Arc<Plant>,
    transport: Transport,
}

impl PlantService {
    pub fn new(plant: Arc<Plant>, transport: Transport) -> Self {
        PlantService { plant, transport }
    }

    fn answer(&self, unit: u8, request: Request<'_>) -> Result<Option<Response>, ExceptionCode> {
        let plant = &self.plant;
        if !plant.is_powered(unit) {
            return match self.transport {
                Transport::Tcp => Err(ExceptionCode::GatewayTargetDevice),
                Transport::Rtu => Ok(None),
            };
        }
        let (elapsed, wall) = (plant.elapsed(), SystemTime::now());
        let response =
            match request {
                Request::ReadCoils(a, n) => {
                    Response::ReadCoils(bits(plant.read(unit, Table::Coil, a, n, elapsed, wall)?))
                }
                Request::ReadDiscreteInputs(a, n) => Response::ReadDiscreteInputs(bits(
                    plant.read(unit, Table::DiscreteInput, a, n, elapsed, wall)?,
                )),
                Request::ReadInputRegisters(a, n) => Response::ReadInputRegisters(plant.read(
                    unit,
                    Table::InputRegister,
                    a,
                    n,
                    elapsed,
                    wall,
                )?),
                Request::ReadHoldingRegisters(a, n) => Response::ReadHoldingRegisters(plant.read(
                    unit,
                    Table::HoldingRegister,
                    a,
                    n,
                    elapsed,
                    wall,
                )?),
                Request::WriteSingleCoil(a, on) => {
                    plant.write(unit, Table::Coil, a, &[u16::from(on)])?;
                    Response::WriteSingleCoil(a, on)
                }
                Request::WriteMultipleCoils(a, bits) => {
                    let words: Vec<u16> = bits.iter().map(|b| u16::from(*b)).collect();
                    plant.write(unit, Table::Coil, a, &words)?;
                    Response::WriteMultipleCoils(a, words.len() as u16)
                }
                Request::WriteSingleRegister(a, word) => {
                    plant.write(unit, Table::HoldingRegister, a, &[word])?;
                    Response::WriteSingleRegister(a, word)
                }
                Request::WriteMultipleRegisters(a, words) => {
                    plant.write(unit, Table::HoldingRegister, a, &words)?;
                    Response::WriteMultipleRegisters(a, words.len() as u16)
                }
                _ => return Err(ExceptionCode::IllegalFunction),
            };
        Ok(Some(response))
    }
}

fn bits(words: Vec<u16>) -> Vec<bool> {
    words.into_iter().map(|w| w != 0).collect()
}

impl Service for PlantService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        ready(self.answer(request.slave, request.request))
    }
}

/// Serves Modbus TCP on `listener` until `shutdown`; closing also drops every open connection.
pub async fn serve_tcp(
    listener: TcpListener,
    plant: Arc<Plant>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    info!(listen = %local, machines = plant.machines().len(), "simulator serving Modbus TCP");
    let server = TcpServer::new(listener);
    let service = PlantService::new(plant, Transport::Tcp);
    let on_connected = |stream, peer: SocketAddr| {
        let service = service.clone();
        async move {
            debug!(%peer, "simulator: client connected");
            accept_tcp_connection(stream, peer, move |_| Ok(Some(service.clone())))
        }
    };
    let on_error = |e: io::Error| debug!(error = %e, "simulator: connection ended");
    server
        .serve_until(&on_connected, on_error, async move {
            shutdown.cancelled_owned().await
        })
        .await
        .map(|_| ())
}

/// Serves Modbus RTU on a serial device until `shutdown`.
pub async fn serve_rtu(
    path: &str,
    baud: u32,
    parity: Parity,
    plant: Arc<Plant>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let port = tokio_serial::new(path, baud)
        .parity(crate::sources::modbus::link::serial_parity(parity))
        .open_native_async()
        .map_err(|e| io::Error::other(format!("open {path}: {e}")))?;
    info!(%path, baud, "simulator serving Modbus RTU");
    let server = tokio_modbus::server::rtu::Server::new(port);
    server
        .serve_until(PlantService::new(plant, Transport::Rtu), async move {
            shutdown.cancelled_owned().await
        })
        .await
        .map(|_| ())
}
