//! Helpers shared by the configuration tests.

use std::path::Path;

use firmware_config::load_str;

/// Every error as (line, message); panics if the text is valid.
pub fn errors_at(text: &str) -> Vec<(usize, String)> {
    match load_str(Path::new("/etc/millwright/plant.toml"), text) {
        Ok(_) => panic!("expected errors in\n{text}"),
        Err(e) => {
            e.0.into_iter()
                .map(|e| (e.position.map_or(0, |p| p.0), e.message))
                .collect()
        }
    }
}

/// Exactly one error, containing `needle`, on the line that starts with `key`.
pub fn one_error(text: &str, needle: &str, key: &str) {
    let errors = errors_at(text);
    let line = text
        .lines()
        .position(|l| l.trim_start().starts_with(key))
        .expect("key in text")
        + 1;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].1.contains(needle), "{errors:?}");
    assert_eq!(errors[0].0, line, "{errors:?}");
}
