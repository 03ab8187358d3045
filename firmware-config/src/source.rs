//! The TOML source of a configuration: parsing with spans, deserializing one element at a time so
//! that one bad device does not hide the mistakes in the next, and turning byte offsets into
//! `file:line:col`.
//!
//! Every error the loader reports goes through [`ConfigError`], which always names the component
//! (`device "pump-plc" tag "flow"`) and, when the source is known, where it is.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::words;

/// One mistake in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column; `None` when the mistake has no single place (e.g. a missing file).
    pub position: Option<(usize, usize)>,
    /// Which part of the configuration, e.g. `device "pump-plc" tag "flow"`.
    pub component: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if self.component.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.component, self.message)
        }
    }
}

/// Every mistake found in one configuration, in source order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The file could not be read at all.
    pub fn unreadable(file: &Path, error: &std::io::Error) -> Self {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            position: None,
            component: String::new(),
            message: format!("cannot read: {error}"),
        }])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// One step of a path from the document root to a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// A parsed TOML document that remembers where every value came from.
pub struct Document<'i> {
    file: PathBuf,
    text: &'i str,
    root: Spanned<DeTable<'i>>,
}

impl<'i> Document<'i> {
    /// Parses `text`; syntax errors are all collected (the parser recovers where it can).
    pub fn parse(file: &Path, text: &'i str) -> Result<Self, ConfigErrors> {
        let (root, errors) = DeTable::parse_recoverable(text);
        let doc = Document {
            file: file.to_path_buf(),
            text,
            root,
        };
        if errors.is_empty() {
            Ok(doc)
        } else {
            Err(ConfigErrors(
                errors
                    .iter()
                    .map(|e| doc.error_at(e.span(), "", format!("TOML syntax: {}", e.message())))
                    .collect(),
            ))
        }
    }

    pub fn root(&self) -> &DeTable<'i> {
        self.root.get_ref()
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The span of the value at `path`, or of the nearest ancestor that exists (a missing field is
    /// best reported at the table that lacks it).
    pub fn span(&self, path: &[Seg<'_>]) -> Option<Range<usize>> {
        let mut span = self.root.span();
        let mut current: Option<&DeValue<'i>> = None;
        for seg in path {
            let next = match (seg, current) {
                (Seg::Key(key), None) => self.root.get_ref().get(*key),
                (Seg::Key(key), Some(DeValue::Table(table))) => table.get(*key),
                (Seg::Index(i), Some(DeValue::Array(array))) => array.get(*i),
                _ => None,
            };
            match next {
                Some(value) => {
                    span = value.span();
                    current = Some(value.get_ref());
                }
                None => break,
            }
        }
        Some(span)
    }

    /// The span of the key naming the value at `path` (better than the value for "unknown" or
    /// "duplicate" mistakes, and for tables whose value span starts after the header).
    pub fn key_span(&self, path: &[Seg<'_>]) -> Option<Range<usize>> {
        let (last, parent) = path.split_last()?;
        let Seg::Key(key) = last else {
            return self.span(path);
        };
        let table = if parent.is_empty() {
            Some(self.root.get_ref())
        } else {
            self.value(parent).and_then(|v| match v.get_ref() {
                DeValue::Table(t) => Some(t),
                _ => None,
            })
        };
        table
            .and_then(|t| t.get_key_value(*key))
            .map(|(k, _)| k.span())
            .or_else(|| self.span(parent))
    }

    fn value(&self, path: &[Seg<'_>]) -> Option<&Spanned<DeValue<'i>>> {
        let (first, rest) = path.split_first()?;
        let Seg::Key(key) = first else { return None };
        let mut value = self.root.get_ref().get(*key)?;
        for seg in rest {
            value = match (seg, value.get_ref()) {
                (Seg::Key(key), DeValue::Table(t)) => t.get(*key)?,
                (Seg::Index(i), DeValue::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(value)
    }

    /// The elements of the array at `path` (an absent key is an empty array; a non-array value is
    /// reported as an error).
    pub fn elements(
        &self,
        path: &[Seg<'_>],
        errors: &mut Vec<ConfigError>,
    ) -> Vec<&Spanned<DeValue<'i>>> {
        match self.value(path).map(|v| (v, v.get_ref())) {
            None => Vec::new(),
            Some((_, DeValue::Array(array))) => array.iter().collect(),
            Some((value, other)) => {
                errors.push(self.error_at(
                    Some(value.span()),
                    "",
                    format!(
                        "`{}` must be an array of tables ([[{}]]), found a {}",
                        path_text(path),
                        path_text(path),
                        other.type_str()
                    ),
                ));
                Vec::new()
            }
        }
    }

    /// Deserializes one value, leaving out the keys that the caller deserializes element by
    /// element. Errors are reported against the original source, and all of them: serde stops at
    /// the first mistake, so the offending key (or list element) is taken out and the value tried
    /// again until it deserializes. The value is only returned when it had no mistake at all.
    pub fn deserialize<T: DeserializeOwned>(
        &self,
        value: &Spanned<DeValue<'i>>,
        without_keys: &[&str],
        component: &str,
    ) -> Result<T, Vec<ConfigError>> {
        let mut value = without(value, without_keys);
        let mut errors = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        // Each round takes one key out, so this ends; the bound only guards against a span
        // pointing at something that cannot be taken out.
        for _ in 0..MAX_MISTAKES_PER_VALUE {
            let error = match T::deserialize(value.clone().into_deserializer()) {
                Ok(parsed) if errors.is_empty() => return Ok(parsed),
                Ok(_) => return Err(errors),
                Err(error) => error,
            };
            let message = error.message();
            // A key taken out for a wrong value is then "missing": that is the same mistake.
            let consequence = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.strip_suffix('`'))
                .is_some_and(|key| removed.iter().any(|r| r == key));
            if !consequence {
                errors.push(self.error_at(error.span(), component, words::plain(message)));
            }
            match error
                .span()
                .and_then(|span| take_out(&mut value, span.start))
            {
                Some(key) => removed.push(key),
                None => break,
            }
        }
        Err(errors)
    }

    /// Deserializes the root table without the keys deserialized element by element.
    pub fn deserialize_root<T: DeserializeOwned>(
        &self,
        without_keys: &[&str],
    ) -> Result<T, Vec<ConfigError>> {
        let root = Spanned::new(
            self.root.span(),
            DeValue::Table(kept(self.root.get_ref(), without_keys)),
        );
        self.deserialize(&root, &[], "")
    }

    pub fn error_at(
        &self,
        span: Option<Range<usize>>,
        component: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            position: span.map(|s| line_col(self.text, s.start)),
            component: words::clip_quotes(component),
            message: words::clip_quotes(&message.into()),
        }
    }

    /// An error at the value found at `path`.
    pub fn error(
        &self,
        path: &[Seg<'_>],
        component: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error_at(self.span(path), component, message)
    }
}

/// A copy of `table` without `keys`. Those are the large arrays deserialized element by element
/// (a device's 10,000 tags): they are never copied.
fn kept<'i>(table: &DeTable<'i>, keys: &[&str]) -> DeTable<'i> {
    let mut copy = DeTable::new();
    for (key, value) in table.iter() {
        if !keys.contains(&key.get_ref().as_ref()) {
            copy.insert(key.clone(), value.clone());
        }
    }
    copy
}

/// A copy of `value` without `keys` when it is a table.
fn without<'i>(value: &Spanned<DeValue<'i>>, keys: &[&str]) -> Spanned<DeValue<'i>> {
    match value.get_ref() {
        DeValue::Table(table) if !keys.is_empty() => {
            Spanned::new(value.span(), DeValue::Table(kept(table, keys)))
        }
        _ => value.clone(),
    }
}

/// Mistakes reported for one table before the rest of it is given up on.
const MAX_MISTAKES_PER_VALUE: usize = 200;

/// Takes the innermost key (or list element) whose key or value contains byte `at` out of
/// `value`, returning its name; `None` when `at` is not inside any (e.g. a missing key, reported
/// at the table).
fn take_out(value: &mut Spanned<DeValue<'_>>, at: usize) -> Option<String> {
    let contains = |span: Range<usize>| span.start <= at && at < span.end.max(span.start + 1);
    let is_container = |v: &DeValue<'_>| matches!(v, DeValue::Table(_) | DeValue::Array(_));
    match value.get_mut() {
        DeValue::Table(table) => {
            // A table written as a `[header]` section may not span its keys: look inside first.
            for (key, inner) in table.iter_mut() {
                if !contains(key.span()) && is_container(inner.get_ref()) {
                    if let Some(taken) = take_out(inner, at) {
                        return Some(taken);
                    }
                }
            }
            let key = table
                .iter()
                .find(|(k, v)| contains(k.span()) || contains(v.span()))
                .map(|(k, _)| k.get_ref().to_string())?;
            table.remove(key.as_str());
            Some(key)
        }
        DeValue::Array(array) => {
            let index = array.iter().position(|v| contains(v.span()))?;
            if is_container(array[index].get_ref()) {
                if let Some(taken) = array.get_mut(index).and_then(|inner| take_out(inner, at)) {
                    return Some(taken);
                }
            }
            let kept: Vec<_> = array
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .map(|(_, v)| v.clone())
                .collect();
            *array = kept.into_iter().collect();
            Some(format!("[{index}]"))
        }
        _ => None,
    }
}

fn path_text(path: &[Seg<'_>]) -> String {
    let mut text = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(k);
            }
            Seg::Index(i) => text.push_str(&format!("[{i}]")),
        }
    }
    text
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_lines_and_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // "bé = " is 6 bytes but 5 characters
        assert_eq!(line_col(text, 6 + 6), (2, 6));
    }

    #[test]
    fn syntax_errors_carry_position() {
        let errors = Document::parse(Path::new("x.toml"), "a = 1\nb = \n")
            .err()
            .expect("syntax error");
        assert_eq!(errors.0[0].position.map(|p| p.0), Some(2));
        assert!(errors.0[0].message.starts_with("TOML syntax"));
    }
}
