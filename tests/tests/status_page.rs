//! The status page, `/api/status`, `/metrics` and `/healthz` of `millwright run` against the
//! simulated PLC: what a technician's browser and a Prometheus scraper get, with and without
//! credentials, over HTTP and HTTPS, and in headless Chromium.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use millwright_tests::http::{get, request, Reply};
use millwright_tests::{eventually, AgentProcess, Sim};

const SIM: &str = include_str!("../fixtures/sparkplug-sim.toml");
const AGENT: &str = include_str!("../fixtures/status-agent.toml");
const SCHEMA: &str = include_str!("../../agent/src/http/status.schema.json");

/// The agent of the fixture serving its page, with the simulator it polls.
struct Served {
    agent: AgentProcess,
    addr: SocketAddr,
    sim: Sim,
    dir: tempfile::TempDir,
}

/// Starts the simulator and the agent with `[http]` on a free loopback port plus `http` lines.
async fn serve(http: &str) -> Served {
    let sim = Sim::start(SIM, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let text = AGENT
        .replace(
            "host = \"127.0.0.1\"",
            &format!("host = \"127.0.0.1\"\nport = {}", sim.addr.port()),
        )
        .replace("[agent]\n", &format!("[agent]\ndata_dir = {data:?}\n"));
    let text = format!("{text}\n[http]\nlisten = \"127.0.0.1:0\"\nrefresh = \"500ms\"\n{http}");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).expect("config");
    let mut agent = AgentProcess::spawn(&path);
    let served = agent
        .wait_log(Duration::from_secs(30), "status page served")
        .await
        .expect("the agent logs where it serves the page");
    let url = served["fields"]["url"].as_str().expect("url").to_string();
    let addr = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("an address in {url}"));
    Served {
        agent,
        addr,
        sim,
        dir,
    }
}

/// `/api/status` once the PLC answers and the motor has been assessed.
async fn settled_status(addr: SocketAddr, headers: &[(&str, &str)]) -> serde_json::Value {
    eventually(Duration::from_secs(20), || async {
        let status = get(addr, "/api/status", headers).await.json();
        let ready = status["devices"][0]["online"] == true
            && status["assets"].as_array().is_some_and(|a| !a.is_empty());
        if ready {
            Ok(status)
        } else {
            Err(status)
        }
    })
    .await
    .unwrap_or_else(|last| panic!("the PLC did not come online with an assessment: {last}"))
}

/// Writes the setpoint past its `hi` limit of 1500 on the simulated PLC.
async fn trip_the_limit(sim: SocketAddr) {
    use tokio_modbus::client::Writer as _;
    let mut plc = tokio_modbus::client::tcp::connect_slave(sim, tokio_modbus::Slave(1))
        .await
        .expect("connect to the simulator");
    plc.write_single_register(4, 2000)
        .await
        .expect("transport")
        .expect("the simulator takes the write");
}

fn basic(user: &str, secret: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_matches_its_schema_and_the_metrics_parse() {
    let served = serve("").await;
    let addr = served.addr;
    let status = settled_status(addr, &[]).await;
    let schema: serde_json::Value = serde_json::from_str(SCHEMA).expect("schema");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let problems: Vec<String> = validator
        .iter_errors(&status)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}\n{status:#}");
    assert_eq!(status["schema"], 1);
    assert_eq!(status["agent"], "gw-page");
    assert_eq!(status["assets"][0]["asset"], "M-7");
    let served_schema = get(addr, "/api/status.schema.json", &[]).await;
    assert_eq!(served_schema.body, SCHEMA);
    // A schema that could not fail would prove nothing: a wrong type is caught.
    let mut broken = status.clone();
    broken["devices"][0]["online"] = serde_json::json!("yes");
    assert!(!validator.is_valid(&broken));

    let metrics = get(addr, "/metrics", &[]).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        metrics.headers
    );
    assert!(metrics.body.trim_end().ends_with("# EOF"));
    let scrape = prometheus_parse::Scrape::parse(
        metrics
            .body
            .lines()
            .map(|l| Ok::<_, std::io::Error>(l.to_string())),
    )
    .expect("the Prometheus parser reads /metrics");
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("{name} {label:?} in\n{}", metrics.body));
        match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(value("millwright_device_up", Some(("device", "plc"))), 1.0);
    assert!(value("millwright_device_requests_total", Some(("device", "plc"))) > 0.0);
    let health = value("millwright_asset_health", Some(("asset", "M-7")));
    assert!((0.0..=1.0).contains(&health), "{health}");
    assert!(value("millwright_samples_total", Some(("quality", "good"))) > 0.0);
    assert!(value("millwright_process_resident_memory_bytes", None) > 1e6);
    assert_eq!(
        value(
            "millwright_alerts",
            Some(("state", "active_unacknowledged"))
        ),
        0.0
    );
    for sample in &scrape.samples {
        assert!(
            sample.metric.starts_with("millwright_"),
            "{}",
            sample.metric
        );
    }

    let health = get(addr, "/healthz", &[]).await;
    assert_eq!((health.status, health.body.trim()), (200, "ok"));
    let page = get(addr, "/", &[]).await;
    assert_eq!(page.status, 200);
    let policy = page.header("content-security-policy").expect("a CSP");
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));
    assert!(page.body.len() + get(addr, "/page.js", &[]).await.body.len() < 64 * 1024);
    assert_eq!(get(addr, "/nothing", &[]).await.status, 404);
    let wrong_method = request(addr, "DELETE", "/api/status", &[], "").await;
    assert_eq!(wrong_method.expect("answer").status, 405);
    // Without credentials the page is read-only.
    let ack = acknowledge(addr, &[], "setpoint/hi").await;
    assert_eq!(ack.status, 403, "{}", ack.body);
    assert!(ack.body.contains("read-only"), "{}", ack.body);
    served.agent.terminate().await;
    served.sim.stop().await;
}

async fn acknowledge(addr: SocketAddr, headers: &[(&str, &str)], id: &str) -> Reply {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    let body = serde_json::json!({ "alert_id": id }).to_string();
    request(addr, "POST", "/api/alerts/ack", &all, &body)
        .await
        .expect("answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_guard_everything_but_healthz_and_acknowledgements_name_the_user() {
    let users = tempfile::NamedTempFile::new().expect("users file");
    std::fs::write(
        users.path(),
        "# the technicians\nana:correct-horse-battery\nprom:scrape-token-0123\n",
    )
    .expect("write users");
    let served = serve(&format!("users_file = {:?}\n", users.path())).await;
    let addr = served.addr;
    let ana = basic("ana", "correct-horse-battery");
    let ana = [("Authorization", ana.as_str())];
    settled_status(addr, &ana).await;

    let anonymous = get(addr, "/api/status", &[]).await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("Basic")));
    assert!(!anonymous.body.contains("plc"), "{}", anonymous.body);
    for wrong in [
        basic("ana", "correct-horse-batter"),
        basic("prom", "correct-horse-battery"),
        "Bearer scrape-token-0124".to_string(),
    ] {
        for path in ["/", "/api/status", "/metrics", "/page.js"] {
            let refused = get(addr, path, &[("Authorization", wrong.as_str())]).await;
            assert_eq!(refused.status, 401, "{path} with {wrong}");
        }
    }
    assert_eq!(get(addr, "/healthz", &[]).await.status, 200);
    let scraper = [("Authorization", "Bearer scrape-token-0123")];
    let metrics = get(addr, "/metrics", &scraper).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("millwright_http_refused_total"));
    let page = get(addr, "/api/page", &ana).await.json();
    assert_eq!(page["can_acknowledge"], true);
    assert_eq!(page["user"], "ana");

    trip_the_limit(served.sim.addr).await;
    eventually(Duration::from_secs(15), || async {
        let status = get(addr, "/api/status", &ana).await.json();
        let raised = status["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["alert_id"] == "setpoint/hi"));
        if raised {
            Ok(())
        } else {
            Err(status)
        }
    })
    .await
    .unwrap_or_else(|status| panic!("setpoint/hi not raised: {status}"));
    let foreign = acknowledge(
        addr,
        &[ana[0], ("Origin", "http://evil.example")],
        "setpoint/hi",
    )
    .await;
    assert_eq!(
        foreign.status, 403,
        "another site's page cannot acknowledge"
    );
    let form = request(
        addr,
        "POST",
        "/api/alerts/ack",
        &[
            ana[0],
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        "alert_id=setpoint/hi",
    )
    .await
    .expect("answer");
    assert_eq!(form.status, 403, "a form cannot acknowledge");
    let unknown = acknowledge(addr, &ana, "no-such-alert").await;
    assert_eq!(unknown.status, 409, "{}", unknown.body);
    let done = acknowledge(addr, &ana, "setpoint/hi").await;
    assert_eq!(done.status, 200, "{}", done.body);
    let status = get(addr, "/api/status", &ana).await.json();
    let alert = status["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["alert_id"] == "setpoint/hi"))
        .expect("the alert")
        .clone();
    assert_eq!(alert["acknowledged_by"], "ana");
    assert_eq!(alert["state"], "active_acknowledged");
    let log = served.agent.terminate().await;
    assert!(
        !log.seen.iter().any(|l| l.contains("correct-horse")),
        "a secret reached the log"
    );
    assert!(log.seen.iter().any(|l| l.contains("wrong credentials")));
    served.sim.stop().await;
    drop(served.dir);
}

/// A DevTools-protocol session with one headless Chromium tab, over its WebSocket. Every read
/// is bounded by the socket's timeout; the browser is killed when dropped.
struct Browser {
    _process: std::process::Child,
    socket: tungstenite::WebSocket<std::net::TcpStream>,
    next_id: u64,
    /// Every URL the page requested.
    requested: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self._process.kill();
        let _ = self._process.wait();
    }
}

impl Browser {
    /// Starts Chromium headless and attaches to its first tab.
    fn start() -> Browser {
        use std::io::BufRead as _;
        let profile = tempfile::tempdir().expect("profile dir");
        let mut process = std::process::Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-sync",
                "--window-size=1000,1400",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start chromium");
        let stderr = process.stderr.take().expect("stderr");
        let (found, endpoint) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(at) = line.find("ws://") {
                    let _ = found.send(line[at..].trim().to_string());
                }
            }
        });
        let browser = endpoint
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium prints its DevTools address within 30 s");
        let port = browser
            .trim_start_matches("ws://")
            .split(['/', ':'])
            .nth(1)
            .expect("a port")
            .to_string();
        let http: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let target = Browser::first_page(http);
        let stream = std::net::TcpStream::connect(http).expect("DevTools port");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let (socket, _) =
            tungstenite::client::client(target.as_str(), stream).expect("DevTools socket");
        let mut browser = Browser {
            _process: process,
            socket,
            next_id: 0,
            requested: Vec::new(),
            _profile: profile,
        };
        browser.call("Network.enable", serde_json::json!({}));
        browser.call("Page.enable", serde_json::json!({}));
        browser
    }

    /// The WebSocket address of the browser's first tab (`/json/list`).
    fn first_page(http: SocketAddr) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let listed = std::net::TcpStream::connect(http).and_then(|mut stream| {
                use std::io::{Read as _, Write as _};
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                write!(
                    stream,
                    "GET /json/list HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"
                )?;
                // Chromium keeps the connection open: read the head, then Content-Length bytes.
                let mut raw = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = stream.read(&mut chunk)?;
                    raw.extend_from_slice(&chunk[..n]);
                    let reply = millwright_tests::http::parse(&raw);
                    let complete = reply.as_ref().is_ok_and(|r| {
                        r.header("content-length")
                            .and_then(|l| l.parse::<usize>().ok())
                            .is_some_and(|l| r.body.len() >= l)
                    });
                    if complete || n == 0 {
                        return reply;
                    }
                }
            });
            if let Ok(reply) = listed {
                let targets: serde_json::Value =
                    serde_json::from_str(&reply.body).unwrap_or_default();
                let page = targets.as_array().and_then(|list| {
                    list.iter()
                        .find(|t| t["type"] == "page")
                        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                });
                if let Some(url) = page {
                    return url.to_string();
                }
            }
            assert!(std::time::Instant::now() < deadline, "no tab in chromium");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends one command and returns its result, noting the events that arrive meanwhile.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = serde_json::json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(tungstenite::Message::text(message.to_string()))
            .expect("send to chromium");
        loop {
            let message = self.socket.read().expect("chromium answers within 10 s");
            let Ok(text) = message.to_text() else {
                continue;
            };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else {
                continue;
            };
            if json["method"] == "Network.requestWillBeSent" {
                if let Some(url) = json["params"]["request"]["url"].as_str() {
                    self.requested.push(url.to_string());
                }
            }
            if json["id"] == id {
                assert!(json.get("error").is_none(), "{method}: {json}");
                return json["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn evaluate(&mut self, expression: &str) -> serde_json::Value {
        let result = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression, "returnByValue": true }),
        );
        result["result"]["value"].clone()
    }

    /// Waits (bounded) until the page's visible text contains every one of `wanted`.
    fn wait_for_text(&mut self, wanted: &[&str], within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let text = self
                .evaluate("document.body.innerText")
                .as_str()
                .unwrap_or_default()
                .to_string();
            if wanted.iter().all(|w| text.contains(w)) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{wanted:?} not on the page after {within:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

millwright_tests::needs! { chromium
/// What a person sees: the page loads in Chromium, shows the PLC and the motor's health, shows
/// an alert raised by the test without a reload, asks nothing of any other host, and says so
/// when it loses the agent. A screenshot is kept in the target directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_the_plant_and_a_new_alert_without_a_reload() {
    let served = serve("").await;
    let addr = served.addr;
    settled_status(addr, &[]).await;
    let origin = format!("http://{addr}/");
    let mut browser = tokio::task::block_in_place(|| {
        let mut browser = Browser::start();
        browser.call("Page.navigate", serde_json::json!({ "url": origin }));
        browser.wait_for_text(&["gw-page", "plc", "online", "M-7", "Health", "No alerts."], Duration::from_secs(20));
        browser
    });
    let bar = tokio::task::block_in_place(|| {
        browser.evaluate("document.querySelector('[data-asset=\"M-7\"] .bar > span').style.width")
    });
    assert!(bar.as_str().is_some_and(|w| w.ends_with('%')), "{bar}");
    trip_the_limit(served.sim.addr).await;
    let shot = tokio::task::block_in_place(|| {
        let text = browser.wait_for_text(&["setpoint/hi", "active unacknowledged"], Duration::from_secs(20));
        assert!(text.contains("above hi limit 1500"), "{text}");
        let shot = browser.call("Page.captureScreenshot", serde_json::json!({ "format": "png" }));
        let navigations = browser.evaluate("performance.getEntriesByType('navigation').length");
        assert_eq!(navigations, 1, "the page was not reloaded");
        shot
    });
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("screenshot"))
        .expect("base64");
    assert!(png.starts_with(b"\x89PNG"));
    let artifact = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    std::fs::write(&artifact, &png).expect("save the screenshot");
    println!("screenshot: {}", artifact.display());
    // On a phone's width nothing runs off the side of the screen.
    let overflow = tokio::task::block_in_place(|| {
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({ "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true }),
        );
        browser.wait_for_text(&["setpoint/hi"], Duration::from_secs(5));
        browser.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    });
    assert!(overflow.as_i64().is_some_and(|o| o <= 0), "wider than a phone by {overflow}px");
    assert!(!browser.requested.is_empty());
    for url in &browser.requested {
        assert!(url.starts_with(&origin) || url.starts_with("data:"), "the page asked {url}");
    }
    let Served { agent, sim, dir, .. } = served;
    agent.terminate().await;
    tokio::task::block_in_place(|| {
        browser.wait_for_text(&["Lost the agent"], Duration::from_secs(10));
    });
    sim.stop().await;
    drop(dir);
}
}

/// `GET path` over TLS to `addr`, trusting `ca` (PEM) only.
fn get_over_tls(addr: SocketAddr, path: &str, ca: &str) -> Result<Reply, String> {
    use rustls::pki_types::pem::PemObject as _;
    use std::io::{Read as _, Write as _};
    let mut roots = rustls::RootCertStore::empty();
    let cert = rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes())
        .map_err(|e| e.to_string())?;
    roots.add(cert).map_err(|e| e.to_string())?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // A server may close without close_notify: what arrived before counts.
    if let Err(error) = tls.read_to_end(&mut raw) {
        if raw.is_empty() {
            return Err(error.to_string());
        }
    }
    millwright_tests::http::parse(&raw).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_page_with_the_configured_certificate() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("a certificate");
    let pki = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (pki.path().join("page.crt"), pki.path().join("page.key"));
    std::fs::write(&cert, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("key");
    let served = serve(&format!("tls_cert = {cert:?}\ntls_key = {key:?}\n")).await;
    let addr = served.addr;
    let ca = certified.cert.pem();
    let healthz = tokio::task::block_in_place(|| get_over_tls(addr, "/healthz", &ca))
        .expect("HTTPS with the configured certificate");
    assert_eq!((healthz.status, healthz.body.trim()), (200, "ok"));
    let status =
        tokio::task::block_in_place(|| get_over_tls(addr, "/api/status", &ca)).expect("HTTPS");
    assert_eq!(status.json()["agent"], "gw-page");
    // Another certificate authority is not trusted, and plain HTTP gets no page.
    let other =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("a certificate");
    let refused = tokio::task::block_in_place(|| get_over_tls(addr, "/healthz", &other.cert.pem()));
    assert!(refused.is_err(), "{refused:?}");
    let plain = request(addr, "GET", "/healthz", &[], "").await;
    assert!(plain.map_or(true, |r| r.status != 200));
    served.agent.terminate().await;
    served.sim.stop().await;
}

/// Clients that connect and say nothing (more of them than the server's slots) hold no slot: the
/// page answers meanwhile, and they are cut off after the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_hold_no_slot_and_are_cut_off() {
    use tokio::io::AsyncReadExt as _;
    let served = serve("").await;
    let addr = served.addr;
    let mut silent = Vec::new();
    for _ in 0..millwright::http::MAX_CONNECTIONS + 8 {
        silent.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let started = tokio::time::Instant::now();
    // Silent clients hold no slot: the page answers at once.
    let healthz = request(addr, "GET", "/healthz", &[], "").await;
    let waited = started.elapsed();
    assert_eq!(healthz.expect("answer").status, 200);
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    for mut stream in silent {
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut byte)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    }
    assert!(started.elapsed() >= millwright::http::HEADER_TIMEOUT - Duration::from_secs(1));
    served.agent.terminate().await;
    served.sim.stop().await;
}
