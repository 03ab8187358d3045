//! `[http]`: the local status page, `/api/status` and `/metrics`.
//!
//! Off when the section is absent. Loopback by default; any other address serves the plant's
//! state to the network, so it needs credentials (`users_file`), and `check` refuses it without.
//! The credentials file is read when the configuration is loaded (`check` reads it too; the
//! server keeps the users of the agent's start until it restarts): one
//! `name:secret` per line, used as HTTP basic auth (name and password) or as a bearer token (the
//! secret alone, recorded as its name). Secrets never appear in `Debug` output or logs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::modbus::Checker;
use crate::source::Seg;
use crate::HumanDuration;

/// The status page and metrics endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `ip:port` to listen on. Loopback (`127.0.0.1:8080`, the default) serves this gateway only;
    /// any other address needs `users_file`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// File of `name:secret` lines (mode 0600 or 0640): basic-auth users, or bearer tokens for a
    /// scraper. With it every page but `/healthz` asks for credentials, and the page may
    /// acknowledge alerts (recorded with the user's name).
    pub users_file: Option<PathBuf>,
    /// PEM certificate chain to serve HTTPS with (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// How often the page fetches the status again.
    #[serde(default = "default_refresh")]
    pub refresh: HumanDuration,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_refresh() -> HumanDuration {
    HumanDuration::from_millis(2_000)
}

/// A validated `[http]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Http {
    pub listen: SocketAddr,
    pub users: Option<Users>,
    /// Certificate chain and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub refresh: Duration,
}

/// A secret that does not print.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// The people (and scrapers) allowed in, from `users_file`.
#[derive(Debug, Clone, PartialEq)]
pub struct Users {
    pub file: PathBuf,
    pub entries: Vec<(String, Secret)>,
}

/// Shortest secret accepted: a password someone can guess in a few tries protects nothing.
pub const MIN_SECRET: usize = 8;

impl Users {
    /// Parses a credentials file's text; errors name the line.
    pub fn parse(file: &Path, text: &str) -> Result<Users, String> {
        let mut entries: Vec<(String, Secret)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{}:{}", file.display(), i + 1);
            let Some((name, secret)) = line.split_once(':') else {
                return Err(format!("{at}: expected `name:secret`"));
            };
            let name = name.trim();
            if name.is_empty() || name.chars().any(|c| c.is_control() || c == ' ') {
                return Err(format!(
                    "{at}: the name must be a word (no spaces), before the first `:`"
                ));
            }
            if secret.chars().count() < MIN_SECRET {
                return Err(format!(
                    "{at}: {name}'s secret is shorter than {MIN_SECRET} characters"
                ));
            }
            if entries.iter().any(|(n, _)| n == name) {
                return Err(format!("{at}: {name} is listed twice"));
            }
            if entries.iter().any(|(_, s)| s.expose() == secret) {
                return Err(format!(
                    "{at}: {name}'s secret is another user's too; as a bearer token it must say who"
                ));
            }
            entries.push((name.to_string(), Secret(secret.to_string())));
        }
        if entries.is_empty() {
            return Err(format!("{} lists nobody", file.display()));
        }
        Ok(Users {
            file: file.to_path_buf(),
            entries,
        })
    }

    pub fn load(file: &Path) -> Result<Users, String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        Users::parse(file, &text)
    }
}

pub(crate) fn validate_http(
    check: &mut Checker<'_, '_>,
    http: &HttpConfig,
    config_dir: &Path,
) -> Option<Http> {
    let before = check.errors.len();
    let at = |key| [Seg::Key("http"), Seg::Key(key)];
    let listen = http
        .listen
        .parse::<SocketAddr>()
        .map_err(|_| {
            let message = format!(
                "listen must be an ip:port such as \"127.0.0.1:8080\" or \"0.0.0.0:8080\", found {:?}",
                http.listen
            );
            check.err(&at("listen"), "http", message)
        })
        .ok();
    let users = http.users_file.as_ref().and_then(|file| {
        Users::load(&config_dir.join(file))
            .map_err(|message| check.err(&at("users_file"), "http", message))
            .ok()
    });
    if let Some(listen) = listen {
        if !listen.ip().is_loopback() && http.users_file.is_none() {
            let message = format!(
                "listening on {listen} serves the plant's state beyond this gateway: set users_file (credentials), or listen on 127.0.0.1"
            );
            check.err(&at("listen"), "http", message);
        }
    }
    let tls = match (&http.tls_cert, &http.tls_key) {
        (Some(cert), Some(key)) => Some((config_dir.join(cert), config_dir.join(key))),
        (None, None) => None,
        (Some(_), None) => {
            check.err(&at("tls_cert"), "http", "tls_cert needs tls_key");
            None
        }
        (None, Some(_)) => {
            check.err(&at("tls_key"), "http", "tls_key needs tls_cert");
            None
        }
    };
    if http.refresh.get() < Duration::from_millis(500) {
        check.err(&at("refresh"), "http", "refresh must be at least 500ms");
    }
    let listen = listen?;
    (check.errors.len() == before).then(|| Http {
        listen,
        users,
        tls,
        refresh: http.refresh.get(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parse_and_their_mistakes_name_the_line() {
        let file = Path::new("users");
        let users = Users::parse(file, "# techs\nana:correct-horse\n\nprom:scrape-token-1\n")
            .expect("parsed");
        assert_eq!(users.entries.len(), 2);
        assert_eq!(users.entries[1].0, "prom");
        assert_eq!(users.entries[1].1.expose(), "scrape-token-1");
        assert!(
            !format!("{users:?}").contains("correct-horse"),
            "no secret in Debug"
        );
        let fails = |text: &str| Users::parse(file, text).expect_err(text);
        assert!(fails("ana\n").contains("users:1: expected `name:secret`"));
        assert!(fails("a b:longenough\n").contains("a word"));
        assert!(fails("ana:short\n").contains("shorter than 8"));
        assert!(fails("ana:longenough\nana:otherlong\n").contains("users:2: ana is listed twice"));
        assert!(fails("ana:longenough\nbo:longenough\n").contains("another user's"));
        assert!(fails("# nobody\n").contains("lists nobody"));
    }
}
