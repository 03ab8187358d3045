//! Configuration mistakes in the words of the people who write configurations: "a whole number from
//! 0 to 65535", not "u16"; "unknown key", not "unknown field"; and never a value quoted so long
//! that it buries the message (a 2 MB string once produced 4 MB of stderr).
//!
//! serde and toml phrase their errors for Rust programmers. [`plain`] rewrites the fixed shapes of
//! those messages (`invalid type: X, expected Y`, `invalid value: X, expected Y`, `unknown field`,
//! `missing field`, `unknown variant`); anything else passes through unchanged except for
//! [`clip_quotes`], which every message gets.

/// Longest quoted value, in characters, before it is cut.
pub const MAX_QUOTED: usize = 80;

/// Longest message, in characters, before it is cut (a safety net behind the quoting rules).
const MAX_MESSAGE: usize = 600;

/// `text` in double quotes with escapes, cut to [`MAX_QUOTED`] characters with a note of the
/// full length.
pub fn quote(text: &str) -> String {
    let count = text.chars().count();
    if count <= MAX_QUOTED {
        return format!("{text:?}");
    }
    let head: String = text.chars().take(MAX_QUOTED - 1).collect();
    format!("\"{}…\" ({count} characters)", head.escape_debug())
}

/// What serde calls a type, as a user would say it.
fn expected_in_words(expected: &str) -> String {
    let words = match expected {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "usize" => "a whole number (0 or more)",
        "i8" => "a whole number from -128 to 127",
        "i16" => "a whole number from -32768 to 32767",
        "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" | "a borrowed string" | "a character" => "text in quotes",
        "a sequence" => "a list such as [1, 2]",
        "a map" | "a table" => "a table",
        _ if expected.starts_with("struct ") => "a table (key = value pairs)",
        _ if expected.starts_with("a sequence of ") => "a list",
        _ => return expected.to_string(),
    };
    words.to_string()
}

/// What serde found, as a user would say it: `integer `5`` → `5`, `string "x"` → `"x"`.
fn found_in_words(unexpected: &str) -> String {
    let ticked = |prefix: &str| {
        unexpected
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('`'))
            .and_then(|rest| rest.strip_suffix('`'))
            .map(str::to_string)
    };
    if let Some(number) = ticked("integer ").or_else(|| ticked("floating point ")) {
        return number;
    }
    if let Some(value) = ticked("boolean ") {
        return value;
    }
    if let Some(text) = unexpected.strip_prefix("string ") {
        return format!("the text {text}");
    }
    match unexpected {
        "sequence" => "a list".into(),
        "map" => "a table".into(),
        "unit value" => "nothing".into(),
        other => other.to_string(),
    }
}

/// The closest of `candidates` to `word` when it is close enough to be a typo.
pub fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The names in serde's "expected one of `a`, `b`" or "expected `a` or `b`" lists.
fn ticked_names(list: &str) -> Vec<&str> {
    list.split('`').skip(1).step_by(2).collect()
}

/// Rewrites one serde/toml message for people (see the module docs).
pub fn plain(message: &str) -> String {
    let rewritten = rewrite(message).unwrap_or_else(|| message.to_string());
    let clipped = clip_quotes(&rewritten);
    if clipped.chars().count() > MAX_MESSAGE {
        let head: String = clipped.chars().take(MAX_MESSAGE).collect();
        format!("{head}…")
    } else {
        clipped
    }
}

fn rewrite(message: &str) -> Option<String> {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`')?;
        let known = ticked_names(expected);
        let hint = match did_you_mean(key, known.iter().copied()) {
            Some(close) => format!("; did you mean `{close}`?"),
            None => String::new(),
        };
        let list = if known.is_empty() {
            "no keys are allowed here".to_string()
        } else {
            format!("allowed here: {}", known.join(", "))
        };
        return Some(format!("unknown key `{key}`{hint} ({list})"));
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (value, expected) = rest.split_once('`')?;
        let known = ticked_names(expected);
        let hint = match did_you_mean(value, known.iter().copied()) {
            Some(close) => format!("; did you mean {close:?}?"),
            None => String::new(),
        };
        let list: Vec<String> = known.iter().map(|k| format!("{k:?}")).collect();
        return Some(format!(
            "{} is not one of {}{hint}",
            quote(value),
            list.join(", ")
        ));
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let key = rest.strip_suffix('`')?;
        return Some(format!("missing key `{key}` (it is required)"));
    }
    for (prefix, out_of_range) in [("invalid type: ", false), ("invalid value: ", true)] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (found, expected) = rest.rsplit_once(", expected ")?;
            let found = found_in_words(found);
            let expected = expected_in_words(expected);
            return Some(if out_of_range && found.parse::<f64>().is_ok() {
                format!("{found} is out of range: expected {expected}")
            } else {
                format!("expected {expected}, found {found}")
            });
        }
    }
    None
}

/// Cuts every double-quoted or backticked run longer than [`MAX_QUOTED`] characters.
pub fn clip_quotes(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4 * MAX_MESSAGE));
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '"' && c != '`' {
            continue;
        }
        let close = c;
        let mut inner = String::new();
        let mut count = 0usize;
        let mut closed = false;
        while let Some(d) = chars.next() {
            if d == '\\' && close == '"' {
                if let Some(escaped) = chars.next() {
                    count += 1;
                    if count < MAX_QUOTED {
                        inner.push(d);
                        inner.push(escaped);
                    }
                }
                continue;
            }
            if d == close {
                closed = true;
                break;
            }
            count += 1;
            if count < MAX_QUOTED {
                inner.push(d);
            }
        }
        out.push_str(&inner);
        if count >= MAX_QUOTED {
            out.push('…');
        }
        if closed {
            out.push(close);
        }
        if count >= MAX_QUOTED {
            out.push_str(&format!(" ({count} characters)"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_type_names_become_words() {
        assert_eq!(
            plain("invalid type: string \"x\", expected u16"),
            "expected a whole number from 0 to 65535, found the text \"x\""
        );
        assert_eq!(
            plain("invalid value: integer `70000`, expected u16"),
            "70000 is out of range: expected a whole number from 0 to 65535"
        );
        assert_eq!(
            plain("invalid type: string \"y\", expected f64"),
            "expected a number, found the text \"y\""
        );
        assert_eq!(
            plain("invalid type: integer `1`, expected a boolean"),
            "expected true or false, found 1"
        );
        assert_eq!(
            plain("invalid type: integer `5`, expected struct BackoffConfig"),
            "expected a table (key = value pairs), found 5"
        );
        assert_eq!(
            plain("missing field `name`"),
            "missing key `name` (it is required)"
        );
    }

    #[test]
    fn unknown_keys_and_values_suggest_the_closest_name() {
        assert_eq!(
            plain("unknown field `prot`, expected one of `name`, `port`, `host`"),
            "unknown key `prot`; did you mean `port`? (allowed here: name, port, host)"
        );
        assert_eq!(
            plain("unknown field `zzz`, expected `initial` or `max`"),
            "unknown key `zzz` (allowed here: initial, max)"
        );
        assert_eq!(
            plain("unknown variant `holdin_register`, expected one of `coil`, `holding_register`"),
            "\"holdin_register\" is not one of \"coil\", \"holding_register\"; did you mean \"holding_register\"?"
        );
    }

    #[test]
    fn long_values_are_quoted_short() {
        let long = "x".repeat(2_000_000);
        let message = plain(&format!("invalid type: string \"{long}\", expected u16"));
        assert!(message.len() < 300, "{} bytes", message.len());
        assert!(message.contains("(2000000 characters)"), "{message}");
        let quoted = quote(&"é".repeat(200));
        assert_eq!(quoted.chars().filter(|c| *c == 'é').count(), MAX_QUOTED - 1);
        assert!(quoted.ends_with("(200 characters)"));
        assert_eq!(quote("short"), "\"short\"");
        // Escapes count as one character and are kept whole.
        let escaped = clip_quotes(&format!("a \"{}\" b", "\\n".repeat(100)));
        assert!(escaped.ends_with("…\" (100 characters) b"), "{escaped}");
    }

    #[test]
    fn typos_are_close_and_other_words_are_not() {
        assert_eq!(
            did_you_mean("poll_intervall", ["poll_interval", "timeout"]),
            Some("poll_interval")
        );
        assert_eq!(
            did_you_mean("adress", ["address", "table"]),
            Some("address")
        );
        assert_eq!(did_you_mean("xyz", ["address", "table"]), None);
        assert_eq!(did_you_mean("ab", ["cd"]), None);
    }
}
