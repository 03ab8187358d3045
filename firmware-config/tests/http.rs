//! `[http]`: the status page's address, credentials and certificate, and the mistakes `check`
//! refuses at their line.

mod common;

use std::time::Duration;

use common::one_error;
use firmware_config::load_str;

const AGENT: &str = include_str!("../../tests/fixtures/status-agent.toml");

fn with_http(section: &str) -> String {
    format!("{AGENT}\n[http]\n{section}")
}

/// A credentials file in a temporary directory, and the `users_file` line naming it.
fn users_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("users");
    std::fs::write(&path, text).expect("write users");
    (
        dir,
        format!("users_file = {:?}\n", path.display().to_string()),
    )
}

#[test]
fn loopback_is_the_default_and_needs_no_credentials() {
    let plan = load_str(std::path::Path::new("a.toml"), &with_http("")).expect("valid");
    let http = plan.http.expect("http");
    assert_eq!(http.listen.to_string(), "127.0.0.1:8080");
    assert!(http.users.is_none() && http.tls.is_none());
    assert_eq!(http.refresh, Duration::from_secs(2));
    let plan = load_str(std::path::Path::new("a.toml"), AGENT).expect("valid");
    assert!(plan.http.is_none(), "off when absent");
}

#[test]
fn a_lan_address_without_credentials_is_refused() {
    for listen in ["0.0.0.0:8080", "192.168.1.20:80", "[::]:8080"] {
        one_error(
            &with_http(&format!("listen = {listen:?}\n")),
            "set users_file (credentials), or listen on 127.0.0.1",
            "listen =",
        );
    }
}

#[test]
fn a_lan_address_with_credentials_is_served_and_warned_about_without_tls() {
    let (_dir, users) = users_file("ana:correct-horse-battery\n");
    let text = with_http(&format!("listen = \"0.0.0.0:8443\"\n{users}"));
    let plan = load_str(std::path::Path::new("a.toml"), &text).expect("valid");
    let http = plan.http.as_ref().expect("http");
    assert_eq!(http.users.as_ref().expect("users").entries[0].0, "ana");
    let warnings = plan.warnings();
    assert!(
        warnings.iter().any(|w| w.contains("without TLS")),
        "{warnings:?}"
    );
    assert!(plan.secret_files().iter().any(|f| f.ends_with("users")));
    assert!(
        !format!("{plan:?}").contains("correct-horse"),
        "no secret in Debug"
    );
}

#[test]
fn mistakes_are_reported_at_their_line() {
    one_error(
        &with_http("listen = \"localhost\"\n"),
        "ip:port",
        "listen =",
    );
    one_error(
        &with_http("tls_cert = \"c.pem\"\n"),
        "needs tls_key",
        "tls_cert =",
    );
    one_error(
        &with_http("tls_key = \"k.pem\"\n"),
        "needs tls_cert",
        "tls_key =",
    );
    one_error(
        &with_http("refresh = \"100ms\"\n"),
        "at least 500ms",
        "refresh =",
    );
    one_error(
        &with_http("users_file = \"/nonexistent/users\"\n"),
        "cannot read /nonexistent/users",
        "users_file =",
    );
    let (_dir, users) = users_file("ana:short\n");
    one_error(&with_http(&users), "shorter than 8", "users_file =");
}
