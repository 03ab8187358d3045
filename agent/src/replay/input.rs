//! Recorded history as samples: long CSV (`timestamp,tag,value[,quality]`, one value per row) or
//! wide CSV (`timestamp` then one column per tag, tag names as headers). Streamed: memory does not
//! depend on the file's length.
//!
//! Times are RFC 3339 (`2024-03-02T10:00:00Z`, `…+01:00`, fractions allowed), `YYYY-MM-DD
//! HH:MM:SS[.fff]` read as UTC, or epoch seconds (fractions allowed) or milliseconds (numbers
//! from 10^11 on). Values are numbers or `true`/`false`; an empty cell is no value. Quality, when
//! given, is `good`, `uncertain` or `bad` (empty: good).

use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use firmware_config::Plan;

use crate::sample::{Quality, Sample, TagId, Value};

/// Why the file cannot be replayed at all.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("line 1: {0}")]
    Header(String),
    #[error("{0}")]
    Csv(#[from] csv::Error),
}

/// Why a row was skipped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RowError {
    #[error("no time")]
    NoTime,
    #[error("time {0:?} is not RFC 3339 (2024-03-02T10:00:00Z), `2024-03-02 10:00:00` (UTC) or epoch seconds/milliseconds")]
    Time(String),
    #[error("time {0:?} is before 1970")]
    BeforeEpoch(String),
    #[error("unknown tag {0:?}: not in the configuration")]
    UnknownTag(String),
    #[error("value {0:?} is not a number or true/false")]
    Value(String),
    #[error("quality {0:?} is not good, uncertain or bad")]
    Quality(String),
    #[error("{cells} cells, more than the header's {header}")]
    TooManyCells { cells: usize, header: usize },
    #[error("time goes back by {} (more than assess_interval, {}): sort the file by time", humantime::format_duration(*.behind), humantime::format_duration(*.tolerance))]
    Late {
        behind: Duration,
        tolerance: Duration,
    },
    /// The CSV reader's own complaint (an unterminated quote, bytes that are not UTF-8).
    #[error("{0}")]
    Csv(String),
}

/// A row that was skipped, and why (with its line number).
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub line: u64,
    pub why: RowError,
}

#[derive(Debug)]
enum Layout {
    Long {
        tag: usize,
        value: usize,
        quality: Option<usize>,
    },
    /// The tag of each column after the timestamp.
    Wide { tags: Vec<TagId> },
}

/// Samples from a CSV file, row by row.
pub struct Rows<R: Read> {
    reader: csv::Reader<R>,
    record: csv::ByteRecord,
    layout: Layout,
    tags: HashMap<Box<[u8]>, TagId>,
}

impl<R: Read> Rows<R> {
    /// Reads the header and decides the layout. Every column of a wide file must name a tag of
    /// `plan`.
    pub fn new(plan: &Plan, input: R) -> Result<Rows<R>, InputError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(input);
        let header = reader.headers()?.clone();
        let tags: HashMap<Box<[u8]>, TagId> = plan
            .sources()
            .iter()
            .flat_map(|source| source.tags.iter().map(|(name, _)| *name))
            .enumerate()
            .map(|(i, name)| (name.as_bytes().into(), TagId(i as u32)))
            .collect();
        let layout = layout(&header, &tags)?;
        Ok(Rows {
            reader,
            record: csv::ByteRecord::new(),
            layout,
            tags,
        })
    }

    /// The next row's samples (appended to `out`, all with the row's time); `None` at the end.
    /// A bad row is skipped with its reason; the rows after it are still read.
    pub fn next_row(&mut self, out: &mut Vec<Sample>) -> Option<Result<(), Skipped>> {
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.record.position().map_or(0, |p| p.line());
                Some(self.samples(out).map_err(|why| Skipped { line, why }))
            }
            Err(error) => {
                let line = error.position().map_or(0, |p| p.line());
                let why = RowError::Csv(match error.kind() {
                    csv::ErrorKind::Utf8 { .. } => "not UTF-8".to_string(),
                    _ => error.to_string(),
                });
                Some(Err(Skipped { line, why }))
            }
        }
    }

    /// The current line (of the last row read).
    pub fn line(&self) -> u64 {
        self.record.position().map_or(0, |p| p.line())
    }

    fn samples(&self, out: &mut Vec<Sample>) -> Result<(), RowError> {
        let record = &self.record;
        let cell = |i: usize| record.get(i).unwrap_or_default();
        let time = parse_time(cell(0))?;
        match &self.layout {
            Layout::Long {
                tag,
                value,
                quality,
            } => {
                let name = cell(*tag);
                let Some(&id) = self.tags.get(name) else {
                    return Err(RowError::UnknownTag(
                        String::from_utf8_lossy(name).into_owned(),
                    ));
                };
                let quality = match quality {
                    Some(q) => parse_quality(cell(*q))?,
                    None => Quality::Good,
                };
                if let Some(value) = parse_value(cell(*value))? {
                    out.push(sample(id, time, value, quality));
                }
            }
            Layout::Wide { tags } => {
                if record.len() > tags.len() + 1 {
                    return Err(RowError::TooManyCells {
                        cells: record.len(),
                        header: tags.len() + 1,
                    });
                }
                for (i, &id) in tags.iter().enumerate() {
                    if let Some(value) = parse_value(cell(i + 1))? {
                        out.push(sample(id, time, value, Quality::Good));
                    }
                }
            }
        }
        Ok(())
    }
}

fn sample(tag: TagId, timestamp: SystemTime, value: Value, quality: Quality) -> Sample {
    Sample {
        tag,
        timestamp,
        server_timestamp: None,
        value: Some(value),
        quality,
    }
}

fn layout(
    header: &csv::StringRecord,
    tags: &HashMap<Box<[u8]>, TagId>,
) -> Result<Layout, InputError> {
    let names: Vec<String> = header.iter().map(str::to_ascii_lowercase).collect();
    if !matches!(
        names.first().map(String::as_str),
        Some("timestamp" | "time")
    ) {
        return Err(InputError::Header(format!(
            "the first column must be `timestamp`, not {:?} (long CSV: timestamp,tag,value[,quality]; wide CSV: timestamp then one column per tag)",
            header.get(0).unwrap_or_default()
        )));
    }
    let position = |wanted: &str| names.iter().position(|n| n == wanted);
    if let (Some(tag), Some(value)) = (position("tag"), position("value")) {
        return Ok(Layout::Long {
            tag,
            value,
            quality: position("quality"),
        });
    }
    let mut unknown = Vec::new();
    let mut columns = Vec::new();
    for name in header.iter().skip(1) {
        match tags.get(name.as_bytes()) {
            Some(&id) => columns.push(id),
            None => unknown.push(format!("{name:?}")),
        }
    }
    if !unknown.is_empty() {
        return Err(InputError::Header(format!(
            "column(s) {} name no tag of the configuration (a wide CSV has one column per tag, named as in the configuration)",
            unknown.join(", ")
        )));
    }
    if columns.is_empty() {
        return Err(InputError::Header(
            "no tag columns (long CSV: timestamp,tag,value[,quality]; wide CSV: timestamp then one column per tag)".into(),
        ));
    }
    Ok(Layout::Wide { tags: columns })
}

/// RFC 3339, `YYYY-MM-DD HH:MM:SS[.f]` (UTC), or epoch seconds / milliseconds.
pub fn parse_time(cell: &[u8]) -> Result<SystemTime, RowError> {
    let text = String::from_utf8_lossy(cell);
    let text = text.as_ref();
    if text.is_empty() {
        return Err(RowError::NoTime);
    }
    if let Ok(number) = text.parse::<f64>() {
        let seconds = if number >= 1e11 { number / 1e3 } else { number };
        return Duration::try_from_secs_f64(seconds)
            .map(|d| UNIX_EPOCH + d)
            .map_err(|_| RowError::BeforeEpoch(text.to_string()));
    }
    let parsed = chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").map(|t| t.and_utc())
        })
        .map_err(|_| RowError::Time(text.to_string()))?;
    u64::try_from(parsed.timestamp_micros())
        .map(|m| UNIX_EPOCH + Duration::from_micros(m))
        .map_err(|_| RowError::BeforeEpoch(text.to_string()))
}

fn parse_value(cell: &[u8]) -> Result<Option<Value>, RowError> {
    if cell.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(cell);
    if let Ok(number) = text.parse::<f64>() {
        return Ok(Some(Value::F64(number)));
    }
    match text.to_ascii_lowercase().as_str() {
        "true" => Ok(Some(Value::Bool(true))),
        "false" => Ok(Some(Value::Bool(false))),
        _ => Err(RowError::Value(text.into_owned())),
    }
}

fn parse_quality(cell: &[u8]) -> Result<Quality, RowError> {
    match cell.to_ascii_lowercase().as_slice() {
        b"" | b"good" => Ok(Quality::Good),
        b"uncertain" => Ok(Quality::Uncertain(0x4000_0000)),
        b"bad" => Ok(Quality::Bad(0x8000_0000)),
        other => Err(RowError::Quality(
            String::from_utf8_lossy(other).into_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        crate::replay::tests::loaded().plan
    }

    fn read(text: &str) -> (Vec<Sample>, Vec<Skipped>) {
        let mut rows = Rows::new(&plan(), text.as_bytes()).expect("header");
        let (mut samples, mut skipped) = (Vec::new(), Vec::new());
        while let Some(row) = rows.next_row(&mut samples) {
            if let Err(skip) = row {
                skipped.push(skip);
            }
        }
        (samples, skipped)
    }

    #[test]
    fn times_in_every_accepted_form_agree() {
        let at = UNIX_EPOCH + Duration::from_millis(1_709_373_600_250);
        for text in [
            "2024-03-02T10:00:00.250Z",
            "2024-03-02T11:00:00.250+01:00",
            "2024-03-02 10:00:00.250",
            "1709373600.25",
            "1709373600250",
        ] {
            assert_eq!(parse_time(text.as_bytes()), Ok(at), "{text}");
        }
        assert!(parse_time(b"yesterday")
            .expect_err("bad")
            .to_string()
            .contains("RFC 3339"));
        assert!(parse_time(b"-5").is_err());
    }

    #[test]
    fn long_csv_gives_one_sample_per_row_and_skips_bad_rows_with_their_line() {
        let (samples, skipped) = read(
            "timestamp,tag,value,quality\n\
             2024-03-02T10:00:00Z,pump.vibration,1.5,good\n\
             2024-03-02T10:00:01Z,pump.pressure,true,\n\
             2024-03-02T10:00:02Z,c,1,good\n\
             2024-03-02T10:00:03Z,pump.vibration,x,good\n\
             2024-03-02T10:00:04Z,pump.vibration,2,bad\n\
             soon,pump.vibration,2,good\n\
             2024-03-02T10:00:05Z,pump.vibration,,good\n",
        );
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].tag, TagId(0));
        assert_eq!(samples[0].value, Some(Value::F64(1.5)));
        assert_eq!(samples[1].value, Some(Value::Bool(true)));
        assert_eq!(samples[2].quality, Quality::Bad(0x8000_0000));
        let lines: Vec<u64> = skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, [4, 5, 7]);
        assert_eq!(skipped[0].why, RowError::UnknownTag("c".into()));
        assert_eq!(skipped[1].why, RowError::Value("x".into()));
        assert_eq!(skipped[2].why, RowError::Time("soon".into()));
    }

    #[test]
    fn wide_csv_gives_a_sample_per_filled_cell() {
        let (samples, skipped) = read(
            "time,pump.pressure,pump.vibration\n1709373600,1,2\n1709373601,,3\n1709373602,1,2,9\n",
        );
        let got: Vec<(u32, Option<Value>)> =
            samples.iter().map(|s| (s.tag.0, s.value.clone())).collect();
        assert_eq!(
            got,
            [
                (1, Some(Value::F64(1.0))),
                (0, Some(Value::F64(2.0))),
                (0, Some(Value::F64(3.0)))
            ]
        );
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].line, 4);
    }

    #[test]
    fn a_header_that_names_no_layout_or_unknown_tags_is_refused() {
        let error = |text: &str| match Rows::new(&plan(), text.as_bytes()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted {text:?}"),
        };
        assert!(error("when,pump.pressure\n").contains("first column must be `timestamp`"));
        assert!(error("timestamp,pump.pressure,speed,feed\n")
            .contains("\"speed\", \"feed\" name no tag"));
        assert!(error("timestamp\n").contains("no tag columns"));
    }
}
