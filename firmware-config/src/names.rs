//! Names that end up in MQTT topics: the agent's, devices', OPC UA endpoints', assets' (one topic
//! level each) and tags' (which may be several levels: `pump-1/flow`).
//!
//! A broker treats `#` and `+` in a published topic as a protocol error, a NUL character makes it
//! drop the connection, and an empty level (`a//b`) is legal but never what anyone meant. Once such
//! a name is in the configuration every record on its topic is refused, so `check` refuses the
//! name instead, naming the character and where it is.

use crate::words;

/// Longest name, in bytes, that may go into a topic (MQTT allows 65535 for the whole topic).
pub const MAX_TOPIC_NAME: usize = 200;

/// How a name is used in topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicUse {
    /// Exactly one topic level: no `/`.
    Level,
    /// One or more levels separated by `/`, none of them empty.
    Levels,
}

/// Why `name` cannot be used in a topic, or `None` when it can.
pub fn topic_name_problem(name: &str, usage: TopicUse) -> Option<String> {
    if name.trim().is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > MAX_TOPIC_NAME {
        return Some(format!(
            "is {} bytes long; names used in MQTT topics are at most {MAX_TOPIC_NAME}",
            name.len()
        ));
    }
    if let Some(why) = forbidden_character(name, usage == TopicUse::Levels) {
        return Some(why);
    }
    if usage == TopicUse::Levels && name.split('/').any(str::is_empty) {
        return Some("has an empty topic level (a `/` at the start or end, or `//`)".into());
    }
    None
}

/// The first character no MQTT topic may contain (and `/`, unless `slash_allowed`).
fn forbidden_character(name: &str, slash_allowed: bool) -> Option<String> {
    for (position, c) in name.chars().enumerate() {
        let at = position + 1;
        let why = match c {
            '#' | '+' => format!("contains `{c}` (character {at}), an MQTT wildcard, which no published topic may contain"),
            '/' if !slash_allowed => format!(
                "contains `/` (character {at}), which would split it into two topic levels"
            ),
            c if c.is_control() => format!(
                "contains the control character U+{:04X} (character {at}), which MQTT topics must not contain",
                u32::from(c)
            ),
            c if is_noncharacter(c) => format!(
                "contains the Unicode noncharacter U+{:04X} (character {at}), which MQTT topics must not contain",
                u32::from(c)
            ),
            _ => continue,
        };
        return Some(why);
    }
    None
}

/// Why a whole topic cannot be published, or `None` when it can (MQTT 3.1.1 §4.7).
pub fn publish_topic_problem(topic: &str) -> Option<String> {
    if topic.is_empty() {
        return Some("the topic is empty".into());
    }
    if topic.len() > usize::from(u16::MAX) {
        return Some(format!(
            "the topic is {} bytes long (MQTT allows 65535)",
            topic.len()
        ));
    }
    forbidden_character(topic, true).map(|why| format!("the topic {why}"))
}

/// A complete sentence for `check`: `device name "a#b" cannot be used in MQTT topics: …`.
pub fn topic_name_error(what: &str, name: &str, usage: TopicUse) -> Option<String> {
    topic_name_problem(name, usage).map(|why| {
        format!(
            "{what} {} cannot be used in MQTT topics: it {why}",
            words::quote(name)
        )
    })
}

/// Why `name` is not a tag name: tags are letters, digits and `_ - . : /`, and their names go into
/// alert topics (`…/{tag}/alert`), where a `/` starts a new level.
pub fn tag_name_problem(name: &str) -> Option<String> {
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || "_-.:/".contains(*c)))
    {
        let shown = if c.is_control() {
            format!("U+{:04X}", u32::from(c))
        } else {
            format!("`{c}`")
        };
        return Some(format!(
            "tag name {} contains {shown}: use only letters, digits and _ - . : /",
            words::quote(name)
        ));
    }
    topic_name_error("tag name", name, TopicUse::Levels)
}

fn is_noncharacter(c: char) -> bool {
    let code = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&code) || code & 0xFFFE == 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::*;
    use TopicUse::*;

    #[test]
    fn wildcards_control_characters_and_empty_names_are_refused() {
        assert_eq!(topic_name_problem("pump-1", Level), None);
        assert_eq!(topic_name_problem("Pumpe Nord ä", Level), None);
        assert!(topic_name_problem("pump#1", Level)
            .expect("refused")
            .contains("`#` (character 5)"));
        assert!(topic_name_problem("a+b", Level)
            .expect("refused")
            .contains("`+` (character 2)"));
        assert!(topic_name_problem("nul\0", Level)
            .expect("refused")
            .contains("U+0000 (character 4)"));
        assert!(topic_name_problem("tab\there", Level)
            .expect("refused")
            .contains("U+0009"));
        assert!(topic_name_problem("x\u{FFFF}", Level)
            .expect("refused")
            .contains("noncharacter U+FFFF"));
        assert!(topic_name_problem(" ", Level)
            .expect("refused")
            .contains("empty"));
        assert!(topic_name_problem(&"a".repeat(201), Level)
            .expect("refused")
            .contains("201 bytes"));
    }

    #[test]
    fn slashes_are_levels_only_where_levels_are_meant() {
        assert!(topic_name_problem("line/pump", Level)
            .expect("refused")
            .contains("two topic levels"));
        assert_eq!(topic_name_problem("line/pump", Levels), None);
        for bad in ["/pump", "pump/", "line//pump"] {
            assert!(
                topic_name_problem(bad, Levels)
                    .expect("refused")
                    .contains("empty topic level"),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_sentence_names_the_thing_and_quotes_it_short() {
        let message = topic_name_error("device name", "a#b", Level).expect("refused");
        assert_eq!(
            message,
            "device name \"a#b\" cannot be used in MQTT topics: it contains `#` (character 2), an MQTT wildcard, which no published topic may contain"
        );
        let long = topic_name_error("asset id", &"x".repeat(5000), Level).expect("refused");
        assert!(long.len() < 300, "{long}");
    }

    #[test]
    fn whole_topics_allow_levels_but_no_wildcards_or_control_characters() {
        assert_eq!(publish_topic_problem("a/b//c/tags"), None);
        assert!(publish_topic_problem("a/#/tags")
            .expect("refused")
            .starts_with("the topic contains `#` (character 3)"));
        assert!(publish_topic_problem("a/x\0/tags")
            .expect("refused")
            .contains("U+0000"));
        assert!(publish_topic_problem("").is_some());
        assert!(publish_topic_problem(&"a".repeat(70_000))
            .expect("refused")
            .contains("65535"));
    }

    #[test]
    fn tag_names_are_plain_words_and_topic_levels() {
        assert_eq!(tag_name_problem("pump-1.flow:avg/raw"), None);
        assert!(tag_name_problem("flow rate")
            .expect("refused")
            .contains("contains ` `"));
        assert!(tag_name_problem("a\0")
            .expect("refused")
            .contains("contains U+0000"));
        assert!(tag_name_problem("pump//flow")
            .expect("refused")
            .contains("empty topic level"));
        assert!(tag_name_problem("")
            .expect("refused")
            .contains("must not be empty"));
    }
}
