//! Shift calendars: shifts by local start and end time in an IANA time zone (read from the
//! gateway's tzdata), the weekdays they start on, planned breaks, and plant holidays.
//!
//! [`Calendar::instances`] turns the calendar into concrete shift instances (UTC instants): a
//! night shift from 22:00 to 06:00 lasts 7 h on the night clocks go forward and 9 h on the night
//! they go back, because its ends are local times resolved on their own dates. A local time that
//! does not exist (inside the spring-forward gap) resolves to the instant after the gap; one that
//! exists twice (the autumn fold) to the first.

use std::collections::BTreeSet;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::lines::LineConfig;
use crate::source::Seg;

/// Monday first.
/// The name reports give the time between shifts; no shift may take it.
pub const UNSCHEDULED: &str = "unscheduled";

pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

const MINUTES_PER_DAY: i32 = 24 * 60;

/// The days of the week a shift starts on, Monday first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weekdays(pub [bool; 7]);

impl Weekdays {
    pub fn contains(&self, date: Date) -> bool {
        self.0[usize::from(date.weekday().to_monday_zero_offset() as u8)]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shift {
    pub name: String,
    pub start: Time,
    pub end: Time,
    pub days: Weekdays,
    pub breaks: Vec<(Time, Time)>,
}

impl Shift {
    /// Length in local minutes, as the wall clock reads it (a 24 h shift when end = start).
    fn minutes(&self) -> i32 {
        let len = minute_of_day(self.end) - minute_of_day(self.start);
        if len <= 0 {
            len + MINUTES_PER_DAY
        } else {
            len
        }
    }

    /// Minutes from the shift's start to `time`, on the shift's own clock face.
    fn offset(&self, time: Time) -> i32 {
        (minute_of_day(time) - minute_of_day(self.start)).rem_euclid(MINUTES_PER_DAY)
    }
}

fn minute_of_day(time: Time) -> i32 {
    i32::from(time.hour()) * 60 + i32::from(time.minute())
}

/// One shift on one day, in absolute time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftInstance {
    pub name: String,
    /// The local date it starts on.
    pub date: Date,
    pub start: Timestamp,
    pub end: Timestamp,
    pub breaks: Vec<(Timestamp, Timestamp)>,
}

impl ShiftInstance {
    /// A stable identity: the shift's name and its start.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.start)
    }

    /// Whether `at` falls in a planned break.
    pub fn in_break(&self, at: Timestamp) -> bool {
        self.breaks.iter().any(|(s, e)| *s <= at && at < *e)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    pub zone_name: String,
    pub zone: TimeZone,
    pub shifts: Vec<Shift>,
    pub holidays: BTreeSet<Date>,
}

impl Calendar {
    /// Shift instances that overlap `[from, to)`, in start order.
    pub fn instances(&self, from: Timestamp, to: Timestamp) -> Vec<ShiftInstance> {
        let first = from
            .to_zoned(self.zone.clone())
            .date()
            .yesterday()
            .unwrap_or(Date::MIN);
        let last = to.to_zoned(self.zone.clone()).date();
        let mut out = Vec::new();
        let mut date = first;
        while date <= last {
            if !self.holidays.contains(&date) {
                for shift in self.shifts.iter().filter(|s| s.days.contains(date)) {
                    if let Some(instance) = self.instance(shift, date) {
                        if instance.start < to && instance.end > from {
                            out.push(instance);
                        }
                    }
                }
            }
            let Ok(next) = date.tomorrow() else { break };
            date = next;
        }
        out.sort_by_key(|i| i.start);
        out
    }

    /// The shift instance under way at `at`.
    pub fn current(&self, at: Timestamp) -> Option<ShiftInstance> {
        let just_after = at.checked_add(1.nanosecond()).unwrap_or(at);
        self.instances(at, just_after)
            .into_iter()
            .find(|i| i.start <= at && at < i.end)
    }

    /// The next shift to start after `at`, within a fortnight.
    pub fn next_start(&self, at: Timestamp) -> Option<ShiftInstance> {
        let horizon = at
            .checked_add(jiff::SignedDuration::from_hours(24 * 14))
            .ok()?;
        self.instances(at, horizon)
            .into_iter()
            .find(|i| i.start > at)
    }

    fn instance(&self, shift: &Shift, date: Date) -> Option<ShiftInstance> {
        let local = |offset_minutes: i32| -> Option<Timestamp> {
            let day = date
                .checked_add((offset_minutes.div_euclid(MINUTES_PER_DAY)).days())
                .ok()?;
            let minute = offset_minutes.rem_euclid(MINUTES_PER_DAY);
            let time = Time::new((minute / 60) as i8, (minute % 60) as i8, 0, 0).ok()?;
            day.to_datetime(time)
                .to_zoned(self.zone.clone())
                .ok()
                .map(|z| z.timestamp())
        };
        let start_minute = minute_of_day(shift.start);
        let start = local(start_minute)?;
        let end = local(start_minute + shift.minutes())?;
        let breaks = shift
            .breaks
            .iter()
            .filter_map(|(s, e)| {
                let from = local(start_minute + shift.offset(*s))?;
                let to = local(start_minute + shift.offset(*e))?;
                Some((from, to))
            })
            .collect();
        Some(ShiftInstance {
            name: shift.name.clone(),
            date,
            start,
            end,
            breaks,
        })
    }
}

/// Validates a line's calendar; `err` reports at a path below the line.
pub(crate) fn validate(
    err: &mut dyn FnMut(&[Seg<'_>], String),
    line: &LineConfig,
) -> Option<Calendar> {
    let zone = match TimeZone::get(&line.time_zone) {
        Ok(zone) => Some(zone),
        Err(_) => {
            err(&[Seg::Key("time_zone")], format!("time zone {:?} is not in the gateway's tzdata (/usr/share/zoneinfo); use an IANA name such as \"Europe/Berlin\"", line.time_zone));
            None
        }
    };
    if line.shifts.is_empty() {
        err(
            &[Seg::Key("shifts")],
            "a line needs at least one [[lines.shifts]]".into(),
        );
    }
    let mut shifts = Vec::new();
    for (i, config) in line.shifts.iter().enumerate() {
        let at = |key: &'static str| [Seg::Key("shifts"), Seg::Index(i), Seg::Key(key)];
        let time = |key: &'static str, text: &str, err: &mut dyn FnMut(&[Seg<'_>], String)| {
            parse_time(text).map_err(|m| err(&at(key), m)).ok()
        };
        let start = time("start", &config.start, err);
        let end = time("end", &config.end, err);
        let days = weekdays(config.days.as_deref())
            .map_err(|m| err(&at("days"), m))
            .ok();
        let mut breaks = Vec::new();
        for b in &config.breaks {
            match (parse_time(&b.start), parse_time(&b.end)) {
                (Ok(s), Ok(e)) => breaks.push((s, e)),
                (Err(m), _) | (_, Err(m)) => err(&at("breaks"), m),
            }
        }
        if shifts.iter().any(|s: &Shift| s.name == config.name) {
            err(
                &at("name"),
                format!("another shift is named {:?}", config.name),
            );
        }
        if config.name == UNSCHEDULED {
            err(
                &at("name"),
                format!("{UNSCHEDULED:?} names the time between shifts in the reports; call the shift something else"),
            );
        }
        if let (Some(start), Some(end), Some(days)) = (start, end, days) {
            let shift = Shift {
                name: config.name.clone(),
                start,
                end,
                days,
                breaks,
            };
            for problem in break_problems(&shift) {
                err(&at("breaks"), problem);
            }
            for other in &shifts {
                if let Some(day) = overlap(other, &shift) {
                    err(
                        &at("start"),
                        format!(
                            "shift {:?} overlaps shift {:?} on {}",
                            shift.name, other.name, WEEKDAYS[day]
                        ),
                    );
                }
            }
            shifts.push(shift);
        }
    }
    let mut holidays = BTreeSet::new();
    for text in &line.holidays {
        match text.parse::<Date>() {
            Ok(date) => {
                holidays.insert(date);
            }
            Err(_) => err(
                &[Seg::Key("holidays")],
                format!("holiday {text:?} is not a date like \"2026-12-25\""),
            ),
        }
    }
    (shifts.len() == line.shifts.len() && holidays.len() <= line.holidays.len()).then_some(())?;
    Some(Calendar {
        zone_name: line.time_zone.clone(),
        zone: zone?,
        shifts,
        holidays,
    })
}

/// "06:00" or "06:00:00".
fn parse_time(text: &str) -> Result<Time, String> {
    let parsed = match text.len() {
        5 => format!("{text}:00").parse::<Time>(),
        _ => text.parse::<Time>(),
    };
    match parsed {
        Ok(time) if time.subsec_nanosecond() == 0 && time.second() == 0 => Ok(time),
        Ok(_) => Err(format!(
            "{text:?}: shift and break times are whole minutes (\"06:00\")"
        )),
        Err(_) => Err(format!(
            "{text:?} is not a local time like \"06:00\" or \"22:30\""
        )),
    }
}

fn weekdays(days: Option<&[String]>) -> Result<Weekdays, String> {
    let Some(days) = days else {
        return Ok(Weekdays([true; 7]));
    };
    let mut set = [false; 7];
    for day in days {
        let lower = day.to_ascii_lowercase();
        let i = WEEKDAYS
            .iter()
            .position(|d| lower.starts_with(d))
            .ok_or_else(|| {
                format!("{day:?} is not a weekday (mon, tue, wed, thu, fri, sat, sun)")
            })?;
        set[i] = true;
    }
    if !set.contains(&true) {
        return Err("days is empty: the shift would never start".into());
    }
    Ok(Weekdays(set))
}

fn break_problems(shift: &Shift) -> Vec<String> {
    shift
        .breaks
        .iter()
        .filter_map(|(s, e)| {
            let (from, to) = (shift.offset(*s), shift.offset(*e));
            let fits = to > from && to <= shift.minutes() && from < shift.minutes();
            (!fits).then(|| {
                format!(
                    "break {}–{} does not lie inside shift {:?} ({}–{})",
                    hhmm(*s),
                    hhmm(*e),
                    shift.name,
                    hhmm(shift.start),
                    hhmm(shift.end)
                )
            })
        })
        .collect()
}

pub fn hhmm(time: Time) -> String {
    format!("{:02}:{:02}", time.hour(), time.minute())
}

/// The weekday on which `a` and `b` overlap on the local clock (the start day of `b`'s
/// occurrence), if they do.
fn overlap(a: &Shift, b: &Shift) -> Option<usize> {
    const WEEK: i32 = 7 * MINUTES_PER_DAY;
    let occurrences = |s: &Shift| -> Vec<(usize, i32, i32)> {
        (0..7)
            .filter(|d| s.days.0[*d])
            .map(|d| {
                let start = d as i32 * MINUTES_PER_DAY + minute_of_day(s.start);
                (d, start, start + s.minutes())
            })
            .collect()
    };
    for (_, a_start, a_end) in occurrences(a) {
        for (day, b_start, b_end) in occurrences(b) {
            // The week wraps: compare each pair also a week apart.
            for shift in [-WEEK, 0, WEEK] {
                if a_start + shift < b_end && b_start < a_end + shift {
                    return Some(day);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shift(name: &str, start: &str, end: &str) -> Shift {
        Shift {
            name: name.into(),
            start: parse_time(start).expect("time"),
            end: parse_time(end).expect("time"),
            days: Weekdays([true; 7]),
            breaks: vec![],
        }
    }

    fn calendar(zone: &str, shifts: Vec<Shift>) -> Calendar {
        Calendar {
            zone_name: zone.into(),
            zone: TimeZone::get(zone).expect("tzdata"),
            shifts,
            holidays: BTreeSet::new(),
        }
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn night_shifts_last_seven_and_nine_hours_across_the_dst_changes() {
        let cal = calendar("Europe/Berlin", vec![shift("night", "22:00", "06:00")]);
        // 2026-03-29: clocks go 02:00 → 03:00 in Berlin; 2026-10-25: 03:00 → 02:00.
        let spring = cal
            .current(ts("2026-03-29T00:30:00Z"))
            .expect("night shift");
        assert_eq!(spring.start, ts("2026-03-28T21:00:00Z"), "22:00 CET");
        assert_eq!(spring.end, ts("2026-03-29T04:00:00Z"), "06:00 CEST");
        assert_eq!(spring.end.duration_since(spring.start).as_secs(), 7 * 3600);
        let autumn = cal
            .current(ts("2026-10-25T00:30:00Z"))
            .expect("night shift");
        assert_eq!(autumn.start, ts("2026-10-24T20:00:00Z"), "22:00 CEST");
        assert_eq!(autumn.end, ts("2026-10-25T05:00:00Z"), "06:00 CET");
        assert_eq!(autumn.end.duration_since(autumn.start).as_secs(), 9 * 3600);
    }

    #[test]
    fn weekdays_holidays_and_breaks_shape_the_instances() {
        let mut early = shift("early", "06:00", "14:00");
        early.days = weekdays(Some(&["mon".into(), "tue".into()])).expect("days");
        early.breaks = vec![(
            parse_time("09:00").expect("t"),
            parse_time("09:15").expect("t"),
        )];
        let mut cal = calendar("UTC", vec![early]);
        cal.holidays.insert("2026-12-01".parse().expect("date")); // a Tuesday
                                                                  // Mon 2026-11-30 .. Mon 2026-12-07: Monday 30th, (Tuesday is a holiday), Monday 7th.
        let week = cal.instances(ts("2026-11-30T00:00:00Z"), ts("2026-12-08T00:00:00Z"));
        let starts: Vec<Timestamp> = week.iter().map(|i| i.start).collect();
        assert_eq!(
            starts,
            [ts("2026-11-30T06:00:00Z"), ts("2026-12-07T06:00:00Z")]
        );
        assert_eq!(
            week[0].breaks,
            [(ts("2026-11-30T09:00:00Z"), ts("2026-11-30T09:15:00Z"))]
        );
        assert!(week[0].in_break(ts("2026-11-30T09:10:00Z")));
        assert!(!week[0].in_break(ts("2026-11-30T09:15:00Z")));
        assert_eq!(cal.current(ts("2026-11-30T05:59:59Z")), None);
        assert_eq!(
            cal.next_start(ts("2026-11-30T15:00:00Z")).map(|i| i.start),
            Some(ts("2026-12-07T06:00:00Z"))
        );
    }

    #[test]
    fn overlaps_and_breaks_outside_their_shift_are_found() {
        let a = shift("early", "06:00", "14:00");
        let b = shift("late", "14:00", "22:00");
        let n = shift("night", "21:00", "06:30");
        assert_eq!(overlap(&a, &b), None, "back to back is fine");
        assert!(overlap(&b, &n).is_some(), "21:00 starts before late ends");
        assert!(
            overlap(&a, &n).is_some(),
            "night runs into the next early shift"
        );
        let mut sunday_night = shift("sun-night", "22:00", "06:00");
        sunday_night.days = weekdays(Some(&["sun".into()])).expect("days");
        let mut monday_early = shift("mon-early", "05:00", "13:00");
        monday_early.days = weekdays(Some(&["mon".into()])).expect("days");
        assert_eq!(
            overlap(&sunday_night, &monday_early),
            Some(0),
            "across the week's end"
        );
        let mut late = shift("late", "14:00", "22:00");
        late.breaks = vec![(
            parse_time("13:00").expect("t"),
            parse_time("13:30").expect("t"),
        )];
        assert_eq!(break_problems(&late).len(), 1);
        late.breaks = vec![(
            parse_time("18:00").expect("t"),
            parse_time("18:30").expect("t"),
        )];
        assert!(break_problems(&late).is_empty());
    }

    #[test]
    fn times_and_days_are_checked() {
        assert!(parse_time("6:00").is_err());
        assert!(parse_time("25:00").is_err());
        assert!(parse_time("06:00:30").is_err());
        assert_eq!(parse_time("22:30").map(hhmm), Ok("22:30".into()));
        assert!(weekdays(Some(&["funday".into()])).is_err());
        assert!(weekdays(Some(&[])).is_err());
    }
}
