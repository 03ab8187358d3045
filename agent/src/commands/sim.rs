//! `millwright simulate`: the simulated plant alone (`demo.rs` runs it with the agent).

use std::sync::Arc;

use tokio::task::JoinSet;

/// Runs the simulator until `shutdown`. `listen` and `serial` override the file.
#[cfg(feature = "sim")]
pub async fn simulate(
    mut config: crate::sim::SimConfig,
    plant: crate::sim::Plant,
    listen: Option<String>,
    serial: Option<String>,
    opcua: Option<(String, std::path::PathBuf)>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    if let Some(path) = serial {
        let current = config.serial.take();
        config.serial = Some(crate::sim::SerialConfig {
            path,
            baud: current.as_ref().map_or(19_200, |s| s.baud),
            parity: current.map(|s| s.parity).unwrap_or_default(),
        });
    }
    let plant = Arc::new(plant);
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let mut tasks = JoinSet::new();
    tasks.spawn(crate::sim::server::serve_tcp(
        listener,
        Arc::clone(&plant),
        shutdown.clone(),
    ));
    tasks.spawn({
        let (plant, stop) = (Arc::clone(&plant), shutdown.clone());
        async move {
            crate::sim::gauge::cameras(plant, stop).await;
            Ok(())
        }
    });
    // Kept alive until the simulator stops.
    let _opcua = match opcua {
        Some((listen, pki)) => {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen} for OPC UA"))?;
            let users = crate::sim::opcua::Users::default();
            let server = crate::sim::opcua::serve(
                listener,
                Arc::clone(&plant),
                &pki,
                &users,
                shutdown.clone(),
            )
            .await?;
            println!(
                "OPC UA: opc.tcp://{listen} (namespace {}; certificate in {})",
                crate::sim::opcua::NAMESPACE,
                pki.display()
            );
            Some(server)
        }
        None => None,
    };
    if let Some(serial) = &config.serial {
        let (path, baud, parity) = (serial.path.clone(), serial.baud, serial.parity);
        let plant = Arc::clone(&plant);
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            crate::sim::server::serve_rtu(&path, baud, parity, plant, shutdown).await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result
            .context("simulator task failed")?
            .context("simulator stopped")?;
    }
    Ok(())
}
