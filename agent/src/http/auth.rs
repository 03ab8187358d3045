//! Who is asking: HTTP basic auth or a bearer token, checked against `[http] users_file`.
//!
//! Secrets are compared in constant time (for their length), never logged; a failed attempt is
//! answered after a pause, so guessing over the network is slow.

use base64::Engine as _;
use firmware_config::Users;

/// The user a request's `Authorization` header proves, or `None`.
pub fn user(users: &Users, authorization: Option<&str>) -> Option<String> {
    let header = authorization?.trim();
    let (scheme, credentials) = header.split_once(' ')?;
    let credentials = credentials.trim();
    let found = if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (name, secret) = decoded.split_once(':')?;
        users
            .entries
            .iter()
            .find(|(n, s)| n == name && same(s.expose(), secret))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        users
            .entries
            .iter()
            .find(|(_, s)| same(s.expose(), credentials))
    } else {
        None
    };
    found.map(|(name, _)| name.clone())
}

/// Equal texts, in a time that does not depend on where they differ.
fn same(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use std::path::Path;

    fn users() -> Users {
        Users::parse(Path::new("u"), "ana:correct-horse\nprom:scrape-token-1\n").expect("users")
    }

    #[test]
    fn basic_auth_and_bearer_tokens_name_their_user() {
        let users = users();
        let basic = |text: &str| format!("Basic {}", STANDARD.encode(text));
        assert_eq!(
            user(&users, Some(&basic("ana:correct-horse"))),
            Some("ana".into())
        );
        assert_eq!(
            user(&users, Some("Bearer scrape-token-1")),
            Some("prom".into())
        );
        for wrong in [
            basic("ana:correct-hors"),
            basic("ana:scrape-token-1"),
            basic("bo:correct-horse"),
            basic("ana"),
            "Basic !!!".into(),
            "Bearer correct-horsE".into(),
            "Digest correct-horse".into(),
            String::new(),
        ] {
            assert_eq!(user(&users, Some(&wrong)), None, "{wrong}");
        }
        assert_eq!(user(&users, None), None);
    }
}
