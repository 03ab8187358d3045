//! `millwright trust` and `millwright browse`: commissioning an OPC UA server.

use firmware_config::Plan;

fn opcua_endpoint<'p>(
    plan: &'p Plan,
    name: &str,
) -> anyhow::Result<&'p firmware_config::OpcuaEndpoint> {
    plan.opcua.iter().find(|e| e.name == name).ok_or_else(|| {
        let known: Vec<&str> = plan.opcua.iter().map(|e| e.name.as_str()).collect();
        anyhow::anyhow!("no [[opcua]] endpoint named {name:?} (defined: {known:?})")
    })
}

/// `millwright trust`: shows the server's certificate and, once confirmed, trusts it.
/// `millwright trust --renew-certificate`: a new application certificate for the configured
/// application URI (the old one is kept beside it).
pub fn renew_certificate(plan: &Plan, endpoint: &str) -> anyhow::Result<String> {
    let endpoint = opcua_endpoint(plan, endpoint)?;
    let files = crate::sources::opcua::client::ClientFiles::of(plan);
    Ok(crate::sources::opcua::client::renew_certificate(
        endpoint, &files,
    )?)
}

pub async fn trust(plan: &Plan, endpoint: &str, yes: bool) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    let endpoint = opcua_endpoint(plan, endpoint)?;
    let pki = crate::sources::opcua::client::pki_dir(&plan.agent.data_dir);
    let certificate = crate::sources::opcua::browse::server_certificate(endpoint, &pki)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "{} ({}) presents this certificate:",
        endpoint.name, endpoint.url
    );
    println!("{certificate}");
    if !yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!("not trusted: confirm on a terminal, or pass --yes after checking the thumbprint with the server's administrator");
        }
        print!("Compare the thumbprint with the one the server shows. Trust it? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            anyhow::bail!("not trusted");
        }
    }
    let path =
        crate::sources::opcua::browse::trust(&pki, &certificate).map_err(|e| anyhow::anyhow!(e))?;
    println!("trusted: {}", path.display());
    Ok(())
}

/// `millwright browse`: the address space below a node, for writing `[[opcua.tags]]`.
pub async fn browse(
    plan: &Plan,
    endpoint: &str,
    node: Option<&str>,
    depth: usize,
    limit: usize,
) -> anyhow::Result<String> {
    let endpoint = opcua_endpoint(plan, endpoint)?;
    let start = match node {
        Some(text) => Some(text.parse::<firmware_config::NodeRef>().map_err(|e| {
            anyhow::anyhow!("--node {text:?} is not a NodeId (e.g. ns=2;s=Line1 or nsu=urn:acme:plc;s=Line1): {e}")
        })?),
        None => None,
    };
    let files = crate::sources::opcua::client::ClientFiles::of(plan);
    let nodes =
        crate::sources::opcua::browse::browse(endpoint, &files, start.as_ref(), depth, limit)
            .await?;
    Ok(crate::sources::opcua::browse::format_browse(&nodes))
}
