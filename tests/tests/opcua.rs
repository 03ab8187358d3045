//! OPC UA acquisition against an in-process server built with the same crate (the simulator's):
//! subscriptions and polls of every data type, each security policy and mode with the trust
//! step, a refused untrusted server, a server restart, and a node that appears later.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use firmware_config::Plan;
use millwright::sample::{Quality, Sample, Value};
use millwright::sim::opcua::{self as sim_opcua, OpcuaServer, Users};
use millwright::sources::opcua::{browse, client};
use millwright_tests::{latest_by_name, Agent};
use opcua::types::{Array, DateTime, NodeId, StatusCode, Variant, VariantScalarTypeId};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SIM: &str = r#"
[[machines]]
name = "pump-1"
kind = "pump"
unit_id = 1

[[machines.points]]
name = "flow"
table = "holding_register"
address = 0
type = "f32"
signal = { base = 42.5 }

[[machines.points]]
name = "running"
table = "coil"
address = 0
signal = { base = 1.0 }
"#;

struct Server {
    opcua: OpcuaServer,
    shutdown: CancellationToken,
    ip: String,
}

impl Server {
    async fn start(pki: &Path, port: u16, users: &Users) -> Server {
        Server::start_on("127.0.0.1", pki, port, users).await
    }

    /// On another loopback address: its self-made certificate names localhost, 127.0.0.1, ::1
    /// and this machine's names, not 127.0.0.2.
    async fn start_on(ip: &str, pki: &Path, port: u16, users: &Users) -> Server {
        let (_, plant) =
            millwright::sim::load_str(Path::new("sim.toml"), SIM).unwrap_or_else(|e| panic!("{e}"));
        let listener = TcpListener::bind((ip, port)).await.expect("bind");
        let shutdown = CancellationToken::new();
        let opcua = sim_opcua::serve(listener, Arc::new(plant), pki, users, shutdown.clone())
            .await
            .expect("OPC UA server");
        Server {
            opcua,
            shutdown,
            ip: ip.to_string(),
        }
    }

    fn url(&self) -> String {
        format!("opc.tcp://{}:{}", self.ip, self.opcua.port)
    }

    fn node(&self, name: &str) -> NodeId {
        self.opcua.node(name)
    }

    fn add(&self, name: &str, value: impl Into<Variant>) {
        self.opcua.add_variable(name, value);
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.opcua.stop();
        // Let the listener and the sessions close before a restart binds the port again.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn plan(data_dir: &Path, endpoint: &str, tags: &str) -> Plan {
    let text = format!(
        "[agent]\ndata_dir = {:?}\n\n[[opcua]]\nnode_retry_interval = \"200ms\"\nbackoff = {{ initial = \"100ms\", max = \"500ms\" }}\npublishing_interval = \"100ms\"\nsampling_interval = \"100ms\"\n{endpoint}\n{tags}",
        data_dir.display()
    );
    firmware_config::load_str(Path::new("plant.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// `millwright trust --yes` for the plan's first endpoint; its files.
async fn trust_server(plan: &Plan) -> client::ClientFiles {
    let files = client::ClientFiles::of(plan);
    let certificate = browse::server_certificate(&plan.opcua[0], &files.pki)
        .await
        .expect("certificate");
    browse::trust(&files.pki, &certificate).expect("trust");
    files
}

fn tag(name: &str, node: &str, extra: &str) -> String {
    format!("\n[[opcua.tags]]\nname = {name:?}\nnode = {node:?}\n{extra}\n")
}

/// Waits until every named tag has a sample for which `accept` holds; returns the latest ones.
async fn wait_for(
    agent: &mut Agent,
    plan: &Plan,
    names: &[&str],
    within: Duration,
    accept: impl Fn(&Sample) -> bool,
) -> std::collections::HashMap<String, Sample> {
    let catalog = millwright::app::tag_catalog(plan);
    let mut done = std::collections::HashSet::new();
    let samples = agent
        .collect_until(within, |seen: &[Sample]| {
            if let Some(s) = seen.last() {
                let name = &catalog[s.tag.0 as usize].name;
                if names.contains(&name.as_str()) && accept(s) {
                    done.insert(name.clone());
                }
            }
            done.len() == names.len()
        })
        .await;
    let latest = latest_by_name(plan, &samples);
    assert_eq!(
        done.len(),
        names.len(),
        "only {done:?} of {names:?} within {within:?}; latest: {latest:#?}"
    );
    latest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_type_by_subscription_and_by_poll() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("server-pki"), 0, &Users::default()).await;
    let time = DateTime::from(
        opcua::types::DateTimeUtc::from_timestamp(1_750_000_000, 250_000_000).expect("time"),
    );
    let waveform: Vec<Variant> = (0..2048)
        .map(|i| Variant::Double(f64::from(i) / 8.0))
        .collect();
    let values: Vec<(&str, Variant, Value)> = vec![
        ("bool", Variant::Boolean(true), Value::Bool(true)),
        ("sbyte", Variant::SByte(-7), Value::I64(-7)),
        ("byte", Variant::Byte(200), Value::U64(200)),
        ("int16", Variant::Int16(-30_000), Value::I64(-30_000)),
        ("uint16", Variant::UInt16(65_000), Value::U64(65_000)),
        (
            "int32",
            Variant::Int32(-2_000_000_000),
            Value::I64(-2_000_000_000),
        ),
        (
            "uint32",
            Variant::UInt32(4_000_000_000),
            Value::U64(4_000_000_000),
        ),
        (
            "int64",
            Variant::Int64(-9_000_000_000_000),
            Value::I64(-9_000_000_000_000),
        ),
        (
            "uint64",
            Variant::UInt64(18_000_000_000_000_000_000),
            Value::U64(18_000_000_000_000_000_000),
        ),
        ("float", Variant::Float(1.25), Value::F64(1.25)),
        ("double", Variant::Double(-3.5e-3), Value::F64(-3.5e-3)),
        ("string", Variant::from("RUN"), Value::Text("RUN".into())),
        (
            "datetime",
            Variant::from(time),
            Value::Time(SystemTime::UNIX_EPOCH + Duration::new(1_750_000_000, 250_000_000)),
        ),
        (
            "waveform",
            Variant::Array(Box::new(
                Array::new(VariantScalarTypeId::Double, waveform).expect("array"),
            )),
            Value::Array((0..2048).map(|i| Value::F64(f64::from(i) / 8.0)).collect()),
        ),
    ];
    let mut tags = String::new();
    for (name, variant, _) in &values {
        server.add(name, variant.clone());
        tags += &tag(
            &format!("sub_{name}"),
            &format!("nsu={};s={name}", sim_opcua::NAMESPACE),
            "",
        );
        tags += &tag(
            &format!("poll_{name}"),
            &format!("ns={};s={name}", server.opcua.namespace),
            "mode = \"poll\"\npoll_interval = \"100ms\"",
        );
    }
    tags += &tag(
        "flow",
        &format!("nsu={};s=pump-1.flow", sim_opcua::NAMESPACE),
        "unit = \"m3/h\"",
    );
    let plan = plan(
        dir.path(),
        &format!("name = \"sim\"\nurl = {:?}", server.url()),
        &tags,
    );
    let mut agent = Agent::start(&plan);
    let names: Vec<String> = values
        .iter()
        .flat_map(|(n, _, _)| [format!("sub_{n}"), format!("poll_{n}")])
        .chain(["flow".to_string()])
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let latest = wait_for(&mut agent, &plan, &names, Duration::from_secs(20), |s| {
        s.quality == Quality::Good
    })
    .await;
    for (name, _, expected) in &values {
        for prefix in ["sub", "poll"] {
            let sample = &latest[&format!("{prefix}_{name}")];
            assert_eq!(sample.value.as_ref(), Some(expected), "{prefix}_{name}");
            assert!(
                sample.server_timestamp.is_some(),
                "{prefix}_{name}: server timestamp kept"
            );
        }
    }
    assert_eq!(
        latest["flow"].value,
        Some(Value::F64(42.5)),
        "a simulator signal"
    );

    // A value change reaches the subscriber.
    server
        .opcua
        .set(&server.node("double"), Variant::Double(7.75));
    let changed = wait_for(
        &mut agent,
        &plan,
        &["sub_double"],
        Duration::from_secs(10),
        |s| s.value == Some(Value::F64(7.75)),
    )
    .await;
    assert_eq!(changed["sub_double"].quality, Quality::Good);
    let stats = agent.stats("sim");
    assert!(stats.online && stats.notifications > 0, "{stats:?}");
    agent.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_server_is_refused_until_trusted_then_every_policy_mode_and_identity_works() {
    let dir = tempfile::tempdir().expect("temp dir");
    let password_file = dir.path().join("opcua.pass");
    std::fs::write(&password_file, "s3cret-pass\n").expect("password file");
    // An X.509 user, with a certificate made here.
    let user_cert = dir.path().join("user/cert.der");
    let user_key = dir.path().join("user/key.pem");
    std::fs::create_dir_all(dir.path().join("user")).expect("user dir");
    let description = opcua::types::ApplicationDescription {
        application_uri: "urn:millwright:test-user".into(),
        application_name: "maintenance".into(),
        ..Default::default()
    };
    opcua::crypto::CertificateStore::create_certificate_and_key(
        &(description, None).into(),
        true,
        &user_cert,
        &user_key,
    )
    .expect("user certificate");
    let users = Users {
        passwords: vec![("operator".into(), "s3cret-pass".into())],
        certificates: vec![user_cert.clone()],
    };
    let server = Server::start(&dir.path().join("server-pki"), 0, &users).await;
    let node = format!("nsu={};s=pump-1.flow", sim_opcua::NAMESPACE);
    let secure = |policy: &str, mode: &str, identity: &str| {
        plan(
            dir.path(),
            &format!(
                "name = \"secure\"\nurl = {:?}\nsecurity_policy = {policy:?}\nsecurity_mode = {mode:?}\n{identity}",
                server.url()
            ),
            &tag("flow", &node, ""),
        )
    };

    // First contact: the server's certificate is unknown, so the connection is refused and the
    // certificate lands in rejected/.
    let first = secure("Basic256Sha256", "SignAndEncrypt", "");
    let endpoint = &first.opcua[0];
    let files = client::ClientFiles::of(&first);
    let pki = files.pki.clone();
    let refused = client::connect(endpoint, &files, "test")
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(refused, client::ConnectError::Untrusted { .. }),
        "{refused}"
    );
    assert!(
        refused
            .to_string()
            .contains("run `millwright trust -c plant.toml --endpoint secure`"),
        "the real configuration path, not <config>: {refused}"
    );
    let rejected: Vec<_> = std::fs::read_dir(pki.join("rejected"))
        .expect("rejected dir")
        .collect();
    assert_eq!(
        rejected.len(),
        1,
        "the server's certificate is kept for review"
    );
    let own_key = pki.join("private/private.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&own_key)
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the private key is private");
    }

    // The trust step shows the certificate, then trusts it.
    let certificate = browse::server_certificate(endpoint, &pki)
        .await
        .expect("certificate");
    assert_eq!(certificate.application_uri, "urn:millwright:simulator");
    assert_eq!(certificate.thumbprint.len(), 40);
    browse::trust(&pki, &certificate).expect("trust");
    assert_eq!(
        std::fs::read_dir(pki.join("rejected"))
            .expect("dir")
            .count(),
        0
    );

    for (policy, mode) in [
        ("Basic256Sha256", "Sign"),
        ("Basic256Sha256", "SignAndEncrypt"),
        ("Aes128_Sha256_RsaOaep", "Sign"),
        ("Aes128_Sha256_RsaOaep", "SignAndEncrypt"),
        ("Aes256_Sha256_RsaPss", "Sign"),
        ("Aes256_Sha256_RsaPss", "SignAndEncrypt"),
    ] {
        let identity = format!(
            "[opcua.identity]\nusername = \"operator\"\npassword_file = {:?}",
            password_file.display()
        );
        let plan = secure(policy, mode, &identity);
        let mut agent = Agent::start(&plan);
        let latest = wait_for(&mut agent, &plan, &["flow"], Duration::from_secs(20), |s| {
            s.quality == Quality::Good
        })
        .await;
        assert_eq!(
            latest["flow"].value,
            Some(Value::F64(42.5)),
            "{policy} {mode}"
        );
        agent.stop().await;
    }

    // The X.509 user identity.
    let plan = secure(
        "Basic256Sha256",
        "SignAndEncrypt",
        &format!(
            "[opcua.identity]\ncertificate = {:?}\nprivate_key = {:?}",
            user_cert.display(),
            user_key.display()
        ),
    );
    let mut agent = Agent::start(&plan);
    let latest = wait_for(&mut agent, &plan, &["flow"], Duration::from_secs(20), |s| {
        s.quality == Quality::Good
    })
    .await;
    assert_eq!(latest["flow"].value, Some(Value::F64(42.5)), "X.509 user");
    agent.stop().await;

    // A wrong password is refused with a clear reason.
    let wrong = dir.path().join("wrong.pass");
    std::fs::write(&wrong, "nope\n").expect("file");
    let plan = secure(
        "Basic256Sha256",
        "Sign",
        &format!(
            "[opcua.identity]\nusername = \"operator\"\npassword_file = {:?}",
            wrong.display()
        ),
    );
    let refused = client::connect(&plan.opcua[0], &files, "test")
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(refused, client::ConnectError::IdentityRejected(_)),
        "{refused}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_host_names_both_and_is_accepted_only_when_the_endpoint_says_so()
{
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_on(
        "127.0.0.2",
        &dir.path().join("server-pki"),
        0,
        &Users::default(),
    )
    .await;
    let node = format!("nsu={};s=pump-1.flow", sim_opcua::NAMESPACE);
    let with = |extra: &str| {
        plan(
            dir.path(),
            &format!(
                "name = \"press\"\nurl = {:?}\nsecurity_policy = \"Basic256Sha256\"\nsecurity_mode = \"SignAndEncrypt\"\n{extra}",
                server.url()
            ),
            &tag("flow", &node, ""),
        )
    };
    let strict = with("");
    let files = trust_server(&strict).await;

    // Trusted, but for other names: refused, with the names on both sides and the way out.
    let refused = client::connect(&strict.opcua[0], &files, "test")
        .await
        .err()
        .expect("refused");
    let said = refused.to_string();
    assert!(
        matches!(refused, client::ConnectError::HostNameMismatch { .. }),
        "{said}"
    );
    for needle in [
        "\"127.0.0.2\"",
        "localhost",
        "127.0.0.1",
        "accept_host_name_mismatch = true",
    ] {
        assert!(said.contains(needle), "{needle} missing in: {said}");
    }

    // The endpoint's explicit opt-out: connected, values flow; `check` warns about it.
    let lenient = with("accept_host_name_mismatch = true");
    assert!(lenient.warnings()[0].contains("accept_host_name_mismatch = true"));
    let mut agent = Agent::start(&lenient);
    let latest = wait_for(
        &mut agent,
        &lenient,
        &["flow"],
        Duration::from_secs(20),
        |s| s.quality == Quality::Good,
    )
    .await;
    assert_eq!(latest["flow"].value, Some(Value::F64(42.5)));
    agent.stop().await;

    // The opt-out never skips the trust itself.
    let untrusted_dir = tempfile::tempdir().expect("temp dir");
    let mut fresh = lenient.clone();
    fresh.agent.data_dir = untrusted_dir.path().to_path_buf();
    let refused = client::connect(&fresh.opcua[0], &client::ClientFiles::of(&fresh), "test")
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(refused, client::ConnectError::Untrusted { .. }),
        "{refused}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_agent_is_told_its_certificate_is_stale_and_can_renew_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("server-pki"), 0, &Users::default()).await;
    let node = format!("nsu={};s=pump-1.flow", sim_opcua::NAMESPACE);
    let named = |agent: &str| {
        let mut plan = plan(
            dir.path(),
            &format!(
                "name = \"press\"\nurl = {:?}\nsecurity_policy = \"Basic256Sha256\"\nsecurity_mode = \"Sign\"",
                server.url()
            ),
            &tag("flow", &node, ""),
        );
        plan.agent.name = agent.into();
        plan.opcua[0].application_uri = format!("urn:millwright:{agent}");
        plan
    };
    let before = named("gw-a");
    let files = trust_server(&before).await;
    client::connect(&before.opcua[0], &files, "test")
        .await
        .expect("connects as gw-a")
        .close()
        .await;

    // agent.name changed; the certificate in the data directory is still gw-a's.
    let after = named("gw-b");
    let refused = client::connect(&after.opcua[0], &files, "test")
        .await
        .err()
        .expect("refused");
    let said = refused.to_string();
    for needle in [
        "made for \"urn:millwright:gw-a\"",
        "is now \"urn:millwright:gw-b\"",
        "millwright trust -c plant.toml --endpoint press --renew-certificate",
    ] {
        assert!(said.contains(needle), "{needle} missing in: {said}");
    }
    let renewed = client::renew_certificate(&after.opcua[0], &files).expect("renew");
    assert!(renewed.contains("urn:millwright:gw-b"), "{renewed}");
    client::connect(&after.opcua[0], &files, "test")
        .await
        .expect("connects as gw-b with the new certificate")
        .close()
        .await;
    let kept: Vec<_> = std::fs::read_dir(files.pki.join("own"))
        .expect("own")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".replaced-"))
        .collect();
    assert_eq!(
        kept.len(),
        1,
        "the old certificate is kept beside the new one"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_come_back_after_a_server_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server_pki = dir.path().join("server-pki");
    let server = Server::start(&server_pki, 0, &Users::default()).await;
    let port = server.opcua.port;
    let plan = plan(
        dir.path(),
        &format!("name = \"sim\"\nurl = {:?}", server.url()),
        &(tag(
            "flow",
            &format!("nsu={};s=pump-1.flow", sim_opcua::NAMESPACE),
            "",
        ) + &tag(
            "polled",
            &format!("nsu={};s=pump-1.running", sim_opcua::NAMESPACE),
            "mode = \"poll\"\npoll_interval = \"100ms\"",
        )),
    );
    let mut agent = Agent::start(&plan);
    wait_for(
        &mut agent,
        &plan,
        &["flow", "polled"],
        Duration::from_secs(20),
        |s| s.quality == Quality::Good,
    )
    .await;

    server.stop().await;
    wait_for(
        &mut agent,
        &plan,
        &["flow", "polled"],
        Duration::from_secs(20),
        |s| s.quality == Quality::Transport,
    )
    .await;
    assert!(!agent.stats("sim").online);

    // The restarted server has a new address space and no sessions: everything is re-created.
    let restarted = Server::start(&server_pki, port, &Users::default()).await;
    let latest = wait_for(
        &mut agent,
        &plan,
        &["flow", "polled"],
        Duration::from_secs(30),
        |s| s.quality == Quality::Good,
    )
    .await;
    assert_eq!(latest["flow"].value, Some(Value::F64(42.5)));
    assert_eq!(latest["polled"].value, Some(Value::Bool(true)));
    let stats = agent.stats("sim");
    assert!(stats.online && stats.reconnects >= 1, "{stats:?}");
    agent.stop().await;
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_appears_later_is_picked_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("server-pki"), 0, &Users::default()).await;
    let plan = plan(
        dir.path(),
        &format!("name = \"sim\"\nurl = {:?}", server.url()),
        &(tag("late", &format!("nsu={};s=late", sim_opcua::NAMESPACE), "")
            + &tag(
                "late_polled",
                &format!("nsu={};s=late_polled", sim_opcua::NAMESPACE),
                "mode = \"poll\"\npoll_interval = \"100ms\"",
            )
            + &tag(
                "flow",
                &format!("nsu={};s=pump-1.flow", sim_opcua::NAMESPACE),
                "",
            )),
    );
    let mut agent = Agent::start(&plan);
    let unknown = Quality::Bad(StatusCode::BadNodeIdUnknown.bits());
    // The refused nodes are reported; the others are served meanwhile.
    let first = wait_for(
        &mut agent,
        &plan,
        &["late", "late_polled", "flow"],
        Duration::from_secs(20),
        |s| s.quality == unknown || s.quality == Quality::Good,
    )
    .await;
    assert_eq!(first["late"].quality, unknown);
    assert_eq!(first["late_polled"].quality, unknown);
    assert_eq!(first["flow"].quality, Quality::Good);

    server.add("late", Variant::Double(12.0));
    server.add("late_polled", Variant::Int32(-4));
    let latest = wait_for(
        &mut agent,
        &plan,
        &["late", "late_polled"],
        Duration::from_secs(20),
        |s| s.quality == Quality::Good,
    )
    .await;
    assert_eq!(latest["late"].value, Some(Value::F64(12.0)));
    assert_eq!(latest["late_polled"].value, Some(Value::I64(-4)));
    agent.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_lists_node_ids_names_and_types() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("server-pki"), 0, &Users::default()).await;
    server.add(
        "waveform",
        Variant::Array(Box::new(
            Array::new(VariantScalarTypeId::Float, vec![Variant::Float(1.0); 4]).expect("array"),
        )),
    );
    let plan = plan(
        dir.path(),
        &format!("name = \"sim\"\nurl = {:?}", server.url()),
        &tag("flow", "ns=2;s=x", ""),
    );
    let files = client::ClientFiles::of(&plan);
    let nodes = browse::browse(&plan.opcua[0], &files, None, 3, 1000)
        .await
        .expect("browse");
    let listing = browse::format_browse(&nodes);
    let at = nodes
        .iter()
        .position(|n| n.node_id.ends_with("s=pump-1.flow"))
        .unwrap_or_else(|| panic!("{listing}"));
    let flow = &nodes[at];
    assert_eq!(flow.data_type.as_deref(), Some("Float"));
    assert_eq!(flow.depth, 1, "under the machine's folder");
    // A true tree: every node is listed under its parent, the nearest shallower line above it.
    let parent = nodes[..at]
        .iter()
        .rev()
        .find(|n| n.depth < flow.depth)
        .expect("a parent line");
    assert_eq!(parent.browse_name, "pump-1", "{listing}");
    let server_object = nodes
        .iter()
        .position(|n| n.browse_name == "Server")
        .expect("Server");
    assert!(
        nodes[server_object + 1..]
            .iter()
            .take_while(|n| n.depth > 0)
            .all(|n| !n.node_id.contains("pump-1")),
        "the Server object's subtree holds none of the plant: {listing}"
    );
    // --node takes the namespace by URI, as tags do.
    let start: firmware_config::NodeRef = "nsu=urn:millwright:sim;s=pump-1".parse().expect("node");
    let below = browse::browse(&plan.opcua[0], &files, Some(&start), 2, 100)
        .await
        .expect("browse from a folder");
    assert!(
        below
            .iter()
            .any(|n| n.node_id.ends_with("s=pump-1.flow") && n.depth == 0),
        "{}",
        browse::format_browse(&below)
    );
    let unknown: firmware_config::NodeRef = "nsu=urn:nobody;s=x".parse().expect("node");
    let error = browse::browse(&plan.opcua[0], &files, Some(&unknown), 2, 100)
        .await
        .expect_err("unknown namespace");
    assert!(error.to_string().contains("urn:nobody"), "{error}");
    let waveform = nodes
        .iter()
        .find(|n| n.node_id.ends_with("s=waveform"))
        .expect("waveform");
    assert_eq!(waveform.data_type.as_deref(), Some("Float[]"));
    assert!(nodes
        .iter()
        .any(|n| n.browse_name == "Server" && n.class == "Object"));
    server.stop().await;
}

/// The commands a commissioning engineer runs: the simulator serving OPC UA, `check`, `trust`
/// (refused without a terminal or --yes), `browse`, `read`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_trust_browse_read_and_check_from_the_command_line() {
    use millwright_tests::{millwright_bin, simulate_opcua};
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = dir.path().join("sim.toml");
    std::fs::write(&sim, SIM).expect("sim config");
    let (mut simulator, port) = simulate_opcua(&sim).await;
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ndata_dir = \"state\"\n\n[[opcua]]\nname = \"press\"\nurl = \"opc.tcp://127.0.0.1:{port}\"\nsecurity_policy = \"Basic256Sha256\"\nsecurity_mode = \"SignAndEncrypt\"\n\n[[opcua.tags]]\nname = \"flow\"\nnode = \"nsu={};s=pump-1.flow\"\nunit = \"m3/h\"\n",
            sim_opcua::NAMESPACE
        ),
    )
    .expect("agent config");
    let run = |args: &[&str]| {
        let mut command = std::process::Command::new(millwright_bin());
        command
            .args(args)
            .arg("-c")
            .arg(&config)
            .stdin(std::process::Stdio::null());
        command.output().expect("millwright")
    };

    let check = run(&["check"]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    assert!(
        text.contains("opcua \"press\"") && text.contains("Basic256Sha256 SignAndEncrypt"),
        "{text}"
    );

    let refused = run(&["trust", "--endpoint", "press"]);
    assert!(
        !refused.status.success(),
        "no terminal, no --yes: not trusted"
    );
    assert!(String::from_utf8_lossy(&refused.stdout).contains("SHA-1 thumbprint"));

    let trusted = run(&["trust", "--endpoint", "press", "--yes"]);
    let text = String::from_utf8_lossy(&trusted.stdout);
    assert!(
        trusted.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(
        text.contains("urn:millwright:simulator") && text.contains("trusted:"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("state/pki/trusted"))
            .expect("trusted")
            .count(),
        1
    );

    let browsed = run(&["browse", "--endpoint", "press"]);
    let text = String::from_utf8_lossy(&browsed.stdout);
    assert!(
        browsed.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&browsed.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.contains("s=pump-1.flow"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("Variable") && line.contains("Float"),
        "{line}"
    );

    // `read`: a one-shot read of the endpoint's tags, subscribed ones included.
    let read = run(&["read"]);
    let table = String::from_utf8_lossy(&read.stdout);
    assert_eq!(
        read.status.code(),
        Some(0),
        "{table}{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("press ") && l.contains("flow"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("opcua")
            && row.contains("s=pump-1.flow")
            && row.contains("42.5")
            && row.contains("m3/h")
            && row.trim_end().ends_with("good"),
        "{row}"
    );

    let unknown = run(&["browse", "--endpoint", "nope"]);
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no [[opcua]] endpoint named \"nope\"")
    );
    let _ = simulator.kill().await;
}
